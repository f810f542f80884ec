"""Dates for dateless logs: mtime anchor, midnight rollover, --since/--until across days."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from asciichat_diag.logs.cli import logs
from asciichat_diag.logs.dates import DateAssigner, parse_time_bound
from asciichat_diag.logs.parse import parse_text


def write(path: Path, times: list[str], mtime: datetime) -> None:
    path.write_text("".join(f"[{t}.000000] [INFO ] [WS_FLOW] at {t}\n" for t in times))
    os.utime(path, (mtime.timestamp(), mtime.timestamp()))


def run_json(*args: str) -> list[dict]:
    result = CliRunner().invoke(logs, [*args, "--json"])
    assert result.exit_code in (0, 1), result.output
    return [json.loads(line) for line in result.output.splitlines()]


def test_midnight_rollover_dated_from_mtime(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    write(log, ["23:59:58", "23:59:59", "00:00:01", "00:00:02"], datetime(2026, 3, 2, 0, 10))
    dts = [r["datetime"] for r in run_json(str(log))]
    assert dts == ["2026-03-01T23:59:58", "2026-03-01T23:59:59", "2026-03-02T00:00:01", "2026-03-02T00:00:02"]


def test_several_days_count_back_from_mtime(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    write(log, ["21:00:00", "08:00:00", "20:00:00", "07:00:00", "19:30:00", "06:00:00"], datetime(2026, 3, 5, 6, 30))
    days = [r["datetime"][:10] for r in run_json(str(log))]
    assert days == ["2026-03-02", "2026-03-03", "2026-03-03", "2026-03-04", "2026-03-04", "2026-03-05"]


def test_small_backward_jitter_is_not_a_new_day(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    write(log, ["10:00:05", "10:00:04", "09:00:00"], datetime(2026, 3, 5, 11, 0))
    assert {r["datetime"][:10] for r in run_json(str(log))} == {"2026-03-05"}


def test_since_until_time_of_day_across_midnight(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    write(log, ["23:00:00", "23:30:00", "00:10:00", "00:20:00", "01:00:00"], datetime(2026, 3, 2, 1, 0, 5))
    # 23:15 means the latest 23:15 before the log's end: yesterday evening, so midnight is crossed
    since = [r["time"][:8] for r in run_json(str(log), "--since", "23:15")]
    assert since == ["23:30:00", "00:10:00", "00:20:00", "01:00:00"]
    window = [r["time"][:8] for r in run_json(str(log), "--since", "23:15", "--until", "00:15")]
    assert window == ["23:30:00", "00:10:00"]
    absolute = [r["time"][:8] for r in run_json(str(log), "--since", "2026-03-02 00:15:00")]
    assert absolute == ["00:20:00", "01:00:00"]
    result = CliRunner().invoke(logs, [str(log), "--since", "25:00"])
    assert result.exit_code == 2 and "time" in result.output


def test_big_file_uses_sampled_prescan(tmp_path: Path) -> None:
    log = tmp_path / "big.log"
    line = "[{}.000000] [DEBUG] [tid:1] lib/a.c:1@f(): [WS_TIMING] " + "x" * 100 + "\n"
    with log.open("w") as fh:
        for i in range(30000):  # ~4.5 MB, 23:00 -> 01:00 with one rollover in the middle
            s = (23 * 3600 + i * 240 // 1000) % 86400
            fh.write(line.format(f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}"))
    mtime = datetime(2026, 7, 1, 1, 0, 30)
    os.utime(log, (mtime.timestamp(), mtime.timestamp()))
    result = CliRunner().invoke(logs, [str(log), "--json", "-n", "1"])
    (last,) = [json.loads(x) for x in result.output.splitlines()]
    assert last["datetime"].startswith("2026-07-01T00:59")
    result = CliRunner().invoke(logs, [str(log), "--json", "--tag", "WS_TIM", "-n", "1"])  # fast path too
    assert json.loads(result.output)["datetime"].startswith("2026-07-01T00:59")


def test_explicit_date_in_ndjson_wins() -> None:
    (rec,) = parse_text(
        '{"header":{"timestamp":"12:00:00.000000","date":"2025-12-31","level":"INFO"},"body":{"message":"x"}}\n'
    )
    DateAssigner(anchor=datetime(2026, 1, 1, 0, 0)).assign(rec)
    assert rec.dt == datetime(2025, 12, 31, 12, 0)


def test_restart_anchors_a_new_run_at_now() -> None:
    assigner = DateAssigner(anchor=datetime(2026, 1, 1, 23, 59, 59))
    a, b = parse_text("[23:59:00.000000] [INFO ] a\n[00:00:10.000000] [INFO ] b\n")
    assigner.assign(a)
    assigner.restart(datetime(2026, 1, 5, 0, 1))
    assigner.assign(b)
    assert a.dt == datetime(2026, 1, 1, 23, 59) and b.dt == datetime(2026, 1, 5, 0, 0, 10)


@pytest.mark.parametrize("text", ["24:00", "12:60", "noon", "2026-13-01 10:00"])
def test_bad_bounds(text: str) -> None:
    with pytest.raises(ValueError):
        parse_time_bound(text)


def test_since_on_ndjson_uses_the_dates_in_the_log(tmp_path: Path) -> None:
    log = tmp_path / "server.json"
    rows = [("2026-01-09", "23:50:00"), ("2026-01-10", "00:05:00"), ("2026-01-10", "00:20:00")]
    log.write_text(
        "".join(
            f'{{"header":{{"timestamp":"{t}.000000","date":"{d}","level":"INFO"}},"body":{{"message":"at {t}"}}}}\n'
            for d, t in rows
        )
    )
    later = datetime(2026, 6, 1, 12, 0).timestamp()  # copied months later: mtime says nothing
    os.utime(log, (later, later))
    assert [r["time"][:8] for r in run_json(str(log), "--since", "23:55")] == ["00:05:00", "00:20:00"]
    assert [r["datetime"][:10] for r in run_json(str(log))] == ["2026-01-09", "2026-01-10", "2026-01-10"]
