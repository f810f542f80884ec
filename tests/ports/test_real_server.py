"""diag ports against the project's own asciichat-server, started on loopback test ports."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from asciichat_diag.ports.sockdiag import dump_tcp

pytest.importorskip("asciichat_server.server")
pytestmark = pytest.mark.slow

DIAG = [sys.executable, "-m", "asciichat_diag.cli"]
SERVER = [os.path.join(os.path.dirname(sys.executable), "asciichat-server")]


def _listening(port: int) -> int:
    return sum(1 for s in dump_tcp(port) if s.state == "LISTEN" and s.local_port == port)


def start_server(net, *extra: str) -> tuple[subprocess.Popen, int, int]:
    port = net.free_port(outside_ephemeral=True)
    ws_port = net.free_port(outside_ephemeral=True)
    args = [*SERVER, "--port", str(port), "--websocket-port", str(ws_port), "--log-level", "warn", *extra]
    if not os.path.exists(SERVER[0]):
        args = [sys.executable, "-m", "asciichat_server.cli", *args[1:]]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    want_ws = "--no-websocket" not in extra
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"asciichat-server exited: {proc.stderr.read()}")
        if _listening(port) == 2 and (not want_ws or _listening(ws_port) == 2):
            return proc, port, ws_port
        time.sleep(0.05)
    proc.kill()
    pytest.fail("asciichat-server did not listen within 60 s")


@pytest.fixture(scope="module")
def server(net) -> Iterator[tuple[subprocess.Popen, int, int]]:
    proc, port, ws_port = start_server(net)
    yield proc, port, ws_port
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def diag_json(*args: str) -> tuple[int, dict]:
    result = subprocess.run([*DIAG, *args, "--json"], capture_output=True, text=True, timeout=60)
    return result.returncode, json.loads(result.stdout)


def test_real_server_tcp_acip(server) -> None:
    proc, port, _ws = server
    code, data = diag_json("ports", str(port), "--acip", "--timeout", "5")
    assert data["acip"]["status"] == "acip", data["acip"]
    assert data["acip"]["wants_encryption"] is True and data["acip"]["mode_echo"] == 1
    assert data["acip"]["packets"][:2] == ["PROTOCOL_VERSION", "CRYPTO_PARAMETERS"]
    listen = [s for s in data["sockets"] if s["state"] == "LISTEN"]
    assert {s["local"] for s in listen} == {f"127.0.0.1:{port}", f"[::1]:{port}"}
    assert {pid for s in listen for pid in s["pids"]} == {proc.pid}
    # the default --expect recognises the server through the kernel's 15-character name
    assert not [f for f in data["findings"] if f["code"] in ("unexpected_owner", "inherited_descriptor")]
    assert code == 0, data["findings"]


def test_real_server_websocket(server) -> None:
    _proc, _port, ws_port = server
    code, data = diag_json("ports", str(ws_port), "--ws", "--timeout", "5")
    ws = data["ws"]
    assert ws["status"] == "upgraded" and ws["subprotocol"] == "acip", ws
    assert ws["first_packet"] in ("CRYPTO_PARAMETERS", "CRYPTO_KEY_EXCHANGE_INIT")
    assert code == 0, data["findings"]


def test_real_server_plaintext_does_not_want_encryption(net) -> None:
    proc, port, _ws = start_server(net, "--no-encrypt", "--no-websocket")
    try:
        code, data = diag_json("ports", str(port), "--acip", "--timeout", "5")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(15)
    assert data["acip"]["status"] == "acip"
    assert data["acip"]["wants_encryption"] is False
    assert code == 0


def test_real_server_wrong_probe_for_each_port_says_which_to_use(server) -> None:
    _proc, port, ws_port = server
    _code, data = diag_json("ports", str(ws_port), "--acip", "--timeout", "5")
    assert data["acip"]["status"] == "not_acip" and "use --ws" in data["acip"]["detail"]
    code, data = diag_json("ports", str(port), "--ws", "--timeout", "5")
    assert data["ws"]["status"] == "not_http" and "use --acip" in data["ws"]["detail"]
    assert code == 1


def test_killed_server_leaves_time_wait_that_reuseaddr_rides_over(net) -> None:
    import socket

    proc, port, _ws = start_server(net, "--no-websocket")
    client = socket.create_connection(("127.0.0.1", port))
    try:
        net.wait_for(lambda: any(s.state == "ESTABLISHED" and s.local_port == port for s in dump_tcp(port)), 10)
        proc.kill()  # the kernel closes the server's sockets first: its port collects TIME_WAIT
        proc.wait()
        client.settimeout(5)
        try:
            client.recv(1)
        except OSError:
            pass
    finally:
        client.close()
    net.wait_for(lambda: any(s.state == "TIME_WAIT" and s.local_port == port for s in dump_tcp(port)), 10)

    code, ports_data = diag_json("ports", str(port), "--no-probe")
    assert code == 1 and ports_data["listening"] is False
    assert ports_data["states"]["TIME_WAIT"]["local_side"] >= 1
    assert 0 < ports_data["states"]["TIME_WAIT"]["time_left_max_s"] <= 60

    code, bind_data = diag_json("bind", str(port), "--host", "127.0.0.1")
    assert code == 0, bind_data["explanation"]  # the server sets SO_REUSEADDR, so a restart binds
    plain = next(v for v in bind_data["variants"] if v["options"] == [])
    assert not plain["ok"] and plain["attempts"][0]["errno_name"] == "EADDRINUSE"
    assert "SO_REUSEADDR binds at once" in bind_data["explanation"]


def test_real_server_full_says_so(net) -> None:
    import socket

    proc, port, _ws = start_server(net, "--no-websocket", "--max-clients", "1")
    first = socket.create_connection(("127.0.0.1", port))  # takes the only slot
    try:
        from asciichat_diag.ports.gather import gather_port

        def accepted() -> bool:  # the server process, not just the kernel, holds the connection
            report = gather_port(port, probe=False)
            return any(e.state == "ESTABLISHED" and e.side == "local" and e.processes for e in report.sockets)

        net.wait_for(accepted, 20)
        code, data = diag_json("ports", str(port), "--acip", "--timeout", "5")
    finally:
        first.close()
        proc.send_signal(signal.SIGINT)
        proc.wait(15)
    assert data["acip"]["status"] == "server_full"
    assert data["acip"]["server_message"] == "SERVER_FULL: Maximum client limit reached"
    assert code == 1 and "server_full" in {f["code"] for f in data["findings"]}
