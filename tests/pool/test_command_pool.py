"""CommandPool with real worker programs speaking JSON lines: results, error answers, protocol
breaks, crashes, timeouts, health pings, recycling, logs, and that no worker outlives its pool."""

from __future__ import annotations

import os
import pickle
import sys
from pathlib import Path

import pytest

import procvisor
from helpers import pid_alive, reaped_and_gone, wait_for
from procvisor import (
    CommandPool,
    ProtocolError,
    SpawnError,
    TaskFailed,
    TaskTimeout,
    WorkerCrashed,
)

from .test_pool import assert_workers_die_with_their_parent, read_pid

PY = sys.executable
HERE = Path(__file__).parent
WORKER = [PY, str(HERE / "cmd_worker.py")]
EXAMPLES = HERE.parent.parent / "examples" / "workers"


def test_results_come_back_for_each_request_in_order() -> None:
    with CommandPool(WORKER, workers=2) as pool:
        assert pool.submit({"echo": {"a": [1, 2]}}).result(timeout=10) == {"a": [1, 2]}
        assert list(pool.map([{"echo": i} for i in range(50)], timeout=20)) == list(range(50))
        stats = pool.stats()
        assert stats.done == 51
        assert stats.workers == 2
        assert stats.failed == 0


def test_map_with_a_buffersize_submits_only_that_many_ahead() -> None:
    requests = iter([{"echo": i} for i in range(20)])
    with CommandPool(WORKER, workers=2) as pool:
        results = pool.map(requests, timeout=20, buffersize=3)
        assert len(list(requests)) == 17  # three were taken; take the rest away
        assert list(results) == [0, 1, 2]
        assert pool.stats().done == 3


def test_an_error_answer_fails_only_that_task_with_task_failed() -> None:
    with CommandPool(WORKER, workers=1) as pool:
        pid = pool.submit({"pid": True}).result(timeout=10)
        bad = pool.submit({"error": {"message": "no such user", "code": 404}})
        with pytest.raises(TaskFailed) as info:
            bad.result(timeout=10)
        assert info.value.error == {"message": "no such user", "code": 404}
        assert "no such user" in str(info.value)
        assert pool.submit({"pid": True}).result(timeout=10) == pid  # the worker stays
        assert pool.stats().failed == 1
    again = pickle.loads(pickle.dumps(info.value))
    assert type(again) is TaskFailed
    assert again.error == info.value.error


@pytest.mark.parametrize(
    ("data", "words"),
    [({"garbage": True}, "not JSON"), ({"wrong_id": True}, "answered id")],
)
def test_output_that_breaks_the_protocol_fails_the_task_and_replaces_the_worker(
    data: dict[str, bool], words: str
) -> None:
    with CommandPool(WORKER, workers=1) as pool:
        before = pool.submit({"pid": True}).result(timeout=10)
        with pytest.raises(ProtocolError, match=words) as info:
            pool.submit(data).result(timeout=10)
        assert str(before) in str(info.value)
        after = pool.submit({"pid": True}).result(timeout=10)
        assert after != before
        wait_for(lambda: not pid_alive(before))
        assert pool.stats().workers_crashed == 1


def test_a_worker_that_exits_fails_its_task_with_its_exit_code_and_is_replaced() -> None:
    with CommandPool(WORKER, workers=1) as pool:
        with pytest.raises(WorkerCrashed) as info:
            pool.submit({"exit": 7}).result(timeout=10)
        assert info.value.exit_code == 7
        assert pool.submit({"echo": "still here"}).result(timeout=10) == "still here"


def test_a_task_past_its_timeout_kills_the_worker_and_its_children(tmp_path: Path) -> None:
    child_file = tmp_path / "child"
    with CommandPool(WORKER, workers=1, timeout="300ms") as pool:
        before = pool.submit({"pid": True}).result(timeout=10)
        slow = pool.submit({"spawn": str(child_file)})
        child = read_pid(child_file)
        with pytest.raises(TaskTimeout, match="300ms"):
            slow.result(timeout=10)
        wait_for(lambda: reaped_and_gone(child))
        assert pool.submit({"pid": True}).result(timeout=10) != before
        assert pool.stats().timed_out == 1


def test_a_per_task_timeout_overrides_the_pools() -> None:
    with CommandPool(WORKER, workers=1, timeout=0.2) as pool:
        assert pool.schedule({"sleep": 0.5}, timeout=10).result(timeout=10) == "slept"


def test_a_worker_that_does_not_answer_its_health_ping_is_replaced() -> None:
    with CommandPool(
        WORKER,
        workers=1,
        env={"CMD_WORKER_IGNORE_PINGS": "1"},
        ping_interval=0.1,
        ping_timeout=0.2,
    ) as pool:
        first = pool.pids()[0]
        wait_for(lambda: pool.pids() and pool.pids()[0] != first, timeout=10)
        wait_for(lambda: reaped_and_gone(first))
        assert pool.stats().workers_crashed >= 1
        # Tasks still work between pings.
        assert pool.submit({"echo": 1}).result(timeout=10) == 1


def test_a_worker_that_answers_its_pings_is_kept(tmp_path: Path) -> None:
    with CommandPool(WORKER, workers=1, ping_interval=0.05, ping_timeout=5) as pool:
        pid = pool.pids()[0]
        # Wait through several pings: the worker answers them and nothing changes.
        wait_for(lambda: pool._workers[pid].pinged > pool._workers[pid].started + 0.2, timeout=10)
        assert pool.pids() == [pid]
        stats = pool.stats()
        assert stats.workers_crashed == 0
        assert stats.done == 0  # pings are not tasks


def test_stderr_goes_to_the_pools_log_file(tmp_path: Path) -> None:
    log = tmp_path / "pool.log"
    with CommandPool(WORKER, workers=2, stderr=log) as pool:
        assert pool.submit({"stderr": "a line for the log"}).result(timeout=10) == "logged"
    assert "a line for the log" in log.read_text()
    assert log.stat().st_mode & 0o777 == 0o600


def test_workers_are_recycled_after_max_tasks_and_max_memory() -> None:
    with CommandPool(WORKER, workers=1, max_tasks_per_worker=2) as pool:
        pids = [pool.submit({"pid": True}).result(timeout=10) for _ in range(4)]
        assert pids[0] == pids[1] != pids[2] == pids[3]
        assert pool.stats().workers_recycled >= 1
    with CommandPool(WORKER, workers=1, max_memory_per_worker="64M") as pool:
        big = pool.submit({"alloc": 100}).result(timeout=10)
        assert pool.submit({"pid": True}).result(timeout=10) != big


def test_a_missing_program_fails_pool_start_with_spawn_error() -> None:
    with pytest.raises(SpawnError) as info:
        CommandPool(["/nonexistent/worker", "--serve"], workers=1)
    assert info.value.reason == "not_found"


def test_bad_input_is_refused_with_the_field_named() -> None:
    with pytest.raises(ValueError, match="ping_timeout"):
        CommandPool(WORKER, workers=1, ping_timeout=-1)
    with pytest.raises(ValueError, match="workers"):
        CommandPool(WORKER, workers=0)
    with CommandPool(WORKER, workers=1) as pool:
        with pytest.raises(TypeError, match="JSON"):
            pool.submit({"echo": object()})
        with pytest.raises(ValueError, match="timeout"):
            pool.schedule({"echo": 1}, timeout=0)
    with pytest.raises(RuntimeError, match="shutdown"):
        pool.submit({"echo": 1})


def test_retries_resend_a_task_that_failed_with_a_retryable_error(tmp_path: Path) -> None:
    with CommandPool(WORKER, workers=1) as pool:
        fut = pool.schedule({"exit": 3}, retries=2, retry_on=(WorkerCrashed,), backoff="10ms")
        with pytest.raises(WorkerCrashed):
            fut.result(timeout=20)
        assert pool.stats().retried == 2


@pytest.mark.parametrize("worker", ["upper.py", "upper.sh"])
def test_the_example_workers_answer_requests_and_pings(worker: str) -> None:
    command = [PY, str(EXAMPLES / worker)] if worker.endswith(".py") else [str(EXAMPLES / worker)]
    with CommandPool(command, workers=2, ping_interval=0.05) as pool:
        assert list(pool.map(["hello", "pool"], timeout=10)) == ["HELLO", "POOL"]
        with pytest.raises(TaskFailed, match="data must be a string"):
            pool.submit(42).result(timeout=10)
        pid = pool.pids()[0]
        wait_for(lambda: pool._workers[pid].pinged > pool._workers[pid].started + 0.1)
        assert pool.stats().workers_crashed == 0


PARENT = f"""
import sys, time
sys.path.insert(0, {str(HERE.parent.parent / "src")!r})
from procvisor import CommandPool
pool = CommandPool({WORKER!r}, workers=2)
futures = [pool.submit({{"sleep": 60}}) for _ in range(2)]
while pool.stats().busy < 2:
    time.sleep(0.01)
print(*pool.pids(), flush=True)
time.sleep(60)
"""


def test_busy_workers_die_when_their_pools_process_is_killed_with_sigkill() -> None:
    assert_workers_die_with_their_parent(PARENT)


def test_command_pool_is_exported() -> None:
    assert procvisor.CommandPool is CommandPool
    assert os.path.exists(EXAMPLES / "upper.sh")


def test_a_misspelt_option_is_refused_with_a_guess() -> None:
    with pytest.raises(TypeError, match="did you mean 'max_workers'"):
        CommandPool(WORKER, max_worker=2)  # type: ignore[call-arg]
    with (
        CommandPool(WORKER, workers=1) as pool,
        pytest.raises(TypeError, match="did you mean 'timeout'"),
    ):
        pool.schedule({"echo": 1}, timout=3)  # type: ignore[call-arg]
