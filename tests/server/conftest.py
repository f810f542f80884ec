"""Fixtures for server tests: a real server on loopback (port 0) and real ACIP clients over asyncio TCP."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import socket
import struct

import pytest

from asciichat_server.config import ServerConfig
from asciichat_server.protocol.connection import ClientConnection, ClientSecurity, ConnectionState
from asciichat_server.protocol.constants import PacketType, StreamType
from asciichat_server.protocol.events import AuthRejected, HandshakeComplete, PacketReceived
from asciichat_server.protocol.packets import Packet, PacketDecoder, encode_packet
from asciichat_server.protocol.payloads import ClientCapabilities, ImageFrame, StreamFlags
from asciichat_server.server import AsciiChatServer

LOOPBACK = ["127.0.0.1", "::1"]


def make_config(**overrides) -> ServerConfig:
    """Loopback only, a port from the kernel, no WebSocket unless asked; fast keepalives."""
    values = {"addresses": list(LOOPBACK), "port": 0, "websocket": False, "bind_retries": 0}
    values.update(overrides)
    return ServerConfig(**values)


def caps_payload(width: int = 40, height: int = 12, fps: int = 60, size: int = 160) -> bytes:
    caps = ClientCapabilities(width=width, height=height, desired_fps=fps, color_level=0, palette_type=1)
    data = caps.encode()
    if size == 168 and len(data) == 160:
        data += bytes(8)
    return data


def image_payload(width: int = 32, height: int = 18, shade: int = 128) -> bytes:
    pixels = bytes([shade]) * (width * height * 3)
    return ImageFrame(width=width, height=height, pixel_format=1, pixels=pixels).encode()


def stream_payload(bits: int) -> bytes:
    return StreamFlags(StreamType(bits)).encode()


class RawClient:
    """A TCP connection that speaks ACIP packets with no handshake (plaintext servers) or raw bytes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.decoder = PacketDecoder()
        self.pending: list[Packet] = []

    @classmethod
    async def connect(cls, port: int, host: str = "127.0.0.1") -> RawClient:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send(self, ptype: int, payload: bytes = b"") -> None:
        await self.send_raw(encode_packet(ptype, payload))

    async def read_raw(self, timeout: float = 10.0) -> bytes:
        return await asyncio.wait_for(self.reader.read(65536), timeout)

    async def packet(self, timeout: float = 10.0) -> Packet:
        while not self.pending:
            data = await asyncio.wait_for(self.reader.read(1 << 20), timeout)
            if not data:
                raise EOFError("server closed the connection")
            self.pending.extend(self.decoder.feed(data))
        return self.pending.pop(0)

    async def wait_for(self, ptype: int, timeout: float = 10.0) -> Packet:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError(f"no packet {ptype} within {timeout}s")
            pkt = await self.packet(left)
            if pkt.type == ptype:
                return pkt

    async def closed_by_server(self, timeout: float = 10.0) -> bool:
        """True when the server closes (EOF/RST) within timeout; packets received meanwhile are kept."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            try:
                data = await asyncio.wait_for(self.reader.read(1 << 20), deadline - loop.time())
            except TimeoutError:
                return False
            except ConnectionError:
                return True
            if not data:
                return True
            with contextlib.suppress(Exception):
                self.pending.extend(self.decoder.feed(data))
        return False

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()

    def reset(self) -> None:
        """Close with RST (SO_LINGER 0)."""
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()


class AcipClient:
    """A real ACIP client: the PROTOCOL helper's ClientConnection over an asyncio TCP stream."""

    def __init__(self, raw: RawClient, conn: ClientConnection) -> None:
        self.raw = raw
        self.conn = conn
        self.events: list[object] = []
        self.handshake: HandshakeComplete | None = None
        self.rejected: AuthRejected | None = None

    @classmethod
    async def connect(
        cls,
        port: int,
        host: str = "127.0.0.1",
        security: ClientSecurity | None = None,
        join: bool = True,
        timeout: float = 10.0,
        caps: bytes | None = None,
    ) -> AcipClient:
        raw = await RawClient.connect(port, host)
        client = cls(raw, ClientConnection(security or ClientSecurity()))
        try:
            client.conn.start()
            await client.flush()
            await client.complete_handshake(timeout)
        except BaseException:
            await raw.close()
            raise
        if join:
            await client.send(PacketType.CLIENT_CAPABILITIES, caps or caps_payload())
            await client.send(PacketType.STREAM_START, stream_payload(StreamType.VIDEO | StreamType.AUDIO))
        return client

    async def flush(self) -> None:
        for item in self.conn.data_to_send():
            self.raw.writer.write(item)
        await self.raw.writer.drain()

    async def _pump(self, timeout: float) -> None:
        data = await asyncio.wait_for(self.raw.reader.read(1 << 20), timeout)
        if not data:
            raise EOFError("server closed the connection")
        for event in self.conn.receive_data(data):
            if isinstance(event, HandshakeComplete):
                self.handshake = event
            elif isinstance(event, AuthRejected):
                self.rejected = event
            self.events.append(event)
        await self.flush()

    async def complete_handshake(self, timeout: float = 10.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if self.conn.state is ConnectionState.OPEN and self.handshake is None:
            self.handshake = HandshakeComplete(False, None, None)  # plaintext: open at once
        while self.handshake is None:
            if self.rejected is not None:
                raise PermissionError(f"auth rejected: flags 0x{self.rejected.reason_flags:02x}")
            await self._pump(max(0.01, deadline - loop.time()))

    async def send(self, ptype: int, payload: bytes = b"") -> None:
        self.conn.send(ptype, payload)
        await self.flush()

    async def packet(self, timeout: float = 10.0) -> Packet:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for i, event in enumerate(self.events):
                if isinstance(event, PacketReceived):
                    del self.events[i]
                    return event.packet
            await self._pump(max(0.01, deadline - loop.time()))

    async def wait_for(self, ptype: int, timeout: float = 10.0) -> Packet:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError(f"no packet {ptype} within {timeout}s")
            pkt = await self.packet(left)
            if pkt.type == ptype:
                return pkt

    async def close(self) -> None:
        await self.raw.close()


@pytest.fixture
async def start_server():
    """Factory: ``server = await start_server(max_clients=2, ...)``; every server is stopped afterwards."""
    servers: list[AsciiChatServer] = []

    async def _start(**overrides) -> AsciiChatServer:
        server = AsciiChatServer(make_config(**overrides))
        await server.start()
        servers.append(server)
        return server

    yield _start
    for server in servers:
        await server.stop()


@pytest.fixture
def no_task_leaks(caplog):
    """Fails the test if asyncio reported a never-retrieved task exception or any ERROR with a traceback."""
    caplog.set_level(logging.DEBUG)
    yield caplog
    gc.collect()  # asyncio reports a never-retrieved exception when the task is collected
    # caplog.records only holds the current phase (teardown here): look at the test's own records too.
    records = caplog.get_records("setup") + caplog.get_records("call") + caplog.get_records("teardown")
    bad = [
        r.getMessage()
        for r in records
        if "never retrieved" in r.getMessage() or (r.levelno >= logging.ERROR and r.exc_info)
    ]
    assert not bad, bad


async def wait_until(predicate, timeout: float = 10.0, interval: float = 0.01) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(interval)


@pytest.fixture
def helpers():
    """The module's helper functions and classes, for tests (importlib mode cannot import conftest)."""

    class _H:
        RawClient = RawClient
        AcipClient = AcipClient
        ClientSecurity = ClientSecurity
        caps_payload = staticmethod(caps_payload)
        image_payload = staticmethod(image_payload)
        stream_payload = staticmethod(stream_payload)
        wait_until = staticmethod(wait_until)
        make_config = staticmethod(make_config)

    return _H
