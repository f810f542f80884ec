"""Turn parsed input frames into resolved frames: module and vaddr per frame, index lookups, conflicts.

Address maths, per input kind:
  runtime address + maps    vaddr = PT_LOAD(vaddr) + (addr − map start) + (map offset − PT_LOAD offset)
  module+0xoff (ASan/glibc) vaddr = off (ELF: offsets are from the load bias) / off + __TEXT vmaddr (Mach-O)
  runtime address only      vaddr = addr − bias, bias recovered from the trace's own return addresses
Return addresses are looked up at vaddr − 1 (a call's last byte), except the PC interrupted by a
signal (the frame after the trampoline), gdb's frame 0 and sanitizer frames (already adjusted).
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import os
from collections import defaultdict
from dataclasses import dataclass, field

from asciichat_diag._common import DiagError
from asciichat_diag.symbolize import bias as biasmod
from asciichat_diag.symbolize.locate import Locator, display_path, infer_source_root
from asciichat_diag.symbolize.model import (
    ConflictEntry,
    FrameLocation,
    InputFrame,
    MapEntry,
    ModuleReport,
    ResolvedFrame,
    SymbolizeResult,
)
from asciichat_diag.symbolize.modules import Module
from asciichat_diag.symbolize.parse import parse_line, parse_text

# x86-64 __restore_rt: `mov $15, %rax; syscall` (rt_sigreturn) — the return address the kernel plants.
RT_SIGRETURN_X86_64 = bytes.fromhex("48c7c00f0000000f05")
TRAMPOLINE_NAMES = frozenset({"__restore_rt", "__kernel_rt_sigreturn", "_sigtramp", "__sigreturn_tramp"})
SYSTEM_DIRS = ("/lib/", "/lib64/", "/usr/lib/", "/usr/lib64/", "/usr/libexec/")


@dataclass
class Options:
    locator: Locator = field(default_factory=Locator)
    maps_file: str | None = None
    pid: int | None = None
    use_cache: bool = True
    progress: bool = False
    source_root: str | None = None
    adjust: bool = True  # False: look every address up exactly as printed
    arch: str | None = None


@dataclass
class _Work:
    """Per-frame state while resolving."""

    frame: InputFrame
    module: Module | None = None
    shown_module: str | None = None
    vaddr: int | None = None
    lookup: int | None = None
    chain: list = field(default_factory=list)
    source: str | None = None
    note: str | None = None
    conflict: list[ConflictEntry] | None = None
    ambiguous: list[tuple[Module, int]] = field(default_factory=list)


class Resolver:
    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.by_path: dict[str, Module | None] = {}
        self.reports: dict[str, ModuleReport] = {}
        self.notes: list[str] = []
        self.explicit: set[str] = set()
        self._memo: dict[tuple[str, str | None], Module | None] = {}
        for p in [*opts.locator.libs, *([opts.locator.exe] if opts.locator.exe else [])]:
            mod = self._load(p, p)  # explicit files must exist and be ELF/Mach-O: errors are exit 2
            if mod is not None:
                self.explicit.add(os.path.realpath(mod.path))

    # -- modules ------------------------------------------------------------------------------------
    def _load(self, name: str, path: str) -> Module | None:
        real = os.path.realpath(path)
        if real in self.by_path:
            return self.by_path[real]
        mod = Module(name, path, self.opts.locator, self.opts.arch)
        self.by_path[real] = mod
        return mod

    def module_for(self, name: str, build_id: str | None = None) -> Module | None:
        key = (name, build_id)
        if key not in self._memo:
            self._memo[key] = self._module_for(name, build_id)
        return self._memo[key]

    def _module_for(self, name: str, build_id: str | None) -> Module | None:
        path = self.opts.locator.find_binary(name, build_id)
        if path is None:
            return None
        try:
            mod = self._load(name, path)
        except DiagError:
            if os.path.realpath(path) in self.explicit:
                raise
            return None  # a maps path that is not a binary (e.g. a data file): frame stays unresolved
        return mod

    def index_of(self, mod: Module):
        return mod.index(self.opts.use_cache, self.opts.progress)

    # -- the pipeline -------------------------------------------------------------------------------
    def run(self, text: str) -> SymbolizeResult:
        parsed = parse_text(text)
        maps = list(parsed.maps)
        maps.extend(self._external_maps())
        maps.sort(key=lambda e: e.start)
        frames = parsed.frames
        work = [_Work(f) for f in frames]
        self._place(work, maps)
        self._recover_biases(work)
        self._trampolines(work)
        self._lookup(work)
        self._recheck(work)
        self._infer_root()
        self._conflicts(work)
        resolved = [self._to_frame(w) for w in work]
        lines: list[str | int] = []
        k = 0
        for item in parsed.lines:
            if isinstance(item, str):
                lines.append(item)
            else:
                lines.append(k)
                k += 1
        return SymbolizeResult(resolved, list(self.reports.values()), lines, self.notes)

    def _external_maps(self) -> list[MapEntry]:
        text = None
        if self.opts.maps_file:
            try:
                with open(self.opts.maps_file, encoding="utf-8", errors="replace") as fh:
                    text = fh.read()
            except OSError as exc:
                raise DiagError(f"cannot read maps file {self.opts.maps_file}: {exc.strerror or exc}") from exc
        elif self.opts.pid is not None:
            try:
                with open(f"/proc/{self.opts.pid}/maps", encoding="utf-8", errors="replace") as fh:
                    text = fh.read()
            except OSError as exc:
                raise DiagError(f"cannot read /proc/{self.opts.pid}/maps: {exc.strerror or exc}") from exc
        if text is None:
            return []
        out = []
        for n, line in enumerate(text.splitlines()):
            item = parse_line(line, n)
            if isinstance(item, MapEntry):
                out.append(item)
        if not out:
            raise DiagError("the maps input holds no /proc/PID/maps lines")
        if self.opts.pid is not None:
            # A binary replaced (rebuilt) since the process mapped it is still readable through map_files.
            for k, e in enumerate(out):
                if e.path.endswith(" (deleted)"):
                    alt = f"/proc/{self.opts.pid}/map_files/{e.start:x}-{e.end:x}"
                    if os.access(alt, os.R_OK):
                        out[k] = dataclasses.replace(e, open_path=alt)
        return out

    def _module_for_entry(self, e: MapEntry) -> Module | None:
        if e.open_path is None:
            return self.module_for(e.path)
        try:
            return self._load(e.name, e.open_path)
        except DiagError:
            return None

    def _place(self, work: list[_Work], maps: list[MapEntry]) -> None:
        """Module and vaddr of every frame that can be placed without bias recovery."""
        starts = [e.start for e in maps]
        by_path: dict[str, list[MapEntry]] = defaultdict(list)
        for e in maps:
            if e.file_backed:
                by_path[e.path].append(e)
        hit_paths = set()
        for w in work:
            a = w.frame.address
            if a is not None and w.frame.module_offset is None:
                i = bisect.bisect_right(starts, a) - 1
                if i >= 0 and maps[i].start <= a < maps[i].end:
                    hit_paths.add(maps[i].path)
        for path, entries in by_path.items():
            # Load images that frames hit, plus project images (for conflicts); skip the other system libs.
            if path not in hit_paths and path.startswith(SYSTEM_DIRS):
                continue
            mod = self._module_for_entry(entries[0])
            if mod is not None and os.path.basename(path) not in self.reports:
                mod.bias = mod.bias_from_maps(entries)
                mod.bias_source = "maps"
                self.reports[mod.name] = ModuleReport(mod.name, mod.path, mod.bias, "maps")
        for w in work:
            f = w.frame
            if f.placeholder or f.signal_frame:
                continue
            if f.module_offset is not None and f.module:
                w.shown_module = os.path.basename(f.module)
                w.module = self.module_for(f.module, f.build_id)
                if w.module is None:
                    w.note = f"binary {f.module} not found (use --lib/--exe/--search-path)"
                    continue
                if f.build_id and w.module.build_id and not _same_build_id(f.build_id, w.module.build_id):
                    w.note = f"build-id mismatch: the trace says {f.build_id}, {w.module.path} is {w.module.build_id}"
                    w.module = None
                    continue
                w.vaddr = w.module.to_vaddr_from_module_offset(f.module_offset)
                self.reports.setdefault(
                    w.module.name, ModuleReport(w.module.name, w.module.path, None, "module-offset")
                )
                continue
            if f.symbol and f.module:  # glibc `lib.so(fn+0x10)`: relative to the symbol
                w.shown_module = os.path.basename(f.module)
                w.module = self.module_for(f.module)
                if w.module is None:
                    w.note = f"binary {f.module} not found"
                    continue
                start = self.index_of(w.module).symbol_address(f.symbol)
                if start is not None:
                    w.vaddr = start + f.symbol_offset
                    self.reports.setdefault(
                        w.module.name, ModuleReport(w.module.name, w.module.path, None, "symbol+offset")
                    )
                    continue
                w.note = f"{f.symbol} not in {w.module.name}"
            if f.address is None:
                continue
            if maps:
                i = bisect.bisect_right(starts, f.address) - 1
                if i >= 0 and maps[i].start <= f.address < maps[i].end:
                    entry = maps[i]
                    if not entry.file_backed:
                        w.shown_module = entry.path or None
                        w.note = f"address in {entry.path or 'an anonymous mapping'} (no file to read)"
                        continue
                    w.shown_module = os.path.basename(entry.name)
                    w.module = self._module_for_entry(entry)
                    if w.module is None:
                        w.note = f"cannot read {entry.path}"
                        continue
                    w.vaddr = w.module.vaddr_from_map(entry, f.address)
                    continue
                w.note = "address in no mapping of the maps snapshot"
                continue
            if f.module:
                w.shown_module = os.path.basename(f.module)
                w.module = self.module_for(f.module)
                if w.module is None:
                    w.note = f"binary {f.module} not found (use --lib/--exe/--search-path)"

    def _recover_biases(self, work: list[_Work]) -> None:
        """Modules with runtime addresses but no maps: find their load bias from the addresses."""
        pending = [w for w in work if w.vaddr is None and w.frame.address is not None and w.note is None]
        if not pending:
            return
        named: dict[str, list[_Work]] = defaultdict(list)
        loose: list[_Work] = []
        for w in pending:
            if w.module is not None:
                named[w.module.real].append(w)
            else:
                loose.append(w)
        guesses: dict[str, biasmod.BiasGuess | None] = {}
        for real, ws in named.items():
            mod = self.by_path[real]
            if mod.bias is not None:
                for w in ws:
                    w.vaddr = w.frame.address - mod.bias
                continue
            guess = self._guess(mod, [w.frame.address for w in ws if w.frame.return_address], ws)
            guesses[real] = guess
            if guess is None:
                for w in ws:
                    w.note = f"load address of {mod.name} unknown (give --maps or --pid)"
                continue
            for w in ws:
                w.vaddr = w.frame.address - guess.bias
        if not loose:
            return
        candidates = [m for m in self.by_path.values() if m is not None and m.real in self.explicit]
        if not candidates:
            for w in loose:
                if w.frame.function:
                    continue  # keep what the input says
                w.note = "no module for this address (give --maps, --pid, --exe or --lib)"
            return
        per_mod: list[tuple[Module, biasmod.BiasGuess]] = []
        addrs = [w.frame.address for w in loose if w.frame.return_address]
        for mod in candidates:
            real = mod.real
            guess = guesses.get(real) or (
                biasmod.BiasGuess(mod.bias, 0, 0, 0, "maps", frozenset()) if mod.bias is not None else None
            )
            if guess is None or (guess.total == 0 and mod.bias is None):
                guess = self._guess(mod, addrs)
            if guess is not None:
                per_mod.append((mod, guess))
        for w in loose:
            a = w.frame.address
            fits = [
                (m, g)
                for m, g in per_mod
                if m.img.in_exec(a - g.bias) and (a in g.fitting or not w.frame.return_address)
            ]
            if not fits:
                fits = [(m, g) for m, g in per_mod if m.img.in_exec(a - g.bias)]
            if not fits:
                w.note = "address fits no given module"
                continue
            m, g = fits[0]
            w.module, w.vaddr, w.shown_module = m, a - g.bias, m.name
            if len(fits) > 1:
                w.ambiguous = [(m2, a - g2.bias) for m2, g2 in fits]

    def _guess(self, mod: Module, addresses: list[int], ws: list[_Work] | None = None) -> biasmod.BiasGuess | None:
        if not addresses:
            return None
        sites = mod.call_sites()
        guess = biasmod.recover_bias(sites, addresses)
        if guess is None:
            self.reports[mod.name] = ModuleReport(mod.name, mod.path, None, "none", None, "no load bias fits")
            return None
        detail = (
            f"{guess.hits}/{guess.total} return addresses land right after a call; "
            f"next best bias fits {guess.runner_up}/{guess.total}"
        )
        pairs = _adjacent_pairs(ws or [])
        if pairs:
            # Second witness: a direct call made by frame i+1 must land in frame i's function.
            scores = {b: self._callee_score(mod, pairs, b) for b, h in guess.alternatives if h == guess.hits}
            best = max(scores, key=lambda b: (scores[b][0], b == guess.bias))
            if best != guess.bias:
                guess = biasmod.with_bias(guess, sites, addresses, best)
            ok, direct = scores[best]
            if direct:
                detail += f"; {ok}/{direct} direct calls land in the next-inner frame's function"
                if ok == direct and guess.confidence == "medium" and guess.runner_up < guess.hits:
                    guess = biasmod.BiasGuess(guess.bias, guess.hits, guess.total, guess.runner_up, "high",
                                              guess.fitting, guess.alternatives)  # fmt: skip
        mod.bias, mod.bias_source = guess.bias, "recovered"
        self.reports[mod.name] = ModuleReport(mod.name, mod.path, guess.bias, "recovered", guess.confidence, detail)
        self.notes.append(f"{mod.name}: recovered load bias {guess.bias:#x} ({guess.confidence} confidence: {detail})")
        if guess.ambiguous:
            self.notes.append(f"{mod.name}: [CONFLICT!] two load biases fit equally well; answers may be wrong")
        return guess

    def _callee_score(self, mod: Module, pairs: list[tuple[int, int]], bias: int) -> tuple[int, int]:
        """(calls that target the inner frame's function, direct calls seen) under `bias`."""
        idx = self.index_of(mod)
        ok = direct = 0
        for inner_addr, outer_addr in pairs:
            target = biasmod.direct_call_target(mod.img.read_vaddr, outer_addr - bias)
            if target is None or mod.in_stubs(target):
                continue  # indirect, or through the PLT: the callee's name is not at the target
            direct += 1
            callee = idx.lookup(target)[0]
            inner = idx.lookup(inner_addr - bias - 1)[0]
            if callee and inner and callee[-1].function and callee[-1].function == inner[-1].function:
                ok += 1
        return ok, direct

    def _trampolines(self, work: list[_Work]) -> None:
        """Find signal trampolines; the frame after one is the interrupted PC (no −1)."""
        for i, w in enumerate(work):
            f = w.frame
            is_tramp = False
            if w.module is not None and w.vaddr is not None:
                raw = w.module.img.read_vaddr(w.vaddr, len(RT_SIGRETURN_X86_64))
                is_tramp = raw == RT_SIGRETURN_X86_64
            if not is_tramp and f.function in TRAMPOLINE_NAMES:
                is_tramp = True
            if (
                not is_tramp
                and f.in_crash
                and w.module is None
                and (w.shown_module or "").startswith(("libc.so", "libc-"))
                and not any(x.frame.trace == f.trace and x.note == "signal trampoline" for x in work[:i])
            ):
                is_tramp = True  # libc unavailable here: the first libc frame of a crash trace is the trampoline
            if is_tramp:
                f.return_address = False
                w.note = "signal trampoline"
                if i + 1 < len(work) and work[i + 1].frame.trace == f.trace:
                    work[i + 1].frame.return_address = False

    def _lookup(self, work: list[_Work]) -> None:
        groups: dict[int, list[_Work]] = defaultdict(list)
        for w in work:
            if w.module is None or w.vaddr is None:
                continue
            adjust = self.opts.adjust and w.frame.return_address
            w.lookup = w.vaddr - 1 if adjust else w.vaddr
            groups[id(w.module)].append(w)
        for ws in groups.values():
            idx = self.index_of(ws[0].module)
            results = idx.lookup_many([w.lookup for w in ws])
            for w, (chain, source) in zip(ws, results):
                if chain and (chain[-1].function or chain[-1].file):
                    w.chain, w.source = chain, source
                    if w.note == "signal trampoline":
                        w.note = None
                elif w.note is None:
                    w.note = f"no symbol at {w.lookup:#x} in {w.module.name}"
        for w in work:
            if not w.ambiguous:
                continue
            answers = []
            for mod, vaddr in w.ambiguous:
                look = vaddr - 1 if (self.opts.adjust and w.frame.return_address) else vaddr
                chain, _src = self.index_of(mod).lookup(look)
                top = chain[-1] if chain else None
                answers.append(ConflictEntry(mod.name, top.function if top else None,
                                             self._show(top.file) if top else None,
                                             top.line if top else None))  # fmt: skip
            w.conflict = answers
            w.note = "owning module is ambiguous (no maps): both images fit"

    def _recheck(self, work: list[_Work]) -> None:
        """Frames the input already resolved: confirm the function exists and owns that line."""
        for w in work:
            f = w.frame
            if w.chain or not f.function or (f.address is not None and w.module is not None):
                continue
            if (w.note or "").startswith("build-id mismatch"):
                continue  # the binary here is not the one that ran: nothing to check against
            loc = [FrameLocation(fn, file, line, None) for fn, file, line in f.inlined]
            loc.append(FrameLocation(f.function, f.file, f.line, None))
            w.chain, w.source = loc, "input"
            if not f.module:
                continue
            mod = w.module or self.module_for(f.module)
            w.shown_module = w.shown_module or os.path.basename(f.module)
            if mod is None:
                w.note = "not re-checked: binary not found"
                continue
            w.module = mod
            idx = self.index_of(mod)
            ranges = idx.function_ranges(f.function)
            if not ranges:
                w.note = f"re-check failed: {f.function}() is not defined in {mod.name}"
                w.source = "input-mismatch"
                continue
            if f.file and f.line is not None and idx.has_dwarf:
                rows = [r for lo, hi in ranges for r in idx.line_rows_of(lo, hi)]
                ok = any(line == f.line and _same_file(path, f.file) for path, line in rows)
                if not ok:
                    w.note = f"re-check failed: {f.file}:{f.line} is not in {f.function}() in {mod.name}"
                    w.source = "input-mismatch"

    def _conflicts(self, work: list[_Work]) -> None:
        """[CONFLICT!] when the resolved function is also defined in another loaded project image."""
        images = [m for m in self.by_path.values() if m is not None and self._project_image(m)]
        if len(images) < 2:
            return
        for w in work:
            if w.conflict or w.module is None or not w.chain:
                continue
            name = w.chain[-1].function
            if not name:
                continue
            own = self.index_of(w.module)
            if not own.defines(name):
                continue
            others = []
            for m in images:
                if m is w.module or m.real == w.module.real:
                    continue
                idx = self.index_of(m)
                if not idx.defines(name):
                    continue
                start = idx.symbol_address(name)
                file = line = None
                if start is not None:
                    chain, _ = idx.lookup(start)
                    if chain:
                        file, line = chain[-1].file, chain[-1].line
                others.append(ConflictEntry(m.name, name, self._show(file), line))
            if others:
                top = w.chain[-1]
                mine = ConflictEntry(w.shown_module or w.module.name, name,
                                     self._show(top.file), top.line)  # fmt: skip
                w.conflict = [mine, *others]

    def _infer_root(self) -> None:
        """Source root from the project images' own file tables (used when no .git is found here)."""
        self.inferred_root = None
        if self.opts.source_root:
            return
        files: list[str] = []
        for m in self.by_path.values():
            if m is not None and self._project_image(m) and m._index is not None:
                files.extend(m._index.files)
        self.inferred_root = infer_source_root(files)

    def _show(self, path: str | None) -> str | None:
        return display_path(path, self.opts.source_root, getattr(self, "inferred_root", None))

    def _project_image(self, m: Module) -> bool:
        real = m.real
        if real in self.explicit:
            return True
        return not real.startswith(SYSTEM_DIRS) and not m.path.startswith(SYSTEM_DIRS)

    def _to_frame(self, w: _Work) -> ResolvedFrame:
        f = w.frame
        locs = [FrameLocation(c.function, self._show(c.file), c.line, c.column) for c in w.chain]
        phys = locs[-1] if locs else FrameLocation(None, None, None, None)
        note = w.note
        if f.placeholder and not note:
            note = "signal handler frame" if f.signal_frame else f"placeholder {f.placeholder} in the input"
        return ResolvedFrame(
            index=f.index,
            address=f"{f.address:#x}" if f.address is not None else None,
            module=w.shown_module or (w.module.name if w.module else None),
            module_offset=f"{w.vaddr:#x}" if w.vaddr is not None else None,
            function=phys.function,
            file=phys.file,
            line=phys.line,
            column=phys.column,
            inlined=locs[:-1],
            conflict=[dataclasses.replace(c, file=self._show(c.file)) for c in w.conflict] if w.conflict else None,
            source=w.source if w.source != "input-mismatch" else "input",
            lookup_address=f"{w.lookup:#x}" if w.lookup is not None else None,
            note=note,
            format=f.fmt,
            text=f.original if f.fmt == "panic" else None,
        )


def _adjacent_pairs(ws: list[_Work]) -> list[tuple[int, int]]:
    """(inner address, outer address) for frames of one trace that sit next to each other."""
    out = []
    for a, b in itertools.pairwise(ws):
        fa, fb = a.frame, b.frame
        if fa.trace != fb.trace or not fb.return_address or fa.address is None or fb.address is None:
            continue
        if fa.index is not None and fb.index is not None and fb.index != fa.index + 1:
            continue
        out.append((fa.address, fb.address))
    return out


def _same_build_id(printed: str, actual: str) -> bool:
    # Sanitizers print the whole note; some tools print a prefix. Either way the shorter is a prefix.
    a, b = printed.lower(), actual.lower()
    return a.startswith(b) or b.startswith(a)


def _same_file(dwarf_path: str, printed: str) -> bool:
    a = os.path.normpath(dwarf_path)
    b = os.path.normpath(printed)
    return a == b or a.endswith("/" + b.lstrip("./")) or os.path.basename(a) == b


def symbolize_text(text: str, opts: Options | None = None) -> SymbolizeResult:
    """Resolve every frame in `text` (see the module docstring for the address rules)."""
    return Resolver(opts or Options()).run(text)
