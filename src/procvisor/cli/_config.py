"""``procvisor check-config``: load and validate the config file without starting anything.

The file is found as the daemon finds it (``-c FILE``, else ``$PROCVISOR_CONFIG``, else
``./procvisor.toml``) and checked as the daemon checks it, including what it asks of this
machine (``user``/``group`` need root and must exist, ``cwd`` must be a directory).

Output: one line on stdout and exit status 0 when the file is valid; otherwise every
problem, one ``procvisor: FILE: KEY: message`` line each on stderr, and exit status 2.
Only config problems are reported that way: anything else is a bug and surfaces as one.
"""

from __future__ import annotations

import click

from procvisor.cli._run import OneLineCommand

__all__ = ["EXIT_INVALID", "check_config"]

EXIT_INVALID = 2
"""The config file is missing, unreadable or invalid (as for a usage error)."""


@click.command(
    "check-config",
    cls=OneLineCommand,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.option(
    "-c",
    "--config",
    "config_file",
    metavar="FILE",
    help="Config file (default: $PROCVISOR_CONFIG, else ./procvisor.toml).",
)
@click.pass_context
def check_config(ctx: click.Context, config_file: str | None) -> None:
    """Check the config file: TOML syntax, keys, values, dependencies; start nothing.

    Prints one line and exits 0 when it is valid; prints every problem on stderr and exits 2
    when it is not.
    """
    # Imported here: pydantic and the models cost ~100 ms, which no other command should pay.
    from procvisor.daemon.config import ConfigError, find_config, load_config  # noqa: PLC0415

    try:
        path = find_config(config_file)
        config = load_config(path)
    except ConfigError as exc:
        for line in exc.lines():
            click.echo(f"procvisor: {line}", err=True)
        ctx.exit(EXIT_INVALID)
    parts = [_listing("service", list(config.services))]
    if config.pools:
        parts.append(_listing("pool", list(config.pools)))
    click.echo(f"{path}: OK ({'; '.join(parts)})")


def _listing(what: str, names: list[str]) -> str:
    """``"2 services: a, b"``, ``"1 pool: p"``, ``"no services"``."""
    if not names:
        return f"no {what}s"
    return f"{len(names)} {what}{'s' if len(names) != 1 else ''}: {', '.join(names)}"
