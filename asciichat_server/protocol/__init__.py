"""Sans-I/O core of ACIP, ascii-chat's wire protocol: framing, payloads, handshakes, encrypted sessions.

Nothing here owns a socket, an event loop or a clock; the same objects serve the server, the client,
fuzzers and tests. Server side (the client side mirrors it with ClientConnection/ClientSecurity)::

    security = ServerSecurity(password_key=derive_password_key(pw))   # Argon2id: once, at start-up
    conn = ServerConnection(security, "tcp")       # or "ws"
    conn.start()                                   # WS: queues CRYPTO_PARAMETERS + KEY_EXCHANGE_INIT
    for event in conn.receive_data(chunk):         # any chunking; WS: conn.receive_message(message)
        match event:
            case HandshakeComplete(encrypted, key_variant, client_identity): ...   # state is OPEN
            case PacketReceived(packet): ...       # application packet, already decrypted
            case AuthRejected(reason_flags): ...   # AUTH_FAILED queued: flush, then close
    conn.send(PacketType.ASCII_FRAME, AsciiFrame(80, 24, text).encode())
    for wire in conn.data_to_send(): ...           # one complete packet each (= one WS message)

Rules worth knowing:
- A violation raises ProtocolError(reason, error_code=44) and leaves the connection in ERROR for good;
  call conn.fail(exc.reason) to queue ERROR_MESSAGE (encrypted when a key exists), flush, close.
- HandshakeComplete comes once, before the first post-handshake PacketReceived. Without a password the
  server learns the client's key variant (c41 box_beforenm / HEAD raw X25519) from its first ENCRYPTED
  packet, so OPEN starts there; send() before OPEN is held (64 packets at most) and flushed in order.
- Limits are checked on each header before buffering: 64 KiB during a TCP handshake, 1 MiB + 40 once
  encrypted, 5 MiB otherwise. Replays are refused with a 1024-counter window (C peers reorder), and
  ENCRYPTED packets interleaved by the C senders' unlocked writes are untangled by CRC.
- WS peers may send application packets before their handshake ends; TCP peers may not.
Modules: constants, errors, crc, packets, payloads, crypto, session, events, connection.
"""

from .connection import ClientConnection, ClientSecurity, ConnectionState, ServerConnection, ServerSecurity
from .constants import (
    HEADER_SIZE,
    MAGIC,
    MAX_ENCRYPTED_PLAINTEXT,
    MAX_PAYLOAD,
    AuthFailure,
    CryptoMode,
    ErrorCode,
    PacketType,
    StreamType,
)
from .crypto import derive_password_key
from .errors import ProtocolError
from .events import AuthRejected, Event, HandshakeComplete, PacketReceived
from .packets import Packet, PacketDecoder, decode_packet, encode_packet
from .payloads import (
    AsciiFrame,
    AudioOpusBatch,
    ClientCapabilities,
    ClientJoin,
    ErrorMessage,
    ImageFrame,
    ImageFrameH265,
    RemoteLog,
    ServerState,
    StreamFlags,
)

__all__ = [
    "HEADER_SIZE",
    "MAGIC",
    "MAX_ENCRYPTED_PLAINTEXT",
    "MAX_PAYLOAD",
    "AsciiFrame",
    "AudioOpusBatch",
    "AuthFailure",
    "AuthRejected",
    "ClientCapabilities",
    "ClientConnection",
    "ClientJoin",
    "ClientSecurity",
    "ConnectionState",
    "CryptoMode",
    "ErrorCode",
    "ErrorMessage",
    "Event",
    "HandshakeComplete",
    "ImageFrame",
    "ImageFrameH265",
    "Packet",
    "PacketDecoder",
    "PacketReceived",
    "PacketType",
    "ProtocolError",
    "RemoteLog",
    "ServerConnection",
    "ServerSecurity",
    "ServerState",
    "StreamFlags",
    "StreamType",
    "decode_packet",
    "derive_password_key",
    "encode_packet",
]
