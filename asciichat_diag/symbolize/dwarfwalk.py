"""Fast DWARF 4/5 readers for what a symbolizer needs: subprogram/inline DIE ranges and line-table rows.

pyelftools parses the unit headers, the unit DIE and the line-program headers (the parts with many
forms and few bytes); the hot loops — every DIE of every unit and every line-program opcode — run
here over the raw section bytes with per-abbreviation "plans" that skip uninteresting attributes in
one step. This is what keeps a cold index of a 20,000-function binary within seconds.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field

# Tags and attributes we read; everything else is skipped by size.
TAG_COMPILE_UNIT = 0x11
TAG_PARTIAL_UNIT = 0x3C
TAG_SUBPROGRAM = 0x2E
TAG_INLINED = 0x1D
AT_NAME = 0x03
AT_LOW_PC = 0x11
AT_HIGH_PC = 0x12
AT_ABSTRACT_ORIGIN = 0x31
AT_SPECIFICATION = 0x47
AT_RANGES = 0x55
AT_CALL_COLUMN = 0x57
AT_CALL_FILE = 0x58
AT_CALL_LINE = 0x59
AT_LINKAGE_NAME = 0x6E
AT_MIPS_LINKAGE_NAME = 0x2007
WANTED = {
    TAG_SUBPROGRAM: {AT_NAME, AT_LOW_PC, AT_HIGH_PC, AT_ABSTRACT_ORIGIN, AT_SPECIFICATION, AT_RANGES,
                     AT_LINKAGE_NAME, AT_MIPS_LINKAGE_NAME},
    TAG_INLINED: {AT_LOW_PC, AT_HIGH_PC, AT_ABSTRACT_ORIGIN, AT_RANGES, AT_CALL_FILE, AT_CALL_LINE,
                  AT_CALL_COLUMN},
    TAG_COMPILE_UNIT: {AT_LOW_PC},
    TAG_PARTIAL_UNIT: {AT_LOW_PC},
}  # fmt: skip

# Form codes (DWARF 5 section 7.5.6) grouped by how their value is encoded.
F_ADDR, F_BLOCK2, F_BLOCK4, F_DATA2, F_DATA4, F_DATA8, F_STRING, F_BLOCK, F_BLOCK1 = 1, 3, 4, 5, 6, 7, 8, 9, 10
F_DATA1, F_FLAG, F_SDATA, F_STRP, F_UDATA, F_REF_ADDR, F_REF1, F_REF2, F_REF4, F_REF8 = range(0x0B, 0x15)
F_REF_UDATA, F_INDIRECT, F_SEC_OFFSET, F_EXPRLOC, F_FLAG_PRESENT = 0x15, 0x16, 0x17, 0x18, 0x19
F_STRX, F_ADDRX, F_REF_SUP4, F_STRP_SUP, F_DATA16, F_LINE_STRP, F_REF_SIG8, F_IMPLICIT_CONST = range(0x1A, 0x22)
F_LOCLISTX, F_RNGLISTX, F_REF_SUP8 = 0x22, 0x23, 0x24
F_STRX1, F_STRX2, F_STRX3, F_STRX4, F_ADDRX1, F_ADDRX2, F_ADDRX3, F_ADDRX4 = range(0x25, 0x2D)
F_GNU_ADDR_INDEX, F_GNU_STR_INDEX, F_GNU_REF_ALT, F_GNU_STRP_ALT = 0x1F01, 0x1F02, 0x1F20, 0x1F21
CONSTANT_FORMS = {F_DATA1, F_DATA2, F_DATA4, F_DATA8, F_UDATA, F_SDATA, F_IMPLICIT_CONST}


class DwarfFormatError(ValueError):
    """The DWARF bytes do not decode (truncated section, unknown form, bad offsets)."""


def uleb(data: bytes, pos: int) -> tuple[int, int]:
    b = data[pos]
    if b < 0x80:
        return b, pos + 1
    result = b & 0x7F
    shift = 7
    pos += 1
    while True:
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


def sleb(data: bytes, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            if b & 0x40:
                result -= 1 << shift
            return result, pos


def fixed_size(form: int, addr_size: int, offset_size: int, version: int) -> int | None:
    """Byte size of a form whose size does not depend on its value, else None."""
    if form in (F_FLAG_PRESENT, F_IMPLICIT_CONST):
        return 0
    if form in (F_DATA1, F_REF1, F_FLAG, F_STRX1, F_ADDRX1):
        return 1
    if form in (F_DATA2, F_REF2, F_STRX2, F_ADDRX2):
        return 2
    if form in (F_STRX3, F_ADDRX3):
        return 3
    if form in (F_DATA4, F_REF4, F_REF_SUP4, F_STRX4, F_ADDRX4):
        return 4
    if form in (F_DATA8, F_REF8, F_REF_SIG8, F_REF_SUP8):
        return 8
    if form == F_DATA16:
        return 16
    if form == F_ADDR:
        return addr_size
    if form == F_REF_ADDR:
        return addr_size if version <= 2 else offset_size
    if form in (F_STRP, F_SEC_OFFSET, F_LINE_STRP, F_STRP_SUP, F_GNU_REF_ALT, F_GNU_STRP_ALT):
        return offset_size
    return None


@dataclass
class Abbrev:
    tag: int
    children: bool
    # plan: tuple of steps; an int = skip that many bytes, a tuple (attr, form, implicit, size, kind) = read
    # or skip (attr -1). kind 1: plain integer of `size` bytes, 2: CU-relative reference, 3: strx of `size`
    # bytes, 4: addrx of `size` bytes, 0: anything else (read_value).
    plan: tuple
    fixed: int | None = None  # total size when every attribute is skipped and fixed-size (one step)
    wanted: bool = False
    specs: tuple = ()  # every (attr, form, implicit) in order, for the unit DIE reader


ULEB_FORMS = {F_UDATA, F_REF_UDATA, F_SDATA, F_STRX, F_ADDRX, F_RNGLISTX, F_LOCLISTX, F_GNU_ADDR_INDEX,
              F_GNU_STR_INDEX}  # fmt: skip
PLAIN_INT_FORMS = {F_DATA1, F_DATA2, F_DATA4, F_DATA8, F_SEC_OFFSET, F_ADDR, F_FLAG}
REF_FORMS = {F_REF1, F_REF2, F_REF4, F_REF8}


def parse_abbrevs(data: bytes, offset: int, addr_size: int, offset_size: int, version: int) -> dict[int, Abbrev]:
    table: dict[int, Abbrev] = {}
    pos = offset
    while True:
        code, pos = uleb(data, pos)
        if code == 0:
            return table
        tag, pos = uleb(data, pos)
        children = data[pos] != 0
        pos += 1
        wanted = WANTED.get(tag, ())
        plan: list = []
        specs: list = []
        skip = 0
        while True:
            attr, pos = uleb(data, pos)
            form, pos = uleb(data, pos)
            if attr == 0 and form == 0:
                break
            implicit = 0
            if form == F_IMPLICIT_CONST:
                implicit, pos = sleb(data, pos)
            specs.append((attr, form, implicit))
            size = fixed_size(form, addr_size, offset_size, version)
            if attr not in wanted and size is not None:
                skip += size
                continue
            if skip:
                plan.append(skip)
                skip = 0
            kind = 0
            if attr not in wanted:
                if form in ULEB_FORMS:
                    kind = -1
                elif form in (F_BLOCK, F_EXPRLOC):
                    kind = -2
                elif form == F_STRING:
                    kind = -3
            elif size is not None:
                if form in PLAIN_INT_FORMS:
                    kind = 1
                elif form in REF_FORMS:
                    kind = 2
                elif F_STRX1 <= form <= F_STRX4:
                    kind = 3
                elif F_ADDRX1 <= form <= F_ADDRX4:
                    kind = 4
            plan.append((attr if attr in wanted else -1, form, implicit, size or 0, kind))
        if skip:
            plan.append(skip)
        fixed = None
        if not wanted:
            fixed = plan[0] if len(plan) == 1 and isinstance(plan[0], int) else (0 if not plan else None)
        table[code] = Abbrev(tag, children, tuple(plan), fixed, bool(wanted), tuple(specs))


@dataclass
class UnitContext:
    """Per-unit values the form decoders need."""

    info: bytes
    unit_offset: int
    version: int
    addr_size: int
    offset_size: int
    little: bool
    sections: dict[str, bytes]
    str_offsets_base: int = 8
    addr_base: int = 8
    rnglists_base: int = 0
    base_address: int = 0

    def __post_init__(self) -> None:
        self._addr = self.sections.get("debug_addr") or b""
        self._str_offsets = self.sections.get("debug_str_offsets") or b""
        self._str = self.sections.get("debug_str") or b""
        self._order = "little" if self.little else "big"

    def read_addr_index(self, index: int) -> int:
        raw = self._addr
        at = self.addr_base + index * self.addr_size
        if at + self.addr_size > len(raw):
            raise DwarfFormatError(f"address index {index} outside .debug_addr")
        return int.from_bytes(raw[at : at + self.addr_size], "little" if self.little else "big")

    def read_str_index(self, index: int) -> str:
        raw = self._str_offsets
        at = self.str_offsets_base + index * self.offset_size
        if at + self.offset_size > len(raw):
            raise DwarfFormatError(f"string index {index} outside .debug_str_offsets")
        off = int.from_bytes(raw[at : at + self.offset_size], self._order)
        strs = self._str
        end = strs.find(b"\0", off)
        if end < 0:
            raise DwarfFormatError(f"string offset {off:#x} outside .debug_str")
        return strs[off:end].decode("utf-8", "replace")


def cstr(data: bytes, off: int) -> str:
    end = data.find(b"\0", off)
    if end < 0 or off < 0:
        raise DwarfFormatError(f"string offset {off:#x} outside its section")
    return data[off:end].decode("utf-8", "replace")


def read_value(ctx: UnitContext, form: int, implicit: int, pos: int) -> tuple[object, int]:
    """Decode one attribute value; returns (value, next position). Strings come back as str."""
    data = ctx.info
    order = "little" if ctx.little else "big"
    if form == F_INDIRECT:
        form, pos = uleb(data, pos)
        return read_value(ctx, form, 0, pos)
    if form == F_IMPLICIT_CONST:
        return implicit, pos
    if form == F_FLAG_PRESENT:
        return True, pos
    if form in (F_UDATA, F_REF_UDATA):
        value, pos = uleb(data, pos)
        return (value + ctx.unit_offset if form == F_REF_UDATA else value), pos
    if form == F_SDATA:
        return sleb(data, pos)
    if form == F_STRING:
        end = data.index(b"\0", pos)
        return data[pos:end].decode("utf-8", "replace"), end + 1
    if form in (F_STRX, F_GNU_STR_INDEX):
        index, pos = uleb(data, pos)
        return ctx.read_str_index(index), pos
    if F_STRX1 <= form <= F_STRX4:
        n = form - F_STRX1 + 1
        return ctx.read_str_index(int.from_bytes(data[pos : pos + n], order)), pos + n
    if form in (F_ADDRX, F_GNU_ADDR_INDEX):
        index, pos = uleb(data, pos)
        return ctx.read_addr_index(index), pos
    if F_ADDRX1 <= form <= F_ADDRX4:
        n = form - F_ADDRX1 + 1
        return ctx.read_addr_index(int.from_bytes(data[pos : pos + n], order)), pos + n
    if form in (F_RNGLISTX, F_LOCLISTX):
        return uleb(data, pos)
    if form in (F_BLOCK, F_EXPRLOC):
        n, pos = uleb(data, pos)
        return data[pos : pos + n], pos + n
    if form == F_BLOCK1:
        n = data[pos]
        return data[pos + 1 : pos + 1 + n], pos + 1 + n
    if form == F_BLOCK2:
        n = int.from_bytes(data[pos : pos + 2], order)
        return data[pos + 2 : pos + 2 + n], pos + 2 + n
    if form == F_BLOCK4:
        n = int.from_bytes(data[pos : pos + 4], order)
        return data[pos + 4 : pos + 4 + n], pos + 4 + n
    size = fixed_size(form, ctx.addr_size, ctx.offset_size, ctx.version)
    if size is None:
        raise DwarfFormatError(f"unknown DWARF form {form:#x}")
    value = int.from_bytes(data[pos : pos + size], order)
    if form in (F_REF1, F_REF2, F_REF4, F_REF8):
        value += ctx.unit_offset
    elif form == F_STRP:
        value = cstr(ctx.sections.get("debug_str") or b"", value)
    elif form == F_LINE_STRP:
        value = cstr(ctx.sections.get("debug_line_str") or b"", value)
    return value, pos + size


def skip_value(ctx: UnitContext, form: int, pos: int) -> int:
    data = ctx.info
    if form in (F_UDATA, F_REF_UDATA, F_SDATA, F_STRX, F_ADDRX, F_RNGLISTX, F_LOCLISTX, F_GNU_ADDR_INDEX,
                F_GNU_STR_INDEX):  # fmt: skip
        while data[pos] & 0x80:
            pos += 1
        return pos + 1
    if form == F_STRING:
        return data.index(b"\0", pos) + 1
    if form in (F_BLOCK, F_EXPRLOC):
        n, pos = uleb(data, pos)
        return pos + n
    if form == F_INDIRECT:
        form, pos = uleb(data, pos)
        return skip_value(ctx, form, pos)
    return read_value(ctx, form, 0, pos)[1]


@dataclass
class DieRecord:
    """A subprogram or inlined_subroutine DIE with the attributes a symbolizer needs."""

    offset: int
    tag: int
    func: int  # offset of the enclosing concrete subprogram (itself for a subprogram)
    depth: int  # inline nesting depth: 0 for the subprogram, 1 for an inlined call in it, ...
    attrs: dict = field(default_factory=dict)
    parent: int = -1  # offset of the enclosing inlined_subroutine DIE (-1: the subprogram itself)


def walk_unit(ctx: UnitContext, abbrevs: dict[int, Abbrev], start: int, end: int) -> list[tuple]:
    """Every subprogram and inlined_subroutine DIE of one unit, with their nesting.

    Each record is a plain tuple laid out like DieRecord (offset, tag, func, depth, attrs, parent):
    tuples are several times cheaper to make than objects, and a cold index makes ~100,000 of them.

    The hot loop of a cold index: abbreviations whose attributes are all skipped and fixed-size
    advance in one step, and the common forms of wanted attributes are decoded inline.
    """
    data = ctx.info
    order = "little" if ctx.little else "big"
    unit_offset = ctx.unit_offset
    read_str_index = ctx.read_str_index
    read_addr_index = ctx.read_addr_index
    from_bytes = int.from_bytes
    table: list[Abbrev | None] = [None] * (max(abbrevs, default=0) + 1)
    for code, ab in abbrevs.items():
        table[code] = ab
    ntable = len(table)
    # Most DIEs (parameters, variables, call sites, types) need one step: skip `fixed` bytes, maybe open a
    # scope. fast[code] = fixed * 2 + has_children for those, -1 for the rest.
    fast = [-1] * ntable
    for code, ab in abbrevs.items():
        if not ab.wanted and ab.fixed is not None:
            fast[code] = ab.fixed * 2 + (1 if ab.children else 0)
    out: list[tuple] = []
    stack: list[tuple[int, int, int]] = []  # (function offset, inline depth, inline DIE offset) per open parent
    cur = (-1, 0, -1)
    push = stack.append
    pop = stack.pop
    pos = start
    try:
        while pos < end:
            die_off = pos
            code = data[pos]
            if code < 0x80:
                pos += 1
            else:
                code, pos = uleb(data, pos)
            if code == 0:
                if stack:
                    cur = pop()
                continue
            if code < ntable:
                step = fast[code]
                if step >= 0:
                    pos += step >> 1
                    if step & 1:
                        push(cur)
                    continue
            ab = table[code] if code < ntable else None
            if ab is None:
                raise DwarfFormatError(f"DIE at {die_off:#x} uses unknown abbreviation {code}")
            if not ab.wanted:
                fixed = ab.fixed
                if fixed is not None:
                    pos += fixed
                else:
                    for step in ab.plan:
                        if step.__class__ is int:
                            pos += step
                            continue
                        kind = step[4]
                        if kind == -1:
                            while data[pos] & 0x80:
                                pos += 1
                            pos += 1
                        elif kind == -2:
                            n, pos = uleb(data, pos)
                            pos += n
                        elif kind == -3:
                            pos = data.index(b"\0", pos) + 1
                        else:
                            pos = skip_value(ctx, step[1], pos)
                if ab.children:
                    push(cur)
                continue
            tag = ab.tag
            attrs: dict = {}
            for step in ab.plan:
                if step.__class__ is int:
                    pos += step
                    continue
                attr, form, implicit, size, kind = step
                if kind == 1:
                    value = from_bytes(data[pos : pos + size], order)
                    pos += size
                elif kind == 2:
                    value = from_bytes(data[pos : pos + size], order) + unit_offset
                    pos += size
                elif kind == 3:
                    value = read_str_index(from_bytes(data[pos : pos + size], order))
                    pos += size
                elif kind == 4:
                    value = read_addr_index(from_bytes(data[pos : pos + size], order))
                    pos += size
                elif kind == -1:
                    while data[pos] & 0x80:
                        pos += 1
                    pos += 1
                    continue
                elif kind == -2:
                    n, pos = uleb(data, pos)
                    pos += n
                    continue
                elif attr < 0:
                    pos = skip_value(ctx, form, pos)
                    continue
                else:
                    value, pos = read_value(ctx, form, implicit, pos)
                attrs[attr] = (value, form)
            if tag == TAG_SUBPROGRAM:
                out.append((die_off, tag, die_off, 0, attrs, -1))
                new = (die_off, 0, -1)
            elif tag == TAG_INLINED:
                cur_func, cur_depth, cur_inl = cur
                out.append((die_off, tag, cur_func, cur_depth + 1, attrs, cur_inl))
                new = (cur_func, cur_depth + 1, die_off)
            else:  # the unit DIE: its low_pc is the base address of its range lists
                low = attrs.get(AT_LOW_PC)
                if low is not None:
                    ctx.base_address = low[0]
                new = cur
            if ab.children:
                push(cur)
                cur = new
    except IndexError as exc:
        raise DwarfFormatError(f"unit at {ctx.unit_offset:#x} runs past the end of .debug_info") from exc
    return out


STRX_FORMS = {F_STRX, F_STRX1, F_STRX2, F_STRX3, F_STRX4, F_GNU_STR_INDEX}
ADDRX_FORMS = {F_ADDRX, F_ADDRX1, F_ADDRX2, F_ADDRX3, F_ADDRX4, F_GNU_ADDR_INDEX}


def read_unit_die(ctx: UnitContext, abbrevs: dict[int, Abbrev], pos: int) -> dict[int, tuple[object, int]]:
    """Attributes of the unit DIE. String and address indices are resolved only after the
    DW_AT_*_base attributes (which may come later in the same DIE) have been read into `ctx`."""
    data = ctx.info
    code, pos = uleb(data, pos)
    ab = abbrevs.get(code)
    if ab is None:
        raise DwarfFormatError(f"unit DIE at {pos:#x} uses unknown abbreviation {code}")
    raw: dict[int, tuple[object, int]] = {}
    for attr, form, implicit in ab.specs:
        if form in STRX_FORMS or form in ADDRX_FORMS:
            if form in (F_STRX, F_ADDRX, F_GNU_STR_INDEX, F_GNU_ADDR_INDEX):
                value, pos = uleb(data, pos)
            else:
                n = (form - F_STRX1 + 1) if form in STRX_FORMS else (form - F_ADDRX1 + 1)
                value = int.from_bytes(data[pos : pos + n], "little" if ctx.little else "big")
                pos += n
            raw[attr] = (("index", value), form)
        else:
            value, pos = read_value(ctx, form, implicit, pos)
            raw[attr] = (value, form)
    if 0x72 in raw:  # DW_AT_str_offsets_base
        ctx.str_offsets_base = raw[0x72][0]
    if 0x73 in raw:  # DW_AT_addr_base
        ctx.addr_base = raw[0x73][0]
    elif 0x2134 in raw:  # DW_AT_GNU_addr_base
        ctx.addr_base = raw[0x2134][0]
    if 0x74 in raw:  # DW_AT_rnglists_base
        ctx.rnglists_base = raw[0x74][0]
    out = {}
    for attr, (value, form) in raw.items():
        if isinstance(value, tuple):
            value = ctx.read_str_index(value[1]) if form in STRX_FORMS else ctx.read_addr_index(value[1])
        out[attr] = (value, form)
    return out


def read_ranges(ctx: UnitContext, value: int, form: int) -> list[tuple[int, int]]:
    """Decode DW_AT_ranges: .debug_ranges (v4) or .debug_rnglists (v5, offset or rnglistx)."""
    order = "little" if ctx.little else "big"
    asz = ctx.addr_size
    out: list[tuple[int, int]] = []
    if ctx.version < 5:
        raw = ctx.sections.get("debug_ranges") or b""
        base = ctx.base_address
        pos = value
        max_addr = (1 << (8 * asz)) - 1
        while pos + 2 * asz <= len(raw):
            lo = int.from_bytes(raw[pos : pos + asz], order)
            hi = int.from_bytes(raw[pos + asz : pos + 2 * asz], order)
            pos += 2 * asz
            if lo == 0 and hi == 0:
                break
            if lo == max_addr:
                base = hi
                continue
            out.append((base + lo, base + hi))
        return out
    raw = ctx.sections.get("debug_rnglists") or b""
    if form == F_RNGLISTX:
        at = ctx.rnglists_base + value * ctx.offset_size
        pos = ctx.rnglists_base + int.from_bytes(raw[at : at + ctx.offset_size], order)
    else:
        pos = value
    base = ctx.base_address
    try:
        while True:
            kind = raw[pos]
            pos += 1
            if kind == 0:  # end_of_list
                break
            if kind == 1:  # base_addressx
                idx, pos = uleb(raw, pos)
                base = ctx.read_addr_index(idx)
            elif kind == 2:  # startx_endx
                a, pos = uleb(raw, pos)
                b, pos = uleb(raw, pos)
                out.append((ctx.read_addr_index(a), ctx.read_addr_index(b)))
            elif kind == 3:  # startx_length
                a, pos = uleb(raw, pos)
                n, pos = uleb(raw, pos)
                start = ctx.read_addr_index(a)
                out.append((start, start + n))
            elif kind == 4:  # offset_pair
                a, pos = uleb(raw, pos)
                b, pos = uleb(raw, pos)
                out.append((base + a, base + b))
            elif kind == 5:  # base_address
                base = int.from_bytes(raw[pos : pos + asz], order)
                pos += asz
            elif kind == 6:  # start_end
                a = int.from_bytes(raw[pos : pos + asz], order)
                b = int.from_bytes(raw[pos + asz : pos + 2 * asz], order)
                pos += 2 * asz
                out.append((a, b))
            elif kind == 7:  # start_length
                a = int.from_bytes(raw[pos : pos + asz], order)
                n, pos = uleb(raw, pos + asz)
                out.append((a, a + n))
            else:
                raise DwarfFormatError(f"unknown range list entry kind {kind}")
    except IndexError as exc:
        raise DwarfFormatError("range list runs past the end of .debug_rnglists") from exc
    return out


def die_ranges(ctx: UnitContext, attrs: dict) -> list[tuple[int, int]]:
    """The [low, high) address ranges of a DIE (low_pc/high_pc, or ranges)."""
    rng = attrs.get(AT_RANGES)
    if rng is not None:
        return [r for r in read_ranges(ctx, rng[0], rng[1]) if r[1] > r[0]]
    low = attrs.get(AT_LOW_PC)
    high = attrs.get(AT_HIGH_PC)
    if low is None or high is None:
        return []
    lo = low[0]
    hi = high[0] + lo if high[1] in CONSTANT_FORMS else high[0]
    return [(lo, hi)] if hi > lo else []


@dataclass
class LineHeader:
    """The part of a line-program header the opcode decoder needs."""

    version: int
    min_inst_len: int
    default_is_stmt: bool
    line_base: int
    line_range: int
    opcode_base: int
    std_lengths: list[int]
    program_start: int
    program_end: int
    files: list[str]  # absolute paths, indexed like the line program's file register


def decode_line_program(
    data: bytes, hdr: LineHeader, addr_size: int, little: bool, min_valid_addr: int
) -> tuple[list[int], list[int], list[int], list[int]]:
    """Rows of one line program as parallel lists (address, file register, line, column).

    A row with file register -1 marks the end of a sequence. Sequences that start below
    `min_valid_addr` were discarded by the linker (tombstoned to 0) and are dropped.
    """
    order = "little" if little else "big"
    out_addr: list[int] = []
    out_file: list[int] = []
    out_line: list[int] = []
    out_col: list[int] = []
    # Rows go straight to the output; a sequence the linker discarded is cut off again at its end.
    add_a, add_f, add_l, add_c = out_addr.append, out_file.append, out_line.append, out_col.append
    opcode_base = hdr.opcode_base
    line_range = hdr.line_range
    min_inst = hdr.min_inst_len
    # Special opcodes precomputed: address and line advance per opcode.
    special_addr = [0] * 256
    special_line = [0] * 256
    for op in range(opcode_base, 256):
        adj = op - opcode_base
        special_addr[op] = (adj // line_range) * min_inst
        special_line[op] = hdr.line_base + adj % line_range
    const_add = special_addr[255]
    std_lengths = hdr.std_lengths
    address, file, line, col = 0, 1, 1, 0
    seq_start = 0
    pos = hdr.program_start
    end = hdr.program_end
    try:
        while pos < end:
            op = data[pos]
            pos += 1
            if op >= opcode_base:
                address += special_addr[op]
                line += special_line[op]
                add_a(address)
                add_f(file)
                add_l(line)
                add_c(col)
            elif op == 0:
                length, pos = uleb(data, pos)
                sub = data[pos]
                if sub == 1:  # end_sequence
                    n = len(out_addr)
                    if n > seq_start and out_addr[seq_start] >= min_valid_addr and address > out_addr[seq_start]:
                        add_a(address)
                        add_f(-1)
                        add_l(0)
                        add_c(0)
                    else:
                        del out_addr[seq_start:], out_file[seq_start:], out_line[seq_start:], out_col[seq_start:]
                    seq_start = len(out_addr)
                    address, file, line, col = 0, 1, 1, 0
                elif sub == 2:  # set_address
                    address = int.from_bytes(data[pos + 1 : pos + length], order)
                pos += length
            elif op == 1:  # copy
                add_a(address)
                add_f(file)
                add_l(line)
                add_c(col)
            elif op == 2:  # advance_pc
                b = data[pos]
                if b < 0x80:
                    pos += 1
                    address += b * min_inst
                else:
                    n, pos = uleb(data, pos)
                    address += n * min_inst
            elif op == 3:  # advance_line
                n, pos = sleb(data, pos)
                line += n
            elif op == 4:  # set_file
                file, pos = uleb(data, pos)
            elif op == 5:  # set_column
                b = data[pos]
                if b < 0x80:
                    pos += 1
                    col = b
                else:
                    col, pos = uleb(data, pos)
            elif op == 8:  # const_add_pc
                address += const_add
            elif op == 9:  # fixed_advance_pc
                address += int.from_bytes(data[pos : pos + 2], order)
                pos += 2
            elif op in (6, 7, 10, 11):  # negate_stmt, basic_block, prologue_end, epilogue_begin
                pass
            else:  # set_isa and opcodes this decoder does not know: skip their ULEB operands
                for _ in range(std_lengths[op - 1] if op - 1 < len(std_lengths) else 0):
                    _n, pos = uleb(data, pos)
        # Rows after the last end_sequence belong to no sequence: drop them.
        del out_addr[seq_start:], out_file[seq_start:], out_line[seq_start:], out_col[seq_start:]
    except IndexError as exc:
        raise DwarfFormatError("line program runs past the end of .debug_line") from exc
    return out_addr, out_file, out_line, out_col


def join_path(comp_dir: str, directory: str, name: str) -> str:
    """The absolute file name llvm-symbolizer prints: comp_dir/dir/name unless one of them is absolute."""
    if os.path.isabs(name):
        return name
    path = os.path.join(directory, name) if directory else name
    if not os.path.isabs(path) and comp_dir:
        path = os.path.join(comp_dir, path)
    return path


def unpack_u(data: bytes, pos: int, size: int, little: bool) -> int:
    return struct.unpack_from(("<" if little else ">") + {1: "B", 2: "H", 4: "I", 8: "Q"}[size], data, pos)[0]
