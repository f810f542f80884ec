"""diag ports against real sockets on 127.0.0.1 and ::1.

v6only design: tests never bind a wildcard address. The v6-only point is made with ::1 listeners
(a V6ONLY=1 one, and one that asks for V6ONLY=0, which Linux overrides on a specific-address bind),
with a V6ONLY=0 socket on ::ffff:127.0.0.1 (an IPv6 socket that really serves IPv4 loopback: the
loopback-only stand-in for a dual-stack `*:P`), and the wildcard rules ([::] v6only=1 vs dual-stack
`*`) are checked through `serves()` on the records the kernel reports for them.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import pytest
from click.testing import CliRunner

from asciichat_diag.cli import main
from asciichat_diag.ports.gather import gather_all, gather_port, serves
from asciichat_diag.ports.model import SocketEntry
from asciichat_diag.ports.sockdiag import dump_tcp

DIAG = [sys.executable, "-m", "asciichat_diag.cli"]


def codes(report) -> set[str]:
    return {f.code for f in report.findings}


def listeners_of(report):
    return [e for e in report.sockets if e.state == "LISTEN"]


def run_diag(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([*DIAG, *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.ipv6
def test_v6only_loopback_listener_is_ipv4_not_listening(net, port, sockets) -> None:
    sockets.append(net.listener("::1", port, v6only=True))
    report = gather_port(port, expect=[net.own_name()])
    (lst,) = listeners_of(report)
    assert lst.family == "IPv6" and lst.v6only is True and lst.local_ip == "::1"
    assert not report.ipv4_served and report.ipv6_served
    assert "ipv4_not_listening" in codes(report)
    probes = {p.family: p.status for p in report.probes}
    assert probes == {"IPv4": "refused", "IPv6": "ok"}
    assert not report.ok

    result = run_diag("ports", str(port), "--expect", net.own_name(), "--color", "never")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "IPv4 not listening" in result.stdout
    assert "v6only=1" in result.stdout


@pytest.mark.ipv6
def test_dual_stack_request_on_loopback_still_no_ipv4(net, port, sockets) -> None:
    # V6ONLY=0 asked on a socket bound to ::1: Linux's inet6_bind forces v6only on for any specific,
    # non-mapped address, and we report what the kernel says, not what the program asked for
    sock = net.listener("::1", port, v6only=False)
    sockets.append(sock)
    assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
    report = gather_port(port, expect=[net.own_name()])
    (lst,) = listeners_of(report)
    assert lst.v6only is True
    assert not report.ipv4_served
    assert "ipv4_not_listening" in codes(report)
    assert {p.family: p.status for p in report.probes}["IPv4"] == "refused"


@pytest.mark.ipv6
def test_v4_mapped_dual_stack_listener_serves_ipv4(net, port, sockets) -> None:
    # an AF_INET6 socket that accepts 127.0.0.1 through the v4-mapped address: only with V6ONLY=0
    sockets.append(net.listener("::ffff:127.0.0.1", port, v6only=False))
    report = gather_port(port, expect=[net.own_name()], families="ipv4")
    (lst,) = listeners_of(report)
    assert lst.family == "IPv6" and lst.v6only is False and lst.local_ip == "::ffff:127.0.0.1"
    assert report.ipv4_served and report.loopback_ipv4 and not report.ipv6_served
    assert {p.family: p.status for p in report.probes}["IPv4"] == "ok"
    assert report.ok, report.findings


@pytest.mark.ipv6
def test_both_loopbacks_reachable_exit_0(net, port, sockets) -> None:
    # ascii-chat's own layout: 127.0.0.1 and ::1 (V6ONLY=1) as two sockets
    sockets.append(net.listener("127.0.0.1", port))
    sockets.append(net.listener("::1", port, v6only=True))
    result = run_diag("ports", str(port), "--expect", net.own_name(), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(result.stdout)
    assert data["ipv4_served"] and data["ipv6_served"] and data["ok"]
    assert {p["family"]: p["status"] for p in data["probes"]} == {"IPv4": "ok", "IPv6": "ok"}
    assert all(p["ms"] >= 0 for p in data["probes"])
    owners = {pid for s in data["sockets"] if s["state"] == "LISTEN" for pid in s["pids"]}
    assert owners == {os.getpid()}
    me = data["processes"][str(os.getpid())]
    assert me["exe"] and me["ppid"] == os.getppid() and me["name"] == net.own_name()
    assert {s["local"] for s in data["sockets"] if s["state"] == "LISTEN"} == {f"127.0.0.1:{port}", f"[::1]:{port}"}
    assert all(h[0] == os.getpid() and h[1] > 2 for s in data["sockets"] for h in s["holders"])
    assert not [f for f in data["findings"] if f["severity"] == "problem"]


@pytest.mark.ipv6
def test_wrong_owner_is_a_problem(net, port, sockets) -> None:
    sockets.append(net.listener("127.0.0.1", port))
    sockets.append(net.listener("::1", port, v6only=True))
    report = gather_port(port)  # default expectation: asciichat-server / ascii-chat
    assert "unexpected_owner" in codes(report)
    assert not report.ok
    assert f"PID {os.getpid()}" in next(f.message for f in report.findings if f.code == "unexpected_owner")


def entry(ip: str, v6only: bool | None, family: str = "IPv6") -> SocketEntry:
    return SocketEntry(family, "LISTEN", ip, 27226, "::", 0, "local", v6only, None, None, 0, "root", 1, [])


@pytest.mark.parametrize(
    ("ip", "v6only", "family", "v4", "v6"),
    [
        ("::", True, "IPv6", set(), {"*"}),  # lws' [::] V6ONLY=1: "IPv4 not listening"
        ("::", False, "IPv6", {"*"}, {"*"}),  # ss prints it as *:P
        ("::", None, "IPv6", {"*"}, {"*"}),  # unknown (psutil): Linux default is dual-stack
        ("::1", False, "IPv6", set(), {"::1"}),
        ("::ffff:127.0.0.1", False, "IPv6", {"127.0.0.1"}, set()),
        ("::ffff:127.0.0.1", True, "IPv6", set(), set()),
        ("0.0.0.0", None, "IPv4", {"*"}, set()),
        ("127.0.0.1", None, "IPv4", {"127.0.0.1"}, set()),
    ],
)
def test_serves_rules(ip, v6only, family, v4, v6) -> None:
    assert serves(entry(ip, v6only, family)) == (v4, v6)


def test_time_wait_and_close_wait_counted(net, port, sockets) -> None:
    lst = net.listener("127.0.0.1", port)
    sockets.append(lst)
    peers = net.make_time_wait(lst, 3)
    # one CLOSE_WAIT: the client closes, our accepted end never does
    client = socket.create_connection(("127.0.0.1", port))
    server_side, _ = lst.accept()
    sockets.append(server_side)
    client.close()
    net.wait_for(lambda: any(s.state == "CLOSE_WAIT" for s in dump_tcp(port)))

    report = gather_port(port, expect=[net.own_name()], probe=False)
    tw = report.states["TIME_WAIT"]
    assert tw.count == 3 and tw.local_side == 3
    assert tw.peers == {"127.0.0.1": 3}
    assert 0 < tw.time_left_min_s <= tw.time_left_max_s <= 60
    tw_ports = sorted(e.remote_port for e in report.sockets if e.state == "TIME_WAIT")
    assert tw_ports == sorted(peers)
    assert all(not e.processes for e in report.sockets if e.state == "TIME_WAIT")
    cw = report.states["CLOSE_WAIT"]
    assert cw.count == 1
    (cw_entry,) = [e for e in report.sockets if e.state == "CLOSE_WAIT"]
    assert [p.pid for p in cw_entry.processes] == [os.getpid()]
    assert {"time_wait", "close_wait"} <= codes(report)


def test_nothing_listening_exit_1(net, port) -> None:
    result = run_diag("ports", str(port), "--json")
    assert result.returncode == 1
    data = json.loads(result.stdout)
    assert data["listening"] is False
    assert data["findings"][0]["code"] == "nothing_listening"
    assert {p["status"] for p in data["probes"]} <= {"refused", "unavailable"}  # ::1 may not exist
    text = run_diag("ports", str(port), "--color", "never")
    assert text.returncode == 1 and "nothing is listening" in text.stdout


def test_time_wait_only_port_is_not_listening(net, port, sockets) -> None:
    lst = net.listener("127.0.0.1", port)
    net.make_time_wait(lst, 1)
    lst.close()
    report = gather_port(port, probe=False)
    assert not report.listening and "nothing_listening" in codes(report)
    assert report.states["TIME_WAIT"].count == 1


def spawn_holder(socks: list[socket.socket]) -> subprocess.Popen:
    return subprocess.Popen(["sleep", "60"], pass_fds=tuple(s.fileno() for s in socks))


def test_child_holding_listener_is_attributed_to_child(net, port) -> None:
    lst = net.listener("127.0.0.1", port)
    child = spawn_holder([lst])
    lst.close()  # only the child holds it now, like a popen'ed helper after the server died
    try:
        report = gather_port(port, expect=[net.own_name()], families="ipv4")
        (lst_entry,) = listeners_of(report)
        assert [p.pid for p in lst_entry.processes] == [child.pid]
        holder = lst_entry.processes[0]
        assert holder.name == "sleep" and holder.ppid == os.getpid()
        finding = next(f for f in report.findings if f.code == "inherited_descriptor")
        assert finding.severity == "problem" and str(child.pid) in finding.message
        assert {p.family: p.status for p in report.probes}["IPv4"] == "ok"  # the kernel still accepts
        assert not report.ok
    finally:
        child.kill()
        child.wait()


def test_listener_shared_with_child_is_flagged(net, port, sockets) -> None:
    lst = net.listener("127.0.0.1", port)
    sockets.append(lst)
    child = spawn_holder([lst])
    try:
        report = gather_port(port, expect=[net.own_name()], families="ipv4", probe=False)
        (lst_entry,) = listeners_of(report)
        assert sorted(p.pid for p in lst_entry.processes) == sorted([os.getpid(), child.pid])
        finding = next(f for f in report.findings if f.code == "inherited_descriptor")
        assert f"PID {child.pid} (sleep) inherited it from its parent {os.getpid()}" in finding.message
        # still served by the expected process, so a warning: the port will outlive the server
        assert finding.severity == "warning"
        strict = gather_port(port, expect=["asciichat-server"], families="ipv4", probe=False)
        assert next(f for f in strict.findings if f.code == "inherited_descriptor").severity == "problem"
    finally:
        child.kill()
        child.wait()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create a listener another user cannot see")
def test_listener_of_another_user_says_root_is_needed(net, port, sockets) -> None:
    sockets.append(net.listener("127.0.0.1", port))
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: become nobody, look at root's listener
        try:
            os.close(read_fd)
            for s in sockets:
                s.close()  # the fork's copy; only the parent (root) holds the listener now
            os.setgid(65534)
            os.setuid(65534)
            report = gather_port(port, families="ipv4", probe=False)
            payload = {
                "codes": sorted(codes(report)),
                "messages": [f.message for f in report.findings],
                "processes": [len(e.processes) for e in listeners_of(report)],
                "uid": [e.uid for e in listeners_of(report)],
            }
            os.write(write_fd, json.dumps(payload).encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd) as fh:
        data = json.loads(fh.read())
    os.waitpid(pid, 0)
    assert data["processes"] == [0] and data["uid"] == [0]
    assert "no_process_visible" in data["codes"]
    msg = next(m for m in data["messages"] if "rerun as root" in m)
    assert "uid 0 (root)" in msg and "PID" in msg and "parent" in msg


def test_port_taken_by_outgoing_connection(net, port, sockets) -> None:
    server_port = net.free_port()
    srv = net.listener("127.0.0.1", server_port)
    sockets.append(srv)
    client = socket.socket()
    sockets.append(client)
    client.bind(("127.0.0.1", port))  # an outgoing connection whose source port is our port
    client.connect(("127.0.0.1", server_port))
    accepted, _ = srv.accept()
    sockets.append(accepted)
    report = gather_port(port, probe=False)
    assert not report.listening
    assert "port_taken_by_connection" in codes(report)
    msg = next(f.message for f in report.findings if f.code == "port_taken_by_connection")
    assert f"127.0.0.1:{server_port}" in msg and "SO_REUSEADDR" in msg


def test_ephemeral_range_flag(net, sockets) -> None:
    from asciichat_diag.ports.gather import ephemeral_range

    low, high = ephemeral_range()
    inside = net.free_port()  # the kernel hands out ports from the ephemeral range
    assert low <= inside <= high
    report = gather_port(inside, probe=False)
    assert "ephemeral_port" in codes(report)
    outside = next(p for p in range(27224, low) if not dump_tcp(p) and _free(p))
    report = gather_port(outside, probe=False)
    assert "ephemeral_port" not in codes(report)


def _free(port: int) -> bool:
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


@pytest.mark.ipv6
def test_psutil_backend_agrees_on_listeners(net, port, sockets) -> None:
    sockets.append(net.listener("127.0.0.1", port))
    sockets.append(net.listener("::1", port, v6only=True))
    a = gather_port(port, expect=[net.own_name()], probe=False, backend="sock_diag")
    b = gather_port(port, expect=[net.own_name()], probe=False, backend="psutil")
    assert b.source == "psutil" and a.source == "sock_diag"
    key = lambda r: sorted((e.family, e.local_ip, tuple(p.pid for p in e.processes)) for e in listeners_of(r))  # noqa: E731
    assert key(a) == key(b)
    assert [e.v6only for e in listeners_of(b)] == [None, None]  # psutil cannot tell; sock_diag can
    assert [e.v6only for e in listeners_of(a) if e.family == "IPv6"] == [True]


def test_all_lists_our_listeners(net, port, sockets) -> None:
    sockets.append(net.listener("127.0.0.1", port))
    reports = gather_all()
    mine = [r for r in reports if r.port == port]
    assert len(mine) == 1 and mine[0].listening
    assert all(r.listening for r in reports)
    result = CliRunner().invoke(main, ["ports", "--all", "--json"])
    assert result.exit_code in (0, 1)
    assert port in [r["port"] for r in json.loads(result.output)]


@pytest.mark.parametrize(
    "args",
    [["ports"], ["ports", "0"], ["ports", "70000"], ["ports", "1", "--all"], ["ports", "1", "--watch", "--json"]],
)
def test_usage_errors_exit_2(args) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_watch_refreshes_until_interrupted(net, port, sockets) -> None:
    import re
    import threading
    import time

    sockets.append(net.listener("127.0.0.1", port))
    # --color always makes rich treat the pipe as a terminal, so every refresh is written at once
    proc = subprocess.Popen(
        [
            *DIAG,
            "ports",
            str(port),
            "--watch",
            "--interval",
            "0.2",
            "--color",
            "always",
            "--family",
            "ipv4",
            "--any-owner",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: chunks.extend(iter(lambda: proc.stdout.read1(4096), b"")), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 60  # a loaded CI box can take long to start Python
        while time.monotonic() < deadline and b"".join(chunks).count(b"Ctrl-C to stop") < 2:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(5)
    out = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode())
    assert proc.returncode == 0, proc.stderr.read().decode()
    assert out.count("Ctrl-C to stop") >= 2  # it refreshed
    assert f"port {port}: OK" in out


@pytest.mark.ipv6
def test_json_rows_equal_the_dict_form(net, port, sockets) -> None:
    from asciichat_diag.ports.jsonout import socket_dict, socket_row

    lst = net.listener("127.0.0.1", port)
    sockets.append(lst)
    sockets.append(net.listener("::1", port, v6only=True))
    net.make_time_wait(lst, 1)
    report = gather_port(port, probe=False)
    weird = SocketEntry("IPv4", "LISTEN", "127.0.0.1", 1, "0.0.0.0", 0, "local", None, None, 1.5, 7, 'a"b\\\\ü', 9, [])
    for e in [*report.sockets, weird]:
        assert json.loads(socket_row(e)) == socket_dict(e)


def test_expected_name_matching() -> None:
    from asciichat_diag.ports.procmap import ProcessInfo, matches_expected

    def info(name, exe, cmdline):
        return ProcessInfo(1, name, exe, cmdline, "u", 0, None)

    want = ["asciichat-server", "ascii-chat"]
    py = "/usr/bin/python3.11"
    # console script: the kernel truncates the name to 15 characters, the exe is python
    assert matches_expected(info("asciichat-serve", py, [py, "/v/bin/asciichat-server", "-p", "1"]), want)
    assert matches_expected(info("python3", py, [py, "-m", "asciichat_server", "--port", "1"]), want)
    assert matches_expected(info("ascii-chat", "/opt/bin/ascii-chat", ["ascii-chat", "server"]), want)
    assert not matches_expected(info("sleep", "/usr/bin/sleep", ["sleep", "60"]), want)
    assert not matches_expected(info("python3", py, [py, "-m", "http.server"]), want)
    assert not matches_expected(info(None, None, []), want)


def test_many_sockets_are_grouped_in_text(net, port, sockets) -> None:
    lst = net.listener("127.0.0.1", port)
    sockets.append(lst)
    for _ in range(30):
        sockets.append(socket.create_connection(("127.0.0.1", port)))
        sockets.append(lst.accept()[0])
    result = CliRunner().invoke(
        main, ["ports", str(port), "--color", "never", "--no-probe", "--any-owner", "--family", "ipv4"]
    )
    assert result.exit_code == 0, result.output
    out = result.output
    assert "61 sockets in all; --json lists every one" in out
    established = [line.split() for line in out.splitlines() if line.startswith("ESTABLISHED")]
    assert sorted((row[1], row[-3]) for row in established) == [("peers", "30"), ("port", "30")]


def test_procfs_process_details_match_psutil() -> None:
    import psutil

    from asciichat_diag.ports.procmap import _describe_procfs

    child = subprocess.Popen(["sleep", "30"])
    try:
        for pid in (os.getpid(), child.pid, os.getppid()):
            mine = _describe_procfs(pid)
            ref = psutil.Process(pid)
            assert mine is not None
            assert (mine.name, mine.exe, mine.cmdline, mine.username, mine.ppid) == (
                ref.name(),
                ref.exe(),
                ref.cmdline(),
                ref.username(),
                ref.ppid(),
            )
            assert mine.parent_name == psutil.Process(ref.ppid()).name()
    finally:
        child.kill()
        child.wait()
    assert _describe_procfs(2**22 + 7) is None  # beyond pid_max: no such process


def test_psutil_backend_time_wait_without_timers(net, port, sockets) -> None:
    lst = net.listener("127.0.0.1", port)
    sockets.append(lst)
    net.make_time_wait(lst, 2)
    report = gather_port(port, expect=[net.own_name()], families="ipv4", probe=False, backend="psutil")
    assert report.source == "psutil"
    assert report.states["TIME_WAIT"].count == 2 and report.states["TIME_WAIT"].time_left_max_s is None
    msg = next(f.message for f in report.findings if f.code == "time_wait")
    assert "up to 60 s" in msg
    (lst_entry,) = listeners_of(report)
    assert [p.pid for p in lst_entry.processes] == [os.getpid()] and lst_entry.holders == [(os.getpid(), lst.fileno())]


def test_shared_listener_findings_by_expectation(net, port, sockets) -> None:
    lst = net.listener("127.0.0.1", port)
    sockets.append(lst)
    # a "worker" that is the same program as us (same name), and a stranger
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], pass_fds=(lst.fileno(),))
    try:
        net.wait_for(lambda: len(listeners_of(gather_port(port, probe=False))[0].processes) == 2)
        same = gather_port(port, expect=[net.own_name(), "python3", "python"], families="ipv4", probe=False)
        assert "shared_listener" in codes(same) and "inherited_descriptor" not in codes(same)
        anyone = gather_port(port, expect=[], families="ipv4", probe=False)
        finding = next(f for f in anyone.findings if f.code == "inherited_descriptor")
        assert finding.severity == "warning" and str(worker.pid) in finding.message
        nobody = gather_port(port, expect=["asciichat-server"], families="ipv4", probe=False)
        assert next(f for f in nobody.findings if f.code == "inherited_descriptor").severity == "problem"
    finally:
        worker.kill()
        worker.wait()


def test_ports_json_path_imports_stay_light(net, port, sockets) -> None:
    # startup is part of the 0.5 s budget: no numpy/pyelftools, and no asyncio/aiohttp/psutil unless
    # --acip/--ws or a fallback needs them
    sockets.append(net.listener("127.0.0.1", port))
    script = (
        "import sys\n"
        "from asciichat_diag.cli import main\n"
        f"sys.argv = ['diag', 'ports', '{port}', '--json', '--any-owner']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = ('numpy', 'elftools', 'aiohttp', 'asyncio', 'psutil', 'av')\n"
        "print(sorted(m for m in heavy if m in sys.modules), file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.stderr.strip().splitlines()[-1] == "[]"
    assert json.loads(result.stdout)["listening"]
