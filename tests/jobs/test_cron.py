"""Cron schedules: one job per period, no pile-up while the previous one runs."""

from __future__ import annotations

import itertools

import pytest

from helpers import await_for
from procvisor.jobs import JobNotFound, JobSpec, JobState

from .conftest import MakeScheduler

S = JobState


async def test_cron_runs_once_per_period_and_skips_while_busy(
    make_scheduler: MakeScheduler,
) -> None:
    jobs = await make_scheduler()
    # Every second (six fields: seconds last), each run lasting 1.3 s.
    first = jobs.submit(JobSpec(("sleep", "1.3"), cron="* * * * * *"))
    sid = jobs.get(first).schedule
    assert sid is not None
    await await_for(lambda: len(jobs.jobs(state="succeeded")) >= 2, timeout=8)
    [schedule] = jobs.schedules()
    assert schedule.id == sid and schedule.cron == "* * * * * *" and schedule.skipped >= 1
    assert jobs.cancel_schedule(sid) is True
    assert jobs.schedules() == []
    runs = sorted(
        (j.started, j.ended) for j in jobs.jobs(state=["succeeded", "running"]) if j.started
    )
    for (_, ended), (started, _) in itertools.pairwise(runs):
        assert ended is not None and started is not None and started >= ended  # never overlap
    await jobs.cancel([j.id for j in jobs.jobs(state=["queued", "running"])])
    with pytest.raises(JobNotFound, match="no schedule 99"):
        jobs.cancel_schedule(99)


async def test_overlap_allow_queues_a_job_every_period(make_scheduler: MakeScheduler) -> None:
    jobs = await make_scheduler()
    jobs.submit(JobSpec(("sleep", "5"), cron="* * * * * *", overlap="allow"))
    await await_for(lambda: jobs.summary().running >= 2, timeout=5)
    [schedule] = jobs.schedules()
    jobs.cancel_schedule(schedule.id)
    assert schedule.skipped == 0
    await jobs.cancel([j.id for j in jobs.jobs(state=["queued", "running"])])
