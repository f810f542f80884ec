"""Session fixtures for `diag symbolize`: C programs compiled here, with gcc + GNU ld and clang + lld.

Each build is an executable plus libasciichat.so whose noinline `frame_encode` calls an always_inline
helper that calls backtrace(). The program prints its frames in ascii-chat's `[N] 0x…` format (or as
glibc backtrace_symbols, or from a SIGSEGV handler as a crash block) followed by /proc/self/maps.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

LIB_C = r"""
#include <execinfo.h>
#include <stdio.h>
#include <unistd.h>

int depth_sink;
void *frames_buf[64];
int frames_n;

static inline __attribute__((always_inline)) int helper_inl(void **buf) {
  return backtrace(buf, 64);   /* HELPER_LINE */
}

__attribute__((noinline)) int frame_encode(int x) {
  frames_n = helper_inl(frames_buf);   /* ENCODE_LINE */
  depth_sink += x;
  return frames_n;
}

__attribute__((noinline)) int layer1(int x) { int r = frame_encode(x + 1); depth_sink ^= r; return r + 1; }
__attribute__((noinline)) int layer2(int x) { int r = layer1(x + 2); depth_sink ^= r; return r + 2; }
__attribute__((noinline)) int layer3(int x) { int r = layer2(x + 3); depth_sink ^= r; return r + 3; }

/* Also defined in the executable: the interposition conflict diag must flag. */
__attribute__((noinline)) int dup_symbol(int x) { return layer3(x) * 7; }

__attribute__((noinline)) int crash_now(volatile int *p) { return *p + 1;   /* CRASH_LINE */ }
"""

MAIN_C = r"""
#include <execinfo.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern void *frames_buf[64];
extern int frames_n;
int layer3(int x);
int crash_now(volatile int *p);

static void dump_maps(void) {
  FILE *f = fopen("/proc/self/maps", "r");
  char line[1024];
  while (fgets(line, sizeof line, f)) fputs(line, stdout);
  fclose(f);
}

static void print_frames(void **buf, int n) {
  for (int i = 0; i < n; i++) printf("  [%d] %p\n", i, buf[i]);
}

static void on_segv(int sig) {
  void *buf[64];
  int n = backtrace(buf, 64);
  printf("[12:00:00.000000] [ERROR] [tid:1] lib/platform/posix/system.c:764@crash_handler(): *** CRASH DETECTED ***\n");
  printf("Signal: %d (SIGSEGV)\n", sig);
  printf("Backtrace\n");
  print_frames(buf, n);
  dump_maps();
  fflush(stdout);
  _exit(0);
}

/* Also defined in libasciichat.so. */
__attribute__((noinline)) int dup_symbol(int x) { return layer3(x) * 5; }

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "trace";
  if (!strcmp(mode, "crash")) {
    signal(SIGSEGV, on_segv);
    return crash_now((volatile int *)(argc > 5 ? argv : 0));
  }
  int r = dup_symbol(argc);
  if (!strcmp(mode, "symbols")) {
    fflush(stdout);
    backtrace_symbols_fd(frames_buf, frames_n, 1);
  } else {
    printf("Backtrace\n");
    print_frames(frames_buf, frames_n);
  }
  dump_maps();
  if (!strcmp(mode, "wait")) { fflush(stdout); char c; (void)read(0, &c, 1); }
  return r == 12345;
}
"""


def line_of(src: str, marker: str) -> int:
    for n, line in enumerate(src.splitlines(), start=1):
        if marker in line:
            return n
    raise AssertionError(marker)


@dataclass
class Build:
    name: str  # "gnu" or "lld"
    root: Path
    exe: Path
    lib: Path
    outputs: dict[str, str] = field(default_factory=dict)


def _run(cmd: list[str], cwd: Path, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True, **kw)


def _build(root: Path, name: str) -> Build:
    root.mkdir(parents=True)
    (root / ".git").mkdir()  # marks the source root, as in a checkout
    (root / "lib").mkdir()
    (root / "src").mkdir()
    (root / "lib" / "lib.c").write_text(LIB_C)
    (root / "src" / "main.c").write_text(MAIN_C)
    build = root / "build"
    build.mkdir()
    if name == "gnu":
        cc, ld = ["gcc"], []
    else:
        cc, ld = ["clang"], ["-fuse-ld=lld"]
    _run([*cc, "-g", "-O1", "-fPIC", "-shared", *ld, "lib/lib.c", "-o", "build/libasciichat.so"], root)
    _run([*cc, "-g", "-O1", *ld, "src/main.c", "-Lbuild", "-lasciichat", "-Wl,-rpath,$ORIGIN", "-o",
          "build/ascii-chat"], root)  # fmt: skip
    b = Build(name, root, build / "ascii-chat", build / "libasciichat.so")
    for mode in ("trace", "symbols", "crash"):
        proc = subprocess.run([str(b.exe), mode], cwd=root, capture_output=True, text=True, timeout=20)
        b.outputs[mode] = proc.stdout
    return b


def _have(*tools: str) -> bool:
    return all(shutil.which(t) for t in tools)


@pytest.fixture(scope="session")
def builds(tmp_path_factory) -> dict[str, Build]:
    if not _have("gcc", "clang", "ld.lld"):
        pytest.skip("gcc, clang and ld.lld are needed (.ci/run installs them)")
    base = tmp_path_factory.mktemp("symbolize-fixtures")
    return {name: _build(base / name, name) for name in ("gnu", "lld")}


@pytest.fixture(scope="session")
def lib_src_lines() -> dict[str, int]:
    return {m: line_of(LIB_C, m) for m in ("HELPER_LINE", "ENCODE_LINE", "CRASH_LINE")}


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test uses a private index cache (shared within the session so warm paths are exercised)."""
    cache = tmp_path_factory.getbasetemp() / "diag-cache"
    monkeypatch.setenv("ASCIICHAT_DIAG_CACHE_DIR", str(cache))


@pytest.fixture(scope="session")
def empty_debug_dir(tmp_path_factory) -> Path:
    """Keeps /usr/lib/debug (libc's huge debug file) out of tests that do not need it."""
    return tmp_path_factory.mktemp("no-debug")


def _llvm_symbolize(path: str | os.PathLike, vaddrs: list[int]) -> list[list[tuple]]:
    """llvm-symbolizer's inline chain (innermost first) per vaddr: (function, abs file, line, column)."""
    import json

    out = subprocess.run(
        ["llvm-symbolizer", "--output-style=JSON", f"--obj={path}", *map(hex, vaddrs)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    res = []
    for rec in json.loads(out):
        res.append([(s["FunctionName"], os.path.normpath(s["FileName"]) if s["FileName"] else "", s["Line"],
                     s["Column"]) for s in rec["Symbol"]])  # fmt: skip
    return res


@pytest.fixture(scope="session")
def llvm():
    """llvm-symbolizer as a function: llvm(path, [vaddr, ...]) -> inline chains (innermost first)."""
    if not shutil.which("llvm-symbolizer"):
        pytest.skip("llvm-symbolizer is needed for cross-checks")
    return _llvm_symbolize
