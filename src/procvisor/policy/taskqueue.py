"""In which order a pool runs its queued tasks: priorities, aging, deadlines.

A pool pushes every submitted task with :meth:`TaskQueue.push` and, whenever a worker is free,
calls :meth:`TaskQueue.pop`, which returns the task to run and, separately, the tasks whose
deadline has passed (the pool fails those with ``DeadlineExpired`` without running them). The
rules:

- **Priorities** are ``critical > high > normal > low > background`` (:class:`Priority`,
  4 down to 0). :func:`parse_priority` also takes the names (any case) and the numbers.
- **Aging.** A task's *effective* priority rises one level for every ``aging`` seconds it has
  waited, up to ``critical``: pushed at ``t`` with priority ``b``, at ``now`` it is
  ``min(critical, b + floor((now - t) / aging))`` (a wait below 0, when ``now`` is earlier
  than ``t``, counts as 0). So with ``aging = 10`` a ``background`` task is ``low`` after
  exactly 10 s and ``critical`` after 40 s. ``aging = 0`` turns aging off: the effective
  priority is always the one given, and the order is strict priority.
- **Order.** :meth:`~TaskQueue.pop` returns the task with the highest effective priority;
  among equal effective priorities the one pushed at the earliest ``now``, and among equal
  times the one pushed first. Without aging this is FIFO within each priority. With aging no
  task starves: after ``4 * aging`` seconds it is ``critical``, and from then on only tasks that
  were pushed before it can go first.
- **Deadlines.** A task may carry a ``deadline`` on the same clock as ``now``. It is expired
  when ``now >= deadline``: a task is never returned at or after its deadline, even if it is
  otherwise next. :meth:`~TaskQueue.pop` and :meth:`~TaskQueue.expire` remove every expired
  task and report them in deadline order (then push order); :meth:`~TaskQueue.next_deadline`
  tells the pool when to arm a timer so they fail on time rather than when they come up.

Why looking at five tasks is enough, which keeps push and pop at O(log n): the queue keeps one
heap per priority, ordered by push time then push order. Within one priority, the effective
priority only falls as the push time grows, so a heap's head has the highest effective priority
of its level and wins every tie against the rest of its level. The task that should run next is
therefore one of the five heads. Cancelled and expired tasks are dropped lazily when they reach
a head, and the heaps are rebuilt when dropped entries outnumber live ones, so memory stays
proportional to the tasks queued.
"""

from __future__ import annotations

import heapq
import math
from enum import IntEnum
from typing import Generic, TypeVar

__all__ = [
    "DEFAULT_AGING",
    "Priority",
    "QueuedTask",
    "TaskQueue",
    "effective_priority",
    "parse_priority",
]

T = TypeVar("T")

DEFAULT_AGING = 10.0
"""Seconds of waiting that raise a task's effective priority by one level."""


class Priority(IntEnum):
    """How urgent a task is; a larger value runs first."""

    BACKGROUND = 0
    LOW = 1
    NORMAL = 2
    HIGH = 3
    CRITICAL = 4


_ACCEPTED = ", ".join(f"{p.name.lower()} ({p.value})" for p in reversed(Priority))


def parse_priority(value: Priority | int | str, *, field: str = "priority") -> Priority:
    """Return the :class:`Priority` named by ``value``.

    Accepts a :class:`Priority`, a number from 0 (``background``) to 4 (``critical``), a name
    in any case (``"high"``), or a number as a string (``"3"``).

    Args:
        field: the name of the setting, for the error message.

    Raises:
        ValueError: ``value`` is none of those, naming ``field`` and the accepted forms.
    """
    if isinstance(value, Priority):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        if Priority.BACKGROUND <= value <= Priority.CRITICAL:
            return Priority(value)
    elif isinstance(value, str):
        text = value.strip()
        if text.isascii() and text.isdigit() and int(text) <= Priority.CRITICAL:
            return Priority(int(text))
        member = Priority.__members__.get(text.upper())
        if member is not None:
            return member
    raise ValueError(f"{field}: {value!r} is not a priority; use one of {_ACCEPTED}")


def effective_priority(base: Priority, enqueued: float, now: float, aging: float) -> Priority:
    """Return the priority a task or job pushed at ``enqueued`` with ``base`` has at ``now``.

    ``min(critical, base + floor((now - enqueued) / aging))``, a wait below 0 counting as 0;
    ``aging = 0`` turns aging off (``base`` is returned). The one aging rule of both
    :class:`TaskQueue` and :class:`~procvisor.policy.jobqueue.JobQueue` (which passes a job's
    ready time as ``enqueued``).
    """
    if aging == 0:
        return base
    waited = max(0.0, now - enqueued)
    return Priority(min(Priority.CRITICAL, base + math.floor(waited / aging)))


def _check_time(value: float, name: str) -> float:
    if type(value) is float and math.isfinite(value):  # what time.monotonic() gives: fast
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name}: {value!r} must be a finite number; pass time.monotonic()")
    return value


class QueuedTask(Generic[T]):
    """One task in a :class:`TaskQueue`: the handle :meth:`TaskQueue.push` returns.

    Only the queue creates these. Pass the handle to :meth:`TaskQueue.remove` to cancel the task.

    Attributes:
        item: what was pushed.
        priority: the priority it was pushed with.
        enqueued: the ``now`` it was pushed at.
        deadline: when it expires, on the ``now`` clock, or ``None``.
        seq: its push number in its queue, counting from 0.
    """

    __slots__ = ("_owner", "_queued", "deadline", "enqueued", "item", "priority", "seq")

    def __init__(
        self,
        owner: object,
        item: T,
        priority: Priority,
        enqueued: float,
        deadline: float | None,
        seq: int,
    ) -> None:
        self._owner = owner
        self._queued = True
        self.item = item
        self.priority = priority
        self.enqueued = enqueued
        self.deadline = deadline
        self.seq = seq

    @property
    def queued(self) -> bool:
        """Whether the task is still in the queue (not popped, expired or removed)."""
        return self._queued

    def __repr__(self) -> str:
        deadline = "" if self.deadline is None else f" deadline={self.deadline!r}"
        state = "queued" if self._queued else "out"
        return (
            f"<QueuedTask #{self.seq} {self.priority.name.lower()} "
            f"enqueued={self.enqueued!r}{deadline} {state} {self.item!r}>"
        )


class TaskQueue(Generic[T]):
    """A pool's queue of tasks, ordered by priority with aging; see the module docstring.

    Args:
        aging: seconds of waiting that raise a task's effective priority by one level;
            0 turns aging off.

    Raises:
        ValueError: ``aging`` is negative or not finite.
    """

    def __init__(self, aging: float = DEFAULT_AGING) -> None:
        if (
            isinstance(aging, bool)
            or not isinstance(aging, int | float)
            or not math.isfinite(aging)
            or aging < 0
        ):
            raise ValueError(
                f"aging: {aging!r} must be a duration of 0 (off) or more seconds, e.g. 10"
            )
        self._aging = float(aging)
        # One heap per priority, of (enqueued, seq, task); and one of (deadline, seq, task).
        self._levels: list[list[tuple[float, int, QueuedTask[T]]]] = [[] for _ in Priority]
        self._deadlines: list[tuple[float, int, QueuedTask[T]]] = []
        self._counts = [0] * len(Priority)
        self._size = 0  # sum(self._counts), kept as it changes: the pool asks it often
        self._dead = 0  # entries in the heaps whose task has left the queue
        self._seq = 0
        self._token = object()  # tells this queue's handles from another queue's

    @property
    def aging(self) -> float:
        """Seconds per level of aging; 0 when aging is off."""
        return self._aging

    def __len__(self) -> int:
        return self._size

    def __repr__(self) -> str:
        counts = ", ".join(f"{p.name.lower()}={self._counts[p]}" for p in reversed(Priority))
        return f"<TaskQueue aging={self._aging:g} {counts}>"

    def counts(self) -> dict[Priority, int]:
        """Return how many tasks are queued at each priority they were pushed with."""
        return {p: self._counts[p] for p in reversed(Priority)}

    def effective_priority(self, task: QueuedTask[T], now: float) -> Priority:
        """Return the priority ``task`` has at ``now`` after aging (see the module docstring)."""
        return effective_priority(task.priority, task.enqueued, now, self._aging)

    def push(
        self,
        item: T,
        *,
        now: float,
        priority: Priority | int | str = Priority.NORMAL,
        deadline: float | None = None,
    ) -> QueuedTask[T]:
        """Queue ``item`` and return its handle.

        Args:
            now: the current ``time.monotonic()``; aging counts from it.
            priority: anything :func:`parse_priority` accepts.
            deadline: when the task expires, on the clock of ``now``. A deadline already
                passed is accepted; the next :meth:`pop` or :meth:`expire` reports the task.

        Raises:
            ValueError: a bad priority, or ``now`` or ``deadline`` is not a finite number.
        """
        level = priority if type(priority) is Priority else parse_priority(priority)
        _check_time(now, "now")
        if deadline is not None:
            _check_time(deadline, "deadline")
        task = QueuedTask(self._token, item, level, now, deadline, self._seq)
        heapq.heappush(self._levels[level], (now, self._seq, task))
        if deadline is not None:
            heapq.heappush(self._deadlines, (deadline, self._seq, task))
        self._seq += 1
        self._counts[level] += 1
        self._size += 1
        return task

    def pop(self, now: float) -> tuple[QueuedTask[T] | None, list[QueuedTask[T]]]:
        """Take the task to run next, and the tasks that expired, out of the queue.

        Returns:
            The task to run (``None`` when no unexpired task is queued) and the tasks whose
            deadline is ``<= now``, in deadline order; the pool fails those without running
            them.

        Raises:
            ValueError: ``now`` is not a finite number.
        """
        expired = self.expire(now)
        # The head of each level's heap is its best task (see the module docstring); rank the
        # heads by (effective priority, earlier push time, earlier push). Levels without a
        # queued task are skipped (their dead entries wait for a compaction); when one level
        # alone has tasks, its head is the answer.
        levels = [level for level, n in enumerate(self._counts) if n]
        if not levels:
            return None, expired
        best_level = levels[0]
        if len(levels) > 1:
            best: tuple[int, float, int] | None = None
            for level in levels:
                heap = self._levels[level]
                self._drop_dead_heads(heap)
                enqueued, seq, task = heap[0]
                rank = (self.effective_priority(task, now), -enqueued, -seq)
                if best is None or rank > best:
                    best, best_level = rank, level
        heap = self._levels[best_level]
        self._drop_dead_heads(heap)
        _, _, task = heapq.heappop(heap)
        self._take(task)
        if task.deadline is not None:
            self._dead += 1  # its entry in the deadline heap
        self._maybe_compact()
        return task, expired

    def expire(self, now: float) -> list[QueuedTask[T]]:
        """Remove and return the tasks whose deadline is ``<= now``, in deadline order.

        Raises:
            ValueError: ``now`` is not a finite number.
        """
        _check_time(now, "now")
        expired: list[QueuedTask[T]] = []
        heap = self._deadlines
        while heap and heap[0][0] <= now:
            _, _, task = heapq.heappop(heap)
            if task._queued:
                self._take(task)
                self._dead += 1  # its entry in its level's heap
                expired.append(task)
            else:
                self._dead -= 1
        if expired:
            self._maybe_compact()
        return expired

    def next_deadline(self) -> float | None:
        """Return the earliest deadline of a queued task, or ``None`` if none has one.

        Arm a timer for it and call :meth:`expire` (or :meth:`pop`) when it fires.
        """
        self._drop_dead_heads(self._deadlines)
        return self._deadlines[0][0] if self._deadlines else None

    def remove(self, task: QueuedTask[T]) -> bool:
        """Cancel a queued task.

        Returns:
            ``True`` if it was removed, ``False`` if it had already left the queue (popped,
            expired or removed before).

        Raises:
            ValueError: ``task`` is a handle from another queue.
        """
        if not isinstance(task, QueuedTask) or task._owner is not self._token:
            raise ValueError(f"task: {task!r} is not a handle from this queue")
        if not task._queued:
            return False
        self._take(task)
        self._dead += 1 if task.deadline is None else 2
        self._maybe_compact()
        return True

    def _take(self, task: QueuedTask[T]) -> None:
        task._queued = False
        self._counts[task.priority] -= 1
        self._size -= 1

    def _drop_dead_heads(self, heap: list[tuple[float, int, QueuedTask[T]]]) -> None:
        while heap and not heap[0][2]._queued:
            heapq.heappop(heap)
            self._dead -= 1

    def _maybe_compact(self) -> None:
        # Rebuilding costs O(live + dead) and happens only once the dead entries outnumber the
        # live ones, so it adds O(1) amortized to each removal.
        if self._dead <= 64 or self._dead <= len(self):
            return
        self._levels = [[e for e in heap if e[2]._queued] for heap in self._levels]
        self._deadlines = [e for e in self._deadlines if e[2]._queued]
        for heap in (*self._levels, self._deadlines):
            heapq.heapify(heap)
        self._dead = 0
