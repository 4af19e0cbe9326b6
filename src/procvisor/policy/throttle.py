"""The SIGSTOP/SIGCONT duty cycle that holds a process group's CPU near a target.

Used where the kernel cannot do it (no writable cpu cgroup): by the process layer for a
``cpus`` limit, and by monitoring's ``throttle`` action. Pure: the caller measures and signals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["ThrottlePlan", "plan_throttle"]


def _check_finite(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name}: {value!r} must be a finite number")
    return value


@dataclass(frozen=True, slots=True)
class ThrottlePlan:
    """One period of a throttle's duty cycle: run for :attr:`run` seconds, stop for :attr:`stop`.

    ``stop == 0`` means no throttling is needed: let the process run (send SIGCONT if it was
    stopped).
    """

    run: float
    stop: float

    @property
    def period(self) -> float:
        """The length of one cycle."""
        return self.run + self.stop

    @property
    def duty(self) -> float:
        """The fraction of each period the process may run (1.0 when not throttled)."""
        return self.run / self.period if self.period > 0 else 1.0

    @property
    def throttled(self) -> bool:
        """Whether the process must be stopped for part of each period."""
        return self.stop > 0


def plan_throttle(
    target: float, demand: float, period: float = 1.0, *, min_slice: float = 0.02
) -> ThrottlePlan:
    """Plan the SIGSTOP/SIGCONT duty cycle that holds a process's CPU near ``target`` percent.

    The mechanism: each period, the caller lets the process group run for ``run`` seconds,
    sends SIGSTOP, waits ``stop`` seconds, sends SIGCONT, and repeats. A process that would use
    ``demand`` percent of a core then averages ``demand * run / period``, which this plan sets
    to ``target``. Where the cgroup tree is writable, ``cpu.max`` does the same in the kernel
    and is smoother; this is the fallback.

    ``demand`` is what the process uses while it runs: measure it over the run slices only
    (CPU seconds consumed / seconds allowed to run * 100). Sampling ``cpu`` over whole
    periods would read about ``target`` and release the throttle at once; measured over run
    slices, the throttle lifts (``stop == 0``) only when the program itself calms down.

    Slices shorter than ``min_slice`` are not worth two signals: a stop that short is
    skipped (no throttling), and the run slice never drops below it (a stopped process still
    needs to answer signals and probes now and then).

    Args:
        target: the CPU to allow, in percent of one core (more than 0).
        demand: the CPU it uses when running, in percent of one core.
        period: the cycle length in seconds.
        min_slice: the shortest run or stop worth scheduling, in seconds.

    Raises:
        ValueError: ``target`` is not more than 0 (use the ``stop`` action to halt a process),
            ``demand`` is negative, ``period`` is not more than 0, ``min_slice`` is not in
            ``[0, period / 2]``, or a value is not finite.
    """
    for value, name in ((target, "target"), (demand, "demand"), (period, "period")):
        _check_finite(value, name)
    _check_finite(min_slice, "min_slice")
    if target <= 0:
        raise ValueError(f"target: {target!r} must be more than 0; to halt it, use 'stop'")
    if demand < 0:
        raise ValueError(f"demand: {demand!r} must be 0 or more")
    if period <= 0:
        raise ValueError(f"period: {period!r} must be more than 0")
    if not 0 <= min_slice <= period / 2:
        raise ValueError(f"min_slice: {min_slice!r} must be between 0 and half the period")
    if demand <= target:
        return ThrottlePlan(period, 0.0)
    run = max(period * target / demand, min_slice)
    stop = period - run
    if stop < min_slice:
        return ThrottlePlan(period, 0.0)
    return ThrottlePlan(run, stop)
