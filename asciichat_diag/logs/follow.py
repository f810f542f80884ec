"""`tail -F` for ascii-chat logs: follow by name through its truncate-at-start and tail-rotation.

Polling, one stat per file per interval. What it recognises:
- truncation (same inode, size below our offset, or the bytes we last read changed): a new run;
- ascii-chat's tail-rotation (new inode whose start repeats the end of what we read, then a
  `Log tail-rotated (kept N bytes)` marker): the replayed bytes are skipped, not re-printed;
- delete and recreate (new inode, no overlap): read the new file from its start;
- NUL holes (a writer on a stale offset after a truncate) are dropped; a partial last line is
  held until its newline arrives.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from dataclasses import dataclass
from typing import BinaryIO

from asciichat_diag.logs.model import Separator
from asciichat_diag.logs.reader import clean

# ascii-chat keeps the last 2 MiB on rotation; keep twice that so the replay is always covered.
HISTORY_BYTES = 4 << 20
TAIL_CHECK_BYTES = 64  # bytes before our offset re-read each poll to notice a truncate+refill
READ_BYTES = 1 << 20
_MARKER_RE = re.compile(rb"^\[[0-9:.]+\] \[INFO *\] Log tail-rotated \(kept (\d+) bytes\)")


@dataclass
class _Open:
    fd: int
    ident: tuple[int, int]


class Follower:
    """Follows one path by name; `poll()` returns new complete text and Separators, in order."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._cur: _Open | None = None
        self.offset = 0  # bytes of the current file consumed (including a held partial line)
        self._pending = b""  # partial last line
        self._history = bytearray()  # complete-line bytes consumed, last HISTORY_BYTES
        self._missing_reported = False
        self._unreadable: int | None = None  # errno of the last failed open, reported once
        self.ever_opened = False

    # -- start-up ---------------------------------------------------------------------------
    def open_initial(self) -> int:
        """Open the file if it exists; return the offset where existing complete lines end.

        The caller reads [0, that offset) itself (fast path, -n); following starts there.
        """
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return 0
        except OSError:  # no permission: the first poll reports it
            return 0
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # a directory or a FIFO cannot be followed by offset
            os.close(fd)
            return 0
        self._cur = _Open(fd, (st.st_dev, st.st_ino))
        self.ever_opened = True
        size = st.st_size
        start = max(0, size - HISTORY_BYTES)
        tail = os.pread(fd, size - start, start)
        last_nl = tail.rfind(b"\n")
        end = start + last_nl + 1 if last_nl >= 0 else start
        self._history = bytearray(tail[: end - start])
        self.offset = end
        return end

    def reopen(self) -> BinaryIO:
        """A separate reader of the file being followed (the same inode, even if renamed since)."""
        assert self._cur is not None
        return os.fdopen(os.dup(self._cur.fd), "rb")

    def _report_unreadable(self, exc: OSError) -> bool:
        """Remember an open error; True the first time this error shows up."""
        fresh = self._unreadable != exc.errno
        self._unreadable = exc.errno
        return fresh

    def close(self) -> None:
        if self._cur is not None:
            os.close(self._cur.fd)
            self._cur = None

    # -- polling ------------------------------------------------------------------------------
    def poll(self) -> list[str | Separator]:
        events: list[str | Separator] = []
        try:
            st = os.stat(self.path)
        except (FileNotFoundError, NotADirectoryError):
            st = None
        cur = self._cur
        if cur is None:
            if st is None:
                return events
            self._open_new(events, first=not self.ever_opened)
        elif st is None or (st.st_dev, st.st_ino) != cur.ident:
            self._read_available(events)  # what was written before the rename/unlink
            if st is None:
                if not self._missing_reported:
                    self._flush_partial(events)
                    events.append(Separator("deleted", self.path, "file removed; waiting for it to reappear"))
                    self._missing_reported = True
                return events
            self._open_new(events, first=False)
        else:
            size = os.fstat(cur.fd).st_size
            if size < self.offset or not self._tail_intact():
                self._flush_partial(events)
                events.append(
                    Separator("new-run", self.path, f"file truncated ({self.offset} -> {size} bytes): a new run")
                )
                self.offset = 0
                self._history.clear()
        self._read_available(events)
        return events

    def _tail_intact(self) -> bool:
        """Do the last bytes we read still sit where we read them? (catches truncate + refill)."""
        assert self._cur is not None
        known = bytes(self._history[-TAIL_CHECK_BYTES:]) + self._pending
        known = known[-TAIL_CHECK_BYTES:]
        if not known:
            return True
        return os.pread(self._cur.fd, len(known), self.offset - len(known)) == known

    def _open_new(self, events: list[str | Separator], first: bool) -> None:
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return
        except OSError as exc:
            if self._report_unreadable(exc):
                events.append(Separator("unreadable", self.path, f"cannot open: {exc.strerror}; waiting"))
            return
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            if self._report_unreadable(OSError(errno.EINVAL, "not a regular file")):
                events.append(Separator("unreadable", self.path, "not a regular file; waiting"))
            return
        self._unreadable = None
        old_pending = self._pending
        self.close()
        self._cur = _Open(fd, (st.st_dev, st.st_ino))
        self._missing_reported = False
        self.ever_opened = True
        self.offset = 0
        self._pending = b""
        if first:
            return
        skip = self._replay_length(fd) if not old_pending else 0
        marker = _MARKER_RE.match(os.pread(fd, 200, skip)) if skip or self._history else None
        if old_pending:
            events.append(clean(old_pending + b"\n"))
        if skip:
            self.offset = skip
            self._history = bytearray(os.pread(fd, skip, 0))
            kept = f", marker says kept {int(marker.group(1))} bytes" if marker else ""
            events.append(
                Separator(
                    "rotated",
                    self.path,
                    f"log tail-rotated: new file repeats the last {skip} bytes already read (skipped{kept})",
                    skipped_bytes=skip,
                )
            )
        elif marker:
            events.append(Separator("rotated", self.path, "log tail-rotated (no overlap with what was read)"))
            self._history.clear()
        else:
            events.append(Separator("recreated", self.path, "file replaced by a new one; reading it from the start"))
            self._history.clear()

    def _replay_length(self, fd: int) -> int:
        """Bytes at the start of the new file that repeat the end of what we already read."""
        history = bytes(self._history)
        if not history:
            return 0
        head = os.pread(fd, 4096, 0)
        nl = head.find(b"\n")
        if nl < 0:
            return 0
        first_line = head[: nl + 1]
        pos = history.find(first_line)
        while pos >= 0:
            if pos == 0 or history[pos - 1] == 0x0A:
                length = len(history) - pos
                if os.pread(fd, length, 0) == history[pos:]:
                    return length  # earliest match = longest overlap
            pos = history.find(first_line, pos + 1)
        return 0

    def _read_available(self, events: list[str | Separator]) -> None:
        cur = self._cur
        if cur is None:
            return
        while True:
            data = os.pread(cur.fd, READ_BYTES, self.offset)
            if not data:
                return
            self.offset += len(data)
            data = self._pending + data
            nl = data.rfind(b"\n")
            if nl < 0:
                self._pending = data
                if len(self._pending) > (64 << 20):  # a writer that never ends its line
                    self._flush_partial(events)
                continue
            complete, self._pending = data[: nl + 1], data[nl + 1 :]
            self._remember(complete)
            text = clean(complete)
            if text:
                events.append(text)

    def _remember(self, data: bytes) -> None:
        self._history += data
        if len(self._history) > HISTORY_BYTES:
            del self._history[: len(self._history) - HISTORY_BYTES]

    def _flush_partial(self, events: list[str | Separator]) -> None:
        if self._pending:
            self._remember(self._pending + b"\n")
            events.append(clean(self._pending + b"\n"))
            self._pending = b""
