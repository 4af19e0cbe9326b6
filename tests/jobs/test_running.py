"""Jobs run end to end with real processes: order, admission, timeouts, cancel, retries."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from helpers import await_for, pid_alive, reaped_and_gone
from procvisor.jobs import JobNotFound, JobSpec, JobState, JobStateError
from procvisor.policy.admission import Capacity, Quota

from .conftest import NODE, MakeScheduler, lines

S = JobState


def append(path: Path, word: str) -> list[str]:
    return ["sh", "-c", f'echo {word} >> "{path}"']


async def test_a_hundred_and_twenty_true_jobs_all_succeed(make_scheduler: MakeScheduler) -> None:
    jobs = await make_scheduler(max_running=20)
    ids = jobs.submit_many([JobSpec(("true",), requests="cpu=0.1") for _ in range(120)])
    assert ids == list(range(1, 121))
    done = await asyncio.gather(*(jobs.wait(i, timeout=20) for i in ids))
    assert {j.state for j in done} == {S.SUCCEEDED}
    assert all(j.exit_code == 0 and j.runs == 1 and j.pid for j in done)
    assert [e.new for e in done[0].history] == [S.QUEUED, S.SCHEDULED, S.RUNNING, S.SUCCEEDED]


async def test_priorities_then_fifo_order_with_one_slot(
    make_scheduler: MakeScheduler, tmp_path: Path
) -> None:
    out = tmp_path / "order"
    jobs = await make_scheduler(max_running=1)
    plan = [("n1", "normal"), ("bg", "background"), ("c", "critical"), ("n2", "normal")]
    plan += [("h", "high"), ("lo", "low"), ("n3", "normal")]
    ids = jobs.submit_many(
        [JobSpec(append(out, word), priority=level) for word, level in plan]  # type: ignore[arg-type]
    )
    for i in ids:
        await jobs.wait(i, timeout=10)
    assert lines(out) == ["c", "h", "n1", "n2", "n3", "lo", "bg"]


async def test_fifo_ignores_priority(make_scheduler: MakeScheduler, tmp_path: Path) -> None:
    out = tmp_path / "order"
    jobs = await make_scheduler(max_running=1, policy="fifo")
    levels = ["low", "critical", "background", "high"]
    ids = jobs.submit_many(
        [JobSpec(append(out, str(n)), priority=p) for n, p in enumerate(levels)]  # type: ignore[arg-type]
    )
    for i in ids:
        await jobs.wait(i, timeout=10)
    assert lines(out) == ["0", "1", "2", "3"]


async def test_output_exit_code_and_signal_are_recorded(make_scheduler: MakeScheduler) -> None:
    jobs = await make_scheduler()
    ok = jobs.submit(JobSpec(("sh", "-c", "echo out; echo err >&2")))
    bad = jobs.submit(JobSpec(("sh", "-c", "exit 7")))
    killed = jobs.submit(JobSpec(("sh", "-c", "kill -9 $$")))
    missing = jobs.submit(JobSpec(("no-such-program-pv",)))
    job = await jobs.wait(ok, timeout=5)
    assert job.state is S.SUCCEEDED and job.duration is not None and job.started and job.ended
    [log] = jobs.log_paths(ok)
    assert log.read_text() == "out\nerr\n"
    job = await jobs.wait(bad, timeout=5)
    assert (job.state, job.exit_code, job.reason) == (S.FAILED, 7, "exited with code 7")
    assert (job.runs, job.failures) == (1, 1)  # a failure even with no retry to use
    job = await jobs.wait(killed, timeout=5)
    assert (job.state, job.exit_code, job.signal) == (S.FAILED, None, "SIGKILL")
    job = await jobs.wait(missing, timeout=5)
    assert job.state is S.FAILED and job.reason.startswith("cannot start: program")
    assert (job.runs, job.failures) == (1, 1)
    assert jobs.log_paths(missing) == []


async def test_capacity_admission_never_exceeds_the_node(
    make_scheduler: MakeScheduler, tmp_path: Path
) -> None:
    jobs = await make_scheduler(capacity=Capacity(cpu=2.0, memory=NODE.memory))
    held: dict[int, float] = {}
    peak = 0.0
    order: list[int] = []
    async with jobs.events() as events:
        small = [JobSpec(("sleep", "0.2"), requests="cpu=1") for _ in range(2)]
        ids = jobs.submit_many([*small, JobSpec(("true",), requests="cpu=2"), *small])
        cpu = dict(zip(ids, [1, 1, 2, 1, 1], strict=True))
        async for event in events:
            if event.new is S.SCHEDULED:
                held[event.job] = cpu[event.job]
                order.append(event.job)
                peak = max(peak, sum(held.values()))
            elif event.new in (S.SUCCEEDED, S.FAILED):
                held.pop(event.job, None)
                if len(order) == 5 and not held:
                    break
    assert peak <= 2.0
    # The big job waits for room but is not overtaken by the small ones behind it.
    assert order == ids
    with pytest.raises(ValueError, match=r"requests\.cpu: 3 is more than the node's capacity of 2"):
        jobs.submit(JobSpec(("true",), requests="cpu=3"))
    with pytest.raises(ValueError, match=r"requests\.gpu: the node has no 'gpu'"):
        jobs.submit(JobSpec(("true",), requests="gpu=1"))


async def test_a_tenant_is_held_by_its_quota(make_scheduler: MakeScheduler, tmp_path: Path) -> None:
    quotas = {"default": Quota(max_running=1), "small": Quota(cpu=1.0)}
    jobs = await make_scheduler(quotas=quotas)
    ids = jobs.submit_many([JobSpec(("sleep", "0.2"), tenant="t1") for _ in range(2)])
    other = jobs.submit(JobSpec(("sleep", "0.2"), tenant="t2"))
    await await_for(lambda: jobs.summary().running == 2)
    usage = {u.tenant: u for u in jobs.quota_usage()}
    assert (usage["t1"].running, usage["t1"].queued) == (1, 1)
    assert usage["t1"].quota == Quota(max_running=1) and usage["t2"].running == 1
    for i in [*ids, other]:
        assert (await jobs.wait(i, timeout=5)).state is S.SUCCEEDED
    with pytest.raises(ValueError, match=r"requests\.cpu: 2 is more than the tenant's quota"):
        jobs.submit(JobSpec(("true",), tenant="small", requests="cpu=2"))


async def test_fair_share_does_not_starve_a_small_tenant(
    make_scheduler: MakeScheduler, tmp_path: Path
) -> None:
    out = tmp_path / "order"
    burn = 'i=0; while [ $i -lt 3000 ]; do i=$((i+1)); done; echo {} >> "{}"'
    jobs = await make_scheduler(max_running=1, policy="fair")
    many = [JobSpec(("sh", "-c", burn.format("a", out)), tenant="a") for _ in range(20)]
    few = [JobSpec(("sh", "-c", burn.format("b", out)), tenant="b") for _ in range(4)]
    ids = jobs.submit_many([*many, *few])
    for i in ids:
        await jobs.wait(i, timeout=20)
    order = lines(out)
    # b's four jobs share the node with a's instead of waiting behind all twenty.
    assert order.index("b") <= 2
    assert max(i for i, who in enumerate(order) if who == "b") < 12, order


async def test_timeout_stops_the_job_and_its_background_child(
    make_scheduler: MakeScheduler, tmp_path: Path
) -> None:
    pid_file = tmp_path / "child"
    script = f'sleep 60 & echo $! > "{pid_file}"; sleep 60'
    jobs = await make_scheduler()
    started = time.monotonic()
    job_id = jobs.submit(JobSpec(("sh", "-c", script), timeout=0.3))
    job = await jobs.wait(job_id, timeout=10)
    assert time.monotonic() - started < 5
    assert job.state is S.FAILED
    assert job.reason.startswith("timed out after 300ms (killed by SIGTERM)")
    assert not pid_alive(int(pid_file.read_text()))


@pytest.mark.parametrize("how", ["timeout", "cancel"])
async def test_a_child_that_left_the_jobs_group_is_stopped_too(
    make_scheduler: MakeScheduler, tmp_path: Path, how: str
) -> None:
    # setsid: the child has its own session and group, as a daemon that double-forked does;
    # it still carries the job's tag in its environment.
    pid_file = tmp_path / "child"
    script = f'setsid sleep 60 & echo $! > "{pid_file}"; sleep 60'
    jobs = await make_scheduler()
    job_id = jobs.submit(JobSpec(("sh", "-c", script), timeout=0.3 if how == "timeout" else 30))
    await await_for(lambda: pid_file.exists() and pid_file.read_text().strip())
    child = int(pid_file.read_text())
    # $! is known before setsid(1) has called setsid(2): wait until it has left the group.
    await await_for(lambda: os.getpgid(child) == child)
    if how == "cancel":
        await jobs.cancel([job_id])
    job = await jobs.wait(job_id, timeout=10)
    assert job.state is (S.FAILED if how == "timeout" else S.CANCELLED)
    await await_for(lambda: reaped_and_gone(child), timeout=10)


async def test_a_job_that_leaves_a_daemon_behind_has_it_stopped(
    make_scheduler: MakeScheduler, tmp_path: Path
) -> None:
    pid_file = tmp_path / "child"
    jobs = await make_scheduler()
    job_id = jobs.submit(JobSpec(("sh", "-c", f'sleep 60 & echo $! > "{pid_file}"')))
    job = await jobs.wait(job_id, timeout=10)
    assert job.state is S.SUCCEEDED
    assert not pid_alive(int(pid_file.read_text()))


async def test_cancel_a_running_and_a_queued_job(
    make_scheduler: MakeScheduler, tmp_path: Path
) -> None:
    pid_file = tmp_path / "child"
    ran = tmp_path / "ran"
    jobs = await make_scheduler(max_running=1)
    running = jobs.submit(JobSpec(("sh", "-c", f'sleep 60 & echo $! > "{pid_file}"; wait')))
    queued = jobs.submit(JobSpec(append(ran, "ran")))
    await await_for(pid_file.exists)
    started = time.monotonic()
    outcomes = await jobs.cancel([running, queued], reason="not needed")
    assert time.monotonic() - started < 1.5  # SIGTERM was enough: no grace period waited
    assert [(o.job, o.cancelled, o.state) for o in outcomes] == [
        (running, True, S.CANCELLED),
        (queued, True, S.CANCELLED),
    ]
    assert outcomes[0].message == "not needed (killed by SIGTERM)"
    assert not pid_alive(int(pid_file.read_text()))
    assert jobs.get(queued).runs == 0 and not ran.exists()
    again = await jobs.cancel([running])
    assert again[0].cancelled is False and again[0].message == "already cancelled"
    with pytest.raises(JobNotFound, match="no job 999"):
        await jobs.cancel([queued, 999])


async def test_retries_with_backoff_then_failure(
    make_scheduler: MakeScheduler, tmp_path: Path
) -> None:
    out = tmp_path / "runs"
    jobs = await make_scheduler()
    started = time.monotonic()
    job_id = jobs.submit(
        JobSpec(("sh", "-c", f'echo run >> "{out}"; exit 1'), retries=2, backoff="0.1s..0.15s")
    )
    job = await jobs.wait(job_id, timeout=10)
    assert time.monotonic() - started >= 0.25  # 0.1 s, then 0.15 s (doubling, capped)
    assert lines(out) == ["run"] * 3
    assert (job.state, job.runs, job.failures) == (S.FAILED, 3, 3)
    assert job.reason == "exited with code 1; no retries left (of 2)"
    reasons = [e.reason for e in job.history if e.new is S.RETRYING]
    assert reasons == [
        "exited with code 1; retry 1 of 2 in 100ms",
        "exited with code 1; retry 2 of 2 in 150ms",
    ]
    # retry() submits it again as a new job.
    again = jobs.retry(job_id)
    assert again != job_id
    assert jobs.get(again).history[0].reason.startswith(f"retry of job {job_id} (failed")
    await jobs.wait(again, timeout=10)
    ok = jobs.submit(JobSpec(("true",)))
    await jobs.wait(ok, timeout=5)
    with pytest.raises(JobStateError, match=rf"^job {ok} is succeeded: only a failed"):
        jobs.retry(ok)


async def test_a_job_not_started_by_its_deadline_expires(make_scheduler: MakeScheduler) -> None:
    jobs = await make_scheduler(max_running=1)
    blocker = jobs.submit(JobSpec(("sleep", "0.6")))
    late = jobs.submit(JobSpec(("true",), deadline=time.time() + 0.2))
    job = await jobs.wait(late, timeout=5)
    assert job.state is S.EXPIRED and job.runs == 0
    assert job.reason.startswith("not started by its deadline")
    assert jobs.get(blocker).state is S.RUNNING
    await jobs.cancel([blocker])
    # Its deadline has passed, yet a retry is accepted: the retry drops the deadline.
    again = jobs.retry(late)
    assert (await jobs.wait(again, timeout=5)).state is S.SUCCEEDED


async def test_a_job_that_could_only_expire_is_refused(make_scheduler: MakeScheduler) -> None:
    jobs = await make_scheduler()
    with pytest.raises(ValueError, match=r"^deadline: 2020-01-01T.* has already passed"):
        jobs.submit(JobSpec(("true",), deadline="2020-01-01T00:00:00+00:00"))
    with pytest.raises(ValueError, match=r"^deadline: .* comes before not_before "):
        jobs.submit(JobSpec(("true",), deadline="30m", not_before="1h"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^specs\[1\]: deadline: "):
        jobs.submit_many([JobSpec(("true",)), JobSpec(("true",), deadline=1.0)])
    assert jobs.jobs() == []  # nothing was stored
    # A deadline after the start is fine.
    late = jobs.submit(JobSpec(("true",), deadline="2h", not_before="1h"))  # type: ignore[arg-type]
    assert jobs.get(late).state is S.QUEUED
    await jobs.cancel([late])


async def test_edf_runs_the_earliest_deadline_first(
    make_scheduler: MakeScheduler, tmp_path: Path
) -> None:
    out = tmp_path / "order"
    jobs = await make_scheduler(max_running=1, policy="edf")
    now = time.time()
    deadlines = {"late": now + 60, "none": None, "soon": now + 20, "mid": now + 40}
    ids = jobs.submit_many([JobSpec(append(out, w), deadline=d) for w, d in deadlines.items()])
    for i in ids:
        await jobs.wait(i, timeout=10)
    assert lines(out) == ["soon", "mid", "late", "none"]


async def test_a_delayed_job_waits_until_due(make_scheduler: MakeScheduler) -> None:
    jobs = await make_scheduler()
    submitted = time.time()
    job_id = jobs.submit(JobSpec(("true",), not_before="0.3s"))  # type: ignore[arg-type]
    await await_for(lambda: jobs.summary().delayed == 1, timeout=1)
    job = await jobs.wait(job_id, timeout=5)
    assert job.state is S.SUCCEEDED
    assert job.started is not None and job.started >= submitted + 0.3


async def test_dependencies_run_after_success_and_cascade_failure(
    make_scheduler: MakeScheduler, tmp_path: Path
) -> None:
    out = tmp_path / "order"
    jobs = await make_scheduler()
    first = jobs.submit(JobSpec(("sh", "-c", f'sleep 0.2; echo first >> "{out}"')))
    second = jobs.submit(JobSpec(append(out, "second"), depends_on=(first,)))
    assert jobs.summary().waiting_on_dependencies == 1
    assert (await jobs.wait(second, timeout=5)).state is S.SUCCEEDED
    assert lines(out) == ["first", "second"]

    failing = jobs.submit(JobSpec(("sh", "-c", "sleep 0.1; exit 1")))
    child = jobs.submit(JobSpec(("true",), depends_on=(failing, first)))
    grandchild = jobs.submit(JobSpec(("true",), depends_on=(child,)))
    job = await jobs.wait(grandchild, timeout=5)
    assert job.state is S.CANCELLED and job.reason == f"job {child}, which it depends on, cancelled"
    job = jobs.get(child)
    assert job.state is S.CANCELLED and job.reason == f"job {failing}, which it depends on, failed"
    assert job.runs == 0
    with pytest.raises(ValueError, match=rf"^depends_on: job {failing} failed, so this job could"):
        jobs.submit(JobSpec(("true",), depends_on=(failing,)))
    with pytest.raises(ValueError, match=r"^depends_on: no job 999"):
        jobs.submit(JobSpec(("true",), depends_on=(999,)))


async def test_a_bad_spec_in_a_batch_stores_nothing(make_scheduler: MakeScheduler) -> None:
    jobs = await make_scheduler()
    with pytest.raises(ValueError, match=r"^specs\[1\]: requests\.cpu: 9 is more than"):
        jobs.submit_many([JobSpec(("true",)), JobSpec(("true",), requests="cpu=9")])
    with pytest.raises(ValueError, match=r"^specs\[0\]: timeout: 0 must be more than 0"):
        jobs.submit_many([{"command": "true", "timeout": 0}, {"command": "true"}])
    assert jobs.jobs() == []
