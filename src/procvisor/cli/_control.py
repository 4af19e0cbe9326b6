"""The commands that control a running daemon, from ``status`` to ``down`` and ``token``.

They are status, start, stop, restart, scale, signal, logs, events, reload, down and token.
Each is a thin client of the daemon's HTTP API on its Unix socket (see
:mod:`procvisor.cli._client`), takes ``-c/--config FILE`` to say which daemon, and, where it
prints data, ``--json`` to print the API's answer as JSON instead of text.

Exit statuses: 0 done; 1 the daemon refused or failed the request (unknown service, bad
value); 2 bad usage or an invalid config file (``reload`` too); 3 no daemon running; 124
``down --timeout`` expired; 130 Ctrl-C (``logs -f`` ends this way, quietly, like ``tail -f``);
141 ``logs``' output pipe closed (``procvisor logs web | head``), quietly, as if killed by
SIGPIPE like ``cat``.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

from procvisor.cli._client import (
    EXIT_TIMEOUT,
    CliError,
    ConnectionLost,
    DaemonError,
    InvalidConfig,
    connect,
    locate,
)
from procvisor.cli._run import OneLineCommand, OneLineGroup, UsageLine, _Duration

__all__ = ["CONTROL_COMMANDS"]

EXIT_INTERRUPTED = 128 + signal.SIGINT
"""Ctrl-C, e.g. to end ``logs -f``."""
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE
"""Whoever read ``logs``' output stopped reading (``| head``)."""

_F = TypeVar("_F", bound=Callable[..., Any])

_STATUS_COLUMNS = (
    "NAME",
    "STATE",
    "PID",
    "UPTIME",
    "RESTARTS",
    "LAST-EXIT",
    "HEALTH",
    "CPU",
    "MEM",
)


def _command(name: str, *, numbers: bool = False) -> Callable[[_F], click.Command]:
    """A control command named ``name``, with ``-c/--config``.

    ``numbers``: an argument may be negative (``scale web -1`` then says the count must be
    0 or more, instead of "no such option: -1").
    """

    def decorate(function: _F) -> click.Command:
        function = click.option(
            "-c",
            "--config",
            "config_file",
            metavar="FILE",
            help="Config file of the daemon (default: $PROCVISOR_CONFIG, else ./procvisor.toml).",
        )(function)
        settings = {"help_option_names": ["-h", "--help"], "ignore_unknown_options": numbers}
        return click.command(name, cls=OneLineCommand, context_settings=settings)(function)

    return decorate


_json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print the daemon's answer as JSON."
)


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2))


def _show(
    config_file: str | None,
    path: str,
    params: dict[str, Any],
    as_json: bool,
    render: Callable[[Any], str],
) -> None:
    """GET ``path`` and print the answer: as JSON, or as ``render`` makes it (if not empty)."""
    with connect(config_file) as daemon:
        items = daemon.get(path, params)
    if as_json:
        _print_json(items)
    elif text := render(items):
        click.echo(text)


_CONFIG_HELP = "Config file of the daemon."


def listing_group(
    name: str, path: str, render: Callable[[Any], str], *, help: str, all_help: str
) -> click.Group:
    """A command group that lists what GET ``path`` answers (``--all``: ``all=true`` too)
    when no subcommand is given; its subcommands get the group's ``-c FILE`` as their obj."""

    @click.group(
        name,
        cls=OneLineGroup,
        invoke_without_command=True,
        help=help,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    @click.option(
        "-c", "--config", "config_file", metavar="FILE", help="Config file of the daemon."
    )
    @click.option("--all", "show_all", is_flag=True, help=all_help)
    @_json_option
    @click.pass_context
    def group(ctx: click.Context, config_file: str | None, show_all: bool, as_json: bool) -> None:
        ctx.obj = config_file
        if ctx.invoked_subcommand is None:
            _show(config_file, path, {"all": show_all or None}, as_json, render)

    return group


def _table(rows: Sequence[Sequence[str]]) -> str:
    """Rows as left-aligned columns two spaces apart."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


# --------------------------------------------------------------------------- status


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _last_exit(last: dict[str, Any] | None) -> str:
    if not last:
        return "-"
    if last.get("signal") is not None:
        return str(last["signal"])
    if last.get("code") is not None:
        return f"exit {last['code']}"
    return "not started"  # the spawn failed; the reason line below the table says why


def _status_rows(items: Sequence[dict[str, Any]]) -> list[list[str]]:
    from procvisor.policy.units import format_duration, format_size  # noqa: PLC0415

    def dash(value: Any, render: Callable[[Any], str] = str) -> str:
        return "-" if value is None else render(value)

    rows = [list(_STATUS_COLUMNS)]
    for item in items:
        rows.append(
            [
                str(item["name"]),
                str(item["state"]),
                dash(item.get("pid")),
                dash(item.get("uptime"), format_duration),
                dash(item.get("restarts")),
                _last_exit(item.get("last_exit")),
                dash(item.get("health")),
                dash(item.get("cpu_percent"), lambda v: f"{v:.1f}%"),
                dash(item.get("rss"), format_size),
            ]
        )
    return rows


def format_status(items: Sequence[dict[str, Any]]) -> str:
    """The status table, then one line per instance that is fatal, in backoff or waiting for
    READY=1, and why, and one per notify instance that sent a status text."""
    lines = [_table(_status_rows(items))]
    lines += [f"{item['name']}: {item['reason']}" for item in items if item.get("reason")]
    lines += [
        f"{item['name']} says: {item['status_text']}" for item in items if item.get("status_text")
    ]
    return "\n".join(lines)


@_command("status")
@_json_option
@click.argument("service", metavar="[SVC]", required=False)
def status(config_file: str | None, as_json: bool, service: str | None) -> None:
    """Show the state of every instance (of SVC).

    Columns: NAME STATE PID UPTIME RESTARTS LAST-EXIT HEALTH CPU MEM ('-': not known or
    not applicable). Instances that are fatal, in backoff or waiting for READY=1 are listed
    below with the reason, and the last STATUS= text of notify services.
    """
    _show(config_file, "/status", {"service": service}, as_json, format_status)


# --------------------------------------------------------------------------- actions


def _report(verb: str, result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        _print_json(result)
        return
    instances = result.get("instances") or []
    if instances:
        click.echo(f"{verb} {', '.join(instances)}")
    else:
        click.echo(f"{verb} nothing")


_targets_argument = click.argument("targets", metavar="SVC...", nargs=-1, required=True)


@_command("start")
@_json_option
@_targets_argument
def start(config_file: str | None, as_json: bool, targets: tuple[str, ...]) -> None:
    """Start services, all, or instances (web:1).

    Instances already running are left alone; the ones started are printed.
    """
    with connect(config_file) as daemon:
        result = daemon.post("/start", {"targets": list(targets)})
    _report("started", result, as_json)


@_command("stop")
@_json_option
@_targets_argument
def stop(config_file: str | None, as_json: bool, targets: tuple[str, ...]) -> None:
    """Stop services, all, or instances (web:1).

    Returns once they have stopped; the ones stopped are printed.
    """
    with connect(config_file) as daemon:
        result = daemon.post("/stop", {"targets": list(targets)})
    _report("stopped", result, as_json)


@_command("restart")
@click.option(
    "--rolling",
    is_flag=True,
    help="One instance at a time, each once the previous one runs again.",
)
@_json_option
@_targets_argument
def restart(
    config_file: str | None, rolling: bool, as_json: bool, targets: tuple[str, ...]
) -> None:
    """Restart services, all, or instances (web:1)."""
    with connect(config_file) as daemon:
        result = daemon.post("/restart", {"targets": list(targets), "rolling": rolling})
    _report("restarted", result, as_json)


@_command("scale", numbers=True)
@_json_option
@click.argument("service", metavar="SVC")
@click.argument("instances", metavar="N", type=click.IntRange(min=0))
def scale(config_file: str | None, as_json: bool, service: str, instances: int) -> None:
    """Run N instances of SVC.

    Starts or stops the difference; the instances started or stopped are printed.
    """
    with connect(config_file) as daemon:
        result = daemon.post("/scale", {"service": service, "instances": instances})
    if as_json:
        _print_json(result)
        return
    changed = result.get("instances") or []
    suffix = f" ({', '.join(changed)})" if changed else " (no change)"
    click.echo(f"scaled {service} to {instances} instance{'s' if instances != 1 else ''}{suffix}")


def _signal_value(text: str) -> int | str:
    """What the API takes: a number as a number, a name as given."""
    return int(text) if text.isdigit() else text


def _signal_label(value: int | str) -> str:
    if isinstance(value, int):
        return _signal_name(value)
    name = value.strip().upper()
    return name if name.startswith("SIG") else f"SIG{name}"


@_command("signal")
@_json_option
@click.argument("target", metavar="SVC")
@click.argument("sig", metavar="SIG")
def send_signal(config_file: str | None, as_json: bool, target: str, sig: str) -> None:
    """Send a signal to the processes of SVC.

    SIG is a name (HUP, SIGUSR1, any case) or a number (15). SVC may be a service, all, or
    one instance (web:1); every process of each instance's group gets the signal.
    """
    value = _signal_value(sig)
    with connect(config_file) as daemon:
        result = daemon.post("/signal", {"targets": [target], "signal": value})
    if as_json:
        _print_json(result)
        return
    instances = result.get("instances") or []
    label = _signal_label(value)
    if instances:
        click.echo(f"sent {label} to {', '.join(instances)}")
    else:
        click.echo(f"sent {label} to nothing (no instance of {target} is running)")


# --------------------------------------------------------------------------- logs, events


def _quiet_broken_pipe() -> None:
    """Point stdout at /dev/null, so that Python's flush at exit does not fail again."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


@_command("logs")
@click.argument("target", metavar="SVC", required=False)
@click.option("--job", "job_id", type=int, metavar="ID", help="A job's output instead of SVC's.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new output (Ctrl-C ends).")
@click.option(
    "-n",
    "--lines",
    type=click.IntRange(min=0),
    default=100,
    show_default=True,
    help="Lines of history to print first, per instance.",
)
@click.option("--stderr", "use_stderr", is_flag=True, help="Show stderr instead of stdout.")
def logs(
    config_file: str | None,
    target: str | None,
    job_id: int | None,
    follow: bool,
    lines: int,
    use_stderr: bool,
) -> None:
    """Print (and follow) the output of SVC, or of a job (--job ID).

    SVC is a service (all its instances), one instance (web:1), or 'all', the default: every
    instance of every service, as docker compose logs does. With several instances, each
    line is prefixed by its instance ('web:0 | ...'). A job's stdout and stderr are in one
    log. With -f, Ctrl-C ends it with status 130.
    """
    if target is not None and job_id is not None:
        raise UsageLine("name a service (SVC) or a job (--job ID), not both")
    if job_id is not None:
        target = f"job:{job_id}"
    elif target is None:
        target = "all"
    params = {
        "target": target,
        "stream": "stderr" if use_stderr else "stdout",
        "lines": lines,
        "follow": "true" if follow else "false",
    }
    out = sys.stdout.buffer
    printed = False
    try:
        with connect(config_file) as daemon:
            with daemon.stream("/logs", params) as response:
                for chunk in response.iter_bytes():
                    printed = printed or bool(chunk)
                    out.write(chunk)
                    out.flush()
            if not printed and not follow and not use_stderr and job_id is None:
                # A crashing service often writes only to stderr: say so, not just nothing.
                probe = {**params, "stream": "stderr", "lines": 1}
                with daemon.stream("/logs", probe) as response:
                    if any(response.iter_bytes()):
                        click.echo(
                            f"procvisor: {target} wrote nothing to stdout; its stderr has "
                            f"output: procvisor logs --stderr {target}",
                            err=True,
                        )
    except KeyboardInterrupt:
        raise click.exceptions.Exit(EXIT_INTERRUPTED) from None
    except BrokenPipeError:
        _quiet_broken_pipe()
        raise click.exceptions.Exit(EXIT_BROKEN_PIPE) from None


def _event_target(event: dict[str, Any]) -> str:
    instance, service = event.get("instance"), event.get("service")
    if isinstance(instance, str) and instance:
        return instance
    if isinstance(instance, int) and service:
        return f"{service}:{instance}"
    return str(service or "daemon")


def format_events(events: Sequence[dict[str, Any]]) -> str:
    """Events as lines: local time, instance (or service, or 'daemon'), kind, message."""
    if not events:
        return ""
    rows = [
        [
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(event["ts"]))),
            _event_target(event),
            str(event.get("kind", "")),
            str(event.get("message", "")),
        ]
        for event in events
    ]
    return _table(rows)


@_command("events")
@_json_option
@click.option(
    "-n",
    "--lines",
    "limit",
    type=click.IntRange(min=1, max=10_000),
    default=50,
    show_default=True,
    help="How many of the latest events.",
)
@click.argument("service", metavar="[SVC]", required=False)
def events(config_file: str | None, as_json: bool, limit: int, service: str | None) -> None:
    """Show recent events (of SVC).

    Starts, exits, restarts, health changes, reloads: local time, instance (or service, or
    'daemon'), kind and message, oldest first.
    """
    _show(config_file, "/events", {"service": service, "limit": limit}, as_json, format_events)


# --------------------------------------------------------------------------- daemon


@_command("reload")
@_json_option
def reload(config_file: str | None, as_json: bool) -> None:
    """Re-read the config file and apply the changes.

    Nothing changes if the file is invalid: every problem is printed, one per line, and
    the status is 2.
    """
    with connect(config_file) as daemon:
        try:
            result = daemon.post("/reload")
        except DaemonError as exc:
            if exc.status == 400:
                raise InvalidConfig(*exc.lines) from None
            raise
    if as_json:
        _print_json(result)
        return
    changes = [
        f"{what}: {', '.join(result[what])}"
        for what in ("started", "stopped", "restarted", "scaled")
        if result.get(what)
    ]
    for line in changes or ["no changes"]:
        click.echo(line)


class _StillStopping(CliError):
    exit_code = EXIT_TIMEOUT


def _wait_for_exit(pid: int, deadline: float) -> bool:
    """Wait until process ``pid`` has ended (a zombie counts); False at ``deadline``."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    except OSError:  # no pidfd (old kernel, seccomp): look every 50 ms instead
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            except PermissionError:
                pass
            time.sleep(0.05)
        return False
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        remaining = max(0.0, deadline - time.monotonic())
        return bool(poller.poll(remaining * 1000))
    finally:
        os.close(fd)


@_command("down")
@click.option(
    "--timeout",
    type=_Duration(positive=True),
    default="60s",
    show_default=True,
    metavar="DURATION",
    help="How long to wait for the daemon to stop its services and exit.",
)
def down(config_file: str | None, timeout: float) -> None:
    """Stop every service and the daemon, and wait.

    Returns once the daemon has exited.

    Exits 124 if the daemon is still there after --timeout (it goes on stopping).
    """
    deadline = time.monotonic() + timeout
    with connect(config_file) as daemon:
        pid = int(daemon.get("/info")["pid"])
        with contextlib.suppress(ConnectionLost):  # it may close before it answers
            daemon.post("/down")
        gone = _wait_for_exit(pid, deadline)
        # The socket stops answering when the daemon exits; this also covers a daemon whose
        # pid is not ours to see (another pid namespace).
        while gone and daemon.answers():
            if time.monotonic() >= deadline:
                gone = False
                break
            time.sleep(0.05)
    if not gone:
        raise _StillStopping(
            f"the daemon (pid {pid}) is still stopping after {timeout:g}s; it goes on "
            "stopping its services (see 'procvisor status')"
        )
    click.echo(f"daemon stopped (pid {pid})")


@_command("token")
def token(config_file: str | None) -> None:
    """Print the token the TCP listener requires.

    Clients of [daemon] http send it as 'Authorization: Bearer TOKEN'. It is read from
    [daemon] token_file, else the token file in the state directory.
    """
    from procvisor.daemon._token import token_path  # noqa: PLC0415

    location = locate(config_file)
    config = location.config()
    if config.daemon.http is None:
        raise CliError(
            f"[daemon] http is not set in {location.config_path}: the API is only on the "
            "Unix socket, which needs no token"
        )
    path = token_path(config, location.state_dir)
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise CliError(
            f"no token in {path} yet; the daemon creates it when it starts "
            f"(procvisor up -c {location.config_path} -d)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not text"
        raise CliError(f"cannot read {path}: {reason}") from None
    if not text:
        raise CliError(f"{path} is empty; write a token in it or delete it and restart")
    click.echo(text)


CONTROL_COMMANDS: list[click.Command] = [
    status,
    start,
    stop,
    restart,
    scale,
    send_signal,
    logs,
    events,
    reload,
    down,
    token,
]
"""The commands to add to the ``procvisor`` group."""
