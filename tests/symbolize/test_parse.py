"""Input recognition: every format on its own and in the reconstructed ascii-chat samples (DIAG-NOTES A.3)."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from click.testing import CliRunner

from asciichat_diag.cli import main
from asciichat_diag.symbolize.parse import parse_text

CRASH_A = """\
[14:03:27.481920] [ERROR] [tid:140234887431872] lib/platform/posix/system.c:764@crash_handler(): *** CRASH DETECTED ***
Signal: 11 (SIGSEGV)
Signal Info: si_code=1, si_addr=0x18
[14:03:27.498133] [WARN ] [tid:140234887431872] lib/platform/system.c:580@platform_print_backtrace_symbols(): Backtrace
  [0] [libasciichat.so] crash_handler() (lib/platform/posix/system.c:766)
  [1] [libc.so.6] 0x7f3a2b042520
  [2] [libasciichat.so] websocket_send() (lib/network/websocket/transport.c:418)
  [3] 0x7f3a2b1c4d5e
  [4] [ascii-chat] server_main() (src/server/main.c:1906)
  [5] [libc.so.6] 0x7f3a2b029d90
"""

MEMORY_B = """\
=== Memory Report ===
Total allocated:     12.41 MB
unfreed allocations: 3

Current allocations:
  - lib/network/websocket/transport.c:571 - 228.00 KB
    Backtrace (6 frames):
      [0] [libasciichat.so] platform_backtrace() (lib/platform/posix/system.c:588)
      [1] [libasciichat.so] debug_malloc() (lib/debug/memory.c:217)
      [2] [libasciichat.so] websocket_recv() (lib/network/websocket/transport.c:571)
      [3] 0x7f3a2b1c4d5e
      [4] [ascii-chat] client_receive_thread() (src/server/client.c:1688)
      [5] [libc.so.6] 0x7f3a2b094ac3
  - src/server/client.c:311 - 64 B
    Backtrace (2 frames):
      [0] [libasciichat.so] platform_backtrace() (lib/platform/posix/system.c:588)
      [1] [ascii-chat] main() (src/main.c:10)
"""

DEGRADED_C = """\
  [0] src/server/main.c:1906 in server_main()
  [1] 0x7f3a2b1c4d5e
  [2] frame_encode() at 0x7f3a2b1c5a10
  [3] [NULL]
"""

OTHERS = """\
Lock debug: Call stack:
    [0] [libasciichat.so] mutex_lock_impl() (lib/debug/lock.c:120)
    [1] [libasciichat.so] 0x7f3a2b1c4d5e
./ascii-chat(+0x1234) [0x55d1c0001234]
/lib/x86_64-linux-gnu/libc.so.6(__libc_start_main+0x85) [0x7f3a2b029e05]
    #0 0x55d1c0001234 in frame_encode /src/lib/video/frame.c:142:7
    #1 0x7f3a2b1c4d5e in websocket_send (/build/lib/libasciichat.so+0x1c4d5e) (BuildId: 0123abcd)
    #2 0x7f3a2b029d90  (/lib/x86_64-linux-gnu/libc.so.6+0x29d90) (BuildId: 93ac61ec)
#0  frame_encode (buf=0x0) at lib/video/frame.c:142
#1  0x000055d1c0001300 in server_main () at src/server/main.c:1906
#2  <signal handler called>
#3  0x00007f3a2b029d90 in __libc_start_call_main () from /lib/x86_64-linux-gnu/libc.so.6
0x7f3a2b1c4d5e
libasciichat.so+0x1c4d5e
pid=1 tid=2 seq=3 file=lib/a.c line=4 func=f macro=M snippet=pc=0x55d1c0001234
a line that is not a frame
"""


def test_crash_sample_a():
    p = parse_text(CRASH_A)
    frames = p.frames
    assert [f.index for f in frames] == [0, 1, 2, 3, 4, 5]
    assert all(f.in_crash for f in frames)
    assert frames[0].module == "libasciichat.so" and frames[0].function == "crash_handler"
    assert frames[0].file == "lib/platform/posix/system.c" and frames[0].line == 766
    assert frames[1].module == "libc.so.6" and frames[1].address == 0x7F3A2B042520
    assert frames[3].module is None and frames[3].address == 0x7F3A2B1C4D5E
    assert [x for x in p.lines if isinstance(x, str)][:4] == CRASH_A.splitlines()[:4]


def test_memory_report_sample_b_two_traces():
    p = parse_text(MEMORY_B)
    frames = p.frames
    assert len(frames) == 8
    assert len({f.trace for f in frames[:6]}) == 1 and frames[6].trace != frames[0].trace
    assert frames[4].function == "client_receive_thread" and frames[4].module == "ascii-chat"
    assert frames[6].indent == "      "
    assert sum(isinstance(x, str) for x in p.lines) == len(MEMORY_B.splitlines()) - 8


def test_degraded_forms_sample_c():
    f = parse_text(DEGRADED_C).frames
    assert (f[0].file, f[0].line, f[0].function) == ("src/server/main.c", 1906, "server_main")
    assert f[1].address == 0x7F3A2B1C4D5E
    assert (f[2].function, f[2].address) == ("frame_encode", 0x7F3A2B1C5A10)
    assert f[3].placeholder == "[NULL]"


def test_every_other_format():
    p = parse_text(OTHERS)
    f = p.frames
    kinds = [(x.fmt, x.module, x.module_offset, x.address) for x in f]
    assert kinds[0][:2] == ("asciichat", "libasciichat.so") and f[0].function == "mutex_lock_impl"
    assert kinds[1] == ("asciichat", "libasciichat.so", None, 0x7F3A2B1C4D5E)
    assert kinds[2] == ("glibc", "./ascii-chat", 0x1234, 0x55D1C0001234)
    assert (f[3].fmt, f[3].symbol, f[3].symbol_offset) == ("glibc", "__libc_start_main", 0x85)
    assert (f[4].fmt, f[4].function, f[4].file, f[4].line) == (
        "sanitizer",
        "frame_encode",
        "/src/lib/video/frame.c",
        142,
    )
    assert kinds[5] == ("sanitizer", "/build/lib/libasciichat.so", 0x1C4D5E, 0x7F3A2B1C4D5E)
    assert f[5].build_id == "0123abcd" and f[5].function == "websocket_send"
    assert kinds[6] == ("sanitizer", "/lib/x86_64-linux-gnu/libc.so.6", 0x29D90, 0x7F3A2B029D90)
    assert not any(x.return_address for x in f[4:7]), "sanitizer PCs are already call sites"
    gdb = f[7:11]
    assert [x.fmt for x in gdb] == ["gdb"] * 4
    assert gdb[0].function == "frame_encode" and not gdb[0].return_address  # gdb frame 0 is the PC
    assert gdb[1].return_address and gdb[1].address == 0x55D1C0001300
    assert gdb[2].signal_frame
    assert not gdb[3].return_address  # interrupted by the signal: its PC
    assert gdb[3].module == "/lib/x86_64-linux-gnu/libc.so.6"
    assert (f[11].fmt, f[11].address) == ("bare", 0x7F3A2B1C4D5E)
    assert (f[12].fmt, f[12].module, f[12].module_offset) == ("modoff", "libasciichat.so", 0x1C4D5E)
    assert (f[13].fmt, f[13].address) == ("panic", 0x55D1C0001234)
    assert p.lines[-1] == "a line that is not a frame"


def test_unknown_lines_pass_through_byte_for_byte(tmp_path):
    text = "hello \x1b[31mred\x1b[0m world\n\tTabbed: [x] not a frame\n=== Memory Report ===\n"
    (tmp_path / "in.txt").write_text(text)
    r = CliRunner().invoke(main, ["symbolize", str(tmp_path / "in.txt"), "--color", "always"])
    assert r.exit_code == 0
    assert r.stdout == text


def test_json_keys_and_unresolved_exit_1(tmp_path):
    (tmp_path / "in.txt").write_text(CRASH_A)
    r = CliRunner().invoke(main, ["symbolize", str(tmp_path / "in.txt"), "--json"])
    assert r.exit_code == 1  # the runtime-address frames cannot be resolved without the binaries
    data = json.loads(r.stdout)
    keys = {"index", "address", "module", "module_offset", "function", "file", "line", "column", "inlined",
            "conflict", "source"}  # fmt: skip
    assert all(keys <= set(f) for f in data["frames"])
    assert data["frames"][0]["source"] == "input" and data["frames"][0]["function"] == "crash_handler"
    assert data["frames"][3]["source"] is None


def test_real_gdb_backtrace(tmp_path):
    """gdb's own `bt` output, from a core-less batch run, resolves through the executable."""
    if not shutil.which("gdb") or not shutil.which("gcc"):
        pytest.skip("gdb and gcc needed")
    (tmp_path / "g.c").write_text(
        "#include <signal.h>\n__attribute__((noinline)) int inner(int x) { raise(SIGTRAP); return x + 1; }\n"
        "__attribute__((noinline)) int outer(int x) { return inner(x) * 2; }\n"
        "int main(void) { return outer(3) == 42; }\n"
    )
    exe = tmp_path / "g"
    subprocess.run(["gcc", "-g", "-O1", "-no-pie", str(tmp_path / "g.c"), "-o", str(exe)], check=True)
    out = subprocess.run(["gdb", "-q", "-batch", "-nx", "-ex", "run", "-ex", "bt", str(exe)],
                         capture_output=True, text=True, timeout=60).stdout  # fmt: skip
    bt = "\n".join(x for x in out.splitlines() if x.startswith("#"))
    if "outer" not in bt:
        pytest.skip(f"gdb could not run the program here: {out[-200:]}")
    (tmp_path / "bt.txt").write_text(bt + "\n")
    r = CliRunner().invoke(main, ["symbolize", str(tmp_path / "bt.txt"), "--exe", str(exe), "--json"])
    data = json.loads(r.stdout)
    by_fn = {f["function"]: f for f in data["frames"]}
    assert {"inner", "outer", "main"} <= set(by_fn)
    # Non-PIE: bias 0 recovered from the return addresses; caller frames resolve from DWARF at address - 1.
    for fn in ("outer", "main"):
        assert by_fn[fn]["source"] == "dwarf"
        assert int(by_fn[fn]["lookup_address"], 16) == int(by_fn[fn]["address"], 16) - 1
    assert by_fn["main"]["line"] == 4
    assert any("recovered load bias 0x0" in n for n in data["notes"])
