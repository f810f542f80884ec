"""1,000 rapid WebSocket connect/disconnect cycles of every kind; afterwards every slot is free again."""

from __future__ import annotations

import asyncio
import itertools
import os
import random

import aiohttp
import pytest

from asciichat_server.transport.ws import CLOSE_TRY_AGAIN_LATER

MAX_CLIENTS = 9
CYCLES = 1000
PARALLEL = 8


async def _clean(session: aiohttp.ClientSession, url: str, payload: bytes) -> str:
    async with session.ws_connect(url, protocols=("acip",)) as ws:
        await ws.send_bytes(payload)
        msg = await ws.receive(timeout=5)
        if msg.type is aiohttp.WSMsgType.BINARY:
            assert msg.data == payload
            return "echo"
        # A slot held by a peer that just vanished is freed a moment later: "server full" is fair.
        assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == CLOSE_TRY_AGAIN_LATER, msg
        return "full"


async def _abrupt(raw_client, port: int) -> str:
    client = await raw_client.connect(port)
    client.abort()  # RST, no close frame
    return "abrupt"


async def _mid_handshake(port: int) -> str:
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Ver")
    await writer.drain()
    writer.close()
    return "mid-handshake"


async def _upgrade_then_reset(port: int) -> str:
    # The whole upgrade request, then RST before (or while) the server answers 101.
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Protocol: acip\r\n\r\n"
    )
    await asyncio.sleep(0)
    writer.transport.abort()
    return "upgrade-reset"


async def _mid_fragment(raw_client, port: int, payload: bytes, abort: bool) -> str:
    client = await raw_client.connect(port)
    await client.write(client.frame(payload[:4096], False))
    await client.write(client.frame(payload[4096:8192], False))
    if abort:
        client.abort()
    else:
        await client.aclose()  # FIN in the middle of a message
    return "mid-fragment"


@pytest.mark.stress
async def test_storm_then_max_clients_get_in(ws_factory, raw_client, make_packet, echo_room, caplog) -> None:
    server = await ws_factory(lambda m: echo_room(m, max_clients=MAX_CLIENTS))
    url = server.url + "/"
    payload = make_packet(3001, os.urandom(9000))
    rng = random.Random(4)
    kinds = list(
        itertools.islice(itertools.cycle(["clean", "abrupt", "handshake", "upgrade-reset", "fragment"]), CYCLES)
    )
    rng.shuffle(kinds)
    outcomes: dict[str, int] = {}
    queue: asyncio.Queue[str] = asyncio.Queue()
    for kind in kinds:
        queue.put_nowait(kind)

    async with aiohttp.ClientSession() as session:

        async def worker() -> None:
            while not queue.empty():
                kind = queue.get_nowait()
                if kind == "clean":
                    result = await _clean(session, url, payload)
                elif kind == "abrupt":
                    result = await _abrupt(raw_client, server.port)
                elif kind == "handshake":
                    result = await _mid_handshake(server.port)
                elif kind == "upgrade-reset":
                    result = await _upgrade_then_reset(server.port)
                else:
                    result = await _mid_fragment(raw_client, server.port, payload, rng.random() < 0.5)
                outcomes[result] = outcomes.get(result, 0) + 1

        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.gather(*(worker() for _ in range(PARALLEL)))
        elapsed = loop.time() - started
        assert sum(outcomes.values()) == CYCLES
        assert outcomes.get("echo", 0) > CYCLES // 8, outcomes

        # Every slot comes back, and no link outlives its connection.
        await server.wait_for(lambda: server.metrics.slots_used == 0 and not server.listener.links, timeout=10)
        assert server.metrics.connections_active == 0
        assert server.room.released == server.room.next_id - 1

        # max-clients fresh clients all get in and are served; one more is turned away.
        clients = [await session.ws_connect(url, protocols=("acip",)) for _ in range(MAX_CLIENTS)]
        for ws in clients:
            await ws.send_bytes(payload)
        for ws in clients:
            msg = await ws.receive(timeout=5)
            assert msg.type is aiohttp.WSMsgType.BINARY and msg.data == payload
        extra = await session.ws_connect(url, protocols=("acip",))
        msg = await extra.receive(timeout=5)
        assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == CLOSE_TRY_AGAIN_LATER
        assert msg.extra == "server full"
        await extra.close()
        for ws in clients:
            await ws.close()
    await server.wait_for(lambda: server.metrics.slots_used == 0)
    # Storm-sized logging stays small: [WS_CONNECT] is rate limited per call site.
    connects = [r for r in caplog.records if "[WS_CONNECT]" in r.getMessage()]
    assert 1 <= len(connects) <= elapsed / 1.0 + 3
    print(f"storm: {CYCLES} cycles in {elapsed:.2f}s ({CYCLES / elapsed:.0f}/s), outcomes {outcomes}")
