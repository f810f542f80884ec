"""End-to-end sessions over real loopback TCP: handshake variants, frames, keepalive, full server, violations."""

from __future__ import annotations

import asyncio
import struct

import nacl.signing
import pytest

from asciichat_server.config import openssh_public_line
from asciichat_server.protocol.constants import PacketType, StreamType
from asciichat_server.protocol.packets import encode_packet
from asciichat_server.protocol.payloads import AsciiFrame, AudioOpusBatch, ErrorMessage, ServerState
from asciichat_server.room import SERVER_FULL_LINE


async def _video_roundtrip(client, helpers, width=40, height=12):
    await client.send(PacketType.IMAGE_FRAME, helpers.image_payload())
    first = await client.wait_for(PacketType.CLEAR_CONSOLE)
    assert first.payload == b""
    frame_pkt = await client.wait_for(PacketType.ASCII_FRAME)
    frame = AsciiFrame.decode(frame_pkt.payload)
    assert (frame.width, frame.height) == (width, height)
    assert frame.text  # something was drawn
    return frame


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_encrypted_session_video_and_ping(start_server, helpers, host, no_task_leaks):
    server = await start_server()
    client = await helpers.AcipClient.connect(server.tcp_port, host=host)
    assert client.handshake.encrypted
    state = ServerState.decode((await client.wait_for(PacketType.SERVER_STATE)).payload)
    assert state.connected == 1
    await client.send(PacketType.PING)
    await client.wait_for(PacketType.PONG, timeout=3.0)
    await _video_roundtrip(client, helpers)
    assert server.metrics.handshakes_ok == 1
    assert server.metrics.frames_in == 1 and server.metrics.frames_out >= 1
    await client.close()
    await helpers.wait_until(lambda: server.room.client_count == 0)


async def test_plaintext_session(start_server, helpers, no_task_leaks):
    server = await start_server(encrypt=False)
    client = await helpers.AcipClient.connect(server.tcp_port, security=helpers.ClientSecurity(encrypt=False))
    assert not client.handshake.encrypted
    await client.wait_for(PacketType.SERVER_STATE)
    await _video_roundtrip(client, helpers)
    await client.close()


async def test_plaintext_with_raw_packets(start_server, helpers):
    """Without any client library: the raw c41 `--no-encrypt` sequence gets frames back."""
    server = await start_server(encrypt=False)
    raw = await helpers.RawClient.connect(server.tcp_port)
    await raw.send(PacketType.CLIENT_CAPABILITIES, helpers.caps_payload(30, 10))
    await raw.send(PacketType.STREAM_START, helpers.stream_payload(StreamType.VIDEO))
    await raw.send(PacketType.IMAGE_FRAME, helpers.image_payload())
    await raw.wait_for(PacketType.CLEAR_CONSOLE)
    frame = AsciiFrame.decode((await raw.wait_for(PacketType.ASCII_FRAME)).payload)
    assert (frame.width, frame.height) == (30, 10)
    await raw.close()


@pytest.mark.parametrize("variant", ["c41", "head"])
async def test_both_key_variants(start_server, helpers, variant, no_task_leaks):
    server = await start_server()
    security = helpers.ClientSecurity(key_variant=variant)
    client = await helpers.AcipClient.connect(server.tcp_port, security=security)
    await client.wait_for(PacketType.SERVER_STATE)
    await _video_roundtrip(client, helpers)
    await helpers.wait_until(lambda: server.room.clients and next(iter(server.room.clients.values())).conn.key_variant)
    assert next(iter(server.room.clients.values())).conn.key_variant == variant
    await client.close()


@pytest.mark.parametrize("variant", ["c41", "head"])
async def test_password_right(start_server, helpers, variant):
    server = await start_server(password="correct horse")
    security = helpers.ClientSecurity(password="correct horse", key_variant=variant)
    client = await helpers.AcipClient.connect(server.tcp_port, security=security)
    await _video_roundtrip(client, helpers)
    await client.close()


async def test_password_wrong_is_rejected_and_slot_freed(start_server, helpers):
    server = await start_server(password="correct horse", max_clients=1)
    with pytest.raises((PermissionError, EOFError, Exception)) as info:
        await helpers.AcipClient.connect(server.tcp_port, security=helpers.ClientSecurity(password="wrong horse!"))
    assert not isinstance(info.value, TimeoutError)
    await helpers.wait_until(lambda: server.room.client_count == 0)
    assert server.metrics.handshakes_failed == 1
    # The only slot is free again.
    good = await helpers.AcipClient.connect(server.tcp_port, security=helpers.ClientSecurity(password="correct horse"))
    await good.wait_for(PacketType.SERVER_STATE)
    await good.close()


async def test_identity_pinned_right_and_wrong(start_server, helpers, tmp_path):
    seed = bytes(range(1, 33))
    key_file = tmp_path / "server.key"
    key_file.write_text(seed.hex())
    identity = nacl.signing.SigningKey(seed)
    server = await start_server(key_file=key_file)
    pinned = helpers.ClientSecurity(server_key=bytes(identity.verify_key))
    client = await helpers.AcipClient.connect(server.tcp_port, security=pinned)
    await _video_roundtrip(client, helpers)
    await client.close()
    other = nacl.signing.SigningKey.generate()
    with pytest.raises(Exception) as info:
        await helpers.AcipClient.connect(
            server.tcp_port, security=helpers.ClientSecurity(server_key=bytes(other.verify_key))
        )
    assert not isinstance(info.value, TimeoutError)
    await helpers.wait_until(lambda: server.room.client_count == 0)


async def test_openssh_identity_end_to_end(start_server, helpers, tmp_path):
    import shutil
    import subprocess

    if shutil.which("ssh-keygen") is None:
        pytest.skip("ssh-keygen not installed")
    key_file = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key_file)], check=True)
    from asciichat_server.config import load_identity_key

    public = bytes(load_identity_key(key_file).verify_key)
    server = await start_server(key_file=key_file)
    client = await helpers.AcipClient.connect(server.tcp_port, security=helpers.ClientSecurity(server_key=public))
    await client.wait_for(PacketType.SERVER_STATE)
    await client.close()


@pytest.mark.parametrize("variant", ["c41", "head"])
async def test_allow_list(start_server, helpers, tmp_path, variant):
    listed = nacl.signing.SigningKey.generate()
    stranger = nacl.signing.SigningKey.generate()
    keys = tmp_path / "clients"
    keys.write_text(openssh_public_line(listed.verify_key, "listed") + "\n")
    server = await start_server(client_keys_file=keys, signature_auth_variant=variant)
    ok = await helpers.AcipClient.connect(
        server.tcp_port, security=helpers.ClientSecurity(identity=listed, key_variant=variant)
    )
    await _video_roundtrip(ok, helpers)
    with pytest.raises(Exception) as info:
        await helpers.AcipClient.connect(
            server.tcp_port, security=helpers.ClientSecurity(identity=stranger, key_variant=variant)
        )
    assert not isinstance(info.value, TimeoutError)
    await helpers.wait_until(lambda: server.room.client_count == 1)
    await ok.close()


async def test_full_server_gets_raw_line(start_server, helpers):
    server = await start_server(max_clients=2)
    a = await helpers.AcipClient.connect(server.tcp_port)
    b = await helpers.AcipClient.connect(server.tcp_port, host="::1")
    third = await helpers.RawClient.connect(server.tcp_port)
    data = await third.read_raw()
    assert data == SERVER_FULL_LINE
    assert await third.closed_by_server()
    assert server.metrics.rejected_full == 1
    # Both members are unaffected.
    await a.send(PacketType.PING)
    await a.wait_for(PacketType.PONG)
    await b.close()
    await helpers.wait_until(lambda: server.room.client_count == 1)
    c = await helpers.AcipClient.connect(server.tcp_port)
    await c.wait_for(PacketType.SERVER_STATE)
    await a.close()
    await c.close()


async def test_keepalive_every_500ms_without_video(start_server, helpers):
    server = await start_server()
    client = await helpers.AcipClient.connect(server.tcp_port)
    loop = asyncio.get_running_loop()
    await client.packet()
    last = loop.time()
    gaps = []
    end = last + 3.0
    while loop.time() < end:
        await client.packet(timeout=1.0)
        now = loop.time()
        gaps.append(now - last)
        last = now
    # Measured in this (client) process, so a starved test process inflates single gaps: the server's
    # schedule (0.3 s) shows in the typical gap, and no gap reaches the c41 debug client's 1 s limit.
    assert len(gaps) >= 5, gaps
    assert sorted(gaps)[int(len(gaps) * 0.9) - 1] <= 0.5, gaps
    assert max(gaps) < 1.0, gaps
    await client.close()


async def test_server_state_on_join_and_leave(start_server, helpers):
    server = await start_server()
    a = await helpers.AcipClient.connect(server.tcp_port)
    await helpers.wait_until(lambda: server.room.joined_count == 1)
    b = await helpers.AcipClient.connect(server.tcp_port)

    async def wait_state(client, connected):
        while True:
            state = ServerState.decode((await client.wait_for(PacketType.SERVER_STATE)).payload)
            if state.connected == connected:
                return state

    await wait_state(a, 2)
    await b.close()
    await wait_state(a, 1)
    await a.close()


async def test_tile_change_sends_clear_console(start_server, helpers):
    server = await start_server()
    a = await helpers.AcipClient.connect(server.tcp_port)
    await _video_roundtrip(a, helpers)
    b = await helpers.AcipClient.connect(server.tcp_port)
    await b.send(PacketType.IMAGE_FRAME, helpers.image_payload(shade=30))
    # a's grid goes from 1 to 2 tiles: CLEAR_CONSOLE comes right before the next frame.
    while True:
        pkt = await a.packet()
        if pkt.type == PacketType.CLEAR_CONSOLE:
            break
    nxt = await a.wait_for(PacketType.ASCII_FRAME)
    assert AsciiFrame.decode(nxt.payload).text
    # b sees both videos at once, with its own CLEAR_CONSOLE first.
    await b.wait_for(PacketType.CLEAR_CONSOLE)
    await b.wait_for(PacketType.ASCII_FRAME)
    await a.close()
    await b.close()


async def test_violation_isolated_from_other_client(start_server, helpers, no_task_leaks):
    server = await start_server()
    watcher = await helpers.AcipClient.connect(server.tcp_port)
    sender = await helpers.AcipClient.connect(server.tcp_port)
    await _video_roundtrip(watcher, helpers)
    bad = await helpers.AcipClient.connect(server.tcp_port)
    # A packet with a wrong CRC, straight onto the wire, inside an encrypted session.
    corrupt = bytearray(encode_packet(PacketType.PING, b""))
    corrupt[0] = 0xFF
    await bad.raw.send_raw(bytes(corrupt))
    err = await bad.wait_for(PacketType.ERROR_MESSAGE)
    message = ErrorMessage.decode(err.payload)
    assert message.code == 44
    assert "magic" in message.message
    assert await bad.raw.closed_by_server()
    # Meanwhile the watcher keeps getting frames from the sender.
    for shade in (10, 200, 90):
        await sender.send(PacketType.IMAGE_FRAME, helpers.image_payload(shade=shade))
        await watcher.wait_for(PacketType.ASCII_FRAME)
    await helpers.wait_until(lambda: server.room.client_count == 2)
    assert server.metrics.protocol_errors == 1
    await watcher.close()
    await sender.close()


async def test_malformed_payload_gets_error_44(start_server, helpers):
    server = await start_server()
    client = await helpers.AcipClient.connect(server.tcp_port)
    await client.send(PacketType.IMAGE_FRAME, b"\x00\x00\x00\x02")  # shorter than its 24-byte header
    err = ErrorMessage.decode((await client.wait_for(PacketType.ERROR_MESSAGE)).payload)
    assert err.code == 44
    assert await client.raw.closed_by_server()
    await helpers.wait_until(lambda: server.room.client_count == 0)


async def test_audio_requires_stream_start(start_server, helpers):
    server = await start_server(encrypt=False)
    raw = await helpers.RawClient.connect(server.tcp_port)
    await raw.send(PacketType.CLIENT_CAPABILITIES, helpers.caps_payload())
    await raw.send(PacketType.STREAM_START, helpers.stream_payload(StreamType.VIDEO))
    batch = AudioOpusBatch(frames=[b"\xf8\xff\xfe"]).encode()
    await raw.send(PacketType.AUDIO_OPUS_BATCH, batch)
    err = ErrorMessage.decode((await raw.wait_for(PacketType.ERROR_MESSAGE)).payload)
    assert err.code == 44 and "STREAM_START" in err.message
    assert await raw.closed_by_server()
    await helpers.wait_until(lambda: server.room.client_count == 0)


async def test_audio_is_mixed_for_the_other_listener(start_server, helpers):
    import av
    import numpy as np

    encoder = av.CodecContext.create("libopus", "w")
    encoder.sample_rate = 48000
    encoder.layout = "mono"
    encoder.format = "flt"
    encoder.bit_rate = 64000
    encoder.open()
    t = np.arange(960 * 8) / 48000
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    packets = []
    for i in range(8):
        frame = av.AudioFrame.from_ndarray(tone[i * 960 : (i + 1) * 960].reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate = 48000
        frame.pts = i * 960
        packets.extend(bytes(p) for p in encoder.encode(frame))
    assert packets

    server = await start_server(encrypt=False)
    speaker = await helpers.RawClient.connect(server.tcp_port)
    listener = await helpers.RawClient.connect(server.tcp_port)
    for raw in (speaker, listener):
        await raw.send(PacketType.CLIENT_CAPABILITIES, helpers.caps_payload())
        await raw.send(PacketType.STREAM_START, helpers.stream_payload(StreamType.VIDEO | StreamType.AUDIO))
    await helpers.wait_until(lambda: server.room.joined_count == 2)
    await speaker.send(PacketType.AUDIO_OPUS_BATCH, AudioOpusBatch(frames=packets).encode())
    pkt = await listener.wait_for(PacketType.AUDIO_OPUS_BATCH, timeout=10)
    header = struct.unpack(">IIII", pkt.payload[:16])
    assert header[0] == 48000 and header[1] == 20 and header[2] >= 1 and header[3] == 0
    batch = AudioOpusBatch.decode(pkt.payload)
    assert len(batch.frames) == header[2]
    # The speaker never hears itself.
    with pytest.raises(TimeoutError):
        await speaker.wait_for(PacketType.AUDIO_OPUS_BATCH, timeout=0.5)
    await speaker.close()
    await listener.close()


async def test_head_sized_capabilities_168_bytes(start_server, helpers):
    server = await start_server()
    security = helpers.ClientSecurity(key_variant="head")
    client = await helpers.AcipClient.connect(server.tcp_port, security=security, caps=helpers.caps_payload(size=168))
    frame = await _video_roundtrip(client, helpers)
    assert frame.text
    session = next(iter(server.room.clients.values()))
    assert session.caps is not None and session.caps.width == 40
    await client.close()
