"""A small NETLINK_SOCK_DIAG client: dump TCP sockets (inet_diag) with timers, inode, uid and v6only.

Works without root for every socket on the host (the process that owns it is another matter).
Linux only; callers fall back to psutil elsewhere.
"""

from __future__ import annotations

import os
import socket
import struct
from typing import NamedTuple

# linux/netlink.h, linux/sock_diag.h, linux/inet_diag.h
NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300  # NLM_F_ROOT | NLM_F_MATCH
INET_DIAG_REQ_BYTECODE = 1
INET_DIAG_SKV6ONLY = 11
INET_DIAG_BC_JMP = 1
INET_DIAG_BC_S_GE = 2
INET_DIAG_BC_S_LE = 3
INET_DIAG_BC_D_GE = 4
INET_DIAG_BC_D_LE = 5

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid (host order)
_REQ_V2 = struct.Struct("=BBBxI")  # family, protocol, ext, pad, states; then 48-byte sockid
_SOCKID = struct.Struct(">HH16s16s")  # sport, dport (network order), src, dst; then if + cookie (host order)
_SOCKID_TAIL = struct.Struct("=I8s")
_MSG = struct.Struct("=BBBB")  # family, state, timer, retrans
_MSG_TAIL = struct.Struct("=IIIII")  # expires (ms), rqueue, wqueue, uid, inode
_MSG_SIZE = _MSG.size + _SOCKID.size + _SOCKID_TAIL.size + _MSG_TAIL.size  # 72
_BC_OP = struct.Struct("=BBH")  # code, yes, no

# include/net/tcp_states.h; index = kernel state number
TCP_STATES = (
    "UNKNOWN",
    "ESTABLISHED",
    "SYN_SENT",
    "SYN_RECV",
    "FIN_WAIT1",
    "FIN_WAIT2",
    "TIME_WAIT",
    "CLOSE",
    "CLOSE_WAIT",
    "LAST_ACK",
    "LISTEN",
    "CLOSING",
    "NEW_SYN_RECV",
)
TCP_LISTEN = 10
TCP_CLOSE = 7
ALL_STATES = 0xFFF & ~1  # every real state (bit 0 is not a state)
# idiag_timer values: what the `expires` field is counting down to.
TIMER_NAMES = {0: None, 1: "retransmit", 2: "keepalive", 3: "timewait", 4: "zero-window-probe"}


class SockDiagUnavailable(OSError):
    """The kernel (or this OS) does not offer NETLINK_SOCK_DIAG for inet sockets."""


class DiagSocket(NamedTuple):
    """One TCP socket as the kernel reports it (a tuple: tens of thousands are built per dump)."""

    family: int  # socket.AF_INET / AF_INET6
    state: str  # TCP_STATES name
    local_ip: str
    local_port: int
    remote_ip: str
    remote_port: int
    timer: str | None  # "timewait", "keepalive", ...
    expires_ms: int | None  # time left on that timer
    uid: int
    inode: int  # 0 for TIME_WAIT/orphans: no file, hence no process
    v6only: bool | None  # only reported for AF_INET6 sockets in LISTEN/CLOSE
    recv_q: int = 0  # LISTEN: connections waiting in the accept queue; else unread bytes
    send_q: int = 0  # LISTEN: the backlog passed to listen(); else unsent bytes


def _port_bytecode(port: int) -> bytes:
    """inet_diag filter program accepting sockets whose source *or* destination port equals `port`.

    The kernel audits the chain of `yes` jumps and requires every `no` target to lie on it, and a
    program accepts by jumping exactly to its end (len 0) and rejects by jumping 4 bytes past it.
    """
    total = 36
    ops = [
        _BC_OP.pack(INET_DIAG_BC_S_GE, 8, 20),  # @0  sport >= P ? next : dport checks (@20)
        _BC_OP.pack(0, 0, port),
        _BC_OP.pack(INET_DIAG_BC_S_LE, 8, 12),  # @8  sport <= P ? @16 : @20
        _BC_OP.pack(0, 0, port),
        _BC_OP.pack(INET_DIAG_BC_JMP, 4, 20),  # @16 sport == P: jump to end (accept)
        _BC_OP.pack(INET_DIAG_BC_D_GE, 8, 20),  # @20 dport >= P ? next : reject
        _BC_OP.pack(0, 0, port),
        _BC_OP.pack(INET_DIAG_BC_D_LE, 8, 12),  # @28 dport <= P ? accept : reject
        _BC_OP.pack(0, 0, port),
    ]
    program = b"".join(ops)
    assert len(program) == total
    return program


def _request(family: int, states: int, port: int | None, seq: int) -> bytes:
    body = _REQ_V2.pack(family, socket.IPPROTO_TCP, 0, states)
    body += _SOCKID.pack(0, 0, b"\0" * 16, b"\0" * 16) + _SOCKID_TAIL.pack(0, b"\xff" * 8)
    if port is not None:
        program = _port_bytecode(port)
        attr_len = 4 + len(program)
        body += struct.pack("=HH", attr_len, INET_DIAG_REQ_BYTECODE) + program
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body


# family, state, timer, retrans, sport, dport (network order), src, dst, if, cookie, expires, rq, wq, uid, inode
_MSG_ALL = struct.Struct("=BBBBHH16s16sI8sIIIII")
assert _MSG_ALL.size == _MSG_SIZE


class _AddrCache(dict):
    """raw 16-byte address -> text; a dump repeats the same few addresses thousands of times."""

    def __init__(self, family: int) -> None:
        super().__init__()
        self.family = family

    def __missing__(self, raw: bytes) -> str:
        if self.family == socket.AF_INET:
            text = socket.inet_ntop(socket.AF_INET, raw[:4])
        else:
            # RFC 5952 text, with v4-mapped addresses as ::ffff:127.0.0.1 (ss and psutil print that too)
            text = socket.inet_ntop(socket.AF_INET6, raw)
        self[raw] = text
        return text


# nlmsghdr and inet_diag_msg in one unpack: one C call per socket instead of two
_HDR_MSG = struct.Struct("=IHHII" + _MSG_ALL.format[1:])
_new_socket = tuple.__new__  # builds a DiagSocket without NamedTuple's Python-level __new__


def _parse(data: bytes, out: list[DiagSocket], addrs: _AddrCache) -> bool:
    """Parse one recv() worth of netlink messages; True when the dump is complete.

    Runs once per socket (20,000 times for 10,000 loopback connections), hence the local aliases.
    """
    offset = 0
    end = len(data)
    unpack_all = _HDR_MSG.unpack_from
    full = _HDR_MSG.size
    ntohs = socket.ntohs
    states = TCP_STATES
    n_states = len(states)
    timers = TIMER_NAMES
    append = out.append
    cls = DiagSocket
    new = _new_socket
    v6 = socket.AF_INET6
    while offset + 16 <= end:
        if offset + full > end:
            msg_len, msg_type = struct.unpack_from("=IH", data, offset)
            if msg_type not in (NLMSG_DONE, NLMSG_ERROR) or msg_len < 16:
                return True
        else:
            (msg_len, msg_type, _f, _s, _p, family, state, timer, _re, sport, dport, src, dst, _if, _ck,
             expires, rq, wq, uid, inode) = unpack_all(data, offset)  # fmt: skip
        if msg_len < 16 or msg_type == NLMSG_DONE:
            return True
        if msg_type == NLMSG_ERROR:
            (err,) = struct.unpack_from("=i", data, offset + 16)
            if err:
                raise SockDiagUnavailable(-err, os.strerror(-err))
            return True
        if msg_type == SOCK_DIAG_BY_FAMILY:
            v6only = None
            # the kernel attaches INET_DIAG_SKV6ONLY to IPv6 sockets in LISTEN or CLOSE only; skip
            # the attribute walk (SHUTDOWN etc.) for the thousands of connections
            if family == v6 and state in (TCP_LISTEN, TCP_CLOSE) and msg_len > full:
                attr = offset + full
                msg_end = offset + msg_len
                while attr + 4 <= msg_end:
                    alen, atype = struct.unpack_from("=HH", data, attr)
                    if alen < 4:
                        break
                    if atype == INET_DIAG_SKV6ONLY and alen >= 5:
                        v6only = bool(data[attr + 4])
                    attr += (alen + 3) & ~3
            timer_name = timers.get(timer, f"timer{timer}")
            append(
                new(
                    cls,
                    (
                        family,
                        states[state] if state < n_states else f"STATE{state}",
                        addrs[src],
                        ntohs(sport),
                        addrs[dst],
                        ntohs(dport),
                        timer_name,
                        expires if timer_name else None,
                        uid,
                        inode,
                        v6only,
                        rq,
                        wq,
                    ),
                )
            )
        offset += (msg_len + 3) & ~3
    return False


def _dump_family(sock: socket.socket, family: int, states: int, port: int | None, seq: int) -> list[DiagSocket]:
    sock.send(_request(family, states, port, seq))
    out: list[DiagSocket] = []
    addrs = _AddrCache(family)
    while True:
        data = sock.recv(1 << 20)
        if not data or _parse(data, out, addrs):
            return out


def dump_tcp(port: int | None = None, states: int = ALL_STATES, listening_only: bool = False) -> list[DiagSocket]:
    """Every TCP socket (IPv4 and IPv6) whose local or remote port is `port` (all when None).

    Raises SockDiagUnavailable when the interface is missing (not Linux, or a kernel without inet_diag).
    """
    if listening_only:
        states = 1 << TCP_LISTEN
    if not hasattr(socket, "AF_NETLINK"):
        raise SockDiagUnavailable("NETLINK_SOCK_DIAG needs Linux")
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_SOCK_DIAG)
    except OSError as exc:
        raise SockDiagUnavailable(exc.errno, f"cannot open NETLINK_SOCK_DIAG: {exc.strerror}") from exc
    try:
        sock.bind((0, 0))
        result: list[DiagSocket] = []
        for seq, family in enumerate((socket.AF_INET, socket.AF_INET6), start=1):
            try:
                result += _dump_family(sock, family, states, port, seq)
            except SockDiagUnavailable as exc:
                # EINVAL on a kernel that refuses the port filter: dump unfiltered and filter here.
                if port is None or exc.errno != 22:
                    raise
                unfiltered = _dump_family(sock, family, states, None, seq + 10)
                result += [s for s in unfiltered if port in (s.local_port, s.remote_port)]
        return result
    finally:
        sock.close()
