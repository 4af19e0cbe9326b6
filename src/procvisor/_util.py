"""Small helpers shared by every layer."""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


class NoPublicConstructor(type):
    """Metaclass for runtime objects procvisor creates and owns (``Process``, workers...).

    ``Cls(...)`` raises TypeError; procvisor builds them with ``Cls._create(...)``.
    """

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"{cls.__module__}.{cls.__qualname__} has no public constructor; "
            "procvisor creates it for you"
        )

    def _create(cls: type[T], *args: Any, **kwargs: Any) -> T:
        return super().__call__(*args, **kwargs)  # type: ignore[misc,no-any-return]


_SECRET_WORDS = ("TOKEN", "SECRET", "PASSWORD", "PASSWD", "KEY", "CREDENTIAL", "AUTH")


def redact_env(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` with the values of secret-looking keys (TOKEN, SECRET, PASSWORD, KEY...) hidden."""
    return {
        k: ("<redacted>" if any(w in k.upper() for w in _SECRET_WORDS) else v)
        for k, v in env.items()
    }


LATENCY_BUCKETS: tuple[float, ...] = (
    *(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
    *(2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
)
"""Default upper bounds (seconds) of a :class:`Histogram` of latencies, 0.5 ms to 5 min."""


class Histogram:
    """Counts of observations by upper bound, and their sum: what a Prometheus histogram shows.

    Plain Python, so that recording costs no import of a metrics library; not thread-safe
    (the owner serialises ``observe``).
    """

    __slots__ = ("_counts", "bounds", "total")

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.bounds = bounds
        self._counts = [0] * (len(bounds) + 1)  # the last: above every bound
        self.total = 0.0

    def observe(self, value: float) -> None:
        self._counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[float, int]]:
        """``(bound, observations <= bound)`` for each bound, then ``(inf, count)``."""
        out, running = [], 0
        for bound, n in zip((*self.bounds, math.inf), self._counts, strict=True):
            running += n
            out.append((bound, running))
        return out
