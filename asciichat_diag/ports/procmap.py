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


def _sockets_in(pid: int, dir_fd: int, names: list[str], wanted: set[str] | None, found: list) -> None:
    """Append (link text, pid, fd) for every socket among a process's descriptors.

    `wanted` holds link texts ("socket:[123]"), so a descriptor is matched without parsing it.
    """
    readlink = os.readlink
    append = found.append
    for name in names:
        try:
            target = readlink(name, dir_fd=dir_fd)  # relative to the open fd/ directory: no path walk
        except OSError:
            continue  # fd closed while we looked
        if wanted is None:
            if target.startswith("socket:["):
                append((target, pid, name))
        elif target in wanted:
            append((target, pid, name))


def scan_socket_inodes(wanted: set[int] | None = None, proc: str = "/proc") -> InodeScan:
    """Map socket inodes to (pid, fd) pairs; only inodes in `wanted` when given.

    Every process must be visited even after all inodes are found: the same inode held by two
    processes is how an inherited listening descriptor shows itself. (Threads were tried for
    hosts with 10,000s of descriptors: readlink() is too short a syscall for them to pay off.)
    """
    unreadable = 0
    scanned = 0
    flags = os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0)
    try:
        entries = os.listdir(proc)
    except OSError:
        return InodeScan({}, 0, 0)
    links = {f"socket:[{inode}]" for inode in wanted} if wanted is not None else None
    found: list[tuple[str, int, str]] = []
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
            _sockets_in(int(entry), dir_fd, os.listdir(dir_fd), links, found)
        except OSError:
            unreadable += 1
        finally:
            os.close(dir_fd)
    holders: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for link, pid, fd in found:
        holders[int(link[8:-1])].append((pid, int(fd)))
    return InodeScan(dict(holders), unreadable, scanned)


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        return None


def _uid_name(uid: int) -> str | None:
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        return None


def _name_ppid_cmdline(pid: int, proc: str) -> tuple[str, int | None, list[str]] | None:
    stat = _read(f"{proc}/{pid}/stat")
    if stat is None:
        return None
    # comm may contain spaces and parentheses: it runs from the first "(" to the last ")"
    comm = stat[stat.find(b"(") + 1 : stat.rfind(b")")].decode("utf-8", "replace")
    fields = stat[stat.rfind(b")") + 2 :].split()
    ppid = int(fields[1]) if len(fields) > 1 else None
    raw_cmd = _read(f"{proc}/{pid}/cmdline") or b""
    cmdline = [part.decode("utf-8", "replace") for part in raw_cmd.split(b"\0")[:-1]] if raw_cmd else []
    name = comm
    if len(comm) >= 15 and cmdline:
        # the kernel truncates comm to 15 characters; psutil then prefers the cmdline's basename
        longer = os.path.basename(cmdline[0])
        if longer.startswith(comm):
            name = longer
    return name, ppid, cmdline


def _describe_procfs(pid: int, proc: str = "/proc") -> ProcessInfo | None:
    """The same facts psutil gives, read straight from /proc (Linux): importing psutil costs more
    than describing the two or three processes a port usually has. None when /proc lacks the pid."""
    head = _name_ppid_cmdline(pid, proc)
    if head is None:
        return None
    name, ppid, cmdline = head
    try:
        exe: str | None = os.readlink(f"{proc}/{pid}/exe").removesuffix(" (deleted)")
    except OSError:
        exe = None
    username = None
    status = _read(f"{proc}/{pid}/status") or b""
    for line in status.splitlines():
        if line.startswith(b"Uid:"):
            username = _uid_name(int(line.split()[1]))
            break
    parent = _name_ppid_cmdline(ppid, proc) if ppid else None
    return ProcessInfo(pid, name, exe, cmdline, username, ppid or None, parent[0] if parent else None)


def describe_process(pid: int) -> ProcessInfo:
    """Name, exe, command line, user and parent of `pid` (fields None where access is denied)."""
    if os.path.isdir("/proc/self/fd"):
        info = _describe_procfs(pid)
        if info is not None:
            return info
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
