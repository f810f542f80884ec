"""`diag bind` logic: bind+listen per family and option set, with retries, blockers and a verdict.

Scenarios build the classic failure cases on loopback (TIME_WAIT, a live listener, a child that
inherited the listening socket) and run the same measurement against them.
"""

from __future__ import annotations

import errno as errno_mod
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack

from asciichat_diag.ports.gather import DEFAULT_EXPECT, build_entries, collect_sockets, ephemeral_range, record_of
from asciichat_diag.ports.model import (
    PROBLEM,
    WARNING,
    BindAttempt,
    BindReport,
    BindVariant,
    Finding,
    SocketEntry,
    format_endpoint,
)
from asciichat_diag.ports.procmap import ProcessInfo, matches_expected

DEFAULT_HOSTS = ("127.0.0.1", "::1")
BACKLOG = 128  # what ascii-chat's TCP server passes to listen()
SCENARIOS = ("time-wait", "time-wait-noreuse", "live-listener", "child-holds")
REUSEADDR = "SO_REUSEADDR"
REUSEPORT = "SO_REUSEPORT"


def option_sets() -> list[list[str]]:
    """No options, SO_REUSEADDR (what servers use), and SO_REUSEADDR+SO_REUSEPORT where it exists."""
    sets: list[list[str]] = [[], [REUSEADDR]]
    if hasattr(socket, "SO_REUSEPORT"):
        sets.append([REUSEADDR, REUSEPORT])
    return sets


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def try_bind_listen(host: str, port: int, options: list[str]) -> tuple[str | None, OSError | None]:
    """One bind()+listen() (the listen matters: with SO_REUSEADDR on both sockets Linux reports the
    clash only there). Returns (failed call, error) or (None, None). The socket is closed at once.
    """
    call = "socket"
    try:
        sock = socket.socket(_family(host), socket.SOCK_STREAM)
    except OSError as exc:
        return call, exc
    try:
        call = "setsockopt"
        if _family(host) == socket.AF_INET6:
            # like ascii-chat and asyncio: the IPv6 socket never claims the IPv4 side
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if REUSEADDR in options:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if REUSEPORT in options:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        call = "bind"
        sock.bind((host, port))
        call = "listen"
        sock.listen(BACKLOG)
        return None, None
    except OSError as exc:
        return call, exc
    finally:
        sock.close()


def measure(
    hosts: list[str],
    port: int,
    retries: int,
    backoff_s: float,
    sleep: Callable[[float], None] = time.sleep,
) -> list[BindVariant]:
    """Try every host x option set; retry the failing ones in rounds with exponential backoff."""
    variants = [
        BindVariant(h, "IPv6" if _family(h) == socket.AF_INET6 else "IPv4", opts, False, None, [])
        for h in hosts
        for opts in option_sets()
    ]
    start = time.perf_counter()
    final: set[int] = set()  # variants whose error time cannot fix (EACCES, EADDRNOTAVAIL, ...)
    for round_no in range(retries + 1):
        pending = [v for v in variants if not v.ok and id(v) not in final]
        if not pending:
            break
        if round_no:
            sleep(backoff_s * (2 ** (round_no - 1)))
        for v in pending:
            call, exc = try_bind_listen(v.host, port, v.options)
            elapsed = time.perf_counter() - start
            if exc is None:
                v.ok = True
                v.time_to_success_s = elapsed
                v.attempts.append(BindAttempt(elapsed, True, None, None, None, None))
            else:
                code = exc.errno
                v.attempts.append(
                    BindAttempt(
                        elapsed,
                        False,
                        call,
                        code,
                        errno_mod.errorcode.get(code, str(code)) if code else None,
                        exc.strerror or str(exc),
                    )
                )
                if code != errno_mod.EADDRINUSE:
                    final.add(id(v))
    return variants


def _blocks(entry: SocketEntry, host: str) -> bool:
    """Could this socket (local side = the port) be what stops a V6ONLY/IPv4 bind on `host`?"""
    wildcard_v4 = "0.0.0.0"
    if _family(host) == socket.AF_INET:
        if entry.family == "IPv4":
            return entry.local_ip in (host, wildcard_v4) or host == wildcard_v4
        # a dual-stack IPv6 socket on :: or on the v4-mapped address also owns the IPv4 port
        if entry.v6only:
            return False
        return (
            entry.local_ip == "::"
            or entry.local_ip == f"::ffff:{host}"
            or (host == wildcard_v4 and entry.local_ip.startswith("::ffff:"))
        )
    if entry.family == "IPv6":
        return entry.local_ip in (host, "::") or host == "::"
    return False


def find_blockers(hosts: list[str], port: int) -> list[SocketEntry]:
    """Sockets whose local port is `port` and that overlap one of the hosts, owners attached."""
    raw, source = collect_sockets(port)
    entries, _scan = build_entries(raw, source, port)
    mine = [e for e in entries if e.side == "local" and any(_blocks(e, h) for h in hosts)]
    order = {"LISTEN": 0, "ESTABLISHED": 1, "TIME_WAIT": 3}
    mine.sort(key=lambda e: (order.get(e.state, 2), e.family, e.local_ip, e.remote_port))
    return mine


def _owner(e: SocketEntry) -> str:
    if not e.processes:
        if e.uid is None:
            return "an unseen process"
        return f"a process of uid {e.uid} that is not visible without root"
    descs = []
    for p in e.processes:
        parent = f", child of {p.ppid} {p.parent_name}" if p.ppid and p.parent_name else ""
        descs.append(f"PID {p.pid} ({p.name}{parent})")
    return " and ".join(descs)


# Programs ascii-chat starts with popen() (gpg, yt-dlp, symbolizers, shells; DIAG-NOTES A.11) and
# `sleep` (our child-holds scenario): as the holder of a listening socket they almost surely got it
# by inheritance, since ascii-chat never sets SOCK_CLOEXEC.
HELPER_PROGRAMS = frozenset({"gpg", "gpg2", "yt-dlp", "llvm-symbolizer", "addr2line", "sh", "bash", "sleep"})


def _looks_inherited(p: ProcessInfo) -> bool:
    """A helper program holding a listener, or any child of the ascii-chat server holding one."""
    if p.name in HELPER_PROGRAMS:
        return True
    if p.parent_name is None:
        return False
    parent = ProcessInfo(p.ppid or 0, p.parent_name, None, [], None, None, None)
    return matches_expected(parent, list(DEFAULT_EXPECT))


def explain(report: BindReport) -> str:
    """One sentence a developer can act on."""
    port = report.port
    by_host: dict[str, dict[str, BindVariant]] = {}
    for v in report.variants:
        by_host.setdefault(v.host, {})[v.label] = v
    # errors time cannot fix come first
    for v in report.variants:
        for a in v.attempts:
            if a.errno == errno_mod.EACCES:
                return (
                    f"Port {port} is below 1024: run the server as root or grant CAP_NET_BIND_SERVICE, "
                    "or use a port above 1023."
                )
            if a.errno == errno_mod.EADDRNOTAVAIL:
                return (
                    f"{v.host} is not an address of this host (IPv6 disabled or the address not configured): "
                    "bind only the addresses that exist."
                )
            if a.errno == errno_mod.EAFNOSUPPORT:
                other = "127.0.0.1" if v.family == "IPv6" else "::1"
                return f"This host has no {v.family} support: bind only {other}."
    reuse_failed = [h for h, vs in by_host.items() if not vs[REUSEADDR].ok]
    plain_failed = [h for h, vs in by_host.items() if not vs["no options"].ok]
    listeners = [e for e in report.blockers if e.state == "LISTEN"]
    waiting = [e for e in report.blockers if e.time_left_s is not None or e.state in ("TIME_WAIT", "FIN_WAIT2")]
    others = [e for e in report.blockers if e not in listeners and e not in waiting]
    max_left = max((e.time_left_s or 0.0 for e in waiting), default=0.0)
    if reuse_failed:
        where = ", ".join(format_endpoint(h, port) for h in reuse_failed)
        if listeners:
            e = listeners[0]
            inherited = [p for p in e.processes if p.ppid in {q.pid for q in e.processes}]
            holder = _owner(e)
            if e.processes:
                kill = " ".join(str(p.pid) for p in e.processes)
                extra = ""
                if inherited or any(_looks_inherited(p) for p in e.processes):
                    extra = " (a child that inherited the listening socket keeps the port until it exits)"
                return (
                    f"{holder} is still listening on {e.local}{extra}: stop it (kill {kill}) "
                    f"or use another port; SO_REUSEADDR never shares a port with a live listener."
                )
            return (
                f"A listener on {e.local} belongs to {holder}: rerun as root (sudo diag bind {port}) to see who, "
                f"or use another port."
            )
        outgoing = [e for e in others if e.state in ("ESTABLISHED", "SYN_SENT", "CLOSE_WAIT")]
        if outgoing:
            e = outgoing[0]
            rng = report.ephemeral_range
            tip = f" outside the ephemeral range {rng[0]}-{rng[1]}" if rng and report.in_ephemeral_range else ""
            return (
                f"The connection {e.local} -> {e.remote} of {_owner(e)} uses {port} as its own port, which blocks "
                f"any listener even with SO_REUSEADDR: close it or pick a port{tip}."
            )
        if waiting:
            return (
                f"Only TIME_WAIT sockets hold {where}, yet SO_REUSEADDR fails: the previous owner did not set "
                f"SO_REUSEADDR, so wait {max_left:.0f} s for them to expire (and set it in that server)."
            )
        return (
            f"{where} is in use but no socket visible here holds it (another network namespace, or it was released "
            f"meanwhile): retry, or run as root to see more."
        )
    slow = [v for v in report.variants if v.options == [REUSEADDR] and v.ok and len(v.attempts) > 1]
    if slow:
        v = max(slow, key=lambda v: v.time_to_success_s or 0)
        return (
            f"With SO_REUSEADDR the port bound after {v.time_to_success_s:.2f} s ({len(v.attempts)} tries): the "
            f"blocker went away; a server retrying with backoff rides this out."
        )
    if plain_failed:
        if waiting:
            return (
                f"Only TIME_WAIT sockets ({len(waiting)}, {max_left:.0f} s left at most) hold port {port}: a listener "
                f"with SO_REUSEADDR binds at once (ascii-chat's does); without it, wait {max_left:.0f} s."
            )
        if others:
            e = others[0]
            more = f" and {len(others) - 1} more" if len(others) > 1 else ""
            return (
                f"Connections still use port {port} ({e.local} -> {e.remote} {e.state}, {_owner(e)}{more}): "
                f"SO_REUSEADDR binds past them because they set it too, so set it on the listening socket."
            )
        return (
            f"A socket is bound to port {port} without listening (sock_diag cannot show those): SO_REUSEADDR "
            f"binds past it, but if it starts listening first your listen() fails with EADDRINUSE."
        )
    hosts = ", ".join(report.hosts)
    return f"Nothing holds port {port} on {hosts}: bind+listen succeeds with and without SO_REUSEADDR."


def _findings(report: BindReport) -> list[Finding]:
    out: list[Finding] = []
    rng = report.ephemeral_range
    if report.in_ephemeral_range and rng:
        out.append(
            Finding(
                WARNING,
                "ephemeral_port",
                f"port {report.port} lies in the ephemeral range {rng[0]}-{rng[1]}: an outgoing connection can "
                "take it at any time and then no listener can bind it",
            )
        )
    for v in report.variants:
        if v.options == [REUSEADDR, REUSEPORT] and not v.ok:
            plain = next(x for x in report.variants if x.host == v.host and x.options == [REUSEADDR])
            if plain.ok:
                out.append(
                    Finding(
                        WARNING,
                        "reuseport_mismatch",
                        f"{format_endpoint(v.host, report.port)}: SO_REUSEPORT fails where SO_REUSEADDR binds "
                        "(every socket sharing the port must set SO_REUSEPORT, same user)",
                    )
                )
    if not report.ok:
        out.append(Finding(PROBLEM, "bind_blocked", report.explanation))
    return out


def run_bind(port: int, hosts: list[str], retries: int, backoff_s: float) -> BindReport:
    """Measure, find the blockers, explain."""
    variants = measure(hosts, port, retries, backoff_s)
    failed = any(not v.ok or len(v.attempts) > 1 for v in variants)
    blockers = find_blockers(hosts, port) if failed else []
    rng = ephemeral_range()
    report = BindReport(
        port=port,
        hosts=list(hosts),
        retries=retries,
        backoff_s=backoff_s,
        variants=variants,
        blockers=blockers,
        in_ephemeral_range=bool(rng and rng[0] <= port <= rng[1]),
        ephemeral_range=rng,
        explanation="",
        ok=all(v.ok for v in variants if v.options == [REUSEADDR]),
    )
    report.explanation = explain(report)
    report.findings = _findings(report)
    return report


# ---------------------------------------------------------------------------------------------
# Scenarios: real sockets on the given loopback hosts, built and torn down here.


def _listener(host: str, port: int, reuse: bool) -> socket.socket:
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    if _family(host) == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    if reuse:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


def _make_time_wait(host: str, port: int, reuse: bool) -> None:
    """Listener, one connection, the server side closes first -> its socket sits in TIME_WAIT."""
    listener = _listener(host, port, reuse)
    try:
        client = socket.create_connection((host, port), timeout=2)
        server_side, _ = listener.accept()
        server_side.close()  # active close on the server's port: this end gets TIME_WAIT
        client.settimeout(2)
        client.recv(1)  # wait for the FIN
        client.close()
    finally:
        listener.close()
    # until the last ACK lands the server side is in FIN_WAIT2; give the kernel a moment
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        raw, _ = collect_sockets(port)
        states = {record_of(r).state for r in raw if record_of(r).local_port == port}
        if "TIME_WAIT" in states:
            return
        time.sleep(0.01)


def _spawn_holder(socks: list[socket.socket]) -> subprocess.Popen:
    """A child that inherits the listening descriptors, like ascii-chat's popen'ed gpg/yt-dlp."""
    sleep = shutil.which("sleep")
    cmd = [sleep, "300"] if sleep else [sys.executable, "-c", "import time; time.sleep(300)"]
    return subprocess.Popen(
        cmd,
        pass_fds=tuple(s.fileno() for s in socks),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


SCENARIO_EXPECTED = {
    "time-wait": "blocked without SO_REUSEADDR (for up to 60 s), immediate with it",
    "time-wait-noreuse": "blocked with and without SO_REUSEADDR: the previous listener did not set it",
    "live-listener": "blocked with every option: a live listener never shares its port",
    "child-holds": "blocked with every option, the blocker attributed to the child that inherited the socket",
}


def run_scenario(name: str, port: int, hosts: list[str], retries: int, backoff_s: float) -> BindReport:
    """Build scenario `name` on `port`, measure, tear down, and check the outcome."""
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}")
    child: subprocess.Popen | None = None
    with ExitStack() as stack:
        if name in ("time-wait", "time-wait-noreuse"):
            for h in hosts:
                _make_time_wait(h, port, reuse=(name == "time-wait"))
        elif name == "live-listener":
            for h in hosts:
                stack.enter_context(_listener(h, port, reuse=True))
        elif name == "child-holds":
            socks = []
            try:
                for h in hosts:
                    socks.append(_listener(h, port, reuse=True))
                child = _spawn_holder(socks)
            finally:
                for s in socks:
                    s.close()  # only the child holds the port now

            def _reap() -> None:
                child.kill()
                child.wait()

            stack.callback(_reap)
        report = run_bind(port, hosts, retries, backoff_s)
        if not report.blockers:
            report.blockers = find_blockers(hosts, port)
            report.explanation = explain(report)
            report.findings = _findings(report)
    report.scenario = name
    report.scenario_expected = SCENARIO_EXPECTED[name]
    report.scenario_matches = _matches(name, report, child.pid if child else None)
    return report


def _matches(name: str, report: BindReport, child_pid: int | None) -> bool:
    plain = [v for v in report.variants if v.options == []]
    reuse = [v for v in report.variants if v.options == [REUSEADDR]]
    every = report.variants
    if name == "time-wait":
        blocked_first = all(v.attempts and not v.attempts[0].ok for v in plain)
        return blocked_first and all(v.ok and len(v.attempts) == 1 for v in reuse)
    if name == "time-wait-noreuse":
        return all(v.attempts and not v.attempts[0].ok for v in plain + reuse)
    if name == "live-listener":
        return all(not v.ok for v in every)
    if name == "child-holds":
        held = any(p.pid == child_pid for e in report.blockers if e.state == "LISTEN" for p in e.processes)
        return all(not v.ok for v in every) and held
    return False
