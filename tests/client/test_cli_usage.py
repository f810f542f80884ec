"""Bad usage of `asciichat-client`: one clear line, exit 2, no traceback, nothing on stdout.

These fail before any network I/O, so they run the click command in-process (fast) instead of a subprocess.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from asciichat_server.client.cli import client_command


def _invoke(*args: str):
    return CliRunner().invoke(client_command, list(args), prog_name="asciichat-client")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["127.0.0.1:1", "--file", "/nonexistent/picture.png"], "cannot read image"),
        (["127.0.0.1:1", "--key", "/nonexistent/key"], "cannot read key file"),
        (["127.0.0.1:1", "--palette", "custom"], "needs --palette-chars"),
        (["127.0.0.1:1", "--no-encrypt", "--password", "abcdefghij"], "cannot be combined"),
        (["127.0.0.1:1", "--file", "x.ppm", "--test-pattern"], "choose one of --file and --test-pattern"),
        (["127.0.0.1:1", "--server-key", "0011"], "server key"),
        (["127.0.0.1:1", "--server-key", "ssh-ed25519 AAAA"], "server key"),
        (["127.0.0.1:1", "--password", "short"], "8-256"),
        (["127.0.0.1:1", "-x", "0"], "-x"),
        (["127.0.0.1:1", "--fps", "500"], "--fps"),
        (["127.0.0.1:1", "--log-level", "loud"], "unknown log level"),
        (["127.0.0.1:notaport"], "invalid port"),
        (["ftp://127.0.0.1:1"], "unsupported scheme"),
    ],
)
def test_usage_errors(args: list[str], expected: str) -> None:
    result = _invoke(*args)
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert expected in result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_garbage_key_file(tmp_path) -> None:
    bad = tmp_path / "bad.key"
    bad.write_text("not a key\n")
    result = _invoke("127.0.0.1:1", "--key", str(bad))
    assert result.exit_code == 2 and "unrecognised key file" in result.output
