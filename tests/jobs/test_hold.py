"""Holding queued jobs and releasing them: with real processes, a deadline, dependencies, and
a scheduler restarted in between."""

from __future__ import annotations

from pathlib import Path

import pytest

from procvisor.jobs import JobNotFound, JobSpec, JobState

from .conftest import MakeScheduler, lines
from .test_running import append

S = JobState


async def test_a_held_job_waits_until_released_in_its_place(
    make_scheduler: MakeScheduler, tmp_path: Path
) -> None:
    out = tmp_path / "order"
    jobs = await make_scheduler(max_running=1)
    [first, second] = jobs.submit_many(
        [JobSpec(append(out, "first")), JobSpec(append(out, "second"))], held=True
    )
    third = jobs.submit(JobSpec(append(out, "third")))
    await jobs.wait(third, timeout=10)
    assert lines(out) == ["third"]  # the held ones did not start, though there was room
    assert [jobs.get(i).held for i in (first, second)] == [True, True]
    assert jobs.summary().held == 2
    assert [j.id for j in jobs.jobs(state="held")] == [second, first]
    [outcome] = jobs.release([second])
    assert outcome.changed and outcome.message == "released by user"
    await jobs.wait(second, timeout=10)
    assert jobs.get(first).state is S.QUEUED and jobs.get(first).held
    jobs.release([first])
    job = await jobs.wait(first, timeout=10)
    assert job.state is S.SUCCEEDED and not job.held
    assert lines(out) == ["third", "second", "first"]


async def test_hold_refuses_what_is_not_waiting_and_names_unknown_jobs(
    make_scheduler: MakeScheduler,
) -> None:
    jobs = await make_scheduler()
    done = jobs.submit(JobSpec(["true"]))
    await jobs.wait(done, timeout=10)
    [outcome] = jobs.hold([done])
    assert not outcome.changed and outcome.state is S.SUCCEEDED
    assert outcome.message == "succeeded; only a queued or retrying job can be held"
    later = jobs.submit(JobSpec(["true"], not_before="1h"))
    assert [o.changed for o in jobs.hold([later, later])] == [True]  # an id once
    assert jobs.hold([later])[0].message == "already held"
    assert jobs.release([done])[0].changed is False
    with pytest.raises(JobNotFound, match="no job 999"):
        jobs.hold([later, 999])
    jobs.release([later])
    assert not jobs.get(later).held


async def test_a_held_job_still_expires_at_its_deadline(make_scheduler: MakeScheduler) -> None:
    jobs = await make_scheduler()
    [job_id] = jobs.submit_many([JobSpec(["true"], deadline="300ms")], held=True)
    job = await jobs.wait(job_id, timeout=10)
    assert job.state is S.EXPIRED and job.reason == "not started by its deadline (held)"


async def test_a_held_dependent_stays_held_after_its_dependency_succeeds(
    make_scheduler: MakeScheduler, tmp_path: Path
) -> None:
    out = tmp_path / "order"
    jobs = await make_scheduler()
    [dep] = jobs.submit_many([JobSpec(append(out, "dep"))], held=True)
    after = jobs.submit(JobSpec(append(out, "after"), depends_on=[dep]))
    assert jobs.hold([after])[0].changed
    jobs.release([dep])
    await jobs.wait(dep, timeout=10)
    assert jobs.get(after).state is S.QUEUED and jobs.get(after).held
    jobs.release([after])
    await jobs.wait(after, timeout=10)
    assert lines(out) == ["dep", "after"]


async def test_a_hold_outlives_a_restart_of_the_scheduler(
    make_scheduler: MakeScheduler, tmp_path: Path
) -> None:
    out = tmp_path / "order"
    first = await make_scheduler()
    [job_id] = first.submit_many([JobSpec(append(out, "held"))], held=True)
    await first.aclose()
    second = await make_scheduler()
    other = second.submit(JobSpec(append(out, "other")))
    await second.wait(other, timeout=10)  # the dispatcher had room and turns to start it
    assert second.get(job_id).state is S.QUEUED
    assert second.get(job_id).held and second.summary().held == 1
    second.release([job_id])
    assert (await second.wait(job_id, timeout=10)).state is S.SUCCEEDED
    assert lines(out) == ["other", "held"]
