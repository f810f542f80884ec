"""--source: declared log_*_every intervals read from a source tree, unit mismatches flagged."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from asciichat_diag.logs.cli import logs
from asciichat_diag.logs.source import SourceIndex

FPS_C = """\
#include <ascii-chat/util/time.h>

static void log_lag_event(const char *tracker_name, double late_ms) {
  // Rate limit to once per second to avoid log spam
  log_warn_every(NS_PER_MS_INT, "[%s] LAG: late by %.1fms (a, b), \\"quoted, comma\\"", tracker_name,
                 late_ms);
}

void queue_report(int free_slots) {
  log_every(DEBUG, 4500 * US_PER_MS_INT, "[WS_FLOW] Queue: free=%d", free_slots);
  log_info_every(LOG_RATE_SLOW, "slow");
  log_warn_every(10 * NS_PER_SEC_INT, "Attempting to release lock when no locks held!");
}
"""
WS_PY = """\
FLOW_LOG_EVERY_S = 10.0


def send(log, n):
    log_every(
        log,
        logging.DEBUG,
        FLOW_LOG_EVERY_S,
        "[WS_FLOW] queue=%d",
        n,
    )
"""


def make_tree(root: Path) -> Path:
    (root / "lib" / "util").mkdir(parents=True)
    (root / "lib" / "util" / "fps.c").write_text(FPS_C)
    (root / "lib" / "other").mkdir()
    (root / "lib" / "other" / "fps.c").write_text("int unrelated(void) { return 0; }\n")
    (root / "asciichat_server" / "transport").mkdir(parents=True)
    (root / "asciichat_server" / "transport" / "ws.py").write_text(WS_PY)
    return root


def test_lookup_spans_multi_line_calls_and_evaluates(tmp_path: Path) -> None:
    index = SourceIndex([str(make_tree(tmp_path))])
    lag = index.lookup("fps.c", 6)  # clang reports the last line of a two-line call
    assert lag is not None and lag.line == 5 and lag.expression == "NS_PER_MS_INT" and lag.seconds == 1.0
    assert lag.warning and "unit mismatch" in lag.warning
    flow = index.lookup("lib/util/fps.c", 10)
    assert flow is not None and flow.seconds == 4.5 and flow.warning is None
    assert index.lookup("fps.c", 11).seconds == 10.0  # type: ignore[union-attr]
    release = index.lookup("fps.c", 12)
    assert release is not None and release.seconds == 10000.0 and "meant 10 s" in (release.warning or "")
    assert index.lookup("fps.c", 2) is None
    py = index.lookup("asciichat_server/transport/ws.py", 7)
    assert py is not None and py.seconds == 10.0 and py.expression == "FLOW_LOG_EVERY_S"


def test_summary_shows_source_interval_and_warnings(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "src")
    log = tmp_path / "c.log"
    lines = []
    for i in range(6):  # the LAG site logs exactly once per second: at its (mis-spelled) interval
        lines.append(f"[10:00:{i:02d}.000100] [WARN ] [tid:1] fps.c:6@log_lag_event(): [SERVER VIDEO] LAG: late {i}")
    for i in range(4):  # this site logs faster than it declares: not rate limited as written
        lines.append(f"[10:00:{10 + i:02d}.000000] [DEBUG] [tid:1] fps.c:10@queue_report(): [WS_FLOW] Queue: free={i}")
    log.write_text("\n".join(sorted(lines)) + "\n")
    result = CliRunner().invoke(logs, [str(log), "--summary", "--json", "--source", str(tree)])
    assert result.exit_code == 0, result.output
    sites = {s["key"]: s for s in json.loads(result.output)["sites"]}
    lag = sites["fps.c:6"]
    assert lag["source_interval_s"] == 1.0 and lag["source_expression"] == "NS_PER_MS_INT"
    assert "unit mismatch" in lag["source_warning"] and lag["source_location"].endswith("lib/util/fps.c:5")
    assert lag["possibly_suppressed"] == 5
    flow = sites["fps.c:10"]
    assert flow["source_interval_s"] == 4.5 and "below the declared 4.5s" in flow["source_warning"]
    text = CliRunner().invoke(logs, [str(log), "--summary", "--color", "never", "--source", str(tree)]).output
    assert "1s (source: NS_PER_MS_INT) ⚠" in text and "unit mismatch" in text
