"""`diag symbolize`: the click command; parsing and resolution live in parse/resolve, printing in render."""

from __future__ import annotations

import sys

import click

from asciichat_diag._common import (
    EXIT_OK,
    EXIT_PROBLEM,
    DiagError,
    color_option,
    dump_json,
    handle_errors,
    json_option,
    make_console,
)


@click.command("symbolize")
@click.argument("input_file", metavar="[FILE|-]", default="-")
@click.option("--maps", "maps_file", metavar="FILE", help="A /proc/PID/maps snapshot for the runtime addresses.")
@click.option("--pid", type=int, help="Read the load map of this live process.")
@click.option("--exe", metavar="PATH", help="The executable (overrides the path in the trace).")
@click.option("--lib", "libs", metavar="PATH", multiple=True, help="A shared library (repeatable).")
@click.option("--search-path", "search_paths", metavar="DIR", multiple=True,
              help="Look for binaries here (crashes from another machine; repeatable).")  # fmt: skip
@click.option("--debug-dir", "debug_dirs", metavar="DIR", multiple=True,
              help="Separate debug files (.build-id/xx/…, debuglink); default /usr/lib/debug.")  # fmt: skip
@click.option("--source-root", metavar="DIR", help="Show paths relative to DIR (default: the dir holding .git).")
@click.option("--no-cache", is_flag=True, help="Neither read nor write the on-disk index cache.")
@click.option("--no-adjust", is_flag=True, help="Look addresses up as printed (no return-address −1).")
@click.option("--arch", type=click.Choice(["x86_64", "arm64"]), help="Slice of a universal Mach-O file.")
@json_option
@color_option
@handle_errors
def symbolize(
    input_file: str,
    maps_file: str | None,
    pid: int | None,
    exe: str | None,
    libs: tuple[str, ...],
    search_paths: tuple[str, ...],
    debug_dirs: tuple[str, ...],
    source_root: str | None,
    no_cache: bool,
    no_adjust: bool,
    arch: str | None,
    as_json: bool,
    color: str,
) -> None:
    """Resolve backtraces across the executable and its shared libraries.

    Reads ascii-chat `[N] …` frames, memory-report and lock call stacks, crash blocks, glibc
    backtrace_symbols, ASan/UBSan/LSan, gdb `bt` and bare addresses; other lines pass through.

    \b
    Examples:
      diag symbolize crash.txt                   maps snapshot inside crash.txt
      diag symbolize trace.txt --maps maps.txt --search-path ./build
      ./ascii-chat 2>&1 | diag symbolize --pid $(pgrep ascii-chat) -
      diag symbolize asan.log --json

    Exit status: 0 every frame resolved, 1 some did not, 2 bad input.
    """
    from asciichat_diag.symbolize.locate import DEFAULT_DEBUG_DIRS, Locator
    from asciichat_diag.symbolize.resolve import Options, symbolize_text

    text = _read_input(input_file)
    locator = Locator(
        exe=exe,
        libs=list(libs),
        search_paths=list(search_paths),
        debug_dirs=list(debug_dirs) or list(DEFAULT_DEBUG_DIRS),
    )
    opts = Options(
        locator=locator,
        maps_file=maps_file,
        pid=pid,
        use_cache=not no_cache,
        progress=True,
        source_root=source_root,
        adjust=not no_adjust,
        arch=arch,
    )
    if maps_file and pid is not None:
        raise DiagError("give either --maps or --pid, not both")
    result = symbolize_text(text, opts)
    if as_json:
        dump_json({"frames": result.frames, "modules": result.modules, "notes": result.notes})
    else:
        from asciichat_diag.symbolize.parse import parse_text
        from asciichat_diag.symbolize.render import render_text

        frames = parse_text(text).frames
        indents = [f.indent for f in frames]
        numbers = _numbers(frames)
        render_text(result, make_console(color), indents, numbers)
    sys.exit(EXIT_OK if result.all_resolved else EXIT_PROBLEM)


def _numbers(frames) -> list[int]:
    """Printed frame numbers: the input's own, or the position within the trace for unnumbered formats."""
    out = []
    pos = 0
    prev_trace = None
    for f in frames:
        pos = 0 if f.trace != prev_trace else pos + 1
        prev_trace = f.trace
        out.append(f.index if f.index is not None else pos)
    return out


def _read_input(path: str) -> str:
    try:
        if path == "-":
            raw = sys.stdin.buffer.read()
        else:
            with open(path, "rb") as fh:
                raw = fh.read()
    except OSError as exc:
        raise DiagError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return raw.decode("utf-8", errors="replace")
