"""Slots are freed exactly once on every disconnect path; connect storms; start/stop cycles."""

from __future__ import annotations

import asyncio
import logging
import random
import re

import pytest

from asciichat_server.log import LINE_RE, TextFormatter
from asciichat_server.protocol.constants import PacketType
from asciichat_server.protocol.errors import ProtocolError
from asciichat_server.protocol.packets import encode_packet
from asciichat_server.protocol.payloads import ProtocolVersion
from asciichat_server.server import AsciiChatServer


def _slots_ok(server) -> bool:
    room = server.room
    return room.client_count + room.slots_free == server.config.max_clients


async def _assert_empty(server, helpers):
    await helpers.wait_until(lambda: server.room.client_count == 0, timeout=10)
    # Every session has finished its cleanup, including the [TCP_DISCONNECT] line after the close.
    await asyncio.wait_for(server.room._all_gone.wait(), 5)
    assert server.room.slots_free == server.config.max_clients
    assert server.metrics.connections_active == 0
    assert server.metrics.slots_used == 0


async def test_eof_frees_slot(start_server, helpers):
    server = await start_server(max_clients=1)
    client = await helpers.AcipClient.connect(server.tcp_port)
    assert server.room.client_count == 1
    await client.close()
    await _assert_empty(server, helpers)


async def test_rst_frees_slot(start_server, helpers):
    server = await start_server(max_clients=1)
    client = await helpers.AcipClient.connect(server.tcp_port)
    await client.send(PacketType.IMAGE_FRAME, helpers.image_payload())
    client.raw.reset()
    await _assert_empty(server, helpers)


async def test_handshake_failure_frees_slot(start_server, helpers):
    server = await start_server(max_clients=1)
    raw = await helpers.RawClient.connect(server.tcp_port)
    await raw.send_raw(b"GET / HTTP/1.1\r\n\r\n")
    assert await raw.closed_by_server()
    await _assert_empty(server, helpers)
    assert server.metrics.handshakes_failed == 1


async def test_handshake_timeout_frees_slot(start_server, helpers):
    server = await start_server(max_clients=1, handshake_timeout_s=0.3)
    raw = await helpers.RawClient.connect(server.tcp_port)
    # Start a handshake and stall after the version exchange.
    await raw.send(PacketType.PROTOCOL_VERSION, ProtocolVersion(supports_encryption=1).encode())
    await raw.wait_for(PacketType.PROTOCOL_VERSION)
    assert await raw.closed_by_server(timeout=10)
    await _assert_empty(server, helpers)
    assert server.metrics.timeouts == 1


async def test_idle_timeout_frees_slot(start_server, helpers):
    server = await start_server(max_clients=1, idle_timeout_s=0.4)
    client = await helpers.AcipClient.connect(server.tcp_port)
    # Keepalives keep arriving, but the client sends nothing: the server gives up after idle_timeout_s.
    assert await client.raw.closed_by_server(timeout=10)
    await _assert_empty(server, helpers)


async def test_client_leave_frees_slot(start_server, helpers):
    server = await start_server(max_clients=1)
    client = await helpers.AcipClient.connect(server.tcp_port)
    await client.send(PacketType.CLIENT_LEAVE, b"bye")
    assert await client.raw.closed_by_server()
    await _assert_empty(server, helpers)


async def test_shutdown_closes_every_client(helpers, no_task_leaks):
    server = AsciiChatServer(helpers.make_config(max_clients=4))
    await server.start()
    clients = [await helpers.AcipClient.connect(server.tcp_port) for _ in range(2)]
    half = await helpers.RawClient.connect(server.tcp_port)  # mid-handshake
    await helpers.wait_until(lambda: server.room.client_count == 3)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await server.stop()
    assert loop.time() - started < 2.0
    for c in clients:
        assert await c.raw.closed_by_server(timeout=3)
    assert await half.closed_by_server(timeout=3)
    assert server.room.client_count == 0
    assert server.room.slots_free == 4
    disconnects = [r.getMessage() for r in no_task_leaks.records if "[TCP_DISCONNECT]" in r.getMessage()]
    assert len(disconnects) == 3 and all("reason=shutdown" in d for d in disconnects)


async def test_each_client_is_removed_exactly_once(start_server, helpers, caplog):
    caplog.set_level(logging.DEBUG)
    server = await start_server(max_clients=3, idle_timeout_s=0.5)
    a = await helpers.AcipClient.connect(server.tcp_port)
    b = await helpers.AcipClient.connect(server.tcp_port)
    c = await helpers.RawClient.connect(server.tcp_port)
    await a.send(PacketType.CLIENT_LEAVE)
    b.raw.reset()
    await c.send_raw(b"\x00\x00\x00\x0b")  # bad magic
    await _assert_empty(server, helpers)

    def disconnect_lines():
        return [r.getMessage() for r in caplog.records if "[TCP_DISCONNECT]" in r.getMessage()]

    # The line is written after the link is closed, a moment after the slot is freed.
    await helpers.wait_until(lambda: len(disconnect_lines()) >= 3)
    await asyncio.sleep(0.2)  # room for a (wrong) second removal line
    disconnects = disconnect_lines()
    ids = [re.search(r"id=(\d+)", d).group(1) for d in disconnects]
    assert sorted(ids) == ["1", "2", "3"]


@pytest.mark.slow
async def test_storm_then_max_clients_fresh_clients_get_in(start_server, helpers, no_task_leaks):
    max_clients = 4
    server = await start_server(max_clients=max_clients, handshake_timeout_s=5)
    rng = random.Random(7)
    port = server.tcp_port
    joined_ok = 0

    async def one_cycle(i: int) -> None:
        nonlocal joined_ok
        kind = rng.choice(["close", "rst", "garbage", "version", "join"])
        host = "127.0.0.1" if i % 2 else "::1"
        if kind == "join":
            try:
                client = await helpers.AcipClient.connect(port, host=host, timeout=5)
            except (EOFError, ConnectionError, ProtocolError):
                return  # server full at that instant: the SERVER_FULL path is part of the storm
            joined_ok += 1
            if rng.random() < 0.5:
                await client.send(PacketType.IMAGE_FRAME, helpers.image_payload())
            if rng.random() < 0.5:
                client.raw.reset()
            else:
                await client.close()
            return
        raw = await helpers.RawClient.connect(port, host=host)
        if kind == "rst":
            raw.reset()
            return
        if kind == "garbage":
            await raw.send_raw(b"\xde\xad\xbe\xef" * 8)
        elif kind == "version":
            await raw.send(PacketType.PROTOCOL_VERSION, ProtocolVersion(supports_encryption=1).encode())
        await raw.close()

    cycles = 300
    batch = 10
    for start in range(0, cycles, batch):
        await asyncio.gather(*(one_cycle(i) for i in range(start, start + batch)))
        assert _slots_ok(server)
    await _assert_empty(server, helpers)
    assert joined_ok > 0
    assert server.metrics.connections_total >= cycles
    fresh = [await helpers.AcipClient.connect(port) for _ in range(max_clients)]
    for client in fresh:
        await client.send(PacketType.PING)
        await client.wait_for(PacketType.PONG)
    assert server.room.client_count == max_clients
    for client in fresh:
        await client.close()
    await _assert_empty(server, helpers)


@pytest.mark.slow
async def test_100_start_serve_stop_cycles(helpers, no_task_leaks):
    failures = []
    for i in range(100):
        server = AsciiChatServer(helpers.make_config(max_clients=2))
        try:
            await server.start()
            client = await helpers.AcipClient.connect(server.tcp_port, host="::1" if i % 2 else "127.0.0.1")
            await client.send(PacketType.PING)
            await client.wait_for(PacketType.PONG)
            await client.close()
        except Exception as exc:  # count, do not stop: the figure is the failure count
            failures.append(f"cycle {i}: {type(exc).__name__}: {exc}")
        finally:
            await server.stop()
    assert failures == []


async def test_log_lines_of_a_session_parse(start_server, helpers, tmp_path):
    handler = logging.FileHandler(tmp_path / "s.log")
    handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.DEBUG)
    try:
        server = await start_server()
        client = await helpers.AcipClient.connect(server.tcp_port)
        await client.send(PacketType.IMAGE_FRAME, helpers.image_payload())
        await client.wait_for(PacketType.ASCII_FRAME)
        await client.close()
        await _assert_empty(server, helpers)
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        handler.close()
    lines = (tmp_path / "s.log").read_text().splitlines()
    pattern = re.compile(LINE_RE)
    assert any("[TCP_CONNECT]" in line for line in lines)
    assert any("[TCP_DISCONNECT]" in line for line in lines)
    assert any("[READY]" in line for line in lines)
    # Continuation lines would only come from tracebacks, which must not happen here.
    assert all(pattern.match(line) for line in lines), [line for line in lines if not pattern.match(line)]


async def test_plaintext_client_accepted_only_without_auth(start_server, helpers):
    # Like c41: CLIENT_CAPABILITIES first means a --no-encrypt client; fine unless auth is required.
    open_server = await start_server()
    raw = await helpers.RawClient.connect(open_server.tcp_port)
    await raw.send(PacketType.CLIENT_CAPABILITIES, helpers.caps_payload())
    await raw.send(PacketType.PING)
    await raw.wait_for(PacketType.PONG)
    await raw.close()
    locked = await start_server(password="correct horse")
    raw = await helpers.RawClient.connect(locked.tcp_port)
    await raw.send(PacketType.CLIENT_CAPABILITIES, helpers.caps_payload())
    failed = await raw.wait_for(PacketType.CRYPTO_AUTH_FAILED)
    assert failed.payload[0] & 0x01  # PASSWORD_REQUIRED
    assert await raw.closed_by_server()
    await _assert_empty(locked, helpers)


async def test_split_packets_byte_by_byte(start_server, helpers):
    server = await start_server(encrypt=False)
    raw = await helpers.RawClient.connect(server.tcp_port)
    data = encode_packet(PacketType.CLIENT_CAPABILITIES, helpers.caps_payload()) + encode_packet(PacketType.PING)
    for i in range(len(data)):
        await raw.send_raw(data[i : i + 1])
    await raw.wait_for(PacketType.PONG)
    await raw.close()
