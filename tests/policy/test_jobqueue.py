"""The job queue's disciplines (fifo, priority, fair, edf), delays, deadlines, states, retries."""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from procvisor.policy.admission import Capacity, Requests, RunningJob, decide_starts
from procvisor.policy.jobqueue import (
    DEFAULT_TENANT,
    Discipline,
    JobQueue,
    QueuedJob,
    parse_discipline,
)
from procvisor.policy.taskqueue import Priority, TaskQueue

P = Priority


def order(queue: JobQueue[str], now: float) -> list[str]:
    return [job.item for job in queue.candidates(now)]


# --- Disciplines by name ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("fifo", Discipline.FIFO),
        (" Priority ", Discipline.PRIORITY),
        ("FAIR", Discipline.FAIR),
        ("edf", Discipline.EDF),
        (Discipline.EDF, Discipline.EDF),
    ],
)
def test_parse_discipline_takes_the_four_names(value: str, expected: Discipline) -> None:
    assert parse_discipline(value) is expected
    assert JobQueue(value).discipline is expected


@pytest.mark.parametrize("value", ["lifo", "", None, 1])
def test_parse_discipline_lists_the_names(value: object) -> None:
    with pytest.raises(
        ValueError,
        match=r"^jobs\.policy: .* is not a queue discipline; use one of 'fifo', 'priority', "
        r"'fair', 'edf'$",
    ):
        parse_discipline(value, field="jobs.policy")  # type: ignore[arg-type]


# --- fifo -------------------------------------------------------------------------------------


def test_fifo_is_by_ready_time_across_tenants() -> None:
    q: JobQueue[str] = JobQueue("fifo")
    q.push("a1", now=1.0, tenant="a", priority="critical")  # priority plays no part
    q.push("b1", now=2.0, tenant="b")
    q.push("a2", now=3.0, tenant="a", priority="background")
    q.push("b2", now=3.0, tenant="b")  # same time as a2: push order decides
    assert order(q, 10.0) == ["a1", "b1", "a2", "b2"]
    assert len(q) == 4  # candidates take nothing out
    assert q.counts() == {"a": 2, "b": 2}


def test_a_delayed_job_joins_the_line_at_its_not_before() -> None:
    q: JobQueue[str] = JobQueue("fifo")
    q.push("later", now=0.0, not_before=5.0)
    q.push("x", now=1.0)
    assert order(q, 4.999) == ["x"]
    assert q.next_due(4.999) == 5.0
    q.push("y", now=6.0)
    assert order(q, 6.0) == ["x", "later", "y"]
    assert q.next_due(6.0) is None


def test_a_not_before_in_the_past_is_eligible_at_once() -> None:
    q: JobQueue[str] = JobQueue("fifo")
    job = q.push("a", now=10.0, not_before=3.0)
    assert job.ready_at == 10.0
    assert q.next_due(10.0) is None
    assert order(q, 10.0) == ["a"]


def test_next_due_is_the_earliest_future_not_before() -> None:
    q: JobQueue[str] = JobQueue("priority")
    q.push("a", now=0.0, not_before=30.0)
    b = q.push("b", now=0.0, not_before=20.0)
    q.push("c", now=0.0, not_before=40.0)
    assert q.next_due(0.0) == 20.0
    assert q.remove(b)
    assert q.next_due(0.0) == 30.0
    assert q.next_due(35.0) == 40.0
    assert order(q, 35.0) == ["a"]


# --- priority ---------------------------------------------------------------------------------


def test_priority_is_strict_without_aging_and_fifo_within_a_level() -> None:
    q: JobQueue[str] = JobQueue("priority", aging=0)
    q.push("n1", now=0.0, tenant="a")
    q.push("bg", now=1.0, tenant="b", priority="background")
    q.push("crit", now=2.0, tenant="b", priority="critical")
    q.push("n2", now=3.0, tenant="b")
    q.push("high", now=4.0, tenant="a", priority=3)
    assert order(q, 1e6) == ["crit", "high", "n1", "n2", "bg"]


def test_priority_ages_from_the_ready_time() -> None:
    q: JobQueue[str] = JobQueue("priority", aging=10.0)
    q.push("old-bg", now=0.0, priority="background")
    q.push("normal", now=19.0)
    assert order(q, 19.999) == ["normal", "old-bg"]  # old-bg is low (1)
    assert order(q, 20.0) == ["old-bg", "normal"]  # old-bg is normal and waited longer
    # A delayed job ages from its not_before, not from its push.
    delayed = q.push("delayed-bg", now=0.0, priority="background", not_before=15.0)
    assert q.effective_priority(delayed, 24.999) is P.BACKGROUND
    assert q.effective_priority(delayed, 25.0) is P.LOW


@settings(max_examples=100)
@given(
    st.integers(min_value=0, max_value=4),
    st.floats(min_value=0, max_value=1e4),
    st.floats(min_value=-10, max_value=1e5),
    st.sampled_from([0.0, 0.3, 1.0, 10.0, 77.7]),
)
def test_aging_is_the_taskqueue_rule(base: int, pushed: float, now: float, aging: float) -> None:
    jobs: JobQueue[str] = JobQueue("priority", aging=aging)
    tasks: TaskQueue[str] = TaskQueue(aging=aging)
    job = jobs.push("x", now=pushed, priority=base)
    task = tasks.push("x", now=pushed, priority=base)
    assert jobs.effective_priority(job, now) is tasks.effective_priority(task, now)


# --- fair -------------------------------------------------------------------------------------


def test_fair_takes_the_tenant_with_the_lowest_usage_per_weight() -> None:
    q: JobQueue[str] = JobQueue("fair")
    for tenant in "abc":
        q.push(f"{tenant}1", now=0.0, tenant=tenant, cost=0.0)
    q.charge("a", 30.0, now=0.0)
    q.charge("b", 40.0, now=0.0)
    q.charge("c", 50.0, now=0.0)
    assert order(q, 1.0) == ["a1", "b1", "c1"]
    q.set_weight("c", 2.0)  # c: 50 / 2 = 25
    assert q.weight("c") == 2.0
    assert order(q, 1.0) == ["c1", "a1", "b1"]
    assert q.weight("nobody") == 1.0
    assert q.usage("nobody", 1.0) == 0.0


def test_fair_ties_go_to_the_tenant_seen_first() -> None:
    q: JobQueue[str] = JobQueue("fair")
    q.push("b", now=0.0, tenant="b", cost=0.0)
    q.push("a", now=1.0, tenant="a", cost=0.0)
    assert order(q, 2.0) == ["b", "a"]


def test_one_walk_shares_free_slots_by_weight_through_costs() -> None:
    q: JobQueue[str] = JobQueue("fair")
    q.set_weight("big", 2.0)
    for i in range(6):
        q.push(f"s{i}", now=0.0, tenant="small", runtime=10.0)  # cost 1 cpu * 10 s
        q.push(f"b{i}", now=0.0, tenant="big", runtime=10.0)
    # Usage is 0 for both: without costs one tenant would take every slot. "big" was seen
    # first (by set_weight), so it wins the ties.
    assert order(q, 1.0)[:6] == ["b0", "s0", "b1", "b2", "s1", "b3"]


def test_within_a_tenant_fair_follows_priority_with_aging() -> None:
    q: JobQueue[str] = JobQueue("fair", aging=10.0)
    q.push("bg", now=0.0, tenant="a", priority="background", cost=0)
    q.push("high", now=5.0, tenant="a", priority="high", cost=0)
    q.push("n", now=6.0, tenant="a", cost=0)
    assert order(q, 6.0) == ["high", "n", "bg"]
    assert order(q, 40.0) == ["bg", "high", "n"]  # bg aged to critical


def test_a_tenant_with_10_000_jobs_does_not_starve_one_with_10() -> None:
    q: JobQueue[str] = JobQueue("fair")
    for i in range(10_000):
        q.push(f"flood{i}", now=0.0, tenant="flood")
    for i in range(10):
        q.push(f"few{i}", now=1.0, tenant="few")
    served: list[str] = []
    for step in range(20):
        job, expired = q.pop(2.0 + step)
        assert job is not None
        assert expired == []
        served.append(job.tenant)
        q.charge(job.tenant, 5.0, now=2.0 + step)
    assert served.count("few") == 10
    assert served.count("flood") == 10


def test_usage_decays_with_the_half_life() -> None:
    q: JobQueue[str] = JobQueue("fair", half_life=100.0)
    assert q.half_life == 100.0
    q.charge("a", 100.0, now=0.0)
    q.charge("b", 60.0, now=0.0)
    assert q.usage("a", 100.0) == pytest.approx(50.0)
    assert q.usage("a", 300.0) == pytest.approx(12.5)
    assert q.usage("a", -5.0) == 100.0  # before the charge: no growth
    q.charge("b", 30.0, now=100.0)  # b: 30 + 30 = 60 against a's 50
    q.push("a1", now=100.0, tenant="a")
    q.push("b1", now=100.0, tenant="b")
    assert order(q, 100.0) == ["a1", "b1"]
    # Without decay b would still be ahead: 90 against 100.
    whole: JobQueue[str] = JobQueue("fair")
    whole.charge("a", 100.0, now=0.0)
    whole.charge("b", 60.0, now=0.0)
    whole.charge("b", 30.0, now=100.0)
    whole.push("a1", now=100.0, tenant="a")
    whole.push("b1", now=100.0, tenant="b")
    assert order(whole, 100.0) == ["b1", "a1"]


def test_decay_keeps_the_order_of_tenants_charged_at_different_times() -> None:
    q: JobQueue[str] = JobQueue("fair", half_life=10.0)
    q.charge("a", 8.0, now=0.0)  # 1.0 at t=30
    q.charge("b", 1.5, now=30.0)
    q.charge("c", 0.0, now=1000.0)
    for t in "abc":
        q.push(t, now=1000.0, tenant=t, cost=0)
    assert order(q, 1000.0) == ["c", "a", "b"]


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.integers(min_value=1, max_value=5), min_size=2, max_size=4),
    st.lists(st.floats(min_value=0.1, max_value=10.0), min_size=1, max_size=20),
)
def test_fair_shares_converge_to_the_weights(weights: list[int], costs: list[float]) -> None:
    """Each decision starts one job and charges its CPU-seconds; shares follow the weights."""
    q: JobQueue[int] = JobQueue("fair")
    names = [f"t{i}" for i in range(len(weights))]
    for name, weight in zip(names, weights, strict=True):
        q.set_weight(name, weight)
    cycle = itertools.cycle(costs)
    for i in range(300):  # every tenant stays backlogged
        for name in names:
            q.push(i, now=0.0, tenant=name)
    used = dict.fromkeys(names, 0.0)
    for step in range(300):
        job, _ = q.pop(float(step))
        assert job is not None
        cost = next(cycle)
        used[job.tenant] += cost
        q.charge(job.tenant, cost, now=float(step))
        # Exact bound: the normalised usages never drift apart by more than one job's cost.
        spread = [used[n] / w for n, w in zip(names, weights, strict=True)]
        assert max(spread) - min(spread) <= max(costs) / min(weights) + 1e-9
    total = sum(used.values())
    for name, weight in zip(names, weights, strict=True):
        share = used[name] / total
        assert share == pytest.approx(weight / sum(weights), abs=0.1)


# --- edf --------------------------------------------------------------------------------------


def test_edf_runs_the_earliest_deadline_first_and_no_deadline_last() -> None:
    q: JobQueue[str] = JobQueue("edf")
    q.push("none1", now=0.0, priority="critical")
    q.push("late", now=1.0, deadline=90.0)
    q.push("early", now=2.0, deadline=30.0, tenant="b")
    q.push("none2", now=3.0, tenant="b")
    q.push("early-too", now=2.5, deadline=30.0)
    assert order(q, 5.0) == ["early", "early-too", "late", "none1", "none2"]


def test_a_job_that_cannot_start_before_its_deadline_is_reported_not_dropped() -> None:
    q: JobQueue[str] = JobQueue("edf")
    soon = q.push("soon", now=0.0, deadline=10.0)
    never = q.push("after-deadline", now=0.0, not_before=50.0, deadline=20.0)
    q.push("keeps", now=0.0)
    assert q.next_deadline() == 10.0
    # Expired but not yet reported: passed over, still queued.
    assert order(q, 10.0) == ["keeps"]
    assert soon.queued
    assert len(q) == 3
    assert q.expire(19.0) == [soon]
    assert q.next_deadline() == 20.0
    job, expired = q.pop(25.0)
    assert job is not None
    assert job.item == "keeps"
    assert expired == [never]
    assert not never.queued
    assert len(q) == 0
    assert q.next_due(25.0) is None
    assert q.next_deadline() is None


@pytest.mark.parametrize("discipline", list(Discipline))
def test_every_discipline_expires_at_the_deadline_exactly(discipline: Discipline) -> None:
    q: JobQueue[str] = JobQueue(discipline)
    a = q.push("a", now=0.0, deadline=5.0)
    b = q.push("b", now=0.0, deadline=5.0, tenant="t")
    assert order(q, 4.999) == ["a", "b"]
    assert q.expire(4.999) == []
    assert q.expire(5.0) == [a, b]


# --- Removal and walking ----------------------------------------------------------------------


def test_remove_takes_a_job_out_once() -> None:
    q: JobQueue[str] = JobQueue("priority")
    a = q.push("a", now=0.0, deadline=9.0)
    b = q.push("b", now=0.0, not_before=5.0, deadline=9.0)
    q.push("c", now=0.0)
    assert q.remove(a) is True
    assert q.remove(a) is False
    assert q.remove(b) is True
    assert not a.queued
    assert not b.queued
    assert q.next_deadline() is None
    assert q.next_due(0.0) is None
    assert order(q, 10.0) == ["c"]
    assert q.counts() == {DEFAULT_TENANT: 1}


def test_a_handle_from_another_queue_is_refused() -> None:
    handle = JobQueue[str]().push("x", now=0.0)
    with pytest.raises(ValueError, match=r"^job: .* is not a handle from this queue"):
        JobQueue[str]().remove(handle)


@pytest.mark.parametrize("discipline", list(Discipline))
def test_skip_tenant_drops_a_tenant_from_the_rest_of_the_walk(discipline: Discipline) -> None:
    q: JobQueue[str] = JobQueue(discipline)
    for i in range(3):
        for tenant in "ab":
            q.push(f"{tenant}{i}", now=float(i), tenant=tenant, cost=0)
    walk = q.candidates(10.0)
    first = next(walk)
    assert first.item == "a0"
    walk.skip_tenant("a")
    assert [job.item for job in walk] == ["b0", "b1", "b2"]


def test_changing_the_queue_during_a_walk_is_refused() -> None:
    q: JobQueue[str] = JobQueue()
    q.push("a", now=0.0)
    q.push("b", now=0.0)
    walk = q.candidates(1.0)
    job = next(walk)
    q.remove(job)
    with pytest.raises(RuntimeError, match="changed while its candidates were being walked"):
        next(walk)


@pytest.mark.parametrize("discipline", list(Discipline))
def test_removing_started_jobs_from_the_middle_keeps_the_order(discipline: Discipline) -> None:
    rng = random.Random(3)
    q: JobQueue[int] = JobQueue(discipline, aging=0)
    handles = [
        q.push(
            i,
            now=float(i),
            tenant=f"t{i % 3}",
            priority=rng.randrange(5),
            deadline=1e6 + rng.randrange(100),
        )
        for i in range(300)
    ]
    before = [job.item for job in q.candidates(1000.0)]
    for h in handles[::2]:
        q.remove(h)
    after = [job.item for job in q.candidates(1000.0)]
    if discipline is not Discipline.FAIR:  # fair shares by cost, which removal changes
        assert after == [i for i in before if i % 2]
    assert sorted(after) == list(range(1, 300, 2))


# --- Against a brute-force reference ----------------------------------------------------------


@dataclass
class Ref:
    item: int
    tenant: str
    base: int
    submitted: float
    not_before: float | None
    deadline: float | None
    cost: float

    @property
    def ready_at(self) -> float:
        return self.submitted if self.not_before is None else max(self.submitted, self.not_before)


@dataclass
class Reference:
    """The rules of the module docstring, by looking at every job (no decay)."""

    discipline: Discipline
    aging: float
    live: list[Ref] = field(default_factory=list)
    usage: dict[str, float] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)
    seen: list[str] = field(default_factory=list)

    def tenant(self, name: str) -> None:
        if name not in self.seen:
            self.seen.append(name)

    def effective(self, r: Ref, now: float) -> int:
        if self.aging == 0:
            return r.base
        return min(4, r.base + math.floor(max(0.0, now - r.ready_at) / self.aging))

    def key(self, r: Ref, now: float) -> tuple[float, ...]:
        if self.discipline is Discipline.FIFO:
            return (r.ready_at, r.item)
        if self.discipline is Discipline.EDF:
            deadline = math.inf if r.deadline is None else r.deadline
            return (deadline, r.ready_at, r.item)
        return (-self.effective(r, now), r.ready_at, r.item)

    def walk(self, now: float, skip: set[str]):
        ready = [
            r for r in self.live if r.ready_at <= now and (r.deadline is None or r.deadline > now)
        ]
        if self.discipline is not Discipline.FAIR:
            for r in sorted(ready, key=lambda r: self.key(r, now)):
                if r.tenant not in skip:
                    yield r
            return
        spent: dict[str, float] = {}
        while True:
            tenants = {r.tenant for r in ready if r.tenant not in skip}
            if not tenants:
                return
            name = min(
                tenants,
                key=lambda t: (
                    (self.usage.get(t, 0.0) + spent.get(t, 0.0)) / self.weights.get(t, 1.0),
                    self.seen.index(t),
                ),
            )
            r = min((r for r in ready if r.tenant == name), key=lambda r: self.key(r, now))
            ready.remove(r)
            yield r
            spent[name] = spent.get(name, 0.0) + r.cost

    def expire(self, now: float) -> list[int]:
        gone = [r for r in self.live if r.deadline is not None and r.deadline <= now]
        self.live = [r for r in self.live if r not in gone]
        return [r.item for r in sorted(gone, key=lambda r: (r.deadline, r.item))]


def consume(jobs, skip_first_of: str | None, skip) -> list[int]:
    out = []
    for job in jobs:
        out.append(job.item)
        if job.tenant == skip_first_of:
            skip(job.tenant)
    return out


tenants = st.sampled_from(["a", "b", "c"])
small_times = st.one_of(st.none(), st.integers(min_value=0, max_value=30).map(float))
operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("push"),
            tenants,
            st.integers(min_value=0, max_value=4),
            small_times,  # not_before
            small_times,  # deadline
            st.sampled_from([0.0, 1.0, 2.5]),  # cost
        ),
        st.tuples(st.just("walk"), st.one_of(st.none(), tenants)),
        st.tuples(st.just("pop")),
        st.tuples(st.just("expire")),
        st.tuples(st.just("remove"), st.integers(min_value=0, max_value=1000)),
        st.tuples(st.just("charge"), tenants, st.sampled_from([0.5, 1.0, 3.0])),
        st.tuples(st.just("weight"), tenants, st.sampled_from([0.5, 1.0, 2.0, 3.0])),
        st.tuples(st.just("tick"), st.sampled_from([0.0, 0.5, 1.0, 4.0])),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(list(Discipline)), st.sampled_from([0.0, 1.0, 2.5]), operations)
def test_the_queue_agrees_with_a_brute_force_reference(
    discipline: Discipline, aging: float, ops: list[tuple]
) -> None:
    queue: JobQueue[int] = JobQueue(discipline, aging=aging)
    ref = Reference(discipline, aging)
    handles: list[QueuedJob[int]] = []
    now = 0.0
    for op in ops:
        kind = op[0]
        if kind == "push":
            _, tenant, base, not_before, deadline, cost = op
            seq = len(handles)
            handles.append(
                queue.push(
                    seq,
                    now=now,
                    tenant=tenant,
                    priority=base,
                    not_before=not_before,
                    deadline=deadline,
                    cost=cost,
                )
            )
            ref.tenant(tenant)
            ref.live.append(Ref(seq, tenant, base, now, not_before, deadline, cost))
        elif kind == "walk":
            walk = queue.candidates(now)
            got = consume(walk, op[1], walk.skip_tenant)
            skip: set[str] = set()
            assert got == consume(ref.walk(now, skip), op[1], skip.add)
        elif kind == "pop":
            job, expired = queue.pop(now)
            want_expired = ref.expire(now)
            want = next(ref.walk(now, set()), None)
            if want is not None:
                ref.live.remove(want)
            assert [j.item for j in expired] == want_expired
            assert (None if job is None else job.item) == (None if want is None else want.item)
        elif kind == "expire":
            assert [j.item for j in queue.expire(now)] == ref.expire(now)
        elif kind == "remove" and handles:
            handle = handles[op[1] % len(handles)]
            was_live = any(r.item == handle.item for r in ref.live)
            ref.live = [r for r in ref.live if r.item != handle.item]
            assert queue.remove(handle) is was_live
        elif kind == "charge":
            queue.charge(op[1], op[2], now=now)
            ref.tenant(op[1])
            ref.usage[op[1]] = ref.usage.get(op[1], 0.0) + op[2]
        elif kind == "weight":
            queue.set_weight(op[1], op[2])
            ref.tenant(op[1])
            ref.weights[op[1]] = op[2]
        elif kind == "tick":
            now += op[1]
        assert len(queue) == len(ref.live)
        deadlines = [r.deadline for r in ref.live if r.deadline is not None]
        assert queue.next_deadline() == (min(deadlines) if deadlines else None)
        due = [r.not_before for r in ref.live if r.ready_at > now]
        assert queue.next_due(now) == (min(due) if due else None)  # type: ignore[type-var]


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.one_of(st.none(), st.floats(min_value=0, max_value=100)),
            st.floats(min_value=0, max_value=50),
        ),
        max_size=40,
    )
)
def test_edf_never_offers_a_later_deadline_first(jobs: list[tuple[float | None, float]]) -> None:
    q: JobQueue[int] = JobQueue("edf")
    for i, (deadline, pushed) in enumerate(jobs):
        q.push(i, now=pushed, deadline=None if deadline is None else 100 + deadline)
    deadlines = [math.inf if j.deadline is None else j.deadline for j in q.candidates(60.0)]
    assert deadlines == sorted(deadlines)
    assert len(deadlines) == len(jobs)


# --- Cost of a decision -----------------------------------------------------------------------


def steps_per_decision(discipline: Discipline, queued: int) -> float:
    """Fill a queue with ``queued`` jobs, then count heap steps over 40 scheduling rounds.

    A tenth of the jobs are delayed far beyond the rounds: a job becoming due costs one move
    of O(log n), like its push, which is not part of a decision.
    """
    q: JobQueue[int] = JobQueue(discipline, aging=5.0, half_life=60.0)
    requests = [Requests(cpu=1), Requests(cpu=1), Requests(cpu=2), Requests(cpu=6)]
    for i in range(queued):
        q.push(
            i,
            now=i * 1e-4,
            tenant=f"t{i % 8}",
            priority=i * 7 % 5,
            requests=requests[i % 4],
            runtime=(None, 5.0, 60.0)[i % 3],
            deadline=1e6 + i * 7919 % 1000 if i % 3 == 0 else None,
            not_before=1e5 + i % 97 if i % 10 == 0 else None,
        )
    capacity = Capacity(cpu=8, max_running=6)
    running: list[RunningJob[int]] = []
    now = 15.0
    before = q._meter.steps
    for _ in range(40):
        now += 1.0
        running = [r for r in running if r.started > now - 2.5]  # the rest ended
        q.expire(now)
        plan = decide_starts(q.candidates(now), running, capacity, now=now, max_scan=100)
        for job in plan.start:
            q.remove(job)
            running.append(RunningJob(job.item, job.tenant, job.requests, now, job.runtime))
            q.charge(job.tenant, job.cost, now=now)
        q.next_due(now)
    return (q._meter.steps - before) / 40


@pytest.mark.parametrize("discipline", list(Discipline))
def test_a_decision_costs_about_the_same_with_1_000_and_100_000_jobs(
    discipline: Discipline,
) -> None:
    small = steps_per_decision(discipline, 1_000)
    large = steps_per_decision(discipline, 100_000)
    # The heaps are 100 times deeper in size but only ~1.7 times in depth (log n).
    assert small > 0
    assert large < 4 * small, (small, large)


# --- Misuse -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"aging": -1.0}, r"^aging: -1\.0 must be a duration of 0 \(off\) or more"),
        ({"aging": float("nan")}, r"^aging: nan"),
        ({"half_life": 0}, r"^half_life: 0 must be a number more than 0"),
        ({"discipline": "random"}, r"^policy: 'random' is not a queue discipline"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        JobQueue(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"now": float("nan")}, r"^now: nan must be a finite number"),
        ({"now": 0.0, "deadline": float("inf")}, r"^deadline: inf must be a finite number"),
        ({"now": 0.0, "not_before": "soon"}, r"^not_before: 'soon' must be a finite number"),
        ({"now": 0.0, "priority": "soon"}, r"^priority: 'soon' is not a priority"),
        ({"now": 0.0, "tenant": ""}, r"^tenant: '' must be a non-empty string"),
        ({"now": 0.0, "runtime": 0}, r"^runtime: 0 must be a number more than 0"),
        ({"now": 0.0, "cost": -1}, r"^cost: -1 must be a number of CPU-seconds"),
        ({"now": 0.0, "requests": {"cpu": 1}}, r"^requests: .* must be a Requests"),
    ],
)
def test_bad_push_arguments_name_the_field(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        JobQueue[str]().push("x", **kwargs)


def test_bad_fair_share_arguments_name_the_field() -> None:
    q: JobQueue[str] = JobQueue("fair")
    with pytest.raises(ValueError, match=r"^cpu_seconds: -1\.0 must be a finite number"):
        q.charge("a", -1.0, now=0.0)
    with pytest.raises(ValueError, match=r"^weight: 0 must be a number more than 0"):
        q.set_weight("a", 0)
    with pytest.raises(ValueError, match=r"^now: "):
        q.candidates(float("inf"))


def test_defaults_and_reprs() -> None:
    q: JobQueue[str] = JobQueue()
    assert (q.discipline, q.aging, q.half_life) == (Discipline.FIFO, 10.0, None)
    job = q.push("job", now=1.5, deadline=9.0, not_before=3.0, tenant="acme")
    assert job.requests == Requests()
    assert (job.cost, job.runtime, job.priority, job.seq) == (1.0, None, P.NORMAL, 0)
    assert repr(job) == (
        "<QueuedJob #0 'acme' normal submitted=1.5 not_before=3.0 deadline=9.0 queued 'job'>"
    )
    assert repr(q) == "<JobQueue fifo queued=1 delayed=1 tenants=1>"
    timed = q.push("t", now=0.0, requests=Requests(cpu=2), runtime=30.0)
    assert timed.cost == 60.0
