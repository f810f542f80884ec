"""FrameScanner follows frame boundaries exactly, however the byte stream is cut (frames by wsproto)."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, Ping, Pong, Request, TextMessage

from asciichat_server.transport.ws import FrameScanner


@dataclass
class Frame:
    start: int
    header: int
    payload: int
    data: bool  # part of a data message (not a control frame)
    message: int  # index of its message, -1 for control frames
    final: bool


def _open_pair() -> tuple[WSConnection, WSConnection]:
    client = WSConnection(ConnectionType.CLIENT)
    server = WSConnection(ConnectionType.SERVER)
    server.receive_data(client.send(Request(host="h", target="/")))
    for _ in server.events():
        pass
    client.receive_data(server.send(AcceptConnection()))
    for _ in client.events():
        pass
    return client, server


SIZES = st.one_of(st.integers(0, 300), st.sampled_from([125, 126, 127, 4096, 65535, 65536, 70_000]))
MESSAGE = st.tuples(
    st.lists(SIZES, min_size=1, max_size=5),  # fragment sizes
    st.lists(st.sampled_from(["ping", "pong"]), max_size=2),  # control frames after the first fragment
    st.booleans(),  # text instead of binary
)


def _build(messages: list, masked: bool) -> tuple[bytes, list[Frame]]:
    client, server = _open_pair()
    conn = client if masked else server
    stream = bytearray()
    frames: list[Frame] = []

    def emit(raw: bytes, payload: int, data: bool, message: int, final: bool) -> None:
        frames.append(Frame(len(stream), len(raw) - payload, payload, data, message, final))
        stream.extend(raw)

    for index, (sizes, controls, text) in enumerate(messages):
        for position, size in enumerate(sizes):
            last = position == len(sizes) - 1
            if text:
                event = TextMessage(data="a" * size, message_finished=last)
            else:
                event = BytesMessage(data=b"\x07" * size, message_finished=last)
            emit(conn.send(event), size, True, index, last)
            if position == 0 and not last:
                for control in controls:
                    frame = Ping(payload=b"pp") if control == "ping" else Pong(payload=b"q")
                    emit(conn.send(frame), len(frame.payload), False, -1, True)
    return bytes(stream), frames


def _expected(frames: list[Frame], consumed: int) -> tuple[bool, int, int, int]:
    """(in_message, fragments, size, whole messages) after ``consumed`` bytes."""
    in_message = False
    fragments = size = done = 0
    current = -1
    for frame in frames:
        if frame.start >= consumed:
            break
        if not frame.data:
            continue
        if frame.message != current:
            current, fragments, size = frame.message, 0, 0
        fragments += 1
        payload_seen = min(frame.payload, max(0, consumed - frame.start - frame.header))
        size += payload_seen
        complete = consumed >= frame.start + frame.header + frame.payload
        in_message = not (frame.final and complete)
        if frame.final and complete:
            done += 1
    return in_message, fragments, size, done


@settings(max_examples=150, deadline=None)
@given(
    messages=st.lists(MESSAGE, min_size=1, max_size=4),
    masked=st.booleans(),
    cuts=st.lists(st.integers(0, 400_000), max_size=12),
)
def test_scanner_matches_frame_layout(messages: list, masked: bool, cuts: list[int]) -> None:
    stream, frames = _build(messages, masked)
    points = sorted({min(c, len(stream)) for c in cuts} | {len(stream)})
    scanner = FrameScanner()
    position = 0
    for point in points:
        chunk = stream[position:point]
        scanner.feed(chunk)
        position = point
        in_message, fragments, size, done = _expected(frames, position)
        assert scanner.in_message == in_message, (position, frames)
        assert scanner.messages == done
        if in_message:
            assert scanner.fragments == fragments
            assert scanner.size == size
    assert not scanner.in_message
    assert scanner.messages == len(messages)
    last_sizes = messages[-1][0]
    assert scanner.last_message == (len(last_sizes), sum(last_sizes))


def test_byte_by_byte_progress_only_for_data_frames() -> None:
    stream, frames = _build([([10, 10], ["ping"], False)], masked=True)
    scanner = FrameScanner()
    progress = [scanner.feed(stream[i : i + 1]) for i in range(len(stream))]
    for frame in frames:
        span = progress[frame.start : frame.start + frame.header + frame.payload]
        assert all(span) if frame.data else not any(span)
    assert scanner.messages == 1 and scanner.fragments == 2 and scanner.size == 20


def test_empty_feed_is_no_progress() -> None:
    scanner = FrameScanner()
    assert scanner.feed(b"") is False
    assert not scanner.in_message
