"""Sans-I/O ACIP connections: the handshake state machines of both roles over one framing and crypto core.

Bytes in (receive_data / receive_message), events out, application packets via send(), wire packets via
data_to_send(). No sockets, no event loop, no clock: timeouts and closing belong to the caller."""

from __future__ import annotations

import hmac
import os
from collections import deque
from dataclasses import dataclass
from enum import Enum, auto
from typing import Literal

from nacl.signing import SigningKey

from .constants import (
    AUTH_NONCE_SIZE,
    ENCRYPTED_OVERHEAD,
    HANDSHAKE_TYPES,
    HEADER_SIZE,
    HMAC_SIZE,
    KEY_SIZE,
    MAX_ENCRYPTED_PLAINTEXT,
    MAX_PAYLOAD,
    AuthFailure,
    AuthRequirement,
    CryptoMode,
    ErrorCode,
    PacketType,
    packet_type_name,
)
from .crypto import (
    KEY_VARIANTS,
    KeyPair,
    client_auth_hmac,
    derive_password_key,
    match_password_variant,
    server_auth_hmac,
    session_key,
    session_key_candidates,
    signed_key_exchange_init,
    verify_signature,
)
from .errors import ProtocolError
from .events import AuthRejected, Event, HandshakeComplete, PacketReceived
from .packets import Packet, PacketDecoder, decode_packet, encode_packet
from .payloads import (
    AuthChallenge,
    AuthFailed,
    ClientHello,
    CryptoCapabilities,
    CryptoParameters,
    ErrorMessage,
    KeyAuthResponse,
    KeyExchangeInit,
    KeyExchangeResp,
    PasswordAuthResponse,
    ProtocolVersion,
    RekeyKey,
    ServerAuthResp,
)
from .session import EncryptedSession

Transport = Literal["tcp", "ws"]

# Before a TCP session is established only handshake packets (≤ 169 bytes) or the first
# CLIENT_CAPABILITIES (168) are valid; c41's handshake validator allows CRYPTO_* up to 64 KiB. An
# unauthenticated peer therefore cannot make us buffer a 5 MiB payload.
HANDSHAKE_MAX_PAYLOAD = 65536
# c41 senders can put another thread's packet between a header and its payload; one level of that
# (two for safety) is undone by the decoder instead of killing the session.
MAX_INTERLEAVED_PACKETS = 2

# Application packets sent before the session key is confirmed wait in memory; a peer that never
# confirms must not make us hold a whole video stream, so only the newest ones are kept.
MAX_HELD_PACKETS = 64


class ConnectionState(Enum):
    HANDSHAKE = auto()
    OPEN = auto()
    CLOSED = auto()
    ERROR = auto()


@dataclass
class ServerSecurity:
    """Server-side crypto configuration. `password_key` comes from crypto.derive_password_key (once).

    `client_keys` is the Ed25519 allow-list (None = no list). `signature_auth_variant` is the key
    variant assumed for allow-list clients without a password, whose revision cannot be detected in time.
    """

    encrypt: bool = True
    identity: SigningKey | None = None
    password_key: bytes | None = None
    client_keys: frozenset[bytes] | None = None
    signature_auth_variant: str = "c41"

    def __post_init__(self) -> None:
        if self.signature_auth_variant not in KEY_VARIANTS:
            raise ValueError(f"signature_auth_variant must be one of {KEY_VARIANTS}")
        if self.password_key is not None and len(self.password_key) != KEY_SIZE:
            raise ValueError("password_key must be the 32-byte Argon2id output of derive_password_key")
        if not self.encrypt and (self.password_key is not None or self.client_keys is not None):
            raise ValueError("a password or a client-key list needs encryption (the handshake carries them)")
        if self.client_keys is not None:
            self.client_keys = frozenset(bytes(k) for k in self.client_keys)
            if any(len(k) != KEY_SIZE for k in self.client_keys):
                raise ValueError("client_keys must be 32-byte Ed25519 public keys")

    @property
    def auth_required(self) -> bool:
        return self.password_key is not None or self.client_keys is not None


@dataclass
class ClientSecurity:
    """Client-side crypto configuration.

    Give `password` (derived here with Argon2id, ~0.2 s) or an already derived `password_key`.
    `server_key` pins the server's Ed25519 identity (and is sent as CRYPTO_CLIENT_HELLO);
    `identity` is our Ed25519 key; `key_variant` picks the revision we behave as ("c41" | "head").
    """

    encrypt: bool = True
    password: str | None = None
    server_key: bytes | None = None
    identity: SigningKey | None = None
    key_variant: str = "c41"
    password_key: bytes | None = None

    def __post_init__(self) -> None:
        if self.key_variant not in KEY_VARIANTS:
            raise ValueError(f"key_variant must be one of {KEY_VARIANTS}")
        if self.password is not None and self.password_key is None:
            self.password_key = derive_password_key(self.password)
        if self.server_key is not None and len(self.server_key) != KEY_SIZE:
            raise ValueError("server_key must be a 32-byte Ed25519 public key")


class _Stage(Enum):
    # server
    AWAIT_FIRST = auto()
    AWAIT_CRYPTO_CAPABILITIES = auto()
    AWAIT_KEY_EXCHANGE_RESP = auto()
    AWAIT_AUTH_RESPONSE = auto()
    AWAIT_KEY_CONFIRM = auto()  # HANDSHAKE_COMPLETE sent, key variant learnt from the first ENCRYPTED
    # client
    AWAIT_PROTOCOL_VERSION = auto()
    AWAIT_PARAMETERS = auto()
    AWAIT_KEY_EXCHANGE_INIT = auto()
    AWAIT_AUTH = auto()
    AWAIT_SERVER_AUTH = auto()
    DONE = auto()


class _Rejected(Exception):
    """Internal: authentication refused with these AuthFailure flags."""

    def __init__(self, flags: int) -> None:
        super().__init__(flags)
        self.flags = flags


class _Connection:
    """What both roles share: framing, the ERROR/CLOSED rules, the outbox and the encrypted session."""

    def __init__(self, transport: Transport) -> None:
        if transport not in ("tcp", "ws"):
            raise ValueError(f"transport must be 'tcp' or 'ws', not {transport!r}")
        self.transport: Transport = transport
        self.state = ConnectionState.HANDSHAKE
        self._stage = _Stage.DONE
        self._decoder = PacketDecoder(max_interleaved=MAX_INTERLEAVED_PACKETS)
        self._outbox: list[bytes] = []
        self._pending_events: list[Event] = []
        self._held: deque[tuple[int, bytes]] = deque(maxlen=MAX_HELD_PACKETS)
        self._session: EncryptedSession | None = None
        self._failed = False
        self.peer_identity: bytes | None = None
        self.error: ProtocolError | None = None
        # Application packets sent before OPEN that never went out (queue overflow or too big to encrypt).
        self.held_dropped = 0

    # --- public surface -------------------------------------------------------------------------

    @property
    def encrypted(self) -> bool:
        """True once application packets travel inside ENCRYPTED."""
        return self._session is not None

    @property
    def key_variant(self) -> str | None:
        return self._session.variant if self._session is not None else None

    @property
    def rekeys(self) -> int:
        return self._session.rekeys if self._session is not None else 0

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed a chunk of a TCP stream (any size, one byte works)."""
        if not self._accepting():
            return []
        try:
            self._decoder.append(data)
            events, self._pending_events = self._pending_events, []
            while self.state is not ConnectionState.CLOSED:  # after AUTH_FAILED whatever follows is moot
                # The limit depends on the state, which each packet may change.
                self._decoder.max_payload = self._payload_limit()
                packet = next(self._decoder, None)
                if packet is None:
                    break
                events += self._handle(packet)
            return events
        except ProtocolError as exc:
            self._enter_error(exc)
            raise

    def receive_message(self, msg: bytes) -> list[Event]:
        """Feed one WebSocket message, which must be exactly one packet."""
        if not self._accepting():
            return []
        try:
            events, self._pending_events = self._pending_events, []
            return events + self._handle(decode_packet(msg, self._payload_limit()))
        except ProtocolError as exc:
            self._enter_error(exc)
            raise

    def send(self, ptype: int, payload: bytes = b"") -> None:
        """Queue an application packet; held until the session key is confirmed, dropped after ERROR/CLOSED."""
        if ptype in HANDSHAKE_TYPES or ptype == PacketType.ENCRYPTED:
            raise ValueError(f"{packet_type_name(ptype)} is managed by the connection, not sent by the application")
        if self.state in (ConnectionState.ERROR, ConnectionState.CLOSED):
            return
        # While we answer a rekey the peer switches keys as soon as it reads our REKEY_RESPONSE, so
        # nothing may be sealed under the old key until its REKEY_COMPLETE arrives.
        rekeying = self._session is not None and self._session.responding_rekey
        if self.state is ConnectionState.HANDSHAKE or rekeying:
            if len(payload) > MAX_PAYLOAD:
                raise ValueError(f"{packet_type_name(ptype)} of {len(payload)} bytes exceeds the ACIP limit")
            if len(self._held) == self._held.maxlen:
                self.held_dropped += 1
            self._held.append((ptype, bytes(payload)))
            return
        self._outbox.append(self._wire(ptype, payload))

    def data_to_send(self) -> list[bytes]:
        """Drain queued wire packets; each item is exactly one packet (one WebSocket message)."""
        out, self._outbox = self._outbox, []
        return out

    def fail(self, reason: str, code: int = ErrorCode.NETWORK_PROTOCOL) -> None:
        """Queue ERROR_MESSAGE(code, reason), encrypted when a session key exists; state becomes ERROR."""
        if self._failed or self.state is ConnectionState.CLOSED:
            return
        self._failed = True
        payload = ErrorMessage(int(code), reason).encode()
        if self._session is not None:
            self._outbox.append(self._session.seal(PacketType.ERROR_MESSAGE, payload))
        else:
            self._outbox.append(encode_packet(PacketType.ERROR_MESSAGE, payload))
        self.state = ConnectionState.ERROR
        self._held.clear()

    # --- shared machinery -----------------------------------------------------------------------

    def _accepting(self) -> bool:
        if self.state is ConnectionState.ERROR:
            reason = self.error.reason if self.error else "connection failed"
            raise ProtocolError(f"connection already failed: {reason}")
        return self.state is not ConnectionState.CLOSED

    def _enter_error(self, exc: ProtocolError) -> None:
        self.state = ConnectionState.ERROR
        self.error = exc
        self._held.clear()

    def _payload_limit(self) -> int:
        if self._session is not None:
            return MAX_ENCRYPTED_PLAINTEXT + ENCRYPTED_OVERHEAD  # nothing bigger can be valid any more
        if self.state is ConnectionState.OPEN or self.transport == "ws":
            return MAX_PAYLOAD  # WS peers may send frames before their handshake ends
        return HANDSHAKE_MAX_PAYLOAD

    def _queue(self, ptype: int, payload: bytes = b"") -> None:
        """A handshake packet: always plaintext."""
        self._outbox.append(encode_packet(ptype, payload))

    def _wire(self, ptype: int, payload: bytes) -> bytes:
        if self._session is None:
            return encode_packet(ptype, payload)
        if len(payload) + HEADER_SIZE > MAX_ENCRYPTED_PLAINTEXT:
            raise ValueError(f"{packet_type_name(ptype)} of {len(payload)} bytes is too large to encrypt")
        return self._session.seal(ptype, payload)

    def _open(self, identity: bytes | None) -> list[Event]:
        self.state = ConnectionState.OPEN
        self._stage = _Stage.DONE
        self.peer_identity = identity
        self._flush_held()
        return [HandshakeComplete(self.encrypted, self.key_variant, identity)]

    def _flush_held(self) -> None:
        held = list(self._held)
        self._held.clear()
        for ptype, payload in held:
            if self._session is not None and len(payload) + HEADER_SIZE > MAX_ENCRYPTED_PLAINTEXT:
                self.held_dropped += 1  # queued before we knew the session would be encrypted
                continue
            self._outbox.append(self._wire(ptype, payload))

    def _handle(self, packet: Packet) -> list[Event]:
        if self._session is not None:
            return self._handle_encrypted_session(packet)
        if self.state is ConnectionState.OPEN:
            if packet.type in HANDSHAKE_TYPES or packet.type == PacketType.ENCRYPTED:
                raise ProtocolError(f"unexpected {packet_type_name(packet.type)} in a plaintext session")
            return [PacketReceived(packet)]
        return self._handshake(packet)

    def _handle_encrypted_session(self, packet: Packet) -> list[Event]:
        session = self._session
        assert session is not None
        if packet.type == PacketType.ENCRYPTED:
            was_locked = session.locked
            inner = session.open(packet.payload)
            events: list[Event] = []
            if not was_locked and self.state is ConnectionState.HANDSHAKE:
                events += self._open(self.peer_identity)
            if inner.type in HANDSHAKE_TYPES:
                raise ProtocolError(f"handshake packet {packet_type_name(inner.type)} inside ENCRYPTED")
            events.append(PacketReceived(inner))
            return events
        if packet.type == PacketType.CRYPTO_REKEY_REQUEST:
            self._outbox.append(session.respond_rekey(RekeyKey.decode(packet.payload).public_key))
            return []
        if packet.type == PacketType.CRYPTO_REKEY_COMPLETE:
            session.complete_rekey(packet.payload)
            if self.state is ConnectionState.HANDSHAKE and session.locked:
                return self._open(self.peer_identity)  # the rekey itself revealed the key variant
            self._flush_held()  # what the application sent meanwhile, now under the new key
            return []
        if packet.type == PacketType.CRYPTO_REKEY_RESPONSE:
            return self._on_rekey_response(packet)
        if self._plaintext_allowed_before_key(packet):
            return [PacketReceived(packet)]
        raise ProtocolError(f"plaintext {packet_type_name(packet.type)} after the encrypted handshake")

    def _plaintext_allowed_before_key(self, packet: Packet) -> bool:
        return False

    def _on_rekey_response(self, packet: Packet) -> list[Event]:
        raise ProtocolError("CRYPTO_REKEY_RESPONSE without a rekey request of ours")

    def _handshake(self, packet: Packet) -> list[Event]:  # pragma: no cover - overridden
        raise NotImplementedError


class ServerConnection(_Connection):
    """The server role. TCP: the client speaks first. WebSocket: call start(), the server speaks first."""

    def __init__(self, security: ServerSecurity, transport: Transport = "tcp") -> None:
        super().__init__(transport)
        self.security = security
        self._stage = _Stage.AWAIT_FIRST
        self._mode = CryptoMode.ENCRYPT
        self._keypair: KeyPair | None = None
        self._candidates: dict[str, bytes] = {}
        self._challenge = b""
        self._client_identity: bytes | None = None
        self._client_signature_ok = False
        self._started = False

    @property
    def client_identity(self) -> bytes | None:
        return self.peer_identity

    def start(self) -> None:
        """WebSocket: queue CRYPTO_PARAMETERS + KEY_EXCHANGE_INIT (or open a plaintext-WS session). TCP: no-op."""
        if self._started:
            return
        self._started = True
        if self.transport == "tcp":
            return
        if not self.security.encrypt:
            # Plaintext WS: never offer a key exchange (the c41 native WS client cannot survive one).
            self._pending_events += self._open(None)
            return
        # c41 browsers accept only the 32-byte KEY_EXCHANGE_INIT, so WS never presents the identity.
        self._queue(
            PacketType.CRYPTO_PARAMETERS,
            CryptoParameters.for_server(
                identity=False, encrypt=True, verification=self.security.client_keys is not None
            ).encode(),
        )
        self._send_key_exchange_init(signed=False)

    # --- handshake ------------------------------------------------------------------------------

    def _handshake(self, packet: Packet) -> list[Event]:
        ptype, stage = packet.type, self._stage
        try:
            if ptype == PacketType.CRYPTO_NO_ENCRYPTION:
                raise _Rejected(AuthFailure.NONE)
            if ptype == PacketType.CRYPTO_CLIENT_HELLO and stage in (
                _Stage.AWAIT_CRYPTO_CAPABILITIES,
                _Stage.AWAIT_KEY_EXCHANGE_RESP,
            ):
                self._on_client_hello(packet.payload)
                return []
            if stage is _Stage.AWAIT_FIRST and self.transport == "tcp":
                if ptype == PacketType.PROTOCOL_VERSION:
                    return self._on_protocol_version(packet.payload)
                if ptype == PacketType.CLIENT_CAPABILITIES:
                    return self._on_plaintext_client(packet)
                raise ProtocolError(
                    f"expected PROTOCOL_VERSION or CLIENT_CAPABILITIES first, got {packet_type_name(ptype)}"
                )
            if stage is _Stage.AWAIT_CRYPTO_CAPABILITIES and ptype == PacketType.CRYPTO_CAPABILITIES:
                return self._on_crypto_capabilities(packet.payload)
            if stage is _Stage.AWAIT_KEY_EXCHANGE_RESP and ptype == PacketType.CRYPTO_KEY_EXCHANGE_RESP:
                return self._on_key_exchange_resp(packet.payload)
            if stage is _Stage.AWAIT_AUTH_RESPONSE and ptype == PacketType.CRYPTO_AUTH_RESPONSE:
                return self._on_auth_response(packet.payload)
        except _Rejected as rejected:
            return self._reject(rejected.flags)
        if self.transport == "ws" and ptype not in HANDSHAKE_TYPES and ptype != PacketType.ENCRYPTED:
            if self.security.auth_required:
                # A password or client-key room admits nothing from a peer that has not authenticated.
                raise ProtocolError(f"{packet_type_name(ptype)} before the WebSocket handshake authenticated")
            # ACIP.md 6.3: with no authentication required, a WS peer may send application packets
            # before the handshake finishes (the c41 server dispatches them).
            return [PacketReceived(packet)]
        if stage is _Stage.AWAIT_FIRST:
            raise ProtocolError(f"{packet_type_name(ptype)} before the server started the WebSocket handshake")
        raise ProtocolError(f"unexpected {packet_type_name(ptype)} during the handshake ({stage.name.lower()})")

    def _reject(self, flags: int) -> list[Event]:
        self._queue(PacketType.CRYPTO_AUTH_FAILED, AuthFailed(int(flags)).encode())
        self.state = ConnectionState.CLOSED
        self._held.clear()
        return [AuthRejected(int(flags))]

    def _on_plaintext_client(self, packet: Packet) -> list[Event]:
        if self.security.auth_required:
            flags = AuthFailure.NONE
            if self.security.password_key is not None:
                flags |= AuthFailure.PASSWORD_REQUIRED
            if self.security.client_keys is not None:
                flags |= AuthFailure.CLIENT_KEY_REQUIRED
            raise _Rejected(flags)
        return [*self._open(None), PacketReceived(packet)]

    def _on_protocol_version(self, payload: bytes) -> list[Event]:
        version = ProtocolVersion.decode(payload)
        if not self.security.encrypt:
            raise ProtocolError("this server runs without encryption: send CLIENT_CAPABILITIES first")
        mode = version.supports_encryption
        if mode == CryptoMode.NONE or mode & ~int(CryptoMode.FULL) & 0xFF:
            raise ProtocolError(f"PROTOCOL_VERSION announces unusable crypto mode 0x{mode:02x}")
        self._mode = CryptoMode(mode)
        # The c41/HEAD client aborts unless its own mode byte comes back unchanged.
        self._queue(PacketType.PROTOCOL_VERSION, ProtocolVersion(supports_encryption=mode).encode())
        self._stage = _Stage.AWAIT_CRYPTO_CAPABILITIES
        return []

    def _on_crypto_capabilities(self, payload: bytes) -> list[Event]:
        CryptoCapabilities.decode(payload)  # the C server checks only the size; so do we
        identity = self.security.identity is not None
        self._queue(
            PacketType.CRYPTO_PARAMETERS,
            CryptoParameters.for_server(
                identity=identity,
                encrypt=bool(self._mode & CryptoMode.ENCRYPT),
                verification=self.security.client_keys is not None,
            ).encode(),
        )
        # Sent at once, without waiting for an optional CLIENT_HELLO (the c41 server deadlocks there).
        self._send_key_exchange_init(signed=identity)
        return []

    def _send_key_exchange_init(self, *, signed: bool) -> None:
        self._keypair = KeyPair.generate()
        if signed and self.security.identity is not None:
            init = signed_key_exchange_init(self._keypair.public_key, self.security.identity)
        else:
            init = KeyExchangeInit(self._keypair.public_key)
        self._queue(PacketType.CRYPTO_KEY_EXCHANGE_INIT, init.encode())
        self._stage = _Stage.AWAIT_KEY_EXCHANGE_RESP

    def _on_client_hello(self, payload: bytes) -> None:
        expected = ClientHello.decode(payload).expected_server_key
        ours = bytes(self.security.identity.verify_key) if self.security.identity is not None else None
        if expected != ours:
            raise ProtocolError(f"CRYPTO_CLIENT_HELLO expects server key {expected.hex()[:16]}…, which we do not hold")

    def _on_key_exchange_resp(self, payload: bytes) -> list[Event]:
        assert self._keypair is not None
        resp = KeyExchangeResp.decode(payload)
        self._candidates = session_key_candidates(self._keypair.secret_key, resp.public_key)
        self._client_identity = resp.identity_key
        self._client_signature_ok = verify_signature(resp.identity_key, resp.public_key, resp.signature)
        if not self.security.auth_required:
            self._queue(PacketType.CRYPTO_HANDSHAKE_COMPLETE)
            verified = self._client_identity if self._client_signature_ok else None
            return self._begin_session(None, verified)
        flags = AuthRequirement.NONE
        if self.security.password_key is not None:
            flags |= AuthRequirement.PASSWORD
        if self.security.client_keys is not None:
            flags |= AuthRequirement.CLIENT_KEY
        self._challenge = os.urandom(AUTH_NONCE_SIZE)
        self._queue(PacketType.CRYPTO_AUTH_CHALLENGE, AuthChallenge(int(flags), self._challenge).encode())
        self._stage = _Stage.AWAIT_AUTH_RESPONSE
        return []

    def _on_auth_response(self, payload: bytes) -> list[Event]:
        sec = self.security
        key_list_flag = AuthFailure.CLIENT_KEY_REQUIRED if sec.client_keys is not None else AuthFailure.NONE
        variant: str | None = None
        client_nonce = b""
        if sec.password_key is not None:
            if len(payload) != HMAC_SIZE + AUTH_NONCE_SIZE:
                raise _Rejected(AuthFailure.PASSWORD_REQUIRED | key_list_flag)
            response = PasswordAuthResponse.decode(payload)
            # The HMAC covers the session key, so it also tells which revision the client runs.
            variant = match_password_variant(sec.password_key, self._challenge, response.hmac, self._candidates)
            if variant is None:
                raise _Rejected(AuthFailure.PASSWORD_INCORRECT | key_list_flag)
            client_nonce = response.client_nonce
        if sec.client_keys is not None:
            identity = self._client_identity
            if identity is None:
                raise _Rejected(AuthFailure.CLIENT_KEY_REQUIRED)
            if identity not in sec.client_keys:
                raise _Rejected(AuthFailure.CLIENT_KEY_REJECTED)
            if not self._client_signature_ok:
                raise _Rejected(AuthFailure.SIGNATURE_INVALID)
            if sec.password_key is None:
                if len(payload) < AUTH_NONCE_SIZE:
                    raise _Rejected(AuthFailure.CLIENT_KEY_REQUIRED)
                key_response = KeyAuthResponse.decode(payload)
                if key_response.signature is None:
                    # What a c41 client sends when CRYPTO_PARAMETERS announced signature_size 0 (we have no
                    # identity). Its KEY_EXCHANGE_RESP signature (checked above) binds the listed key to its
                    # ephemeral key, and only that key's owner can produce ENCRYPTED packets in this session;
                    # without encryption that proof is missing, so refuse.
                    if not self._mode & CryptoMode.ENCRYPT:
                        raise _Rejected(AuthFailure.SIGNATURE_INVALID)
                elif not verify_signature(identity, self._challenge, key_response.signature):
                    raise _Rejected(AuthFailure.SIGNATURE_INVALID)
                client_nonce = key_response.client_nonce
                # Nothing the client sent depends on the key variant: use the configured one.
                variant = sec.signature_auth_variant
        assert variant is not None
        key = self._candidates[variant]
        self._queue(
            PacketType.CRYPTO_SERVER_AUTH_RESP,
            ServerAuthResp(server_auth_hmac(sec.password_key, client_nonce, key)).encode(),
        )
        verified = self._client_identity if self._client_signature_ok else None
        return self._begin_session(variant, verified)

    def _begin_session(self, variant: str | None, identity: bytes | None) -> list[Event]:
        if not self._mode & CryptoMode.ENCRYPT:
            return self._open(identity)  # AUTH-only mode: authenticated, then plaintext
        self._session = EncryptedSession(
            self._candidates,
            variant=variant,
            fallback_variant=self.security.signature_auth_variant,
            send_byteorder="little",  # as c41 writes its counters
        )
        self.peer_identity = identity
        if variant is not None:
            return self._open(identity)
        self._stage = _Stage.AWAIT_KEY_CONFIRM
        return []

    def _plaintext_allowed_before_key(self, packet: Packet) -> bool:
        # WS: the C server does not enforce encryption before the handshake ends; accept in-flight
        # plaintext until the first ENCRYPTED packet confirms the key.
        return (
            self.transport == "ws"
            and self.state is ConnectionState.HANDSHAKE
            and packet.type not in HANDSHAKE_TYPES
            and not (self._session is not None and self._session.locked)
        )

    def _on_rekey_response(self, packet: Packet) -> list[Event]:
        raise ProtocolError("CRYPTO_REKEY_RESPONSE sent to a server, which never starts a rekey")


class ClientConnection(_Connection):
    """The client role: TCP sends PROTOCOL_VERSION first (or opens plaintext); WS waits for the server."""

    def __init__(self, security: ClientSecurity, transport: Transport = "tcp") -> None:
        super().__init__(transport)
        self.security = security
        self._mode = CryptoMode.ENCRYPT
        if security.password_key is not None or security.identity is not None:
            self._mode |= CryptoMode.AUTH
        self._params: CryptoParameters | None = None
        self._key = b""
        self._client_nonce = b""
        self._server_identity: bytes | None = None
        self._started = False

    @property
    def server_identity(self) -> bytes | None:
        return self.peer_identity

    def start(self) -> None:
        """TCP: queue PROTOCOL_VERSION. Without encryption the session is OPEN at once (CLIENT_CAPABILITIES next)."""
        if self._started:
            return
        self._started = True
        if not self.security.encrypt:
            self._pending_events += self._open(None)
            return
        if self.transport == "tcp":
            self._queue(PacketType.PROTOCOL_VERSION, ProtocolVersion(supports_encryption=int(self._mode)).encode())
            self._stage = _Stage.AWAIT_PROTOCOL_VERSION
        else:
            self._stage = _Stage.AWAIT_PARAMETERS

    def start_rekey(self) -> None:
        """Begin a client-initiated rekey (REKEY_REQUEST); the switch happens when REKEY_RESPONSE arrives."""
        if self._session is None or self.state is not ConnectionState.OPEN:
            raise ValueError("rekeying needs an open encrypted session")
        self._outbox.append(self._session.start_rekey())

    def _on_rekey_response(self, packet: Packet) -> list[Event]:
        assert self._session is not None
        self._outbox.append(self._session.finish_rekey(RekeyKey.decode(packet.payload).public_key))
        return []

    def _handshake(self, packet: Packet) -> list[Event]:
        ptype, stage = packet.type, self._stage
        if not self._started:
            raise ProtocolError(f"{packet_type_name(ptype)} received before start()")
        if ptype == PacketType.CRYPTO_AUTH_FAILED:
            flags = AuthFailed.decode(packet.payload).reason_flags
            self.state = ConnectionState.CLOSED
            self._held.clear()
            return [AuthRejected(flags)]
        if stage is _Stage.AWAIT_PROTOCOL_VERSION and ptype == PacketType.PROTOCOL_VERSION:
            reply = ProtocolVersion.decode(packet.payload)
            if reply.supports_encryption != int(self._mode):
                raise ProtocolError(
                    f"server answered crypto mode 0x{reply.supports_encryption:02x}, we sent 0x{int(self._mode):02x}"
                )
            preferred_auth = 1 if self._mode & CryptoMode.AUTH else 0
            self._queue(PacketType.CRYPTO_CAPABILITIES, CryptoCapabilities(preferred_auth=preferred_auth).encode())
            self._stage = _Stage.AWAIT_PARAMETERS
            return []
        if stage is _Stage.AWAIT_PARAMETERS and ptype == PacketType.CRYPTO_PARAMETERS:
            params = CryptoParameters.decode(packet.payload)
            if params.selected_kex != 1:
                raise ProtocolError(f"server selected key exchange {params.selected_kex}, only X25519 (1) exists")
            if params.selected_cipher != 1:
                raise ProtocolError(f"server selected cipher {params.selected_cipher}, we need XSalsa20-Poly1305 (1)")
            self._params = params
            if self.security.server_key is not None:
                self._queue(PacketType.CRYPTO_CLIENT_HELLO, ClientHello(self.security.server_key).encode())
            self._stage = _Stage.AWAIT_KEY_EXCHANGE_INIT
            return []
        if ptype == PacketType.CRYPTO_KEY_EXCHANGE_INIT and (
            stage is _Stage.AWAIT_KEY_EXCHANGE_INIT or (stage is _Stage.AWAIT_PARAMETERS and self.transport == "ws")
        ):
            return self._on_key_exchange_init(packet.payload)
        if stage is _Stage.AWAIT_AUTH and ptype == PacketType.CRYPTO_HANDSHAKE_COMPLETE:
            return self._begin_session()
        if stage is _Stage.AWAIT_AUTH and ptype == PacketType.CRYPTO_AUTH_CHALLENGE:
            return self._on_auth_challenge(packet.payload)
        if stage is _Stage.AWAIT_SERVER_AUTH and ptype == PacketType.CRYPTO_SERVER_AUTH_RESP:
            proof = ServerAuthResp.decode(packet.payload).hmac
            expected = server_auth_hmac(self.security.password_key, self._client_nonce, self._key)
            if not hmac.compare_digest(proof, expected):
                raise ProtocolError("server failed to prove it knows the password / session key")
            return self._begin_session()
        if ptype not in HANDSHAKE_TYPES and ptype != PacketType.ENCRYPTED:
            # ERROR_MESSAGE during the handshake, SERVER_STATE before a WS handshake: the app decides.
            return [PacketReceived(packet)]
        raise ProtocolError(f"unexpected {packet_type_name(ptype)} during the handshake ({stage.name.lower()})")

    def _on_key_exchange_init(self, payload: bytes) -> list[Event]:
        init = KeyExchangeInit.decode(payload)
        params = self._params
        if init.authenticated:
            if params is not None and (params.auth_public_key_size != 32 or params.signature_size != 64):
                raise ProtocolError("128-byte KEY_EXCHANGE_INIT although CRYPTO_PARAMETERS announced no identity")
            if not verify_signature(init.identity_key, init.public_key, init.signature):
                raise ProtocolError("server identity signature over its ephemeral key is invalid")
            self._server_identity = init.identity_key
        pin = self.security.server_key
        if pin is not None and self._server_identity != bytes(pin):
            if self._server_identity is None:
                raise ProtocolError("server presented no identity key but one is pinned (--server-key)")
            raise ProtocolError("server identity key does not match the pinned --server-key")
        keypair = KeyPair.generate()
        self._key = session_key(keypair.secret_key, init.public_key, self.security.key_variant)
        long_form = init.authenticated or (params is not None and params.verification_enabled)
        if long_form:
            identity = self.security.identity
            resp = KeyExchangeResp(
                keypair.public_key,
                bytes(identity.verify_key) if identity is not None else None,
                identity.sign(keypair.public_key).signature if identity is not None else None,
                authenticated=True,
            )
        else:
            resp = KeyExchangeResp(keypair.public_key)
        self._queue(PacketType.CRYPTO_KEY_EXCHANGE_RESP, resp.encode())
        self._stage = _Stage.AWAIT_AUTH
        return []

    def _on_auth_challenge(self, payload: bytes) -> list[Event]:
        challenge = AuthChallenge.decode(payload)
        sec = self.security
        self._client_nonce = os.urandom(AUTH_NONCE_SIZE)
        wants_password = bool(challenge.flags & AuthRequirement.PASSWORD)
        wants_key = bool(challenge.flags & AuthRequirement.CLIENT_KEY)
        # Same choice order as the C client: required password, required key, own password, own key.
        if wants_password and sec.password_key is None:
            raise ProtocolError("server requires a password and none was given")
        if wants_password or (not wants_key and sec.password_key is not None):
            assert sec.password_key is not None
            mac = client_auth_hmac(sec.password_key, challenge.nonce, self._key)
            response = PasswordAuthResponse(mac, self._client_nonce).encode()
        elif sec.identity is not None:
            signature = sec.identity.sign(challenge.nonce).signature
            response = KeyAuthResponse(signature, self._client_nonce).encode()
        else:
            raise ProtocolError("server requires a client key and none was given")
        self._queue(PacketType.CRYPTO_AUTH_RESPONSE, response)
        self._stage = _Stage.AWAIT_SERVER_AUTH
        return []

    def _begin_session(self) -> list[Event]:
        self._session = EncryptedSession({self.security.key_variant: self._key}, variant=self.security.key_variant)
        return self._open(self._server_identity)


__all__ = [
    "ClientConnection",
    "ClientSecurity",
    "ConnectionState",
    "ServerConnection",
    "ServerSecurity",
]
