"""ACIP packet framing: the 22-byte header, whole-packet encoding and an incremental stream decoder."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from .constants import (
    HEADER_SIZE,
    HEADER_STRUCT,
    INVALID_LENGTH,
    MAGIC,
    MAGIC_BYTES,
    MAX_PAYLOAD,
    PacketType,
    packet_type_name,
)
from .crc import crc32c
from .errors import ProtocolError


@dataclass(frozen=True)
class Packet:
    """One decoded packet. `type` is kept as a plain int so unknown types survive decoding."""

    type: int
    payload: bytes
    client_id: int = 0


@dataclass(frozen=True)
class Header:
    magic: int
    type: int
    length: int
    crc32: int
    client_id: int


def encode_header(ptype: int, payload: bytes = b"", client_id: int = 0) -> bytes:
    """The 22-byte header for `payload`; the CRC field is 0 for an empty payload."""
    checksum = crc32c(payload) if payload else 0
    return HEADER_STRUCT.pack(MAGIC, ptype, len(payload), checksum, client_id)


def encode_packet(ptype: int, payload: bytes = b"", client_id: int = 0) -> bytes:
    """A complete wire packet (header + payload)."""
    if not 0 <= ptype <= 0xFFFF:
        raise ValueError(f"packet type {ptype} does not fit in u16")
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes exceeds the {MAX_PAYLOAD}-byte ACIP limit")
    return encode_header(ptype, payload, client_id) + bytes(payload)


def parse_header(data: bytes | bytearray | memoryview, max_payload: int = MAX_PAYLOAD) -> Header:
    """Parse and validate the first 22 bytes of `data` (no payload checks beyond the length limits)."""
    if len(data) < HEADER_SIZE:
        raise ProtocolError(f"truncated header: {len(data)} of {HEADER_SIZE} bytes")
    magic, ptype, length, checksum, client_id = HEADER_STRUCT.unpack_from(data, 0)
    if magic != MAGIC:
        raise ProtocolError(f"bad magic 0x{magic:016x} (expected 0x{MAGIC:016x})")
    if length == INVALID_LENGTH:
        raise ProtocolError("invalid payload length 0xFFFFFFFF")
    if length > max_payload:
        raise ProtocolError(
            f"payload length {length} of {packet_type_name(ptype)} exceeds the {max_payload}-byte limit"
        )
    if length == 0 and checksum != 0:
        raise ProtocolError(f"non-zero CRC 0x{checksum:08x} on empty {packet_type_name(ptype)}")
    return Header(magic, ptype, length, checksum, client_id)


def _check_crc(header: Header, payload: bytes) -> None:
    if header.length and crc32c(payload) != header.crc32:
        raise ProtocolError(
            f"CRC mismatch on {packet_type_name(header.type)}: header 0x{header.crc32:08x}, "
            f"payload 0x{crc32c(payload):08x}"
        )


def decode_packet(data: bytes | bytearray | memoryview, max_payload: int = MAX_PAYLOAD) -> Packet:
    """Decode exactly one packet occupying all of `data` (a WebSocket message, an ENCRYPTED inner packet)."""
    header = parse_header(data, max_payload)
    if len(data) - HEADER_SIZE != header.length:
        raise ProtocolError(
            f"{packet_type_name(header.type)} declares {header.length} payload bytes, carries {len(data) - HEADER_SIZE}"
        )
    payload = bytes(data[HEADER_SIZE:])
    _check_crc(header, payload)
    return Packet(header.type, payload, header.client_id)


class PacketDecoder:
    """Turns a TCP byte stream, in chunks of any size, into packets.

    Every limit is checked on the header before the payload is buffered, and the magic is checked
    byte by byte as it arrives, so a non-ACIP peer is rejected after its first wrong byte. After a
    ProtocolError the decoder stays failed. Iterating the decoder yields one packet at a time, so a
    caller may change `max_payload` between packets.
    """

    def __init__(self, max_payload: int = MAX_PAYLOAD, *, max_interleaved: int = 0) -> None:
        # May be changed between packets (a connection tightens it during its handshake).
        self.max_payload = max_payload
        # Both C peers write an ENCRYPTED packet's header and payload with two send() calls outside
        # any lock, so two threads' writes interleave (seen against the real c41 server: hA hB pB pA
        # and hB hA pA pB). With max_interleaved > 0, headers found back to back where an ENCRYPTED
        # payload should start (up to this many extra) are collected, and the payloads that follow
        # are matched to them by CRC. Off by default: a plain decoder is strict.
        self.max_interleaved = max_interleaved
        self._buf = bytearray()
        self._pos = 0
        self._pending: list[Header] = []
        self._ready: list[Packet] = []
        self._error: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as part of a packet."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes | bytearray | memoryview) -> list[Packet]:
        """Buffer `data` and return every packet now complete."""
        self.append(data)
        return list(self)

    def append(self, data: bytes | bytearray | memoryview) -> None:
        """Buffer `data` without decoding; iterate the decoder to take packets one at a time."""
        self._raise_if_failed()
        self._buf += data

    def __iter__(self) -> PacketDecoder:
        return self

    def __next__(self) -> Packet:
        self._raise_if_failed()
        try:
            packet = self._next()
        except ProtocolError as exc:
            self._error = exc
            self._buf.clear()
            self._pos = 0
            raise
        if packet is None:
            if self._pos:
                del self._buf[: self._pos]
                self._pos = 0
            raise StopIteration
        return packet

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise ProtocolError(f"decoder already failed: {self._error.reason}", self._error.error_code)

    def _read_header(self, pos: int) -> None:
        self._pending.append(parse_header(bytes(self._buf[pos : pos + HEADER_SIZE]), self.max_payload))
        self._pos = pos + HEADER_SIZE

    def _next(self) -> Packet | None:
        if self._ready:
            return self._ready.pop(0)
        while True:
            buf, pos = self._buf, self._pos
            available = len(buf) - pos
            if not self._pending:
                if available < HEADER_SIZE:
                    prefix = buf[pos : pos + min(available, len(MAGIC_BYTES))]
                    if not MAGIC_BYTES.startswith(prefix):
                        raise ProtocolError(f"bad magic: stream starts with {bytes(prefix).hex()}")
                    return None
                self._read_header(pos)
                continue
            # ENCRYPTED payloads are at least 40 bytes, so the 8 bytes that decide are always part of the
            # packet; plaintext packets are written in one call and never checked.
            if self._pending[0].type == PacketType.ENCRYPTED and len(self._pending) <= self.max_interleaved:
                if available < len(MAGIC_BYTES):
                    return None
                if buf[pos : pos + len(MAGIC_BYTES)] == MAGIC_BYTES:
                    if available < HEADER_SIZE:
                        return None
                    self._read_header(pos)
                    continue
            total = sum(h.length for h in self._pending)
            if available < total:
                return None
            region = bytes(buf[pos : pos + total])
            headers, self._pending = self._pending, []
            self._pos = pos + total
            packets = _match_payloads(headers, region)
            self._ready = packets[1:]
            return packets[0]


def _match_payloads(headers: list[Header], region: bytes) -> list[Packet]:
    """Split `region` among `headers`: in order for one header, else the order whose CRCs all match."""
    if len(headers) == 1:
        (header,) = headers
        _check_crc(header, region)
        return [Packet(header.type, region, header.client_id)]
    for order in itertools.permutations(headers):
        packets, offset = [], 0
        for header in order:
            payload = region[offset : offset + header.length]
            offset += header.length
            if header.length and crc32c(payload) != header.crc32:
                break
            packets.append(Packet(header.type, payload, header.client_id))
        else:
            return packets
    raise ProtocolError(
        f"CRC mismatch: {len(headers)} headers arrived back to back and no order of the payloads that follow matches"
    )
