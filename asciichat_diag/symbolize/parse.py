"""Recognise every backtrace format ascii-chat, glibc, the sanitizers and gdb print; keep the rest as text.

`parse_text` returns the input as a list of lines (frames or passthrough), the /proc/PID/maps
lines found in it, and enough context (crash blocks, signal frames) to apply the return-address rule.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from asciichat_diag.symbolize.model import InputFrame, MapEntry

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
HEX = r"[0-9a-fA-F]+"

MAPS_LINE = re.compile(
    rf"^\s*(?P<start>{HEX})-(?P<end>{HEX})\s+(?P<perms>[r-][w-][x-][ps])\s+(?P<off>{HEX})\s+{HEX}:{HEX}\s+\d+\s*(?P<path>.*?)\s*$"
)
# ascii-chat: `  [N] <rest>` (lib/platform/symbols.c, memory reports, lock call stacks)
ASCIICHAT = re.compile(r"^(?P<indent>\s*)\[(?P<idx>\d+)\]\s+(?P<rest>.*?)\s*$")
AC_RULES: list[tuple[str, re.Pattern[str]]] = [
    ("placeholder", re.compile(r"^(?P<ph>\[NULL\]|\?\?\?)$")),
    ("addr", re.compile(rf"^0x(?P<addr>{HEX})(?:\s+<-.*)?$")),
    ("bin_addr", re.compile(rf"^\[(?P<bin>[^\]]+)\]\s+0x(?P<addr>{HEX})(?:\s+\(\+0x{HEX}\))?(?:\s+<-.*)?$")),
    ("bin_modoff", re.compile(rf"^\[(?P<bin>[^\]\s]+)\+0x(?P<off>{HEX})\](?:\s+0x(?P<addr>{HEX}))?$")),
    (
        "bin_func_loc",
        re.compile(r"^\[(?P<bin>[^\]]+)\]\s+(?P<func>.+?)\(\)\s+\((?P<file>[^()\s]+):(?P<line>\d+)\)(?P<tail>.*)$"),
    ),
    ("bin_loc", re.compile(r"^\[(?P<bin>[^\]]+)\]\s+(?P<file>\S+):(?P<line>\d+) \(unknown function\)$")),
    ("bin_func", re.compile(r"^\[(?P<bin>[^\]]+)\]\s+(?P<func>[^\s()]+)\(\)(?P<tail>.*)$")),
    ("loc_in_func", re.compile(r"^(?P<file>\S+):(?P<line>\d+) in (?P<func>.+?)\(\)$")),
    ("func_at_addr", re.compile(rf"^(?P<func>\S+?)\(\) at 0x(?P<addr>{HEX})$")),
]
# glibc backtrace_symbols(): `prog(+0x1234) [0x55…]`, `/lib/libc.so.6(__libc_start_main+0xf3) [0x7f…]`
GLIBC = re.compile(
    rf"^(?P<indent>\s*)(?P<mod>[^\s()\[\]]+)\((?P<sym>[^()+\s]*)(?:\+0x(?P<off>{HEX}))?\)\s*\[0x(?P<addr>{HEX})\]\s*$"
)
GLIBC_BARE = re.compile(rf"^(?P<indent>\s*)(?P<mod>/[^\s()\[\]]+)\s+\[0x(?P<addr>{HEX})\]\s*$")
# Sanitizers: `#3 0x55d4… in frame_encode /src/lib/video/frame.c:142:7`, `#4 0x7f… (/lib/libc.so.6+0x29d90)`
SAN_MODOFF = re.compile(
    rf"^(?P<indent>\s*)#(?P<idx>\d+)\s+0x(?P<addr>{HEX})\s+(?:in\s+(?P<func>.+?)\s+)?"
    rf"\((?P<mod>[^()\s]+)\+0x(?P<off>{HEX})\)(?:\s+\(BuildId:\s*(?P<bid>{HEX})\))?\s*$"
)
SAN_LOC = re.compile(
    rf"^(?P<indent>\s*)#(?P<idx>\d+)\s+0x(?P<addr>{HEX})\s+in\s+(?P<func>.+?)\s+(?P<file>\S+?):(?P<line>\d+)(?::(?P<col>\d+))?\s*$"
)
SAN_FUNC = re.compile(rf"^(?P<indent>\s*)#(?P<idx>\d+)\s+0x(?P<addr>{HEX})\s+in\s+(?P<func>\S+)\s*$")
# gdb `bt`: `#1  0x000055555555513d in main () at t.c:9`, `#2  0x… in f () from /lib/libc.so.6`
GDB = re.compile(
    rf"^(?P<indent>\s*)#(?P<idx>\d+)\s+(?:0x(?P<addr>{HEX})\s+in\s+)?(?P<func>[^\s(]+)\s+\((?P<args>.*?)\)"
    r"(?:\s+at\s+(?P<file>\S+?):(?P<line>\d+)|\s+from\s+(?P<mod>\S+))?\s*$"
)
GDB_SIGNAL = re.compile(r"^(?P<indent>\s*)#(?P<idx>\d+)\s+<signal handler called>\s*$")
PANIC_PC = re.compile(rf"\bpc=0x(?P<addr>{HEX})\b")
MODOFF = re.compile(rf"^(?P<indent>\s*)(?P<mod>[^\s+()\[\]]+)\+0x(?P<off>{HEX})\s*$")
FIXSTACKS = re.compile(rf"^(?P<indent>.*?)\[(?P<mod>[^\s\]]+) \+0x(?P<off>{HEX})\]\s*$")
BARE = re.compile(rf"^(?P<indent>\s*)(?:0x(?P<a>{HEX})|(?P<b>[0-9a-fA-F]{{8,16}}))\s*$")
INLINED_SUBLINE = re.compile(r"^\s+\[inlined\] (?:(?P<func>\S+?)\(\))?\s*(?:\(?(?P<file>[^()\s]+):(?P<line>\d+)\)?)?")
CRASH_MARKERS = re.compile(
    r"\*\*\* CRASH DETECTED \*\*\*|^Signal: \d+|"
    r"ERROR: (?:Address|Undefined|Memory|Thread)Sanitizer: (?:SEGV|BUS|FPE|ILL|ABRT|stack-overflow)|"
    r"^Program received signal|^Program terminated with signal"
)
BLOCK_START = re.compile(r"Backtrace|Call stack:|FATAL BACKTRACE|Stack trace|^Thread \d+|^=+\s*$|Current allocations:")


@dataclass
class ParsedInput:
    lines: list[str | InputFrame] = field(default_factory=list)
    maps: list[MapEntry] = field(default_factory=list)

    @property
    def frames(self) -> list[InputFrame]:
        return [x for x in self.lines if isinstance(x, InputFrame)]


def _h(s: str | None) -> int | None:
    return int(s, 16) if s else None


def parse_line(text: str, line_no: int) -> InputFrame | MapEntry | None:
    """One input line as a frame, a maps entry, or None (pass through)."""
    s = ANSI.sub("", text).rstrip("\r\n")
    m = MAPS_LINE.match(s)
    if m:
        return MapEntry(int(m["start"], 16), int(m["end"], 16), m["perms"], int(m["off"], 16), m["path"])
    m = ASCIICHAT.match(s)
    if m:
        frame = _asciichat(m, line_no)
        if frame is not None:
            return frame
    m = SAN_MODOFF.match(s)
    if m:
        return InputFrame(line_no, "sanitizer", int(m["idx"]), m["indent"], _h(m["addr"]), m["mod"], _h(m["off"]),
                          function=m["func"], build_id=m["bid"], return_address=False)  # fmt: skip
    m = GDB_SIGNAL.match(s)
    if m:
        return InputFrame(
            line_no, "gdb", int(m["idx"]), m["indent"], signal_frame=True, placeholder="<signal handler called>"
        )
    m = GDB.match(s)
    if m and (m["file"] or m["mod"] or m["args"] == "" or "=" in m["args"]):
        return InputFrame(line_no, "gdb", int(m["idx"]), m["indent"], _h(m["addr"]), m["mod"], function=m["func"],
                          file=m["file"], line=int(m["line"]) if m["line"] else None)  # fmt: skip
    m = SAN_LOC.match(s)
    if m:
        return InputFrame(line_no, "sanitizer", int(m["idx"]), m["indent"], _h(m["addr"]), function=m["func"],
                          file=m["file"], line=int(m["line"]), return_address=False)  # fmt: skip
    m = SAN_FUNC.match(s)
    if m:
        return InputFrame(line_no, "sanitizer", int(m["idx"]), m["indent"], _h(m["addr"]), function=m["func"],
                          return_address=False)  # fmt: skip
    m = GLIBC.match(s)
    if m:
        sym = m["sym"] or None
        off = _h(m["off"]) or 0
        return InputFrame(line_no, "glibc", None, m["indent"], _h(m["addr"]), m["mod"],
                          module_offset=off if sym is None else None, symbol=sym,
                          symbol_offset=off)  # fmt: skip
    m = GLIBC_BARE.match(s)
    if m:
        return InputFrame(line_no, "glibc", None, m["indent"], _h(m["addr"]), m["mod"])
    m = FIXSTACKS.match(s) or MODOFF.match(s)
    if m:
        return InputFrame(line_no, "modoff", None, m["indent"], None, m["mod"], _h(m["off"]))
    m = BARE.match(s)
    if m:
        return InputFrame(line_no, "bare", None, m["indent"], _h(m["a"] or m["b"]))
    m = PANIC_PC.search(s)
    if m:
        return InputFrame(line_no, "panic", None, "", _h(m["addr"]))
    return None


def _asciichat(m: re.Match[str], line_no: int) -> InputFrame | None:
    rest = m["rest"]
    idx = int(m["idx"])
    for kind, rx in AC_RULES:
        r = rx.match(rest)
        if not r:
            continue
        f = InputFrame(line_no, "asciichat", idx, m["indent"])
        g = r.groupdict()
        if kind == "placeholder":
            f.placeholder = g["ph"]
        f.module = g.get("bin")
        f.address = _h(g.get("addr"))
        if kind == "bin_modoff":
            f.module_offset = _h(g["off"])
        f.function = g.get("func")
        f.file = g.get("file")
        f.line = int(g["line"]) if g.get("line") else None
        return f
    return None


def parse_text(text: str) -> ParsedInput:
    """Split the input into frames, maps entries and passthrough lines; group frames into traces."""
    out = ParsedInput()
    trace = 0
    prev: InputFrame | None = None
    crash_pending = False  # a crash marker was seen: the next trace is a crash trace
    trace_in_crash = False
    after_signal = False
    gap = 0  # non-frame lines since the previous frame
    for line_no, raw in enumerate(text.splitlines()):
        clean = ANSI.sub("", raw)
        sub = INLINED_SUBLINE.match(clean) if prev is not None else None
        if sub:  # our own inline sub-lines: they belong to the frame above
            prev.inlined.append((sub["func"], sub["file"], int(sub["line"]) if sub["line"] else None))
            continue
        item = parse_line(raw, line_no)
        if isinstance(item, MapEntry):
            out.maps.append(item)
            out.lines.append(raw)
            continue
        if item is None:
            if CRASH_MARKERS.search(clean):
                crash_pending = True
            # A label such as "Backtrace" or "Call stack:" always starts a new trace; one stray line does not.
            gap += 2 if BLOCK_START.search(clean) else 1
            out.lines.append(raw)
            continue
        item.original = raw
        new_trace = (
            prev is None
            or item.fmt != prev.fmt
            or (item.index is not None and prev.index is not None and item.index <= prev.index)
            or gap > 1
        )
        if new_trace:
            trace += 1
            after_signal = False
            trace_in_crash, crash_pending = crash_pending, False
        item.trace = trace
        item.in_crash = trace_in_crash
        if item.fmt == "gdb":
            # gdb frame 0 is the PC itself; every caller's address is a return address.
            item.return_address = item.index not in (None, 0)
        if after_signal:
            item.return_address = False  # the frame interrupted by a signal: its PC, not a return address
            after_signal = False
        if item.signal_frame:
            after_signal = True
        out.lines.append(item)
        prev = item
        gap = 0
    return out


def mark_after_trampoline(frames: list[InputFrame], index: int) -> None:
    """The frame after a signal trampoline holds the interrupted PC: look it up without the -1."""
    if index + 1 < len(frames) and frames[index + 1].trace == frames[index].trace:
        frames[index + 1].return_address = False
