"""A small, import-cheap ELF header reader: program headers, sections, build-id, debuglink, symbols.

pyelftools is only needed to decode DWARF; everything the warm (cached) path needs is read here with
`struct` so that a cached lookup never imports it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from asciichat_diag._common import DiagError

PT_LOAD = 1
PF_X = 1
SHT_NOBITS = 8
SHF_COMPRESSED = 0x800
ELF_MAGIC = b"\x7fELF"
MACHO_MAGICS = {b"\xcf\xfa\xed\xfe", b"\xce\xfa\xed\xfe", b"\xca\xfe\xba\xbe", b"\xfe\xed\xfa\xcf", b"\xfe\xed\xfa\xce"}


@dataclass(frozen=True)
class Segment:
    """One PT_LOAD program header."""

    vaddr: int
    offset: int
    filesz: int
    memsz: int
    flags: int

    @property
    def executable(self) -> bool:
        return bool(self.flags & PF_X)


@dataclass(frozen=True)
class Section:
    name: str
    type: int
    flags: int
    addr: int
    offset: int
    size: int


class SegmentMap:
    """Address maths shared by ELF and Mach-O images: file offsets and virtual addresses via segments.

    Subclasses provide ``segments`` and ``data``; ``slice_offset`` is where the image starts in
    ``data`` (non-zero only for one architecture of a universal Mach-O file).
    """

    segments: list[Segment]
    data: bytes
    slice_offset: int

    def exec_segments(self) -> list[Segment]:
        return [s for s in self.segments if s.executable]

    def offset_to_vaddr(self, file_offset: int) -> int | None:
        """The virtual address of a file offset, via the segment that maps it (lld: vaddr != offset)."""
        for seg in self.segments:
            if seg.offset <= file_offset < seg.offset + max(seg.filesz, 1):
                return file_offset - seg.offset + seg.vaddr
        return None

    def vaddr_to_offset(self, vaddr: int) -> int | None:
        for seg in self.segments:
            if seg.vaddr <= vaddr < seg.vaddr + seg.filesz:
                return vaddr - seg.vaddr + seg.offset
        return None

    def read_vaddr(self, vaddr: int, size: int) -> bytes | None:
        off = self.vaddr_to_offset(vaddr)
        if off is None:
            return None
        at = self.slice_offset + off
        return self.data[at : at + size]

    def in_exec(self, vaddr: int) -> bool:
        return any(s.vaddr <= vaddr < s.vaddr + s.memsz for s in self.exec_segments())


@dataclass
class ElfImage(SegmentMap):
    """What diag needs from an ELF file, read once."""

    path: str
    data: bytes
    is64: bool
    little: bool
    machine: int
    elf_type: int
    segments: list[Segment] = field(default_factory=list)
    sections: dict[str, Section] = field(default_factory=dict)

    @property
    def endian(self) -> str:
        return "<" if self.little else ">"

    def section_bytes(self, name: str) -> bytes | None:
        sec = self.sections.get(name)
        if sec is None or sec.type == SHT_NOBITS:
            return None
        return self.data[sec.offset : sec.offset + sec.size]

    @property
    def build_id(self) -> str | None:
        raw = self.section_bytes(".note.gnu.build-id")
        if raw is None:
            for seg_name, sec in self.sections.items():
                if seg_name.startswith(".note") and sec.type == 7:
                    found = _note_build_id(self.data[sec.offset : sec.offset + sec.size], self.endian)
                    if found:
                        return found
            return None
        return _note_build_id(raw, self.endian)

    @property
    def debuglink(self) -> tuple[str, int] | None:
        raw = self.section_bytes(".gnu_debuglink")
        if not raw:
            return None
        name = raw.split(b"\0", 1)[0].decode("utf-8", "replace")
        crc_at = (len(name) + 1 + 3) & ~3
        crc = struct.unpack_from(self.endian + "I", raw, crc_at)[0] if crc_at + 4 <= len(raw) else 0
        return name, crc

    @property
    def slice_offset(self) -> int:
        return 0  # an ELF file holds one image

    @property
    def has_dwarf(self) -> bool:
        sec = self.sections.get(".debug_info")
        return sec is not None and sec.type != SHT_NOBITS and sec.size > 0

    @property
    def min_vaddr(self) -> int:
        """Page-floor of the lowest PT_LOAD vaddr: what the load bias is measured from."""
        loads = [s.vaddr for s in self.segments]
        return (min(loads) & ~0xFFF) if loads else 0


def _note_build_id(raw: bytes, endian: str) -> str | None:
    pos = 0
    while pos + 12 <= len(raw):
        namesz, descsz, ntype = struct.unpack_from(endian + "III", raw, pos)
        name_at = pos + 12
        desc_at = name_at + ((namesz + 3) & ~3)
        if ntype == 3 and raw[name_at : name_at + namesz].rstrip(b"\0") == b"GNU":
            return raw[desc_at : desc_at + descsz].hex()
        pos = desc_at + ((descsz + 3) & ~3)
    return None


def file_kind(data: bytes) -> str | None:
    """'elf', 'macho' or None from the first bytes."""
    if data[:4] == ELF_MAGIC:
        return "elf"
    if data[:4] in MACHO_MAGICS:
        return "macho"
    return None


def read_file(path: str) -> bytes:
    """The file's bytes, memory-mapped: a warm lookup touches only the headers of a 50 MB binary."""
    import mmap

    try:
        with open(path, "rb") as fh:
            try:
                return mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)  # type: ignore[return-value]
            except (ValueError, OSError):  # empty files and special files cannot be mapped
                return fh.read()
    except OSError as exc:
        raise DiagError(f"cannot read {path}: {exc.strerror or exc}") from exc


def parse_elf(path: str, data: bytes | None = None) -> ElfImage:
    """Parse the ELF headers of `path`; DiagError (exit 2) when it is not a well-formed ELF file."""
    if data is None:
        data = read_file(path)
    if data[:4] != ELF_MAGIC:
        raise DiagError(f"{path}: not an ELF or Mach-O file")
    try:
        return _parse_elf(path, data)
    except (struct.error, IndexError, ValueError) as exc:
        raise DiagError(f"{path}: corrupt ELF headers ({exc})") from exc


def _parse_elf(path: str, data: bytes) -> ElfImage:
    is64 = data[4] == 2
    little = data[5] == 1
    e = "<" if little else ">"
    if is64:
        (e_type, e_machine, _ver, _entry, e_phoff, e_shoff, _flags, _ehsize, e_phentsize, e_phnum, e_shentsize,
         e_shnum, e_shstrndx) = struct.unpack_from(e + "HHIQQQIHHHHHH", data, 16)  # fmt: skip
    else:
        (e_type, e_machine, _ver, _entry, e_phoff, e_shoff, _flags, _ehsize, e_phentsize, e_phnum, e_shentsize,
         e_shnum, e_shstrndx) = struct.unpack_from(e + "HHIIIIIHHHHHH", data, 16)  # fmt: skip
    img = ElfImage(path=path, data=data, is64=is64, little=little, machine=e_machine, elf_type=e_type)
    for i in range(e_phnum):
        at = e_phoff + i * e_phentsize
        if is64:
            p_type, p_flags, p_offset, p_vaddr, _paddr, p_filesz, p_memsz, _align = struct.unpack_from(
                e + "IIQQQQQQ", data, at
            )
        else:
            p_type, p_offset, p_vaddr, _paddr, p_filesz, p_memsz, p_flags, _align = struct.unpack_from(
                e + "IIIIIIII", data, at
            )
        if p_type == PT_LOAD:
            img.segments.append(Segment(p_vaddr, p_offset, p_filesz, p_memsz, p_flags))
    if e_shoff and e_shnum:
        raw_secs = []
        for i in range(e_shnum):
            at = e_shoff + i * e_shentsize
            if is64:
                sh_name, sh_type, sh_flags, sh_addr, sh_offset, sh_size = struct.unpack_from(e + "IIQQQQ", data, at)
            else:
                sh_name, sh_type, sh_flags, sh_addr, sh_offset, sh_size = struct.unpack_from(e + "IIIIII", data, at)
            raw_secs.append((sh_name, sh_type, sh_flags, sh_addr, sh_offset, sh_size))
        if e_shstrndx < len(raw_secs):
            str_off = raw_secs[e_shstrndx][4]
            for sh_name, sh_type, sh_flags, sh_addr, sh_offset, sh_size in raw_secs:
                end = data.find(b"\0", str_off + sh_name)
                if end < 0:
                    raise ValueError("section name outside the string table")
                name = data[str_off + sh_name : end].decode("ascii", "replace")
                if sh_type != SHT_NOBITS and sh_offset + sh_size > len(data):
                    raise ValueError(f"section {name} extends past the end of the file")
                img.sections.setdefault(name, Section(name, sh_type, sh_flags, sh_addr, sh_offset, sh_size))
    return img
