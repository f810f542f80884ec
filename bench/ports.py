#!/usr/bin/env python3
"""Wall time of `diag ports PORT --json` against `ss -tanpe` and `lsof -i :PORT` with N open loopback
connections (default 10,000), which this script creates itself. Target: diag <= 0.5 s.

    .venv/bin/python bench/ports.py [--connections 10000] [--runs 5]

The server ends live in this process, the client ends in a child, so each side needs only N
descriptors (RLIMIT_NOFILE is raised to the hard limit).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time

TARGET_S = 0.5
CLIENT = r"""
import resource, socket, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
port, n = int(sys.argv[1]), int(sys.argv[2])
held = []
for i in range(n):
    held.append(socket.create_connection(("127.0.0.1", port)))
print("ready", flush=True)
sys.stdin.read()
"""


def raise_nofile(needed: int) -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        sys.exit(f"RLIMIT_NOFILE hard limit {hard} < {needed} needed; lower --connections")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def timed(cmd: list[str], runs: int) -> tuple[list[float], list[float], int, int]:
    """Wall and CPU (user+sys, all threads) times of `runs` executions; bytes and lines of the last output.

    CPU time is what to compare on a busy machine: wall time there mostly measures the neighbours.
    """
    walls, cpus = [], []
    out = b""
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        chunks = []
        assert proc.stdout is not None
        while chunk := proc.stdout.read(1 << 16):
            chunks.append(chunk)
        _pid, _status, usage = os.wait4(proc.pid, 0)
        proc.returncode = 0
        walls.append(time.perf_counter() - start)
        cpus.append(usage.ru_utime + usage.ru_stime)
        out = b"".join(chunks)
    return walls, cpus, len(out), out.count(b"\n")


def print_breakdown(port: int, runs: int) -> None:
    """Where diag's time goes, in this process (best CPU time of `runs`): kernel dump, /proc walk,
    building the report, writing JSON. Startup (interpreter + imports) is the rest."""
    import io

    from asciichat_diag.ports.gather import analyse, build_entries, collect_sockets
    from asciichat_diag.ports.jsonout import write_json
    from asciichat_diag.ports.procmap import scan_socket_inodes

    best: dict[str, float] = {}

    def phase(name, fn, *args):
        start = time.process_time()
        value = fn(*args)
        best[name] = min(best.get(name, 1e9), time.process_time() - start)
        return value

    for _ in range(runs):
        raw, source = phase("sock_diag dump", collect_sockets, port)
        scan = phase("/proc fd walk", scan_socket_inodes, {r.inode for r in raw if r.inode})
        entries, _ = phase("build entries", build_entries, raw, source, port, scan)
        report = phase("analyse", analyse, port, entries, source, scan, [])
        phase("write JSON", write_json, report, io.StringIO())
    startup = min(cpu_of([sys.executable, "-m", "asciichat_diag.cli", "ports", "1", "--json"]) for _ in range(runs))
    parts = ", ".join(f"{k} {v:.3f}" for k, v in best.items())
    print(
        f"{'(diag breakdown, CPU s, best)':34} {parts}; startup+empty port {startup:.3f}; sum "
        f"{sum(best.values()) + startup:.3f}"
    )


def cpu_of(cmd: list[str]) -> float:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _pid, _status, usage = os.wait4(proc.pid, 0)
    proc.returncode = 0
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--connections", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    n = args.connections
    raise_nofile(n + 64)

    lst = socket.socket()
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lst.bind(("127.0.0.1", 0))
    lst.listen(4096)
    port = lst.getsockname()[1]
    accepted: list[socket.socket] = []

    def accept_all() -> None:
        while len(accepted) < n:
            conn, _ = lst.accept()
            accepted.append(conn)

    acceptor = threading.Thread(target=accept_all, daemon=True)
    acceptor.start()
    t0 = time.perf_counter()
    client = subprocess.Popen(
        [sys.executable, "-c", CLIENT, str(port), str(n)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert client.stdout is not None and client.stdout.readline().strip() == b"ready"
    acceptor.join(60)
    setup_s = time.perf_counter() - t0
    try:
        total = (
            int(subprocess.run(["ss", "-tan", "-H"], capture_output=True).stdout.count(b"\n"))
            if shutil.which("ss")
            else -1
        )
        print(
            f"{n} loopback connections on 127.0.0.1:{port} ({len(accepted)} accepted) in {setup_s:.1f} s; "
            f"{total} TCP sockets on the host; {os.cpu_count()} CPUs; {args.runs} runs each\n"
        )
        diag = [os.path.join(os.path.dirname(sys.executable), "diag")]
        if not os.path.exists(diag[0]):
            diag = [sys.executable, "-m", "asciichat_diag.cli"]
        commands = [
            ("diag ports PORT --json", [*diag, "ports", str(port), "--json", "--any-owner", "--family", "ipv4"]),
            (
                "diag ports PORT (text)",
                [*diag, "ports", str(port), "--any-owner", "--family", "ipv4", "--color", "never"],
            ),
        ]
        if shutil.which("ss"):
            commands.append(("ss -tanpe", ["ss", "-tanpe"]))
            commands.append(
                ("ss -tanpe sport|dport = :PORT", ["ss", "-tanpe", f"( sport = :{port} or dport = :{port} )"])
            )
        if shutil.which("lsof"):
            commands.append(("lsof -i :PORT", ["lsof", "-i", f":{port}"]))
            commands.append(("lsof -nP -i :PORT", ["lsof", "-nP", "-i", f":{port}"]))
        print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print(f"{'command':34} {'median s':>9} {'min s':>7} {'max s':>7} {'cpu s':>7} {'lines':>7} {'bytes':>10}")
        diag_median = diag_min = None
        for label, cmd in commands:
            walls, cpus, size, lines = timed(cmd, args.runs)
            med = statistics.median(walls)
            if label == "diag ports PORT --json":
                diag_median, diag_min = med, min(walls)
            print(
                f"{label:34} {med:9.3f} {min(walls):7.3f} {max(walls):7.3f} {statistics.median(cpus):7.3f} "
                f"{lines:7d} {size:10d}"
            )
        print_breakdown(port, args.runs)
        start = time.perf_counter()
        import psutil

        conns = psutil.net_connections(kind="tcp")
        print(
            f"{'(psutil.net_connections, in-process)':34} {time.perf_counter() - start:9.3f} "
            f"{'':>7} {'':>7} {len(conns):7d}"
        )
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        verdict = "PASS" if diag_median is not None and diag_median <= TARGET_S else "FAIL"
        print(
            f"\ntarget: diag ports PORT --json <= {TARGET_S} s wall (median): {verdict} "
            f"(median {diag_median:.3f} s, best {diag_min:.3f} s)"
        )
    finally:
        assert client.stdin is not None
        client.stdin.close()
        client.wait(30)
        for conn in accepted:
            conn.close()
        lst.close()


if __name__ == "__main__":
    main()
