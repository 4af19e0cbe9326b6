"""Which queued jobs start now, which running jobs to preempt, and what a job may ask for.

The jobs layer keeps the queue (:class:`~procvisor.policy.jobqueue.JobQueue`) and the running
set. Whenever something changes (a job is submitted or ends, a timer fires) it calls
:func:`decide_starts` with the queue's candidates in order and starts what the returned
:class:`StartPlan` lists; for a high-priority job left waiting it may ask
:func:`decide_preemption` which running jobs to stop. Nothing here reads a clock: ``now`` is
passed in.

**Resources.** A job asks for :class:`Requests`: ``cpu`` (cores, a float), ``memory`` (bytes)
and any named resources (``gpu=1``). A node offers a :class:`Capacity` of the same three and
``max_running``, the most jobs at once: every running job takes one of those. A named resource
the node does not list is one it has none of. A tenant may have a :class:`Quota`: the most its
running jobs may take together (``max_running``, ``cpu``, ``memory``, named resources; a limit
left out is no limit), and its ``weight`` for fair share.

**Submission.** :func:`check_request` refuses a job that could never start, naming the
resource: one that asks for more than the whole node, a resource the node does not have, or more
than its tenant's whole quota. :func:`parse_requests` and :func:`parse_timeout` turn what users
write into values, with errors naming the field.

**Starting jobs.** :func:`decide_starts` walks the candidates in the queue's order:

1. *Quota.* A job that would take its tenant past a quota limit is held, and its tenant's later
   jobs are passed over in this round, so a tenant's own small jobs cannot overtake its big one
   under the quota. A held tenant never blocks anyone else: the walk goes on as if its jobs were
   not queued (and a candidate iterator with a ``skip_tenant`` method, as
   :meth:`JobQueue.candidates <procvisor.policy.jobqueue.JobQueue.candidates>` returns, does
   not even yield them).
2. *In order.* Until some job does not fit, each job that fits in what is free now starts.
3. *Reservation.* The first job that does not fit now is the *head*. It gets a reservation: its
   start ``S`` is the earliest time at which enough is free for it, counting every running job
   (those started in this round too) as ending at ``started + runtime``. A running job without a
   runtime is counted as able to end at any moment, that is at ``now``: the cautious choice for
   the head, since nothing may then backfill into what the head waits for. ``S`` is *certain*
   when the head fits at ``S`` without counting any job that has no runtime. ``spare`` is what
   is free at ``S`` beyond what the head takes (counting only jobs with a runtime when ``S`` is
   certain).
4. *Backfill (EASY).* Every later job that is not held and fits now starts if either

   a. it has a runtime and ``now + runtime <= S``: it is over before the head starts; or
   b. it fits in ``spare``: it then takes that part of ``spare``, so even if it runs forever
      the head still finds its share free at ``S``.

   A job without a runtime can only backfill by (b). Other jobs wait.

So a backfilled job never delays the head: whatever was backfilled, the head can start at
``S`` at the latest if ``S`` is certain (and every running job ends by its runtime), and
otherwise as soon as ``S`` has come and the jobs without a runtime that ``S`` counted on have
ended. Small jobs are not blocked behind a
large one (they run beside it or before it), and the large one is not starved by them: it keeps
its reservation for as long as the queue's discipline keeps it first (FIFO does; with priorities,
aging brings every job to the front). Runtimes are the jobs' timeouts, which the jobs layer
enforces; an estimate that is exceeded can delay the head by as much. Only the head is reserved
for (EASY backfill, not conservative backfill): later jobs that do not fit may be overtaken.

A job that no longer fits the node or its tenant's quota at all (the capacity or the quota was
lowered after it was submitted) is never made the head: it is reported in
:attr:`StartPlan.too_large` for the jobs layer to fail. At most ``max_scan`` candidates are
looked at, so a decision costs about the same however many jobs are queued.

**Preemption.** :func:`decide_preemption` picks running jobs to stop so that a waiting job of
higher priority fits: only preemptible jobs of strictly lower priority, preferring the lowest
priority and, among equals, the most recently started; and no more than needed (no job in the
chosen set can be spared). It returns ``None`` when the job fits already, or when stopping every
eligible job would still not make it fit: a job is never preempted for nothing. ``requeue`` stops
the victims and queues them again, releasing everything they hold; ``suspend`` stops them with
SIGSTOP, which releases their CPU and their running slot only: a stopped process keeps its memory
and devices, so suspending cannot make room in those. Quotas are not part of preemption: call it
for a job that :func:`decide_starts` held back for lack of room on the node, not for one held
by its tenant's quota.
"""

from __future__ import annotations

import math
import re
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from procvisor.policy.taskqueue import Priority, parse_priority
from procvisor.policy.units import (
    DURATION_FORMS,
    format_size,
    parse_duration,
    parse_size,
)

__all__ = [
    "DEFAULT_MAX_SCAN",
    "Candidate",
    "Capacity",
    "PreemptMode",
    "Preemption",
    "Quota",
    "Requests",
    "Reservation",
    "RunningJob",
    "SkipsTenants",
    "StartPlan",
    "check_request",
    "decide_preemption",
    "decide_starts",
    "fits",
    "parse_requests",
    "parse_timeout",
]

C = TypeVar("C", bound="Candidate")
K = TypeVar("K", bound=Hashable)

DEFAULT_MAX_SCAN = 500
"""How many candidates :func:`decide_starts` looks at, at most, in one decision."""

CPU = "cpu"
MEMORY = "memory"
MAX_RUNNING = "max_running"
_RESERVED = (CPU, MEMORY, MAX_RUNNING)
_EPS = 1e-9  # slack for sums of float CPU shares, so that 10 x 0.1 fits in 1 core
_NAME_RE = re.compile(r"^[a-z][a-z0-9_./-]*$")
_REQUEST_FORMS = "name=amount items such as 'cpu=2', 'memory=512M', 'gpu=1'"

_Vector = dict[str, float]


# --- Values -----------------------------------------------------------------------------------


def _check_number(value: object, name: str, *, minimum: float, strict: bool) -> float:
    """Return ``value`` as a float, refusing bools, non-numbers and non-finite values."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name}: {value!r} must be a finite number")
    if value < minimum or (strict and value == minimum):
        bound = "more than" if strict else "at least"
        raise ValueError(f"{name}: {value!r} must be {bound} {minimum:g}")
    return float(value)


def _check_whole(value: object, name: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: {value!r} must be a whole number of {minimum} or more")
    return value


def _check_resources(value: Mapping[str, float], name: str, *, strict: bool) -> Mapping[str, float]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{name}: {value!r} must be a mapping of resource names to amounts")
    checked: dict[str, float] = {}
    for key in sorted(value):
        if not isinstance(key, str) or not _NAME_RE.match(key):
            raise ValueError(
                f"{name}: {key!r} is not a resource name; use lower-case letters, digits and "
                "'_', '.', '/', '-', starting with a letter, e.g. 'gpu'"
            )
        if key in _RESERVED:
            raise ValueError(
                f"{name}: {key!r} is not a named resource; give {key} in its own field"
            )
        checked[key] = _check_number(value[key], f"{name}.{key}", minimum=0.0, strict=strict)
    return MappingProxyType(checked)


def _show(key: str, amount: float) -> str:
    return format_size(int(amount)) if key == MEMORY else f"{amount:g}"


@dataclass(frozen=True, slots=True)
class Requests:
    """What one job asks for while it runs.

    Attributes:
        cpu: cores, a fraction allowed (``0.5``). 0 means the job is not counted against CPU,
            which :func:`parse_requests` does not accept from users.
        memory: bytes.
        resources: other named amounts, e.g. ``{"gpu": 1}``; names are lower-case.

    Raises:
        ValueError: a value is negative or not finite, ``memory`` is not a whole number, or a
            resource name is malformed or one of ``cpu``, ``memory``, ``max_running``.
    """

    cpu: float = 1.0
    memory: int = 0
    resources: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "cpu", _check_number(self.cpu, "requests.cpu", minimum=0.0, strict=False)
        )
        _check_whole(self.memory, "requests.memory", minimum=0)
        resources = _check_resources(self.resources, "requests.resources", strict=True)
        object.__setattr__(self, "resources", resources)

    def __hash__(self) -> int:
        return hash((self.cpu, self.memory, tuple(self.resources.items())))

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v:g}" for k, v in self.resources.items())
        return f"Requests(cpu={self.cpu:g}, memory={format_size(self.memory)}{extra})"


@dataclass(frozen=True, slots=True)
class Capacity:
    """What one node offers to jobs.

    Attributes:
        cpu: cores.
        memory: bytes, or ``None`` to not count memory.
        resources: other named amounts the node has, e.g. ``{"gpu": 2}``; a resource it does
            not list is one it has none of.
        max_running: the most jobs running at once, or ``None`` for no such limit.

    Raises:
        ValueError: ``cpu``, ``memory`` or ``max_running`` is not more than 0, or a value is
            not finite or of the wrong kind.
    """

    cpu: float
    memory: int | None = None
    resources: Mapping[str, float] = field(default_factory=dict)
    max_running: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "cpu", _check_number(self.cpu, "capacity.cpu", minimum=0.0, strict=True)
        )
        if self.memory is not None:
            _check_whole(self.memory, "capacity.memory", minimum=1)
        if self.max_running is not None:
            _check_whole(self.max_running, "capacity.max_running", minimum=1)
        resources = _check_resources(self.resources, "capacity.resources", strict=False)
        object.__setattr__(self, "resources", resources)

    def __hash__(self) -> int:
        return hash((self.cpu, self.memory, tuple(self.resources.items()), self.max_running))


@dataclass(frozen=True, slots=True)
class Quota:
    """The most one tenant's running jobs may take together, and its fair-share weight.

    A limit left at ``None`` (or a resource left out) is no limit.

    Attributes:
        max_running: jobs running at once.
        cpu: cores.
        memory: bytes.
        resources: named amounts, e.g. ``{"gpu": 1}``.
        weight: the tenant's share under the ``fair`` discipline, relative to the others'
            (pass it to :meth:`JobQueue.set_weight
            <procvisor.policy.jobqueue.JobQueue.set_weight>`).

    Raises:
        ValueError: a limit or the weight is not more than 0 (a resource limit may be 0), or a
            value is not finite or of the wrong kind.
    """

    max_running: int | None = None
    cpu: float | None = None
    memory: int | None = None
    resources: Mapping[str, float] = field(default_factory=dict)
    weight: float = 1.0

    def __post_init__(self) -> None:
        if self.max_running is not None:
            _check_whole(self.max_running, "quota.max_running", minimum=1)
        if self.cpu is not None:
            cpu = _check_number(self.cpu, "quota.cpu", minimum=0.0, strict=True)
            object.__setattr__(self, "cpu", cpu)
        if self.memory is not None:
            _check_whole(self.memory, "quota.memory", minimum=1)
        weight = _check_number(self.weight, "quota.weight", minimum=0.0, strict=True)
        object.__setattr__(self, "weight", weight)
        resources = _check_resources(self.resources, "quota.resources", strict=False)
        object.__setattr__(self, "resources", resources)

    def __hash__(self) -> int:
        return hash(
            (self.max_running, self.cpu, self.memory, tuple(self.resources.items()), self.weight)
        )


@dataclass(frozen=True)
class RunningJob(Generic[K]):
    """A job that holds resources now (running, or scheduled and about to run).

    Attributes:
        key: the caller's id for the job; :class:`Preemption` hands the same objects back.
        tenant: who the job belongs to.
        requests: what it asked for.
        started: the ``now`` it started at.
        runtime: the longest it may run (its timeout), or ``None`` if unbounded.
        priority: anything :func:`~procvisor.policy.taskqueue.parse_priority` accepts.
        preemptible: whether :func:`decide_preemption` may choose it.
        suspended: it was preempted by ``suspend`` and is stopped: it holds its memory and
            named resources but no CPU and no running slot, has no known end, and is not
            chosen for preemption again.

    Raises:
        ValueError: a bad priority, ``started`` not finite, or ``runtime`` not more than 0.
    """

    key: K
    tenant: str
    requests: Requests
    started: float
    runtime: float | None = None
    priority: Priority = Priority.NORMAL
    preemptible: bool = False
    suspended: bool = False

    def __post_init__(self) -> None:
        _check_number(self.started, "started", minimum=-math.inf, strict=False)
        if self.runtime is not None:
            _check_number(self.runtime, "runtime", minimum=0.0, strict=True)
        object.__setattr__(self, "priority", parse_priority(self.priority))
        if not isinstance(self.requests, Requests):
            raise ValueError(f"requests: {self.requests!r} must be a Requests")

    @property
    def end(self) -> float | None:
        """When the job is over at the latest (``started + runtime``), or ``None``.

        ``None`` too while it is suspended.
        """
        if self.runtime is None or self.suspended:
            return None
        return self.started + self.runtime


# --- Parsing and submission -------------------------------------------------------------------


def parse_requests(
    spec: Requests | str | Iterable[str] | Mapping[str, float | str],
    *,
    field: str = "requests",
) -> Requests:
    """Return the :class:`Requests` that ``spec`` describes.

    ``spec`` is ``"cpu=2,memory=1G,gpu=1"``, a list of such items (``["cpu=2", "gpu=1"]``, as
    repeated ``--request`` options give), or a mapping (``{"cpu": 2, "memory": "1G"}``, as a
    TOML table gives). ``cpu`` must be more than 0 and defaults to 1; ``memory`` is anything
    :func:`~procvisor.policy.units.parse_size` accepts and defaults to 0; every other name is a
    resource whose amount must be more than 0.

    Args:
        field: the name of the setting, for error messages (``requests.cpu: ...``).

    Raises:
        ValueError: an item is not ``name=amount``, a name is given twice or is not a resource
            name, or an amount is out of range; the message names the field.
    """
    if isinstance(spec, Requests):
        return spec
    items: list[tuple[str, object]] = []
    if isinstance(spec, Mapping):
        items = [(str(k), v) for k, v in spec.items()]
    else:
        parts = [p for p in spec.split(",") if p.strip()] if isinstance(spec, str) else spec
        for part in parts:
            if not isinstance(part, str) or "=" not in part:
                raise ValueError(f"{field}: {part!r} is not name=amount; use {_REQUEST_FORMS}")
            key, _, text = part.partition("=")
            items.append((key, text.strip()))
    cpu: float = 1.0
    memory = 0
    resources: dict[str, float] = {}
    seen: set[str] = set()
    for raw_name, amount in items:
        name = raw_name.strip().lower()
        where = f"{field}.{name}"
        if name in seen:
            raise ValueError(f"{where}: given twice; give each request once")
        seen.add(name)
        if isinstance(amount, bool) or not isinstance(amount, int | float | str):
            raise ValueError(f"{where}: {amount!r} is not an amount; use {_REQUEST_FORMS}")
        if name == MEMORY:
            memory = parse_size(amount, field=where)
        elif name == MAX_RUNNING:
            raise ValueError(f"{where}: is a limit of the node or a quota, not a request")
        elif not _NAME_RE.match(name):
            raise ValueError(f"{field}: {raw_name!r} is not a resource name; use {_REQUEST_FORMS}")
        else:
            value = _parse_amount(amount)
            if value is None:
                what = "cores, e.g. cpu=0.5 or cpu=2" if name == CPU else f"e.g. {name}=1"
                raise ValueError(f"{where}: {amount!r} must be a number more than 0 ({what})")
            if name == CPU:
                cpu = value
            else:
                resources[name] = value
    return Requests(cpu=cpu, memory=memory, resources=resources)


def _parse_amount(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if isinstance(value, int | float) and math.isfinite(value) and value > 0:
        return float(value)
    return None


def parse_timeout(value: float | str, *, field: str = "timeout") -> float:
    """Return a timeout in seconds; it must be more than 0.

    Accepts anything :func:`~procvisor.policy.units.parse_duration` does (``30``, ``"1m30s"``).

    Raises:
        ValueError: the value is not a duration or is 0, naming ``field``.
    """
    seconds = parse_duration(value, field=field)
    if seconds <= 0:
        raise ValueError(
            f"{field}: {value!r} must be more than 0; leave the timeout out for none, or use "
            f"{DURATION_FORMS}"
        )
    return seconds


def _demand(requests: Requests) -> _Vector:
    vector = {CPU: requests.cpu, MEMORY: float(requests.memory), MAX_RUNNING: 1.0}
    vector.update(requests.resources)
    return vector


def _holds(job: RunningJob[Any]) -> _Vector:
    vector = _demand(job.requests)
    if job.suspended:
        vector[CPU] = vector[MAX_RUNNING] = 0.0
    return vector


def _node_limits(capacity: Capacity) -> _Vector:
    limits = {
        CPU: capacity.cpu,
        MEMORY: math.inf if capacity.memory is None else float(capacity.memory),
        MAX_RUNNING: math.inf if capacity.max_running is None else float(capacity.max_running),
    }
    limits.update(capacity.resources)
    return limits


def _quota_limits(quota: Quota) -> _Vector:
    limits = {
        k: float(v)
        for k, v in ((CPU, quota.cpu), (MEMORY, quota.memory), (MAX_RUNNING, quota.max_running))
        if v is not None
    }
    limits.update(quota.resources)
    return limits


def _add(into: _Vector, vector: Mapping[str, float], sign: float = 1.0) -> None:
    for key, amount in vector.items():
        into[key] = into.get(key, 0.0) + sign * amount


def _fits(demand: Mapping[str, float], free: Mapping[str, float]) -> bool:
    return all(need <= free.get(key, 0.0) + _EPS for key, need in demand.items() if need > 0)


def _too_large(demand: Mapping[str, float], capacity: Mapping[str, float], field: str) -> str:
    """Say why ``demand`` could never fit the node, or return ``""``."""
    for key, need in demand.items():
        if need <= 0:
            continue
        if key not in capacity:
            offered = ", ".join(k for k, v in capacity.items() if v > 0 and k != MAX_RUNNING)
            return f"{field}.{key}: the node has no {key!r}; it offers {offered}"
        if need > capacity[key] + _EPS:
            limit = _show(key, capacity[key])
            return (
                f"{field}.{key}: {_show(key, need)} is more than the node's capacity of {limit}; "
                f"ask for at most {limit}"
            )
    return ""


def _over_quota(demand: Mapping[str, float], quota: Mapping[str, float], field: str) -> str:
    """Say why ``demand`` could never fit the quota, or return ``""``."""
    for key, limit in quota.items():
        need = demand.get(key, 0.0)
        if need > limit + _EPS:
            return (
                f"{field}.{key}: {_show(key, need)} is more than the tenant's quota of "
                f"{_show(key, limit)}; ask for at most that, or raise the quota"
            )
    return ""


def _quota_hold(demand: Mapping[str, float], used: Mapping[str, float], quota: _Vector) -> str:
    """Say which quota limit the tenant's running jobs plus ``demand`` would pass, or ``""``."""
    for key, limit in quota.items():
        need = demand.get(key, 0.0)
        in_use = used.get(key, 0.0)
        if need > 0 and in_use + need > limit + _EPS:
            if key == MAX_RUNNING:
                return f"quota.max_running: {in_use:g} of {limit:g} jobs running"
            return (
                f"quota.{key}: {_show(key, in_use)} of {_show(key, limit)} in use, and the "
                f"next job asks for {_show(key, need)}"
            )
    return ""


def check_request(
    requests: Requests,
    capacity: Capacity,
    quota: Quota | None = None,
    *,
    field: str = "requests",
) -> None:
    """Refuse at submission a job that could never start on this node or under its quota.

    Raises:
        ValueError: the job asks for more of a resource than the node has in all (or than its
            tenant's whole quota), or for a resource the node does not have. The message
            names the resource (``requests.gpu: ...``) and what would be accepted.
    """
    demand = _demand(requests)
    reason = _too_large(demand, _node_limits(capacity), field)
    if not reason and quota is not None:
        reason = _over_quota(demand, _quota_limits(quota), field)
    if reason:
        raise ValueError(reason)


def fits(requests: Requests, capacity: Capacity, in_use: Iterable[Requests] = ()) -> bool:
    """Return whether a job asking for ``requests`` fits beside jobs holding ``in_use`` now.

    Every job, including this one, takes one of the node's ``max_running``.
    """
    free = _node_limits(capacity)
    for held in in_use:
        _add(free, _demand(held), -1.0)
    return _fits(_demand(requests), free)


# --- Deciding what starts ---------------------------------------------------------------------


class Candidate(Protocol):
    """What :func:`decide_starts` reads of a queued job.

    :class:`~procvisor.policy.jobqueue.QueuedJob` has these; so may any object of the caller's.
    """

    @property
    def tenant(self) -> str:
        """Who the job belongs to."""
        ...

    @property
    def requests(self) -> Requests:
        """What the job asks for."""
        ...

    @property
    def runtime(self) -> float | None:
        """The longest the job runs (its timeout), or ``None`` if unbounded."""
        ...


@runtime_checkable
class SkipsTenants(Protocol):
    """A candidate iterator that can stop yielding one tenant's jobs mid-walk."""

    def skip_tenant(self, tenant: str) -> None:
        """Yield no more of ``tenant``'s jobs."""
        ...


@dataclass(frozen=True)
class Reservation(Generic[C]):
    """The head job's reservation in a :class:`StartPlan`; see the module docstring.

    Attributes:
        job: the head: the first candidate that did not fit.
        start: the time ``S`` by which it can start at the latest, if every running job ends by
            its runtime; nothing started by backfill is still running then unless it fits
            beside the head.
        spare: what remains free at ``start`` beyond the head's share, after backfill, keyed by
            ``cpu``, ``memory``, ``max_running`` and resource names. When ``certain``, it
            counts only what jobs with a runtime release.
        certain: ``True`` when the head can start at ``start`` even if no job without a
            runtime ends by then. ``False`` when ``start`` counts on such jobs ending early:
            the head then waits for those as well, and may start later than ``start``.
    """

    job: C
    start: float
    spare: Mapping[str, float]
    certain: bool


@dataclass(frozen=True)
class StartPlan(Generic[C]):
    """The answer of :func:`decide_starts`.

    Attributes:
        start: the jobs to start now, in candidate order.
        reservation: the head job's reservation, or ``None`` when no looked-at job was left
            waiting for room.
        held: tenants held by their quota in this round, each with the limit that held it
            (``"quota.max_running: 2 of 2 jobs running"``).
        too_large: jobs that could never fit the node or their tenant's quota, with the reason;
            fail them (their limits were lowered after they were submitted).
        scanned: how many candidates were looked at.
    """

    start: tuple[C, ...]
    reservation: Reservation[C] | None
    held: Mapping[str, str]
    too_large: tuple[tuple[C, str], ...]
    scanned: int


def _release_time(end: float | None, now: float) -> float:
    # Without a runtime a job may end at any moment; one past its runtime ends any moment too.
    return now if end is None else max(end, now)


def _reserve(
    demand: _Vector,
    free: _Vector,
    releases: list[tuple[float | None, _Vector]],
    now: float,
) -> tuple[float, _Vector, bool]:
    """Return the head's start ``S``, what is spare at ``S``, and whether ``S`` is certain."""
    events = sorted(releases, key=lambda e: _release_time(e[0], now))
    avail = dict(free)
    known = dict(free)  # counting only jobs with a known end
    start = now
    for end, held in events:
        at = _release_time(end, now)
        if at > start:
            if _fits(demand, avail):
                break
            start = at
        # Every release up to ``start`` is counted, so that ``spare`` includes them all.
        _add(avail, held)
        if end is not None:
            _add(known, held)
    certain = _fits(demand, known)
    # When ``start`` holds without counting jobs that have no runtime, so must ``spare``:
    # otherwise a job backfilled beside the head could take what only such a job frees.
    spare = dict(known if certain else avail)
    _add(spare, demand, -1.0)
    return start, spare, certain


def decide_starts(
    candidates: Iterable[C],
    running: Iterable[RunningJob[Any]],
    capacity: Capacity,
    *,
    now: float,
    quotas: Mapping[str, Quota] | None = None,
    max_scan: int = DEFAULT_MAX_SCAN,
) -> StartPlan[C]:
    """Decide which queued jobs start now: in order, then by EASY backfill.

    See the module docstring for the rules.

    Args:
        candidates: eligible queued jobs in the discipline's order, e.g.
            ``queue.candidates(now)`` after ``queue.expire(now)``. If the iterable has a
            ``skip_tenant`` method, it is told about every tenant held by its quota.
        running: every job holding resources now: running, scheduled, or suspended (with
            ``suspended=True``).
        capacity: what the node offers.
        now: the current ``time.monotonic()``, on the clock of the jobs' ``started``.
        quotas: each tenant's quota; a tenant not in it has none.
        max_scan: look at no more than this many candidates.

    Raises:
        ValueError: ``now`` is not finite or ``max_scan`` is below 1.
    """
    _check_number(now, "now", minimum=-math.inf, strict=False)
    _check_whole(max_scan, "max_scan", minimum=1)
    quotas = quotas or {}
    limits = _node_limits(capacity)
    free = dict(limits)
    used: dict[str, _Vector] = {}
    releases: list[tuple[float | None, _Vector]] = []
    for holder in running:
        demand = _holds(holder)
        _add(free, demand, -1.0)
        _add(used.setdefault(holder.tenant, {}), demand)
        releases.append((holder.end, demand))

    skipper = candidates if isinstance(candidates, SkipsTenants) else None
    started: list[C] = []
    held: dict[str, str] = {}
    too_large: list[tuple[C, str]] = []
    head: C | None = None
    shadow = now
    spare: _Vector = {}
    certain = True
    scanned = 0
    for job in candidates:
        if scanned >= max_scan or (head is not None and free[MAX_RUNNING] < 1 - _EPS):
            break  # with every running slot taken, nothing more can start
        scanned += 1
        tenant = job.tenant
        if tenant in held:
            continue
        demand = _demand(job.requests)
        quota = quotas.get(tenant)
        quota_limits = _quota_limits(quota) if quota is not None else {}
        reason = _too_large(demand, limits, "requests") or _over_quota(
            demand, quota_limits, "requests"
        )
        if reason:
            too_large.append((job, reason))
            continue
        hold = _quota_hold(demand, used.get(tenant, {}), quota_limits)
        if hold:
            held[tenant] = hold
            if skipper is not None:
                skipper.skip_tenant(tenant)
            continue
        if not _fits(demand, free):
            if head is None:
                head = job
                shadow, spare, certain = _reserve(demand, free, releases, now)
            continue
        if head is not None:
            if job.runtime is not None and now + job.runtime <= shadow:
                pass  # over before the head starts: leaves ``spare`` alone
            elif _fits(demand, spare):
                _add(spare, demand, -1.0)
            else:
                continue
        else:
            releases.append((None if job.runtime is None else now + job.runtime, demand))
        started.append(job)
        _add(free, demand, -1.0)
        _add(used.setdefault(tenant, {}), demand)

    reservation = None
    if head is not None:
        reservation = Reservation(head, shadow, MappingProxyType(spare), certain)
    return StartPlan(tuple(started), reservation, MappingProxyType(held), tuple(too_large), scanned)


# --- Preemption -------------------------------------------------------------------------------


class PreemptMode(StrEnum):
    """How preempted jobs are stopped."""

    REQUEUE = "requeue"
    """Stop them and queue them again: releases everything they hold."""
    SUSPEND = "suspend"
    """Stop them with SIGSTOP until resumed: releases their CPU and running slot only."""


@dataclass(frozen=True)
class Preemption(Generic[K]):
    """The answer of :func:`decide_preemption`: which running jobs to stop, and how.

    Attributes:
        victims: the jobs to stop, lowest priority first, then most recently started first.
        mode: requeue or suspend them.
    """

    victims: tuple[RunningJob[K], ...]
    mode: PreemptMode


def _parse_mode(value: PreemptMode | str) -> PreemptMode:
    if isinstance(value, str):
        try:
            return PreemptMode(value.strip().lower())
        except ValueError:
            pass
    raise ValueError(
        f"preempt: {value!r} is not a preemption mode; use one of "
        + ", ".join(repr(m.value) for m in PreemptMode)
    )


def decide_preemption(
    requests: Requests,
    priority: Priority | int | str,
    running: Iterable[RunningJob[K]],
    capacity: Capacity,
    *,
    mode: PreemptMode | str = PreemptMode.REQUEUE,
) -> Preemption[K] | None:
    """Choose the running jobs to stop so that a waiting job fits; see the module docstring.

    Args:
        requests: what the waiting job asks for.
        priority: its priority (anything
            :func:`~procvisor.policy.taskqueue.parse_priority` accepts); only preemptible jobs
            of strictly lower priority may be stopped for it.
        running: every job holding resources now.
        capacity: what the node offers.
        mode: ``requeue`` or ``suspend``.

    Returns:
        The jobs to stop, or ``None`` when the job fits already or when stopping every eligible
        job would still not make it fit.

    Raises:
        ValueError: a bad priority or mode.
    """
    level = parse_priority(priority)
    how = _parse_mode(mode)
    demand = _demand(requests)
    free = _node_limits(capacity)
    jobs = list(running)
    for job in jobs:
        _add(free, _holds(job), -1.0)
    if _fits(demand, free):
        return None

    def released(job: RunningJob[K]) -> _Vector:
        held = _demand(job.requests)
        if how is PreemptMode.SUSPEND:
            return {CPU: held[CPU], MAX_RUNNING: held[MAX_RUNNING]}
        return held

    eligible = [j for j in jobs if j.preemptible and not j.suspended and j.priority < level]
    # Lowest priority first; among equals the most recently started (it has lost the least).
    eligible.sort(key=lambda j: (j.priority, -j.started))
    everything = dict(free)
    for job in eligible:
        _add(everything, released(job))
    if not _fits(demand, everything):
        return None
    chosen: list[RunningJob[K]] = []
    for job in eligible:
        if _fits(demand, free):
            break
        chosen.append(job)
        _add(free, released(job))
    # Spare the most valuable victims that turn out not to be needed (e.g. a job holding only
    # CPU when the waiting job lacks a GPU), so no chosen job can be left running.
    for job in reversed(list(chosen)):
        trial = dict(free)
        _add(trial, released(job), -1.0)
        if _fits(demand, trial):
            chosen.remove(job)
            free = trial
    return Preemption(tuple(chosen), how)
