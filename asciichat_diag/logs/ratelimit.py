"""Rate limiting made visible, per call site, and the WS client lifecycle timeline.

ascii-chat's `log_*_every` drops calls silently: the only trace is that a call site's gaps
never go below its interval. A site whose smallest gap sits just above a known interval
(LOG_RATE_* 0.1/1/3/5/10 s, the WebSocket code's 0.5/4.5 s, or the interval asciichat-server
writes into the line) is flagged, and every gap that lands right at the interval counts as at
least one call possibly suppressed. asciichat-server writes the real count; it is summed too.
"""

from __future__ import annotations

import re
import statistics
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from asciichat_diag.logs.model import Record
from asciichat_diag.logs.parse import RATE_SUFFIX_RE
from asciichat_diag.logs.source import Declared

# LOG_RATE_VERY_FAST/FAST/NORMAL/DEFAULT/SLOW plus the WebSocket code's ad-hoc 500 ms and 4.5 s.
KNOWN_INTERVALS_S: tuple[float, ...] = (0.1, 0.5, 1.0, 3.0, 4.5, 5.0, 10.0)
# A limited site's gap is at least the interval plus however late the next call came; a busy
# site's next call comes soon after the window opens. These bands say "at the interval".
BAND_LOW = 0.98  # a limited site never logs sooner than its interval (minus timestamping jitter)
BAND_LOW_SLACK_S = 0.002
BAND_HIGH = 1.35
BAND_HIGH_SLACK_S = 0.03  # scheduler latency of a busy process
# A site counts as rate limited only if this share of its gaps sits at the interval: one
# coincidental gap near 1 s among many irregular ones says nothing.
MIN_SHARE_AT_INTERVAL = 0.25

_NUMBER_RE = re.compile(r"0x[0-9a-fA-F]+|\d+(?:\.\d+)?")
_KV_RE = re.compile(r"(?:^|(?<=[\s(,]))([A-Za-z_][\w.]*)=")


def message_template(message: str) -> str:
    """First line of a message with numbers replaced by `#` and the rate suffix removed."""
    first = message.split("\n", 1)[0]
    if len(first) > 400:  # a template is for grouping; a 10 MB line needs no full pass
        first = first[:400]
    first = RATE_SUFFIX_RE.sub("", first)
    return _NUMBER_RE.sub("#", first)[:160]


def site_key(rec: Record) -> str:
    """file:line when the record has a location; else its tag + message template (release builds)."""
    site = rec.site()
    if site is not None:
        return site
    return message_template(rec.message)


def parse_kv(message: str) -> dict[str, str]:
    """`(id=3, cleanup=done, reason=peer closed (1000), peer=1.2.3.4:5)` -> dict; values may hold spaces."""
    first = RATE_SUFFIX_RE.sub("", message.split("\n", 1)[0][:4096])
    keys = list(_KV_RE.finditer(first))
    out: dict[str, str] = {}
    for i, m in enumerate(keys):
        end = keys[i + 1].start() if i + 1 < len(keys) else len(first)
        value = first[m.end() : end].rstrip()
        value = value.rstrip(",").rstrip()
        if i + 1 == len(keys) and value.endswith(")") and value.count(")") > value.count("("):
            value = value[:-1]
        out[m.group(1)] = value
    return out


def _in_band(gap: float, interval: float) -> bool:
    return interval * BAND_LOW - BAND_LOW_SLACK_S <= gap <= interval * BAND_HIGH + BAND_HIGH_SLACK_S


def _convincing(at_interval: int, gaps: int) -> bool:
    return at_interval >= 2 and at_interval >= MIN_SHARE_AT_INTERVAL * gaps


def guess_interval(min_gap: float) -> float | None:
    """The known interval the smallest gap sits at, if any."""
    for interval in KNOWN_INTERVALS_S:
        if _in_band(min_gap, interval):
            return interval
    return None


@dataclass
class RateNote:
    """What the line view shows next to a record whose gap looks rate limited."""

    gap_s: float
    interval_s: float
    declared: bool  # interval written by the server vs. guessed from known LOG_RATE_* values
    reported_suppressed: int | None


@dataclass
class SiteStats:
    key: str
    tag: str | None
    level: str | None
    example: str
    count: int = 0
    first: datetime | None = None
    last: datetime | None = None
    rate_per_s: float | None = None
    min_gap_s: float | None = None
    median_gap_s: float | None = None
    declared_interval_s: float | None = None  # written into the line by asciichat-server
    source_interval_s: float | None = None  # read from the source (--source)
    source_expression: str | None = None
    source_location: str | None = None
    source_warning: str | None = None
    guessed_interval_s: float | None = None
    possibly_suppressed: int = 0  # lower-bound estimate from gaps at the interval
    reported_suppressed: int | None = None  # asciichat-server's own count


@dataclass
class _Site:
    stats: SiteStats
    gaps: array = field(default_factory=lambda: array("d"))
    last_dt: datetime | None = None
    min_gap: float | None = None
    guess: float | None = None  # known interval the min gap sits at (updated with min_gap)
    at_guess: int = 0  # gaps in the band of `guess`


class RateTracker:
    """Per call-site counters and gaps; feed it records in log order.

    `declared` (optional) maps a record's file and line to the interval its source declares.
    """

    def __init__(self, declared: Callable[[str, int], Declared | None] | None = None) -> None:
        self.sites: dict[str, _Site] = {}
        self.declared = declared

    def observe(self, rec: Record) -> RateNote | None:
        if rec.fmt == "plain":
            return None
        key = site_key(rec)
        site = self.sites.get(key)
        if site is None:
            tag = rec.tags[0] if rec.tags else None
            site = self.sites[key] = _Site(SiteStats(key, tag, rec.level, message_template(rec.message)))
            if self.declared is not None and rec.file and rec.line is not None:
                found = self.declared(rec.file, rec.line)
                if found is not None:
                    st = site.stats
                    st.source_interval_s, st.source_expression = found.seconds, found.expression
                    st.source_location, st.source_warning = f"{found.path}:{found.line}", found.warning
        stats = site.stats
        stats.count += 1
        if rec.rate_interval_s is not None:
            stats.declared_interval_s = rec.rate_interval_s
            stats.reported_suppressed = (stats.reported_suppressed or 0) + (rec.suppressed or 0)
        note = None
        dt = rec.dt
        if dt is not None:
            if stats.first is None:
                stats.first = dt
            if site.last_dt is not None:
                gap = (dt - site.last_dt).total_seconds()
                if gap >= 0:
                    site.gaps.append(gap)
                    if site.min_gap is None or gap < site.min_gap:
                        site.min_gap = gap
                        guess = guess_interval(gap)
                        if guess != site.guess:
                            site.guess = guess
                            site.at_guess = 0 if guess is None else sum(1 for g in site.gaps if _in_band(g, guess))
                        elif guess is not None:
                            site.at_guess += 1
                    elif site.guess is not None and _in_band(gap, site.guess):
                        site.at_guess += 1
                    note = self._note(site, gap, rec)
            site.last_dt = dt
            stats.last = dt
        return note

    @staticmethod
    def _note(site: _Site, gap: float, rec: Record) -> RateNote | None:
        declared = rec.rate_interval_s
        if declared is None:
            declared = site.stats.source_interval_s
        if declared is not None:
            if rec.suppressed or _in_band(gap, declared):
                return RateNote(gap, declared, True, rec.suppressed)
            return None
        interval = site.guess
        if interval is not None and _in_band(gap, interval) and _convincing(site.at_guess, len(site.gaps)):
            return RateNote(gap, interval, False, None)
        return None

    def summary(self) -> list[SiteStats]:
        out: list[SiteStats] = []
        for site in self.sites.values():
            stats = site.stats
            gaps = site.gaps
            if gaps:
                stats.min_gap_s = round(min(gaps), 6)
                stats.median_gap_s = round(statistics.median(gaps), 6)
                interval = stats.declared_interval_s or stats.source_interval_s
                if stats.source_interval_s and min(gaps) < stats.source_interval_s * BAND_LOW - BAND_LOW_SLACK_S:
                    note = f"gaps down to {min(gaps):.3f}s, below the declared {stats.source_interval_s:g}s"
                    stats.source_warning = f"{stats.source_warning}; {note}" if stats.source_warning else note
                if interval is None and len(gaps) >= 2:
                    interval = guess_interval(min(gaps))
                    if interval is not None and not _convincing(
                        sum(1 for g in gaps if _in_band(g, interval)), len(gaps)
                    ):
                        interval = None
                    stats.guessed_interval_s = interval
                if interval is not None:
                    stats.possibly_suppressed = sum(1 for g in gaps if _in_band(g, interval))
            if stats.first and stats.last and stats.count > 1:
                span = (stats.last - stats.first).total_seconds()
                stats.rate_per_s = round((stats.count - 1) / span, 4) if span > 0 else None
            out.append(stats)
        out.sort(key=lambda s: (s.tag or "~", s.key))
        return out


@dataclass
class TagStats:
    tag: str
    count: int
    first: datetime | None
    last: datetime | None
    rate_per_s: float | None
    sites: int
    possibly_suppressed: int
    reported_suppressed: int | None


def tag_summary(sites: list[SiteStats]) -> list[TagStats]:
    by_tag: dict[str, list[SiteStats]] = {}
    for s in sites:
        by_tag.setdefault(s.tag or "(untagged)", []).append(s)
    out = []
    for tag, group in sorted(by_tag.items()):
        count = sum(s.count for s in group)
        firsts = [s.first for s in group if s.first]
        lasts = [s.last for s in group if s.last]
        first, last = (min(firsts) if firsts else None), (max(lasts) if lasts else None)
        rate = None
        if first and last and count > 1 and last > first:
            rate = round((count - 1) / (last - first).total_seconds(), 4)
        reported = [s.reported_suppressed for s in group if s.reported_suppressed is not None]
        out.append(
            TagStats(
                tag,
                count,
                first,
                last,
                rate,
                len(group),
                sum(s.possibly_suppressed for s in group),
                sum(reported) if reported else None,
            )
        )
    return out


@dataclass
class WsSession:
    """One WebSocket client's life from [WS_CONNECT] to [WS_DISCONNECT]."""

    peer: str | None
    client_id: str | None = None
    connected: datetime | None = None
    disconnected: datetime | None = None
    duration_s: float | None = None
    reason: str | None = None
    cleanup: str | None = None
    path: str | None = None
    transport: str = "WS"
    state: str = "open"  # open | closed | disconnect-only (connect before the log started)


class LifecycleTracker:
    """Pairs [WS_CONNECT] and [WS_DISCONNECT] records by peer address (else by client id)."""

    def __init__(self) -> None:
        self.sessions: list[WsSession] = []
        self._open: dict[str, WsSession] = {}
        self.suppressed_connects = 0
        self.suppressed_disconnects = 0

    def observe(self, rec: Record) -> None:
        if not rec.tags:
            return
        tag = rec.tags[0]
        if tag not in ("WS_CONNECT", "WS_DISCONNECT", "TCP_CONNECT", "TCP_DISCONNECT"):
            return
        kv = parse_kv(rec.message)
        peer = kv.get("peer")
        client = kv.get("id") or kv.get("client_id")
        if client == "-":
            client = None
        key = peer or (f"id:{client}" if client else None)
        transport = tag.split("_", 1)[0]
        if tag.endswith("_CONNECT"):
            if rec.suppressed:
                self.suppressed_connects += rec.suppressed
            if key and key in self._open:  # same peer again without a disconnect line in between
                self._open.pop(key).state = "no-disconnect-seen"
            session = WsSession(peer=peer, client_id=client, connected=rec.dt, path=kv.get("path"))
            session.transport = transport
            self.sessions.append(session)
            if key:
                self._open[key] = session
            return
        if rec.suppressed:
            self.suppressed_disconnects += rec.suppressed
        session = self._open.pop(key, None) if key else None
        if session is None and client:
            session = self._open.pop(f"id:{client}", None)
        if session is None:
            session = WsSession(peer=peer, client_id=client, transport=transport, state="disconnect-only")
            self.sessions.append(session)
        else:
            session.state = "closed"
        session.client_id = client or session.client_id
        session.disconnected = rec.dt
        session.reason = kv.get("reason")
        session.cleanup = kv.get("cleanup")
        if session.connected and rec.dt:
            session.duration_s = round((rec.dt - session.connected).total_seconds(), 6)
        elif "duration" in kv:
            try:
                session.duration_s = float(kv["duration"].rstrip("s"))
            except ValueError:
                pass
