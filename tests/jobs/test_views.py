"""What the views show: a job with its history, listings, the queue, events, logs."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from helpers import await_for
from procvisor.jobs import JobEvent, JobNotFound, JobSpec, JobState
from procvisor.jobs._logs import JobLog, log_files

from .conftest import MakeScheduler

S = JobState


async def test_get_list_and_summary(make_scheduler: MakeScheduler) -> None:
    jobs = await make_scheduler(max_running=1)
    blocker = jobs.submit(JobSpec(("sleep", "30"), name="blocker"))
    await await_for(lambda: jobs.summary().running == 1)
    queued = jobs.submit_many(
        [
            JobSpec(("true",), tenant="a", priority="high"),  # type: ignore[arg-type]
            JobSpec(("true",), tenant="b"),
            JobSpec(("true",), tenant="b", not_before="1h"),  # type: ignore[arg-type]
        ]
    )
    waiting = jobs.submit(JobSpec(("true",), depends_on=(blocker,)))
    with pytest.raises(TimeoutError):
        await jobs.wait(blocker, timeout=0.05)
    summary = jobs.summary()
    assert summary.running == 1 and summary.queued == 4
    assert summary.by_tenant == {"a": 1, "b": 2, "default": 1}
    assert summary.by_priority == {"high": 1, "normal": 3}
    assert (summary.delayed, summary.waiting_on_dependencies) == (1, 1)
    assert summary.in_use["cpu"] == 1.0 and summary.capacity["cpu"] == 4.0
    assert summary.oldest_wait is not None and summary.oldest_wait >= 0
    assert set(summary.to_dict()) >= {"queued", "by_tenant", "in_use", "oldest_wait"}

    job = jobs.get(blocker)
    assert (job.name, job.state, job.runs, job.tenant) == ("blocker", S.RUNNING, 1, "default")
    assert [e.new for e in job.history] == [S.QUEUED, S.SCHEDULED, S.RUNNING]
    assert job.to_dict()["history"][0]["new"] == "queued"
    assert [j.id for j in jobs.jobs(state="queued")] == [waiting, *reversed(queued)]
    assert [j.id for j in jobs.jobs(tenant="b")] == [queued[2], queued[1]]
    assert jobs.jobs(state="running")[0].history == ()
    with pytest.raises(ValueError, match=r"^state: 'done' is not a job state"):
        jobs.jobs(state="done")
    with pytest.raises(JobNotFound):
        jobs.get(999)
    with pytest.raises(JobNotFound):
        jobs.log_paths(999)
    await jobs.cancel([blocker, queued[2]])
    assert jobs.get(waiting).state is S.CANCELLED


async def test_events_stream_every_change_in_order(make_scheduler: MakeScheduler) -> None:
    jobs = await make_scheduler()
    seen: list[JobEvent] = []
    async with jobs.events() as events:
        job_id = jobs.submit(JobSpec(("true",)))
        async for event in events:
            seen.append(event)
            if event.new is S.SUCCEEDED:
                break
    assert [(e.job, e.old, e.new) for e in seen] == [
        (job_id, None, S.QUEUED),
        (job_id, S.QUEUED, S.SCHEDULED),
        (job_id, S.SCHEDULED, S.RUNNING),
        (job_id, S.RUNNING, S.SUCCEEDED),
    ]
    assert seen[-1].to_dict()["new"] == "succeeded"


async def test_a_slow_reader_loses_the_oldest_events(make_scheduler: MakeScheduler) -> None:
    jobs = await make_scheduler()
    events = jobs.events(maxlen=2)
    ids = jobs.submit_many([JobSpec(("true",)) for _ in range(3)])
    await asyncio.gather(*(jobs.wait(i, timeout=5) for i in ids))
    events.close()
    assert len([e async for e in events]) == 2 and events.dropped == 10


async def test_closing_ends_streams_and_waiters(make_scheduler: MakeScheduler) -> None:
    jobs = await make_scheduler()
    job_id = jobs.submit(JobSpec(("true",), not_before="1h"))  # type: ignore[arg-type]
    waiter = asyncio.ensure_future(jobs.wait(job_id))
    events = jobs.events()
    await asyncio.sleep(0)
    await jobs.aclose()
    assert [e async for e in events] == []
    with pytest.raises(RuntimeError, match="closed"):
        await waiter
    with pytest.raises(RuntimeError, match="the job scheduler is closed"):
        jobs.submit(JobSpec(("true",)))


def test_a_job_log_keeps_the_tail(tmp_path: Path) -> None:
    path = tmp_path / "1.log"
    log = JobLog(path, max_size=10)
    assert log_files(path) == []
    for chunk in (b"aaaa\n", b"bbbb\n", b"cccc\n", b"0123456789ABCDEF"):
        log.feed(chunk)
    log.close()
    assert log_files(path) == [tmp_path / "1.log.1", path]
    assert (tmp_path / "1.log.1").read_bytes() == b"cccc\n"
    assert path.read_bytes() == b"6789ABCDEF"


async def test_a_store_failure_stops_the_scheduler_and_tells_waiters(
    make_scheduler: MakeScheduler,
) -> None:
    jobs = await make_scheduler()
    job_id = jobs.submit(JobSpec(("sleep", "0.2")))
    await await_for(lambda: jobs.get(job_id).state is S.RUNNING)
    waiter = asyncio.ensure_future(jobs.wait(job_id))
    jobs._store.close()  # its exit cannot be recorded now
    with pytest.raises(RuntimeError, match=r"the job scheduler stopped: store .* is closed"):
        await waiter
    with pytest.raises(RuntimeError, match="the job scheduler is failed"):
        jobs.submit(JobSpec(("true",)))
    with pytest.raises(RuntimeError, match="is closed"):
        await jobs.aclose()
