"""Declared rate-limit intervals read from the source tree (`diag logs --source DIR`).

For a call site `file:line` seen in a log, find the `log_*_every(interval, ...)` call (C) or
`log_every(logger, level, interval_s, ...)` call (Python) that spans that line and evaluate
its interval. ascii-chat's parameter is in microseconds, so an expression built from a
nanosecond constant (`NS_PER_MS_INT`, `NS_PER_SEC_INT`) is a unit mismatch: flagged, and
evaluated the way the program does (as microseconds).
"""

from __future__ import annotations

import ast
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

# include/ascii-chat/common/log_rates.h and include/ascii-chat/util/time.h (microseconds / plain counts)
C_CONSTANTS: dict[str, int] = {
    "LOG_RATE_VERY_FAST": 100_000,
    "LOG_RATE_FAST": 1_000_000,
    "LOG_RATE_NORMAL": 3_000_000,
    "LOG_RATE_DEFAULT": 5_000_000,
    "LOG_RATE_SLOW": 10_000_000,
    "NS_PER_US_INT": 1_000,
    "NS_PER_MS_INT": 1_000_000,
    "NS_PER_SEC_INT": 1_000_000_000,
    "US_PER_MS_INT": 1_000,
    "US_PER_SEC_INT": 1_000_000,
    "MS_PER_SEC_INT": 1_000,
}
SOURCE_SUFFIXES = (".c", ".h", ".cpp", ".cc", ".m", ".py")
SKIP_DIRS = {".git", "build", "build-dev", "build-release", "node_modules", ".venv", "deps", "__pycache__"}
_C_CALL_RE = re.compile(r"\blog_(?:(dev|debug|info|warn|error|fatal)_)?every\s*\(")
_PY_CALL_RE = re.compile(r"\blog_every\s*\(")
_INT_SUFFIX_RE = re.compile(r"\b(\d+(?:\.\d+)?)(?:[uU]?[lL]{0,2}|[lL]{1,2}[uU])\b")


@dataclass
class Declared:
    """The interval a call site declares in its source."""

    path: str
    line: int  # first line of the call
    expression: str
    seconds: float | None  # as the program interprets it; None when it cannot be evaluated
    warning: str | None = None


def _split_args(text: str, start: int) -> tuple[list[str], int]:
    """Top-level arguments of the call whose "(" is at text[start-1]; returns (args, index after ")")."""
    args: list[str] = []
    depth = 0
    current: list[str] = []
    i = start
    quote: str | None = None
    while i < len(text):
        ch = text[i]
        if quote:
            current.append(ch)
            if ch == "\\":
                current.append(text[i + 1 : i + 2])
                i += 2
                continue
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
            current.append(ch)
        elif ch in "([{":
            depth += 1
            current.append(ch)
        elif ch in ")]}":
            if depth == 0:
                args.append("".join(current).strip())
                return args, i + 1
            depth -= 1
            current.append(ch)
        elif ch == "," and depth == 0:
            args.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
        i += 1
    return args, len(text)


def _evaluate(expression: str, names: dict[str, float]) -> float | None:
    """Arithmetic over numbers and known names; None for anything else."""
    text = _INT_SUFFIX_RE.sub(r"\1", expression.replace("(uint64_t)", "").replace("(double)", ""))
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        return None

    def ev(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return float(node.value)
        if isinstance(node, ast.Name) and node.id in names:
            return float(names[node.id])
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mult, ast.Add, ast.Sub, ast.Div, ast.FloorDiv)):
            a, b = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Mult):
                return a * b
            if isinstance(node.op, ast.Add):
                return a + b
            if isinstance(node.op, ast.Sub):
                return a - b
            return a / b if isinstance(node.op, ast.Div) else a // b
        raise ValueError(ast.dump(node))

    try:
        return ev(tree)
    except (ValueError, ZeroDivisionError):
        return None


def _c_calls(path: Path) -> list[tuple[int, int, Declared]]:
    text = path.read_text(errors="replace")
    out = []
    for m in _C_CALL_RE.finditer(text):
        args, end = _split_args(text, m.end())
        index = 0 if m.group(1) else 1  # log_every(level, interval_us, ...)
        if len(args) <= index:
            continue
        expr = " ".join(args[index].split())
        micro = _evaluate(expr, C_CONSTANTS)
        warning = None
        if "NS_PER_" in expr:
            warning = f"unit mismatch: {expr} is nanoseconds, the parameter is microseconds"
            if micro is not None:
                warning += f" (= {micro / 1e6:g} s, meant {micro / 1e9:g} s?)"
        elif "MS_PER_SEC" in expr:
            warning = f"unit mismatch: {expr} counts milliseconds, the parameter is microseconds"
        first = text.count("\n", 0, m.start()) + 1
        last = text.count("\n", 0, end) + 1
        seconds = None if micro is None else micro / 1e6
        out.append((first, last, Declared(str(path), first, expr, seconds, warning)))
    return out


def _py_calls(path: Path) -> list[tuple[int, int, Declared]]:
    text = path.read_text(errors="replace")
    names: dict[str, float] = {}
    for m in re.finditer(r"^([A-Z][A-Z0-9_]*)\s*(?::\s*\w+\s*)?=\s*([0-9_.eE+-]+)\s*(?:#.*)?$", text, re.M):
        try:
            names[m.group(1)] = float(m.group(2))
        except ValueError:
            pass
    out = []
    for m in _PY_CALL_RE.finditer(text):
        if text[max(0, m.start() - 4) : m.start()] == "def ":
            continue
        args, end = _split_args(text, m.end())
        if len(args) < 3:
            continue
        expr = " ".join(args[2].split())
        first = text.count("\n", 0, m.start()) + 1
        last = text.count("\n", 0, end) + 1
        out.append((first, last, Declared(str(path), first, expr, _evaluate(expr, names))))
    return out


class SourceIndex:
    """Looks up `file:line` sites under one or more source roots."""

    def __init__(self, roots: list[str]) -> None:
        self.roots = [Path(r) for r in roots]
        self._by_name: dict[str, list[Path]] | None = None

    def _index(self) -> dict[str, list[Path]]:
        if self._by_name is None:
            self._by_name = {}
            for root in self.roots:
                for dirpath, dirnames, filenames in os.walk(root):
                    dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS and not d.startswith("build")]
                    for name in filenames:
                        if name.endswith(SOURCE_SUFFIXES):
                            self._by_name.setdefault(name, []).append(Path(dirpath) / name)
        return self._by_name

    @staticmethod
    @lru_cache(maxsize=4096)
    def _calls(path: Path) -> tuple[tuple[int, int, Declared], ...]:
        try:
            return tuple(_py_calls(path) if path.suffix == ".py" else _c_calls(path))
        except OSError:
            return ()

    def lookup(self, file: str, line: int) -> Declared | None:
        """The rate-limited call spanning `line` in the source file the log calls `file`."""
        rel = file.replace("\\", "/").lstrip("./")
        candidates = [p for p in self._index().get(rel.rsplit("/", 1)[-1], []) if p.as_posix().endswith(rel)]
        found = []
        for path in candidates:
            for first, last, declared in self._calls(path):
                if first <= line <= last:
                    found.append(declared)
        if len(found) == 1:
            return found[0]
        if found:  # the same basename in several directories, each with a call there
            best = found[0]
            best.warning = (best.warning + "; " if best.warning else "") + f"{len(found)} files match {file}:{line}"
            return best
        return None
