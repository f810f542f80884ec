"""Micro-benchmark of the sans-I/O core (not collected by pytest): handshake, ENCRYPTED throughput, decoder.

    .venv/bin/python tests/protocol/bench_core.py

Everything runs in memory in one process, so the figures are the protocol core's own cost, without
sockets or an event loop (bench/handshake.py measures the server over loopback).
"""

from __future__ import annotations

import os
import time

from asciichat_server.protocol import (
    AsciiFrame,
    ClientCapabilities,
    ClientConnection,
    ClientSecurity,
    ConnectionState,
    PacketDecoder,
    PacketType,
    ServerConnection,
    ServerSecurity,
    encode_packet,
)


def handshake(variant: str = "c41") -> tuple[ServerConnection, ClientConnection]:
    server = ServerConnection(ServerSecurity(), "tcp")
    client = ClientConnection(ClientSecurity(key_variant=variant), "tcp")
    client.start()
    client.send(PacketType.CLIENT_CAPABILITIES, ClientCapabilities().encode())
    while True:
        to_server = client.data_to_send()
        for wire in to_server:
            server.receive_data(wire)
        to_client = server.data_to_send()
        for wire in to_client:
            client.receive_data(wire)
        if not to_server and not to_client:
            break
    assert server.state is ConnectionState.OPEN and client.state is ConnectionState.OPEN
    return server, client


def main() -> None:
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    times = []
    for i in range(400):
        started = time.perf_counter()
        handshake("c41" if i % 2 else "head")
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    print(
        f"encrypted handshake, both roles in memory: p50 {times[len(times) // 2]:.2f} ms, "
        f"p99 {times[int(len(times) * 0.99)]:.2f} ms (n={len(times)})"
    )

    server, client = handshake()
    frame = AsciiFrame(200, 60, b"x" * 12000 + b"\x1b[0m").encode()
    count = 2000
    started = time.perf_counter()
    for _ in range(count):
        server.send(PacketType.ASCII_FRAME, frame)
    wires = server.data_to_send()
    sealed = time.perf_counter()
    for wire in wires:
        client.receive_data(wire)
    opened = time.perf_counter()
    megabytes = count * len(frame) / 1e6
    print(
        f"ENCRYPTED {len(frame)}-byte ASCII_FRAME: seal {count / (sealed - started):.0f}/s "
        f"({megabytes / (sealed - started):.0f} MB/s), open+check {count / (opened - sealed):.0f}/s "
        f"({megabytes / (opened - sealed):.0f} MB/s)"
    )

    stream = b"".join(encode_packet(PacketType.IMAGE_FRAME, bytes(480 * 270 * 3)) for _ in range(50))
    decoder = PacketDecoder()
    started = time.perf_counter()
    for i in range(0, len(stream), 65536):
        decoder.feed(stream[i : i + 65536])
    rate = len(stream) / 1e6 / (time.perf_counter() - started)
    print(f"PacketDecoder, 50 x 388 KB IMAGE_FRAME in 64 KiB chunks: {rate:.0f} MB/s")

    small = encode_packet(PacketType.CRYPTO_KEY_EXCHANGE_RESP, bytes(32)) * 300
    decoder = PacketDecoder()
    started = time.perf_counter()
    for i in range(len(small)):
        decoder.feed(small[i : i + 1])
    print(f"PacketDecoder, 1-byte chunks: {len(small) / (time.perf_counter() - started) / 1e3:.0f} KB/s")


if __name__ == "__main__":
    main()
