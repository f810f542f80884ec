"""The transport abstraction: what the room needs from a TCP connection or a WebSocket."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

__all__ = ["Link"]


@runtime_checkable
class Link(Protocol):
    """One client connection, as :meth:`asciichat_server.room.Room.serve` drives it.

    ``recv`` is called by one task only and ``send`` by one task only (the room's writer), so
    implementations need no locking of their own. ``close`` may be called from anywhere, more
    than once, and must make a pending ``recv`` return None.
    """

    kind: str  # "tcp" | "ws"
    peer: str  # "127.0.0.1:54321" / "[::1]:54321"

    async def recv(self) -> bytes | None:
        """TCP: the next chunk of bytes; WS: one whole binary message. None = EOF or closed."""
        ...

    async def send(self, data: bytes) -> None:
        """Write one complete packet (WS: one binary message). Raises ConnectionError when closed."""
        ...

    async def close(self, reason: str = "") -> None:
        """Close the connection (idempotent)."""
        ...
