"""TCP transport: asyncio stream servers on pre-bound listeners, one `TcpLink` per accepted client."""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import TYPE_CHECKING

from asciichat_server.net import format_address

if TYPE_CHECKING:
    from asciichat_server.room import Room

__all__ = ["READ_CHUNK", "TcpLink", "start_tcp"]

_log = logging.getLogger(__name__)

# One read hands at most this much to the decoder; a 230 KB video frame takes a few reads.
READ_CHUNK = 256 * 1024
# Bound on how long close() waits for the kernel to take queued bytes before aborting.
CLOSE_WAIT_S = 1.0
# c41 sets 1 MiB socket buffers on client sockets (configure_client_socket): video frames are large.
SOCKET_BUFFER_BYTES = 1024 * 1024


def _peer_name(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    sock = writer.get_extra_info("socket")
    if not peer or sock is None:
        return "?"
    return format_address(sock.family, str(peer[0]), int(peer[1]))


class TcpLink:
    """`Link` over an asyncio stream pair; bytes in, whole packets out."""

    kind = "tcp"

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._closed = False
        self.peer = _peer_name(writer)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER_BYTES)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER_BYTES)
            except OSError:
                pass  # the peer may already be gone; recv() reports that

    @property
    def closed(self) -> bool:
        return self._closed

    async def recv(self) -> bytes | None:
        if self._closed:
            return None
        try:
            data = await self._reader.read(READ_CHUNK)
        except (ConnectionError, OSError):
            return None
        return data or None

    async def send(self, data: bytes) -> None:
        if self._closed or self._writer.is_closing():
            raise ConnectionResetError("connection closed")
        try:
            self._writer.write(data)
            await self._writer.drain()
        except (ConnectionError, OSError) as exc:
            raise ConnectionResetError(str(exc) or "connection lost") from exc

    async def close(self, reason: str = "") -> None:
        if self._closed:
            return
        self._closed = True
        # Wake a pending recv() at once, even if the close handshake below takes a while.
        self._reader.feed_eof()
        transport = self._writer.transport
        try:
            self._writer.close()
            await asyncio.wait_for(self._writer.wait_closed(), CLOSE_WAIT_S)
        except (TimeoutError, ConnectionError, OSError):
            transport.abort()
        except asyncio.CancelledError:
            transport.abort()
            raise


async def start_tcp(room: Room, sockets: list[socket.socket]) -> list[asyncio.Server]:
    """Serve every listener in ``sockets``; each connection runs `Room.serve` in its own task."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = TcpLink(reader, writer)
        try:
            await room.serve(link)
        except Exception:  # serve() handles its own errors; this is the last line of defence
            _log.exception("[TCP_DISCONNECT] unexpected error serving %s", link.peer)
            await link.close("internal error")

    servers: list[asyncio.Server] = []
    try:
        for sock in sockets:
            server = await asyncio.start_server(handle, sock=sock, limit=READ_CHUNK)
            await server.start_serving()
            servers.append(server)
    except BaseException:
        for server in servers:
            server.close()
        raise
    return servers
