"""Faults fed to the diag tools: truncated or corrupt ELF/DWARF from a gcc build, crash files of random bytes,
logs with invalid UTF-8 and a 10 MB line, a port that disappears mid-probe. Each ends with at most one error
line, the exit code its --help documents (0 ok, 1 problem found, 2 bad input) and never a traceback."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from asciichat_diag.cli import main

pytestmark = pytest.mark.stress

PROG = r"""
#include <stdio.h>
int helper(int x) { return x * 3 + 1; }
int main(int argc, char **argv) { printf("%d\n", helper(argc)); return 0; }
"""


def _invoke(args: list[str]):
    result = CliRunner().invoke(main, args, catch_exceptions=True)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    out = result.stdout + result.stderr
    assert "Traceback" not in out and "internal error" not in result.stderr, out[-2000:]
    return result


def _one_line_error(result) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("diag: error:"), result.stderr


@pytest.fixture(scope="module")
def prog(tmp_path_factory):
    if shutil.which("gcc") is None:
        pytest.skip("gcc not installed")
    d = tmp_path_factory.mktemp("prog")
    (d / "prog.c").write_text(PROG)
    subprocess.run(["gcc", "-g", "-O0", "-o", "prog", "prog.c"], cwd=d, check=True)
    nm = subprocess.run(["nm", "prog"], cwd=d, capture_output=True, text=True, check=True).stdout
    helper = next(int(line.split()[0], 16) for line in nm.splitlines() if line.endswith(" helper"))
    return d / "prog", helper


def _section(path: Path, name: str) -> tuple[int, int]:
    from elftools.elf.elffile import ELFFile

    with path.open("rb") as f:
        sec = ELFFile(f).get_section_by_name(name)
        return sec["sh_offset"], sec["sh_size"]


def test_intact_gcc_binary_resolves(prog, tmp_path):
    exe, helper = prog
    trace = tmp_path / "t.txt"
    trace.write_text(f"{exe.name}(+{helper + 4:#x}) [0x55555555{helper + 4:04x}]\n")
    result = _invoke(["symbolize", "--exe", str(exe), "--no-cache", "--no-adjust", str(trace)])
    # PROG starts with a newline: helper() is on line 3.
    assert result.exit_code == 0 and "helper" in result.stdout and "prog.c:3" in result.stdout, result.stdout


@pytest.mark.parametrize("keep", [0, 1, 16, 63, 64, 200, "quarter", "half", "debug_info", "minus1"])
def test_truncated_elf(prog, tmp_path, keep):
    exe, helper = prog
    data = exe.read_bytes()
    sizes = {"quarter": len(data) // 4, "half": len(data) // 2, "minus1": len(data) - 1}
    if keep == "debug_info":
        offset, size = _section(exe, ".debug_info")
        sizes["debug_info"] = offset + size // 2
    cut = exe.parent / f"cut-{keep}"
    cut.write_bytes(data[: sizes.get(keep, keep)])
    trace = tmp_path / "t.txt"
    trace.write_text(f"{exe.name}(+{helper + 4:#x}) [0x55555555{helper + 4:04x}]\n")
    result = _invoke(["symbolize", "--exe", str(cut), "--no-cache", str(trace)])
    # Cut off section headers = unreadable input (2); anything readable may still leave frames unresolved (1).
    assert result.exit_code in (1, 2), (keep, result.exit_code, result.stdout, result.stderr)
    if result.exit_code == 2:
        _one_line_error(result)


@pytest.mark.parametrize("section", [".debug_info", ".debug_abbrev", ".debug_line", ".debug_str", ".symtab"])
def test_flipped_bytes_in_gcc_dwarf(prog, tmp_path, section):
    exe, helper = prog
    offset, size = _section(exe, section)
    rng = random.Random(section)
    data = exe.read_bytes()
    trace = tmp_path / "t.txt"
    trace.write_text(f"{exe.name}(+{helper + 4:#x}) [0x55555555{helper + 4:04x}]\n")
    codes = set()
    for trial in range(6):
        buf = bytearray(data)
        for _ in range(1 + 3 * trial):
            buf[offset + rng.randrange(size)] ^= 1 << rng.randrange(8)
        bad = tmp_path / f"bad{trial}"
        bad.write_bytes(bytes(buf))
        result = _invoke(["symbolize", "--exe", str(bad), "--no-cache", str(trace)])
        assert result.exit_code in (0, 1, 2), (section, trial, result.stderr)
        if result.exit_code == 2:
            _one_line_error(result)
        codes.add(result.exit_code)
    assert codes


def test_crash_files_of_random_bytes(tmp_path):
    rng = random.Random(8)
    for trial in range(6):
        crash = tmp_path / f"crash{trial}.txt"
        crash.write_bytes(bytes(rng.getrandbits(8) for _ in range(rng.choice((0, 1, 4096, 65536)))))
        result = _invoke(["symbolize", "--no-cache", str(crash)])
        # Random bytes hold no frame: every line passes through (0); a stray frame-like line may be unresolved (1).
        assert result.exit_code in (0, 1), (trial, result.exit_code, result.stderr)
        assert not result.stderr.strip() or len(result.stderr.strip().splitlines()) == 1, result.stderr
    # A random-bytes *binary* is bad input: one line, exit 2.
    junk = tmp_path / "junk.bin"
    junk.write_bytes(bytes(rng.getrandbits(8) for _ in range(5000)))
    (tmp_path / "t.txt").write_text("  #0 0x1139 in helper\n")
    result = _invoke(["symbolize", "--exe", str(junk), "--no-cache", str(tmp_path / "t.txt")])
    assert result.exit_code == 2
    _one_line_error(result)


def test_log_with_invalid_utf8_and_a_10mb_line(tmp_path):
    log = tmp_path / "server.log"
    good = "[12:00:0{}.000001] [INFO ] [tid:1] asciichat_server/room.py:10@serve(): client {} joined\n"
    with log.open("wb") as f:
        f.write(good.format(1, 1).encode())
        f.write(b"[12:00:02.000001] [WARN ] [tid:1] x.c:1@f(): bad \xff\xfe\xc3\x28 bytes\n")
        f.write(b"[12:00:03.000001] [INFO ] [tid:1] x.c:2@g(): " + b"A" * (10 * 1024 * 1024) + b"\n")
        f.write(b"\x80\x81 not a record at all \xf0\x28\x8c\x28\n")
        f.write(good.format(4, 2).encode())
    result = _invoke(["logs", "--color", "never", str(log)])
    assert result.exit_code == 0, result.stderr
    assert "client 1 joined" in result.stdout and "client 2 joined" in result.stdout
    assert "bad" in result.stdout
    filtered = _invoke(["logs", "--color", "never", "--level", "warn", str(log)])
    assert filtered.exit_code == 0 and "bad" in filtered.stdout and "client 1 joined" not in filtered.stdout
    json_out = _invoke(["logs", "--json", str(log)])
    assert json_out.exit_code == 0 and "client 2 joined" in json_out.stdout


def test_unreadable_log_is_one_line_exit_2(tmp_path):
    result = _invoke(["logs", str(tmp_path / "missing.log")])
    assert result.exit_code == 2
    _one_line_error(result)
    directory = _invoke(["logs", str(tmp_path)])
    # click's own usage error for a FILE argument that is a directory: exit 2, no traceback.
    assert directory.exit_code == 2 and "is a directory" in directory.stderr


def test_port_that_disappears_mid_probe():
    """The listener is there when sockets are listed and gone at the first probe's connect."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def vanish() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        listener.close()  # gone for the ::1 probe and the ACIP exchange
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        conn.close()  # RST mid-exchange

    thread = threading.Thread(target=vanish, daemon=True)
    thread.start()
    try:
        result = _invoke(["ports", str(port), "--acip", "--any-owner", "--timeout", "2", "--color", "never"])
    finally:
        listener.close()
        thread.join(5)
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert str(port) in result.stdout


def test_diag_process_on_garbage_has_no_traceback(tmp_path):
    """The real process, not the in-process runner: exit code and stderr as a user sees them."""
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x7fELF" + bytes(range(256)) * 4)
    (tmp_path / "t.txt").write_text("  #0 0x1139 in helper\n")
    code = "import sys; from asciichat_diag.cli import main; sys.exit(main())"
    proc = subprocess.run(
        [sys.executable, "-c", code, "symbolize", "--exe", str(junk), "--no-cache", str(tmp_path / "t.txt")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
