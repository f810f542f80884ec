"""Handshake latency of `asciichat-server`: N clients connect and handshake one after another.

    $ .venv/bin/python bench/handshake.py --clients 200
    mode        n   handshake p50   p99      first packet p50   p99     target p99 <= 20 ms
    plaintext  200  ...

Starts the real server as a subprocess on a free loopback port for each mode (plaintext, encrypted,
password), then drives each client with the sans-I/O ClientConnection over asyncio streams.
"handshake" is TCP connect until the session is open (HANDSHAKE_COMPLETE / SERVER_AUTH_RESP verified;
for plaintext, connect until the first server packet, since there is no handshake); "first packet" adds
CLIENT_CAPABILITIES and waits for the server's first packet after it (SERVER_STATE).
The C server's debug build takes 140-170 ms per handshake (issue 2); with `--c-binary PATH` (or env
ASCIICHAT_C_BINARY) the same client also measures a built c41 `ascii-chat server`, inside `unshare -n`
(the C program announces itself by mDNS and looks for updates), 20 clients per mode.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from asciichat_server.protocol import (  # noqa: E402
    ClientCapabilities,
    ClientConnection,
    ClientSecurity,
    ConnectionState,
    HandshakeComplete,
    PacketReceived,
    PacketType,
    ProtocolError,
)
from asciichat_server.protocol.crypto import derive_password_key  # noqa: E402

PASSWORD = "bench password 123"
TARGET_P99_MS = 20.0
MODES = {
    "plaintext": (["--no-encrypt"], {"encrypt": False}),
    "encrypted": ([], {}),
    "password": (["--password", PASSWORD], {"password_key": b""}),
}


def start_server(args: list[str], workdir: Path) -> tuple[subprocess.Popen, int]:
    log_file = workdir / f"server-{time.monotonic_ns()}.log"
    cmd = [sys.executable, "-m", "asciichat_server.cli", "127.0.0.1", "--port", "0", "--no-websocket"]
    cmd += ["--log-level", "info", "--log-file", str(log_file), *args]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if log_file.exists():
            match = re.search(r"\[READY\].*?tcp://127\.0\.0\.1:(\d+)", log_file.read_text())
            if match:
                return proc, int(match.group(1))
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}: {proc.stderr.read()}")
        time.sleep(0.02)
    proc.kill()
    raise SystemExit("server did not become ready")


async def one_client(port: int, security: ClientSecurity, timeout_s: float = 5.0) -> tuple[float, float]:
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        conn = ClientConnection(security, "tcp")
        conn.start()

        async def flush() -> None:
            for data in conn.data_to_send():
                writer.write(data)
            await writer.drain()

        await flush()
        opened = conn.state == ConnectionState.OPEN
        handshake_s = 0.0
        if opened:
            conn.send(PacketType.CLIENT_CAPABILITIES, ClientCapabilities(width=80, height=24).encode())
            await flush()
        while True:
            data = await asyncio.wait_for(reader.read(65536), timeout_s)
            if not data:
                raise RuntimeError("server closed the connection")
            for event in conn.receive_data(data):
                if isinstance(event, HandshakeComplete) and not opened:
                    opened = True
                    handshake_s = time.perf_counter() - started
                    conn.send(PacketType.CLIENT_CAPABILITIES, ClientCapabilities(width=80, height=24).encode())
                elif isinstance(event, PacketReceived) and opened:
                    first_s = time.perf_counter() - started
                    return (handshake_s or first_s), first_s
            await flush()
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


async def bench_mode(
    port: int, security: ClientSecurity, n: int, timeout_s: float = 5.0, failures: list[str] | None = None
) -> tuple[list[float], list[float]]:
    """N sequential handshakes; a failure raises unless `failures` collects them (for the C peer)."""
    hs: list[float] = []
    first: list[float] = []
    for i in range(n + 1):  # the first one warms up and is not counted
        try:
            h, f = await one_client(port, security, timeout_s)
        except (OSError, RuntimeError, TimeoutError, ProtocolError) as exc:
            if failures is None:
                raise
            failures.append(repr(exc))
            continue
        if i:
            hs.append(h * 1000)
            first.append(f * 1000)
    return hs, first


# The real c41 server, measured with the same client, only inside a private network namespace: it announces
# itself by mDNS and looks for updates. Its Dev build needs ~1 s per handshake here, so fewer clients.
C_PEER_CLIENTS = 20
C_PEER_PORT = 27224


def c_peer_rows(c_binary: str, n: int) -> None:
    """Runs inside `unshare -n`: start the C server per mode, measure, print rows."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    with tempfile.TemporaryDirectory() as home:
        for mode, extra in (("plaintext", ["--no-encrypt"]), ("encrypted", [])):
            log_path = Path(home) / f"c-{mode}.log"
            with open(log_path, "w") as log:
                cmd = [c_binary, "--no-check-update", "--log-level", "warn", "server", "--port", str(C_PEER_PORT)]
                # cwd in the temporary HOME: the Dev build writes server.log/ascii-chat.log into its cwd.
                env = {**os.environ, "HOME": home}
                proc = subprocess.Popen(cmd + extra, cwd=home, env=env, stdout=log, stderr=log)
            try:
                # The Dev build initialises audio, mDNS and WebSocket first: wait until it accepts, then settle.
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    try:
                        socket.create_connection(("127.0.0.1", C_PEER_PORT), timeout=1).close()
                        break
                    except OSError:
                        time.sleep(0.5)
                time.sleep(2)
                security = ClientSecurity(**MODES[mode][1])
                failures: list[str] = []
                hs, first = asyncio.run(bench_mode(C_PEER_PORT, security, n, timeout_s=30, failures=failures))
                note = f"  ({len(failures)} failed: {failures[0]})" if failures else ""
                if hs:
                    print(
                        f"{'c41 ' + mode:<14} {len(hs):>5}  {statistics.median(hs):>13.2f} {percentile(hs, 99):>7.2f}  "
                        f"{statistics.median(first):>13.2f} {percentile(first, 99):>7.2f}{note}",
                        flush=True,
                    )
                else:
                    print(f"{'c41 ' + mode:<14} no handshake completed{note}", flush=True)
            finally:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", "-n", type=int, default=200, help="clients per mode (default 200)")
    parser.add_argument("--modes", default=",".join(MODES), help="comma list of: " + ", ".join(MODES))
    parser.add_argument(
        "--c-binary",
        default=os.environ.get("ASCIICHAT_C_BINARY", ""),
        help="also measure this built c41 ascii-chat server (run in `unshare -n`; env ASCIICHAT_C_BINARY)",
    )
    parser.add_argument("--inside-namespace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside_namespace:
        c_peer_rows(args.c_binary, min(args.clients, C_PEER_CLIENTS))
        return 0
    password_key = derive_password_key(PASSWORD)  # Argon2id once, as a real client does at start-up
    print(
        f"{'mode':<14} {'n':>5}  {'handshake p50':>13} {'p99':>7}  {'first pkt p50':>13} {'p99':>7}  "
        f"(ms; target handshake p99 <= {TARGET_P99_MS:g} ms; C debug server 140-170 ms)"
    )
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for mode in args.modes.split(","):
            server_args, sec_kwargs = MODES[mode]
            if "password_key" in sec_kwargs:
                sec_kwargs = {**sec_kwargs, "password_key": password_key}
            security = ClientSecurity(**sec_kwargs)
            proc, port = start_server(server_args, Path(tmp))
            try:
                hs, first = asyncio.run(bench_mode(port, security, args.clients))
            finally:
                proc.terminate()
                proc.wait(timeout=10)
            p99 = percentile(hs, 99)
            worst = max(worst, p99)
            print(
                f"{mode:<14} {len(hs):>5}  {statistics.median(hs):>13.2f} {p99:>7.2f}  "
                f"{statistics.median(first):>13.2f} {percentile(first, 99):>7.2f}"
            )
    if args.c_binary:
        # Same client code against the named peer, in a private network namespace.
        cmd = ["unshare", "-n", sys.executable, __file__, "--inside-namespace", "--c-binary", args.c_binary]
        subprocess.run([*cmd, "--clients", str(args.clients)], check=False)
    print(f"worst handshake p99 {worst:.2f} ms: {'OK' if worst <= TARGET_P99_MS else 'ABOVE TARGET'}")
    # p99 on a shared machine is mostly scheduling noise; say how busy it was.
    load1, load5, _ = os.getloadavg()
    print(f"load average {load1:.2f} / {load5:.2f} (1 / 5 min) on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
