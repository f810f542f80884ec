"""A loaded image: its file, separate debug file, load bias, and (lazily) its cached symbol index."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

from asciichat_diag._common import DiagError
from asciichat_diag.symbolize import elfio
from asciichat_diag.symbolize.index import SymbolIndex, cache_key, load_index, save_index
from asciichat_diag.symbolize.locate import Locator
from asciichat_diag.symbolize.model import MapEntry


class Module:
    """One binary as the trace saw it (`name`) and as found on disk (`path`)."""

    def __init__(self, name: str, path: str, locator: Locator, arch: str | None = None) -> None:
        self.name = os.path.basename(name.removesuffix(" (deleted)"))
        self.path = path
        self.real = os.path.realpath(path)
        data = elfio.read_file(path)
        kind = elfio.file_kind(data)
        if kind == "elf":
            self.kind = "elf"
            self.img = elfio.parse_elf(path, data)
            self.debug_path = None
            if not self.img.has_dwarf:
                self.debug_path = locator.find_debug_file(path, self.img.build_id, self.img.debuglink)
        elif kind == "macho":
            from asciichat_diag.symbolize.macho import find_dsym, parse_macho

            self.kind = "macho"
            self.img = parse_macho(path, data, arch)
            self.debug_path = None if self.img.has_dwarf else find_dsym(path, self.img.uuid, locator.search_paths)
        else:
            raise DiagError(f"{path}: not an ELF or Mach-O file")
        self.bias: int | None = None
        self.bias_source = "none"
        self._index: SymbolIndex | None = None
        self._sites = None

    @property
    def build_id(self) -> str | None:
        return self.img.build_id

    def map_start_vaddr(self, entry: MapEntry) -> int | None:
        """The ELF vaddr that a mapping's first byte corresponds to.

        The PT_LOAD is chosen by file offset *and* by the execute bit: under lld one file page is
        mapped twice (read-only at p_vaddr 0 and executable at p_offset + 0x1000), so the file
        offset alone — what ascii-chat passes to llvm-symbolizer — names the wrong segment.
        """
        want_x = "x" in entry.perms
        best = None
        for seg in self.img.segments:
            floor_off = seg.offset & ~0xFFF
            if not (floor_off <= entry.offset < seg.offset + max(seg.filesz, 1)):
                continue
            if best is None or (seg.executable == want_x and best.executable != want_x):
                best = seg
        if best is None:
            return None
        return (best.vaddr & ~0xFFF) + (entry.offset - (best.offset & ~0xFFF))

    def vaddr_from_map(self, entry: MapEntry, address: int) -> int | None:
        start = self.map_start_vaddr(entry)
        return None if start is None else start + (address - entry.start)

    def bias_from_maps(self, entries: list[MapEntry]) -> int | None:
        """Load bias = runtime start of a mapping − the vaddr its first byte has in the file."""
        for e in sorted(entries, key=lambda x: ("x" not in x.perms, x.offset)):
            start = self.map_start_vaddr(e)
            if start is not None:
                return e.start - start
        return None

    def in_stubs(self, vaddr: int) -> bool:
        """Is `vaddr` in a PLT (ELF) or __stubs (Mach-O) section, where calls to other images go first?"""
        if self.kind == "elf":
            for name in (".plt", ".plt.sec", ".plt.got", ".iplt"):
                sec = self.img.sections.get(name)
                if sec is not None and sec.addr <= vaddr < sec.addr + sec.size:
                    return True
            return False
        stubs = self.img.sections.get("__stubs")
        return stubs is not None and stubs[1] <= vaddr < stubs[1] + stubs[3]

    def call_sites(self):
        if self._sites is None:
            from asciichat_diag.symbolize.bias import CallSiteMap

            segs = []
            for s in self.img.exec_segments():
                raw = self.img.read_vaddr(s.vaddr, s.filesz)
                if raw:
                    segs.append((s.vaddr, raw))
            self._sites = CallSiteMap(segs)
        return self._sites

    def index(self, use_cache: bool = True, progress: bool = False) -> SymbolIndex:
        if self._index is not None:
            return self._index
        key = cache_key(self.path, self.build_id, self.debug_path)
        if use_cache:
            self._index = load_index(key)
            if self._index is not None:
                return self._index
        with _progress(self.name, progress) as cb:
            self._index = self._build(cb)
        if use_cache:
            save_index(self._index, key)
        return self._index

    def _build(self, progress) -> SymbolIndex:
        from asciichat_diag.symbolize import build

        if self.kind == "elf":
            debug = elfio.parse_elf(self.debug_path) if self.debug_path else None
            return build.build_elf_index(self.img, debug, progress)
        from asciichat_diag.symbolize.macho import parse_macho

        dsym = parse_macho(self.debug_path, elfio.read_file(self.debug_path)) if self.debug_path else None
        return build.build_macho_index(self.img, dsym, progress)

    def to_vaddr_from_module_offset(self, offset: int) -> int:
        """`module+0xoff` as printed by ASan/glibc: offset from the load bias (ELF) or load address (Mach-O)."""
        if self.kind == "macho":
            return offset + self.img.text_vmaddr
        return offset


@contextlib.contextmanager
def _progress(name: str, enabled: bool) -> Iterator:
    """A rich progress bar on stderr while a cold index is built (only when stderr is a terminal)."""
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("indexing [bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task(name, total=1)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=max(total, 1))

        yield update
