"""A log writer that behaves like ascii-chat's logger, for the `diag logs` tests.

Run as a separate process: `python writer.py SCENARIO LOG EXPECTED.json`. It writes real
records with the C program's file habits (O_TRUNC at every start, one write() per record,
tail-rotation by copy to <log>.tmp + rename at 3 MiB keeping the last 2 MiB from the next
newline, then an O_APPEND reopen and the `Log tail-rotated (kept N bytes)` marker), plus
delete-and-recreate, a NUL hole and a partial line; EXPECTED.json receives every line it
wrote once (the replayed tail excluded), the events in order, and per call-site counts.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import datetime

ROTATE_AT = 3 * 1024 * 1024
KEEP = 2 * 1024 * 1024


class CLog:
    def __init__(self, path: str) -> None:
        self.path = path
        self.expected: list[str] = []
        self.events: list[str] = []
        self.counts: dict[str, int] = {}
        self.fd = -1
        self.seq = 0
        self.last_logged: dict[str, int] = {}
        self.calls: dict[str, int] = {}
        self.reported_suppressed: dict[str, int] = {}
        self.pending_suppressed: dict[str, int] = {}
        # Virtual clock in microseconds (the rates scenario): exact gaps whatever the machine load.
        self.clock_us: int | None = None
        self.open_run(first=True)

    def open_run(self, first: bool = False) -> None:
        if self.fd >= 0:
            os.close(self.fd)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        if not first:
            self.events.append("new-run")

    def stamp(self) -> str:
        if self.clock_us is None:
            return datetime.now().strftime("%H:%M:%S.%f")
        seconds, micros = divmod(self.clock_us, 1_000_000)
        return f"{seconds // 3600 % 24:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}.{micros:06d}"

    def now_us(self) -> int:
        return self.clock_us if self.clock_us is not None else int(time.monotonic() * 1e6)

    def format(self, level: str, site: tuple[str, int, str] | None, msg: str, cont: tuple[str, ...] = ()) -> str:
        head = f"[{self.stamp()}] [{level:<5}]"
        if site is not None:
            head += f" [tid:140234887431872] {site[0]}:{site[1]}@{site[2]}():"
        return "\n".join([f"{head} {msg}", *cont]) + "\n"

    def record(
        self,
        level: str,
        site: tuple[str, int, str] | None,
        msg: str,
        cont: tuple[str, ...] = (),
        key: str | None = None,
        write: bool = True,
    ) -> bytes:
        self.seq += 1
        text = self.format(level, site, f"{msg} seq={self.seq}", cont)
        self.expected.extend(text[:-1].split("\n"))
        if key:
            self.counts[key] = self.counts.get(key, 0) + 1
        data = text.encode()
        if write:
            os.write(self.fd, data)
            self.maybe_rotate()
        return data

    def every(self, interval_s: float, level: str, site: tuple[str, int, str], msg: str, server: bool) -> bool:
        """log_every: C style (drops silently) or asciichat-server style (suffix with the count)."""
        key = f"{site[0]}:{site[1]}"
        self.calls[key] = self.calls.get(key, 0) + 1
        now = self.now_us()
        last = self.last_logged.get(key)
        if last is not None and now - last < round(interval_s * 1e6):
            self.pending_suppressed[key] = self.pending_suppressed.get(key, 0) + 1
            return False
        self.last_logged[key] = now
        suppressed = self.pending_suppressed.pop(key, 0)
        if server:
            self.reported_suppressed[key] = self.reported_suppressed.get(key, 0) + suppressed
            self.seq += 1
            text = self.format(level, site, f"{msg} seq={self.seq} [every={interval_s:g}s suppressed={suppressed}]")
            self.expected.extend(text[:-1].split("\n"))
            self.counts[key] = self.counts.get(key, 0) + 1
            os.write(self.fd, text.encode())
        else:
            self.record(level, site, msg, key=key)
        return True

    def maybe_rotate(self) -> None:
        size = os.fstat(self.fd).st_size
        if size < ROTATE_AT:
            return
        start = size - KEEP
        with open(self.path, "rb") as fh:
            fh.seek(start)
            kept = fh.read()
        kept = kept[kept.index(b"\n") + 1 :]
        tmp = self.path + ".tmp"
        with open(tmp, "wb") as out:
            out.write(kept)
        os.rename(tmp, self.path)
        os.close(self.fd)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        marker = f"[{self.stamp()}] [INFO] Log tail-rotated (kept {len(kept)} bytes)\n"
        os.write(self.fd, marker.encode())
        self.expected.append(marker[:-1])
        self.events.append(f"rotated:{len(kept)}")

    def dump(self, out_path: str) -> None:
        with open(out_path, "w") as out:
            json.dump(
                {
                    "expected": self.expected,
                    "events": self.events,
                    "counts": self.counts,
                    "calls": self.calls,
                    "reported_suppressed": self.reported_suppressed,
                    "unreported_suppressed": self.pending_suppressed,
                },
                out,
            )


WS_FILE = ("lib/network/websocket/server.c", 698, "websocket_server_callback")
REASM = ("lib/network/websocket/transport.c", 551, "websocket_recv")
SERVER_FLOW = ("asciichat_server/transport/ws.py", 405, "send")


def burst(log: CLog, n: int, tag: str = "WS_TIMING") -> None:
    """n records in as few write() calls as possible (a busy server)."""
    chunk: list[bytes] = []
    for i in range(n):
        chunk.append(log.record("DEBUG", WS_FILE, f"[{tag}] callback_enter_ns captured: {i * 977}", write=False))
        if len(chunk) == 200:
            os.write(log.fd, b"".join(chunk))
            chunk.clear()
            log.maybe_rotate()
    if chunk:
        os.write(log.fd, b"".join(chunk))
        log.maybe_rotate()


def scenario_follow(log: CLog, pause: float, sync: str | None = None) -> None:
    # run 1: a few tagged records, one with continuation lines, the release form, a rate-limited site
    log.record("INFO", None, "WebSocket server initialized on port 27226")
    log.record("INFO", REASM, "✅ [WS_REASSEMBLE] COMPLETE: 3 fragments", cont=("Signal: 11", "  at frame 2"))
    for i in range(5):
        log.record("DEBUG", WS_FILE, f"[WS_FLOW] Queue: free={i}/64 (used={64 - i})")
    time.sleep(pause)
    # restart: O_TRUNC, then refill in one burst (possibly past the old size before the next poll)
    log.open_run()
    burst(log, 400)
    time.sleep(pause)
    # a NUL hole: a stale-offset write past the end, then back to appending at the end
    size = os.fstat(log.fd).st_size
    os.pwrite(
        log.fd,
        log.record("WARN", WS_FILE, "[WS_FLOW] Receive queue FULL - dropping fragment", write=False),
        size + 4096,
    )
    os.lseek(log.fd, 0, os.SEEK_END)
    log.events.append("hole")
    time.sleep(pause)
    # a partial line: the first half now, the rest later
    data = log.record("INFO", REASM, "[WS_REASSEMBLE] fragment 1/2 arrived late", write=False)
    os.write(log.fd, data[:40])
    time.sleep(pause * 2)
    os.write(log.fd, data[40:])
    time.sleep(pause)
    # grow past 3 MiB: the C program's tail-rotation (copy + rename, new inode, marker)
    while not any(e.startswith("rotated") for e in log.events):
        burst(log, 2000)
    for i in range(5):
        log.record("INFO", WS_FILE, f"[WS_FRAG] after rotation {i}")
    # Like tail -F, a poller only sees a file that lives at the name for at least one poll
    # (plus the time to chew through the 3 MiB burst on a busy machine): with a sync file,
    # wait until the test says every follower has printed the lines above.
    if sync:
        deadline = time.monotonic() + 60
        while not os.path.exists(sync) and time.monotonic() < deadline:
            time.sleep(0.02)
    else:
        time.sleep(pause * 4)
    # delete and recreate
    os.unlink(log.path)
    log.events.append("deleted")
    time.sleep(pause)
    log.open_run()
    log.events[-1] = "recreated"
    for i in range(5):
        log.record("INFO", None, f"[WS_SOCKET] recreated file line {i}")
    time.sleep(pause)
    log.record("INFO", None, "[DONE] writer finished")


def scenario_rates(log: CLog, duration: float) -> None:
    """Known rates on a virtual clock ticking 10 ms per loop (09:00:00 on): a C-style log_every at
    0.1 s and a server-style one at 0.2 s, both called every tick; an unlimited site every 50 ms;
    three WS clients connecting 250 ms apart and leaving after 0.1, 0.2 and 0.3 s."""
    tick_us = 10_000
    log.clock_us = 9 * 3600 * 1_000_000
    start = log.clock_us
    clients: list[tuple[int, int]] = []
    n_client = 0
    while log.clock_us - start < round(duration * 1e6):
        elapsed = log.clock_us - start
        log.every(0.1, "DEV", WS_FILE, "[WS_FLOW] Queue: free=10/64 (used=54)", server=False)
        log.every(0.2, "DEBUG", SERVER_FLOW, "[WS_FLOW] queue=65536 bytes buffered for id=1 peer=127.0.0.1:40000", True)
        if elapsed % 50_000 == 0:
            log.record("INFO", REASM, "[WS_REASSEMBLE] fragment received", key="reassemble")
        if elapsed % 250_000 == 0 and n_client < 3:
            n_client += 1
            peer = f"127.0.0.1:{41000 + n_client}"
            log.record(
                "DEBUG", None, f"[WS_CONNECT] peer={peer}, path=/, subprotocol=acip, open={n_client}", key="connect"
            )
            clients.append((n_client, log.clock_us))
        for cid, opened in list(clients):
            if log.clock_us - opened >= 100_000 * cid:
                clients.remove((cid, opened))
                log.record(
                    "DEBUG",
                    None,
                    f"[WS_DISCONNECT] Client disconnecting (id={cid}, cleanup=done, active=false, "
                    f"reason=peer closed (1000), peer=127.0.0.1:{41000 + cid}, "
                    f"duration={(log.clock_us - opened) / 1e6:.3f}s, open=0)",
                    key="disconnect",
                )
        log.clock_us += tick_us


def main() -> None:
    scenario, path, out = sys.argv[1], sys.argv[2], sys.argv[3]
    log = CLog(path)
    try:
        if scenario == "follow":
            scenario_follow(
                log, float(sys.argv[4]) if len(sys.argv) > 4 else 0.4, sys.argv[5] if len(sys.argv) > 5 else None
            )
        elif scenario == "rates":
            scenario_rates(log, float(sys.argv[4]) if len(sys.argv) > 4 else 2.0)
        else:
            raise SystemExit(f"unknown scenario {scenario}")
    finally:
        log.dump(out)


if __name__ == "__main__":
    main()
