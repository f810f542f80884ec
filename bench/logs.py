"""Throughput of `diag logs` on a 1 GB ascii-chat log, beside `grep -E` on the same file.

    .venv/bin/python bench/logs.py            # generates /tmp/asciichat-diag-bench/ascii-chat-1g.log once
    .venv/bin/python bench/logs.py --size-mb 256

Prints lines/s for: a tag filter (--tag WS_REASSEMBL), a --grep regex, and grep -E with the
equivalent pattern, all on the same file in one run (page cache warmed first, so all read from
memory), plus the full-parse rate (every record parsed) on a 64 MB slice. Target: >= 200,000 lines/s.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = Path("/tmp/asciichat-diag-bench")
TARGET_LINES_PER_S = 200_000

# (weight, template): a debug build's server log, dominated by per-callback timing chatter.
TEMPLATES = [
    (
        30,
        "[{t}] [DEBUG] [tid:140234887431872] lib/network/websocket/server.c:597@websocket_server_callback(): "
        "[WS_TIMING] callback_enter_ns captured: {n}",
    ),
    (
        15,
        "[{t}] [DEV  ] [tid:140234887431872] lib/network/websocket/server.c:698@websocket_server_callback(): "
        "[WS_FLOW] Queue: free={a}/64 (used={b})",
    ),
    (
        15,
        "[{t}] [DEBUG] [tid:140234887431873] lib/network/websocket/server.c:1012@websocket_service_thread(): "
        "[LWS_SERVICE] Call #{n} took {a}us",
    ),
    (
        10,
        "[{t}] [INFO ] [tid:140234887431873] lib/network/websocket/server.c:1030@websocket_service_thread(): "
        "[LWS_SERVICE_GAP] {a}ms gap between service calls",
    ),
    (
        10,
        "[{t}] [DEBUG] [tid:140234887431874] src/server/client.c:{a}@client_send_thread(): "
        "Sending IMAGE_FRAME {a}x{b} to client {c} ({n} bytes)",
    ),
    (8, "[{t}] [INFO ] Client {c} frame {n} rendered in {a}us"),
    (
        5,
        "[{t}] [DEBUG] [tid:140234887431875] lib/network/acip/server.c:{a}@acip_server_dispatch(): "
        "packet type={b} len={n} from client {c}",
    ),
    (
        1,
        "[{t}] [WARN ] [tid:140234887431872] lib/network/websocket/transport.c:551@websocket_recv(): "
        "[WS_REASSEMBLE] fragment {a}/{b} for client {c}, total {n} bytes",
    ),
    (
        1,
        "[{t}] [INFO ] [tid:140234887431872] lib/network/websocket/transport.c:611@websocket_recv(): "
        "✅ [WS_REASSEMBLE] COMPLETE: {a} fragments, {n} bytes",
    ),
    (
        1,
        "[{t}] [ERROR] [tid:140234887431876] lib/crypto/handshake.c:{a}@crypto_handshake_server(): "
        "Handshake failed for client {c}: timeout after {b}ms\nSignal: 0\n  while waiting for KEY_EXCHANGE_RESP",
    ),
]
TAG_ARGS = ["--tag", "WS_REASSEMBL"]
GREP_ARGS = ["--grep", "/handshake failed|reassembly timeout|IPv6 bind/i"]
GREP_E_TAG = r"\[WS_REASSEMBL[A-Z0-9_]*\]"
GREP_E_REGEX = "handshake failed|reassembly timeout|IPv6 bind"


def generate(path: Path, size_bytes: int) -> int:
    """Write the log (a day of local time, wrapping past midnight) and return its line count."""
    rnd = random.Random(20260220)
    weights = [w for w, _ in TEMPLATES]
    formats = [f for _, f in TEMPLATES]
    lines = 0
    written = 0
    usec = 8 * 3600 * 10**6
    tmp = path.with_suffix(".part")
    with tmp.open("w", buffering=1 << 22) as out:
        while written < size_bytes:
            batch = []
            for fmt in rnd.choices(formats, weights, k=20000):
                usec += rnd.randrange(30, 400)
                s, us = divmod(usec // 1 % (86400 * 10**6), 10**6)
                t = f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}.{us:06d}"
                a, b, c, n = rnd.randrange(1, 2000), rnd.randrange(1, 99), rnd.randrange(1, 9), rnd.randrange(10**7)
                batch.append(fmt.format(t=t, a=a, b=b, c=c, n=n))
            text = "\n".join(batch) + "\n"
            out.write(text)
            written += len(text.encode())
            lines += text.count("\n")
    tmp.rename(path)
    return lines


def ensure_log(size_mb: int) -> tuple[Path, int]:
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    path = BENCH_DIR / f"ascii-chat-{size_mb}m.log"
    meta = path.with_suffix(".json")
    if path.exists() and meta.exists():
        info = json.loads(meta.read_text())
        if info.get("size") == path.stat().st_size:
            return path, info["lines"]
    print(f"generating {path} ({size_mb} MB)...", flush=True)
    started = time.perf_counter()
    lines = generate(path, size_mb * 1_000_000)
    meta.write_text(json.dumps({"size": path.stat().st_size, "lines": lines}))
    print(f"  {lines:,} lines in {time.perf_counter() - started:.1f} s", flush=True)
    return path, lines


def timed(cmd: list[str], out_path: Path) -> tuple[float, float, int]:
    """Wall and CPU (user+sys) time of cmd with stdout to a file, and the number of lines it printed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with out_path.open("wb") as out:
        started = time.perf_counter()
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.PIPE, cwd=ROOT)
        elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{cmd[:4]} failed: {proc.stderr.decode()[-500:]}")
    with out_path.open("rb") as fh:
        printed = sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))
    return elapsed, cpu, printed


def warm(path: Path) -> None:
    with path.open("rb") as fh:
        while fh.read(1 << 24):
            pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=1000, help="log size in MB (default 1000 = 1 GB)")
    args = ap.parse_args()
    path, lines = ensure_log(args.size_mb)
    warm(path)
    diag = [sys.executable, "-m", "asciichat_diag.cli", "logs", str(path), "--color", "never", "--no-rate"]
    out = BENCH_DIR / "out.txt"
    rows = []
    for label, cmd in (
        ("diag logs --tag WS_REASSEMBL", [*diag, *TAG_ARGS]),
        ("grep -E '" + GREP_E_TAG + "'", ["grep", "-E", GREP_E_TAG, str(path)]),
        ("diag logs --grep '" + GREP_ARGS[1] + "'", [*diag, *GREP_ARGS]),
        ("grep -E -i '" + GREP_E_REGEX + "'", ["grep", "-E", "-i", GREP_E_REGEX, str(path)]),
    ):
        elapsed, cpu, printed = timed(cmd, out)
        rows.append((label, elapsed, cpu, printed, lines))

    # Full parse (no prefilter possible: a level filter) on a 64 MB slice, the slow path's honest rate.
    slice_path = BENCH_DIR / "slice-64m.log"
    if not slice_path.exists() or slice_path.stat().st_size == 0:
        with path.open("rb") as src, slice_path.open("wb") as dst:
            data = src.read(64_000_000)
            dst.write(data[: data.rfind(b"\n") + 1])
    slice_lines = slice_path.read_bytes().count(b"\n")
    slice_diag = [sys.executable, "-m", "asciichat_diag.cli", "logs", str(slice_path), "--color", "never", "--no-rate"]
    elapsed, cpu, printed = timed([*slice_diag, "--level", "error", "--no-prefilter"], out)
    rows.append(
        ("diag logs --level error --no-prefilter (64 MB, every record parsed)", elapsed, cpu, printed, slice_lines)
    )
    elapsed, cpu, printed = timed([*slice_diag, "--level", "error"], out)
    rows.append(("diag logs --level error (64 MB, level prefilter)", elapsed, cpu, printed, slice_lines))
    elapsed, cpu, printed = timed(["grep", "-E", r"\] \[(ERROR|FATAL)", str(slice_path)], out)
    rows.append(("grep -E '\\] \\[(ERROR|FATAL)' (64 MB)", elapsed, cpu, printed, slice_lines))
    out.unlink(missing_ok=True)

    size_gb = path.stat().st_size / 1e9
    print(f"\nfile: {path} ({size_gb:.2f} GB, {lines:,} lines), cpu count {os.cpu_count()}")
    print("lines/s = lines in the file / wall seconds (cpu: / user+sys seconds of the process)")
    header = f"{'command':<74} {'wall s':>7} {'cpu s':>7} {'printed':>9} {'lines/s':>11} {'cpu lines/s':>12}"
    print(header)
    for label, elapsed, cpu, printed, n in rows:
        print(f"{label:<74} {elapsed:7.2f} {cpu:7.2f} {printed:9,} {n / elapsed:11,.0f} {n / cpu:12,.0f}")
    load = os.getloadavg()[0]
    if load > (os.cpu_count() or 1):
        print(
            f"note: load average {load:.1f} on {os.cpu_count()} CPUs while measuring: wall figures are bound by "
            "other processes; the cpu column is what this process itself needed"
        )
    for label, elapsed, cpu, _, n in rows[:4:2]:
        for kind, rate in (("wall", n / elapsed), ("cpu", n / cpu)):
            verdict = "meets" if rate >= TARGET_LINES_PER_S else "MISSES"
            print(f"{label}: {rate:,.0f} lines/s ({kind}) {verdict} the {TARGET_LINES_PER_S:,} lines/s target")


if __name__ == "__main__":
    main()
