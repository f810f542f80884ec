"""Rich rendering of PortReport and BindReport (the JSON form comes from the same objects)."""

from __future__ import annotations

import os

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from asciichat_diag.ports.model import (
    PROBLEM,
    WARNING,
    BindReport,
    Finding,
    PortReport,
    SocketEntry,
    format_endpoint,
)

MAX_ROWS = 40  # beyond this, sockets are summarised per state; --json has them all
RARE_ROWS = 15  # rows of uncommon states (CLOSE_WAIT, FIN_WAIT2, ...) still listed one by one
SEVERITY_STYLE = {PROBLEM: "bold red", WARNING: "yellow", "info": "cyan"}
STATE_STYLE = {"LISTEN": "green", "TIME_WAIT": "magenta", "CLOSE_WAIT": "red", "ESTABLISHED": "blue"}


def _proc_text(e: SocketEntry, short: bool = False) -> str:
    if not e.processes:
        if not e.inode:
            if e.state in ("ESTABLISHED", "CLOSE_WAIT", "SYN_RECV") and e.side == "local":
                return "(not accepted yet)"
            return "-"  # TIME_WAIT and orphans have no descriptor, hence no process, by design
        if os.geteuid() == 0:
            return "? (another PID namespace)"
        return f"? (uid {e.uid}, needs root)" if e.uid is not None else "?"
    parts = []
    for p in e.processes:
        parent = f" <- {p.ppid} {p.parent_name or '?'}" if p.ppid and not short else ""
        parts.append(f"{p.pid} {p.name or '?'}{parent}")
    return "; ".join(parts)


def _process_legend(entries: list[SocketEntry]) -> Text:
    """One line per process that holds a socket here: exe, user, parent."""
    seen: dict[int, str] = {}
    for e in entries:
        for p in e.processes:
            if p.pid not in seen:
                parent = f"parent {p.ppid} {p.parent_name or '?'}" if p.ppid else "no parent"
                seen[p.pid] = f"  {p.pid} {p.name or '?'}: exe {p.exe or '?'}, user {p.username or '?'}, {parent}"
    return Text("\n".join(seen.values()), style="dim")


def _family_text(e: SocketEntry) -> str:
    if e.family == "IPv6" and e.v6only is not None:
        return f"IPv6 v6only={int(e.v6only)}"
    return e.family


def findings_text(findings: list[Finding]) -> Text:
    text = Text()
    for f in findings:
        text.append(f"{f.severity:>7} ", style=SEVERITY_STYLE.get(f.severity, ""))
        text.append(f"{f.message}\n")
    return text


def _group_table(report: PortReport) -> Table:
    """state x side x owning processes -> count (and the TIME_WAIT time left range)."""
    groups: dict[tuple[str, str, str], list[SocketEntry]] = {}
    for e in report.sockets:
        owner = _proc_text(e, short=True)
        groups.setdefault((e.state, e.side, owner), []).append(e)
    table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold", title_justify="left")
    for col in ("state", "side", "count", "time left", "pid process"):
        table.add_column(col, no_wrap=col != "pid process", overflow="fold")
    order = {"LISTEN": 0, "ESTABLISHED": 1, "CLOSE_WAIT": 2, "TIME_WAIT": 4}
    for (state, side, owner), members in sorted(
        groups.items(), key=lambda kv: (order.get(kv[0][0], 3), kv[0][1], -len(kv[1]))
    ):
        lefts = [m.time_left_s for m in members if m.time_left_s is not None]
        left = f"{min(lefts):.0f}-{max(lefts):.0f} s" if lefts else ""
        where = f"port {report.port}" if side == "local" else "peers"
        table.add_row(Text(state, style=STATE_STYLE.get(state, "")), where, str(len(members)), left, owner)
    return table


def port_renderable(report: PortReport) -> RenderableType:
    """Header line, sockets table, state counts, probes and findings for one port."""
    parts: list[RenderableType] = []
    verdict = Text()
    verdict.append(f"port {report.port}: ", style="bold")
    if report.ok:
        verdict.append("OK", style="bold green")
    else:
        verdict.append("PROBLEM", style="bold red")
    reach = []
    reach.append(f"IPv4 {'listening' if report.ipv4_served else 'not listening'}")
    reach.append(f"IPv6 {'listening' if report.ipv6_served else 'not listening'}")
    verdict.append("  " + ", ".join(reach))
    verdict.append(f"  [{report.source}, {report.elapsed_ms:.0f} ms]", style="dim")
    parts.append(verdict)

    table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    for col in ("family", "state", "local", "remote", "timer/queue"):
        table.add_column(col, no_wrap=True)
    table.add_column("pid process", no_wrap=True)
    shown = report.sockets
    grouped = False
    if len(shown) > MAX_ROWS:
        # too many to list: every listener, a few of the rarer states, then counts per group
        rare = [e for e in shown if e.state not in ("LISTEN", "ESTABLISHED", "TIME_WAIT")]
        shown = [e for e in shown if e.state == "LISTEN"] + rare[:RARE_ROWS]
        grouped = True
    for e in shown:
        timer = ""
        if e.state == "LISTEN" and e.send_q:
            timer = f"queue {e.recv_q}/{e.send_q}"
        elif e.time_left_s is not None:
            timer = f"{e.time_left_s:.1f}s left"
        elif e.timer:
            timer = e.timer
        table.add_row(
            _family_text(e),
            Text(e.state, style=STATE_STYLE.get(e.state, "")),
            e.local,
            e.remote if e.state != "LISTEN" else "*",
            timer,
            _proc_text(e, short=True),
        )
    if report.sockets:
        parts.append(table)
        parts.append(_process_legend(report.sockets))
    else:
        parts.append(Text("  no sockets on this port", style="dim"))
    if grouped:
        parts.append(_group_table(report))
        parts.append(Text(f"  {len(report.sockets)} sockets in all; --json lists every one", style="dim"))

    for sc in report.states.values():
        if not sc.count:
            continue
        peers = ", ".join(f"{host}×{n}" for host, n in sorted(sc.peers.items(), key=lambda kv: -kv[1])[:5])
        left = ""
        if sc.time_left_max_s is not None:
            left = f", {sc.time_left_min_s:.0f}-{sc.time_left_max_s:.0f} s left"
        parts.append(
            Text(
                f"  {sc.state}: {sc.count} ({sc.local_side} on this port's side, {sc.remote_side} peers' side{left})"
                f"; peers {peers}",
                style=STATE_STYLE.get(sc.state, ""),
            )
        )
    if report.probes:
        line = Text("  probes: ")
        for p in report.probes:
            style = "green" if p.status == "ok" else "red"
            line.append(f"{format_endpoint(p.address, report.port)} ")
            line.append(p.status, style=style)
            line.append(f" {p.ms:.1f} ms   ")
        parts.append(line)
    if report.acip is not None:
        style = "green" if report.acip.status == "acip" else "red"
        parts.append(Text(f"  acip: {report.acip.detail} ({report.acip.ms:.1f} ms)", style=style))
    if report.ws is not None:
        style = "green" if report.ws.status == "upgraded" and report.ws.subprotocol == "acip" else "red"
        parts.append(Text(f"  ws: {report.ws.url}: {report.ws.detail} ({report.ws.ms:.1f} ms)", style=style))
    if report.findings:
        parts.append(findings_text(report.findings))
    return Group(*parts)


def ports_renderable(reports: list[PortReport]) -> RenderableType:
    if not reports:
        return Text("no TCP listeners found", style="yellow")
    return Group(*[port_renderable(r) for r in reports])


def bind_renderable(report: BindReport) -> RenderableType:
    """Per host and option set: result, which call failed, errno, tries, time to success."""
    parts: list[RenderableType] = []
    if report.scenario:
        head = Text(f"scenario {report.scenario}: ", style="bold")
        head.append(report.scenario_expected or "")
        if report.scenario_matches is not None:
            head.append(
                "  as expected" if report.scenario_matches else "  NOT as expected",
                style="green" if report.scenario_matches else "bold red",
            )
        parts.append(head)
    parts.append(Text(f"bind()+listen() on port {report.port}", style="bold"))
    table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    table.add_column("address", no_wrap=True)
    table.add_column("options", no_wrap=True)
    table.add_column("result", no_wrap=True)
    table.add_column("failed at", overflow="fold")
    table.add_column("tries", justify="right")
    table.add_column("time to success", overflow="fold")
    for v in report.variants:
        result = Text("ok", style="green") if v.ok else Text("blocked", style="red")
        first_fail = next((a for a in v.attempts if not a.ok), None)
        opts = "+".join(o.removeprefix("SO_") for o in v.options) or "none"
        failed = f"{first_fail.failed_call} {first_fail.errno_name or ''}".strip() if first_fail else ""
        took = "-"
        if v.time_to_success_s is not None:
            took = f"{v.time_to_success_s * 1000:.2f} ms"
        table.add_row(v.host, opts, result, failed, str(len(v.attempts)), took)
    parts.append(table)
    if report.blockers:
        bt = Table(
            show_edge=False,
            pad_edge=False,
            box=None,
            header_style="bold",
            title="blocking sockets",
            title_justify="left",
        )
        for col in ("family", "state", "local", "remote", "time left", "owner"):
            bt.add_column(col, overflow="fold")
        for e in report.blockers[:MAX_ROWS]:
            bt.add_row(
                _family_text(e),
                Text(e.state, style=STATE_STYLE.get(e.state, "")),
                e.local,
                e.remote if e.state != "LISTEN" else "*",
                f"{e.time_left_s:.1f} s" if e.time_left_s is not None else "",
                _proc_text(e),
            )
        parts.append(bt)
        if len(report.blockers) > MAX_ROWS:
            parts.append(Text(f"  ... {len(report.blockers) - MAX_ROWS} more (use --json)", style="dim"))
    shown = [f for f in report.findings if f.code != "bind_blocked"]  # that one is the sentence below
    if shown:
        parts.append(findings_text(shown))
    parts.append(Text(report.explanation, style="bold green" if report.ok else "bold red"))
    return Group(*parts)
