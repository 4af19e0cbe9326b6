"""From the ``[jobs]`` and ``[quotas.TENANT]`` tables to the scheduler's settings."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from procvisor.daemon.config import Config
    from procvisor.jobs import JobsConfig

__all__ = ["jobs_config"]


def jobs_config(config: Config) -> JobsConfig:
    """The :class:`~procvisor.jobs.JobsConfig` the file asks for (machine defaults filled in)."""
    # Imported once the services have started: they need none of it.
    from procvisor.jobs import JobsConfig, machine_capacity  # noqa: PLC0415
    from procvisor.policy.admission import Capacity, Quota  # noqa: PLC0415

    jobs = config.jobs
    machine = machine_capacity()
    capacity = Capacity(
        cpu=jobs.capacity.cpu if jobs.capacity.cpu is not None else machine.cpu,
        memory=jobs.capacity.memory if jobs.capacity.memory is not None else machine.memory,
        resources=jobs.capacity.resources,
    )
    quotas = {
        tenant: Quota(max_running=q.max_running, cpu=q.cpu, memory=q.memory, weight=q.weight)
        for tenant, q in config.quotas.items()
    }
    return JobsConfig(
        policy=jobs.policy,
        capacity=capacity,
        max_running=jobs.max_running,
        quotas=quotas,
        aging=jobs.aging,
        half_life=jobs.half_life,
        preempt=jobs.preempt,
        grace=jobs.grace,
        log_max_size=jobs.log_max_size,
        enforce=tuple(jobs.enforce),
    )
