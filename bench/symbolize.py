#!/usr/bin/env python3
"""Benchmark `diag symbolize` against llvm-symbolizer and addr2line on the same 200-frame trace.

    .venv/bin/python bench/symbolize.py [--functions 20000] [--frames 200] [--workdir /tmp/...]

Generates a C project (exe + lld-linked libbench.so, -g -O2, an always_inline helper per function
so many frames carry inline chains), caches it under /tmp, builds a 200-frame ascii-chat trace
with a /proc/PID/maps snapshot, then times in one run:
  llvm-symbolizer and addr2line (given the true vaddrs, one process per module),
  diag symbolize cold (empty index cache) and warm (cache filled), as a subprocess end to end,
  and the same lookups in-process (import time excluded).
Finally it checks that every frame's answer (function, file, line, column, inline chain) equals
llvm-symbolizer's. Exit 1 when any frame differs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
FUNCS_PER_FILE = 200
EXE_BIAS = 0x55D1C0000000
LIB_BIAS = 0x7F3A2B000000


def generate(workdir: str, functions: int) -> tuple[str, str]:
    """Write and build the project once; return (exe, lib). Reuses a previous build in `workdir`."""
    exe = os.path.join(workdir, "bench-app")
    lib = os.path.join(workdir, "libbench.so")
    if os.path.exists(exe) and os.path.exists(lib):
        return exe, lib
    os.makedirs(os.path.join(workdir, "src"), exist_ok=True)
    files = max(2, functions // FUNCS_PER_FILE)
    lib_files = files * 4 // 5
    decls = []
    for k in range(files):
        for j in range(FUNCS_PER_FILE):
            decls.append(f"int fn_{k}_{j}(int x);")
    with open(os.path.join(workdir, "src", "bench.h"), "w") as fh:
        fh.write("#pragma once\n" + "\n".join(decls) + "\n")
    sources = []
    for k in range(files):
        lines = ['#include "bench.h"', f"int sink_{k};"]
        for j in range(FUNCS_PER_FILE):
            callee = f"fn_{(k + 1) % files}_{(j * 7 + 3) % FUNCS_PER_FILE}"
            local = f"fn_{k}_{(j + 1) % FUNCS_PER_FILE}"
            lines.append(
                f"static inline __attribute__((always_inline)) int inl_{k}_{j}(int x) {{\n"
                f"  sink_{k} += x;\n  return {local}(x ^ {j}) + {j};\n}}"
            )
            lines.append(
                f"__attribute__((noinline)) int fn_{k}_{j}(int x) {{\n"
                f"  if (x <= 0) return {j};\n"
                f"  int a = inl_{k}_{j}(x - 1);\n"
                f"  sink_{k} ^= a;\n"
                f"  return a * 3 + {callee}(x - 2);\n}}"
            )
        path = os.path.join(workdir, "src", f"unit_{k}.c")
        with open(path, "w") as fh:
            fh.write("\n".join(lines) + "\n")
        sources.append(path)
    with open(os.path.join(workdir, "src", "main.c"), "w") as fh:
        fh.write('#include "bench.h"\nint main(int argc, char **argv) { (void)argv; return fn_0_0(argc - 5); }\n')

    def cc(src: str) -> str:
        obj = src[:-2] + ".o"
        subprocess.run(["clang", "-g", "-O2", "-fPIC", "-c", src, "-o", obj], check=True)
        return obj

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        objs = list(pool.map(cc, [*sources, os.path.join(workdir, "src", "main.c")]))
    lib_objs, exe_objs = objs[:lib_files], objs[lib_files:]
    subprocess.run(["clang", "-shared", "-fuse-ld=lld", "-o", lib, *lib_objs], check=True)
    subprocess.run(["clang", "-fuse-ld=lld", "-o", exe, *exe_objs, "-L", workdir, "-lbench",
                    "-Wl,-rpath," + workdir], check=True)  # fmt: skip
    return exe, lib


def return_addresses(path: str, count: int, rng: random.Random) -> list[int]:
    """Module vaddrs right after an E8 call inside a fn_* function: real return addresses."""
    from asciichat_diag.symbolize.bias import CallSiteMap
    from asciichat_diag.symbolize.elfio import parse_elf

    img = parse_elf(path)
    segs = [(s.vaddr, img.read_vaddr(s.vaddr, s.filesz)) for s in img.exec_segments()]
    sites = CallSiteMap(segs)
    out = []
    for vaddr, mask in sites.segments:
        raw = img.read_vaddr(vaddr, len(mask))
        for i in mask.nonzero()[0].tolist():
            if i >= 5 and raw[i - 5] == 0xE8:
                out.append(vaddr + i)
    rng.shuffle(out)
    return sorted(out[:count])


def maps_lines(path: str, bias: int) -> list[str]:
    """The /proc/PID/maps lines the kernel would print for `path` loaded at `bias`."""
    from asciichat_diag.symbolize.elfio import parse_elf

    img = parse_elf(path)
    out = []
    for seg in img.segments:
        start = (seg.vaddr & ~0xFFF) + bias
        end = ((seg.vaddr + seg.memsz + 0xFFF) & ~0xFFF) + bias
        perms = ("r" if seg.flags & 4 else "-") + ("w" if seg.flags & 2 else "-") + ("x" if seg.flags & 1 else "-")
        out.append(f"{start:x}-{end:x} {perms}p {seg.offset & ~0xFFF:08x} fe:00 1234 {path}")
    return out


CPU: dict[str, float] = {}  # CPU seconds (user + system) of the last timed() call, by tool


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(cmd: list[str], env: dict | None = None, stdin: str | None = None) -> tuple[float, str]:
    """Wall seconds and stdout of one run; its CPU seconds go to CPU["last"] (robust on a loaded box)."""
    c0 = _children_cpu()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, input=stdin)
    dt = time.perf_counter() - t0
    CPU["last"] = _children_cpu() - c0
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr.strip()}")
    return dt, proc.stdout


def norm(p: str | None) -> str:
    return os.path.normpath(p) if p else ""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--functions", type=int, default=20000)
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3, help="runs per tool; the best time is reported")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    tag = hashlib.sha256(f"{args.functions}:{FUNCS_PER_FILE}:v1".encode()).hexdigest()[:10]
    workdir = args.workdir or os.path.join(tempfile.gettempdir(), f"asciichat-diag-bench-{tag}")
    t0 = time.perf_counter()
    exe, lib = generate(workdir, args.functions)
    print(f"project: {workdir} ({args.functions} functions; build/reuse {time.perf_counter() - t0:.1f}s)")
    print(f"  {os.path.basename(lib)}: {os.path.getsize(lib) / 1e6:.1f} MB, {os.path.basename(exe)}: "
          f"{os.path.getsize(exe) / 1e6:.1f} MB")  # fmt: skip

    rng = random.Random(5)
    n_lib = args.frames * 3 // 4
    lib_addrs = return_addresses(lib, n_lib, rng)
    exe_addrs = return_addresses(exe, args.frames - n_lib, rng)
    frames = [(lib, a) for a in lib_addrs] + [(exe, a) for a in exe_addrs]
    rng.shuffle(frames)
    trace = ["Backtrace"]
    for i, (path, vaddr) in enumerate(frames):
        bias = LIB_BIAS if path == lib else EXE_BIAS
        trace.append(f"  [{i}] [{os.path.basename(path)}] {vaddr + bias:#x}")
    trace += maps_lines(exe, EXE_BIAS) + maps_lines(lib, LIB_BIAS)
    trace_path = os.path.join(workdir, "trace.txt")
    with open(trace_path, "w") as fh:
        fh.write("\n".join(trace) + "\n")
    # Peers get the true vaddrs (return address - 1, as diag looks them up).
    by_mod = {lib: [a - 1 for p, a in frames if p == lib], exe: [a - 1 for p, a in frames if p == exe]}

    def run_llvm() -> tuple[float, dict]:
        total, answers = 0.0, {}
        CPU["llvm"] = 0.0
        for path, addrs in by_mod.items():
            dt, out = timed(["llvm-symbolizer", "--output-style=JSON", "--obj=" + path, *map(hex, addrs)])
            total += dt
            CPU["llvm"] += CPU["last"]
            for addr, rec in zip(addrs, json.loads(out)):
                answers[(path, addr)] = [
                    (s["FunctionName"], norm(s["FileName"]), s["Line"], s["Column"]) for s in rec["Symbol"]
                ]
        return total, answers

    def run_addr2line() -> float:
        total = 0.0
        CPU["addr2line"] = 0.0
        for path, addrs in by_mod.items():
            dt, _ = timed(["addr2line", "-f", "-i", "-C", "-e", path, *map(hex, addrs)])
            total += dt
            CPU["addr2line"] += CPU["last"]
        return total

    diag = [sys.executable, "-m", "asciichat_diag.cli", "symbolize", trace_path, "--json", "--color", "never"]
    cache = tempfile.mkdtemp(prefix="diag-bench-cache-")
    env = dict(os.environ, ASCIICHAT_DIAG_CACHE_DIR=cache, PYTHONPATH=REPO)

    def run_diag_cold() -> tuple[float, str]:
        shutil.rmtree(cache, ignore_errors=True)
        os.makedirs(cache)
        return timed(diag, env)

    best: dict[str, float] = {}
    best_cpu: dict[str, float] = {}
    llvm_answers: dict = {}
    results = {}

    def note(name: str, wall: float, cpu: float) -> None:
        best[name] = min(best.get(name, 1e9), wall)
        best_cpu[name] = min(best_cpu.get(name, 1e9), cpu)

    for _ in range(args.repeat):
        dt, llvm_answers = run_llvm()
        note("llvm-symbolizer", dt, CPU["llvm"])
        dt = run_addr2line()
        note("addr2line", dt, CPU["addr2line"])
        dt, out = run_diag_cold()
        note("diag cold", dt, CPU["last"])
        dt, out = timed(diag, env)
        note("diag warm", dt, CPU["last"])
        results = json.loads(out)

    # In-process: the same work without interpreter start-up and imports.
    from asciichat_diag.symbolize.resolve import Options, symbolize_text

    with open(trace_path) as fh:
        text = fh.read()
    os.environ["ASCIICHAT_DIAG_CACHE_DIR"] = cache
    symbolize_text(text, Options())  # make sure the cache is warm for this process's reads
    for _ in range(args.repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        symbolize_text(text, Options())
        note("diag warm in-process", time.perf_counter() - t0, time.process_time() - c0)
    for _ in range(max(1, args.repeat // 2)):
        cold_dir = tempfile.mkdtemp(prefix="diag-bench-cold-")
        os.environ["ASCIICHAT_DIAG_CACHE_DIR"] = cold_dir
        t0, c0 = time.perf_counter(), time.process_time()
        symbolize_text(text, Options())
        note("diag cold in-process", time.perf_counter() - t0, time.process_time() - c0)
        shutil.rmtree(cold_dir, ignore_errors=True)
    shutil.rmtree(cache, ignore_errors=True)

    ref, ref_cpu = best["llvm-symbolizer"], best_cpu["llvm-symbolizer"]
    load = os.getloadavg()[0]
    print(f"\n{len(frames)} frames ({n_lib} in {os.path.basename(lib)}, {len(frames) - n_lib} in "
          f"{os.path.basename(exe)}); best of {args.repeat}; load {load:.1f} on {os.cpu_count()} cores")  # fmt: skip
    print(f"  {'':<22} {'wall':>9}      {'ratio':>6}   {'cpu':>9}      {'ratio':>6}   (ratios to llvm-symbolizer)")
    for name in ("llvm-symbolizer", "addr2line", "diag warm", "diag cold", "diag warm in-process",
                 "diag cold in-process"):  # fmt: skip
        print(f"  {name:<22} {best[name] * 1000:9.1f} ms   {best[name] / ref:6.2f}x   "
              f"{best_cpu[name] * 1000:9.1f} ms   {best_cpu[name] / ref_cpu:6.2f}x")  # fmt: skip
    print("  targets: warm <= 1.0x, cold <= 10x; 'diag warm/cold' run the CLI as a subprocess (interpreter and")
    print("  imports included); 'in-process' times the same resolution inside one Python process")

    # Equality with llvm-symbolizer, frame by frame, inline chain included.
    mismatches = 0
    inl_frames = 0
    for (path, vaddr), got in zip(frames, results["frames"]):
        exp = llvm_answers[(path, vaddr - 1)]
        chain = [*got["inlined"], {k: got[k] for k in ("function", "file", "line", "column")}]
        mine = [(c["function"] or "", norm(c["file"]), c["line"] or 0, c["column"] or 0) for c in chain]
        inl_frames += bool(got["inlined"])
        if mine != exp:
            mismatches += 1
            if mismatches <= 5:
                print(f"  MISMATCH {os.path.basename(path)}+{vaddr:#x}: diag {mine} llvm {exp}")
    print(f"\nanswers equal to llvm-symbolizer: {len(frames) - mismatches}/{len(frames)} frames "
          f"({inl_frames} with inline chains)")  # fmt: skip
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
