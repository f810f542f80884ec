"""bind_listeners on real loopback sockets: options, port sharing, retries and the error when nothing binds."""

from __future__ import annotations

import errno
import logging
import socket

import pytest

from asciichat_server.net import BindError, bind_listeners, listener_address


def _close(socks):
    for s in socks:
        s.close()


def test_binds_v4_and_v6_separately_on_one_port():
    socks = bind_listeners(["127.0.0.1", "::1"], 0, retries=0)
    try:
        assert [s.family for s in socks] == [socket.AF_INET, socket.AF_INET6]
        ports = {s.getsockname()[1] for s in socks}
        assert len(ports) == 1
        for s in socks:
            assert s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 1
            assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
            assert not s.getblocking()
        assert socks[1].getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
        port = ports.pop()
        assert [listener_address(s) for s in socks] == [f"127.0.0.1:{port}", f"[::1]:{port}"]
        # Both accept connections right away.
        for host in ("127.0.0.1", "::1"):
            with socket.create_connection((host, port), timeout=2):
                pass
    finally:
        _close(socks)


def test_port_held_by_listener_retries_then_fails(caplog):
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    slept = []
    try:
        with caplog.at_level(logging.INFO), pytest.raises(BindError) as info:
            bind_listeners(["127.0.0.1"], port, retries=5, backoff_s=0.1, sleep=slept.append)
    finally:
        holder.close()
    assert slept == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6])
    tries = [r.getMessage() for r in caplog.records if "[BIND] try" in r.getMessage()]
    assert len(tries) == 6
    for n, msg in enumerate(tries, 1):
        assert msg.startswith(f"[BIND] try {n}/6 127.0.0.1:{port} failed: errno {errno.EADDRINUSE} EADDRINUSE")
    assert info.value.failures[0].errno == errno.EADDRINUSE
    assert f"127.0.0.1:{port}" in str(info.value)
    assert "EADDRINUSE" in str(info.value)


def test_partial_success_is_logged(caplog):
    holder = socket.socket(socket.AF_INET6)
    holder.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    holder.bind(("::1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        with caplog.at_level(logging.INFO):
            socks = bind_listeners(["127.0.0.1", "::1"], port, retries=1, backoff_s=0.01)
    finally:
        holder.close()
    try:
        assert [listener_address(s) for s in socks] == [f"127.0.0.1:{port}"]
        summary = [r.getMessage() for r in caplog.records if "only" in r.getMessage()]
        assert summary and f"[::1]:{port}" in summary[0] and f"listening on 127.0.0.1:{port} only" in summary[0]
    finally:
        _close(socks)


def test_retry_succeeds_once_port_frees():
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]

    def release(_delay):
        holder.close()

    socks = bind_listeners(["127.0.0.1"], port, retries=3, sleep=release)
    try:
        assert socks[0].getsockname()[1] == port
    finally:
        _close(socks)


def test_rebind_after_connections_left_time_wait():
    socks = bind_listeners(["127.0.0.1"], 0, retries=0)
    port = socks[0].getsockname()[1]
    socks[0].setblocking(True)
    client = socket.create_connection(("127.0.0.1", port))
    conn, _ = socks[0].accept()
    conn.close()  # server side closes first -> TIME_WAIT on the server's port
    client.close()
    _close(socks)
    again = bind_listeners(["127.0.0.1"], port, retries=0)
    _close(again)
