"""The ``procvisor`` command group; each subcommand lives in its own module."""

from __future__ import annotations

import click

from procvisor.cli._config import check_config, startup
from procvisor.cli._control import CONTROL_COMMANDS
from procvisor.cli._jobs import JOB_COMMANDS, schedules_group
from procvisor.cli._monitor import MONITOR_COMMANDS, alerts_group
from procvisor.cli._pools import POOL_COMMANDS
from procvisor.cli._run import OneLineGroup, run_command
from procvisor.cli._up import up_command


@click.group(cls=OneLineGroup, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """procvisor: run, supervise, pool and schedule processes."""


main.add_command(run_command)
main.add_command(check_config)
main.add_command(startup)
for _command in CONTROL_COMMANDS:
    main.add_command(_command)
main.add_command(up_command)


@main.group("pool", cls=OneLineGroup, context_settings={"help_option_names": ["-h", "--help"]})
def pool_group() -> None:
    """Send tasks to the daemon's command pools ([pools.NAME]) and show their stats."""


for _command in POOL_COMMANDS:
    pool_group.add_command(_command)

for _command in JOB_COMMANDS:
    main.add_command(_command)
for _command in MONITOR_COMMANDS:
    main.add_command(_command)
main.add_command(alerts_group)
main.add_command(schedules_group)
