"""Slow and hostile peers: each gets the documented error or close, the server stays bounded, others keep their rate."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import socket
import struct
import sys
from pathlib import Path

import aiohttp
import psutil
import pytest

from asciichat_server.protocol.constants import MAGIC, MAX_PAYLOAD, PacketType, StreamType
from asciichat_server.protocol.packets import encode_packet
from asciichat_server.protocol.payloads import ClientCapabilities, ErrorMessage, ProtocolVersion
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

UPGRADE = (
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Protocol: acip\r\n\r\n"
)


@pytest.fixture
async def server(caplog):
    caplog.set_level(logging.INFO)
    servers: list[AsciiChatServer] = []

    async def start(**overrides) -> AsciiChatServer:
        values = {"addresses": ["127.0.0.1"], "websocket": True, "websocket_port": 0, **overrides}
        srv = AsciiChatServer(s.make_config(**values))
        await srv.start()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        await srv.stop()
    assert not s.bad_records(caplog.records)


async def _trickle(writer: asyncio.StreamWriter, data: bytes, gap_s: float = 0.2) -> int:
    """Write one byte every ``gap_s`` until done or the peer is gone; return bytes written."""
    sent = 0
    with contextlib.suppress(ConnectionError, OSError):
        for byte in data:
            if writer.is_closing():
                break
            writer.write(bytes([byte]))
            await writer.drain()
            sent += 1
            await asyncio.sleep(gap_s)
    return sent


async def test_slowloris_tcp_handshake_is_cut_at_the_handshake_timeout(server):
    srv = await server(handshake_timeout_s=1.2)
    raw = await s.RawClient.connect(srv.tcp_port)
    hello = encode_packet(PacketType.PROTOCOL_VERSION, ProtocolVersion(supports_encryption=1).encode()) * 4
    loop = asyncio.get_running_loop()
    started = loop.time()
    trickle = asyncio.create_task(_trickle(raw.writer, hello))
    assert await raw.closed_by_server(timeout=10)
    elapsed = loop.time() - started
    trickle.cancel()
    # Bytes kept arriving, yet the whole handshake has one deadline (not reset by each byte).
    assert 1.0 <= elapsed < 6.0, elapsed
    assert srv.metrics.timeouts == 1 and srv.metrics.handshakes_failed == 1
    await s.wait_until(lambda: srv.room.client_count == 0)
    await raw.close()


async def test_slowloris_ws_upgrade_is_closed_without_a_slot(server):
    srv = await server()
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.ws_port)
    loop = asyncio.get_running_loop()
    started = loop.time()
    trickle = asyncio.create_task(_trickle(writer, UPGRADE))
    # The request needs ~36 s at this pace; the HTTP keep-alive limit (5 s) ends it long before.
    data = await asyncio.wait_for(reader.read(1024), 12)
    elapsed = loop.time() - started
    sent = await trickle
    assert data == b"" or data.startswith(b"HTTP/1.1 4"), data[:60]
    assert elapsed < 10 and sent < len(UPGRADE), (elapsed, sent)
    assert srv.room.client_count == 0 and srv.metrics.connections_total == 0
    writer.close()


async def test_oversize_length_5mib_plus_one_tcp_and_ws(server):
    srv = await server()
    # TCP: rejected from the header alone, the 5 MiB never needs to arrive.
    raw = await s.RawClient.connect(srv.tcp_port)
    await raw.send_raw(struct.pack(">QHIII", MAGIC, PacketType.IMAGE_FRAME, MAX_PAYLOAD + 1, 0, 0))
    assert await raw.closed_by_server(timeout=10)
    error = ErrorMessage.decode(raw.pending[0].payload)
    assert error.code == 44 and "exceeds" in error.message, error
    await raw.close()
    # In an open plaintext session the limit is MAX_PAYLOAD itself: 5 MiB + 1 is refused, 5 MiB waits.
    plain = await server(encrypt=False, websocket=False)
    for length, refused in ((MAX_PAYLOAD + 1, True), (MAX_PAYLOAD, False)):
        raw = await s.RawClient.connect(plain.tcp_port)
        await raw.send(PacketType.CLIENT_CAPABILITIES, s.caps_payload())
        await raw.wait_for(PacketType.SERVER_STATE)
        await raw.send_raw(struct.pack(">QHIII", MAGIC, PacketType.IMAGE_FRAME, length, 0, 0))
        assert await raw.closed_by_server(timeout=0.5 if not refused else 10) is refused, length
        if refused:
            error = ErrorMessage.decode(raw.pending[-1].payload)
            assert error.code == 44 and f"exceeds the {MAX_PAYLOAD}-byte limit" in error.message, error
        await raw.close()
    # WS: one whole 5 MiB + 1 message is read (the WS limit has room for a header), then refused.
    ws = await s.RawWsClient.connect(srv.ws_port)
    await ws.next_event()
    header = struct.pack(">QHIII", MAGIC, PacketType.IMAGE_FRAME, MAX_PAYLOAD + 1, 0, 0)
    await ws.write(ws.frame(header + bytes(MAX_PAYLOAD + 1), True))
    close = await ws.wait_closed(10)
    assert close is not None and close.code == 1002 and "exceeds" in close.reason, close
    await ws.aclose()
    await s.wait_until(lambda: srv.room.client_count == 0)
    assert srv.metrics.frames_in == 0 and srv.metrics.protocol_errors == 2
    assert plain.metrics.frames_in == 0 and plain.metrics.protocol_errors == 1


async def test_video_before_the_tcp_handshake_gets_error_44(server):
    srv = await server()
    raw = await s.RawClient.connect(srv.tcp_port)
    await raw.send(PacketType.IMAGE_FRAME, s.image_payload())
    assert await raw.closed_by_server(timeout=10)
    error = ErrorMessage.decode(raw.pending[0].payload)
    assert error.code == 44 and "IMAGE_FRAME" in error.message
    assert srv.metrics.frames_in == 0 and srv.room.video_count == 0
    await raw.close()


async def test_video_before_the_ws_handshake_never_reaches_a_password_room(server):
    srv = await server(password="correct horse", handshake_timeout_s=3)
    ws = await s.RawWsClient.connect(srv.ws_port)
    await ws.next_event()  # the server speaks first; we never answer the key exchange
    caps = ClientCapabilities(width=40, height=12).encode()
    await ws.write(ws.frame(encode_packet(PacketType.CLIENT_CAPABILITIES, caps), True))
    await ws.write(ws.frame(encode_packet(PacketType.STREAM_START, s.stream_payload(StreamType.VIDEO)), True))
    await ws.write(ws.frame(encode_packet(PacketType.IMAGE_FRAME, s.image_payload()), True))
    await asyncio.sleep(0.5)
    seen = (srv.metrics.frames_in, srv.room.video_count)
    await ws.aclose()
    assert seen == (0, 0), f"frames_in, video sources from an unauthenticated peer: {seen}"


async def _measure(sender, receiver_frames: list[float], frames: int = 30, fps: float = 15.0) -> int:
    """Stream ``frames`` distinct frames at ``fps``; return how many ASCII_FRAMEs the receiver got meanwhile."""
    before = len(receiver_frames)
    for i in range(frames):
        await sender.send(PacketType.IMAGE_FRAME, s.image_payload(shade=(i * 7 + 3) % 256))
        await asyncio.sleep(1 / fps)
    await asyncio.sleep(0.3)
    return len(receiver_frames) - before


async def test_hostile_peers_keep_memory_bounded_and_others_frame_rate(server):
    srv = await server(max_clients=12, handshake_timeout_s=30)
    sender = await s.AcipClient.connect(srv.tcp_port)
    healthy = await s.AcipClient.connect(srv.tcp_port, caps=s.caps_payload(fps=60))
    await s.wait_until(lambda: srv.room.joined_count == 2)
    received: list[float] = []
    loop = asyncio.get_running_loop()

    async def count_frames() -> None:
        while not stop.is_set():
            pkt = await healthy.packet(timeout=60)
            if pkt.type == PacketType.ASCII_FRAME:
                received.append(loop.time())

    async def drain_sender() -> None:  # a well-behaved sender reads what it is sent
        while not stop.is_set():
            await sender.packet(timeout=60)

    # Loops end on this flag, not only on cancel(): Python 3.11's wait_for can swallow a cancellation
    # that lands together with its own timeout, and a `while True` would then never end.
    stop = asyncio.Event()
    counter = asyncio.create_task(count_frames())
    sender_reader = asyncio.create_task(drain_sender())
    tasks: list[asyncio.Task] = []
    try:
        # Every step is bounded, so a stall fails here with its name instead of at pytest's timeout.
        await asyncio.wait_for(_measure(sender, received, frames=5), 60)  # warm the render caches
        undisturbed = await asyncio.wait_for(_measure(sender, received), 60)

        # A joined receiver of big frames that never reads.
        big = ClientCapabilities(width=300, height=100, color_level=3, palette_type=1, desired_fps=60).encode()
        deaf = await s.AcipClient.connect(srv.tcp_port, caps=big)
        deaf.raw.writer.transport.pause_reading()
        deaf_session = max(srv.room.clients.values(), key=lambda c: c.id)
        # A PING flood from a client that reads its PONGs.
        flooder = await s.AcipClient.connect(srv.tcp_port)
        pongs = 0

        async def ping_flood() -> None:
            nonlocal pongs
            while not stop.is_set():
                for _ in range(100):
                    flooder.conn.send(PacketType.PING)
                await flooder.flush()
                with contextlib.suppress(TimeoutError):
                    while not stop.is_set():
                        pkt = await flooder.packet(timeout=0.02)
                        pongs += pkt.type == PacketType.PONG

        # 1-byte WebSocket frames of one endless message, and a byte-a-time TCP handshake.
        async def one_byte_frames() -> None:
            ws = await s.RawWsClient.connect(srv.ws_port)
            with contextlib.suppress(ConnectionError, OSError):
                while not ws.writer.is_closing() and not stop.is_set():
                    ws.writer.write(b"".join(ws.frame(b"\x00", False) for _ in range(200)))
                    await ws.writer.drain()
                    await asyncio.sleep(0.01)

        slow = await s.RawClient.connect(srv.tcp_port)
        hello = encode_packet(PacketType.PROTOCOL_VERSION, ProtocolVersion(supports_encryption=1).encode())
        tasks = [
            asyncio.create_task(ping_flood()),
            asyncio.create_task(one_byte_frames()),
            asyncio.create_task(_trickle(slow.writer, hello)),
        ]
        rss_before = psutil.Process().memory_info().rss
        disturbed = await asyncio.wait_for(_measure(sender, received), 60)
        rss_growth = psutil.Process().memory_info().rss - rss_before

        # The deaf receiver's lanes stay bounded: a short control queue, one pending video frame.
        assert len(deaf_session.control) <= srv.config.send_queue_limit
        assert deaf_session.audio.maxlen is not None and len(deaf_session.audio) <= deaf_session.audio.maxlen
        buffered = deaf_session.link._writer.transport.get_write_buffer_size()
        assert buffered < 8 * 1024 * 1024, buffered
        assert rss_growth < 64 * 1024 * 1024, rss_growth
        assert pongs > 100, pongs
        for session in srv.room.clients.values():
            assert len(session.control) <= srv.config.send_queue_limit
        print(f"healthy receiver: {undisturbed} frames undisturbed, {disturbed} beside the hostile peers")
        # The healthy receiver is not slowed by any of them (within 10 %).
        assert disturbed >= 0.9 * undisturbed, (undisturbed, disturbed)
        assert undisturbed >= 20, undisturbed
    finally:
        stop.set()
        everything = [*tasks, counter, sender_reader]
        for task in everything:
            task.cancel()
        _done, stuck = await asyncio.wait(everything, timeout=10)
        assert not stuck, stuck
    for c in (sender, healthy):
        await asyncio.wait_for(c.close(), 10)


async def test_flood_of_1_byte_ws_messages_is_dropped_and_session_survives(server):
    """Messages shorter than a header are dropped (c41 does too: a browser heartbeat); the session lives on."""
    srv = await server()
    async with aiohttp.ClientSession() as http:
        client = await s.AcipWsClient.connect(http, srv.ws_port)
        await client.join(video=False)
        await client.pump_until(lambda: bool(client.of_type(PacketType.SERVER_STATE)))
        for _ in range(5000):
            await client.ws.send_bytes(b"\x00")
        await client.send(PacketType.PING, b"")
        await client.pump_until(lambda: bool(client.of_type(PacketType.PONG)), timeout=10)
        assert srv.metrics.protocol_errors == 0 and srv.room.client_count == 1
        await client.close()


async def test_one_byte_fragments_of_garbage_end_in_a_protocol_error_close(server):
    """1-byte frames are reassembled (each is progress); the whole message is then judged: bad magic -> 1002."""
    srv = await server()
    ws = await s.RawWsClient.connect(srv.ws_port)
    await ws.next_event()
    garbage = bytes(range(1, 65))
    ws.writer.write(b"".join(ws.frame(garbage[i : i + 1], i == len(garbage) - 1) for i in range(len(garbage))))
    await ws.writer.drain()
    close = await ws.wait_closed(10)
    assert close is not None and close.code == 1002 and "magic" in close.reason, close
    await ws.aclose()
    await s.wait_until(lambda: srv.room.client_count == 0)
    assert srv.metrics.protocol_errors == 1 and srv.metrics.frames_in == 0


async def test_ping_flood_from_a_peer_that_never_reads_is_cut_at_the_send_queue_limit(server, caplog):
    """PONGs pile up behind a full socket; at send_queue_limit queued packets the server drops the peer."""
    caplog.set_level(logging.DEBUG)
    srv = await server(encrypt=False, websocket=False, send_queue_limit=64)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # small, so the server's side fills sooner
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", srv.tcp_port))
    _reader, writer = await asyncio.open_connection(sock=sock)
    writer.transport.pause_reading()
    writer.write(encode_packet(PacketType.CLIENT_CAPABILITIES, s.caps_payload()))
    burst = encode_packet(PacketType.PING) * 2000
    sent = 0
    with contextlib.suppress(ConnectionError, OSError):
        while srv.room.client_count and sent < 400_000:
            writer.write(burst)
            await writer.drain()
            sent += 2000
            session = next(iter(srv.room.clients.values()), None)
            if session is not None:
                assert len(session.control) <= 64
    await s.wait_until(lambda: srv.room.client_count == 0, timeout=20)
    # The disconnect line is written once the link is closed, a moment after the slot is freed.
    await s.wait_until(lambda: any("reason=send queue overflow" in r.getMessage() for r in caplog.records), 10)
    writer.transport.abort()
