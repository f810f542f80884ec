"""Log line format, NDJSON and per-call-site rate limiting, read back from real log files."""

from __future__ import annotations

import io
import json
import logging
import re
import time

import pytest

from asciichat_server.log import DEV, LINE_RE, format_interval, log_every, parse_level, reset_rate_limits, setup_logging

LINE = re.compile(LINE_RE)


@pytest.fixture(autouse=True)
def _clean():
    reset_rate_limits()
    yield
    setup_logging("info", "text", None, stream=io.StringIO())


def test_text_line_matches_contract_format(tmp_path):
    log_file = tmp_path / "server.log"
    setup_logging("dev", "text", log_file, stream=io.StringIO())
    logger = logging.getLogger("asciichat_server.test")
    logger.log(DEV, "dev line")
    logger.debug("debug %d", 1)
    logger.info("[TCP_CONNECT] hello")
    logger.warning("warn")
    logger.error("error")
    logger.critical("fatal")
    lines = log_file.read_text().splitlines()
    assert len(lines) == 6
    levels = []
    for line in lines:
        m = LINE.match(line)
        assert m, line
        levels.append(m["level"])
        assert m["file"] == "tests/server/test_log.py"
        assert m["func"] == "test_text_line_matches_contract_format"
        assert int(m["tid"]) > 0
    assert levels == ["DEV  ", "DEBUG", "INFO ", "WARN ", "ERROR", "FATAL"]
    assert LINE.match(lines[2])["message"] == "[TCP_CONNECT] hello"


def test_level_filtering_and_names():
    assert parse_level("warn") == logging.WARNING
    assert parse_level("FATAL") == logging.CRITICAL
    assert parse_level("0") == DEV
    with pytest.raises(ValueError):
        parse_level("verbose")
    stream = io.StringIO()
    setup_logging("warn", "text", None, stream=stream)
    logging.getLogger("x").info("hidden")
    logging.getLogger("x").warning("shown")
    assert "hidden" not in stream.getvalue()
    assert "shown" in stream.getvalue()


def test_json_records(tmp_path):
    log_file = tmp_path / "server.ndjson"
    setup_logging("debug", "json", log_file, stream=io.StringIO())
    logger = logging.getLogger("asciichat_server.test")
    logger.info("[READY] listening on %s", "127.0.0.1:1")
    for _ in range(3):
        log_every(logger, logging.DEBUG, 10.0, "[WS_FLOW] queue=%d", 4)
    records = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert len(records) == 2
    head = records[0]["header"]
    assert set(head) == {"timestamp", "date", "level", "tid", "file", "line", "func"}
    assert re.fullmatch(r"\d{2}:\d{2}:\d{2}\.\d{6}", head["timestamp"])
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", head["date"])
    assert head["level"] == "INFO"
    assert head["file"] == "tests/server/test_log.py"
    assert records[0]["body"] == {"message": "[READY] listening on 127.0.0.1:1"}
    assert records[1]["body"] == {"message": "[WS_FLOW] queue=4", "rate_interval_s": 10.0, "suppressed": 0}
    assert records[1]["header"]["level"] == "DEBUG"


def test_log_every_counts_suppressed_per_call_site(tmp_path):
    log_file = tmp_path / "rate.log"
    setup_logging("debug", "text", log_file, stream=io.StringIO())
    logger = logging.getLogger("asciichat_server.rate")
    written = []
    for i in range(5):
        written.append(log_every(logger, logging.DEBUG, 0.2, "[WS_REASSEMBLY] n=%d", i))
    # A second call site is independent of the first.
    assert log_every(logger, logging.DEBUG, 0.2, "[WS_FLOW] other site")
    time.sleep(0.25)
    written.append(log_every(logger, logging.DEBUG, 0.2, "[WS_REASSEMBLY] n=%d", 5))
    assert written == [True, False, False, False, False, True]
    lines = log_file.read_text().splitlines()
    messages = [LINE.match(line)["message"] for line in lines]
    assert messages[0] == "[WS_REASSEMBLY] n=0 [every=0.2s suppressed=0]"
    assert messages[1] == "[WS_FLOW] other site [every=0.2s suppressed=0]"
    # The call after the pause is at a different line than the loop, hence its own site.
    assert messages[2] == "[WS_REASSEMBLY] n=5 [every=0.2s suppressed=0]"


def test_log_every_same_site_after_interval(tmp_path):
    log_file = tmp_path / "rate2.log"
    setup_logging("debug", "text", log_file, stream=io.StringIO())
    logger = logging.getLogger("asciichat_server.rate2")
    deadline = time.monotonic() + 0.35
    calls = 0
    while time.monotonic() < deadline:
        log_every(logger, logging.INFO, 0.1, "[WS_FLOW] queue=%d", calls)
        calls += 1
        time.sleep(0.002)
    matches = [LINE.match(line) for line in log_file.read_text().splitlines()]
    assert all(matches)
    suffix = re.compile(r"\[every=0\.1s suppressed=(\d+)\]$")
    counts = [int(suffix.search(m["message"]).group(1)) for m in matches]
    assert 3 <= len(counts) <= 5
    assert counts[0] == 0
    # Every call is either written or counted exactly once.
    pending = calls - len(counts) - sum(counts)
    assert pending >= 0
    assert all(c > 0 for c in counts[1:])


def test_disabled_level_is_not_counted(tmp_path):
    stream = io.StringIO()
    setup_logging("info", "text", None, stream=stream)
    logger = logging.getLogger("asciichat_server.rate3")
    assert not log_every(logger, logging.DEBUG, 10, "debug only")
    assert stream.getvalue() == ""


def test_format_interval():
    assert format_interval(10) == "10"
    assert format_interval(4.5) == "4.5"
    assert format_interval(0.1234) == "0.123"
    assert format_interval(2.0) == "2"


def test_exception_text_is_kept(tmp_path):
    stream = io.StringIO()
    setup_logging("info", "text", None, stream=stream)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("x").exception("failed")
    out = stream.getvalue()
    assert LINE.match(out.splitlines()[0])
    assert "RuntimeError: boom" in out
