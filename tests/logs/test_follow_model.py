"""Property test of the follower: random write / truncate / rotate / recreate / hole programs on
real files, polled in-process, must yield every complete line exactly once and nothing else."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asciichat_diag.logs.follow import Follower
from asciichat_diag.logs.model import Separator

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(1, 6), st.booleans()),
        st.tuples(st.just("partial"), st.integers(1, 30), st.booleans()),
        st.tuples(st.just("truncate"), st.integers(0, 5), st.booleans()),
        st.tuples(st.just("rotate"), st.integers(0, 400), st.booleans()),
        st.tuples(st.just("recreate"), st.integers(0, 4), st.booleans()),
        st.tuples(st.just("hole"), st.integers(1, 5000), st.booleans()),
        st.tuples(st.just("poll"), st.just(0), st.booleans()),
    ),
    max_size=25,
)


class Writer:
    """Writes like ascii-chat (O_TRUNC at start, copy+rename tail-rotation) and records the truth."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seq = 0
        self.expected: list[str] = []
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)

    def line(self, continuation: bool) -> bytes:
        self.seq += 1
        text = f"[10:00:{self.seq % 60:02d}.{self.seq:06d}] [INFO ] [WS_FLOW] record seq={self.seq}"
        lines = [text, f"  detail of {self.seq}"] if continuation else [text]
        self.expected.extend(lines)
        return ("\n".join(lines) + "\n").encode()

    def append(self, n: int, continuation: bool) -> None:
        os.lseek(self.fd, 0, os.SEEK_END)
        os.write(self.fd, b"".join(self.line(continuation) for _ in range(n)))

    def truncate(self, n: int) -> None:
        os.close(self.fd)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        if n:
            self.append(n, False)

    def rotate(self, keep: int) -> None:
        data = self.path.read_bytes()
        nl = data.find(b"\n", max(0, len(data) - keep))
        kept = data[nl + 1 :] if nl >= 0 and keep else b""
        tmp = self.path.with_suffix(".tmp")
        tmp.write_bytes(kept)
        os.rename(tmp, self.path)
        os.close(self.fd)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        marker = f"[10:59:59.000000] [INFO] Log tail-rotated (kept {len(kept)} bytes) #{self.seq}"
        self.seq += 1
        self.expected.append(marker)
        os.write(self.fd, (marker + "\n").encode())

    def recreate(self, n: int) -> None:
        os.close(self.fd)
        self.path.unlink()
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        if n:
            self.append(n, False)

    def hole(self, gap: int) -> None:
        size = os.fstat(self.fd).st_size
        if fcntl.fcntl(self.fd, fcntl.F_GETFL) & os.O_APPEND:
            os.close(self.fd)  # a positional write needs a descriptor without O_APPEND
            self.fd = os.open(self.path, os.O_RDWR)
        os.pwrite(self.fd, self.line(False), size + gap)


def collect(follower: Follower, out: list[str]) -> None:
    text = "".join(e for e in follower.poll() if not isinstance(e, Separator))
    if text:
        out.extend(text[:-1].split("\n") if text.endswith("\n") else text.split("\n"))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_follower_yields_every_line_once(tmp_path: Path, ops: list[tuple[str, int, bool]]) -> None:
    path = tmp_path / f"model-{os.getpid()}-{id(ops)}.log"
    writer = Writer(path)
    follower = Follower(str(path))
    assert follower.open_initial() == 0
    got: list[str] = []
    try:
        for op, n, flag in ops:
            if op in ("truncate", "recreate"):
                collect(follower, got)  # what a run wrote before it restarts must have been seen
            if op == "append":
                writer.append(n, flag)
            elif op == "partial":
                data = writer.line(flag)
                cut = min(n, len(data) - 1)
                os.lseek(writer.fd, 0, os.SEEK_END)
                os.write(writer.fd, data[:cut])
                collect(follower, got)
                os.write(writer.fd, data[cut:])
            elif op == "truncate":
                writer.truncate(n)
            elif op == "rotate":
                writer.rotate(n)
            elif op == "recreate":
                writer.recreate(n)
            elif op == "hole":
                writer.hole(n)
            if op != "append" or flag:
                collect(follower, got)
        collect(follower, got)
        assert got == writer.expected
    finally:
        follower.close()
        os.close(writer.fd)
