"""Record filters (--tag, --level, --client, --since/--until) and the per-file pipeline.

The pipeline order is: attach a date, apply the record filters, then --grep (whose A/B/C
context counts records that passed the other filters), then the rate-limit tracker.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

import regex

from asciichat_diag.logs.dates import DateAssigner
from asciichat_diag.logs.grep import GrepFilter, GrepHit, GrepPattern
from asciichat_diag.logs.literals import Prefilter, required_literals
from asciichat_diag.logs.model import LEVEL_ALIASES, LEVEL_RANK, Record
from asciichat_diag.logs.parse import client_ids


def normalise_tag(tag: str) -> str:
    """`[ws_flow]` -> `WS_FLOW`."""
    return tag.strip().strip("[]").upper()


def normalise_level(level: str) -> str:
    name = level.strip().upper()
    if name.isdigit() and int(name) < len(LEVEL_RANK):
        return list(LEVEL_RANK)[int(name)]
    name = LEVEL_ALIASES.get(name, name)
    if name not in LEVEL_RANK:
        raise ValueError(f"unknown level {level!r} (dev, debug, info, warn, error, fatal)")
    return name


@dataclass
class RecordFilter:
    tags: tuple[str, ...] = ()  # prefixes: WS_REASSEMBL matches WS_REASSEMBLE and WS_REASSEMBLY
    min_level: str | None = None
    clients: frozenset[str] = frozenset()
    since: datetime | None = None
    until: datetime | None = None

    def accepts(self, rec: Record) -> bool:
        if self.min_level is not None and (rec.level is None or LEVEL_RANK[rec.level] < LEVEL_RANK[self.min_level]):
            return False
        if self.tags and not any(t.startswith(self.tags) for t in rec.tags):
            return False
        if self.clients and not (client_ids(rec.message) & self.clients):
            return False
        if self.since is not None and (rec.dt is None or rec.dt < self.since):
            return False
        return not (self.until is not None and (rec.dt is None or rec.dt > self.until))

    def block_prefilter(self, is_json: bool) -> Prefilter | None:
        """Finds every record this filter can accept (None: no shortcut). Tags first, then level."""
        if self.tags:
            fallback = regex.compile(r"\[(?:" + "|".join(regex.escape(t) for t in self.tags) + r")[A-Z0-9_ ]*\]")
            return Prefilter(fallback, ["[" + t for t in self.tags])
        if self.min_level is not None and self.min_level != "DEV" and not is_json:
            names = [name for name in LEVEL_RANK if LEVEL_RANK[name] >= LEVEL_RANK[self.min_level]]
            literals = [f"] [{name}" for name in names]
            fallback = regex.compile("|".join(regex.escape(x) for x in literals))
            return Prefilter(fallback, literals, rendered=True)  # NDJSON spells the level differently
        return None

    def client_prefilter(self) -> Prefilter | None:
        """Candidates for --client: the id itself when it is distinctive, else the words around it."""
        if not self.clients:
            return None
        literals: list[str] = []
        for client in self.clients:
            if len(client) >= 4:
                literals.append(client)
            else:  # `client 3`, `Client #3`, `client_id=3`, `id=3`, `peer=3`
                literals += ["client", f"id={client}", f"peer={client}"]
        literals = sorted(set(x.lower() for x in literals))
        return Prefilter(regex.compile("|".join(regex.escape(x) for x in literals), regex.I), literals, caseless=True)


@dataclass
class Pipeline:
    """Everything that happens to a record of one file after parsing."""

    record_filter: RecordFilter
    assigner: DateAssigner
    grep: GrepFilter | None = None
    passed: int = 0
    seen: int = 0
    observers: list = field(default_factory=list)  # callables fed every record that passed

    def process(self, records: Iterable[Record]) -> list[GrepHit]:
        out: list[GrepHit] = []
        accepts = self.record_filter.accepts
        assign = self.assigner.assign
        for rec in records:
            self.seen += 1
            assign(rec)
            if not accepts(rec):
                continue
            if self.grep is None:
                out.append(GrepHit(rec, False, []))
            else:
                out.extend(self.grep.feed(rec))
        for hit in out:
            if not hit.context:
                self.passed += 1
            for observe in self.observers:
                observe(hit.record)
        return out

    def reset(self) -> None:
        if self.grep is not None:
            self.grep.reset()


def block_prefilters(record_filter: RecordFilter, patterns: list[GrepPattern], is_json: bool) -> list[Prefilter]:
    """Candidate finders run over whole blocks; [] when every record must be parsed.

    Every filter must pass, so any one of them may pick the candidates: a tag is the most
    selective, then --grep (when each pattern is block-safe), then --client, then the level.
    """
    if record_filter.tags:
        tag = record_filter.block_prefilter(is_json)
        return [tag] if tag else []
    if patterns and not is_json and all(p.block_safe() for p in patterns):
        out = []
        for p in patterns:
            literals = [p.pattern] if p.fixed else required_literals(p.pattern, p.extended)
            caseless = p.ignore_case or "(?i" in p.pattern
            out.append(Prefilter(p.block_regex(), literals, caseless=caseless, rendered=True))
        return out
    client = record_filter.client_prefilter()
    if client is not None:
        return [client]
    level = record_filter.block_prefilter(is_json)
    return [level] if level else []
