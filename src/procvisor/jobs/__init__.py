"""Durable command jobs: the scheduler, the ``jobs`` capability of DESIGN.md.

It composes the layers below: :mod:`procvisor.policy` decides (queue order: ``fifo``,
``priority`` with aging, ``fair`` share by CPU-seconds, ``edf``; admission against the node's
capacity and each tenant's quota with EASY backfill; preemption; retry delays),
:mod:`procvisor.process` runs (each job in its own session, stopped as a group), and
:mod:`procvisor.store` remembers (every job and every state change is written before it is
acted upon, so a killed daemon loses no job and never runs one twice at once).

The daemon makes one :class:`Scheduler` from a :class:`JobsConfig`::

    async with Scheduler(store, log_dir, JobsConfig(policy="fair")) as jobs:
        job_id = jobs.submit(JobSpec(["make", "test"], timeout="10m", retries=2))
        job = await jobs.wait(job_id)          # a Job, with its state history

A job's states: ``queued → scheduled → running → succeeded | failed | retrying → queued …``,
``expired``, ``cancelled``, ``preempted → queued | running``
(:mod:`procvisor.policy.jobstate`).
"""

from procvisor.jobs._config import JobsConfig, machine_capacity
from procvisor.jobs._errors import JobNotFound, JobStateError
from procvisor.jobs._events import JobEvents
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
from procvisor.jobs._scheduler import Scheduler
from procvisor.jobs._spec import OVERLAP_POLICIES, JobSpec, parse_when
from procvisor.policy.jobstate import JobState

__all__ = [
    "OVERLAP_POLICIES",
    "CancelOutcome",
    "HoldOutcome",
    "Job",
    "JobEvent",
    "JobEvents",
    "JobNotFound",
    "JobSpec",
    "JobState",
    "JobStateError",
    "JobsConfig",
    "QueueSummary",
    "QuotaUsage",
    "RecoveryReport",
    "Schedule",
    "Scheduler",
    "machine_capacity",
    "parse_when",
]
