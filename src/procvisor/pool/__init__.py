"""Pools of persistent worker processes for many small tasks.

:class:`Pool` (a :class:`concurrent.futures.Executor`) and :class:`AsyncPool` run Python callables
in worker processes forked from the caller or a per-pool fork server; :class:`CommandPool` runs
programs in any language that answer JSON requests line by line. Both start workers through the
``process`` layer, with priorities, per-task timeouts, deadlines, retries and worker hygiene; a
worker that dies fails only its own task and is replaced. Queue order and balancing choices are
pure decisions in ``policy`` (:mod:`procvisor.policy.taskqueue`, :mod:`procvisor.policy.balance`).
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from procvisor.policy.balance import NoHealthyPool
    from procvisor.pool._balancer import Balancer
    from procvisor.pool._command import CommandPool
    from procvisor.pool._pool import AsyncPool, Pool
    from procvisor.pool._stats import PoolStats

__all__ = ["AsyncPool", "Balancer", "CommandPool", "NoHealthyPool", "Pool", "PoolStats"]


def __getattr__(name: str) -> Any:
    # Each part loads on first use: the daemon needs only PoolStats unless it runs command
    # pools, and a Python pool needs neither JSON nor the balancing policy.
    if name in ("Pool", "AsyncPool"):
        from procvisor.pool import _pool  # noqa: PLC0415

        return getattr(_pool, name)
    if name == "PoolStats":
        from procvisor.pool._stats import PoolStats  # noqa: PLC0415

        return PoolStats
    if name == "CommandPool":
        from procvisor.pool._command import CommandPool  # noqa: PLC0415

        return CommandPool
    if name == "Balancer":
        from procvisor.pool._balancer import Balancer  # noqa: PLC0415

        return Balancer
    if name == "NoHealthyPool":
        from procvisor.policy.balance import NoHealthyPool  # noqa: PLC0415

        return NoHealthyPool
    raise AttributeError(f"module 'procvisor.pool' has no attribute {name!r}")
