"""Byte movers for the client: a TCP stream and a WebSocket (one binary message = one ACIP packet).

No protocol logic lives here; the session hands bytes between these and the sans-I/O core.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Protocol

import aiohttp

from asciichat_server.client.address import Target

__all__ = ["WS_MAX_MSG_SIZE", "ClientTransport", "TcpTransport", "TransportClosed", "WsTransport", "open_transport"]

# One WebSocket message carries one whole ACIP packet: up to 5 MiB of payload plus the 22-byte header and
# the 40 bytes ENCRYPTED adds; rounded up to 6 MiB.
WS_MAX_MSG_SIZE = 6 * 1024 * 1024
# The C client's TCP connect timeout is 3 s (CONNECT_TIMEOUT); a little more slack for loaded CI machines.
CONNECT_TIMEOUT_S = 5.0
_READ_CHUNK = 256 * 1024


class TransportClosed(Exception):
    """The peer closed the connection or it failed; ``reason`` says how."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ClientTransport(Protocol):
    kind: str
    peer: str

    async def recv(self) -> bytes | None: ...  # tcp: a chunk, ws: one message; None = closed
    async def send(self, data: bytes) -> None: ...  # one complete packet
    async def close(self) -> None: ...


class TcpTransport:
    kind = "tcp"

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        sock = writer.get_extra_info("socket")
        if sock is not None:
            # Small packets (PING, handshake steps) must not wait behind Nagle.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = writer.get_extra_info("peername") or ("?", 0)
        host = f"[{peer[0]}]" if ":" in str(peer[0]) else str(peer[0])
        self.peer = f"{host}:{peer[1]}"

    @classmethod
    async def connect(cls, host: str, port: int, timeout_s: float = CONNECT_TIMEOUT_S) -> TcpTransport:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
        except TimeoutError as exc:
            raise TransportClosed(f"connect to {host}:{port} timed out after {timeout_s:g}s") from exc
        except OSError as exc:
            raise TransportClosed(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from exc
        return cls(reader, writer)

    async def recv(self) -> bytes | None:
        try:
            data = await self._reader.read(_READ_CHUNK)
        except (ConnectionError, OSError):
            return None
        return data or None

    async def send(self, data: bytes) -> None:
        try:
            self._writer.write(data)
            await self._writer.drain()
        except (ConnectionError, OSError) as exc:
            raise TransportClosed(f"send failed: {exc}") from exc

    async def close(self) -> None:
        if self._writer.is_closing():
            return
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except (ConnectionError, OSError):
            pass


class WsTransport:
    kind = "ws"

    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse, peer: str) -> None:
        self._session = session
        self._ws = ws
        self.peer = peer
        self.close_reason = ""

    @classmethod
    async def connect(cls, url: str, timeout_s: float = CONNECT_TIMEOUT_S) -> WsTransport:
        session = aiohttp.ClientSession()
        try:
            ws = await asyncio.wait_for(
                session.ws_connect(
                    url,
                    protocols=("acip",),
                    compress=0,  # ACIP payloads are binary or encrypted; deflate only costs CPU
                    max_msg_size=WS_MAX_MSG_SIZE,
                    autoping=True,
                    # No receive timeout here: deciding when silence means death is the session's job.
                    timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=2.0),
                ),
                timeout_s,
            )
        except TimeoutError as exc:
            await session.close()
            raise TransportClosed(f"WebSocket connect to {url} timed out after {timeout_s:g}s") from exc
        except (aiohttp.ClientError, OSError) as exc:
            await session.close()
            raise TransportClosed(f"cannot open WebSocket {url}: {exc}") from exc
        return cls(session, ws, url)

    async def recv(self) -> bytes | None:
        while True:
            msg = await self._ws.receive()
            if msg.type == aiohttp.WSMsgType.BINARY:
                return bytes(msg.data)
            if msg.type == aiohttp.WSMsgType.TEXT:
                # ACIP is binary only; a text frame is a protocol violation we report upward as a close.
                self.close_reason = "server sent a text WebSocket message"
                return None
            if msg.type in (aiohttp.WSMsgType.PING, aiohttp.WSMsgType.PONG):
                continue
            if msg.type == aiohttp.WSMsgType.ERROR:
                self.close_reason = f"WebSocket error: {self._ws.exception()}"
            elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                self.close_reason = f"WebSocket closed (code {self._ws.close_code})"
            return None

    async def send(self, data: bytes) -> None:
        try:
            await self._ws.send_bytes(data)
        except (ConnectionError, aiohttp.ClientError, RuntimeError) as exc:
            raise TransportClosed(f"send failed: {exc}") from exc

    async def close(self) -> None:
        try:
            await self._ws.close()
        finally:
            await self._session.close()


async def open_transport(target: Target) -> TcpTransport | WsTransport:
    if target.kind == "ws":
        return await WsTransport.connect(target.url)
    return await TcpTransport.connect(target.host, target.port)
