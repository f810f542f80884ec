"""ascii-chat's `--grep` language (lib/log/grep.c) on top of the `regex` package.

Forms: `/pattern/flags`, `pattern/flags` (last slash delimits), plain `pattern`.
Flags: i m s x g I F and A<n> B<n> C<n> (missing or zero number means 1). Several patterns
are OR-ed, each inverted (I) on its own before the OR. Quirks kept on purpose so a pattern
means here what it means in the app: in the `/.../` form the *first* slash after the opening
one closes the pattern (`/api/v1/users/F` searches for `api`), and in the slash-less form a
path such as `lib/network/websocket` is read as `lib/network` + flags `websocket` and
rejected (add a trailing `/` to search for the path). Unknown flags reject the pattern,
except that with F they are ignored.

Deliberate difference: ascii-chat prints the lines after a match without testing them and
may print a line twice as before- and after-context; here every record is tested and
printed at most once (grep's behaviour).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import regex

from asciichat_diag.logs.model import Record

SIMPLE_FLAGS = "imsxgIF"
# Constructs whose meaning changes when the pattern runs over a whole block instead of one
# record; patterns containing them skip the block prefilter (they still work, just slower).
_BLOCK_UNSAFE = ("(?=", "(?!", "(?<=", "(?<!", "\\A", "\\Z", "\\z", "\\G", "(*", "(?R", "(?&", "(?P>", "(?|")


class GrepSyntaxError(ValueError):
    """The pattern is rejected, as ascii-chat rejects it ("Invalid --grep pattern format")."""


@dataclass
class GrepPattern:
    original: str
    pattern: str
    fixed: bool = False
    ignore_case: bool = False
    multiline: bool = False
    dotall: bool = False
    extended: bool = False
    global_highlight: bool = False
    invert: bool = False
    before: int = 0
    after: int = 0
    notes: list[str] = field(default_factory=list)
    compiled: regex.Pattern[str] | None = field(default=None, repr=False)

    def regex_flags(self) -> int:
        flags = regex.V0
        if self.ignore_case:
            flags |= regex.IGNORECASE
        if not self.fixed:
            if self.multiline:
                flags |= regex.MULTILINE
            if self.dotall:
                flags |= regex.DOTALL
            if self.extended:
                flags |= regex.VERBOSE
        return flags

    def search(self, text: str) -> tuple[int, int] | None:
        """Span of the first match (before inversion), or None."""
        assert self.compiled is not None
        m = self.compiled.search(text)
        return m.span() if m else None

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Every non-empty match span (for the g flag's highlight-all)."""
        assert self.compiled is not None
        return [m.span() for m in self.compiled.finditer(text) if m.end() > m.start()]

    def block_safe(self) -> bool:
        """Can a whole-block search find every record this pattern matches?"""
        if self.invert or self.before or self.after:
            return False
        return self.fixed or not any(tok in self.pattern for tok in _BLOCK_UNSAFE)

    def block_regex(self) -> regex.Pattern[str]:
        """The same pattern for scanning many records at once (MULTILINE so ^/$ see each line)."""
        source = regex.escape(self.pattern) if self.fixed else _translate(self.pattern)
        return regex.compile(source, self.regex_flags() | regex.MULTILINE)


def _translate(pattern: str) -> str:
    r"""PCRE2 spellings the regex package lacks: `\Q...\E` literal runs."""
    if "\\Q" not in pattern:
        return pattern
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("\\\\", i):
            out.append("\\\\")
            i += 2
        elif pattern.startswith("\\Q", i):
            end = pattern.find("\\E", i + 2)
            literal = pattern[i + 2 :] if end < 0 else pattern[i + 2 : end]
            out.append(regex.escape(literal))
            i = len(pattern) if end < 0 else end + 2
        else:
            out.append(pattern[i])
            i += 1
    return "".join(out)


def _read_count(flags: str, pos: int) -> tuple[int, int]:
    """Digits after A/B/C; ascii-chat turns a missing or zero count into 1."""
    end = pos
    while end < len(flags) and flags[end].isdigit():
        end += 1
    num = int(flags[pos:end]) if end > pos else 0
    return (num if num > 0 else 1), end


def parse_grep(spec: str) -> GrepPattern:
    """Parse one --grep argument with grep.c's rules; raise GrepSyntaxError when it rejects it."""
    if not spec:
        raise GrepSyntaxError("empty --grep pattern")
    hint = 'use /pattern/flags (e.g. "/query/ig") or a plain regex (e.g. "query")'
    closing: int | None
    start = 0
    if spec[0] == "/":
        if len(spec) < 3:
            raise GrepSyntaxError(f'invalid --grep pattern format: "{spec}" ({hint})')
        found = spec.find("/", 1)
        if found < 0:
            raise GrepSyntaxError(f'invalid --grep pattern format: "{spec}": no closing "/" ({hint})')
        closing, start = found, 1
    else:
        found = spec.rfind("/")
        closing = found if found > 0 else None

    if closing is None:
        pat = GrepPattern(original=spec, pattern=spec)
    else:
        body, flags = spec[start:closing], spec[closing + 1 :]
        if not body:
            raise GrepSyntaxError(f'invalid --grep pattern format: "{spec}": empty pattern')
        pat = GrepPattern(original=spec, pattern=body)
        has_fixed = "F" in flags
        i = 0
        while i < len(flags):
            c = flags[i]
            i += 1
            if c == "i":
                pat.ignore_case = True
            elif c == "m":
                pat.multiline = True
            elif c == "s":
                pat.dotall = True
            elif c == "x":
                pat.extended = True
            elif c == "g":
                pat.global_highlight = True
            elif c == "I":
                pat.invert = True
            elif c == "F":
                pat.fixed = True
            elif c in "ABC":
                count, i = _read_count(flags, i)
                if c in "AC":
                    pat.after = count
                if c in "BC":
                    pat.before = count
            elif not has_fixed:
                extra = ""
                if spec[0] != "/":
                    extra = f'; to search for "{spec}" add a trailing "/"'
                raise GrepSyntaxError(
                    f'invalid --grep pattern format: "{spec}": unknown flag "{c}" in "{flags}"{extra}'
                )
        if spec[0] != "/" and flags:
            pat.notes.append(f'--grep "{spec}": read as pattern "{body}" with flags "{flags}" (last "/" delimits)')
        if spec[0] == "/" and "/" in flags:
            pat.notes.append(
                f'--grep "{spec}": ascii-chat ends the pattern at the first "/", so this searches for "{body}"'
            )
    try:
        source = regex.escape(pat.pattern) if pat.fixed else _translate(pat.pattern)
        pat.compiled = regex.compile(source, pat.regex_flags())
    except regex.error as exc:
        raise GrepSyntaxError(f'--grep "{spec}": bad regular expression: {exc}') from None
    return pat


@dataclass
class GrepHit:
    """A record that passed the grep stage: matched, or shown as context."""

    record: Record
    context: bool
    spans: list[tuple[int, int]]


class GrepFilter:
    """OR of patterns with per-pattern invert and A/B/C context, fed one record at a time."""

    def __init__(self, patterns: list[GrepPattern]) -> None:
        self.patterns = patterns
        self._before: deque[Record] = deque(maxlen=max((p.before for p in patterns), default=0) or 1)
        self._after_left = 0

    def reset(self) -> None:
        """Forget context (the followed file started over)."""
        self._before.clear()
        self._after_left = 0

    def match(self, text: str) -> tuple[bool, GrepPattern | None, list[tuple[int, int]]]:
        """Does `text` pass? Also the pattern that sets the context and the spans to highlight."""
        chosen: GrepPattern | None = None
        spans: list[tuple[int, int]] = []
        for pat in self.patterns:
            span = pat.search(text)
            hit = span is not None
            if hit and not pat.invert and not spans and span is not None:
                spans = pat.spans(text) if pat.global_highlight else ([span] if span[1] > span[0] else [])
            if pat.invert:
                hit = not hit
            if hit and (chosen is None or pat.before + pat.after > chosen.before + chosen.after):
                chosen = pat
        return chosen is not None, chosen, spans

    def feed(self, record: Record) -> list[GrepHit]:
        ok, chosen, spans = self.match(record.text())
        if ok and chosen is not None:
            out: list[GrepHit] = []
            if chosen.before:
                keep = list(self._before)[-chosen.before :]
                out.extend(GrepHit(r, True, []) for r in keep)
            self._before.clear()
            out.append(GrepHit(record, False, spans))
            self._after_left = max(chosen.after, 0)
            return out
        if self._after_left > 0:
            self._after_left -= 1
            return [GrepHit(record, True, [])]
        self._before.append(record)
        return []
