"""H.265 video and PCM audio through the room, and removal while a send is in flight."""

from __future__ import annotations

import asyncio
import fractions

import av
import numpy as np
import pytest

from asciichat_server.protocol.constants import PacketType, StreamType
from asciichat_server.protocol.payloads import AsciiFrame, AudioBatch, AudioOpusBatch, ErrorMessage, ImageFrameH265

W, H = 64, 48


def _hevc_packets(n: int, color: tuple[int, int, int]) -> list[bytes]:
    enc = av.CodecContext.create("libx265", "w")
    enc.width, enc.height, enc.pix_fmt = W, H, "yuv420p"
    enc.time_base = fractions.Fraction(1, 30)
    enc.framerate = 30
    enc.options = {"preset": "ultrafast", "tune": "zerolatency", "x265-params": "log-level=none"}
    img = np.zeros((H, W, 3), np.uint8)
    img[:] = color
    out = []
    for i in range(n):
        frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        out.extend(bytes(p) for p in enc.encode(frame))
    out.extend(bytes(p) for p in enc.encode(None))
    return out


@pytest.mark.skipif("libx265" not in av.codecs_available, reason="FFmpeg in PyAV lacks libx265")
async def test_h265_sender_is_rendered_for_others(start_server, helpers):
    from asciichat_server.protocol.payloads import ClientCapabilities

    server = await start_server()
    sender = await helpers.AcipClient.connect(server.tcp_port)
    caps = ClientCapabilities(width=20, height=8, color_level=3, palette_type=1).encode()
    viewer = await helpers.AcipClient.connect(server.tcp_port, caps=caps)
    for packet in _hevc_packets(3, (200, 40, 40)):
        await sender.send(
            PacketType.IMAGE_FRAME_H265, ImageFrameH265(flags=0, width=W, height=H, bitstream=packet).encode()
        )
    frame = AsciiFrame.decode((await viewer.wait_for(PacketType.ASCII_FRAME)).payload)
    assert (frame.width, frame.height) == (20, 8)
    assert b"38;2;" in frame.text  # truecolour cells of the decoded picture
    await sender.close()
    await viewer.close()


async def test_garbage_h265_is_a_violation(start_server, helpers):
    server = await start_server()
    client = await helpers.AcipClient.connect(server.tcp_port)
    bad = ImageFrameH265(flags=0, width=W, height=H, bitstream=b"\x12\x34\x56\x78not-hevc").encode()
    await client.send(PacketType.IMAGE_FRAME_H265, bad)
    err = ErrorMessage.decode((await client.wait_for(PacketType.ERROR_MESSAGE)).payload)
    assert err.code == 44 and "H.265" in err.message
    assert await client.raw.closed_by_server()
    await helpers.wait_until(lambda: server.room.client_count == 0)


async def test_pcm_audio_batch_is_mixed_to_opus(start_server, helpers):
    server = await start_server()
    speaker = await helpers.AcipClient.connect(server.tcp_port)
    listener = await helpers.AcipClient.connect(server.tcp_port)
    await helpers.wait_until(lambda: server.room.joined_count == 2)
    t = np.arange(960 * 4) / 48000
    tone = (0.25 * np.sin(2 * np.pi * 330 * t)).tolist()
    await speaker.send(PacketType.AUDIO_BATCH, AudioBatch.from_floats(48000, 1, tone).encode())
    batch = AudioOpusBatch.decode((await listener.wait_for(PacketType.AUDIO_OPUS_BATCH)).payload)
    assert batch.sample_rate == 48000 and batch.frame_duration_ms == 20
    assert 1 <= len(batch.frames) <= 8
    await speaker.close()
    await listener.close()


async def test_removal_while_a_send_is_blocked(start_server, helpers, no_task_leaks):
    """RST on a receiver whose writer is stuck in drain(): slot freed, no stray exceptions, others fine."""
    from asciichat_server.protocol.payloads import ClientCapabilities, ImageFrame

    server = await start_server(encrypt=False, max_clients=3)
    plain = helpers.ClientSecurity(encrypt=False)
    big = ClientCapabilities(width=300, height=100, color_level=3, palette_type=1).encode()
    sender = await helpers.AcipClient.connect(server.tcp_port, security=plain)
    stuck = await helpers.AcipClient.connect(server.tcp_port, security=plain, caps=big)
    await helpers.wait_until(lambda: server.room.joined_count == 2)
    stuck.raw.writer.transport.pause_reading()
    rng = np.random.default_rng(3)
    for _ in range(20):
        pixels = rng.integers(0, 256, size=(90, 160, 3), dtype=np.uint8).tobytes()
        await sender.send(PacketType.IMAGE_FRAME, ImageFrame(width=160, height=90, pixels=pixels).encode())
        await asyncio.sleep(0.02)
    await helpers.wait_until(lambda: server.metrics.dropped_frames > 0, timeout=10)
    stuck.raw.reset()
    await helpers.wait_until(lambda: server.room.client_count == 1, timeout=10)
    # The slot is reusable and the sender still gets served.
    again = await helpers.AcipClient.connect(server.tcp_port, security=plain)
    await sender.send(PacketType.IMAGE_FRAME, ImageFrame(width=16, height=9, pixels=bytes(16 * 9 * 3)).encode())
    await again.wait_for(PacketType.ASCII_FRAME)
    await sender.send(PacketType.PING)
    await sender.wait_for(PacketType.PONG)
    await sender.close()
    await again.close()
    await helpers.wait_until(lambda: server.room.client_count == 0)


async def test_audio_stream_start_then_opus_is_accepted(start_server, helpers):
    server = await start_server()
    client = await helpers.AcipClient.connect(server.tcp_port)
    await client.send(PacketType.STREAM_START, helpers.stream_payload(StreamType.AUDIO))
    # A malformed Opus frame is the mixer's problem (logged), not a protocol violation.
    await client.send(PacketType.AUDIO_OPUS_BATCH, AudioOpusBatch(frames=[b"\xff\xff"]).encode())
    await client.send(PacketType.PING)
    await client.wait_for(PacketType.PONG)
    assert server.room.client_count == 1
    await client.close()
