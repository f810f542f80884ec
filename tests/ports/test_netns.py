"""Behaviour on a host without IPv6, in a private network namespace (needs root and unshare)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

SETUP = "ip link set lo up && sysctl -qw net.ipv6.conf.lo.disable_ipv6=1 && "


def in_netns(script: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["unshare", "-n", "sh", "-c", SETUP + f'exec "{sys.executable}" -c "$0"', script],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module", autouse=True)
def netns_works() -> None:
    if not shutil.which("unshare") or not shutil.which("ip"):
        pytest.skip("unshare/ip not installed")
    probe = in_netns("print('ok')")
    if probe.returncode != 0 or probe.stdout.strip() != "ok":
        pytest.skip(f"cannot create a network namespace here: {probe.stderr.strip()[:200]}")


def test_ports_without_ipv6_is_not_a_problem() -> None:
    script = """
import json, socket
from asciichat_diag.ports.gather import gather_port
s = socket.socket(); s.bind(("127.0.0.1", 27224)); s.listen()
r = gather_port(27224, expect=[])
print(json.dumps({"codes": sorted(f.code for f in r.findings), "ok": r.ok,
                  "probes": {p.family: p.status for p in r.probes}}))
"""
    result = in_netns(script)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert "no_ipv6" in data["codes"] and "ipv6_not_listening" not in data["codes"]
    assert data["probes"] == {"IPv4": "ok", "IPv6": "unavailable"}
    assert data["ok"]


def test_bind_default_hosts_without_ipv6() -> None:
    script = """
import sys
from asciichat_diag.cli import main
sys.argv = ["diag", "bind", "27224", "--json"]
main()
"""
    result = in_netns(script)
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(result.stdout)
    assert data["hosts"] == ["127.0.0.1"] and data["ok"]
    assert any(f["code"] == "no_ipv6" for f in data["findings"])
    explicit = in_netns(script.replace('"--json"', '"--json", "--host", "::1"'))
    assert explicit.returncode == 1
    assert "not an address of this host" in json.loads(explicit.stdout)["explanation"]
