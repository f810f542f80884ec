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
from asciichat_diag.logs.parse import HEADER_RE, RecordParser, parse_json, strip_ansi

BLOCK_BYTES = 8 << 20
# A record is at most 4096 bytes in ascii-chat; past this much text without a header we cut
# at a newline anyway so garbage cannot make a block grow without bound.
MAX_CARRY_BYTES = 64 << 20
_BOUNDARY_RE = re.compile(rb"\n(?=\[\d{2}:\d{2}:\d{2}[.\]]|\{)")
_NUL_LINE_RE = re.compile(rb"(?m)^\x00+\n")
_FIRST_TIME_RE = re.compile(r"^\[(\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?)\] ", re.MULTILINE)
_FIRST_TIME_B_RE = re.compile(rb"^\[(\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?)\] ", re.MULTILINE)
_HEADER_B_RE = re.compile(HEADER_RE.pattern.encode())


def _is_header_start(text: str, pos: int) -> bool:
    """Does a record (as the parser sees it) start at text[pos]? Exactly the parser's rule."""
    if pos >= len(text):
        return True
    ch = text[pos]
    if ch == "[":
        return HEADER_RE.match(text, pos) is not None
    if ch == "{":
        end = text.find("\n", pos)
        return parse_json(text[pos : end if end >= 0 else len(text)]) is not None
    return False


def _is_header_start_b(data: bytes, pos: int) -> bool:
    """_is_header_start for raw bytes."""
    if pos >= len(data):
        return True
    ch = data[pos]
    if ch == 0x5B:
        return _HEADER_B_RE.match(data, pos) is not None
    if ch == 0x7B:
        end = data.find(b"\n", pos)
        return parse_json(data[pos : end if end >= 0 else len(data)].decode("utf-8", "replace")) is not None
    return False


def tail_offset(fh: BinaryIO, end: int, records: int) -> int:
    """Where to start reading to see at least the last `records` records of fh[:end] (0: everything).

    Lets `-n N` without filters skip most of a big file, like tail does.
    """
    want = records * 8192 + (64 << 10)  # ascii-chat caps a record at 4096 bytes; leave room
    if end <= 2 * want:
        return 0
    start = end - want
    fh.seek(start)
    data = fh.read(end - start)
    starts = [m.start() + 1 for m in _BOUNDARY_RE.finditer(data) if _is_header_start_b(data, m.start() + 1)]
    if len(starts) <= records:  # unusually long records: read it all
        return 0
    return start + starts[0]


def _last_record_start(data: bytes, search_from: int) -> int:
    """Offset of the last record start after a newline in data[search_from:], or -1."""
    for m in reversed(list(_BOUNDARY_RE.finditer(data, search_from))):
        if _is_header_start_b(data, m.start() + 1):
            return m.start() + 1
    return -1


def clean(data: bytes) -> str:
    """Bytes from the file -> text: NUL holes dropped, invalid UTF-8 replaced, ANSI stripped."""
    if b"\x00" in data:
        # A line made only of NULs is a hole, not an empty line of the log.
        data = _NUL_LINE_RE.sub(b"", data).replace(b"\x00", b"")
    return strip_ansi(data.decode("utf-8", "replace"))


def iter_blocks(fh: BinaryIO, start: int = 0, end: int | None = None, block_bytes: int = BLOCK_BYTES) -> Iterator[str]:
    """Cleaned text blocks of fh[start:end] (see iter_raw_blocks)."""
    for raw in iter_raw_blocks(fh, start, end, block_bytes):
        yield clean(raw)


def iter_raw_blocks(
    fh: BinaryIO, start: int = 0, end: int | None = None, block_bytes: int = BLOCK_BYTES
) -> Iterator[bytes]:
    """Byte blocks of fh[start:end]; every block but the last ends right before a record header."""
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
                yield carry
            return
        data = carry + chunk
        cut = _last_record_start(data, max(0, len(data) - (1 << 16)))
        if cut < 0:
            cut = _last_record_start(data, 0)
            tail_nl = data.rfind(b"\n")
            if cut < 0 and len(data) > MAX_CARRY_BYTES and tail_nl >= 0:
                cut = tail_nl + 1
        if cut <= 0:
            carry = data
            continue
        carry = data[cut:]
        yield data[:cut]


def scan(
    fh: BinaryIO,
    parser: RecordParser,
    process: Callable[[list], list[GrepHit]],
    observe_time: Callable[[float], None],
    prefilters: list[Prefilter],
    start: int = 0,
    end: int | None = None,
    block_bytes: int = BLOCK_BYTES,
    stats: dict[str, int] | None = None,
) -> Iterator[GrepHit]:
    """Parse fh[start:end] and run the records through `process` (the pipeline).

    `stats`, when given, accumulates "lines" and "bytes" read (cheap even on the fast path).

    With prefilters, only the records around their hits are decoded and parsed; the search
    runs on the raw bytes when the block allows it (no NUL, no escape codes), else on text.
    """
    rendered = any(p.rendered for p in prefilters)
    for raw in iter_raw_blocks(fh, start, end, block_bytes):
        if stats is not None:
            stats["lines"] = stats.get("lines", 0) + raw.count(b"\n")
            stats["bytes"] = stats.get("bytes", 0) + len(raw)
        if not prefilters or (rendered and (raw[:1] == b"{" or b"\n{" in raw)):
            text = clean(raw)
            if text.endswith("\n"):
                text = text[:-1]
            records = parser.feed_lines(text.split("\n"))
            if prefilters:  # the next block starts a record: nothing to carry over
                records += parser.flush()
            yield from process(records)
            continue
        byte_spans = _byte_spans(raw, prefilters)
        if byte_spans is not None:
            first_b = _FIRST_TIME_B_RE.search(raw)
            if first_b:
                observe_time(_stamp_seconds(first_b.group(1).decode()))
            for lo, hi in _ranges(raw, byte_spans, b"\n", _is_header_start_b):
                chunk = raw[lo:hi].decode("utf-8", "replace")
                yield from process(_parse_chunk(parser, chunk))
            continue
        text = clean(raw)
        first = _FIRST_TIME_RE.search(text)
        if first:
            observe_time(_stamp_seconds(first.group(1)))
        spans: list[tuple[int, int]] = []
        for prefilter in prefilters:
            spans.extend(prefilter.spans(text))
        for lo, hi in _ranges(text, spans, "\n", _is_header_start):
            yield from process(_parse_chunk(parser, text[lo:hi]))


def _stamp_seconds(stamp: str) -> float:
    return int(stamp[0:2]) * 3600 + int(stamp[3:5]) * 60 + float(stamp[6:])


def _parse_chunk(parser: RecordParser, chunk: str) -> list:
    if chunk.endswith("\n"):
        chunk = chunk[:-1]
    return parser.feed_lines(chunk.split("\n")) + parser.flush()


def _byte_spans(raw: bytes, prefilters: list[Prefilter]) -> list[tuple[int, int]] | None:
    """Hits of every prefilter on the raw bytes, or None when this block needs the text path."""
    if b"\x00" in raw or b"\x1b" in raw:
        return None  # NUL holes and colour codes can split a literal; clean first
    spans: list[tuple[int, int]] = []
    for prefilter in prefilters:
        found = prefilter.spans_bytes(raw)
        if found is None:
            return None
        spans.extend(found)
    return spans


def _ranges(text, spans: list[tuple[int, int]], nl, is_header_start) -> list[tuple[int, int]]:  # type: ignore[no-untyped-def]
    """Merged [record start, record end) ranges around every hit (text is str or bytes)."""
    if not spans:
        return []
    spans.sort()
    ranges: list[tuple[int, int]] = []
    last_end = -1
    for lo, hi in spans:
        if lo < last_end:
            if hi > last_end:
                ranges[-1] = (ranges[-1][0], _record_end(text, hi, nl, is_header_start))
                last_end = ranges[-1][1]
            continue
        start = text.rfind(nl, 0, lo) + 1
        while start > 0 and not is_header_start(text, start):
            start = text.rfind(nl, 0, start - 1) + 1
        if start < last_end:  # hit in a continuation line of a record already taken
            start = last_end
        end = _record_end(text, max(hi, lo + 1), nl, is_header_start)
        if ranges and start <= last_end:
            ranges[-1] = (ranges[-1][0], end)
        else:
            ranges.append((start, end))
        last_end = end
    return ranges


def _record_end(text, pos: int, nl, is_header_start) -> int:  # type: ignore[no-untyped-def]
    """Offset just past the record containing text[pos-1] (the start of the next header, or the end)."""
    found = text.find(nl, max(pos - 1, 0))
    while found >= 0 and not is_header_start(text, found + 1):
        found = text.find(nl, found + 1)
    return len(text) if found < 0 else found + 1
