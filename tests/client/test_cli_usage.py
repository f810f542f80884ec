"""Bad usage of `asciichat-client`: one clear line, exit 2, no traceback, nothing on stdout."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["127.0.0.1:1", "--file", "/nonexistent/picture.png"], "cannot read image"),
        (["127.0.0.1:1", "--key", "/nonexistent/key"], "cannot read key file"),
        (["127.0.0.1:1", "--palette", "custom"], "needs --palette-chars"),
        (["127.0.0.1:1", "--no-encrypt", "--password", "abcdefghij"], "cannot be combined"),
        (["127.0.0.1:1", "--file", "x.ppm", "--test-pattern"], "choose one of --file and --test-pattern"),
        (["127.0.0.1:1", "--server-key", "0011"], "server key"),
        (["127.0.0.1:1", "-x", "0"], "-x"),
        (["127.0.0.1:1", "--fps", "500"], "--fps"),
        (["127.0.0.1:1", "--log-level", "loud"], "unknown log level"),
        (["ftp://127.0.0.1:1"], "unsupported scheme"),
    ],
)
def test_usage_errors(run_client, tmp_path, args: list[str], expected: str) -> None:
    result = run_client(*args, timeout=20)
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_garbage_key_file(run_client, tmp_path) -> None:
    bad = tmp_path / "bad.key"
    bad.write_text("not a key\n")
    result = run_client("127.0.0.1:1", "--key", str(bad), timeout=20)
    assert result.returncode == 2 and "unrecognised key file" in result.stderr
