"""ACIP cryptography on PyNaCl: password key, X25519 session keys (c41 and HEAD variants), HMACs, signatures."""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass

import nacl.bindings as nb
import nacl.exceptions
import nacl.pwhash
from nacl.signing import SigningKey, VerifyKey

from .constants import KEY_SIZE
from .errors import ProtocolError
from .payloads import KeyExchangeInit

# c41 copies "ascii-chat-password-salt-v1" into a zero-padded buffer but crypto_pwhash reads only
# crypto_pwhash_SALTBYTES (16) of it, so this is the salt actually in effect (ACIP.md 3.3.1).
PASSWORD_SALT = b"ascii-chat-passw"
# crypto_validate_password: the C client and server refuse anything outside 8..256 bytes.
MIN_PASSWORD_BYTES = 8
MAX_PASSWORD_BYTES = 256

# "c41": crypto_box_beforenm (HSalsa20 of X25519); "head": raw X25519 output (commit 38b17dc19).
KEY_VARIANTS = ("c41", "head")
# c41 writes the nonce counter little-endian, HEAD big-endian; receivers read the nonce as given.
COUNTER_BYTEORDER = {"c41": "little", "head": "big"}


class DecryptionFailed(ProtocolError):
    """An ENCRYPTED payload did not authenticate under the key tried."""


def derive_password_key(password: str) -> bytes:
    """Argon2id13 (ops 2, mem 64 MiB) → 32 bytes. Takes ~0.1-0.3 s: call once at start-up, not per client."""
    raw = password.encode("utf-8")
    if not MIN_PASSWORD_BYTES <= len(raw) <= MAX_PASSWORD_BYTES:
        raise ValueError(
            f"password must be {MIN_PASSWORD_BYTES}..{MAX_PASSWORD_BYTES} bytes (ascii-chat refuses others)"
        )
    return nacl.pwhash.argon2id.kdf(
        KEY_SIZE,
        raw,
        PASSWORD_SALT,
        opslimit=nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE,
        memlimit=nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE,
    )


@dataclass(frozen=True)
class KeyPair:
    """An X25519 key pair (ephemeral, one per connection and per rekey)."""

    secret_key: bytes
    public_key: bytes

    @classmethod
    def generate(cls) -> KeyPair:
        return cls.from_secret(os.urandom(KEY_SIZE))

    @classmethod
    def from_secret(cls, secret_key: bytes) -> KeyPair:
        return cls(bytes(secret_key), nb.crypto_scalarmult_base(bytes(secret_key)))


def session_key(own_secret: bytes, peer_public: bytes, variant: str) -> bytes:
    """The 32-byte secretbox key of one revision's rule; a degenerate peer key is a ProtocolError."""
    if len(peer_public) != KEY_SIZE:
        raise ProtocolError(f"X25519 public key must be 32 bytes, got {len(peer_public)}")
    try:
        if variant == "c41":
            return nb.crypto_box_beforenm(bytes(peer_public), bytes(own_secret))
        if variant == "head":
            return nb.crypto_scalarmult(bytes(own_secret), bytes(peer_public))
    except nacl.exceptions.RuntimeError:
        # libsodium refuses low-order points (all-zero shared secret).
        raise ProtocolError("peer sent a degenerate X25519 public key") from None
    raise ValueError(f"unknown key variant {variant!r}")


def session_key_candidates(own_secret: bytes, peer_public: bytes) -> dict[str, bytes]:
    """Both revisions' session keys; the peer's revision is detected later."""
    return {variant: session_key(own_secret, peer_public, variant) for variant in KEY_VARIANTS}


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def client_auth_hmac(password_key: bytes, server_nonce: bytes, key: bytes) -> bytes:
    """AUTH_RESPONSE password form: HMAC-SHA256(password_key, N_s ‖ session_key)."""
    return hmac_sha256(password_key, server_nonce + key)


def server_auth_hmac(password_key: bytes | None, client_nonce: bytes, key: bytes) -> bytes:
    """SERVER_AUTH_RESP: HMAC-SHA256(password_key or, without a password, session_key, N_c ‖ session_key)."""
    return hmac_sha256(password_key if password_key is not None else key, client_nonce + key)


def match_password_variant(
    password_key: bytes, server_nonce: bytes, received: bytes, candidates: dict[str, bytes]
) -> str | None:
    """Which candidate session key the client's password HMAC was computed with, or None."""
    for variant, key in candidates.items():
        if hmac.compare_digest(client_auth_hmac(password_key, server_nonce, key), received):
            return variant
    return None


def verify_signature(public_key: bytes | None, message: bytes, signature: bytes | None) -> bool:
    """Ed25519 detached signature check; False for missing or malformed input."""
    if public_key is None or signature is None or len(public_key) != 32 or len(signature) != 64:
        return False
    try:
        VerifyKey(bytes(public_key)).verify(bytes(message), bytes(signature))
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.CryptoError, ValueError, TypeError):
        return False
    return True


def signed_key_exchange_init(ephemeral_public: bytes, identity: SigningKey) -> KeyExchangeInit:
    """The 128-byte KEY_EXCHANGE_INIT: pk ‖ identity pk ‖ Ed25519 signature over exactly the 32 pk bytes."""
    signature = identity.sign(bytes(ephemeral_public)).signature
    return KeyExchangeInit(bytes(ephemeral_public), bytes(identity.verify_key), signature)
