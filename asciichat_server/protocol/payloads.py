"""Typed ACIP payloads: each class encodes to and decodes from its exact packed big-endian layout.

decode() raises ProtocolError for wrong sizes and out-of-range fields; encode() trusts our own fields."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import ClassVar, Self

import zstandard

from .constants import (
    AUTH_NONCE_SIZE,
    DEFAULT_PALETTE,
    ED25519_SIGNATURE_SIZE,
    HMAC_SIZE,
    KEY_SIZE,
    MAX_ERROR_MESSAGE_LENGTH,
    MAX_GPG_KEY_ID_LENGTH,
    MAX_LEAVE_REASON_LENGTH,
    MAX_PAYLOAD,
    MAX_REMOTE_LOG_MESSAGE_LENGTH,
    MAX_TEXT_MESSAGE_LENGTH,
    PALETTE_CUSTOM,
    PALETTES,
    AsciiFrameFlag,
    StreamType,
)
from .crc import crc32c
from .errors import ProtocolError

__all__ = [
    "AsciiFrame",
    "AudioBatch",
    "AudioOpusBatch",
    "AuthChallenge",
    "AuthFailed",
    "ClientCapabilities",
    "ClientHello",
    "ClientJoin",
    "ClientLeave",
    "CryptoCapabilities",
    "CryptoParameters",
    "ErrorMessage",
    "ImageFrame",
    "ImageFrameH265",
    "KeyAuthResponse",
    "KeyExchangeInit",
    "KeyExchangeResp",
    "PasswordAuthResponse",
    "ProtocolVersion",
    "RekeyKey",
    "RemoteLog",
    "ServerAuthResp",
    "ServerState",
    "SizeMessage",
    "StreamFlags",
    "TextMessage",
]


def _require_len(name: str, data: bytes, expected: int) -> None:
    if len(data) != expected:
        raise ProtocolError(f"{name} payload must be {expected} bytes, got {len(data)}")


def _require_min(name: str, data: bytes, minimum: int) -> None:
    if len(data) < minimum:
        raise ProtocolError(f"{name} payload too short: {len(data)} bytes, need at least {minimum}")


def _cstr(raw: bytes) -> str:
    """A NUL-terminated C string field; bytes after the first NUL are ignored (c41 leaves garbage there)."""
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def _pad(text: str, size: int) -> bytes:
    """Encode `text` into a NUL-padded char[size], keeping room for the terminator and whole UTF-8 characters."""
    raw = text.encode("utf-8")[: size - 1]
    raw = raw.decode("utf-8", "ignore").encode("utf-8")
    return raw.ljust(size, b"\0")


def _truncate_utf8(text: str, limit: int) -> tuple[bytes, bool]:
    raw = text.encode("utf-8")
    if len(raw) <= limit:
        return raw, False
    return raw[:limit].decode("utf-8", "ignore").encode("utf-8"), True


@dataclass(frozen=True)
class ProtocolVersion:
    """PROTOCOL_VERSION (16 B). The server echoes the client's supports_encryption byte unchanged."""

    protocol_version: int = 1
    protocol_revision: int = 0
    supports_encryption: int = 0x01
    compression_algorithms: int = 0
    compression_threshold: int = 0
    feature_flags: int = 0

    _S: ClassVar[struct.Struct] = struct.Struct(">HHBBBH7x")

    def encode(self) -> bytes:
        return self._S.pack(
            self.protocol_version,
            self.protocol_revision,
            self.supports_encryption,
            self.compression_algorithms,
            self.compression_threshold,
            self.feature_flags,
        )

    @classmethod
    def decode(cls, data: bytes) -> Self:
        _require_len("PROTOCOL_VERSION", data, 16)
        return cls(*cls._S.unpack(data))


@dataclass(frozen=True)
class CryptoCapabilities:
    """CRYPTO_CAPABILITIES (10 B), sent by the client; the C server only checks its size."""

    supported_kex_algorithms: int = 0x0001
    supported_auth_algorithms: int = 0x0001
    supported_cipher_algorithms: int = 0x0001
    requires_verification: int = 0
    preferred_kex: int = 1
    preferred_auth: int = 0
    preferred_cipher: int = 1

    _S: ClassVar[struct.Struct] = struct.Struct(">HHHBBBB")

    def encode(self) -> bytes:
        return self._S.pack(
            self.supported_kex_algorithms,
            self.supported_auth_algorithms,
            self.supported_cipher_algorithms,
            self.requires_verification,
            self.preferred_kex,
            self.preferred_auth,
            self.preferred_cipher,
        )

    @classmethod
    def decode(cls, data: bytes) -> Self:
        _require_len("CRYPTO_CAPABILITIES", data, 10)
        return cls(*cls._S.unpack(data))


@dataclass(frozen=True)
class CryptoParameters:
    """CRYPTO_PARAMETERS (18 B; the header comment's 24 is wrong)."""

    selected_kex: int = 1
    selected_auth: int = 0
    selected_cipher: int = 1
    verification_enabled: int = 0
    kex_public_key_size: int = 32
    auth_public_key_size: int = 0
    signature_size: int = 0
    shared_secret_size: int = 32
    nonce_size: int = 24
    mac_size: int = 16
    hmac_size: int = 32

    _S: ClassVar[struct.Struct] = struct.Struct(">BBBBHHHHBBB3x")

    @classmethod
    def for_server(cls, *, identity: bool, encrypt: bool, verification: bool) -> Self:
        """What the C server announces for its configuration (ACIP.md 2.2.3)."""
        return cls(
            selected_auth=1 if identity else 0,
            selected_cipher=1 if encrypt else 0,
            verification_enabled=1 if verification else 0,
            auth_public_key_size=KEY_SIZE if identity else 0,
            signature_size=ED25519_SIGNATURE_SIZE if identity else 0,
        )

    def encode(self) -> bytes:
        return self._S.pack(
            self.selected_kex,
            self.selected_auth,
            self.selected_cipher,
            self.verification_enabled,
            self.kex_public_key_size,
            self.auth_public_key_size,
            self.signature_size,
            self.shared_secret_size,
            self.nonce_size,
            self.mac_size,
            self.hmac_size,
        )

    @classmethod
    def decode(cls, data: bytes) -> Self:
        _require_len("CRYPTO_PARAMETERS", data, 18)
        return cls(*cls._S.unpack(data))


@dataclass(frozen=True)
class KeyExchangeInit:
    """CRYPTO_KEY_EXCHANGE_INIT: ephemeral X25519 key, optionally with Ed25519 identity + signature (128 B)."""

    public_key: bytes
    identity_key: bytes | None = None
    signature: bytes | None = None

    @property
    def authenticated(self) -> bool:
        return self.identity_key is not None

    def encode(self) -> bytes:
        if self.identity_key is None:
            return bytes(self.public_key)
        return bytes(self.public_key) + bytes(self.identity_key) + bytes(self.signature or b"\0" * 64)

    @classmethod
    def decode(cls, data: bytes) -> Self:
        if len(data) == KEY_SIZE:
            return cls(bytes(data))
        if len(data) == KEY_SIZE * 2 + ED25519_SIGNATURE_SIZE:
            return cls(bytes(data[:32]), bytes(data[32:64]), bytes(data[64:128]))
        raise ProtocolError(f"CRYPTO_KEY_EXCHANGE_INIT payload must be 32 or 128 bytes, got {len(data)}")


@dataclass(frozen=True)
class KeyExchangeResp:
    """CRYPTO_KEY_EXCHANGE_RESP: 32 B, or pk ‖ identity ‖ signature ‖ gpg_len ‖ gpg id (129..169 B).

    In the long form an all-zero identity means "no identity" and decodes to None.
    """

    public_key: bytes
    identity_key: bytes | None = None
    signature: bytes | None = None
    gpg_key_id: str = ""
    authenticated: bool = False

    def encode(self) -> bytes:
        if not self.authenticated:
            return bytes(self.public_key)
        gpg = self.gpg_key_id.encode("ascii")
        if len(gpg) > MAX_GPG_KEY_ID_LENGTH:
            raise ValueError("GPG key id longer than 40 bytes")
        return (
            bytes(self.public_key)
            + bytes(self.identity_key or b"\0" * KEY_SIZE)
            + bytes(self.signature or b"\0" * ED25519_SIGNATURE_SIZE)
            + bytes([len(gpg)])
            + gpg
        )

    @classmethod
    def decode(cls, data: bytes) -> Self:
        if len(data) == KEY_SIZE:
            return cls(bytes(data))
        base = KEY_SIZE * 2 + ED25519_SIGNATURE_SIZE + 1
        if not base <= len(data) <= base + MAX_GPG_KEY_ID_LENGTH:
            raise ProtocolError(f"CRYPTO_KEY_EXCHANGE_RESP payload must be 32 or 129..169 bytes, got {len(data)}")
        gpg_len = data[base - 1]
        if gpg_len > MAX_GPG_KEY_ID_LENGTH or base + gpg_len != len(data):
            raise ProtocolError(f"CRYPTO_KEY_EXCHANGE_RESP gpg key id length {gpg_len} does not match its size")
        identity = bytes(data[32:64])
        signature = bytes(data[64:128])
        try:
            gpg = bytes(data[base:]).decode("ascii")
        except UnicodeDecodeError:
            raise ProtocolError("CRYPTO_KEY_EXCHANGE_RESP gpg key id is not ASCII") from None
        return cls(
            bytes(data[:32]),
            None if identity == b"\0" * KEY_SIZE else identity,
            None if signature == b"\0" * ED25519_SIGNATURE_SIZE else signature,
            gpg,
            authenticated=True,
        )


@dataclass(frozen=True)
class AuthChallenge:
    """CRYPTO_AUTH_CHALLENGE (33 B): AuthRequirement flags ‖ 32-byte server nonce."""

    flags: int
    nonce: bytes

    def encode(self) -> bytes:
        return bytes([self.flags]) + bytes(self.nonce)

    @classmethod
    def decode(cls, data: bytes) -> Self:
        _require_len("CRYPTO_AUTH_CHALLENGE", data, 1 + AUTH_NONCE_SIZE)
        return cls(data[0], bytes(data[1:]))


@dataclass(frozen=True)
class PasswordAuthResponse:
    """CRYPTO_AUTH_RESPONSE, password form (64 B): HMAC-SHA256(password_key, N_s ‖ key) ‖ N_c."""

    hmac: bytes
    client_nonce: bytes

    def encode(self) -> bytes:
        return bytes(self.hmac) + bytes(self.client_nonce)

    @classmethod
    def decode(cls, data: bytes) -> Self:
        _require_len("CRYPTO_AUTH_RESPONSE (password form)", data, HMAC_SIZE + AUTH_NONCE_SIZE)
        return cls(bytes(data[:32]), bytes(data[32:]))


@dataclass(frozen=True)
class KeyAuthResponse:
    """CRYPTO_AUTH_RESPONSE, key form: Ed25519 sig over N_s (64) ‖ N_c ‖ gpg_len ‖ gpg id (≥ 97 B).

    The c41 client sizes the signature with the *announced* signature_size, so a server that announces 0
    (no identity of its own) gets N_c ‖ gpg_len without a signature (33 B): decoded with signature None.
    """

    signature: bytes | None
    client_nonce: bytes
    gpg_key_id: str = ""

    def encode(self) -> bytes:
        gpg = self.gpg_key_id.encode("ascii")
        if len(gpg) > MAX_GPG_KEY_ID_LENGTH:
            raise ValueError("GPG key id longer than 40 bytes")
        return bytes(self.signature or b"") + bytes(self.client_nonce) + bytes([len(gpg)]) + gpg

    @classmethod
    def decode(cls, data: bytes) -> Self:
        _require_min("CRYPTO_AUTH_RESPONSE (key form)", data, AUTH_NONCE_SIZE)
        # The unsigned form is at most 32 + 1 + 40 = 73 bytes, the signed one at least 96.
        sig_len = ED25519_SIGNATURE_SIZE if len(data) >= ED25519_SIGNATURE_SIZE + AUTH_NONCE_SIZE else 0
        signature = bytes(data[:sig_len]) if sig_len else None
        base = sig_len + AUTH_NONCE_SIZE
        nonce = bytes(data[sig_len:base])
        if len(data) == base:  # tolerate a sender that omits the gpg length byte
            return cls(signature, nonce)
        gpg_len = data[base]
        if gpg_len > MAX_GPG_KEY_ID_LENGTH or base + 1 + gpg_len != len(data):
            raise ProtocolError(f"CRYPTO_AUTH_RESPONSE gpg key id length {gpg_len} does not match its size")
        try:
            gpg = bytes(data[base + 1 :]).decode("ascii")
        except UnicodeDecodeError:
            raise ProtocolError("CRYPTO_AUTH_RESPONSE gpg key id is not ASCII") from None
        return cls(signature, nonce, gpg)


@dataclass(frozen=True)
class AuthFailed:
    """CRYPTO_AUTH_FAILED (8 B): AuthFailure flags ‖ 7 zero bytes."""

    reason_flags: int

    def encode(self) -> bytes:
        return bytes([self.reason_flags]) + b"\0" * 7

    @classmethod
    def decode(cls, data: bytes) -> Self:
        _require_len("CRYPTO_AUTH_FAILED", data, 8)
        return cls(data[0])


@dataclass(frozen=True)
class ServerAuthResp:
    """CRYPTO_SERVER_AUTH_RESP (32 B): HMAC-SHA256 proving the server knows the key."""

    hmac: bytes

    def encode(self) -> bytes:
        return bytes(self.hmac)

    @classmethod
    def decode(cls, data: bytes) -> Self:
        _require_len("CRYPTO_SERVER_AUTH_RESP", data, HMAC_SIZE)
        return cls(bytes(data))


@dataclass(frozen=True)
class ClientHello:
    """CRYPTO_CLIENT_HELLO (32 B): the Ed25519 server key the client expects (its --server-key)."""

    expected_server_key: bytes

    def encode(self) -> bytes:
        return bytes(self.expected_server_key)

    @classmethod
    def decode(cls, data: bytes) -> Self:
        _require_len("CRYPTO_CLIENT_HELLO", data, KEY_SIZE)
        return cls(bytes(data))


@dataclass(frozen=True)
class RekeyKey:
    """CRYPTO_REKEY_REQUEST / CRYPTO_REKEY_RESPONSE (32 B): a new ephemeral X25519 public key."""

    public_key: bytes

    def encode(self) -> bytes:
        return bytes(self.public_key)

    @classmethod
    def decode(cls, data: bytes) -> Self:
        _require_len("CRYPTO_REKEY key", data, KEY_SIZE)
        return cls(bytes(data))


@dataclass(frozen=True)
class ClientCapabilities:
    """CLIENT_CAPABILITIES: 160 bytes at c41, 168 at HEAD (codec_video/codec_audio not None)."""

    capabilities: int = 0
    color_level: int = 0
    color_count: int = 2
    render_mode: int = 0
    width: int = 80
    height: int = 24
    term_type: str = ""
    colorterm: str = ""
    detection_reliable: int = 0
    utf8_support: int = 1
    palette_type: int = 1
    palette_custom: str = ""
    desired_fps: int = 60
    color_filter: int = 0
    wants_padding: int = 1
    codec_video: int | None = None
    codec_audio: int | None = None

    _HEAD: ClassVar[struct.Struct] = struct.Struct(">IIIIHH")
    SIZE_C41: ClassVar[int] = 160
    SIZE_HEAD: ClassVar[int] = 168
    MAX_DIMENSION: ClassVar[int] = 4096

    @property
    def palette_chars(self) -> str:
        """Palette string (dark → light); type 0 and an empty custom palette fall back to standard."""
        if self.palette_type == PALETTE_CUSTOM:
            return self.palette_custom or DEFAULT_PALETTE
        return PALETTES.get(self.palette_type, DEFAULT_PALETTE)

    def encode(self) -> bytes:
        buf = bytearray(self.SIZE_HEAD if self.codec_video is not None else self.SIZE_C41)
        self._HEAD.pack_into(
            buf, 0, self.capabilities, self.color_level, self.color_count, self.render_mode, self.width, self.height
        )
        buf[20:52] = _pad(self.term_type, 32)
        buf[52:84] = _pad(self.colorterm, 32)
        buf[84] = self.detection_reliable
        struct.pack_into(">II", buf, 85, self.utf8_support, self.palette_type)
        buf[93:157] = _pad(self.palette_custom, 64)
        buf[157] = self.desired_fps
        buf[158] = self.color_filter
        buf[159] = self.wants_padding
        if self.codec_video is not None:
            struct.pack_into(">II", buf, 160, self.codec_video, self.codec_audio or 0)
        return bytes(buf)

    @classmethod
    def decode(cls, data: bytes) -> Self:
        if len(data) not in (cls.SIZE_C41, cls.SIZE_HEAD):
            raise ProtocolError(f"CLIENT_CAPABILITIES payload must be 160 or 168 bytes, got {len(data)}")
        caps, color_level, color_count, render_mode, width, height = cls._HEAD.unpack_from(data, 0)
        utf8_support, palette_type = struct.unpack_from(">II", data, 85)
        codec_video = codec_audio = None
        if len(data) == cls.SIZE_HEAD:
            codec_video, codec_audio = struct.unpack_from(">II", data, 160)
        # Ranges the C server enforces; palette 6 (custom) is accepted here although c41 wrongly refuses it.
        if color_level > 3:
            raise ProtocolError(f"CLIENT_CAPABILITIES color_level {color_level} out of range 0..3")
        if render_mode > 2:
            raise ProtocolError(f"CLIENT_CAPABILITIES render_mode {render_mode} out of range 0..2")
        if not (1 <= width <= cls.MAX_DIMENSION and 1 <= height <= cls.MAX_DIMENSION):
            raise ProtocolError(f"CLIENT_CAPABILITIES size {width}x{height} out of range 1..4096")
        if palette_type > PALETTE_CUSTOM:
            raise ProtocolError(f"CLIENT_CAPABILITIES palette_type {palette_type} out of range 0..6")
        return cls(
            capabilities=caps,
            color_level=color_level,
            color_count=color_count,
            render_mode=render_mode,
            width=width,
            height=height,
            term_type=_cstr(bytes(data[20:52])),
            colorterm=_cstr(bytes(data[52:84])),
            detection_reliable=data[84],
            utf8_support=utf8_support,
            palette_type=palette_type,
            palette_custom=_cstr(bytes(data[93:157])),
            desired_fps=data[157],
            color_filter=data[158],
            wants_padding=data[159],
            codec_video=codec_video,
            codec_audio=codec_audio,
        )


_FRAME_HEADER = struct.Struct(">IIIIII")


@dataclass(frozen=True)
class ImageFrame:
    """IMAGE_FRAME: 24-byte header then width·height pixels, RGB24 (3 B/px) or RGBA32 (4 B/px)."""

    width: int
    height: int
    pixel_format: int = 1
    compressed_size: int = 0
    checksum: int = 0
    timestamp: int = 0
    pixels: bytes = b""

    MAX_DIMENSION: ClassVar[int] = 8192

    @property
    def bytes_per_pixel(self) -> int:
        return len(self.pixels) // (self.width * self.height)

    def encode(self) -> bytes:
        return (
            _FRAME_HEADER.pack(
                self.width, self.height, self.pixel_format, self.compressed_size, self.checksum, self.timestamp
            )
            + self.pixels
        )

    @classmethod
    def decode(cls, data: bytes) -> Self:
        _require_min("IMAGE_FRAME", data, _FRAME_HEADER.size)
        width, height, pixel_format, compressed_size, checksum, timestamp = _FRAME_HEADER.unpack_from(data, 0)
        if not (1 <= width <= cls.MAX_DIMENSION and 1 <= height <= cls.MAX_DIMENSION):
            raise ProtocolError(f"IMAGE_FRAME size {width}x{height} out of range 1..8192")
        pixels = bytes(data[_FRAME_HEADER.size :])
        # Senders disagree on pixel_format numbering (native 1, browser 3, both RGB24): trust the length.
        if len(pixels) not in (width * height * 3, width * height * 4):
            raise ProtocolError(
                f"IMAGE_FRAME {width}x{height} carries {len(pixels)} pixel bytes, expected {width * height * 3} (RGB) "
                f"or {width * height * 4} (RGBA)"
            )
        return cls(width, height, pixel_format, compressed_size, checksum, timestamp, pixels)


@dataclass(frozen=True)
class ImageFrameH265:
    """IMAGE_FRAME_H265 (HEAD): flags u8 ‖ width u16 ‖ height u16 ‖ HEVC bitstream (may be empty)."""

    flags: int
    width: int
    height: int
    bitstream: bytes = b""

    _S: ClassVar[struct.Struct] = struct.Struct(">BHH")

    def encode(self) -> bytes:
        return self._S.pack(self.flags, self.width, self.height) + self.bitstream

    @classmethod
    def decode(cls, data: bytes) -> Self:
        _require_min("IMAGE_FRAME_H265", data, cls._S.size)
        flags, width, height = cls._S.unpack_from(data, 0)
        if not (1 <= width <= 8192 and 1 <= height <= 8192):
            raise ProtocolError(f"IMAGE_FRAME_H265 size {width}x{height} out of range 1..8192")
        return cls(flags, width, height, bytes(data[cls._S.size :]))


@dataclass(frozen=True)
class AsciiFrame:
    """ASCII_FRAME: 24-byte header then the frame text. encode() fills original_size and checksum.

    decode() inflates zstd frames (flags IS_COMPRESSED and compressed_size > 0) and checks the
    checksum, which covers the uncompressed text.
    """

    width: int
    height: int
    text: bytes
    flags: int = 0

    MAX_DIMENSION: ClassVar[int] = 16384

    def encode(self) -> bytes:
        return (
            _FRAME_HEADER.pack(
                self.width,
                self.height,
                len(self.text),
                0,
                crc32c(self.text),
                self.flags & ~int(AsciiFrameFlag.IS_COMPRESSED),
            )
            + self.text
        )

    def encode_compressed(self, level: int = 3) -> bytes:
        """The zstd form the native client understands (the C server never sends it; browsers reject it)."""
        body = zstandard.ZstdCompressor(level=level).compress(self.text)
        header = _FRAME_HEADER.pack(
            self.width,
            self.height,
            len(self.text),
            len(body),
            crc32c(self.text),
            self.flags | AsciiFrameFlag.IS_COMPRESSED,
        )
        return header + body

    @classmethod
    def decode(cls, data: bytes) -> Self:
        _require_min("ASCII_FRAME", data, _FRAME_HEADER.size)
        width, height, original_size, compressed_size, checksum, flags = _FRAME_HEADER.unpack_from(data, 0)
        if not (1 <= width <= cls.MAX_DIMENSION and 1 <= height <= cls.MAX_DIMENSION):
            raise ProtocolError(f"ASCII_FRAME size {width}x{height} out of range 1..16384")
        body = bytes(data[_FRAME_HEADER.size :])
        if flags & AsciiFrameFlag.IS_COMPRESSED and compressed_size > 0:
            if compressed_size != len(body):
                raise ProtocolError(f"ASCII_FRAME compressed_size {compressed_size} but {len(body)} bytes follow")
            if original_size > MAX_PAYLOAD:
                raise ProtocolError(f"ASCII_FRAME original_size {original_size} exceeds {MAX_PAYLOAD}")
            try:
                # decompress() trusts a content size in the zstd frame header over max_output_size, so a
                # forged header could make it allocate gigabytes: check it against original_size first.
                declared = zstandard.frame_content_size(body)
                if declared > original_size or original_size == 0:
                    raise ProtocolError(
                        f"ASCII_FRAME zstd frame declares {declared} bytes, header says {original_size}"
                    )
                text = zstandard.ZstdDecompressor().decompress(body, max_output_size=original_size)
            except zstandard.ZstdError as exc:
                raise ProtocolError(f"ASCII_FRAME zstd data is corrupt: {exc}") from None
            if len(text) != original_size:
                raise ProtocolError(f"ASCII_FRAME inflates to {len(text)} bytes, header says {original_size}")
        else:
            text = body
            if original_size != len(text):
                raise ProtocolError(f"ASCII_FRAME original_size {original_size} but {len(text)} bytes follow")
        if crc32c(text) != checksum:
            raise ProtocolError(f"ASCII_FRAME checksum 0x{checksum:08x} does not match its text")
        return cls(width, height, text, flags & ~int(AsciiFrameFlag.IS_COMPRESSED))


@dataclass(frozen=True)
class AudioOpusBatch:
    """AUDIO_OPUS_BATCH: rate, frame ms, count, reserved (4×u32) ‖ count×u16 sizes ‖ Opus frames."""

    sample_rate: int = 48000
    frame_duration_ms: int = 20
    frames: list[bytes] = field(default_factory=list)

    MAX_FRAMES: ClassVar[int] = 1000  # packet_parse_opus_batch's limit

    def encode(self) -> bytes:
        if len(self.frames) > self.MAX_FRAMES:
            raise ValueError(f"at most {self.MAX_FRAMES} Opus frames per batch")
        sizes = [len(f) for f in self.frames]
        if any(s > 0xFFFF for s in sizes):
            raise ValueError("an Opus frame is larger than 65535 bytes")
        return (
            struct.pack(">IIII", self.sample_rate, self.frame_duration_ms, len(self.frames), 0)
            + struct.pack(f">{len(sizes)}H", *sizes)
            + b"".join(self.frames)
        )

    @classmethod
    def decode(cls, data: bytes) -> Self:
        _require_min("AUDIO_OPUS_BATCH", data, 16)
        sample_rate, frame_ms, count, _reserved = struct.unpack_from(">IIII", data, 0)
        if count > cls.MAX_FRAMES:
            raise ProtocolError(f"AUDIO_OPUS_BATCH frame_count {count} exceeds {cls.MAX_FRAMES}")
        if 16 + 2 * count > len(data):
            raise ProtocolError(f"AUDIO_OPUS_BATCH too short for {count} frame sizes")
        sizes = struct.unpack_from(f">{count}H", data, 16)
        pos = 16 + 2 * count
        if pos + sum(sizes) != len(data):
            raise ProtocolError(
                f"AUDIO_OPUS_BATCH frame sizes add up to {sum(sizes)} but {len(data) - pos} data bytes follow"
            )
        frames = []
        for size in sizes:
            frames.append(bytes(data[pos : pos + size]))
            pos += size
        return cls(sample_rate, frame_ms, frames)


@dataclass(frozen=True)
class AudioBatch:
    """AUDIO_BATCH in the receivers' format: 4×u32 header then int32 BE samples (sample × 2147483647)."""

    sample_rate: int
    channels: int
    samples: tuple[int, ...] = ()
    batch_count: int = 1

    STANDARD_RATES: ClassVar[frozenset[int]] = frozenset(
        {8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000, 88200, 96000, 176400, 192000}
    )

    @classmethod
    def from_floats(cls, sample_rate: int, channels: int, samples: list[float], batch_count: int = 1) -> Self:
        scaled = tuple(round(max(-1.0, min(1.0, s)) * 2147483647) for s in samples)
        return cls(sample_rate, channels, scaled, batch_count)

    def to_floats(self) -> list[float]:
        return [s / 2147483647 for s in self.samples]

    def encode(self) -> bytes:
        n = len(self.samples)
        return struct.pack(f">IIII{n}i", self.batch_count, n, self.sample_rate, self.channels, *self.samples)

    @classmethod
    def decode(cls, data: bytes) -> Self:
        _require_min("AUDIO_BATCH", data, 16)
        batch_count, total, rate, channels = struct.unpack_from(">IIII", data, 0)
        if rate not in cls.STANDARD_RATES:
            raise ProtocolError(f"AUDIO_BATCH sample_rate {rate} is not a standard rate")
        if not 1 <= channels <= 8:
            raise ProtocolError(f"AUDIO_BATCH channels {channels} out of range 1..8")
        if 16 + 4 * total != len(data):
            raise ProtocolError(f"AUDIO_BATCH declares {total} samples but carries {(len(data) - 16) / 4}")
        return cls(rate, channels, struct.unpack_from(f">{total}i", data, 16), batch_count)


@dataclass(frozen=True)
class ServerState:
    """SERVER_STATE (32 B): connected u32 ‖ active u32 ‖ 24 reserved zero bytes."""

    connected: int
    active: int

    def encode(self) -> bytes:
        return struct.pack(">II24x", self.connected, self.active)

    @classmethod
    def decode(cls, data: bytes) -> Self:
        _require_len("SERVER_STATE", data, 32)
        return cls(*struct.unpack_from(">II", data, 0))


@dataclass(frozen=True)
class ErrorMessage:
    """ERROR_MESSAGE: error_code u32 ‖ length u32 ‖ text (≤ 512 B, no NUL). encode() truncates longer text."""

    code: int
    message: str

    def encode(self) -> bytes:
        raw, _ = _truncate_utf8(self.message, MAX_ERROR_MESSAGE_LENGTH)
        return struct.pack(">II", self.code, len(raw)) + raw

    @classmethod
    def decode(cls, data: bytes) -> Self:
        _require_min("ERROR_MESSAGE", data, 8)
        code, length = struct.unpack_from(">II", data, 0)
        if length > MAX_ERROR_MESSAGE_LENGTH or 8 + length != len(data):
            raise ProtocolError(f"ERROR_MESSAGE length {length} does not match {len(data) - 8} bytes (max 512)")
        return cls(code, bytes(data[8:]).decode("utf-8", "replace"))


@dataclass(frozen=True)
class RemoteLog:
    """REMOTE_LOG: level u8 ‖ direction u8 ‖ flags u16 (bit0 truncated) ‖ length u32 ‖ text (≤ 512 B)."""

    level: int
    direction: int
    message: str
    flags: int = 0

    FLAG_TRUNCATED: ClassVar[int] = 0x1

    def encode(self) -> bytes:
        raw, truncated = _truncate_utf8(self.message, MAX_REMOTE_LOG_MESSAGE_LENGTH)
        flags = self.flags | (self.FLAG_TRUNCATED if truncated else 0)
        return struct.pack(">BBHI", self.level, self.direction, flags, len(raw)) + raw

    @classmethod
    def decode(cls, data: bytes) -> Self:
        _require_min("REMOTE_LOG", data, 8)
        level, direction, flags, length = struct.unpack_from(">BBHI", data, 0)
        if level > 5:
            raise ProtocolError(f"REMOTE_LOG level {level} out of range 0..5")
        if direction > 2:
            raise ProtocolError(f"REMOTE_LOG direction {direction} out of range 0..2")
        if length > MAX_REMOTE_LOG_MESSAGE_LENGTH or 8 + length != len(data):
            raise ProtocolError(f"REMOTE_LOG length {length} does not match {len(data) - 8} bytes (max 512)")
        return cls(level, direction, bytes(data[8:]).decode("utf-8", "replace"), flags)


@dataclass(frozen=True)
class ClientJoin:
    """CLIENT_JOIN (40 B): client_id u32 ‖ display_name char[32] ‖ capabilities u32."""

    client_id: int
    display_name: str
    capabilities: int = 0

    def encode(self) -> bytes:
        return struct.pack(">I32sI", self.client_id, _pad(self.display_name, 32), self.capabilities)

    @classmethod
    def decode(cls, data: bytes) -> Self:
        _require_len("CLIENT_JOIN", data, 40)
        client_id, name, caps = struct.unpack(">I32sI", data)
        display_name = _cstr(name)
        if not display_name:
            raise ProtocolError("CLIENT_JOIN with an empty display name")
        if caps & ~0xF:
            raise ProtocolError(f"CLIENT_JOIN unknown capability bits 0x{caps:08x}")
        return cls(client_id, display_name, caps)


@dataclass(frozen=True)
class ClientLeave:
    """CLIENT_LEAVE: optional reason text (≤ 256 B)."""

    reason: str = ""

    def encode(self) -> bytes:
        raw, _ = _truncate_utf8(self.reason, MAX_LEAVE_REASON_LENGTH)
        return raw

    @classmethod
    def decode(cls, data: bytes) -> Self:
        if len(data) > MAX_LEAVE_REASON_LENGTH:
            raise ProtocolError(f"CLIENT_LEAVE reason of {len(data)} bytes exceeds 256")
        return cls(bytes(data).decode("utf-8", "replace"))


@dataclass(frozen=True)
class StreamFlags:
    """STREAM_START / STREAM_STOP (4 B): StreamType bits; 0 and unknown bits are rejected like the C server."""

    streams: StreamType

    def encode(self) -> bytes:
        return struct.pack(">I", int(self.streams))

    @classmethod
    def decode(cls, data: bytes) -> Self:
        _require_len("STREAM_START/STOP", data, 4)
        (value,) = struct.unpack(">I", data)
        if value == 0 or value & ~int(StreamType.VIDEO | StreamType.AUDIO):
            raise ProtocolError(f"stream type 0x{value:08x} is not a non-empty VIDEO|AUDIO set")
        return cls(StreamType(value))


@dataclass(frozen=True)
class TextMessage:
    """TEXT_MESSAGE: UTF-8 text, at most 1024 bytes (unused by the C programs)."""

    text: str

    def encode(self) -> bytes:
        raw = self.text.encode("utf-8")
        if len(raw) > MAX_TEXT_MESSAGE_LENGTH:
            raise ValueError("TEXT_MESSAGE longer than 1024 bytes")
        return raw

    @classmethod
    def decode(cls, data: bytes) -> Self:
        if len(data) > MAX_TEXT_MESSAGE_LENGTH:
            raise ProtocolError(f"TEXT_MESSAGE of {len(data)} bytes exceeds 1024")
        return cls(bytes(data).decode("utf-8", "replace"))


@dataclass(frozen=True)
class SizeMessage:
    """SIZE_MESSAGE: encoded as two u32 (width, height); decode also accepts the text form "SIZE:w,h"."""

    width: int
    height: int

    def encode(self) -> bytes:
        return struct.pack(">II", self.width, self.height)

    @classmethod
    def decode(cls, data: bytes) -> Self:
        raw = bytes(data)
        if raw.startswith(b"SIZE:") and len(raw) <= 32:
            try:
                w, h = (int(v) for v in raw[5:].rstrip(b"\0").split(b","))
                if not (0 <= w <= 0xFFFFFFFF and 0 <= h <= 0xFFFFFFFF):
                    raise ValueError
                return cls(w, h)
            except ValueError:
                raise ProtocolError(f"SIZE_MESSAGE text {raw!r} is not SIZE:w,h") from None
        _require_len("SIZE_MESSAGE", raw, 8)
        return cls(*struct.unpack(">II", raw))
