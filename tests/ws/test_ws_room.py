"""WebSocket clients in the real room (AsciiChatServer): same sessions as TCP, one room, hardening."""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import time

import aiohttp
import pytest
from wsproto.events import BytesMessage, CloseConnection

from asciichat_server.protocol.constants import PacketType
from asciichat_server.protocol.packets import encode_packet
from asciichat_server.protocol.payloads import ImageFrame, ServerState
from asciichat_server.transport.ws import CLOSE_TRY_AGAIN_LATER


def _frame(width: int = 32, height: int = 24) -> bytes:
    return ImageFrame(width=width, height=height, pixels=os.urandom(width * height * 3)).encode()


def _last_connected(client) -> int | None:
    states = client.of_type(PacketType.SERVER_STATE)
    return ServerState.decode(states[-1].payload).connected if states else None


def _saw_state(client, connected: int) -> bool:
    return any(ServerState.decode(p.payload).connected == connected for p in client.of_type(PacketType.SERVER_STATE))


async def test_server_speaks_first_over_ws(acip_server) -> None:
    server = await acip_server()
    url = f"http://127.0.0.1:{server.ws_port}/"
    async with aiohttp.ClientSession() as session, session.ws_connect(url, protocols=("acip",)) as ws:
        first = await ws.receive(timeout=5)
        second = await ws.receive(timeout=5)
    types = [int.from_bytes(m.data[8:10], "big") for m in (first, second)]
    assert types == [PacketType.CRYPTO_PARAMETERS, PacketType.CRYPTO_KEY_EXCHANGE_INIT]


async def test_tcp_and_ws_clients_share_one_room(acip_server, acip) -> None:
    server = await acip_server()
    async with aiohttp.ClientSession() as session:
        ws = await acip.ws.connect(session, server.ws_port)
        tcp = await acip.tcp.connect(server.tcp_port)
        await ws.join()
        await tcp.join()
        await ws.send(PacketType.IMAGE_FRAME, _frame())
        await tcp.send(PacketType.IMAGE_FRAME, _frame())
        # The C server's broadcast skips WebSocket clients; here both kinds hear the TCP join,
        # and both get the rendered video.
        for client in (ws, tcp):
            await client.pump_until(lambda c=client: _saw_state(c, 2) and bool(c.of_type(PacketType.ASCII_FRAME)))
        assert server.metrics.slots_used == 2
        assert server.metrics.handshakes_ok == 2
        # A WS client leaving reaches the TCP client as a new SERVER_STATE, and the other way round.
        await ws.close()
        await tcp.pump_until(lambda: _last_connected(tcp) == 1)
        ws2 = await acip.ws.connect(session, server.ws_port)
        await ws2.join()
        await tcp.close()
        await ws2.pump_until(lambda: _last_connected(ws2) == 1)
        await ws2.close()
    await _wait(lambda: server.metrics.slots_used == 0)


class RawAcip:
    """ACIP over a raw wsproto socket, so the test decides how each message is fragmented."""

    def __init__(self, raw, acip_client) -> None:
        self.raw = raw
        self.client = acip_client

    @classmethod
    async def connect(cls, raw_client, acip, port: int) -> RawAcip:
        from asciichat_server.protocol.connection import ClientConnection, ClientSecurity

        raw = await raw_client.connect(port)
        conn = ClientConnection(ClientSecurity(), "ws")
        conn.start()
        self = cls(raw, acip.ws(conn, None))

        async def recv() -> bytes | None:
            event = await raw.next_event()
            return event.data if isinstance(event, BytesMessage) else None

        async def send(data: bytes) -> None:
            await raw.write(raw.frame(data, True))

        self.client._recv = recv
        self.client._send = send
        return self


async def _wait(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("gap_s, dropped", [(1.9, False), (2.1, True)])
async def test_fragmented_encrypted_230k_frame_through_the_room(
    acip_server, acip, raw_client, gap_s: float, dropped: bool
) -> None:
    server = await acip_server()
    async with aiohttp.ClientSession() as session:
        watcher = await acip.ws.connect(session, server.ws_port)
        await watcher.join(video=False)
        sender = await RawAcip.connect(raw_client, acip, server.ws_port)
        await sender.client.join()
        await watcher.pump_until(lambda: _saw_state(watcher, 2))
        frames_before = server.metrics.frames_in

        # One 320x240 RGB IMAGE_FRAME inside one ENCRYPTED packet, as c41's native client sends
        # it: BINARY without FIN, then 4096-byte CONTINUATION frames, with one long gap.
        sender.client.conn.send(PacketType.IMAGE_FRAME, _frame(320, 240))
        (wire,) = sender.client.conn.data_to_send()
        assert 230_000 < len(wire) < 232_000
        chunks = [wire[i : i + 4096] for i in range(0, len(wire), 4096)]
        framed = [sender.raw.frame(c, i == len(chunks) - 1) for i, c in enumerate(chunks)]
        for raw in framed[:20]:
            await sender.raw.write(raw)
        await asyncio.sleep(gap_s)
        if dropped:
            close = await sender.raw.wait_closed()
            assert isinstance(close, CloseConnection) and close.code == 1008
            await _wait(lambda: server.metrics.slots_used == 1)
            assert server.metrics.reassembly_timeouts == 1
            assert server.metrics.frames_in == frames_before
            # The room noticed the leave: the watcher hears it.
            await watcher.pump_until(lambda: _saw_state(watcher, 1))
        else:
            for raw in framed[20:]:
                await sender.raw.write(raw)
            await _wait(lambda: server.metrics.frames_in == frames_before + 1)
            await watcher.pump_until(lambda: bool(watcher.of_type(PacketType.ASCII_FRAME)))
            assert server.metrics.reassembly_timeouts == 0
            await sender.raw.aclose()
        await watcher.close()
    await _wait(lambda: server.metrics.slots_used == 0)


async def test_plaintext_ws_mode_serves_clients_without_handshake(acip_server, acip) -> None:
    server = await acip_server(encrypt=False)
    async with aiohttp.ClientSession() as session:
        client = await acip.ws.connect(session, server.ws_port, encrypt=False)
        await client.join()
        await client.send(PacketType.IMAGE_FRAME, _frame())
        await client.pump_until(lambda: bool(client.of_type(PacketType.ASCII_FRAME)))
        assert not any(t in (PacketType.CRYPTO_KEY_EXCHANGE_INIT, PacketType.ENCRYPTED) for t in client.types())
        await client.close()


async def test_configured_plaintext_ws_mode_on_an_encrypted_server(acip_server, acip) -> None:
    # ACIP 6.5: the c41 native client cannot survive a key exchange over WS; --ws-plaintext serves
    # it without one, while TCP clients still must encrypt.
    server = await acip_server(ws_plaintext=True)
    async with aiohttp.ClientSession() as session:
        client = await acip.ws.connect(session, server.ws_port, encrypt=False)
        await client.join()
        await client.send(PacketType.IMAGE_FRAME, _frame())
        await client.pump_until(lambda: bool(client.of_type(PacketType.ASCII_FRAME)))
        assert PacketType.CRYPTO_KEY_EXCHANGE_INIT not in client.types()
        tcp = await acip.tcp.connect(server.tcp_port)
        await tcp.join()
        assert tcp.conn.encrypted
        await client.pump_until(lambda: _saw_state(client, 2))
        await tcp.close()
        await client.close()


# --- storm over both transports --------------------------------------------------------------------


CYCLES = 1000
PARALLEL = 8
MAX_CLIENTS = 9


@pytest.mark.stress
async def test_mixed_tcp_ws_storm_then_max_clients_get_in(acip_server, acip, raw_client) -> None:
    server = await acip_server(max_clients=MAX_CLIENTS)
    rng = random.Random(41)
    kinds = ["ws-clean", "ws-abrupt", "ws-handshake", "ws-fragment", "tcp-clean", "tcp-abrupt", "tcp-partial"]
    plan = list(itertools.islice(itertools.cycle(kinds), CYCLES))
    rng.shuffle(plan)
    outcomes: dict[str, int] = {}
    todo = iter(plan)

    async with aiohttp.ClientSession() as session:

        async def one(kind: str) -> str:
            if kind == "ws-clean":
                async with session.ws_connect(f"http://127.0.0.1:{server.ws_port}/", protocols=("acip",)) as ws:
                    msg = await ws.receive(timeout=5)  # the server speaks first
                    if msg.type is aiohttp.WSMsgType.CLOSE:
                        assert msg.data == CLOSE_TRY_AGAIN_LATER
                        return "full"
                    assert msg.type is aiohttp.WSMsgType.BINARY
                return kind
            if kind == "ws-abrupt":
                client = await raw_client.connect(server.ws_port)
                client.abort()
                return kind
            if kind == "ws-handshake":
                _r, writer = await asyncio.open_connection("127.0.0.1", server.ws_port)
                writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConn")
                writer.close()
                return kind
            if kind == "ws-fragment":
                client = await raw_client.connect(server.ws_port)
                await client.write(client.frame(os.urandom(4096), False))
                client.abort() if rng.random() < 0.5 else await client.aclose()
                return kind
            if kind == "tcp-clean":
                tcp = await acip.tcp.connect(server.tcp_port)
                await tcp.flush()  # PROTOCOL_VERSION
                reply = await asyncio.wait_for(tcp.reader.read(65536), 5)
                await tcp.close()
                return kind if reply and not reply.startswith(b"SERVER_FULL") else "full"
            if kind == "tcp-abrupt":
                _r, writer = await asyncio.open_connection("127.0.0.1", server.tcp_port)
                writer.transport.abort()
                return kind
            _r, writer = await asyncio.open_connection("127.0.0.1", server.tcp_port)
            writer.write(bytes.fromhex("0000000a5c11c4a1"))  # half a header
            writer.close()
            return kind

        async def worker() -> None:
            for kind in todo:
                result = await one(kind)
                outcomes[result] = outcomes.get(result, 0) + 1

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(PARALLEL)))
        elapsed = time.monotonic() - started
        assert sum(outcomes.values()) == CYCLES
        await _wait(lambda: server.metrics.slots_used == 0 and server.room.client_count == 0, timeout=15)
        assert server.metrics.connections_active == 0

        # Fresh clients up to --max-clients, both transports, all get a full session.
        fresh = [await acip.ws.connect(session, server.ws_port) for _ in range(5)]
        fresh += [await acip.tcp.connect(server.tcp_port) for _ in range(MAX_CLIENTS - 5)]
        await asyncio.gather(*(c.join() for c in fresh))
        for client in fresh:
            await client.pump_until(lambda c=client: _saw_state(c, MAX_CLIENTS), timeout=10)
        extra = await session.ws_connect(f"http://127.0.0.1:{server.ws_port}/", protocols=("acip",))
        msg = await extra.receive(timeout=5)
        assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == CLOSE_TRY_AGAIN_LATER
        await extra.close()
        for client in fresh:
            await client.close()
    await _wait(lambda: server.metrics.slots_used == 0)
    print(f"mixed storm: {CYCLES} cycles in {elapsed:.2f}s, outcomes {outcomes}")


async def test_health_and_metrics_reflect_the_real_room(acip_server, acip) -> None:
    server = await acip_server(max_clients=4)
    base = f"http://127.0.0.1:{server.ws_port}"
    async with aiohttp.ClientSession() as session:
        client = await acip.ws.connect(session, server.ws_port)
        await client.join()
        await client.send(PacketType.IMAGE_FRAME, _frame())
        await client.pump_until(lambda: bool(client.of_type(PacketType.ASCII_FRAME)))
        # A second WS peer breaks the handshake with a KEY_EXCHANGE_RESP of the wrong size.
        async with session.ws_connect(base + "/", protocols=("acip",)) as bad:
            await bad.receive(timeout=5)
            await bad.send_bytes(encode_packet(PacketType.CRYPTO_KEY_EXCHANGE_RESP, b"\0" * 5))
            while (await bad.receive(timeout=5)).type is aiohttp.WSMsgType.BINARY:
                pass
        await _wait(lambda: server.metrics.handshakes_failed == 1)
        async with session.get(base + "/health") as resp:
            health = await resp.json()
        async with session.get(base + "/metrics") as resp:
            text = await resp.text()
        await client.close()
    assert health["status"] == "ok" and health["clients"] == 1 and health["slots_free"] == 3
    assert health["max_clients"] == 4
    samples = dict(line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))
    assert samples['asciichat_handshakes_total{result="ok"}'] == "1"
    assert samples['asciichat_handshakes_total{result="failed"}'] == "1"
    assert samples["asciichat_connections_total"] == "2"
    assert int(samples['asciichat_frames_total{direction="in"}']) >= 1
    assert int(samples['asciichat_frames_total{direction="out"}']) >= 1
    assert int(samples['asciichat_bytes_total{direction="in"}']) > 32 * 24 * 3
    assert samples["asciichat_slots_used"] == "1" and samples["asciichat_slots_max"] == "4"
    assert samples["asciichat_reassembly_timeouts_total"] == "0"
