"""`diag ports`: who holds a TCP port, on which family, and does a connection really get served."""

from __future__ import annotations

import time

import click

from asciichat_diag._common import (
    EXIT_OK,
    EXIT_PROBLEM,
    EXIT_USAGE,
    DiagError,
    color_option,
    handle_errors,
    json_option,
    make_console,
)

PORT = click.IntRange(1, 65535)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("ports", nargs=-1, type=PORT)
@click.option("--all", "all_ports", is_flag=True, help="Every TCP port that has a listener.")
@click.option("--acip", is_flag=True, help="Send PROTOCOL_VERSION: does an ACIP server answer, does it encrypt?")
@click.option("--ws", is_flag=True, help="WebSocket upgrade with subprotocol acip; report the first packet.")
@click.option("--ws-path", default="/", show_default=True, help="Path for the --ws upgrade.")
@click.option(
    "--expect",
    multiple=True,
    metavar="NAME",
    help="Process expected to own the listener (repeatable). Default: asciichat-server, ascii-chat.",
)
@click.option("--any-owner", is_flag=True, help="Do not check who owns the listener.")
@click.option(
    "--family",
    "families",
    type=click.Choice(["both", "ipv4", "ipv6"]),
    default="both",
    show_default=True,
    help="Families the port must be served on.",
)
@click.option(
    "--probe/--no-probe", default=None, help="TCP connect to 127.0.0.1 and ::1 (default: on; off with --all)."
)
@click.option(
    "--timeout", "timeout_s", type=click.FloatRange(0.01, 60), default=1.0, show_default=True, help="Seconds per probe."
)
@click.option("--watch", is_flag=True, help="Refresh continuously (Ctrl-C to stop).")
@click.option(
    "--interval",
    type=click.FloatRange(0.1, 3600),
    default=1.0,
    show_default=True,
    help="Seconds between --watch refreshes.",
)
@click.option(
    "--backend",
    type=click.Choice(["auto", "sock_diag", "psutil"]),
    default="auto",
    show_default=True,
    help="Socket source: the kernel's sock_diag (Linux) or psutil.",
)
@json_option
@color_option
@handle_errors
def ports(
    ports: tuple[int, ...],
    all_ports: bool,
    acip: bool,
    ws: bool,
    ws_path: str,
    expect: tuple[str, ...],
    any_owner: bool,
    families: str,
    probe: bool | None,
    timeout_s: float,
    watch: bool,
    interval: float,
    backend: str,
    as_json: bool,
    color: str,
) -> None:
    """Who holds TCP PORT, is it served on IPv4 and IPv6, and does it answer.

    Lists every socket on the port (family, v6only, state, TIME_WAIT time left, PID, process,
    exe, parent), probes 127.0.0.1 and ::1 separately, and flags what is wrong. Exit status: 0
    when the port is listened on and the probes succeed, 1 when something is wrong, 2 on bad usage.
    --json prints one object per port (a list for several ports or --all): every socket (one per
    line, processes referenced by PID under "processes"), probes, and findings with stable codes.

    \b
    Examples:
      diag ports 27224 --acip           TCP server: who listens, does ACIP answer
      diag ports 27226 --ws             WebSocket server: upgrade with subprotocol acip
      diag ports 27224 27226 --json
      diag ports --all --any-owner      every listener on this host
      diag ports 27224 --watch
    """
    if not ports and not all_ports:
        raise DiagError("give at least one PORT, or --all (see diag ports --help)", EXIT_USAGE)
    if ports and all_ports:
        raise DiagError("give PORTs or --all, not both", EXIT_USAGE)
    if watch and as_json:
        raise DiagError("--watch and --json do not mix: use --json in a loop instead", EXIT_USAGE)
    from asciichat_diag.ports.gather import DEFAULT_EXPECT, gather_all, gather_port
    from asciichat_diag.ports.sockdiag import SockDiagUnavailable

    expected = [] if any_owner else list(expect or DEFAULT_EXPECT)
    do_probe = (not all_ports) if probe is None else probe

    def gather():
        try:
            return _gather()
        except SockDiagUnavailable as exc:
            raise DiagError(f"--backend sock_diag: {exc}; use --backend psutil", EXIT_USAGE) from exc

    def _gather():
        if all_ports:
            return gather_all(
                expect=list(expect) if expect and not any_owner else None,
                probe=do_probe,
                timeout_s=timeout_s,
                backend=backend,
            )
        return [
            gather_port(
                p,
                expect=expected,
                families=families,
                probe=do_probe,
                acip=acip,
                ws=ws,
                timeout_s=timeout_s,
                backend=backend,
                ws_path=ws_path,
            )
            for p in ports
        ]

    def status(reports) -> int:
        if all_ports:
            return EXIT_OK if all(r.ok for r in reports) else EXIT_PROBLEM
        return EXIT_OK if reports and all(r.ok for r in reports) else EXIT_PROBLEM

    if as_json:
        import sys

        from asciichat_diag.ports.jsonout import write_json

        reports = gather()
        write_json(reports if len(reports) != 1 or all_ports else reports[0], sys.stdout)
        raise SystemExit(status(reports))

    from asciichat_diag.ports.render import ports_renderable

    console = make_console(color)
    if not watch:
        reports = gather()
        console.print(ports_renderable(reports))
        raise SystemExit(status(reports))

    from rich.console import Group
    from rich.live import Live
    from rich.text import Text

    reports = []
    try:
        with Live(console=console, auto_refresh=False, screen=False) as live:
            while True:
                reports = gather()
                stamp = Text(time.strftime("%H:%M:%S") + f"  refresh every {interval:g} s, Ctrl-C to stop", style="dim")
                live.update(Group(stamp, ports_renderable(reports)), refresh=True)
                time.sleep(interval)
    except KeyboardInterrupt:
        pass
    raise SystemExit(status(reports))
