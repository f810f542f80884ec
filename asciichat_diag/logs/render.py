"""Output for `diag logs`: plain text, rich colour, NDJSON lines, and the --summary tables."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import IO, Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from asciichat_diag._common import to_jsonable
from asciichat_diag.logs.grep import GrepHit
from asciichat_diag.logs.model import Record, Separator, format_interval
from asciichat_diag.logs.parse import CLIENT_RE, HEADER_RE, RATE_SUFFIX_RE, TAG_RE
from asciichat_diag.logs.ratelimit import RateNote, SiteStats, TagStats, WsSession

LEVEL_STYLES = {
    "DEV": "blue",
    "DEBUG": "cyan",
    "INFO": "green",
    "WARN": "yellow",
    "ERROR": "bold red",
    "FATAL": "bold magenta",
}
MAX_RICH_CHARS = 64 << 10  # rich lays out every character; cut monster lines in the coloured view


def rate_note_text(note: RateNote) -> str:
    kind = "rate limit" if note.declared else "known rate"
    text = f"gap {note.gap_s:.3f}s at {format_interval(note.interval_s)}s {kind}"
    if note.reported_suppressed:
        return f"{text}: {note.reported_suppressed} suppressed (reported)"
    if note.declared and note.reported_suppressed == 0:
        return f"{text}: none suppressed (reported)"
    return f"{text}: ≥1 call possibly suppressed"


def record_json(rec: Record, context: bool = False, note: RateNote | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "source": rec.source,
        "format": rec.fmt,
        "datetime": rec.dt.isoformat() if rec.dt else None,
        "time": rec.time,
        "level": rec.level,
        "tid": rec.tid,
        "file": rec.file,
        "line": rec.line,
        "func": rec.func,
        "tags": list(rec.tags),
        "message": rec.message,
    }
    if rec.rate_interval_s is not None:
        out["rate_interval_s"] = rec.rate_interval_s
        out["suppressed"] = rec.suppressed
    if context:
        out["context"] = True
    if note is not None:
        out["rate_note"] = to_jsonable(note)
    return out


class LineWriter:
    """Writes records and separators; one instance per run."""

    def __init__(
        self,
        mode: str,  # "plain" | "rich" | "json"
        console: Console | None = None,
        stream: IO[str] | None = None,
        show_date: bool = False,
        show_source: bool = False,
    ) -> None:
        self.mode = mode
        self.console = console
        self.stream = stream or sys.stdout
        self.show_date = show_date
        self.show_source = show_source
        self._last_source: str | None = None

    def flush(self) -> None:
        if self.mode == "rich" and self.console is not None:
            self.console.file.flush()
        else:
            self.stream.flush()

    def _source_header(self, source: str) -> None:
        if not self.show_source or source == self._last_source or self.mode == "json":
            return
        self._last_source = source
        if self.mode == "rich" and self.console is not None:
            self.console.print(Text(f"==> {source} <==", style="bold"))
        else:
            self.stream.write(f"==> {source} <==\n")

    def record(self, hit: GrepHit, note: RateNote | None = None) -> None:
        rec = hit.record
        if self.mode == "json":
            self.stream.write(json.dumps(record_json(rec, hit.context, note), ensure_ascii=False) + "\n")
            return
        self._source_header(rec.source)
        text = rec.text()
        prefix = ""
        if self.show_date:
            prefix = (rec.dt.date().isoformat() if rec.dt else "????-??-??") + " "
        if self.mode == "plain":
            line = prefix + text
            if note is not None:
                line += f"  <- {rate_note_text(note)}"
            self.stream.write(line + "\n")
            return
        assert self.console is not None
        self.console.print(self._styled(rec, text, prefix, hit, note))

    def _styled(self, rec: Record, text: str, prefix: str, hit: GrepHit, note: RateNote | None) -> Text:
        cut = ""
        if len(text) > MAX_RICH_CHARS:
            cut = f" … [{len(text) - MAX_RICH_CHARS} more characters]"
            text = text[:MAX_RICH_CHARS]
        out = Text()
        if prefix:
            out.append(prefix, style="dim")
        body = Text(text, style="dim" if hit.context else "")
        first_end = text.find("\n")
        first_end = len(text) if first_end < 0 else first_end
        level_style = LEVEL_STYLES.get(rec.level or "", "")
        m = HEADER_RE.match(text) if rec.fmt == "text" or rec.fmt == "json" else None
        msg_start = 0
        if m:
            body.stylize(level_style, 0, text.find("]", m.end(2)) + 1)  # time and level in the level colour
            if m.group(3):
                body.stylize("bright_black", m.start(3) - 5, m.end(3) + 1)
            if m.group(4):
                body.stylize("cyan", m.start(4), m.end(4))
                body.stylize("bright_black", m.start(5), m.end(5))
                body.stylize("blue", m.start(6), m.end(6))
            msg_start = m.end()
        pos = msg_start
        while True:
            tm = TAG_RE.match(text, pos)
            if not tm:
                break
            body.stylize("bold " + (level_style or "white"), tm.start(1) - 1, tm.end(1) + 1)
            pos = tm.end()
        for cm in CLIENT_RE.finditer(text, msg_start, first_end):
            group = 1 if cm.group(1) else 2
            body.stylize("bold bright_white on grey23", cm.start(group), cm.end(group))
        rm = RATE_SUFFIX_RE.search(text, msg_start, first_end)
        if rm:
            body.stylize("magenta", rm.start() + 1, rm.end())
        for lo, hi in hit.spans:
            if hi <= len(text):
                body.stylize("reverse", lo, hi)
        out.append_text(body)
        if cut:
            out.append(cut, style="dim italic")
        if note is not None:
            out.append(f"  ⟵ {rate_note_text(note)}", style="magenta dim")
        return out

    def separator(self, sep: Separator) -> None:
        if self.mode == "json":
            payload = {"event": sep.kind, "source": sep.source, "detail": sep.detail}
            if sep.skipped_bytes:
                payload["skipped_bytes"] = sep.skipped_bytes
            self.stream.write(json.dumps(payload) + "\n")
            return
        label = f"──── {sep.kind}: {sep.source}: {sep.detail} ────"
        if self.mode == "rich" and self.console is not None:
            self.console.print(Text(label, style="bold yellow"))
        else:
            self.stream.write(label + "\n")


@dataclass
class Summary:
    files: list[str]
    records_seen: int  # records parsed (the fast path parses only candidates)
    records_matched: int
    lines_read: int = 0  # backlog only; lines that arrived while following are not counted
    bytes_read: int = 0
    tags: list[TagStats] = field(default_factory=list)
    sites: list[SiteStats] = field(default_factory=list)
    ws_sessions: list[WsSession] = field(default_factory=list)
    suppressed_connect_lines: int = 0
    suppressed_disconnect_lines: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)


def _t(value: Any) -> str:
    if value is None:
        return "-"
    if hasattr(value, "strftime"):
        return value.strftime("%m-%d %H:%M:%S.%f")[:-3]
    return str(value)


def _suppressed_cell(possibly: int, reported: int | None) -> str:
    parts = []
    if reported is not None:
        parts.append(f"{reported} reported")
    if possibly:
        parts.append(f"≥{possibly} possibly")
    return ", ".join(parts) or "-"


def print_summary(summary: Summary, console: Console) -> None:
    if not console.is_terminal:
        console.width = max(console.width, 400)  # a file or pipe gets whole rows, not squeezed cells
    console.print(
        f"[bold]{summary.records_matched}[/] records matched in {', '.join(summary.files)} "
        f"({summary.records_seen} records parsed, {summary.lines_read} lines / {summary.bytes_read} bytes read)"
    )
    tags = Table(title="Tags", title_justify="left")
    for col in ("tag", "count", "first", "last", "rate/s", "sites", "suppressed"):
        tags.add_column(col, justify="right" if col in ("count", "rate/s", "sites") else "left", no_wrap=True)
    for t in summary.tags:
        tags.add_row(
            t.tag,
            str(t.count),
            _t(t.first),
            _t(t.last),
            _t(t.rate_per_s),
            str(t.sites),
            _suppressed_cell(t.possibly_suppressed, t.reported_suppressed),
        )
    console.print(tags)
    sites = Table(title="Call sites", title_justify="left")
    sites.add_column("site", no_wrap=True, overflow="ellipsis", max_width=48)
    for col in ("tag", "level", "count", "first", "last", "rate/s", "min gap", "median gap", "interval"):
        right = col in ("count", "rate/s", "min gap", "median gap")
        sites.add_column(col, justify="right" if right else "left", no_wrap=True)
    sites.add_column("suppressed", no_wrap=True)
    sites.add_column("message", overflow="ellipsis", no_wrap=True, max_width=60, min_width=10)
    for s in summary.sites:
        if s.declared_interval_s is not None:
            interval = f"{format_interval(s.declared_interval_s)}s (declared)"
        elif s.source_expression is not None:
            value = "?" if s.source_interval_s is None else f"{format_interval(s.source_interval_s)}s"
            interval = f"{value} (source: {s.source_expression}){' ⚠' if s.source_warning else ''}"
        elif s.guessed_interval_s is not None:
            interval = f"≈{format_interval(s.guessed_interval_s)}s (known rate)"
        else:
            interval = "-"
        sites.add_row(
            s.key if s.key != s.example else "(no location)",
            s.tag or "-",
            s.level or "-",
            str(s.count),
            _t(s.first),
            _t(s.last),
            _t(s.rate_per_s),
            "-" if s.min_gap_s is None else f"{s.min_gap_s:.3f}s",
            "-" if s.median_gap_s is None else f"{s.median_gap_s:.3f}s",
            interval,
            _suppressed_cell(s.possibly_suppressed, s.reported_suppressed),
            s.example,
        )
    console.print(sites)
    if summary.ws_sessions or summary.suppressed_connect_lines or summary.suppressed_disconnect_lines:
        timeline = Table(title="Client lifecycles", title_justify="left")
        for col in ("transport", "peer", "id", "connected", "disconnected", "duration", "reason", "cleanup", "state"):
            timeline.add_column(col)
        for ses in summary.ws_sessions:
            timeline.add_row(
                ses.transport,
                ses.peer or "-",
                ses.client_id or "-",
                _t(ses.connected),
                _t(ses.disconnected),
                "-" if ses.duration_s is None else f"{ses.duration_s:.3f}s",
                ses.reason or "-",
                ses.cleanup or "-",
                ses.state,
            )
        console.print(timeline)
        if summary.suppressed_connect_lines or summary.suppressed_disconnect_lines:
            console.print(
                f"[magenta]connect lines suppressed by the server: {summary.suppressed_connect_lines}, "
                f"disconnect lines: {summary.suppressed_disconnect_lines} (those lifecycles are missing)[/]"
            )
    warned = [s for s in summary.sites if s.source_warning]
    for s in warned:
        console.print(f"[yellow]⚠ {s.key}[/] ({s.source_location}): {s.source_warning}")
    for event in summary.events:
        console.print(f"[yellow]{event['event']}[/] {event['source']}: {event['detail']}")
