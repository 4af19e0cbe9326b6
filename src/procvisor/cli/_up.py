"""``procvisor up``: start the supervisor daemon on a config file.

Foreground by default (logs on stderr, for systemd and containers); ``-d`` detaches and
returns once the daemon serves its API and has started its services. The config and the
state directory are found as every other command finds them (``-c``, ``$PROCVISOR_CONFIG``,
``./procvisor.toml``; ``[daemon] state_dir``, ``$PROCVISOR_STATE_DIR``, ``.procvisor/``).
"""

from __future__ import annotations

from pathlib import Path

import click

from procvisor.cli._config import config_file_option
from procvisor.cli._run import OneLineCommand

__all__ = ["up_command"]


@click.command("up", cls=OneLineCommand, context_settings={"help_option_names": ["-h", "--help"]})
@config_file_option
@click.option(
    "-d",
    "--detach",
    is_flag=True,
    help="Run in the background (pidfile and daemon.log in state_dir).",
)
@click.pass_context
def up_command(ctx: click.Context, config_file: str | None, detach: bool) -> None:
    """Start the daemon and every service with autostart; stop them all on SIGTERM or Ctrl-C."""
    from procvisor.daemon._daemon import DaemonError, run_daemon  # noqa: PLC0415
    from procvisor.daemon.config import ConfigError, find_config  # noqa: PLC0415

    try:
        code = run_daemon(Path(find_config(config_file)), detach=detach)
    except ConfigError as exc:
        for line in exc.lines():
            click.echo(f"procvisor: {line}", err=True)
        ctx.exit(2)
    except DaemonError as exc:
        click.echo(f"procvisor: {exc}", err=True)
        ctx.exit(1)
    ctx.exit(code)
