"""Admission: requests, capacity, quotas, starting jobs with EASY backfill, and preemption."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from procvisor.policy.admission import (
    Capacity,
    PreemptMode,
    Quota,
    Requests,
    RunningJob,
    StartPlan,
    check_request,
    decide_preemption,
    decide_starts,
    fits,
    parse_requests,
    parse_timeout,
)
from procvisor.policy.jobqueue import JobQueue
from procvisor.policy.taskqueue import Priority

G = 1024**3
P = Priority


@dataclass(frozen=True)
class Job:
    """A candidate as the jobs layer might pass it."""

    name: str
    tenant: str = "a"
    requests: Requests = field(default_factory=Requests)
    runtime: float | None = None


def job(name: str, cpu: float = 1, runtime: float | None = None, **kw) -> Job:
    return Job(name, requests=Requests(cpu=cpu, **kw.pop("req", {})), runtime=runtime, **kw)


def run(key: str, cpu: float, started: float = 0.0, runtime: float | None = None, **kw):
    return RunningJob(key, kw.pop("tenant", "a"), Requests(cpu=cpu, **kw.pop("req", {})),
                      started, runtime, **kw)  # fmt: skip


def names(plan: StartPlan[Job]) -> list[str]:
    return [j.name for j in plan.start]


# --- Values and parsing -----------------------------------------------------------------------


def test_requests_default_to_one_cpu() -> None:
    r = Requests()
    assert (r.cpu, r.memory, dict(r.resources)) == (1.0, 0, {})
    assert repr(Requests(cpu=0.5, memory=512 * 1024**2, resources={"gpu": 1})) == (
        "Requests(cpu=0.5, memory=512M, gpu=1)"
    )
    assert hash(Requests(resources={"gpu": 1})) == hash(Requests(resources={"gpu": 1.0}))
    assert Requests(resources={"gpu": 1}) == Requests(resources={"gpu": 1.0})


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("cpu=2,memory=1G,gpu=1", Requests(cpu=2, memory=G, resources={"gpu": 1})),
        (["cpu=0.5", "GPU=2", "nvidia.com/gpu=1"],
         Requests(0.5, 0, {"gpu": 2, "nvidia.com/gpu": 1})),
        ({"cpu": 4, "memory": "512M"}, Requests(cpu=4, memory=512 * 1024**2)),
        ({"memory": 2048}, Requests(memory=2048)),
        ("", Requests()),
        (" cpu = 3 , ", Requests(cpu=3)),
        (Requests(cpu=7), Requests(cpu=7)),
    ],
)  # fmt: skip
def test_parse_requests_takes_strings_lists_and_tables(spec: object, expected: Requests) -> None:
    assert parse_requests(spec) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("cpu=0", r"^job\.requests\.cpu: '0' must be a number more than 0 \(cores, e\.g\."),
        ({"cpu": -1}, r"^job\.requests\.cpu: -1 must be a number more than 0"),
        ({"cpu": True}, r"^job\.requests\.cpu: True is not an amount"),
        ("cpu=lots", r"^job\.requests\.cpu: 'lots' must be a number more than 0"),
        ("gpu=0", r"^job\.requests\.gpu: '0' must be a number more than 0 \(e\.g\. gpu=1\)"),
        ("memory=huge", r"^job\.requests\.memory: 'huge' is not a size"),
        ("cpu=1,cpu=2", r"^job\.requests\.cpu: given twice"),
        ("gpu", r"^job\.requests: 'gpu' is not name=amount; use name=amount items"),
        ("max_running=2", r"^job\.requests\.max_running: is a limit of the node or a quota"),
        ("9gpu=1", r"^job\.requests: '9gpu' is not a resource name"),
    ],
)
def test_parse_requests_names_the_field(spec: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_requests(spec, field="job.requests")  # type: ignore[arg-type]


def test_parse_timeout_must_be_more_than_zero() -> None:
    assert parse_timeout("1m30s") == 90.0
    assert parse_timeout(0.5) == 0.5
    with pytest.raises(ValueError, match=r"^job\.timeout: '0s' must be more than 0; leave"):
        parse_timeout("0s", field="job.timeout")
    with pytest.raises(ValueError, match=r"^timeout: 'never' is not a duration"):
        parse_timeout("never")


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: Requests(cpu=-1), r"^requests\.cpu: -1 must be at least 0"),
        (lambda: Requests(memory=1.5), r"^requests\.memory: 1\.5 must be a whole number"),
        (lambda: Requests(resources={"cpu": 1}), r"'cpu' is not a named resource; give cpu in"),
        (lambda: Requests(resources={"gpu": 0}), r"^requests\.resources\.gpu: 0 must be more"),
        (lambda: Capacity(cpu=0), r"^capacity\.cpu: 0 must be more than 0"),
        (lambda: Capacity(cpu=4, max_running=0), r"^capacity\.max_running: 0 must be a whole"),
        (lambda: Capacity(cpu=4, resources={"GPU": 1}), r"'GPU' is not a resource name"),
        (lambda: Quota(weight=0), r"^quota\.weight: 0 must be more than 0"),
        (lambda: Quota(cpu=float("inf")), r"^quota\.cpu: inf must be a finite number"),
        (lambda: RunningJob("k", "a", Requests(), 0.0, runtime=0), r"^runtime: 0 must be more"),
        (lambda: RunningJob("k", "a", Requests(), 0.0, priority="x"), r"^priority: 'x' is not"),
    ],
)
def test_bad_values_name_the_field(make, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


# --- Submission and fit -----------------------------------------------------------------------

NODE = Capacity(cpu=8, memory=16 * G, resources={"gpu": 2, "ssd": 0}, max_running=10)


@pytest.mark.parametrize(
    ("requests", "message"),
    [
        (
            Requests(cpu=12),
            "requests.cpu: 12 is more than the node's capacity of 8; ask for at most 8",
        ),
        (
            Requests(memory=32 * G),
            "requests.memory: 32G is more than the node's capacity of 16G; ask for at most 16G",
        ),
        (Requests(resources={"gpu": 3}), "requests.gpu: 3 is more than the node's capacity of 2"),
        (Requests(resources={"ssd": 1}), "requests.ssd: 1 is more than the node's capacity of 0"),
        (Requests(resources={"fpga": 1}), "requests.fpga: the node has no 'fpga'; it offers cpu, "
                                          "memory, gpu"),
    ],
)  # fmt: skip
def test_requests_larger_than_the_node_are_refused_naming_the_resource(
    requests: Requests, message: str
) -> None:
    with pytest.raises(ValueError) as info:
        check_request(requests, NODE)
    assert str(info.value).startswith(message)


def test_requests_larger_than_the_tenant_quota_are_refused() -> None:
    check_request(Requests(cpu=8, resources={"gpu": 2}), NODE, Quota(cpu=8))
    with pytest.raises(
        ValueError,
        match=r"^job\.cpu: 6 is more than the tenant's quota of 4; ask for at most that, or "
        r"raise the quota",
    ):
        check_request(Requests(cpu=6), NODE, Quota(cpu=4), field="job")


def test_fits_counts_every_resource_and_a_running_slot() -> None:
    small = Capacity(cpu=2, memory=4 * G, resources={"gpu": 1}, max_running=2)
    assert fits(Requests(), small)
    assert fits(Requests(cpu=1, memory=2 * G), small, [Requests(cpu=1, memory=2 * G)])
    assert not fits(Requests(cpu=1, memory=3 * G), small, [Requests(cpu=1, memory=2 * G)])
    assert not fits(Requests(resources={"gpu": 1}), small, [Requests(resources={"gpu": 1})])
    assert not fits(Requests(cpu=0.1), small, [Requests(cpu=0.1), Requests(cpu=0.1)])  # slots
    # Float shares add up without a rounding error refusing the last one.
    assert fits(Requests(cpu=0.1), Capacity(cpu=1), [Requests(cpu=0.1)] * 9)
    assert not fits(Requests(cpu=0.1), Capacity(cpu=1), [Requests(cpu=0.1)] * 10)


# --- Starting in order ------------------------------------------------------------------------


def test_jobs_start_in_order_while_they_fit() -> None:
    plan = decide_starts([job("a"), job("b", 2), job("c")], [], Capacity(cpu=4), now=0.0)
    assert names(plan) == ["a", "b", "c"]
    assert plan.reservation is None
    assert plan.scanned == 3
    assert (dict(plan.held), plan.too_large) == ({}, ())


def test_the_walk_stops_when_every_running_slot_is_taken() -> None:
    candidates = [job(str(i), 0.1) for i in range(10)]
    plan = decide_starts(candidates, [run("r", 0.1)], Capacity(cpu=8, max_running=3), now=0.0)
    assert names(plan) == ["0", "1"]
    assert plan.reservation is not None
    assert plan.reservation.job.name == "2"  # the head: waits for a slot
    assert plan.scanned == 3


def test_at_most_max_scan_candidates_are_looked_at() -> None:
    candidates = [job("big", 8)] + [job(str(i), 1, runtime=1e9) for i in range(20)]
    plan = decide_starts(candidates, [run("r", 4)], Capacity(cpu=8), now=0.0, max_scan=5)
    assert plan.scanned == 5
    assert names(plan) == []  # nothing fits beside big, and none ends before it can start


# --- EASY backfill ----------------------------------------------------------------------------


def test_backfill_beside_the_reservation_or_before_its_start() -> None:
    node = Capacity(cpu=4)
    running = [run("r1", 2, started=-5.0, runtime=15.0)]  # ends at 10
    candidates = [
        job("big", 3, runtime=100),  # the head: 3 cores free at 10
        job("short", 1, runtime=8),  # over at 8, before 10
        job("beside", 1, runtime=500),  # takes the one core the head leaves at 10
        job("third", 1, runtime=1),  # no core left now
    ]
    plan = decide_starts(candidates, running, node, now=0.0)
    assert names(plan) == ["short", "beside"]
    assert plan.reservation is not None
    assert plan.reservation.job.name == "big"
    assert plan.reservation.start == 10.0
    assert plan.reservation.certain
    assert plan.reservation.spare["cpu"] == 0.0


def test_a_job_without_runtime_cannot_backfill_into_the_reservation() -> None:
    node = Capacity(cpu=4)
    running = [run("r1", 3, started=0.0, runtime=10.0)]
    candidates = [
        job("big", 4),
        job("untimed", 1),
        job("too-long", 1, runtime=10.001),
        job("just-in-time", 1, runtime=10.0),
    ]
    plan = decide_starts(candidates, running, node, now=0.0)
    assert names(plan) == ["just-in-time"]


def test_the_head_waits_for_a_running_job_without_runtime_and_nothing_backfills_into_it() -> None:
    node = Capacity(cpu=4)
    running = [run("forever", 2), run("timed", 1, started=0.0, runtime=20.0)]
    candidates = [job("big", 3, runtime=5), job("small", 1, runtime=5)]
    plan = decide_starts(candidates, running, node, now=1.0)
    # "forever" may end any moment; small would then hold the core big needs.
    assert names(plan) == []
    assert plan.reservation is not None
    assert (plan.reservation.start, plan.reservation.certain) == (1.0, False)


def test_jobs_started_in_order_count_in_the_reservation() -> None:
    node = Capacity(cpu=4, memory=8 * G)
    candidates = [
        job("first", 2, runtime=30, req={"memory": 6 * G}),
        job("big", 1, runtime=5, req={"memory": 8 * G}),  # waits for first's memory
        job("short", 1, runtime=30, req={"memory": G}),  # ends exactly when first does
        job("long", 1, runtime=31, req={"memory": 1}),  # all memory is the head's at 30
        job("cpu-only", 1, runtime=1000),  # the head leaves 3 cores spare at 30
    ]
    plan = decide_starts(candidates, [], node, now=0.0)
    assert names(plan) == ["first", "short", "cpu-only"]
    assert plan.reservation is not None
    assert plan.reservation.start == 30.0
    assert (plan.reservation.spare["memory"], plan.reservation.spare["cpu"]) == (0, 2)


def test_a_large_job_is_not_starved_by_a_stream_of_small_ones() -> None:
    """FIFO with backfill: the big job starts by its first reserved time; small ones keep going."""
    node = Capacity(cpu=4)
    queue: JobQueue[str] = JobQueue("fifo")
    running: list[RunningJob[str]] = []
    started: dict[str, float] = {}
    reserved_at = None
    now = 0.0
    for tick in range(120):
        now = tick * 0.5
        if tick % 2 == 0:  # a small job every second, and another a little later
            queue.push(f"s{tick}", now=now, requests=Requests(cpu=1), runtime=3.0)
            queue.push(f"t{tick}", now=now, requests=Requests(cpu=1), runtime=7.0)
        if tick == 4:
            queue.push("big", now=now, requests=Requests(cpu=4), runtime=10.0)
        running = [r for r in running if r.end is None or r.end > now]
        plan = decide_starts(queue.candidates(now), running, node, now=now)
        if plan.reservation is not None and plan.reservation.job.item == "big":
            reserved_at = plan.reservation.start if reserved_at is None else reserved_at
        for j in plan.start:
            queue.remove(j)
            started[j.item] = now
            running.append(RunningJob(j.item, j.tenant, j.requests, now, j.runtime))
    assert reserved_at is not None
    assert started["big"] <= reserved_at
    # Small jobs submitted after big still ran while it waited.
    assert any(started[k] < started["big"] for k in started if k != "big" and int(k[1:]) > 4)


# --- Quotas -----------------------------------------------------------------------------------


def test_a_tenant_held_by_its_quota_does_not_block_other_tenants() -> None:
    node = Capacity(cpu=8)
    quotas = {"a": Quota(max_running=1), "b": Quota(cpu=2)}
    running = [
        run("a-running", 1, runtime=10.0, tenant="a"),
        run("b-running", 2, runtime=10.0, tenant="b"),
    ]
    candidates = [
        Job("a1", "a"),
        Job("b1", "b"),
        Job("a2", "a"),
        Job("c-big", "c", Requests(cpu=8)),  # the head: a's and b's jobs are not
        Job("c-small", "c", runtime=1.0),
    ]
    plan = decide_starts(candidates, running, node, now=0.0, quotas=quotas)
    assert names(plan) == ["c-small"]
    assert dict(plan.held) == {
        "a": "quota.max_running: 1 of 1 jobs running",
        "b": "quota.cpu: 2 of 2 in use, and the next job asks for 1",
    }
    assert plan.reservation is not None
    assert plan.reservation.job.name == "c-big"


def test_a_quota_held_tenant_does_not_let_its_small_jobs_overtake_its_big_one() -> None:
    quotas = {"a": Quota(cpu=3)}
    running = [run("r", 2, tenant="a")]
    candidates = [Job("a-big", "a", Requests(cpu=2)), Job("a-small", "a"), Job("b", "b")]
    plan = decide_starts(candidates, running, Capacity(cpu=8), now=0.0, quotas=quotas)
    assert names(plan) == ["b"]


def test_a_held_tenant_is_skipped_by_the_queue_without_walking_its_jobs() -> None:
    queue: JobQueue[str] = JobQueue("fifo")
    for i in range(5000):
        queue.push(f"a{i}", now=0.0, tenant="a")
    queue.push("b0", now=1.0, tenant="b")
    running = [RunningJob("r", "a", Requests(), 0.0)]
    plan = decide_starts(
        queue.candidates(2.0),
        running,
        Capacity(cpu=64),
        now=2.0,
        quotas={"a": Quota(max_running=1)},
        max_scan=3,
    )
    assert [j.item for j in plan.start] == ["b0"]
    assert plan.scanned == 2


def test_jobs_that_no_longer_fit_at_all_are_reported_not_made_the_head() -> None:
    quotas = {"q": Quota(memory=G)}
    candidates = [
        job("huge", 16),
        Job("over-quota", "q", Requests(memory=2 * G)),
        job("gpu", req={"resources": {"gpu": 1}}),
        job("ok"),
    ]
    plan = decide_starts(candidates, [], Capacity(cpu=8), now=0.0, quotas=quotas)
    assert names(plan) == ["ok"]
    assert plan.reservation is None
    assert [(j.name, why) for j, why in plan.too_large] == [
        ("huge", "requests.cpu: 16 is more than the node's capacity of 8; ask for at most 8"),
        (
            "over-quota",
            "requests.memory: 2G is more than the tenant's quota of 1G; ask for at most that, "
            "or raise the quota",
        ),
        ("gpu", "requests.gpu: the node has no 'gpu'; it offers cpu, memory"),
    ]


# --- Properties of decide_starts --------------------------------------------------------------

TENANTS = ["a", "b", "c"]
amounts = st.fixed_dictionaries(
    {
        "cpu": st.sampled_from([0.5, 1.0, 2.0, 3.0, 4.0]),
        "memory": st.sampled_from([0, G, 3 * G]),
        "gpu": st.sampled_from([0, 0, 1]),
    }
)


def as_requests(a: dict) -> Requests:
    return Requests(a["cpu"], a["memory"], {"gpu": a["gpu"]} if a["gpu"] else {})


runtimes = st.one_of(st.none(), st.sampled_from([1.0, 2.5, 5.0, 10.0, 30.0]))


@st.composite
def scenarios(draw):
    capacity = Capacity(
        cpu=draw(st.sampled_from([2.0, 4.0, 8.0])),
        memory=draw(st.sampled_from([None, 4 * G, 8 * G])),
        resources={"gpu": draw(st.sampled_from([0, 1, 2]))},
        max_running=draw(st.sampled_from([None, 3, 6])),
    )
    running: list[RunningJob[int]] = []
    for i, (a, started, runtime, tenant) in enumerate(
        draw(st.lists(st.tuples(amounts, st.sampled_from([-9.0, -4.0, -1.0, 0.0]), runtimes,
                                st.sampled_from(TENANTS)), max_size=6))
    ):  # fmt: skip
        requests = as_requests(a)
        if fits(requests, capacity, [r.requests for r in running]):
            running.append(RunningJob(-1 - i, tenant, requests, started, runtime))
    candidates = [
        Job(str(i), tenant, as_requests(a), runtime)
        for i, (tenant, a, runtime) in enumerate(
            draw(st.lists(st.tuples(st.sampled_from(TENANTS), amounts, runtimes), max_size=12))
        )
    ]
    quotas = draw(
        st.dictionaries(
            st.sampled_from(TENANTS),
            st.builds(
                Quota,
                max_running=st.sampled_from([None, 1, 2]),
                cpu=st.sampled_from([None, 2.0, 4.0]),
            ),
        )
    )
    return capacity, running, candidates, quotas


def within(total: dict[str, float], capacity: Capacity) -> bool:
    limits = {
        "cpu": capacity.cpu,
        "memory": float("inf") if capacity.memory is None else capacity.memory,
        "max_running": float("inf") if capacity.max_running is None else capacity.max_running,
        **capacity.resources,
    }
    return all(v <= limits.get(k, 0.0) + 1e-9 for k, v in total.items() if v > 0)


def holding(requests: list[Requests]) -> dict[str, float]:
    total: dict[str, float] = {"cpu": 0.0, "memory": 0.0, "max_running": 0.0}
    for r in requests:
        total["cpu"] += r.cpu
        total["memory"] += r.memory
        total["max_running"] += 1
        for k, v in r.resources.items():
            total[k] = total.get(k, 0.0) + v
    return total


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_backfill_never_delays_the_head_past_its_reserved_start(scenario) -> None:
    capacity, running, candidates, quotas = scenario
    now = 0.0
    plan = decide_starts(candidates, running, capacity, now=now, quotas=quotas)
    started = list(plan.start)

    # Everything started fits beside what runs, on the node and within each quota.
    assert within(holding([r.requests for r in running] + [j.requests for j in started]), capacity)
    for tenant, quota in quotas.items():
        if not any(j.tenant == tenant for j in started):
            continue  # the running jobs may be over a quota that was lowered
        mine = holding([r.requests for r in running if r.tenant == tenant]
                       + [j.requests for j in started if j.tenant == tenant])  # fmt: skip
        if quota.max_running is not None:
            assert mine["max_running"] <= quota.max_running
        if quota.cpu is not None:
            assert mine["cpu"] <= quota.cpu + 1e-9

    if plan.reservation is None:
        return
    head = plan.reservation.job
    S = plan.reservation.start
    assert head not in started
    position = candidates.index(head)
    before = [j for j in started if candidates.index(j) < position]
    after = [j for j in started if candidates.index(j) > position]

    def head_fits_at_S(unbounded_running_ended: bool) -> bool:
        held: list[Requests] = []
        for r in running:
            if r.end is None:
                if not unbounded_running_ended:
                    held.append(r.requests)
            elif r.end > S:
                held.append(r.requests)
        for j in before:
            if j.runtime is None:
                if not unbounded_running_ended:
                    held.append(j.requests)
            elif now + j.runtime > S:
                held.append(j.requests)
        for j in after:  # backfilled: a job without runtime may run forever
            if j.runtime is None or now + j.runtime > S:
                held.append(j.requests)
        return within(holding([*held, head.requests]), capacity)

    # Once S has come and the unbounded jobs S counted on have ended, the head fits.
    assert head_fits_at_S(unbounded_running_ended=True)
    if plan.reservation.certain:
        assert head_fits_at_S(unbounded_running_ended=False)


@settings(max_examples=100, deadline=None)
@given(scenarios())
def test_without_a_head_every_job_that_fits_starts(scenario) -> None:
    capacity, running, candidates, _ = scenario
    plan = decide_starts(candidates, running, capacity, now=0.0)
    if plan.reservation is None:
        too_large = {id(j) for j, _ in plan.too_large}
        assert [j for j in candidates if id(j) not in too_large] == list(plan.start)


# --- Preemption -------------------------------------------------------------------------------


def victims(result) -> list[str] | None:
    return None if result is None else [v.key for v in result.victims]


def test_preemption_prefers_the_lowest_priority_then_the_most_recent() -> None:
    node = Capacity(cpu=4)
    running = [
        run("low-old", 1, started=1.0, priority="low", preemptible=True),
        run("low-new", 1, started=5.0, priority="low", preemptible=True),
        run("bg", 1, started=0.0, priority="background", preemptible=True),
        run("normal", 1, started=9.0, preemptible=True),
    ]
    result = decide_preemption(Requests(cpu=2), "high", running, node)
    assert result is not None
    assert result.mode is PreemptMode.REQUEUE
    assert victims(result) == ["bg", "low-new"]
    assert victims(decide_preemption(Requests(cpu=1), "high", running, node)) == ["bg"]


def test_only_preemptible_jobs_of_strictly_lower_priority_are_chosen() -> None:
    node = Capacity(cpu=3)
    running = [
        run("same", 1, priority="high", preemptible=True),
        run("pinned", 1, priority="background"),
        run("low", 1, priority="low", preemptible=True),
    ]
    assert victims(decide_preemption(Requests(cpu=1), P.HIGH, running, node)) == ["low"]
    # Even stopping "low" would leave it a core short: preempt nothing.
    assert decide_preemption(Requests(cpu=2), P.HIGH, running, node) is None


def test_no_preemption_for_a_job_that_fits_already() -> None:
    running = [run("low", 1, priority="low", preemptible=True)]
    assert decide_preemption(Requests(cpu=1), "critical", running, Capacity(cpu=2)) is None


def test_victims_that_free_nothing_needed_are_spared() -> None:
    node = Capacity(cpu=8, resources={"gpu": 1})
    running = [
        run("cpu-only", 4, priority="background", preemptible=True),
        run("gpu-user", 1, priority="low", preemptible=True, req={"resources": {"gpu": 1}}),
    ]
    result = decide_preemption(Requests(resources={"gpu": 1}), "normal", running, node)
    assert victims(result) == ["gpu-user"]


def test_suspending_frees_cpu_and_a_slot_but_not_memory() -> None:
    node = Capacity(cpu=2, memory=4 * G, max_running=2)
    running = [
        run("low1", 1, priority="low", preemptible=True, req={"memory": 2 * G}),
        run("low2", 1, 1.0, priority="low", preemptible=True, req={"memory": 2 * G}),
    ]
    cpu_bound = Requests(cpu=1)
    memory_bound = Requests(cpu=1, memory=G)
    result = decide_preemption(cpu_bound, "high", running, node, mode="suspend")
    assert result is not None
    assert (victims(result), result.mode) == (["low2"], PreemptMode.SUSPEND)
    assert decide_preemption(memory_bound, "high", running, node, mode="suspend") is None
    assert victims(decide_preemption(memory_bound, "high", running, node)) == ["low2"]
    with pytest.raises(ValueError, match=r"^preempt: 'pause' is not a preemption mode"):
        decide_preemption(cpu_bound, "high", running, node, mode="pause")


def test_a_suspended_job_holds_memory_but_no_cpu_or_slot() -> None:
    node = Capacity(cpu=2, memory=4 * G, max_running=2)
    suspended = RunningJob("s", "a", Requests(cpu=2, memory=3 * G), 0.0, 5.0, suspended=True)
    assert suspended.end is None
    running = [suspended, run("r", 1, preemptible=True, priority="low")]
    plan = decide_starts([job("cpu", 1), job("mem", 0.5, req={"memory": 2 * G})], running, node,
                         now=0.0)  # fmt: skip
    assert names(plan) == ["cpu"]
    # Never chosen again; the other job frees what is needed.
    result = decide_preemption(Requests(cpu=2), "high", running, node, mode="suspend")
    assert victims(result) == ["r"]


@settings(max_examples=250, deadline=None)
@given(
    st.lists(st.tuples(amounts, st.integers(0, 4), st.booleans(), st.integers(0, 20)), max_size=8),
    amounts,
    st.integers(0, 4),
    st.sampled_from(list(PreemptMode)),
)
def test_preemption_frees_just_enough_or_nothing(
    jobs: list, wanted: dict, priority: int, mode: PreemptMode
) -> None:
    node = Capacity(cpu=8, memory=8 * G, resources={"gpu": 2}, max_running=5)
    running: list[RunningJob[int]] = []
    for i, (a, prio, preemptible, started) in enumerate(jobs):
        requests = as_requests(a)
        if fits(requests, node, [r.requests for r in running]):
            running.append(RunningJob(i, "t", requests, float(started), None, prio, preemptible))
    request = as_requests(wanted)

    def fits_after(stopped: list[RunningJob[int]]) -> bool:
        held: list[Requests] = []
        for r in running:
            if r not in stopped:
                held.append(r.requests)
            elif mode is PreemptMode.SUSPEND:  # a stopped process keeps memory and devices
                held.append(Requests(0, r.requests.memory, r.requests.resources))
        total = holding([*held, request])
        total["max_running"] -= sum(1 for r in stopped if mode is PreemptMode.SUSPEND)
        return within(total, node)

    eligible = [r for r in running if r.preemptible and r.priority < priority]
    result = decide_preemption(request, priority, running, node, mode=mode)
    if result is None:
        assert fits_after([]) or not fits_after(eligible)
        return
    chosen = list(result.victims)
    assert chosen
    assert result.mode is mode
    assert all(v in eligible for v in chosen)
    assert not fits_after([])
    assert fits_after(chosen)
    for v in chosen:  # none of them could be spared
        assert not fits_after([c for c in chosen if c is not v])
