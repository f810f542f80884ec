"""Events the connection objects return from receive_data / receive_message."""

from __future__ import annotations

from dataclasses import dataclass

from .packets import Packet


@dataclass(frozen=True)
class HandshakeComplete:
    """The session is usable (state OPEN). Delivered once, before the first post-handshake PacketReceived.

    `key_variant` is "c41" or "head" for encrypted sessions (None when unknown or plaintext).
    `client_identity` is the peer's verified Ed25519 key: the client's on a ServerConnection, the
    server's on a ClientConnection; None when the peer presented none or it was not verified.
    """

    encrypted: bool
    key_variant: str | None
    client_identity: bytes | None


@dataclass(frozen=True)
class PacketReceived:
    """An application packet, already unwrapped from ENCRYPTED when the session is encrypted."""

    packet: Packet


@dataclass(frozen=True)
class AuthRejected:
    """Authentication failed. Server: AUTH_FAILED is queued, flush then close. Client: the server said no."""

    reason_flags: int


Event = HandshakeComplete | PacketReceived | AuthRejected
