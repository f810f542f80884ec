"""`asciichat-demo`: the whole toolkit in one run, on loopback only.

Starts asciichat-server, connects a TCP and a WebSocket reference client sending test patterns,
prints the grid one of them receives, then runs `diag ports`, `diag logs --summary` on the server's
log and `diag symbolize` on the bundled sample crash, and stops everything.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import click

import asciichat_diag

SAMPLE = Path(asciichat_diag.__file__).resolve().parent / "samples" / "crash-lld"
READY_TIMEOUT_S = 20.0
HOST = "127.0.0.1"


def _free_port(taken: set[int]) -> int:
    """A port free on both 127.0.0.1 and ::1, below Linux's ephemeral range (so diag ports has no warning)."""
    for _ in range(200):
        port = random.randint(20000, 32000)
        if port in taken:
            continue
        try:
            for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
                with socket.socket(family, socket.SOCK_STREAM) as sock:
                    sock.bind((host, port))
        except OSError:
            continue
        taken.add(port)
        return port
    raise click.ClickException("no free port on 127.0.0.1 and ::1 between 20000 and 32000")


def _wait_clients(ws_port: int, count: int, timeout_s: float) -> None:
    """Wait until the server's /health counts `count` clients (so the grid has every tile)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://{HOST}:{ws_port}/health", timeout=2) as reply:
                if json.load(reply).get("clients", 0) >= count:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise click.ClickException(f"the TCP client did not join within {timeout_s:.0f} s")


def _heading(text: str, color: bool) -> None:
    line = f"\n=== {text} ==="
    click.echo(click.style(line, bold=True, fg="cyan") if color else line, color=color)


def _python(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def _wait_ready(log_file: Path, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    """Wait for the server's [READY] line; it is written only once every listener accepts."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise click.ClickException(f"asciichat-server exited with {proc.returncode} before it was ready")
        if log_file.exists() and "[READY]" in log_file.read_text(errors="replace"):
            return
        time.sleep(0.05)
    raise click.ClickException(f"asciichat-server was not ready after {timeout_s:.0f} s")


def _stop(proc: subprocess.Popen[bytes], name: str, timeout_s: float = 5.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            click.echo(f"demo: {name} ignored SIGINT for {timeout_s:.0f} s; killing it", err=True)
            proc.kill()
            proc.wait()
    return proc.returncode


@contextlib.contextmanager
def _started(cmd: list[str], name: str, **kwargs: object) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(cmd, **kwargs)  # type: ignore[call-overload]
    try:
        yield proc
    finally:
        _stop(proc, name)


def _run_step(title: str, cmd: list[str], color: bool, ok_codes: tuple[int, ...] = (0,)) -> bool:
    _heading(f"{title}\n$ {' '.join(Path(cmd[0]).name if i == 0 else a for i, a in enumerate(cmd))}", color)
    code = subprocess.run(cmd, check=False).returncode
    if code not in ok_codes:
        click.echo(f"demo: step '{title}' exited with {code}", err=True)
        return False
    return True


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--snapshot-delay", type=click.FloatRange(0.5, 30), default=2.0, show_default=True,
              help="Seconds of video before the grid is printed.")  # fmt: skip
@click.option("--color", type=click.Choice(["auto", "always", "never"]), default="auto", show_default=True)
@click.option("--keep", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Keep the server log in this folder (default: a temporary one, removed at the end).")  # fmt: skip
def main(snapshot_delay: float, color: str, keep: Path | None) -> None:
    """Run the server, two clients and every diag command against them, then stop.

    Example: asciichat-demo --snapshot-delay 3
    """
    use_color = sys.stdout.isatty() if color == "auto" else color == "always"
    work = keep or Path(tempfile.mkdtemp(prefix="asciichat-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        ok = _demo(work, snapshot_delay, use_color)
    finally:
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)
    _heading("done" if ok else "done, with failures (see above)", use_color)
    if keep is not None:
        click.echo(f"server log kept in {work / 'server.log'}")
    sys.exit(0 if ok else 1)


def _demo(work: Path, snapshot_delay: float, use_color: bool) -> bool:
    color_args = ["--color", "always" if use_color else "never"]
    log_file = work / "server.log"
    log_file.unlink(missing_ok=True)
    taken: set[int] = set()
    tcp_port, ws_port = _free_port(taken), _free_port(taken)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    diag = ["asciichat_diag.cli"]

    _heading(f"asciichat-server on 127.0.0.1 and ::1, TCP port {tcp_port}, WebSocket port {ws_port}", use_color)
    server_cmd = _python("asciichat_server.cli", "--port", str(tcp_port), "--websocket-port", str(ws_port),
                         "--log-file", str(log_file), "--log-level", "debug")  # fmt: skip
    tcp_client = _python("asciichat_server.client.cli", f"{HOST}:{tcp_port}", "--test-pattern", "--fps", "15",
                         "-x", "60", "-y", "20", "--no-reconnect")  # fmt: skip
    ws_client = _python("asciichat_server.client.cli", f"ws://{HOST}:{ws_port}/", "--test-pattern", "--fps", "15",
                        "-x", "100", "-y", "30", "--snapshot", "--snapshot-delay", str(snapshot_delay),
                        "--color-level", "256" if use_color else "none", "--no-reconnect")  # fmt: skip
    live_steps = [
        ("the grid a WebSocket client sees (its own video and the TCP client's)", ws_client),
        ("diag ports: who listens, on which family, and does ACIP answer",
         _python(*diag, "ports", str(tcp_port), "--acip", *color_args)),
        ("diag ports: the WebSocket port", _python(*diag, "ports", str(ws_port), "--ws", *color_args)),
    ]  # fmt: skip
    quiet = {"env": env, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    ok = True
    with _started(server_cmd, "asciichat-server", **quiet) as server:
        _wait_ready(log_file, server, READY_TIMEOUT_S)
        click.echo("ready")
        with _started(tcp_client, "TCP client", **quiet):
            _wait_clients(ws_port, 1, READY_TIMEOUT_S)
            for title, cmd in live_steps:
                ok &= _run_step(title, cmd, use_color)
        code = _stop(server, "asciichat-server")
        click.echo(f"asciichat-server stopped (exit {code})")
        ok &= code == 0

    after_steps = [
        ("diag logs --summary: tags, call sites and client lifecycles from the server log",
         _python(*diag, "logs", "--summary", str(log_file), *color_args)),
        ("diag symbolize: a crash from another machine, exe + lld-linked libasciichat.so",
         _python(*diag, "symbolize", str(SAMPLE / "crash.txt"), "--search-path", str(SAMPLE / "bin"), *color_args)),
    ]  # fmt: skip
    for title, cmd in after_steps:
        ok &= _run_step(title, cmd, use_color)
    return ok


if __name__ == "__main__":
    main()
