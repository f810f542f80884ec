"""A per-binary symbol index in sorted flat arrays, cached on disk.

Arrays: function ranges (DWARF subprograms), inline ranges grouped by function, line-table rows,
and symbol-table ranges (the fallback when there is no DWARF). One index is built per binary (with
numpy, in `IndexBuilder.freeze`) and stored under $XDG_CACHE_HOME/asciichat-diag keyed by build-id
(or path + size + mtime).

Lookups run on typed memoryviews with `bisect`, so a warm run (index loaded from the cache) never
imports numpy: its import costs more than the 200 lookups of a typical backtrace.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import mmap
import os
import struct
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    import numpy as np

INDEX_FORMAT = 6  # bump when the arrays or their meaning change: old cache files are then ignored
CACHE_MAGIC = b"ACDIDX\0\0"
ARRAY_NAMES = (
    "func_low", "func_high", "func_id",          # function ranges sorted by low; func_id -> func_* below
    "func_name", "func_inl_start", "func_inl_end",  # per function: name id, slice of the inline arrays
    "inl_low", "inl_high", "inl_depth", "inl_die",  # inline ranges grouped by function -> die_* below
    "die_name", "die_call_file", "die_call_line", "die_call_col", "die_parent",  # inlined_subroutine DIEs
    "line_addr", "line_file", "line_line", "line_col",  # rows sorted by address; file -1 ends a sequence
    "sym_low", "sym_high", "sym_name", "sym_file",  # symbol table ranges sorted by low (file: STT_FILE)
)  # fmt: skip
STRING_TABLES = ("names", "files", "defined")
STRING_ARRAYS = tuple(f"{t}_{part}" for t in STRING_TABLES for part in ("text", "end"))
# numpy dtype (kind + size) -> the struct format a memoryview is cast to; fixed sizes on every platform.
_FORMATS = {"u8": "Q", "i8": "q", "u4": "I", "i4": "i", "u2": "H", "i2": "h", "u1": "B", "i1": "b"}
_LITTLE = sys.byteorder == "little"


@dataclass(frozen=True)
class Location:
    """One (possibly inlined) frame of a lookup, innermost first."""

    function: str | None
    file: str | None
    line: int | None
    column: int | None


class SymbolIndex:
    """Lookups over one binary's arrays (1-D typed memoryviews). Build with `IndexBuilder`, or load from the cache."""

    def __init__(
        self,
        arrays: dict[str, memoryview],
        names: Sequence[str],
        files: Sequence[str],
        meta: dict,
        defined: Sequence[str] = (),
    ) -> None:
        self.a = arrays
        self.names = names
        self.files = files
        self.meta = meta
        self.defined = defined  # sorted names of the global functions defined here
        self._by_name: dict[str, int] | None = None

    # -- queries ------------------------------------------------------------------------------------
    @property
    def has_dwarf(self) -> bool:
        return bool(self.meta.get("has_dwarf"))

    def lookup(self, vaddr: int) -> tuple[list[Location], str]:
        """The inline chain at `vaddr` (innermost first) and where it came from: 'dwarf', 'symtab' or ''."""
        return self.lookup_many([vaddr])[0]

    def lookup_many(self, vaddrs: Sequence[int]) -> list[tuple[list[Location], str]]:
        a = self.a
        func_low, line_addr, sym_low = a["func_low"], a["line_addr"], a["sym_low"]
        out = []
        for addr in vaddrs:
            addr = int(addr)
            func = self._func_at(bisect.bisect_right(func_low, addr) - 1, addr)
            row = self._line_at(bisect.bisect_right(line_addr, addr) - 1)
            if func is not None:
                out.append((self._chain(func, addr, row), "dwarf"))
                continue
            sym = self._sym_at(bisect.bisect_right(sym_low, addr) - 1, addr)
            if sym is not None:
                file, line, col = row if row else (sym[1], 0 if sym[1] else None, None)
                out.append(([Location(sym[0], file, line, col)], "symtab"))
            elif row is not None:
                out.append(([Location(None, *row)], "dwarf"))
            else:
                out.append(([], ""))
        return out

    def _func_at(self, i: int, addr: int) -> int | None:
        a = self.a
        # Function ranges can nest (rarely overlap); walk back a little for the innermost that covers addr.
        for j in range(i, max(i - 4, -1), -1):
            if int(a["func_low"][j]) <= addr < int(a["func_high"][j]):
                return int(a["func_id"][j])
        return None

    def _line_at(self, i: int) -> tuple[str, int, int] | None:
        a = self.a
        if i < 0 or int(a["line_file"][i]) < 0:
            return None
        return self.files[int(a["line_file"][i])], int(a["line_line"][i]), int(a["line_col"][i])

    def _sym_at(self, i: int, addr: int) -> tuple[str, str | None] | None:
        a = self.a
        if i < 0 or not (int(a["sym_low"][i]) <= addr < int(a["sym_high"][i])):
            return None
        f = int(a["sym_file"][i])
        return self.names[int(a["sym_name"][i])], (self.files[f] if f >= 0 else None)

    def _chain(self, func: int, addr: int, row_at: tuple[str, int, int] | None) -> list[Location]:
        a = self.a
        start, end = a["func_inl_start"][func], a["func_inl_end"][func]
        inl: list[int] = []  # inlined_subroutine DIEs, innermost first
        # Like llvm: the innermost DIE whose ranges hold the address, then its parents in the DIE tree,
        # whether or not their own ranges list the address (gcc leaves some empty). Rows are in DFS
        # order, so among the deepest hits the last one is the innermost.
        inl_low, inl_high, inl_depth = a["inl_low"], a["inl_high"], a["inl_depth"]
        best, best_depth = -1, -1
        for r in range(start, end):
            if inl_low[r] <= addr < inl_high[r] and inl_depth[r] >= best_depth:
                best, best_depth = r, inl_depth[r]
        if best >= 0:
            die = a["inl_die"][best]
            while die >= 0:
                inl.append(die)
                die = a["die_parent"][die]
        file, line, col = row_at if row_at else (None, None, None)
        chain: list[Location] = []
        # Innermost first: the innermost inlined code is located by the line table, each outer level by
        # the call site recorded on the inlined DIE inside it.
        for d in inl:
            chain.append(Location(self.names[int(a["die_name"][d])], file, line, col))
            cf = int(a["die_call_file"][d])
            file = self.files[cf] if cf >= 0 else None
            line, col = int(a["die_call_line"][d]), int(a["die_call_col"][d])
        chain.append(Location(self.names[int(a["func_name"][func])], file, line, col))
        return chain

    def symbol_address(self, name: str) -> int | None:
        """Start address of a function named `name` (DWARF first, then the symbol table)."""
        if self._by_name is None:
            by_name: dict[str, int] = {}
            a = self.a
            for low, nid in zip(a["sym_low"].tolist(), a["sym_name"].tolist()):
                by_name.setdefault(self.names[nid], low)
            func_start: dict[int, int] = {}
            for low, fid in zip(a["func_low"].tolist(), a["func_id"].tolist()):
                if fid not in func_start or low < func_start[fid]:
                    func_start[fid] = low
            for fid, low in func_start.items():
                by_name.setdefault(self.names[int(a["func_name"][fid])], low)
            self._by_name = by_name
        return self._by_name.get(name)

    def defines(self, name: str) -> bool:
        """Does this binary define a global function `name` (for interposition conflicts)?

        A binary search over the sorted names: a cached table is read a few entries at a time, never
        decoded whole.
        """
        i = bisect.bisect_left(self.defined, name)
        return i < len(self.defined) and self.defined[i] == name

    def line_rows_of(self, low: int, high: int) -> list[tuple[str, int]]:
        """(file, line) of every line-table row in [low, high): to re-check an already-resolved frame."""
        a = self.a
        i = bisect.bisect_left(a["line_addr"], low)
        j = bisect.bisect_left(a["line_addr"], high)
        out = []
        for k in range(i, j):
            f = int(a["line_file"][k])
            if f >= 0:
                out.append((self.files[f], int(a["line_line"][k])))
        return out

    def function_ranges(self, name: str) -> list[tuple[int, int]]:
        a = self.a
        out = []
        for low, high, fid in zip(a["func_low"].tolist(), a["func_high"].tolist(), a["func_id"].tolist()):
            if self.names[int(a["func_name"][fid])] == name:
                out.append((low, high))
        if not out:
            for low, high, nid in zip(a["sym_low"].tolist(), a["sym_high"].tolist(), a["sym_name"].tolist()):
                if self.names[nid] == name:
                    out.append((low, high))
        return out


# -- building ---------------------------------------------------------------------------------------
class IndexBuilder:
    """Collects rows from DWARF and symbol tables, then freezes them into a SymbolIndex."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self._name_ids: dict[str, int] = {}
        self.files: list[str] = []
        self._file_ids: dict[str, int] = {}
        self.funcs: list[tuple[int, list[tuple[int, int]]]] = []  # (name id, ranges)
        self.inlines: list[list[tuple]] = []  # per function: (low, high, depth, die index)
        self.dies: list[tuple[int, int, int, int, int]] = []  # (name id, call file, call line, call col, parent)
        self.lines: list[tuple[list[int], list[int], list[int], list[int]]] = []
        self.syms: list[tuple[int, int, int, int]] = []  # (low, high, name id, file id or -1)
        self.defined: set[str] = set()

    def name_id(self, name: str) -> int:
        nid = self._name_ids.get(name)
        if nid is None:
            nid = self._name_ids[name] = len(self.names)
            self.names.append(name)
        return nid

    def file_id(self, path: str) -> int:
        fid = self._file_ids.get(path)
        if fid is None:
            fid = self._file_ids[path] = len(self.files)
            self.files.append(path)
        return fid

    def add_function(self, name: str, ranges: list[tuple[int, int]]) -> int:
        self.funcs.append((self.name_id(name), ranges))
        self.inlines.append([])
        return len(self.funcs) - 1

    def add_inline_die(self, name: str, call_file: int, call_line: int, call_col: int, parent: int) -> int:
        self.dies.append((self.name_id(name), call_file, call_line, call_col, parent))
        return len(self.dies) - 1

    def add_symbol(self, name: str, low: int, high: int, file: str | None = None) -> None:
        self.syms.append((low, high, self.name_id(name), self.file_id(file) if file else -1))

    def freeze(self, meta: dict) -> SymbolIndex:
        import numpy as np

        u8, i4 = np.uint64, np.int32
        f_low, f_high, f_id = [], [], []
        for fid, (_nid, ranges) in enumerate(self.funcs):
            for lo, hi in ranges:
                f_low.append(lo)
                f_high.append(hi)
                f_id.append(fid)
        order = np.argsort(np.asarray(f_low, dtype=u8), kind="stable")
        arrays: dict[str, np.ndarray] = {
            "func_low": np.asarray(f_low, dtype=u8)[order],
            "func_high": np.asarray(f_high, dtype=u8)[order],
            "func_id": np.asarray(f_id, dtype=i4)[order],
            "func_name": np.asarray([nid for nid, _ in self.funcs], dtype=i4),
        }
        starts, ends, inl_rows = [], [], []
        for rows in self.inlines:
            starts.append(len(inl_rows))
            inl_rows.extend(rows)
            ends.append(len(inl_rows))
        arrays["func_inl_start"] = np.asarray(starts, dtype=i4)
        arrays["func_inl_end"] = np.asarray(ends, dtype=i4)
        cols = list(zip(*inl_rows)) if inl_rows else [[]] * 4
        for name, col, dt in zip(("inl_low", "inl_high", "inl_depth", "inl_die"), cols, (u8, u8, i4, i4)):
            arrays[name] = np.asarray(col, dtype=dt)
        cols = list(zip(*self.dies)) if self.dies else [[]] * 5
        for name, col in zip(("die_name", "die_call_file", "die_call_line", "die_call_col", "die_parent"), cols):
            arrays[name] = np.asarray(col, dtype=i4)
        parts = self.lines or [(np.zeros(0, u8), np.zeros(0, i4), np.zeros(0, i4), np.zeros(0, i4))]
        addr_arr = np.concatenate([np.asarray(p[0], dtype=u8) for p in parts])
        file_arr = np.concatenate([np.asarray(p[1], dtype=i4) for p in parts])
        line_arr = np.concatenate([np.asarray(p[2], dtype=i4) for p in parts])
        col_arr = np.concatenate([np.asarray(p[3], dtype=i4) for p in parts])
        # Sort by address; at equal addresses a sequence end sorts first so the next sequence's row wins,
        # and rows of one sequence keep their order (the last row at an address is the answer).
        order = np.lexsort((file_arr >= 0, addr_arr))
        arrays["line_addr"] = addr_arr[order]
        arrays["line_file"] = file_arr[order]
        arrays["line_line"] = line_arr[order]
        arrays["line_col"] = col_arr[order]
        syms = sorted(self.syms)
        arrays["sym_low"] = np.asarray([s[0] for s in syms], dtype=u8)
        arrays["sym_high"] = np.asarray([s[1] for s in syms], dtype=u8)
        arrays["sym_name"] = np.asarray([s[2] for s in syms], dtype=i4)
        arrays["sym_file"] = np.asarray([s[3] for s in syms], dtype=i4)
        meta = dict(meta)
        views = {name: _view(np.ascontiguousarray(arr)) for name, arr in arrays.items()}
        return SymbolIndex(views, self.names, self.files, meta, sorted(self.defined))


def _view(arr: np.ndarray) -> memoryview:
    """A numpy array as a 1-D memoryview of the fixed-size struct format for its dtype."""
    fmt = _FORMATS[f"{arr.dtype.kind}{arr.dtype.itemsize}"]
    return memoryview(arr.astype(arr.dtype.newbyteorder("=")).tobytes()).cast(fmt)


# -- on-disk cache ----------------------------------------------------------------------------------
def cache_dir() -> str:
    """$ASCIICHAT_DIAG_CACHE_DIR, else $XDG_CACHE_HOME/asciichat-diag, else ~/.cache/asciichat-diag."""
    explicit = os.environ.get("ASCIICHAT_DIAG_CACHE_DIR")
    if explicit:
        return explicit
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "asciichat-diag")


def cache_key(path: str, build_id: str | None, debug_path: str | None) -> str:
    """Build-id when the binary has one; otherwise path + size + mtime of the binary and its debug file."""
    parts = [f"v{INDEX_FORMAT}"]
    if build_id:
        parts.append("bid:" + build_id)
        # The same build-id with or without its separate debug file gives different answers.
        parts.append("dbg:" + ("yes" if debug_path else "no"))
    else:
        for p in (path, debug_path):
            if p:
                st = os.stat(p)
                parts.append(f"{os.path.realpath(p)}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


def save_index(index: SymbolIndex, key: str) -> str | None:
    """Write the index into the cache atomically; an unwritable cache is not an error (the answer does not change)."""
    directory = cache_dir()
    try:
        import tempfile  # only a cold run writes: a warm one never needs it

        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
        with os.fdopen(fd, "wb") as fh:
            write_index(index, fh)
        final = os.path.join(directory, key + ".idx")
        os.replace(tmp, final)
        return final
    except OSError:
        return None


def write_index(index: SymbolIndex, fh: BinaryIO) -> None:
    """The index file format: magic, header length, JSON header, then every array's little-endian bytes.

    The string tables (names, files, defined functions) are arrays too: the UTF-8 bytes of all entries
    (`<table>_text`) and where each entry ends (`<table>_end`), so loading one decodes nothing.
    """
    arrays = dict(index.a)
    for table, strings in _string_tables(index).items():
        text, ends = _encode_strings(strings)
        arrays[table + "_text"], arrays[table + "_end"] = text, ends
    header_arrays = []
    blobs = []
    offset = 0
    for name in (*ARRAY_NAMES, *STRING_ARRAYS):
        view = arrays[name]
        raw = view.tobytes() if _LITTLE else _swapped(view.tobytes(), view.format)
        header_arrays.append([name, view.format, len(view), offset])
        blobs.append(raw)
        offset += len(raw)
    header = json.dumps({"arrays": header_arrays, "meta": index.meta}).encode()
    fh.write(CACHE_MAGIC + struct.pack("<Q", len(header)) + header)
    for raw in blobs:
        fh.write(raw)


def _string_tables(index: SymbolIndex) -> dict[str, Sequence[str]]:
    return {"names": index.names, "files": index.files, "defined": index.defined}


def _encode_strings(strings: Sequence[str]) -> tuple[memoryview, memoryview]:
    encoded = [s.encode("utf-8", "surrogatepass") for s in strings]
    ends = []
    total = 0
    for e in encoded:
        total += len(e)
        ends.append(total)
    fmt = "I" if total < 1 << 32 else "Q"
    return memoryview(b"".join(encoded)), memoryview(struct.pack(f"={len(ends)}{fmt}", *ends)).cast(fmt)


class StringTable(Sequence[str]):
    """A read-only list of strings over a cache file's bytes: an entry is decoded when it is read."""

    def __init__(self, text: memoryview, ends: memoryview) -> None:
        if len(ends) and (ends[len(ends) - 1] > len(text)):
            raise ValueError("string table ends past its text")
        self._text = text
        self._ends = ends
        self._cache: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self._ends)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self._ends)
        got = self._cache.get(i)
        if got is None:
            if not 0 <= i < len(self._ends):
                raise IndexError("string table index out of range")
            raw = bytes(self._text[self._ends[i - 1] if i else 0 : self._ends[i]])
            try:
                got = raw.decode("utf-8", "surrogatepass")
            except UnicodeDecodeError:  # a scribbled cache file: a garbled name, never a crash
                got = raw.decode("utf-8", "replace")
            self._cache[i] = got
        return got

    def __iter__(self) -> Iterator[str]:
        for i in range(len(self._ends)):
            yield self[i]


def load_index(key: str) -> SymbolIndex | None:
    """The cached index for `key`, or None when there is none (or it is damaged)."""
    return read_index(os.path.join(cache_dir(), key + ".idx"))


def read_index(path: str) -> SymbolIndex | None:
    """An index file, mapped into memory (a lookup touches a few pages of it), or None when damaged."""
    try:
        with open(path, "rb") as fh:
            try:
                # Cache files are replaced by rename, never rewritten in place, so the mapping stays valid.
                data: bytes | mmap.mmap = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
            except (ValueError, OSError):  # empty file, or a file system without mmap
                data = fh.read()
    except OSError:
        return None
    try:
        if data[:8] != CACHE_MAGIC:
            return None
        (hlen,) = struct.unpack_from("<Q", data, 8)
        header = json.loads(data[16 : 16 + hlen])
        base = 16 + hlen
        arrays = {}
        whole = memoryview(data)
        for name, fmt, count, offset in header["arrays"]:
            size = struct.calcsize(fmt) * count
            start = base + offset
            if fmt not in _FORMATS.values() or start + size > len(data):
                return None
            raw = whole[start : start + size]
            arrays[name] = (raw if _LITTLE else memoryview(_swapped(raw.tobytes(), fmt))).cast(fmt)
        if set(arrays) != {*ARRAY_NAMES, *STRING_ARRAYS}:
            return None
        tables = {t: StringTable(arrays.pop(t + "_text"), arrays.pop(t + "_end")) for t in STRING_TABLES}
        return SymbolIndex(arrays, tables["names"], tables["files"], header["meta"], tables["defined"])
    except (ValueError, KeyError, struct.error, TypeError):
        return None  # a damaged cache file is rebuilt, never trusted


def _swapped(raw: bytes, fmt: str) -> bytes:
    """Little-endian file bytes <-> native ones on a big-endian host."""
    import array

    arr = array.array(fmt, raw)
    arr.byteswap()
    return arr.tobytes()


ProgressFn = Callable[[int, int], None]
