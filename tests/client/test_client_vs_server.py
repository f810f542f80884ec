"""The `asciichat-client` CLI against the real `asciichat-server`, over loopback TCP and WebSocket."""

from __future__ import annotations

import os
import pty
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import nacl.signing
import pytest

ROOT = Path(__file__).resolve().parents[2]
STANDARD_PALETTE = set("   ...',;:clodxkO0KXNWM")
SNAPSHOT = ["--test-pattern", "--snapshot", "--snapshot-delay", "0.5", "--fps", "10", "--color-level", "none"]


def assert_frame(stdout: str, cols: int, rows: int) -> list[str]:
    """A monochrome frame fitted into cols x rows: no line wider, no more rows, one dimension filled."""
    lines = stdout.rstrip("\n").split("\n")
    assert 1 <= len(lines) <= rows, lines
    widths = [len(line) for line in lines]
    assert max(widths) <= cols, widths
    # The 16:9 test pattern is width-bound in 40x12 cells (cell aspect 2): 40 columns, 11 rows.
    assert max(widths) == cols or len(lines) == rows, (widths, len(lines))
    chars = set("".join(lines))
    assert chars <= STANDARD_PALETTE, chars - STANDARD_PALETTE
    assert len(chars - {" "}) >= 5, chars  # a real picture, not a blank screen
    return lines


def test_plaintext_snapshot(server_factory, run_client) -> None:
    server = server_factory("--no-encrypt")
    result = run_client(server.tcp, "--no-encrypt", *SNAPSHOT, "-x", "40", "-y", "12")
    assert result.returncode == 0, result.stderr
    assert_frame(result.stdout, 40, 12)
    assert "\x1b[" not in result.stdout  # piped and colour none: plain text only


def test_encrypted_snapshot_default_key_variant(default_server, run_client) -> None:
    server = default_server
    result = run_client(server.tcp, *SNAPSHOT, "-x", "40", "-y", "12", "--log-level", "info")
    assert result.returncode == 0, result.stderr
    assert_frame(result.stdout, 40, 12)
    assert "encrypted" in result.stderr and "key variant c41" in result.stderr


@pytest.mark.parametrize("variant", ["c41", "head"])
def test_key_variants_and_head_caps(default_server, variant: str, run_client) -> None:
    server = default_server
    result = run_client(server.tcp, *SNAPSHOT, "-x", "60", "-y", "20", "--key-variant", variant, "--head-caps")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.rstrip("\n").split("\n")
    assert len(lines) <= 20 and max(len(line) for line in lines) <= 60


def test_requested_size_is_honoured(default_server, run_client) -> None:
    server = default_server
    result = run_client(server.tcp, *SNAPSHOT, "-x", "100", "-y", "10")
    assert result.returncode == 0, result.stderr
    # Height-bound now: 10 rows, round(10 * 480/270 * 2) = 36 columns.
    lines = result.stdout.rstrip("\n").split("\n")
    assert len(lines) == 10
    assert max(len(line) for line in lines) == 36


def test_password_right_wrong_and_missing_over_tcp_and_ws(server_factory, run_client) -> None:
    server = server_factory("--password", "correct horse battery", websocket=True)
    good = run_client(server.tcp, *SNAPSHOT, "-x", "40", "-y", "12", "--password", "correct horse battery")
    assert good.returncode == 0, good.stderr
    assert_frame(good.stdout, 40, 12)
    bad = run_client(server.tcp, *SNAPSHOT, "-x", "40", "-y", "12", "--password", "wrong horse battery")
    assert bad.returncode == 1 and bad.stdout == ""
    assert "server rejected authentication: password incorrect" in bad.stderr, bad.stderr
    assert "Traceback" not in bad.stderr
    ws_good = run_client(server.ws, *SNAPSHOT, "-x", "40", "-y", "12", "--password", "correct horse battery")
    assert ws_good.returncode == 0, ws_good.stderr
    assert_frame(ws_good.stdout, 40, 12)
    ws_missing = run_client(server.ws, *SNAPSHOT)
    assert ws_missing.returncode == 1 and ws_missing.stdout == ""
    assert "server requires a password and none was given" in ws_missing.stderr, ws_missing.stderr


def _write_seed(path, key: nacl.signing.SigningKey) -> str:
    path.write_text(bytes(key).hex() + "\n")  # a 32-byte seed as 64 hex characters
    return str(path)


def test_pinned_server_key(server_factory, run_client, tmp_path) -> None:
    from asciichat_server.config import openssh_public_line

    identity = nacl.signing.SigningKey.generate()
    server = server_factory("--key", _write_seed(tmp_path / "server.key", identity))
    right = bytes(identity.verify_key).hex()
    good = run_client(server.tcp, *SNAPSHOT, "-x", "40", "-y", "12", "--server-key", right)
    assert good.returncode == 0, good.stderr
    assert_frame(good.stdout, 40, 12)
    pub = tmp_path / "server.pub"  # an id_ed25519.pub-style file works too
    pub.write_text(openssh_public_line(identity.verify_key, "test-server") + "\n")
    by_file = run_client(server.tcp, *SNAPSHOT, "--server-key", str(pub))
    assert by_file.returncode == 0, by_file.stderr
    wrong = bytes(nacl.signing.SigningKey.generate().verify_key).hex()
    bad = run_client(server.tcp, *SNAPSHOT, "--server-key", wrong)
    assert bad.returncode == 1
    assert bad.stdout == ""
    assert "server identity key does not match the pinned --server-key" in bad.stderr, bad.stderr
    assert "Traceback" not in bad.stderr


def test_client_identity_allow_list(server_factory, tmp_path, run_client) -> None:
    allowed = nacl.signing.SigningKey.generate()
    stranger = nacl.signing.SigningKey.generate()
    keys = tmp_path / "clients.txt"
    keys.write_text(bytes(allowed.verify_key).hex() + "\n")
    server = server_factory("--client-keys", str(keys))
    good = run_client(server.tcp, *SNAPSHOT, "-x", "40", "-y", "12", "--key", _write_seed(tmp_path / "a.key", allowed))
    assert good.returncode == 0, good.stderr
    bad = run_client(server.tcp, *SNAPSHOT, "--key", _write_seed(tmp_path / "s.key", stranger))
    assert bad.returncode != 0
    assert "rejected" in bad.stderr.lower() or "key" in bad.stderr.lower(), bad.stderr


def test_encrypting_client_against_plaintext_server_fails_cleanly(server_factory, run_client) -> None:
    server = server_factory("--no-encrypt")
    result = run_client(server.tcp, *SNAPSHOT, "--timeout", "3")
    assert result.returncode != 0
    assert result.stdout == ""
    assert "Traceback" not in result.stderr and result.stderr.strip()


def test_nobody_listening(run_client) -> None:

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = run_client(f"127.0.0.1:{port}", "--snapshot")
    assert result.returncode == 1
    assert "cannot connect" in result.stderr and "Traceback" not in result.stderr


def test_websocket_encrypted_snapshot(default_server, run_client) -> None:
    server = default_server
    assert server.ws_port
    result = run_client(server.ws, *SNAPSHOT, "-x", "40", "-y", "12", "--log-level", "debug")
    assert result.returncode == 0, result.stderr
    assert_frame(result.stdout, 40, 12)
    assert "[CAPTURE]" in result.stderr and "via ws" in result.stderr


def test_file_image_snapshot(default_server, run_client, tmp_path) -> None:
    # Left half black, right half white: the frame must be blank on the left and dense on the right.
    pixels = bytearray()
    for _row in range(90):
        pixels += bytes([0, 0, 0]) * 80 + bytes([255, 255, 255]) * 80
    image = tmp_path / "halves.ppm"
    image.write_bytes(b"P6\n160 90\n255\n" + bytes(pixels))
    server = default_server
    result = run_client(server.tcp, "--file", str(image), *SNAPSHOT[1:], "-x", "32", "-y", "9")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.rstrip("\n").split("\n")
    assert len(lines) == 9
    for line in lines:
        assert line[:14].strip() == ""  # black -> the palette's blank end
        assert set(line[18:32]) == {"M"}  # white -> the densest character


def test_streaming_piped_until_sigint(default_server, tmp_path) -> None:

    server = default_server
    cmd = [sys.executable, "-m", "asciichat_server.client.cli", server.tcp, "-x", "20", "-y", "6", "--fps", "15"]
    cmd += ["--color-level", "none"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    deadline = time.monotonic() + 20
    while len(lines) < 6 * 4 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=10)
    lines += out.split("\n")
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    # Piped: frames one after another, each ended by a newline; the pattern moves, so frames differ.
    assert len(lines) >= 6 * 3, len(lines)
    assert not any("\x1b[" in line for line in lines)
    assert len({tuple(lines[i : i + 5]) for i in range(0, len(lines) - 5, 5)}) > 1


def test_tty_output_uses_cursor_home(default_server, tmp_path) -> None:

    server = default_server
    leader, follower = pty.openpty()
    cmd = [sys.executable, "-m", "asciichat_server.client.cli", server.tcp, "-x", "30", "-y", "8", "--fps", "15"]
    env = dict(os.environ, PYTHONPATH=str(ROOT), TERM="xterm-256color", COLORTERM="truecolor")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=follower, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    os.close(follower)
    received = b""
    deadline = time.monotonic() + 8
    try:
        while time.monotonic() < deadline and received.count(b"\x1b[H") < 3:
            ready, _, _ = select.select([leader], [], [], 0.2)
            if ready:
                received += os.read(leader, 65536)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
        while True:
            ready, _, _ = select.select([leader], [], [], 0.2)
            if not ready:
                break
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            received += chunk
        os.close(leader)
    assert proc.returncode == 0
    assert received.count(b"\x1b[H") >= 3  # every frame redrawn from the top-left
    assert b"\x1b[2J" in received  # cleared before the first frame
    assert b"\x1b[38;2;" in received  # truecolor auto-detected from COLORTERM on a TTY
    assert received.rstrip().endswith(b"\x1b[?25h") or b"\x1b[?25h" in received[-64:]  # cursor restored


def test_websocket_plaintext_mode(server_factory, run_client) -> None:
    server = server_factory("--ws-plaintext", websocket=True)
    result = run_client(server.ws, "--no-encrypt", *SNAPSHOT, "-x", "40", "-y", "12", "--log-level", "info")
    assert result.returncode == 0, result.stderr
    assert_frame(result.stdout, 40, 12)
    assert "(ws, plaintext)" in result.stderr


def test_custom_palette_and_color_mode_alias(default_server, run_client) -> None:
    server = default_server
    args = ["--test-pattern", "--snapshot", "--snapshot-delay", "0.5", "--fps", "10", "-x", "40", "-y", "12"]
    result = run_client(server.tcp, *args, "--color-mode", "none", "--palette", "custom", "--palette-chars", " .oO@")
    assert result.returncode == 0, result.stderr
    chars = set(result.stdout.replace("\n", ""))
    assert chars <= set(" .oO@") and {"@", "o"} <= chars, chars


def test_full_server_is_reported(server_factory, run_client) -> None:
    server = server_factory("--max-clients", "1")
    cmd = [sys.executable, "-m", "asciichat_server.client.cli", server.tcp, "-x", "20", "-y", "6", "--fps", "5"]
    holder = subprocess.Popen(
        cmd, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert holder.stdout.readline()  # the first client is in and receiving frames
        result = run_client(server.tcp, *SNAPSHOT)
    finally:
        holder.send_signal(signal.SIGINT)
        holder.communicate(timeout=10)
    assert result.returncode == 1
    assert "server is full (SERVER_FULL: Maximum client limit reached)" in result.stderr, result.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_reconnects_after_server_restart(server_factory) -> None:
    port = _free_port()
    first = server_factory("--port", str(port))
    cmd = [sys.executable, "-m", "asciichat_server.client.cli", first.tcp, "-x", "20", "-y", "6", "--fps", "10"]
    cmd += ["--color-level", "none", "--timeout", "3"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    client = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert client.stdout.readline()  # frames from the first server
        first.proc.send_signal(signal.SIGINT)
        first.proc.wait(timeout=10)
        time.sleep(1.5)  # the client notices and retries while nobody listens
        second = server_factory("--port", str(port))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and "TCP_CONNECT" not in second.log():
            time.sleep(0.1)
        assert "TCP_CONNECT" in second.log()
        for _ in range(12):  # two more frames, now from the second server
            assert client.stdout.readline()
    finally:
        client.send_signal(signal.SIGINT)
        _out, err = client.communicate(timeout=10)
    assert client.returncode == 0, err
    assert "reconnecting in 1s" in err


def test_no_reconnect_exits_when_server_goes(server_factory, run_client) -> None:
    server = server_factory()
    cmd = [sys.executable, "-m", "asciichat_server.client.cli", server.tcp, "-x", "20", "-y", "6", "--no-reconnect"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    client = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert client.stdout.readline()
    server.proc.send_signal(signal.SIGINT)
    _out, err = client.communicate(timeout=15)
    assert client.returncode == 1
    assert "connection lost" in err and "reconnecting" not in err


def test_capture_log_line_text_and_json(default_server, run_client, tmp_path) -> None:
    import json
    import re

    from asciichat_server.log import LINE_RE

    server = default_server
    text_log = tmp_path / "client.log"
    result = run_client(server.tcp, *SNAPSHOT, "--log-level", "debug", "--log-file", str(text_log))
    assert result.returncode == 0, result.stderr
    capture = [line for line in text_log.read_text().splitlines() if "[CAPTURE]" in line]
    assert capture, text_log.read_text()
    match = re.match(LINE_RE, capture[0])
    assert match and match.group("level") == "DEBUG"
    assert re.search(
        r"\[CAPTURE\] sent frame 1 480x270 \(388800 bytes\) via tcp \[every=5s suppressed=0\]$", capture[0]
    )

    json_log = tmp_path / "client.ndjson"
    result = run_client(
        server.tcp, *SNAPSHOT, "--log-level", "debug", "--log-format", "json", "--log-file", str(json_log)
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in json_log.read_text().splitlines()]
    captures = [r for r in records if r["body"]["message"].startswith("[CAPTURE]")]
    assert captures and captures[0]["body"]["rate_interval_s"] == 5.0
    assert captures[0]["header"]["level"] == "DEBUG"


def _set_winsize(fd: int, rows: int, cols: int) -> None:
    import fcntl
    import struct
    import termios

    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _frames_from_tty(data: bytes) -> list[list[str]]:
    import re

    text = data.decode("utf-8", "replace")
    chunks = text.split("\x1b[H")[1:]
    strip = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
    # The pty turns "\n" into "\r\n" (onlcr).
    return [strip.sub("", chunk).replace("\r", "").rstrip("\n").split("\n") for chunk in chunks]


def test_terminal_resize_resends_capabilities(default_server) -> None:
    server = default_server
    leader, follower = pty.openpty()
    _set_winsize(follower, 24, 80)
    cmd = [sys.executable, "-m", "asciichat_server.client.cli", server.tcp, "--fps", "15", "--color-level", "none"]
    env = dict(os.environ, PYTHONPATH=str(ROOT), TERM="xterm")
    env.pop("COLUMNS", None)
    env.pop("LINES", None)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=follower, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)

    def read_until(predicate, timeout: float) -> bytes:
        got = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not predicate(got):
            ready, _, _ = select.select([leader], [], [], 0.2)
            if ready:
                got += os.read(leader, 65536)
        return got

    try:
        before = read_until(lambda b: b.count(b"\x1b[H") >= 3, 15)
        wide = _frames_from_tty(before)[-2]
        assert max(len(line) for line in wide) > 40  # 80x24 terminal: a 16:9 picture 80 columns wide
        _set_winsize(follower, 12, 40)
        proc.send_signal(signal.SIGWINCH)

        def narrow_seen(b: bytes) -> bool:
            frames = _frames_from_tty(b)
            return len(frames) >= 2 and max(len(line) for line in frames[-2]) <= 40

        after = read_until(narrow_seen, 15)
        assert narrow_seen(after), _frames_from_tty(after)[-2:]
        assert b"\x1b[2J" in after  # cleared for the new size
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
        os.close(follower)
        os.close(leader)
    assert proc.returncode == 0
