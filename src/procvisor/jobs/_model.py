"""What the scheduler reports: jobs, their events, the queue, quota use, schedules."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from procvisor.jobs._spec import JobSpec
from procvisor.policy.admission import Quota
from procvisor.policy.jobstate import TERMINAL_STATES, JobState
from procvisor.policy.taskqueue import Priority
from procvisor.store import JobEventRecord, JobRecord, ScheduleRecord

__all__ = [
    "CancelOutcome",
    "HoldOutcome",
    "Job",
    "JobEvent",
    "QueueSummary",
    "QuotaUsage",
    "RecoveryReport",
    "Schedule",
]


@dataclass(frozen=True, slots=True)
class JobEvent:
    """One state change of a job. ``old`` is None for its submission; ``ts`` is wall clock."""

    job: int
    ts: float
    old: JobState | None
    new: JobState
    reason: str

    @classmethod
    def _from_record(cls, rec: JobEventRecord) -> JobEvent:
        return cls(
            rec.job,
            rec.ts,
            None if rec.old is None else JobState(rec.old),
            JobState(rec.new),
            rec.reason,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "job": self.job,
            "ts": self.ts,
            "old": None if self.old is None else self.old.value,
            "new": self.new.value,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class Job:
    """A snapshot of one job, as stored.

    Attributes:
        id: its id (ids only grow).
        state: where it is now; ``reason`` says why, in words.
        spec: what was submitted.
        submitted, not_before, deadline: wall-clock times (``deadline`` is the latest
            start; ``not_before`` is when it is due, for a delayed job or a retry).
        schedule: the cron schedule that created it, or None.
        held: a queued job held by a user: it does not start until released.
        runs: how many times it was started; ``failures``: how many of those failed (a run
            preempted or cut short by a daemon crash, then queued again, is not a failure).
        pid, started, ended, exit_code, signal, duration: its current or last run
            (``exit_code`` None and ``signal`` set when a signal ended it).
        cpu_seconds: user + system CPU of all its runs (the kernel's rusage).
        history: its state changes, oldest first (only from :meth:`Scheduler.get
            <procvisor.jobs.Scheduler.get>`; empty in listings).
    """

    id: int
    name: str
    state: JobState
    reason: str
    spec: JobSpec
    submitted: float
    not_before: float | None
    deadline: float | None
    schedule: int | None
    runs: int
    failures: int
    pid: int | None
    started: float | None
    ended: float | None
    exit_code: int | None
    signal: str | None
    duration: float | None
    cpu_seconds: float
    held: bool = False
    history: tuple[JobEvent, ...] = ()

    @property
    def tenant(self) -> str:
        """Who the job belongs to."""
        return self.spec.tenant

    @property
    def priority(self) -> Priority:
        """Its priority as submitted."""
        return self.spec.priority

    @property
    def finished(self) -> bool:
        """Whether it is in a final state."""
        return self.state in TERMINAL_STATES

    @classmethod
    def _from_record(cls, rec: JobRecord, events: tuple[JobEvent, ...] = ()) -> Job:
        code = rec.exit_code if rec.exit_code is None or rec.exit_code >= 0 else None
        return cls(
            id=rec.id,
            name=rec.name,
            state=JobState(rec.state),
            reason=rec.reason,
            spec=JobSpec.from_dict(rec.spec),
            submitted=rec.submitted,
            not_before=rec.not_before,
            deadline=rec.deadline,
            schedule=rec.schedule,
            runs=rec.runs,
            failures=rec.failures,
            pid=rec.pid,
            started=rec.started,
            ended=rec.ended,
            exit_code=code,
            signal=rec.signal,
            duration=rec.duration,
            cpu_seconds=rec.cpu_seconds,
            held=rec.held,
            history=events,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return {
            "id": self.id,
            "name": self.name,
            "state": self.state.value,
            "reason": self.reason,
            "tenant": self.tenant,
            "priority": self.priority.name.lower(),
            "spec": self.spec.to_dict(),
            "submitted": self.submitted,
            "not_before": self.not_before,
            "deadline": self.deadline,
            "schedule": self.schedule,
            "held": self.held,
            "runs": self.runs,
            "failures": self.failures,
            "pid": self.pid,
            "started": self.started,
            "ended": self.ended,
            "exit_code": self.exit_code,
            "signal": self.signal,
            "duration": self.duration,
            "cpu_seconds": self.cpu_seconds,
            "history": [e.to_dict() for e in self.history],
        }


@dataclass(frozen=True, slots=True)
class CancelOutcome:
    """What :meth:`Scheduler.cancel <procvisor.jobs.Scheduler.cancel>` did to one job.

    ``cancelled`` is False when the job had already finished (``state`` says how).
    """

    job: int
    cancelled: bool
    state: JobState
    message: str


@dataclass(frozen=True, slots=True)
class HoldOutcome:
    """What :meth:`Scheduler.hold` or :meth:`~Scheduler.release` did to one job.

    ``changed`` is False when the job was not in a state to be held (``state`` and
    ``message`` say why), or already was as asked.
    """

    job: int
    changed: bool
    state: JobState
    message: str


@dataclass(frozen=True, slots=True)
class QueueSummary:
    """The queue at a glance (``procvisor queue``).

    Attributes:
        queued: jobs waiting in state ``queued`` (due, delayed, or waiting on dependencies).
        by_priority, by_tenant: ``queued`` split by priority name and by tenant.
        delayed: queued jobs not due yet (``not_before`` later than now).
        waiting_on_dependencies: queued jobs whose dependencies have not all succeeded.
        held: queued jobs held by a user (``procvisor hold``) until released.
        retrying: jobs waiting out a retry delay.
        running: jobs running (suspended ones included); ``suspended``: those stopped by
            preemption.
        capacity: what the node offers (``cpu``, ``memory``, ``max_running``, resources;
            None where unlimited).
        in_use: what running jobs hold, by the same keys.
        oldest_wait: seconds the longest-waiting due job has waited since it was due (a
            delayed job waits from its ``not_before``), or None.
    """

    queued: int
    by_priority: Mapping[str, int]
    by_tenant: Mapping[str, int]
    delayed: int
    waiting_on_dependencies: int
    held: int
    retrying: int
    running: int
    suspended: int
    capacity: Mapping[str, float | None]
    in_use: Mapping[str, float]
    oldest_wait: float | None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "queued": self.queued,
            "by_priority": dict(self.by_priority),
            "by_tenant": dict(self.by_tenant),
            "delayed": self.delayed,
            "waiting_on_dependencies": self.waiting_on_dependencies,
            "held": self.held,
            "retrying": self.retrying,
            "running": self.running,
            "suspended": self.suspended,
            "capacity": dict(self.capacity),
            "in_use": dict(self.in_use),
            "oldest_wait": self.oldest_wait,
        }


@dataclass(frozen=True, slots=True)
class QuotaUsage:
    """One tenant's use against its quota (``procvisor quotas``).

    ``quota`` is None when the tenant has none (its own or the default); ``usage`` is the
    CPU-seconds fair share charges it with (after decay), ``weight`` its share.
    """

    tenant: str
    running: int
    cpu: float
    memory: int
    resources: Mapping[str, float]
    queued: int
    usage: float
    weight: float
    quota: Quota | None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        quota = self.quota
        return {
            "tenant": self.tenant,
            "running": self.running,
            "cpu": self.cpu,
            "memory": self.memory,
            "resources": dict(self.resources),
            "queued": self.queued,
            "usage": self.usage,
            "weight": self.weight,
            "quota": None
            if quota is None
            else {
                "max_running": quota.max_running,
                "cpu": quota.cpu,
                "memory": quota.memory,
                "resources": dict(quota.resources),
                "weight": quota.weight,
            },
        }


@dataclass(frozen=True, slots=True)
class Schedule:
    """A cron schedule: one job per period from ``spec`` (see :class:`JobSpec` ``cron``)."""

    id: int
    cron: str
    overlap: str
    spec: JobSpec
    next_fire: float | None
    last_job: int | None
    runs: int
    skipped: int
    active: bool

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; the spec as :meth:`JobSpec.to_dict` gives it."""
        return {
            "id": self.id,
            "cron": self.cron,
            "overlap": self.overlap,
            "spec": self.spec.to_dict(),
            "next_fire": self.next_fire,
            "last_job": self.last_job,
            "runs": self.runs,
            "skipped": self.skipped,
            "active": self.active,
        }

    @classmethod
    def _from_record(cls, rec: ScheduleRecord) -> Schedule:
        return cls(
            rec.id,
            rec.cron,
            rec.overlap,
            JobSpec.from_dict(rec.spec),
            rec.next_fire,
            rec.last_job,
            rec.runs,
            rec.skipped,
            rec.active,
        )


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    """What :meth:`Scheduler.start <procvisor.jobs.Scheduler.start>` found and did.

    Attributes:
        loaded: unfinished jobs loaded from the store.
        stopped: ``(job, pid)`` of process groups left running by the previous scheduler,
            now stopped.
        ended: ``(job, pid)`` of runs that ended after the previous scheduler died, their
            exit status lost with it (left unreaped, as zombies): queued again, or failed.
        requeued: jobs that were running or being started, queued again.
        failed: jobs that were running and must not run twice (``requeue_on_restart``
            False), now failed.
    """

    loaded: int = 0
    stopped: tuple[tuple[int, int], ...] = ()
    ended: tuple[tuple[int, int], ...] = ()
    requeued: tuple[int, ...] = ()
    failed: tuple[int, ...] = field(default=())

    def describe(self) -> str:
        """One line for the daemon's log: what was stopped, queued again and failed."""

        def ids(jobs: tuple[int, ...]) -> str:
            return ", ".join(map(str, jobs))

        def runs(pairs: tuple[tuple[int, int], ...]) -> str:
            return ", ".join(f"job {job} (pid {pid})" for job, pid in pairs)

        parts = []
        if self.stopped:
            parts.append(f"stopped what was still running: {runs(self.stopped)}")
        if self.ended:
            parts.append(f"ended while no scheduler ran, exit status lost: {runs(self.ended)}")
        if self.requeued:
            parts.append(f"queued again: {ids(self.requeued)}")
        if self.failed:
            parts.append(f"failed, as requeue_on_restart is off: {ids(self.failed)}")
        return "; ".join(parts) or f"{self.loaded} unfinished jobs loaded, nothing to recover"
