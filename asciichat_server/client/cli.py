"""`asciichat-client`: connect to an ascii-chat server over TCP or WebSocket and print its ASCII frames.

$ asciichat-client 127.0.0.1:27224 --test-pattern --snapshot --snapshot-delay 1 -x 80 -y 24
$ asciichat-client ws://localhost:27226/ --password 'correct horse'
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import traceback

import click

from asciichat_server.client.address import parse_target
from asciichat_server.client.display import FrameDisplay
from asciichat_server.client.keys import parse_server_key
from asciichat_server.client.options import COLOR_LEVELS, PALETTES, RENDER_MODES, ClientOptions
from asciichat_server.client.session import EXIT_OK, ClientError, run_client
from asciichat_server.log import setup_logging

__all__ = ["main"]

EXIT_USAGE = 2
# ascii-chat refuses passwords outside 8..256 bytes (crypto_validate_password).
PASSWORD_MIN = 8
PASSWORD_MAX = 256


def _detect_color_level(tty: bool) -> str:
    colorterm = os.environ.get("COLORTERM", "").lower()
    term = os.environ.get("TERM", "").lower()
    if not tty:
        return "none"
    if colorterm in ("truecolor", "24bit"):
        return "truecolor"
    if "256color" in term:
        return "256"
    if term in ("", "dumb"):
        return "none"
    return "16"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("address", metavar="HOST:PORT|ws://HOST:PORT/PATH")
@click.option("--port", "-p", type=click.IntRange(1, 65535), default=None, help="Port when ADDRESS has none.")
@click.option("--test-pattern", is_flag=True, help="Send a moving test pattern (the default video source).")
@click.option("--file", "image_file", type=click.Path(dir_okay=False), help="Send this image (PPM, PNG, JPEG...).")
@click.option("--no-video", is_flag=True, help="Send no video; only watch.")
@click.option("-x", "--width", type=click.IntRange(1, 4096), default=None, help="Columns (default: terminal).")
@click.option("-y", "--height", type=click.IntRange(1, 4096), default=None, help="Rows (default: terminal).")
@click.option("--fps", type=click.IntRange(1, 144), default=60, show_default=True, help="Frames per second, both ways.")
@click.option(
    "--color-level",
    "--color-mode",
    "color_level",
    type=click.Choice(["auto", *COLOR_LEVELS]),
    default="auto",
    show_default=True,
)
@click.option("--render-mode", type=click.Choice(list(RENDER_MODES)), default="foreground", show_default=True)
@click.option("--palette", type=click.Choice(list(PALETTES)), default="standard", show_default=True)
@click.option("--palette-chars", default="", help="Characters (dark to light) for --palette custom.")
@click.option("--snapshot", is_flag=True, help="Print one frame after --snapshot-delay seconds and exit.")
@click.option(
    "--snapshot-delay",
    type=click.FloatRange(0, 3600),
    default=3.0,
    show_default=True,
    help="Seconds from the first frame.",
)
@click.option("--no-encrypt", is_flag=True, help="Plaintext session (the server must allow it).")
@click.option("--password", default=None, help="Shared password (8-256 bytes).")
@click.option("--server-key", default=None, help="Pin the server's Ed25519 identity (ssh-ed25519 line or hex).")
@click.option("--key", "key_file", type=click.Path(dir_okay=False), help="Client identity key (OpenSSH ed25519).")
@click.option("--key-variant", type=click.Choice(["c41", "head"]), default="c41", show_default=True)
@click.option("--head-caps", is_flag=True, help="Send HEAD's 168-byte CLIENT_CAPABILITIES instead of c41's 160.")
@click.option(
    "--timeout",
    "silence_timeout",
    type=click.FloatRange(0.5, 600),
    default=5.0,
    show_default=True,
    help="Give up after this many seconds without data from the server.",
)
@click.option("--no-reconnect", is_flag=True, help="Exit when the connection is lost instead of reconnecting.")
@click.option("--log-level", default="warn", show_default=True, help="dev, debug, info, warn, error, fatal.")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--log-file", type=click.Path(dir_okay=False), default=None)
@click.option("--debug", is_flag=True, help="Show tracebacks for unexpected errors.")
def client_command(**kw: object) -> None:
    """Connect to an ascii-chat server and print the ASCII video it sends.

    Example: asciichat-client 127.0.0.1:27224 --snapshot --snapshot-delay 1 -x 80 -y 24
    """
    sys.exit(_run(kw))


def _build_options(kw: dict) -> ClientOptions:
    try:
        target = parse_target(kw["address"], kw["port"])
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="ADDRESS") from exc
    tty = sys.stdout.isatty()
    columns, rows = shutil.get_terminal_size((110, 70)) if tty else (110, 70)
    color_name = kw["color_level"] if kw["color_level"] != "auto" else _detect_color_level(tty)
    password = kw["password"]
    if password is not None and not PASSWORD_MIN <= len(password.encode()) <= PASSWORD_MAX:
        raise click.BadParameter(f"must be {PASSWORD_MIN}-{PASSWORD_MAX} bytes", param_hint="--password")
    if kw["no_encrypt"] and (password or kw["server_key"] or kw["key_file"]):
        raise click.UsageError("--no-encrypt cannot be combined with --password, --server-key or --key")
    if kw["palette"] == "custom" and not kw["palette_chars"]:
        raise click.BadParameter("--palette custom needs --palette-chars", param_hint="--palette-chars")
    if kw["image_file"] and kw["test_pattern"]:
        raise click.UsageError("choose one of --file and --test-pattern")
    server_key = None
    if kw["server_key"]:
        try:
            server_key = parse_server_key(kw["server_key"])
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--server-key") from exc
    identity = None
    if kw["key_file"]:
        from asciichat_server.config import load_identity_key

        try:
            identity = load_identity_key(kw["key_file"])
        except (OSError, ValueError) as exc:
            raise click.BadParameter(str(exc), param_hint="--key") from exc
    return ClientOptions(
        target=target,
        width=kw["width"] or columns,
        height=kw["height"] or rows,
        # Like the C client: without -x/-y on a terminal, a resize sends new CLIENT_CAPABILITIES.
        follow_terminal=tty and not kw["snapshot"] and not (kw["width"] or kw["height"]),
        fps=kw["fps"],
        color_level=COLOR_LEVELS[color_name][0],
        render_mode=RENDER_MODES[kw["render_mode"]],
        palette_type=PALETTES[kw["palette"]],
        palette_chars=kw["palette_chars"],
        wants_padding=tty and not kw["snapshot"],
        head_caps=kw["head_caps"],
        encrypt=not kw["no_encrypt"],
        password=password,
        server_key=server_key,
        identity=identity,
        key_variant=kw["key_variant"],
        image_file=kw["image_file"],
        snapshot=kw["snapshot"],
        snapshot_delay_s=kw["snapshot_delay"],
        send_video=not kw["no_video"],
        silence_timeout_s=kw["silence_timeout"],
    )


def _run(kw: dict) -> int:
    try:
        setup_logging(kw["log_level"], kw["log_format"], kw["log_file"])
    except (ValueError, OSError) as exc:
        click.echo(f"asciichat-client: {exc}", err=True)
        return EXIT_USAGE
    options = _build_options(kw)
    display = FrameDisplay(sys.stdout, tty=sys.stdout.isatty() and not kw["snapshot"], max_fps=options.fps)
    try:
        code, _stats = asyncio.run(run_client(options, display, reconnect=not kw["no_reconnect"]))
    except ClientError as exc:
        display.finish()
        click.echo(f"asciichat-client: {exc.message}", err=True)
        return exc.exit_code
    except KeyboardInterrupt:
        display.finish()
        return EXIT_OK
    except Exception as exc:  # last resort: one line unless --debug
        display.finish()
        if kw["debug"]:
            traceback.print_exc()
        click.echo(f"asciichat-client: unexpected error: {exc!r}", err=True)
        return 1
    display.finish()
    return code


def main() -> None:
    client_command(prog_name="asciichat-client")


if __name__ == "__main__":
    main()
