"""No file descriptor or thread outlives a run, whatever way it ended."""

from __future__ import annotations

import asyncio
import gc
import os
import threading

import pytest

import procvisor
from procvisor import Limits, cmd
from procvisor.process import _exitwatch


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _every_way_a_run_can_end() -> None:
    procvisor.run(["echo", "ok"])
    procvisor.run(["sh", "-c", "exit 3"])
    procvisor.run(["cat"], input=b"x" * 100_000)
    procvisor.run(["sh", "-c", "ulimit -n"], limits=Limits(open_files=64))
    (cmd("echo", "a") | cmd("cat") | cmd("wc", "-c")).run()
    with pytest.raises(procvisor.TimeoutExpired):
        procvisor.run(["sleep", "5"], timeout=0.05)
    with pytest.raises(procvisor.SpawnError):
        procvisor.run(["no-such-program-procvisor"])
    with pytest.raises(procvisor.SpawnError):
        (cmd("sleep", "5") | cmd("no-such-program-procvisor")).run()


@pytest.mark.parametrize("mechanism", ["pidfd", "thread"])
def test_no_fd_or_thread_leaks(mechanism, monkeypatch) -> None:
    monkeypatch.setattr(_exitwatch, "force_thread", mechanism == "thread")
    _every_way_a_run_can_end()  # warm up lazily opened things
    gc.collect()  # fds that garbage from earlier tests holds (an old loop's epoll) go now
    fds, threads = _fds(), threading.active_count()
    for _ in range(5):
        _every_way_a_run_can_end()
    assert _fds() == fds
    assert threading.active_count() == threads


async def test_no_fd_leaks_in_async_runs() -> None:
    await procvisor.arun(["true"])
    fds = _fds()
    await asyncio.gather(*(procvisor.arun(["echo", "x"]) for _ in range(50)))
    task = asyncio.ensure_future(procvisor.arun(["sleep", "5"], grace=0.1))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with await procvisor.spawn(["sleep", "5"]) as proc:
        assert proc.running
    assert _fds() == fds
