"""asciichat-demo runs the server, two clients and every diag command, then stops everything."""

import os
import re
import socket
import subprocess
import sys
from pathlib import Path


def test_demo_end_to_end(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "asciichat_server.demo", "--color", "never", "--snapshot-delay", "1.5"],
        capture_output=True,
        text=True,
        timeout=170,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-2000:]
    assert "=== done ===" in out
    ports = [int(p) for p in re.search(r"TCP port (\d+), WebSocket port (\d+)", out).groups()]
    # the WebSocket client printed a 100x30 grid frame
    grid = out.split("--no-reconnect ===\n", 1)[1].split("\n\n===", 1)[0].splitlines()
    assert len(grid) == 30
    assert all(len(row) <= 100 for row in grid) and max(len(row) for row in grid) >= 90
    # diag ports saw both families and an ACIP answer; the WS probe upgraded with acip
    assert "IPv4 listening, IPv6 listening" in out
    assert "ACIP server answered" in out
    assert "subprotocol acip" in out
    # diag logs summary has the lifecycles of the TCP and WS clients
    assert "Client lifecycles" in out and re.search(r"│ WS\s+│", out) and re.search(r"│ TCP\s+│", out)
    # diag symbolize resolved the lld-linked library frames and flagged the interposed symbol
    assert "[libasciichat.so] frame_encode() (lib/video/frame.c:13)" in out
    assert "[inlined] checksum_row() (lib/video/frame.c:8)" in out
    assert "[CONFLICT!]" in out
    # everything stopped: nothing listens on the demo's ports any more
    for port in ports:
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0
    # and its temporary folder (the server log) is gone
    assert not list(tmp_path.glob("asciichat-demo-*"))
