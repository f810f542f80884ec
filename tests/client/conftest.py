"""Fixtures: a real `asciichat-server` process on loopback, and a runner for the `asciichat-client` CLI."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVER = [sys.executable, "-m", "asciichat_server.cli"]
CLIENT = [sys.executable, "-m", "asciichat_server.client.cli"]
_READY_TCP = re.compile(r"tcp://127\.0\.0\.1:(\d+)")
_READY_WS = re.compile(r"ws://[^\s,]*:(\d+)")


@dataclass
class RunningServer:
    proc: subprocess.Popen
    tcp_port: int
    ws_port: int | None
    log_file: Path

    @property
    def tcp(self) -> str:
        return f"127.0.0.1:{self.tcp_port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}/"

    def log(self) -> str:
        return self.log_file.read_text() if self.log_file.exists() else ""


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT))


def start_server(tmp_path: Path, *args: str, websocket: bool = False, timeout: float = 20.0) -> RunningServer:
    log_file = tmp_path / f"server-{time.monotonic_ns()}.log"
    cmd = [*SERVER, "127.0.0.1", "--port", "0", "--log-file", str(log_file), "--log-level", "debug", *args]
    cmd += ["--websocket-port", "0"] if websocket else ["--no-websocket"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log_file.exists():
            for line in log_file.read_text().splitlines():
                if "[READY]" in line:
                    tcp = _READY_TCP.search(line)
                    ws = _READY_WS.search(line)
                    assert tcp, line
                    return RunningServer(proc, int(tcp.group(1)), int(ws.group(1)) if ws else None, log_file)
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}: {proc.stderr.read()}")
        time.sleep(0.02)
    proc.kill()
    raise AssertionError(f"server printed no [READY] line within {timeout}s")


def stop_server(server: RunningServer) -> None:
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGINT)
        try:
            server.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()
    if server.proc.stderr:
        server.proc.stderr.close()


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., RunningServer]]:
    started: list[RunningServer] = []

    def factory(*args: str, websocket: bool = False) -> RunningServer:
        server = start_server(tmp_path, *args, websocket=websocket)
        started.append(server)
        return server

    yield factory
    for server in started:
        stop_server(server)


def _run_client(*args: str, timeout: float = 40.0) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLIENT, *args],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def run_client() -> Callable[..., subprocess.CompletedProcess]:
    """Run the `asciichat-client` CLI as a subprocess (stdout piped, so plain frames)."""
    return _run_client


@pytest.fixture(scope="module")
def default_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One encrypted server (TCP and WS) shared by the tests of a module that need nothing special."""
    server = start_server(tmp_path_factory.mktemp("shared-server"), websocket=True)
    yield server
    stop_server(server)
