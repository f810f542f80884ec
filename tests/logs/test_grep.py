"""--grep: ascii-chat's pattern language (lib/log/grep.c), flag by flag, through the real CLI too."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from asciichat_diag.logs.cli import logs
from asciichat_diag.logs.grep import GrepFilter, GrepSyntaxError, parse_grep
from asciichat_diag.logs.parse import parse_text

LOG = """\
[14:00:00.000000] [INFO ] [tid:1] lib/network/tcp/server.c:120@bind_listeners(): Bound TCP on 127.0.0.1:27224
[14:00:01.000000] [WARN ] [tid:1] lib/network/tcp/server.c:131@bind_listeners(): bind failed: IPv4 address in use
[14:00:02.000000] [DEBUG] [tid:1] lib/network/websocket/server.c:597@cb(): [WS_TIMING] callback_enter_ns captured: 1
[14:00:03.000000] [ERROR] [tid:1] lib/crypto/handshake.c:77@hs(): Handshake failed
Signal: 11
  at frame 2
[14:00:04.000000] [INFO ] École ouverte: Straße
[14:00:05.000000] [DEBUG] [tid:1] lib/network/websocket/server.c:597@cb(): [WS_TIMING] callback_enter_ns captured: 2
[14:00:06.000000] [INFO ] api/v1/users requested (a+b)*c
[14:00:07.000000] [FATAL] [tid:1] lib/main.c:1@main(): FATAL ERROR
"""


def select(*specs: str) -> list[str]:
    """First line of each record the filter lets through (matches and context)."""
    grep = GrepFilter([parse_grep(s) for s in specs])
    out = []
    for rec in parse_text(LOG):
        out.extend(hit.record.lines[0][1:9] for hit in grep.feed(rec))
    return out


def test_plain_regex_and_or_of_several_patterns() -> None:
    assert select("bind") == ["14:00:00", "14:00:01"]  # plain form: regex, case-sensitive
    assert select("/bind/", "/FATAL/") == ["14:00:00", "14:00:01", "14:00:07"]


def test_i_flag_caseless_and_the_fix_ideas_example() -> None:
    assert select("/BIND/") == []
    assert select("/bind|TCP|IPv4/ig") == ["14:00:00", "14:00:01"]


def test_match_is_on_the_whole_rendered_line_header_included() -> None:
    assert select(r"/\[WARN/") == ["14:00:01"]
    assert select(r"/^\[14:00:0[67]/") == ["14:00:06", "14:00:07"]


def test_m_flag_anchors_at_continuation_lines() -> None:
    assert select("/^Signal/") == []  # ^ is the start of the record without m
    assert select("/^Signal/m") == ["14:00:03"]


def test_s_flag_lets_dot_cross_lines() -> None:
    assert select("/failed.Signal/") == []
    assert select("/failed.Signal/s") == ["14:00:03"]


def test_x_flag_ignores_whitespace_and_comments() -> None:
    assert select("/Hand shake/") == []
    assert select("/Hand shake  # split on purpose\n/x") == ["14:00:03"]


def test_g_flag_highlights_every_match_else_first_only() -> None:
    rec = parse_text(LOG)[2]
    one = GrepFilter([parse_grep("/_/")]).feed(rec)[0]
    every = GrepFilter([parse_grep("/_/g")]).feed(rec)[0]
    text = rec.text()
    assert len(one.spans) == 1 and len(every.spans) == text.count("_")
    assert all(text[a:b] == "_" for a, b in every.spans)


def test_I_inverts_each_pattern_before_the_or() -> None:
    everything = [f"14:00:0{i}" for i in range(8)]
    assert select("/WS_TIMING/I") == [t for t in everything if t not in ("14:00:02", "14:00:05")]
    # (not WS_TIMING) OR FATAL: WS_TIMING lines still excluded, FATAL still in
    assert select("/WS_TIMING/I", "/FATAL/") == select("/WS_TIMING/I")
    # (not INFO) OR (not WS_TIMING): every line satisfies one side
    assert select(r"/\[INFO/I", "/WS_TIMING/I") == everything


def test_F_fixed_string_and_unicode_caseless() -> None:
    assert select("/(a+b)*c/F") == ["14:00:06"]
    assert select("/école/F") == []
    assert select("/école/Fi") == ["14:00:04"]
    assert select("/STRASSE/i") == []  # simple case folding, like PCRE2 caseless
    assert select("/straße/i") == ["14:00:04"]


def test_context_flags_A_B_C() -> None:
    assert select("/Handshake/A1") == ["14:00:03", "14:00:04"]
    assert select("/Handshake/B2") == ["14:00:01", "14:00:02", "14:00:03"]
    assert select("/Handshake/C1") == ["14:00:02", "14:00:03", "14:00:04"]
    assert select("/Handshake/A") == ["14:00:03", "14:00:04"]  # missing number means 1
    assert select("/Handshake/A0") == ["14:00:03", "14:00:04"]  # so does zero
    # context is never printed twice; a match inside after-context restarts it
    assert select("/WS_TIMING/C1") == ["14:00:01", "14:00:02", "14:00:03", "14:00:04", "14:00:05", "14:00:06"]


def test_pattern_with_largest_context_wins() -> None:
    assert select("/Handshake/", "/Handshake/B1") == ["14:00:02", "14:00:03"]


def test_delimiter_quirks_match_ascii_chat() -> None:
    # /…/ form: the first "/" closes the pattern; F makes the rest of the "flags" harmless
    quirk = parse_grep("/api/v1/users/F")
    assert quirk.pattern == "api" and quirk.fixed and quirk.notes
    # slash-less form: the last "/" delimits, so a path becomes pattern + bogus flags
    with pytest.raises(GrepSyntaxError, match='trailing "/"'):
        parse_grep("lib/network/websocket")
    assert parse_grep("lib/network/websocket/").pattern == "lib/network/websocket"
    assert select("lib/network/websocket/") == ["14:00:02", "14:00:05"]
    assert parse_grep("search/i").ignore_case


@pytest.mark.parametrize("spec", ["", "/", "/a", "//", "//i", "/x/q", "/x/iZ", "a/b"])
def test_rejected_like_ascii_chat(spec: str) -> None:
    with pytest.raises(GrepSyntaxError):
        parse_grep(spec)


def test_unknown_flags_ignored_with_F() -> None:
    assert parse_grep("/x/FQZ").fixed


def test_pcre_literal_quote_is_supported() -> None:
    assert select(r"/\Q(a+b)*c\E/") == ["14:00:06"]


def test_cli_bad_pattern_is_one_line_exit_2(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_text(LOG)
    result = CliRunner().invoke(logs, [str(log), "--grep", "lib/network/websocket"])
    assert result.exit_code == 2
    assert "unknown flag" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(logs, [str(log), "--grep", "/(unclosed/"])
    assert result.exit_code == 2 and "bad regular expression" in result.output


def test_cli_grep_on_ndjson_uses_rendered_text_and_dev_is_unknown(tmp_path: Path) -> None:
    log = tmp_path / "a.json"
    log.write_text(
        '{"header":{"timestamp":"14:00:00.000000","level":"UNKNOWN","tid":5,"file":"lib/a.c","line":3,"func":"f"},'
        '"body":{"message":"[WS_FLOW] Queue: free=1/64"}}\n'
        '{"header":{"timestamp":"14:00:01.000000","level":"INFO"},"body":{"message":"plain release"}}\n'
    )
    out = subprocess.run(
        [sys.executable, "-m", "asciichat_diag.cli", "logs", str(log), "--grep", r"/^\[14:00:00\.000000\] \[DEV /"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "[14:00:00.000000] [DEV  ] [tid:5] lib/a.c:3@f(): [WS_FLOW] Queue: free=1/64",
    ]
    result = CliRunner().invoke(logs, [str(log), "--grep", "/nothing matches this/", "--color", "never"])
    assert result.exit_code == 1 and result.output == ""
