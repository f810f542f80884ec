"""Per-address admission limits: --max-connect-rate and --max-pending-per-ip, on real loopback sockets."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from asciichat_server.admission import MAX_TRACKED_ADDRESSES, ConnectRateLimiter, peer_host
from asciichat_server.config import ConfigError, ServerConfig


@pytest.mark.parametrize(
    ("peer", "host"),
    [("127.0.0.1:5000", "127.0.0.1"), ("[::1]:5000", "::1"), ("[fe80::1%lo]:1", "fe80::1%lo"), ("unix", "unix")],
)
def test_peer_host(peer: str, host: str) -> None:
    assert peer_host(peer) == host


def test_bucket_burst_refill_and_retry_after() -> None:
    limiter = ConnectRateLimiter(rate=2.0)  # bursts of 4
    assert [limiter.allow("a", 0.0) for _ in range(5)] == [True, True, True, True, False]
    assert limiter.retry_after("a", 0.0) == pytest.approx(0.5)
    assert limiter.allow("b", 0.0)  # another address has its own bucket
    assert not limiter.allow("a", 0.4)  # 0.8 of a token
    assert limiter.allow("a", 0.55)  # 1.1 tokens: one taken
    assert not limiter.allow("a", 0.56)
    assert limiter.allow("a", 10.0) and limiter.retry_after("a", 10.0) == 0.0


def test_bucket_memory_is_bounded_under_a_flood_of_addresses() -> None:
    limiter = ConnectRateLimiter(rate=1.0, burst=1)
    for i in range(MAX_TRACKED_ADDRESSES * 3):
        assert limiter.allow(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", i * 1e-6)
    assert limiter.tracked <= MAX_TRACKED_ADDRESSES
    # an address that just used its burst is still limited while other addresses come and go
    limiter.allow("hot", 1.0)
    for i in range(MAX_TRACKED_ADDRESSES // 2):
        limiter.allow(f"192.168.{i >> 8}.{i & 255}", 1.0)
    assert not limiter.allow("hot", 1.0)


def test_config_rejects_negative_limits() -> None:
    with pytest.raises(ConfigError, match="max-connect-rate"):
        ServerConfig(max_connect_rate=-1).validate()
    with pytest.raises(ConfigError, match="max-pending-per-ip"):
        ServerConfig(max_pending_per_ip=-1).validate()


async def test_pending_handshakes_per_address(start_server, helpers, no_task_leaks) -> None:
    server = await start_server(max_clients=6, max_pending_per_ip=2)
    room = server.room
    # Two connections from 127.0.0.1 that never speak: both hold a slot, in their handshake.
    idle = [await helpers.RawClient.connect(server.tcp_port) for _ in range(2)]
    await helpers.wait_until(lambda: room.client_count == 2)
    third = await helpers.RawClient.connect(server.tcp_port)
    assert await third.closed_by_server(timeout=5)
    assert server.metrics.rejected_pending == 1
    assert room.client_count == 2 and room.slots_free == 4
    # ::1 is another address: it still gets in and completes its session.
    v6 = await helpers.AcipClient.connect(server.tcp_port, host="::1")
    assert v6.handshake is not None
    # One idle connection leaves: 127.0.0.1 may start one handshake again, and once that one has
    # completed it no longer counts as pending, so a further idle connection is accepted too.
    await idle.pop().close()
    await helpers.wait_until(lambda: room.client_count == 2)
    done = await helpers.AcipClient.connect(server.tcp_port)
    assert done.handshake is not None
    later = await helpers.RawClient.connect(server.tcp_port)
    await helpers.wait_until(lambda: room.client_count == 4)
    assert not await later.closed_by_server(timeout=0.3)
    assert server.metrics.rejected_pending == 1
    for c in (v6, done, later, *idle, third):
        await c.close()
    await helpers.wait_until(lambda: room.client_count == 0)
    assert room.slots_free == 6


async def test_connect_rate_per_address_tcp_and_ws(start_server, helpers, no_task_leaks) -> None:
    server = await start_server(max_clients=16, max_connect_rate=2.0, websocket=True, websocket_port=0)
    room = server.room
    accepted = [await helpers.AcipClient.connect(server.tcp_port, join=False) for _ in range(4)]  # the burst
    refused = await helpers.RawClient.connect(server.tcp_port)
    assert await refused.closed_by_server(timeout=5)
    assert server.metrics.rejected_rate == 1
    # ::1 has its own bucket
    v6 = await helpers.AcipClient.connect(server.tcp_port, host="::1", join=False)
    # a WebSocket from 127.0.0.1 shares the TCP clients' bucket: upgraded, then closed with 1013
    url = f"ws://127.0.0.1:{server.ws_port}/"
    async with aiohttp.ClientSession() as session, session.ws_connect(url, protocols=("acip",)) as ws:
        msg = await asyncio.wait_for(ws.receive(), 5)
        assert msg.type is aiohttp.WSMsgType.CLOSE
        assert ws.close_code == 1013
    assert server.metrics.rejected_rate == 2
    assert room.client_count == 5
    # after 0.5 s one token is back
    await asyncio.sleep(0.55)
    again = await helpers.AcipClient.connect(server.tcp_port, join=False)
    assert again.handshake is not None
    for c in (*accepted, refused, v6, again):
        await c.close()
    await helpers.wait_until(lambda: room.client_count == 0)


def test_cli_rejects_a_negative_limit() -> None:
    import subprocess
    import sys

    bad = subprocess.run(
        [sys.executable, "-m", "asciichat_server.cli", "--max-pending-per-ip", "-3"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "--max-pending-per-ip" in bad.stderr
