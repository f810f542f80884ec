"""Sans-I/O core of ACIP, ascii-chat's wire protocol: framing, payloads, handshake and encrypted sessions.

Nothing here owns a socket, an event loop or a clock; the same objects serve the server, the client,
fuzzers and tests. Typical server use (TCP)::

    conn = ServerConnection(ServerSecurity(password_key=derive_password_key(pw)), "tcp")
    conn.start()                                   # WS: queues CRYPTO_PARAMETERS + KEY_EXCHANGE_INIT
    for event in conn.receive_data(chunk):         # WS: conn.receive_message(one_message)
        match event:
            case HandshakeComplete(): ...          # state OPEN; send CLIENT_CAPABILITIES-driven frames
            case PacketReceived(packet): ...       # application packet, already decrypted
            case AuthRejected(flags): ...          # AUTH_FAILED queued: flush, then close
    conn.send(PacketType.ASCII_FRAME, AsciiFrame(80, 24, text).encode())
    for wire_packet in conn.data_to_send(): ...    # one complete packet each (= one WS message)

A peer violation raises ProtocolError(reason, error_code=44) and leaves the connection in ERROR;
call `conn.fail(exc.reason)` to queue the ERROR_MESSAGE (encrypted when a key exists), flush, close.
Timeouts are the caller's. Modules: constants, errors, crc, packets (Packet, encode_packet,
PacketDecoder), payloads (one dataclass per fixed layout), crypto (Argon2id password key, X25519
c41/HEAD session keys, HMACs, Ed25519), session (ENCRYPTED wrapper, replay checks, rekeying),
events, connection (ServerConnection, ClientConnection).
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
