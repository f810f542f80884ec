"""--summary against a writer process with known rates, counts and client lifecycles."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from asciichat_diag.logs.cli import logs

WRITER = Path(__file__).with_name("writer.py")
ROOT = Path(__file__).resolve().parents[2]
C_FLOW = "lib/network/websocket/server.c:698"
SERVER_FLOW = "asciichat_server/transport/ws.py:405"


@pytest.fixture(scope="module")
def rates_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    tmp = tmp_path_factory.mktemp("rates")
    log, expected = tmp / "rates.log", tmp / "expected.json"
    subprocess.run([sys.executable, str(WRITER), "rates", str(log), str(expected), "2.0"], check=True, timeout=60)
    return log, json.loads(expected.read_text())


def run(*args: str) -> str:
    result = CliRunner().invoke(logs, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def summary(*args: str) -> dict:
    return json.loads(run(*args, "--summary", "--json"))


def test_counts_per_site_and_tag_match_the_writer(rates_run: tuple[Path, dict]) -> None:
    log, known = rates_run
    s = summary(str(log))
    sites = {x["key"]: x for x in s["sites"]}
    assert sites[C_FLOW]["count"] == known["counts"][C_FLOW] == 20  # 2 s at one per 0.1 s
    assert sites[SERVER_FLOW]["count"] == known["counts"][SERVER_FLOW] == 10
    reasm = next(x for x in s["sites"] if x["tag"] == "WS_REASSEMBLE")
    assert reasm["count"] == known["counts"]["reassemble"] == 40
    tags = {t["tag"]: t for t in s["tags"]}
    assert tags["WS_FLOW"]["count"] == 30 and tags["WS_FLOW"]["sites"] == 2
    assert tags["WS_CONNECT"]["count"] == known["counts"]["connect"] == 3
    assert tags["WS_DISCONNECT"]["count"] == known["counts"]["disconnect"] == 3
    assert s["records_matched"] == s["records_seen"] == len(known["expected"])
    assert s["lines_read"] == len(log.read_text().splitlines()) and s["bytes_read"] == log.stat().st_size
    fast = summary(str(log), "--tag", "WS_REASSEMBLE")  # the fast path parses candidates only...
    assert fast["records_matched"] == fast["records_seen"] == 40
    assert fast["lines_read"] == s["lines_read"]  # ...but still reads every line
    assert reasm["rate_per_s"] == 20.0 and reasm["min_gap_s"] == reasm["median_gap_s"] == 0.05
    assert reasm["first"] == reasm["first"][:11] + "09:00:00" and reasm["last"].endswith("09:00:01.950000")
    assert reasm["guessed_interval_s"] is None and reasm["possibly_suppressed"] == 0  # 50 ms is no known rate


def test_rate_limited_sites_are_flagged(rates_run: tuple[Path, dict]) -> None:
    log, known = rates_run
    sites = {x["key"]: x for x in summary(str(log))["sites"]}
    c_flow = sites[C_FLOW]
    # C-style log_every(0.1 s): nothing in the line, the gaps give it away
    assert c_flow["declared_interval_s"] is None and c_flow["guessed_interval_s"] == 0.1
    assert c_flow["min_gap_s"] == c_flow["median_gap_s"] == 0.1
    assert c_flow["possibly_suppressed"] == 19  # one per gap: a lower bound...
    assert known["calls"][C_FLOW] - known["counts"][C_FLOW] == 180  # ...of the 9 per gap really dropped
    # server-style: the interval and the count are in the line
    server = sites[SERVER_FLOW]
    assert server["declared_interval_s"] == 0.2 and server["guessed_interval_s"] is None
    assert server["reported_suppressed"] == known["reported_suppressed"][SERVER_FLOW] == 9 * 19
    assert server["possibly_suppressed"] == 9


def test_ws_lifecycle_timeline(rates_run: tuple[Path, dict]) -> None:
    log, _ = rates_run
    sessions = summary(str(log))["ws_sessions"]
    assert [x["peer"] for x in sessions] == ["127.0.0.1:41001", "127.0.0.1:41002", "127.0.0.1:41003"]
    assert [x["client_id"] for x in sessions] == ["1", "2", "3"]
    assert all(x["state"] == "closed" and x["reason"] == "peer closed (1000)" for x in sessions)
    assert [x["duration_s"] for x in sessions] == [0.1, 0.2, 0.3]
    assert [x["connected"][11:] for x in sessions] == ["09:00:00", "09:00:00.250000", "09:00:00.500000"]


def test_filters_apply_before_the_summary(rates_run: tuple[Path, dict]) -> None:
    log, known = rates_run
    s = summary(str(log), "--tag", "WS_FLOW", "--level", "debug")
    assert [x["key"] for x in s["sites"]] == [SERVER_FLOW]  # the C site logs at DEV
    assert s["records_matched"] == known["counts"][SERVER_FLOW]
    only_2 = summary(str(log), "--client", "2")
    assert [x["tag"] for x in only_2["tags"]] == ["WS_DISCONNECT"]  # id=2 only appears there


def test_rich_summary_renders(rates_run: tuple[Path, dict]) -> None:
    log, _ = rates_run
    out = run(str(log), "--summary", "--color", "never")
    assert "≈0.1s (known rate)" in out and "0.2s (declared)" in out
    assert "Client lifecycles" in out and "peer closed (1000)" in out


def test_line_view_marks_gaps_at_a_rate_limit(rates_run: tuple[Path, dict]) -> None:
    log, _ = rates_run
    records = [json.loads(line) for line in run(str(log), "--tag", "WS_FLOW", "--json").splitlines()]
    c_notes = [r["rate_note"] for r in records if r["file"] == C_FLOW.split(":")[0] and "rate_note" in r]
    assert c_notes and all(n["interval_s"] == 0.1 and not n["declared"] for n in c_notes)
    server_notes = [r["rate_note"] for r in records if r["file"] == SERVER_FLOW.split(":")[0] and "rate_note" in r]
    assert server_notes and all(n["declared"] for n in server_notes)
    assert sum(n["reported_suppressed"] or 0 for n in server_notes) > 0


def test_tcp_and_ws_lifecycles_from_our_server_lines(tmp_path: Path) -> None:
    site = "[tid:1] asciichat_server/room.py:296@serve():"
    log = tmp_path / "server.log"
    log.write_text(
        f"[10:00:00.000000] [DEBUG] {site} [TCP_CONNECT] id=1 peer=127.0.0.1:50001 slot=0 clients=1/9\n"
        f"[10:00:00.500000] [DEBUG] {site} [WS_CONNECT] peer=[::1]:50002, path=/, subprotocol=acip, open=1\n"
        f"[10:00:02.250000] [DEBUG] {site} [TCP_DISCONNECT] id=1 peer=127.0.0.1:50001 cleanup=done active=true "
        "reason=peer closed the connection duration=2.25s clients=0/9\n"
        f"[10:00:03.000000] [DEBUG] {site} [WS_DISCONNECT] Client disconnecting (id=2, cleanup=done, active=false, "
        "reason=client sent close (1000), peer=[::1]:50002, duration=2.50s, open=0) [every=1s suppressed=0]\n"
        f"[10:00:04.000000] [DEBUG] {site} [WS_DISCONNECT] Client disconnecting (id=-, cleanup=cancelled, "
        "active=true, reason=server shutdown, peer=[::1]:50009, duration=9.00s, open=0)\n"
        f"[10:00:05.000000] [DEBUG] {site} [WS_CONNECT] peer=[::1]:50010, path=/, subprotocol=acip, open=1 "
        "[every=1s suppressed=4]\n"
    )
    result = CliRunner().invoke(logs, [str(log), "--summary", "--json"])
    summary = json.loads(result.output)
    sessions = summary["ws_sessions"]
    tcp, ws, before_log, still_open = sessions
    assert (tcp["transport"], tcp["client_id"], tcp["reason"], tcp["duration_s"]) == (
        "TCP",
        "1",
        "peer closed the connection",
        2.25,
    )
    assert (ws["transport"], ws["peer"], ws["client_id"], ws["reason"]) == (
        "WS",
        "[::1]:50002",
        "2",
        "client sent close (1000)",
    )
    assert ws["duration_s"] == 2.5 and ws["state"] == "closed"
    assert (
        before_log["state"] == "disconnect-only" and before_log["client_id"] is None and before_log["duration_s"] == 9.0
    )
    assert still_open["state"] == "open" and still_open["disconnected"] is None
    assert summary["suppressed_connect_lines"] == 4
