"""The snapshot :meth:`Pool.stats <procvisor.Pool.stats>` returns.

A module of its own, loaded on the first ``stats()`` call: making a dataclass with slots costs
about a millisecond, which ``import procvisor.pool`` would otherwise spend inside a pool's
start -> first result.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["PoolStats"]


@dataclass(slots=True)
class PoolStats:
    """A snapshot of a pool (see :meth:`Pool.stats`)."""

    workers: int
    idle: int
    busy: int
    queued: int
    running: int
    done: int
    failed: int
    timed_out: int
    retried: int
    latency_p50: float | None
    latency_p99: float | None
    workers_started: int
    workers_recycled: int
    workers_crashed: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
