"""Seeded mutation fuzzer for the sans-I/O ACIP core: PacketDecoder, every payload decoder, ServerConnection.

    .venv/bin/python bench/fuzz.py --inputs 1000000
    inputs fuzzed 1000000 in 123.3s (8112/s), crashes 0, accepted 264115, rejected 735885
    rejections by reason (... distinct, top 15):
      124931  bad magic N (expected N)
      119076  CRC mismatch on TYPE: header N, payload N
      ...

Inputs are mutations (bit flips, byte writes, truncation, growth, splices, interesting length fields,
re-computed CRCs so the payload decoders see them) of the valid packets in spec/vectors.json and of
packets we encode ourselves. Each goes to one target: the stream decoder fed in random chunks, the
payload decoder of its packet type, or a fresh ServerConnection (TCP or WS, encrypted or not, with
a valid handshake prefix some of the time). A crash is any exception other than ProtocolError; every
ProtocolError must carry a non-empty reason.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import struct
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from asciichat_server.protocol import payloads  # noqa: E402
from asciichat_server.protocol.connection import ServerConnection, ServerSecurity  # noqa: E402
from asciichat_server.protocol.constants import HEADER_SIZE, MAGIC, MAX_PAYLOAD, PacketType  # noqa: E402
from asciichat_server.protocol.crc import crc32c  # noqa: E402
from asciichat_server.protocol.errors import ProtocolError  # noqa: E402
from asciichat_server.protocol.packets import PacketDecoder, encode_packet  # noqa: E402

VECTORS = ROOT / "tests" / "protocol" / "data" / "vectors.json"  # seeds: every spec vector
INTERESTING_LENGTHS = (0, 1, 21, 22, 65535, 65536, 65537, MAX_PAYLOAD - 1, MAX_PAYLOAD, MAX_PAYLOAD + 1, 0xFFFFFFFF)
# Payload decoder by packet type name (a type missing from this revision is skipped).
PAYLOAD_TYPES = {
    "PROTOCOL_VERSION": "ProtocolVersion",
    "CRYPTO_CAPABILITIES": "CryptoCapabilities",
    "CRYPTO_PARAMETERS": "CryptoParameters",
    "CRYPTO_KEY_EXCHANGE_INIT": "KeyExchangeInit",
    "CRYPTO_KEY_EXCHANGE_RESP": "KeyExchangeResp",
    "CRYPTO_AUTH_CHALLENGE": "AuthChallenge",
    "CRYPTO_AUTH_FAILED": "AuthFailed",
    "CRYPTO_SERVER_AUTH_RESP": "ServerAuthResp",
    "CRYPTO_CLIENT_HELLO": "ClientHello",
    "CLIENT_CAPABILITIES": "ClientCapabilities",
    "IMAGE_FRAME": "ImageFrame",
    "IMAGE_FRAME_H265": "ImageFrameH265",
    "ASCII_FRAME": "AsciiFrame",
    "AUDIO_OPUS_BATCH": "AudioOpusBatch",
    "AUDIO_BATCH": "AudioBatch",
    "SERVER_STATE": "ServerState",
    "ERROR_MESSAGE": "ErrorMessage",
    "REMOTE_LOG": "RemoteLog",
    "CLIENT_JOIN": "ClientJoin",
    "CLIENT_LEAVE": "ClientLeave",
    "STREAM_START": "StreamFlags",
    "STREAM_STOP": "StreamFlags",
}


def _decoders() -> dict[int, Callable[[bytes], object]]:
    out: dict[int, Callable[[bytes], object]] = {}
    for type_name, class_name in PAYLOAD_TYPES.items():
        ptype = getattr(PacketType, type_name, None)
        cls = getattr(payloads, class_name, None)
        if ptype is not None and cls is not None:
            out[int(ptype)] = cls.decode
    return out


def seed_packets() -> list[bytes]:
    """Valid wire packets: every packet vector, plus packets encoded from the payload vectors."""
    seeds: list[bytes] = []
    if VECTORS.exists():
        for vector in json.loads(VECTORS.read_text())["vectors"]:
            data = bytes.fromhex(vector.get("hex", ""))
            if len(data) >= HEADER_SIZE and struct.unpack(">Q", data[:8])[0] == MAGIC:
                seeds.append(data)
            elif vector["name"].startswith("client_capabilities_payload"):
                seeds.append(encode_packet(PacketType.CLIENT_CAPABILITIES, data))
    caps = payloads.ClientCapabilities(width=80, height=24).encode()
    image = payloads.ImageFrame(width=4, height=2, pixel_format=1, pixels=bytes(24)).encode()
    frame = payloads.AsciiFrame(width=2, height=1, text=b"ab", flags=0).encode()
    seeds += [
        encode_packet(PacketType.CLIENT_CAPABILITIES, caps),
        encode_packet(PacketType.IMAGE_FRAME, image),
        encode_packet(PacketType.ASCII_FRAME, frame),
        encode_packet(PacketType.PROTOCOL_VERSION, payloads.ProtocolVersion(supports_encryption=1).encode()),
        encode_packet(PacketType.PING),
    ]
    return seeds


def _recrc(packet: bytearray) -> None:
    if len(packet) >= HEADER_SIZE:
        packet[14:18] = struct.pack(">I", crc32c(bytes(packet[HEADER_SIZE:])))


def mutate(rng: random.Random, seeds: list[bytes]) -> bytes:
    data = bytearray(rng.choice(seeds))
    for _ in range(rng.choice((1, 1, 1, 2, 3, 8))):
        op = rng.randrange(8)
        if op == 0 and data:  # flip one bit
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
        elif op == 1 and data:  # write a byte
            data[rng.randrange(len(data))] = rng.choice((0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)))
        elif op == 2 and data:  # truncate
            del data[rng.randrange(len(data)) :]
        elif op == 3:  # grow
            data += bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 64)))
        elif op == 4:  # splice another seed in
            other = rng.choice(seeds)
            at = rng.randrange(len(data) + 1)
            data[at:at] = other[rng.randrange(len(other)) :]
        elif op == 5 and len(data) >= HEADER_SIZE:  # interesting length field
            data[10:14] = struct.pack(">I", rng.choice(INTERESTING_LENGTHS))
        elif op == 6 and len(data) >= HEADER_SIZE:  # another packet type
            data[8:10] = struct.pack(">H", rng.choice(list(PacketType)))
        elif op == 7 and data:  # overwrite a 32-bit field inside the payload
            i = rng.randrange(len(data))
            data[i : i + 4] = struct.pack(">I", rng.choice((0, 1, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF)))
    if rng.random() < 0.7:
        _recrc(data)  # most inputs get past the CRC, so the decoders behind it are reached
    return bytes(data)


def _reason_key(reason: str) -> str:
    """Group reasons: packet type names, numbers and hex collapsed ('length 5242881' ~ 'length 7')."""
    reason = re.sub(r"\b[A-Z][A-Z0-9_/]{3,}\b(\(\d+\))?", "TYPE", reason)
    return re.sub(r"0x[0-9a-fA-F]+|\d+", "N", reason)[:90]


@dataclass
class FuzzResult:
    inputs: int = 0
    accepted: int = 0
    crashes: list[str] = field(default_factory=list)
    rejections: Counter = field(default_factory=Counter)
    targets: Counter = field(default_factory=Counter)
    elapsed_s: float = 0.0


def _prefix(rng: random.Random, encrypt: bool, ws: bool) -> bytes:
    if ws or rng.random() < 0.4:
        return b""
    if encrypt:
        return encode_packet(PacketType.PROTOCOL_VERSION, payloads.ProtocolVersion(supports_encryption=1).encode())
    return encode_packet(PacketType.CLIENT_CAPABILITIES, payloads.ClientCapabilities(width=80, height=24).encode())


def fuzz(inputs: int, seed: int = 1) -> FuzzResult:
    rng = random.Random(seed)
    seeds = seed_packets()
    decoders = _decoders()
    result = FuzzResult()
    started = time.monotonic()
    for _ in range(inputs):
        data = mutate(rng, seeds)
        target = rng.choice(("decoder", "payload", "server-tcp", "server-ws"))
        result.targets[target] += 1
        try:
            if target == "decoder":
                decoder = PacketDecoder()
                pos = 0
                while pos < len(data):
                    step = rng.choice((1, 2, 7, 22, 64, len(data)))
                    decoder.feed(data[pos : pos + step])
                    pos += step
            elif target == "payload":
                ptype = struct.unpack(">H", data[8:10])[0] if len(data) >= 10 else -1
                decode = decoders.get(ptype) or rng.choice(list(decoders.values()))
                decode(data[HEADER_SIZE:])
            else:
                ws = target == "server-ws"
                encrypt = rng.random() < 0.6
                conn = ServerConnection(ServerSecurity(encrypt=encrypt), "ws" if ws else "tcp")
                conn.start()
                prefix = _prefix(rng, encrypt, ws)
                if prefix:
                    conn.receive_data(prefix)
                if ws:
                    conn.receive_message(data)
                else:
                    conn.receive_data(data)
                conn.data_to_send()
            result.accepted += 1
        except ProtocolError as exc:
            if not exc.reason:
                result.crashes.append(f"{target}: ProtocolError without a reason for {data.hex()[:200]}")
            result.rejections[_reason_key(exc.reason)] += 1
        except Exception as exc:
            tb = traceback.extract_tb(exc.__traceback__)[-1]
            where = f"{Path(tb.filename).name}:{tb.lineno}"
            result.crashes.append(f"{target}: {type(exc).__name__}: {exc} at {where} input {data.hex()[:200]}")
        result.inputs += 1
    result.elapsed_s = time.monotonic() - started
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--top", type=int, default=15, help="rejection reasons to list")
    args = parser.parse_args()
    result = fuzz(args.inputs, args.seed)
    rate = result.inputs / result.elapsed_s if result.elapsed_s else 0.0
    print(
        f"inputs fuzzed {result.inputs} in {result.elapsed_s:.1f}s ({rate:.0f}/s), crashes {len(result.crashes)}, "
        f"accepted {result.accepted}, rejected {sum(result.rejections.values())}"
    )
    print("targets: " + ", ".join(f"{k} {v}" for k, v in sorted(result.targets.items())))
    print(f"rejections by reason ({len(result.rejections)} distinct, top {args.top}):")
    for reason, count in result.rejections.most_common(args.top):
        print(f"  {count:8d}  {reason}")
    crash_kinds = Counter(c.split(" input ")[0] for c in result.crashes)
    for kind, count in crash_kinds.most_common(10):
        print(f"CRASH x{count}: {kind}")
    return 1 if result.crashes else 0


if __name__ == "__main__":
    sys.exit(main())
