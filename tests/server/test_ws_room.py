"""The WS hook: AsciiChatServer starts the WebSocket site, and TCP and WS clients share one room."""

from __future__ import annotations

import asyncio
import importlib.util
import logging

import aiohttp
import pytest

from asciichat_server.protocol.connection import ClientConnection, ClientSecurity
from asciichat_server.protocol.constants import PacketType, StreamType
from asciichat_server.protocol.events import HandshakeComplete, PacketReceived
from asciichat_server.protocol.payloads import AsciiFrame, ServerState

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("asciichat_server.transport.ws") is None, reason="WS transport not installed"
)


class WsClient:
    """ClientConnection (ws role) over an aiohttp WebSocket: one packet per binary message."""

    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse, conn: ClientConnection):
        self.session = session
        self.ws = ws
        self.conn = conn
        self.events: list[object] = []

    @classmethod
    async def connect(cls, port: int, host: str = "127.0.0.1", security: ClientSecurity | None = None) -> WsClient:
        session = aiohttp.ClientSession()
        url = f"ws://[{host}]:{port}/" if ":" in host else f"ws://{host}:{port}/"
        ws = await session.ws_connect(url, protocols=("acip",), autoping=True)
        client = cls(session, ws, ClientConnection(security or ClientSecurity(), transport="ws"))
        client.conn.start()
        await client.flush()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while not any(isinstance(e, HandshakeComplete) for e in client.events):
            if client.conn.state.name == "OPEN":
                break
            await client._pump(deadline - loop.time())
        return client

    async def flush(self) -> None:
        for item in self.conn.data_to_send():
            await self.ws.send_bytes(item)

    async def _pump(self, timeout: float) -> None:
        msg = await asyncio.wait_for(self.ws.receive(), max(0.01, timeout))
        if msg.type != aiohttp.WSMsgType.BINARY:
            raise EOFError(f"websocket ended: {msg.type}")
        self.events.extend(self.conn.receive_message(msg.data))
        await self.flush()

    async def send(self, ptype: int, payload: bytes = b"") -> None:
        self.conn.send(ptype, payload)
        await self.flush()

    async def wait_for(self, ptype: int, timeout: float = 10.0):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for i, event in enumerate(self.events):
                if isinstance(event, PacketReceived) and event.packet.type == ptype:
                    del self.events[i]
                    return event.packet
            self.events = [e for e in self.events if not isinstance(e, PacketReceived)]
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError(f"no packet {ptype}")
            await self._pump(left)

    async def close(self) -> None:
        await self.ws.close()
        await self.session.close()


async def test_ready_lists_ws_and_mixed_room(start_server, helpers, caplog):
    caplog.set_level(logging.INFO)
    server = await start_server(websocket=True, websocket_port=0)
    ready = [r.getMessage() for r in caplog.records if r.getMessage().startswith("[READY]")]
    assert len(ready) == 1
    assert f"ws://127.0.0.1:{server.ws_port}" in ready[0] and f"ws://[::1]:{server.ws_port}" in ready[0]
    assert f"tcp://127.0.0.1:{server.tcp_port}" in ready[0]

    tcp = await helpers.AcipClient.connect(server.tcp_port)
    ws = await WsClient.connect(server.ws_port, host="::1")
    await ws.send(PacketType.CLIENT_CAPABILITIES, helpers.caps_payload(50, 14))
    await ws.send(PacketType.STREAM_START, helpers.stream_payload(StreamType.VIDEO))
    await helpers.wait_until(lambda: server.room.joined_count == 2)
    # SERVER_STATE reaches both kinds (the C server skips WS clients in its broadcast).
    state = ServerState.decode((await ws.wait_for(PacketType.SERVER_STATE)).payload)
    assert state.connected == 2
    await tcp.send(PacketType.IMAGE_FRAME, helpers.image_payload())
    frame = AsciiFrame.decode((await ws.wait_for(PacketType.ASCII_FRAME)).payload)
    assert (frame.width, frame.height) == (50, 14)
    await ws.send(PacketType.IMAGE_FRAME, helpers.image_payload(shade=20))
    await tcp.wait_for(PacketType.CLEAR_CONSOLE)
    await tcp.wait_for(PacketType.ASCII_FRAME)
    await ws.close()
    await helpers.wait_until(lambda: server.room.client_count == 1)
    await tcp.close()
    await helpers.wait_until(lambda: server.room.client_count == 0)


async def test_ws_plaintext_mode(start_server, helpers):
    server = await start_server(websocket=True, websocket_port=0, ws_plaintext=True)
    ws = await WsClient.connect(server.ws_port, security=ClientSecurity(encrypt=False))
    await ws.send(PacketType.CLIENT_CAPABILITIES, helpers.caps_payload())
    await ws.send(PacketType.PING)
    await ws.wait_for(PacketType.PONG)
    assert not next(iter(server.room.clients.values())).conn.encrypted
    await ws.close()
    await helpers.wait_until(lambda: server.room.client_count == 0)


async def test_stop_closes_ws_and_tcp_clients(helpers):
    from asciichat_server.server import AsciiChatServer

    server = AsciiChatServer(helpers.make_config(websocket=True, websocket_port=0))
    await server.start()
    tcp = await helpers.AcipClient.connect(server.tcp_port)
    ws = await WsClient.connect(server.ws_port)
    await ws.send(PacketType.CLIENT_CAPABILITIES, helpers.caps_payload())
    await helpers.wait_until(lambda: server.room.joined_count == 2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await server.stop()
    assert loop.time() - started < 2.0
    assert await tcp.raw.closed_by_server(timeout=3)
    msg = await asyncio.wait_for(ws.ws.receive(), 1)
    while msg.type == aiohttp.WSMsgType.BINARY:
        msg = await asyncio.wait_for(ws.ws.receive(), 1)
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
    await ws.close()
    assert server.room.client_count == 0


async def test_silent_ws_client_is_kept_while_heartbeat_answers(start_server, helpers):
    # A receive-only browser sends nothing after CLIENT_CAPABILITIES; aiohttp answers WS pings for it.
    server = await start_server(websocket=True, websocket_port=0, idle_timeout_s=0.3, ws_heartbeat_s=0.4)
    ws = await WsClient.connect(server.ws_port)
    await ws.send(PacketType.CLIENT_CAPABILITIES, helpers.caps_payload())
    tcp = await helpers.AcipClient.connect(server.tcp_port)
    await helpers.wait_until(lambda: server.room.joined_count == 2)
    # The silent TCP client is dropped by the idle timeout; the silent WS client stays.
    assert await tcp.raw.closed_by_server(timeout=10)
    for _ in range(8):
        await ws.wait_for(PacketType.SERVER_STATE)  # keepalives keep coming (pumping also answers pings)
    assert server.room.client_count == 1
    await ws.close()
    await helpers.wait_until(lambda: server.room.client_count == 0)
