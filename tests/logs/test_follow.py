"""`diag logs -f` against a writer process with ascii-chat's file habits, compared line for line."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from asciichat_diag.logs.follow import Follower
from asciichat_diag.logs.model import Separator

WRITER = Path(__file__).with_name("writer.py")
ROOT = Path(__file__).resolve().parents[2]
SEP_PREFIX = "──── "


def diag_logs(args: list[str], out: Path) -> subprocess.Popen[bytes]:
    err = out.with_suffix(".err")
    return subprocess.Popen(
        [sys.executable, "-m", "asciichat_diag.cli", "logs", *args],
        stdout=out.open("wb"),
        stderr=err.open("wb"),
        cwd=ROOT,
    )


def wait_for(path: Path, needle: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and needle in path.read_text(errors="replace"):
            return
        time.sleep(0.05)
    raise AssertionError(f"{needle!r} never appeared in {path}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=15)
    assert proc.returncode == 0


def first_difference(got: list[str], want: list[str]) -> str:
    for i, (a, b) in enumerate(zip(got, want)):
        if a != b:
            return f"line {i}: got {a!r}, want {b!r}"
    return f"lengths differ: got {len(got)}, want {len(want)}"


def test_follow_survives_truncation_hole_partial_line_rotation_and_recreation(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    plain_out, json_out, expected_path = tmp_path / "plain.txt", tmp_path / "lines.ndjson", tmp_path / "expected.json"
    common = ["-f", "-n", "0", "--interval", "0.05", str(log)]
    plain = diag_logs([*common, "--no-rate", "--color", "never"], plain_out)
    as_json = diag_logs([*common, "--json"], json_out)
    for out in (plain_out, json_out):  # both are waiting before the file exists, as tail -F would
        wait_for(out.with_suffix(".err"), "waiting for it")
    sync = tmp_path / "followers-caught-up"
    writer = subprocess.Popen([sys.executable, str(WRITER), "follow", str(log), str(expected_path), "0.4", str(sync)])
    for out in (plain_out, json_out):  # the rotated file must be seen before the writer deletes it
        wait_for(out, "[WS_FRAG] after rotation 4", timeout=60)
    sync.touch()
    assert writer.wait(timeout=90) == 0
    for out in (plain_out, json_out):
        wait_for(out, "[DONE] writer finished")
    time.sleep(0.2)
    stop(plain)
    stop(as_json)

    written = json.loads(expected_path.read_text())
    lines = plain_out.read_text().splitlines()
    records = [line for line in lines if not line.startswith(SEP_PREFIX)]
    assert records == written["expected"], first_difference(records, written["expected"])
    assert len(records) > 20000  # the 3 MiB burst really went through the follower

    kinds = [line[len(SEP_PREFIX) :].split(":", 1)[0] for line in lines if line.startswith(SEP_PREFIX)]
    assert [k for k in kinds if k != "deleted"] == ["new-run", "rotated", "recreated"]

    events = []
    seqs = []
    for raw in json_out.read_text().splitlines():
        obj = json.loads(raw)
        if "event" in obj:
            events.append(obj)
            continue
        m = re.search(r"seq=(\d+)", obj["message"])
        if m:
            seqs.append(int(m.group(1)))
    # every record exactly once, in order: no loss, no duplicates
    assert seqs == list(range(1, seqs[-1] + 1))
    rotated = next(e for e in events if e["event"] == "rotated")
    kept = int(next(e for e in written["events"] if e.startswith("rotated:")).split(":")[1])
    assert rotated["skipped_bytes"] == kept
    assert f"kept {kept} bytes" in rotated["detail"]


def test_follow_starts_with_last_n_records_and_holds_partial_line(tmp_path: Path) -> None:
    log = tmp_path / "client.log"
    head = "".join(
        f"[10:00:0{i}.000000] [INFO ] [tid:1] src/a.c:{i}@f(): [WS_FRAG] record {i}\n  detail {i}\n" for i in range(8)
    )
    log.write_text(head + "[10:00:09.000000] [INFO ] [tid:1] src/a.c:9@f(): [WS_FRAG] par")
    out = tmp_path / "out.txt"
    proc = diag_logs(["-f", "-n", "3", "--interval", "0.05", "--no-rate", "--color", "never", str(log)], out)
    wait_for(out, "detail 7")
    time.sleep(0.3)
    assert "par" not in out.read_text()  # the unfinished line is held back
    with log.open("a") as fh:
        fh.write("tial done\n[10:00:10.000000] [WARN ] after start\n")
    wait_for(out, "after start")
    stop(proc)
    assert out.read_text().splitlines() == [
        "[10:00:05.000000] [INFO ] [tid:1] src/a.c:5@f(): [WS_FRAG] record 5",
        "  detail 5",
        "[10:00:06.000000] [INFO ] [tid:1] src/a.c:6@f(): [WS_FRAG] record 6",
        "  detail 6",
        "[10:00:07.000000] [INFO ] [tid:1] src/a.c:7@f(): [WS_FRAG] record 7",
        "  detail 7",
        "[10:00:09.000000] [INFO ] [tid:1] src/a.c:9@f(): [WS_FRAG] partial done",
        "[10:00:10.000000] [WARN ] after start",
    ]


def test_follow_with_filters_and_tag_applies_to_new_lines(tmp_path: Path) -> None:
    log = tmp_path / "s.log"
    log.write_text("[10:00:00.000000] [INFO ] [WS_FLOW] old\n")
    out = tmp_path / "out.txt"
    proc = diag_logs(["-f", "--tag", "WS_REASSEMBL", "--interval", "0.05", "--color", "never", str(log)], out)
    time.sleep(1.0)  # started and past the backlog
    with log.open("a") as fh:
        fh.write("[10:00:01.000000] [INFO ] ✅ [WS_REASSEMBLE] COMPLETE\n")
        fh.write("[10:00:02.000000] [INFO ] [WS_FLOW] skipped\n")
        fh.write("[10:00:03.000000] [DEBUG] [WS_REASSEMBLY] fragments=2, elapsed=1.23s/2s, size=10\n")
        fh.write("[10:00:04.000000] [INFO ] [END]\n")
    wait_for(out, "WS_REASSEMBLY")
    stop(proc)
    assert out.read_text().splitlines() == [
        "[10:00:01.000000] [INFO ] ✅ [WS_REASSEMBLE] COMPLETE",
        "[10:00:03.000000] [DEBUG] [WS_REASSEMBLY] fragments=2, elapsed=1.23s/2s, size=10",
    ]


# In-process checks of the follower's decisions on real files (deterministic: no timing).


def _drain(f: Follower) -> tuple[str, list[Separator]]:
    text, seps = "", []
    for event in f.poll():
        if isinstance(event, Separator):
            seps.append(event)
        else:
            text += event
    return text, seps


def test_truncate_and_refill_past_old_size_is_a_new_run(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_bytes(b"[10:00:00.000000] [INFO ] first run\n" * 10)
    f = Follower(str(log))
    assert f.open_initial() == log.stat().st_size
    second = b"[10:00:05.000000] [INFO ] second run, longer lines than before\n" * 20
    fd = os.open(log, os.O_RDWR | os.O_TRUNC)  # same inode, as ascii-chat's log_init does
    os.write(fd, second)
    os.close(fd)
    text, seps = _drain(f)
    assert [s.kind for s in seps] == ["new-run"]
    assert text.encode() == second
    f.close()


def test_rotation_replay_is_skipped_and_recreation_is_not(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    body = b"".join(b"[10:00:%02d.000000] [INFO ] line %d\n" % (i % 60, i) for i in range(100))
    log.write_bytes(body)
    f = Follower(str(log))
    f.open_initial()
    kept = body[body.index(b"\n", len(body) - 700) + 1 :]
    tmp = tmp_path / "a.log.tmp"
    tmp.write_bytes(kept + b"[10:01:00.000000] [INFO] Log tail-rotated (kept %d bytes)\nnew\n" % len(kept))
    os.rename(tmp, log)
    text, seps = _drain(f)
    assert [s.kind for s in seps] == ["rotated"] and seps[0].skipped_bytes == len(kept)
    assert text == f"[10:01:00.000000] [INFO] Log tail-rotated (kept {len(kept)} bytes)\nnew\n"
    log.unlink()
    text, seps = _drain(f)
    assert [s.kind for s in seps] == ["deleted"] and text == ""
    # a copy of the tail of what was read (the marker and "new"), then one fresh line
    marker = b"[10:01:00.000000] [INFO] Log tail-rotated (kept %d bytes)\n" % len(kept)
    log.write_bytes(marker + b"new\n" + b"[10:02:00.000000] [INFO ] fresh after copy\n")
    text, seps = _drain(f)
    assert [s.kind for s in seps] == ["rotated"] and seps[0].skipped_bytes == len(marker) + 4
    assert text == "[10:02:00.000000] [INFO ] fresh after copy\n"
    log.unlink()
    _drain(f)
    log.write_bytes(b"[11:00:00.000000] [INFO ] fresh\n")
    text, seps = _drain(f)
    assert [s.kind for s in seps] == ["recreated"] and text == "[11:00:00.000000] [INFO ] fresh\n"
    f.close()


def test_nul_hole_is_dropped(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_bytes(b"[10:00:00.000000] [INFO ] before\n")
    f = Follower(str(log))
    f.open_initial()
    fd = os.open(log, os.O_WRONLY)
    os.pwrite(fd, b"[10:00:01.000000] [INFO ] after hole\n", log.stat().st_size + 8192)
    os.close(fd)
    text, seps = _drain(f)
    assert seps == [] and text == "[10:00:01.000000] [INFO ] after hole\n"
    f.close()


def test_follow_ndjson_of_our_server(tmp_path: Path) -> None:
    log = tmp_path / "server.json"
    rec = (
        '{{"header":{{"timestamp":"10:00:0{i}.000000","date":"2026-02-20","level":"DEBUG","tid":7,'
        '"file":"asciichat_server/transport/ws.py","line":405,"func":"send"}},'
        '"body":{{"message":"[WS_FLOW] queue={i}","rate_interval_s":10.0,"suppressed":{i}}}}}\n'
    )
    log.write_text(rec.format(i=0))
    out = tmp_path / "out.ndjson"
    proc = diag_logs(["-f", "--json", "--interval", "0.05", str(log)], out)
    wait_for(out, "queue=0")
    with log.open("a") as fh:
        fh.write(rec.format(i=1))
        fh.write(rec.format(i=2)[:50])  # half a JSON line: held back
    wait_for(out, "queue=1")
    time.sleep(0.3)
    with log.open("a") as fh:
        fh.write(rec.format(i=2)[50:])
    wait_for(out, "queue=2")
    stop(proc)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["message"] for r in records] == ["[WS_FLOW] queue=0", "[WS_FLOW] queue=1", "[WS_FLOW] queue=2"]
    assert [r["suppressed"] for r in records] == [0, 1, 2]
    assert all(r["datetime"].startswith("2026-02-20T10:00:0") and r["rate_interval_s"] == 10.0 for r in records)


def test_several_files_get_headers(tmp_path: Path) -> None:
    a, b = tmp_path / "a.log", tmp_path / "b.log"
    a.write_text("[10:00:00.000000] [INFO ] from a\n")
    b.write_text("[10:00:01.000000] [INFO ] from b\n")
    out = subprocess.run(
        [sys.executable, "-m", "asciichat_diag.cli", "logs", str(a), str(b), "--color", "never"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.stdout.splitlines() == [
        f"==> {a} <==",
        "[10:00:00.000000] [INFO ] from a",
        f"==> {b} <==",
        "[10:00:01.000000] [INFO ] from b",
    ]


def test_unreadable_path_is_reported_once_and_followed_when_it_becomes_a_file(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    path.mkdir()  # a directory where the log should be
    f = Follower(str(path))
    assert f.open_initial() == 0 and not f.ever_opened
    first = f.poll()
    assert [e.kind for e in first if isinstance(e, Separator)] == ["unreadable"]
    assert f.poll() == []  # said once
    path.rmdir()
    path.write_text("[10:00:00.000000] [INFO ] now a file\n")
    assert f.poll() == ["[10:00:00.000000] [INFO ] now a file\n"]
    f.close()
