"""The ENCRYPTED wrapper on its own: nonce layout, counter byte orders, replay window, key-variant locking."""

from __future__ import annotations

import os

import pytest

from asciichat_server.protocol import crypto
from asciichat_server.protocol.constants import MAX_ENCRYPTED_PLAINTEXT, PacketType
from asciichat_server.protocol.errors import ProtocolError
from asciichat_server.protocol.packets import decode_packet, encode_packet
from asciichat_server.protocol.session import (
    MAX_SESSION_IDS_PER_KEY,
    EncryptedSession,
    ReceiveCipher,
    SendCipher,
)

KEYS = crypto.session_key_candidates(bytes([0x11] * 32), crypto.KeyPair.from_secret(bytes([0x22] * 32)).public_key)
PING = encode_packet(PacketType.PING)


@pytest.mark.parametrize("order", ["little", "big"])
def test_either_counter_byte_order_is_followed(order: str) -> None:
    sender = SendCipher(KEYS["c41"], order)  # type: ignore[arg-type]
    receiver = ReceiveCipher(KEYS["c41"])
    packets = [decode_packet(sender.seal(PING)).payload for _ in range(300)]
    assert packets[0][16:24] == (1).to_bytes(8, order)  # type: ignore[arg-type]
    # Past counter 255 a big-endian counter read little-endian would jump backwards by far more than
    # the replay window, so 300 packets only pass if the order was detected from the first nonce.
    for payload in packets[:200]:
        receiver.open(payload)
    with pytest.raises(ProtocolError, match="replayed"):
        receiver.open(packets[199])
    for payload in packets[200:]:
        receiver.open(payload)


def test_session_ids_per_key_are_bounded() -> None:
    receiver = ReceiveCipher(KEYS["head"])
    for _ in range(MAX_SESSION_IDS_PER_KEY):
        receiver.open(decode_packet(SendCipher(KEYS["head"]).seal(PING)).payload)
    with pytest.raises(ProtocolError, match="too many nonce session ids"):
        receiver.open(decode_packet(SendCipher(KEYS["head"]).seal(PING)).payload)


def test_seal_refuses_more_than_one_mebibyte() -> None:
    sender = SendCipher(KEYS["c41"])
    sender.seal(os.urandom(MAX_ENCRYPTED_PLAINTEXT))  # the limit itself is fine
    with pytest.raises(ValueError):
        sender.seal(bytes(MAX_ENCRYPTED_PLAINTEXT + 1))


def test_short_or_garbled_payloads_are_protocol_errors() -> None:
    receiver = ReceiveCipher(KEYS["c41"])
    for payload in (b"", bytes(39), os.urandom(62)):
        with pytest.raises(ProtocolError):
            receiver.open(payload)
    # Authentic but the plaintext is no packet.
    sealed = SendCipher(KEYS["c41"]).seal_raw(b"short")
    with pytest.raises(ProtocolError, match="no complete header"):
        receiver.open(sealed)


@pytest.mark.parametrize("peer_variant", ["c41", "head"])
def test_unlocked_session_locks_on_the_first_packet_and_drops_a_guessed_sender(peer_variant: str) -> None:
    session = EncryptedSession(dict(KEYS), fallback_variant="c41")
    guessed = decode_packet(session.seal(PacketType.ERROR_MESSAGE, b"x")).payload
    assert ReceiveCipher(KEYS["c41"]).open(guessed).type == PacketType.ERROR_MESSAGE
    peer = SendCipher(KEYS[peer_variant], crypto.COUNTER_BYTEORDER[peer_variant])  # type: ignore[arg-type]
    assert session.open(decode_packet(peer.seal(PING)).payload).type == PacketType.PING
    assert session.variant == peer_variant and session.key == KEYS[peer_variant]
    reply = decode_packet(session.seal(PacketType.PONG)).payload
    assert ReceiveCipher(KEYS[peer_variant]).open(reply).type == PacketType.PONG


def test_degenerate_public_key_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="degenerate"):
        crypto.session_key_candidates(bytes([0x11] * 32), bytes(32))


def test_password_length_rules() -> None:
    for bad in ("short", "x" * 257):
        with pytest.raises(ValueError):
            crypto.derive_password_key(bad)
