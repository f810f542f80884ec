"""Mach-O and dSYM: a dylib cross-linked here with clang -target x86_64-apple-macos + ld64.lld, its dSYM
made by dsymutil; answers must equal llvm-symbolizer's (which reads the same dSYM)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess

import pytest
from click.testing import CliRunner

from asciichat_diag.cli import main
from asciichat_diag.symbolize.build import build_macho_index
from asciichat_diag.symbolize.elfio import read_file
from asciichat_diag.symbolize.macho import find_dsym, parse_macho

SRC = r"""
int sink;
__attribute__((noinline)) int leaf(int x) { sink += x; return x * 2; }
static inline __attribute__((always_inline)) int helper(int x) { int r = leaf(x + 1); sink ^= r; return r; }
__attribute__((noinline)) int entry(int x) { int a = helper(x); sink += a; return a + leaf(a); }
"""


def _tool(*names: str) -> str | None:
    for name in names:
        for cand in [
            shutil.which(name),
            *sorted(glob.glob(f"/usr/bin/{name}-*")),
            *glob.glob(f"/usr/lib/llvm-*/bin/{name}"),
        ]:
            if cand and os.access(cand, os.X_OK):
                return cand
    return None


@pytest.fixture(scope="module")
def dylib(tmp_path_factory):
    ld64 = _tool("ld64.lld")
    dsymutil = _tool("dsymutil")
    if not (shutil.which("clang") and ld64 and dsymutil):
        pytest.skip("needs clang, ld64.lld and dsymutil (Debian: clang, lld, llvm)")
    d = tmp_path_factory.mktemp("macho")
    (d / "m.c").write_text(SRC)
    subprocess.run(["clang", "-target", "x86_64-apple-macos11", "-g", "-O1", "-c", "m.c", "-o", "m.o"], cwd=d,
                   check=True)  # fmt: skip
    subprocess.run([ld64, "-arch", "x86_64", "-platform_version", "macos", "11.0", "11.0", "-dylib",
                    "-o", "libm.dylib", "m.o"], cwd=d, check=True)  # fmt: skip
    subprocess.run([dsymutil, "libm.dylib", "-o", "libm.dylib.dSYM"], cwd=d, check=True)
    os.remove(d / "m.o")  # only the dSYM may answer now
    return d / "libm.dylib"


def test_dsym_found_by_uuid_and_answers_match_llvm(dylib, llvm):
    img = parse_macho(str(dylib), read_file(str(dylib)))
    assert img.uuid and not img.has_dwarf
    dsym_path = find_dsym(str(dylib), img.uuid, [])
    assert dsym_path and dsym_path.endswith("libm.dylib.dSYM/Contents/Resources/DWARF/libm.dylib")
    dsym = parse_macho(dsym_path, read_file(dsym_path))
    assert dsym.uuid == img.uuid and dsym.has_dwarf
    idx = build_macho_index(img, dsym)
    _seg, addr, _off, size = img.sections["__text"]
    addrs = list(range(addr, addr + size))
    want = llvm(dylib, addrs)
    for a, (chain, _src), exp in zip(addrs, idx.lookup_many(addrs), want):
        got = [(c.function or "", os.path.normpath(c.file) if c.file else "", c.line or 0, c.column or 0)
               for c in chain] or [("", "", 0, 0)]  # fmt: skip
        assert got == exp, hex(a)
    assert any(len(idx.lookup(a)[0]) == 2 for a in addrs), "an inlined helper frame"


def test_module_offset_input_on_macho(dylib, tmp_path):
    img = parse_macho(str(dylib), read_file(str(dylib)))
    syms = {name: start for name, start, _end, _ext in img.function_symbols()}
    off = syms["entry"] - img.text_vmaddr + 8
    trace = (
        f"    #0 0x10f3c2{off:03x} in entry ({dylib}+{off:#x})\n    #1 0x10f3c0000 in ?? ({dylib}+{syms['leaf']:#x})\n"
    )
    (tmp_path / "t.txt").write_text(trace)
    r = CliRunner().invoke(main, ["symbolize", str(tmp_path / "t.txt"), "--json"])
    assert r.exit_code == 0, r.stderr
    assert '"function": "entry"' in r.stdout and '"function": "leaf"' in r.stdout
    assert '"source": "dwarf"' in r.stdout


def test_corrupt_macho_exit_2(tmp_path):
    bad = tmp_path / "libbad.dylib"
    bad.write_bytes(b"\xcf\xfa\xed\xfe" + b"\x07\x00\x00\x01" + b"\xff" * 24)
    (tmp_path / "t.txt").write_text(f"    #0 0x1000 ({bad}+0x10)\n")
    r = CliRunner().invoke(main, ["symbolize", str(tmp_path / "t.txt"), "--lib", str(bad)])
    assert r.exit_code == 2
    assert r.stderr.startswith("diag: error: ") and "Mach-O" in r.stderr
