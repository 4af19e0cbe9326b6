"""A ``cpus`` limit where no cpu cgroup can be made: a SIGSTOP/SIGCONT duty cycle.

Each period the group runs for a slice, its CPU over that slice is measured from ``/proc``,
and it is stopped for the rest of the period if it used more than its share
(:func:`procvisor.policy.throttle.plan_throttle`). It averages the limit over a period, where
a cgroup's quota holds it within each 100 ms; a program sees its wall clock jump. A group
stopped by someone else (a ``SIGSTOP`` sent through procvisor, e.g. a job's suspension) is
left stopped until it is continued.
"""

from __future__ import annotations

import signal

from procvisor.policy.throttle import ThrottlePlan, plan_throttle
from procvisor.process._group import group_cpu, signal_group

__all__ = ["PERIOD", "CpuThrottle"]

PERIOD = 0.5
"""Seconds of one run-and-stop cycle: long enough for /proc's 10 ms CPU ticks to measure a
run slice, short enough that a service still answers within it."""


class CpuThrottle:
    """The duty cycle of one process group; :meth:`step` is called at :attr:`next_at`."""

    __slots__ = ("_cpu_at", "_plan", "_run_from", "next_at", "paused", "pgid", "stopped", "target")

    def __init__(self, pgid: int, cpus: float, now: float) -> None:
        self.pgid = pgid
        self.target = cpus * 100  # percent of one core
        self.stopped = False
        self.paused = False
        """Stopped by someone else: neither stopped nor continued here until continued."""
        # The first slice assumes it would use a whole core; the next ones, what it used.
        self._plan: ThrottlePlan = plan_throttle(self.target, 100.0, PERIOD)
        self._cpu_at = 0.0  # a group just started has used next to none: no /proc scan
        self._run_from = now
        self.next_at = now + self._plan.run

    def step(self, now: float) -> None:
        """End the current slice: stop the group after a run, or continue it after a stop."""
        if self.paused:
            self.next_at = now + PERIOD
            return
        if self.stopped:
            self.stopped = False
            signal_group(self.pgid, signal.SIGCONT)
            self._run(now)
            return
        used = group_cpu(self.pgid)
        if used is None:
            self.next_at = now + PERIOD
            return
        ran = now - self._run_from
        demand = max(0.0, used - self._cpu_at) / ran * 100 if ran > 0 else 0.0
        self._plan = plan_throttle(self.target, demand, PERIOD)
        if self._plan.throttled:
            self.stopped = True
            signal_group(self.pgid, signal.SIGSTOP)
            self.next_at = now + self._plan.stop
        else:
            self._run(now)

    def _run(self, now: float) -> None:
        self._cpu_at = group_cpu(self.pgid) or 0.0
        self._run_from = now
        self.next_at = now + self._plan.run

    def pause(self, paused: bool, now: float) -> None:
        """Someone else stopped (True) or continued (False) the group."""
        self.paused = paused
        if not paused:
            self.stopped = False
            self._run(now)  # a fresh run slice: the time it was stopped is not demand
