"""Reconnect storm against a real in-process server: connect/handshake/stream/disconnect cycles, TCP and WS.

    .venv/bin/python bench/stress.py --cycles 10000
    cycles run 10000 (tcp-clean 1429, tcp-half-open 1429, ...) in 444.2s = 22.5 connects/s
    slots leaked 0, exceptions 0, failed cycles 0, fds leaked 0, tasks leaked 0, peak RSS 81.1 MiB
    (2 cores at load average ~16; exit status 1 when anything leaked or failed)

Each cycle is one of: a full encrypted TCP session that streams a frame and leaves cleanly, the same
ended by RST (SO_LINGER 0), a half-open end (shutdown(SHUT_WR), then wait for the server), an RST in the
middle of the handshake, a full WebSocket session, a WebSocket aborted mid-handshake, and one aborted in
the middle of a fragmented message.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import itertools
import logging
import random
import resource
import socket
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _support():
    name = "_stress_support"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "tests" / "stress" / "_support.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


from asciichat_server.protocol.constants import PacketType  # noqa: E402
from asciichat_server.protocol.payloads import ProtocolVersion  # noqa: E402
from asciichat_server.server import AsciiChatServer  # noqa: E402

KINDS = (
    "tcp-clean",
    "tcp-rst",
    "tcp-half-open",
    "tcp-mid-handshake",
    "ws-clean",
    "ws-mid-handshake",
    "ws-mid-fragment",
)
# Every step of a cycle has a bound; a cycle that exceeds it is counted, not waited for.
STEP_TIMEOUT_S = 10.0


@dataclass
class StormResult:
    cycles: int = 0
    outcomes: Counter = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def connects_per_s(self) -> float:
        return self.cycles / self.elapsed_s if self.elapsed_s else 0.0


def _rst(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    writer.transport.abort()


async def _cycle(kind: str, server: AsciiChatServer, session: aiohttp.ClientSession, rng: random.Random) -> str:
    s = _support()
    image = s.image_payload(32, 18, rng.randrange(256))
    if kind in ("tcp-clean", "tcp-rst", "tcp-half-open"):
        try:
            client = await s.AcipClient.connect(server.tcp_port, timeout=STEP_TIMEOUT_S)
        except EOFError:
            return "full"
        try:
            await client.send(PacketType.IMAGE_FRAME, image)
            await client.wait_for(PacketType.ASCII_FRAME, timeout=STEP_TIMEOUT_S)
            if kind == "tcp-clean":
                await client.send(PacketType.CLIENT_LEAVE)
                await client.close()
            elif kind == "tcp-rst":
                _rst(client.raw.writer)
            else:
                client.raw.writer.transport.write_eof()  # half-open: we keep reading, the server must end it
                if not await client.raw.closed_by_server(timeout=STEP_TIMEOUT_S):
                    raise AssertionError("server kept a half-closed connection open")
                await client.close()
        except BaseException:
            _rst(client.raw.writer)
            raise
        return kind
    if kind == "tcp-mid-handshake":
        raw = await s.RawClient.connect(server.tcp_port)
        await raw.send(PacketType.PROTOCOL_VERSION, ProtocolVersion(supports_encryption=1).encode())
        await raw.read_raw(timeout=STEP_TIMEOUT_S)  # the server's answer, then vanish
        _rst(raw.writer)
        return kind
    if kind == "ws-clean":
        client = await s.AcipWsClient.connect(session, server.ws_port)
        try:
            await client.join(timeout=STEP_TIMEOUT_S)
            await client.send(PacketType.IMAGE_FRAME, image)
            await client.pump_until(lambda: bool(client.of_type(PacketType.ASCII_FRAME)), STEP_TIMEOUT_S)
        finally:
            await client.close()
        return kind
    raw_ws = await s.RawWsClient.connect(server.ws_port)
    if kind == "ws-mid-handshake":
        await raw_ws.next_event(timeout=STEP_TIMEOUT_S)  # the server speaks first; leave at once
        raw_ws.abort()
        return kind
    # ws-mid-fragment: a message's first fragment, then RST
    await raw_ws.write(raw_ws.frame(bytes(rng.getrandbits(8) for _ in range(2048)), False))
    _rst(raw_ws.writer)
    return kind


async def run_storm(server: AsciiChatServer, cycles: int, parallel: int = 4, seed: int = 8) -> StormResult:
    """Run ``cycles`` cycles, ``parallel`` at a time, in a seeded random mix of KINDS."""
    rng = random.Random(seed)
    plan = list(itertools.islice(itertools.cycle(KINDS), cycles))
    rng.shuffle(plan)
    todo = iter(plan)
    result = StormResult()
    started = time.monotonic()
    async with aiohttp.ClientSession() as session:

        async def worker() -> None:
            for kind in todo:
                try:
                    outcome = await asyncio.wait_for(_cycle(kind, server, session, rng), 3 * STEP_TIMEOUT_S)
                except Exception as exc:  # counted and reported; the storm goes on
                    result.failures.append(f"{kind}: {type(exc).__name__}: {exc}")
                    outcome = "failed"
                result.outcomes[outcome] += 1
                result.cycles += 1

        await asyncio.gather(*(worker() for _ in range(parallel)))
    result.elapsed_s = time.monotonic() - started
    return result


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING or record.exc_info:
            self.records.append(record)


async def main_async(args: argparse.Namespace) -> int:
    s = _support()
    handler = _Collect()
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    config = s.make_config(addresses=["127.0.0.1"], websocket=True, websocket_port=0, max_clients=args.max_clients)
    server = AsciiChatServer(config)
    await server.start()
    loop_errors = s.LoopErrors()
    await asyncio.sleep(0.2)
    fds0, tasks0 = s.fd_count(), s.task_count()
    try:
        result = await run_storm(server, args.cycles, args.parallel, args.seed)
        await s.settle(lambda: server.room.client_count == 0 and server.metrics.slots_used == 0, 20)
        await s.settle(lambda: s.fd_count() <= fds0 and s.task_count() <= tasks0, 10)
        slots_leaked = server.room.client_count + server.metrics.slots_used
        fds_leaked, tasks_leaked = s.fd_count() - fds0, s.task_count() - tasks0
    finally:
        await server.stop()
    exceptions = s.bad_records(handler.records) + [str(e.get("message")) for e in loop_errors.restore()]
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    mix = ", ".join(f"{k} {v}" for k, v in sorted(result.outcomes.items()))
    print(f"cycles run {result.cycles} ({mix}) in {result.elapsed_s:.1f}s = {result.connects_per_s:.1f} connects/s")
    print(
        f"slots leaked {slots_leaked}, exceptions {len(exceptions)}, failed cycles {len(result.failures)}, "
        f"fds leaked {fds_leaked}, tasks leaked {tasks_leaked}, peak RSS {peak_mib:.1f} MiB"
    )
    for line in (result.failures + exceptions)[:10]:
        print("  " + line)
    bad = slots_leaked or exceptions or result.failures or fds_leaked > 0 or tasks_leaked > 0
    return 1 if bad else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=10_000)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--max-clients", type=int, default=9)
    parser.add_argument("--seed", type=int, default=8)
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
