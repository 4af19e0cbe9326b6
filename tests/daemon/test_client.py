"""``procvisor.Client`` against a real daemon: services, events, reload and command pools."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import procvisor
from helpers import wait_for

from .test_daemon import SLEEPER, Daemon, write_config

WORKER = Path(__file__).parent.parent / "pool" / "cmd_worker.py"
CONFIG = f"""
[services.web]
command = {SLEEPER}

[pools.echo]
command = ["{sys.executable}", "{WORKER}"]
workers = 1
timeout = "10s"
"""


@pytest.fixture
def client(workdir: Path, daemons: list[Daemon]) -> procvisor.Client:
    write_config(workdir, CONFIG)
    daemons.append(Daemon(workdir))

    def connected() -> procvisor.Client | None:
        try:
            c = procvisor.Client(str(workdir / "procvisor.toml"))
        except ConnectionError:
            return None
        if c.status() and c.pools() and c.pools()[0]["running"]:
            return c
        c.close()
        return None

    c = wait_for(connected, timeout=20)
    yield c
    c.close()


def test_services_are_driven_as_with_the_cli(client: procvisor.Client, workdir: Path) -> None:
    [row] = client.status("web")
    assert row["state"] == "running"
    assert client.scale("web", 2) == ["web:1"]
    wait_for(lambda: [r["state"] for r in client.status()] == ["running", "running"])
    assert client.stop("web:1") == ["web:1"]
    assert client.restart("web:0") == ["web:0"]
    assert client.status("web")[0]["pid"] != row["pid"]
    assert client.start("all") == ["web:0", "web:1"]
    wait_for(lambda: [r["state"] for r in client.status()] == ["running", "running"])
    assert client.signal("CONT", "web") == ["web:0", "web:1"]
    kinds = [e["kind"] for e in client.events("web", limit=20)]
    assert "restart" in kinds or "stop" in kinds
    with pytest.raises(LookupError, match="nope"):
        client.stop("nope")
    with pytest.raises(ValueError, match="signal"):
        client.signal("NOTASIGNAL", "web")
    write_config(workdir, CONFIG + f"\n[services.db]\ncommand = {SLEEPER}\n")
    assert client.reload()["started"] == ["db"]


def test_a_pool_task_returns_its_result_or_raises_the_pools_error(
    client: procvisor.Client,
) -> None:
    assert client.pool_task("echo", {"echo": [1, 2]}) == [1, 2]
    with pytest.raises(procvisor.TaskFailed, match="bad") as failed:
        client.pool_task("echo", {"error": "bad"})
    assert failed.value.error == "bad"
    with pytest.raises(procvisor.WorkerCrashed) as crashed:
        client.pool_task("echo", {"exit": 7})
    assert crashed.value.exit_code == 7
    with pytest.raises(procvisor.TaskTimeout):
        client.pool_task("echo", {"sleep": 5}, timeout="200ms")
    with pytest.raises(LookupError, match="no pool named 'nope'"):
        client.pool_task("nope", 1)


def test_a_schedule_is_listed_and_stopped(client: procvisor.Client) -> None:
    job_id = client.submit(["true"], cron="0 3 * * *")
    [schedule] = client.schedules()
    assert schedule["id"] == client.get(job_id)["schedule"] and schedule["active"]
    assert client.cancel_schedule(schedule["id"]) is True
    assert client.cancel_schedule(schedule["id"]) is False
    assert client.schedules() == []
    assert [s["active"] for s in client.schedules(all=True)] == [False]
    with pytest.raises(LookupError, match="no schedule 99"):
        client.cancel_schedule(99)
    client.cancel(job_id)


def test_a_job_is_held_and_released(client: procvisor.Client) -> None:
    job_id = client.submit(["true"], hold=True)
    assert client.get(job_id)["held"] is True
    assert client.hold(job_id)[0]["message"] == "already held"
    assert client.release(job_id)[0]["changed"] is True
    assert client.wait(job_id, timeout=20)["state"] == "succeeded"
