"""JSON for ports/bind reports: every socket, each on one line, and each process described once.

A port with 10,000 connections must not turn into 20 MB of indented, repeated process records.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, TextIO

from asciichat_diag._common import to_jsonable
from asciichat_diag.ports.model import BindReport, PortReport, SocketEntry

_string = json.encoder.encode_basestring  # the C string escaper json itself uses (no ASCII forcing)


def socket_dict(e: SocketEntry) -> dict[str, Any]:
    """The JSON object for one socket (what `socket_row` writes, as a dict)."""
    return {
        "family": e.family,
        "state": e.state,
        "local": e.local,
        "remote": e.remote,
        "local_ip": e.local_ip,
        "local_port": e.local_port,
        "remote_ip": e.remote_ip,
        "remote_port": e.remote_port,
        "side": e.side,
        "v6only": e.v6only,
        "timer": e.timer,
        "time_left_s": e.time_left_s,
        "uid": e.uid,
        "user": e.user,
        "inode": e.inode,
        "pids": [p.pid for p in e.processes],
        "holders": [list(h) for h in e.holders],
        "recv_q": e.recv_q,
        "send_q": e.send_q,
        "timer_left_s": e.timer_left_s,
    }


_LITERAL = {None: "null", True: "true", False: "false"}


def socket_row(e: SocketEntry) -> str:
    """socket_dict(e) as one line of JSON."""
    return socket_rows([e])[0]


def _null(v: Any) -> str:
    return "null" if v is None else repr(v)


def socket_rows(sockets: list[SocketEntry]) -> list[str]:
    """socket_dict() of every socket as one line of JSON each, formatted directly.

    Through dicts and json's encoder 20,000 rows cost a fifth of a second, so the fields shared by
    many sockets (family, state, side, v6only, timer, uid, user) are rendered once per combination
    and only the per-socket part is formatted per row. Families, states, sides, timers and IP
    addresses are fixed ASCII tokens that never need escaping; the user name goes through json's
    escaper.
    """
    heads: dict[tuple, str] = {}
    endpoints: dict[str, str] = {}
    pid_text: dict[int, str] = {}
    out: list[str] = []
    append = out.append
    for e in sockets:
        key = (e.family, e.state, e.side, e.v6only, e.timer, e.uid, e.user)
        head = heads.get(key)
        if head is None:
            timer = "null" if e.timer is None else f'"{e.timer}"'
            user = "null" if e.user is None else _string(e.user)
            head = heads[key] = (
                f'{{"family": "{e.family}", "state": "{e.state}", "side": "{e.side}", '
                f'"v6only": {_LITERAL[e.v6only]}, "timer": {timer}, "uid": {_null(e.uid)}, "user": {user}, '
            )
        lip = e.local_ip
        rip = e.remote_ip
        lend = endpoints.get(lip)
        if lend is None:
            lend = endpoints[lip] = f"[{lip}]:" if ":" in lip else f"{lip}:"
        rend = endpoints.get(rip)
        if rend is None:
            rend = endpoints[rip] = f"[{rip}]:" if ":" in rip else f"{rip}:"
        procs = e.processes
        if not procs:
            pids = ""
        else:
            # process lists are shared between the sockets of one process: format each list once
            pids = pid_text.get(id(procs))
            if pids is None:
                pids = pid_text[id(procs)] = ", ".join([str(p.pid) for p in procs])
        held = e.holders
        if not held:
            holders = ""
        elif len(held) == 1:
            holders = f"[{held[0][0]}, {held[0][1]}]"
        else:
            holders = ", ".join([f"[{pid}, {fd}]" for pid, fd in held])
        lport = e.local_port
        rport = e.remote_port
        append(
            f'{head}"local": "{lend}{lport}", "remote": "{rend}{rport}", "local_ip": "{lip}", '
            f'"local_port": {lport}, "remote_ip": "{rip}", "remote_port": {rport}, '
            f'"time_left_s": {"null" if e.time_left_s is None else repr(e.time_left_s)}, '
            f'"inode": {"null" if e.inode is None else e.inode}, "pids": [{pids}], "holders": [{holders}], '
            f'"recv_q": {"null" if e.recv_q is None else e.recv_q}, '
            f'"send_q": {"null" if e.send_q is None else e.send_q}, '
            f'"timer_left_s": {"null" if e.timer_left_s is None else repr(e.timer_left_s)}}}'
        )
    return out


def _split(obj: Any) -> tuple[dict[str, Any], list[SocketEntry], str]:
    """The report's plain fields, its socket list, and the key that list lives under."""
    key = "sockets" if isinstance(obj, PortReport) else "blockers"
    fields = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.name != key}
    return fields, getattr(obj, key), key


def _render(obj: PortReport | BindReport, indent: str) -> str:
    fields, sockets, key = _split(obj)
    head = to_jsonable(fields)
    seen: dict[int, Any] = {}
    for e in sockets:
        for p in e.processes:
            if p.pid not in seen:
                seen[p.pid] = p
    head["processes"] = {str(pid): to_jsonable(p) for pid, p in sorted(seen.items())}
    body = json.dumps(head, indent=2, ensure_ascii=False)
    inner = indent + "  "
    prefix = inner + "  "
    rows = prefix + (",\n" + prefix).join(socket_rows(sockets))
    sock_text = f'{inner}"{key}": [\n{rows}\n{inner}]' if sockets else f'{inner}"{key}": []'
    # re-indent the head and splice the socket list in before its closing brace
    lines = body.splitlines()
    lines = [lines[0]] + [indent + line for line in lines[1:]]
    return "\n".join(lines[:-1]) + ",\n" + sock_text + "\n" + lines[-1]


def write_json(obj: PortReport | BindReport | list[PortReport], stream: TextIO) -> None:
    """Write one report, or a list of them, as JSON followed by a newline."""
    if isinstance(obj, list):
        if not obj:
            stream.write("[]\n")
            return
        stream.write("[\n" + ",\n".join("  " + _render(r, "  ") for r in obj) + "\n]\n")
    else:
        stream.write(_render(obj, "") + "\n")
