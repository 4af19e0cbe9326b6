"""Pools of persistent worker processes for many small tasks.

:class:`Pool` (a :class:`concurrent.futures.Executor`) and :class:`AsyncPool` run Python
callables in fresh worker interpreters; :class:`CommandPool` runs programs in any language
that answer JSON requests line by line. Both start workers through the ``process`` layer, with
priorities, per-task timeouts, deadlines, retries and worker hygiene; a worker that dies
fails only its own task and is replaced. Queue order and balancing choices are pure
decisions in ``policy`` (:mod:`procvisor.policy.taskqueue`, :mod:`procvisor.policy.balance`).
"""

from procvisor.policy.balance import NoHealthyPool
from procvisor.pool._balancer import Balancer
from procvisor.pool._command import CommandPool
from procvisor.pool._pool import AsyncPool, Pool, PoolStats

__all__ = ["AsyncPool", "Balancer", "CommandPool", "NoHealthyPool", "Pool", "PoolStats"]
