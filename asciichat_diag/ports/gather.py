"""Gather what is on a TCP port: sockets, owning processes, states, reachability, findings.

Sockets come from NETLINK_SOCK_DIAG on Linux (v6only, timers, inode, uid without root) and from
psutil elsewhere; processes from one walk over /proc plus psutil for their details.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
from collections.abc import Iterable
from typing import NamedTuple

from asciichat_diag.ports.model import (
    INFO,
    PROBLEM,
    WARNING,
    Finding,
    PortReport,
    SocketEntry,
    StateCount,
    format_endpoint,
)
from asciichat_diag.ports.procmap import (
    InodeScan,
    ProcessInfo,
    ancestors,
    describe_process,
    matches_expected,
    scan_socket_inodes,
)
from asciichat_diag.ports.sockdiag import DiagSocket

DEFAULT_EXPECT = ("asciichat-server", "ascii-chat")
# TCP_TIMEWAIT_LEN is compiled into Linux; macOS uses 2*MSL = 30 s.
TIME_WAIT_LEN_S = 60.0


def ephemeral_range(path: str = "/proc/sys/net/ipv4/ip_local_port_range") -> tuple[int, int] | None:
    """The kernel's range for automatically chosen source ports, or None when unknown."""
    try:
        with open(path) as fh:
            low, high = fh.read().split()[:2]
        return int(low), int(high)
    except (OSError, ValueError):
        return None


def _username(uid: int | None, cache: dict[int, str | None]) -> str | None:
    if uid is None:
        return None
    if uid not in cache:
        try:
            import pwd

            cache[uid] = pwd.getpwuid(uid).pw_name
        except (ImportError, KeyError):
            cache[uid] = None
    return cache[uid]


def collect_sockets(port: int | None, listening_only: bool = False, backend: str = "auto") -> tuple[list, str]:
    """Raw socket records for `port` (or all listeners) and the name of the source used.

    Returns sock_diag DiagSocket records, or psutil-derived ones with the same fields.
    """
    if backend in ("auto", "sock_diag"):
        from asciichat_diag.ports.sockdiag import SockDiagUnavailable, dump_tcp

        try:
            return dump_tcp(port, listening_only=listening_only), "sock_diag"
        except SockDiagUnavailable:
            if backend == "sock_diag":
                raise
    return _collect_psutil(port, listening_only), "psutil"


class PsutilSocket(NamedTuple):
    """A psutil connection in DiagSocket form, with the pid and fd psutil attributes it to."""

    rec: DiagSocket
    pid: int | None
    fd: int


def _collect_psutil(port: int | None, listening_only: bool) -> list[PsutilSocket]:
    """Fallback source: psutil.net_connections (no v6only, no timers, pid instead of inode)."""
    import psutil

    out = []
    for conn in psutil.net_connections(kind="tcp"):
        laddr = conn.laddr
        raddr = conn.raddr or ("::" if conn.family == socket.AF_INET6 else "0.0.0.0", 0)
        if port is not None and port not in (laddr[1], raddr[1]):
            continue
        state = "LISTEN" if conn.status == psutil.CONN_LISTEN else conn.status
        if listening_only and state != "LISTEN":
            continue
        rec = DiagSocket(conn.family, state, laddr[0], laddr[1], raddr[0], raddr[1], None, None, -1, 0, None)
        out.append(PsutilSocket(rec, conn.pid, conn.fd))
    return out


def record_of(r: DiagSocket | PsutilSocket) -> DiagSocket:
    """The DiagSocket inside a raw record from either source."""
    return r.rec if isinstance(r, PsutilSocket) else r


def build_entries(
    raw: list, source: str, port: int | None, scan: InodeScan | None = None
) -> tuple[list[SocketEntry], InodeScan | None]:
    """Turn raw records into SocketEntry objects with their owning processes attached.

    Process details are looked up once per process and shared by all of its sockets: a server
    with 10,000 connections is one psutil lookup, not 10,000.
    """
    users: dict[int, str | None] = {}
    details: dict[int, ProcessInfo] = {}
    entries: list[SocketEntry] = []
    append = entries.append

    def proc(pid: int) -> ProcessInfo:
        info = details.get(pid)
        if info is None:
            info = details[pid] = describe_process(pid)
        return info

    if source == "sock_diag":
        wanted = {r.inode for r in raw if r.inode}
        if scan is None and wanted:
            scan = scan_socket_inodes(wanted)
        found = scan.holders if scan else {}
        single: dict[int, list[ProcessInfo]] = {}  # pid -> [info], shared by all its sockets
        v6 = socket.AF_INET6
        # inlined (no per-socket helper call, tuple unpacking instead of attribute access): this
        # loop runs once per socket, 20,000 times for 10,000 loopback connections
        for fam, state, lip, lport, rip, rport, timer, expires, uid, inode, v6only, rq, wq in raw:
            held = found.get(inode) if inode else None
            if not held:
                holders: list = []
                processes: list[ProcessInfo] = []
            elif len(held) == 1:
                holders = held
                pid = held[0][0]
                processes = single.get(pid) or single.setdefault(pid, [proc(pid)])
            else:
                holders = sorted(held)
                processes = [proc(pid) for pid in sorted({pid for pid, _fd in held})]
            append(
                SocketEntry(
                    "IPv6" if fam == v6 else "IPv4",
                    state,
                    lip,
                    lport,
                    rip,
                    rport,
                    "local" if port is None or lport == port else "remote",
                    v6only,
                    timer,
                    expires / 1000.0 if timer == "timewait" and expires is not None else None,
                    uid,
                    users[uid] if uid in users else _username(uid, users),
                    inode or None,
                    processes,
                    holders,
                    rq,
                    wq,
                    expires / 1000.0 if timer and expires is not None else None,
                )
            )
    else:
        for item in raw:
            r, pid, fd = item
            processes = [proc(pid)] if pid else []
            holders = [(pid, fd)] if pid and fd and fd > 0 else []
            user = processes[0].username if processes else None
            append(_entry(r, port, None, user, None, processes, holders))
    return entries, scan


def _entry(r: DiagSocket, port: int | None, uid, user, inode, processes: list[ProcessInfo], holders) -> SocketEntry:
    side = "local" if port is None or r.local_port == port else "remote"
    time_left = r.expires_ms / 1000.0 if r.timer == "timewait" and r.expires_ms is not None else None
    return SocketEntry(
        "IPv6" if r.family == socket.AF_INET6 else "IPv4",
        r.state,
        r.local_ip,
        r.local_port,
        r.remote_ip,
        r.remote_port,
        side,
        r.v6only,
        r.timer,
        time_left,
        uid if uid is None or uid >= 0 else None,
        user,
        inode or None,
        processes,
        holders,
        r.recv_q if inode is not None else None,
        r.send_q if inode is not None else None,
    )


def serves(entry: SocketEntry) -> tuple[set[str], set[str]]:
    """Which IPv4 and IPv6 addresses a LISTEN socket accepts ("*" = any).

    An IPv6 socket accepts IPv4 only when it is dual-stack (v6only off) *and* bound to `::` or to
    a v4-mapped address; a dual-stack socket bound to ::1 still never sees an IPv4 packet.
    When v6only is unknown (psutil fallback) a `::` listener counts as dual-stack, the Linux default.
    """
    v4: set[str] = set()
    v6: set[str] = set()
    if entry.state != "LISTEN":
        return v4, v6
    if entry.family == "IPv4":
        v4.add("*" if entry.local_ip == "0.0.0.0" else entry.local_ip)
        return v4, v6
    import ipaddress  # only listeners get here; kept out of the start-up path

    addr = ipaddress.IPv6Address(entry.local_ip)
    dual = entry.v6only is not True
    if addr.is_unspecified:
        v6.add("*")
        if dual:
            v4.add("*")
    elif addr.ipv4_mapped is not None:
        if dual:
            v4.add(str(addr.ipv4_mapped))
    else:
        v6.add(entry.local_ip)
    return v4, v6


def count_states(entries: Iterable[SocketEntry], states: Iterable[str] = ("TIME_WAIT", "CLOSE_WAIT")):
    """Counts per state with the side split, peer hosts and (TIME_WAIT) the time left."""
    counts = {s: StateCount(s) for s in states}
    for e in entries:
        c = counts.get(e.state)
        if c is None:
            continue
        c.count += 1
        if e.side == "local":
            c.local_side += 1
            peer = e.remote_ip
        else:
            c.remote_side += 1
            peer = e.local_ip
        c.peers[peer] = c.peers.get(peer, 0) + 1
        if e.time_left_s is not None:
            c.time_left_min_s = e.time_left_s if c.time_left_min_s is None else min(c.time_left_min_s, e.time_left_s)
            c.time_left_max_s = e.time_left_s if c.time_left_max_s is None else max(c.time_left_max_s, e.time_left_s)
    return counts


def _who(p: ProcessInfo) -> str:
    parent = f", child of {p.ppid} {p.parent_name or '?'}" if p.ppid else ""
    return f"PID {p.pid} ({p.name or '?'}{parent})"


def ownership_findings(
    listeners: list[SocketEntry], expect: list[str], scan: InodeScan | None, source: str
) -> list[Finding]:
    """Unexpected owners, descriptors shared with (inherited by) children, and invisible owners."""
    findings: list[Finding] = []
    is_root = hasattr(os, "geteuid") and os.geteuid() == 0
    for e in listeners:
        where = e.local
        if not e.processes:
            if source == "psutil":
                findings.append(
                    Finding(
                        WARNING,
                        "no_process_visible",
                        f"listener {where}: no process visible (psutil could not attribute it); "
                        "running as root shows the owning PID, name, exe and parent",
                    )
                )
            elif not is_root:
                owner = f"uid {e.uid} ({e.user})" if e.user else f"uid {e.uid}"
                findings.append(
                    Finding(
                        WARNING,
                        "no_process_visible",
                        f"listener {where} belongs to {owner} and no process of yours holds it: rerun as root "
                        "(sudo diag ports ...) to see its PID, process name, exe, parent and whether a child "
                        "inherited it",
                    )
                )
            else:
                findings.append(
                    Finding(
                        WARNING,
                        "no_process_visible",
                        f"listener {where}: no process in this PID namespace holds inode {e.inode} "
                        "(a container sharing the network namespace?)",
                    )
                )
            continue
        holders = e.processes
        pids = {p.pid for p in holders}
        expected = [p for p in holders if expect and matches_expected(p, expect)]
        others = [p for p in holders if p not in expected]
        if len(holders) > 1:
            names = ", ".join(_who(p) for p in holders)
            if expect and not others:
                findings.append(
                    Finding(
                        INFO,
                        "shared_listener",
                        f"listener {where} is shared by {len(holders)} server processes ({names}): pre-forked "
                        "workers, fine as long as they all exit together",
                    )
                )
                continue
            inherited = [p for p in holders if p.ppid in pids]
            detail = ""
            if inherited:
                detail = " — " + "; ".join(
                    f"PID {p.pid} ({p.name}) inherited it from its parent {p.ppid}" for p in inherited
                )
            # still served by the expected process: a latent problem (the port outlives the server);
            # with --any-owner we cannot tell who should hold it, so it stays a warning too
            sev = PROBLEM if expect and not expected else WARNING
            findings.append(
                Finding(
                    sev,
                    "inherited_descriptor",
                    f"listener {where} is shared by {len(holders)} processes: {names}{detail}; the port stays "
                    "taken until all of them exit (open the socket with SOCK_CLOEXEC)",
                )
            )
            continue
        if not expect or expected:
            continue
        p = others[0]
        chain = ancestors(p.pid)
        expected_ancestor = None
        for apid in chain:
            info = describe_process(apid)
            if matches_expected(info, expect):
                expected_ancestor = info
                break
        if expected_ancestor is not None:
            findings.append(
                Finding(
                    PROBLEM,
                    "inherited_descriptor",
                    f"listener {where} is held by {_who(p)}, a descendant of {expected_ancestor.name} "
                    f"PID {expected_ancestor.pid}: an inherited descriptor (no SOCK_CLOEXEC) — the server no "
                    f"longer owns it; kill {p.pid} to free the port",
                )
            )
        else:
            findings.append(
                Finding(
                    PROBLEM,
                    "unexpected_owner",
                    f"listener {where} is held by {_who(p)} exe {p.exe or '?'}, not by {'/'.join(expect)}"
                    " (if the server started it, it inherited the socket; otherwise another program owns the port)",
                )
            )
    return findings


def gather_port(
    port: int,
    *,
    expect: list[str] | None = None,
    families: str = "both",
    probe: bool = True,
    acip: bool = False,
    ws: bool = False,
    timeout_s: float = 1.0,
    backend: str = "auto",
    ws_path: str = "/",
) -> PortReport:
    """Everything about one port: sockets, owners, reachability, probes and findings."""
    started = time.perf_counter()
    raw, source = collect_sockets(port, backend=backend)
    entries, scan = build_entries(raw, source, port)
    entries = _drop_vanished(entries, port, source)
    entries.sort(key=_sort_key)
    report = analyse(port, entries, source, scan, expect=list(expect if expect is not None else DEFAULT_EXPECT))
    if probe or acip or ws:
        from asciichat_diag.ports.probes import run_probes

        report.probes, report.acip, report.ws = run_probes(port, timeout_s=timeout_s, acip=acip, ws=ws, ws_path=ws_path)
    report.findings += probe_findings(report, families)
    report.findings.sort(key=lambda f: {PROBLEM: 0, WARNING: 1, INFO: 2}[f.severity])
    report.ok = report.listening and not any(f.severity == PROBLEM for f in report.findings)
    report.elapsed_ms = (time.perf_counter() - started) * 1000
    return report


def _drop_vanished(entries: list[SocketEntry], port: int | None, source: str) -> list[SocketEntry]:
    """Forget sockets that were closed between the kernel dump and the /proc walk.

    Without this, a listener closed in that window reads as "no process holds it".
    """
    orphans = {e.inode for e in entries if e.inode and not e.processes}
    if not orphans or source != "sock_diag":
        return entries
    from asciichat_diag.ports.sockdiag import dump_tcp

    alive = {r.inode for r in dump_tcp(port)}
    gone = orphans - alive
    return [e for e in entries if e.inode not in gone] if gone else entries


_STATE_ORDER = {"LISTEN": 0, "ESTABLISHED": 1, "CLOSE_WAIT": 2, "TIME_WAIT": 4}


def _sort_key(e: SocketEntry) -> int:
    """This port's own sockets first, listeners on top, TIME_WAIT last (a stable sort keeps the rest)."""
    return (0 if e.side == "local" else 8) + _STATE_ORDER.get(e.state, 3)


def analyse(port: int, entries: list[SocketEntry], source: str, scan: InodeScan | None, expect: list[str]):
    """Findings that follow from the sockets alone (probes are added later)."""
    listeners = [e for e in entries if e.state == "LISTEN" and e.local_port == port]
    v4: set[str] = set()
    v6: set[str] = set()
    for e in listeners:
        a, b = serves(e)
        v4 |= a
        v6 |= b
    rng = ephemeral_range()
    in_range = bool(rng and rng[0] <= port <= rng[1])
    findings: list[Finding] = []
    states = count_states(entries)
    report = PortReport(
        port=port,
        listening=bool(listeners),
        ipv4_served=bool(v4),
        ipv6_served=bool(v6),
        loopback_ipv4=bool(v4 & {"*", "127.0.0.1"}),
        loopback_ipv6=bool(v6 & {"*", "::1"}),
        in_ephemeral_range=in_range,
        ephemeral_range=rng,
        source=source,
        sockets=entries,
        states=states,
        probes=[],
        acip=None,
        ws=None,
        findings=findings,
        ok=False,
    )
    if not listeners:
        holders = [e for e in entries if e.side == "local"]
        extra = ""
        if holders:
            extra = f" ({len(holders)} non-listening socket(s) still use it as their local port)"
        findings.append(Finding(PROBLEM, "nothing_listening", f"nothing is listening on port {port}{extra}"))
        outgoing = [e for e in holders if e.state not in ("TIME_WAIT", "LISTEN") and e.processes]
        for e in outgoing[:3]:
            findings.append(
                Finding(
                    PROBLEM,
                    "port_taken_by_connection",
                    f"{e.local} -> {e.remote} ({e.state}, {_who(e.processes[0])}) uses port {port} as its source "
                    "port: no listener can bind it, not even with SO_REUSEADDR, until that connection closes",
                )
            )
    else:
        for e in listeners:
            if e.family == "IPv6" and e.v6only is None and source == "psutil":
                findings.append(
                    Finding(
                        INFO,
                        "v6only_unknown",
                        f"{e.local}: v6only unknown without sock_diag; assumed dual-stack (Linux default)",
                    )
                )
        findings += ownership_findings(listeners, expect, scan, source)
        findings += accept_queue_findings(listeners)
    if in_range and rng:
        findings.append(
            Finding(
                WARNING,
                "ephemeral_port",
                f"port {port} is inside the ephemeral range {rng[0]}-{rng[1]} "
                "(/proc/sys/net/ipv4/ip_local_port_range): any outgoing connection may take it as its source port, "
                "and then a listener cannot bind it even with SO_REUSEADDR; pick a port below "
                f"{rng[0]}",
            )
        )
    tw = states["TIME_WAIT"]
    if tw.count:
        if tw.time_left_max_s is not None:
            left = f", {tw.time_left_max_s:.0f} s left at most"
        else:  # psutil has no timers; Linux holds TIME_WAIT for a fixed TCP_TIMEWAIT_LEN
            left = f", up to {TIME_WAIT_LEN_S:.0f} s each"
        findings.append(
            Finding(
                INFO,
                "time_wait",
                f"{tw.count} TIME_WAIT on port {port} ({tw.local_side} with it as local port{left}): "
                "a new listener binds only with SO_REUSEADDR set, by it and by the listener they came from",
            )
        )
    cw = states["CLOSE_WAIT"]
    if cw.count:
        owners = sorted({_who(p) for e in entries if e.state == "CLOSE_WAIT" for p in e.processes})
        findings.append(
            Finding(
                WARNING,
                "close_wait",
                f"{cw.count} CLOSE_WAIT on port {port}: the peer closed but "
                f"{', '.join(owners) or 'the owning process'} never closed its end (a descriptor leak)",
            )
        )
    return report


def ipv6_loopback_available() -> bool:
    """Can anything bind ::1 here? False on hosts (or containers) with IPv6 disabled."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


def accept_queue_findings(listeners: list[SocketEntry]) -> list[Finding]:
    """A listener whose accept queue is full is alive in the kernel and dead to clients."""
    out = []
    for e in listeners:
        if e.recv_q is None or e.send_q is None or not e.recv_q:
            continue
        if e.recv_q > e.send_q or (e.send_q and e.recv_q >= e.send_q):
            out.append(
                Finding(
                    PROBLEM,
                    "accept_queue_full",
                    f"{e.local}: accept queue full ({e.recv_q}/{e.send_q}): the owning process is not calling "
                    "accept() (stopped, hung, or busy), so new clients time out",
                )
            )
        else:
            out.append(
                Finding(
                    INFO,
                    "accept_queue",
                    f"{e.local}: {e.recv_q} connection(s) waiting to be accepted (backlog {e.send_q})",
                )
            )
    return out


def probe_findings(report: PortReport, families: str) -> list[Finding]:
    """Reachability by family, and what the probes say about it."""
    out: list[Finding] = []
    if not report.listening:
        return out
    want_v4 = families in ("both", "ipv4")
    want_v6 = families in ("both", "ipv6")
    listeners = [e for e in report.sockets if e.state == "LISTEN" and e.local_port == report.port]
    v6_desc = ", ".join(f"{e.local} v6only={int(bool(e.v6only))}" for e in listeners if e.family == "IPv6")
    if want_v4 and not report.ipv4_served:
        out.append(
            Finding(
                PROBLEM,
                "ipv4_not_listening",
                f"IPv4 not listening on port {report.port}: only IPv6 listeners ({v6_desc}) and none accepts "
                "IPv4, so 127.0.0.1 clients get connection refused",
            )
        )
    elif want_v4 and not report.loopback_ipv4:
        out.append(
            Finding(
                WARNING,
                "ipv4_not_on_loopback",
                f"IPv4 listeners on port {report.port} do not include 127.0.0.1 or 0.0.0.0",
            )
        )
    if want_v6 and not report.ipv6_served and not ipv6_loopback_available():
        out.append(Finding(INFO, "no_ipv6", "this host has no IPv6 loopback (::1 cannot be bound): IPv6 not checked"))
    elif want_v6 and not report.ipv6_served:
        out.append(
            Finding(
                PROBLEM,
                "ipv6_not_listening",
                f"IPv6 not listening on port {report.port}: clients that resolve localhost to ::1 first get "
                "connection refused (and only succeed if they fall back to 127.0.0.1)",
            )
        )
    for pr in report.probes:
        expected_up = report.loopback_ipv4 if pr.family == "IPv4" else report.loopback_ipv6
        if expected_up and pr.status != "ok":
            why = {
                "timeout": "the listener does not accept (accept queue full, or the process is stopped/hung)",
                "refused": "refused although a listener is there (another network namespace?)",
            }.get(pr.status, pr.error or pr.status)
            out.append(
                Finding(PROBLEM, "probe_failed", f"connect to {format_endpoint(pr.address, report.port)}: {why}")
            )
    if report.acip is not None and report.acip.status == "server_full":
        out.append(Finding(PROBLEM, "server_full", f"ACIP probe: {report.acip.detail}: new clients are turned away"))
    elif report.acip is not None and report.acip.status != "acip":
        out.append(Finding(PROBLEM, "acip_not_answering", f"ACIP probe: {report.acip.detail}"))
    if report.ws is not None and (report.ws.status != "upgraded" or report.ws.subprotocol != "acip"):
        out.append(Finding(PROBLEM, "ws_not_acip", f"WebSocket probe: {report.ws.detail}"))
    return out


def gather_all(
    *, expect: list[str] | None = None, probe: bool = False, timeout_s: float = 1.0, backend: str = "auto"
) -> list[PortReport]:
    """One report per TCP port that has a listener (owner checks off unless `expect` is given)."""
    started = time.perf_counter()
    # one dump and one /proc walk for every port, then split by port
    raw, source = collect_sockets(None, backend=backend)
    ports = sorted({record_of(r).local_port for r in raw if record_of(r).state == "LISTEN"})
    if not ports:
        return []
    wanted = set(ports)
    relevant = [r for r in raw if record_of(r).local_port in wanted or record_of(r).remote_port in wanted]
    entries_all, scan = build_entries(relevant, source, None)
    by_port: dict[int, list[SocketEntry]] = {p: [] for p in ports}
    for e in entries_all:
        if e.local_port in by_port:
            by_port[e.local_port].append(e)
        if e.remote_port in by_port and e.remote_port != e.local_port:
            # a socket between two listed ports appears in both reports, seen from each side
            by_port[e.remote_port].append(dataclasses.replace(e, side="remote"))
    reports = []
    for port in ports:
        mine = by_port[port]
        mine.sort(key=_sort_key)
        report = analyse(port, mine, source, scan, expect=list(expect or []))
        if probe:
            from asciichat_diag.ports.probes import run_probes

            report.probes, report.acip, report.ws = run_probes(port, timeout_s=timeout_s)
            report.findings += probe_findings(report, "any")
        report.ok = report.listening and not any(f.severity == PROBLEM for f in report.findings)
        report.elapsed_ms = (time.perf_counter() - started) * 1000
        reports.append(report)
    return reports
