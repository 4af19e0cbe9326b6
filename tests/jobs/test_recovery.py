"""Durability: a scheduler killed with SIGKILL loses no job and never runs one twice at once."""

from __future__ import annotations

import asyncio
import collections
import os
import subprocess
import sys
import time
from pathlib import Path

from helpers import await_for, pid_alive, wait_for
from procvisor.jobs import JobsConfig, JobSpec, JobState, RecoveryReport, Scheduler
from procvisor.policy.admission import Capacity
from procvisor.process import start_ticks
from procvisor.store import JobChange, NewJob, Store

from .conftest import MakeScheduler, lines

S = JobState
WORKER = Path(__file__).with_name("crash_worker.py")


async def test_sigkill_in_the_middle_of_a_batch_loses_no_job(tmp_path: Path) -> None:
    n = 40
    out, locks = tmp_path / "out", tmp_path / "locks"
    locks.mkdir()
    db = tmp_path / "jobs.db"
    args = [str(db), str(tmp_path / "logs"), str(out), str(locks), str(n)]
    worker = subprocess.Popen(
        [sys.executable, str(WORKER), *args], stdout=subprocess.PIPE, text=True
    )
    try:
        assert worker.stdout is not None and worker.stdout.readline() == "submitted\n"
        # Kill it while jobs run: some have ended, some are running, most are queued.
        wait_for(lambda: lines(out).count("end") >= 8, timeout=20)
    finally:
        worker.kill()
        worker.wait()
        if worker.stdout is not None:
            worker.stdout.close()
    killed_at = lines(out).count("end")
    assert killed_at < 2 * n  # it was killed before the batch was done

    with Store(db) as store:
        config = JobsConfig(capacity=Capacity(cpu=2.0), grace=1.0)
        async with Scheduler(store, tmp_path / "logs", config) as jobs:
            report = jobs.recovery
            assert report.loaded > 0 and report.requeued
            done = await asyncio.gather(*(jobs.wait(i, timeout=30) for i in range(1, n + 1)))
    text = out.read_text()
    failed = [(j.id, j.reason) for j in done if j.state is not S.SUCCEEDED]
    assert not failed, (failed, text, report)
    assert "OVERLAP" not in text
    ends = collections.Counter(line.split()[1] for line in text.splitlines() if "end" in line)
    assert set(ends) == {str(i) for i in range(1, n + 1)}  # none lost
    # A job whose run was cut short ran again: at least once each, never twice at once.
    starts = collections.Counter(line.split()[1] for line in text.splitlines() if "start" in line)
    assert all(starts[k] >= ends[k] for k in ends)
    for _, pid in report.stopped:
        assert not pid_alive(pid)


def _orphan(tmp_path: Path, db: Path, job_id: int) -> subprocess.Popen[bytes]:
    """A process started as a job's run would be, by a scheduler that then died."""
    env = {**os.environ, "PROCVISOR_JOB": f"{job_id}:{os.path.abspath(db)}"}
    return subprocess.Popen(["sleep", "60"], env=env, start_new_session=True)


def _running(job_id: int, pid: int, ticks: float | None) -> list[JobChange]:
    """The store's record of a job whose run started as ``pid`` at ``ticks``."""
    return [
        JobChange(job_id, "queued", "scheduled", 1.0, "admitted", runs=1),
        JobChange(
            job_id,
            "scheduled",
            "running",
            1.0,
            "started",
            runs=1,
            pid=pid,
            start_ticks=ticks,
            started=1.0,
        ),
    ]


async def test_running_jobs_are_stopped_and_requeued_or_failed(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    with Store(db) as store:
        again, once, starting = store.add_jobs(
            [
                NewJob("again", "default", 2, {"command": ["true"]}, time.time()),
                NewJob(
                    "once",
                    "default",
                    2,
                    {"command": ["true"], "requeue_on_restart": False},
                    time.time(),
                ),
                NewJob("starting", "default", 2, {"command": ["true"]}, time.time()),
            ]
        )
        procs = {i: _orphan(tmp_path, db, i) for i in (again, once, starting)}
        wait_for(lambda: all(start_ticks(p.pid) for p in procs.values()))
        changes = []
        for job_id in (again, once):
            pid = procs[job_id].pid
            changes += _running(job_id, pid, start_ticks(pid))
        # Crashed between the spawn and the write of its pid: found by its environment.
        changes.append(JobChange(starting, "queued", "scheduled", 1.0, "admitted", runs=1))
        store.update_jobs(changes)

        jobs = Scheduler(store, tmp_path / "logs", JobsConfig(capacity=Capacity(cpu=2.0)))
        try:
            report = await jobs.start()
            for proc in procs.values():
                # Stopped, and reaped by the scheduler (we are its subreaper): Popen sees 0.
                assert not pid_alive(proc.pid)
                proc.wait(timeout=5)
            assert sorted(report.stopped) == sorted((i, p.pid) for i, p in procs.items())
            assert report.requeued == (again, starting) and report.failed == (once,)
            failed = jobs.get(once)
            assert failed.state is S.FAILED
            assert failed.reason.endswith("and requeue_on_restart is off")
            for job_id in (again, starting):
                job = await jobs.wait(job_id, timeout=5)
                assert job.state is S.SUCCEEDED and job.runs == 2 and job.failures == 0
            states = [e.new for e in jobs.get(again).history]
            assert states[3:6] == [S.RETRYING, S.QUEUED, S.SCHEDULED]
        finally:
            await jobs.aclose()


async def test_a_reused_pid_is_left_alone(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    stranger = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        with Store(db) as store:
            [job_id] = store.add_jobs([NewJob("x", "default", 2, {"command": ["true"]}, 1.0)])
            # 1.0: not the stranger's start time
            store.update_jobs(_running(job_id, stranger.pid, 1.0))
            async with Scheduler(store, tmp_path / "logs", JobsConfig()) as jobs:
                assert jobs.recovery.stopped == ()
                assert (await jobs.wait(job_id, timeout=5)).state is S.SUCCEEDED
            assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


async def test_close_requeues_running_jobs_for_the_next_scheduler(
    make_scheduler: MakeScheduler,
) -> None:
    jobs = await make_scheduler()
    job_id = jobs.submit(JobSpec(("sleep", "30")))
    await await_for(lambda: jobs.get(job_id).state is S.RUNNING)
    pid = jobs.get(job_id).pid
    assert pid is not None
    await jobs.aclose()
    assert not pid_alive(pid)
    job = jobs.get(job_id)
    assert job.state is S.QUEUED and job.failures == 0
    assert job.reason == "the scheduler shut down while it ran; queued again, no retry used"
    again = await make_scheduler()
    assert again.recovery.loaded == 1
    await await_for(lambda: again.get(job_id).state is S.RUNNING)
    await again.cancel([job_id])


def test_recovery_report_reads_as_one_line() -> None:
    report = RecoveryReport(
        loaded=3, stopped=((3, 29229),), ended=((6, 29230),), requeued=(3, 5, 6), failed=(4,)
    )
    assert report.describe() == (
        "stopped what was still running: job 3 (pid 29229); "
        "ended while no scheduler ran, exit status lost: job 6 (pid 29230); "
        "queued again: 3, 5, 6; failed, as requeue_on_restart is off: 4"
    )
    assert RecoveryReport(loaded=2).describe() == "2 unfinished jobs loaded, nothing to recover"


async def test_a_run_that_ended_while_no_scheduler_ran_is_told_apart(tmp_path: Path) -> None:
    # A zombie: the run exited after its scheduler died, and whoever adopted it has not
    # reaped it (a PID 1 that does not reap). Here this test is that parent.
    db = tmp_path / "jobs.db"
    with Store(db) as store:
        (job_id,) = store.add_jobs(
            [NewJob("done", "default", 2, {"command": ["true"]}, time.time())]
        )
        proc = subprocess.Popen(["true"], start_new_session=True)
        ticks = start_ticks(proc.pid)
        wait_for(lambda: _state(proc.pid) == "Z")
        store.update_jobs(_running(job_id, proc.pid, ticks))
        jobs = Scheduler(store, tmp_path / "logs", JobsConfig(capacity=Capacity(cpu=2.0)))
        try:
            report = await jobs.start()
            assert report.ended == ((job_id, proc.pid),) and report.stopped == ()
            assert report.requeued == (job_id,)
            reasons = [e.reason for e in jobs.get(job_id).history]
            lost = "it ended while no scheduler ran, and its exit status is lost"
            assert any(r.startswith(lost) for r in reasons), reasons
            job = await jobs.wait(job_id, timeout=10)
            assert job.state is S.SUCCEEDED and job.runs == 2
        finally:
            await jobs.aclose()
            proc.wait()  # if the scheduler did not reap it already


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    return stat[stat.rfind(b")") + 2 :].split()[0].decode()
