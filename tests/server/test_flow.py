"""Per-receiver frame rate, and a receiver that stops reading: newest frame only, others unaffected."""

from __future__ import annotations

import asyncio
import contextlib
import re

import numpy as np
import pytest

import asciichat_server.room as room_module
from asciichat_server.protocol.constants import PacketType, StreamType
from asciichat_server.protocol.payloads import AsciiFrame, ClientCapabilities, ImageFrame


def _noise_frame(rng: np.random.Generator, width: int = 160, height: int = 90) -> bytes:
    pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8).tobytes()
    return ImageFrame(width=width, height=height, pixel_format=1, pixels=pixels).encode()


def _uniform_frame(value: int, width: int = 160, height: int = 90) -> bytes:
    return ImageFrame(width=width, height=height, pixel_format=1, pixels=bytes([value]) * (width * height * 3)).encode()


async def _count_frames(client, until: asyncio.Task, tail_s: float = 0.3) -> int:
    """ASCII_FRAMEs received until `until` is done, plus `tail_s` for what was in flight."""
    loop = asyncio.get_running_loop()
    count = 0
    end = None
    while end is None or loop.time() < end:
        if end is None and until.done():
            end = loop.time() + tail_s
        try:
            pkt = await client.packet(timeout=0.05)
        except TimeoutError:
            continue
        count += pkt.type == PacketType.ASCII_FRAME
    return count


async def test_frames_follow_each_receivers_desired_fps(start_server, helpers):
    server = await start_server()
    sender = await helpers.AcipClient.connect(server.tcp_port)
    slow = await helpers.AcipClient.connect(server.tcp_port, caps=helpers.caps_payload(fps=5))
    fast = await helpers.AcipClient.connect(server.tcp_port, caps=helpers.caps_payload(fps=60))
    await helpers.wait_until(lambda: server.room.joined_count == 3)
    loop = asyncio.get_running_loop()
    sent = 0

    async def stream() -> float:
        nonlocal sent
        started = loop.time()
        for i in range(45):
            await sender.send(PacketType.IMAGE_FRAME, helpers.image_payload(shade=(i * 5) % 256))
            sent += 1
            await asyncio.sleep(1 / 30)
        return loop.time() - started

    streaming = asyncio.create_task(stream())
    slow_count, fast_count = await asyncio.gather(_count_frames(slow, streaming), _count_frames(fast, streaming))
    elapsed = await streaming
    # 5 fps over the streaming time (plus the first frame at once, plus scheduling slack).
    assert 2 <= slow_count <= (elapsed + 0.3) * 5 + 3, (slow_count, elapsed)
    # The 60 fps receiver gets (nearly) every distinct frame of the 30 fps sender.
    assert fast_count >= 0.6 * sent, (fast_count, sent)
    assert fast_count > 2 * slow_count
    for c in (sender, slow, fast):
        await c.close()


async def test_stalled_receiver_gets_newest_frame_and_others_continue(start_server, helpers):
    server = await start_server(encrypt=False)
    rng = np.random.default_rng(1)
    plain = helpers.ClientSecurity(encrypt=False)
    big_caps = ClientCapabilities(width=300, height=100, color_level=3, palette_type=1, desired_fps=60).encode()
    sender = await helpers.AcipClient.connect(server.tcp_port, security=plain)
    stalled = await helpers.AcipClient.connect(server.tcp_port, security=plain, caps=big_caps)
    healthy = await helpers.AcipClient.connect(server.tcp_port, security=plain)
    await helpers.wait_until(lambda: server.room.joined_count == 3)
    session = next(c for c in server.room.clients.values() if c.spec is not None and c.spec.cols == 300)

    stalled.raw.writer.transport.pause_reading()
    healthy_frames = 0
    for _ in range(40):
        await sender.send(PacketType.IMAGE_FRAME, _noise_frame(rng))
        await asyncio.sleep(1 / 40)
        while True:
            try:
                pkt = await healthy.packet(timeout=0.001)
            except TimeoutError:
                break
            healthy_frames += pkt.type == PacketType.ASCII_FRAME
        # The stalled receiver never accumulates: one pending video frame, a short control lane.
        assert len(session.control) < 16
    await sender.send(PacketType.IMAGE_FRAME, _uniform_frame(7))
    await helpers.wait_until(lambda: server.metrics.dropped_frames > 0, timeout=10)
    assert healthy_frames >= 10, healthy_frames
    assert session.removed is False

    stalled.raw.writer.transport.resume_reading()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    newest = None
    stale_frames = 0
    while loop.time() < deadline:
        pkt = await stalled.wait_for(PacketType.ASCII_FRAME, timeout=deadline - loop.time())
        frame = AsciiFrame.decode(pkt.payload)
        if b"38;2;7;7;7m" in frame.text:
            newest = frame
            break
        stale_frames += 1
    assert newest is not None
    # Only what already sat in the kernel's socket buffers (a few 500 KB frames) came before it,
    # not the 40 frames the sender produced while this receiver was stalled.
    assert stale_frames < 20, stale_frames
    # The uniform frame itself, not a noise frame that queued up behind it.
    assert set(re.findall(rb"38;2;(\d+);(\d+);(\d+)m", newest.text)) == {(b"7", b"7", b"7")}
    for c in (sender, stalled, healthy):
        await c.close()


async def test_stream_stop_removes_tile(start_server, helpers):
    server = await start_server()
    a = await helpers.AcipClient.connect(server.tcp_port)
    b = await helpers.AcipClient.connect(server.tcp_port)
    await a.send(PacketType.IMAGE_FRAME, helpers.image_payload())
    await b.send(PacketType.IMAGE_FRAME, helpers.image_payload(shade=10))
    await helpers.wait_until(lambda: server.room.video_count == 2)
    await b.send(PacketType.STREAM_STOP, helpers.stream_payload(StreamType.VIDEO))
    await helpers.wait_until(lambda: server.room.video_count == 1)
    await a.send(PacketType.IMAGE_FRAME, helpers.image_payload(shade=99))
    # a's grid shrinks from 2 tiles to 1: CLEAR_CONSOLE then a frame.
    await a.wait_for(PacketType.CLEAR_CONSOLE)
    await a.wait_for(PacketType.ASCII_FRAME)
    await a.close()
    await b.close()


async def test_ping_answered_promptly_while_video_flows(start_server, helpers):
    """PONG must not wait behind rendering: c41 clients drop after 1-2 s without input."""
    server = await start_server()
    caps = ClientCapabilities(width=80, height=24, color_level=3, palette_type=1, desired_fps=60).encode()
    senders = [await helpers.AcipClient.connect(server.tcp_port) for _ in range(3)]
    viewers = [await helpers.AcipClient.connect(server.tcp_port, caps=caps) for _ in range(3)]
    pinger = await helpers.AcipClient.connect(server.tcp_port, caps=caps)
    rng = np.random.default_rng(5)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    async def stream(client):
        while not stop.is_set():
            await client.send(PacketType.IMAGE_FRAME, _noise_frame(rng, 320, 240))
            await asyncio.sleep(1 / 30)

    async def drain(client):
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await client.packet(timeout=0.1)

    tasks = [asyncio.create_task(stream(s)) for s in senders] + [asyncio.create_task(drain(v)) for v in viewers]
    rtts = []
    try:
        await asyncio.sleep(0.3)
        for _ in range(10):
            sent = loop.time()
            await pinger.send(PacketType.PING)
            await pinger.wait_for(PacketType.PONG, timeout=2)
            rtts.append(loop.time() - sent)
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert server.metrics.frames_out > 20
    assert max(rtts) < 0.5, rtts
    for c in [*senders, *viewers, pinger]:
        await c.close()


async def test_resize_rerenders_at_new_size_after_clear(start_server, helpers):
    server = await start_server()
    client = await helpers.AcipClient.connect(server.tcp_port)
    await client.send(PacketType.IMAGE_FRAME, helpers.image_payload())
    await client.wait_for(PacketType.CLEAR_CONSOLE)
    first = AsciiFrame.decode((await client.wait_for(PacketType.ASCII_FRAME)).payload)
    assert (first.width, first.height) == (40, 12)
    await client.send(PacketType.CLIENT_CAPABILITIES, helpers.caps_payload(70, 20))
    # No new video needed: the resize alone triggers CLEAR_CONSOLE and a frame at the new size.
    while True:
        pkt = await client.packet()
        if pkt.type == PacketType.CLEAR_CONSOLE:
            break
        assert pkt.type != PacketType.ASCII_FRAME or AsciiFrame.decode(pkt.payload).width == 40
    resized = AsciiFrame.decode((await client.wait_for(PacketType.ASCII_FRAME)).payload)
    assert (resized.width, resized.height) == (70, 20)
    await client.close()


@pytest.mark.parametrize("slice_s", [None, 0.0])
async def test_many_distinct_receivers_all_served(start_server, helpers, monkeypatch, slice_s):
    """Receivers with different terminal sizes cost one render each; the tick yields between slices
    and still serves every receiver (none starves behind the others). slice 0 = yield after every render."""
    if slice_s is not None:
        monkeypatch.setattr(room_module, "RENDER_SLICE_S", slice_s)
    server = await start_server()
    sender = await helpers.AcipClient.connect(server.tcp_port)
    viewers = []
    for i in range(8):
        caps = ClientCapabilities(width=100 + 7 * i, height=30 + i, color_level=3, palette_type=1).encode()
        viewers.append(await helpers.AcipClient.connect(server.tcp_port, caps=caps))
    await helpers.wait_until(lambda: server.room.joined_count == 9)
    rng = np.random.default_rng(9)
    for _ in range(5):
        await sender.send(PacketType.IMAGE_FRAME, _noise_frame(rng, 320, 240))
        await asyncio.sleep(0.05)
    for i, viewer in enumerate(viewers):
        frame = AsciiFrame.decode((await viewer.wait_for(PacketType.ASCII_FRAME)).payload)
        assert (frame.width, frame.height) == (100 + 7 * i, 30 + i)
    await sender.send(PacketType.PING)
    await sender.wait_for(PacketType.PONG)
    for c in [sender, *viewers]:
        await c.close()
