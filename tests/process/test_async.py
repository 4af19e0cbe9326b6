"""arun, spawn and Process: streaming, stopping, cancellation, exit-watch mechanisms."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest

import procvisor
from helpers import await_for, pid_alive
from procvisor import Process, TimeoutExpired
from procvisor.process import _exec, _exitwatch, start_ticks

PY = sys.executable
IGNORE_TERM_WITH_GRANDCHILD = "trap '' TERM; sleep 300 & echo $!; echo ready; wait"


@pytest.fixture(params=["pidfd", "thread"])
def exit_watch(request, monkeypatch) -> str:
    """Run a test under both exit-watch mechanisms."""
    if request.param == "pidfd" and not _exitwatch.pidfd_works():
        pytest.skip("pidfd_open is not available on this kernel")
    monkeypatch.setattr(_exitwatch, "force_thread", request.param == "thread")
    assert _exitwatch.mechanism() == request.param
    return request.param


async def test_arun_returns_the_result(exit_watch) -> None:
    r = await procvisor.arun(["sh", "-c", "echo hi; exit 4"])
    assert (r.returncode, r.stdout) == (4, b"hi\n")


async def test_many_concurrent_aruns(exit_watch) -> None:
    results = await asyncio.gather(*(procvisor.arun(["echo", str(i)]) for i in range(60)))
    assert [r.stdout for r in results] == [f"{i}\n".encode() for i in range(60)]


async def test_arun_timeout_stops_the_group() -> None:
    with pytest.raises(TimeoutExpired) as info:
        await procvisor.arun(["sh", "-c", IGNORE_TERM_WITH_GRANDCHILD], timeout=0.3, grace=0.2)
    result = info.value.result
    assert result is not None and result.signal == "SIGKILL"
    assert not pid_alive(int(result.stdout.split()[0]))


async def _started(proc: Process) -> int:
    """Read the handshake: the grandchild's pid, then 'ready'."""
    lines = proc.__aiter__()
    grandchild = int((await lines.__anext__()).text)
    assert (await lines.__anext__()).text == "ready"
    return grandchild


async def test_cancelling_arun_stops_term_ignoring_child_and_grandchild(exit_watch) -> None:
    proc = await procvisor.spawn(["sh", "-c", IGNORE_TERM_WITH_GRANDCHILD], grace=0.3)
    grandchild = await _started(proc)
    task = asyncio.ensure_future(proc.wait())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not proc.running and proc.returncode == -9
    assert not pid_alive(proc.pid) and not pid_alive(grandchild)


async def _arun_ignoring_term(tmp_path, grace: float) -> tuple[asyncio.Future[object], int]:
    """An arun task of a TERM-ignoring shell with a grandchild; the grandchild's pid."""
    marker = tmp_path / "pid"
    script = f"trap '' TERM; sleep 300 & echo $! > {marker}; wait"
    task = asyncio.ensure_future(procvisor.arun(["sh", "-c", script], grace=grace))
    await await_for(lambda: marker.exists() and marker.read_text().strip())
    return task, int(marker.read_text())


async def test_cancelling_an_awaited_arun(tmp_path) -> None:
    task, grandchild = await _arun_ignoring_term(tmp_path, grace=0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not pid_alive(grandchild)


async def test_second_cancellation_kills_at_once() -> None:
    proc = await procvisor.spawn(["sh", "-c", IGNORE_TERM_WITH_GRANDCHILD], grace=60)
    grandchild = await _started(proc)
    task = asyncio.ensure_future(proc.wait())
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.sleep(0.05)
    assert not task.done()  # waiting out the 60 s grace
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)
    assert not pid_alive(grandchild)


async def test_a_second_cancellation_of_arun_kills_at_once(tmp_path) -> None:
    task, grandchild = await _arun_ignoring_term(tmp_path, grace=60)
    task.cancel()
    await asyncio.sleep(0.05)
    assert not task.done() and pid_alive(grandchild)  # waiting out the 60 s grace
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)
    assert not pid_alive(grandchild)


async def test_cancelling_one_wait_of_a_process_gives_the_others_its_result() -> None:
    proc = await procvisor.spawn(["sleep", "30"])
    first, second = (asyncio.ensure_future(proc.wait()) for _ in range(2))
    await asyncio.sleep(0)
    first.cancel()  # stops the process, as cancelling a wait does
    with pytest.raises(asyncio.CancelledError):
        await first
    result = await asyncio.wait_for(second, 10)
    assert result.signal == "SIGTERM" and not proc.running


async def test_stop_escalates_to_sigkill_after_grace(exit_watch) -> None:
    proc = await procvisor.spawn(["sh", "-c", IGNORE_TERM_WITH_GRANDCHILD])
    grandchild = await _started(proc)
    result = await proc.stop(grace="200ms")
    assert result.signal == "SIGKILL" and not pid_alive(grandchild)


async def test_stop_with_a_cooperative_child_uses_the_stop_signal() -> None:
    async with await procvisor.spawn(["sleep", "30"], stop_signal="INT") as proc:
        assert proc.running and "running" in repr(proc)
    assert proc.returncode == -2 and "exited(-2)" in repr(proc)


async def test_async_with_stops_the_group_on_exit() -> None:
    async with await procvisor.spawn(["sh", "-c", IGNORE_TERM_WITH_GRANDCHILD], grace=0.2) as p:
        grandchild = await _started(p)
    assert not pid_alive(grandchild) and not p.running


async def test_streams_lines_tagged_by_stream() -> None:
    code = "import sys\nfor i in range(3):\n print(i, flush=True); print('e', i, file=sys.stderr)"
    proc = await procvisor.spawn([PY, "-c", code])
    lines = [(line.stream, line.text) async for line in proc]
    result = await proc.wait()
    assert [t for s, t in lines if s == "stdout"] == ["0", "1", "2"]
    assert [t for s, t in lines if s == "stderr"] == ["e 0", "e 1", "e 2"]
    assert result.returncode == 0 and result.stdout == b""  # streamed output is not kept


async def test_unread_output_is_bounded_and_never_blocks_the_child() -> None:
    code = "import sys\nfor i in range(20000): print('x' * 99)"
    proc = await procvisor.spawn([PY, "-c", code], max_output=10_000)
    result = await proc.wait()  # nobody reads: must still finish
    assert result.returncode == 0 and proc.dropped_bytes > 1_000_000
    kept = [line async for line in proc]
    assert 0 < sum(len(x.data) for x in kept) <= 10_000


async def test_signal_reaches_the_group() -> None:
    script = "trap 'echo got-usr1; exit 0' USR1; echo ready; while :; do sleep 0.05; done"
    proc = await procvisor.spawn(["sh", "-c", script])
    lines = proc.__aiter__()
    assert (await lines.__anext__()).text == "ready"
    proc.signal("USR1")
    rest = [line.text async for line in lines]  # sh also reports its sleep killed by USR1
    assert "got-usr1" in rest
    assert (await proc.wait()).returncode == 0


async def test_metrics_cover_the_whole_group() -> None:
    script = "sleep 30 & sleep 30 & echo ready; wait"
    async with await procvisor.spawn(["sh", "-c", script], grace=0.2) as proc:
        assert (await proc.__aiter__().__anext__()).text == "ready"
        m = proc.metrics()
        assert m.processes == 3 and m.rss > 0 and m.threads >= 3 and m.fds >= 3
        assert proc.metrics().cpu_percent >= 0.0


async def test_exit_status_unknown_when_another_reaper_took_it(exit_watch) -> None:
    proc = await procvisor.spawn(["true"])
    os.waitpid(proc.pid, 0)  # someone else reaps our child first
    result = await proc.wait()
    assert result.returncode is None and result.signal is None


async def test_start_ticks_match_proc_without_reading_it(monkeypatch) -> None:
    procs = [await procvisor.spawn(["sleep", "30"], grace=0.1) for _ in range(20)]
    try:
        assert [p.start_ticks for p in procs] == [start_ticks(p.pid) for p in procs]
    finally:
        await asyncio.gather(*(p.stop() for p in procs))
    # When the clock readings around the spawn straddle a tick, /proc is read instead.
    clock = iter(range(10**6))
    monkeypatch.setattr(_exec, "boot_ticks", lambda: next(clock))
    async with await procvisor.spawn(["sleep", "30"], grace=0.1) as proc:
        assert proc.start_ticks == start_ticks(proc.pid) and proc.start_ticks is not None
    gone = await procvisor.spawn(["true"])
    await gone.wait()
    assert gone.start_ticks is None  # read after it was reaped: unknown, never a guess


def test_process_has_no_public_constructor() -> None:
    with pytest.raises(TypeError, match="no public constructor"):
        Process()


def test_sync_run_under_the_thread_mechanism(exit_watch) -> None:
    assert procvisor.run(["sh", "-c", "exit 5"]).returncode == 5
