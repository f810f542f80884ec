"""Colour output: the coloured view is the plain view plus ANSI styling, nothing else."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from asciichat_diag.logs.cli import logs
from asciichat_diag.logs.parse import strip_ansi

DATA = Path(__file__).with_name("data") / "c-server-ws.log"


def run(*args: str) -> str:
    result = CliRunner().invoke(logs, [str(DATA), "--no-rate", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_colour_is_styling_only() -> None:
    for extra in ([], ["--grep", "/ws_|lock/ig"], ["--tag", "WS_", "--date"]):
        plain = run("--color", "never", *extra)
        coloured = run("--color", "always", *extra)
        assert "\x1b[" in coloured
        assert strip_ansi(coloured) == plain


def test_levels_tags_matches_and_clients_are_styled() -> None:
    out = run("--color", "always")
    assert "\x1b[33m[04:59:58.022983] [WARN ]\x1b[0m" in out  # WARN in yellow, time included
    assert "\x1b[32m[05:00:09.831370] [INFO ]\x1b[0m" in out  # INFO in green
    assert "\x1b[1;32m[WS_FRAG]\x1b[0m" in out  # the tag in bold, in its level's colour
    matched = run("--color", "always", "--grep", "/WS_FRAG/g").splitlines()
    assert matched and all("\x1b[1;7;32mWS_FRAG\x1b[0m" in line for line in matched if "INFO" in line)


def test_never_colour_has_no_escape_codes_even_with_grep_highlight() -> None:
    assert "\x1b" not in run("--color", "never", "--grep", "/lock/g")
