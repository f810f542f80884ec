"""Build a SymbolIndex from DWARF (ELF or Mach-O sections) and from ELF/Mach-O symbol tables.

pyelftools' DWARFInfo iterates units and parses unit DIEs and line-program headers; dwarfwalk
decodes DIE trees and line programs. Names are demangled here, once, when the index is built.
"""

from __future__ import annotations

import contextlib
import gc
import io
import os
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from asciichat_diag._common import DiagError
from asciichat_diag.symbolize import dwarfwalk as dw
from asciichat_diag.symbolize.demangle import demangle
from asciichat_diag.symbolize.elfio import SHF_COMPRESSED, ElfImage
from asciichat_diag.symbolize.index import IndexBuilder, SymbolIndex

AT_COMP_DIR, AT_STMT_LIST = 0x1B, 0x10
NAME_ATTRS = (dw.AT_NAME, dw.AT_LINKAGE_NAME, dw.AT_MIPS_LINKAGE_NAME, dw.AT_ABSTRACT_ORIGIN, dw.AT_SPECIFICATION)
# Sections the DWARF reader uses, by their name without the leading "." (ELF) or "__" (Mach-O).
DWARF_SECTIONS = (
    "debug_info", "debug_abbrev", "debug_str", "debug_line", "debug_line_str", "debug_str_offsets",
    "debug_addr", "debug_ranges", "debug_rnglists", "debug_aranges", "debug_loc", "debug_loclists",
)  # fmt: skip
# Functions every image gets from crt files; the same name in two images means nothing.
CRT_FUNCTIONS = frozenset(
    {"_init", "_fini", "_start", "frame_dummy", "register_tm_clones", "deregister_tm_clones",
     "__do_global_dtors_aux", "__libc_csu_init", "__libc_csu_fini", "_dl_relocate_static_pie", "main"}
)  # fmt: skip
STT_FUNC, STT_FILE, STT_GNU_IFUNC = 2, 4, 10
STB_GLOBAL, STB_WEAK = 1, 2

ProgressFn = Callable[[int, int], None]


def elf_dwarf_sections(img: ElfImage) -> dict[str, bytes]:
    """Raw (decompressed) DWARF sections of an ELF image."""
    out: dict[str, bytes] = {}
    for name in DWARF_SECTIONS:
        sec = img.sections.get("." + name)
        if sec is None or sec.type == 8:
            continue
        raw = img.data[sec.offset : sec.offset + sec.size]
        if sec.flags & SHF_COMPRESSED:
            raw = _decompress(img, raw, name)
        out[name] = raw
    return out


def _decompress(img: ElfImage, raw: bytes, name: str) -> bytes:
    e = img.endian
    import struct

    if img.is64:
        ch_type, _res, _size, _align = struct.unpack_from(e + "IIQQ", raw, 0)
        body = raw[24:]
    else:
        ch_type, _size, _align = struct.unpack_from(e + "III", raw, 0)
        body = raw[12:]
    try:
        if ch_type == 1:
            return zlib.decompress(body)
        if ch_type == 2:
            import zstandard

            return zstandard.ZstdDecompressor().decompressobj().decompress(body)
    except (zlib.error, Exception) as exc:
        raise DiagError(f"{img.path}: corrupt DWARF (cannot decompress .{name}: {exc})") from exc
    raise DiagError(f"{img.path}: corrupt DWARF (.{name} uses unknown compression {ch_type})")


def make_dwarfinfo(sections: dict[str, bytes], little: bool, addr_size: int, arch: str):
    """A pyelftools DWARFInfo over raw section bytes (the way Mach-O __DWARF sections are read)."""
    from elftools.dwarf.dwarfinfo import DebugSectionDescriptor, DwarfConfig, DWARFInfo

    def desc(name: str):
        raw = sections.get(name)
        if raw is None:
            return None
        return DebugSectionDescriptor(io.BytesIO(raw), "." + name, None, len(raw), 0)

    return DWARFInfo(
        config=DwarfConfig(little_endian=little, machine_arch=arch, default_address_size=addr_size),
        debug_info_sec=desc("debug_info"),
        debug_aranges_sec=desc("debug_aranges"),
        debug_abbrev_sec=desc("debug_abbrev"),
        debug_frame_sec=None,
        eh_frame_sec=None,
        debug_str_sec=desc("debug_str"),
        debug_loc_sec=desc("debug_loc"),
        debug_ranges_sec=desc("debug_ranges"),
        debug_line_sec=desc("debug_line"),
        debug_pubtypes_sec=None,
        debug_pubnames_sec=None,
        debug_addr_sec=desc("debug_addr"),
        debug_str_offsets_sec=desc("debug_str_offsets"),
        debug_line_str_sec=desc("debug_line_str"),
        debug_loclists_sec=desc("debug_loclists"),
        debug_rnglists_sec=desc("debug_rnglists"),
        debug_sup_sec=None,
        gnu_debugaltlink_sec=None,
        debug_types_sec=None,
    )


def add_dwarf(
    builder: IndexBuilder,
    sections: dict[str, bytes],
    little: bool,
    addr_size: int,
    arch: str,
    min_valid_addr: int,
    where: str,
    progress: ProgressFn | None = None,
) -> None:
    """Index every compile unit. Raises DiagError('corrupt DWARF') when the bytes do not decode."""
    try:
        _add_dwarf(builder, sections, little, addr_size, arch, min_valid_addr, progress)
    except DiagError:
        raise
    except (dw.DwarfFormatError, IndexError, KeyError, ValueError, TypeError, AttributeError, AssertionError,
            UnicodeDecodeError, NotImplementedError, OverflowError) as exc:  # fmt: skip
        raise DiagError(f"{where}: corrupt DWARF ({type(exc).__name__}: {exc})") from exc
    except Exception as exc:  # pyelftools signals truncation with construct/ELFError exceptions
        if type(exc).__module__.startswith(("elftools", "construct")):
            raise DiagError(f"{where}: corrupt DWARF ({type(exc).__name__}: {exc})") from exc
        raise


# Units can be decoded in forked worker processes ($ASCIICHAT_DIAG_INDEX_JOBS, default 1): shipping the
# decoded units back costs about what the second core saves on 2 cores, so it is off unless asked for.
PARALLEL_MIN_INFO_BYTES = 2 << 20
_FORK_STATE: dict = {}


@dataclass
class UnitResult:
    """One compile unit, decoded: plain values only, so it can come back from a worker process."""

    end: int
    files: list[str]
    shift: int  # 0 for DWARF 5 file registers, 1 for DWARF 2-4
    lines: tuple | None  # (addresses, file registers, lines, columns) as numpy arrays
    subprograms: list[tuple[int, dict, list[tuple[int, int]]]]  # (offset, name attrs, pc ranges)
    inlines: list[tuple]  # (offset, function, parent, depth, ranges, origin, call file reg, line, column)


def _decode_unit(unit: tuple) -> UnitResult:
    """Walk one unit's DIEs and decode its line program (runs in the parent or in a worker)."""
    st = _FORK_STATE
    info, sections, little, min_valid_addr, di = st["info"], st["sections"], st["little"], st["min_valid"], st["di"]
    tomb_hi = st["tomb_hi"]
    cu_offset, die_offset, end, version, cu_addr_size, offset_size, abbrev_offset, cu_index = unit
    ctx = dw.UnitContext(
        info=info,
        unit_offset=cu_offset,
        version=version,
        addr_size=cu_addr_size,
        offset_size=offset_size,
        little=little,
        sections=sections,
        str_offsets_base=8 if offset_size == 4 else 16,
    )
    key = (abbrev_offset, cu_addr_size, offset_size, version)
    abbrevs = st["abbrevs"].get(key)
    if abbrevs is None:
        abbrevs = st["abbrevs"][key] = dw.parse_abbrevs(
            sections.get("debug_abbrev") or b"", abbrev_offset, cu_addr_size, offset_size, version
        )
    tattrs = dw.read_unit_die(ctx, abbrevs, die_offset)
    records = dw.walk_unit(ctx, abbrevs, die_offset, end)
    comp_dir = _s(tattrs.get(AT_COMP_DIR, ("",))[0])
    stmt_list = tattrs.get(AT_STMT_LIST, (None,))[0]

    def pc_ranges(attrs: dict) -> list[tuple[int, int]]:
        # Inline fast path for low_pc/high_pc; ranges below the text (tombstoned by the linker) are dropped.
        if dw.AT_RANGES in attrs:
            return [r for r in dw.die_ranges(ctx, attrs) if min_valid_addr <= r[0] < tomb_hi]
        low = attrs.get(dw.AT_LOW_PC)
        high = attrs.get(dw.AT_HIGH_PC)
        if low is None or high is None:
            return []
        lo = low[0]
        hi = high[0] + lo if high[1] in dw.CONSTANT_FORMS else high[0]
        return [(lo, hi)] if hi > lo and min_valid_addr <= lo < tomb_hi else []

    files: list[str] = []
    shift = 1
    lines = None
    lp = _line_program(di, st["cus"][cu_index], stmt_list) if stmt_list is not None else None
    if lp is not None:
        hdr = lp.header
        lversion = hdr["version"]
        dirs = [_s(d) for d in hdr["include_directory"]]
        for entry in hdr["file_entry"]:
            dir_index = entry["dir_index"] or 0
            if lversion >= 5:
                directory = dirs[dir_index] if dir_index < len(dirs) else ""
            else:
                directory = comp_dir if dir_index == 0 else (dirs[dir_index - 1] if dir_index - 1 < len(dirs) else "")
            files.append(dw.join_path(comp_dir, directory, _s(entry["name"])))
        # DWARF 5 file registers are 0-based, DWARF 2-4 registers are 1-based (0 = none).
        shift = 0 if lversion >= 5 else 1
        lh = dw.LineHeader(
            version=lversion,
            min_inst_len=hdr["minimum_instruction_length"],
            default_is_stmt=bool(hdr["default_is_stmt"]),
            line_base=hdr["line_base"],
            line_range=hdr["line_range"],
            opcode_base=hdr["opcode_base"],
            std_lengths=list(hdr["standard_opcode_lengths"]),
            program_start=lp.program_start_offset,
            program_end=lp.program_end_offset,
            files=files,
        )
        if lh.line_range == 0:
            raise dw.DwarfFormatError("line program with line_range 0")
        addr, reg, line, col = dw.decode_line_program(
            sections.get("debug_line") or b"", lh, cu_addr_size, little, min_valid_addr
        )
        lines = (
            np.asarray(addr, dtype=np.uint64),
            np.asarray(reg, dtype=np.int64),
            np.asarray(line, dtype=np.int32),
            np.asarray(col, dtype=np.int32),
        )
    subprograms = []
    inlines = []
    for offset, tag, func, depth, attrs, parent in records:
        if tag == dw.TAG_SUBPROGRAM:
            subprograms.append((offset, attrs, pc_ranges(attrs)))
        elif tag == dw.TAG_INLINED:
            # Kept even without ranges: llvm walks up the DIE tree from the innermost inlined DIE.
            inlines.append((
                offset, func, parent, depth, pc_ranges(attrs),
                attrs.get(dw.AT_ABSTRACT_ORIGIN, (None,))[0], attrs.get(dw.AT_CALL_FILE, (None,))[0],
                attrs.get(dw.AT_CALL_LINE, (0,))[0], attrs.get(dw.AT_CALL_COLUMN, (0,))[0],
            ))  # fmt: skip
    return UnitResult(end, files, shift, lines, subprograms, inlines)


def _decode_chunk(units: list[tuple]) -> list:
    """Worker entry point: decode several units; errors come back as values (one line for the user)."""
    try:
        return [_decode_unit(u) for u in units]
    except Exception as exc:  # re-raised in the parent, which turns it into 'corrupt DWARF'
        return [dw.DwarfFormatError(f"{type(exc).__name__}: {exc}")]


def _add_dwarf(builder, sections, little, addr_size, arch, min_valid_addr, progress) -> None:
    info = sections.get("debug_info")
    if not info:
        return
    di = make_dwarfinfo(sections, little, addr_size, arch)
    cus = []
    units = []
    for cu in di.iter_CUs():
        unit_type = cu.header.get("unit_type")
        if unit_type not in (None, "DW_UT_compile", "DW_UT_partial"):
            continue
        end = cu.cu_offset + cu.size
        if end > len(info):
            raise dw.DwarfFormatError(f"unit at {cu.cu_offset:#x} is longer than .debug_info")
        offset_size = 8 if cu.structs.dwarf_format == 64 else 4
        units.append((cu.cu_offset, cu.cu_die_offset, end, cu.header["version"], cu.header["address_size"],
                      offset_size, cu.header["debug_abbrev_offset"], len(cus)))  # fmt: skip
        cus.append(cu)
    _FORK_STATE.clear()
    _FORK_STATE.update(info=info, sections=sections, little=little, min_valid=min_valid_addr, di=di, cus=cus,
                       tomb_hi=(1 << (8 * addr_size)) - 2, abbrevs={})  # fmt: skip
    total = len(info)
    try:
        results = _decode_all(units, total, progress)
    finally:
        _FORK_STATE.clear()

    subprograms: dict[int, dict] = {}  # DIE offset -> name attributes, for name resolution across units
    functions: list[tuple[int, list[tuple[int, int]]]] = []
    inlines: dict[int, list[tuple]] = {}  # function DIE offset -> inline rows (origin unresolved)
    for res in results:
        file_ids = [builder.file_id(f) for f in res.files]
        shift = res.shift
        if res.lines is not None:
            addr, reg, line, col = res.lines
            # File registers -> global file ids, vectorised (a line table has ~10 rows per function).
            table = np.asarray([*file_ids, -1], dtype=np.int32)  # the extra -1 catches bad registers
            regs = reg - shift
            regs = np.where((regs < 0) | (regs >= len(file_ids)), len(file_ids), regs)
            gid = np.where(reg < 0, -1, table[regs]).astype(np.int32)
            builder.lines.append((addr, gid, line, col))
        for off, names, ranges in res.subprograms:
            subprograms[off] = names
            if ranges:
                functions.append((off, ranges))
        for off, func, parent, depth, ranges, origin, cf, call_line, call_col in res.inlines:
            call_file = _map_file(file_ids, cf - shift) if cf is not None else -1
            inlines.setdefault(func, []).append((off, parent, depth, ranges, origin, call_file, call_line, call_col))

    name_cache: dict[int, str] = {}

    def name_of(off: int | None) -> str:
        if off is None:
            return "??"
        got = name_cache.get(off)
        if got is None:
            got = name_cache[off] = _subprogram_name(subprograms, off) or "??"
        return got

    for func_off, ranges in functions:
        fid = builder.add_function(name_of(func_off), ranges)
        die_index: dict[int, int] = {}
        for off, parent, depth, iranges, origin, call_file, call_line, call_col in inlines.get(func_off, ()):
            die = builder.add_inline_die(name_of(origin), call_file, call_line, call_col, die_index.get(parent, -1))
            die_index[off] = die
            for lo, hi in iranges:
                builder.inlines[fid].append((lo, hi, depth, die))


def _decode_all(units: list[tuple], total: int, progress: ProgressFn | None) -> list[UnitResult]:
    """Decode every unit, split over worker processes when that pays (big DWARF, several cores)."""
    try:
        workers = max(1, min(int(os.environ.get("ASCIICHAT_DIAG_INDEX_JOBS", "1")), os.cpu_count() or 1))
    except ValueError:
        workers = 1
    if workers > 1 and total >= PARALLEL_MIN_INFO_BYTES and len(units) >= 2 * workers and _can_fork():
        import multiprocessing

        # Contiguous chunks, the parent's share last: it works while the children do.
        chunks = [units[i::workers] for i in range(workers)]
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(workers - 1) as pool:
            pending = [pool.apply_async(_decode_chunk, (c,)) for c in chunks[1:]]
            mine = _decode_chunk(chunks[0])
            parts = [mine, *(p.get() for p in pending)]
        results = []
        for part in parts:
            for r in part:
                if isinstance(r, Exception):
                    raise r
                results.append(r)
        results.sort(key=lambda r: r.end)
        if progress is not None:
            progress(total, total)
        return results
    results = []
    for unit in units:
        results.append(_decode_unit(unit))
        if progress is not None:
            progress(unit[2], total)
    return results


def _can_fork() -> bool:
    import multiprocessing

    return "fork" in multiprocessing.get_all_start_methods()


def _subprogram_name(subprograms: dict[int, dict], off: int) -> str | None:
    """llvm's rule: a linkage name anywhere along abstract_origin/specification, else the first DW_AT_name."""
    name = None
    for _hop in range(16):  # chains are 1-3 long; the bound stops a reference cycle in bad DWARF
        attrs = subprograms.get(off)
        if attrs is None:
            break
        for key in (dw.AT_LINKAGE_NAME, dw.AT_MIPS_LINKAGE_NAME):
            v = attrs.get(key)
            if v is not None and isinstance(v[0], str):
                return demangle(v[0])
        if name is None:
            v = attrs.get(dw.AT_NAME)
            if v is not None and isinstance(v[0], str):
                name = v[0]
        nxt = attrs.get(dw.AT_ABSTRACT_ORIGIN) or attrs.get(dw.AT_SPECIFICATION)
        if nxt is None:
            break
        off = nxt[0]
    return name


def _line_program(di, cu, stmt_list: int):
    """The unit's line program (header parsed by pyelftools) without re-parsing the unit DIE."""
    parse = getattr(di, "_parse_line_program_at_offset", None)
    if parse is not None:
        return parse(stmt_list, cu.structs)
    return di.line_program_for_CU(cu)  # older/newer pyelftools without the private helper


def _map_file(file_ids: list[int], index: int) -> int:
    return file_ids[index] if 0 <= index < len(file_ids) else -1


def _s(value) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value) if value is not None else ""


def _attr_str(attrs, name: str) -> str:
    attr = attrs.get(name)
    if attr is None:
        return ""
    return _s(attr.value)


# -- symbol tables ----------------------------------------------------------------------------------
def add_elf_symbols(builder: IndexBuilder, img: ElfImage, exec_ranges: list[tuple[int, int]]) -> None:
    """Function symbols from .symtab (or .dynsym when stripped) as address ranges."""
    for secname, strname in ((".symtab", ".strtab"), (".dynsym", ".dynstr")):
        raw = img.section_bytes(secname)
        strtab = img.section_bytes(strname)
        if raw and strtab:
            _add_elf_symtab(builder, img, raw, strtab, exec_ranges)
            return


def _add_elf_symtab(builder, img: ElfImage, raw: bytes, strtab: bytes, exec_ranges) -> None:
    e = img.endian
    if img.is64:
        dtype = np.dtype([("name", e + "u4"), ("info", "u1"), ("other", "u1"), ("shndx", e + "u2"),
                          ("value", e + "u8"), ("size", e + "u8")])  # fmt: skip
    else:
        dtype = np.dtype([("name", e + "u4"), ("value", e + "u4"), ("size", e + "u4"), ("info", "u1"),
                          ("other", "u1"), ("shndx", e + "u2")])  # fmt: skip
    count = len(raw) // dtype.itemsize
    syms = np.frombuffer(raw, dtype=dtype, count=count)
    stype = syms["info"] & 0xF
    bind = syms["info"] >> 4
    keep = ((stype == STT_FUNC) | (stype == STT_GNU_IFUNC)) & (syms["shndx"] != 0) & (syms["value"] != 0)
    # llvm-symbolizer names the STT_FILE before a *local* function symbol as its file (line 0).
    file_of = np.full(count, -1, dtype=np.int64)
    file_idx = np.nonzero(stype == STT_FILE)[0]
    if len(file_idx):
        pos = np.searchsorted(file_idx, np.arange(count), side="right") - 1
        local = (bind == 0) & (pos >= 0)
        file_of[local] = syms["name"][file_idx[pos[local]]]
    files_sel = file_of[keep]
    sel = syms[keep]
    binds = bind[keep]
    if len(sel) == 0:
        return
    # Prefer global over weak over local aliases at one address.
    rank = np.where(binds == STB_GLOBAL, 0, np.where(binds == STB_WEAK, 1, 2))
    order = np.lexsort((rank, sel["value"]))
    values = sel["value"][order].astype(np.uint64)
    sizes = sel["size"][order].astype(np.uint64)
    names_off = sel["name"][order]
    binds = binds[order]
    files_sel = files_sel[order]
    uniq_vals = np.unique(values)
    for i in range(len(values)):
        value = int(values[i])
        name = _cstr(strtab, int(names_off[i]))
        if int(binds[i]) in (STB_GLOBAL, STB_WEAK) and name not in CRT_FUNCTIONS:
            builder.defined.add(demangle(name))
        if i > 0 and int(values[i - 1]) == value:
            continue  # an alias of the symbol just added
        size = int(sizes[i])
        if size == 0:
            j = int(np.searchsorted(uniq_vals, np.uint64(value), side="right"))
            nxt = int(uniq_vals[j]) if j < len(uniq_vals) else None
            end = _exec_end(exec_ranges, value)
            size = (min(nxt, end) if nxt is not None and end is not None else (nxt or end or value + 1)) - value
        fo = int(files_sel[i])
        builder.add_symbol(demangle(name), value, value + max(size, 1), _cstr(strtab, fo) if fo >= 0 else None)


def _exec_end(ranges: list[tuple[int, int]], value: int) -> int | None:
    for lo, hi in ranges:
        if lo <= value < hi:
            return hi
    return None


def _cstr(data: bytes, off: int) -> str:
    end = data.find(b"\0", off)
    return data[off : end if end >= 0 else len(data)].decode("utf-8", "replace")


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while an index is built.

    The build allocates a few hundred thousand tuples and dicts and frees nothing in cycles; with the
    collector on, repeated full collections over that growing heap cost about a third of the time.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def build_elf_index(img: ElfImage, debug: ElfImage | None, progress: ProgressFn | None = None) -> SymbolIndex:
    """Index an ELF binary, taking DWARF (and the richer symbol table) from its debug file when given."""
    with _gc_paused():
        return _build_elf_index(img, debug, progress)


def _build_elf_index(img: ElfImage, debug: ElfImage | None, progress: ProgressFn | None) -> SymbolIndex:
    builder = IndexBuilder()
    exec_segs = img.exec_segments()
    exec_ranges = [(s.vaddr, s.vaddr + s.memsz) for s in exec_segs]
    min_valid = min((lo for lo, _ in exec_ranges), default=1) or 1
    dwarf_src = debug if debug is not None and debug.has_dwarf else (img if img.has_dwarf else None)
    if dwarf_src is not None:
        arch = {62: "x64", 3: "x86", 183: "AArch64", 40: "ARM"}.get(dwarf_src.machine, "x64")
        add_dwarf(
            builder,
            elf_dwarf_sections(dwarf_src),
            dwarf_src.little,
            8 if dwarf_src.is64 else 4,
            arch,
            min_valid,
            dwarf_src.path,
            progress,
        )
    sym_src = img
    if debug is not None and debug.section_bytes(".symtab") and not img.section_bytes(".symtab"):
        sym_src = debug
    add_elf_symbols(builder, sym_src, exec_ranges)
    if sym_src is not img and img.section_bytes(".dynsym"):
        extra = IndexBuilder()
        _add_elf_symtab(extra, img, img.section_bytes(".dynsym"), img.section_bytes(".dynstr") or b"", exec_ranges)
        builder.defined |= extra.defined
    meta = {"format": "elf", "has_dwarf": dwarf_src is not None, "path": img.path,
            "debug_path": debug.path if debug is not None else None}  # fmt: skip
    return builder.freeze(meta)


def build_macho_index(img, dsym, progress: ProgressFn | None = None) -> SymbolIndex:
    """Index a Mach-O binary: DWARF from its dSYM (or the binary itself), symbols from LC_SYMTAB."""
    with _gc_paused():
        return _build_macho_index(img, dsym, progress)


def _build_macho_index(img, dsym, progress: ProgressFn | None) -> SymbolIndex:
    builder = IndexBuilder()
    dwarf_src = dsym if dsym is not None and dsym.has_dwarf else (img if img.has_dwarf else None)
    exec_ranges = [(s.vaddr, s.vaddr + s.memsz) for s in img.exec_segments()]
    min_valid = min((lo for lo, _ in exec_ranges), default=1) or 1
    if dwarf_src is not None:
        arch = "AArch64" if dwarf_src.cputype == 0x0100000C else "x64"
        add_dwarf(builder, dwarf_src.dwarf_sections(), True, 8, arch, min_valid, dwarf_src.path, progress)
    sym_src = img if img.symtab is not None else dsym
    if sym_src is not None:
        for name, start, end, external in sym_src.function_symbols():
            builder.add_symbol(demangle(name), start, end)
            if external:
                builder.defined.add(demangle(name))
    meta = {"format": "macho", "has_dwarf": dwarf_src is not None, "path": img.path,
            "debug_path": dsym.path if dsym is not None else None}  # fmt: skip
    return builder.freeze(meta)
