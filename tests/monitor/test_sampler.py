"""The sampler measures whole process trees of real processes and never trips over one."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import subprocess
import threading
import time

import psutil
import pytest

from helpers import pid_alive, wait_for
from procvisor.monitor import Sample, Sampler, Target, _procfs

from .conftest import Children

MB = 1024 * 1024

# Each child prints one line once it is set up (the handshake), then waits for the kill.
FORKS = """
import os, subprocess, sys, time
kids = [subprocess.Popen(["sleep", "1000"]) for _ in range(2)]
detached = subprocess.Popen(
    [sys.executable, "-c", "import os, time; print(os.getpid(), flush=True); time.sleep(1000)"],
    start_new_session=True, stdout=subprocess.PIPE, text=True)
detached_pid = detached.stdout.readline().split()[0]
print(*[k.pid for k in kids], detached_pid, flush=True)
time.sleep(1000)
"""
SPIN = """
print("ready", flush=True)
while True:
    pass
"""
HOG = """
import time
block = b"\\x01" * (100 * 1024 * 1024)  # written, so every page is resident
print("ready", flush=True)
time.sleep(1000)
"""
SLEEP = """
import time
print("ready", flush=True)
time.sleep(1000)
"""
# Killed alone, the root leaves a member of its process group behind (reparented to us).
LEAVES_ONE = """
import subprocess, time
kid = subprocess.Popen(["sleep", "1000"])
print(kid.pid, flush=True)
time.sleep(1000)
"""


@pytest.fixture(autouse=True, params=["every process", "below us"])
def scan_mode(request, monkeypatch) -> str:
    """Run every test with both scans: of the whole machine, and of our descendants only
    (the test process is a child subreaper, as the daemon is)."""
    if request.param == "below us":
        if not _procfs.CHILDREN_FILES:
            pytest.skip("this kernel lists no children of a thread (CONFIG_PROC_CHILDREN)")
        monkeypatch.setitem(globals(), "Sampler", functools.partial(Sampler, below=os.getpid()))
    return str(request.param)


def service(pid: int, **extra: object) -> Target:
    return Target(pid, {"kind": "service", "service": "web", "instance": "0"}, **extra)  # type: ignore[arg-type]


def test_a_tree_is_summed_over_its_children_and_a_setsid_descendant(
    children: Children,
) -> None:
    root = children.start(FORKS)
    *kids, detached = (int(w) for w in root.words)
    [sample] = Sampler().sample([service(root.pid)], detail=True)
    assert sample.alive
    assert {p.pid for p in sample.detail} == {root.pid, *kids, detached}
    assert sample.processes == 4
    assert sample.rss == sum(p.rss for p in sample.detail) > 0
    assert sample.vms == sum(p.vms for p in sample.detail) >= sample.rss
    assert sample.threads == sum(p.threads for p in sample.detail) >= 4
    assert sample.fds == sum(p.fds or 0 for p in sample.detail) >= 4
    assert sample.ctx_switches == sum(p.ctx_switches or 0 for p in sample.detail) > 0
    assert sample.read_bytes is not None and sample.write_bytes is not None
    by_pid = {p.pid: p for p in sample.detail}
    assert by_pid[detached].pgid == detached != root.pid  # its own group, still counted
    assert by_pid[kids[0]].name == "sleep"
    assert by_pid[kids[0]].ppid == root.pid


def test_a_group_member_whose_parent_left_is_still_counted(children: Children) -> None:
    root = children.start(LEAVES_ONE)
    kid = int(root.words[0])
    sampler = Sampler()
    target = service(root.pid)
    assert sampler.sample([target])[0].processes == 2
    os.kill(root.pid, signal.SIGKILL)
    root.proc.wait()
    [sample] = sampler.sample([target], detail=True)
    assert not sample.alive
    assert sample.state == "dead"
    assert [p.pid for p in sample.detail] == [kid]  # the group's survivor
    assert sample.processes == 1


def test_a_spinning_process_shows_about_one_core(children: Children) -> None:
    spinner = children.start(SPIN)
    sampler = Sampler()
    target = Target(spinner.pid, {"kind": "job", "job": "17"})
    [first] = sampler.sample([target])
    assert first.cpu is None  # no interval yet
    assert first.state in ("running", "sleeping")

    def busy() -> Sample | None:
        [sample] = sampler.sample([target], detail=True)
        return sample if sample.cpu is not None and sample.cpu > 50 else None

    sample = wait_for(busy, timeout=10, interval=0.2)
    assert sample.cpu is not None and sample.cpu < 150  # one thread: never two cores
    assert sample.detail[0].cpu == sample.cpu


def test_a_memory_hog_shows_its_resident_memory(children: Children) -> None:
    hog = children.start(HOG)
    [sample] = Sampler().sample([service(hog.pid)])
    assert sample.rss > 100 * MB
    assert sample.vms > sample.rss


def test_a_process_that_exits_between_samples_is_reported_dead(children: Children) -> None:
    child = children.start(SLEEP)
    sampler = Sampler()
    target = service(child.pid)
    [before] = sampler.sample([target])
    assert before.alive and before.processes == 1 and before.uptime is not None
    os.kill(child.pid, signal.SIGKILL)
    wait_for(lambda: not pid_alive(child.pid))
    [zombie] = sampler.sample([target])
    assert (zombie.alive, zombie.state, zombie.processes) == (False, "zombie", 0)
    child.proc.wait()
    [gone] = sampler.sample([target])
    assert (gone.alive, gone.state, gone.processes, gone.rss) == (False, "dead", 0, 0)
    assert gone.uptime is None
    assert gone.fds is None and gone.read_bytes is None


def test_reading_a_gone_process_reports_it_gone_instead_of_raising(children: Children) -> None:
    child = children.start(SLEEP)
    assert _procfs.read_extras(child.pid) is not None
    os.kill(child.pid, signal.SIGKILL)
    child.proc.wait()
    assert _procfs.read_extras(child.pid) is None


def test_a_tree_that_churns_children_never_breaks_the_sampler(children: Children) -> None:
    # A shell that starts a short-lived process after another: members keep vanishing
    # between the scan of /proc and the reads that follow it.
    churn = children.start(
        "import os\nprint('ready', flush=True)\n"
        "os.execvp('sh', ['sh', '-c', 'while :; do /bin/true; done'])"
    )
    sampler = Sampler()
    target = service(churn.pid)
    for _ in range(100):
        [sample] = sampler.sample([target], detail=True)
        assert sample.alive
        assert 1 <= sample.processes <= 2
        assert sample.processes == len(sample.detail)


def test_a_root_with_another_start_time_is_another_process(children: Children) -> None:
    child = children.start(SLEEP)
    real = psutil.Process(child.pid)
    with open(f"/proc/{child.pid}/stat") as f:
        ticks = float(f.read().rsplit(")", 1)[1].split()[19])
    [ours] = Sampler().sample([service(child.pid, start_ticks=ticks)])
    assert ours.alive and ours.processes == 1
    [other] = Sampler().sample([service(child.pid, start_ticks=ticks - 1)])
    assert (other.alive, other.state, other.processes, other.rss) == (False, "dead", 0, 0)
    assert real.is_running()


def _spawn_at(pid: int, children: Children) -> subprocess.Popen[str] | None:
    """Start a sleeping child with exactly ``pid`` (via ns_last_pid), or None if we can't."""
    for _ in range(20):
        try:
            with open("/proc/sys/kernel/ns_last_pid", "w") as f:
                f.write(str(pid - 1))
        except OSError:
            return None
        child = children.start(SLEEP)
        if child.pid == pid:
            return child.proc
        os.kill(child.pid, signal.SIGKILL)
        child.proc.wait()
    return None


def test_a_reused_pid_is_not_taken_for_the_old_process(children: Children) -> None:
    old = children.start(SLEEP)
    sampler = Sampler()
    target = service(old.pid)  # no start time given: the sampler learns it
    [first] = sampler.sample([target])
    assert first.alive
    with open(f"/proc/{old.pid}/stat") as f:
        old_tick = int(f.read().rsplit(")", 1)[1].split()[19])
    os.kill(old.pid, signal.SIGKILL)
    old.proc.wait()
    # A process is known by its pid and its start time, which the kernel keeps in clock ticks
    # (10 ms). Reuse in the wild takes a trip through all of pid_max, far longer than a tick;
    # here it takes a millisecond, so let the tick pass first, as it always has in the wild.
    wait_for(lambda: time.clock_gettime(time.CLOCK_BOOTTIME) * _procfs.CLK_TCK > old_tick + 1)
    if _spawn_at(old.pid, children) is None:
        pytest.skip("cannot make the kernel reuse a pid here (ns_last_pid not writable)")
    assert pid_alive(old.pid)  # a new process now has the old pid
    [after] = sampler.sample([target])
    assert (after.alive, after.state, after.processes, after.rss) == (False, "dead", 0, 0)


def test_a_sample_is_json_ready_and_flat_for_alert_rules(children: Children) -> None:
    child = children.start(SLEEP)
    [sample] = Sampler().sample([service(child.pid)], detail=True)
    data = json.loads(json.dumps(sample.to_dict()))
    assert data["labels"] == {"kind": "service", "service": "web", "instance": "0"}
    assert data["pid"] == child.pid
    assert data["detail"][0]["pid"] == child.pid
    fields = sample.fields()
    assert fields["service"] == "web"
    assert fields["rss"] == sample.rss
    assert fields["state"] == sample.state


def test_many_targets_sampled_in_one_call_keep_their_order(children: Children) -> None:
    procs = [children.start(SLEEP) for _ in range(3)]
    targets = [Target(c.pid, {"kind": "job", "job": str(i)}) for i, c in enumerate(procs)]
    samples = Sampler().sample(targets, now=123.0)
    assert [s.labels["job"] for s in samples] == ["0", "1", "2"]
    assert [s.pid for s in samples] == [c.pid for c in procs]
    assert all(s.mono == 123.0 and s.processes == 1 for s in samples)


def test_concurrent_calls_from_threads_are_safe(children: Children) -> None:
    child = children.start(SLEEP)
    sampler = Sampler()
    target = service(child.pid)
    errors: list[BaseException] = []

    def loop() -> None:
        try:
            for _ in range(20):
                assert sampler.sample([target])[0].alive
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=loop) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_targets_no_longer_sampled_are_forgotten(children: Children) -> None:
    a, b = children.start(SLEEP), children.start(SLEEP)
    sampler = Sampler(forget_after=1e-9)
    sampler.sample([service(a.pid)])
    sampler.sample([Target(b.pid, {"kind": "job", "job": "1"})])
    assert "remembering 1 targets" in repr(sampler)


def test_targets_are_checked() -> None:
    with pytest.raises(ValueError, match="positive"):
        Target(0, {})
    with pytest.raises(TypeError, match="str"):
        Target(1, {"instance": 0})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="forget_after"):
        Sampler(forget_after=0)
    a = Target(5, {"b": "1", "a": "2"})
    assert a == Target(5, {"a": "2", "b": "1"})
    assert hash(a) == hash(Target(5, {"a": "2", "b": "1"}))
    with contextlib.suppress(TypeError):
        a.labels["c"] = "3"  # type: ignore[index]
    assert "c" not in a.labels


def test_a_sample_soon_after_another_measures_cpu_from_an_older_one(
    children: Children,
) -> None:
    spinner = children.start(SPIN)
    sampler = Sampler(min_interval=0.3)
    target = Target(spinner.pid, {"kind": "job", "job": "17"})
    sampler.sample([target])

    def spinning() -> Sample | None:
        [sample] = sampler.sample([target])
        return sample if sample.cpu is not None and sample.cpu > 50 else None

    wait_for(spinning, timeout=10, interval=0.1)
    # Right after, the newest baseline is milliseconds old: ticks of 10 ms would make that
    # 0 % or several hundred; it is measured from the one before instead.
    [again] = sampler.sample([target])
    assert again.cpu is not None and 50 < again.cpu < 150


# On SIGUSR1 the root starts a spinning child; it prints the child's pid.
SPAWNS_ON_SIGNAL = """
import signal, subprocess, sys
kids = []
def spawn(*_):
    kids.append(subprocess.Popen([sys.executable, "-c", "while True: pass"]))
    print(kids[-1].pid, flush=True)
signal.signal(signal.SIGUSR1, spawn)
print("ready", flush=True)
while True:
    signal.pause()
"""


def test_a_child_born_between_samples_counts_all_of_its_cpu(children: Children) -> None:
    root = children.start(SPAWNS_ON_SIGNAL)
    sampler = Sampler(min_interval=0)
    target = service(root.pid)
    [before] = sampler.sample([target])
    assert before.processes == 1
    os.kill(root.pid, signal.SIGUSR1)
    assert root.proc.stdout is not None
    kid = psutil.Process(int(root.proc.stdout.readline()))
    wait_for(lambda: sum(kid.cpu_times()[:2]) >= 0.2, timeout=10)
    [after] = sampler.sample([target], detail=True)
    by_pid = {p.pid: p for p in after.detail}
    assert after.processes == 2
    kid_cpu = by_pid[kid.pid].cpu
    assert kid_cpu is not None and kid_cpu > 0  # not "unknown": it was born since
    assert after.cpu == pytest.approx(kid_cpu + (by_pid[root.pid].cpu or 0.0))


@pytest.mark.parametrize("scan_mode", ["below us"], indirect=True)
def test_below_us_reads_only_our_descendants_while_they_are_few(
    children: Children, monkeypatch
) -> None:
    root = children.start(FORKS)
    calls: list[str] = []
    for name in ("scan", "scan_below"):
        real = getattr(_procfs, name)

        def spy(*args, real=real, name=name):  # type: ignore[no-untyped-def]
            calls.append(name)
            return real(*args)

        monkeypatch.setattr(_procfs, name, spy)
    sampler = Sampler()
    full = Sampler.func().sample([service(root.pid)], detail=True)[0]  # type: ignore[attr-defined]
    assert calls == ["scan"]
    below = sampler.sample([service(root.pid)], detail=True)[0]
    assert calls == ["scan", "scan_below"]
    assert [p.pid for p in below.detail] == [p.pid for p in full.detail]
    assert (below.processes, below.threads) == (full.processes, full.threads) == (4, 4)
    # A target is read even when it is not below us (or a children file skipped it).
    [parent] = sampler.sample([service(os.getppid())])
    assert parent.alive and parent.processes >= 1
    # Once our descendants are most of the machine's processes, one file each is cheaper.
    monkeypatch.setattr(_procfs, "count", lambda: 20)
    sampler._below_count = 16
    sampler.sample([service(root.pid)])
    assert calls[-1] == "scan"
