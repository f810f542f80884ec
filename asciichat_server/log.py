"""Logging in ascii-chat's debug-build line format (or NDJSON), plus per-call-site rate limiting.

Text:  ``[HH:MM:SS.uuuuuu] [LEVEL] [tid:N] path/to/file.py:LINE@func(): message``
JSON:  ``{"header": {...}, "body": {"message": ...}}`` one object per line.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import IO, Any

__all__ = [
    "DEV",
    "LEVELS",
    "LINE_RE",
    "JsonFormatter",
    "TextFormatter",
    "format_interval",
    "log_every",
    "parse_level",
    "reset_rate_limits",
    "setup_logging",
]

# ascii-chat's DEV level sits below DEBUG (log_level_t 0).
DEV = 5
logging.addLevelName(DEV, "DEV")

#: CLI name -> logging level (names as ascii-chat's --log-level takes them).
LEVELS: dict[str, int] = {
    "dev": DEV,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "fatal": logging.CRITICAL,
}

# logging level -> ascii-chat level name (unpadded, as in the JSON header).
_LEVEL_NAMES: dict[int, str] = {
    DEV: "DEV",
    logging.DEBUG: "DEBUG",
    logging.INFO: "INFO",
    logging.WARNING: "WARN",
    logging.ERROR: "ERROR",
    logging.CRITICAL: "FATAL",
}

#: Regular expression matching one text line (used by tests and readers of our logs).
LINE_RE = (
    r"^\[(?P<time>\d{2}:\d{2}:\d{2}\.\d{6})\] "
    r"\[(?P<level>DEV  |DEBUG|INFO |WARN |ERROR|FATAL)\] "
    r"\[tid:(?P<tid>\d+)\] "
    r"(?P<file>[^:\s]+):(?P<line>\d+)@(?P<func>[^()\s]+)\(\): "
    r"(?P<message>.*)$"
)

# Paths are shown relative to the directory holding the asciichat_* packages, like
# ascii-chat's %file_relative (relative to its source root).
_SOURCE_ROOT = Path(__file__).resolve().parent.parent


def parse_level(name: str) -> int:
    """Map a ``--log-level`` value (dev|debug|info|warn|error|fatal, or 0-5) to a logging level."""
    key = name.strip().lower()
    if key.isdigit() and 0 <= int(key) < len(LEVELS):
        return list(LEVELS.values())[int(key)]
    if key == "warning":
        key = "warn"
    if key not in LEVELS:
        raise ValueError(f"unknown log level {name!r} (choose from {', '.join(LEVELS)})")
    return LEVELS[key]


def level_name(levelno: int) -> str:
    """ascii-chat level name for a logging level (levels in between round down)."""
    best = "DEV"
    for number, name in sorted(_LEVEL_NAMES.items()):
        if levelno >= number:
            best = name
    return best


def format_interval(interval_s: float) -> str:
    """Seconds with up to three decimals and no trailing zeros: 10 -> "10", 4.5 -> "4.5"."""
    text = f"{interval_s:.3f}".rstrip("0").rstrip(".")
    return text or "0"


def _relative_path(pathname: str) -> str:
    try:
        return Path(pathname).resolve().relative_to(_SOURCE_ROOT).as_posix()
    except (ValueError, OSError):
        return Path(pathname).as_posix()


def _clock(created: float) -> datetime:
    return datetime.fromtimestamp(created)


def _message(record: logging.LogRecord) -> str:
    message = record.getMessage()
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        message = f"{message}\n{record.exc_text}"
    if record.stack_info:
        message = f"{message}\n{record.stack_info}"
    return message


class TextFormatter(logging.Formatter):
    """ascii-chat debug-build text line; rate-limited records get `` [every=Ns suppressed=K]``."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = _clock(record.created).strftime("%H:%M:%S.%f")
        level = level_name(record.levelno).ljust(5)
        message = _message(record)
        interval = getattr(record, "rate_interval_s", None)
        if interval is not None:
            suppressed = getattr(record, "suppressed", 0)
            message = f"{message} [every={format_interval(interval)}s suppressed={suppressed}]"
        return (
            f"[{stamp}] [{level}] [tid:{record.thread}] "
            f"{_relative_path(record.pathname)}:{record.lineno}@{record.funcName}(): {message}"
        )


class JsonFormatter(logging.Formatter):
    """NDJSON record: ``{"header": {timestamp, date, level, tid, file, line, func}, "body": {message, ...}}``."""

    def format(self, record: logging.LogRecord) -> str:
        when = _clock(record.created)
        header: dict[str, Any] = {
            "timestamp": when.strftime("%H:%M:%S.%f"),
            "date": when.strftime("%Y-%m-%d"),
            "level": level_name(record.levelno),
            "tid": record.thread,
            "file": _relative_path(record.pathname),
            "line": record.lineno,
            "func": record.funcName,
        }
        body: dict[str, Any] = {"message": _message(record)}
        interval = getattr(record, "rate_interval_s", None)
        if interval is not None:
            body["rate_interval_s"] = float(interval)
            body["suppressed"] = int(getattr(record, "suppressed", 0))
        return json.dumps({"header": header, "body": body}, ensure_ascii=False)


class _RateState:
    __slots__ = ("last", "suppressed")

    def __init__(self) -> None:
        self.last: float | None = None
        self.suppressed = 0


_rate_lock = threading.Lock()
_rate_sites: dict[tuple[str, int, str], _RateState] = {}


def reset_rate_limits() -> None:
    """Forget every call site's rate-limit state (tests start from a clean slate)."""
    with _rate_lock:
        _rate_sites.clear()


def log_every(logger: logging.Logger, level: int, interval_s: float, msg: str, *args: object) -> bool:
    """Log at most once per ``interval_s`` for this call site; count what was dropped meanwhile.

    The first call at a site always logs. A written record carries the interval and the number of
    calls suppressed at this site since the previous written one. Returns True when it logged.
    """
    if not logger.isEnabledFor(level):
        return False
    caller = sys._getframe(1)
    site = (caller.f_code.co_filename, caller.f_lineno, logger.name)
    now = time.monotonic()
    with _rate_lock:
        state = _rate_sites.get(site)
        if state is None:
            state = _rate_sites[site] = _RateState()
        if state.last is not None and now - state.last < interval_s:
            state.suppressed += 1
            return False
        suppressed, state.suppressed, state.last = state.suppressed, 0, now
    logger.log(
        level,
        msg,
        *args,
        extra={"rate_interval_s": float(interval_s), "suppressed": suppressed},
        stacklevel=2,
    )
    return True


_installed: list[logging.Handler] = []


def setup_logging(
    level: str | int = "info",
    fmt: str = "text",
    log_file: str | Path | None = None,
    stream: IO[str] | None = None,
) -> None:
    """Install our formatter on the root logger: to ``stream`` (stderr) and, if given, ``log_file``.

    Calling it again replaces the handlers it installed before (tests reconfigure freely).
    """
    if fmt not in ("text", "json"):
        raise ValueError(f"unknown log format {fmt!r} (choose text or json)")
    levelno = parse_level(level) if isinstance(level, str) else int(level)
    formatter: logging.Formatter = JsonFormatter() if fmt == "json" else TextFormatter()
    root = logging.getLogger()
    for handler in _installed:
        root.removeHandler(handler)
        handler.close()
    _installed.clear()
    handlers: list[logging.Handler] = [logging.StreamHandler(stream if stream is not None else sys.stderr)]
    if log_file is not None:
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
    for handler in handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)
        _installed.append(handler)
    root.setLevel(levelno)
    # aiohttp's access log would add a line per HTTP request at INFO; keep it for debug runs.
    logging.getLogger("aiohttp.access").setLevel(max(levelno, logging.WARNING))
    # asyncio's own debug lines ("Using selector: EpollSelector") carry no information about clients.
    logging.getLogger("asyncio").setLevel(max(levelno, logging.INFO))
