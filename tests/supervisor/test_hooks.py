"""Lifecycle hooks with real processes: env, exit codes, timeouts, leftovers, cancellation."""

from __future__ import annotations

import asyncio
import time

import pytest

from helpers import await_for, pid_alive
from procvisor.supervisor._hooks import OUTPUT_TAIL, HookOutcome, run_hook

ENV = {
    "PROCVISOR_SERVICE": "web",
    "PROCVISOR_INSTANCE": "web:1",
    "PROCVISOR_PID": "4242",
    "PROCVISOR_EXIT_CODE": "3",
}


async def hook(script: str, *, timeout: float = 10.0, cwd=None, env=ENV) -> HookOutcome:
    return await run_hook("post_stop", ["sh", "-c", script], timeout=timeout, env=env, cwd=cwd)


async def test_the_callers_variables_arrive_on_top_of_the_daemons(monkeypatch) -> None:
    monkeypatch.setenv("PROCVISOR_TEST_INHERITED", "from-daemon")
    script = (
        'echo "$PROCVISOR_SERVICE $PROCVISOR_INSTANCE $PROCVISOR_PID $PROCVISOR_EXIT_CODE"; '
        'echo "$PROCVISOR_TEST_INHERITED"'
    )
    outcome = await hook(script)
    assert outcome == HookOutcome(
        "post_stop", True, 0, "exit code 0", "web web:1 4242 3\nfrom-daemon\n"
    )


async def test_the_hook_runs_in_cwd_and_can_write_files(tmp_path) -> None:
    outcome = await hook('echo "$PROCVISOR_INSTANCE" > hook.out', cwd=tmp_path)
    assert outcome.ok
    assert (tmp_path / "hook.out").read_text() == "web:1\n"


async def test_a_nonzero_exit_gives_its_code_and_output_tail() -> None:
    outcome = await hook("echo checking; echo 'config missing' >&2; exit 2")
    assert outcome == HookOutcome(
        "post_stop", False, 2, "exit code 2: config missing", "checking\nconfig missing\n"
    )


async def test_a_hook_killed_by_a_signal() -> None:
    outcome = await hook("kill -KILL $$")
    assert (outcome.ok, outcome.returncode, outcome.detail) == (False, -9, "killed by SIGKILL")


async def test_a_hook_that_hangs_is_stopped_at_its_timeout(tmp_path) -> None:
    marker = tmp_path / "pid"
    # Ignores SIGTERM, as does its child: only the SIGKILL after the grace ends them.
    script = f"trap '' TERM; echo started; sleep 300 & echo $! > {marker}; wait"
    t0 = time.monotonic()
    outcome = await hook(script, timeout=1.0)
    elapsed = time.monotonic() - t0
    assert (outcome.ok, outcome.returncode, outcome.detail) == (False, -9, "timed out after 1s")
    assert outcome.output == "started\n"
    assert 1.0 <= elapsed < 5.0  # timeout 1 s + grace 1 s, generously bounded
    assert not pid_alive(int(marker.read_text()))


async def test_a_hook_that_exits_at_its_sigterm_is_not_killed() -> None:
    outcome = await hook("exec sleep 300", timeout=0.3)
    assert (outcome.returncode, outcome.detail) == (-15, "timed out after 300ms")


async def test_a_grandchild_left_running_is_stopped_with_the_group(tmp_path) -> None:
    marker = tmp_path / "pid"
    outcome = await hook(f"sleep 300 & echo $! > {marker}; echo launched")
    assert (outcome.ok, outcome.returncode, outcome.output) == (True, 0, "launched\n")
    assert not pid_alive(int(marker.read_text()))


async def test_cancelling_the_awaiting_task_stops_the_group(tmp_path) -> None:
    marker = tmp_path / "pid"
    script = f"trap '' TERM; sleep 300 & echo $! > {marker}; wait"
    task = asyncio.ensure_future(hook(script, timeout=60.0))
    await await_for(lambda: marker.exists() and marker.read_text().strip())
    t0 = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - t0 < 10.0
    assert not pid_alive(int(marker.read_text()))


async def test_a_missing_program_is_a_failed_outcome() -> None:
    outcome = await run_hook("pre_start", ["procvisor-no-such-hook"], timeout=5, env={}, cwd=None)
    assert (outcome.name, outcome.ok, outcome.returncode, outcome.output) == (
        "pre_start",
        False,
        None,
        "",
    )
    assert "'procvisor-no-such-hook' not found" in outcome.detail


async def test_a_missing_cwd_is_a_failed_outcome(tmp_path) -> None:
    outcome = await hook("true", cwd=tmp_path / "gone")
    assert (outcome.ok, outcome.returncode) == (False, None)
    assert "gone" in outcome.detail


async def test_output_keeps_only_the_tail_and_never_starts_inside_a_character() -> None:
    # 3 001 two-byte characters, then a last line: the kept tail starts mid-stream, and an
    # odd cut would split a character.
    script = "printf 'é%.0s' $(seq 3001); echo; echo last line; exit 1"
    outcome = await hook(script)
    assert len(outcome.output.encode()) <= OUTPUT_TAIL
    assert outcome.output.endswith("\nlast line\n")
    assert "\ufffd" not in outcome.output
    assert outcome.detail == "exit code 1: last line"


@pytest.mark.parametrize("timeout", [0, -1, float("nan")])
async def test_a_timeout_of_zero_or_less_is_a_value_error(timeout) -> None:
    with pytest.raises(ValueError, match="timeout"):
        await run_hook("pre_start", ["true"], timeout=timeout, env={}, cwd=None)


async def test_an_empty_command_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="empty"):
        await run_hook("pre_start", [], timeout=1, env={}, cwd=None)
