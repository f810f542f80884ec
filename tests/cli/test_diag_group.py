"""The diag entry point: version, help, and the error contract shared by every subcommand."""

import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from asciichat_diag import __version__
from asciichat_diag._common import DiagError, handle_errors
from asciichat_diag.cli import main


def test_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_unknown_subcommand_is_usage_error() -> None:
    result = CliRunner().invoke(main, ["no-such-command"])
    assert result.exit_code == 2


@click.command()
@handle_errors
def _fails() -> None:
    raise DiagError("cannot read crash.txt: no such file", exit_code=2)


@click.command()
@handle_errors
def _crashes() -> None:
    raise RuntimeError("boom")


@pytest.mark.parametrize(("command", "code", "text"), [(_fails, 2, "cannot read crash.txt"), (_crashes, 1, "boom")])
def test_errors_are_one_line(command: click.Command, code: int, text: str) -> None:
    main.add_command(command, "tmp-fail")
    try:
        result = CliRunner().invoke(main, ["tmp-fail"])
        debug = CliRunner().invoke(main, ["--debug", "tmp-fail"])
    finally:
        main.commands.pop("tmp-fail")
    assert result.exit_code == code
    assert text in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert debug.exception is not None  # --debug lets the exception through


def test_console_script_runs() -> None:
    out = subprocess.run([sys.executable, "-m", "asciichat_diag.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    assert "Debugging tools for ascii-chat" in out.stdout
