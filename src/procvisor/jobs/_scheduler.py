"""The job scheduler: durable command jobs run through the process layer.

One :class:`Scheduler` per daemon. It keeps every unfinished job in memory (the queue, the
running set, jobs waiting on dependencies or on a retry delay) and every job and state change
in the store. All decisions are made by one dispatcher task, woken by events (a submission, a
job's exit, a cancel, a timer for the next due time, deadline, retry or cron fire) and never
by a polling tick. One round of the dispatcher:

1. takes in the runs that ended, the timers that are due, the cancels and timeouts asked for;
2. asks :mod:`~procvisor.policy` what to do: which queued jobs expired
   (:meth:`~procvisor.policy.jobqueue.JobQueue.expire`), which start
   (:func:`~procvisor.policy.admission.decide_starts`), which running jobs to preempt
   (:func:`~procvisor.policy.admission.decide_preemption`), which suspended jobs to resume;
3. writes every resulting state change to the store in one transaction;
4. only then acts: spawns, signals, stops; and records the new runs' pids (a second
   transaction).

So every transition is in the store before it is acted upon, and a crash at any point leaves
the store describing what may be running: :meth:`Scheduler.start` (recovery) stops what a
previous scheduler left running before it starts anything.

**Durability decisions.**

- A run is recorded by its pid and its start time in clock ticks since boot; a pid that now
  names another process is left alone. A run started but not yet recorded (the scheduler
  died between the spawn and the write) is found by ``PROCVISOR_JOB=ID:STORE`` in its
  environment.
- Runs left behind are stopped, not re-adopted: their output pipes died with the old
  scheduler, so their next write would fail (the supervisor makes the same choice).
- The interrupted job is queued again *without using a retry* (``running → retrying →
  queued``, the reason says so): the crash was not its fault. A job whose spec says
  ``requeue_on_restart = False`` fails instead, for commands that must not run twice. So
  jobs run at least once and, with the default, possibly more than once (a run that
  finished its work but not its exit before the crash runs again), but never twice at the
  same time: the old group is gone before the job is queued.
- A clean shutdown (:meth:`Scheduler.aclose`) does the same as a crash, gracefully.
- A job's group is what is stopped: a child that leaves the group and the session
  (``setsid``, a double-forking daemon) escapes a timeout or a cancel. Stopping those needs
  a cgroup per job (not done yet).
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import os
import signal
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from procvisor.errors import ProcessError, SpawnError
from procvisor.jobs._active import (
    ActiveJob,
    CronSchedule,
    FitCandidate,
    describe_exit,
    local_time,
    on_monotonic,
)
from procvisor.jobs._config import JobsConfig, QuotaMap
from procvisor.jobs._errors import JobNotFound, JobStateError
from procvisor.jobs._events import JobEvents
from procvisor.jobs._logs import JobLog, log_files
from procvisor.jobs._model import (
    CancelOutcome,
    HoldOutcome,
    Job,
    JobEvent,
    QueueSummary,
    QuotaUsage,
    RecoveryReport,
    Schedule,
)
from procvisor.jobs._orphans import MARKER, escaped_groups, find_marked, group_is_ours
from procvisor.jobs._spec import JobSpec
from procvisor.policy.admission import (
    Capacity,
    PreemptMode,
    RunningJob,
    check_request,
    decide_preemption,
    decide_starts,
)
from procvisor.policy.cron import next_fire
from procvisor.policy.jobqueue import JobQueue
from procvisor.policy.jobstate import TERMINAL_STATES, JobState, check_transition, retry_delay
from procvisor.policy.units import format_duration
from procvisor.process import Process, Result, group_pids, reap_orphans, spawn, stop_group
from procvisor.store import JobChange, NewJob, Store

__all__ = ["Scheduler"]

_EXEC_SETTLE = 0.5
"""Seconds recovery waits before looking again for runs that had not exec'd yet."""

S = JobState

# How far back finished runs are charged to their tenants after a restart, without half_life.
_USAGE_WINDOW = 86_400.0


class Scheduler:
    """Runs command jobs durably: priorities, deadlines, retries, resources, quotas, cron.

    Make one per daemon, ``await start()`` it (it recovers what a previous scheduler left,
    then schedules), and ``await aclose()`` it; or use it as ``async with``. Every method must
    be called from the thread of the loop it was started on.

    * :meth:`submit` and :meth:`submit_many` store jobs and return their ids at once;
      :meth:`wait` awaits a job's end; :meth:`events` streams every state change.
    * :meth:`cancel` (a coroutine: it returns once stopped jobs are gone), :meth:`retry`,
      :meth:`cancel_schedule`.
    * Views: :meth:`get` (with the state history), :meth:`jobs`, :meth:`summary`,
      :meth:`quota_usage`, :meth:`log_paths`, :meth:`schedules`.

    Args:
        store: where jobs live; the scheduler is its only writer of job rows.
        log_dir: jobs' output goes to ``log_dir/jobs/ID.log`` (created 0700).
        config: how to schedule; :class:`JobsConfig` defaults otherwise.
    """

    def __init__(
        self,
        store: Store,
        log_dir: str | os.PathLike[str],
        config: JobsConfig | None = None,
    ) -> None:
        self._store = store
        self._config = config if config is not None else JobsConfig()
        self._capacity = self._config.resolve_capacity()
        self._quotas = QuotaMap(self._config)
        self._log_dir = Path(log_dir) / "jobs"
        self._marker = f":{os.path.abspath(store.path)}"
        self._queue: JobQueue[ActiveJob] = JobQueue(
            self._config.policy, aging=self._config.aging, half_life=self._config.half_life
        )
        self._weighted: set[str] = set()
        self._jobs: dict[int, ActiveJob] = {}  # every unfinished job
        self._procs: dict[int, ActiveJob] = {}  # jobs with a live process group
        self._holders: dict[int, RunningJob[int]] = {}  # what each admitted job holds
        self._blocked: dict[int, ActiveJob] = {}  # queued, waiting on dependencies
        self._held: dict[int, ActiveJob] = {}  # queued, held by a user (dependencies met)
        self._dependents: dict[int, set[int]] = {}
        self._preempting: set[int] = set()
        self._schedules: dict[int, CronSchedule] = {}
        self._timers: list[tuple[float, int, str, int]] = []
        self._timer_seq = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._finished: list[tuple[ActiveJob, Result]] = []
        self._cancels: dict[int, str] = {}
        self._timeouts: list[ActiveJob] = []
        self._pending: list[JobChange] = []
        self._events: list[JobEvent] = []
        self._done: list[ActiveJob] = []
        self._after: list[Callable[[], None]] = []
        self._waiters: dict[int, list[asyncio.Future[None]]] = {}
        self._subscribers: set[JobEvents] = set()
        self._wake = asyncio.Event()
        self._state = "new"
        self._shutdown_sent = False
        self._runner: asyncio.Task[None] | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._recovery: RecoveryReport | None = None

    def __repr__(self) -> str:
        return (
            f"<Scheduler {self._state} {self._config.discipline.value} queued={len(self._queue)} "
            f"running={len(self._procs)} store={self._store.path!r}>"
        )

    @property
    def config(self) -> JobsConfig:
        """The settings it schedules with."""
        return self._config

    @property
    def recovery(self) -> RecoveryReport:
        """What :meth:`start` recovered.

        Raises:
            RuntimeError: not started yet.
        """
        if self._recovery is None:
            raise RuntimeError("the job scheduler has not been started")
        return self._recovery

    @property
    def capacity(self) -> Capacity:
        """The node capacity it admits jobs against."""
        return self._capacity

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> RecoveryReport:
        """Recover what the store holds, then start scheduling; call once, before submitting.

        Recovery: process groups of runs a previous scheduler started and did not see end
        are stopped (SIGTERM, ``grace``, SIGKILL) before anything starts, so no job ever runs
        twice at once. Jobs that were running are queued again without using a retry (a
        crash of the scheduler is not the job's fault), or failed when their spec says
        ``requeue_on_restart = False``; jobs being started are queued again; queued and
        retrying jobs and cron schedules are reloaded; fair-share usage of recent runs is
        charged again.

        Raises:
            RuntimeError: it was started before.
            StoreError: the store cannot be read or written.
        """
        if self._state != "new":
            raise RuntimeError(f"scheduler already {self._state}; make a new one")
        self._state = "starting"
        self._log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        report = self._recovery = await self._recover()
        self._state = "running"
        self._runner = asyncio.create_task(self._run(), name="procvisor jobs dispatcher")
        self._runner.add_done_callback(self._on_runner_done)
        self._wake.set()
        return report

    async def aclose(self) -> None:
        """Stop scheduling: stop every running job's group and queue it again.

        Jobs that were running are queued again without using a retry (as after a crash),
        so the next scheduler on this store runs them. Waiters and event streams end. A
        second call returns at once.

        Raises:
            Exception: what stopped the dispatcher, if it failed (e.g. a StoreError).
        """
        if self._state == "closed":
            return
        if self._state in ("new", "starting"):
            self._state = "closed"
            return
        if self._state == "running":
            self._state = "closing"
            self._wake.set()
        try:
            if self._runner is not None:
                await self._runner
        finally:
            self._state = "closed"
            if self._timer is not None:
                self._timer.cancel()
            for stream in list(self._subscribers):
                stream.close()
            for futures in self._waiters.values():
                for future in futures:
                    if not future.done():
                        future.set_exception(RuntimeError("the job scheduler was closed"))
            self._waiters.clear()

    def _on_runner_done(self, runner: asyncio.Task[None]) -> None:
        """The dispatcher ended: on a failure, stop taking work and tell every waiter why."""
        error = None if runner.cancelled() else runner.exception()
        if error is None or self._state != "running":
            return  # closing normally, or aclose() reports the failure
        self._state = "failed"
        for stream in list(self._subscribers):
            stream.close()
        for futures in self._waiters.values():
            for future in futures:
                if not future.done():
                    future.set_exception(
                        RuntimeError(f"the job scheduler stopped: {error}; see aclose()")
                    )
        self._waiters.clear()

    async def __aenter__(self) -> Scheduler:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _check_running(self) -> None:
        if self._state != "running":
            raise RuntimeError(
                f"the job scheduler is {self._state}; "
                + ("await start() first" if self._state == "new" else "make a new one")
            )

    # -- submitting --------------------------------------------------------------------------

    def submit(self, spec: JobSpec | Mapping[str, Any]) -> int:
        """Store a job and queue it; return its id. See :meth:`submit_many`."""
        return self.submit_many([spec])[0]

    def submit_many(
        self, specs: Iterable[JobSpec | Mapping[str, Any]], *, held: bool = False
    ) -> list[int]:
        """Store jobs in one transaction and queue them; return their ids in order.

        ``held``: they wait, queued, until :meth:`release` (as if :meth:`hold` had been
        called at once, with no moment in which they could start).

        A spec with ``cron`` stores a schedule and its first job (queued for the first fire
        time); the id returned is that job's, and :attr:`Job.schedule` names the schedule.

        Raises:
            ValueError: a spec is malformed, asks for more than the node's capacity or its
                tenant's quota, or depends on a job that does not exist or can no longer
                succeed; the message names the field (and the spec's index when several
                were given). Nothing is stored then.
            RuntimeError: the scheduler is not running.
            StoreError: the store cannot be written; nothing is stored.
        """
        self._check_running()
        items = list(specs)
        many = len(items) > 1
        parsed: list[JobSpec] = []
        submitted = time.time()
        for i, raw in enumerate(items):
            try:
                spec = raw if isinstance(raw, JobSpec) else JobSpec.from_dict(raw)
                self._check_spec(spec)
                _check_start_window(spec, submitted)
            except ValueError as exc:
                raise ValueError(f"specs[{i}]: {exc}" if many else str(exc)) from None
            parsed.append(spec)
        self._check_dependencies(parsed, many)
        wall = time.time()
        now = time.monotonic()
        plain = [(i, s) for i, s in enumerate(parsed) if s.cron is None]
        ids: list[int] = [0] * len(parsed)
        rows = [self._row(s, wall, held=held) for _, s in plain]
        for (i, _), job_id in zip(plain, self._store.add_jobs(rows, ts=wall), strict=True):
            ids[i] = job_id
        created: list[tuple[int, JobSpec, int | None]] = [(ids[i], s, None) for i, s in plain]
        for i, spec in enumerate(parsed):
            if spec.cron is not None:
                first = next_fire(spec.cron, wall)
                second = next_fire(spec.cron, first)
                row = self._row(replace(spec, cron=None, not_before=first), wall, held=held)
                sid, job_id = self._store.add_schedule(
                    spec.cron, spec.overlap, spec.to_dict(), second, row
                )
                ids[i] = job_id
                self._schedules[sid] = CronSchedule(sid, spec, second, job_id)
                self._push_timer(on_monotonic(second, now, wall), "cron", sid)
                created.append((job_id, replace(spec, cron=None, not_before=first), sid))
        for job_id, spec, schedule in created:
            job = ActiveJob(job_id, spec, wall)
            job.schedule = schedule
            job.held = held
            self._jobs[job_id] = job
            if self._subscribers:
                self._events.append(JobEvent(job_id, wall, None, S.QUEUED, "submitted"))
            job.waiting_on = {d for d in spec.depends_on if d in self._jobs}
            self._enqueue(job, now, wall)
        self._publish()
        self._wake.set()
        return ids

    def retry(self, job_id: int) -> int:
        """Submit a failed, cancelled or expired job again, as a new job; return its id.

        The old job keeps its final state and history (final states are final); the new
        one has the same spec, and its first event says which job it retries.

        Raises:
            JobNotFound: no such job.
            JobStateError: the job has not ended, or it succeeded.
            ValueError: the spec no longer fits (capacity or quota lowered, a dependency
                failed); see :meth:`submit`.
        """
        self._check_running()
        rec = self._store.job(job_id)
        if rec is None:
            raise JobNotFound(job_id)
        if rec.state not in (S.FAILED, S.CANCELLED, S.EXPIRED):
            what = "it succeeded" if rec.state == S.SUCCEEDED else "it has not ended"
            raise JobStateError(
                job_id, rec.state, f"only a failed, cancelled or expired job is retried; {what}"
            )
        spec = JobSpec.from_dict(rec.spec)
        if spec.deadline is not None and spec.deadline <= time.time():
            spec = replace(spec, deadline=None)
        if spec.not_before is not None:
            spec = replace(spec, not_before=None)
        self._check_spec(spec)
        self._check_dependencies([spec], False)
        wall = time.time()
        row = self._row(spec, wall, reason=f"retry of job {job_id} ({rec.state}: {rec.reason})")
        (new_id,) = self._store.add_jobs([row], ts=wall)
        job = ActiveJob(new_id, spec, wall)
        job.reason = row.reason
        self._jobs[new_id] = job
        if self._subscribers:
            self._events.append(JobEvent(new_id, wall, None, S.QUEUED, row.reason))
        job.waiting_on = {d for d in spec.depends_on if d in self._jobs}
        self._enqueue(job, time.monotonic(), wall)
        self._publish()
        self._wake.set()
        return new_id

    def _row(
        self, spec: JobSpec, wall: float, reason: str = "submitted", *, held: bool = False
    ) -> NewJob:
        return NewJob(
            spec.name,
            spec.tenant,
            int(spec.priority),
            spec.to_dict(),
            wall,
            spec.not_before,
            spec.deadline,
            None,
            S.QUEUED.value,
            reason,
            held,
        )

    def _check_spec(self, spec: JobSpec) -> None:
        check_request(spec.requests, self._capacity, self._config.quota(spec.tenant))

    def _check_dependencies(self, specs: Sequence[JobSpec], many: bool) -> None:
        wanted = {d for s in specs for d in s.depends_on if d not in self._jobs}
        states = self._store.job_states(wanted) if wanted else {}
        for i, spec in enumerate(specs):
            where = f"specs[{i}]: " if many else ""
            for dep in spec.depends_on:
                if dep in self._jobs:
                    continue
                state = states.get(dep)
                if state is None:
                    raise ValueError(f"{where}depends_on: no job {dep}; give ids of stored jobs")
                if state != S.SUCCEEDED:
                    raise ValueError(
                        f"{where}depends_on: job {dep} {state}, so this job could never start; "
                        f"retry job {dep} first and depend on the new one"
                    )

    # -- holding -----------------------------------------------------------------------------

    def hold(self, ids: Iterable[int]) -> list[HoldOutcome]:
        """Keep queued (or retrying) jobs from starting until :meth:`release`; they keep their
        place in their tenant's line, their deadline and their dependencies.

        Raises:
            JobNotFound: an id names no job (nothing is held then).
            RuntimeError: the scheduler is not running.
        """
        return self._set_held(ids, True)

    def _known(self, ids: Iterable[int]) -> tuple[list[int], dict[int, str]]:
        """``ids`` once each, and the stored states of those no longer active.

        Raises:
            JobNotFound: an id names no job.
            RuntimeError: the scheduler is not running.
        """
        self._check_running()
        wanted = list(dict.fromkeys(ids))
        stored = self._store.job_states([i for i in wanted if i not in self._jobs])
        for job_id in wanted:
            if job_id not in self._jobs and job_id not in stored:
                raise JobNotFound(job_id)
        return wanted, stored

    def release(self, ids: Iterable[int]) -> list[HoldOutcome]:
        """Let held jobs start again. Raises as :meth:`hold`."""
        return self._set_held(ids, False)

    def _set_held(self, ids: Iterable[int], held: bool) -> list[HoldOutcome]:
        wanted, stored = self._known(ids)
        wall = time.time()
        now = time.monotonic()
        out = []
        for job_id in wanted:
            job = self._jobs.get(job_id)
            state = job.state if job is not None else JobState(stored[job_id])
            if job is None or state not in (S.QUEUED, S.RETRYING):
                why = "only a queued or retrying job can be held"
                out.append(HoldOutcome(job_id, False, state, f"{state.value}; {why}"))
                continue
            if job.held == held:
                already = "already held" if held else "not held"
                out.append(HoldOutcome(job_id, False, state, already))
                continue
            waiting = job.handle is not None or job.id in self._held
            if waiting:
                self._dequeue(job)
            job.held = held
            self._note(job, "held by user" if held else "released by user", wall)
            if waiting:
                self._enqueue(job, now, wall, since=on_monotonic(job.submitted, now, wall))
            out.append(HoldOutcome(job_id, True, state, job.reason))
        self._commit()
        self._wake.set()
        return out

    # -- cancelling --------------------------------------------------------------------------

    async def cancel(
        self, ids: Iterable[int], *, reason: str = "cancelled by user"
    ) -> list[CancelOutcome]:
        """Cancel jobs: a queued one leaves the queue, a running one's whole group is stopped.

        Returns once each job has reached a final state (a running one: once its process
        group is gone, after SIGTERM and at most ``grace`` seconds before SIGKILL). A job that
        had already finished is left as it is and reported with ``cancelled = False``.
        Jobs that depend on a cancelled job are cancelled too.

        Raises:
            JobNotFound: an id names no job (nothing is cancelled then).
            RuntimeError: the scheduler is not running.
        """
        wanted, stored = self._known(ids)
        waits = []
        for job_id in wanted:
            if job_id in self._jobs:
                self._cancels.setdefault(job_id, reason)
                waits.append(self._wait_future(job_id))
        self._wake.set()
        if waits:
            await asyncio.gather(*waits)
        out = []
        for job_id in wanted:
            if job_id in stored:
                state = JobState(stored[job_id])
                out.append(CancelOutcome(job_id, False, state, f"already {state.value}"))
                continue
            rec = self._store.job(job_id)
            assert rec is not None
            state = JobState(rec.state)
            done = state is S.CANCELLED
            out.append(CancelOutcome(job_id, done, state, rec.reason))
        return out

    def cancel_schedule(self, schedule: int) -> bool:
        """Stop a cron schedule from creating jobs; False if it was stopped already.

        Its jobs already queued or running are left alone (cancel them by id).

        Raises:
            JobNotFound: no such schedule.
        """
        if self._store.schedule(schedule) is None:
            raise JobNotFound(schedule, "schedule")
        self._schedules.pop(schedule, None)
        return self._store.deactivate_schedule(schedule)

    # -- waiting and watching ----------------------------------------------------------------

    def _wait_future(self, job_id: int) -> asyncio.Future[None]:
        future = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(job_id, []).append(future)
        return future

    async def wait(self, job_id: int, timeout: float | None = None) -> Job:
        """Wait until the job reaches a final state; return it (with its history).

        Raises:
            JobNotFound: no such job.
            TimeoutError: ``timeout`` seconds passed first (the job goes on).
            RuntimeError: the scheduler was closed first.
        """
        if job_id in self._jobs:
            future = self._wait_future(job_id)
            try:
                await asyncio.wait_for(asyncio.shield(future), timeout)
            finally:
                futures = self._waiters.get(job_id)
                if futures and future in futures and not future.done():
                    futures.remove(future)
        return self.get(job_id)

    def events(self, maxlen: int = 10_000) -> JobEvents:
        """A stream of every job state change from now on (see :class:`JobEvents`)."""
        stream = JobEvents(maxlen, self._subscribers.discard)
        if self._state == "closed":
            stream.close()
        else:
            self._subscribers.add(stream)
        return stream

    # -- views -------------------------------------------------------------------------------

    def get(self, job_id: int) -> Job:
        """The job as stored, with its state history.

        Raises:
            JobNotFound: no such job.
        """
        rec = self._store.job(job_id)
        if rec is None:
            raise JobNotFound(job_id)
        history = tuple(JobEvent._from_record(e) for e in self._store.job_events(job_id))
        return Job._from_record(rec, history)

    def jobs(
        self,
        *,
        state: JobState | str | Sequence[JobState | str] | None = None,
        tenant: str | None = None,
        limit: int | None = 100,
        before: int | None = None,
    ) -> list[Job]:
        """Jobs, newest first, without their history (see :meth:`get`).

        Args:
            state: only jobs in this state or these states; ``"held"`` alone: the queued
                jobs that are held.
            tenant: only this tenant's jobs.
            limit: at most this many (None: all).
            before: only jobs with a lower id (to page on).

        Raises:
            ValueError: an unknown state, or a negative limit.
        """
        states: list[str] | None = None
        held: bool | None = None
        if state is not None:
            raw = [state] if isinstance(state, str) else list(state)
            states = []
            for item in raw:
                if str(item).strip().lower() == "held" and len(raw) == 1:
                    states, held = [S.QUEUED.value], True  # queued jobs that are held
                    break
                try:
                    states.append(JobState(str(item).strip().lower()).value)
                except ValueError:
                    raise ValueError(
                        f"state: {item!r} is not a job state; use one of "
                        + ", ".join(s.value for s in JobState)
                        + ", or 'held' alone"
                    ) from None
        rows = self._store.jobs(state=states, tenant=tenant, limit=limit, before=before, held=held)
        return [Job._from_record(rec) for rec in rows]

    def summary(self) -> QueueSummary:
        """The queue at a glance: queued by priority and tenant, running, use, oldest wait."""
        wall = time.time()
        by_priority: dict[str, int] = {}
        by_tenant: dict[str, int] = {}
        queued = delayed = retrying = 0
        oldest: float | None = None
        for job in self._jobs.values():
            if job.state is S.RETRYING:
                retrying += 1
            if job.state is not S.QUEUED:
                continue
            queued += 1
            level = job.spec.priority.name.lower()
            by_priority[level] = by_priority.get(level, 0) + 1
            by_tenant[job.spec.tenant] = by_tenant.get(job.spec.tenant, 0) + 1
            ready = job.submitted
            if job.not_before is not None:
                if job.not_before > wall:
                    delayed += 1
                    continue  # not waiting for room yet
                ready = max(ready, job.not_before)
            if oldest is None or ready < oldest:
                oldest = ready
        cap = self._capacity
        capacity: dict[str, float | None] = {
            "cpu": cap.cpu,
            "memory": cap.memory,
            "max_running": cap.max_running,
            **cap.resources,
        }
        in_use: dict[str, float] = {"cpu": 0.0, "memory": 0.0, "max_running": 0.0}
        for holder in self._holders.values():
            if not holder.suspended:
                in_use["cpu"] += holder.requests.cpu
                in_use["max_running"] += 1
            in_use["memory"] += holder.requests.memory
            for key, amount in holder.requests.resources.items():
                in_use[key] = in_use.get(key, 0.0) + amount
        return QueueSummary(
            queued=queued,
            by_priority=by_priority,
            by_tenant=by_tenant,
            delayed=delayed,
            waiting_on_dependencies=len(self._blocked),
            held=sum(1 for j in self._jobs.values() if j.held and j.state is S.QUEUED),
            retrying=retrying,
            running=len(self._procs),
            suspended=sum(1 for j in self._procs.values() if j.suspended),
            capacity=capacity,
            in_use=in_use,
            oldest_wait=None if oldest is None else max(0.0, wall - oldest),
        )

    def quota_usage(self) -> list[QuotaUsage]:
        """Each tenant's use against its quota: tenants with a quota, or with jobs, by name."""
        now = time.monotonic()
        queued = {t: n for t, n in self._queue.counts().items()}
        for job in (*self._blocked.values(), *self._held.values()):
            queued[job.spec.tenant] = queued.get(job.spec.tenant, 0) + 1
        held: dict[str, list[RunningJob[int]]] = {}
        for holder in self._holders.values():
            held.setdefault(holder.tenant, []).append(holder)
        tenants = set(self._config.quotas) | set(queued) | set(held) | self._weighted
        out = []
        for tenant in sorted(tenants):
            holders = held.get(tenant, [])
            resources: dict[str, float] = {}
            for h in holders:
                for key, amount in h.requests.resources.items():
                    resources[key] = resources.get(key, 0.0) + amount
            out.append(
                QuotaUsage(
                    tenant=tenant,
                    running=sum(1 for h in holders if not h.suspended),
                    cpu=sum(h.requests.cpu for h in holders if not h.suspended),
                    memory=sum(h.requests.memory for h in holders),
                    resources=resources,
                    queued=queued.get(tenant, 0),
                    usage=self._queue.usage(tenant, now),
                    weight=self._queue.weight(tenant),
                    quota=self._config.quota(tenant),
                )
            )
        return out

    def log_paths(self, job_id: int) -> list[Path]:
        """The files holding the tail of a job's output (stdout and stderr), oldest first.

        Empty when the job printed nothing (or has not run yet).

        Raises:
            JobNotFound: no such job.
        """
        if job_id not in self._jobs and self._store.job(job_id) is None:
            raise JobNotFound(job_id)
        return log_files(self._log_path(job_id))

    def log_file(self, job_id: int) -> Path:
        """The file a job's output goes to now (``log_file(id).1`` holds the tail before it)."""
        return self._log_path(job_id)

    def _log_path(self, job_id: int) -> Path:
        return self._log_dir / f"{job_id}.log"

    def schedules(self, *, active: bool | None = True) -> list[Schedule]:
        """Cron schedules, by id: the active ones by default (None: all)."""
        return [Schedule._from_record(r) for r in self._store.schedules(active=active)]

    # -- the dispatcher ----------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                while True:
                    await self._wake.wait()
                    self._wake.clear()
                    await self._step()
                    if self._state == "closing" and not self._procs and not self._finished:
                        break
        except BaseExceptionGroup as group:
            # The dispatcher failed (the watchers never raise): report its error as itself.
            first = group.exceptions[0]
            if len(group.exceptions) == 1 and isinstance(first, Exception):
                raise first from None
            raise
        finally:
            self._tg = None

    async def _step(self) -> None:
        now = time.monotonic()
        wall = time.time()
        finished, self._finished = self._finished, []
        for job, result in finished:
            self._on_exit(job, result, now, wall)
        self._fire_timers(now, wall)
        self._take_requests(wall)
        starts: list[ActiveJob] = []
        if self._state == "running":
            for handle in self._queue.expire(now):
                job = handle.item
                job.handle = None
                deadline = "" if job.deadline is None else f" ({local_time(job.deadline)})"
                self._transition(job, S.EXPIRED, f"not started by its deadline{deadline}", wall)
                self._cascade(job, wall)
            plan = decide_starts(
                self._queue.candidates(now),
                list(self._holders.values()),
                self._capacity,
                now=now,
                quotas=self._quotas,
                max_scan=self._config.max_scan,
            )
            for handle, why in plan.too_large:
                job = handle.item
                self._queue.remove(handle)
                job.handle = None
                self._transition(job, S.FAILED, f"can never start here: {why}", wall)
                self._cascade(job, wall)
            for handle in plan.start:
                job = handle.item
                self._queue.remove(handle)
                job.handle = None
                self._admit(job, now, wall)
                starts.append(job)
            head = None if plan.reservation is None else plan.reservation.job.item
            mode = self._config.preempt_mode
            if mode is not None:
                if head is not None and not self._preempting:
                    self._preempt(head, mode, wall)
                self._resume(head, now, wall)
        self._commit()
        for job in starts:
            await self._launch(job, wall)
        self._commit()
        self._arm(time.monotonic(), time.time())

    def _admit(self, job: ActiveJob, now: float, wall: float) -> None:
        job.runs += 1
        job.pid = job.start_ticks = job.started = job.ended = None
        job.exit_code = job.duration = None
        job.signal = job.stop_reason = None
        job.not_before = None
        self._transition(job, S.SCHEDULED, f"admitted (run {job.runs})", wall)
        self._holders[job.id] = RunningJob(
            job.id,
            job.spec.tenant,
            job.spec.requests,
            now,
            job.spec.timeout,
            job.spec.priority,
            job.spec.preemptible,
        )

    async def _launch(self, job: ActiveJob, wall: float) -> None:
        log = JobLog(self._log_path(job.id), self._config.log_max_size)
        env = {**job.spec.env, MARKER: f"{job.id}{self._marker}", "PROCVISOR_JOB_ID": str(job.id)}
        try:
            proc = await spawn(
                job.spec.command,
                cwd=job.spec.cwd,
                env=env,
                merge_stderr=True,
                sinks=(log, log),
                grace=self._config.grace,
                limits=self._config.limits(job.spec.requests),
            )
        except (SpawnError, OSError, ValueError, TypeError) as exc:
            log.close()
            self._holders.pop(job.id, None)
            job.ended = time.time()
            self._fail_run(job, f"cannot start: {exc}", time.monotonic(), job.ended)
            return
        job.proc = proc
        job.pid = proc.pid
        job.start_ticks = proc.start_ticks
        job.started = time.time()
        self._procs[job.id] = job
        self._transition(job, S.RUNNING, f"started, pid {proc.pid}", job.started)
        if job.spec.timeout is not None:
            self._arm_timeout(job, time.monotonic() + job.spec.timeout)
        assert self._tg is not None
        self._tg.create_task(self._watch(job, proc), name=f"job {job.id}")

    async def _watch(self, job: ActiveJob, proc: Process) -> None:
        try:
            result = await proc.wait()
        except ProcessError as exc:  # a limit stopped it: the result comes with the error
            assert exc.result is not None
            result = exc.result
        self._finished.append((job, result))
        self._wake.set()

    def _arm_timeout(self, job: ActiveJob, at: float) -> None:
        job.timeout_at = at
        job.timer = asyncio.get_running_loop().call_later(
            max(0.0, at - time.monotonic()), self._on_timeout, job
        )

    def _on_timeout(self, job: ActiveJob) -> None:
        job.timer = None
        self._timeouts.append(job)
        self._wake.set()

    def _stop(self, job: ActiveJob) -> None:
        """Start stopping a job's process group (after its stop reason is stored)."""
        proc = job.proc
        assert proc is not None and self._tg is not None
        self._tg.create_task(self._stop_all_of(job.id, proc), name=f"stop job {job.id}")

    async def _stop_all_of(self, job_id: int, proc: Process) -> None:
        """Stop the job's group, then whatever of it escaped the group (found by its tag)."""
        await proc.stop(self._config.grace)
        store = os.path.abspath(self._store.path)
        escaped = await asyncio.to_thread(escaped_groups, store, job_id)
        await asyncio.gather(
            *(stop_group(g, self._config.grace, reap=True) for g in escaped if g > 1)
        )

    def _take_requests(self, wall: float) -> None:
        """Cancels, timeouts and the shutdown: decide and record; act after the commit."""
        timeouts, self._timeouts = self._timeouts, []
        for job in timeouts:
            if job.proc is not None and job.stop_reason is None:
                job.stop_reason = "timeout"
                timeout = format_duration(job.spec.timeout or 0.0)
                self._note(job, f"timed out after {timeout}; stopping its process group", wall)
                self._after.append(functools.partial(self._stop, job))
        cancels, self._cancels = self._cancels, {}
        for job_id, reason in cancels.items():
            found = self._jobs.get(job_id)
            if found is None or found.state in TERMINAL_STATES:
                continue
            job = found
            if job.proc is not None:
                if job.stop_reason != "cancel":
                    job.stop_reason = "cancel"
                    job.cancel_reason = reason
                    self._note(job, f"{reason}; stopping its process group", wall)
                    self._after.append(functools.partial(self._stop, job))
                continue
            self._dequeue(job)
            self._transition(job, S.CANCELLED, reason, wall)
            self._cascade(job, wall)
        if self._state == "closing" and not self._shutdown_sent:
            self._shutdown_sent = True
            for job in self._procs.values():
                if job.stop_reason is None or job.stop_reason == "preempt":
                    job.stop_reason = "shutdown"
                    self._note(job, "the scheduler is shutting down; stopping it", wall)
                    self._after.append(functools.partial(self._stop, job))

    def _on_exit(self, job: ActiveJob, result: Result, now: float, wall: float) -> None:
        self._procs.pop(job.id, None)
        self._holders.pop(job.id, None)
        self._preempting.discard(job.id)
        if job.timer is not None:
            job.timer.cancel()
            job.timer = None
        job.proc = None
        job.suspended = False
        code = result.returncode
        job.ended = wall
        job.duration = result.duration
        job.exit_code = code if code is not None and code >= 0 else None
        job.signal = result.signal
        cpu = result.usage.cpu if result.usage is not None else 0.0
        job.cpu_seconds += cpu
        if cpu > 0:
            self._queue.charge(job.spec.tenant, cpu, now=now)
        stop, job.stop_reason = job.stop_reason, None
        outcome = describe_exit(result)
        if stop == "cancel":
            self._transition(job, S.CANCELLED, f"{job.cancel_reason} ({outcome})", wall)
            self._cascade(job, wall)
        elif stop == "shutdown":
            self._requeue_interrupted(job, "the scheduler shut down while it ran", wall, now)
        elif job.state is S.PREEMPTED and stop == "preempt":
            self._transition(job, S.QUEUED, f"queued again after preemption ({outcome})", wall)
            self._enqueue(job, now, wall)
        elif job.state is S.PREEMPTED:  # killed by someone else while suspended
            self._fail_run(job, f"{outcome} while suspended", now, wall)
        elif stop is None and code == 0 and result.limit_exceeded is None:
            self._transition(job, S.SUCCEEDED, outcome, wall)
            self._unblock(job, now, wall)
        else:
            timeout = format_duration(job.spec.timeout or 0.0)
            why = f"timed out after {timeout} ({outcome})" if stop == "timeout" else outcome
            self._fail_run(job, why, now, wall)

    def _requeue_interrupted(
        self, job: ActiveJob, why: str, wall: float, now: float | None
    ) -> None:
        """A run cut short by the scheduler itself: queue it again (no retry used) or fail."""
        if job.state is S.RUNNING and not job.spec.requeue_on_restart:
            self._transition(job, S.FAILED, f"{why}, and requeue_on_restart is off", wall)
            self._cascade(job, wall)
            return
        if job.state is S.RUNNING:
            self._transition(job, S.RETRYING, f"{why}; queued again, no retry used", wall)
        self._transition(job, S.QUEUED, f"{why}; queued again, no retry used", wall)
        if now is not None and self._state == "running":
            self._enqueue(job, now, wall)

    def _fail_run(self, job: ActiveJob, why: str, now: float, wall: float) -> None:
        retries = job.spec.retries
        if job.failures < retries:
            job.failures += 1
            delay = retry_delay(job.failures, *job.spec.backoff)
            job.not_before = wall + delay
            self._transition(
                job,
                S.RETRYING,
                f"{why}; retry {job.failures} of {retries} in {format_duration(delay)}",
                wall,
            )
            self._push_timer(now + delay, "retry", job.id)
            return
        job.failures += 1
        if retries:
            why += f"; no retries left (of {retries})"
        self._transition(job, S.FAILED, why, wall)
        self._cascade(job, wall)

    # -- queue, dependencies, timers ---------------------------------------------------------

    def _enqueue(self, job: ActiveJob, now: float, wall: float, since: float | None = None) -> None:
        """Put a queued job in line, or aside until its dependencies have succeeded."""
        tenant = job.spec.tenant
        if tenant not in self._weighted:
            self._weighted.add(tenant)
            quota = self._config.quota(tenant)
            if quota is not None:
                self._queue.set_weight(tenant, quota.weight)
        if job.waiting_on:
            self._blocked[job.id] = job
            for dep in job.waiting_on:
                self._dependents.setdefault(dep, set()).add(job.id)
            if job.deadline is not None:
                self._push_timer(on_monotonic(job.deadline, now, wall), "deadline", job.id)
            return
        if job.held:
            self._held[job.id] = job
            if job.deadline is not None:
                self._push_timer(on_monotonic(job.deadline, now, wall), "deadline", job.id)
            return
        spec = job.spec
        job.handle = self._queue.push(
            job,
            now=now if since is None else since,
            tenant=tenant,
            priority=spec.priority,
            requests=spec.requests,
            runtime=spec.timeout,
            deadline=None if job.deadline is None else on_monotonic(job.deadline, now, wall),
            not_before=None if job.not_before is None else on_monotonic(job.not_before, now, wall),
        )

    def _dequeue(self, job: ActiveJob) -> None:
        if job.handle is not None:
            self._queue.remove(job.handle)
            job.handle = None
        self._held.pop(job.id, None)
        if self._blocked.pop(job.id, None) is not None:
            for dep in job.waiting_on:
                waiting = self._dependents.get(dep)
                if waiting is not None:
                    waiting.discard(job.id)

    def _unblock(self, job: ActiveJob, now: float, wall: float) -> None:
        for waiting_id in sorted(self._dependents.pop(job.id, ())):
            waiting = self._blocked.get(waiting_id)
            if waiting is None:
                continue
            waiting.waiting_on.discard(job.id)
            if not waiting.waiting_on:
                del self._blocked[waiting_id]
                self._enqueue(waiting, now, wall, since=on_monotonic(waiting.submitted, now, wall))

    def _cascade(self, job: ActiveJob, wall: float) -> None:
        """Cancel the jobs waiting on ``job``, which ended without success, and theirs."""
        for waiting_id in sorted(self._dependents.pop(job.id, ())):
            waiting = self._blocked.get(waiting_id)
            if waiting is None or waiting.state is not S.QUEUED:
                continue
            self._dequeue(waiting)
            self._transition(
                waiting, S.CANCELLED, f"job {job.id}, which it depends on, {job.state.value}", wall
            )
            self._cascade(waiting, wall)

    def _push_timer(self, at: float, kind: str, key: int) -> None:
        self._timer_seq += 1
        heapq.heappush(self._timers, (at, self._timer_seq, kind, key))
        if self._timer_at is None or at < self._timer_at:
            self._wake.set()  # the dispatcher re-arms for the earlier time

    def _arm(self, now: float, wall: float) -> None:
        times = [self._queue.next_due(now), self._queue.next_deadline()]
        if self._timers:
            times.append(self._timers[0][0])
        due = [t for t in times if t is not None]
        at = min(due) if due else None
        if at == self._timer_at and self._timer is not None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = at
        if at is not None and self._state == "running":
            self._timer = asyncio.get_running_loop().call_later(max(0.0, at - now), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self._wake.set()

    def _fire_timers(self, now: float, wall: float) -> None:
        while self._timers and self._timers[0][0] <= now:
            _, _, kind, key = heapq.heappop(self._timers)
            if kind == "cron":
                self._fire_schedule(key, now, wall)
                continue
            job = self._jobs.get(key)
            if job is None:
                continue
            if kind == "retry" and job.state is S.RETRYING:
                self._transition(job, S.QUEUED, "retry due: queued again", wall)
                self._enqueue(job, now, wall)
            elif (
                kind == "deadline"
                and (job.id in self._blocked or job.id in self._held)
                and job.state is S.QUEUED
                and job.deadline is not None
                and job.deadline <= wall + 0.001
            ):
                if job.id in self._held:
                    why = "held"
                else:
                    why = "waiting on " + ", ".join(str(d) for d in sorted(job.waiting_on))
                self._dequeue(job)
                self._transition(job, S.EXPIRED, f"not started by its deadline ({why})", wall)
                self._cascade(job, wall)

    def _fire_schedule(self, sid: int, now: float, wall: float) -> None:
        sched = self._schedules.get(sid)
        if sched is None or sched.next_fire is None:
            return
        if sched.next_fire > wall + 0.001:  # re-armed later (clock step): not due yet
            self._push_timer(on_monotonic(sched.next_fire, now, wall), "cron", sid)
            return
        fired = sched.next_fire
        after = next_fire(sched.cron, max(fired, wall))
        last = self._jobs.get(sched.last_job) if sched.last_job is not None else None
        if last is not None and sched.overlap == "skip":
            self._store.fire_schedule(sid, after, None, ts=wall)
        else:
            row = self._row(
                sched.spec, wall, reason=f"cron {sched.cron!r}: due {local_time(fired)}"
            )
            row = replace(row, schedule=sid)
            job_id = self._store.fire_schedule(sid, after, row, ts=wall)
            assert job_id is not None
            job = ActiveJob(job_id, sched.spec, wall)
            job.schedule = sid
            job.reason = row.reason
            self._jobs[job_id] = job
            if self._subscribers:
                self._events.append(JobEvent(job_id, wall, None, S.QUEUED, row.reason))
            self._enqueue(job, now, wall)
            sched.last_job = job_id
        sched.next_fire = after
        self._push_timer(on_monotonic(after, now, wall), "cron", sid)

    # -- preemption --------------------------------------------------------------------------

    def _preempt(self, head: ActiveJob, mode: PreemptMode, wall: float) -> None:
        holders = [
            h
            if self._jobs[h.key].state is S.RUNNING and self._jobs[h.key].stop_reason is None
            else replace(h, preemptible=False)
            for h in self._holders.values()
        ]
        plan = decide_preemption(
            head.spec.requests, head.spec.priority, holders, self._capacity, mode=mode
        )
        if plan is None:
            return
        for victim in plan.victims:
            job = self._jobs[victim.key]
            level = head.spec.priority.name.lower()
            self._transition(
                job, S.PREEMPTED, f"preempted ({mode.value}) for job {head.id} ({level})", wall
            )
            if mode is PreemptMode.REQUEUE:
                job.stop_reason = "preempt"
                self._note(job, job.reason, wall)
                self._preempting.add(job.id)
                self._after.append(functools.partial(self._stop, job))
            else:
                job.suspended = True
                self._holders[job.id] = replace(self._holders[job.id], suspended=True)
                if job.timer is not None and job.timeout_at is not None:
                    job.timer.cancel()
                    job.timer = None
                    job.time_left = max(0.0, job.timeout_at - time.monotonic())
                self._after.append(functools.partial(self._signal, job, signal.SIGSTOP))
        if mode is PreemptMode.SUSPEND:
            self._wake.set()  # what the suspended jobs held is free now: decide again

    def _resume(self, head: ActiveJob | None, now: float, wall: float) -> None:
        suspended = [j for j in self._procs.values() if j.suspended and j.stop_reason is None]
        suspended.sort(key=lambda j: (-j.spec.priority, j.id))
        for job in suspended:
            if head is not None and head.spec.priority > job.spec.priority:
                continue
            others = [h for key, h in self._holders.items() if key != job.id]
            spec = job.spec
            trial = decide_starts(
                [FitCandidate(spec.tenant, spec.requests, spec.timeout)],
                others,
                self._capacity,
                now=now,
                quotas=self._quotas,
            )
            if not trial.start:
                continue
            job.suspended = False
            self._holders[job.id] = replace(self._holders[job.id], suspended=False)
            self._transition(job, S.RUNNING, "resumed: there is room again", wall)
            self._after.append(functools.partial(self._signal, job, signal.SIGCONT))
            if job.time_left is not None:
                left = job.time_left
                job.time_left = None
                self._after.append(functools.partial(self._arm_timeout, job, now + left))

    def _signal(self, job: ActiveJob, sig: int) -> None:
        if job.proc is not None:
            job.proc.signal(sig)

    # -- recording ---------------------------------------------------------------------------

    def _transition(self, job: ActiveJob, new: JobState, reason: str, wall: float) -> None:
        old = job.state
        check_transition(old, new)
        job.state = new
        job.reason = reason
        self._pending.append(job.change(old, wall))
        if self._subscribers:
            self._events.append(JobEvent(job.id, wall, old, new, reason))
        if new in TERMINAL_STATES:
            self._done.append(job)

    def _note(self, job: ActiveJob, reason: str, wall: float) -> None:
        """Record a change of a job's fields without a change of state."""
        job.reason = reason
        self._pending.append(job.change(job.state, wall))

    def _commit(self) -> None:
        """Write the pending changes in one transaction, then act on them."""
        if self._pending:
            pending, self._pending = self._pending, []
            self._store.update_jobs(pending)
        after, self._after = self._after, []
        for action in after:
            action()
        self._publish()

    def _publish(self) -> None:
        events, self._events = self._events, []
        if events:
            for stream in list(self._subscribers):
                for event in events:
                    stream._put(event)
        done, self._done = self._done, []
        for job in done:
            if job.state in TERMINAL_STATES and job.proc is None:
                self._jobs.pop(job.id, None)
            for future in self._waiters.pop(job.id, ()):
                if not future.done():
                    future.set_result(None)

    # -- recovery ----------------------------------------------------------------------------

    async def _recover(self) -> RecoveryReport:
        records = self._store.unfinished_jobs()
        unrecorded = {r.id for r in records if r.state == S.SCHEDULED and r.pid is None}
        store_path = os.path.abspath(self._store.path)
        marked = find_marked(store_path, unrecorded)
        if unrecorded - set(marked):
            # A run spawned as the old scheduler died may not have reached exec yet: its
            # /proc/PID/environ still shows the scheduler's environment, without the tag.
            # Look again once any such child has had time to exec.
            await asyncio.sleep(_EXEC_SETTLE)
            marked = {**find_marked(store_path, unrecorded - set(marked)), **marked}
        stops: dict[int, int] = dict(marked)
        for rec in records:
            if rec.run_open and rec.pid is not None and group_is_ours(rec.pid, rec.start_ticks):
                stops[rec.id] = rec.pid
        # A run whose group holds only zombies ended while no scheduler ran. Its reaper (a
        # PID 1 that does not reap, as in many containers) has its exit status, not us.
        live = group_pids() if stops else {}
        ended = {job_id: pid for job_id, pid in stops.items() if pid not in live}
        for job_id in ended:
            del stops[job_id]
        if stops:
            await asyncio.gather(
                *(stop_group(p, self._config.grace, reap=True) for p in stops.values())
            )
        # Runs that ended after the old scheduler died are our zombies if we are their
        # subreaper (the daemon is): reap them, as init would.
        reap_orphans()
        wall = time.time()
        now = time.monotonic()
        requeued: list[int] = []
        failed: list[int] = []
        loaded: list[ActiveJob] = []
        for rec in records:
            job = ActiveJob.from_record(rec)
            if rec.run_open:
                job.ended = wall
            if job.state is S.RUNNING:
                why = (
                    "it ended while no scheduler ran, and its exit status is lost"
                    if job.id in ended
                    else "the scheduler restarted while it ran"
                )
                self._requeue_interrupted(job, why, wall, None)
                after: JobState = job.state
                (requeued if after is S.QUEUED else failed).append(job.id)
            elif job.state in (S.SCHEDULED, S.PREEMPTED):
                self._transition(
                    job, S.QUEUED, "the scheduler restarted before it ran; queued again", wall
                )
                requeued.append(job.id)
            elif rec.run_open:
                self._note(job, job.reason, wall)  # close the run of a finished job
            if job.state not in TERMINAL_STATES:
                loaded.append(job)
        # Dependencies: which of them are still to succeed, or can no longer.
        pending = {j.id for j in loaded}
        deps = {d for j in loaded for d in j.spec.depends_on if d not in pending}
        states = self._store.job_states(deps) if deps else {}
        for job in loaded:
            self._jobs[job.id] = job
        for job in loaded:
            if job.state is S.QUEUED:
                bad = [
                    d
                    for d in job.spec.depends_on
                    if d not in pending and states.get(d) != S.SUCCEEDED
                ]
                if bad:
                    self._transition(
                        job,
                        S.CANCELLED,
                        f"job {bad[0]}, which it depends on, {states.get(bad[0], 'is gone')}",
                        wall,
                    )
                    continue
                job.waiting_on = {d for d in job.spec.depends_on if d in pending}
                self._enqueue(job, now, wall, since=on_monotonic(job.submitted, now, wall))
            elif job.state is S.RETRYING:
                due = job.not_before if job.not_before is not None else wall
                self._push_timer(on_monotonic(due, now, wall), "retry", job.id)
        for job in list(self._jobs.values()):
            if job.state is S.CANCELLED:
                self._cascade(job, wall)
        self._commit()
        self._recharge(now, wall)
        for stored in self._store.schedules():
            spec = JobSpec.from_dict(stored.spec)
            sched = CronSchedule(stored.id, spec, stored.next_fire, stored.last_job)
            self._schedules[stored.id] = sched
            if stored.next_fire is not None:
                self._push_timer(on_monotonic(stored.next_fire, now, wall), "cron", stored.id)
        return RecoveryReport(
            loaded=len(loaded),
            stopped=tuple(sorted(stops.items())),
            ended=tuple(sorted(ended.items())),
            requeued=tuple(requeued),
            failed=tuple(failed),
        )

    def _recharge(self, now: float, wall: float) -> None:
        """Charge tenants again with the CPU-seconds of recent runs (fair share)."""
        half_life = self._config.half_life
        window = _USAGE_WINDOW if half_life is None else 10 * half_life
        for tenant, cpu, ended in self._store.tenant_usage(wall - window):
            self._queue.charge(tenant, cpu, now=on_monotonic(ended, now, wall))


def _check_start_window(spec: JobSpec, now: float) -> None:
    """Refuse a job that could only expire: its latest start is past, or before its earliest.

    Checked when a job is submitted, not when a stored one is loaded (its deadline may have
    passed since) nor on a retry (which drops a past deadline).
    """
    if spec.deadline is None:
        return
    if spec.deadline <= now:
        raise ValueError(
            f"deadline: {local_time(spec.deadline)} has already passed, so the job could "
            "only expire; give a later time, or a duration from now like '30m'"
        )
    if spec.not_before is not None and spec.deadline < spec.not_before:
        raise ValueError(
            f"deadline: {local_time(spec.deadline)} comes before not_before "
            f"{local_time(spec.not_before)}, so the job could only expire; "
            "move the deadline after the start"
        )
