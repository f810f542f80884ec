"""Loopback socket helpers for the diag ports/bind tests: free ports, listeners, TIME_WAIT makers."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator

import psutil
import pytest

from asciichat_diag.ports.sockdiag import dump_tcp


def _have_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


HAVE_IPV6 = _have_ipv6()


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "ipv6: needs an IPv6 loopback (::1); skipped on hosts without one")


def pytest_collection_modifyitems(config, items) -> None:
    if HAVE_IPV6:
        return
    skip = pytest.mark.skip(reason="no IPv6 loopback (::1) on this host")
    for item in items:
        if "ipv6" in item.keywords and "tests/ports" in str(item.fspath):
            item.add_marker(skip)


def free_port(both_families: bool = True, outside_ephemeral: bool = False) -> int:
    """A port that is free on 127.0.0.1 (and ::1), with no TIME_WAIT from earlier tests on it.

    outside_ephemeral: for servers that must bind it a while later; inside the ephemeral range any
    outgoing connection on this busy host may take the port first (the FIX_IDEAS "run 2" failure).
    """
    import random

    low = 32768
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as fh:
            low = int(fh.read().split()[0])
    except (OSError, ValueError):
        pass
    for _ in range(200):
        if outside_ephemeral:
            port = random.randrange(max(1024, low - 12000), low)
            probe = socket.socket()
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            finally:
                probe.close()
        else:
            probe = socket.socket()
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
            probe.close()
        if both_families and HAVE_IPV6:
            v6 = socket.socket(socket.AF_INET6)
            v6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                v6.bind(("::1", port))
            except OSError:
                continue
            finally:
                v6.close()
        if not dump_tcp(port):
            return port
    raise RuntimeError("no free port")


def listener(host: str, port: int, *, v6only: bool | None = None, reuse: bool = True) -> socket.socket:
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(fam, socket.SOCK_STREAM)
    if reuse:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if fam == socket.AF_INET6 and v6only is not None:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))
    sock.bind((host, port))
    sock.listen(64)
    return sock


def make_time_wait(lst: socket.socket, count: int) -> list[int]:
    """`count` connections to `lst`, closed by the server side first: TIME_WAIT on the listener's port.

    Returns the clients' source ports.
    """
    host, port = lst.getsockname()[:2]
    peers = []
    for _ in range(count):
        client = socket.create_connection((host, port), timeout=2)
        server_side, _ = lst.accept()
        peers.append(client.getsockname()[1])
        server_side.close()
        client.settimeout(2)
        assert client.recv(1) == b""  # FIN arrived
        client.close()
    wait_for(lambda: sum(1 for s in dump_tcp(port) if s.state == "TIME_WAIT" and s.local_port == port) >= count)
    return peers


def wait_for(cond: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.01)
    raise AssertionError("condition not reached in time")


def own_name() -> str:
    """What `--expect` must say for the pytest process itself to count as the expected owner."""
    return psutil.Process().name()


class ThreadedAsyncServer:
    """Runs an asyncio TCP server (client_connected_cb) on loopback in a background thread."""

    def __init__(self, handler, host: str = "127.0.0.1", port: int = 0) -> None:
        self.handler = handler
        self.host = host
        self.port = port
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.server: asyncio.base_events.Server | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def start() -> None:
            self.server = await asyncio.start_server(self.handler, self.host, self.port)
            self.port = self.server.sockets[0].getsockname()[1]
            self.ready.set()

        self.loop.run_until_complete(start())
        self.loop.run_forever()

    def __enter__(self) -> ThreadedAsyncServer:
        self.thread.start()
        assert self.ready.wait(30)
        return self

    def __exit__(self, *exc) -> None:
        async def stop() -> None:
            assert self.server is not None
            self.server.close()
            await self.server.wait_closed()

        fut = asyncio.run_coroutine_threadsafe(stop(), self.loop)
        try:
            fut.result(5)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    """Sockets a test opens; closed afterwards whatever happens."""
    opened: list[socket.socket] = []
    yield opened
    for s in opened:
        s.close()


@pytest.fixture(scope="session")
def net():
    """The helpers above, for test modules (importlib mode cannot import conftest directly)."""
    import types

    return types.SimpleNamespace(
        free_port=free_port,
        listener=listener,
        make_time_wait=make_time_wait,
        wait_for=wait_for,
        own_name=own_name,
        ThreadedAsyncServer=ThreadedAsyncServer,
        have_ipv6=HAVE_IPV6,
    )
