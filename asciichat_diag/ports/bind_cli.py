"""`diag bind`: why binding a port fails, measured with and without SO_REUSEADDR/SO_REUSEPORT."""

from __future__ import annotations

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


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("port", type=click.IntRange(1, 65535))
@click.option(
    "--host",
    "hosts",
    multiple=True,
    metavar="ADDR",
    help="Address to bind (repeatable). Default: 127.0.0.1 and ::1, like ascii-chat's TCP server.",
)
@click.option(
    "--retries",
    type=click.IntRange(0, 30),
    default=0,
    show_default=True,
    help="Retries after the first try, for variants that fail with EADDRINUSE.",
)
@click.option(
    "--backoff",
    "backoff_s",
    type=click.FloatRange(0.0, 60.0),
    default=0.1,
    show_default=True,
    help="First wait between tries in seconds; doubles each retry.",
)
@click.option(
    "--scenario",
    type=click.Choice(["time-wait", "time-wait-noreuse", "live-listener", "child-holds"]),
    help="Build this case on PORT itself (real loopback sockets), then measure it. "
    "time-wait leaves its TIME_WAIT socket on PORT for the kernel's 60 s.",
)
@json_option
@color_option
@handle_errors
def bind(
    port: int,
    hosts: tuple[str, ...],
    retries: int,
    backoff_s: float,
    scenario: str | None,
    as_json: bool,
    color: str,
) -> None:
    """Try bind()+listen() on PORT per address, with and without SO_REUSEADDR and SO_REUSEPORT.

    Reports errno, which call failed, the time to success over --retries with exponential
    --backoff, the sockets that block the port (owner, state, TIME_WAIT time left), and one
    sentence on what to do. Exit status: 0 when a SO_REUSEADDR listener (what servers use) binds
    on every address (for --scenario: when the scenario behaves as expected), 1 otherwise, 2 on
    bad usage.

    \b
    Examples:
      diag bind 27224                          can the TCP server bind right now?
      diag bind 27226 --retries 5 --backoff 0.2
      diag bind 27224 --host 127.0.0.1 --json
      diag bind 27500 --scenario time-wait     blocked without SO_REUSEADDR, immediate with it
      diag bind 27500 --scenario child-holds   a child that inherited the listener
    """
    import ipaddress

    from asciichat_diag.ports.bind import DEFAULT_HOSTS, run_bind, run_scenario
    from asciichat_diag.ports.gather import ipv6_loopback_available
    from asciichat_diag.ports.model import INFO, Finding

    chosen = list(hosts or DEFAULT_HOSTS)
    skipped: list[str] = []
    if not hosts and not ipv6_loopback_available():
        # the default pair on a host without IPv6: measure what exists instead of failing on ::1
        skipped = [h for h in chosen if ":" in h]
        chosen = [h for h in chosen if ":" not in h]
    for h in chosen:
        try:
            addr = ipaddress.ip_address(h)
        except ValueError:
            raise DiagError(f"--host {h!r} is not an IP address (give 127.0.0.1, ::1, ...)", EXIT_USAGE) from None
        if scenario and not addr.is_loopback:
            raise DiagError(f"--scenario builds sockets on loopback only; {h} is not a loopback address", EXIT_USAGE)
    if scenario:
        try:
            report = run_scenario(scenario, port, chosen, retries, backoff_s)
        except OSError as exc:
            raise DiagError(
                f"cannot build scenario {scenario} on port {port}: {exc.strerror or exc} (is the port in use? "
                "pick a free one)",
                EXIT_PROBLEM,
            ) from exc
        code = EXIT_OK if report.scenario_matches else EXIT_PROBLEM
    else:
        report = run_bind(port, chosen, retries, backoff_s)
        code = EXIT_OK if report.ok else EXIT_PROBLEM
    for h in skipped:
        report.findings.append(Finding(INFO, "no_ipv6", f"{h} skipped: this host has no IPv6 loopback"))
    if as_json:
        import sys

        from asciichat_diag.ports.jsonout import write_json

        write_json(report, sys.stdout)
    else:
        from asciichat_diag.ports.render import bind_renderable

        make_console(color).print(bind_renderable(report))
    raise SystemExit(code)
