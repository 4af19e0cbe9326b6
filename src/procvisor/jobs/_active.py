"""What the scheduler holds of each unfinished job and cron schedule, and small time helpers."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from datetime import datetime

from procvisor.jobs._spec import JobSpec
from procvisor.policy.admission import Requests
from procvisor.policy.jobqueue import QueuedJob
from procvisor.policy.jobstate import JobState
from procvisor.process import Process, Result
from procvisor.store import JobChange, JobRecord

__all__ = [
    "ActiveJob",
    "CronSchedule",
    "FitCandidate",
    "describe_exit",
    "local_time",
    "on_monotonic",
]

S = JobState


def on_monotonic(wall: float, now: float, now_wall: float) -> float:
    """A wall-clock time on the monotonic clock (for timers and the queue).

    ``now`` and ``now_wall`` are the same instant on both clocks.
    """
    return now + (wall - now_wall)


def local_time(wall: float) -> str:
    """A wall-clock time as ISO 8601 in the local time zone, to the second."""
    return datetime.fromtimestamp(wall).astimezone().isoformat(timespec="seconds")


def describe_exit(result: Result) -> str:
    """How a run ended, in words for a job's reason."""
    if result.returncode is None:
        how = "exit status unknown (another reaper took it)"
    elif result.signal is not None:
        how = f"killed by {result.signal}"
    else:
        how = f"exited with code {result.returncode}"
    if result.limit_exceeded == "memory":
        return f"out of memory: the kernel killed a process at its memory request ({how})"
    return how


class ActiveJob:
    """An unfinished job as the scheduler holds it: its stored fields and its live ones.

    ``change()`` turns its fields into the :class:`~procvisor.store.JobChange` that records
    them; the scheduler sets the fields first, then records.
    """

    __slots__ = (
        "cancel_reason",
        "cpu_seconds",
        "deadline",
        "duration",
        "ended",
        "exit_code",
        "failures",
        "handle",
        "held",
        "id",
        "not_before",
        "pid",
        "proc",
        "reason",
        "runs",
        "schedule",
        "signal",
        "spec",
        "start_ticks",
        "started",
        "state",
        "stop_reason",
        "submitted",
        "suspended",
        "time_left",
        "timeout_at",
        "timer",
        "waiting_on",
    )

    def __init__(self, job_id: int, spec: JobSpec, submitted: float) -> None:
        self.id = job_id
        self.spec = spec
        self.state = S.QUEUED
        self.reason = "submitted"
        self.submitted = submitted
        self.not_before = spec.not_before
        self.deadline = spec.deadline
        self.schedule: int | None = None
        self.runs = 0
        self.failures = 0
        self.pid: int | None = None
        self.start_ticks: float | None = None
        self.started: float | None = None
        self.ended: float | None = None
        self.exit_code: int | None = None
        self.signal: str | None = None
        self.cpu_seconds = 0.0
        self.duration: float | None = None
        self.stop_reason: str | None = None
        self.cancel_reason = ""
        self.handle: QueuedJob[ActiveJob] | None = None
        self.proc: Process | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.timeout_at: float | None = None
        self.time_left: float | None = None
        self.suspended = False
        self.waiting_on: set[int] = set()
        self.held = False  # kept out of the queue until released

    @classmethod
    def from_record(cls, rec: JobRecord) -> ActiveJob:
        job = cls(rec.id, JobSpec.from_dict(rec.spec), rec.submitted)
        job.state = JobState(rec.state)
        job.reason = rec.reason
        job.not_before = rec.not_before
        job.deadline = rec.deadline
        job.schedule = rec.schedule
        job.runs = rec.runs
        job.failures = rec.failures
        job.pid = rec.pid
        job.start_ticks = rec.start_ticks
        job.started = rec.started
        job.ended = rec.ended
        job.exit_code = rec.exit_code
        job.signal = rec.signal
        job.cpu_seconds = rec.cpu_seconds
        job.duration = rec.duration
        job.stop_reason = rec.stop_reason
        job.held = rec.held
        return job

    def __repr__(self) -> str:
        return f"<job {self.id} {self.state.value} {self.spec.describe()!r}>"

    def change(self, old: JobState, ts: float) -> JobChange:
        return JobChange(
            self.id,
            old.value,
            self.state.value,
            ts,
            self.reason,
            self.not_before,
            self.runs,
            self.failures,
            self.pid,
            self.start_ticks,
            self.started,
            self.ended,
            self.exit_code,
            self.signal,
            self.cpu_seconds,
            self.duration,
            self.stop_reason,
            self.held,
        )


class CronSchedule:
    """An active cron schedule: the spec of its jobs (without ``cron``), its next fire time."""

    __slots__ = ("cron", "id", "last_job", "next_fire", "overlap", "spec")

    def __init__(
        self, sid: int, spec: JobSpec, next_fire: float | None, last_job: int | None
    ) -> None:
        assert spec.cron is not None
        self.id = sid
        self.cron = spec.cron
        self.overlap = spec.overlap
        self.spec = replace(spec, cron=None)
        self.next_fire = next_fire
        self.last_job = last_job


@dataclass(frozen=True, slots=True)
class FitCandidate:
    """A suspended job offered to decide_starts to see whether it may resume."""

    tenant: str
    requests: Requests
    runtime: float | None
