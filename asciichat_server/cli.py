"""`asciichat-server`: options named as ascii-chat names them; runs until SIGINT/SIGTERM.

Example:  asciichat-server 127.0.0.1 ::1 --port 27224 --password 'correct horse' --log-level debug
"""

from __future__ import annotations

import asyncio
import gc
import signal
import sys
from pathlib import Path

import click

from asciichat_server import __version__
from asciichat_server.config import (
    DEFAULT_ADDRESSES,
    DEFAULT_MAX_CLIENTS,
    DEFAULT_PORT,
    DEFAULT_WEBSOCKET_PORT,
    MAX_CLIENTS_LIMIT,
    ConfigError,
    ServerConfig,
)
from asciichat_server.log import LEVELS, setup_logging
from asciichat_server.net import BindError

__all__ = ["EXIT_BIND", "EXIT_OK", "EXIT_USAGE", "main", "run_server"]

EXIT_OK = 0
EXIT_BIND = 1  # could not listen / runtime failure (ascii-chat uses 41 internally; shells want 1)
EXIT_USAGE = 2


def _fail(message: str, code: int) -> None:
    click.echo(f"asciichat-server: error: {message}", err=True)
    sys.exit(code)


async def run_server(config: ServerConfig) -> int:
    """Start, serve until SIGINT/SIGTERM, stop. Returns the process exit code."""
    from asciichat_server.server import AsciiChatServer

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    server = AsciiChatServer(config)
    try:
        try:
            await server.start()
        except BindError as exc:
            click.echo(f"asciichat-server: error: {exc}", err=True)
            return EXIT_BIND
        except ConfigError as exc:
            click.echo(f"asciichat-server: error: {exc}", err=True)
            return EXIT_USAGE
        # Everything allocated at start-up lives for the whole run: keep the GC from re-scanning it on
        # every full collection (shorter pauses in the handshake/frame paths).
        gc.freeze()
        await stop.wait()
        return EXIT_OK
    finally:
        await server.stop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


@click.command(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="Example: asciichat-server 127.0.0.1 ::1 --port 27224 --password 'correct horse battery'",
)
@click.argument("bind_addresses", nargs=-1, metavar="[ADDRESS]...")
@click.option("--port", "-p", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True, help="TCP port.")
@click.option("--address", "address4", metavar="IPV4", help="IPv4 address to bind (alone: only this one).")
@click.option("--address6", "address6", metavar="IPV6", help="IPv6 address to bind (alone: only this one).")
@click.option(
    "--max-clients",
    type=click.IntRange(1, MAX_CLIENTS_LIMIT),
    default=DEFAULT_MAX_CLIENTS,
    show_default=True,
    help=f"Client slots (1-{MAX_CLIENTS_LIMIT}).",
)
@click.option("--no-encrypt", is_flag=True, help="Plaintext sessions (clients must also use --no-encrypt).")
@click.option("--password", help="Require this password (8-256 bytes); Argon2id key derived once at start.")
@click.option(
    "--key",
    "key_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Server identity: OpenSSH ed25519 private key (unencrypted), or a 32-byte seed file (binary or 64 hex).",
)
@click.option(
    "--client-keys",
    "client_keys_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Allow-list: one 'ssh-ed25519 AAAA...' or 64-hex public key per line.",
)
@click.option(
    "--key-variant",
    type=click.Choice(["c41", "head"]),
    default="c41",
    show_default=True,
    help="Session-key rule assumed for allow-list clients without a password (cannot be detected there).",
)
@click.option("--log-file", type=click.Path(dir_okay=False, path_type=Path), help="Also write the log here.")
@click.option("--log-level", type=click.Choice(list(LEVELS)), default="info", show_default=True)
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--websocket-port", type=click.IntRange(0, 65535), default=DEFAULT_WEBSOCKET_PORT, show_default=True)
@click.option("--no-websocket", is_flag=True, help="Do not start the WebSocket listener.")
@click.option("--ws-plaintext", is_flag=True, help="WebSocket clients skip the handshake (for clients that cannot).")
@click.option(
    "--bind-retries",
    type=click.IntRange(0, 20),
    default=5,
    show_default=True,
    help="Extra bind tries per address (exponential backoff from 0.1 s) before giving up on it.",
)
@click.option(
    "--max-connect-rate",
    type=click.FloatRange(min=0),
    default=0,
    metavar="PER_S",
    help="New connections a second from one address (bursts of twice that); 0 = no limit.",
)
@click.option(
    "--max-pending-per-ip",
    type=click.IntRange(min=0),
    default=0,
    metavar="N",
    help="Connections from one address still in their handshake at once; 0 = no limit.",
)
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
@click.version_option(__version__, prog_name="asciichat-server")
def main(
    bind_addresses: tuple[str, ...],
    port: int,
    address4: str | None,
    address6: str | None,
    max_clients: int,
    no_encrypt: bool,
    password: str | None,
    key_file: Path | None,
    client_keys_file: Path | None,
    key_variant: str,
    log_file: Path | None,
    log_level: str,
    log_format: str,
    websocket_port: int,
    no_websocket: bool,
    ws_plaintext: bool,
    bind_retries: int,
    max_connect_rate: float,
    max_pending_per_ip: int,
    debug: bool,
) -> None:
    """Reference ascii-chat server (ACIP over TCP, and WebSocket when installed).

    ADDRESS: up to one IPv4 and one IPv6 address to bind; default 127.0.0.1 and ::1 (two sockets).
    """
    addresses = list(bind_addresses)
    addresses += [a for a in (address4, address6) if a]
    config = ServerConfig(
        addresses=addresses or list(DEFAULT_ADDRESSES),
        port=port,
        max_clients=max_clients,
        encrypt=not no_encrypt,
        password=password,
        key_file=key_file,
        client_keys_file=client_keys_file,
        signature_auth_variant=key_variant,
        log_file=log_file,
        log_level=log_level,
        log_format=log_format,
        websocket=not no_websocket,
        websocket_port=websocket_port,
        ws_plaintext=ws_plaintext,
        bind_retries=bind_retries,
        max_connect_rate=max_connect_rate,
        max_pending_per_ip=max_pending_per_ip,
    )
    try:
        config.validate()
        setup_logging(log_level, log_format, log_file)
    except (ConfigError, ValueError, OSError) as exc:
        _fail(str(exc), EXIT_USAGE)
    try:
        code = asyncio.run(run_server(config))
    except KeyboardInterrupt:  # SIGINT before the handlers were installed
        code = EXIT_OK
    except Exception as exc:
        if debug:
            raise
        _fail(f"{type(exc).__name__}: {exc}", EXIT_BIND)
    sys.exit(code)


if __name__ == "__main__":
    main()
