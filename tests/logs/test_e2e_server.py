"""End to end: `diag logs -f` on the log of a real asciichat-server serving a real WebSocket client."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import aiohttp
import pytest
from click.testing import CliRunner

from asciichat_diag.logs.cli import logs

ROOT = Path(__file__).resolve().parents[2]


def wait_for(path: Path, pattern: str, timeout: float = 60.0) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            m = re.search(pattern, path.read_text(errors="replace"))
            if m:
                return m
        time.sleep(0.05)
    raise AssertionError(f"{pattern!r} never appeared in {path}")


async def one_ws_session(port: int) -> int:
    """Connect, read the server's first packet, close; return our local port."""
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"ws://127.0.0.1:{port}/", protocols=("acip",)) as ws:
            local = ws.get_extra_info("sockname")[1]
            msg = await ws.receive(timeout=10)
            assert msg.type == aiohttp.WSMsgType.BINARY
        return local


def test_follow_a_real_server_log(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    server = subprocess.Popen(
        [
            *(sys.executable, "-m", "asciichat_server.cli", "127.0.0.1", "--port", "0", "--websocket-port", "0"),
            *("--log-file", str(log), "--log-level", "debug"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )
    out = tmp_path / "follow.ndjson"
    follower = None
    try:
        ready = wait_for(log, r"\[READY\].*ws://127\.0\.0\.1:(\d+)")
        follower = subprocess.Popen(
            [
                *(sys.executable, "-m", "asciichat_diag.cli", "logs", "-f", str(log), "--tag", "WS_", "--json"),
                *("--interval", "0.05", "-n", "0"),
            ],
            stdout=out.open("wb"),
            stderr=subprocess.DEVNULL,
            cwd=ROOT,
        )
        # Proof that the follower is live (past its backlog): a line of our own, appended like
        # the server's FileHandler appends, must come through before the client connects.
        for attempt in range(120):
            with log.open("a") as fh:
                fh.write(f"[{datetime.now():%H:%M:%S.%f}] [INFO ] [WS_MARK] follower check {attempt}\n")
            time.sleep(0.5)
            if "WS_MARK" in out.read_text():
                break
        local_port = asyncio.run(one_ws_session(int(ready.group(1))))
        wait_for(out, r"WS_DISCONNECT")
    finally:
        if follower is not None:
            follower.send_signal(signal.SIGTERM)
            follower.wait(timeout=20)
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            pytest.fail("asciichat-server did not stop on SIGINT")
    records = [json.loads(line) for line in out.read_text().splitlines()]
    records = [r for r in records if r["tags"][0] != "WS_MARK"]
    assert [r["tags"][0] for r in records] == ["WS_CONNECT", "WS_DISCONNECT"]
    peer = f"127.0.0.1:{local_port}"
    assert all(peer in r["message"] for r in records)
    assert all(r["file"] == "asciichat_server/transport/ws.py" and r["level"] == "DEBUG" for r in records)

    result = CliRunner().invoke(logs, [str(log), "--summary", "--json"])
    (session,) = json.loads(result.output)["ws_sessions"]
    assert session["peer"] == peer and session["state"] == "closed" and session["client_id"]
    assert session["reason"] and session["duration_s"] is not None and session["duration_s"] >= 0
    ready_tags = [t["tag"] for t in json.loads(result.output)["tags"]]
    assert {"BIND", "READY", "WS_CONNECT", "WS_DISCONNECT"} <= set(ready_tags)
