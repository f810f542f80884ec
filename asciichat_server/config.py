"""Server configuration (`ServerConfig`) and the key-file readers behind --key and --client-keys.

--key accepts an unencrypted OpenSSH ed25519 private key, or a raw 32-byte Ed25519 seed stored as
binary or as 64 hex characters (a 64-byte libsodium secret key, seed || public, also works).
--client-keys accepts one key per line: ``ssh-ed25519 AAAA... [comment]`` or 64 hex characters.
"""

from __future__ import annotations

import base64
import binascii
import struct
from dataclasses import dataclass, field
from pathlib import Path

import nacl.signing

__all__ = [
    "DEFAULT_ADDRESSES",
    "DEFAULT_PORT",
    "DEFAULT_WEBSOCKET_PORT",
    "MAX_CLIENTS_LIMIT",
    "ConfigError",
    "ServerConfig",
    "load_client_keys",
    "load_identity_key",
    "openssh_public_line",
    "parse_openssh_private_key",
]

DEFAULT_PORT = 27224
DEFAULT_WEBSOCKET_PORT = 27226
# c41 binds the two loopback addresses as separate sockets when no address is given.
DEFAULT_ADDRESSES = ("127.0.0.1", "::1")
# c41's compile-time slot table has 32 entries (limits.h: MAX_CLIENTS); --max-clients defaults to 9.
MAX_CLIENTS_LIMIT = 32
DEFAULT_MAX_CLIENTS = 9
# crypto_validate_password: 8..256 bytes.
PASSWORD_MIN_BYTES = 8
PASSWORD_MAX_BYTES = 256

_OPENSSH_BEGIN = b"-----BEGIN OPENSSH PRIVATE KEY-----"
_OPENSSH_END = b"-----END OPENSSH PRIVATE KEY-----"
_OPENSSH_MAGIC = b"openssh-key-v1\x00"


class ConfigError(ValueError):
    """A bad option or key file; the message is one line meant for the user."""


@dataclass
class ServerConfig:
    """Everything ``AsciiChatServer`` needs; the CLI fills it from options."""

    addresses: list[str] = field(default_factory=lambda: list(DEFAULT_ADDRESSES))
    port: int = DEFAULT_PORT
    max_clients: int = DEFAULT_MAX_CLIENTS
    encrypt: bool = True
    password: str | None = None
    key_file: Path | None = None
    client_keys_file: Path | None = None
    # "c41" or "head": session-key rule for whitelist-only signature auth, where it cannot be detected.
    signature_auth_variant: str = "c41"
    log_file: Path | None = None
    log_level: str = "info"
    log_format: str = "text"
    websocket: bool = True
    websocket_port: int = DEFAULT_WEBSOCKET_PORT
    # WS transport knobs (kept here so one config object serves both transports).
    reassembly_timeout_s: float = 2.0
    ws_heartbeat_s: float = 20.0
    ws_plaintext: bool = False
    bind_retries: int = 5
    bind_backoff_s: float = 0.1
    # Whole handshake: clients may prompt (unknown host, password) between steps (ACIP 3.2).
    handshake_timeout_s: float = 60.0
    # Browsers never ping; native clients ping every 1 s (ACIP 3.8: tolerate >= 10 s of silence).
    idle_timeout_s: float = 15.0
    # Native clients drop after 1-2 s without input; send something at least this often.
    keepalive_interval_s: float = 0.3
    # Audio batches go out at this period (20-40 ms keeps the client's jitter buffer fed).
    audio_interval_s: float = 0.04
    # Highest frame rate the server renders for any receiver (c41 caps its send loop at 60 fps).
    max_fps: int = 60
    # Packets queued for one receiver (video excluded: it keeps only the newest frame).
    send_queue_limit: int = 256
    # Per source address (asciichat_server.admission): new connections a second (token bucket with
    # bursts of twice that), and connections still in their handshake at once. 0 = no limit.
    max_connect_rate: float = 0.0
    max_pending_per_ip: int = 0

    def validate(self) -> None:
        """Raise ConfigError with a one-line message on an impossible combination."""
        if not self.addresses:
            raise ConfigError("no bind address given")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"--port must be 0..65535, got {self.port}")
        if not 0 <= self.websocket_port <= 65535:
            raise ConfigError(f"--websocket-port must be 0..65535, got {self.websocket_port}")
        if not 1 <= self.max_clients <= MAX_CLIENTS_LIMIT:
            raise ConfigError(f"--max-clients must be 1..{MAX_CLIENTS_LIMIT}, got {self.max_clients}")
        if self.password is not None:
            size = len(self.password.encode("utf-8"))
            if size < PASSWORD_MIN_BYTES:
                raise ConfigError(f"password too short (minimum {PASSWORD_MIN_BYTES} characters)")
            if size > PASSWORD_MAX_BYTES:
                raise ConfigError(f"password too long (maximum {PASSWORD_MAX_BYTES} bytes)")
        if not self.encrypt and (self.password or self.key_file or self.client_keys_file):
            raise ConfigError("--no-encrypt cannot be combined with --password, --key or --client-keys")
        if self.ws_plaintext and (self.password or self.client_keys_file):
            raise ConfigError("--ws-plaintext would let WebSocket clients skip --password / --client-keys")
        if self.signature_auth_variant not in ("c41", "head"):
            raise ConfigError(f"key variant must be c41 or head, got {self.signature_auth_variant!r}")
        if self.max_connect_rate < 0:
            raise ConfigError(f"--max-connect-rate must be 0 (off) or positive, got {self.max_connect_rate}")
        if self.max_pending_per_ip < 0:
            raise ConfigError(f"--max-pending-per-ip must be 0 (off) or positive, got {self.max_pending_per_ip}")
        if self.handshake_timeout_s <= 0 or self.idle_timeout_s <= 0:
            raise ConfigError("timeouts must be positive")


# --- OpenSSH / raw key parsing -------------------------------------------------------------------


class _Reader:
    """SSH wire-format reader (uint32 lengths, big-endian)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ConfigError("truncated OpenSSH key")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u32(self) -> int:
        return struct.unpack(">I", self.take(4))[0]

    def string(self) -> bytes:
        return self.take(self.u32())


def parse_openssh_private_key(text: bytes) -> nacl.signing.SigningKey:
    """The Ed25519 key in an unencrypted ``-----BEGIN OPENSSH PRIVATE KEY-----`` file."""
    start = text.find(_OPENSSH_BEGIN)
    end = text.find(_OPENSSH_END)
    if start < 0 or end < start:
        raise ConfigError("not an OpenSSH private key")
    body = b"".join(text[start + len(_OPENSSH_BEGIN) : end].split())
    try:
        blob = base64.b64decode(body, validate=True)
    except binascii.Error as exc:
        raise ConfigError(f"OpenSSH key is not valid base64: {exc}") from None
    if not blob.startswith(_OPENSSH_MAGIC):
        raise ConfigError("OpenSSH key lacks the openssh-key-v1 magic")
    reader = _Reader(blob[len(_OPENSSH_MAGIC) :])
    cipher, kdf, _kdf_options = reader.string(), reader.string(), reader.string()
    if cipher != b"none" or kdf != b"none":
        raise ConfigError(
            "encrypted OpenSSH keys are not supported (remove the passphrase: ssh-keygen -p -N '' -f KEY)"
        )
    if reader.u32() != 1:
        raise ConfigError("OpenSSH key file must hold exactly one key")
    reader.string()  # public key blob, repeated in the private section
    private = _Reader(reader.string())
    if private.u32() != private.u32():
        raise ConfigError("OpenSSH key check integers differ (corrupt or encrypted key)")
    key_type = private.string()
    if key_type != b"ssh-ed25519":
        raise ConfigError(f"--key must be an ed25519 key, got {key_type.decode(errors='replace')}")
    public = private.string()
    secret = private.string()
    if len(public) != 32 or len(secret) != 64:
        raise ConfigError("malformed ssh-ed25519 private key")
    signing = nacl.signing.SigningKey(secret[:32])
    if bytes(signing.verify_key) != public:
        raise ConfigError("OpenSSH key: public half does not match the private seed")
    return signing


def _key_from_raw(data: bytes) -> nacl.signing.SigningKey:
    stripped = data.strip()
    candidate = data
    try:
        text = stripped.decode("ascii")
        if text and all(c in "0123456789abcdefABCDEF" for c in text) and len(text) in (64, 128):
            candidate = bytes.fromhex(text)
    except UnicodeDecodeError:
        pass
    if len(candidate) == 32:
        return nacl.signing.SigningKey(candidate)
    if len(candidate) == 64:
        signing = nacl.signing.SigningKey(candidate[:32])
        if bytes(signing.verify_key) != candidate[32:]:
            raise ConfigError("64-byte key: the second half is not the seed's public key")
        return signing
    raise ConfigError(
        "unrecognised key file: expected an OpenSSH ed25519 private key, "
        "or a 32-byte Ed25519 seed (binary or 64 hex characters)"
    )


def load_identity_key(path: str | Path) -> nacl.signing.SigningKey:
    """Read the server identity for --key (OpenSSH ed25519, or raw seed in binary/hex)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read key file {path}: {exc.strerror or exc}") from None
    if _OPENSSH_BEGIN in data:
        return parse_openssh_private_key(data)
    return _key_from_raw(data)


def _public_from_ssh_blob(token: str) -> bytes:
    try:
        blob = base64.b64decode(token, validate=True)
    except binascii.Error as exc:
        raise ConfigError(f"bad base64: {exc}") from None
    reader = _Reader(blob)
    if reader.string() != b"ssh-ed25519":
        raise ConfigError("key blob is not ssh-ed25519")
    public = reader.string()
    if len(public) != 32:
        raise ConfigError("ssh-ed25519 public key must be 32 bytes")
    return public


def load_client_keys(path: str | Path) -> frozenset[bytes]:
    """Read the --client-keys allow-list: ``ssh-ed25519 AAAA...`` lines or 64-hex lines; # comments."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read client keys file {path}: {exc}") from None
    keys: set[bytes] = set()
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        tokens = line.split()
        try:
            if "ssh-ed25519" in tokens:
                index = tokens.index("ssh-ed25519")
                if index + 1 >= len(tokens):
                    raise ConfigError("ssh-ed25519 without key data")
                keys.add(_public_from_ssh_blob(tokens[index + 1]))
            elif len(tokens[0]) == 64:
                keys.add(bytes.fromhex(tokens[0]))
            else:
                raise ConfigError("expected 'ssh-ed25519 AAAA...' or 64 hex characters")
        except (ConfigError, ValueError) as exc:
            raise ConfigError(f"{path}:{number}: {exc}") from None
    if not keys:
        raise ConfigError(f"{path}: no client keys found")
    return frozenset(keys)


def openssh_public_line(verify_key: nacl.signing.VerifyKey | bytes, comment: str = "") -> str:
    """``ssh-ed25519 AAAA... comment`` for a public key (what clients pin with --server-key)."""
    public = bytes(verify_key)
    blob = struct.pack(">I", 11) + b"ssh-ed25519" + struct.pack(">I", 32) + public
    line = "ssh-ed25519 " + base64.b64encode(blob).decode("ascii")
    return f"{line} {comment}".rstrip()
