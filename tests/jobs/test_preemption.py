"""Preemption: a waiting job of higher priority suspends or requeues preemptible ones."""

from __future__ import annotations

from pathlib import Path

from helpers import await_for
from procvisor.jobs import JobSpec, JobState
from procvisor.policy.admission import Capacity

from .conftest import MakeScheduler

S = JobState
ONE_CORE = Capacity(cpu=1.0)


def process_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    return stat[stat.rfind(b")") + 2 :].split()[0].decode()


async def test_suspend_stops_the_low_job_until_the_high_one_is_done(
    make_scheduler: MakeScheduler,
) -> None:
    jobs = await make_scheduler(capacity=ONE_CORE, preempt="suspend")
    low = jobs.submit(JobSpec(("sleep", "30"), priority="low", preemptible=True))  # type: ignore[arg-type]
    await await_for(lambda: jobs.get(low).state is S.RUNNING)
    pid = jobs.get(low).pid
    assert pid is not None
    async with jobs.events() as events:
        high = jobs.submit(JobSpec(("sleep", "0.2"), priority="high"))  # type: ignore[arg-type]
        seen = []
        async for event in events:
            seen.append((event.job, event.new))
            if event.job == high and event.new is S.RUNNING:
                assert process_state(pid) == "T"  # stopped by SIGSTOP
            if event.job == low and event.new is S.RUNNING:
                break
    assert (low, S.PREEMPTED) in seen
    assert seen.index((low, S.PREEMPTED)) < seen.index((high, S.RUNNING))
    assert seen.index((high, S.SUCCEEDED)) < seen.index((low, S.RUNNING))
    assert process_state(pid) in "SR"  # resumed by SIGCONT
    job = jobs.get(low)
    assert job.runs == 1 and job.reason == "resumed: there is room again"
    await jobs.cancel([low])


async def test_requeue_stops_the_low_job_and_runs_it_again_later(
    make_scheduler: MakeScheduler, tmp_path: Path
) -> None:
    out = tmp_path / "runs"
    jobs = await make_scheduler(capacity=ONE_CORE, preempt="requeue")
    script = f'echo run >> "{out}"; sleep 30'
    low = jobs.submit(JobSpec(("sh", "-c", script), priority="low", preemptible=True))  # type: ignore[arg-type]
    await await_for(lambda: jobs.get(low).state is S.RUNNING)
    high = jobs.submit(JobSpec(("true",), priority="critical"))  # type: ignore[arg-type]
    assert (await jobs.wait(high, timeout=5)).state is S.SUCCEEDED
    await await_for(lambda: jobs.get(low).runs == 2 and jobs.get(low).state is S.RUNNING)
    states = [e.new for e in jobs.get(low).history]
    assert states[3:6] == [S.PREEMPTED, S.QUEUED, S.SCHEDULED]
    assert jobs.get(low).failures == 0
    await await_for(lambda: out.read_text().split() == ["run", "run"])
    await jobs.cancel([low])


async def test_no_preemption_for_a_job_that_still_would_not_fit(
    make_scheduler: MakeScheduler,
) -> None:
    jobs = await make_scheduler(capacity=Capacity(cpu=2.0), preempt="requeue")
    keeper = jobs.submit(JobSpec(("sleep", "30"), priority="background"))  # type: ignore[arg-type]
    low = jobs.submit(JobSpec(("sleep", "30"), priority="low", preemptible=True))  # type: ignore[arg-type]
    await await_for(lambda: jobs.summary().running == 2)
    # Needs both cores; stopping the preemptible job alone would not make room.
    high = jobs.submit(JobSpec(("true",), priority="high", requests="cpu=2"))  # type: ignore[arg-type]
    await await_for(lambda: jobs.summary().queued == 1)
    await jobs.cancel([keeper])
    # Now stopping the low job makes room: it is preempted.
    assert (await jobs.wait(high, timeout=5)).state is S.SUCCEEDED
    assert S.PREEMPTED in [e.new for e in jobs.get(low).history]
    await jobs.cancel([low])
