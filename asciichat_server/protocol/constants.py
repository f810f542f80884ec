"""ACIP wire constants: header layout, packet types, limits, error codes and flag sets.

Numbers come from ascii-chat c41aa5ae2 and HEAD 73fe49337 as described in ACIP.md.
"""

from __future__ import annotations

import struct
from enum import IntEnum, IntFlag

# 64-bit magic, "A5C11C4A1" reads as ASCIICHAT; wire bytes 00 00 00 0a 5c 11 c4 a1 (ACIP.md 1.1).
MAGIC = 0x0000000A5C11C4A1
MAGIC_BYTES = MAGIC.to_bytes(8, "big")

# magic u64, type u16, length u32, crc32 u32, client_id u32, packed and big-endian (ACIP.md 1.1).
HEADER_STRUCT = struct.Struct(">QHIII")
HEADER_SIZE = 22
assert HEADER_STRUCT.size == HEADER_SIZE

# Receiver limit of both C revisions (MAX_PACKET_SIZE); anything larger is an attack or a bug.
MAX_PAYLOAD = 5 * 1024 * 1024
# crypto_encrypt refuses more than this (inner header + payload), so no honest peer sends more.
MAX_ENCRYPTED_PLAINTEXT = 1024 * 1024
# The C code treats a length of 0xFFFFFFFF as a sentinel for "invalid" (packet_validate_header).
INVALID_LENGTH = 0xFFFFFFFF
# MAX_ERROR_MESSAGE_LENGTH and MAX_REMOTE_LOG_MESSAGE_LENGTH in packet.h.
MAX_ERROR_MESSAGE_LENGTH = 512
MAX_REMOTE_LOG_MESSAGE_LENGTH = 512
# TEXT_MESSAGE is declared as at most 1024 bytes, CLIENT_LEAVE's reason as at most 256.
MAX_TEXT_MESSAGE_LENGTH = 1024
MAX_LEAVE_REASON_LENGTH = 256

# XSalsa20-Poly1305 / X25519 / Ed25519 sizes used on the wire.
NONCE_SIZE = 24
SESSION_ID_SIZE = 16
COUNTER_SIZE = 8
MAC_SIZE = 16
KEY_SIZE = 32
ED25519_SIGNATURE_SIZE = 64
HMAC_SIZE = 32
AUTH_NONCE_SIZE = 32
# GPG key ids trail the authenticated KEY_EXCHANGE_RESP and the key AUTH_RESPONSE (0..40 ASCII bytes).
MAX_GPG_KEY_ID_LENGTH = 40
ENCRYPTED_OVERHEAD = NONCE_SIZE + MAC_SIZE


class PacketType(IntEnum):
    """Every packet type of c41aa5ae2 plus HEAD's IMAGE_FRAME_H265 (ACIP.md 2.1, 2.3)."""

    PROTOCOL_VERSION = 1
    CRYPTO_CLIENT_HELLO = 1000
    CRYPTO_CAPABILITIES = 1100
    CRYPTO_PARAMETERS = 1101
    CRYPTO_KEY_EXCHANGE_INIT = 1102
    CRYPTO_KEY_EXCHANGE_RESP = 1103
    CRYPTO_AUTH_CHALLENGE = 1104
    CRYPTO_AUTH_RESPONSE = 1105
    CRYPTO_AUTH_FAILED = 1106
    CRYPTO_SERVER_AUTH_RESP = 1107
    CRYPTO_HANDSHAKE_COMPLETE = 1108
    CRYPTO_NO_ENCRYPTION = 1109
    ENCRYPTED = 1200
    CRYPTO_REKEY_REQUEST = 1201
    CRYPTO_REKEY_RESPONSE = 1202
    CRYPTO_REKEY_COMPLETE = 1203
    SIZE_MESSAGE = 2000
    AUDIO_MESSAGE = 2001
    TEXT_MESSAGE = 2002
    ERROR_MESSAGE = 2003
    REMOTE_LOG = 2004
    ASCII_FRAME = 3000
    IMAGE_FRAME = 3001
    IMAGE_FRAME_H265 = 3002
    AUDIO_BATCH = 4000
    AUDIO_OPUS_BATCH = 4001
    CLIENT_CAPABILITIES = 5000
    PING = 5001
    PONG = 5002
    CLIENT_JOIN = 5003
    CLIENT_LEAVE = 5004
    STREAM_START = 5005
    STREAM_STOP = 5006
    CLEAR_CONSOLE = 5007
    SERVER_STATE = 5008
    # Discovery service (ACDS) and consensus: never spoken to a chat server, listed for naming only.
    ACIP_SESSION_CREATE = 6000
    ACIP_SESSION_CREATED = 6001
    ACIP_SESSION_LOOKUP = 6002
    ACIP_SESSION_INFO = 6003
    ACIP_SESSION_JOIN = 6004
    ACIP_SESSION_JOINED = 6005
    ACIP_SESSION_LEAVE = 6006
    ACIP_SESSION_END = 6007
    ACIP_SESSION_RECONNECT = 6008
    ACIP_WEBRTC_SDP = 6009
    ACIP_WEBRTC_ICE = 6010
    ACIP_STRING_RESERVE = 6020
    ACIP_STRING_RESERVED = 6021
    ACIP_STRING_RENEW = 6022
    ACIP_STRING_RELEASE = 6023
    ACIP_PARTICIPANT_LIST = 6050
    ACIP_RING_COLLECT = 6051
    ACIP_NETWORK_QUALITY = 6060
    ACIP_HOST_ANNOUNCEMENT = 6061
    ACIP_HOST_DESIGNATED = 6062
    ACIP_SETTINGS_SYNC = 6063
    ACIP_SETTINGS_ACK = 6064
    ACIP_HOST_LOST = 6065
    ACIP_FUTURE_HOST_ELECTED = 6066
    ACIP_PARTICIPANT_JOINED = 6067
    ACIP_PARTICIPANT_LEFT = 6068
    ACIP_BANDWIDTH_TEST = 6070
    ACIP_BANDWIDTH_RESULT = 6071
    ACIP_BROADCAST_ACK = 6075
    ACIP_RING_MEMBERS = 6100
    ACIP_STATS_COLLECTION_START = 6101
    ACIP_STATS_UPDATE = 6102
    ACIP_RING_ELECTION_RESULT = 6103
    ACIP_STATS_ACK = 6104
    ACIP_DISCOVERY_PING = 6190
    ACIP_ERROR = 6199


# packet_is_handshake_type: always plaintext, even inside an encrypted session (ACIP.md 2).
HANDSHAKE_TYPES = frozenset(
    {
        PacketType.CRYPTO_CLIENT_HELLO,
        *range(PacketType.CRYPTO_CAPABILITIES, PacketType.CRYPTO_NO_ENCRYPTION + 1),
        PacketType.CRYPTO_REKEY_REQUEST,
        PacketType.CRYPTO_REKEY_RESPONSE,
        PacketType.CRYPTO_REKEY_COMPLETE,
    }
)
REKEY_TYPES = frozenset(
    {PacketType.CRYPTO_REKEY_REQUEST, PacketType.CRYPTO_REKEY_RESPONSE, PacketType.CRYPTO_REKEY_COMPLETE}
)


def packet_type_name(ptype: int) -> str:
    """Name of a packet type for messages, or the number when it is not a known type."""
    try:
        return f"{PacketType(ptype).name}({ptype})"
    except ValueError:
        return f"unknown type {ptype}"


class ErrorCode(IntEnum):
    """asciichat_error_t values carried in ERROR_MESSAGE (ACIP.md 7.4)."""

    OK = 0
    GENERAL = 1
    MEMORY = 3
    NETWORK = 40
    NETWORK_BIND = 41
    NETWORK_CONNECT = 42
    NETWORK_TIMEOUT = 43
    NETWORK_PROTOCOL = 44
    NETWORK_SIZE = 45
    RATE_LIMITED = 46
    SESSION_NOT_FOUND = 47
    SESSION_FULL = 48
    INVALID_PASSWORD = 49
    INVALID_SIGNATURE = 50
    ACDS_STRING_TAKEN = 51
    ACDS_STRING_INVALID = 52
    INTERNAL = 53
    UNKNOWN_PACKET = 54
    CRYPTO = 60
    CRYPTO_KEY = 61
    CRYPTO_AUTH = 62
    CRYPTO_HANDSHAKE = 63
    CRYPTO_VERIFICATION = 64
    INVALID_STATE = 85
    INVALID_PARAM = 86
    INVALID_FRAME = 87


class AuthFailure(IntFlag):
    """CRYPTO_AUTH_FAILED reason flags (auth_failure_reason_t); 0 = generic, used for NO_ENCRYPTION."""

    NONE = 0
    PASSWORD_REQUIRED = 0x01
    PASSWORD_INCORRECT = 0x02
    CLIENT_KEY_REQUIRED = 0x04
    CLIENT_KEY_REJECTED = 0x08
    SIGNATURE_INVALID = 0x10


class AuthRequirement(IntFlag):
    """CRYPTO_AUTH_CHALLENGE flags: what the server demands."""

    NONE = 0
    PASSWORD = 0x01
    CLIENT_KEY = 0x02


class StreamType(IntFlag):
    """STREAM_START / STREAM_STOP payload bits."""

    VIDEO = 0x1
    AUDIO = 0x2


class CryptoMode(IntFlag):
    """PROTOCOL_VERSION supports_encryption byte: bit0 ENCRYPT, bit1 AUTH."""

    NONE = 0x00
    ENCRYPT = 0x01
    AUTH = 0x02
    FULL = 0x03


class AsciiFrameFlag(IntFlag):
    HAS_COLOR = 0x01
    IS_COMPRESSED = 0x02
    RLE = 0x04
    STRETCHED = 0x08


class ClientJoinCapability(IntFlag):
    VIDEO = 0x1
    AUDIO = 0x2
    COLOR = 0x4
    STRETCH = 0x8


class TerminalCapability(IntFlag):
    COLOR_16 = 0x01
    COLOR_256 = 0x02
    TRUECOLOR = 0x04
    UTF8 = 0x08
    BACKGROUND = 0x10


class LogLevel(IntEnum):
    """REMOTE_LOG level byte (log_level_t)."""

    DEV = 0
    DEBUG = 1
    INFO = 2
    WARN = 3
    ERROR = 4
    FATAL = 5


class LogDirection(IntEnum):
    UNKNOWN = 0
    SERVER_TO_CLIENT = 1
    CLIENT_TO_SERVER = 2


# Built-in palettes, dark to light (palette.h); 6 = custom text from CLIENT_CAPABILITIES.
PALETTES: dict[int, str] = {
    1: "   ...',;:clodxkO0KXNWM",
    2: "   ░░▒▒▓▓██",
    3: "   -=≡≣▰▱◼",
    4: "   .-+*#",
    5: "   ▁▂▃▄▅▆▇█",
}
PALETTE_CUSTOM = 6
DEFAULT_PALETTE = PALETTES[1]

# Defaults of the C implementation that appear in payloads.
PROTOCOL_VERSION_MAJOR = 1
PROTOCOL_VERSION_MINOR = 0
KEX_X25519 = 1
AUTH_ED25519 = 1
CIPHER_XSALSA20_POLY1305 = 1
