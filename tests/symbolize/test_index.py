"""The index itself: every byte of the text of many builds answers like llvm-symbolizer.

Covers gcc and clang, DWARF 4 and 5 (0-based file registers), with and without .debug_aranges,
symbol-table fallback (no DWARF, stripped to .dynsym), separate debug files found by build-id and
by .gnu_debuglink, C++ demangling, Mach-O with a dSYM, and corrupt DWARF (exit 2).
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from click.testing import CliRunner

from asciichat_diag.cli import main
from asciichat_diag.symbolize.build import build_elf_index
from asciichat_diag.symbolize.demangle import demangle
from asciichat_diag.symbolize.elfio import parse_elf

SRC = r"""
#include <stdlib.h>
int sink;
static inline __attribute__((always_inline)) int inner(int x) { sink += x; return rand() + x; }
static inline __attribute__((always_inline)) int middle(int x) { int r = inner(x * 2); sink ^= r; return r; }
__attribute__((noinline)) int outer(int x) {
  int a = middle(x);
  sink += a;
  return a + rand();
}
__attribute__((noinline)) static int local_helper(int x) { return outer(x) + 1; }
int api(int x) { return local_helper(x) * 3; }
"""

CXX_SRC = r"""
#include <cstdlib>
namespace ascii { namespace video {
struct Frame {
  __attribute__((noinline)) int encode(int q);
  template <typename T> __attribute__((noinline)) T scale(T v) { return v * (T)std::rand(); }
};
int Frame::encode(int q) { return scale<long>(q) + std::rand(); }
} }
int use() { ascii::video::Frame f; return f.encode(3) + (int)f.scale<double>(2.0); }
"""

VARIANTS = {
    "gcc-dwarf5": ["gcc", "-g", "-O2", "-gdwarf-5"],
    "gcc-dwarf4": ["gcc", "-g", "-O2", "-gdwarf-4"],
    "clang-dwarf5": ["clang", "-g", "-O2", "-fuse-ld=lld"],
    "clang-dwarf4": ["clang", "-g", "-O2", "-gdwarf-4", "-fuse-ld=lld"],
    "clang-aranges": ["clang", "-g", "-O1", "-gdwarf-aranges", "-fuse-ld=lld"],
    "clang-nodebug": ["clang", "-O2", "-fuse-ld=lld"],
}


def _compile(tmp_path, name: str, cmd: list[str], src: str = SRC, suffix: str = ".c") -> str:
    d = tmp_path / name
    d.mkdir()
    (d / ("u" + suffix)).write_text(src)
    out = d / "lib.so"
    subprocess.run([*cmd, "-fPIC", "-shared", "u" + suffix, "-o", str(out)], cwd=d, check=True, capture_output=True)
    return str(out)


def _every_byte_matches(path: str, llvm, step: int = 1) -> int:
    img = parse_elf(path)
    idx = build_elf_index(img, None)
    addrs = []
    for seg in img.exec_segments():
        addrs.extend(range(seg.vaddr, seg.vaddr + seg.memsz, step))
    mismatches = []
    for start in range(0, len(addrs), 2000):
        chunk = addrs[start : start + 2000]
        want = llvm(path, chunk)
        for addr, (chain, _src), exp in zip(chunk, idx.lookup_many(chunk), want):
            got = [(c.function or "", os.path.normpath(c.file) if c.file else "", c.line or 0, c.column or 0)
                   for c in chain] or [("", "", 0, 0)]  # fmt: skip
            if got != exp:
                mismatches.append((hex(addr), got, exp))
    assert not mismatches, mismatches[:5]
    return len(addrs)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_text_byte_matches_llvm_symbolizer(tmp_path, variant, llvm):
    if not shutil.which(VARIANTS[variant][0]):
        pytest.skip(f"{VARIANTS[variant][0]} missing")
    path = _compile(tmp_path, variant, VARIANTS[variant])
    assert _every_byte_matches(path, llvm) > 100


def test_dwarf5_file_register_is_zero_based(tmp_path):
    """clang's DWARF 5 line table uses file register 0 for the primary file; v4's first file is 1."""
    path = _compile(tmp_path, "v5", VARIANTS["clang-dwarf5"])
    idx = build_elf_index(parse_elf(path), None)
    addr = idx.symbol_address("outer")
    chain, src = idx.lookup(addr + 4)
    assert src == "dwarf"
    assert all(os.path.basename(c.file) == "u.c" for c in chain)


def test_inline_chain_two_levels(tmp_path):
    path = _compile(tmp_path, "inl", VARIANTS["clang-dwarf5"])
    idx = build_elf_index(parse_elf(path), None)
    lo, hi = idx.function_ranges("outer")[0]
    chains = [idx.lookup(a)[0] for a in range(lo, hi)]
    deepest = max(chains, key=len)
    assert [c.function for c in deepest] == ["inner", "middle", "outer"]


def test_symtab_fallback_and_stripped_dynsym(tmp_path, llvm):
    path = _compile(tmp_path, "nodebug", VARIANTS["clang-nodebug"])
    idx = build_elf_index(parse_elf(path), None)
    assert not idx.has_dwarf
    chain, src = idx.lookup(idx.symbol_address("local_helper") + 1)
    assert src == "symtab" and chain[0].function == "local_helper"
    stripped = tmp_path / "stripped.so"
    subprocess.run(["strip", "-o", str(stripped), path], check=True)
    idx2 = build_elf_index(parse_elf(str(stripped)), None)
    chain, src = idx2.lookup(idx2.symbol_address("api") + 1)
    assert src == "symtab" and chain[0].function == "api"  # from .dynsym
    assert idx2.symbol_address("local_helper") is None  # local symbols are gone with .symtab
    _every_byte_matches(str(stripped), llvm, step=3)


def test_separate_debug_file_by_debuglink_and_build_id(tmp_path):
    path = _compile(tmp_path, "sep", ["gcc", "-g", "-O2", "-Wl,--build-id"])
    d = os.path.dirname(path)
    dbg = os.path.join(d, "lib.so.debug")
    subprocess.run(["objcopy", "--only-keep-debug", path, dbg], check=True)
    subprocess.run(["strip", "--strip-debug", "--strip-unneeded", path], check=True)
    subprocess.run(["objcopy", f"--add-gnu-debuglink={dbg}", path], cwd=d, check=True)
    img = parse_elf(path)
    assert not img.has_dwarf and img.debuglink and img.build_id
    trace = f"#0 0x1234 in ?? ({path}+{hex(_vaddr_in(dbg, 'outer'))})\n"
    (tmp_path / "t.txt").write_text(trace)
    empty = tmp_path / "empty"
    empty.mkdir()
    r = CliRunner().invoke(main, ["symbolize", str(tmp_path / "t.txt"), "--json", "--debug-dir", str(empty)])
    assert r.exit_code == 0, r.stderr
    assert '"function": "outer"' in r.stdout and '"source": "dwarf"' in r.stdout
    # Move the debug file into a build-id tree: found there, with no debuglink match beside the binary.
    bid = img.build_id
    tree = tmp_path / "debugroot" / ".build-id" / bid[:2]
    tree.mkdir(parents=True)
    shutil.move(dbg, tree / (bid[2:] + ".debug"))
    r = CliRunner().invoke(main, ["symbolize", str(tmp_path / "t.txt"), "--json", "--no-cache",
                                  "--debug-dir", str(tmp_path / "debugroot")])  # fmt: skip
    assert r.exit_code == 0, r.stderr
    assert '"function": "outer"' in r.stdout and '"source": "dwarf"' in r.stdout
    # Without the debug file only the symbol table is left.
    r = CliRunner().invoke(main, ["symbolize", str(tmp_path / "t.txt"), "--json", "--no-cache",
                                  "--debug-dir", str(empty)])  # fmt: skip
    assert '"source": "dwarf"' not in r.stdout


def _vaddr_in(path: str, name: str) -> int:
    out = subprocess.run(["nm", path], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        parts = line.split()
        if parts[-1] == name:
            return int(parts[0], 16) + 4
    raise AssertionError(name)


def test_cxx_names_demangled_like_llvm(tmp_path, llvm):
    if not shutil.which("clang++"):
        pytest.skip("clang++ missing")
    path = _compile(tmp_path, "cxx", ["clang++", "-g", "-O1", "-fuse-ld=lld"], CXX_SRC, ".cc")
    idx = build_elf_index(parse_elf(path), None)
    names = {idx.lookup(lo)[0][-1].function for lo in idx.a["func_low"].tolist()}
    assert "ascii::video::Frame::encode(int)" in names
    assert "long ascii::video::Frame::scale<long>(long)" in names
    _every_byte_matches(path, llvm, step=2)


def test_rust_and_cxx_demangling_libraries():
    assert demangle("_ZN5ascii5video5Frame6encodeEi") == "ascii::video::Frame::encode(int)"
    assert demangle("_ZN4core3fmt5write17h0123456789abcdefE").startswith("core::fmt::write")
    assert demangle("_RNvCs1234_7mycrate4main") == "mycrate::main"
    assert demangle("frame_encode") == "frame_encode"
    assert demangle("_Znot-valid") == "_Znot-valid"


@pytest.mark.parametrize("damage", ["truncate", "abbrev", "not-elf", "missing"])
def test_corrupt_inputs_exit_2(tmp_path, damage):
    path = _compile(tmp_path, "bad", VARIANTS["clang-dwarf5"])
    with open(path, "rb") as fh:
        data = bytearray(fh.read())
    img = parse_elf(path)
    if damage == "truncate":
        data = data[: len(data) // 3]
    elif damage == "abbrev":
        sec = img.sections[".debug_abbrev"]
        data[sec.offset : sec.offset + sec.size] = b"\xff" * sec.size
        sec = img.sections[".debug_info"]
        data[sec.offset + 11 : sec.offset + 40] = b"\xff" * 29
    elif damage == "not-elf":
        data = bytearray(b"#!/bin/sh\necho not a binary\n" * 10)
    bad = tmp_path / "bad.so"
    if damage != "missing":
        bad.write_bytes(bytes(data))
    (tmp_path / "t.txt").write_text(f"    #0 0x7f0000001234 ({bad}+0x1100)\n")
    r = CliRunner().invoke(main, ["symbolize", str(tmp_path / "t.txt"), "--lib", str(bad), "--no-cache"])
    assert r.exit_code == 2, (r.stdout, r.stderr)
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("diag: error: ")
    want = {
        "truncate": "corrupt",
        "abbrev": "corrupt DWARF",
        "not-elf": "not an ELF or Mach-O",
        "missing": "cannot read",
    }
    assert want[damage] in err[0]
    assert "Traceback" not in r.stderr


def test_unreadable_input_exit_2(tmp_path):
    r = CliRunner().invoke(main, ["symbolize", str(tmp_path / "nope.txt")])
    assert r.exit_code == 2
    assert r.stderr.startswith("diag: error: cannot read")


def test_parallel_unit_decoding_gives_the_same_index(tmp_path, monkeypatch):
    from asciichat_diag.symbolize import build

    d = tmp_path / "many"
    d.mkdir()
    for k in range(6):
        (d / f"u{k}.c").write_text(SRC.replace("outer", f"outer{k}").replace("api", f"api{k}")
                                   .replace("local_helper", f"lh{k}").replace("sink", f"sink{k}"))  # fmt: skip
    out = d / "lib.so"
    subprocess.run(["clang", "-g", "-O1", "-fPIC", "-shared", "-fuse-ld=lld", *[f"u{k}.c" for k in range(6)], "-o",
                    str(out)], cwd=d, check=True)  # fmt: skip
    img = parse_elf(str(out))
    serial = build_elf_index(img, None)
    monkeypatch.setenv("ASCIICHAT_DIAG_INDEX_JOBS", "2")
    monkeypatch.setattr(build, "PARALLEL_MIN_INFO_BYTES", 0)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    parallel = build_elf_index(img, None)
    for name in serial.a:
        assert serial.a[name].tolist() == parallel.a[name].tolist(), name
    assert serial.names == parallel.names and serial.files == parallel.files


def test_cache_file_round_trip_keeps_every_array_and_string(tmp_path):
    """write_index -> read_index gives the same arrays, names (empty, non-ASCII, undecodable), files, defined."""
    from asciichat_diag.symbolize.index import IndexBuilder, read_index, write_index

    b = IndexBuilder()
    names = ["", "frame_encode", "ünïcödé_名前", "bad\udcff", "operator()"]
    b.add_function(names[1], [(0x1000, 0x1040)])
    for n in names:
        b.name_id(n)
    b.file_id("/src/lib/video/frame.c")
    b.file_id("")
    b.defined.update({"frame_encode", "api"})
    index = b.freeze({"has_dwarf": True})
    path = tmp_path / "x.idx"
    with open(path, "wb") as fh:
        write_index(index, fh)
    back = read_index(str(path))
    assert back is not None
    for name, view in index.a.items():
        assert back.a[name].tolist() == view.tolist(), name
    assert list(back.names) == list(index.names) and len(back.names) == len(index.names)
    assert list(back.files) == list(index.files)
    assert back.names[-1] == index.names[-1] and back.names[1:3] == list(index.names[1:3])
    assert list(back.defined) == ["api", "frame_encode"]
    assert back.defines("api") and back.defines("frame_encode") and not back.defines("outer")
    assert not back.defines("") and not back.defines("zzz")
    assert back.meta == {"has_dwarf": True}
    assert back.lookup(0x1010)[0][0].function == "frame_encode"
    with pytest.raises(IndexError):
        back.names[len(index.names)]
    # Truncated or scribbled files are refused (rebuilt by the caller), never half-read.
    raw = path.read_bytes()
    for damaged in (raw[: len(raw) // 2], raw[:8], raw.replace(b'"names_end", "I"', b'"names_end", "x"')):
        path.write_bytes(damaged)
        assert read_index(str(path)) is None
