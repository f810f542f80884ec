"""Plain data for `diag symbolize`: parsed input frames, maps entries, and resolved frames."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class MapEntry:
    """One line of /proc/PID/maps."""

    start: int
    end: int
    perms: str
    offset: int
    path: str
    open_path: str | None = None  # /proc/PID/map_files/… for a file deleted since it was mapped

    @property
    def file_backed(self) -> bool:
        return self.open_path is not None or (self.path.startswith("/") and not self.path.endswith(" (deleted)"))

    @property
    def name(self) -> str:
        return self.path.removesuffix(" (deleted)")


@dataclass
class InputFrame:
    """A frame as printed in the input, before resolution."""

    line_no: int
    fmt: str  # asciichat | glibc | sanitizer | gdb | bare | modoff | panic
    index: int | None
    indent: str = ""
    address: int | None = None  # runtime address
    module: str | None = None  # module name or path as printed
    module_offset: int | None = None  # module-relative virtual address (module+0xoff forms)
    symbol: str | None = None  # glibc `lib.so(fn+0x10)`: the address is symbol + symbol_offset
    symbol_offset: int = 0
    function: str | None = None  # what the input already says
    file: str | None = None
    line: int | None = None
    build_id: str | None = None
    placeholder: str | None = None  # `[NULL]` / `???`
    trace: int = 0
    return_address: bool = True  # look up at address - 1
    in_crash: bool = False
    signal_frame: bool = False  # gdb `<signal handler called>`
    original: str = ""
    inlined: list = field(default_factory=list)  # (function, file, line) from `[inlined]` sub-lines, innermost first


@dataclass
class FrameLocation:
    function: str | None
    file: str | None
    line: int | None
    column: int | None = None


@dataclass
class ConflictEntry:
    module: str
    function: str | None
    file: str | None
    line: int | None


@dataclass
class ResolvedFrame:
    """One physical frame of the output; `inlined` lists the inline chain innermost first."""

    index: int | None
    address: str | None
    module: str | None
    module_offset: str | None
    function: str | None
    file: str | None
    line: int | None
    column: int | None
    inlined: list[FrameLocation] = field(default_factory=list)
    conflict: list[ConflictEntry] | None = None
    source: str | None = None  # dwarf | symtab | input | None (unresolved)
    lookup_address: str | None = None  # the module vaddr actually looked up (after the -1 rule)
    note: str | None = None  # why a frame is unresolved, or what a re-check found
    format: str | None = None  # which input format the frame came in (asciichat, glibc, sanitizer, gdb, ...)
    text: str | None = None  # the input line, for formats whose line carries more than the frame


@dataclass
class ModuleReport:
    """How a module's load address was found."""

    name: str
    path: str | None
    bias: int | None
    bias_source: str  # maps | module-offset | recovered | none
    confidence: str | None = None
    detail: str | None = None


@dataclass
class SymbolizeResult:
    frames: list[ResolvedFrame]
    modules: list[ModuleReport]
    # output lines: str for passthrough, int for the position of a frame in `frames`
    lines: list[str | int]
    notes: list[str] = field(default_factory=list)

    @property
    def all_resolved(self) -> bool:
        """Every frame has an answer (signal frames need none) and no re-check failed."""
        for f in self.frames:
            if f.note in BENIGN_NOTES:
                continue
            if f.source is None or (f.note or "").startswith(("re-check failed", "build-id mismatch")):
                return False
        return True


# Frames that have no function of their own and are not failures.
BENIGN_NOTES = frozenset({"signal trampoline", "signal handler frame"})
