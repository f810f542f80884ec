#!/usr/bin/env python3
"""Run the CI-sized stress suite (`pytest -m stress tests/stress`) N times in a row; stop at the first failure.

    .venv/bin/python bench/stress_suite.py [--runs 20] [-- extra pytest args]

Each run is a fresh pytest process (fresh event loop, fresh servers, fresh ports), so state that leaks
from one run into the next or a flaky race shows up as a failed run. Prints one line per run and a
summary; exit status 1 when any run failed (its output is printed), 0 when all passed.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="runs in a row (default 20)")
    parser.add_argument("pytest_args", nargs="*", help="extra arguments for pytest (after --)")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "stress", "tests/stress"]
    cmd += args.pytest_args
    print("command:", " ".join(cmd[1:]), flush=True)
    durations = []
    for n in range(1, args.runs + 1):
        start = time.monotonic()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        took = time.monotonic() - start
        durations.append(took)
        summary = _summary(proc.stdout)
        verdict = "ok    " if proc.returncode == 0 else "FAILED"
        print(f"run {n:2d}/{args.runs}: {verdict} {summary} ({took:.1f}s)", flush=True)
        if proc.returncode != 0:
            sys.stdout.write(proc.stdout[-8000:])
            sys.stderr.write(proc.stderr[-4000:])
            print(f"failed on run {n} after {n - 1} passing runs in a row")
            return 1
    print(f"{args.runs}/{args.runs} runs passed in a row; per run min {min(durations):.1f}s, max {max(durations):.1f}s")
    return 0


def _summary(out: str) -> str:
    """pytest's last line, e.g. '42 passed in 18.58s', without the '=' padding."""
    for line in reversed(out.strip().splitlines()):
        if re.search(r"\b(passed|failed|error)", line):
            return line.strip("= ").strip()
    return "no summary"


if __name__ == "__main__":
    sys.exit(main())
