"""A real ascii-chat (C, debug build) server log captured in this project's interop runs.

data/c-server-ws.log is an excerpt of the console copy of `ascii-chat server` serving a
WebSocket client, including the NUL hole that a truncate-while-writing left in the real file.
Expected figures are computed here independently of the parser, with plain byte regexes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from click.testing import CliRunner

from asciichat_diag.logs.cli import logs

DATA = Path(__file__).with_name("data") / "c-server-ws.log"
HEADER = re.compile(rb"^\[\d\d:\d\d:\d\d\.\d{6}\] \[(?:DEV  |DEBUG|INFO |WARN |ERROR|FATAL)\] ", re.M)


def run(*args: str) -> str:
    result = CliRunner().invoke(logs, [str(DATA), *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_plain_output_reproduces_the_file_without_the_hole() -> None:
    raw = DATA.read_bytes()
    assert b"\x00" * 4096 in raw
    assert run("--color", "never", "--no-rate").encode() == raw.replace(b"\x00", b"")


def test_every_header_is_one_record_and_continuations_stay() -> None:
    raw = DATA.read_bytes().replace(b"\x00", b"")
    records = [json.loads(line) for line in run("--json").splitlines()]
    assert len(records) == len(HEADER.findall(raw))
    assert all(r["format"] == "text" for r in records)
    # every indented line of the file ("  Acquired: ...", "  Lock type: ...") sits inside a record
    indented = len(re.findall(rb"^  \S", raw, re.M))
    assert indented > 10
    assert sum(r["message"].count("\n  ") for r in records) == indented
    held = [r for r in records if r["func"] == "check_long_held_locks"]
    assert held and all("\n  Acquired: " in r["message"] for r in held)
    assert all(r["file"] and r["line"] and r["func"] and r["tid"] for r in records)


def test_tag_counts_match_a_byte_regex() -> None:
    raw = DATA.read_bytes().replace(b"\x00", b"")
    for tag in (b"WS_REASSEMBLE", b"WS_FRAG", b"WS_RECEIVE"):
        exact = re.compile(rb"^\[[^\]]+\] \[[A-Z ]{5}\] \[tid:\d+\] \S+: (?:\S+ )?\[" + tag + rb"\]", re.M)
        records = [json.loads(line) for line in run("--tag", tag.decode(), "--json").splitlines()]
        prefixed = {r["tags"][0] for r in records}
        assert prefixed >= {tag.decode()}
        assert sum(1 for r in records if r["tags"][0] == tag.decode()) == len(exact.findall(raw)) > 0


def test_summary_runs_on_real_data() -> None:
    summary = json.loads(run("--summary", "--json"))
    tags = {t["tag"]: t for t in summary["tags"]}
    assert tags["WS_REASSEMBLE"]["count"] > 0 and "WS_RECEIVE" in tags
    assert summary["records_matched"] == summary["records_seen"]
