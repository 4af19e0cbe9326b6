"""``notify = true``: readiness, status text and watchdog pings over ``$NOTIFY_SOCKET``."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import NOTIFY_SERVICE, await_for
from procvisor.policy.restart import RestartMode, RestartPolicy
from procvisor.store import Store
from procvisor.supervisor import Supervisor
from procvisor.supervisor._notify import NotifyHub, parse_notify

from .test_supervisor import by_name, events, spec

PY = sys.executable
NEVER = RestartPolicy(restart=RestartMode.NEVER)


@pytest.fixture
def service(tmp_path: Path) -> tuple[str, ...]:
    script = tmp_path / "service.py"
    script.write_text(NOTIFY_SERVICE)
    return (PY, str(script))


def send_from_here(sup: Supervisor, message: str) -> None:
    """Send ``message`` to the notify socket from this process, which is no instance."""
    address = sup._notify_hub.address
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(message.encode(), "\0" + address[1:])


async def test_an_instance_is_starting_until_it_sends_ready(make, service, tmp_path) -> None:
    go = tmp_path / "go"
    argv = (*service, "wait", str(go), "send", r"STATUS=serving\nREADY=1", "sleep")
    sup = await make(spec("api", argv, notify=True), start=False)
    starting = asyncio.create_task(sup.start_all())
    row = await await_for(lambda: (r := by_name(sup).get("api:0", {})).get("pid") and r)
    assert row["state"] == "starting" and row["uptime"] is None
    assert row["reason"] == "waiting for READY=1"
    assert not starting.done()  # start waits for readiness, as `systemctl start` does
    await asyncio.sleep(1.0)  # time spent starting, which uptime must not count
    go.touch()
    await asyncio.wait_for(starting, 10)
    row = by_name(sup)["api:0"]
    assert row["state"] == "running" and row["status_text"] == "serving"
    assert row["uptime"] < 1.0  # counted from READY=1, not from the spawn
    assert row["reason"] == ""
    assert ("ready", "ready (READY=1)") in events(sup, "api")


async def test_an_instance_not_ready_in_time_is_stopped_as_a_failed_start(make, service) -> None:
    never_ready = spec("api", (*service, "sleep"), notify=True, start_timeout=0.3, restart=NEVER)
    sup = await make(never_ready)
    row = by_name(sup)["api:0"]
    assert row["state"] == "exited" and row["pid"] is None
    assert row["last_exit"]["reason"] == "not ready: no READY=1 within 300ms"
    assert ("restart", "restarting: not ready: no READY=1 within 300ms") in events(sup, "api")


async def test_extend_timeout_usec_gives_more_time(make, service, tmp_path) -> None:
    go = tmp_path / "go"
    argv = (*service, "send", "EXTEND_TIMEOUT_USEC=30000000", "wait", str(go))
    argv += ("send", "READY=1", "sleep")
    sup = await make(spec("api", argv, notify=True, start_timeout=0.2), start=False)
    starting = asyncio.create_task(sup.start_all())
    # Past the 0.2 s start timeout and still starting: the extension holds.
    await await_for(lambda: by_name(sup).get("api:0", {}).get("pid"))
    await asyncio.sleep(0.5)  # the timeout being tested, not a wait for a condition
    assert by_name(sup)["api:0"]["state"] == "starting"
    go.touch()
    await asyncio.wait_for(starting, 10)
    assert by_name(sup)["api:0"]["state"] == "running"


async def test_only_the_instances_own_process_group_is_heard(make, service, tmp_path) -> None:
    # A child of the instance's shell, in its group, may speak for it; this test process,
    # which sends a forged READY=1 first, may not.
    go = tmp_path / "go"
    child = f"{PY} {service[1]} wait {go} send STATUS=from-the-child sleep"
    sup = await make(spec("api", ("sh", "-c", f"{child} & wait"), notify=True), start=False)
    starting = asyncio.create_task(sup.start_all())
    await await_for(lambda: by_name(sup).get("api:0", {}).get("pid"))
    send_from_here(sup, "READY=1\nSTATUS=forged")
    go.touch()
    # Datagrams are read in order: once the child's status is in, the forgery was dropped.
    row = await await_for(lambda: (r := by_name(sup)["api:0"])["status_text"] and r)
    assert row["status_text"] == "from-the-child" and row["state"] == "starting"
    assert not starting.done()
    await sup.stop(["api"])
    await asyncio.wait_for(starting, 10)


async def test_a_missed_watchdog_ping_restarts_the_instance(make, service, tmp_path) -> None:
    stop_pinging = tmp_path / "stop"
    argv = (*service, "send", r"READY=1\nSTATUS=pinging", "env", "ping", str(stop_pinging))
    argv += ("sleep",)
    sup = await make(spec("api", argv, notify=True, watchdog=1.0, restart=NEVER))
    inst = sup.resolve(["api:0"])[0]
    assert inst.state.value == "running"
    out = inst.log_path("stdout")
    line = await await_for(lambda: out.exists() and out.read_text().strip())
    usec, watchdog_pid, pid = line.split()
    assert usec == "1000000" and int(watchdog_pid) == int(pid) == inst.pid
    stop_pinging.touch()
    row = await await_for(lambda: (r := by_name(sup)["api:0"])["state"] == "exited" and r, 10)
    assert row["last_exit"]["reason"] == "watchdog: no WATCHDOG=1 for 1s"
    assert row["status_text"] is None  # it spoke for a process that is gone


async def test_watchdog_trigger_restarts_at_once(make, service) -> None:
    argv = (*service, "send", "READY=1", "send", "WATCHDOG=trigger", "sleep")
    sup = await make(spec("api", argv, notify=True, watchdog=600.0, restart=NEVER))
    row = await await_for(lambda: (r := by_name(sup)["api:0"])["state"] == "exited" and r)
    assert row["last_exit"]["reason"] == "watchdog: the service triggered it (WATCHDOG=trigger)"


def test_messages_are_key_value_lines() -> None:
    assert parse_notify(b"READY=1\nSTATUS=a=b\nnoise\n=x\nSTATUS=last") == {
        "READY": "1",
        "STATUS": "last",
    }


def test_the_socket_is_abstract_and_closed_with_the_supervisor(tmp_path) -> None:
    async def main() -> str:
        with Store(tmp_path / "db.sqlite") as store:
            sup = Supervisor([], log_dir=tmp_path / "logs", store=store)
            address = sup._notify_hub.address
            assert address.startswith(f"@procvisor-notify-{os.getpid()}-")
            await sup.stop_all()
            return address

    address = asyncio.run(main())
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s, pytest.raises(OSError):
        s.sendto(b"READY=1", "\0" + address[1:])


async def test_a_message_sent_before_the_instance_is_watched_is_kept_for_it(service) -> None:
    # A program may speak before the daemon has its pid: the message waits for the watch,
    # which takes only what was sent since the spawn began.
    hub = NotifyHub()
    began = time.monotonic()
    env = {**os.environ, "NOTIFY_SOCKET": hub.address}
    child = subprocess.Popen(
        [*service, "send", "READY=1", "sleep"], env=env, start_new_session=True
    )
    try:
        await await_for(lambda: hub._unplaced, timeout=10)
        got: list[dict[str, str]] = []
        hub.watch(child.pid, got.append, since=time.monotonic())  # too late for it
        assert got == []
        hub.watch(child.pid, got.append, since=began)
        assert got == [{"READY": "1"}] and not hub._unplaced
    finally:
        child.kill()
        child.wait()
        hub.close()
