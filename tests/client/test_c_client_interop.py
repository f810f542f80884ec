"""The real C ascii-chat (c41) against our code, when ASCIICHAT_C_BINARY names a built `ascii-chat`:
its client against our server, and our client against its server.

The C program announces itself by mDNS and looks for updates, so it only ever runs inside a private
network namespace (`unshare -n`, loopback only) together with our server.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
C_BINARY = os.environ.get("ASCIICHAT_C_BINARY", "")

# Runs inside the namespace: our server on a fixed port (the namespace is private), then the C client.
# The C Dev build writes its log next to the nearest .git above its working directory, so it runs in
# the temporary HOME, never in this checkout.
DRIVER = r"""
import json, os, re, subprocess, sys, time
c_binary, root, home, extra_server, extra_client = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
log = os.path.join(home, "server.log")
server = subprocess.Popen([sys.executable, "-m", "asciichat_server.cli", "--port", "27224", "--no-websocket",
                           "--log-file", log, *json.loads(extra_server)], cwd=root,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not (os.path.exists(log) and "[READY]" in open(log).read()):
        time.sleep(0.05)
    env = dict(os.environ, HOME=home)
    client = subprocess.run([c_binary, "--no-check-update", "--log-level", "info", "client", "127.0.0.1:27224",
                             "--test-pattern", "--snapshot", "--snapshot-delay", "1", "-x", "80", "-y", "24",
                             "--no-audio-playback", "--no-encode-audio", *json.loads(extra_client)],
                            env=env, cwd=home, capture_output=True, text=True, timeout=90)
    print(json.dumps({"rc": client.returncode, "stdout": client.stdout, "stderr": client.stderr[-4000:],
                      "server_log": open(log).read()[-4000:]}))
finally:
    server.terminate()
    server.wait(timeout=10)
"""


def _namespace_available() -> bool:
    if not shutil.which("unshare"):
        return False
    return subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0


pytestmark = [
    pytest.mark.skipif(not C_BINARY, reason="set ASCIICHAT_C_BINARY to a built c41 ascii-chat to run"),
    pytest.mark.skipif(bool(C_BINARY) and not os.access(C_BINARY, os.X_OK), reason="ASCIICHAT_C_BINARY not runnable"),
    pytest.mark.skipif(bool(C_BINARY) and not _namespace_available(), reason="needs `unshare -n` (private netns)"),
    pytest.mark.slow,
]


@pytest.mark.parametrize(
    ("server_args", "client_args"),
    [
        ([], []),
        (["--no-encrypt"], ["--no-encrypt"]),
        (["--password", "correct horse"], ["--password", "correct horse"]),
        (["--client-keys", "{key}.pub"], ["--key", "{key}"]),
    ],
    ids=["encrypted", "plaintext", "password", "allow-list"],
)
def test_c_client_snapshot_from_our_server(tmp_path, server_args: list[str], client_args: list[str]) -> None:
    home = tmp_path / "home"
    home.mkdir()
    if "{key}" in " ".join(server_args + client_args):
        # The C client only reads keys from under $HOME; an OpenSSH ed25519 key made by ssh-keygen.
        if not shutil.which("ssh-keygen"):
            pytest.skip("needs ssh-keygen")
        (home / ".ssh").mkdir()
        key = home / ".ssh" / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        server_args = [a.replace("{key}", str(key)) for a in server_args]
        client_args = [a.replace("{key}", str(key)) for a in client_args]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = ["unshare", "-n", sys.executable, "-c", DRIVER, C_BINARY, str(ROOT), str(home)]
    cmd += [json.dumps(server_args), json.dumps(client_args)]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # c41 exits 1 even after a good snapshot (a race while it disconnects, ACIP.md §13): judge the frame.
    assert result["rc"] in (0, 1), result
    # Piped, the c41 client writes every frame it shows back to back (no newline between frames). Its
    # test pattern is 4:3, so in 80x24 cells our frames are height-bound: 24 rows of 64 columns.
    out = result["stdout"]
    assert out, result["stderr"]
    assert out.count("\n") % 23 == 0, out.count("\n")
    first = out.split("\n")[:23]
    assert all(len(line) <= 80 for line in first)
    assert len(set("".join(first)) - {" "}) >= 2, out[:400]
    assert "protocol error" not in result["server_log"].lower()


# Our client against the C server, in one namespace. The c41 Dev server needs seconds to start and to
# render (several seconds for its first frame on 2 cores), hence the low fps and long timeouts.
DRIVER_C_SERVER = r"""
import json, os, subprocess, sys, time
c_binary, root, home, server_args, client_args = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
env = dict(os.environ, HOME=home)
out = open(os.path.join(home, "c-server.log"), "w")
server = subprocess.Popen([c_binary, "--no-check-update", "--log-level", "info", "server", *json.loads(server_args)],
                          env=env, cwd=home, stdout=out, stderr=subprocess.STDOUT)
try:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        text = open(os.path.join(home, "c-server.log"), errors="replace").read()
        if "WebSocket server starting event loop" in text:
            break
        time.sleep(0.2)
    time.sleep(1)
    client = subprocess.run([sys.executable, "-m", "asciichat_server.client.cli", *json.loads(client_args),
                             "--test-pattern", "--snapshot", "--snapshot-delay", "1", "-x", "80", "-y", "24",
                             "--color-level", "none", "--fps", "2", "--timeout", "40"],
                            cwd=root, capture_output=True, text=True, timeout=120)
    print(json.dumps({"rc": client.returncode, "stdout": client.stdout, "stderr": client.stderr[-3000:]}))
finally:
    server.terminate()
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.kill()
"""


@pytest.mark.parametrize(
    ("server_args", "client_args"),
    [
        (["--port", "27224", "--no-encrypt"], ["127.0.0.1:27224", "--no-encrypt"]),
        (["--port", "27224"], ["127.0.0.1:27224"]),
        (["--port", "27224", "--password", "correct horse"], ["127.0.0.1:27224", "--password", "correct horse"]),
        (["--port", "27224", "--websocket-port", "27226"], ["ws://127.0.0.1:27226/"]),
    ],
    ids=["tcp-plaintext", "tcp-encrypted", "tcp-password", "ws-encrypted"],
)
def test_our_client_snapshot_from_c_server(tmp_path, server_args: list[str], client_args: list[str]) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = ["unshare", "-n", sys.executable, "-c", DRIVER_C_SERVER, C_BINARY, str(ROOT), str(home)]
    cmd += [json.dumps(server_args), json.dumps(client_args)]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["rc"] == 0, result["stderr"]
    lines = result["stdout"].rstrip("\n").split("\n")
    assert 1 <= len(lines) <= 24
    # The C renderer may shorten runs with REP (ESC[<n>b) and ends lines with ESC[0m; count visible text.
    visible = [line.split("\x1b[")[0] for line in lines]
    assert max(len(line) for line in visible) <= 80
    assert len(set("".join(visible)) - {" "}) >= 5
