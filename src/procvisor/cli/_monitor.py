"""``procvisor top``, ``procvisor inspect`` and ``procvisor alerts [ack]``: what the daemon's
monitoring sees. Thin clients of ``/top``, ``/inspect``, ``/alerts`` and ``/alerts/ack``;
exit statuses as the other control commands."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import click

from procvisor.cli._client import connect
from procvisor.cli._control import (
    _command,
    _json_option,
    _print_json,
    _show,
    _table,
    listing_group,
)
from procvisor.cli._run import _Duration

__all__ = ["MONITOR_COMMANDS", "alerts_group", "format_alerts", "format_top"]

_TOP_COLUMNS = ("NAME", "STATE", "STATUS", "PID", "PROCS", "CPU", "MEM", "THREADS", "FDS", "UPTIME")
_STYLES = {"ok": "green", "warning": "yellow", "critical": "bold red", "dead": "dim"}
_SORT_KEYS = {"cpu": "cpu", "mem": "rss", "name": "name"}


def _dash(value: Any, render: Callable[[Any], str] = str) -> str:
    return "-" if value is None else render(value)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}%"


def _top_rows(items: Sequence[dict[str, Any]]) -> list[list[str]]:
    from procvisor.policy.units import format_duration, format_size  # noqa: PLC0415

    return [
        [
            str(i["name"]),
            str(i["state"]),
            str(i["status"]),
            _dash(i.get("pid")),
            str(i.get("processes", 0)),
            _percent(i.get("cpu")),
            _dash(i.get("rss"), format_size),
            _dash(i.get("threads")),
            _dash(i.get("fds")),
            _dash(i.get("uptime"), format_duration),
        ]
        for i in items
    ]


def _sorted(items: list[dict[str, Any]], sort: str) -> list[dict[str, Any]]:
    key = _SORT_KEYS[sort]
    if key == "name":
        return sorted(items, key=lambda i: str(i["name"]))
    return sorted(items, key=lambda i: -(i.get(key) or 0))


def format_top(items: Sequence[dict[str, Any]]) -> str:
    """The ``top`` table as plain text."""
    if not items:
        return "nothing is running"
    return _table([list(_TOP_COLUMNS), *_top_rows(items)])


@_command("top")
@click.option("--once", is_flag=True, help="Print the table once and exit.")
@click.option(
    "--sort",
    type=click.Choice(sorted(_SORT_KEYS)),
    default="cpu",
    show_default=True,
    help="Order of the rows.",
)
@click.option(
    "-n",
    "--interval",
    type=_Duration(positive=True),
    default=2.0,
    help="Seconds between refreshes (default 2).",
)
@_json_option
def top(config_file: str | None, once: bool, sort: str, interval: float, as_json: bool) -> None:
    """A live table of every managed process: CPU, memory, threads, fds, by health.

    Rows are service instances and pool workers, from the daemon's last sample; STATUS is ok,
    warning (past 80% of a [watch] limit), critical (at or over it) or dead. Ctrl-C ends it.
    When stdout is not a terminal, a plain table is printed each interval instead.
    """
    if once or as_json:
        with connect(config_file) as daemon:
            items = _sorted(daemon.get("/top"), sort)
        if as_json:
            _print_json(items)
        else:
            click.echo(format_top(items))
        return
    if not sys.stdout.isatty():  # like top -b: a plain table per interval, for logs and pipes
        with connect(config_file) as daemon:
            while True:
                click.echo(format_top(_sorted(daemon.get("/top"), sort)) + "\n", nl=False)
                sys.stdout.flush()
                time.sleep(interval)
    from rich.console import Console  # noqa: PLC0415 - only for the live view
    from rich.live import Live  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    def render(items: list[dict[str, Any]]) -> Table:
        table = Table(title=f"procvisor top - {time.strftime('%H:%M:%S')}", expand=False)
        for column in _TOP_COLUMNS:
            table.add_column(column, justify="right" if column != "NAME" else "left")
        for item, row in zip(items, _top_rows(items), strict=True):
            table.add_row(*row, style=_STYLES.get(str(item["status"]), ""))
        return table

    with connect(config_file) as daemon, Live(console=Console(), auto_refresh=False) as live:
        while True:
            live.update(render(_sorted(daemon.get("/top"), sort)), refresh=True)
            time.sleep(interval)


def _section(title: str, rows: list[list[str]]) -> list[str]:
    if len(rows) <= 1:
        return []
    return ["", title, *("  " + line for line in _table(rows).splitlines())]


def format_inspect(info: dict[str, Any]) -> str:
    """An ``inspect`` snapshot as text sections."""
    from procvisor.policy.units import format_duration, format_size  # noqa: PLC0415

    sample = info.get("sample") or {}
    lines = [
        f"{info['name']}: {info['state']}, pid {_dash(info.get('pid'))}, "
        f"health {_dash(info.get('health'))}, restarts {info.get('restarts', 0)}",
    ]
    if info.get("cmdline"):
        lines.append(f"command: {' '.join(info['cmdline'])}")
    if info.get("cwd") or info.get("user"):
        lines.append(f"cwd: {_dash(info.get('cwd'))}   user: {_dash(info.get('user'))}")
    if sample:
        cpu = _percent(sample.get("cpu"))
        lines.append(
            f"totals: {sample['processes']} processes, CPU {cpu}, RSS {format_size(sample['rss'])}"
            f", threads {sample['threads']}, fds {_dash(sample.get('fds'))}"
        )
    tree = [["PID", "PPID", "NAME", "STATE", "CPU", "RSS", "THREADS", "FDS"]]
    for p in sample.get("detail", []):
        tree.append(
            [
                str(p["pid"]),
                str(p["ppid"]),
                p["name"],
                p["state"],
                _percent(p.get("cpu")),
                format_size(p["rss"]),
                str(p["threads"]),
                _dash(p.get("fds")),
            ]
        )
    lines += _section("processes:", tree)
    threads = [["TID", "STATE", "USER CPU", "SYSTEM CPU"]]
    threads += [
        [str(t["tid"]), t.get("state", "?"), f"{t['cpu_user']:.2f}s", f"{t['cpu_system']:.2f}s"]
        for t in info.get("threads", [])
    ]
    lines += _section("threads:", threads)
    files = [["FD", "PATH"]] + [[str(f["fd"]), f["path"]] for f in info.get("open_files", [])]
    lines += _section("open files:", files)
    socks = [["FD", "TYPE", "LOCAL", "REMOTE", "STATUS"]]
    socks += [
        [str(c["fd"]), c["type"], c["local"], c["remote"] or "-", c["status"]]
        for c in info.get("sockets", [])
    ]
    lines += _section("sockets:", socks)
    limits = [["LIMIT", "VALUE", "ENFORCED BY"]]
    limits += [[lim["limit"], lim["shown"], lim["enforced_by"]] for lim in info["limits"]]
    lines += _section("limits:", limits)
    trend = [["FIELD", "AVERAGE", "MAX", "PER HOUR", "SAMPLES", "OVER"]]
    for name, t in info.get("trend", {}).items():

        def show(v: float, size: bool = name == "rss") -> str:
            return format_size(int(v)) if size else f"{v:.1f}%"

        per_hour = t.get("per_hour")
        growth = "-" if per_hour is None else ("-" if per_hour < 0 else "+") + show(abs(per_hour))
        span = format_duration(t["span"])
        trend.append([name, show(t["average"]), show(t["max"]), growth, str(t["samples"]), span])
    window = format_duration(info["trend_window"])
    lines += _section(f"trend (last {window}; a short OVER makes PER HOUR a guess):", trend)
    env = [["NAME", "VALUE"]] + [[k, v] for k, v in sorted(info.get("environment", {}).items())]
    lines += _section("environment (secret-looking values redacted):", env)
    if info.get("error"):
        lines.append(info["error"])
    return "\n".join(lines)


@_command("inspect")
@_json_option
@click.argument("target", metavar="SVC[:i]")
def inspect(config_file: str | None, as_json: bool, target: str) -> None:
    """A diagnostic snapshot of one instance.

    Its processes (the tree), threads, open files and sockets, environment with the values of
    secret-looking keys (TOKEN, SECRET, PASSWORD, KEY...) redacted, its limits and how each
    is enforced (kernel rlimit, timer, or sampled [watch]), and its recent trend.
    """
    _show(config_file, "/inspect", {"target": target}, as_json, format_inspect)


def format_alerts(items: Sequence[dict[str, Any]]) -> str:
    """Alerts as a table: ID STATUS SEVERITY SINCE SUMMARY (acknowledged or silenced marked)."""
    if not items:
        return "no alerts"
    rows = [["ID", "STATUS", "SEVERITY", "SINCE", "SUMMARY"]]
    for a in items:
        status = a["status"]
        if a.get("acknowledged"):
            status += " (acked)"
        elif a.get("silenced_until"):
            status += " (silenced)"
        since = a.get("fired_at") or a.get("since")
        when = "-" if since is None else time.strftime("%H:%M:%S", time.localtime(since))
        rows.append([a["id"], status, str(a.get("severity") or "-"), when, a["summary"]])
    return _table(rows)


alerts_group = listing_group(
    "alerts",
    "/alerts",
    format_alerts,
    help="Show pending and firing alerts (--all: resolved ones too); 'alerts ack ID' acknowledges.",
    all_help="Resolved alerts too.",
)


@_command("ack")
@click.option(
    "--for",
    "duration",
    type=_Duration(positive=True),
    help="Silence it this long instead (e.g. 1h); with a RULE alone, the whole rule.",
)
@_json_option
@click.argument("alert_id", metavar="ID")
@click.pass_obj
def ack(
    parent_config: str | None,
    config_file: str | None,
    duration: float | None,
    as_json: bool,
    alert_id: str,
) -> None:
    """Acknowledge a firing alert (ID as 'procvisor alerts' shows it) until it resolves.

    With --for, silence its notifications that long instead; ID may then be a rule name
    alone, to silence every alert of that rule.
    """
    with connect(config_file or parent_config) as daemon:
        result = daemon.post("/alerts/ack", {"id": alert_id, "for": duration})
    if as_json:
        _print_json(result)
    elif result.get("silenced_for"):
        from procvisor.policy.units import format_duration  # noqa: PLC0415

        click.echo(f"silenced {result['id']} for {format_duration(result['silenced_for'])}")
    else:
        click.echo(f"acknowledged {result['id']}")


alerts_group.add_command(ack)

MONITOR_COMMANDS: list[click.Command] = [top, inspect]
"""The commands to add to the ``procvisor`` group (``alerts`` is a group of its own)."""
