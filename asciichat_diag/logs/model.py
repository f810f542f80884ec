"""Plain data objects shared by the logs modules: a parsed record and a stream separator."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

# ascii-chat's enum order (DEV=0 ... FATAL=5); JSON logs call DEV "UNKNOWN".
LEVELS: tuple[str, ...] = ("DEV", "DEBUG", "INFO", "WARN", "ERROR", "FATAL")
LEVEL_RANK: dict[str, int] = {name: rank for rank, name in enumerate(LEVELS)}
LEVEL_ALIASES: dict[str, str] = {"UNKNOWN": "DEV", "WARNING": "WARN", "ERR": "ERROR", "CRITICAL": "FATAL"}


@dataclass(slots=True, eq=False)
class Record:
    """One log record: a header line plus any header-less continuation lines.

    `fmt` is "text" (ascii-chat / asciichat-server text line), "json" (NDJSON) or "plain"
    (lines seen before any header, e.g. a backtrace printed with log_plain).
    """

    fmt: str
    lines: list[str]
    message: str
    time: str | None = None
    seconds: float | None = None  # seconds since local midnight
    level: str | None = None
    tid: int | None = None
    file: str | None = None
    line: int | None = None
    func: str | None = None
    tags: tuple[str, ...] = ()
    date: str | None = None  # only when the log itself carries one (our NDJSON)
    rate_interval_s: float | None = None  # asciichat-server's rate-limited records
    suppressed: int | None = None
    dt: datetime | None = None  # attached by dates.DateAssigner
    source: str = ""

    def text(self) -> str:
        """The record as ascii-chat renders it in a log file (what --grep matches against)."""
        if self.fmt != "json":
            return "\n".join(self.lines)
        return "\n".join([render_text_header(self), *self.message.split("\n")[1:]])

    def site(self) -> str | None:
        """file:line when the record carries a location."""
        if self.file is None or self.line is None:
            return None
        return f"{self.file}:{self.line}"


def render_text_header(rec: Record) -> str:
    """The first line of `rec` in ascii-chat's debug text form (used for NDJSON records)."""
    head = f"[{rec.time or '??:??:??.??????'}] [{(rec.level or 'INFO'):<5}]"
    if rec.tid is not None:
        head += f" [tid:{rec.tid}]"
    if rec.file is not None:
        head += f" {rec.file}:{rec.line if rec.line is not None else 0}@{rec.func or '?'}():"
    first = rec.message.split("\n", 1)[0]
    if rec.rate_interval_s is not None and rec.fmt == "json":
        first += f" [every={format_interval(rec.rate_interval_s)}s suppressed={rec.suppressed or 0}]"
    return f"{head} {first}"


def format_interval(seconds: float) -> str:
    """10.0 -> "10", 4.5 -> "4.5", 0.125 -> "0.125" (the server's suffix spelling)."""
    return f"{seconds:.3f}".rstrip("0").rstrip(".")


@dataclass(slots=True)
class Separator:
    """Something happened to the followed file: truncation (new run), rotation, recreation."""

    kind: str  # "new-run" | "rotated" | "recreated" | "deleted" | "file"
    source: str
    detail: str = ""
    skipped_bytes: int = 0
    extra: dict[str, object] = field(default_factory=dict)
