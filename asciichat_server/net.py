"""Listener binding shared by every transport: one socket per address, retried with backoff.

IPv4 and IPv6 are separate sockets (IPV6_V6ONLY on the v6 one, like c41's 127.0.0.1 + ::1 pair),
SO_REUSEADDR everywhere, one ``[BIND]`` log line per try naming the errno and the address.
"""

from __future__ import annotations

import errno as errno_mod
import ipaddress
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "LISTEN_BACKLOG",
    "BindError",
    "BindFailure",
    "bind_listeners",
    "format_address",
    "listener_address",
    "resolve_host",
]

# c41 listens with a backlog of 128 (lib/network/tcp/server.c); a connect storm needs at least that.
LISTEN_BACKLOG = 128

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BindFailure:
    """One address that could not be bound after every try."""

    address: str
    errno: int | None
    error: str

    def __str__(self) -> str:
        name = errno_mod.errorcode.get(self.errno or -1, "")
        code = f"errno {self.errno} {name}".strip() if self.errno is not None else "error"
        return f"{self.address} ({code}: {self.error})"


class BindError(OSError):
    """No address could be bound; ``.failures`` lists why, one entry per address."""

    def __init__(self, failures: list[BindFailure], transport: str = "") -> None:
        self.failures = failures
        self.transport = transport
        detail = "; ".join(str(f) for f in failures) or "no addresses given"
        what = f"any {transport} address" if transport else "any address"
        super().__init__(f"could not listen on {what}: {detail}")


def format_address(family: int, host: str, port: int) -> str:
    """``127.0.0.1:27224`` or ``[::1]:27224``."""
    return f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"


def resolve_host(host: str) -> list[tuple[int, str]]:
    """(family, numeric address) pairs for a bind host: numeric addresses as given, names via getaddrinfo."""
    literal = host.strip("[]")
    try:
        ip = ipaddress.ip_address(literal.split("%", 1)[0])
    except ValueError:
        infos = socket.getaddrinfo(literal, None, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        seen: list[tuple[int, str]] = []
        for family, _type, _proto, _canon, sockaddr in infos:
            pair = (family, str(sockaddr[0]))
            if family in (socket.AF_INET, socket.AF_INET6) and pair not in seen:
                seen.append(pair)
        return seen
    return [(socket.AF_INET6 if ip.version == 6 else socket.AF_INET, literal)]


def _bind_one(family: int, host: str, port: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            # Without V6ONLY a [::] listener would also take the IPv4 port (Linux dual-stack default).
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def bind_listeners(
    hosts: list[str],
    port: int,
    retries: int = 5,
    backoff_s: float = 0.1,
    log: logging.Logger | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> list[socket.socket]:
    """Bind and listen on every host at ``port``; each address gets 1 + ``retries`` tries.

    Waits ``backoff_s``, then twice that, and so on between tries. With ``port`` 0 the first
    address picks a free port and the others use the same one. Returns the sockets that
    listen (non-blocking); raises :class:`BindError` when none could.
    """
    logger = log or _log
    targets: list[tuple[int, str]] = []
    failures: list[BindFailure] = []
    for host in hosts:
        try:
            for pair in resolve_host(host):
                if pair not in targets:
                    targets.append(pair)
        except OSError as exc:
            logger.error("[BIND] cannot resolve %s: %s", host, exc)
            failures.append(BindFailure(f"{host}:{port}", getattr(exc, "errno", None), str(exc)))

    sockets: list[socket.socket] = []
    tries = 1 + max(0, retries)
    for family, host in targets:
        wanted = port
        if port == 0 and sockets:
            wanted = sockets[0].getsockname()[1]
        address = format_address(family, host, wanted)
        delay = backoff_s
        last_exc: OSError | None = None
        for attempt in range(1, tries + 1):
            try:
                sock = _bind_one(family, host, wanted)
            except OSError as exc:
                last_exc = exc
                code = exc.errno
                name = errno_mod.errorcode.get(code or -1, "?")
                if attempt < tries:
                    logger.warning(
                        "[BIND] try %d/%d %s failed: errno %s %s (%s); retrying in %.2fs",
                        attempt,
                        tries,
                        address,
                        code,
                        name,
                        exc.strerror or exc,
                        delay,
                    )
                    sleep(delay)
                    delay *= 2
                else:
                    logger.error(
                        "[BIND] try %d/%d %s failed: errno %s %s (%s); giving up on this address",
                        attempt,
                        tries,
                        address,
                        code,
                        name,
                        exc.strerror or exc,
                    )
                continue
            bound = format_address(family, host, sock.getsockname()[1])
            logger.info("[BIND] try %d/%d %s ok: listening", attempt, tries, bound)
            sockets.append(sock)
            break
        else:
            assert last_exc is not None
            failures.append(BindFailure(address, last_exc.errno, last_exc.strerror or str(last_exc)))

    if not sockets:
        raise BindError(failures)
    if failures:
        logger.warning(
            "[BIND] listening on %s only; failed: %s",
            ", ".join(listener_address(s) for s in sockets),
            "; ".join(str(f) for f in failures),
        )
    return sockets


def listener_address(sock: socket.socket) -> str:
    """``host:port`` of a bound socket, brackets around IPv6."""
    name = sock.getsockname()
    return format_address(sock.family, str(name[0]), int(name[1]))
