"""Spread tasks over several pools: :class:`Balancer`, an Executor in front of pools.

The choice is :class:`procvisor.policy.balance.Balancer`'s (pure, tested without processes);
this class only feeds it: a task's start when it is submitted to the chosen pool, its latency
when its future completes, and each pool's health (a pool that is shut down, or whose workers
fail to start, is skipped until it recovers).
"""

from __future__ import annotations

import concurrent.futures as cf
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from procvisor.policy.balance import Balancer as _Choice
from procvisor.policy.balance import Strategy
from procvisor.pool._pool import Pool

__all__ = ["Balancer"]


class Balancer(cf.Executor):
    """Send each task to one of ``pools``, as ``strategy`` chooses.

    Args:
        pools: the pools (:class:`Pool` objects); the balancer does not own them (shut them
            down yourself, or use the balancer as a context manager, which shuts them down).
        strategy: ``round_robin``, ``weighted_round_robin``, ``least_connections``,
            ``least_response_time``, ``random`` or ``consistent_hash`` (pass ``key=`` to
            :meth:`schedule`).
        weights: one positive number per pool (same order), for the weighted strategies.

    Raises:
        ValueError: an unknown strategy (naming the accepted ones), no pools, bad weights.
    """

    def __init__(
        self,
        pools: Sequence[Pool],
        strategy: Strategy | str = Strategy.ROUND_ROBIN,
        *,
        weights: Sequence[float] | None = None,
        vnodes: int = 100,
    ) -> None:
        self._pools = list(pools)
        if not all(isinstance(p, Pool) for p in self._pools):
            raise TypeError("pools: every pool must be a procvisor.Pool")
        names = [str(i) for i in range(len(self._pools))]
        if weights is not None and len(weights) != len(names):
            raise ValueError(
                f"weights: give one weight per pool ({len(names)}), not {len(weights)}"
            )
        by_name: Mapping[str, float] | None = (
            dict(zip(names, weights, strict=True)) if weights is not None else None
        )
        self._choice = _Choice(strategy, names, weights=by_name, vnodes=vnodes)
        self._lock = threading.Lock()
        self._rand = random.Random()

    @property
    def pools(self) -> list[Pool]:
        return list(self._pools)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future[Any]:
        """Run ``fn(*args, **kwargs)`` on the chosen pool (not with ``consistent_hash``)."""
        return self.schedule(fn, args, kwargs)

    def schedule(
        self,
        fn: Callable[..., Any],
        args: Iterable[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        key: str | None = None,
        **options: Any,
    ) -> cf.Future[Any]:
        """As :meth:`Pool.schedule`, on the chosen pool; ``key`` for ``consistent_hash``.

        Raises:
            NoHealthyPool: every pool is shut down or failing.
        """
        with self._lock:
            for name, pool in zip(self._choice.pools, self._pools, strict=True):
                healthy = pool.healthy
                if healthy != self._choice.is_healthy(name):
                    self._choice.set_healthy(name, healthy)
            name = self._choice.choose(key=key, rand=self._rand.random())
            self._choice.started(name)
        started = time.monotonic()
        try:
            future = self._pools[int(name)].schedule(fn, args, kwargs, **options)
        except BaseException:
            with self._lock:
                self._choice.finished(name, None)
            raise

        def done(f: cf.Future[Any]) -> None:
            latency = None if f.cancelled() else time.monotonic() - started
            with self._lock:
                self._choice.finished(name, latency)

        future.add_done_callback(done)
        return future

    def in_flight(self) -> list[int]:
        """Tasks submitted through the balancer and not finished, per pool."""
        with self._lock:
            return [self._choice.in_flight(n) for n in self._choice.pools]

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Shut every pool down."""
        for pool in self._pools:
            pool.shutdown(wait=wait, cancel_futures=cancel_futures)
