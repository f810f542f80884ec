"""Print a SymbolizeResult as ascii-chat-style frame lines in rich colours (`--json`: symbolize/cli.py).

A frame line reads `[3] [libasciichat.so] frame_encode() (lib/video/frame.c:142)`, inline frames
follow as `[inlined]` sub-lines, and the output parses back as input (round trip).
"""

from __future__ import annotations

from rich.console import Console
from rich.text import Text

from asciichat_diag.symbolize.model import ConflictEntry, ResolvedFrame, SymbolizeResult

# Colours after ascii-chat's scheme: number grey, binary/file in the DEBUG colour, function in DEV's.
STYLE_INDEX = "grey50"
STYLE_MODULE = "cyan"
STYLE_FUNC = "magenta"
STYLE_FILE = "cyan"
STYLE_LINE = "grey50"
STYLE_BAD = "bold red"
STYLE_NOTE = "grey50"


def _loc(func: str | None, file: str | None, line: int | None) -> Text:
    t = Text()
    if func:
        t.append(func if func.endswith(")") else func + "()", STYLE_FUNC)
        if file:
            t.append(" (")
            t.append(file, STYLE_FILE)
            t.append(":")
            t.append(str(line or 0), STYLE_LINE)
            t.append(")")
    elif file:
        t.append(file, STYLE_FILE)
        t.append(":")
        t.append(str(line or 0), STYLE_LINE)
        t.append(" (unknown function)")
    return t


def _conflict(entries: list[ConflictEntry]) -> Text:
    t = Text(" [CONFLICT!]", STYLE_BAD)
    for k, c in enumerate(entries):
        t.append(" |" if k else "", STYLE_BAD)
        t.append(f" [{c.module}] ", STYLE_BAD)
        t.append(_loc(c.function, c.file, c.line).plain or "??", STYLE_BAD)
    return t


def frame_text(frame: ResolvedFrame, indent: str, number: int) -> list[Text]:
    if frame.text is not None:
        # A record with a pc= field (panic instrumentation): keep the record, append the answer.
        head = Text(frame.text)
        if frame.source is not None:
            head.append("  => ", STYLE_NOTE)
            if frame.module:
                head.append(f"[{frame.module}] ", STYLE_MODULE)
            head.append(_loc(frame.function, frame.file, frame.line))
        return [head]
    head = Text(indent)
    head.append(f"[{number}]", STYLE_INDEX)
    head.append(" ")
    if frame.module:
        head.append(f"[{frame.module}]", STYLE_MODULE)
        head.append(" ")
    if frame.source is not None and (frame.function or frame.file):
        head.append(_loc(frame.function, frame.file, frame.line))
    elif frame.address is not None:
        head.append(frame.address, STYLE_BAD)
        if frame.module_offset is not None and frame.module:
            head.append(f" (+{frame.module_offset})", STYLE_NOTE)
    elif frame.module_offset is not None:
        head.append(f"+{frame.module_offset}", STYLE_BAD)
    elif frame.note == "signal handler frame":
        head.append("<signal handler called>", STYLE_NOTE)
    elif (frame.note or "").startswith("placeholder "):
        head.append(frame.note.split()[1], STYLE_BAD)
    else:
        head.append("???", STYLE_BAD)
    if frame.conflict:
        head.append(_conflict(frame.conflict))
    if (
        frame.note
        and not frame.note.startswith(("placeholder ", "signal handler"))
        and (frame.source is None or frame.note.startswith(("re-check", "owning")))
    ):
        head.append(f"  <- {frame.note}", STYLE_NOTE)
    out = [head]
    for inl in frame.inlined:
        sub = Text(indent + "    ")
        sub.append("[inlined] ", STYLE_NOTE)
        sub.append(_loc(inl.function, inl.file, inl.line))
        out.append(sub)
    return out


def render_text(result: SymbolizeResult, console: Console, indents: list[str], numbers: list[int]) -> None:
    for note in result.notes:
        console.print(Text(f"diag: {note}", STYLE_NOTE), highlight=False, soft_wrap=True)
    for item in result.lines:
        if isinstance(item, str):
            console.file.write(item + "\n")  # unknown lines pass through byte for byte
            continue
        for t in frame_text(result.frames[item], indents[item], numbers[item]):
            console.print(t, highlight=False, soft_wrap=True)
    console.file.flush()
