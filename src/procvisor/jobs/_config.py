"""How a :class:`~procvisor.jobs.Scheduler` schedules: :class:`JobsConfig`."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from procvisor.policy.admission import DEFAULT_MAX_SCAN, Capacity, PreemptMode, Quota, Requests
from procvisor.policy.jobqueue import DEFAULT_TENANT, Discipline, parse_discipline
from procvisor.policy.taskqueue import DEFAULT_AGING
from procvisor.process import Limits

__all__ = ["JobsConfig", "machine_capacity"]

PREEMPT_MODES = ("off", "suspend", "requeue")
ENFORCEABLE = ("cpu", "memory")
"""The requests :attr:`JobsConfig.enforce` can make limits of."""


def machine_capacity(max_running: int | None = None) -> Capacity:
    """This machine's capacity: every core (``os.cpu_count()``) and all its memory (psutil)."""
    import psutil  # noqa: PLC0415 - costs ~10 ms at import

    return Capacity(
        cpu=float(os.cpu_count() or 1),
        memory=int(psutil.virtual_memory().total),
        max_running=max_running,
    )


@dataclass(frozen=True)
class JobsConfig:
    """The scheduler's settings (the ``[jobs]`` and ``[quotas.*]`` tables of the config).

    Attributes:
        policy: the queue discipline: ``fifo``, ``priority`` (the default: five levels, FIFO
            within a level, with aging), ``fair`` or ``edf``
            (:mod:`procvisor.policy.jobqueue`).
        capacity: what the node offers to jobs; None for this machine's cores and memory
            (:func:`machine_capacity`).
        max_running: the most jobs running at once (overrides ``capacity.max_running``).
        quotas: each tenant's :class:`~procvisor.policy.admission.Quota`. A tenant with no
            entry of its own gets the quota of the tenant named ``default`` (its own copy of
            those limits, not a share of the default tenant's), or no quota at all when
            ``default`` has none. Unknown tenants are accepted, never refused.
        aging: seconds of waiting that raise a job's effective priority one level (0: off).
        half_life: seconds in which a tenant's CPU-seconds count for fair share halve; None
            keeps them whole.
        preempt: ``off`` (the default), ``suspend`` (SIGSTOP lower-priority preemptible
            jobs, SIGCONT them when there is room again) or ``requeue`` (stop them and queue
            them again). Only under the ``priority`` policy, where a requeued job cannot
            overtake the job it was stopped for.
        grace: seconds between the stop signal (SIGTERM) and SIGKILL when a job's process
            group is stopped (cancel, timeout, preemption, shutdown).
        log_max_size: bytes of a job's output kept in its current log file; the previous
            file is kept too, so between 1 and 2 times this of the output's tail is kept.
        max_scan: the most queued jobs one scheduling decision looks at.
        enforce: which requests are also limits of the job's process tree, as Slurm's
            cgroup plugin constrains cores and memory: ``cpu`` (a CPU quota of the cores it
            requested) and ``memory`` (a memory cgroup of the bytes it requested; beyond it
            the OOM killer ends the job, which fails "out of memory"). Empty by default:
            requests only decide admission. A request of 0 is not enforced.

    Raises:
        ValueError: a setting is malformed, naming it.
    """

    policy: Discipline | str = Discipline.PRIORITY
    capacity: Capacity | None = None
    max_running: int | None = None
    quotas: Mapping[str, Quota] = field(default_factory=dict)
    aging: float = DEFAULT_AGING
    half_life: float | None = None
    preempt: str = "off"
    grace: float = 10.0
    log_max_size: int = 8 * 1024 * 1024
    max_scan: int = DEFAULT_MAX_SCAN
    enforce: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.enforce, str) or not isinstance(self.enforce, Sequence):
            raise ValueError(f"enforce: {self.enforce!r} must be a list of 'cpu' and 'memory'")
        for item in self.enforce:
            if item not in ENFORCEABLE:
                raise ValueError(f"enforce: {item!r} cannot be enforced; use 'cpu' and/or 'memory'")
        object.__setattr__(self, "enforce", tuple(dict.fromkeys(self.enforce)))
        object.__setattr__(self, "policy", parse_discipline(self.policy))
        if self.max_running is not None and (
            isinstance(self.max_running, bool)
            or not isinstance(self.max_running, int)
            or self.max_running < 1
        ):
            raise ValueError(f"max_running: {self.max_running!r} must be a whole number from 1")
        if self.capacity is not None and not isinstance(self.capacity, Capacity):
            raise ValueError(f"capacity: {self.capacity!r} must be a Capacity")
        for tenant, quota in self.quotas.items():
            if not isinstance(quota, Quota):
                raise ValueError(f"quotas.{tenant}: {quota!r} must be a Quota")
        if self.preempt not in PREEMPT_MODES:
            raise ValueError(
                f"preempt: {self.preempt!r} must be one of "
                + ", ".join(repr(m) for m in PREEMPT_MODES)
            )
        if self.preempt != "off" and self.discipline is not Discipline.PRIORITY:
            raise ValueError(
                f"preempt: {self.preempt!r} needs policy = 'priority' (under "
                f"{self.discipline.value!r} a requeued job could overtake the job it was stopped "
                "for); set preempt = 'off' or policy = 'priority'"
            )
        for name, low in (("aging", 0.0), ("grace", 0.0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < low:
                raise ValueError(f"{name}: {value!r} must be a number of seconds, 0 or more")
            if not math.isfinite(value):
                raise ValueError(f"{name}: {value!r} must be finite")
        if self.half_life is not None and not self.half_life > 0:
            raise ValueError(f"half_life: {self.half_life!r} must be more than 0 seconds")
        if not isinstance(self.log_max_size, int) or self.log_max_size < 1:
            raise ValueError(f"log_max_size: {self.log_max_size!r} must be a number of bytes")
        if not isinstance(self.max_scan, int) or self.max_scan < 1:
            raise ValueError(f"max_scan: {self.max_scan!r} must be a whole number from 1")

    @property
    def discipline(self) -> Discipline:
        """:attr:`policy` as a :class:`~procvisor.policy.jobqueue.Discipline`."""
        return parse_discipline(self.policy)

    @property
    def preempt_mode(self) -> PreemptMode | None:
        """How to preempt, or None when preemption is off."""
        return None if self.preempt == "off" else PreemptMode(self.preempt)

    def limits(self, requests: Requests) -> Limits | None:
        """The limits a job with ``requests`` runs under (None: none enforced)."""
        cpus = requests.cpu if "cpu" in self.enforce and requests.cpu > 0 else None
        memory = requests.memory if "memory" in self.enforce and requests.memory > 0 else None
        if cpus is None and memory is None:
            return None
        return Limits(cpus=cpus, memory=memory)

    def resolve_capacity(self) -> Capacity:
        """The capacity to schedule with: :attr:`capacity` (or the machine's) and max_running."""
        capacity = self.capacity or machine_capacity()
        if self.max_running is None:
            return capacity
        return Capacity(capacity.cpu, capacity.memory, capacity.resources, self.max_running)

    def quota(self, tenant: str) -> Quota | None:
        """``tenant``'s quota: its own, else the ``default`` tenant's, else None."""
        found = self.quotas.get(tenant)
        return found if found is not None else self.quotas.get(DEFAULT_TENANT)


class QuotaMap(Mapping[str, Quota]):
    """The quotas as :func:`~procvisor.policy.admission.decide_starts` reads them.

    A lookup of a tenant with no quota of its own answers the default one.
    """

    def __init__(self, config: JobsConfig) -> None:
        self._config = config

    def __getitem__(self, tenant: str) -> Quota:
        quota = self._config.quota(tenant)
        if quota is None:
            raise KeyError(tenant)
        return quota

    def __iter__(self) -> Iterator[str]:
        return iter(self._config.quotas)

    def __len__(self) -> int:
        return len(self._config.quotas)
