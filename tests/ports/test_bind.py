"""diag bind: measured bind+listen on loopback, scenarios built for real, and the verdicts."""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import threading

import psutil
import pytest
from click.testing import CliRunner

from asciichat_diag.cli import main
from asciichat_diag.ports.bind import REUSEADDR, REUSEPORT, run_bind, run_scenario

DIAG = [sys.executable, "-m", "asciichat_diag.cli"]


def variant(report, host: str, options: list[str]):
    return next(v for v in report.variants if v.host == host and v.options == options)


@pytest.mark.ipv6
def test_free_port_binds_every_way(port) -> None:
    report = run_bind(port, ["127.0.0.1", "::1"], retries=0, backoff_s=0.1)
    assert report.ok and all(v.ok for v in report.variants)
    assert {v.family for v in report.variants} == {"IPv4", "IPv6"}
    assert len(report.variants) == 6  # 2 hosts x (none, REUSEADDR, REUSEADDR+REUSEPORT)
    assert all(len(v.attempts) == 1 and v.time_to_success_s is not None for v in report.variants)
    assert report.blockers == []
    assert report.explanation.startswith(f"Nothing holds port {port}")
    result = CliRunner().invoke(main, ["bind", str(port), "--json"])
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert data["ok"] and data["variants"][0]["attempts"][0]["ok"]


@pytest.mark.ipv6
def test_time_wait_scenario_blocked_then_immediate(port) -> None:
    report = run_scenario("time-wait", port, ["127.0.0.1", "::1"], retries=0, backoff_s=0.1)
    assert report.scenario_matches
    for host in ("127.0.0.1", "::1"):
        plain = variant(report, host, [])
        assert not plain.ok
        assert plain.attempts[0].failed_call == "bind" and plain.attempts[0].errno == errno.EADDRINUSE
        reuse = variant(report, host, [REUSEADDR])
        assert reuse.ok and len(reuse.attempts) == 1 and reuse.time_to_success_s < 5
    assert report.ok  # a server with SO_REUSEADDR would start
    assert {e.state for e in report.blockers} == {"TIME_WAIT"}
    assert {e.family for e in report.blockers} == {"IPv4", "IPv6"}
    assert all(0 < e.time_left_s <= 60 for e in report.blockers)
    assert "SO_REUSEADDR binds at once" in report.explanation


def test_time_wait_scenario_cli_exit_and_sentence(port) -> None:
    result = subprocess.run(
        [*DIAG, "bind", str(port), "--scenario", "time-wait", "--host", "127.0.0.1", "--color", "never"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "as expected" in result.stdout and "TIME_WAIT" in result.stdout
    # and the TIME_WAIT it left behind is still there for a plain `diag bind` to find
    again = CliRunner().invoke(main, ["bind", str(port), "--host", "127.0.0.1", "--json"])
    data = json.loads(again.output)
    assert again.exit_code == 0  # SO_REUSEADDR binds
    assert not data["variants"][0]["ok"] and data["blockers"][0]["state"] == "TIME_WAIT"


def test_time_wait_from_listener_without_reuseaddr(port) -> None:
    report = run_scenario("time-wait-noreuse", port, ["127.0.0.1"], retries=0, backoff_s=0.1)
    assert report.scenario_matches
    assert not variant(report, "127.0.0.1", [REUSEADDR]).ok
    assert not report.ok
    assert "did not set SO_REUSEADDR" in report.explanation


@pytest.mark.ipv6
def test_live_listener_scenario(port) -> None:
    report = run_scenario("live-listener", port, ["127.0.0.1", "::1"], retries=0, backoff_s=0.1)
    assert report.scenario_matches and not report.ok
    assert all(not v.ok for v in report.variants)
    listen = [e for e in report.blockers if e.state == "LISTEN"]
    assert len(listen) == 2 and all([p.pid for p in e.processes] == [os.getpid()] for e in listen)
    assert f"kill {os.getpid()}" in report.explanation


def test_child_holds_scenario_attributes_child(port) -> None:
    report = run_scenario("child-holds", port, ["127.0.0.1"], retries=0, backoff_s=0.1)
    assert report.scenario_matches
    (blocker,) = [e for e in report.blockers if e.state == "LISTEN"]
    (holder,) = blocker.processes
    assert holder.name == "sleep" and holder.ppid == os.getpid()
    assert f"PID {holder.pid} (sleep" in report.explanation and "inherited" in report.explanation
    assert not psutil.pid_exists(holder.pid)  # the scenario reaped its child
    # and the port is free again afterwards
    assert run_bind(port, ["127.0.0.1"], 0, 0.1).ok


def test_retries_with_backoff_measure_time_to_success(net, port) -> None:
    held = net.listener("127.0.0.1", port)
    timer = threading.Timer(0.35, held.close)
    timer.start()
    try:
        report = run_bind(port, ["127.0.0.1"], retries=6, backoff_s=0.05)
    finally:
        timer.cancel()
        held.close()
    reuse = variant(report, "127.0.0.1", [REUSEADDR])
    assert reuse.ok and len(reuse.attempts) > 2
    assert reuse.time_to_success_s >= 0.3
    gaps = [b.elapsed_s - a.elapsed_s for a, b in zip(reuse.attempts, reuse.attempts[1:])]
    for i, gap in enumerate(gaps):
        assert gap >= 0.05 * 2**i * 0.9  # exponential: 0.05, 0.1, 0.2, ...
    assert all(a.errno == errno.EADDRINUSE for a in reuse.attempts[:-1])
    assert "after" in report.explanation and "tries" in report.explanation


def test_address_not_on_this_host_is_not_retried() -> None:
    # 192.0.2.1 (TEST-NET-1) is never a local address: bind() fails locally, nothing is sent
    report = run_bind(27999, ["192.0.2.1"], retries=3, backoff_s=0.01)
    assert not report.ok
    for v in report.variants:
        assert len(v.attempts) == 1 and v.attempts[0].errno == errno.EADDRNOTAVAIL
        assert v.attempts[0].failed_call == "bind"
    assert "not an address of this host" in report.explanation


def test_outgoing_connection_blocks_even_with_reuseaddr(net, port, sockets) -> None:
    server_port = net.free_port()
    srv = net.listener("127.0.0.1", server_port)
    client = socket.socket()
    sockets += [srv, client]
    client.bind(("127.0.0.1", port))
    client.connect(("127.0.0.1", server_port))
    accepted, _ = srv.accept()
    sockets.append(accepted)
    report = run_bind(port, ["127.0.0.1"], retries=0, backoff_s=0.1)
    assert not variant(report, "127.0.0.1", [REUSEADDR]).ok
    assert "uses" in report.explanation and "as its own port" in report.explanation
    (blocker,) = report.blockers
    assert blocker.state == "ESTABLISHED" and blocker.processes[0].pid == os.getpid()


@pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="no SO_REUSEPORT on this OS")
def test_reuseport_listener_shares_only_with_reuseport(port, sockets) -> None:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen()
    sockets.append(sock)
    report = run_bind(port, ["127.0.0.1"], retries=0, backoff_s=0.1)
    assert not variant(report, "127.0.0.1", []).ok
    assert not variant(report, "127.0.0.1", [REUSEADDR]).ok
    assert variant(report, "127.0.0.1", [REUSEADDR, REUSEPORT]).ok  # same user, both set it


@pytest.mark.parametrize(
    "args",
    [
        ["bind", "80000"],
        ["bind", "27224", "--host", "not-an-ip"],
        ["bind", "27224", "--host", "192.0.2.1", "--scenario", "time-wait"],
        ["bind", "27224", "--scenario", "nope"],
    ],
)
def test_bind_usage_errors(args) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_scenario_on_busy_port_is_one_line_error(net, port, sockets) -> None:
    sockets.append(net.listener("127.0.0.1", port, reuse=False))
    result = subprocess.run(
        [*DIAG, "bind", str(port), "--scenario", "live-listener", "--host", "127.0.0.1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "cannot build scenario" in result.stderr
    assert "Traceback" not in result.stderr


def test_bind_text_output_names_blocker(port, sockets, net) -> None:
    sockets.append(net.listener("127.0.0.1", port))
    result = CliRunner().invoke(main, ["bind", str(port), "--host", "127.0.0.1", "--color", "never"])
    assert result.exit_code == 1
    assert "EADDRINUSE" in result.output and "blocking sockets" in result.output
    assert f"kill {os.getpid()}" in result.output


def test_outgoing_connection_that_set_reuseaddr_does_not_block_a_reuseaddr_listener(net, port, sockets) -> None:
    # the mirror of the test above: once *both* sides set SO_REUSEADDR the kernel lets the listener
    # in next to a non-listening user of the port (verified on Linux 6.x); without it bind() fails
    server_port = net.free_port()
    srv = net.listener("127.0.0.1", server_port)
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sockets += [srv, client]
    client.bind(("127.0.0.1", port))
    client.connect(("127.0.0.1", server_port))
    accepted, _ = srv.accept()
    sockets.append(accepted)
    report = run_bind(port, ["127.0.0.1"], retries=0, backoff_s=0.1)
    plain = variant(report, "127.0.0.1", [])
    assert (plain.attempts[0].failed_call, plain.attempts[0].errno) == ("bind", errno.EADDRINUSE)
    assert variant(report, "127.0.0.1", [REUSEADDR]).ok and report.ok
    assert "SO_REUSEADDR binds past" in report.explanation
    assert f"127.0.0.1:{port} -> 127.0.0.1:{server_port}" in report.explanation


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create a listener another user cannot see")
def test_blocker_of_another_user_says_rerun_as_root(net, port, sockets) -> None:
    sockets.append(net.listener("127.0.0.1", port))
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: drop to nobody, then ask why the port cannot be bound
        try:
            os.close(read_fd)
            for s in sockets:
                s.close()  # the fork's copy; only root's process holds the listener now
            os.setgid(65534)
            os.setuid(65534)
            report = run_bind(port, ["127.0.0.1"], 0, 0.1)
            os.write(write_fd, json.dumps([report.ok, report.explanation]).encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd) as fh:
        ok, explanation = json.loads(fh.read())
    os.waitpid(pid, 0)
    assert not ok
    assert "uid 0" in explanation and f"sudo diag bind {port}" in explanation
