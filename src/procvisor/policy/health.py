"""When probe results make an instance healthy or unhealthy, as Docker and Kubernetes decide it.

The supervisor starts each instance from ``HealthState(started=now)``, feeds every probe result
to :func:`observe`, keeps the returned state, and acts on the returned :class:`HealthChange`
(an event, and a restart when an instance turns unhealthy and the service asks for it). The
rules:

- **Health** starts ``unknown``. ``success_threshold`` consecutive successes make it
  ``healthy``; ``failure_threshold`` consecutive failures make it ``unhealthy``. Either streak
  is broken by one result of the other kind. Health is sticky: between two streaks it keeps its
  last value.
- **Start period.** For ``start_period`` seconds after the start, failures do not count towards
  ``failure_threshold`` (the program may still be loading). A success counts at once and ends
  the start period early, as Docker does: from then on every failure counts, so a service that
  answered once and then broke is not given the rest of its start period.

An instance therefore never turns unhealthy before ``started + start_period`` unless it first
succeeded, and never turns unhealthy (or healthy) on fewer results than its threshold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import StrEnum

__all__ = [
    "Health",
    "HealthChange",
    "HealthState",
    "HealthThresholds",
    "in_start_period",
    "observe",
]


class Health(StrEnum):
    """What the probes last established about an instance; separate from its run state."""

    UNKNOWN = "unknown"
    """Not yet established: just started, or still inside its start period."""
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"


def _check_finite(value: float, name: str) -> None:
    if isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"{name}: {value!r} must be a finite number")


def _check_count(value: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: {value!r} must be a whole number of 1 or more")


@dataclass(frozen=True, slots=True)
class HealthThresholds:
    """How many results in a row change an instance's health, and how long failures are forgiven.

    The defaults are those of a probe in the configuration: 3 failures, 1 success, no start
    period.

    Raises:
        ValueError: a threshold is below 1 or not a whole number, or ``start_period`` is
            negative or not finite.
    """

    failure_threshold: int = 3
    success_threshold: int = 1
    start_period: float = 0.0

    def __post_init__(self) -> None:
        _check_count(self.failure_threshold, "failure_threshold")
        _check_count(self.success_threshold, "success_threshold")
        _check_finite(self.start_period, "start_period")
        if self.start_period < 0:
            raise ValueError(f"start_period: {self.start_period!r} must be a duration of 0 or more")


@dataclass(frozen=True, slots=True)
class HealthState:
    """What the health rules remember about one instance between probe results.

    Start every instance (and every restart of it) from ``HealthState(started=now)``.

    Attributes:
        started: the ``now`` at which the instance started; the start period counts from it.
        health: the current health.
        successes: consecutive successes up to the last result.
        failures: consecutive failures up to the last result that counted (failures inside
            the start period do not).
        start_period_over: a success has ended the start period early.

    Raises:
        ValueError: ``started`` is not finite, a count is negative, both counts are above 0
            (one result breaks the other streak), or there are successes while the start
            period is not over.
    """

    started: float
    health: Health = Health.UNKNOWN
    successes: int = 0
    failures: int = 0
    start_period_over: bool = False

    def __post_init__(self) -> None:
        _check_finite(self.started, "started")
        if not isinstance(self.health, Health):
            raise ValueError(
                f"health: {self.health!r} is not a health; use one of "
                + ", ".join(repr(h.value) for h in Health)
            )
        for name in ("successes", "failures"):
            value = getattr(self, name)
            if isinstance(value, bool) or value < 0:
                raise ValueError(f"{name}: {value!r} must be 0 or more")
        if self.successes and self.failures:
            raise ValueError(
                f"successes {self.successes!r} and failures {self.failures!r}: one result "
                "breaks the other streak, so at most one of them is above 0"
            )
        if self.successes and not self.start_period_over:
            raise ValueError(
                f"successes: {self.successes!r} with start_period_over False; a success "
                "ends the start period"
            )


@dataclass(frozen=True, slots=True)
class HealthChange:
    """A change of health returned by :func:`observe`.

    Attributes:
        old: the health before the result.
        new: the health after it.
        reason: one line for logs and events,
            e.g. ``"3 consecutive failures: connection refused"``.
    """

    old: Health
    new: Health
    reason: str


def in_start_period(thresholds: HealthThresholds, state: HealthState, now: float) -> bool:
    """Return whether a failure observed at ``now`` would be forgiven (not counted).

    Raises:
        ValueError: ``now`` is not finite.
    """
    _check_finite(now, "now")
    return not state.start_period_over and now < state.started + thresholds.start_period


def _streak(count: int, ok: bool, detail: str) -> str:
    if count == 1:
        what = "probe succeeded" if ok else "probe failed"
    else:
        what = f"{count} consecutive {'successes' if ok else 'failures'}"
    return f"{what}: {detail}" if detail else what


def observe(
    thresholds: HealthThresholds,
    state: HealthState,
    ok: bool,
    now: float,
    detail: str = "",
) -> tuple[HealthState, HealthChange | None]:
    """Take one probe result into account; return the new state and the change, if any.

    See the module docstring for the rules.

    Args:
        thresholds: the probe's thresholds and start period.
        state: the state returned for the previous result (or ``HealthState(started=...)``).
        ok: whether the probe succeeded.
        now: the current ``time.monotonic()``, when the result came in.
        detail: what the probe reported (``"HTTP 503"``, ``"connection refused"``); it ends
            the change's reason.

    Raises:
        ValueError: ``now`` is not finite or is earlier than ``state.started``.
    """
    _check_finite(now, "now")
    if now < state.started:
        raise ValueError(
            f"now: {now!r} is earlier than the instance's start at {state.started!r}; "
            "pass time.monotonic()"
        )
    if ok:
        successes = state.successes + 1
        after = replace(state, successes=successes, failures=0, start_period_over=True)
        if state.health is not Health.HEALTHY and successes >= thresholds.success_threshold:
            change = HealthChange(state.health, Health.HEALTHY, _streak(successes, ok, detail))
            return replace(after, health=Health.HEALTHY), change
        return after, None

    if in_start_period(thresholds, state, now):
        # Forgiven. No success came before it (one would have ended the start period), so
        # there is no streak to break either.
        return state, None
    failures = state.failures + 1
    after = replace(state, successes=0, failures=failures)
    if state.health is not Health.UNHEALTHY and failures >= thresholds.failure_threshold:
        change = HealthChange(state.health, Health.UNHEALTHY, _streak(failures, ok, detail))
        return replace(after, health=Health.UNHEALTHY), change
    return after, None
