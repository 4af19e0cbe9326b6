"""Load balancing across pools: each strategy's choice, health, and the hash ring's stability."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from procvisor.errors import ProcessError
from procvisor.policy.balance import (
    Balancer,
    NoHealthyPool,
    Strategy,
    ring_hash,
)

KEYS = [f"task-{i}" for i in range(2000)]


def picks(balancer: Balancer, count: int) -> str:
    return "".join(balancer.choose() for _ in range(count))


# --- round_robin ------------------------------------------------------------------------------


def test_round_robin_takes_the_pools_in_turn() -> None:
    b = Balancer("round_robin", ["a", "b", "c"])
    assert picks(b, 7) == "abcabca"


def test_round_robin_skips_an_unhealthy_pool_until_it_recovers() -> None:
    b = Balancer(Strategy.ROUND_ROBIN, ["a", "b", "c"])
    assert picks(b, 2) == "ab"
    b.set_healthy("c", False)
    assert picks(b, 4) == "abab"
    b.set_healthy("c", True)
    assert picks(b, 4) == "cabc"


def test_round_robin_keeps_its_place_when_pools_come_and_go() -> None:
    b = Balancer("round_robin", ["a", "b", "c"])
    assert picks(b, 2) == "ab"
    b.add_pool("d")
    assert picks(b, 3) == "cda"
    b.remove_pool("a")  # before the cursor: the turn stays with b
    assert picks(b, 4) == "bcdb"
    b.remove_pool("d")  # the last one, while the cursor points past it
    assert picks(b, 3) == "cbc"


# --- weighted_round_robin ---------------------------------------------------------------------


def test_smooth_weighted_round_robin_gives_nginx_s_sequence() -> None:
    b = Balancer("weighted_round_robin", ["a", "b", "c"], weights={"a": 5, "b": 1, "c": 1})
    assert picks(b, 14) == "aabacaa" * 2


def test_float_weights_behave_like_their_ratios_exactly() -> None:
    weights = {"a": 2.5, "b": 0.5, "c": 0.5}
    b = Balancer("weighted_round_robin", ["a", "b", "c"], weights=weights)
    assert picks(b, 7 * 1000) == "aabacaa" * 1000

    thirds = Balancer("weighted_round_robin", ["a", "b"], weights={"a": 0.1, "b": 0.2})
    assert picks(thirds, 3 * 1000) == "bab" * 1000


def test_weighted_round_robin_restarts_over_the_healthy_pools() -> None:
    b = Balancer("weighted_round_robin", ["a", "b", "c"], weights={"a": 5, "b": 1, "c": 1})
    assert picks(b, 3) == "aab"
    b.set_healthy("a", False)
    assert picks(b, 4) == "bcbc"
    b.set_healthy("a", True)  # the current weights start again from 0
    assert picks(b, 7) == "aabacaa"
    b.set_healthy("a", True)  # no change: the sequence goes on
    assert picks(b, 7) == "aabacaa"


@given(st.lists(st.integers(min_value=1, max_value=12), min_size=1, max_size=6))
def test_weighted_round_robin_picks_each_pool_weight_times_per_round(weights: list[int]) -> None:
    names = [f"p{i}" for i in range(len(weights))]
    b = Balancer("weighted_round_robin", names, weights=dict(zip(names, weights, strict=True)))
    total = sum(weights)
    for _ in range(3):
        counts = Counter(b.choose() for _ in range(total))
        assert counts == {n: w for n, w in zip(names, weights, strict=True)}


def test_weighted_round_robin_interleaves_rather_than_bursts() -> None:
    b = Balancer("weighted_round_robin", ["a", "b"], weights={"a": 3, "b": 3})
    assert picks(b, 6) == "ababab"


# --- least_connections ------------------------------------------------------------------------


def test_least_connections_picks_the_pool_with_fewest_in_flight() -> None:
    b = Balancer("least_connections", ["a", "b", "c"])
    for pool, count in (("a", 3), ("b", 1), ("c", 2)):
        for _ in range(count):
            b.started(pool)
    assert b.choose() == "b"
    b.started("b")
    b.started("b")  # b 3, c 2
    assert b.choose() == "c"
    b.finished("a", 0.1)
    b.finished("a", 0.1)  # a 1
    assert b.choose() == "a"
    assert (b.in_flight("a"), b.in_flight("b"), b.in_flight("c")) == (1, 3, 2)


def test_least_connections_breaks_ties_round_robin() -> None:
    b = Balancer("least_connections", ["a", "b", "c"])
    assert picks(b, 6) == "abcabc"  # nothing ever started: all tie, so they take turns
    order = []
    for _ in range(6):
        pool = b.choose()
        b.started(pool)
        order.append(pool)
    assert "".join(order) == "abcabc"


def test_least_connections_divides_by_weight() -> None:
    b = Balancer("least_connections", ["a", "b"], weights={"a": 3, "b": 1})
    order = []
    for _ in range(8):
        pool = b.choose()
        b.started(pool)
        order.append(pool)
    assert Counter(order) == {"a": 6, "b": 2}


def test_least_connections_skips_unhealthy_pools() -> None:
    b = Balancer("least_connections", ["a", "b"])
    b.started("b")
    b.set_healthy("a", False)
    assert b.choose() == "b"


# --- least_response_time ----------------------------------------------------------------------


def finish_one(b: Balancer, pool: str, latency: float) -> None:
    b.started(pool)
    b.finished(pool, latency)


def test_least_response_time_measures_every_pool_first() -> None:
    b = Balancer("least_response_time", ["a", "b", "c"])
    finish_one(b, "a", 0.1)
    assert b.choose() == "b"  # no sample yet, nothing in flight: cost 0
    b.started("b")
    assert b.choose() == "c"
    b.started("c")
    # b and c have no sample but a task each: estimated at a's 0.1 * 2 > a's 0.1 * 1.
    assert b.choose() == "a"


def test_least_response_time_prefers_the_fast_pool_and_spreads_as_it_fills() -> None:
    b = Balancer("least_response_time", ["slow", "fast"])
    finish_one(b, "slow", 0.4)
    finish_one(b, "fast", 0.1)
    order = []
    for _ in range(5):
        pool = b.choose()
        b.started(pool)
        order.append(pool)
    # fast costs 0.1 * (k + 1) with k in flight; slow costs 0.4 until it takes one.
    # fast 0.1, 0.2, 0.3 < 0.4; then fast 0.4 ties slow 0.4 and fewer in flight (slow) wins.
    assert order == ["fast", "fast", "fast", "slow", "fast"]
    assert (b.in_flight("fast"), b.in_flight("slow")) == (4, 1)


def test_least_response_time_without_samples_is_least_connections() -> None:
    b = Balancer("least_response_time", ["a", "b", "c"])
    b.started("a")
    b.started("a")
    b.started("b")
    assert b.choose() == "c"


def test_a_new_pool_is_not_flooded_before_its_first_answer() -> None:
    b = Balancer("least_response_time", ["a", "b"])
    finish_one(b, "a", 1.0)
    finish_one(b, "b", 1.0)
    b.add_pool("new")
    order = []
    for _ in range(6):
        pool = b.choose()
        b.started(pool)
        order.append(pool)
    assert order[0] == "new"
    assert Counter(order) == {"a": 2, "b": 2, "new": 2}


def test_ewma_folds_latencies_with_alpha() -> None:
    b = Balancer("least_response_time", ["a"], alpha=0.5)
    assert b.ewma("a") is None
    finish_one(b, "a", 1.0)
    assert b.ewma("a") == 1.0
    finish_one(b, "a", 3.0)
    assert b.ewma("a") == 2.0
    b.started("a")
    b.finished("a", None)  # cancelled: no sample
    assert b.ewma("a") == 2.0
    assert b.in_flight("a") == 0

    default = Balancer("least_response_time", ["a"])
    finish_one(default, "a", 1.0)
    finish_one(default, "a", 2.0)
    assert default.ewma("a") == pytest.approx(0.3 * 2.0 + 0.7 * 1.0)


# --- random -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rand", "pool"),
    [(0.0, "a"), (0.2499, "a"), (0.25, "b"), (0.5, "c"), (0.7499, "c"), (0.75, "d"), (0.9999, "d")],
)
def test_random_lays_rand_evenly_over_the_pools(rand: float, pool: str) -> None:
    b = Balancer("random", ["a", "b", "c", "d"])
    assert b.choose(rand=rand) == pool


def test_random_spreads_over_the_healthy_pools_only() -> None:
    b = Balancer("random", ["a", "b", "c", "d"])
    b.set_healthy("b", False)
    grid = [i / 300 for i in range(300)]
    assert Counter(b.choose(rand=r) for r in grid) == {"a": 100, "c": 100, "d": 100}


def test_random_follows_the_weights() -> None:
    b = Balancer("random", ["a", "b"], weights={"a": 3, "b": 1})
    grid = [i / 400 for i in range(400)]
    assert Counter(b.choose(rand=r) for r in grid) == {"a": 300, "b": 100}


@given(st.floats(min_value=0.0, max_value=1.0, exclude_max=True))
def test_random_always_picks_a_healthy_pool(rand: float) -> None:
    b = Balancer("random", ["a", "b", "c"], weights={"a": 0.1, "b": 0.7, "c": 0.2})
    b.set_healthy("b", False)
    assert b.choose(rand=rand) in {"a", "c"}


# --- consistent_hash --------------------------------------------------------------------------


def assignment(b: Balancer) -> dict[str, str]:
    return {k: b.choose(key=k) for k in KEYS}


pool_names = st.lists(st.text(min_size=1, max_size=8), min_size=2, max_size=9, unique=True)


@settings(max_examples=40, deadline=None)
@given(pool_names)
def test_adding_a_pool_moves_about_1_in_n_keys_and_only_to_it(names: list[str]) -> None:
    before = assignment(Balancer("consistent_hash", names[:-1]))
    grown = Balancer("consistent_hash", names[:-1])
    grown.add_pool(names[-1])
    after = assignment(grown)
    moved = [k for k in KEYS if before[k] != after[k]]
    assert all(after[k] == names[-1] for k in moved)
    n = len(names)
    # The new pool's share is 1/n give or take the spread of 100 ring points (about ±10 %).
    assert len(moved) / len(KEYS) <= 1 / n + 0.5 / n + 0.02
    assert len(moved) / len(KEYS) >= 1 / n - 0.5 / n - 0.02


@settings(max_examples=40, deadline=None)
@given(pool_names, st.data())
def test_removing_a_pool_moves_only_its_keys(names: list[str], data: st.DataObject) -> None:
    gone = data.draw(st.sampled_from(names))
    b = Balancer("consistent_hash", names)
    before = assignment(b)
    b.remove_pool(gone)
    after = assignment(b)
    moved = [k for k in KEYS if before[k] != after[k]]
    assert moved == [k for k in KEYS if before[k] == gone]
    n = len(names)
    assert len(moved) / len(KEYS) <= 1 / n + 0.5 / n + 0.02


def test_an_unhealthy_pool_s_keys_move_and_come_back() -> None:
    b = Balancer("consistent_hash", ["a", "b", "c", "d"])
    before = assignment(b)
    b.set_healthy("b", False)
    during = assignment(b)
    assert {k for k in KEYS if before[k] != during[k]} == {k for k in KEYS if before[k] == "b"}
    assert "b" not in during.values()
    b.set_healthy("b", True)
    assert assignment(b) == before


def test_each_pool_owns_about_its_weighted_share() -> None:
    b = Balancer("consistent_hash", ["a", "b", "c"], weights={"a": 2, "b": 1, "c": 1})
    counts = Counter(assignment(b).values())
    assert counts["a"] / len(KEYS) == pytest.approx(0.5, abs=0.08)
    assert counts["b"] / len(KEYS) == pytest.approx(0.25, abs=0.06)


def test_vnodes_set_the_number_of_ring_points() -> None:
    one = Balancer("consistent_hash", ["a", "b"], vnodes=1)
    # One point each: the ring has two arcs, so every key lands on one of the two points.
    assert set(assignment(one).values()) <= {"a", "b"}
    assert len(one._ring_hashes) == 2
    assert len(Balancer("consistent_hash", ["a", "b"], weights={"a": 0.001})._ring_hashes) == 101


GOLDEN = {
    "user-1": "alpha",
    "user-2": "gamma",
    "user-3": "alpha",
    "user-4": "alpha",
    "user-5": "beta",
    "user-6": "beta",
    "tenant/acme": "beta",
    "é": "gamma",
}


def test_the_ring_is_the_same_in_every_process() -> None:
    # Fixed values: a change to the hash or the ring would re-shard every user's keys.
    assert ring_hash("alpha#0") == 16852031354762869319
    assert ring_hash("") == 16476032584258269876
    b = Balancer("consistent_hash", ["alpha", "beta", "gamma"])
    assert {k: b.choose(key=k) for k in GOLDEN} == GOLDEN


@pytest.mark.parametrize("seed", ["0", "4242"])
def test_the_ring_does_not_depend_on_pythonhashseed(seed: str) -> None:
    code = (
        "import json\n"
        "from procvisor.policy.balance import Balancer\n"
        "b = Balancer('consistent_hash', ['alpha', 'beta', 'gamma'])\n"
        f"print(json.dumps({{k: b.choose(key=k) for k in {list(GOLDEN)!r}}}))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": seed}
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == GOLDEN


# --- Health and errors ------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", list(Strategy))
def test_no_healthy_pool_names_the_pools(strategy: Strategy) -> None:
    b = Balancer(strategy, ["a", "b"])
    b.set_healthy("a", False)
    b.set_healthy("b", False)
    with pytest.raises(NoHealthyPool, match=r"^no healthy pool: 'a', 'b' are all unhealthy") as e:
        b.choose(key="k", rand=0.5)
    assert e.value.pools == ("a", "b")
    assert isinstance(e.value, ProcessError)
    b.set_healthy("b", True)
    assert b.choose(key="k", rand=0.5) == "b"
    assert b.healthy_pools() == ("b",)
    assert not b.is_healthy("a")


def test_no_pool_at_all_is_no_healthy_pool() -> None:
    b = Balancer("round_robin", ["a"])
    b.remove_pool("a")
    with pytest.raises(NoHealthyPool, match="add a pool"):
        b.choose()


def test_no_healthy_pool_survives_pickling() -> None:
    error = pickle.loads(pickle.dumps(NoHealthyPool(pools=["a"])))
    assert isinstance(error, NoHealthyPool)
    assert error.pools == ("a",)
    assert str(error) == "no healthy pool: 'a' is unhealthy; wait for one to recover or add a pool"


def test_unknown_strategy_lists_the_accepted_ones() -> None:
    accepted = r".*'round_robin'.*'consistent_hash'"
    with pytest.raises(
        ValueError, match=r"^strategy: 'fastest' is not a balancing strategy" + accepted
    ):
        Balancer("fastest", ["a"])
    assert Balancer("Least-Connections", ["a"]).strategy is Strategy.LEAST_CONNECTIONS


def test_consistent_hash_needs_a_key_and_random_needs_rand() -> None:
    with pytest.raises(ValueError, match=r"^key: .*pass key="):
        Balancer("consistent_hash", ["a"]).choose()
    with pytest.raises(TypeError, match=r"^key: "):
        Balancer("consistent_hash", ["a"]).choose(key=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^rand: .*pass rand="):
        Balancer("random", ["a"]).choose()
    with pytest.raises(ValueError, match=r"^rand: 1.0 must be in \[0, 1\)"):
        Balancer("random", ["a"]).choose(rand=1.0)


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (("round_robin", []), {}, r"^pools: must name at least one"),
        (("round_robin", "ab"), {}, r"^pools: 'ab' must be a list"),
        (("round_robin", ["a", "a"]), {}, r"^pools: 'a' is listed twice"),
        (("round_robin", [""]), {}, r"^pools: '' must be a non-empty string"),
        (("weighted_round_robin", ["a"]), {"weights": {"a": 0}}, r"^weights\['a'\]: 0 must be"),
        (("weighted_round_robin", ["a"]), {"weights": {"a": -1.5}}, r"^weights\['a'\]: "),
        (("weighted_round_robin", ["a"]), {"weights": {"a": float("inf")}}, r"^weights\['a'\]"),
        (("weighted_round_robin", ["a"]), {"weights": {"a": True}}, r"^weights\['a'\]"),
        (("weighted_round_robin", ["a"]), {"weights": {"b": 2}}, r"^weights: 'b' is not one of"),
        (("round_robin", ["a"]), {"weights": {"a": 2}}, r"^weights\['a'\]: .*weighted_round_robin"),
        (("consistent_hash", ["a"]), {"vnodes": 0}, r"^vnodes: 0 must be"),
        (("consistent_hash", ["a"]), {"weights": {"a": 1000}}, r"^weights\['a'\]: .*at most"),
        (("least_response_time", ["a"]), {"alpha": 0}, r"^alpha: 0 must be in \(0, 1\]"),
        (("least_response_time", ["a"]), {"alpha": 1.5}, r"^alpha: "),
    ],
)
def test_bad_settings_name_the_field(args: tuple, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Balancer(*args, **kwargs)


def test_reports_about_unknown_pools_or_without_a_start_are_refused() -> None:
    b = Balancer("least_connections", ["a"])
    with pytest.raises(ValueError, match=r"^pool: 'x' is not in this balancer; its pools are"):
        b.started("x")
    with pytest.raises(ValueError, match=r"^pool: 'a' has no task in flight; call started"):
        b.finished("a", 0.1)
    b.started("a")
    with pytest.raises(ValueError, match=r"^latency: -1.0 must be"):
        b.finished("a", -1.0)
    with pytest.raises(ValueError, match=r"^latency: nan must be"):
        b.finished("a", float("nan"))
    with pytest.raises(ValueError, match=r"^pool: 'a' is already in this balancer"):
        b.add_pool("a")
    with pytest.raises(ValueError, match=r"^weight: 0 must be"):
        b.add_pool("b", 0)
    b.remove_pool("a")
    with pytest.raises(ValueError, match=r"^pool: 'a' is not in this balancer"):
        b.finished("a", 0.1)


def test_repr_shows_the_counts() -> None:
    b = Balancer("least_connections", ["a", "b"], weights={"b": 2.5})
    b.started("a")
    b.set_healthy("b", False)
    assert repr(b) == (
        "<Balancer least_connections {'a': w=1 in_flight=1, 'b': w=2.5 in_flight=0 unhealthy}>"
    )
    assert b.pools == ("a", "b")
    assert b.weight("b") == 2.5
