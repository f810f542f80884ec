"""Hostile peers against a running server: each gets ERROR_MESSAGE 44 (or a close), nobody else notices."""

from __future__ import annotations

import asyncio
import random
import struct

import pytest

from asciichat_server.protocol.constants import MAGIC, PacketType, StreamType
from asciichat_server.protocol.packets import encode_packet
from asciichat_server.protocol.payloads import ErrorMessage, ImageFrame, ProtocolVersion


def _header(ptype: int, length: int, crc: int = 0) -> bytes:
    return struct.pack(">QHIII", MAGIC, ptype, length, crc, 0)


# Each entry: (name, needs an encrypted session first, bytes to send inside/after it)
RAW_ATTACKS = {
    "random bytes": lambda rng: bytes(rng.getrandbits(8) for _ in range(64)),
    "bad crc": lambda rng: _header(PacketType.PING, 4, 0xDEADBEEF) + b"abcd",
    "oversize length": lambda rng: _header(PacketType.IMAGE_FRAME, 64 * 1024 * 1024),
    "length sentinel": lambda rng: _header(PacketType.IMAGE_FRAME, 0xFFFFFFFF),
    "version then garbage": lambda rng: (
        encode_packet(PacketType.PROTOCOL_VERSION, ProtocolVersion().encode()) + b"\x00" * 7 + b"\xff" * 30
    ),
    "bad crypto mode": lambda rng: encode_packet(
        PacketType.PROTOCOL_VERSION, ProtocolVersion(supports_encryption=0x80).encode()
    ),
    "short version": lambda rng: encode_packet(PacketType.PROTOCOL_VERSION, b"\x00\x01"),
}

SESSION_ATTACKS = {
    "plaintext after handshake": ("raw", encode_packet(PacketType.PING)),
    "encrypted garbage": ("raw", encode_packet(PacketType.ENCRYPTED, bytes(80))),
    "short capabilities": ("app", (PacketType.CLIENT_CAPABILITIES, bytes(100))),
    "stream type 0": ("app", (PacketType.STREAM_START, bytes(4))),
    "image dims 0": ("app", (PacketType.IMAGE_FRAME, ImageFrame(width=0, height=0, pixels=b"").encode())),
    "image too big": ("app", (PacketType.IMAGE_FRAME, ImageFrame(width=9000, height=9000, pixels=b"").encode())),
    "truncated image": ("app", (PacketType.IMAGE_FRAME, b"\x00" * 10)),
    "audio before start": ("app", (PacketType.AUDIO_OPUS_BATCH, struct.pack(">IIII", 48000, 20, 0, 0))),
}


async def test_each_raw_attack_is_closed_and_freed(start_server, helpers, no_task_leaks):
    server = await start_server(max_clients=4)
    rng = random.Random(11)
    for name, make in RAW_ATTACKS.items():
        raw = await helpers.RawClient.connect(server.tcp_port)
        await raw.send_raw(make(rng))
        assert await raw.closed_by_server(timeout=10), name
        errors = [p for p in raw.pending if p.type == PacketType.ERROR_MESSAGE]
        if errors:
            assert ErrorMessage.decode(errors[0].payload).code == 44, name
        await raw.close()
    await helpers.wait_until(lambda: server.room.client_count == 0)
    assert server.metrics.protocol_errors == len(RAW_ATTACKS)


@pytest.mark.parametrize("name", list(SESSION_ATTACKS))
async def test_session_attack_gets_error_44_and_others_keep_going(start_server, helpers, name, no_task_leaks):
    server = await start_server()
    watcher = await helpers.AcipClient.connect(server.tcp_port)
    await watcher.send(PacketType.IMAGE_FRAME, helpers.image_payload())
    await watcher.wait_for(PacketType.ASCII_FRAME)
    bad = await helpers.AcipClient.connect(server.tcp_port)
    if name == "audio before start":
        # Open a fresh session that announced video only.
        await bad.close()
        bad = await helpers.AcipClient.connect(server.tcp_port, join=False)
        await bad.send(PacketType.CLIENT_CAPABILITIES, helpers.caps_payload())
        await bad.send(PacketType.STREAM_START, helpers.stream_payload(StreamType.VIDEO))
    kind, attack = SESSION_ATTACKS[name]
    if kind == "raw":
        await bad.raw.send_raw(attack)
    else:
        await bad.send(*attack)
    err = ErrorMessage.decode((await bad.wait_for(PacketType.ERROR_MESSAGE)).payload)
    assert err.code == 44 and err.message
    assert await bad.raw.closed_by_server()
    # The watcher never noticed: its next frame arrives and its slot is the only one left.
    await watcher.send(PacketType.IMAGE_FRAME, helpers.image_payload(shade=3))
    await watcher.wait_for(PacketType.ASCII_FRAME)
    await helpers.wait_until(lambda: server.room.client_count == 1)
    await watcher.close()


@pytest.mark.stress
async def test_concurrent_hostile_mix_while_streaming(start_server, helpers, no_task_leaks):
    server = await start_server(max_clients=12, handshake_timeout_s=3)
    sender = await helpers.AcipClient.connect(server.tcp_port)
    watcher = await helpers.AcipClient.connect(server.tcp_port)
    rng = random.Random(5)
    stop = asyncio.Event()
    frames_seen = 0

    async def stream():
        shade = 0
        while not stop.is_set():
            shade = (shade + 17) % 256
            await sender.send(PacketType.IMAGE_FRAME, helpers.image_payload(shade=shade))
            await asyncio.sleep(1 / 30)

    async def watch():
        nonlocal frames_seen
        while not stop.is_set():
            try:
                pkt = await watcher.packet(timeout=0.2)
            except TimeoutError:
                continue
            frames_seen += pkt.type == PacketType.ASCII_FRAME

    async def attacker(i: int):
        name = rng.choice(list(RAW_ATTACKS))
        raw = await helpers.RawClient.connect(server.tcp_port, host="::1" if i % 2 else "127.0.0.1")
        try:
            data = RAW_ATTACKS[name](rng)
            for cut in range(0, len(data), 7):  # dribbled in small pieces
                await raw.send_raw(data[cut : cut + 7])
            await raw.closed_by_server(timeout=4)
        except (ConnectionError, OSError):
            pass
        finally:
            await raw.close()

    background = [asyncio.create_task(stream()), asyncio.create_task(watch())]
    try:
        for start in range(0, 60, 6):
            await asyncio.gather(*(attacker(i) for i in range(start, start + 6)))
        before = frames_seen
        await asyncio.sleep(0.5)
        assert frames_seen > before  # still streaming after the attacks
    finally:
        stop.set()
        await asyncio.gather(*background, return_exceptions=True)
    await helpers.wait_until(lambda: server.room.client_count == 2)
    assert server.room.slots_free == 10
    await sender.close()
    await watcher.close()
