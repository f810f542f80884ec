"""Dates for dateless logs: anchor on the file's mtime, count midnight rollovers (time going back > 12 h).

ascii-chat stamps `HH:MM:SS.uuuuuu` in local time and nothing else; asciichat-server's NDJSON
carries a date, which wins whenever present.
"""

from __future__ import annotations

import itertools
import os
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import BinaryIO

ROLLOVER_S = 12 * 3600  # a clock going back more than this is the next day, not a jitter
CLOCK_SLACK = timedelta(minutes=2)  # mtime granularity and a writer racing the stat
FULL_PRESCAN_BYTES = 1 << 20  # read small files whole; sample bigger ones
SAMPLE_EVERY_BYTES = 256 << 10
_TIME_RE = re.compile(rb'(?:^\[|"timestamp":")(\d{2}):(\d{2}):(\d{2})', re.MULTILINE)


def _secs(m: re.Match[bytes]) -> int:
    return int(m.group(1)) * 3600 + int(m.group(2)) * 60 + int(m.group(3))


def count_rollovers(times: list[int]) -> int:
    rollovers = 0
    for prev, cur in itertools.pairwise(times):
        if prev - cur > ROLLOVER_S:
            rollovers += 1
    return rollovers


@dataclass
class Prescan:
    rollovers: int
    last_seconds: int | None
    last_date: date | None = None  # from the last NDJSON record that carries one (ours do)


_DATE_RE = re.compile(rb'"date":\s*"(\d{4}-\d{2}-\d{2})"')


def _last_date(data: bytes) -> date | None:
    found = None
    for found in _DATE_RE.finditer(data, max(0, len(data) - (64 << 10))):  # noqa: B007 - want the last
        pass
    if found is None:
        return None
    try:
        return date.fromisoformat(found.group(1).decode())
    except ValueError:
        return None


def prescan(fh: BinaryIO, start: int, end: int) -> Prescan:
    """Rollovers and the last time of day in fh[start:end] (sampled every MiB for big files)."""
    times: list[int] = []
    last_date = None
    if end - start <= FULL_PRESCAN_BYTES:
        fh.seek(start)
        data = fh.read(end - start)
        times = [_secs(m) for m in _TIME_RE.finditer(data)]
        last_date = _last_date(data)
    else:
        for offset in range(start, end, SAMPLE_EVERY_BYTES):
            fh.seek(offset)
            m = _TIME_RE.search(fh.read(8 << 10), 1 if offset > start else 0)
            if m:
                times.append(_secs(m))
        fh.seek(max(start, end - (64 << 10)))
        data = fh.read(end - fh.tell())
        tail = [_secs(m) for m in _TIME_RE.finditer(data)]
        if tail:
            times.append(tail[-1])
        last_date = _last_date(data)
    return Prescan(count_rollovers(times), times[-1] if times else None, last_date)


def first_day_for(end: datetime, scan: Prescan) -> date:
    """Date of the first record, given the file's mtime and its rollover count."""
    last_day = end.date()
    if scan.last_seconds is not None:
        stamp = datetime.combine(last_day, time()) + timedelta(seconds=scan.last_seconds)
        if stamp > end + CLOCK_SLACK:
            last_day -= timedelta(days=1)
    return last_day - timedelta(days=scan.rollovers)


def file_mtime(path: str) -> datetime:
    return datetime.fromtimestamp(os.stat(path).st_mtime)


class DateAssigner:
    """Attach `Record.dt`; walks forward a day whenever the clock jumps back by more than 12 h."""

    def __init__(self, first_day: date | None = None, anchor: datetime | None = None) -> None:
        self.day = first_day
        self.anchor = anchor  # used when first_day is None: the first record is at/before this
        self._last_seconds: float | None = None
        self._last_dt: datetime | None = None
        self._day_start: datetime | None = None  # midnight of self.day, cached
        if first_day is not None:
            self._set_day(first_day)

    def restart(self, anchor: datetime) -> None:
        """A new run started (file truncated or recreated): the next record is at/before `anchor`."""
        self.day = None
        self._day_start = None
        self.anchor = anchor
        self._last_seconds = None

    def observe(self, seconds: float) -> None:
        """Account for a time seen in records that are not parsed (fast path)."""
        if self.day is None:
            self._set_day(self._initial_day(seconds))
        elif self._last_seconds is not None and self._last_seconds - seconds > ROLLOVER_S:
            self._set_day(self.day + timedelta(days=1))
        self._last_seconds = seconds

    def _set_day(self, day: date) -> None:
        self.day = day
        self._day_start = datetime.combine(day, time())

    def assign(self, rec: object) -> None:
        seconds = rec.seconds  # type: ignore[attr-defined]
        explicit = rec.date  # type: ignore[attr-defined]
        if seconds is None:
            rec.dt = self._last_dt  # type: ignore[attr-defined]
            return
        if explicit:
            try:
                day = date.fromisoformat(explicit)
                if day != self.day:
                    self._set_day(day)
            except ValueError:
                self.observe(seconds)
            self._last_seconds = seconds
        else:
            self.observe(seconds)
        if self._day_start is None:
            assert self.day is not None
            self._set_day(self.day)
        self._last_dt = self._day_start + timedelta(seconds=seconds)
        rec.dt = self._last_dt  # type: ignore[attr-defined]

    def _initial_day(self, seconds: float) -> date:
        anchor = self.anchor or datetime.now()
        day = anchor.date()
        if datetime.combine(day, time()) + timedelta(seconds=seconds) > anchor + CLOCK_SLACK:
            day -= timedelta(days=1)
        return day


@dataclass
class TimeBound:
    """--since/--until: an absolute datetime, or a time of day resolved against the log's end."""

    text: str
    absolute: datetime | None = None
    time_of_day: float | None = None

    def resolve(self, reference: datetime) -> datetime:
        """Most recent occurrence of the time of day at or before `reference` (the log's end or now)."""
        if self.absolute is not None:
            return self.absolute
        assert self.time_of_day is not None
        candidate = datetime.combine(reference.date(), time()) + timedelta(seconds=self.time_of_day)
        if candidate > reference + CLOCK_SLACK:
            candidate -= timedelta(days=1)
        return candidate


_TOD_RE = re.compile(r"(\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6}))?)?")


def parse_time_bound(text: str) -> TimeBound:
    """`HH:MM`, `HH:MM:SS[.ffffff]`, or `YYYY-MM-DD[ T]HH:MM[:SS]`; ValueError otherwise."""
    value = text.strip()
    m = _TOD_RE.fullmatch(value)
    if m:
        h, mi, s, frac = m.groups()
        if int(h) > 23 or int(mi) > 59 or (s and int(s) > 59):
            raise ValueError(f"bad time of day: {text!r}")
        seconds = int(h) * 3600 + int(mi) * 60 + int(s or 0) + (int(frac.ljust(6, "0")) / 1e6 if frac else 0)
        return TimeBound(text, time_of_day=seconds)
    try:
        return TimeBound(text, absolute=datetime.fromisoformat(value.replace(" ", "T", 1)))
    except ValueError:
        raise ValueError(f"expected HH:MM[:SS] or YYYY-MM-DD HH:MM[:SS], got {text!r}") from None
