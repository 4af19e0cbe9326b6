"""A pool's task queue: priorities, FIFO within a level, aging, deadlines and cancellation."""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from procvisor.policy.taskqueue import (
    DEFAULT_AGING,
    Priority,
    QueuedTask,
    TaskQueue,
    effective_priority,
    parse_priority,
)

P = Priority


def drain(queue: TaskQueue[str], now: float) -> list[str]:
    out = []
    while True:
        task, expired = queue.pop(now)
        assert expired == []
        if task is None:
            return out
        out.append(task.item)


# --- Priorities -------------------------------------------------------------------------------


def test_priorities_are_ordered_critical_first() -> None:
    assert P.CRITICAL > P.HIGH > P.NORMAL > P.LOW > P.BACKGROUND
    assert [int(p) for p in (P.CRITICAL, P.HIGH, P.NORMAL, P.LOW, P.BACKGROUND)] == [4, 3, 2, 1, 0]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (P.HIGH, P.HIGH),
        ("critical", P.CRITICAL),
        (" Low ", P.LOW),
        ("BACKGROUND", P.BACKGROUND),
        (4, P.CRITICAL),
        (0, P.BACKGROUND),
        ("2", P.NORMAL),
    ],
)
def test_parse_priority_takes_names_and_numbers(value: object, expected: Priority) -> None:
    assert parse_priority(value) is expected  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["urgent", "", 5, -1, "5", "³", True, 2.0, None])
def test_parse_priority_lists_the_accepted_forms(value: object) -> None:
    with pytest.raises(
        ValueError,
        match=r"^job\.priority: .* is not a priority; use one of critical \(4\), high \(3\), "
        r"normal \(2\), low \(1\), background \(0\)$",
    ):
        parse_priority(value, field="job.priority")  # type: ignore[arg-type]


# --- Order without aging ----------------------------------------------------------------------


def test_fifo_within_a_level() -> None:
    q: TaskQueue[str] = TaskQueue(aging=0)
    for i, item in enumerate("abcde"):
        q.push(item, now=float(i))
    q.push("f", now=4.0)  # same time as e: push order decides
    assert drain(q, 100.0) == list("abcdef")


def test_strict_priority_without_aging() -> None:
    q: TaskQueue[str] = TaskQueue(aging=0)
    q.push("bg", priority="background", now=0.0)
    q.push("low", priority=P.LOW, now=1.0)
    q.push("n1", now=2.0)
    q.push("crit", priority=4, now=3.0)
    q.push("high", priority="high", now=4.0)
    q.push("n2", priority="normal", now=5.0)
    assert len(q) == 6
    assert q.counts() == {P.CRITICAL: 1, P.HIGH: 1, P.NORMAL: 2, P.LOW: 1, P.BACKGROUND: 1}
    # A million seconds of waiting change nothing when aging is off.
    assert drain(q, 1e6) == ["crit", "high", "n1", "n2", "low", "bg"]
    assert len(q) == 0
    assert q.pop(1e6) == (None, [])


# --- Aging ------------------------------------------------------------------------------------


def test_effective_priority_rises_one_level_per_aging_period() -> None:
    q: TaskQueue[str] = TaskQueue(aging=10.0)
    task = q.push("bg", priority="background", now=100.0)
    expected = {
        100.0: P.BACKGROUND,
        109.999: P.BACKGROUND,
        110.0: P.LOW,
        120.0: P.NORMAL,
        130.0: P.HIGH,
        139.999: P.HIGH,
        140.0: P.CRITICAL,
        1e9: P.CRITICAL,
        50.0: P.BACKGROUND,  # earlier than the push: no negative aging
    }
    for now, level in expected.items():
        assert q.effective_priority(task, now) is level, now


@given(
    st.sampled_from(list(Priority)),
    st.floats(min_value=-1e6, max_value=1e6),
    st.floats(min_value=-1e6, max_value=1e6),
    st.sampled_from([0.0, 0.5, 10.0, 3600.0]),
)
def test_effective_priority_is_the_one_aging_rule(
    base: Priority, enqueued: float, now: float, aging: float
) -> None:
    level = effective_priority(base, enqueued, now, aging)
    if aging == 0:
        assert level is base
    else:
        steps = math.floor(max(0.0, now - enqueued) / aging)
        assert level is Priority(min(Priority.CRITICAL, base + steps))
    q: TaskQueue[str] = TaskQueue(aging=aging)
    assert q.effective_priority(q.push("t", priority=base, now=enqueued), now) is level


def test_an_old_background_task_overtakes_new_normal_ones_after_two_periods() -> None:
    q: TaskQueue[str] = TaskQueue(aging=10.0)
    q.push("old", priority="background", now=0.0)
    q.push("n1", now=19.5)
    task, _ = q.pop(19.999)  # old is low (1), n1 normal (2)
    assert task is not None
    assert task.item == "n1"
    q.push("n2", now=19.999)
    task, _ = q.pop(20.0)  # old is normal now: a tie with n2, and old was pushed first
    assert task is not None
    assert task.item == "old"


def test_a_task_aged_to_critical_goes_before_a_new_critical_one() -> None:
    q: TaskQueue[str] = TaskQueue(aging=10.0)
    q.push("old", priority="background", now=0.0)
    q.push("crit", priority="critical", now=39.0)
    assert drain(q, 39.999) == ["crit", "old"]

    q.push("old", priority="background", now=0.0)
    q.push("crit", priority="critical", now=39.0)
    assert drain(q, 40.0) == ["old", "crit"]


def test_among_equal_effective_priorities_the_older_task_goes_first() -> None:
    q: TaskQueue[str] = TaskQueue(aging=10.0)
    q.push("high-new", priority="high", now=25.0)
    q.push("normal-old", priority="normal", now=12.0)  # pushed later, but waited longer
    # At 30: high-new is high (3), normal-old has waited 18s: normal + 1 = high (3).
    assert drain(q, 30.0) == ["normal-old", "high-new"]


def test_the_default_aging_is_ten_seconds() -> None:
    q: TaskQueue[str] = TaskQueue()
    assert q.aging == DEFAULT_AGING == 10.0


# --- Deadlines --------------------------------------------------------------------------------


def test_a_task_expires_exactly_at_its_deadline() -> None:
    q: TaskQueue[str] = TaskQueue()
    q.push("a", now=0.0, deadline=5.0)
    task, expired = q.pop(4.999)
    assert task is not None
    assert (task.item, expired) == ("a", [])

    b = q.push("b", now=0.0, deadline=5.0)
    task, expired = q.pop(5.0)
    assert task is None
    assert expired == [b]
    assert not b.queued


def test_expired_tasks_are_reported_in_deadline_order_and_never_run() -> None:
    q: TaskQueue[str] = TaskQueue(aging=0)
    late = q.push("late", priority="critical", now=0.0, deadline=9.0)
    early = q.push("early", priority="low", now=0.0, deadline=3.0)
    q.push("runs", priority="background", now=0.0)
    also = q.push("also", priority="high", now=0.0, deadline=3.0)
    assert q.next_deadline() == 3.0
    task, expired = q.pop(10.0)
    assert task is not None
    assert task.item == "runs"
    assert expired == [early, also, late]
    assert len(q) == 0
    assert q.next_deadline() is None


def test_expire_fails_buried_tasks_on_time() -> None:
    q: TaskQueue[str] = TaskQueue()
    for i in range(10):
        q.push(f"c{i}", priority="critical", now=0.0)
    buried = q.push("buried", priority="background", now=0.0, deadline=2.0)
    assert q.expire(1.999) == []
    assert q.expire(2.0) == [buried]
    assert q.expire(3.0) == []
    assert len(q) == 10


def test_a_deadline_already_passed_is_reported_by_the_next_pop() -> None:
    q: TaskQueue[str] = TaskQueue()
    t = q.push("late", now=10.0, deadline=5.0)
    assert q.pop(10.0) == (None, [t])


def test_next_deadline_follows_pops_and_removals() -> None:
    q: TaskQueue[str] = TaskQueue(aging=0)
    a = q.push("a", priority="high", now=0.0, deadline=4.0)
    q.push("b", now=0.0, deadline=6.0)
    q.push("c", now=0.0)
    assert q.next_deadline() == 4.0
    task, _ = q.pop(1.0)
    assert task is a
    assert q.next_deadline() == 6.0
    assert q.remove(q.push("d", now=1.0, deadline=2.0))
    assert q.next_deadline() == 6.0


# --- Cancellation -----------------------------------------------------------------------------


def test_remove_cancels_a_queued_task_once() -> None:
    q: TaskQueue[str] = TaskQueue()
    q.push("a", now=0.0)
    b = q.push("b", now=0.0, deadline=10.0)
    q.push("c", now=0.0)
    assert b.queued
    assert q.remove(b) is True
    assert q.remove(b) is False
    assert not b.queued
    assert len(q) == 2
    assert q.counts()[P.NORMAL] == 2
    assert drain(q, 1.0) == ["a", "c"]


def test_remove_after_pop_says_false() -> None:
    q: TaskQueue[str] = TaskQueue()
    a = q.push("a", now=0.0)
    assert q.pop(0.0) == (a, [])
    assert q.remove(a) is False


def test_a_handle_from_another_queue_is_refused() -> None:
    other: TaskQueue[str] = TaskQueue()
    handle = other.push("x", now=0.0)
    with pytest.raises(ValueError, match=r"^task: .* is not a handle from this queue"):
        TaskQueue[str]().remove(handle)


def test_removing_most_tasks_keeps_the_order_of_the_rest() -> None:
    q: TaskQueue[int] = TaskQueue(aging=0)
    handles = [q.push(i, priority=i % 5, now=float(i), deadline=1e6 + i) for i in range(1000)]
    for h in handles:
        if h.item % 10:
            assert q.remove(h)
    assert len(q) == 100
    # Dead entries were compacted away: the heaps hold about the live tasks only.
    assert sum(len(h) for h in q._levels) + len(q._deadlines) <= 4 * 100 + 2 * 64
    order = []
    while (task := q.pop(10.0)[0]) is not None:
        order.append(task.item)
    assert order == sorted(range(0, 1000, 10), key=lambda i: (-(i % 5), i))
    assert q.next_deadline() is None


# --- Scale ------------------------------------------------------------------------------------


def test_100_000_tasks_push_and_pop_quickly() -> None:
    rng = random.Random(7)
    q: TaskQueue[int] = TaskQueue(aging=10.0)
    start = time.perf_counter()
    handles = []
    for i in range(100_000):
        now = i * 0.001
        deadline = now + 50.0 if i % 3 == 0 else None
        handles.append(q.push(i, priority=rng.randrange(5), now=now, deadline=deadline))
    for h in handles[::7]:
        q.remove(h)
    popped = expired = 0
    now = 100.0
    while q:
        task, gone = q.pop(now)
        popped += task is not None
        expired += len(gone)
        now += 0.0001
    elapsed = time.perf_counter() - start
    assert popped + expired == 100_000 - len(handles[::7])
    assert elapsed < 5.0, f"{elapsed:.2f}s"


# --- Against a brute-force reference ----------------------------------------------------------


@dataclass
class Ref:
    item: int
    base: int
    enqueued: float
    deadline: float | None
    seq: int


class Reference:
    """The rules of the module docstring, applied to a plain list by looking at every task."""

    def __init__(self, aging: float) -> None:
        self.aging = aging
        self.live: list[Ref] = []

    def effective(self, r: Ref, now: float) -> int:
        if self.aging == 0:
            return r.base
        return min(4, r.base + math.floor(max(0.0, now - r.enqueued) / self.aging))

    def expire(self, now: float) -> list[int]:
        gone = [r for r in self.live if r.deadline is not None and r.deadline <= now]
        self.live = [r for r in self.live if r not in gone]
        return [r.item for r in sorted(gone, key=lambda r: (r.deadline, r.seq))]

    def pop(self, now: float) -> tuple[int | None, list[int]]:
        expired = self.expire(now)
        if not self.live:
            return None, expired
        best = max(self.live, key=lambda r: (self.effective(r, now), -r.enqueued, -r.seq))
        self.live.remove(best)
        return best.item, expired


times = st.one_of(
    st.integers(min_value=0, max_value=40).map(lambda i: i / 2),  # hits ties and boundaries
    st.floats(min_value=0.0, max_value=100.0),
)
operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("push"),
            st.integers(min_value=0, max_value=4),
            times,
            st.one_of(st.none(), times),
        ),
        st.tuples(st.just("pop"), times),
        st.tuples(st.just("expire"), times),
        st.tuples(st.just("remove"), st.integers(min_value=0, max_value=10_000)),
    ),
    max_size=120,
)


@settings(max_examples=300)
@given(st.sampled_from([0.0, 0.5, 1.0, 2.5, 10.0]), operations)
def test_the_queue_agrees_with_a_brute_force_reference(aging: float, ops: list[tuple]) -> None:
    queue: TaskQueue[int] = TaskQueue(aging=aging)
    ref = Reference(aging)
    handles: list[QueuedTask[int]] = []
    for op in ops:
        if op[0] == "push":
            _, base, now, deadline = op
            seq = len(handles)
            handles.append(queue.push(seq, priority=base, now=now, deadline=deadline))
            ref.live.append(Ref(seq, base, now, deadline, seq))
        elif op[0] == "pop":
            task, expired = queue.pop(op[1])
            got = (None if task is None else task.item, [t.item for t in expired])
            assert got == ref.pop(op[1])
        elif op[0] == "expire":
            assert [t.item for t in queue.expire(op[1])] == ref.expire(op[1])
        elif handles:
            handle = handles[op[1] % len(handles)]
            was_live = any(r.item == handle.item for r in ref.live)
            ref.live = [r for r in ref.live if r.item != handle.item]
            assert queue.remove(handle) is was_live
        assert len(queue) == len(ref.live)
        assert queue.counts() == {p: sum(r.base == p for r in ref.live) for p in reversed(P)}
        deadlines = [r.deadline for r in ref.live if r.deadline is not None]
        assert queue.next_deadline() == (min(deadlines) if deadlines else None)


# --- Misuse -----------------------------------------------------------------------------------


@pytest.mark.parametrize("aging", [-1.0, float("inf"), float("nan"), True])
def test_bad_aging_is_refused(aging: float) -> None:
    with pytest.raises(ValueError, match=r"^aging: .* 0 \(off\) or more seconds"):
        TaskQueue(aging=aging)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"now": float("nan")}, r"^now: nan must be a finite number"),
        ({"now": 0.0, "deadline": float("inf")}, r"^deadline: inf must be a finite number"),
        ({"now": 0.0, "priority": "soon"}, r"^priority: 'soon' is not a priority"),
    ],
)
def test_bad_push_arguments_name_the_field(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TaskQueue[str]().push("x", **kwargs)


def test_pop_refuses_a_bad_now() -> None:
    with pytest.raises(ValueError, match=r"^now: "):
        TaskQueue[str]().pop(float("nan"))


def test_reprs_show_the_state() -> None:
    q: TaskQueue[str] = TaskQueue(aging=5)
    t = q.push("job", priority="high", now=1.5, deadline=9.0)
    q.push("x", priority="low", now=2.0)
    assert repr(t) == "<QueuedTask #0 high enqueued=1.5 deadline=9.0 queued 'job'>"
    assert repr(q) == "<TaskQueue aging=5 critical=0, high=1, normal=0, low=1, background=0>"
    q.remove(t)
    assert repr(t) == "<QueuedTask #0 high enqueued=1.5 deadline=9.0 out 'job'>"
    assert (t.item, t.priority, t.enqueued, t.deadline, t.seq) == ("job", P.HIGH, 1.5, 9.0, 0)
