"""In which order the job scheduler considers queued jobs, and how a job's state may change.

The jobs layer pushes every submitted job with :meth:`JobQueue.push`. On each decision it calls
:meth:`~JobQueue.expire` (and marks what it returns ``expired``), passes
:meth:`~JobQueue.candidates` to :func:`~procvisor.policy.admission.decide_starts`, and takes the
jobs it starts out with :meth:`~JobQueue.remove`. It feeds CPU-seconds used to
:meth:`~JobQueue.charge`, and arms one timer for the earlier of :meth:`~JobQueue.next_due` and
:meth:`~JobQueue.next_deadline`. The rules:

- **Eligibility.** A job whose ``not_before`` (``--after``, ``--at``) is later than ``now`` is
  not a candidate until ``now >= not_before``. It joins the line then: wherever an order below
  uses the time a job was queued, it is the job's *ready time*,
  ``max(submitted, not_before)``.
- **Deadlines.** A job's ``deadline`` is the latest time it may start. From ``now >= deadline``
  it is expired, in every discipline: it is never a candidate again, and :meth:`~JobQueue.expire`
  takes it out and reports it (in deadline order, then push order). Nothing is dropped
  silently: an expired job stays queued, passed over, until :meth:`~JobQueue.expire` reports it.
- ``fifo``: by ready time, then push order.
- ``priority``: the :mod:`~procvisor.policy.taskqueue` rule. A job's effective priority rises
  one level of :class:`~procvisor.policy.taskqueue.Priority` for every ``aging`` seconds since
  its ready time, up to ``critical`` (``aging = 0`` turns aging off). Highest effective
  priority first, then earlier ready time, then push order; so FIFO within a level, and no job
  starves.
- ``fair``: weighted fair share between tenants by CPU-seconds used. Each tenant has a usage,
  fed by :meth:`~JobQueue.charge`, and a weight (:meth:`~JobQueue.set_weight`, 1 by default).
  The next job comes from the tenant with the lowest ``usage / weight`` (a tie goes to the
  tenant the queue saw first); within a tenant, jobs follow the ``priority`` order (FIFO when
  their priorities are equal). How many jobs a tenant has queued plays no part, so 10,000 jobs
  of one tenant do not hold back another tenant's 10. With ``half_life`` set, usage halves every
  ``half_life`` seconds, so old usage is forgiven. Within one walk of
  :meth:`~JobQueue.candidates`, each job yielded adds its ``cost`` (its estimated CPU-seconds)
  to its tenant's usage for the rest of that walk, so free slots that open together are shared
  by weight instead of all going to the tenant that was lowest. Charges are the caller's: the
  queue charges nothing itself.
- ``edf``: earliest deadline first; jobs without a deadline after all jobs with one, by ready
  time among themselves; equal deadlines by ready time, then push order.

**Cost.** :meth:`~JobQueue.push` and :meth:`~JobQueue.remove` take O(log n), and so does each
job :meth:`~JobQueue.candidates` yields, whatever the number of jobs or tenants queued: a
decision that looks at ``k`` jobs costs O(k log n). The queue keeps, per tenant, one binary heap
per lane (a single lane, or the five priority levels under ``priority`` and ``fair``), plus one
heap of tenants per lane keyed by each tenant's first job (under ``fair``, one heap of tenants
keyed by usage / weight; usage decays at the same rate for all, so that order holds between
charges). :meth:`~JobQueue.candidates` walks these heaps in order without changing them, and
only looks into a tenant when its first job comes up. The heaps track positions, so removal is
real rather than lazy as in :class:`~procvisor.policy.taskqueue.TaskQueue`: backfill takes jobs
from behind a waiting head, and dead entries left there would be stepped over again by the
in-order walk of every later decision.

The job lifecycle (states, legal moves, retry delays) is in :mod:`~procvisor.policy.jobstate`.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterator
from enum import StrEnum
from typing import Generic, TypeVar

from procvisor.policy.admission import Requests
from procvisor.policy.taskqueue import (
    DEFAULT_AGING,
    Priority,
    effective_priority,
    parse_priority,
)

__all__ = [
    "DEFAULT_TENANT",
    "Candidates",
    "Discipline",
    "JobQueue",
    "QueuedJob",
    "parse_discipline",
]

T = TypeVar("T")
V = TypeVar("V")

DEFAULT_TENANT = "default"
"""The tenant of a job pushed without one."""

_Key = tuple[float, ...]


class Discipline(StrEnum):
    """The order a :class:`JobQueue` hands out jobs in; see the module docstring."""

    FIFO = "fifo"
    PRIORITY = "priority"
    FAIR = "fair"
    EDF = "edf"


def parse_discipline(value: Discipline | str, *, field: str = "policy") -> Discipline:
    """Return the :class:`Discipline` named by ``value`` (any case).

    Raises:
        ValueError: ``value`` names none, naming ``field`` and the accepted names.
    """
    if isinstance(value, str):
        try:
            return Discipline(value.strip().lower())
        except ValueError:
            pass
    raise ValueError(
        f"{field}: {value!r} is not a queue discipline; use one of "
        + ", ".join(repr(d.value) for d in Discipline)
    )


def _check_time(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name}: {value!r} must be a finite number; pass time.monotonic()")
    return float(value)


def _check_positive(value: float, name: str, example: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"{name}: {value!r} must be a number more than 0, e.g. {example}")
    return float(value)


# --- Indexed heaps ----------------------------------------------------------------------------


class _Meter:
    """Counts heap steps (sift moves and walk pops), so tests can check what a decision costs."""

    __slots__ = ("steps",)

    def __init__(self) -> None:
        self.steps = 0


class _Node(Generic[V]):
    """A heap entry that knows where it is, so it can be removed or moved in O(log n)."""

    __slots__ = ("heap", "key", "pos", "value")

    def __init__(self, value: V, key: _Key = ()) -> None:
        self.value = value
        self.key = key
        self.pos = -1
        self.heap: _Heap[V] | None = None


class _Heap(Generic[V]):
    """A binary min-heap of :class:`_Node` by ``key``; keys are unique (they end in a seq)."""

    __slots__ = ("_a", "_meter")

    def __init__(self, meter: _Meter) -> None:
        self._a: list[_Node[V]] = []
        self._meter = meter

    def __len__(self) -> int:
        return len(self._a)

    def peek(self) -> _Node[V] | None:
        return self._a[0] if self._a else None

    def push(self, node: _Node[V]) -> None:
        node.heap = self
        node.pos = len(self._a)
        self._a.append(node)
        self._up(node.pos)

    def pop(self) -> _Node[V]:
        node = self._a[0]
        self.remove(node)
        return node

    def remove(self, node: _Node[V]) -> None:
        a = self._a
        i = node.pos
        last = a.pop()
        node.heap = None
        node.pos = -1
        if last is not node:
            a[i] = last
            last.pos = i
            self._up(i)
            self._down(last.pos)

    def update(self, node: _Node[V]) -> None:
        """Restore the order after ``node.key`` changed."""
        self._up(node.pos)
        self._down(node.pos)

    def walk(self) -> Iterator[_Node[V]]:
        """Yield the nodes in key order without changing the heap.

        A frontier heap holds the children of the nodes yielded so far: yielding ``k`` nodes
        costs O(k log k). The heap must not change during the walk.
        """
        a = self._a
        if not a:
            return
        frontier: list[tuple[_Key, int]] = [(a[0].key, 0)]
        meter = self._meter
        while frontier:
            _, i = heapq.heappop(frontier)
            meter.steps += 1
            yield a[i]
            for child in (2 * i + 1, 2 * i + 2):
                if child < len(a):
                    heapq.heappush(frontier, (a[child].key, child))

    def _up(self, i: int) -> None:
        a = self._a
        node = a[i]
        key = node.key
        steps = 0
        while i > 0:
            parent = (i - 1) >> 1
            above = a[parent]
            if not key < above.key:
                break
            a[i] = above
            above.pos = i
            i = parent
            steps += 1
        a[i] = node
        node.pos = i
        self._meter.steps += steps

    def _down(self, i: int) -> None:
        a = self._a
        n = len(a)
        node = a[i]
        key = node.key
        steps = 0
        while True:
            child = 2 * i + 1
            if child >= n:
                break
            right = child + 1
            if right < n and a[right].key < a[child].key:
                child = right
            below = a[child]
            if not below.key < key:
                break
            a[i] = below
            below.pos = i
            i = child
            steps += 1
        a[i] = node
        node.pos = i
        self._meter.steps += steps


# --- Jobs and tenants -------------------------------------------------------------------------


class QueuedJob(Generic[T]):
    """One job in a :class:`JobQueue`: the handle :meth:`JobQueue.push` returns.

    Only the queue creates these. It is a
    :class:`~procvisor.policy.admission.Candidate`: pass the queue's candidates straight to
    :func:`~procvisor.policy.admission.decide_starts`.

    Attributes:
        item: what was pushed (the caller's job record or id).
        tenant: who the job belongs to.
        priority: the priority it was pushed with.
        requests: what it asks for while running.
        runtime: the longest it runs (its timeout), or ``None``.
        cost: its estimated CPU-seconds, for the ``fair`` order within one walk.
        submitted: the ``now`` it was pushed at.
        not_before: when it becomes eligible, or ``None``.
        deadline: the latest time it may start, or ``None``.
        seq: its push number in its queue, counting from 0.
    """

    __slots__ = (
        "_deadline_node",
        "_delayed",
        "_node",
        "_owner",
        "_queued",
        "cost",
        "deadline",
        "item",
        "not_before",
        "priority",
        "requests",
        "runtime",
        "seq",
        "submitted",
        "tenant",
    )

    def __init__(
        self,
        owner: object,
        item: T,
        *,
        tenant: str,
        priority: Priority,
        requests: Requests,
        runtime: float | None,
        cost: float,
        submitted: float,
        not_before: float | None,
        deadline: float | None,
        seq: int,
    ) -> None:
        self._owner = owner
        self._queued = True
        self._delayed = False
        self._node: _Node[QueuedJob[T]] = _Node(self)
        self._deadline_node: _Node[QueuedJob[T]] | None = None
        self.item = item
        self.tenant = tenant
        self.priority = priority
        self.requests = requests
        self.runtime = runtime
        self.cost = cost
        self.submitted = submitted
        self.not_before = not_before
        self.deadline = deadline
        self.seq = seq

    @property
    def queued(self) -> bool:
        """Whether the job is still in the queue (not removed, popped or expired)."""
        return self._queued

    @property
    def ready_at(self) -> float:
        """When the job joined the line: ``max(submitted, not_before)``."""
        if self.not_before is None:
            return self.submitted
        return max(self.submitted, self.not_before)

    def __repr__(self) -> str:
        extra = ""
        if self.not_before is not None:
            extra += f" not_before={self.not_before!r}"
        if self.deadline is not None:
            extra += f" deadline={self.deadline!r}"
        state = "queued" if self._queued else "out"
        return (
            f"<QueuedJob #{self.seq} {self.tenant!r} {self.priority.name.lower()} "
            f"submitted={self.submitted!r}{extra} {state} {self.item!r}>"
        )


class _Lane(Generic[T]):
    """One tenant's ready jobs of one lane (the only lane, or one priority level)."""

    __slots__ = ("heap", "index", "node", "tenant")

    def __init__(self, tenant: _Tenant[T], index: int, meter: _Meter) -> None:
        self.tenant = tenant
        self.index = index
        self.heap: _Heap[QueuedJob[T]] = _Heap(meter)
        self.node: _Node[_Lane[T]] = _Node(self)  # in the queue's heap of this lane


class _Tenant(Generic[T]):
    __slots__ = ("lanes", "name", "node", "order", "queued", "ready", "usage", "usage_at", "weight")

    def __init__(self, name: str, order: int, lanes: int, meter: _Meter) -> None:
        self.name = name
        self.order = order  # when the queue first saw it: breaks ties in the fair order
        self.weight = 1.0
        self.usage = 0.0  # CPU-seconds at usage_at, before decay
        self.usage_at = -math.inf
        self.queued = 0
        self.ready = 0
        self.lanes = [_Lane(self, i, meter) for i in range(lanes)]
        self.node: _Node[_Tenant[T]] = _Node(self)  # in the queue's fair heap


# --- The queue --------------------------------------------------------------------------------


class Candidates(Generic[T]):
    """The eligible jobs of a :class:`JobQueue` in order: what :meth:`JobQueue.candidates` returns.

    An iterator, computed as it goes. The queue must not change while it is in use (push,
    remove, expire, charge...): it then raises ``RuntimeError``, as a dict does. Take what you
    need first, e.g. with ``itertools.islice``.
    """

    __slots__ = ("_jobs", "_now", "_queue", "_skip", "_version")

    def __init__(
        self, queue: JobQueue[T], jobs: Iterator[QueuedJob[T]], skip: set[str], now: float
    ) -> None:
        self._queue = queue
        self._version = queue._version
        self._jobs = jobs
        self._skip = skip
        self._now = now

    def __iter__(self) -> Candidates[T]:
        return self

    def __next__(self) -> QueuedJob[T]:
        if self._queue._version != self._version:
            raise RuntimeError(
                "the job queue changed while its candidates were being walked; take the "
                "candidates you need first (e.g. with itertools.islice), then change the queue"
            )
        for job in self._jobs:
            if job.tenant in self._skip or _expired(job, self._now):
                continue
            return job
        raise StopIteration

    def skip_tenant(self, tenant: str) -> None:
        """Yield no more of ``tenant``'s jobs in this walk (its quota holds it, say)."""
        self._skip.add(tenant)


def _expired(job: QueuedJob[T], now: float) -> bool:
    return job.deadline is not None and job.deadline <= now


def _walk_jobs(heap: _Heap[QueuedJob[T]]) -> Iterator[QueuedJob[T]]:
    return (node.value for node in heap.walk())


class JobQueue(Generic[T]):
    """The job scheduler's queue, in one of four orders; see the module docstring.

    Args:
        discipline: ``fifo``, ``priority``, ``fair`` or ``edf`` (:func:`parse_discipline`).
        aging: under ``priority`` and ``fair``, seconds of waiting that raise a job's
            effective priority by one level; 0 turns aging off.
        half_life: seconds in which a tenant's charged usage halves; ``None`` keeps it whole.

    Raises:
        ValueError: an unknown discipline, ``aging`` negative or not finite, or ``half_life``
            not more than 0.
    """

    def __init__(
        self,
        discipline: Discipline | str = Discipline.FIFO,
        *,
        aging: float = DEFAULT_AGING,
        half_life: float | None = None,
    ) -> None:
        self._discipline = parse_discipline(discipline)
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
        self._half_life = (
            None if half_life is None else _check_positive(half_life, "half_life", "3600")
        )
        self._meter = _Meter()
        leveled = self._discipline in (Discipline.PRIORITY, Discipline.FAIR)
        self._nlanes = len(Priority) if leveled else 1
        # Per lane, the tenants with ready jobs in it, keyed by their first job's key.
        self._lanes: list[_Heap[_Lane[T]]] = [_Heap(self._meter) for _ in range(self._nlanes)]
        self._fair: _Heap[_Tenant[T]] = _Heap(self._meter)  # tenants with ready jobs
        self._delayed: _Heap[QueuedJob[T]] = _Heap(self._meter)  # by (not_before, seq)
        self._deadlines: _Heap[QueuedJob[T]] = _Heap(self._meter)  # by (deadline, seq)
        self._tenants: dict[str, _Tenant[T]] = {}
        self._count = 0
        self._seq = 0
        self._version = 0  # changes with the queue, so a stale Candidates can tell
        self._token = object()  # tells this queue's handles from another queue's

    @property
    def discipline(self) -> Discipline:
        """The order this queue hands out jobs in."""
        return self._discipline

    @property
    def aging(self) -> float:
        """Seconds per level of aging; 0 when aging is off."""
        return self._aging

    @property
    def half_life(self) -> float | None:
        """Seconds in which usage halves, or ``None`` when it does not decay."""
        return self._half_life

    def __len__(self) -> int:
        return self._count

    def __repr__(self) -> str:
        tenants = sum(1 for t in self._tenants.values() if t.queued)
        return (
            f"<JobQueue {self._discipline.value} queued={self._count} "
            f"delayed={len(self._delayed)} tenants={tenants}>"
        )

    def counts(self) -> dict[str, int]:
        """Return how many jobs each tenant has queued (delayed ones included)."""
        return {name: t.queued for name, t in self._tenants.items() if t.queued}

    # --- Pushing and removing -----------------------------------------------------------------

    def push(
        self,
        item: T,
        *,
        now: float,
        tenant: str = DEFAULT_TENANT,
        priority: Priority | int | str = Priority.NORMAL,
        requests: Requests | None = None,
        runtime: float | None = None,
        deadline: float | None = None,
        not_before: float | None = None,
        cost: float | None = None,
    ) -> QueuedJob[T]:
        """Queue ``item`` and return its handle.

        Args:
            now: the current ``time.monotonic()``.
            tenant: who the job belongs to.
            priority: anything :func:`~procvisor.policy.taskqueue.parse_priority` accepts.
            requests: what it asks for; ``Requests()`` (1 CPU) by default.
            runtime: the longest it runs (its timeout), in seconds; backfill relies on it.
            deadline: the latest time it may start, on the clock of ``now``. One already passed
                is accepted: the next :meth:`expire` reports the job.
            not_before: when it becomes eligible, on the clock of ``now``.
            cost: its estimated CPU-seconds, for the ``fair`` order within one walk; by default
                ``requests.cpu * runtime``, or ``requests.cpu`` without a runtime.

        Raises:
            ValueError: a bad priority or tenant, a time that is not finite, ``runtime`` not
                more than 0, or ``cost`` negative.
        """
        level = parse_priority(priority)
        _check_time(now, "now")
        if not isinstance(tenant, str) or not tenant:
            raise ValueError(f"tenant: {tenant!r} must be a non-empty string")
        if requests is None:
            requests = Requests()
        elif not isinstance(requests, Requests):
            raise ValueError(f"requests: {requests!r} must be a Requests; see parse_requests()")
        if runtime is not None:
            runtime = _check_positive(runtime, "runtime", "60 (seconds)")
        if deadline is not None:
            deadline = _check_time(deadline, "deadline")
        if not_before is not None:
            not_before = _check_time(not_before, "not_before")
        if cost is None:
            cost = requests.cpu * (1.0 if runtime is None else runtime)
        elif isinstance(cost, bool) or not isinstance(cost, int | float) or not cost >= 0:
            raise ValueError(f"cost: {cost!r} must be a number of CPU-seconds, 0 or more")
        elif not math.isfinite(cost):
            raise ValueError(f"cost: {cost!r} must be finite")
        record = self._tenant(tenant)
        job = QueuedJob(
            self._token,
            item,
            tenant=tenant,
            priority=level,
            requests=requests,
            runtime=runtime,
            cost=float(cost),
            submitted=now,
            not_before=not_before,
            deadline=deadline,
            seq=self._seq,
        )
        self._seq += 1
        if not_before is not None and not_before > now:
            job._delayed = True
            job._node.key = (not_before, job.seq)
            self._delayed.push(job._node)
        else:
            self._enter(job)
        if deadline is not None:
            job._deadline_node = _Node(job, (deadline, job.seq))
            self._deadlines.push(job._deadline_node)
        self._count += 1
        record.queued += 1
        self._version += 1
        return job

    def remove(self, job: QueuedJob[T]) -> bool:
        """Take a job out of the queue: to start it, or because it was cancelled.

        Returns:
            ``True`` if it was removed, ``False`` if it had already left the queue.

        Raises:
            ValueError: ``job`` is a handle from another queue.
        """
        if not isinstance(job, QueuedJob) or job._owner is not self._token:
            raise ValueError(f"job: {job!r} is not a handle from this queue")
        if not job._queued:
            return False
        self._leave(job)
        return True

    def expire(self, now: float) -> list[QueuedJob[T]]:
        """Remove and return the jobs whose deadline is ``<= now``, in deadline order.

        Delayed jobs are included: a job due after its deadline expires at its deadline.

        Raises:
            ValueError: ``now`` is not a finite number.
        """
        _check_time(now, "now")
        expired: list[QueuedJob[T]] = []
        while (node := self._deadlines.peek()) is not None and node.key[0] <= now:
            self._leave(node.value)
            expired.append(node.value)
        return expired

    def pop(self, now: float) -> tuple[QueuedJob[T] | None, list[QueuedJob[T]]]:
        """Take the first candidate out of the queue, and the jobs that expired.

        The shortcut for a caller that starts one job at a time without admission.

        Returns:
            The first candidate (``None`` when there is none) and what :meth:`expire` returned.

        Raises:
            ValueError: ``now`` is not a finite number.
        """
        expired = self.expire(now)
        job = next(self.candidates(now), None)
        if job is not None:
            self._leave(job)
        return job, expired

    # --- Order --------------------------------------------------------------------------------

    def candidates(self, now: float) -> Candidates[T]:
        """Return the eligible jobs in the discipline's order, computed as they are taken.

        Eligible: due (``not_before <= now``) and not expired. Call :meth:`expire` first, so
        that expired jobs are reported. The jobs stay queued; :meth:`remove` those you start,
        after the walk. See :class:`Candidates`.

        Raises:
            ValueError: ``now`` is not a finite number.
        """
        _check_time(now, "now")
        self._promote(now)
        skip: set[str] = set()
        jobs: Iterator[QueuedJob[T]]
        if self._discipline is Discipline.FAIR:
            jobs = self._fair_walk(now, skip)
        elif self._discipline is Discipline.PRIORITY:
            jobs = heapq.merge(
                *(self._lane_walk(lane, skip) for lane in reversed(range(self._nlanes))),
                key=self._rank(now),
            )
        else:
            jobs = self._lane_walk(0, skip)
        return Candidates(self, jobs, skip, now)

    def effective_priority(self, job: QueuedJob[T], now: float) -> Priority:
        """Return ``job``'s priority at ``now`` after aging since its ready time.

        This is the rule of :meth:`TaskQueue.effective_priority
        <procvisor.policy.taskqueue.TaskQueue.effective_priority>`.
        """
        return effective_priority(job.priority, job.ready_at, now, self._aging)

    def next_due(self, now: float) -> float | None:
        """Return the earliest ``not_before`` after ``now`` of a queued job, or ``None``.

        Arm a timer for it: the job becomes a candidate then.

        Raises:
            ValueError: ``now`` is not a finite number.
        """
        _check_time(now, "now")
        self._promote(now)
        node = self._delayed.peek()
        return None if node is None else node.key[0]

    def next_deadline(self) -> float | None:
        """Return the earliest deadline of a queued job, or ``None``; :meth:`expire` it then."""
        node = self._deadlines.peek()
        return None if node is None else node.key[0]

    # --- Fair share ---------------------------------------------------------------------------

    def charge(self, tenant: str, cpu_seconds: float, *, now: float) -> None:
        """Add CPU-seconds used by ``tenant``'s jobs to its usage.

        Charge as the jobs run (from sampled CPU times) or when they end; the queue remembers
        a tenant's usage when it has nothing queued.

        Raises:
            ValueError: ``cpu_seconds`` is negative or not finite, or ``now`` not finite.
        """
        _check_time(now, "now")
        if (
            isinstance(cpu_seconds, bool)
            or not isinstance(cpu_seconds, int | float)
            or not math.isfinite(cpu_seconds)
            or cpu_seconds < 0
        ):
            raise ValueError(f"cpu_seconds: {cpu_seconds!r} must be a finite number, 0 or more")
        record = self._tenant(tenant)
        record.usage = self._usage(record, now) + cpu_seconds
        record.usage_at = max(record.usage_at, now)
        self._reorder(record)

    def usage(self, tenant: str, now: float) -> float:
        """Return ``tenant``'s charged CPU-seconds at ``now``, after decay."""
        _check_time(now, "now")
        record = self._tenants.get(tenant)
        return 0.0 if record is None else self._usage(record, now)

    def set_weight(self, tenant: str, weight: float) -> None:
        """Set ``tenant``'s fair-share weight; only the ratios between weights matter.

        Raises:
            ValueError: ``weight`` is not a finite number more than 0.
        """
        weight = _check_positive(weight, "weight", "1 or 2.5")
        record = self._tenant(tenant)
        record.weight = weight
        self._reorder(record)

    def weight(self, tenant: str) -> float:
        """Return ``tenant``'s fair-share weight (1 unless set)."""
        record = self._tenants.get(tenant)
        return 1.0 if record is None else record.weight

    # --- Internals ----------------------------------------------------------------------------

    def _tenant(self, name: str) -> _Tenant[T]:
        record = self._tenants.get(name)
        if record is None:
            if not isinstance(name, str) or not name:
                raise ValueError(f"tenant: {name!r} must be a non-empty string")
            record = _Tenant(name, len(self._tenants), self._nlanes, self._meter)
            self._tenants[name] = record
        return record

    def _lane_key(self, job: QueuedJob[T]) -> _Key:
        if self._discipline is Discipline.EDF:
            deadline = math.inf if job.deadline is None else job.deadline
            return (deadline, job.ready_at, job.seq)
        return (job.ready_at, job.seq)

    def _enter(self, job: QueuedJob[T]) -> None:
        """Put a due job into its tenant's lane."""
        record = self._tenants[job.tenant]
        lane = record.lanes[job.priority if self._nlanes > 1 else 0]
        job._node.key = self._lane_key(job)
        lane.heap.push(job._node)
        self._lane_changed(lane)
        record.ready += 1
        if self._discipline is Discipline.FAIR and record.ready == 1:
            record.node.key = self._fair_key(record)
            self._fair.push(record.node)

    def _leave(self, job: QueuedJob[T]) -> None:
        record = self._tenants[job.tenant]
        if job._delayed:
            self._delayed.remove(job._node)
        else:
            lane = record.lanes[job.priority if self._nlanes > 1 else 0]
            lane.heap.remove(job._node)
            self._lane_changed(lane)
            record.ready -= 1
            if self._discipline is Discipline.FAIR and record.ready == 0:
                self._fair.remove(record.node)
        if job._deadline_node is not None and job._deadline_node.heap is not None:
            self._deadlines.remove(job._deadline_node)
        job._queued = False
        self._count -= 1
        record.queued -= 1
        self._version += 1

    def _lane_changed(self, lane: _Lane[T]) -> None:
        """Keep the tenant's place in the lane's heap of tenants at its first job."""
        if self._discipline is Discipline.FAIR:
            return
        tenants = self._lanes[lane.index]
        head = lane.heap.peek()
        node = lane.node
        if head is None:
            if node.heap is not None:
                tenants.remove(node)
        elif node.heap is None:
            node.key = head.key
            tenants.push(node)
        elif node.key != head.key:
            node.key = head.key
            tenants.update(node)

    def _promote(self, now: float) -> None:
        """Move the delayed jobs that are due into their lanes."""
        moved = False
        while (node := self._delayed.peek()) is not None and node.key[0] <= now:
            self._delayed.remove(node)
            node.value._delayed = False
            self._enter(node.value)
            moved = True
        if moved:
            self._version += 1

    def _usage(self, record: _Tenant[T], now: float) -> float:
        if self._half_life is None or record.usage == 0:
            return record.usage
        elapsed = max(0.0, now - record.usage_at)
        return record.usage * math.exp2(-elapsed / self._half_life)

    def _fair_key(self, record: _Tenant[T]) -> _Key:
        # usage(now) / weight = usage / weight * 2 ** -((now - usage_at) / half_life), so the
        # order by log2(usage / weight) + usage_at / half_life is the order at every ``now``.
        share = record.usage / record.weight
        if self._half_life is not None:
            share = (
                -math.inf if share == 0 else math.log2(share) + record.usage_at / self._half_life
            )
        return (share, record.order)

    def _reorder(self, record: _Tenant[T]) -> None:
        if record.node.heap is not None:
            record.node.key = self._fair_key(record)
            self._fair.update(record.node)
        self._version += 1

    def _rank(self, now: float) -> Callable[[QueuedJob[T]], tuple[int, float, int]]:
        def rank(job: QueuedJob[T]) -> tuple[int, float, int]:
            return (-self.effective_priority(job, now), job.ready_at, job.seq)

        return rank

    def _lane_walk(self, index: int, skip: set[str]) -> Iterator[QueuedJob[T]]:
        """Yield one lane's jobs of every tenant, in lane order.

        A k-way merge of the tenants' heaps that opens a tenant only when its first job comes
        up: the frontier holds each open tenant's next job, and the first job of the next
        tenant not opened yet (the lane's heap of tenants, walked in order).
        """
        tenants = self._lanes[index].walk()
        # (key, lane, node, stream): ``node`` is the job with that key, or None for a tenant
        # not opened yet, whose first job has that key. Keys are unique, so ties never reach
        # the lane.
        frontier: list[
            tuple[_Key, _Lane[T], _Node[QueuedJob[T]] | None, Iterator[_Node[QueuedJob[T]]]]
        ] = []

        def open_next() -> None:
            for node in tenants:
                lane = node.value
                if lane.tenant.name not in skip:
                    heapq.heappush(frontier, (node.key, lane, None, lane.heap.walk()))
                    return

        open_next()
        while frontier:
            _, lane, job_node, stream = heapq.heappop(frontier)
            self._meter.steps += 1
            if job_node is None:
                open_next()
            if lane.tenant.name in skip:
                continue
            if job_node is None:
                job_node = next(stream)
            yield job_node.value
            following = next(stream, None)
            if following is not None:
                heapq.heappush(frontier, (following.key, lane, following, stream))

    def _fair_walk(self, now: float, skip: set[str]) -> Iterator[QueuedJob[T]]:
        """Yield jobs tenant by tenant, the one with the lowest usage / weight first.

        Tenants are opened in the order of the fair heap; an open tenant's share grows by the
        cost of each job it yields, and it goes back into the frontier with it.
        """
        tenants = self._fair.walk()
        frontier: list[tuple[float, int, _Tenant[T], Iterator[QueuedJob[T]] | None]] = []
        spent: dict[str, float] = {}

        def open_next() -> None:
            for node in tenants:
                record = node.value
                if record.name not in skip:
                    share = self._usage(record, now) / record.weight
                    heapq.heappush(frontier, (share, record.order, record, None))
                    return

        open_next()
        while frontier:
            _, order, record, jobs = heapq.heappop(frontier)
            self._meter.steps += 1
            if jobs is None:
                open_next()
                jobs = self._tenant_walk(record, now)
            if record.name in skip:
                continue
            job = next(jobs, None)
            if job is None:
                continue
            yield job
            spent[record.name] = spent.get(record.name, 0.0) + job.cost
            share = (self._usage(record, now) + spent[record.name]) / record.weight
            heapq.heappush(frontier, (share, order, record, jobs))

    def _tenant_walk(self, record: _Tenant[T], now: float) -> Iterator[QueuedJob[T]]:
        """Yield one tenant's unexpired ready jobs in priority order (with aging)."""
        lanes = (_walk_jobs(lane.heap) for lane in reversed(record.lanes))
        for job in heapq.merge(*lanes, key=self._rank(now)):
            if not _expired(job, now):
                yield job
