"""``procvisor pool submit`` and ``procvisor pool stats``: the daemon's command pools.

``submit`` sends one JSON task to a ``[pools.NAME]`` pool and prints the worker's ``result``
as one line of JSON; a task that fails (an error answer, a timeout, a crashed worker, a
protocol error) prints one ``procvisor: ...`` line and exits 1. ``stats`` shows each pool's
workers, task counts and latency. Exit statuses are those of the other control commands.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

import click

from procvisor.cli._client import EXIT_USAGE, CliError, connect
from procvisor.cli._control import _command, _json_option, _print_json, _show, _table
from procvisor.cli._run import _Duration

__all__ = ["POOL_COMMANDS", "format_pools"]

_COLUMNS = (
    "NAME",
    "WORKERS",
    "BUSY",
    "QUEUED",
    "DONE",
    "FAILED",
    "TIMEOUTS",
    "CRASHED",
    "P50",
    "P99",
)


class _BadJson(CliError):
    exit_code = EXIT_USAGE


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f}ms"


def format_pools(items: Sequence[dict[str, Any]]) -> str:
    """The pools table, then one line per pool that is not running, and why."""
    rows = [list(_COLUMNS)]
    for item in items:
        st = item.get("stats") or {}
        if not st:
            rows.append([item["name"], "0", *["-"] * 8])
            continue
        rows.append(
            [
                item["name"],
                str(st["workers"]),
                str(st["busy"]),
                str(st["queued"]),
                str(st["done"]),
                str(st["failed"]),
                str(st["timed_out"]),
                str(st["workers_crashed"]),
                _ms(st.get("latency_p50")),
                _ms(st.get("latency_p99")),
            ]
        )
    lines = [_table(rows)] if items else ["no pools are configured"]
    lines += [f"{i['name']}: not running: {i['error']}" for i in items if i.get("error")]
    return "\n".join(lines)


@_command("submit")
@click.option(
    "--timeout",
    type=_Duration(positive=True),
    help="How long the task may run, e.g. '10s' (default: the pool's timeout).",
)
@click.option(
    "--priority",
    default="normal",
    show_default=True,
    help="critical, high, normal, low or background.",
)
@_json_option
@click.argument("name")
@click.argument("data", metavar="JSON")
def submit(
    config_file: str | None,
    timeout: float | None,
    priority: str,
    as_json: bool,
    name: str,
    data: str,
) -> None:
    """Run one task on pool NAME and print its result as JSON.

    JSON is the task's data, e.g. '"hello"' or '{"n": 3}'; '-' reads it from stdin.
    """
    text = sys.stdin.read() if data == "-" else data
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise _BadJson(f"JSON: {text[:60]!r} is not JSON ({exc})") from None
    with connect(config_file) as daemon:
        reply = daemon.post(
            f"/pools/{name}/tasks", {"data": value, "timeout": timeout, "priority": priority}
        )
    if as_json:
        _print_json(reply)
        if not reply["ok"]:
            sys.exit(1)
        return
    if not reply["ok"]:
        error = reply["error"]
        raise CliError(f"pool {name}: {error['type']}: {error['message']}")
    click.echo(json.dumps(reply["result"]))


@_command("stats")
@_json_option
@click.argument("name", metavar="[NAME]", required=False)
def stats(config_file: str | None, as_json: bool, name: str | None) -> None:
    """Show every command pool (or NAME): workers, tasks and latency.

    Columns: NAME WORKERS BUSY QUEUED DONE FAILED TIMEOUTS CRASHED P50 P99 (latency from
    submit to result). Pools that could not start are listed below with the reason.
    """
    _show(config_file, "/pools", {"name": name}, as_json, format_pools)


POOL_COMMANDS: list[click.Command] = [submit, stats]
"""The subcommands of ``procvisor pool``."""
