"""Which processes hold which socket inodes, and what those processes are.

One pass over /proc/*/fd (readlink relative to an open directory, the cheap way), then psutil
for the details of the few processes that matter.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass


@dataclass(frozen=True)
class ProcessInfo:
    """A process that holds a socket, with enough context to decide whether it should."""

    pid: int
    name: str | None
    exe: str | None
    cmdline: list[str]
    username: str | None
    ppid: int | None
    parent_name: str | None


@dataclass
class InodeScan:
    """Result of one walk over /proc: inode -> [(pid, fd)], and the pids we could not look into."""

    holders: dict[int, list[tuple[int, int]]]
    unreadable_pids: int  # processes whose fd table we were not allowed to read
    scanned_pids: int


# Above this many descriptors on the host the readlinks are spread over threads: readlink()
# releases the GIL and the kernel work per call dominates (10,000 fds ~ 50-100 ms on one core).
PARALLEL_FDS = 4000
SCAN_THREADS = max(2, min(4, os.cpu_count() or 2))
BIG_PROCESS_FDS = 512  # processes with fewer fds are read at once and their directory closed


def _readlink_chunk(work: list[tuple[int, int, list[str]]], wanted: set[int] | None) -> list[tuple[int, int, int]]:
    """(inode, pid, fd) for every socket among the given descriptors."""
    found = []
    readlink = os.readlink
    for pid, dir_fd, names in work:
        for name in names:
            try:
                target = readlink(name, dir_fd=dir_fd)
            except OSError:
                continue  # fd closed while we looked
            if target.startswith("socket:["):
                inode = int(target[8:-1])
                if wanted is None or inode in wanted:
                    found.append((inode, pid, int(name)))
    return found


def scan_socket_inodes(wanted: set[int] | None = None, proc: str = "/proc") -> InodeScan:
    """Map socket inodes to (pid, fd) pairs; only inodes in `wanted` when given.

    Every process must be visited even after all inodes are found: the same inode held by two
    processes is how an inherited listening descriptor shows itself.
    """
    unreadable = 0
    flags = os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0)
    try:
        entries = os.listdir(proc)
    except OSError:
        return InodeScan({}, 0, 0)
    big: list[tuple[int, int, list[str]]] = []  # processes with many fds, kept open for the threads
    found: list[tuple[int, int, int]] = []
    total_big = 0
    scanned = 0
    try:
        for entry in entries:
            if not entry.isdigit():
                continue
            try:
                dir_fd = os.open(f"{proc}/{entry}/fd", flags)
            except OSError:
                unreadable += 1
                continue
            scanned += 1
            try:
                names = os.listdir(dir_fd)
            except OSError:
                os.close(dir_fd)
                unreadable += 1
                continue
            if len(names) >= BIG_PROCESS_FDS:
                big.append((int(entry), dir_fd, names))
                total_big += len(names)
                continue
            try:
                found += _readlink_chunk([(int(entry), dir_fd, names)], wanted)
            finally:
                os.close(dir_fd)
        if total_big < PARALLEL_FDS:
            found += _readlink_chunk(big, wanted)
        else:
            found += _scan_parallel(big, total_big, wanted)
    finally:
        for _pid, dir_fd, _names in big:
            os.close(dir_fd)
    holders: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for inode, pid, fd in found:
        holders[inode].append((pid, fd))
    return InodeScan(dict(holders), unreadable, scanned)


def _scan_parallel(work: list[tuple[int, int, list[str]]], total: int, wanted: set[int] | None):
    from concurrent.futures import ThreadPoolExecutor

    # cut the descriptor lists into roughly equal chunks; one big server process gets split too
    size = total // SCAN_THREADS + 1
    chunks: list[list[tuple[int, int, list[str]]]] = [[]]
    filled = 0
    for pid, dir_fd, names in work:
        start = 0
        while start < len(names):
            take = min(size - filled, len(names) - start)
            chunks[-1].append((pid, dir_fd, names[start : start + take]))
            filled += take
            start += take
            if filled >= size:
                chunks.append([])
                filled = 0
    with ThreadPoolExecutor(max_workers=SCAN_THREADS) as pool:
        results = pool.map(_readlink_chunk, chunks, [wanted] * len(chunks))
        return [item for part in results for item in part]


def describe_process(pid: int) -> ProcessInfo:
    """Name, exe, command line, user and parent of `pid` (fields None where access is denied)."""
    import psutil

    name = exe = username = parent_name = None
    cmdline: list[str] = []
    ppid: int | None = None
    try:
        proc = psutil.Process(pid)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return ProcessInfo(pid, None, None, [], None, None, None)
    with proc.oneshot():
        try:
            name = proc.name()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
        try:
            exe = proc.exe() or None
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
        try:
            cmdline = proc.cmdline()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
        try:
            username = proc.username()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, KeyError):
            pass
        try:
            ppid = proc.ppid()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    if ppid:
        try:
            parent_name = psutil.Process(ppid).name()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return ProcessInfo(pid, name, exe, cmdline, username, ppid, parent_name)


def ancestors(pid: int, limit: int = 32) -> list[int]:
    """Parent chain of `pid` (nearest first), stopping at init or where access ends."""
    import psutil

    chain: list[int] = []
    current = pid
    for _ in range(limit):
        try:
            parent = psutil.Process(current).ppid()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            break
        if not parent or parent in chain:
            break
        chain.append(parent)
        current = parent
    return chain


def matches_expected(info: ProcessInfo, expected: list[str]) -> bool:
    """Does this process look like one of the expected programs?

    Compares against the process name, the exe basename and the first two command-line words
    (a console script runs as `python .../asciichat-server`), and tolerates the kernel's
    15-character truncation of the process name.
    """
    candidates: set[str] = set()
    if info.name:
        candidates.add(info.name)
    if info.exe:
        candidates.add(os.path.basename(info.exe))
    for word in info.cmdline[:2]:
        candidates.add(os.path.basename(word))
    if len(info.cmdline) >= 3 and info.cmdline[1] == "-m":
        candidates.add(info.cmdline[2].split(".")[0])
    for want in expected:
        for have in candidates:
            if have == want or (len(have) == 15 and want.startswith(have)):
                return True
            # asciichat_server (python -m) and asciichat-server are the same program
            if have.replace("_", "-") == want.replace("_", "-"):
                return True
    return False
