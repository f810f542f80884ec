"""The block prefilter must select exactly what parsing every record selects."""

from __future__ import annotations

import io
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asciichat_diag.logs.dates import DateAssigner
from asciichat_diag.logs.filters import Pipeline, RecordFilter, block_prefilters
from asciichat_diag.logs.grep import GrepFilter, parse_grep
from asciichat_diag.logs.literals import required_literals
from asciichat_diag.logs.parse import RecordParser
from asciichat_diag.logs.reader import scan

TAGS = ["WS_FLOW", "WS_REASSEMBLE", "WS_REASSEMBLY", "LWS_SERVICE", "TRANSPORT_LIFECYCLE", "WS_TIMING"]


def make_log(n: int = 3000, seed: int = 7) -> bytes:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        t = f"{10 + i // 3600 % 10:02d}:{i // 60 % 60:02d}:{i % 60:02d}.{rnd.randrange(10**6):06d}"
        tag = rnd.choice(TAGS)
        emoji = rnd.choice(["", "", "✅ ", "🔴 "])
        level = rnd.choice(["DEV  ", "DEBUG", "INFO ", "WARN ", "ERROR"])
        if rnd.random() < 0.5:
            site = f"lib/net/ws_{rnd.randrange(3)}.c:{rnd.randrange(900)}@cb():"
            head = f"[{t}] [{level}] [tid:{rnd.randrange(9)}] {site}"
        else:
            head = f"[{t}] [{level}]"
        msg = f"{emoji}[{tag}] bind failed id={rnd.randrange(5)} handshake" if rnd.random() < 0.3 else f"[{tag}] n={i}"
        if rnd.random() < 0.05:
            msg = f"plain message without tag mentioning [WS_FLOW] later {i}"
        lines = [f"{head} {msg}"]
        if rnd.random() < 0.1:
            lines += ["Signal: 11", f"  [WS_FLOW] inside a continuation {i}", "[0] 0x7f00 in frame"]
        out.append("\n".join(lines) + "\n")
    return "".join(out).encode()


def select(data: bytes, tags: tuple[str, ...], greps: list[str], prefilter: bool, block: int) -> list[str]:
    patterns = [parse_grep(g) for g in greps]
    pipeline = Pipeline(RecordFilter(tags=tags), DateAssigner(anchor=None), GrepFilter(patterns) if patterns else None)
    parser = RecordParser("x")
    prefilters = block_prefilters(pipeline.record_filter, patterns, False) if prefilter else []
    if prefilter:
        assert prefilters, "this case should take the fast path"
    fh = io.BytesIO(data)
    hits = list(scan(fh, parser, pipeline.process, pipeline.assigner.observe, prefilters, 0, len(data), block))
    hits += pipeline.process(parser.flush())
    return [h.record.text() for h in hits]


CASES = [
    (("WS_REASSEMBL",), []),
    (("WS_", "LWS_"), []),
    ((), ["/bind|handshake/i"]),
    ((), ["/^Signal/m", r"/id=3\b/"]),
    ((), ["/failed.*\\n.*Signal/"]),
    ((), ["/0x7f00 in/F"]),
    ((), [r"/\[(WARN|ERROR)\s*\] \[tid/"]),
    ((), ["/cb\\(\\):\\s+\\[WS_FLOW/s"]),
    ((), ["/BIND FAILED|Handshake/i", "/signal: 1{2}/i"]),
    ((), ["/(?:n=1|n=2)+0/", "/0x7f0+ in/"]),
    ((), ["/[[:xdigit:]]{4} in frame/"]),
]


@pytest.mark.parametrize(
    "rfilter",
    [
        RecordFilter(min_level="INFO"),
        RecordFilter(min_level="WARN"),
        RecordFilter(min_level="ERROR"),
        RecordFilter(clients=frozenset({"3"})),
        RecordFilter(clients=frozenset({"1", "4"}), min_level="WARN"),
    ],
)
def test_level_and_client_prefilters_equal_full_parse(rfilter: RecordFilter) -> None:
    data = make_log()
    lines = data.decode().split("\n")
    for i in range(0, len(lines), 50):  # the other spellings of a client id
        lines[i] += f" Client #{i % 5} joined, client_id={i % 7}, CLIENT {i % 3}"
    data = "\n".join(lines).encode()
    (prefilter,) = block_prefilters(rfilter, [], False)
    results = []
    for pre in ([], [prefilter]):
        pipeline = Pipeline(rfilter, DateAssigner(anchor=None))
        parser = RecordParser("x")
        hits = list(scan(io.BytesIO(data), parser, pipeline.process, pipeline.assigner.observe, pre, 0, None, 999))
        hits += pipeline.process(parser.flush())
        results.append([h.record.text() for h in hits])
    assert results[0] and results[0] == results[1]


@pytest.mark.parametrize(
    ("pattern", "literals"),
    [
        ("handshake failed|reassembly timeout|IPv6 bind", ["handshake failed", "reassembly timeout", "IPv6 bind"]),
        ("^Signal", ["Signal"]),
        ("(abc)?def", ["def"]),
        ("a|bc", None),
        ("x+", None),
        ("[[:alpha:]]x", None),
        ("\\p{L}+ bind", None),
    ],
)
def test_required_literals(pattern: str, literals: list[str] | None) -> None:
    assert required_literals(pattern) == literals


@pytest.mark.parametrize(("tags", "greps"), CASES)
@pytest.mark.parametrize("block", [512, 1 << 20])
def test_prefilter_equals_full_parse(tags: tuple[str, ...], greps: list[str], block: int) -> None:
    data = make_log()
    full = select(data, tags, greps, prefilter=False, block=1 << 20)
    fast = select(data, tags, greps, prefilter=True, block=block)
    assert full, "the case selects something"
    assert fast == full


def test_unsafe_patterns_skip_the_prefilter() -> None:
    for spec in ["/x/I", "/x/A2", "/(?<=a)b/", r"/\Ax/"]:
        assert block_prefilters(RecordFilter(), [parse_grep(spec)], False) == []
    assert block_prefilters(RecordFilter(), [parse_grep("/x/")], True) == []  # NDJSON: rendered text differs


def test_prefilter_exact_with_colour_codes_nul_holes_and_unicode_folding() -> None:
    base = make_log(1500, seed=11).decode()
    lines = base.split("\n")
    for i in range(0, len(lines), 97):  # a console copy: colour around the header and inside words
        lines[i] = lines[i].replace("] [", "]\x1b[0m \x1b[36m[", 1).replace("bind", "bi\x1b[1mnd")
    for i in range(5, len(lines), 211):  # Kelvin sign and long s fold to k and s when caseless
        lines[i] += " HANDSHA\u212ae ſignal"
    coloured = "\n".join(lines).encode()
    holed = coloured[:20000] + b"\x00" * 3000 + coloured[20000:]
    for data in (coloured, holed, "\n".join(lines[200:]).replace("\x1b", "").encode()):
        for greps in (["/bind failed/"], ["/handshake|SIGNAL/i"]):
            full = select(data, (), greps, prefilter=False, block=1 << 20)
            for block in (700, 1 << 20):
                assert select(data, (), greps, prefilter=True, block=block) == full
            assert full


def test_last_n_without_filters_reads_only_the_tail(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json
    import os
    from datetime import datetime

    from click.testing import CliRunner

    from asciichat_diag.logs.cli import logs
    from asciichat_diag.logs.parse import parse_text
    from asciichat_diag.logs.reader import tail_offset

    data = make_log(4000, seed=3)
    path = tmp_path / "big.log"
    path.write_bytes(data)
    stamp = datetime(2026, 5, 1, 23, 0).timestamp()
    os.utime(path, (stamp, stamp))
    with path.open("rb") as fh:
        assert tail_offset(fh, len(data), 5) > 0  # the shortcut is really taken
    want = [r.text() for r in parse_text(data.decode())[-5:]]
    out = CliRunner().invoke(logs, [str(path), "-n", "5", "--color", "never", "--no-rate"]).output
    assert out == "\n".join(want) + "\n"
    tail = [
        json.loads(x)["datetime"]
        for x in CliRunner().invoke(logs, [str(path), "-n", "5", "--json"]).output.split("\n")
        if x
    ]
    full = CliRunner().invoke(logs, [str(path), "-n", "5", "--json", "--level", "dev"]).output.splitlines()
    assert tail == [json.loads(x)["datetime"] for x in full]  # the same dates as a full read


LINE_KINDS = st.sampled_from(
    [
        "[10:00:00.000001] [INFO ] [WS_FLOW] queue ok bind",
        "[10:00:00.000002] [DEBUG] [tid:1] lib/a.c:1@f(): ✅ [WS_REASSEMBLE] Handshake done",
        "[10:00:00.000003] [WARN ] plain release line with HANDSHAKE",
        "  continuation with [WS_FLOW] and bind",
        "Signal: 11",
        "[10:00:0x.000000] [INFO ] pseudo header",
        "[10:00:00.000004][0m broken header [WS_FLOW]",
        '{"header":{"timestamp":"10:00:00.000005","level":"INFO"},"body":{"message":"[WS_FLOW] json bind"}}',
        '{"header":{"timestamp":"10:00:00.000008","level":"ERROR"},"body":{"message":"json error"}}',
        "{not json [WS_REASSEMBLY] bind",
        "",
        "\x1b[31m[10:00:00.000006] [ERROR]\x1b[0m coloured handshake",
        "\x00\x00[10:00:00.000007] [INFO ] after a hole [WS_FLOW]",
    ]
)


@settings(max_examples=40, deadline=None)
@given(
    lines=st.lists(LINE_KINDS, min_size=1, max_size=60),
    block=st.integers(16, 400),
    case=st.sampled_from(
        [(("WS_F",), []), (("WS_REASSEMBL",), []), ((), ["/bind/"]), ((), ["/handshake/i"]), ((), [r"/\[INFO/"])]
    ),
)
def test_prefilter_equals_full_parse_on_random_logs(lines: list[str], block: int, case: tuple) -> None:
    data = ("\n".join(lines) + "\n").encode()
    tags, greps = case
    for level in ("INFO", "ERROR"):
        results = []
        for pre in ([], block_prefilters(RecordFilter(min_level=level), [], False)):
            pipeline = Pipeline(RecordFilter(min_level=level), DateAssigner(anchor=None))
            parser = RecordParser("x")
            hits = list(
                scan(io.BytesIO(data), parser, pipeline.process, pipeline.assigner.observe, pre, 0, None, block)
            )
            hits += pipeline.process(parser.flush())
            results.append([h.record.text() for h in hits])
        assert results[0] == results[1]
    full = select(data, tags, greps, prefilter=False, block=1 << 20)
    assert select(data, tags, greps, prefilter=True, block=block) == full
    assert select(data, tags, greps, prefilter=False, block=block) == full
