"""Parsing: ascii-chat debug/release lines, NDJSON, asciichat-server's own output, and hostile input."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from click.testing import CliRunner

from asciichat_diag.logs.cli import logs
from asciichat_diag.logs.parse import client_ids, parse_text

ROOT = Path(__file__).resolve().parents[2]


def diag(*args: str, stdin: bytes | None = None, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "asciichat_diag.cli", "logs", *args],
        input=stdin,
        capture_output=True,
        cwd=ROOT,
        timeout=timeout,
    )


def test_debug_and_release_forms_continuations_and_ansi() -> None:
    text = (
        "\x1b[36m[14:03:27.481920]\x1b[0m \x1b[36m[DEBUG]\x1b[0m [tid:140234887431872] "
        "lib/network/websocket/server.c:597@websocket_server_callback(): [WS_TIMING] callback_enter_ns captured: 9\n"
        "[14:03:27.500000] [FATAL] Segmentation fault\n"
        "Signal: 11\n"
        "[0] 0x7f3a1c2b4e10\n"
        "[14:03:28.000000] [INFO] Log tail-rotated (kept 2097152 bytes)\n"
        "[14:03:28.100000] [WARN ] lib/log/mmap.c:40 in mmap_log(): unpadded mmap form\n"
    )
    debug, fatal, marker, mmap = parse_text(text)
    assert debug.level == "DEBUG" and debug.tid == 140234887431872
    assert (debug.file, debug.line, debug.func) == ("lib/network/websocket/server.c", 597, "websocket_server_callback")
    assert debug.tags == ("WS_TIMING",) and debug.seconds == 14 * 3600 + 3 * 60 + 27.48192
    assert "\x1b" not in debug.text()
    assert fatal.file is None and fatal.message == "Segmentation fault\nSignal: 11\n[0] 0x7f3a1c2b4e10"
    assert fatal.lines == ["[14:03:27.500000] [FATAL] Segmentation fault", "Signal: 11", "[0] 0x7f3a1c2b4e10"]
    assert marker.level == "INFO" and marker.message.startswith("Log tail-rotated")
    assert (mmap.file, mmap.line, mmap.func) == ("lib/log/mmap.c", 40, "mmap_log")


def test_tags_after_emoji_and_several_tags() -> None:
    recs = parse_text(
        "[10:00:00.000000] [INFO ] ✅ [WS_REASSEMBLE] COMPLETE\n"
        "[10:00:00.000000] [INFO ] 🔴 [WS_RECEIVE] got 5\n"
        "[10:00:00.000000] [INFO ] ⚠️ [WEBSOCKET_FRAME_COMPLETE] short\n"
        "[10:00:00.000000] [INFO ] [LWS_SERVICE][WS_FLOW] both\n"
        "[10:00:00.000000] [INFO ] no tag here [WS_FLOW] late\n"
        "[10:00:00.000000] [WARN ] [SERVER VIDEO] LAG: frame rendered late\n"
        "[10:00:00.000000] [WARN ] [every=10s suppressed=3] is not a tag\n"
    )
    assert [r.tags for r in recs] == [
        ("WS_REASSEMBLE",),
        ("WS_RECEIVE",),
        ("WEBSOCKET_FRAME_COMPLETE",),
        ("LWS_SERVICE", "WS_FLOW"),
        (),
        ("SERVER VIDEO",),
        (),
    ]


def test_client_ids() -> None:
    assert client_ids("[WS_DISCONNECT] Client disconnecting (id=3, peer=127.0.0.1:5000)") == {"3", "127.0.0.1:5000"}
    assert client_ids("Client 4 joined; client_id=7") == {"4", "7"}
    assert client_ids("client 127.0.0.1 connected, tid=9") == set()


def test_ascii_chat_ndjson() -> None:
    (rec,) = parse_text(
        '{"header":{"timestamp":"14:03:27.481920","level":"UNKNOWN","tid":1,"file":"lib/x.c","line":5,'
        '"func":"f"},"body":{"message":"[WS_FLOW] Queue: free=1/64 (used=63)"}}\n'
    )
    assert rec.fmt == "json" and rec.level == "DEV" and rec.date is None
    assert rec.text() == "[14:03:27.481920] [DEV  ] [tid:1] lib/x.c:5@f(): [WS_FLOW] Queue: free=1/64 (used=63)"


SERVER_SCRIPT = textwrap.dedent(
    """
    import logging, sys, time
    from asciichat_server.log import log_every, setup_logging
    setup_logging("dev", sys.argv[1], log_file=sys.argv[2], stream=open("/dev/null", "w"))
    log = logging.getLogger("asciichat_server.transport.ws")
    log.info("[WS_CONNECT] peer=%s, path=%s, subprotocol=%s, open=%d", "127.0.0.1:50000", "/", "acip", 1)
    def flow(n):  # one call site for every call
        log_every(log, logging.DEBUG, 0.05, "[WS_FLOW] queue=%d bytes buffered for id=%s", n, 1)
    for i in range(30):
        flow(1000 + i)
        time.sleep(0.01)
    time.sleep(0.06)  # one more call after the window: it reports what the loop's tail dropped
    flow(2000)
    log.log(5, "[WS_REASSEMBLY] fragments=%d, elapsed=%.2fs/%ss, size=%d", 2, 1.23, 2, 99)
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("[WS] room.serve failed for %s", "127.0.0.1:50000")
    log.debug("[WS_DISCONNECT] Client disconnecting (id=%s, cleanup=%s, active=%s, reason=%s, peer=%s)",
              1, "done", "false", "peer closed", "127.0.0.1:50000")
    """
)


def _server_log(tmp_path: Path, fmt: str) -> Path:
    out = tmp_path / f"server.{fmt}"
    out.unlink(missing_ok=True)  # the FileHandler appends
    script = tmp_path / "emit.py"
    script.write_text(SERVER_SCRIPT)
    subprocess.run([sys.executable, str(script), fmt, str(out)], check=True, cwd=ROOT, timeout=60)
    return out


def test_lines_written_by_asciichat_server_log(tmp_path: Path) -> None:
    for fmt in ("text", "json"):
        path = _server_log(tmp_path, fmt)
        recs = parse_text(path.read_text())
        assert [r.fmt for r in recs] == [fmt] * len(recs)
        connect = recs[0]
        assert connect.tags == ("WS_CONNECT",) and connect.level == "INFO" and connect.file and connect.line
        flows = [r for r in recs if r.tags == ("WS_FLOW",)]
        assert 3 <= len(flows) < 31
        assert all(r.rate_interval_s == 0.05 for r in flows)
        assert sum(r.suppressed or 0 for r in flows) == 31 - len(flows)  # every call is either written or counted
        assert not any("[every=" in r.message for r in flows) or fmt == "text"
        dev = next(r for r in recs if r.tags == ("WS_REASSEMBLY",))
        assert dev.level == "DEV"
        failed = next(r for r in recs if r.tags == ("WS",))
        assert failed.level == "ERROR" and "Traceback" in failed.message and "ValueError: boom" in failed.message
        assert recs[-1].tags == ("WS_DISCONNECT",)
        if fmt == "json":
            assert all(r.date for r in recs)

    # and the summary sees the server's own suppressed count and the client's lifecycle
    path = _server_log(tmp_path, "json")
    out = diag(str(path), "--summary", "--json")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    flow = next(s for s in summary["sites"] if s["tag"] == "WS_FLOW")
    assert flow["declared_interval_s"] == 0.05 and flow["reported_suppressed"] == 31 - flow["count"]
    (session,) = summary["ws_sessions"]
    assert session["peer"] == "127.0.0.1:50000" and session["client_id"] == "1"
    assert session["reason"] == "peer closed" and session["state"] == "closed" and session["duration_s"] > 0.2


def test_garbage_and_invalid_utf8_do_not_crash(tmp_path: Path) -> None:
    path = tmp_path / "garbage.log"
    with path.open("wb") as fh:
        fh.write(b"\xff\xfe\x00garbage before any header\n")
        fh.write(b"[10:00:00.000000] [INFO ] ok \xc3\x28 bad utf-8 [WS_FLOW]\n")
        fh.write(b"[99:99:99.999999] [INFO ] impossible clock\n")
        fh.write(b'{not json at all\n{"header": 5}\n[10:00:02.000000] [BOGUS] level\n')
        fh.write(bytes(range(256)) * 64 + b"\n")
        fh.write(b"\x00\x00\x00\n\x1b[31m\x1b[\n")
        fh.write(b"[10:00:03.000000] [WARN ] [WS_END] tail without newline")
    for args in (
        [],
        ["--tag", "WS_"],
        ["--grep", "/A{5}/"],
        ["--summary"],
        ["--json"],
        ["--color", "always"],
        ["--date"],
    ):
        result = CliRunner().invoke(logs, [str(path), *args])
        assert result.exit_code in (0, 1), (args, result.output)
        assert result.exception is None or isinstance(result.exception, SystemExit), (args, result.exception)
    result = CliRunner().invoke(logs, [str(path), "--json"])
    records = [json.loads(line) for line in result.output.splitlines()]
    assert records[0]["format"] == "plain"
    assert "ok \ufffd( bad utf-8" in records[1]["message"]
    assert records[-1]["message"] == "[WS_END] tail without newline"


def test_ten_megabyte_line(tmp_path: Path) -> None:
    path = tmp_path / "huge.log"
    with path.open("wb") as fh:
        fh.write(b"[10:00:00.000000] [INFO ] [WS_FLOW] before\n")
        fh.write(b"[10:00:01.000000] [INFO ] [WS_HUGE] " + b"A" * (10 * 1024 * 1024) + b"\n")
        fh.write(b"[10:00:03.000000] [WARN ] [WS_END] after\n")
    out = diag(str(path), "--tag", "WS_H", "--json")
    assert out.returncode == 0, out.stderr
    (record,) = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(record["message"]) == 10 * 1024 * 1024 + len("[WS_HUGE] ")
    for args in (["--summary"], ["--color", "always", "--grep", "/A{5000}/"]):
        result = CliRunner().invoke(logs, [str(path), *args])
        assert (result.exit_code == 0 and result.exception is None) or isinstance(result.exception, SystemExit)
        assert "WS_HUGE" in result.output


def test_stdin_and_missing_file(tmp_path: Path) -> None:
    out = diag("-", "--level", "warn", stdin=b"[10:00:00.000000] [INFO ] a\n[10:00:01.000000] [ERROR] b\n")
    assert out.returncode == 0 and out.stdout == b"[10:00:01.000000] [ERROR] b\n"
    missing = diag(str(tmp_path / "nope.log"))
    assert missing.returncode == 2 and missing.stderr.count(b"\n") == 1 and b"nope.log" in missing.stderr
