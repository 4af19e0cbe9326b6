"""Which pool takes the next task: the choice behind ``procvisor.Balancer``.

A :class:`Balancer` sees pools only as names with numbers (a weight, tasks in flight, a latency
average, a health flag). The pool layer asks :meth:`Balancer.choose` for a pool, reports
:meth:`~Balancer.started` when it hands the task over and :meth:`~Balancer.finished` when the
result is back, and forwards health changes to :meth:`~Balancer.set_healthy`. The rules:

- **Health.** Only healthy pools are chosen; a pool marked unhealthy is skipped until it is
  marked healthy again (its tasks in flight and latency average are kept). When no pool is
  healthy, :meth:`~Balancer.choose` raises :class:`NoHealthyPool`, naming the pools.
- **Weights** are positive finite numbers, 1 by default; ints and floats both work, and only
  their ratios matter (``0.5`` and ``1.5`` behave like ``1`` and ``3``), except that
  ``consistent_hash`` multiplies them by ``vnodes``. ``round_robin`` gives every pool the same
  share and refuses weights other than 1: use ``weighted_round_robin``.
- ``round_robin``: the healthy pools in turn, in the order they were given (pools added later
  go last).
- ``weighted_round_robin``: nginx's smooth weighted round robin. Each pick adds every healthy
  pool's weight to its current weight, picks the largest current weight (the first in pool order
  on a tie), and subtracts the total weight from the one picked. Weights 5, 1, 1 give the
  sequence ``a a b a c a a``, repeating. The arithmetic is exact (float weights are scaled to
  integers), so the sequence is exactly periodic. The current weights restart from 0 whenever a
  pool is added or removed or changes health.
- ``least_connections``: the pool with the fewest tasks in flight per unit of weight
  (``in_flight / weight``). Ties go round-robin: the search starts after the pool chosen last,
  so equally loaded pools take turns.
- ``least_response_time``: the pool with the lowest ``estimate * (in_flight + 1) / weight``,
  where ``estimate`` is the pool's latency average: an exponentially weighted moving average
  (EWMA) of the latencies passed to :meth:`~Balancer.finished`, ``ewma = alpha * latency +
  (1 - alpha) * ewma`` with ``alpha`` 0.3 by default, the first sample taken as it is. A pool
  with no sample yet and nothing in flight goes first (cost 0), so every pool gets measured; one
  with no sample but tasks in flight is estimated at the mean EWMA of the pools that have one,
  so a new pool is not flooded before its first answer. Equal costs are decided by
  ``in_flight / weight``, then round-robin as above; with no samples at all this is
  ``least_connections``.
- ``random``: a weighted draw. ``rand`` (uniform in ``[0, 1)``, passed in so the choice stays
  pure) is laid along the healthy pools' weights in pool order: with equal weights and ``n``
  healthy pools it picks pool number ``floor(rand * n)``.
- ``consistent_hash``: the task's ``key`` picks the pool. Each pool owns ``round(vnodes *
  weight)`` points (at least 1; ``vnodes`` is 100 by default) on a ring of 64-bit hashes, point
  ``i`` of pool ``p`` at ``blake2b(f"{p}#{i}")``. A key goes to the owner of the first point at
  or after ``blake2b(key)``, walking on (and wrapping around) past points of unhealthy pools.
  The hash is stable: the same pools map the same key to the same pool in every process,
  whatever ``PYTHONHASHSEED`` says. Adding a pool moves only the keys it takes over (about
  ``1/n`` of them with ``n`` pools afterwards), removing one moves only its own keys, and a pool
  turning unhealthy moves only its keys, which return when it recovers.

A :class:`Balancer` is a small mutable object owned by one pool front end; it does no I/O and
reads no clock.
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections.abc import Iterator, Mapping, Sequence
from enum import StrEnum
from fractions import Fraction
from typing import Any

from procvisor.errors import ProcessError

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_VNODES",
    "MAX_VNODES_PER_POOL",
    "Balancer",
    "NoHealthyPool",
    "Strategy",
    "ring_hash",
]

DEFAULT_VNODES = 100
"""Points on the hash ring per unit of weight under ``consistent_hash``."""
DEFAULT_ALPHA = 0.3
"""Weight of the newest latency in the EWMA of ``least_response_time``."""
MAX_VNODES_PER_POOL = 10_000
"""At most this many ring points per pool, so a large weight cannot exhaust memory."""


class Strategy(StrEnum):
    """How a :class:`Balancer` picks a pool; see the module docstring for each rule."""

    ROUND_ROBIN = "round_robin"
    WEIGHTED_ROUND_ROBIN = "weighted_round_robin"
    LEAST_CONNECTIONS = "least_connections"
    LEAST_RESPONSE_TIME = "least_response_time"
    RANDOM = "random"
    CONSISTENT_HASH = "consistent_hash"


def _parse_strategy(value: Strategy | str) -> Strategy:
    if isinstance(value, Strategy):
        return value
    if isinstance(value, str):
        try:
            return Strategy(value.strip().lower().replace("-", "_"))
        except ValueError:
            pass
    raise ValueError(
        f"strategy: {value!r} is not a balancing strategy; use one of "
        + ", ".join(repr(s.value) for s in Strategy)
    )


def ring_hash(text: str) -> int:
    """Return the stable 64-bit hash of ``text`` that places keys and points on the hash ring.

    It is the first 8 bytes of BLAKE2b of the UTF-8 text, big-endian: the same in every process
    and on every platform, unlike the built-in :func:`hash`.
    """
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _check_pool_name(pool: object, name: str) -> str:
    if not isinstance(pool, str) or not pool:
        raise ValueError(f"{name}: {pool!r} must be a non-empty string naming a pool")
    return pool


def _check_weight(weight: object, name: str) -> float:
    if (
        isinstance(weight, bool)
        or not isinstance(weight, int | float)
        or not math.isfinite(weight)
        or weight <= 0
    ):
        raise ValueError(f"{name}: {weight!r} must be a finite number more than 0, e.g. 1 or 2.5")
    return weight


def _check_rand(rand: float) -> None:
    if isinstance(rand, bool) or not isinstance(rand, int | float) or not 0.0 <= rand < 1.0:
        raise ValueError(f"rand: {rand!r} must be in [0, 1); pass random.Random().random()")


class NoHealthyPool(ProcessError):
    """No pool of a balancer is healthy, so the task cannot be placed.

    Attributes:
        pools: the names of the balancer's pools (all unhealthy), in pool order; empty when
            the balancer has no pool at all.
    """

    def __init__(self, message: str | None = None, *, pools: Sequence[str] = ()) -> None:
        pools = tuple(pools)
        if message is None:
            if pools:
                names = ", ".join(repr(p) for p in pools)
                message = (
                    f"no healthy pool: {names} {'is' if len(pools) == 1 else 'are all'} "
                    "unhealthy; wait for one to recover or add a pool"
                )
            else:
                message = "no pool to choose from; add a pool first"
        super().__init__(message)
        self.pools = pools

    def _kwargs(self) -> dict[str, Any]:
        return {"message": self.message, "pools": self.pools}


class _Pool:
    """What the balancer knows about one pool."""

    __slots__ = ("current", "ewma", "healthy", "in_flight", "name", "weight")

    def __init__(self, name: str, weight: float) -> None:
        self.name = name
        self.weight = weight
        self.healthy = True
        self.in_flight = 0
        self.ewma: float | None = None
        self.current = 0  # smooth WRR current weight, in scaled integer units


class Balancer:
    """Chooses one of several pools for each task; see the module docstring for the rules.

    Args:
        strategy: a :class:`Strategy` or its name (``"least_connections"``; hyphens work too).
        pools: the pool names, in the order that ``round_robin``, ties and ``random`` follow.
        weights: a weight per pool name (a positive finite number); pools not named weigh 1.
        vnodes: ring points per unit of weight under ``consistent_hash``.
        alpha: the EWMA weight of the newest latency under ``least_response_time``, in
            ``(0, 1]``.

    Raises:
        ValueError: an unknown strategy (the message lists the accepted ones), no pools, a
            duplicate or empty pool name, a weight that is not a positive finite number or names
            no pool, weights other than 1 with ``round_robin``, ``vnodes`` outside
            ``1..MAX_VNODES_PER_POOL`` (or a weight giving a pool more points than that), or
            ``alpha`` outside ``(0, 1]``.
    """

    def __init__(
        self,
        strategy: Strategy | str,
        pools: Sequence[str],
        *,
        weights: Mapping[str, float] | None = None,
        vnodes: int = DEFAULT_VNODES,
        alpha: float = DEFAULT_ALPHA,
    ) -> None:
        self._strategy = _parse_strategy(strategy)
        if isinstance(pools, str):
            raise ValueError(f"pools: {pools!r} must be a list of pool names, not one string")
        if (
            isinstance(vnodes, bool)
            or not isinstance(vnodes, int)
            or not 1 <= vnodes <= MAX_VNODES_PER_POOL
        ):
            raise ValueError(
                f"vnodes: {vnodes!r} must be a whole number in 1..{MAX_VNODES_PER_POOL}, e.g. 100"
            )
        if (
            isinstance(alpha, bool)
            or not isinstance(alpha, int | float)
            or not math.isfinite(alpha)
            or not 0 < alpha <= 1
        ):
            raise ValueError(f"alpha: {alpha!r} must be in (0, 1], e.g. 0.3")
        self._vnodes = vnodes
        self._alpha = float(alpha)
        names = list(pools)
        if not names:
            raise ValueError("pools: must name at least one pool")
        weights = dict(weights or {})
        for name in weights:
            if name not in names:
                raise ValueError(f"weights: {name!r} is not one of the pools {names!r}")
        self._pools: dict[str, _Pool] = {}
        self._order: list[str] = []
        for name in names:
            _check_pool_name(name, "pools")
            if name in self._pools:
                raise ValueError(f"pools: {name!r} is listed twice")
            weight = self._valid_weight(weights.get(name, 1), f"weights[{name!r}]")
            self._pools[name] = _Pool(name, weight)
            self._order.append(name)
        self._cursor = 0  # index in _order where the next round-robin search starts
        self._scaled: dict[str, int] = {}
        self._ring_hashes: list[int] = []
        self._ring_pools: list[str] = []
        self._rebuild()

    # --- Read-only view ---------------------------------------------------------------------

    @property
    def strategy(self) -> Strategy:
        """The strategy this balancer follows."""
        return self._strategy

    @property
    def pools(self) -> tuple[str, ...]:
        """All pool names, healthy or not, in pool order."""
        return tuple(self._order)

    def healthy_pools(self) -> tuple[str, ...]:
        """The names of the healthy pools, in pool order."""
        return tuple(n for n in self._order if self._pools[n].healthy)

    def weight(self, pool: str) -> float:
        """Return the weight of ``pool``. Raises ValueError for an unknown pool."""
        return self._get(pool).weight

    def is_healthy(self, pool: str) -> bool:
        """Return whether ``pool`` may be chosen. Raises ValueError for an unknown pool."""
        return self._get(pool).healthy

    def in_flight(self, pool: str) -> int:
        """Return how many tasks ``pool`` has started and not finished.

        Raises ValueError for an unknown pool.
        """
        return self._get(pool).in_flight

    def ewma(self, pool: str) -> float | None:
        """Return the latency average of ``pool`` in seconds, or ``None`` before its first sample.

        Raises ValueError for an unknown pool.
        """
        return self._get(pool).ewma

    def __repr__(self) -> str:
        parts = []
        for name in self._order:
            p = self._pools[name]
            extra = "" if p.healthy else " unhealthy"
            parts.append(f"{name!r}: w={p.weight:g} in_flight={p.in_flight}{extra}")
        return f"<Balancer {self._strategy.value} {{{', '.join(parts)}}}>"

    # --- The choice -------------------------------------------------------------------------

    def choose(self, *, key: str | None = None, rand: float | None = None) -> str:
        """Return the name of the pool that should take the next task.

        Choosing does not count the task as started; call :meth:`started` when it is handed
        over. Strategies ignore the arguments they do not use.

        Args:
            key: the task's key; required by ``consistent_hash``.
            rand: a uniform number in ``[0, 1)`` (``random.Random().random()``); required by
                ``random``.

        Raises:
            NoHealthyPool: no pool is healthy (or there is no pool).
            ValueError: ``consistent_hash`` without ``key``, ``random`` without ``rand``, or
                ``rand`` outside ``[0, 1)``.
            TypeError: ``key`` is not a string.
        """
        strategy = self._strategy
        if strategy is Strategy.CONSISTENT_HASH:
            if key is None:
                raise ValueError(
                    "key: consistent_hash places tasks by key; pass key= (e.g. a user or "
                    "tenant id) to choose()"
                )
            if not isinstance(key, str):
                raise TypeError(f"key: {key!r} must be a str")
        if strategy is Strategy.RANDOM:
            if rand is None:
                raise ValueError(
                    "rand: the random strategy needs a uniform number; pass "
                    "rand=random.Random().random() to choose()"
                )
            _check_rand(rand)
        healthy = [self._pools[n] for n in self._order if self._pools[n].healthy]
        if not healthy:
            raise NoHealthyPool(pools=self._order)

        if strategy is Strategy.ROUND_ROBIN:
            chosen = next(self._rotation())
        elif strategy is Strategy.WEIGHTED_ROUND_ROBIN:
            chosen = self._choose_wrr(healthy)
        elif strategy is Strategy.LEAST_CONNECTIONS:
            chosen = min(self._rotation(), key=lambda p: p.in_flight / p.weight)
        elif strategy is Strategy.LEAST_RESPONSE_TIME:
            chosen = self._choose_lrt()
        elif strategy is Strategy.RANDOM:
            assert rand is not None
            chosen = self._choose_random(healthy, rand)
        else:
            assert key is not None
            chosen = self._choose_hash(key)

        if strategy in (
            Strategy.ROUND_ROBIN,
            Strategy.LEAST_CONNECTIONS,
            Strategy.LEAST_RESPONSE_TIME,
        ):
            self._cursor = (self._order.index(chosen.name) + 1) % len(self._order)
        return chosen.name

    def _rotation(self) -> Iterator[_Pool]:
        """The healthy pools in pool order, starting at the round-robin cursor."""
        n = len(self._order)
        for i in range(n):
            pool = self._pools[self._order[(self._cursor + i) % n]]
            if pool.healthy:
                yield pool

    def _choose_wrr(self, healthy: list[_Pool]) -> _Pool:
        total = 0
        best: _Pool | None = None
        for pool in healthy:
            pool.current += self._scaled[pool.name]
            total += self._scaled[pool.name]
            if best is None or pool.current > best.current:
                best = pool
        assert best is not None
        best.current -= total
        return best

    def _choose_lrt(self) -> _Pool:
        samples = [p.ewma for p in self._pools.values() if p.ewma is not None]
        mean = sum(samples) / len(samples) if samples else 0.0

        def cost(pool: _Pool) -> tuple[float, float]:
            if pool.ewma is None and pool.in_flight == 0:
                return (0.0, 0.0)
            estimate = mean if pool.ewma is None else pool.ewma
            return (estimate * (pool.in_flight + 1) / pool.weight, pool.in_flight / pool.weight)

        return min(self._rotation(), key=cost)

    def _choose_random(self, healthy: list[_Pool], rand: float) -> _Pool:
        target = rand * sum(p.weight for p in healthy)
        reached = 0.0
        for pool in healthy:
            reached += pool.weight
            if target < reached:
                return pool
        return healthy[-1]  # rounding left target at the very end

    def _choose_hash(self, key: str) -> _Pool:
        n = len(self._ring_hashes)
        start = bisect.bisect_left(self._ring_hashes, ring_hash(key))
        for i in range(n):
            pool = self._pools[self._ring_pools[(start + i) % n]]
            if pool.healthy:
                return pool
        raise AssertionError("choose() checked that a healthy pool exists")

    # --- What the pool layer reports --------------------------------------------------------

    def started(self, pool: str) -> None:
        """Count one more task in flight on ``pool``. Raises ValueError for an unknown pool."""
        self._get(pool).in_flight += 1

    def finished(self, pool: str, latency: float | None) -> None:
        """Count one task of ``pool`` as done and fold its latency into the pool's EWMA.

        Args:
            latency: how long the task took, in seconds; ``None`` when it says nothing about
                the pool's speed (e.g. a cancelled task), so only the in-flight count changes.

        Raises:
            ValueError: an unknown pool, no task in flight on it, or a negative or non-finite
                latency.
        """
        state = self._get(pool)
        if latency is not None and (
            isinstance(latency, bool)
            or not isinstance(latency, int | float)
            or not math.isfinite(latency)
            or latency < 0
        ):
            raise ValueError(f"latency: {latency!r} must be a finite number of seconds, 0 or more")
        if state.in_flight == 0:
            raise ValueError(f"pool: {pool!r} has no task in flight; call started() first")
        state.in_flight -= 1
        if latency is not None:
            if state.ewma is None:
                state.ewma = float(latency)
            else:
                state.ewma = self._alpha * latency + (1.0 - self._alpha) * state.ewma

    def set_healthy(self, pool: str, healthy: bool) -> None:
        """Mark ``pool`` healthy (it may be chosen) or unhealthy (it is skipped).

        Raises ValueError for an unknown pool.
        """
        state = self._get(pool)
        if state.healthy != bool(healthy):
            state.healthy = bool(healthy)
            self._reset_wrr()

    def add_pool(self, pool: str, weight: float = 1) -> None:
        """Add a healthy pool with nothing in flight, after the existing ones in pool order.

        Raises:
            ValueError: the name is empty or taken, or the weight is invalid (see
                :class:`Balancer`).
        """
        _check_pool_name(pool, "pool")
        if pool in self._pools:
            raise ValueError(f"pool: {pool!r} is already in this balancer")
        self._pools[pool] = _Pool(pool, self._valid_weight(weight, "weight"))
        self._order.append(pool)
        self._rebuild()

    def remove_pool(self, pool: str) -> None:
        """Remove ``pool`` and forget its counts; later reports about it raise ValueError.

        Raises ValueError for an unknown pool.
        """
        self._get(pool)
        index = self._order.index(pool)
        del self._pools[pool]
        del self._order[index]
        if index < self._cursor:
            self._cursor -= 1
        if self._cursor >= len(self._order):
            self._cursor = 0
        self._rebuild()

    # --- Internals --------------------------------------------------------------------------

    def _get(self, pool: str) -> _Pool:
        try:
            return self._pools[pool]
        except (KeyError, TypeError):
            raise ValueError(
                f"pool: {pool!r} is not in this balancer; its pools are {self._order!r}"
            ) from None

    def _valid_weight(self, weight: object, name: str) -> float:
        value = _check_weight(weight, name)
        if self._strategy is Strategy.ROUND_ROBIN and value != 1:
            raise ValueError(
                f"{name}: {weight!r}, but round_robin gives every pool the same share; use "
                "strategy='weighted_round_robin' to weigh pools"
            )
        if self._strategy is Strategy.CONSISTENT_HASH:
            points = max(1, round(self._vnodes * value))
            if points > MAX_VNODES_PER_POOL:
                raise ValueError(
                    f"{name}: {weight!r} times vnodes {self._vnodes} gives {points} ring points; "
                    f"at most {MAX_VNODES_PER_POOL} per pool, so lower the weights or vnodes"
                )
        return value

    def _reset_wrr(self) -> None:
        for pool in self._pools.values():
            pool.current = 0

    def _rebuild(self) -> None:
        """Recompute what depends on the set of pools: scaled weights and the hash ring."""
        self._reset_wrr()
        exact = {n: Fraction(p.weight) for n, p in self._pools.items()}
        scale = math.lcm(*(f.denominator for f in exact.values())) if exact else 1
        self._scaled = {n: int(f * scale) for n, f in exact.items()}
        if self._strategy is not Strategy.CONSISTENT_HASH:
            return
        points = sorted(
            (ring_hash(f"{name}#{i}"), name)
            for name, p in self._pools.items()
            for i in range(max(1, round(self._vnodes * p.weight)))
        )
        self._ring_hashes = [h for h, _ in points]
        self._ring_pools = [n for _, n in points]
