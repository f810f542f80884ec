"""Crypto failures: wrong password or pinned key, replayed or tampered ENCRYPTED packets, plaintext after the
handshake. No media ever flows to or from such a peer, and the room's other clients never notice."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import sys
from pathlib import Path

import nacl.signing
import pytest

from asciichat_server.protocol.connection import ClientSecurity
from asciichat_server.protocol.constants import HEADER_SIZE, PacketType
from asciichat_server.protocol.crypto import derive_password_key
from asciichat_server.protocol.packets import PacketDecoder, encode_packet
from asciichat_server.protocol.payloads import ErrorMessage
from asciichat_server.server import AsciiChatServer

HERE = Path(__file__).resolve().parent


def _load(name: str, path: Path):
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


s = _load("_stress_support", HERE / "_support.py")

pytestmark = pytest.mark.stress

PASSWORD = "correct horse"
SEED = bytes(range(1, 33))


@pytest.fixture(scope="module")
def password_key() -> bytes:
    return derive_password_key(PASSWORD)  # Argon2id: once per module


@pytest.fixture
async def room(tmp_path, caplog, password_key):
    """A password + identity server with a streaming sender and a receiver that both authenticated."""
    caplog.set_level(logging.INFO)
    key_file = tmp_path / "server.key"
    key_file.write_text(SEED.hex())
    server = AsciiChatServer(s.make_config(addresses=["127.0.0.1"], password=PASSWORD, key_file=key_file))
    await server.start()
    pinned = bytes(nacl.signing.SigningKey(SEED).verify_key)
    good = ClientSecurity(password_key=password_key, server_key=pinned)
    sender = await s.AcipClient.connect(server.tcp_port, security=good)
    receiver = await s.AcipClient.connect(server.tcp_port, security=good)
    await sender.send(PacketType.IMAGE_FRAME, s.image_payload(shade=40))
    await receiver.wait_for(PacketType.ASCII_FRAME)
    try:
        yield server, good, sender, receiver
    finally:
        for c in (sender, receiver):
            await c.close()
        await server.stop()
        assert not s.bad_records(caplog.records)


async def _still_streaming(server, sender, receiver) -> None:
    """The authenticated pair is untouched: a new frame still reaches the receiver; one video source."""
    await sender.send(PacketType.IMAGE_FRAME, s.image_payload(shade=200))
    await receiver.wait_for(PacketType.ASCII_FRAME)
    assert server.room.video_count == 1


async def test_wrong_password_and_wrong_pinned_key_get_nothing(room, password_key):
    server, good, sender, receiver = room
    frames_in = server.metrics.frames_in
    bad_password = ClientSecurity(password_key=derive_password_key("wrong horse"), server_key=good.server_key)
    with pytest.raises(PermissionError):
        await s.AcipClient.connect(server.tcp_port, security=bad_password)
    other = bytes(nacl.signing.SigningKey.generate().verify_key)
    wrong_pin = ClientSecurity(password_key=password_key, server_key=other)
    with pytest.raises(Exception) as info:  # the client refuses the server: it never sends its password
        await s.AcipClient.connect(server.tcp_port, security=wrong_pin)
    assert not isinstance(info.value, TimeoutError)
    await s.wait_until(lambda: server.room.client_count == 2)
    assert server.metrics.handshakes_failed == 2 and server.metrics.handshakes_ok == 2
    assert server.metrics.frames_in == frames_in
    await _still_streaming(server, sender, receiver)


async def _joined_intruder(server, good):
    """An authenticated client that joined as a receiver (so it would get frames if left alone)."""
    intruder = await s.AcipClient.connect(server.tcp_port, security=good)
    await intruder.wait_for(PacketType.SERVER_STATE)
    return intruder


def _sealed(client, ptype: int, payload: bytes) -> bytes:
    client.conn.send(ptype, payload)
    (wire,) = client.conn.data_to_send()
    return wire


async def _refused(server, client) -> ErrorMessage | None:
    """Read until the server closes; the decrypted ERROR_MESSAGE if one came."""
    error = None
    try:
        while True:
            pkt = await client.packet(timeout=10)
            if pkt.type == PacketType.ERROR_MESSAGE:
                error = ErrorMessage.decode(pkt.payload)
    except (EOFError, ConnectionError):
        pass
    except Exception:  # the client's own ProtocolError on a closing server is acceptable too
        pass
    await s.wait_until(lambda: server.room.client_count == 2)
    return error


async def test_replayed_encrypted_packet_is_refused(room):
    server, good, sender, receiver = room
    intruder = await _joined_intruder(server, good)
    wire = _sealed(intruder, PacketType.PING, b"")
    await intruder.raw.send_raw(wire)
    await intruder.wait_for(PacketType.PONG)
    frames_in = server.metrics.frames_in
    await intruder.raw.send_raw(wire)  # the same ciphertext, nonce and all, a second time
    error = await _refused(server, intruder)
    assert error is None or error.code == 44
    assert server.metrics.frames_in == frames_in and server.metrics.protocol_errors == 1
    await intruder.close()
    await _still_streaming(server, sender, receiver)


async def test_replayed_video_frame_is_not_shown_twice(room):
    server, good, sender, receiver = room
    intruder = await _joined_intruder(server, good)
    wire = _sealed(intruder, PacketType.IMAGE_FRAME, s.image_payload(shade=99))
    await intruder.raw.send_raw(wire)
    await s.wait_until(lambda: server.room.video_count == 2)
    frames_in = server.metrics.frames_in
    await intruder.raw.send_raw(wire)
    await _refused(server, intruder)
    assert server.metrics.frames_in == frames_in
    await intruder.close()
    await _still_streaming(server, sender, receiver)


async def test_tampered_mac_is_refused(room):
    server, good, sender, receiver = room
    intruder = await _joined_intruder(server, good)
    wire = _sealed(intruder, PacketType.IMAGE_FRAME, s.image_payload(shade=77))
    payload = bytearray(wire[HEADER_SIZE:])
    payload[-1] ^= 0x01  # last byte of the Poly1305 tag
    (decoded,) = PacketDecoder().feed(wire)
    frames_in = server.metrics.frames_in
    await intruder.raw.send_raw(encode_packet(PacketType.ENCRYPTED, bytes(payload), decoded.client_id))
    error = await _refused(server, intruder)
    assert error is None or error.code == 44
    assert server.metrics.frames_in == frames_in and server.room.video_count == 1
    await intruder.close()
    await _still_streaming(server, sender, receiver)


async def test_plaintext_video_after_the_handshake_is_refused(room):
    server, good, sender, receiver = room
    intruder = await _joined_intruder(server, good)
    frames_in = server.metrics.frames_in
    await intruder.raw.send(PacketType.IMAGE_FRAME, s.image_payload(shade=55))
    error = await _refused(server, intruder)
    assert error is None or error.code == 44
    assert server.metrics.frames_in == frames_in and server.room.video_count == 1
    await intruder.close()
    await _still_streaming(server, sender, receiver)


async def test_intruder_gets_no_frames_after_refusal(room):
    """Media never flows *to* a refused peer: after its bad packet, no ASCII_FRAME decrypts for it."""
    server, good, sender, receiver = room
    intruder = await _joined_intruder(server, good)
    await intruder.raw.send(PacketType.PING)  # plaintext after the handshake
    await s.wait_until(lambda: server.room.client_count == 2)  # removed before the next frame exists
    frames_out = server.metrics.frames_out
    await sender.send(PacketType.IMAGE_FRAME, s.image_payload(shade=123))
    await receiver.wait_for(PacketType.ASCII_FRAME)
    await asyncio.sleep(0.2)
    # Only the two remaining clients were rendered for (a second frame at most: the sender's own view).
    assert server.metrics.frames_out - frames_out <= 4
    late = []
    try:
        while True:
            pkt = await intruder.packet(timeout=5)
            late.append(pkt.type)
    except Exception:
        pass
    # Frames queued before the refusal may still arrive; none rendered from the later shade-123 frame.
    assert late.count(PacketType.ASCII_FRAME) <= 1, late
    await intruder.close()
