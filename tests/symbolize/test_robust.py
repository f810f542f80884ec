"""Hostile input: random text never breaks the parser; damaged DWARF gives exit 2 or an answer, never a traceback."""

from __future__ import annotations

import random
import subprocess

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from asciichat_diag.cli import main
from asciichat_diag.symbolize.elfio import parse_elf
from asciichat_diag.symbolize.parse import parse_text

SRC = r"""
#include <stdlib.h>
static inline __attribute__((always_inline)) int inner(int x) { return rand() + x; }
__attribute__((noinline)) int outer(int x) { int a = inner(x); return a + rand(); }
/* With -ffunction-sections the unit's code is in two pieces, so DWARF 5 needs .debug_rnglists. */
__attribute__((noinline)) int other(int x) { return x * 3 + rand(); }
"""


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(
    st.text(max_size=80),
    st.sampled_from(["  [3] 0x7f00", "#1 0x1 in f a.c:1", "#2  <signal handler called>", "x(+0x1) [0x2]",
                     "    [inlined] f() (a.c:1)", "7f00-7f10 r-xp 00000000 00:00 0 /x", "[1] [b] f() (a:1)",
                     "*** CRASH DETECTED ***", "Backtrace", "lib.so+0x10", "\x1b[31m[0]\x1b[0m 0x10"]),
), max_size=30))  # fmt: skip
def test_parser_never_fails_and_keeps_every_line(lines):
    text = "\n".join(lines)
    parsed = parse_text(text)
    frames = parsed.frames
    kept = sum(isinstance(x, str) for x in parsed.lines) + len(frames)
    absorbed = sum(len(f.inlined) for f in frames)  # `[inlined]` sub-lines belong to the frame above
    assert kept + absorbed == len(text.splitlines())


@pytest.fixture(scope="module")
def small_lib(tmp_path_factory):
    d = tmp_path_factory.mktemp("robust")
    (d / "u.c").write_text(SRC)
    out = d / "lib.so"
    subprocess.run(["clang", "-g", "-O2", "-ffunction-sections", "-fPIC", "-shared", "-fuse-ld=lld", "u.c",
                    "-o", str(out)], cwd=d, check=True)  # fmt: skip
    return out


@pytest.mark.parametrize("section", [".debug_info", ".debug_abbrev", ".debug_line", ".debug_str_offsets",
                                     ".debug_addr", ".debug_rnglists", ".debug_line_str"])  # fmt: skip
def test_damaged_dwarf_never_tracebacks(small_lib, tmp_path, section):
    img = parse_elf(str(small_lib))
    sec = img.sections.get(section)
    assert sec is not None and sec.size > 0, f"the fixture must emit {section}"
    data = small_lib.read_bytes()
    outer = None
    for line in subprocess.run(["nm", str(small_lib)], capture_output=True, text=True).stdout.splitlines():
        if line.endswith(" outer"):
            outer = int(line.split()[0], 16)
    rng = random.Random(section)
    for trial in range(12):
        buf = bytearray(data)
        for _ in range(1 + trial % 4):
            at = sec.offset + rng.randrange(sec.size)
            buf[at] = rng.randrange(256)
        bad = tmp_path / f"bad{trial}.so"
        bad.write_bytes(bytes(buf))
        (tmp_path / "t.txt").write_text(f"    #0 0x7f00 ({bad}+{outer + 3:#x})\n")
        r = CliRunner().invoke(main, ["symbolize", str(tmp_path / "t.txt"), "--no-cache", "--json"])
        assert r.exit_code in (0, 1, 2), (section, trial, r.stderr)
        assert "internal error" not in r.stderr, (section, trial, r.stderr)
        assert "Traceback" not in r.stderr
        if r.exit_code == 2:
            assert r.stderr.count("\n") == 1 and "corrupt" in r.stderr
