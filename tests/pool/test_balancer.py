"""The Balancer over real pools: the policy's choice, fed with starts, latencies and health."""

from __future__ import annotations

import concurrent.futures as cf
import os

import pytest

from helpers import wait_for
from procvisor import Balancer, Pool
from procvisor.pool import NoHealthyPool


def pid_of_worker(_: object = None) -> int:
    return os.getpid()


@pytest.fixture
def pools():
    made = [Pool(workers=1), Pool(workers=1)]
    yield made
    for pool in made:
        pool.shutdown()


def test_round_robin_alternates_between_pools(pools) -> None:
    balancer = Balancer(pools, "round_robin")
    pids = [balancer.submit(pid_of_worker).result(timeout=10) for _ in range(4)]
    first, second = pools[0].pids()[0], pools[1].pids()[0]
    assert pids == [first, second, first, second]
    assert balancer.in_flight() == [0, 0]


def test_weighted_round_robin_follows_the_weights(pools) -> None:
    balancer = Balancer(pools, "weighted_round_robin", weights=[3, 1])
    pids = [balancer.submit(pid_of_worker).result(timeout=10) for _ in range(8)]
    assert pids.count(pools[0].pids()[0]) == 6
    assert pids.count(pools[1].pids()[0]) == 2


def test_least_connections_sends_work_to_the_idle_pool(pools, tmp_path) -> None:
    balancer = Balancer(pools, "least_connections")
    gate = tmp_path / "go"
    held = balancer.submit(_wait_for_file, str(gate))  # pool 0 now has one in flight
    pids = [balancer.submit(pid_of_worker).result(timeout=10) for _ in range(3)]
    assert set(pids) == {pools[1].pids()[0]}
    gate.touch()
    held.result(timeout=10)
    wait_for(lambda: balancer.in_flight() == [0, 0])


def test_consistent_hash_keeps_a_key_on_one_pool(pools) -> None:
    balancer = Balancer(pools, "consistent_hash")
    for key in ("alice", "bob", "carol"):
        pids = {balancer.schedule(pid_of_worker, key=key).result(timeout=10) for _ in range(3)}
        assert len(pids) == 1
    with pytest.raises(ValueError, match="key"):
        balancer.submit(pid_of_worker)


def test_a_shut_down_pool_is_skipped_and_none_left_is_an_error(pools) -> None:
    balancer = Balancer(pools, "round_robin")
    pools[0].shutdown()
    pids = {balancer.submit(pid_of_worker).result(timeout=10) for _ in range(3)}
    assert pids == {pools[1].pids()[0]}
    pools[1].shutdown()
    with pytest.raises(NoHealthyPool):
        balancer.submit(pid_of_worker)


def test_options_pass_through_and_futures_are_real(pools) -> None:
    balancer = Balancer(pools, "random")
    futures = [balancer.schedule(pow, (2, i), priority="high") for i in range(6)]
    assert sorted(f.result(timeout=10) for f in cf.as_completed(futures)) == [
        2**i for i in range(6)
    ]


def test_bad_arguments_are_clear_errors(pools) -> None:
    with pytest.raises(ValueError, match="strategy"):
        Balancer(pools, "fastest")
    with pytest.raises(ValueError, match="weights"):
        Balancer(pools, "weighted_round_robin", weights=[1])
    with pytest.raises(TypeError, match=r"procvisor\.Pool"):
        Balancer([object()])  # type: ignore[list-item]


def _wait_for_file(path: str) -> None:
    import time  # noqa: PLC0415

    deadline = time.monotonic() + 10
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.005)
