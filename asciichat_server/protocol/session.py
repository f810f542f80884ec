"""The ENCRYPTED (1200) wrapper: per-direction ciphers, replay protection, key-variant detection, rekeying."""

from __future__ import annotations

import os
from typing import Literal

import nacl.exceptions
from nacl.secret import SecretBox

from .constants import (
    ENCRYPTED_OVERHEAD,
    HEADER_SIZE,
    MAX_ENCRYPTED_PLAINTEXT,
    NONCE_SIZE,
    SESSION_ID_SIZE,
    PacketType,
)
from .crypto import COUNTER_BYTEORDER, DecryptionFailed, KeyPair, session_key
from .errors import ProtocolError
from .packets import Packet, decode_packet, encode_packet

ByteOrder = Literal["little", "big"]

# A C sender uses one random session_id per key and direction; allowing a few covers senders that
# pick a fresh id more often without letting a peer grow our replay table without bound.
MAX_SESSION_IDS_PER_KEY = 8
# How far behind the highest counter a packet may arrive. The C senders reorder only the few packets
# in flight between their encrypt and write calls; 1024 is generous and bounds the memory per key.
REPLAY_WINDOW = 1024
# REKEY_COMPLETE at c41: nonce ‖ MAC ‖ secretbox of one 0x00 byte; HEAD sends the bare byte (bug).
REKEY_COMPLETE_SEALED_SIZE = NONCE_SIZE + 16 + 1
REKEY_COMPLETE_HEAD = b"\x00"


def _authenticates(key: bytes, sealed: bytes) -> bool:
    try:
        SecretBox(key).decrypt(bytes(sealed))
    except nacl.exceptions.CryptoError:
        return False
    return True


class SendCipher:
    """Seals outgoing inner packets: nonce = session_id(16) ‖ counter(8), counter from 1."""

    def __init__(self, key: bytes, counter_byteorder: ByteOrder = "little", session_id: bytes | None = None) -> None:
        self.key = bytes(key)
        self._box = SecretBox(self.key)
        self.byteorder = counter_byteorder
        self.session_id = session_id if session_id is not None else os.urandom(SESSION_ID_SIZE)
        self.counter = 0

    def next_nonce(self) -> bytes:
        self.counter += 1
        return self.session_id + self.counter.to_bytes(8, self.byteorder)

    def seal_raw(self, plaintext: bytes) -> bytes:
        """nonce ‖ MAC ‖ ciphertext of `plaintext`."""
        return bytes(self._box.encrypt(bytes(plaintext), self.next_nonce()))

    def seal(self, inner_packet: bytes) -> bytes:
        """A complete outer ENCRYPTED packet around one complete inner packet."""
        if len(inner_packet) > MAX_ENCRYPTED_PLAINTEXT:
            raise ValueError(
                f"inner packet of {len(inner_packet)} bytes exceeds the {MAX_ENCRYPTED_PLAINTEXT}-byte encryption limit"
            )
        return encode_packet(PacketType.ENCRYPTED, self.seal_raw(inner_packet))


class _CounterWindow:
    """Counters seen under one session_id: the highest, and the MACs of those within the window."""

    def __init__(self, byteorder: ByteOrder) -> None:
        self.byteorder: ByteOrder = byteorder
        self.highest = -1
        self._macs: dict[int, list[bytes]] = {}

    def check(self, counter: int, mac: bytes) -> None:
        if counter + REPLAY_WINDOW <= self.highest:
            raise ProtocolError(f"ENCRYPTED counter {counter} is older than the replay window (highest {self.highest})")
        macs = self._macs.setdefault(counter, [])
        if mac in macs:
            raise ProtocolError(f"replayed ENCRYPTED packet (counter {counter})")
        # A second, different packet under the same counter is authentic (it passed the MAC): the C
        # senders increment their counter without a lock. Only an identical packet is a replay.
        macs.append(mac)
        if counter > self.highest:
            self.highest = counter
            if len(self._macs) > 2 * REPLAY_WINDOW:
                self._macs = {c: m for c, m in self._macs.items() if c + REPLAY_WINDOW > counter}


class ReceiveCipher:
    """Opens ENCRYPTED payloads; rejects replays per session_id with a sliding window of counters.

    Both C peers encrypt outside their send lock, so their packets can arrive with counters slightly
    out of order (seen against the real c41 server); an exact replay or a counter older than the
    window is refused. The counter byte order is not announced (c41 little-endian, HEAD big-endian):
    counters start at 1, so the first nonce of a session_id is read in the order giving the smaller
    value, and that order is kept for the session_id.
    """

    def __init__(self, key: bytes) -> None:
        self.key = bytes(key)
        self._box = SecretBox(self.key)
        self._windows: dict[bytes, _CounterWindow] = {}

    def open_raw(self, payload: bytes) -> bytes:
        if len(payload) < ENCRYPTED_OVERHEAD:
            raise ProtocolError(f"ENCRYPTED payload of {len(payload)} bytes is shorter than nonce + MAC")
        try:
            plaintext = self._box.decrypt(bytes(payload))
        except nacl.exceptions.CryptoError:
            raise DecryptionFailed("ENCRYPTED packet failed MAC verification") from None
        self._check_counter(bytes(payload[:NONCE_SIZE]), bytes(payload[NONCE_SIZE:ENCRYPTED_OVERHEAD]))
        return plaintext

    def _check_counter(self, nonce: bytes, mac: bytes) -> None:
        session_id, raw = nonce[:SESSION_ID_SIZE], nonce[SESSION_ID_SIZE:]
        window = self._windows.get(session_id)
        if window is None:
            if len(self._windows) >= MAX_SESSION_IDS_PER_KEY:
                raise ProtocolError("peer used too many nonce session ids under one key")
            little, big = int.from_bytes(raw, "little"), int.from_bytes(raw, "big")
            window = self._windows[session_id] = _CounterWindow("little" if little <= big else "big")
        window.check(int.from_bytes(raw, window.byteorder), mac)

    def open(self, payload: bytes) -> Packet:
        """Decrypt and validate the inner packet (length, CRC, magic); nested ENCRYPTED is refused."""
        if len(payload) - ENCRYPTED_OVERHEAD > MAX_ENCRYPTED_PLAINTEXT:
            raise ProtocolError(
                f"ENCRYPTED payload of {len(payload)} bytes exceeds the {MAX_ENCRYPTED_PLAINTEXT}-byte plaintext limit"
            )
        plaintext = self.open_raw(payload)
        if len(plaintext) < HEADER_SIZE:
            raise ProtocolError(f"ENCRYPTED inner packet of {len(plaintext)} bytes has no complete header")
        try:
            inner = decode_packet(plaintext, MAX_ENCRYPTED_PLAINTEXT)
        except ProtocolError as exc:
            raise ProtocolError(f"inner packet: {exc.reason}") from None
        if inner.type == PacketType.ENCRYPTED:
            raise ProtocolError("ENCRYPTED packet nested inside ENCRYPTED")
        return inner


class EncryptedSession:
    """Both directions of one encrypted session, including key-variant detection and rekeying.

    Until `variant` is known the session holds a receive cipher per candidate key; the first
    ENCRYPTED packet that authenticates under one of them locks that variant for both directions.
    """

    def __init__(
        self,
        candidates: dict[str, bytes],
        *,
        variant: str | None = None,
        fallback_variant: str = "c41",
        send_byteorder: ByteOrder | None = None,
    ) -> None:
        if variant is not None:
            candidates = {variant: candidates[variant]}
        self._candidates = dict(candidates)
        self._receivers = {v: ReceiveCipher(k) for v, k in self._candidates.items()}
        self._fallback = fallback_variant if fallback_variant in self._candidates else next(iter(self._candidates))
        self._send_byteorder = send_byteorder
        self._sender: SendCipher | None = None
        self._old_receiver: ReceiveCipher | None = None
        self._rekey_keypair: KeyPair | None = None
        self._pending_keys: dict[str, bytes] | None = None
        self.variant: str | None = variant
        self.rekeys = 0

    @property
    def locked(self) -> bool:
        return self.variant is not None

    @property
    def key(self) -> bytes:
        return self._candidates[self.variant or self._fallback]

    def _byteorder(self) -> ByteOrder:
        return self._send_byteorder or COUNTER_BYTEORDER[self.variant or self._fallback]  # type: ignore[return-value]

    def _lock(self, variant: str) -> None:
        self.variant = variant
        self._candidates = {variant: self._candidates[variant]}
        self._receivers = {variant: self._receivers[variant]}
        if self._sender is not None and self._sender.key != self._candidates[variant]:
            self._sender = None  # something was sealed under the fallback guess; never reuse that key

    def open(self, payload: bytes) -> Packet:
        if self.variant is not None:
            receiver = self._receivers[self.variant]
            if self._old_receiver is None:
                return receiver.open(payload)
            # Just after we initiated a rekey the peer may still send under the old key.
            try:
                packet = receiver.open(payload)
            except DecryptionFailed:
                return self._old_receiver.open(payload)
            self._old_receiver = None
            return packet
        for variant, receiver in self._receivers.items():
            try:
                packet = receiver.open(payload)
            except DecryptionFailed:
                continue
            self._lock(variant)
            return packet
        raise DecryptionFailed("ENCRYPTED packet authenticates under neither the c41 nor the HEAD session key")

    def seal(self, ptype: int, payload: bytes = b"") -> bytes:
        if self._sender is None:
            self._sender = SendCipher(self.key, self._byteorder())
        return self._sender.seal(encode_packet(ptype, payload))

    # --- rekeying (ACIP.md 3.5) -------------------------------------------------------------

    @property
    def rekey_pending(self) -> bool:
        return self._rekey_keypair is not None or self._pending_keys is not None

    @property
    def responding_rekey(self) -> bool:
        """We answered a REKEY_REQUEST and wait for REKEY_COMPLETE: the peer may already use the new key."""
        return self._pending_keys is not None

    def respond_rekey(self, peer_public: bytes) -> bytes:
        """Responder: REKEY_REQUEST received → our REKEY_RESPONSE packet; the key switches on REKEY_COMPLETE.

        Before the variant is known a new key is derived for each candidate; REKEY_COMPLETE then
        tells which one the peer uses (its sealed form authenticates under one; the bare byte is HEAD's).
        """
        if self.rekey_pending:
            raise ProtocolError("CRYPTO_REKEY_REQUEST while a rekey is already in progress")
        if len(peer_public) != 32:
            raise ProtocolError(f"CRYPTO_REKEY_REQUEST key must be 32 bytes, got {len(peer_public)}")
        pair = KeyPair.generate()
        self._pending_keys = {v: session_key(pair.secret_key, peer_public, v) for v in self._candidates}
        return encode_packet(PacketType.CRYPTO_REKEY_RESPONSE, pair.public_key)

    def complete_rekey(self, payload: bytes) -> None:
        """Responder: verify REKEY_COMPLETE (41-byte secretbox, or HEAD's single 0x00) and switch keys."""
        pending = self._pending_keys
        if pending is None or self._rekey_keypair is not None:
            raise ProtocolError("CRYPTO_REKEY_COMPLETE without a rekey in progress")
        if len(payload) >= REKEY_COMPLETE_SEALED_SIZE:
            matched = [v for v, key in pending.items() if _authenticates(key, payload)]
            if not matched:
                raise ProtocolError("CRYPTO_REKEY_COMPLETE does not authenticate under the new key")
            variant = matched[0]
        elif bytes(payload) == REKEY_COMPLETE_HEAD and "head" in pending:
            variant = "head"  # only HEAD sends the bare byte
        else:
            raise ProtocolError(f"CRYPTO_REKEY_COMPLETE of {len(payload)} bytes is neither the c41 nor the HEAD form")
        if self.variant is None:
            self._lock(variant)
        self._switch(pending[variant], keep_old_receiver=False)

    def start_rekey(self) -> bytes:
        """Initiator: our REKEY_REQUEST packet (only clients initiate; the server never does)."""
        if self.variant is None:
            raise ProtocolError("cannot rekey before the session key is confirmed")
        if self.rekey_pending:
            raise ProtocolError("a rekey is already in progress")
        self._rekey_keypair = KeyPair.generate()
        return encode_packet(PacketType.CRYPTO_REKEY_REQUEST, self._rekey_keypair.public_key)

    def finish_rekey(self, peer_public: bytes) -> bytes:
        """Initiator: REKEY_RESPONSE received → REKEY_COMPLETE packet (c41 sealed, HEAD bare byte); switch."""
        if self._rekey_keypair is None or self.variant is None:
            raise ProtocolError("CRYPTO_REKEY_RESPONSE without a rekey request of ours")
        if len(peer_public) != 32:
            raise ProtocolError(f"CRYPTO_REKEY_RESPONSE key must be 32 bytes, got {len(peer_public)}")
        new_key = session_key(self._rekey_keypair.secret_key, peer_public, self.variant)
        if self.variant == "head":
            complete = REKEY_COMPLETE_HEAD
        else:
            # Nonce from the old key's sequence, ciphertext under the new key, as c41 does.
            if self._sender is None:
                self._sender = SendCipher(self.key, self._byteorder())
            complete = bytes(SecretBox(new_key).encrypt(b"\x00", self._sender.next_nonce()))
        self._rekey_keypair = None
        self._switch(new_key, keep_old_receiver=True)
        return encode_packet(PacketType.CRYPTO_REKEY_COMPLETE, complete)

    def _switch(self, new_key: bytes, *, keep_old_receiver: bool) -> None:
        assert self.variant is not None
        old = self._receivers[self.variant]
        self._candidates = {self.variant: new_key}
        self._receivers = {self.variant: ReceiveCipher(new_key)}
        self._old_receiver = old if keep_old_receiver else None
        self._sender = SendCipher(new_key, self._byteorder())
        self._pending_keys = None
        self.rekeys += 1
