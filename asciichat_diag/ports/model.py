"""Plain data that `diag ports` and `diag bind` gather; rendered by rich or dumped as JSON."""

from __future__ import annotations

from dataclasses import dataclass, field

from asciichat_diag.ports.procmap import ProcessInfo

PROBLEM = "problem"  # makes the exit status 1
WARNING = "warning"
INFO = "info"


@dataclass
class Finding:
    """One thing worth telling the user, with a stable code for scripts."""

    severity: str  # problem | warning | info
    code: str
    message: str


@dataclass(slots=True)
class SocketEntry:
    """A TCP socket whose local or remote port is the port asked about."""

    family: str  # "IPv4" | "IPv6"
    state: str
    local_ip: str
    local_port: int
    remote_ip: str
    remote_port: int
    side: str  # "local": the port is this socket's own port; "remote": it is connected to the port
    v6only: bool | None  # IPv6 listeners only (from sock_diag); None when unknown
    timer: str | None
    time_left_s: float | None  # for TIME_WAIT: how long until the kernel drops it
    uid: int | None
    user: str | None
    inode: int | None
    processes: list[ProcessInfo] = field(default_factory=list)  # shared objects, one per process
    holders: list[tuple[int, int]] = field(default_factory=list)  # (pid, fd) through which each holds it
    recv_q: int | None = None  # LISTEN: accept queue length; otherwise bytes not yet read
    send_q: int | None = None  # LISTEN: backlog; otherwise bytes not yet acknowledged
    timer_left_s: float | None = None  # whatever `timer` is running (retransmit, keepalive...), time to expiry

    @property
    def local(self) -> str:
        return format_endpoint(self.local_ip, self.local_port)

    @property
    def remote(self) -> str:
        return format_endpoint(self.remote_ip, self.remote_port)


@dataclass
class StateCount:
    """How many sockets on the port are in one state, split by side, with their peers."""

    state: str
    count: int = 0
    local_side: int = 0  # the port is their local port: these are the ones that block a bind
    remote_side: int = 0
    peers: dict[str, int] = field(default_factory=dict)  # peer host -> count
    time_left_min_s: float | None = None
    time_left_max_s: float | None = None


@dataclass
class ConnectProbe:
    """A plain TCP connect to one loopback address."""

    address: str
    family: str
    status: str  # ok | refused | timeout | unavailable | error
    ms: float
    error: str | None = None


@dataclass
class AcipProbe:
    """PROTOCOL_VERSION sent over TCP; what came back."""

    address: str
    status: str  # acip | server_full | closed | not_acip | timeout | refused | error
    answered: bool
    wants_encryption: bool | None
    ms: float
    packets: list[str] = field(default_factory=list)  # packet type names received, in order
    mode_echo: int | None = None  # the crypto mode byte of the server's PROTOCOL_VERSION
    selected_cipher: int | None = None
    server_identity: bool | None = None  # server signs its key exchange (has an Ed25519 key)
    client_keys_required: bool | None = None  # CRYPTO_PARAMETERS.verification_enabled
    server_message: str | None = None  # ERROR_MESSAGE text or the SERVER_FULL line
    detail: str = ""


@dataclass
class WsProbe:
    """WebSocket upgrade with subprotocol `acip` and the first message the server sends."""

    url: str
    status: str  # upgraded | http_error | not_http | refused | timeout | unavailable | error
    ms: float
    http_status: int | None = None
    subprotocol: str | None = None
    first_packet: str | None = None
    first_packet_type: int | None = None
    detail: str = ""


@dataclass
class PortReport:
    """Everything `diag ports` knows about one port."""

    port: int
    listening: bool
    ipv4_served: bool  # some listener accepts IPv4 (an IPv4 socket, or a dual-stack IPv6 one)
    ipv6_served: bool
    loopback_ipv4: bool  # 127.0.0.1 specifically
    loopback_ipv6: bool  # ::1 specifically
    in_ephemeral_range: bool
    ephemeral_range: tuple[int, int] | None
    source: str  # "sock_diag" or "psutil"
    sockets: list[SocketEntry]
    states: dict[str, StateCount]
    probes: list[ConnectProbe]
    acip: AcipProbe | None
    ws: WsProbe | None
    findings: list[Finding]
    ok: bool
    elapsed_ms: float = 0.0


@dataclass
class BindAttempt:
    """One bind()+listen() try."""

    elapsed_s: float  # since the first try of this variant
    ok: bool
    failed_call: str | None  # "socket" | "setsockopt" | "bind" | "listen"
    errno: int | None
    errno_name: str | None
    error: str | None


@dataclass
class BindVariant:
    """One host with one set of socket options, tried until success or out of retries."""

    host: str
    family: str
    options: list[str]  # e.g. ["SO_REUSEADDR"]; empty for none
    ok: bool
    time_to_success_s: float | None
    attempts: list[BindAttempt]

    @property
    def label(self) -> str:
        return "+".join(self.options) if self.options else "no options"


@dataclass
class BindReport:
    """What `diag bind` measured, who blocks the port, and what to do about it."""

    port: int
    hosts: list[str]
    retries: int
    backoff_s: float
    variants: list[BindVariant]
    blockers: list[SocketEntry]
    in_ephemeral_range: bool
    ephemeral_range: tuple[int, int] | None
    explanation: str
    ok: bool  # SO_REUSEADDR (what servers use) bound on every host
    scenario: str | None = None
    scenario_expected: str | None = None
    scenario_matches: bool | None = None
    findings: list[Finding] = field(default_factory=list)


def format_endpoint(ip: str, port: int) -> str:
    """127.0.0.1:80, [::1]:80."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
