"""Fixtures for the WebSocket transport tests: a real server on loopback and a raw wsproto client."""

from __future__ import annotations

import asyncio
import gc
import logging
import struct
from collections import deque
from collections.abc import AsyncIterator, Callable
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)

from asciichat_server.config import ServerConfig
from asciichat_server.log import reset_rate_limits
from asciichat_server.metrics import Metrics
from asciichat_server.net import bind_listeners
from asciichat_server.protocol.connection import ClientConnection, ClientSecurity, ConnectionState
from asciichat_server.protocol.constants import HEADER_SIZE, PacketType, StreamType
from asciichat_server.protocol.events import AuthRejected, HandshakeComplete, PacketReceived
from asciichat_server.protocol.payloads import ClientCapabilities, StreamFlags
from asciichat_server.transport.ws import WsListener, start_ws


def packet(ptype: int, payload: bytes) -> bytes:
    """A syntactically plausible ACIP packet (the transport never looks inside)."""
    header = struct.pack("!QHIII", 0x0000000A5C11C4A1, ptype, len(payload), 0, 0)
    assert len(header) == HEADER_SIZE
    return header + payload


class EchoRoom:
    """A minimal room for transport tests: slots like the real one, echoes every packet back.

    It drives links exactly through the Link contract (recv/send/close), so it exercises the
    transport the way ``Room.serve`` does without the ACIP session on top.
    """

    def __init__(self, metrics: Metrics, max_clients: int = 9, recv_delay_s: float = 0.0) -> None:
        self.metrics = metrics
        self.metrics.slots_max = max_clients
        self.max_clients = max_clients
        self.recv_delay_s = recv_delay_s
        self.links: dict[int, Any] = {}
        self.received: list[bytes] = []
        self.next_id = 1
        self.released = 0

    async def serve(self, link: Any) -> None:
        if len(self.links) >= self.max_clients:
            self.metrics.rejected_full += 1
            await link.close("server full")
            return
        client_id = self.next_id
        self.next_id += 1
        link.client_id = client_id
        self.links[client_id] = link
        self.metrics.slots_used = len(self.links)
        self.metrics.connections_total += 1
        self.metrics.connections_active += 1
        try:
            if self.recv_delay_s:
                await asyncio.sleep(self.recv_delay_s)
            while (data := await link.recv()) is not None:
                self.received.append(data)
                self.metrics.frames_in += 1
                self.metrics.bytes_in += len(data)
                await link.send(data)
                self.metrics.frames_out += 1
                self.metrics.bytes_out += len(data)
        except ConnectionError:
            pass
        finally:
            del self.links[client_id]
            self.released += 1
            self.metrics.slots_used = len(self.links)
            self.metrics.connections_active -= 1
            await link.close()


class RawWsClient:
    """A WebSocket client over a plain asyncio stream, writing frames exactly as told (wsproto)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.conn = WSConnection(ConnectionType.CLIENT)
        self.events: deque[Event] = deque()
        self.subprotocol: str | None = None
        self.extensions: list[Any] = []
        self._partial = bytearray()
        self.eof = False

    @classmethod
    async def connect(
        cls, port: int, host: str = "127.0.0.1", path: str = "/", subprotocols: tuple[str, ...] = ("acip",)
    ) -> RawWsClient:
        reader, writer = await asyncio.open_connection(host, port)
        self = cls(reader, writer)
        writer.write(self.conn.send(Request(host=f"{host}:{port}", target=path, subprotocols=list(subprotocols))))
        await writer.drain()
        while True:
            data = await asyncio.wait_for(reader.read(65536), 5)
            if not data:
                raise ConnectionError("server closed during the opening handshake")
            self.conn.receive_data(data)
            for event in self.conn.events():
                if isinstance(event, AcceptConnection):
                    self.subprotocol = event.subprotocol
                    self.extensions = list(event.extensions)
                elif isinstance(event, RejectConnection):
                    raise ConnectionError(f"upgrade rejected: {event.status_code}")
                else:
                    self.events.append(event)
            if self.subprotocol is not None or self.conn.state.name == "OPEN":
                return self

    def frame(self, data: bytes, finished: bool) -> bytes:
        """Bytes of one frame: BINARY first, CONTINUATION after, FIN only when ``finished``."""
        return self.conn.send(BytesMessage(data=data, message_finished=finished))

    async def write(self, raw: bytes) -> None:
        self.writer.write(raw)
        await self.writer.drain()

    async def send_fragmented(
        self, payload: bytes, fragment_size: int = 4096, gaps: dict[int, float] | None = None
    ) -> None:
        """Send ``payload`` as one message in ``fragment_size`` frames; sleep ``gaps[i]`` after frame i."""
        chunks = [payload[i : i + fragment_size] for i in range(0, len(payload), fragment_size)]
        for index, chunk in enumerate(chunks):
            await self.write(self.frame(chunk, index == len(chunks) - 1))
            if gaps and index in gaps:
                await asyncio.sleep(gaps[index])

    async def ping(self, data: bytes = b"p") -> None:
        await self.write(self.conn.send(Ping(payload=data)))

    async def next_event(self, timeout: float = 5.0) -> Event | None:
        """The next complete event: whole BytesMessage/TextMessage, CloseConnection, or None at EOF."""
        while True:
            while self.events:
                event = self.events.popleft()
                if isinstance(event, BytesMessage):
                    self._partial += event.data
                    if not event.message_finished:
                        continue
                    whole = BytesMessage(data=bytes(self._partial), message_finished=True)
                    self._partial.clear()
                    return whole
                if isinstance(event, TextMessage | CloseConnection):
                    return event
            if self.eof:
                return None
            data = await asyncio.wait_for(self.reader.read(1 << 20), timeout)
            if not data:
                self.eof = True
                continue
            self.conn.receive_data(data)
            self.events.extend(self.conn.events())

    async def wait_closed(self, timeout: float = 5.0) -> CloseConnection | None:
        """Read until the server's close frame (returned) or EOF; ignores data messages."""
        while True:
            event = await self.next_event(timeout)
            if event is None or isinstance(event, CloseConnection):
                return event

    def abort(self) -> None:
        self.writer.transport.abort()

    async def aclose(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except ConnectionError:
            pass


class AcipClient:
    """An ACIP client on the protocol's own sans-I/O ClientConnection; subclasses move the bytes."""

    kind = ""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.packets: list[Any] = []  # application packets received (decrypted)
        self.handshake_done = False
        self.rejected = False

    async def _recv(self) -> bytes | None:
        raise NotImplementedError

    async def _send(self, data: bytes) -> None:
        raise NotImplementedError

    async def flush(self) -> None:
        for data in self.conn.data_to_send():
            await self._send(data)

    def _feed(self, data: bytes) -> None:
        events = self.conn.receive_data(data) if self.kind == "tcp" else self.conn.receive_message(data)
        for event in events:
            if isinstance(event, HandshakeComplete):
                self.handshake_done = True
            elif isinstance(event, PacketReceived):
                self.packets.append(event.packet)
            elif isinstance(event, AuthRejected):
                self.rejected = True

    async def pump_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        await self.flush()
        while not predicate():
            left = deadline - loop.time()
            if left <= 0:
                raise AssertionError(f"{self.kind} client: condition not reached; got {self.types()}")
            data = await asyncio.wait_for(self._recv(), left)
            if data is None:
                raise ConnectionError(f"{self.kind} client: server closed; got {self.types()}")
            self._feed(data)
            await self.flush()

    def types(self) -> list[int]:
        return [p.type for p in self.packets]

    def of_type(self, ptype: int) -> list[Any]:
        return [p for p in self.packets if p.type == ptype]

    async def join(self, video: bool = True, timeout: float = 5.0) -> None:
        """Handshake, CLIENT_CAPABILITIES, STREAM_START (video)."""
        # A plaintext session is OPEN at start() already; an encrypted one after HANDSHAKE_COMPLETE.
        await self.pump_until(lambda: self.handshake_done or self.conn.state is ConnectionState.OPEN, timeout)
        self.conn.send(PacketType.CLIENT_CAPABILITIES, ClientCapabilities(width=40, height=12).encode())
        if video:
            self.conn.send(PacketType.STREAM_START, StreamFlags(StreamType.VIDEO).encode())
        await self.flush()

    async def send(self, ptype: int, payload: bytes) -> None:
        self.conn.send(ptype, payload)
        await self.flush()


class AcipWsClient(AcipClient):
    kind = "ws"

    def __init__(self, conn: Any, ws: aiohttp.ClientWebSocketResponse) -> None:
        super().__init__(conn)
        self.ws = ws

    @classmethod
    async def connect(cls, session: aiohttp.ClientSession, port: int, encrypt: bool = True) -> AcipWsClient:
        conn = ClientConnection(ClientSecurity(encrypt=encrypt), "ws")
        conn.start()
        ws = await session.ws_connect(f"http://127.0.0.1:{port}/", protocols=("acip",), max_msg_size=0)
        return cls(conn, ws)

    async def _recv(self) -> bytes | None:
        msg = await self.ws.receive()
        return msg.data if msg.type is aiohttp.WSMsgType.BINARY else None

    async def _send(self, data: bytes) -> None:
        await self.ws.send_bytes(data)

    async def close(self) -> None:
        await self.ws.close()


class AcipTcpClient(AcipClient):
    kind = "tcp"

    def __init__(self, conn: Any, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        super().__init__(conn)
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int, encrypt: bool = True) -> AcipTcpClient:
        conn = ClientConnection(ClientSecurity(encrypt=encrypt), "tcp")
        conn.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(conn, reader, writer)

    async def _recv(self) -> bytes | None:
        return await self.reader.read(1 << 20) or None

    async def _send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except ConnectionError:
            pass


class WsServer:
    """start_ws on a fresh loopback port with an EchoRoom (or any room) behind it."""

    def __init__(self, listener: WsListener, room: Any, metrics: Metrics, port: int) -> None:
        self.listener = listener
        self.room = room
        self.metrics = metrics
        self.port = port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate():
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError("condition not reached in time")
            await asyncio.sleep(0.01)


@pytest.fixture(autouse=True)
def _fresh_rate_limits() -> None:
    # log_every state is per call site and process-wide; each test must see its own first line.
    reset_rate_limits()


class LoopWatch:
    """Collects what the event loop's exception handler sees, and error records in the log."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self.caplog = caplog
        self.errors: list[dict[str, Any]] = []
        self.loop = asyncio.get_running_loop()
        self.loop.set_exception_handler(lambda _loop, context: self.errors.append(context))

    async def check(self) -> None:
        # Collect now so an unretrieved task exception is reported while the handler is ours.
        gc.collect()
        await asyncio.sleep(0)
        self.loop.set_exception_handler(None)
        assert not self.errors, f"event loop reported errors: {self.errors!r}"
        bad = [
            r
            for r in self.caplog.records
            if r.levelno >= logging.ERROR or "never retrieved" in r.getMessage() or "Traceback" in r.getMessage()
        ]
        assert not bad, "error records logged: " + "; ".join(r.getMessage() for r in bad)


@pytest.fixture
async def ws_factory(caplog: pytest.LogCaptureFixture) -> AsyncIterator[Callable[..., Any]]:
    caplog.set_level(logging.DEBUG)
    watch = LoopWatch(caplog)
    servers: list[WsServer] = []

    async def make(
        room_factory: Callable[[Metrics], Any] | None = None, hosts: tuple[str, ...] = ("127.0.0.1",), **config: Any
    ) -> WsServer:
        metrics = Metrics()
        room = room_factory(metrics) if room_factory else EchoRoom(metrics)
        sockets = bind_listeners(list(hosts), 0)
        extra = {k: config.pop(k) for k in list(config) if k.startswith("ws_http_")}
        server_config = ServerConfig(**config)
        for key, value in extra.items():  # knobs start_ws reads that ServerConfig does not declare
            setattr(server_config, key, value)
        server = SimpleNamespace(room=room, metrics=metrics, config=server_config)
        listener = await start_ws(server, sockets)
        ws_server = WsServer(listener, room, metrics, sockets[0].getsockname()[1])
        servers.append(ws_server)
        return ws_server

    yield make
    for server in servers:
        await server.listener.close()
    await watch.check()


@pytest.fixture
async def acip_server(caplog: pytest.LogCaptureFixture) -> AsyncIterator[Callable[..., Any]]:
    """The real AsciiChatServer (room + ACIP sessions) on fresh loopback ports."""
    from asciichat_server.server import AsciiChatServer

    caplog.set_level(logging.DEBUG)
    watch = LoopWatch(caplog)
    servers: list[Any] = []

    async def make(**config: Any) -> Any:
        settings = {"addresses": ["127.0.0.1"], "port": 0, "websocket_port": 0, **config}
        server = AsciiChatServer(ServerConfig(**settings))
        await server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        await server.stop()
    await watch.check()


@pytest.fixture
def acip() -> SimpleNamespace:
    return SimpleNamespace(ws=AcipWsClient, tcp=AcipTcpClient)


@pytest.fixture
def raw_client() -> type[RawWsClient]:
    return RawWsClient


@pytest.fixture
def make_packet() -> Callable[[int, bytes], bytes]:
    return packet


@pytest.fixture
def echo_room() -> type[EchoRoom]:
    return EchoRoom
