"""``[pools.NAME]`` in the daemon: config checks, and tasks and stats through the real CLI."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from helpers import pid_alive, wait_for
from procvisor.daemon.config import ConfigError, parse_config

from .test_daemon import Daemon, cli, write_config

EXAMPLES = Path(__file__).parent.parent.parent / "examples" / "workers"
UPPER = f'["{sys.executable}", "{EXAMPLES / "upper.py"}"]'

POOLS = f"""
[pools.upper]
command = {UPPER}
workers = 2
timeout = "10s"

[pools.broken]
command = ["/nonexistent/worker"]
workers = 1
"""


def pools(workdir: Path) -> dict[str, dict] | None:
    out = cli(workdir, "pool", "stats", "--json")
    if out.returncode != 0:
        return None
    return {row["name"]: row for row in json.loads(out.stdout)}


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ('command = "w"\nworkers = 2\nmax_workers = 3', "pools.p.workers: give either workers"),
        ('command = "w"\nmin_workers = 3\nmax_workers = 2', "pools.p.min_workers: 3 is more"),
        ('command = "w"\nworker = 2', "pools.p.worker: unknown key; did you mean 'workers'?"),
        ('command = "w"\nmax_memory_per_worker = "lots"', "pools.p.max_memory_per_worker: "),
        ('command = "w"\nprefetch = 9', "pools.p.prefetch: 9 must be 8 or less"),
        ("workers = 1", "pools.p.command: is required"),
    ],
)
def test_a_bad_pool_table_names_the_key(table: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(f"[pools.p]\n{table}\n")
    assert problem in str(info.value)


def test_tasks_and_stats_through_the_cli_and_workers_stop_with_the_daemon(workdir, daemons) -> None:
    write_config(workdir, POOLS)
    d = Daemon(workdir)
    daemons.append(d)
    rows = wait_for(lambda: pools(workdir), timeout=20)
    assert rows["upper"]["running"] and len(rows["upper"]["pids"]) == 2
    assert not rows["broken"]["running"]
    assert "does not exist" in rows["broken"]["error"]
    workers = rows["upper"]["pids"]

    ok = cli(workdir, "pool", "submit", "upper", '"hello"')
    assert (ok.returncode, ok.stdout) == (0, '"HELLO"\n')
    failed = cli(workdir, "pool", "submit", "upper", "42")
    assert failed.returncode == 1
    assert failed.stderr == (
        "procvisor: pool upper: TaskFailed: the worker answered: data must be a string, not int\n"
    )
    as_json = cli(workdir, "pool", "submit", "upper", "42", "--json")
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout)["error"]["error"] == "data must be a string, not int"
    bad = cli(workdir, "pool", "submit", "upper", "{")
    assert bad.returncode == 2 and bad.stderr.startswith("procvisor: JSON: ")
    unknown = cli(workdir, "pool", "submit", "nope", "1")
    assert unknown.returncode == 1
    assert unknown.stderr == "procvisor: no pool named 'nope'; pools: upper, broken\n"
    down = cli(workdir, "pool", "submit", "broken", "1")
    assert down.returncode == 1 and "is not running" in down.stderr
    slow = cli(workdir, "pool", "submit", "upper", '"x"', "--timeout", "0")
    assert slow.returncode == 2 and "--timeout" in slow.stderr

    table = cli(workdir, "pool", "stats").stdout.splitlines()
    header = "NAME WORKERS BUSY QUEUED DONE FAILED TIMEOUTS CRASHED P50 P99"
    assert " ".join(table[0].split()) == header
    assert table[1].split()[:6] == ["upper", "2", "0", "0", "1", "2"]
    assert table[-1].startswith("broken: not running: ")

    code, err = d.stop()
    assert code == 0, err
    assert not any(pid_alive(p) for p in workers)


def test_reload_starts_replaces_and_stops_pools(workdir, daemons) -> None:
    config = write_config(workdir, POOLS)
    daemons.append(Daemon(workdir))
    before = wait_for(lambda: pools(workdir), timeout=20)["upper"]["pids"]
    config.write_text(
        f"""
[pools.upper]
command = {UPPER}
workers = 1

[pools.second]
command = {UPPER}
workers = 1
"""
    )
    out = cli(workdir, "reload")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "started: pools.second",
        "stopped: pools.broken",
        "restarted: pools.upper",
    ]
    rows = pools(workdir)
    assert rows is not None and set(rows) == {"upper", "second"}
    assert len(rows["upper"]["pids"]) == 1 and not set(rows["upper"]["pids"]) & set(before)
    wait_for(lambda: not any(pid_alive(p) for p in before))
    assert cli(workdir, "pool", "submit", "second", '"x"').stdout == '"X"\n'
