"""The real `asciichat-server` process: [READY], log formats, SIGINT exit, busy port, bad options."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from asciichat_server.log import LINE_RE
from asciichat_server.protocol.constants import PacketType

LINE = re.compile(LINE_RE)
SERVER = [sys.executable, "-m", "asciichat_server.cli"]
ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(*args: str, log_file: Path | None = None) -> subprocess.Popen:
    cmd = [*SERVER, *args, "--no-websocket"]
    if log_file is not None:
        cmd += ["--log-file", str(log_file)]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_ready(log_file: Path, proc: subprocess.Popen, timeout: float = 15.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log_file.exists():
            for line in log_file.read_text().splitlines():
                if "[READY]" in line:
                    return line
        if proc.poll() is not None:
            raise AssertionError(f"server exited early: {proc.returncode}: {proc.stderr.read()}")
        time.sleep(0.02)
    raise AssertionError("no [READY] line")


def test_sigint_with_clients_exits_zero_within_2s(tmp_path):
    port = _free_port()
    log_file = tmp_path / "server.log"
    proc = _spawn("127.0.0.1", "::1", "--port", str(port), "--log-level", "debug", log_file=log_file)
    try:
        ready = _wait_ready(log_file, proc)
        assert f"tcp://127.0.0.1:{port}" in ready and f"tcp://[::1]:{port}" in ready
        # Two clients connected (mid-handshake, holding slots) on both families.
        clients = [socket.create_connection(("127.0.0.1", port)), socket.create_connection(("::1", port))]
        time.sleep(0.2)
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=5)
        elapsed = time.monotonic() - started
        assert code == 0
        assert elapsed < 2.0, elapsed
        for c in clients:
            c.settimeout(1)
            assert c.recv(100) == b""  # the server closed it
            c.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log_file.read_text()
    lines = text.splitlines()
    assert lines
    for line in lines:
        assert LINE.match(line), line
    assert "never retrieved" not in text
    assert "Traceback" not in text
    assert sum("[TCP_DISCONNECT]" in line and "reason=shutdown" in line for line in lines) == 2
    assert proc.stderr.read().count("[READY]") == 1


def test_sigterm_exits_zero(tmp_path):
    log_file = tmp_path / "server.log"
    proc = _spawn("127.0.0.1", "--port", str(_free_port()), log_file=log_file)
    try:
        _wait_ready(log_file, proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=3) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_port_held_by_another_listener(tmp_path):
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    log_file = tmp_path / "server.log"
    try:
        proc = _spawn("127.0.0.1", "--port", str(port), log_file=log_file)
        _out, err = proc.communicate(timeout=20)
    finally:
        holder.close()
    assert proc.returncode == 1
    err_lines = [line for line in err.splitlines() if line.startswith("asciichat-server: error:")]
    assert len(err_lines) == 1
    assert f"127.0.0.1:{port}" in err_lines[0] and "EADDRINUSE" in err_lines[0]
    assert "Traceback" not in err
    tries = [line for line in log_file.read_text().splitlines() if "[BIND] try" in line]
    assert len(tries) == 6
    assert all(LINE.match(t) and f"127.0.0.1:{port}" in t and "errno 98" in t for t in tries)
    assert "[READY]" not in log_file.read_text()


def test_json_log_format(tmp_path):
    log_file = tmp_path / "server.ndjson"
    proc = _spawn("127.0.0.1", "--port", str(_free_port()), "--log-format", "json", log_file=log_file)
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and "READY" not in (log_file.read_text() if log_file.exists() else ""):
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=3) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    records = [json.loads(line) for line in log_file.read_text().splitlines()]
    ready = [r for r in records if r["body"]["message"].startswith("[READY]")]
    assert len(ready) == 1
    assert set(ready[0]["header"]) == {"timestamp", "date", "level", "tid", "file", "line", "func"}
    assert ready[0]["header"]["file"] == "asciichat_server/server.py"
    assert ready[0]["header"]["level"] == "INFO"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-clients", "33"], "33"),
        (["--password", "short"], "too short"),
        (["--no-encrypt", "--password", "long-enough"], "--no-encrypt"),
    ],
)
def test_bad_options_exit_2_with_one_line(args, message):
    proc = subprocess.run([*SERVER, *args], cwd=ROOT, capture_output=True, text=True, timeout=20)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_key_file_exits_with_one_line(tmp_path):
    bad = tmp_path / "key"
    bad.write_bytes(b"not a key")
    proc = subprocess.run(
        [*SERVER, "127.0.0.1", "--port", "0", "--no-websocket", "--key", str(bad)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("asciichat-server: error:")]
    assert len(errors) == 1 and "unrecognised key file" in errors[0]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("args", "expected_v4", "expected_v6"),
    [
        (["--address6", "::1"], False, True),
        (["--address", "127.0.0.1"], True, False),
    ],
)
def test_address_options_bind_exactly_what_is_given(tmp_path, args, expected_v4, expected_v6):
    log_file = tmp_path / "server.log"
    proc = _spawn(*args, "--port", "0", log_file=log_file)
    try:
        ready = _wait_ready(log_file, proc)
        assert ("tcp://127.0.0.1:" in ready) is expected_v4
        assert ("tcp://[::1]:" in ready) is expected_v6
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=3) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_busy_websocket_port_names_the_transport(tmp_path):
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    ws_port = holder.getsockname()[1]
    log_file = tmp_path / "server.log"
    cmd = [*SERVER, "127.0.0.1", "--port", str(_free_port()), "--websocket-port", str(ws_port)]
    cmd += ["--log-file", str(log_file), "--bind-retries", "1"]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=20)
    finally:
        holder.close()
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("asciichat-server: error:")]
    assert len(errors) == 1
    assert "WebSocket" in errors[0] and f"127.0.0.1:{ws_port}" in errors[0]
    text = log_file.read_text()
    assert "[READY]" not in text
    assert text.count(f"127.0.0.1:{ws_port} failed") == 2  # --bind-retries 1: two tries


async def test_sigint_during_traffic(tmp_path, helpers):
    port = _free_port()
    log_file = tmp_path / "server.log"
    proc = _spawn("127.0.0.1", "--port", str(port), "--log-level", "debug", log_file=log_file)
    try:
        await asyncio.to_thread(_wait_ready, log_file, proc)
        sender = await helpers.AcipClient.connect(port)
        viewer = await helpers.AcipClient.connect(port)
        for shade in range(0, 250, 25):
            await sender.send(PacketType.IMAGE_FRAME, helpers.image_payload(shade=shade))
            await asyncio.sleep(0.02)
        await viewer.wait_for(PacketType.ASCII_FRAME)
        streaming = asyncio.create_task(_keep_sending(sender, helpers))
        loop = asyncio.get_running_loop()
        started = loop.time()
        proc.send_signal(signal.SIGINT)
        closed = await asyncio.gather(viewer.raw.closed_by_server(3), sender.raw.closed_by_server(3))
        code = await asyncio.to_thread(proc.wait, 5)
        elapsed = loop.time() - started
        streaming.cancel()
        await asyncio.gather(streaming, return_exceptions=True)
        assert closed == [True, True]
        assert code == 0
        assert elapsed < 2.0, elapsed
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log_file.read_text()
    assert text.count("reason=shutdown") == 2
    assert "Traceback" not in text and "never retrieved" not in text


async def _keep_sending(client, helpers):
    try:
        while True:
            await client.send(PacketType.IMAGE_FRAME, helpers.image_payload(shade=77))
            await asyncio.sleep(0.02)
    except (ConnectionError, OSError):
        return
