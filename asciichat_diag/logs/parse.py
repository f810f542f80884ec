"""Turn log text into Records: ascii-chat text lines (debug and release form), NDJSON, our server's lines.

A record is a header line plus the header-less lines after it (multi-line messages, log_plain
backtraces). ANSI colour is stripped before anything else looks at the text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

from asciichat_diag.logs.model import LEVEL_ALIASES, LEVEL_RANK, Record

# CSI sequences, two-byte Fe escapes and charset designations: what ascii-chat's colouriser emits.
ANSI_RE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|[()*+].|[@-Z\\-_])")

# `[HH:MM:SS.uuuuuu] [LEVEL]` then optional `[tid:N]` and `file:line@func():` (or the mmap
# logger's `file:line in func():`). Levels may be padded (`INFO `) or not (rotation marker).
HEADER_RE = re.compile(
    r"\[(\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?)\] \[(DEV|DEBUG|INFO|WARN|ERROR|FATAL|UNKNOWN) *\]"
    r"(?: \[tid:(\d+)\])?"
    r"(?: ([^\s:]+):(\d+)(?:@| in )([^\s()]*)\(\):)?"
    r" ?"
)
# Cheap test used by the block scanner: does a header start here?
HEADER_START_RE = re.compile(r"\[\d{2}:\d{2}:\d{2}[.\]]")

# Leading bracket tags of a message, after an optional emoji / punctuation run: `✅ [WS_REASSEMBLE] ...`.
# ascii-chat also writes spaced tags such as `[SERVER VIDEO]`.
TAG_RE = re.compile(r"[^\w\[\n]{0,8}\[([A-Z][A-Z0-9_]*(?: [A-Z0-9_]+)*)\]")

# asciichat-server's rate-limited records end with ` [every=10s suppressed=3]`.
RATE_SUFFIX_RE = re.compile(r" \[every=(\d+(?:\.\d+)?)s suppressed=(\d+)\]$")

# `client 3`, `client_id=3`, `Client #3`, `id=3` (our [WS_*] lines); not `client 127.0.0.1`.
CLIENT_RE = re.compile(
    r"(?i:\bclient(?:[ _]?id)?)\s*[=:#]?\s*#?(\d+)(?![\d.:])|\b(?:id|client_id|cid|peer)=([^\s,()]+)"
)

# A garbage file without headers must not grow one record forever.
MAX_CONTINUATION_LINES = 2000

ROTATION_MARKER_RE = re.compile(r"Log tail-rotated \(kept (\d+) bytes\)")


def strip_ansi(text: str) -> str:
    """Remove terminal escape sequences (ascii-chat's console copies may carry them)."""
    if "\x1b" not in text:
        return text
    return ANSI_RE.sub("", text)


def leading_tags(message: str) -> tuple[str, ...]:
    """Bracket tags at the start of a message: `[WS_FLOW] Queue...` -> ("WS_FLOW",)."""
    tags: list[str] = []
    pos = 0
    while True:
        m = TAG_RE.match(message, pos)
        if not m:
            return tuple(tags)
        tags.append(m.group(1))
        pos = m.end()


def client_ids(message: str) -> set[str]:
    """Client identifiers mentioned in a message."""
    found: set[str] = set()
    for m in CLIENT_RE.finditer(message):
        found.add(m.group(1) or m.group(2).rstrip("."))
    return found


def _seconds(h: str, m: str, s: str, frac: str | None) -> float:
    value = int(h) * 3600 + int(m) * 60 + int(s)
    if frac:
        value += int(frac) / (10 ** len(frac))
    return float(value)


_MINUTE_SECONDS: dict[str, int] = {}  # "HH:MM" -> seconds since midnight


def parse_header(line: str) -> Record | None:
    """Parse one header line of the text format; None when the line is not a header."""
    m = HEADER_RE.match(line)
    if m is None:
        return None
    stamp, level, tid, file, lineno, func = m.groups()
    message = line[m.end() :]
    base = _MINUTE_SECONDS.get(stamp[:5])
    if base is None:  # at most 1440 keys: the cache is bounded by the clock
        base = _MINUTE_SECONDS[stamp[:5]] = int(stamp[0:2]) * 3600 + int(stamp[3:5]) * 60
    rec = Record(
        "text",
        [line],
        message,
        stamp,
        base + float(stamp[6:]),
        LEVEL_ALIASES.get(level, level),
        int(tid) if tid else None,
        file,
        int(lineno) if lineno else None,
        func,
    )
    if message[:1] == "[" or (message and not message[0].isalnum()):
        rec.tags = leading_tags(message)
    if message[-1:] == "]" and "[every=" in message:
        rm = RATE_SUFFIX_RE.search(message)
        if rm:
            rec.rate_interval_s = float(rm.group(1))
            rec.suppressed = int(rm.group(2))
    return rec


def _as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def parse_json(line: str) -> Record | None:
    """Parse one NDJSON record (ascii-chat's lib/log/json.c shape or ours, which adds a date)."""
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("header"), dict):
        return None
    header = obj["header"]
    body = obj.get("body") if isinstance(obj.get("body"), dict) else {}
    message = body.get("message", "")
    if not isinstance(message, str):
        message = json.dumps(message, ensure_ascii=False)
    message = strip_ansi(message)
    stamp = header.get("timestamp")
    seconds = None
    time = None
    if isinstance(stamp, str):
        tm = re.fullmatch(r"(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?", stamp)
        if tm:
            time = stamp
            seconds = _seconds(*tm.groups())
    level = str(header.get("level", "INFO")).upper()
    level = LEVEL_ALIASES.get(level, level)
    if level not in LEVEL_RANK:
        level = "INFO"
    file = header.get("file")
    func = header.get("func")
    date = header.get("date")
    rec = Record(
        fmt="json",
        lines=[line],
        message=message,
        time=time,
        seconds=seconds,
        level=level,
        tid=_as_int(header.get("tid")),
        file=file if isinstance(file, str) else None,
        line=_as_int(header.get("line")),
        func=func if isinstance(func, str) else None,
        date=date if isinstance(date, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", date) else None,
        tags=leading_tags(message),
    )
    interval = body.get("rate_interval_s")
    if isinstance(interval, (int, float)) and not isinstance(interval, bool):
        rec.rate_interval_s = float(interval)
        suppressed = _as_int(body.get("suppressed"))
        rec.suppressed = suppressed if suppressed is not None else 0
    return rec


def parse_line(line: str) -> Record | None:
    """A header line (text or JSON) as a Record, or None for a continuation line."""
    if line.startswith("["):
        return parse_header(line)
    if line.startswith("{"):
        return parse_json(line)
    return None


class RecordParser:
    """Incremental line -> record assembly; keeps the last record open for continuation lines."""

    def __init__(self, source: str = "") -> None:
        self.source = source
        self._pending: Record | None = None

    @property
    def pending(self) -> bool:
        return self._pending is not None

    def feed_lines(self, lines: Iterable[str]) -> list[Record]:
        """Feed complete lines (without newlines, ANSI already stripped); return finished records."""
        done: list[Record] = []
        for line in lines:
            rec = parse_line(line) if line[:1] in ("[", "{") else None
            if rec is None:
                pending = self._pending
                if pending is not None and len(pending.lines) < MAX_CONTINUATION_LINES:
                    pending.lines.append(line)
                    continue
                if pending is not None:
                    done.append(self._finish(pending))
                rec = Record(fmt="plain", lines=[line], message=line)
            elif self._pending is not None:
                done.append(self._finish(self._pending))
            rec.source = self.source
            self._pending = rec
        return done

    def feed_text(self, text: str) -> list[Record]:
        """Feed text made of complete lines (a trailing newline is optional)."""
        if text.endswith("\n"):
            text = text[:-1]
        return self.feed_lines(text.split("\n"))

    def flush(self) -> list[Record]:
        """Close the open record (end of input, or the writer went quiet)."""
        if self._pending is None:
            return []
        rec = self._finish(self._pending)
        self._pending = None
        return [rec]

    @staticmethod
    def _finish(rec: Record) -> Record:
        if len(rec.lines) > 1:
            if rec.fmt == "plain":
                rec.message = "\n".join(rec.lines)
            else:
                rec.message = "\n".join([rec.message, *rec.lines[1:]])
        return rec


def parse_text(text: str, source: str = "") -> list[Record]:
    """Parse a whole text at once (tests, small inputs)."""
    parser = RecordParser(source)
    records = parser.feed_text(strip_ansi(text.replace("\x00", "")))
    return records + parser.flush()
