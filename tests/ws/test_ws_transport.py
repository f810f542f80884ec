"""The WebSocket port with real aiohttp clients and raw wsproto frames on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from wsproto.events import BytesMessage, CloseConnection

from asciichat_server.log import LINE_RE, TextFormatter, reset_rate_limits
from asciichat_server.transport.ws import WS_MAX_MSG_SIZE, close_code_for

IMAGE_FRAME = 3001


@contextlib.asynccontextmanager
async def ws_client(url: str, **kwargs: Any) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    """A real aiohttp client asking for the acip subprotocol."""
    async with aiohttp.ClientSession() as session, session.ws_connect(url, protocols=("acip",), **kwargs) as ws:
        yield ws


def _image_frame(make_packet, size: int = 230 * 1024) -> bytes:
    return make_packet(IMAGE_FRAME, os.urandom(size))


def _lines(caplog: pytest.LogCaptureFixture, tag: str) -> list[str]:
    formatter = TextFormatter()
    return [formatter.format(r) for r in caplog.records if tag in r.getMessage()]


async def test_subprotocol_echoed_and_no_compression(ws_factory, make_packet) -> None:
    server = await ws_factory()
    # The client offers permessage-deflate; the server must not take it (ACIP 6.2).
    async with ws_client(server.url + "/", compress=15) as ws:
        assert ws.protocol == "acip"
        assert ws.compress == 0
        await ws.send_bytes(make_packet(1, b"x" * 16))
        msg = await ws.receive(timeout=5)
        assert msg.type is aiohttp.WSMsgType.BINARY
        assert msg.data == make_packet(1, b"x" * 16)


@pytest.mark.parametrize("path", ["/", "/acip", "/some/deep/path?x=1", "/health"])
async def test_any_path_upgrades(ws_factory, make_packet, path: str) -> None:
    server = await ws_factory()
    async with aiohttp.ClientSession() as session, session.ws_connect(server.url + path, protocols=("acip",)) as ws:
        await ws.send_bytes(make_packet(2, b"hello"))
        assert (await ws.receive(timeout=5)).data == make_packet(2, b"hello")


async def test_raw_client_sees_acip_header_and_no_extension(ws_factory, raw_client) -> None:
    server = await ws_factory()
    client = await raw_client.connect(server.port)
    assert client.subprotocol == "acip"
    assert client.extensions == []
    await client.aclose()


async def test_fragmented_230k_image_frame_reassembled(ws_factory, raw_client, make_packet) -> None:
    server = await ws_factory()
    client = await raw_client.connect(server.port)
    frame = _image_frame(make_packet)
    await client.send_fragmented(frame, fragment_size=4096)
    event = await client.next_event()
    assert isinstance(event, BytesMessage)
    assert event.data == frame
    assert server.room.received == [frame]
    await client.aclose()


async def test_each_message_is_one_packet(ws_factory, make_packet) -> None:
    server = await ws_factory()
    packets = [make_packet(3000 + i, os.urandom(n)) for i, n in enumerate((0, 1, 4095, 4096, 70_000, 300_000))]
    async with aiohttp.ClientSession() as session, session.ws_connect(server.url, protocols=("acip",)) as ws:
        for p in packets:
            await ws.send_bytes(p)
        echoed = [(await ws.receive(timeout=5)).data for _ in packets]
    assert echoed == packets
    assert server.room.received == packets


async def test_largest_packet_fits_and_bigger_is_refused(ws_factory, make_packet, caplog) -> None:
    server = await ws_factory()
    biggest = make_packet(IMAGE_FRAME, b"\xab" * (5 * 1024 * 1024)) + b"\0" * 62  # ENCRYPTED overhead
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(server.url, protocols=("acip",), max_msg_size=0) as ws:
            await ws.send_bytes(biggest)
            msg = await ws.receive(timeout=10)
            assert msg.type is aiohttp.WSMsgType.BINARY and len(msg.data) == len(biggest)
        await server.wait_for(lambda: len(_lines(caplog, "[WS_DISCONNECT]")) == 1)
        reset_rate_limits()  # [WS_DISCONNECT] is rate limited per call site
        async with session.ws_connect(server.url, protocols=("acip",), max_msg_size=0) as ws:
            try:
                await ws.send_bytes(b"\0" * (WS_MAX_MSG_SIZE + 1))
            except ConnectionError:
                pass  # the server refuses at the frame header and closes while we still write
            msg = await ws.receive(timeout=10)
            # The close frame may be lost to the RST that unread data causes; the log says why.
            if msg.type is aiohttp.WSMsgType.CLOSE:
                assert msg.data == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
    await server.wait_for(lambda: server.metrics.slots_used == 0)
    await server.wait_for(lambda: len(_lines(caplog, "[WS_DISCONNECT]")) == 2)
    assert "exceeds limit" in _lines(caplog, "[WS_DISCONNECT]")[1]


async def test_text_message_closes_with_reason(ws_factory, caplog) -> None:
    server = await ws_factory()
    async with aiohttp.ClientSession() as session, session.ws_connect(server.url, protocols=("acip",)) as ws:
        await ws.send_str("hello")
        msg = await ws.receive(timeout=5)
        assert msg.type is aiohttp.WSMsgType.CLOSE
        assert msg.data == 1003
        assert "binary" in msg.extra
    await server.wait_for(lambda: server.metrics.slots_used == 0)
    await server.wait_for(lambda: bool(_lines(caplog, "[WS_DISCONNECT]")))
    assert "active=true, reason=text message received" in _lines(caplog, "[WS_DISCONNECT]")[0]


async def test_short_messages_dropped_connection_kept(ws_factory, make_packet) -> None:
    server = await ws_factory()
    async with aiohttp.ClientSession() as session, session.ws_connect(server.url, protocols=("acip",)) as ws:
        await ws.send_bytes(b"\xff")  # the browser's optional heartbeat byte
        await ws.send_bytes(b"")
        await ws.send_bytes(make_packet(5, b"ok"))
        msg = await ws.receive(timeout=5)
        assert msg.data == make_packet(5, b"ok")
    assert server.room.received == [make_packet(5, b"ok")]


# --- reassembly timeout --------------------------------------------------------------------------


async def test_gaps_of_1_9s_pass(ws_factory, raw_client, make_packet, caplog) -> None:
    server = await ws_factory()
    client = await raw_client.connect(server.port)
    frame = _image_frame(make_packet)
    await client.send_fragmented(frame, fragment_size=4096, gaps={0: 1.9, 30: 1.9})
    event = await client.next_event()
    assert isinstance(event, BytesMessage) and event.data == frame
    assert server.metrics.reassembly_timeouts == 0
    assert not _lines(caplog, "dropped")
    # The reassembled message is logged with its longest gap: a near miss, visible in the log.
    (line,) = _lines(caplog, "[WS_REASSEMBLY]")
    match = re.search(r"\[WS_REASSEMBLY\] reassembled: fragments=58, elapsed=(\d\.\d\d)s/2s, size=235542", line)
    # (Under heavy load our own loop's lateness is part of the measured gap, so no upper bound.)
    assert match and float(match[1]) >= 1.9, line
    await client.aclose()


async def test_gap_of_2_1s_drops_message_closes_and_frees_slot(ws_factory, raw_client, make_packet, caplog) -> None:
    server = await ws_factory()
    client = await raw_client.connect(server.port)
    frame = _image_frame(make_packet)
    await server.wait_for(lambda: server.metrics.slots_used == 1)
    for index in range(10):
        await client.write(client.frame(frame[index * 4096 : (index + 1) * 4096], False))
    rest = client.frame(frame[10 * 4096 :], True)  # framed now: wsproto refuses once closed
    started = time.monotonic()
    await asyncio.sleep(2.1)
    close = await client.wait_closed()
    assert isinstance(close, CloseConnection)
    assert close.code == 1008
    assert close.reason == "reassembly timeout"
    # What the peer sends after the gap must not complete the dropped message.
    try:
        await client.write(rest)
    except ConnectionError:
        pass
    await server.wait_for(lambda: server.metrics.slots_used == 0)
    assert time.monotonic() - started < 4
    assert server.room.received == []
    assert server.room.released == 1
    assert server.metrics.reassembly_timeouts == 1
    lines = _lines(caplog, "[WS_REASSEMBLY]")
    assert len(lines) == 1
    line = lines[0]
    assert re.match(LINE_RE, line), line
    assert "[WARN ]" in line
    match = re.search(r"fragments=(\d+), elapsed=(\d+\.\d\d)s/2s, size=(\d+)", line)
    assert match, line
    assert int(match[1]) == 10
    assert 2.0 <= float(match[2]) < 2.5
    assert int(match[3]) == 10 * 4096
    assert "[every=10s suppressed=0]" in line
    disconnects = _lines(caplog, "[WS_DISCONNECT]")
    assert len(disconnects) == 1 and "reassembly timeout" in disconnects[0]
    assert "id=1," in disconnects[0] and "cleanup=done" in disconnects[0]
    await client.aclose()


async def test_configured_timeout_and_pings_do_not_extend_it(ws_factory, raw_client, make_packet, caplog) -> None:
    server = await ws_factory(reassembly_timeout_s=0.5)
    # 0.4 s gaps pass with a 0.5 s timeout...
    client = await raw_client.connect(server.port)
    frame = make_packet(IMAGE_FRAME, os.urandom(20_000))
    await client.send_fragmented(frame, fragment_size=4096, gaps={0: 0.4, 2: 0.4})
    assert (await client.next_event()).data == frame
    # ...but pings between fragments are not progress of the message: the close comes 0.5 s
    # after the fragment, not 0.5 s after the last ping.
    await client.write(client.frame(frame[:4096], False))
    started = time.monotonic()
    for _ in range(2):
        await asyncio.sleep(0.2)
        await client.ping()
    close = await client.wait_closed()
    assert isinstance(close, CloseConnection) and close.code == 1008
    assert 0.45 < time.monotonic() - started < 1.5
    await server.wait_for(lambda: server.metrics.slots_used == 0)
    (line,) = _lines(caplog, "[WS_REASSEMBLY] message dropped")
    match = re.search(r"fragments=1, elapsed=(\d\.\d\d)s/0\.5s, size=4096, age=(\d\.\d\d)s", line)
    assert match, line
    # Had a ping counted, the gap (elapsed) would be >= 0.4 s shorter than the message's age.
    assert abs(float(match[2]) - float(match[1])) <= 0.02, line


async def test_zero_timeout_turns_the_timer_off(ws_factory, raw_client, make_packet) -> None:
    server = await ws_factory(reassembly_timeout_s=0)
    client = await raw_client.connect(server.port)
    frame = make_packet(IMAGE_FRAME, os.urandom(10_000))
    await client.send_fragmented(frame, fragment_size=4096, gaps={0: 0.3})
    assert (await client.next_event()).data == frame
    (link,) = server.listener.links
    assert link._ws.watchdog is not None and link._ws.watchdog._timer is None  # still reorders, never times
    assert server.metrics.reassembly_timeouts == 0
    await client.aclose()


async def test_stall_inside_one_frame_is_dropped(ws_factory, raw_client, make_packet) -> None:
    server = await ws_factory(reassembly_timeout_s=0.3)
    client = await raw_client.connect(server.port)
    whole = client.frame(make_packet(IMAGE_FRAME, os.urandom(50_000)), True)  # one FIN frame
    await client.write(whole[:20_000])
    close = await client.wait_closed()
    assert isinstance(close, CloseConnection) and close.code == 1008
    await server.wait_for(lambda: server.metrics.slots_used == 0)
    assert server.metrics.reassembly_timeouts == 1


async def test_slow_room_is_not_a_stalled_peer(ws_factory, raw_client, make_packet, echo_room) -> None:
    # The room does not read for 1 s: aiohttp stops reading the socket, so bytes of the next
    # message stop "arriving" — that must not count as the peer stalling.
    server = await ws_factory(lambda m: echo_room(m, recv_delay_s=1.0), reassembly_timeout_s=0.3)
    client = await raw_client.connect(server.port)
    frames = [make_packet(IMAGE_FRAME, os.urandom(230 * 1024)) for _ in range(12)]

    async def send_all() -> None:
        for f in frames:
            await client.send_fragmented(f, 64 * 1024)

    sender = asyncio.ensure_future(send_all())
    got = [(await client.next_event(10)).data for _ in frames]
    await sender
    assert got == frames
    assert server.metrics.reassembly_timeouts == 0
    await client.aclose()


async def test_early_frames_behind_upgrade_are_tracked(ws_factory, raw_client, make_packet) -> None:
    # Frames pipelined right behind the upgrade request reach the reader before the watchdog
    # is in place; the scanner must still stay in step with the frame boundaries.
    server = await ws_factory(reassembly_timeout_s=0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    client = raw_client(reader, writer)
    from wsproto.events import Request

    first = make_packet(7, os.urandom(3000))
    request = client.conn.send(Request(host="x", target="/", subprotocols=["acip"]))
    # wsproto refuses to frame before the handshake is done, so frame the message by hand.
    head = bytes((0x82, 0x80 | 126)) + len(first).to_bytes(2, "big") + b"\0\0\0\0"
    writer.write(request + head + first)
    await writer.drain()
    data = b""
    while b"\r\n\r\n" not in data:
        data += await asyncio.wait_for(reader.read(65536), 5)
    body = data.split(b"\r\n\r\n", 1)[1]
    while len(body) < 4 + len(first):
        body += await asyncio.wait_for(reader.read(65536), 5)
    assert body[4 : 4 + len(first)] == first
    await server.wait_for(lambda: server.room.received == [first])
    link = next(iter(server.listener.links))
    watchdog = link._ws.watchdog
    assert watchdog is not None and watchdog.scanner.messages == 1 and not watchdog.scanner.in_message
    writer.close()


# --- HTTP on the WebSocket port -------------------------------------------------------------------


async def test_health_and_metrics(ws_factory, make_packet) -> None:
    server = await ws_factory()
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(server.url, protocols=("acip",)) as ws:
            await ws.send_bytes(make_packet(1, b"abc"))
            await ws.receive(timeout=5)
            async with session.get(server.url + "/health") as resp:
                assert resp.status == 200
                assert resp.content_type == "application/json"
                health = json.loads(await resp.text())
            async with session.get(server.url + "/metrics") as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
                metrics_text = await resp.text()
        async with session.get(server.url + "/nope") as resp:
            assert resp.status == 404
        async with session.post(server.url + "/health") as resp:
            assert resp.status == 405
    assert health["status"] == "ok"
    assert health["version"] and health["protocol"] == "1.0"
    assert health["clients"] == 1
    assert health["slots_free"] == 8
    assert health["websocket_clients"] == 1
    samples = {}
    for line in metrics_text.splitlines():
        if line.startswith("#"):
            assert re.match(r"# (HELP|TYPE) asciichat_\w+ ", line), line
            continue
        name, value = line.rsplit(" ", 1)
        samples[name] = float(value)
    assert samples["asciichat_connections_total"] == 1
    assert samples["asciichat_slots_used"] == 1
    assert samples["asciichat_slots_max"] == 9
    assert samples["asciichat_slots_free"] == 8
    assert samples['asciichat_frames_total{direction="in"}'] == 1
    assert samples['asciichat_bytes_total{direction="out"}'] == 25
    assert samples['asciichat_handshakes_total{result="ok"}'] == 0
    assert samples["asciichat_reassembly_timeouts_total"] == 0
    assert samples["asciichat_websocket_clients"] == 1
    assert "# TYPE asciichat_frames_total counter" in metrics_text
    # one TYPE line per family, even for labelled pairs
    assert metrics_text.count("# TYPE asciichat_bytes_total ") == 1


async def test_shutdown_closes_every_client_quickly(ws_factory, make_packet, caplog) -> None:
    server = await ws_factory()
    async with aiohttp.ClientSession() as session:
        clients = [await session.ws_connect(server.url, protocols=("acip",)) for _ in range(5)]
        for ws in clients:
            await ws.send_bytes(make_packet(1, b"x"))
            await ws.receive(timeout=5)
        started = time.monotonic()
        await server.listener.close()
        assert time.monotonic() - started < 2.0
        for ws in clients:
            msg = await ws.receive(timeout=2)
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            if msg.type is aiohttp.WSMsgType.CLOSE:
                assert msg.data == 1001
            await ws.close()
    assert server.metrics.slots_used == 0
    assert server.room.released == 5
    with pytest.raises(aiohttp.ClientConnectionError):
        async with aiohttp.ClientSession() as session:
            await session.ws_connect(server.url, protocols=("acip",), timeout=aiohttp.ClientWSTimeout(ws_close=1))


async def test_connect_and_disconnect_are_logged(ws_factory, make_packet, caplog) -> None:
    server = await ws_factory()
    async with ws_client(server.url + "/room") as ws:
        await ws.send_bytes(make_packet(1, b"x"))
        await ws.receive(timeout=5)
    await server.wait_for(lambda: server.room.released == 1)
    await server.wait_for(lambda: bool(_lines(caplog, "[WS_DISCONNECT]")))
    (connect,) = _lines(caplog, "[WS_CONNECT]")
    (disconnect,) = _lines(caplog, "[WS_DISCONNECT]")
    for line in (connect, disconnect):
        assert re.match(LINE_RE, line), line
        assert "[DEBUG]" in line and "transport/ws.py:" in line
    assert "path=/room" in connect and "subprotocol=acip" in connect
    # The peer closed first, so the connection was no longer active when the session ended.
    assert re.search(r"\(id=1, cleanup=done, active=false, reason=peer closed \(1000\)", disconnect), disconnect


async def test_logged_path_cannot_fake_fields(ws_factory, make_packet, caplog) -> None:
    server = await ws_factory()
    async with ws_client(server.url + "/a%2C%20reason=forged") as ws:
        await ws.send_bytes(make_packet(1, b"x"))
        await ws.receive(timeout=5)
    (connect,) = _lines(caplog, "[WS_CONNECT]")
    # The client sends "/a,%20reason=forged"; logged as sent, the space stays encoded.
    assert "%20reason=forged, subprotocol=acip" in connect and ", reason=" not in connect


async def test_peer_close_reason_cannot_fake_fields(ws_factory, make_packet, caplog) -> None:
    server = await ws_factory()
    async with ws_client(server.url) as ws:
        await ws.send_bytes(make_packet(1, b"x"))
        await ws.receive(timeout=5)
        await ws.close(message=b"bye, id=99\ncleanup=forged")
    await server.wait_for(lambda: bool(_lines(caplog, "[WS_DISCONNECT]")))
    (line,) = _lines(caplog, "[WS_DISCONNECT]")
    assert "\n" not in line and "id=99" not in line and "cleanup=forged" not in line
    assert "(id=1, cleanup=done," in line and "reason=peer closed (1000: bye, id:99 cleanup:forged)" in line


async def test_ipv4_and_ipv6_listeners_in_one_site(ws_factory, make_packet) -> None:
    try:
        server = await ws_factory(hosts=("127.0.0.1", "::1"))
    except OSError:
        pytest.skip("no IPv6 loopback")
    assert server.listener.addresses == [f"127.0.0.1:{server.port}", f"[::1]:{server.port}"]
    for host in ("127.0.0.1", "[::1]"):
        async with ws_client(f"http://{host}:{server.port}/") as ws:
            await ws.send_bytes(make_packet(1, host.encode()))
            assert (await ws.receive(timeout=5)).data == make_packet(1, host.encode())
    await server.wait_for(lambda: server.room.released == 2)


# --- sending -----------------------------------------------------------------------------------------


class BlastRoom:
    """Sends ``count`` distinct large packets at once from as many tasks (worse than the contract)."""

    # 64 x 230 KB is more than loopback's socket buffers hold, so the sends must wait for the peer.
    def __init__(self, metrics, make_packet, count: int = 64, size: int = 230 * 1024) -> None:
        self.metrics = metrics
        self.packets = [make_packet(3000, bytes([i]) * size) for i in range(count)]
        self.released = 0
        self.received: list[bytes] = []

    async def serve(self, link) -> None:
        self.metrics.slots_used += 1
        try:
            await asyncio.gather(*(link.send(p) for p in self.packets))
            while await link.recv() is not None:
                pass
        finally:
            self.metrics.slots_used -= 1
            self.released += 1
            await link.close("eof")


async def test_large_sends_arrive_whole_and_unmixed_even_from_many_tasks(ws_factory, make_packet, caplog):
    server = await ws_factory(lambda m: BlastRoom(m, make_packet))
    async with ws_client(server.url, max_msg_size=0) as ws:
        # Not reading for a while: the server's sends must wait for us (that is [WS_FLOW]).
        await asyncio.sleep(0.5)
        got = [(await ws.receive(timeout=5)).data for _ in server.room.packets]
    assert sorted(got) == sorted(server.room.packets)
    (line,) = _lines(caplog, "[WS_FLOW]")
    assert re.match(LINE_RE, line), line
    assert re.search(r"\[WS_FLOW\] queue=\d+ bytes buffered before a \d+-byte send, waited=\d\.\d{3}s", line), line


async def test_send_after_close_raises_connection_error(ws_factory, make_packet) -> None:
    server = await ws_factory()
    async with ws_client(server.url) as ws:
        await ws.send_bytes(make_packet(1, b"x"))
        await ws.receive(timeout=5)
        (link,) = server.listener.links
        await link.close("client leave")
        with pytest.raises(ConnectionError):
            await link.send(make_packet(1, b"late"))
        msg = await ws.receive(timeout=5)
        assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == 1000 and msg.extra == "client leave"


@pytest.mark.parametrize(
    "reason, code",
    [
        ("shutdown", 1001),
        ("server full", 1013),
        ("protocol error: bad CRC", 1002),
        ("auth failed", 1008),
        ("eof", 1000),
    ],
)
def test_close_codes_follow_the_room_reason(reason: str, code: int) -> None:
    assert close_code_for(reason) == code


# --- idle handling --------------------------------------------------------------------------------


async def test_heartbeat_keeps_answering_clients_and_drops_silent_ones(ws_factory, raw_client, make_packet, caplog):
    server = await ws_factory(ws_heartbeat_s=0.3)
    async with ws_client(server.url) as ws:
        # A client that keeps reading answers the server's pings (aiohttp does it inside
        # receive(), browsers and libwebsockets on their own): idle for 5 heartbeats, still in.
        pending = asyncio.ensure_future(ws.receive(timeout=5))
        await asyncio.sleep(1.5)
        assert not pending.done()
        await ws.send_bytes(make_packet(1, b"still here"))
        assert (await pending).data == make_packet(1, b"still here")
    await server.wait_for(lambda: len(_lines(caplog, "[WS_DISCONNECT]")) == 1)
    reset_rate_limits()
    # A peer that reads nothing never answers a ping: gone after heartbeat + half of it.
    silent = await raw_client.connect(server.port)
    await server.wait_for(lambda: server.metrics.slots_used == 1)
    started = time.monotonic()
    await server.wait_for(lambda: server.metrics.slots_used == 0, timeout=3)
    assert time.monotonic() - started < 1.5
    await server.wait_for(lambda: len(_lines(caplog, "[WS_DISCONNECT]")) == 2)
    assert "PONG" in _lines(caplog, "[WS_DISCONNECT]")[1]
    silent.abort()


async def test_idle_plain_http_connections_are_closed(ws_factory, make_packet) -> None:
    # aiohttp would keep these for an hour; health checks and half-sent requests must not pile up.
    server = await ws_factory(ws_http_keepalive_s=0.5)

    async def idle(data: bytes) -> float:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(data)
        started = time.monotonic()
        await asyncio.wait_for(reader.read(), 5)
        writer.close()
        return time.monotonic() - started

    async with ws_client(server.url) as ws:
        waits = await asyncio.gather(
            idle(b""), idle(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"), idle(b"GET / HTTP/1.1\r\nHost: x\r\n")
        )
        assert all(w < 3 for w in waits), waits
        # ...while an equally idle WebSocket is untouched by the HTTP keep-alive limit.
        await ws.send_bytes(make_packet(1, b"still open"))
        assert (await ws.receive(timeout=5)).data == make_packet(1, b"still open")


async def test_head_and_trailing_slash_on_health(ws_factory) -> None:
    server = await ws_factory()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"HEAD /health/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"application/json" in head
    assert body == b""


async def test_shutdown_is_quick_even_with_peers_that_never_answer(ws_factory, raw_client, make_packet) -> None:
    server = await ws_factory()
    silent = [await raw_client.connect(server.port) for _ in range(4)]
    # one of them is in the middle of a fragmented message
    await silent[0].write(silent[0].frame(make_packet(IMAGE_FRAME, b"\0" * 9000)[:4096], False))
    await server.wait_for(lambda: server.metrics.slots_used == 4)
    started = time.monotonic()
    await server.listener.close()
    assert time.monotonic() - started < 2.0
    assert server.metrics.slots_used == 0 and server.room.released == 4
    for client in silent:
        close = await client.wait_closed()
        assert close is None or close.code == 1001
        client.abort()


async def test_a_late_event_loop_does_not_blame_the_peer(ws_factory, make_packet) -> None:
    """The peer's next fragment arrives in time, but our loop is busy until after the deadline.

    Two blocking callbacks straddle the deadline so the gap check runs in the same loop pass as
    the second one, after the bytes reached the socket but before the loop read them.
    """
    import socket
    import threading

    from wsproto import ConnectionType, WSConnection
    from wsproto.events import AcceptConnection, Request

    server = await ws_factory(reassembly_timeout_s=1.0)
    loop = asyncio.get_running_loop()
    frame = make_packet(IMAGE_FRAME, os.urandom(8192))
    send_second_at: list[float] = []
    first_sent = threading.Event()
    result: list[bytes] = []

    def peer() -> None:
        conn = WSConnection(ConnectionType.CLIENT)
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(conn.send(Request(host="x", target="/", subprotocols=["acip"])))
            while not any(
                isinstance(e, AcceptConnection) for e in (conn.receive_data(sock.recv(65536)) or conn.events())
            ):
                pass
            sock.sendall(conn.send(BytesMessage(data=frame[:4096], message_finished=False)))
            first_sent.set()
            while not send_second_at:
                time.sleep(0.001)
            time.sleep(max(0.0, send_second_at[0] - time.monotonic()))
            sock.sendall(conn.send(BytesMessage(data=frame[4096:], message_finished=True)))
            sock.settimeout(5)
            data = bytearray()
            while len(data) < len(frame):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
            result.append(bytes(data))

    thread = threading.Thread(target=peer)
    thread.start()
    await asyncio.to_thread(first_sent.wait, 5)
    await server.wait_for(lambda: any(link._ws.watchdog.scanner.in_message for link in server.listener.links))
    (link,) = server.listener.links
    deadline = link._ws.watchdog._last_progress + 1.0
    assert loop.time() < deadline - 0.15, "too slow to set the scene"
    send_second_at.append(deadline + 0.1)  # loop.time() is time.monotonic()
    loop.call_at(deadline - 0.1, time.sleep, 0.15)  # busy across the deadline
    loop.call_at(deadline - 0.05, time.sleep, 0.2)  # runs in the check's pass; the bytes land meanwhile
    await asyncio.to_thread(thread.join, 10)
    assert server.metrics.reassembly_timeouts == 0
    assert result and frame in result[0]


# --- interleaved messages (c41's two sender threads) -------------------------------------------------


def _raw_frame(opcode: int, payload: bytes, fin: bool) -> bytes:
    """A masked client frame, built by hand: wsproto refuses to interleave messages."""
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        head = bytes((first, 0x80 | n))
    elif n < 65536:
        head = bytes((first, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((first, 0x80 | 127)) + n.to_bytes(8, "big")
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def test_whole_message_inside_a_fragmented_one_is_delivered_after_it(
    ws_factory, raw_client, make_packet, caplog
) -> None:
    # What c41's native client did to us (INTEROP.md py-server-c-client-ws-enc): a 22-byte PING
    # sent whole by one thread between the 4 KiB fragments of a video frame from another.
    server = await ws_factory()
    client = await raw_client.connect(server.port)
    big = make_packet(IMAGE_FRAME, os.urandom(20_000))
    ping = make_packet(5001, b"")
    audio = make_packet(4001, os.urandom(300))
    parts = [big[i : i + 4096] for i in range(0, len(big), 4096)]
    stream = _raw_frame(2, parts[0], False)
    stream += _raw_frame(2, ping, True)  # whole message between fragments 1 and 2
    stream += _raw_frame(9, b"hb", True)  # a ping control frame, legal anywhere
    stream += _raw_frame(0, parts[1], False)
    stream += _raw_frame(2, audio, True)
    stream += b"".join(_raw_frame(0, p, i == len(parts) - 3) for i, p in enumerate(parts[2:]))
    stream += _raw_frame(2, make_packet(1, b"after"), True)
    # Byte by byte in places, to cut frames and headers anywhere.
    for offset in range(0, len(stream), 997):
        await client.write(stream[offset : offset + 997])
    await server.wait_for(lambda: len(server.room.received) == 4)
    assert server.room.received == [big, ping, audio, make_packet(1, b"after")]
    assert server.metrics.reassembly_timeouts == 0
    (line,) = _lines(caplog, "interleaved")
    assert re.search(r"\[WS_REASSEMBLY\] interleaved: .*\(fragments=\d so far, held=\d+ bytes\)", line), line
    await client.aclose()


async def test_second_fragmented_message_inside_one_is_still_refused(ws_factory, raw_client, make_packet):
    # Continuations carry no message id: two fragmented messages at once cannot be untangled.
    server = await ws_factory()
    client = await raw_client.connect(server.port)
    await client.write(_raw_frame(2, make_packet(1, b"a" * 100), False))
    await client.write(_raw_frame(2, make_packet(1, b"b" * 100), False))
    close = await client.wait_closed()
    assert close is None or close.code == 1002
    await server.wait_for(lambda: server.metrics.slots_used == 0)
    assert server.room.received == []


async def test_held_messages_are_bounded(ws_factory, raw_client, make_packet) -> None:
    server = await ws_factory()
    client = await raw_client.connect(server.port)
    await client.write(_raw_frame(2, make_packet(3001, b"\0" * 4000), False))
    whole = _raw_frame(2, make_packet(4001, b"\1" * 60_000), True)
    try:
        for _ in range(20):  # 1.2 MB of whole messages while the first one never ends
            await client.write(whole)
    except ConnectionError:
        pass
    close = await client.wait_closed()
    assert close is None or close.code == 1002
    await server.wait_for(lambda: server.metrics.slots_used == 0)
    assert server.room.received == []


async def test_interleaving_randomised_through_the_real_reader(ws_factory, raw_client, make_packet) -> None:
    """Random fragmented messages with whole ones and pings inside, cut at random: order as promised."""
    server = await ws_factory()
    client = await raw_client.connect(server.port)
    rng = random.Random(2026)
    stream = bytearray()
    expected: list[bytes] = []
    for index in range(40):
        big = make_packet(3001, rng.randbytes(rng.choice([300, 5000, 70_000])))
        pieces = []
        pos = 0
        while pos < len(big):
            step = rng.choice([1, 100, 4096, 65_536])
            pieces.append(big[pos : pos + step])
            pos += step
        held: list[bytes] = []
        for number, piece in enumerate(pieces):
            stream += _raw_frame(0 if number else 2, piece, number == len(pieces) - 1)
            if number < len(pieces) - 1:
                for _ in range(rng.choice([0, 0, 1, 2])):
                    if rng.random() < 0.3:
                        stream += _raw_frame(9, b"p", True)
                    else:
                        small = make_packet(4001, index.to_bytes(2, "big") + rng.randbytes(rng.randrange(0, 200)))
                        stream += _raw_frame(2, small, True)
                        held.append(small)
        expected += [big, *held]
    offset = 0
    while offset < len(stream):
        step = rng.choice([1, 7, 1000, 30_000])
        await client.write(bytes(stream[offset : offset + step]))
        offset += step
    await server.wait_for(lambda: len(server.room.received) == len(expected), timeout=20)
    assert server.room.received == expected
    await client.aclose()
