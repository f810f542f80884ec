"""The `diag` command: a click group whose subcommands are imported only when used.

Lazy loading keeps `diag ports --json` fast: `diag` never imports pyelftools or numpy
unless the subcommand it runs needs them.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

import click

from asciichat_diag import __version__

# name -> "module:attribute" of a click command. Each subcommand lives in its own package.
SUBCOMMANDS: dict[str, str] = {
    "symbolize": "asciichat_diag.symbolize.cli:symbolize",
    "ports": "asciichat_diag.ports.cli:ports",
    "bind": "asciichat_diag.ports.bind_cli:bind",
    "logs": "asciichat_diag.logs.cli:logs",
}


class LazyGroup(click.Group):
    """A click group that imports a subcommand's module on first use."""

    def __init__(self, *args: Any, lazy_subcommands: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_subcommands = dict(lazy_subcommands or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self._available()})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy_subcommands:
            return self._load(cmd_name)
        return super().get_command(ctx, cmd_name)

    def _available(self) -> list[str]:
        names = []
        for name, target in self.lazy_subcommands.items():
            if importlib.util.find_spec(target.split(":")[0].rsplit(".", 1)[0]) is not None:
                names.append(name)
        return names

    def _load(self, cmd_name: str) -> click.Command | None:
        module_name, attr = self.lazy_subcommands[cmd_name].split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                return None  # subcommand not installed in this build
            raise
        command = getattr(module, attr)
        if not isinstance(command, click.Command):
            raise TypeError(f"{module_name}:{attr} is not a click command")
        return command


@click.group(
    cls=LazyGroup,
    lazy_subcommands=SUBCOMMANDS,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="diag")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
def main(debug: bool) -> None:
    """Debugging tools for ascii-chat.

    \b
    Examples:
      diag symbolize crash.txt        resolve a backtrace across exe and libasciichat.so
      diag ports 27224 --acip         who listens on the port, and does ACIP answer
      diag bind 27224 --retries 5     why a bind fails, measured
      diag logs -f server.log --tag WS_
    """


if __name__ == "__main__":
    main()
