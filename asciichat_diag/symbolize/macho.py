"""Mach-O binaries and dSYM bundles via macholib: segments, LC_UUID, symbols and __DWARF sections.

The __DWARF sections are handed to pyelftools' DWARFInfo as raw section descriptors (see
build.make_dwarfinfo). Lookup addresses follow the atos convention: runtime − load address +
__TEXT vmaddr.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from asciichat_diag._common import DiagError
from asciichat_diag.symbolize.elfio import Segment, SegmentMap

CPU_X86_64 = 0x01000007
CPU_ARM64 = 0x0100000C
VM_PROT_EXECUTE = 4
N_STAB, N_TYPE, N_SECT, N_EXT = 0xE0, 0x0E, 0x0E, 0x01


@dataclass
class MachoImage(SegmentMap):
    path: str
    data: bytes
    slice_offset: int
    cputype: int
    uuid: str | None
    text_vmaddr: int
    segments: list[Segment] = field(default_factory=list)
    sections: dict[str, tuple[str, int, int, int]] = field(default_factory=dict)  # name -> (seg, addr, off, size)
    section_order: list[tuple[str, str]] = field(default_factory=list)  # 1-based n_sect order (seg, sect)
    symtab: tuple[int, int, int, int] | None = None  # symoff, nsyms, stroff, strsize (slice-relative)
    little: bool = True

    @property
    def build_id(self) -> str | None:
        return self.uuid

    @property
    def min_vaddr(self) -> int:
        return self.text_vmaddr

    @property
    def has_dwarf(self) -> bool:
        return "__debug_info" in self.sections and self.sections["__debug_info"][3] > 0

    @property
    def is64(self) -> bool:
        return True

    def dwarf_sections(self) -> dict[str, bytes]:
        out = {}
        for name, (seg, _addr, off, size) in self.sections.items():
            if seg != "__DWARF" or not name.startswith("__debug_"):
                continue
            key = name[2:]
            if key == "debug_str_offs":  # 16-character Mach-O section names truncate __debug_str_offsets
                key = "debug_str_offsets"
            out[key] = self.data[self.slice_offset + off : self.slice_offset + off + size]
        return out

    def function_symbols(self) -> list[tuple[str, int, int, bool]]:
        """(name without the leading underscore, start, end, external) of symbols in __TEXT,__text."""
        if self.symtab is None:
            return []
        symoff, nsyms, stroff, strsize = self.symtab
        dtype = np.dtype([("strx", "<u4"), ("type", "u1"), ("sect", "u1"), ("desc", "<u2"), ("value", "<u8")])
        base = self.slice_offset
        if base + symoff + nsyms * dtype.itemsize > len(self.data):
            raise DiagError(f"{self.path}: corrupt Mach-O symbol table")
        syms = np.frombuffer(self.data, dtype=dtype, count=nsyms, offset=base + symoff)
        strtab = self.data[base + stroff : base + stroff + strsize]
        try:
            text_index = self.section_order.index(("__TEXT", "__text")) + 1
        except ValueError:
            return []
        keep = ((syms["type"] & N_STAB) == 0) & ((syms["type"] & N_TYPE) == N_SECT) & (syms["sect"] == text_index)
        sel = syms[keep]
        order = np.argsort(sel["value"], kind="stable")
        sel = sel[order]
        _seg, addr, _off, size = self.sections["__text"]
        end_of_text = addr + size
        out = []
        values = sel["value"].tolist()
        for i, rec in enumerate(sel):
            start = int(rec["value"])
            nxt = next((v for v in values[i + 1 :] if v > start), end_of_text)
            end = strtab.find(b"\0", int(rec["strx"]))
            name = strtab[int(rec["strx"]) : end].decode("utf-8", "replace")
            out.append((name[1:] if name.startswith("_") else name, start, nxt, bool(int(rec["type"]) & N_EXT)))
        return out


def parse_macho(path: str, data: bytes, arch: str | None = None) -> MachoImage:
    """Parse a Mach-O file (thin or universal); DiagError when macholib cannot read it."""
    from macholib.MachO import MachO

    try:
        macho = MachO(path)
    except Exception as exc:  # macholib raises ValueError/struct.error and friends on bad input
        raise DiagError(f"{path}: corrupt Mach-O file ({exc})") from exc
    want = {"x86_64": CPU_X86_64, "arm64": CPU_ARM64}.get(arch or "")
    header = macho.headers[0]
    for h in macho.headers:
        if want is not None and h.header.cputype == want:
            header = h
            break
        if want is None and h.header.cputype == CPU_X86_64:
            header = h
    img = MachoImage(path, data, header.offset, header.header.cputype, None, 0)
    for lc, cmd, sects in header.commands:
        name = lc.get_cmd_name()
        if name == "LC_UUID":
            img.uuid = bytes(cmd.uuid).hex()
        elif name == "LC_SYMTAB":
            img.symtab = (cmd.symoff, cmd.nsyms, cmd.stroff, cmd.strsize)
        elif name in ("LC_SEGMENT_64", "LC_SEGMENT"):
            segname = cmd.segname.rstrip(b"\0").decode()
            flags = 1 if cmd.initprot & VM_PROT_EXECUTE else 0
            img.segments.append(Segment(cmd.vmaddr, cmd.fileoff, cmd.filesize, cmd.vmsize, flags))
            if segname == "__TEXT":
                img.text_vmaddr = cmd.vmaddr
            for s in sects:
                sectname = s.sectname.rstrip(b"\0").decode()
                img.section_order.append((segname, sectname))
                img.sections.setdefault(sectname, (segname, s.addr, s.offset, s.size))
    return img


def find_dsym(binary_path: str, uuid: str | None, search_paths: list[str]) -> str | None:
    """`<binary>.dSYM/Contents/Resources/DWARF/<name>` beside the binary or in a search path, UUID-checked."""
    base = os.path.basename(binary_path)
    dirs = [os.path.dirname(os.path.abspath(binary_path)), *search_paths]
    for d in dirs:
        candidate = os.path.join(d, base + ".dSYM", "Contents", "Resources", "DWARF", base)
        if not os.path.isfile(candidate):
            continue
        if uuid is None:
            return candidate
        with open(candidate, "rb") as fh:
            dsym = parse_macho(candidate, fh.read())
        if dsym.uuid == uuid:
            return candidate
    return None
