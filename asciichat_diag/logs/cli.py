"""`diag logs`: read or follow ascii-chat / asciichat-server logs with ascii-chat's filters.

Exit codes: 0 records shown (or following ended by Ctrl-C), 1 filters given and nothing
matched, 2 bad usage or unreadable input.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from datetime import time as dtime
from typing import Any

import click

from asciichat_diag._common import (
    EXIT_OK,
    EXIT_PROBLEM,
    EXIT_USAGE,
    DiagError,
    color_option,
    handle_errors,
    json_option,
    make_console,
    to_jsonable,
)
from asciichat_diag.logs.dates import DateAssigner, TimeBound, first_day_for, parse_time_bound, prescan
from asciichat_diag.logs.filters import Pipeline, RecordFilter, block_prefilters, normalise_level, normalise_tag
from asciichat_diag.logs.follow import Follower
from asciichat_diag.logs.grep import GrepFilter, GrepHit, GrepPattern, GrepSyntaxError, parse_grep
from asciichat_diag.logs.model import Separator
from asciichat_diag.logs.parse import RecordParser
from asciichat_diag.logs.ratelimit import LifecycleTracker, RateNote, RateTracker, tag_summary
from asciichat_diag.logs.reader import scan, tail_offset
from asciichat_diag.logs.render import LineWriter, Summary, print_summary
from asciichat_diag.logs.source import SourceIndex


def _iso(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


@dataclass
class Options:
    files: list[str]
    follow: bool
    lines: int | None
    tags: tuple[str, ...]
    level: str | None
    clients: frozenset[str]
    since: TimeBound | None
    until: TimeBound | None
    patterns: list[GrepPattern]
    summary: bool
    as_json: bool
    rate: bool
    show_date: bool
    interval: float
    prefilter: bool
    sources: tuple[str, ...] = ()

    @property
    def filtering(self) -> bool:
        return bool(self.tags or self.level or self.clients or self.since or self.until or self.patterns)


@dataclass
class Run:
    """State shared by every file of one invocation: output, trackers, the -n window."""

    opts: Options
    writer: LineWriter
    tracker: RateTracker = field(default_factory=RateTracker)
    lifecycle: LifecycleTracker = field(default_factory=LifecycleTracker)
    matched: int = 0
    parsed: int = 0
    read: dict[str, int] = field(default_factory=dict)  # lines and bytes read from the files
    events: list[dict[str, Any]] = field(default_factory=list)
    window: deque | None = None  # -n: last N (hit, note) pairs, printed when the backlog is read

    def emit(self, hit: GrepHit) -> None:
        note: RateNote | None = None
        if not hit.context:
            self.matched += 1
            if self.opts.rate or self.opts.summary:
                note = self.tracker.observe(hit.record)
            if self.opts.summary:
                self.lifecycle.observe(hit.record)
        if self.opts.summary:
            return
        if not self.opts.rate:
            note = None
        if self.window is not None:
            self.window.append((hit, note))
        else:
            self.writer.record(hit, note)

    def release_window(self) -> None:
        if self.window is not None:
            for hit, note in self.window:
                self.writer.record(hit, note)
            self.window = None

    def separator(self, sep: Separator) -> None:
        self.events.append({"event": sep.kind, "source": sep.source, "detail": sep.detail})
        if not self.opts.summary:
            self.writer.separator(sep)

    def make_pipeline(self, first_day: Any, anchor: datetime | None, reference: datetime) -> Pipeline:
        o = self.opts
        rfilter = RecordFilter(
            tags=o.tags,
            min_level=o.level,
            clients=o.clients,
            since=o.since.resolve(reference) if o.since else None,
            until=o.until.resolve(reference) if o.until else None,
        )
        grep = GrepFilter(o.patterns) if o.patterns else None
        return Pipeline(rfilter, DateAssigner(first_day, anchor), grep)

    def summary(self) -> Summary:
        sites = self.tracker.summary()
        return Summary(
            files=self.opts.files,
            records_seen=self.parsed,
            records_matched=self.matched,
            lines_read=self.read.get("lines", 0),
            bytes_read=self.read.get("bytes", 0),
            tags=tag_summary(sites),
            sites=sites,
            ws_sessions=self.lifecycle.sessions,
            suppressed_connect_lines=self.lifecycle.suppressed_connects,
            suppressed_disconnect_lines=self.lifecycle.suppressed_disconnects,
            events=self.events,
        )


def _read_backlog(run: Run, path: str, fh: Any, end: int, follow: bool) -> tuple[Pipeline, RecordParser]:
    """Read fh[0:end] through a fresh pipeline (fast path when a prefilter applies)."""
    st = os.fstat(fh.fileno())
    mtime = datetime.fromtimestamp(st.st_mtime)
    head = os.pread(fh.fileno(), 4096, 0)
    is_json = head.lstrip()[:1] == b"{"
    info = prescan(fh, 0, end)
    first_day = first_day_for(mtime, info)
    if follow or info.last_seconds is None:
        reference = datetime.now() if follow else mtime
    else:
        last_day = info.last_date or first_day + timedelta(days=info.rollovers)
        reference = datetime.combine(last_day, dtime()) + timedelta(seconds=info.last_seconds)
    start = 0
    o = run.opts
    if o.lines is not None and not o.filtering and not o.summary and not run.opts.files[1:]:
        start = tail_offset(fh, end, o.lines)
    if start:  # the first record read is not the file's first: date it back from the log's end
        pipeline = run.make_pipeline(None, reference, reference)
    else:
        pipeline = run.make_pipeline(first_day, mtime, reference)
    parser = RecordParser(path)
    prefilters = block_prefilters(pipeline.record_filter, o.patterns, is_json) if o.prefilter else []
    for hit in scan(fh, parser, pipeline.process, pipeline.assigner.observe, prefilters, start, end, stats=run.read):
        run.emit(hit)
    for hit in pipeline.process(parser.flush()):
        run.emit(hit)
    run.parsed += pipeline.seen
    return pipeline, parser


def read_files(run: Run) -> None:
    for path in run.opts.files:
        if path == "-":
            _read_stdin(run)
            continue
        try:
            fh = open(path, "rb")  # noqa: SIM115 - closed below, kept open across the scan
        except OSError as exc:
            raise DiagError(f"cannot read {path}: {exc.strerror or exc}", EXIT_USAGE) from None
        with fh:
            if not os.path.isfile(path):
                raise DiagError(f"cannot read {path}: not a regular file", EXIT_USAGE)
            _read_backlog(run, path, fh, os.fstat(fh.fileno()).st_size, follow=False)


def _read_stdin(run: Run) -> None:
    now = datetime.now()
    pipeline = run.make_pipeline(None, now, now)
    parser = RecordParser("-")
    for hit in scan(sys.stdin.buffer, parser, pipeline.process, pipeline.assigner.observe, [], 0, None, stats=run.read):
        run.emit(hit)
    for hit in pipeline.process(parser.flush()):
        run.emit(hit)
    run.parsed += pipeline.seen


@dataclass
class _Followed:
    follower: Follower
    pipeline: Pipeline | None = None
    parser: RecordParser | None = None


def follow_files(run: Run, should_stop: Callable[[], bool]) -> None:
    followed: list[_Followed] = []
    for path in run.opts.files:
        if path == "-":
            raise DiagError("--follow needs a file name, not stdin", EXIT_USAGE)
        follower = Follower(path)
        end = follower.open_initial()
        item = _Followed(follower)
        if follower.ever_opened:
            with follower.reopen() as fh:
                item.pipeline, item.parser = _read_backlog(run, path, fh, end, follow=True)
        else:
            click.echo(f"diag: {path} does not exist yet; waiting for it", err=True)
        followed.append(item)
    run.release_window()
    run.writer.flush()
    while not should_stop():
        for item in followed:
            events = item.follower.poll()
            if item.pipeline is None and item.follower.ever_opened:
                now = datetime.now()
                item.pipeline = run.make_pipeline(None, now, now)
                item.parser = RecordParser(item.follower.path)
            if item.pipeline is None or item.parser is None:
                continue
            pipeline, parser = item.pipeline, item.parser
            for event in events:
                if isinstance(event, Separator):
                    for hit in pipeline.process(parser.flush()):
                        run.emit(hit)
                    run.separator(event)
                    if event.kind in ("new-run", "recreated"):
                        pipeline.assigner.restart(datetime.now())
                        pipeline.reset()
                else:
                    for hit in pipeline.process(parser.feed_text(event)):
                        run.emit(hit)
            if not events and parser.pending:
                # The writer went quiet: the open record has all its continuation lines.
                for hit in pipeline.process(parser.flush()):
                    run.emit(hit)
            run.parsed = sum(f.pipeline.seen for f in followed if f.pipeline)
        run.writer.flush()
        time.sleep(run.opts.interval)
    for item in followed:
        if item.pipeline and item.parser:
            for hit in item.pipeline.process(item.parser.flush()):
                run.emit(hit)
        item.follower.close()
    run.parsed = sum(f.pipeline.seen for f in followed if f.pipeline)


def _build_options(**kw: Any) -> Options:
    try:
        patterns = [parse_grep(p) for p in kw["greps"]]
    except GrepSyntaxError as exc:
        raise DiagError(str(exc), EXIT_USAGE) from None
    for pat in patterns:
        for note in pat.notes:
            click.echo(f"diag: note: {note}", err=True)
    try:
        level = normalise_level(kw["level"]) if kw["level"] else None
        since = parse_time_bound(kw["since"]) if kw["since"] else None
        until = parse_time_bound(kw["until"]) if kw["until"] else None
    except ValueError as exc:
        raise DiagError(str(exc), EXIT_USAGE) from None
    files = list(kw["files"])
    if not files:
        if sys.stdin.isatty():
            raise DiagError("give a log FILE (or pipe one in)", EXIT_USAGE)
        files = ["-"]
    lines = kw["lines"]
    if lines is None and kw["follow"]:
        lines = 10
    return Options(
        files=files,
        follow=kw["follow"],
        lines=lines,
        tags=tuple(normalise_tag(t) for t in kw["tags"] if t.strip()),
        level=level,
        clients=frozenset(c.strip() for c in kw["clients"]),
        since=since,
        until=until,
        patterns=patterns,
        summary=kw["summary"],
        as_json=kw["as_json"],
        rate=kw["rate"],
        show_date=kw["show_date"],
        interval=kw["interval"],
        prefilter=not kw["no_prefilter"],
        sources=tuple(kw["sources"]),
    )


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False))
@click.option("-f", "--follow", is_flag=True, help="Keep reading as the file grows, like tail -F.")
@click.option(
    "-n", "--lines", type=click.IntRange(min=0), default=None, help="Start with the last N records [follow: 10]."
)
@click.option(
    "--tag", "tags", multiple=True, metavar="PREFIX", help="Tag prefix, e.g. WS_ or WS_REASSEMBL (repeatable)."
)
@click.option("--level", metavar="LEVEL", help="Minimum level: dev, debug, info, warn, error, fatal.")
@click.option("--client", "clients", multiple=True, metavar="ID", help="Records naming this client id or peer.")
@click.option("--since", metavar="TIME", help="HH:MM[:SS] (latest such time before the log's end) or a date-time.")
@click.option("--until", metavar="TIME", help="Same forms as --since.")
@click.option(
    "--grep", "greps", multiple=True, metavar="/PAT/FLAGS", help="ascii-chat --grep pattern (repeatable, OR-ed)."
)
@click.option("--summary", is_flag=True, help="Per tag and call site counts, gaps, suppression; client lifecycles.")
@click.option("--rate/--no-rate", default=True, show_default=True, help="Mark lines whose gap sits at a rate limit.")
@click.option("--date", "show_date", is_flag=True, help="Prefix each record with the date attached to it.")
@click.option(
    "--interval", type=click.FloatRange(min=0.01), default=0.1, show_default=True, help="Follow poll period (s)."
)
@click.option(
    "--source",
    "sources",
    multiple=True,
    type=click.Path(exists=True, file_okay=False),
    metavar="DIR",
    help="Source tree: read each call site's declared log_*_every interval (flags unit mismatches).",
)
@click.option("--no-prefilter", is_flag=True, hidden=True, help="Parse every record (disables the block fast path).")
@json_option
@color_option
@handle_errors
def logs(**kw: Any) -> None:
    """Read or follow ascii-chat and asciichat-server logs; filter them; reveal rate limiting.

    Understands ascii-chat's text lines (debug and release form), its NDJSON (--json) logs and
    asciichat-server's lines, survives ascii-chat truncating the file at start and tail-rotating
    it, and takes the same --grep patterns as ascii-chat.

    \b
    Examples:
      diag logs -f server.log --tag WS_ --level debug
      diag logs server.log --grep "/bind|TCP|IPv4/ig" --grep "/ERROR/B2"
      diag logs server.log --tag WS_REASSEMBL --summary
      diag logs server.json --client 3 --since 14:00 --json

    Lines whose gap to the previous one from the same call site sits at a known rate-limit
    interval get a note (--no-rate hides it). Exit status: 0 records shown, 1 filters matched
    nothing, 2 bad usage or unreadable file.
    """
    opts = _build_options(**kw)
    color = kw["color"]
    if opts.as_json:
        mode = "json"
    elif color == "always" or (color == "auto" and sys.stdout.isatty()):
        mode = "rich"
    else:
        mode = "plain"
    console = make_console(color) if mode == "rich" or opts.summary else None
    writer = LineWriter(mode, console, show_date=opts.show_date, show_source=len(opts.files) > 1)
    run = Run(opts, writer)
    if opts.sources:
        run.tracker = RateTracker(SourceIndex(list(opts.sources)).lookup)
    if opts.lines is not None:
        run.window = deque(maxlen=opts.lines)
    if opts.follow:
        stop = {"flag": False}

        def _stop(*_: Any) -> None:
            stop["flag"] = True

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        follow_files(run, lambda: stop["flag"])
    else:
        read_files(run)
        run.release_window()
    writer.flush()
    if opts.summary:
        summary = run.summary()
        if opts.as_json:
            json.dump(to_jsonable(summary), sys.stdout, indent=2, ensure_ascii=False, default=_iso)
            sys.stdout.write("\n")
        else:
            assert console is not None
            print_summary(summary, console)
    if not opts.follow and opts.filtering and run.matched == 0:
        sys.exit(EXIT_PROBLEM)
    sys.exit(EXIT_OK)
