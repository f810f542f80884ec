"""Block prefilters: find candidate records in a big block of text without running a regex on it.

A pattern's *required literals* are strings at least one of which every match contains; a
str.find() over a block for them is far faster than any regex engine in Python. A candidate
is only a candidate: the record around it is parsed and checked with the real pattern.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from re import _constants as sre_c  # type: ignore[attr-defined]
from re import _parser as sre_parse  # type: ignore[attr-defined]

import regex

MIN_LITERAL = 2  # shorter literals hit nearly every line; the regex scan is better then
# PCRE syntax that Python's parser would read differently (POSIX classes, \p, \h, \K, ...):
# never derive literals from those, fall back to a regex scan.
_FOREIGN = (
    "[:",
    "\\p",
    "\\P",
    "\\X",
    "\\R",
    "\\h",
    "\\H",
    "\\v",
    "\\V",
    "\\K",
    "\\g",
    "\\N",
    "\\Q",
    "(?|",
    "(?(",
    "(*",
)
_REPEATS = (sre_c.MAX_REPEAT, sre_c.MIN_REPEAT, getattr(sre_c, "POSSESSIVE_REPEAT", sre_c.MAX_REPEAT))


def _score(lits: list[str]) -> float:
    return min(len(x) for x in lits) - 0.5 * len(lits)


def _required(items: list) -> list[str] | None:
    best: list[str] | None = None
    run: list[str] = []

    def consider(cand: list[str] | None) -> None:
        nonlocal best
        if cand and all(len(x) >= MIN_LITERAL for x in cand) and (best is None or _score(cand) > _score(best)):
            best = cand

    for op, av in items:
        if op is sre_c.LITERAL:
            run.append(chr(av))
            continue
        consider(["".join(run)] if run else None)
        run = []
        if op is sre_c.SUBPATTERN:
            consider(_required(list(av[3])))
        elif op is sre_c.BRANCH:
            subs = [_required(list(b)) for b in av[1]]
            if all(subs):
                consider([lit for s in subs for lit in s or ()])
        elif op in _REPEATS and av[0] >= 1:
            consider(_required(list(av[2])))
        elif op is getattr(sre_c, "ATOMIC_GROUP", None):
            consider(_required(list(av)))
    consider(["".join(run)] if run else None)
    return best


def required_literals(pattern: str, verbose: bool = False) -> list[str] | None:
    """Strings one of which every match of `pattern` contains, or None when none can be derived."""
    if any(tok in pattern for tok in _FOREIGN):
        return None
    try:
        parsed = sre_parse.parse(pattern, re.VERBOSE if verbose else 0)
    except (re.error, RecursionError, OverflowError):
        return None
    return _required(list(parsed))


class Prefilter:
    """Finds candidate spans in a text block: by literals when possible, else by a regex scan."""

    def __init__(
        self,
        fallback: regex.Pattern[str],
        literals: list[str] | None = None,
        caseless: bool = False,
        rendered: bool = False,
    ) -> None:
        self.fallback = fallback
        self.caseless = caseless
        # True for --grep: it matches the *rendered* record, which for an NDJSON line is not
        # the raw text, so blocks holding JSON records must be parsed in full.
        self.rendered = rendered
        if literals and caseless:
            lowered = [x.lower() for x in literals]
            # lower() must keep lengths so positions in the lowered text are positions in the text
            literals = lowered if all(len(a) == len(b) for a, b in zip(lowered, literals)) else None
        self.literals = literals
        # Byte search: exact for case-sensitive literals; caseless only for ASCII literals
        # (bytes.lower() folds ASCII only, keeping every offset).
        self.literals_b: list[bytes] | None = None
        if literals and (not caseless or all(x.isascii() for x in literals)):
            self.literals_b = [x.encode() for x in literals]

    def spans(self, text: str) -> Iterator[tuple[int, int]]:
        literals = self.literals
        haystack = text
        if literals is not None and self.caseless:
            haystack = text.lower()
            if len(haystack) != len(text):  # a character like U+0130 grew: positions would shift
                literals = None
        if literals is None:
            for m in self.fallback.finditer(text):
                yield m.span()
            return
        find = haystack.find
        for lit in literals:
            size = len(lit)
            pos = find(lit)
            while pos >= 0:
                yield pos, pos + size
                pos = find(lit, pos + size)

    def spans_bytes(self, data: bytes) -> list[tuple[int, int]] | None:
        """Hits in raw UTF-8 bytes, or None when only the text search is exact for this block."""
        literals = self.literals_b
        if literals is None:
            return None
        haystack = data
        if self.caseless:
            # KELVIN SIGN and LONG S fold to ASCII k and s under Unicode caseless matching.
            if not data.isascii() and (b"\xe2\x84\xaa" in data or b"\xc5\xbf" in data):
                return None
            haystack = data.lower()
        out: list[tuple[int, int]] = []
        find = haystack.find
        for lit in literals:
            size = len(lit)
            pos = find(lit)
            while pos >= 0:
                out.append((pos, pos + size))
                pos = find(lit, pos + size)
        return out

    @property
    def sorted_output(self) -> bool:
        """Spans come out in order only for a single literal or the regex scan."""
        return self.literals is None or len(self.literals) == 1
