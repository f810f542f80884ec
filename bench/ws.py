"""WebSocket benchmark: 230 KB IMAGE_FRAME throughput and connect-storm rate against our server.

    $ .venv/bin/python bench/ws.py                  # everything, default sizes
    $ .venv/bin/python bench/ws.py --frames 500 --storm 2000 --parallel 16

The server always runs in a separate process (so client and server do not share a CPU):
  * "bare aiohttp": a plain aiohttp WebSocketResponse that counts messages (the baseline peer);
  * "our ws transport": start_ws with a room that only counts messages (WS layer + watchdog);
  * "asciichat-server": the real server, --no-encrypt (no ACIP crypto in the figure) and in its
                 default encrypted mode (full handshake, every packet ENCRYPTED); the storm runs
                 against the encrypted server, each cycle waiting for its first handshake packet.
Frames are counted by the server (/metrics frames_in), so a figure means frames received whole.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from asciichat_server.config import ServerConfig  # noqa: E402
from asciichat_server.metrics import Metrics  # noqa: E402
from asciichat_server.net import bind_listeners  # noqa: E402
from asciichat_server.protocol.constants import PacketType, StreamType  # noqa: E402
from asciichat_server.protocol.packets import encode_packet  # noqa: E402

FRAME_W, FRAME_H = 320, 240  # 320 x 240 RGB24 = 230,400 bytes, the frame size in FIX_IDEAS 2C/3
READY_RE = re.compile(r"\[READY\] listening on (?P<addrs>.*?) \(")


# --- the counting server (child process) -------------------------------------------------------


class CountingRoom:
    """Receives every message and counts it; answers nothing (the transport is what we measure)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.metrics.slots_max = 64

    async def serve(self, link) -> None:  # type: ignore[no-untyped-def]
        self.metrics.connections_active += 1
        self.metrics.slots_used += 1
        try:
            while (data := await link.recv()) is not None:
                self.metrics.frames_in += 1
                self.metrics.bytes_in += len(data)
        finally:
            self.metrics.connections_active -= 1
            self.metrics.slots_used -= 1
            await link.close("eof")


async def _serve_counting(plain: bool) -> None:
    """Serve the counting room with our transport, or (``plain``) with bare aiohttp as the baseline."""
    from aiohttp import web

    from asciichat_server.http import render_prometheus
    from asciichat_server.transport.ws import WS_MAX_MSG_SIZE, start_ws

    metrics = Metrics()
    sockets = bind_listeners(["127.0.0.1"], 0)
    if plain:

        async def handler(request: web.Request) -> web.StreamResponse:
            if request.headers.get("Upgrade", "").lower() != "websocket":
                return web.Response(text=render_prometheus(metrics))
            ws = web.WebSocketResponse(protocols=("acip",), compress=False, max_msg_size=WS_MAX_MSG_SIZE)
            await ws.prepare(request)
            async for msg in ws:
                metrics.frames_in += 1
                metrics.bytes_in += len(msg.data)
            return ws

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        await web.SockSite(runner, sockets[0]).start()
        close = runner.cleanup
    else:
        server = SimpleNamespace(room=CountingRoom(metrics), metrics=metrics, config=ServerConfig())
        listener = await start_ws(server, sockets)
        close = listener.close
    print(f"PORT {sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await close()


# --- client side ---------------------------------------------------------------------------------


def image_frame_payload() -> bytes:
    from asciichat_server.protocol.payloads import ImageFrame

    pixels = os.urandom(FRAME_W * FRAME_H * 3)
    return ImageFrame(width=FRAME_W, height=FRAME_H, pixels=pixels).encode()


def image_frame_packet() -> bytes:
    return encode_packet(PacketType.IMAGE_FRAME, image_frame_payload())


async def encrypted_throughput(base: str, frames: int) -> tuple[float, int]:
    """Full ACIP session over WS (X25519 handshake, every packet ENCRYPTED), then ``frames`` IMAGE_FRAMEs."""
    from asciichat_server.protocol.connection import ClientConnection, ClientSecurity
    from asciichat_server.protocol.events import HandshakeComplete

    payload = image_frame_payload()
    conn = ClientConnection(ClientSecurity(), "ws")
    conn.start()
    async with aiohttp.ClientSession() as session:
        before = await frames_in(session, base)
        async with session.ws_connect(base + "/", protocols=("acip",), max_msg_size=0) as ws:
            done = False
            while not done:
                msg = await ws.receive(timeout=5)
                done = any(isinstance(e, HandshakeComplete) for e in conn.receive_message(msg.data))
                for data in conn.data_to_send():
                    await ws.send_bytes(data)
            for packet in _plaintext_preamble():
                conn.send(int.from_bytes(packet[8:10], "big"), packet[22:])

            async def drain() -> None:  # ASCII frames come back; decrypt them like a client would
                async for msg in ws:
                    conn.receive_message(msg.data)

            reader = asyncio.ensure_future(drain())
            started = time.perf_counter()
            for _ in range(frames):
                conn.send(PacketType.IMAGE_FRAME, payload)
                for data in conn.data_to_send():
                    await ws.send_bytes(data)
            deadline = time.perf_counter() + 60
            while (seen := await frames_in(session, base)) < before + frames and time.perf_counter() < deadline:
                await asyncio.sleep(0.005)
            elapsed = time.perf_counter() - started
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
    return elapsed, seen - before


async def frames_in(session: aiohttp.ClientSession, base: str) -> int:
    async with session.get(base + "/metrics") as resp:
        text = await resp.text()
    match = re.search(r'^asciichat_frames_total\{direction="in"\} (\d+)', text, re.M)
    return int(match[1]) if match else 0


async def throughput(base: str, frames: int, preamble: list[bytes], counted_preamble: bool = True) -> tuple[float, int]:
    """Send ``frames`` IMAGE_FRAMEs on one connection; seconds until the server counted them all.

    The counting room counts every message; the real room counts IMAGE_FRAMEs only
    (``counted_preamble`` False), so the handshake-free preamble is not expected in frames_in.
    """
    extra = len(preamble) if counted_preamble else 0
    packet = image_frame_packet()
    async with aiohttp.ClientSession() as session:
        before = await frames_in(session, base)
        async with session.ws_connect(base + "/", protocols=("acip",), max_msg_size=0) as ws:

            async def drain() -> None:  # the real server answers with ASCII frames; keep reading
                async for _msg in ws:
                    pass

            reader = asyncio.ensure_future(drain())
            for item in preamble:
                await ws.send_bytes(item)
            started = time.perf_counter()
            for _ in range(frames):
                await ws.send_bytes(packet)
            target = before + extra + frames
            deadline = time.perf_counter() + 60
            while (seen := await frames_in(session, base)) < target and time.perf_counter() < deadline:
                await asyncio.sleep(0.005)
            elapsed = time.perf_counter() - started
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
    return elapsed, seen - before - extra


async def storm(base: str, cycles: int, parallel: int, wait_first: bool) -> tuple[float, int]:
    """Connect/close ``cycles`` times with ``parallel`` clients at once; returns (seconds, failures)."""
    remaining = iter(range(cycles))
    failures = 0
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal failures
            for _ in remaining:
                try:
                    async with session.ws_connect(base + "/", protocols=("acip",)) as ws:
                        if wait_first:
                            msg = await ws.receive(timeout=5)
                            if msg.type is not aiohttp.WSMsgType.BINARY:
                                failures += 1
                except (aiohttp.ClientError, TimeoutError, OSError):
                    failures += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(parallel)))
        return time.perf_counter() - started, failures


def _spawn(args: list[str], pattern: re.Pattern[str]) -> tuple[subprocess.Popen[str], re.Match[str]]:
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    assert proc.stdout is not None
    lines = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if match := pattern.search(line):
            return proc, match
    proc.kill()
    raise RuntimeError("server did not start: " + "".join(lines[-5:]).strip())


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGINT if proc.args[1:2] != [__file__] else signal.SIGTERM)
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()


def _ws_base(match: re.Match[str]) -> str:
    ws = [a for a in match["addrs"].split(", ") if a.startswith("ws://")]
    if not ws:
        raise RuntimeError("server listed no ws:// address")
    return "http://" + ws[0].removeprefix("ws://")


def _report(label: str, elapsed: float, frames: int, size: int) -> None:
    print(
        f"{label}: {frames} x {size / 1000:.0f} KB in {elapsed:.2f} s = "
        f"{frames / elapsed:.0f} frames/s, {frames * size / elapsed / 1e6:.1f} MB/s"
    )


def _plaintext_preamble() -> list[bytes]:
    from asciichat_server.protocol.payloads import ClientCapabilities, StreamFlags

    caps = ClientCapabilities(width=80, height=24)
    return [
        encode_packet(PacketType.CLIENT_CAPABILITIES, caps.encode()),
        encode_packet(PacketType.STREAM_START, StreamFlags(StreamType.VIDEO).encode()),
    ]


async def main(args: argparse.Namespace) -> int:
    size = len(image_frame_packet())
    python = sys.executable
    # Loopback figures follow the machine's load; print it so the numbers can be read.
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")

    for mode, label in (("plain", "bare aiohttp (baseline)     "), ("ours", "our ws transport            ")):
        proc, match = _spawn([python, __file__, "--serve-counting", mode], re.compile(r"PORT (\d+)"))
        try:
            base = f"http://127.0.0.1:{match[1]}"
            await throughput(base, 20, [])  # warm-up
            # Best of --repeat runs: loopback figures on a shared machine are noisy.
            elapsed, got = min([await throughput(base, args.frames, []) for _ in range(args.repeat)])
            _report(label, elapsed, got, size)
            elapsed, failures = await storm(base, args.storm, args.parallel, wait_first=False)
            print(
                f"{label}: storm {args.storm} connect/close in {elapsed:.2f} s = "
                f"{args.storm / elapsed:.0f} connects/s ({failures} failed, {args.parallel} parallel)"
            )
        finally:
            _stop(proc)

    server_cmd = [python, "-m", "asciichat_server.cli", "--port", "0", "--websocket-port", "0", "--max-clients", "32"]
    try:
        proc, match = _spawn([*server_cmd, "--no-encrypt"], READY_RE)
    except RuntimeError as exc:
        print(f"server (--no-encrypt)       : not measured: {exc}")
    else:
        try:
            base = _ws_base(match)
            preamble = _plaintext_preamble()
            elapsed, got = min([await throughput(base, args.frames, preamble, False) for _ in range(args.repeat)])
            _report("asciichat-server --no-encrypt", elapsed, got, size)
        except Exception as exc:
            print(f"server (--no-encrypt)       : not measured: {type(exc).__name__}: {exc}")
        finally:
            _stop(proc)

    try:
        proc, match = _spawn(server_cmd, READY_RE)
    except RuntimeError as exc:
        print(f"server (encrypted)          : not measured: {exc}")
    else:
        try:
            base = _ws_base(match)
            elapsed, got = min([await encrypted_throughput(base, args.frames) for _ in range(args.repeat)])
            _report("asciichat-server encrypted  ", elapsed, got, size)
            elapsed, failures = await storm(base, args.storm, args.parallel, wait_first=True)
            print(
                f"asciichat-server storm      : {args.storm} connect/first-packet/close in {elapsed:.2f} s = "
                f"{args.storm / elapsed:.0f} connects/s ({failures} failed, {args.parallel} parallel)"
            )
        finally:
            _stop(proc)
    print(f"machine: load average {os.getloadavg()[0]:.1f} at end")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1000, help="IMAGE_FRAMEs per throughput run")
    parser.add_argument("--storm", type=int, default=1000, help="connect/close cycles")
    parser.add_argument("--repeat", type=int, default=3, help="throughput runs per transport (best is shown)")
    parser.add_argument("--parallel", type=int, default=8, help="clients connecting at once in the storm")
    parser.add_argument("--serve-counting", choices=["ours", "plain"], help=argparse.SUPPRESS)
    ns = parser.parse_args()
    if ns.serve_counting:
        asyncio.run(_serve_counting(ns.serve_counting == "plain"))
        sys.exit(0)
    sys.exit(asyncio.run(main(ns)))
