"""Plumbing shared by every diag subcommand: colour choice, JSON output, errors, exit codes.

Each subcommand gathers plain objects, renders them with rich, or dumps them as JSON.
Errors are one line on stderr (a traceback only with --debug) and map to exit codes:
0 all good, 1 the tool found a problem, 2 bad usage or unreadable input.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import sys
from collections.abc import Callable
from pathlib import PurePath
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:  # rich costs ~70 ms to import; --json paths never need it
    from rich.console import Console

EXIT_OK = 0
EXIT_PROBLEM = 1
EXIT_USAGE = 2

F = TypeVar("F", bound=Callable[..., Any])


class DiagError(Exception):
    """An error the user can act on; printed as one line, never as a traceback."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def make_console(color: str = "auto", stderr: bool = False) -> Console:
    """A rich Console honouring --color auto|always|never (auto: only on a terminal)."""
    from rich.console import Console

    if color == "always":
        return Console(stderr=stderr, force_terminal=True, color_system="truecolor", soft_wrap=True)
    if color == "never":
        return Console(stderr=stderr, no_color=True, color_system=None, soft_wrap=True, highlight=False)
    return Console(stderr=stderr, soft_wrap=True)


def to_jsonable(obj: Any) -> Any:
    """Turn dataclasses, enums, paths, bytes and containers into JSON-ready values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, enum.Enum):
        return obj.value if not isinstance(obj.value, enum.Enum) else str(obj)
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, bytes):
        return obj.hex()
    return obj


def dump_json(obj: Any, stream: Any = None) -> None:
    """Write obj as indented JSON followed by a newline, in one write (json.dump writes per token)."""
    stream = stream or sys.stdout
    stream.write(json.dumps(to_jsonable(obj), indent=2, ensure_ascii=False) + "\n")


color_option = click.option(
    "--color",
    type=click.Choice(["auto", "always", "never"]),
    default="auto",
    show_default=True,
    help="Colour the output.",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON instead.")


def handle_errors(func: F) -> F:
    """Turn DiagError and unexpected exceptions into a one-line message and an exit code.

    The traceback is shown only when the root group got --debug.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context(silent=True)
        debug = bool(ctx and ctx.find_root().params.get("debug"))
        try:
            return func(*args, **kwargs)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except DiagError as exc:
            if debug:
                raise
            click.echo(f"diag: error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            sys.exit(130)
        except BrokenPipeError:
            sys.exit(EXIT_OK)
        except Exception as exc:  # the promise is "no traceback unless --debug"
            if debug:
                raise
            click.echo(f"diag: internal error: {type(exc).__name__}: {exc} (rerun with --debug)", err=True)
            sys.exit(EXIT_PROBLEM)

    return wrapper  # type: ignore[return-value]
