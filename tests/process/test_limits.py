"""Limits: parsing, each kernel or sampled mechanism, and what Result reports."""

from __future__ import annotations

import asyncio
import os
import sys
from types import SimpleNamespace

import pytest

import procvisor
from helpers import await_for
from procvisor import LimitExceeded, Limits
from procvisor.process import _cgroup, _exec, _spawn, group_cpu
from procvisor.process._api import raise_for_outcome
from procvisor.process._throttle import PERIOD as THROTTLE_PERIOD

PY = sys.executable


def test_sizes_and_durations_accept_strings_and_numbers() -> None:
    lim = Limits(memory="1.5G", cpu_time="250ms", wall_time="2m", open_files="64", core=0)
    assert lim.memory == 1536 * 1024**2 and lim.cpu_time == 0.25 and lim.wall_time == 120
    assert lim.open_files == 64 and lim.core == 0
    assert Limits(memory=10_000_000, wall_time=1.5).wall_time == 1.5


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"memory": "12X"}, "limits.memory"),
        ({"memory": "-1M"}, "limits.memory"),
        ({"memory": 100}, "limits.memory"),
        ({"cpu_time": "soon"}, "limits.cpu_time"),
        ({"wall_time": 0}, "limits.wall_time"),
        ({"open_files": "many"}, "limits.open_files"),
        ({"open_files": 1}, "limits.open_files"),
        ({"processes": 0}, "limits.processes"),
        ({"core": "big"}, "limits.core"),
        ({"cpus": "fast"}, "limits.cpus: 'fast' is not a number of CPUs"),
        ({"cpus": 0}, "limits.cpus: 0 must be 0.01 or more"),
        ({"cpus": "nan"}, "limits.cpus"),
        ({"cpus": True}, "limits.cpus"),
        ({"nice": 20}, "limits.nice: 20 must be 19 or less"),
        ({"nice": -21}, "limits.nice: -21 must be -20 or more"),
        ({"nice": "low"}, "limits.nice: 'low' is not a whole number"),
    ],
)
def test_bad_limit_values_name_the_field_and_the_forms(kwargs, field) -> None:
    with pytest.raises(ValueError, match=field):
        Limits(**kwargs)


def test_cpu_time_limit_raises_limit_exceeded() -> None:
    with pytest.raises(LimitExceeded) as info:
        procvisor.run([PY, "-c", "while True: pass"], limits=Limits(cpu_time=1), timeout=30)
    err = info.value
    assert err.limit == "cpu_time" and err.allowed == 1
    assert err.observed is not None and err.observed >= 0.9  # tick-granular accounting
    assert "limit of 1s" in str(err)
    assert err.result is not None and err.result.limit_exceeded == "cpu_time"
    assert err.result.limits == {"cpu_time": "rlimit"}


def test_wall_time_limit_stops_the_group() -> None:
    with pytest.raises(LimitExceeded) as info:
        procvisor.run(["sleep", "30"], limits=Limits(wall_time="200ms"))
    err = info.value
    assert err.limit == "wall_time" and err.result is not None
    assert err.result.limits == {"wall_time": "timer"} and not err.result.timed_out


def test_open_files_and_core_limits_are_set_in_the_child() -> None:
    r = procvisor.run(["sh", "-c", "ulimit -n; ulimit -c"], limits=Limits(open_files=50, core=0))
    assert r.stdout.split() == [b"50", b"0"]
    assert r.limits == {"open_files": "rlimit", "core": "rlimit"}


def test_preexec_fallback_when_prlimit_is_missing(monkeypatch) -> None:
    monkeypatch.setattr(_spawn, "_prlimit_path", None)
    assert _spawn.rlimit_method() == "preexec_fn"
    r = procvisor.run(["sh", "-c", "ulimit -n"], limits=Limits(open_files=40))
    assert r.stdout == b"40\n"


def test_prlimit_keeps_the_pid_and_the_command() -> None:
    code = "import os, sys; print(os.getpid(), sys.argv[1])"
    r = procvisor.run([PY, "-c", code, "arg"], limits=Limits(open_files=64))
    pid, arg = r.stdout.split()
    assert int(pid) == r.pid and arg == b"arg"


@pytest.fixture
def no_cgroups(monkeypatch) -> None:
    """procvisor as on a machine where it cannot make cgroups."""
    monkeypatch.setattr(_cgroup, "disabled", True)


def _needs(controller: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        not _cgroup.available(controller),
        reason=f"no writable cgroup v1 {controller} hierarchy here "
        "(procvisor uses it where there is one)",
    )


needs_pids_cgroup = _needs("pids")
needs_memory_cgroup = _needs("memory")
needs_cpu_cgroup = _needs("cpu")

ALLOCATE = "b = bytearray({} * 1024 * 1024); print('allocated')"  # zero-filled: pages touched


def test_without_a_cgroup_memory_is_address_space_per_process(no_cgroups) -> None:
    code = ALLOCATE.format(300)
    r = procvisor.run([PY, "-c", code], limits=Limits(memory="150M"))
    assert r.returncode == 1 and b"MemoryError" in r.stderr
    assert r.limits == {"memory": "rlimit"} and r.limit_exceeded is None
    assert procvisor.run([PY, "-c", code], limits=Limits(memory="1G")).returncode == 0


@needs_memory_cgroup
def test_memory_limit_is_a_cgroup_whose_oom_kill_is_reported() -> None:
    with pytest.raises(LimitExceeded) as info:
        procvisor.run([PY, "-c", ALLOCATE.format(300)], limits=Limits(memory="64M"))
    err = info.value
    assert err.limit == "memory" and err.allowed == 64 * 1024**2
    assert err.observed is not None and err.observed >= 60 * 1024**2  # the peak, at the limit
    assert "limit of 64M" in str(err) and "OOM killer" in str(err)
    assert err.result is not None and err.result.signal == "SIGKILL"
    assert err.result.limits == {"memory": "cgroup"} and err.result.stdout == b""
    within = procvisor.run([PY, "-c", ALLOCATE.format(20)], limits=Limits(memory="64M"))
    assert within.returncode == 0 and within.limit_exceeded is None
    assert within.stdout == b"allocated\n"


@needs_memory_cgroup
def test_the_memory_cgroup_counts_the_whole_tree() -> None:
    # 40M fits in 64M; a parent holding 40M while its child allocates 40M does not, though
    # each process alone is under the limit (a per-process limit would let both run).
    alone = [PY, "-c", ALLOCATE.format(40)]
    assert procvisor.run(alone, limits=Limits(memory="64M")).returncode == 0
    code = f"import subprocess; {ALLOCATE.format(40)}; subprocess.run({alone!r})"
    with pytest.raises(LimitExceeded) as info:
        procvisor.run([PY, "-c", code], limits=Limits(memory="64M"), timeout=30)
    assert info.value.limit == "memory"


@needs_cpu_cgroup
def test_cpus_limit_is_a_cpu_quota_for_the_tree() -> None:
    # The command reads its own cgroup's quota, then spins for a second of wall time: at
    # 0.2 CPUs it may use about 0.2 s of CPU, where unlimited it would use about 1 s.
    code = (
        "import time\n"
        "lines = [l.strip().split(':', 2) for l in open('/proc/self/cgroup')]\n"
        "cg = next(path for _, names, path in lines if 'cpu' in names.split(','))\n"
        "print(open(f'/sys/fs/cgroup/cpu{cg}/cpu.cfs_quota_us').read().strip())\n"
        "end = time.monotonic() + 1\n"
        "while time.monotonic() < end: pass\n"
    )
    r = procvisor.run([PY, "-c", code], limits=Limits(cpus=0.2), timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"20000\n" and r.limits == {"cpus": "cgroup"}
    assert r.usage is not None and r.usage.cpu < 0.6, r.usage


def test_without_a_cgroup_a_cpus_limit_is_a_duty_cycle(no_cgroups) -> None:
    # Two seconds of wall time spinning: about 0.5 s of CPU at 0.25 CPUs, 2 s unlimited.
    code = "import time\nend = time.monotonic() + 2\nwhile time.monotonic() < end: pass\n"
    r = procvisor.run([PY, "-c", code], limits=Limits(cpus=0.25), timeout=30)
    assert r.returncode == 0 and r.limits == {"cpus": "sampled"}, r.stderr
    assert r.usage is not None and 0.1 < r.usage.cpu < 1.2, r.usage


async def test_a_group_stopped_by_its_owner_stays_stopped_under_a_duty_cycle(no_cgroups) -> None:
    proc = await procvisor.spawn(
        [PY, "-c", "while True: pass"], limits=Limits(cpus=0.5), capture=False
    )
    async with proc:
        proc.signal("STOP")
        stopped_at = _cpu_seconds(proc.pid)
        # Several duty cycles later it has not run: the throttle did not continue it.
        await asyncio.sleep(3 * THROTTLE_PERIOD)  # the duration under test, not a wait
        assert _cpu_seconds(proc.pid) - stopped_at < 0.05
        proc.signal("CONT")
        await await_for(lambda: _cpu_seconds(proc.pid) - stopped_at > 0.05, timeout=10)


def _cpu_seconds(pid: int) -> float:
    used = group_cpu(pid)
    assert used is not None
    return used


@needs_pids_cgroup
def test_processes_limit_is_a_pids_cgroup_over_the_whole_tree() -> None:
    # The shell and the first two sleeps are 3: the third fork fails, in the child, at once.
    r = procvisor.run(
        ["sh", "-c", "sleep 5 & sleep 5 & sleep 5 & wait"], limits=Limits(processes=3)
    )
    assert r.limits == {"processes": "cgroup"}
    assert r.returncode != 0 and b"fork" in r.stderr.lower(), r.stderr
    assert not r.timed_out and r.limit_exceeded is None  # as with RLIMIT_NPROC


@needs_pids_cgroup
@needs_memory_cgroup
@needs_cpu_cgroup
def test_the_command_runs_in_its_cgroups_which_are_removed_after(tmp_path) -> None:
    code = "import os; print(os.getpid()); print(open('/proc/self/cgroup').read())"
    limits = Limits(processes=8, memory="256M", cpus=1.5, open_files=64)
    r = procvisor.run([PY, "-c", code], limits=limits)
    lines = r.stdout.decode().splitlines()
    assert int(lines[0]) == r.pid  # the trampolines (sh, prlimit) kept the pid
    for controller in ("pids", "memory", "cpu"):
        leaf = next(
            line.split(":", 2)[2]
            for line in lines[1:]
            if controller in line.split(":")[1].split(",")
        )
        assert f"/procvisor/{os.getpid()}/" in leaf
        base = _cgroup._base(controller)
        assert base is not None and not (base / leaf.rsplit("/", 1)[1]).exists()


@needs_pids_cgroup
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run as another user")
def test_a_command_run_as_another_user_joins_its_cgroup_too() -> None:
    r = procvisor.run(
        ["grep", "pids", "/proc/self/cgroup"], user="nobody", limits=Limits(processes=4)
    )
    assert r.returncode == 0, r.stderr
    assert f"/procvisor/{os.getpid()}/".encode() in r.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="the sampled mechanism is the one used for root")
def test_processes_limit_for_root_is_sampled_and_stops_the_group(no_cgroups) -> None:
    script = "for i in 1 2 3 4 5 6; do sleep 30 & done; wait"
    with pytest.raises(LimitExceeded) as info:
        procvisor.run(["sh", "-c", script], limits=Limits(processes=3), timeout=20, grace=0.2)
    err = info.value
    assert err.limit == "processes" and err.observed is not None and err.observed > 3
    assert err.result is not None and err.result.limits == {"processes": "sampled"}


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run as another user")
def test_processes_limit_for_a_user_is_a_kernel_rlimit(no_cgroups) -> None:
    script = "for i in 1 2 3 4 5 6; do sleep 5 & done 2>&1; wait"
    r = procvisor.run(["sh", "-c", script], user="nobody", limits=Limits(processes=3), grace=0.2)
    assert r.limits == {"processes": "rlimit"}
    assert b"fork" in r.stdout.lower() or b"resource" in r.stdout.lower()


@pytest.mark.parametrize(
    ("observed", "shown"),
    [(0.9988, None), (1.0, None), (1.004, None), (1.5, "(observed 1.5s)")],
)
def test_the_message_shows_what_was_observed_only_beyond_the_limit(
    observed: float, shown: str | None
) -> None:
    # CPU time is accounted in ticks: a process stopped at its 1s limit may show 998.8ms,
    # or 1.004s, which reads as "1s" like the limit itself.
    ex = SimpleNamespace(
        timeout=None,
        commands=[SimpleNamespace(limits=Limits(cpu_time=1))],
        limit_observed=observed,
    )
    result = procvisor.Result(
        args=("spin",),
        pid=1,
        returncode=-24,
        signal="SIGXCPU",
        stdout=b"",
        stderr=b"",
        duration=1.0,
        limit_exceeded="cpu_time",
    )
    with pytest.raises(LimitExceeded) as info:
        raise_for_outcome(ex, result, check=False, stage=None)  # type: ignore[arg-type]
    message = str(info.value)
    assert message.startswith("spin exceeded its cpu_time limit of 1s")
    assert (shown in message) if shown else "observed" not in message
    assert info.value.observed == observed


@needs_memory_cgroup
async def test_oom_kills_are_reported_while_the_group_runs() -> None:
    # The shell survives its child's kill and goes on: the kill is still seen, at once.
    script = f"{PY} -c 'bytearray(300 * 1024 * 1024)'; echo survived; exec sleep 600"
    proc = await procvisor.spawn(["sh", "-c", script], limits=Limits(memory="64M"))
    async with proc:
        kills = proc.oom_kills()
        assert await asyncio.wait_for(anext(kills), 20) == 1
        await kills.aclose()
        assert proc.running
    with pytest.raises(LimitExceeded) as info:
        await proc.wait()
    assert info.value.limit == "memory"


async def test_oom_kills_yields_nothing_without_a_memory_cgroup(no_cgroups) -> None:
    proc = await procvisor.spawn(["sleep", "600"], limits=Limits(memory="64M"))
    async with proc:
        assert [kill async for kill in proc.oom_kills()] == []


def test_nice_is_the_niceness_of_the_group_and_of_what_it_starts_later() -> None:
    r = procvisor.run(["sh", "-c", "nice; sh -c nice"], limits=Limits(nice=7))
    assert r.stdout == b"7\n7\n" and r.limits == {"nice": "setpriority"}
    assert procvisor.run(["nice"], limits=Limits(nice=-3)).stdout == b"-3\n"  # as root


def test_a_nice_that_cannot_be_set_stops_the_group_and_says_why(monkeypatch) -> None:
    def refuse(which: int, who: int, value: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(_exec.os, "setpriority", refuse)
    with pytest.raises(procvisor.SpawnError) as info:
        procvisor.run(["sleep", "30"], limits=Limits(nice=-10))
    assert info.value.reason == "permission_denied"
    assert "cannot set limits.nice to -10: raising a priority needs root" in str(info.value)


@needs_pids_cgroup
def test_a_process_removes_its_directory_of_leaves_when_it_exits() -> None:
    code = (
        "import os, procvisor\n"
        "procvisor.run(['true'], limits=procvisor.Limits(processes=8))\n"
        "print(os.getpid())\n"
    )
    base = _cgroup._base("pids")  # looked up (and swept) before: no sweep can hide it now
    assert base is not None
    r = procvisor.run([PY, "-c", code], timeout=60)
    assert r.returncode == 0, r.stderr
    assert not (base.parent / r.stdout.decode().strip()).exists()
