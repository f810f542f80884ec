"""Framing: header validation, the stream decoder under any chunking, and real c41 traffic."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asciichat_server.protocol.constants import HEADER_SIZE, MAGIC, MAX_PAYLOAD, PacketType
from asciichat_server.protocol.crc import crc32c
from asciichat_server.protocol.errors import ProtocolError
from asciichat_server.protocol.packets import Packet, PacketDecoder, decode_packet, encode_packet, parse_header
from asciichat_server.protocol.payloads import (
    CryptoCapabilities,
    CryptoParameters,
    KeyExchangeInit,
    KeyExchangeResp,
    ProtocolVersion,
    ServerState,
    StreamFlags,
)


def _raw_header(ptype: int, length: int, crc: int, magic: int = MAGIC, client_id: int = 0) -> bytes:
    return struct.pack(">QHIII", magic, ptype, length, crc, client_id)


def _feed_bytewise(data: bytes) -> list[Packet]:
    decoder = PacketDecoder()
    out: list[Packet] = []
    for i in range(len(data)):
        out += decoder.feed(data[i : i + 1])
    return out


# ---------------------------------------------------------------- malformed input, one class each


MALFORMED = {
    "bad magic": (_raw_header(5001, 0, 0, magic=0xDEADBEEF), "bad magic"),
    "garbage text": (b"GET / HTTP/1.1\r\n\r\n", "bad magic"),
    "bad crc": (_raw_header(5005, 4, 0x12345678) + b"\0\0\0\x03", "CRC mismatch"),
    "crc on empty payload": (_raw_header(5001, 0, 1), "non-zero CRC"),
    "oversize": (_raw_header(3001, MAX_PAYLOAD + 1, 0), "exceeds"),
    "length 0xFFFFFFFF": (_raw_header(3001, 0xFFFFFFFF, 0), "0xFFFFFFFF"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_stream_raises_protocol_error_44(case: str) -> None:
    data, needle = MALFORMED[case]
    decoder = PacketDecoder()
    with pytest.raises(ProtocolError) as info:
        decoder.feed(data)
    assert needle in info.value.reason
    assert info.value.error_code == 44
    # A failed decoder stays failed: no half-working stream after garbage.
    with pytest.raises(ProtocolError):
        decoder.feed(encode_packet(PacketType.PING))


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_stream_fails_with_one_byte_chunks_too(case: str) -> None:
    data, needle = MALFORMED[case]
    with pytest.raises(ProtocolError) as info:
        _feed_bytewise(data)
    assert needle in info.value.reason


def test_bad_magic_is_detected_on_the_first_wrong_byte() -> None:
    decoder = PacketDecoder()
    decoder.feed(b"\x00\x00\x00")
    with pytest.raises(ProtocolError, match="bad magic"):
        decoder.feed(b"\x0b")


def test_limits_are_checked_before_the_payload_arrives() -> None:
    decoder = PacketDecoder()
    with pytest.raises(ProtocolError, match="exceeds"):
        decoder.feed(_raw_header(3001, MAX_PAYLOAD + 1, 0))
    assert decoder.buffered == 0


def test_max_payload_exactly_is_accepted_and_custom_limit_applies() -> None:
    payload = b"x" * MAX_PAYLOAD
    assert PacketDecoder().feed(encode_packet(3001, payload)) == [Packet(3001, payload)]
    with pytest.raises(ProtocolError):
        PacketDecoder(max_payload=10).feed(encode_packet(3001, b"x" * 11))


def test_truncated_stream_keeps_waiting_and_reports_buffered() -> None:
    wire = encode_packet(PacketType.STREAM_START, b"\0\0\0\x01")
    decoder = PacketDecoder()
    assert decoder.feed(wire[:-1]) == []
    assert decoder.buffered == len(wire) - 1 - HEADER_SIZE  # header consumed, payload pending
    assert decoder.feed(wire[-1:]) == [Packet(PacketType.STREAM_START, b"\0\0\0\x01")]
    assert decoder.buffered == 0


def test_decode_packet_requires_exact_length() -> None:
    wire = encode_packet(PacketType.SERVER_STATE, ServerState(1, 0).encode())
    assert decode_packet(wire).type == PacketType.SERVER_STATE
    for bad in (wire[:-1], wire + b"\0", wire[:10]):
        with pytest.raises(ProtocolError):
            decode_packet(bad)


def test_unknown_types_survive_framing() -> None:
    wire = encode_packet(4242, b"abc", client_id=7)
    assert decode_packet(wire) == Packet(4242, b"abc", 7)


def test_encode_packet_refuses_what_cannot_be_sent() -> None:
    with pytest.raises(ValueError):
        encode_packet(3001, b"x" * (MAX_PAYLOAD + 1))
    with pytest.raises(ValueError):
        encode_packet(70000)


@settings(max_examples=150, deadline=None)
@given(
    packets=st.lists(
        st.tuples(st.integers(0, 0xFFFF), st.binary(max_size=300), st.integers(0, 0xFFFFFFFF)), max_size=8
    ),
    cuts=st.lists(st.integers(1, 64), max_size=40),
)
def test_any_chunking_yields_the_same_packets(packets: list[tuple[int, bytes, int]], cuts: list[int]) -> None:
    wire = b"".join(encode_packet(t, p, c) for t, p, c in packets)
    decoder = PacketDecoder()
    got: list[Packet] = []
    pos = 0
    for cut in cuts:
        got += decoder.feed(wire[pos : pos + cut])
        pos += cut
    got += decoder.feed(wire[pos:])
    assert got == [Packet(t, p, c) for t, p, c in packets]
    assert decoder.buffered == 0


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=200))
def test_random_bytes_either_decode_or_raise_protocol_error(data: bytes) -> None:
    decoder = PacketDecoder()
    try:
        for packet in decoder.feed(data):
            assert encode_packet(packet.type, packet.payload, packet.client_id) in data
    except ProtocolError:
        pass


def test_one_byte_chunks_of_a_large_packet() -> None:
    payload = bytes(range(256)) * 64
    wire = encode_packet(PacketType.IMAGE_FRAME, payload) + encode_packet(PacketType.PING)
    assert _feed_bytewise(wire) == [Packet(PacketType.IMAGE_FRAME, payload), Packet(PacketType.PING, b"")]


# ---------------------------------------------------------------- real c41 capture

CAPTURE = Path(__file__).resolve().parent / "data" / "capture-c41.txt"
LINE = re.compile(
    r"type=(?P<type>\d+)\((?P<name>\w+)\) length=(?P<length>\d+) crc32=0x(?P<crc>[0-9a-f]{8}).*?"
    r"client_id=(?P<cid>\d+) hex=(?P<header>[0-9a-f]{44})\|(?P<payload>[0-9a-f]*)(?P<cut>\.\.\.)?"
)


def _capture_lines() -> list[re.Match[str]]:
    path = CAPTURE if CAPTURE.exists() else Path(__file__).resolve().parents[3] / "shared/spec/capture-c41.txt"
    return [m for m in (LINE.search(line) for line in path.read_text().splitlines()) if m]


def test_capture_headers_parse() -> None:
    lines = _capture_lines()
    assert len(lines) > 40
    for m in lines:
        header = parse_header(bytes.fromhex(m["header"]))
        assert header.type == int(m["type"])
        assert PacketType(header.type).name.endswith(m["name"])
        assert header.length == int(m["length"])
        assert header.crc32 == int(m["crc"], 16)
        assert header.client_id == int(m["cid"])


def test_capture_whole_plaintext_packets_decode_bytewise() -> None:
    complete = [
        m
        for m in _capture_lines()
        if len(m["payload"]) // 2 == int(m["length"]) and int(m["type"]) != PacketType.ENCRYPTED
    ]
    assert len(complete) > 20
    wire = b"".join(bytes.fromhex(m["header"] + m["payload"]) for m in complete)
    packets = _feed_bytewise(wire)
    assert [p.type for p in packets] == [int(m["type"]) for m in complete]
    for packet in packets:
        match packet.type:
            case PacketType.PROTOCOL_VERSION:
                assert ProtocolVersion.decode(packet.payload).supports_encryption == 0x01
            case PacketType.CRYPTO_CAPABILITIES:
                assert CryptoCapabilities.decode(packet.payload) == CryptoCapabilities()
            case PacketType.CRYPTO_PARAMETERS:
                assert CryptoParameters.decode(packet.payload) == CryptoParameters()
            case PacketType.CRYPTO_KEY_EXCHANGE_INIT:
                assert not KeyExchangeInit.decode(packet.payload).authenticated
            case PacketType.CRYPTO_KEY_EXCHANGE_RESP:
                assert not KeyExchangeResp.decode(packet.payload).authenticated
            case PacketType.STREAM_START:
                assert int(StreamFlags.decode(packet.payload).streams) in (1, 2, 3)
            case PacketType.SERVER_STATE:
                assert ServerState.decode(packet.payload).connected == 1
            case _:
                assert packet.payload == b"" or crc32c(packet.payload)


def test_capture_ascii_frame_client_id_is_little_endian_id_1() -> None:
    frames = [m for m in _capture_lines() if int(m["type"]) == PacketType.ASCII_FRAME]
    assert frames and all(int(m["cid"]) == 0x01000000 for m in frames)


# ---------------------------------------------------------------- interleaved writers (c41 send race)

INTERLEAVED = Path(__file__).resolve().parent / "data" / "c41-server-interleaved.bin"


def test_real_c41_interleaved_stream_is_refused_by_the_strict_decoder() -> None:
    # 5 KB received from the real c41 server by our client: a 62-byte ENCRYPTED packet (header and
    # payload) landed between another packet's header and its payload.
    with pytest.raises(ProtocolError, match="CRC mismatch"):
        PacketDecoder().feed(INTERLEAVED.read_bytes())


@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_real_c41_interleaved_stream_is_untangled(chunk: int) -> None:
    data = INTERLEAVED.read_bytes()
    decoder = PacketDecoder(max_interleaved=2)
    packets: list[Packet] = []
    for i in range(0, len(data), chunk):
        packets += decoder.feed(data[i : i + chunk])
    assert decoder.buffered == 0
    assert [len(p.payload) for p in packets] == [627] * 4 + [62] + [627] * 4
    assert all(p.type == PacketType.ENCRYPTED for p in packets)
    counters = [int.from_bytes(p.payload[16:24], "little") for p in packets]
    # The inserted packet was encrypted after the one it interrupted: delivered first, counter higher.
    assert counters[4] == counters[5] + 1
    assert sorted(counters) == list(range(counters[0], counters[0] + 9))
    assert sum(len(p.payload) + HEADER_SIZE for p in packets) == len(data)


TWO_HEADERS = Path(__file__).resolve().parent / "data" / "c41-server-two-headers.bin"


def test_real_c41_back_to_back_headers_are_matched_to_their_payloads() -> None:
    # Another real failure: two threads wrote their headers, then their payloads (hB hA pB pA).
    data = TWO_HEADERS.read_bytes()
    with pytest.raises(ProtocolError, match="CRC mismatch"):
        PacketDecoder().feed(data)
    packets = _feed_bytewise_with(PacketDecoder(max_interleaved=2), data)
    assert [len(p.payload) for p in packets] == [627, 627, 627, 62]
    assert sum(len(p.payload) + HEADER_SIZE for p in packets) == len(data)


def _feed_bytewise_with(decoder: PacketDecoder, data: bytes) -> list[Packet]:
    out: list[Packet] = []
    for i in range(len(data)):
        out += decoder.feed(data[i : i + 1])
    assert decoder.buffered == 0
    return out


def test_back_to_back_headers_whose_payloads_match_no_order_are_refused() -> None:
    a, b = _encrypted(1, 100), _encrypted(2, 70)
    with pytest.raises(ProtocolError, match="no order"):
        PacketDecoder(max_interleaved=2).feed(a[:22] + b[:22] + b"\xff" * 170)


def _encrypted(n: int, size: int) -> bytes:
    return encode_packet(PacketType.ENCRYPTED, bytes([n]) * size)


def test_nested_interleaving_up_to_the_configured_depth() -> None:
    a, b, c = _encrypted(1, 100), _encrypted(2, 70), _encrypted(3, 50)
    stream = a[:22] + b[:22] + c + b[22:] + a[22:]
    got = PacketDecoder(max_interleaved=2).feed(stream)
    assert [p.payload[0] for p in got] == [3, 2, 1]
    with pytest.raises(ProtocolError, match="CRC mismatch"):
        PacketDecoder(max_interleaved=1).feed(stream)


def test_only_encrypted_payloads_are_checked_for_inserted_headers() -> None:
    # A plaintext payload that happens to start with the magic is just a payload.
    payload = encode_packet(PacketType.PING)
    stream = encode_packet(PacketType.TEXT_MESSAGE, payload) + encode_packet(PacketType.PONG)
    got = PacketDecoder(max_interleaved=2).feed(stream)
    assert got == [Packet(PacketType.TEXT_MESSAGE, payload), Packet(PacketType.PONG, b"")]


def test_tiny_payloads_are_not_held_back_by_interleave_detection() -> None:
    # HEAD's REKEY_COMPLETE is the single byte 00, a prefix of the magic: it must still arrive at once.
    wire = encode_packet(PacketType.CRYPTO_REKEY_COMPLETE, b"\x00")
    assert PacketDecoder(max_interleaved=2).feed(wire) == [Packet(PacketType.CRYPTO_REKEY_COMPLETE, b"\x00")]


# ---------------------------------------------------------------- the real c41 handshake, replayed into our core


def _session_packets(session: int) -> list[tuple[str, bytes]]:
    """(direction, complete wire packet) of one capture session, plaintext packets with full payloads only."""
    path = CAPTURE if CAPTURE.exists() else Path(__file__).resolve().parents[3] / "shared/spec/capture-c41.txt"
    out: list[tuple[str, bytes]] = []
    current = 0
    for line in path.read_text().splitlines():
        if line.startswith("## Session "):
            current = int(line.split()[2].rstrip(":"))
        m = LINE.search(line)
        if current == session and m and len(m["payload"]) // 2 == int(m["length"]):
            out.append(("C" if " C->S " in line else "S", bytes.fromhex(m["header"] + m["payload"])))
    return out


def test_real_c41_client_handshake_bytes_drive_our_server() -> None:
    from asciichat_server.protocol.connection import ConnectionState, ServerConnection, ServerSecurity

    packets = _session_packets(1)
    client_side = [w for d, w in packets if d == "C" and decode_packet(w).type != PacketType.ENCRYPTED]
    real_server = [w for d, w in packets if d == "S"]
    server = ServerConnection(ServerSecurity(), "tcp")
    replies: list[bytes] = []
    for wire in client_side:  # PROTOCOL_VERSION, CRYPTO_CAPABILITIES, KEY_EXCHANGE_RESP, header and payload split
        for cut in (22,):
            assert server.receive_data(wire[:cut]) == []
            assert server.receive_data(wire[cut:]) == []
        replies += server.data_to_send()
    types = [decode_packet(w).type for w in replies]
    assert types == [decode_packet(w).type for w in real_server[:4]]
    # Our first two replies are byte-identical to the real c41 server's (the next carry fresh keys).
    assert replies[:2] == real_server[:2]
    assert server.state is ConnectionState.HANDSHAKE  # waiting for the first ENCRYPTED packet


def test_real_c41_server_handshake_bytes_drive_our_client() -> None:
    from asciichat_server.protocol.connection import ClientConnection, ClientSecurity, ConnectionState
    from asciichat_server.protocol.events import HandshakeComplete

    packets = _session_packets(1)
    real_client = [w for d, w in packets if d == "C" and decode_packet(w).type != PacketType.ENCRYPTED]
    server_side = [w for d, w in packets if d == "S" and decode_packet(w).type != PacketType.ENCRYPTED]
    client = ClientConnection(ClientSecurity(), "tcp")
    client.start()
    sent = client.data_to_send()
    events = []
    for wire in server_side:
        events += client.receive_data(wire)
        sent += client.data_to_send()
    assert events == [HandshakeComplete(True, "c41", None)]
    assert client.state is ConnectionState.OPEN
    # PROTOCOL_VERSION and CRYPTO_CAPABILITIES exactly as the c41 client sends them; then our own key.
    assert sent[:2] == real_client[:2]
    assert [decode_packet(w).type for w in sent] == [decode_packet(w).type for w in real_client]


def test_real_c41_plaintext_session_drives_our_server() -> None:
    from asciichat_server.protocol.connection import ServerConnection, ServerSecurity
    from asciichat_server.protocol.events import HandshakeComplete, PacketReceived

    client_side = [w for d, w in _session_packets(2) if d == "C"]
    # The capture cuts CLIENT_CAPABILITIES (160 B) at 64 bytes; rebuild a valid first packet, then
    # replay the real STREAM_START and PING packets.
    from asciichat_server.protocol.payloads import ClientCapabilities

    server = ServerConnection(ServerSecurity(), "tcp")
    events = server.receive_data(encode_packet(PacketType.CLIENT_CAPABILITIES, ClientCapabilities().encode()))
    for wire in client_side:
        events += server.receive_data(wire)
    assert isinstance(events[0], HandshakeComplete) and not events[0].encrypted
    got = [e.packet for e in events[1:] if isinstance(e, PacketReceived)]
    assert [p.type for p in got][1:] == [decode_packet(w).type for w in client_side]
    assert [StreamFlags.decode(p.payload).streams for p in got if p.type == PacketType.STREAM_START] == [3, 1, 2]
