"""The ``procvisor`` command group; each subcommand lives in its own module."""

from __future__ import annotations

import signal
from typing import Any

import click

from procvisor.cli._config import check_config
from procvisor.cli._control import CONTROL_COMMANDS
from procvisor.cli._pools import POOL_COMMANDS
from procvisor.cli._run import as_usage_line, run_command
from procvisor.cli._up import up_command


class _Group(click.Group):
    """A click group whose errors are one ``procvisor: ...`` line, like the rest.

    Ctrl-C while click parses the command line exits 130 like any other Ctrl-C, not with
    click's "Aborted!" and status 1.
    """

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except KeyboardInterrupt:
            raise click.exceptions.Exit(128 + signal.SIGINT) from None

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args:
            return super().parse_args(ctx, args)  # click shows the help, as it should
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            raise as_usage_line(exc, ctx) from None

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as exc:
            raise as_usage_line(exc, ctx) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise click.exceptions.Exit(128 + signal.SIGINT) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """procvisor: run, supervise, pool and schedule processes."""


main.add_command(run_command)
main.add_command(check_config)
for _command in CONTROL_COMMANDS:
    main.add_command(_command)
main.add_command(up_command)


@main.group("pool", cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
def pool_group() -> None:
    """Send tasks to the daemon's command pools ([pools.NAME]) and show their stats."""


for _command in POOL_COMMANDS:
    pool_group.add_command(_command)
