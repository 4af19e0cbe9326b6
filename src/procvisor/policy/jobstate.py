"""How a job's state may change, and how long it waits before a retry.

:class:`JobState` and :data:`TRANSITIONS` are the job lifecycle of DESIGN.md::

    queued → scheduled → running → succeeded | failed | retrying → queued …
    queued → expired | cancelled | failed        running → preempted → queued | running

:func:`check_transition` refuses an illegal move by name; the jobs layer calls it for every
change before it writes the change to the store. :func:`parse_backoff` and :func:`retry_delay`
give the delay before a retry, by the rule of :class:`~procvisor.policy.restart.Backoff`.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType

from procvisor.policy.restart import Backoff
from procvisor.policy.units import DURATION_FORMS, parse_duration

__all__ = [
    "TERMINAL_STATES",
    "TRANSITIONS",
    "JobState",
    "check_transition",
    "parse_backoff",
    "retry_delay",
]


# --- Job states -------------------------------------------------------------------------------


class JobState(StrEnum):
    """Where a job is in its lifecycle (DESIGN.md); :data:`TRANSITIONS` lists the moves."""

    QUEUED = "queued"
    """Waiting in the queue (perhaps for its ``not_before``)."""
    SCHEDULED = "scheduled"
    """Admitted: resources are set aside and it is being started."""
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    """Failed for good: no retries left, or not retryable."""
    RETRYING = "retrying"
    """Failed with retries left; goes back to the queue after its backoff delay."""
    EXPIRED = "expired"
    """Could not start before its deadline."""
    CANCELLED = "cancelled"
    PREEMPTED = "preempted"
    """Stopped for a job of higher priority: suspended, or about to be queued again."""


_S = JobState

TERMINAL_STATES: frozenset[JobState] = frozenset(
    {_S.SUCCEEDED, _S.FAILED, _S.EXPIRED, _S.CANCELLED}
)
"""The states a job never leaves."""

TRANSITIONS: Mapping[JobState, frozenset[JobState]] = MappingProxyType(
    {
        # Admitted; its deadline passed first; cancelled (by a user, or because a job it
        # depends on failed); or failed without running: it can no longer fit the node or its
        # tenant's quota (they were lowered after it was submitted).
        _S.QUEUED: frozenset({_S.SCHEDULED, _S.EXPIRED, _S.CANCELLED, _S.FAILED}),
        # Started; could not be started (failed, or retried); cancelled; or put back in line
        # (the daemon restarted before starting it).
        _S.SCHEDULED: frozenset({_S.RUNNING, _S.FAILED, _S.RETRYING, _S.CANCELLED, _S.QUEUED}),
        _S.RUNNING: frozenset({_S.SUCCEEDED, _S.FAILED, _S.RETRYING, _S.CANCELLED, _S.PREEMPTED}),
        # Back in the queue with ``not_before = now + retry_delay(...)``.
        _S.RETRYING: frozenset({_S.QUEUED, _S.CANCELLED}),
        # Queued again (requeue), resumed (suspend), died while suspended, or cancelled.
        _S.PREEMPTED: frozenset({_S.QUEUED, _S.RUNNING, _S.FAILED, _S.RETRYING, _S.CANCELLED}),
        **{state: frozenset[JobState]() for state in TERMINAL_STATES},
    }
)
"""For each state, the states a job may move to from it."""


def _parse_state(value: JobState | str, name: str) -> JobState:
    if isinstance(value, str):
        try:
            return JobState(value.strip().lower())
        except ValueError:
            pass
    raise ValueError(
        f"{name}: {value!r} is not a job state; use one of "
        + ", ".join(repr(s.value) for s in JobState)
    )


def check_transition(old: JobState | str, new: JobState | str) -> JobState:
    """Return ``new`` as a :class:`JobState` if a job may move to it from ``old``.

    Raises:
        ValueError: either is not a job state, or the move is not in :data:`TRANSITIONS`; the
            message names both states and what ``old`` may move to.
    """
    source = _parse_state(old, "old")
    target = _parse_state(new, "new")
    allowed = TRANSITIONS[source]
    if target not in allowed:
        if not allowed:
            why = f"{source.value} is final"
        else:
            why = f"from {source.value} a job may go to " + ", ".join(
                s.value for s in JobState if s in allowed
            )
        raise ValueError(f"job state: cannot go from {source.value} to {target.value}; {why}")
    return target


# --- Retries ----------------------------------------------------------------------------------


def parse_backoff(value: str | float, *, field: str = "backoff") -> tuple[float, float]:
    """Return the ``(initial, max)`` retry delays, in seconds, that ``value`` describes.

    ``"1s..1m"`` is 1 s doubling up to 1 min; a single duration (``"5s"``, ``5``) is a fixed
    delay, the same as ``"5s..5s"``. Each end is anything
    :func:`~procvisor.policy.units.parse_duration` accepts.

    Raises:
        ValueError: the form is wrong, ``initial`` is 0, or ``max`` is below ``initial``; the
            message names ``field``.
    """
    forms = f"use initial..max, e.g. '1s..1m', or one duration; each is {DURATION_FORMS}"
    if isinstance(value, str) and ".." in value:
        first, _, last = value.partition("..")
        initial = parse_duration(first, field=f"{field} initial")
        longest = parse_duration(last, field=f"{field} max")
    elif isinstance(value, str | int | float) and not isinstance(value, bool):
        initial = longest = parse_duration(value, field=field)
    else:
        raise ValueError(f"{field}: {value!r} is not a backoff; {forms}")
    if initial <= 0:
        raise ValueError(
            f"{field}: {value!r} starts at 0; a retry needs a delay of more than 0, {forms}"
        )
    if longest < initial:
        raise ValueError(
            f"{field}: {value!r} has its max below its initial delay; write initial..max, "
            "e.g. '1s..1m'"
        )
    return initial, longest


def retry_delay(attempt: int, initial: float, max: float, multiplier: float = 2.0) -> float:
    """Return the delay in seconds before retry number ``attempt`` (1 for the first retry).

    ``min(initial * multiplier ** (attempt - 1), max)``: the rule of
    :class:`~procvisor.policy.restart.Backoff` without jitter. For jitter, use a ``Backoff``
    directly.

    Raises:
        ValueError: ``attempt`` is below 1, or the arguments are refused by ``Backoff``
            (``initial`` not more than 0, ``max`` below ``initial``, ``multiplier`` below 1).
    """
    return Backoff(initial=initial, max=max, multiplier=multiplier, jitter=0.0).delay(attempt, 0.0)
