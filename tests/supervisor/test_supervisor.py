"""The supervisor with real processes: restarts, backoff, fatal, stops, hooks, probes, reload."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from helpers import await_for, pid_alive, wait_for
from procvisor import Limits
from procvisor.policy.restart import Backoff, RestartMode, RestartPolicy
from procvisor.process import _cgroup, group_members, start_ticks
from procvisor.store import InstanceRecord, Store
from procvisor.supervisor import (
    HookSpec,
    LogSpec,
    NullObserver,
    ProbeSpec,
    ServiceSpec,
    Supervisor,
)

PY = sys.executable
SLEEP = (PY, "-c", "import time; time.sleep(600)")
FAST = Backoff(initial=0.01, max=0.05, multiplier=2.0, jitter=0.0)


def spec(name: str, command: tuple[str, ...] = SLEEP, **kw: object) -> ServiceSpec:
    kw.setdefault("stop_timeout", 2.0)
    return ServiceSpec(name=name, command=command, **kw)  # type: ignore[arg-type]


def by_name(sup: Supervisor) -> dict[str, dict[str, object]]:
    return {row["name"]: row for row in sup.status()}


def events(sup: Supervisor, service: str | None = None) -> list[tuple[str, str]]:
    return [(e.kind, e.message) for e in sup._store.events(service, limit=1000)]


async def test_instances_start_with_their_own_pids_and_stop(make) -> None:
    sup = await make(spec("web", instances=2))
    rows = by_name(sup)
    assert [r["state"] for r in rows.values()] == ["running", "running"]
    pids = [r["pid"] for r in rows.values()]
    assert len(set(pids)) == 2 and all(pid_alive(p) for p in pids)
    assert rows["web:0"]["rss"] > 0
    assert await sup.stop(["web"]) == ["web:0", "web:1"]
    assert [r["state"] for r in sup.status()] == ["stopped", "stopped"]
    assert not any(pid_alive(p) for p in pids)
    assert [k for k, _ in events(sup)].count("stop") == 2


async def test_kill_9_restarts_at_once_with_a_new_pid(make) -> None:
    sup = await make(spec("web", restart=RestartPolicy(min_uptime=0.0)))
    old = by_name(sup)["web:0"]["pid"]
    killed = time.monotonic()
    os.kill(old, signal.SIGKILL)
    row = await await_for(
        lambda: (r := by_name(sup)["web:0"])["pid"] not in (None, old) and r, timeout=5
    )
    assert time.monotonic() - killed < 2.0  # generous: the bench measures the real figure
    assert row["state"] == "running" and row["restarts"] == 1
    assert row["last_exit"]["signal"] == "SIGKILL"
    assert any(k == "exit" and "killed by SIGKILL; restart now" in m for k, m in events(sup))


async def test_exiting_at_once_forever_backs_off_then_goes_fatal_without_spinning(make) -> None:
    policy = RestartPolicy(backoff=FAST, max_restarts=3, min_uptime=1.0, cooldown=600)
    sup = await make(spec("crash", (PY, "-c", "raise SystemExit(3)"), restart=policy))
    cpu0 = time.process_time()
    row = await await_for(lambda: (r := by_name(sup)["crash:0"])["state"] == "fatal" and r)
    assert row["restarts"] == 3
    assert "4 failures within 1m exceed max_restarts = 3" in row["reason"]
    assert "one more try in 10m" in row["reason"]
    assert time.process_time() - cpu0 < 2.0
    kinds = [k for k, _ in events(sup)]
    assert kinds.count("start") == 4 and kinds.count("fatal") == 1
    # A start by the user gives it a fresh budget.
    await sup.start(["crash"])
    await await_for(lambda: [k for k, _ in events(sup)].count("start") >= 5)


async def test_missing_program_goes_fatal_and_the_others_keep_running(make) -> None:
    sup = await make(spec("ghost", ("no-such-program-procvisor",)), spec("web"))
    rows = by_name(sup)
    assert rows["ghost:0"]["state"] == "fatal"
    assert "cannot start" in rows["ghost:0"]["reason"]
    assert "no-such-program-procvisor" in rows["ghost:0"]["reason"]
    assert rows["web:0"]["state"] == "running"


async def test_a_service_ignoring_sigterm_is_killed_after_stop_timeout(make) -> None:
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(600)"
    )
    sup = await make(spec("stubborn", (PY, "-c", code), stop_timeout=0.5))
    inst = sup.resolve(["stubborn"])[0]
    await await_for(
        lambda: (
            inst.log_path("stdout").exists() and b"ready" in inst.log_path("stdout").read_bytes()
        )
    )
    pid = inst.pid
    t0 = time.monotonic()
    await sup.stop(["stubborn"])
    assert 0.4 < time.monotonic() - t0 < 5
    assert not pid_alive(pid)
    assert sup.status()[0]["last_exit"]["signal"] == "SIGKILL"


async def test_a_service_that_forks_and_exits_has_its_leftovers_stopped(make) -> None:
    # The parent exits 0 at once, leaving a child in its process group (a classic daemon
    # that forgot to setsid): procvisor counts the exit and stops what it left in the group.
    code = "import os, time\nif os.fork() == 0:\n    time.sleep(600)\n"
    sup = await make(
        spec("forker", (PY, "-c", code), restart=RestartPolicy(restart=RestartMode.NEVER))
    )
    row = await await_for(lambda: (r := by_name(sup)["forker:0"])["state"] == "exited" and r)
    assert row["last_exit"]["code"] == 0
    assert row["pid"] is None
    assert not group_members(row["last_exit"]["pid"])


@pytest.mark.skipif(
    not _cgroup.available("memory"), reason="no writable cgroup v1 memory hierarchy here"
)
async def test_an_instance_killed_at_its_memory_limit_says_so(make) -> None:
    hog = (PY, "-c", "b = bytearray(300 * 1024 * 1024)")
    never = RestartPolicy(restart=RestartMode.NEVER)
    sup = await make(spec("hog", hog, restart=never, limits=Limits(memory="64M")))
    row = await await_for(lambda: (r := by_name(sup)["hog:0"])["state"] == "exited" and r)
    # SIGKILL from the OOM killer, or SIGTERM from procvisor's stop when it saw the OOM first
    assert row["last_exit"]["signal"] in ("SIGKILL", "SIGTERM")
    [message] = [m for k, m in events(sup, "hog") if k == "exit"]
    assert message.startswith("out of memory: the kernel killed a process at the 64M memory limit")


NEEDS_MEMORY_CGROUP = pytest.mark.skipif(
    not _cgroup.available("memory"), reason="no writable cgroup v1 memory hierarchy here"
)
# The main process lives on while a child it starts is killed at the limit.
MASTER = ("sh", "-c", f"{PY} -c 'bytearray(300 * 1024 * 1024)'; exec sleep 600")


@NEEDS_MEMORY_CGROUP
async def test_an_oom_kill_of_any_process_restarts_the_instance(make) -> None:
    never = RestartPolicy(restart=RestartMode.NEVER)
    sup = await make(spec("master", MASTER, restart=never, limits=Limits(memory="64M")))
    row = await await_for(lambda: (r := by_name(sup)["master:0"])["state"] == "exited" and r)
    assert row["last_exit"]["reason"].startswith(
        "out of memory: the kernel killed a process at the 64M memory limit (1 so far)"
    )
    assert ("oom", "the kernel killed a process at the 64M memory limit (1 so far)") in events(
        sup, "master"
    )


@NEEDS_MEMORY_CGROUP
async def test_on_oom_none_only_records_the_kill(make) -> None:
    class Counting(NullObserver):
        def __init__(self) -> None:
            self.kills: list[str] = []

        def oom_killed(self, service: str) -> None:
            self.kills.append(service)

    observer = Counting()
    limits = Limits(memory="64M")
    sup = await make(spec("master", MASTER, on_oom="none", limits=limits), observer=observer)
    pid = by_name(sup)["master:0"]["pid"]
    await await_for(lambda: any(k == "oom" for k, _ in events(sup, "master")), timeout=20)
    row = by_name(sup)["master:0"]
    assert (row["state"], row["pid"]) == ("running", pid)
    assert observer.kills == ["master"]


async def test_a_flooding_service_neither_blocks_nor_bloats_and_its_log_rotates(make) -> None:
    flood = (PY, "-c", "import sys\nwhile True: sys.stdout.write('x' * 1023 + '\\n')")
    sup = await make(spec("flood", flood, logs=LogSpec(max_size=256 * 1024, backups=2)))
    inst = sup.resolve(["flood"])[0]
    path = inst.log_path("stdout")
    await await_for(lambda: Path(f"{path}.2").exists(), timeout=20)
    # The loop still answers promptly while the flood goes on.
    t0 = time.monotonic()
    await asyncio.sleep(0.01)
    assert time.monotonic() - t0 < 1.0
    assert path.stat().st_size <= 256 * 1024
    assert not Path(f"{path}.3").exists()


async def test_hooks_get_their_environment_and_a_failing_pre_start_fails_the_start(
    make, tmp_path: Path
) -> None:
    out = tmp_path / "hooks.txt"
    record = f"echo $0 $PROCVISOR_SERVICE $PROCVISOR_INSTANCE $PROCVISOR_PID >> {out}"
    hooks = HookSpec(
        pre_start=("/bin/sh", "-c", record, "pre_start"),
        post_stop=("/bin/sh", "-c", record + " $PROCVISOR_EXIT_CODE", "post_stop"),
        timeout=5,
    )
    sup = await make(spec("hooked", hooks=hooks))
    pid = by_name(sup)["hooked:0"]["pid"]
    await sup.stop(["hooked"])
    lines = out.read_text().splitlines()
    assert lines[0] == "pre_start hooked 0"
    assert lines[1] == f"post_stop hooked 0 {pid} -15"

    bad = HookSpec(pre_start=("/bin/sh", "-c", "exit 4"), timeout=5)
    policy = RestartPolicy(backoff=FAST, max_restarts=1, cooldown=600)
    sup2 = await make(spec("blocked", hooks=bad, restart=policy))
    row = await await_for(lambda: (r := by_name(sup2)["blocked:0"])["state"] == "fatal" and r)
    assert row["pid"] is None
    assert "pre_start hook failed" in row["reason"]


async def test_a_hanging_hook_is_stopped_at_its_timeout(make) -> None:
    hooks = HookSpec(pre_start=("sleep", "600"), timeout=0.3)
    policy = RestartPolicy(backoff=FAST, max_restarts=0, cooldown=600)
    t0 = time.monotonic()
    sup = await make(spec("slowhook", hooks=hooks, restart=policy))
    row = await await_for(lambda: (r := by_name(sup)["slowhook:0"])["state"] == "fatal" and r)
    assert time.monotonic() - t0 < 5
    assert any("timed out" in m for k, m in events(sup) if k == "hook-failed")
    assert row["pid"] is None


async def test_an_unhealthy_instance_is_restarted(make, tmp_path: Path) -> None:
    flag = tmp_path / "healthy"
    flag.touch()
    probe = ProbeSpec(
        type="exec",
        command=("test", "-e", str(flag)),
        interval=0.05,
        timeout=2,
        failure_threshold=2,
    )
    sup = await make(spec("web", health=probe, restart=RestartPolicy(min_uptime=0.0)))
    await await_for(lambda: by_name(sup)["web:0"]["health"] == "healthy")
    pid = by_name(sup)["web:0"]["pid"]
    flag.unlink()
    await await_for(lambda: by_name(sup)["web:0"]["pid"] not in (None, pid), timeout=10)
    msgs = events(sup)
    assert any(k == "health" and "healthy -> unhealthy" in m for k, m in msgs)
    assert any(k == "exit" and m.startswith("unhealthy") for k, m in msgs)
    flag.touch()
    await await_for(lambda: by_name(sup)["web:0"]["health"] == "healthy")
    await sup.stop(["web"])
    stopped = by_name(sup)["web:0"]
    assert (stopped["state"], stopped["health"]) == ("stopped", None)  # no stale verdict


async def test_dependencies_start_first_and_stop_last(make, tmp_path: Path) -> None:
    order = tmp_path / "order"

    def rec(name: str) -> tuple[str, ...]:
        return (
            "/bin/sh",
            "-c",
            f"echo start {name} >> {order}; trap 'echo stop {name} >> {order}; exit 0' TERM; "
            "while :; do sleep 0.05; done",
        )

    sup = await make(
        spec("app", rec("app"), depends_on=("db",)),
        spec("db", rec("db")),
    )
    await await_for(lambda: order.exists() and len(order.read_text().split("\n")) >= 3)
    # db was running before app was spawned. The two shells' own first lines may still land
    # in either order: spawned a few microseconds apart, they race to their echo.
    assert [m for k, m in events(sup) if k == "start"] == [
        f"started, pid {pid}" for pid in (by_name(sup)["db:0"]["pid"], by_name(sup)["app:0"]["pid"])
    ]
    await sup.stop(["all"])
    assert order.read_text().split()[4:] == ["stop", "app", "stop", "db"]


async def test_a_dependent_waits_for_its_dependency_to_be_healthy(make, tmp_path) -> None:
    ready = tmp_path / "ready"
    # db's probe passes only once the test says so; app is spawned only after that.
    probe = ProbeSpec(type="exec", command=("test", "-e", str(ready)), interval=0.05, timeout=2.0)
    starting = asyncio.ensure_future(
        make(
            spec("app", depends_on=("db",), wait_healthy=("db",)),
            spec("db", instances=2, health=probe),
        )
    )
    sup = (await await_for(lambda: make.made, timeout=10))[-1][0]
    await await_for(lambda: by_name(sup)["db:1"]["state"] == "running", timeout=10)
    await asyncio.sleep(0)  # nothing to wait for: app must not start while db is unhealthy
    assert by_name(sup)["app:0"]["state"] == "stopped" and not starting.done()
    ready.touch()
    await asyncio.wait_for(starting, 20)
    rows = by_name(sup)
    assert rows["app:0"]["state"] == "running"
    assert rows["db:0"]["health"] == rows["db:1"]["health"] == "healthy"
    started = [m for k, m in events(sup) if k == "start"]
    assert started[-1] == f"started, pid {rows['app:0']['pid']}"  # after both db instances


async def test_a_dependency_that_never_turns_healthy_leaves_the_dependent_stopped(make) -> None:
    never = ProbeSpec(
        type="exec", command=("false",), interval=0.05, timeout=1.0, failure_threshold=1
    )
    sup = await make(
        spec("app", depends_on=("db",), wait_healthy=("db",)),
        # Fatal at once (exits 3 at start, no restarts): waiting ends without a timeout.
        spec(
            "db",
            (PY, "-c", "raise SystemExit(3)"),
            health=never,
            restart=RestartPolicy(max_restarts=0, backoff=FAST),
        ),
    )
    await await_for(lambda: by_name(sup)["db:0"]["state"] == "fatal", timeout=20)
    assert by_name(sup)["app:0"]["state"] == "stopped"
    assert (
        "not-started",
        "not started: db:0 is fatal instead of healthy, and app waits for it to be healthy",
    ) in events(sup, "app")


async def test_restart_cron_restarts_the_running_instances_on_schedule(make) -> None:
    sup = await make(spec("leaky", instances=2, restart_cron="* * * * * */1"), spec("idle"))
    first = {n: r["pid"] for n, r in by_name(sup).items()}
    # Every second: both instances get new pids, one after the other; idle is untouched.
    changed = await await_for(
        lambda: (
            (now := {n: r["pid"] for n, r in by_name(sup).items()})
            and all(now[n] not in (None, first[n]) for n in ("leaky:0", "leaky:1"))
            and now
        ),
        timeout=20,
    )
    assert changed["idle:0"] == first["idle:0"]
    assert ("cron-restart", "restart on schedule '* * * * * */1'") in events(sup, "leaky")
    # A stopped service is not started by its schedule.
    await sup.stop(["leaky"])
    stopped_at = len(events(sup, "leaky"))
    # Nothing may happen, which only a window of time can show: two fire times pass.
    await asyncio.sleep(2.5)
    assert [r["state"] for n, r in by_name(sup).items() if n.startswith("leaky")] == [
        "stopped",
        "stopped",
    ]
    assert len(events(sup, "leaky")) == stopped_at


async def test_reload_applies_only_the_difference(make) -> None:
    sup = await make(spec("keep"), spec("change"), spec("drop"), spec("grow"))
    before = by_name(sup)
    result = await sup.reload(
        [
            spec("keep"),
            spec("change", (PY, "-c", "import time; time.sleep(601)")),
            spec("grow", instances=2),
            spec("new"),
        ]
    )
    assert result.to_dict() == {
        "started": ["new"],
        "stopped": ["drop"],
        "restarted": ["change"],
        "scaled": ["grow=2"],
        "unchanged": ["keep"],
    }
    after = by_name(sup)
    assert after["keep:0"]["pid"] == before["keep:0"]["pid"]
    assert after["grow:0"]["pid"] == before["grow:0"]["pid"]
    assert after["grow:1"]["state"] == "running"
    assert after["change:0"]["pid"] != before["change:0"]["pid"]
    assert after["new:0"]["state"] == "running"
    assert "drop:0" not in after and not pid_alive(before["drop:0"]["pid"])


async def test_scale_up_and_down(make) -> None:
    sup = await make(spec("w"))
    assert await sup.scale("w", 3) == ["w:1", "w:2"]
    pids = [r["pid"] for r in sup.status()]
    assert await sup.scale("w", 1) == ["w:2", "w:1"]
    assert [r["name"] for r in sup.status()] == ["w:0"]
    assert not pid_alive(pids[2])
    with pytest.raises(ValueError, match="instances"):
        await sup.scale("w", -1)
    with pytest.raises(LookupError, match="no service 'nope'; services: w"):
        await sup.scale("nope", 1)


async def test_targets_name_services_instances_or_all(make) -> None:
    sup = await make(spec("a", instances=2), spec("b"), start=False)
    await sup.start_all()
    assert [i.name for i in sup.resolve(["all"])] == ["a:0", "a:1", "b:0"]
    assert [i.name for i in sup.resolve(["a:1", "b"])] == ["a:1", "b:0"]
    with pytest.raises(LookupError, match=r"no instance 'a:5'; a has instances 0\.\.1"):
        sup.resolve(["a:5"])
    assert await sup.stop(["a:1"]) == ["a:1"]
    assert [r["state"] for r in sup.status()] == ["running", "stopped", "running"]
    assert sup.signal(["a"], signal.SIGKILL) == ["a:0"]


async def test_rolling_restart_waits_for_each_instance(make) -> None:
    sup = await make(spec("r", instances=2))
    old = [r["pid"] for r in sup.status()]
    assert await sup.restart(["r"], rolling=True) == ["r:0", "r:1"]
    new = [r["pid"] for r in sup.status()]
    assert all(n not in old for n in new)
    assert [r["state"] for r in sup.status()] == ["running", "running"]


async def test_leftovers_of_a_killed_daemon_are_stopped_not_duplicated(
    make, tmp_path: Path
) -> None:
    first = await make(spec("web"))
    pid = by_name(first)["web:0"]["pid"]
    records = first._store.instances()
    assert [(r.service, r.instance, r.pid) for r in records] == [("web", 0, pid)]
    # A second supervisor on a store holding that record (as after a SIGKILL of the daemon).
    store = Store(tmp_path / "other.sqlite")
    store.record_instance(records[0])
    store.record_instance(InstanceRecord("gone", 0, 999_999, 1.0, 1.0))
    sup = Supervisor([spec("web")], log_dir=tmp_path / "logs2", store=store)
    try:
        assert await sup.stop_leftovers() == ["web:0"]
        assert not pid_alive(pid)
        assert store.instances() == []
    finally:
        await sup.stop_all()
        store.close()
    await first.stop_all()  # its instance is gone already: nothing to do
    assert replace(first.specs["web"]) == first.specs["web"]


async def test_a_leftover_that_is_only_a_zombie_is_not_stopped(tmp_path: Path) -> None:
    # It ended after the daemon died, and its new parent (here: this test) has not reaped it.
    zombie = subprocess.Popen(["true"], start_new_session=True)
    wait_for(lambda: not group_members(zombie.pid))
    ticks = start_ticks(zombie.pid)
    assert ticks is not None
    store = Store(tmp_path / "store.sqlite")
    store.record_instance(InstanceRecord("web", 0, zombie.pid, ticks, 1.0))
    sup = Supervisor([spec("web")], log_dir=tmp_path / "logs", store=store)
    try:
        assert await sup.stop_leftovers() == []
        assert store.instances() == []
    finally:
        await sup.stop_all()
        store.close()
        zombie.wait()


async def test_a_dependent_waits_for_its_dependency_to_complete(make, tmp_path) -> None:
    go, done = tmp_path / "go", tmp_path / "migrated"
    migrate = (PY, "-c", MIGRATE, str(go), str(done), "0")
    never = RestartPolicy(restart=RestartMode.NEVER)
    sup = await make(
        spec("migrate", migrate, restart=never),
        spec("app", depends_on=("migrate",), wait_completed=("migrate",)),
        start=False,
    )
    starting = asyncio.create_task(sup.start_all())
    await await_for(lambda: by_name(sup).get("migrate:0", {}).get("state") == "running")
    assert by_name(sup)["app:0"]["state"] == "stopped" and not starting.done()
    go.touch()
    await asyncio.wait_for(starting, 10)
    assert by_name(sup)["app:0"]["state"] == "running" and done.exists()


async def test_a_dependency_that_fails_leaves_the_dependent_stopped(make, tmp_path) -> None:
    (tmp_path / "go").touch()
    failing = (PY, "-c", MIGRATE, str(tmp_path / "go"), str(tmp_path / "x"), "3")
    never = RestartPolicy(restart=RestartMode.NEVER)
    sup = await make(
        spec("migrate", failing, restart=never),
        spec("app", depends_on=("migrate",), wait_completed=("migrate",)),
    )
    assert by_name(sup)["app:0"]["state"] == "stopped"
    [message] = [m for k, m in events(sup, "app") if k == "not-started"]
    assert message.startswith("not started: migrate:0 is exited (exit code 3")
    assert message.endswith("instead of completed, and app waits for it to complete")


MIGRATE = """
import os, sys, time
go, done, code = sys.argv[1:]
while not os.path.exists(go):
    time.sleep(0.01)
open(done, "w").close()
sys.exit(int(code))
"""


async def test_merge_stderr_keeps_both_streams_in_one_log_in_order(make) -> None:
    code = (
        "import sys, time\n"
        "for n, out in enumerate([sys.stdout, sys.stderr, sys.stdout, sys.stderr]):\n"
        "    print(n, file=out, flush=True)\n"
        "time.sleep(600)\n"
    )
    sup = await make(spec("both", (PY, "-c", code), logs=LogSpec(merge_stderr=True)))
    [inst] = sup.resolve(["both"])
    out = inst.log_path("stdout")
    await await_for(lambda: out.exists() and out.read_text() == "0\n1\n2\n3\n")
    assert inst.log_path("stderr") == out
    assert not out.with_name("both.0.stderr.log").exists()
    assert sup.log_files("both", "stderr") == [("both:0", out, 5)]
