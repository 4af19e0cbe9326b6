"""``procvisor check-config`` and ``startup``: the config file, checked without a daemon.

``check-config`` loads and validates the config file without starting anything;
``startup`` prints a systemd unit that runs the daemon on it at boot.

The file is found as the daemon finds it (``-c FILE``, else ``$PROCVISOR_CONFIG``, else
``./procvisor.toml``) and checked as the daemon checks it, including what it asks of this
machine (``user``/``group`` need root and must exist, ``cwd`` must be a directory).

Output: one line on stdout and exit status 0 when the file is valid; otherwise every
problem, one ``procvisor: FILE: KEY: message`` line each on stderr, and exit status 2.
Only config problems are reported that way: anything else is a bug and surfaces as one.
"""

from __future__ import annotations

import contextlib
import math
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import click

from procvisor.cli._run import OneLineCommand

if TYPE_CHECKING:
    from procvisor.daemon.config import Config

__all__ = ["EXIT_INVALID", "check_config", "config_file_option", "startup"]

EXIT_INVALID = 2
"""The config file is missing, unreadable or invalid (as for a usage error)."""

config_file_option = click.option(
    "-c",
    "--config",
    "config_file",
    metavar="FILE",
    help="Config file (default: $PROCVISOR_CONFIG, else ./procvisor.toml).",
)
"""``-c/--config FILE``, for the commands that read the config file themselves."""


@contextlib.contextmanager
def _reported(ctx: click.Context) -> Iterator[None]:
    """Turn a config error into every problem on stderr and exit status 2."""
    # Imported here: pydantic and the models cost ~100 ms, which no other command should pay.
    from procvisor.daemon.config import ConfigError  # noqa: PLC0415

    try:
        yield
    except ConfigError as exc:
        for line in exc.lines():
            click.echo(f"procvisor: {line}", err=True)
        ctx.exit(EXIT_INVALID)


def _load(ctx: click.Context, config_file: str | None) -> tuple[Path, Config]:
    """The config file found as the daemon finds it, and its config (or exit 2)."""
    from procvisor.daemon.config import find_config, load_config  # noqa: PLC0415

    with _reported(ctx):
        path = find_config(config_file)
        return path, load_config(path)
    raise AssertionError("unreachable: _reported exits")


@click.command(
    "check-config",
    cls=OneLineCommand,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@config_file_option
@click.pass_context
def check_config(ctx: click.Context, config_file: str | None) -> None:
    """Check the config file: TOML syntax, keys, values, dependencies; start nothing.

    Prints one line and exits 0 when it is valid; prints every problem on stderr and exits 2
    when it is not.
    """
    path, config = _load(ctx, config_file)
    parts = [_listing("service", list(config.services))]
    if config.pools:
        parts.append(_listing("pool", list(config.pools)))
    click.echo(f"{path}: OK ({'; '.join(parts)})")


def _listing(what: str, names: list[str]) -> str:
    """``"2 services: a, b"``, ``"1 pool: p"``, ``"no services"``."""
    if not names:
        return f"no {what}s"
    return f"{len(names)} {what}{'s' if len(names) != 1 else ''}: {', '.join(names)}"


@click.command(
    "startup",
    cls=OneLineCommand,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@config_file_option
@click.option("--user", metavar="USER", help="Run the daemon as this user (User=).")
@click.pass_context
def startup(ctx: click.Context, config_file: str | None, user: str | None) -> None:
    """Print a systemd unit that starts the daemon at boot, as `pm2 startup` does.

    The config is checked first. Save the unit as /etc/systemd/system/procvisor.service,
    then: systemctl daemon-reload && systemctl enable --now procvisor. The daemon tells
    systemd when it is ready (Type=notify) and pings its watchdog; TimeoutStopSec leaves
    room for every service's stop_timeout, dependents first.
    """
    from procvisor.daemon._specs import service_specs  # noqa: PLC0415
    from procvisor.supervisor._supervisor import start_levels  # noqa: PLC0415

    path, config = _load(ctx, config_file)
    path = path.resolve()
    with _reported(ctx):  # an env file that cannot be read
        specs = {spec.name: spec for spec in service_specs(config, str(path))}
    # `down` stops one dependency level at a time; each level takes its slowest service.
    stop = sum(
        max(
            specs[name].stop_timeout
            + (specs[name].hooks.timeout if specs[name].hooks.pre_stop else 0.0)
            for name in level
        )
        for level in start_levels(specs, specs)
    )
    lines = [
        "[Unit]",
        f"Description=procvisor ({path})",
        "Wants=network-online.target",
        "After=network-online.target",
        "",
        "[Service]",
        "Type=notify",
        f"ExecStart={_unit_words([sys.executable, '-m', 'procvisor', 'up', '-c', str(path)])}",
        "ExecReload=/bin/kill -HUP $MAINPID",
        f"WorkingDirectory={str(path.parent).replace('%', '%%')}",  # % is a specifier
        *([f"User={user}"] if user else []),
        f"TimeoutStopSec={math.ceil(stop) + 10}",
        "KillMode=mixed",
        "WatchdogSec=30",
        "Restart=on-failure",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    click.echo("\n".join(lines))


def _unit_words(words: list[str]) -> str:
    """``words`` as a unit file's command line: quoted as a shell would, and ``%`` (which
    systemd expands as a specifier) and ``$`` (a variable) escaped."""
    return shlex.join(words).replace("%", "%%").replace("$", "$$")
