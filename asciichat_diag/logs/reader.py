"""Whole-file reading: big binary blocks cut at record boundaries, optional whole-block prefilter.

With a prefilter (a tag or a block-safe --grep pattern) only the records around a hit are
parsed, which is what makes a 1 GB log tractable in Python; without one every line is parsed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import BinaryIO

from asciichat_diag.logs.grep import GrepHit
from asciichat_diag.logs.literals import Prefilter
from asciichat_diag.logs.parse import HEADER_START_RE, RecordParser, strip_ansi

BLOCK_BYTES = 8 << 20
# A record is at most 4096 bytes in ascii-chat; past this much text without a header we cut
# at a newline anyway so garbage cannot make a block grow without bound.
MAX_CARRY_BYTES = 64 << 20
_BOUNDARY_RE = re.compile(rb"\n(?=\[\d{2}:\d{2}:\d{2}[.\]]|\{)")
_NUL_LINE_RE = re.compile(rb"(?m)^\x00+\n")
_FIRST_TIME_RE = re.compile(r"^\[(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?\] ", re.MULTILINE)


def _is_header_start(text: str, pos: int) -> bool:
    if pos >= len(text):
        return True
    ch = text[pos]
    return ch == "{" or (ch == "[" and HEADER_START_RE.match(text, pos) is not None)


def clean(data: bytes) -> str:
    """Bytes from the file -> text: NUL holes dropped, invalid UTF-8 replaced, ANSI stripped."""
    if b"\x00" in data:
        # A line made only of NULs is a hole, not an empty line of the log.
        data = _NUL_LINE_RE.sub(b"", data).replace(b"\x00", b"")
    return strip_ansi(data.decode("utf-8", "replace"))


def iter_blocks(fh: BinaryIO, start: int = 0, end: int | None = None, block_bytes: int = BLOCK_BYTES) -> Iterator[str]:
    """Text blocks of fh[start:end]; every block but the last ends right before a record header."""
    if start or fh.seekable():
        fh.seek(start)
    remaining = None if end is None else end - start
    carry = b""
    while True:
        size = block_bytes if remaining is None else min(block_bytes, remaining)
        chunk = fh.read(size) if size > 0 else b""
        if remaining is not None:
            remaining -= len(chunk)
        if not chunk:
            if carry:
                yield clean(carry)
            return
        data = carry + chunk
        cut = -1
        # Search only the last part for the boundary: records are short, blocks are big.
        for m in _BOUNDARY_RE.finditer(data, max(0, len(data) - (1 << 16))):
            cut = m.start() + 1
        if cut < 0:
            tail_nl = data.rfind(b"\n")
            last = None
            if tail_nl >= 0:
                for last in _BOUNDARY_RE.finditer(data):  # noqa: B007 - want the last one
                    pass
            if last is not None:
                cut = last.start() + 1
            elif len(data) > MAX_CARRY_BYTES and tail_nl >= 0:
                cut = tail_nl + 1
        if cut <= 0:
            carry = data
            continue
        carry = data[cut:]
        yield clean(data[:cut])


def scan(
    fh: BinaryIO,
    parser: RecordParser,
    process: Callable[[list], list[GrepHit]],
    observe_time: Callable[[float], None],
    prefilters: list[Prefilter],
    start: int = 0,
    end: int | None = None,
    block_bytes: int = BLOCK_BYTES,
) -> Iterator[GrepHit]:
    """Parse fh[start:end] and run the records through `process` (the pipeline)."""
    for text in iter_blocks(fh, start, end, block_bytes):
        if not prefilters:
            if text.endswith("\n"):
                text = text[:-1]
            yield from process(parser.feed_lines(text.split("\n")))
            continue
        first = _FIRST_TIME_RE.search(text)
        if first:
            h, m, s, frac = first.groups()
            observe_time(int(h) * 3600 + int(m) * 60 + int(s) + (int(frac) / 10 ** len(frac) if frac else 0))
        for lo, hi in _candidate_ranges(text, prefilters):
            chunk = text[lo:hi]
            if chunk.endswith("\n"):
                chunk = chunk[:-1]
            records = parser.feed_lines(chunk.split("\n")) + parser.flush()
            yield from process(records)


def _candidate_ranges(text: str, prefilters: list[Prefilter]) -> list[tuple[int, int]]:
    """Merged [record start, record end) ranges around every prefilter hit in `text`."""
    spans: list[tuple[int, int]] = []
    for prefilter in prefilters:
        spans.extend(prefilter.spans(text))
    if not spans:
        return []
    if len(prefilters) > 1 or not prefilters[0].sorted_output:
        spans.sort()
    ranges: list[tuple[int, int]] = []
    last_end = -1
    for lo, hi in spans:
        if lo < last_end:
            if hi > last_end:
                ranges[-1] = (ranges[-1][0], _record_end(text, hi))
                last_end = ranges[-1][1]
            continue
        start = text.rfind("\n", 0, lo) + 1
        while start > 0 and not _is_header_start(text, start):
            start = text.rfind("\n", 0, start - 1) + 1
        if start < last_end:  # hit in a continuation line of a record already taken
            start = last_end
        end = _record_end(text, max(hi, lo + 1))
        if ranges and start <= last_end:
            ranges[-1] = (ranges[-1][0], end)
        else:
            ranges.append((start, end))
        last_end = end
    return ranges


def _record_end(text: str, pos: int) -> int:
    """Offset just past the record containing text[pos-1] (the start of the next header, or the end)."""
    nl = text.find("\n", max(pos - 1, 0))
    while nl >= 0 and not _is_header_start(text, nl + 1):
        nl = text.find("\n", nl + 1)
    return len(text) if nl < 0 else nl + 1
