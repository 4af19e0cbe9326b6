"""Pipelines: one process group, pipefail naming the stage, streaming, stopping together."""

from __future__ import annotations

import sys

import pytest

import procvisor
from helpers import pid_alive
from procvisor import NonZeroExit, SpawnError, TimeoutExpired, cmd

PY = sys.executable
PGID = "import os, sys; sys.stdout.write(sys.stdin.read()); print(os.getpgid(0))"


def test_three_stages_connected() -> None:
    pipeline = cmd("seq", "1", "1000") | cmd("grep", "7") | cmd("wc", "-l")
    result = pipeline.run()
    assert result.ok and result.stdout == b"271\n" and len(result.stages) == 3
    assert [s.returncode for s in result.stages] == [0, 0, 0]


def test_all_stages_share_one_process_group() -> None:
    first = cmd(PY, "-c", "import os; print(os.getpgid(0))")
    out = (first | cmd(PY, "-c", PGID) | cmd(PY, "-c", PGID)).read()
    pgids = out.split()
    assert len(set(pgids)) == 1
    result = (first | cmd("cat")).run()
    assert int(result.stdout) == result.stages[0].pid  # the first stage leads the group


def test_pipefail_names_the_rightmost_failed_stage() -> None:
    pipeline = cmd("sh", "-c", "echo bad >&2; exit 3") | cmd("cat") | cmd("true")
    result = pipeline.run()
    assert not result.ok and result.failed_stage == 0 and result.returncode == 3
    with pytest.raises(NonZeroExit) as info:
        pipeline.run(check=True)
    err = info.value
    assert err.stage == 0 and err.returncode == 3 and "pipeline stage 0" in str(err)
    assert "bad" in str(err)
    mid = cmd("echo") | cmd("sh", "-c", "exit 4") | cmd("sh", "-c", "cat; exit 5")
    assert mid.run().failed_stage == 2


def test_a_writer_cut_off_by_sigpipe_is_not_a_failure() -> None:
    result = (cmd("yes") | cmd("head", "-n", "2")).run(check=True, timeout=10)
    assert result.stdout == b"y\ny\n" and result.stages[0].signal == "SIGPIPE"


def test_stdin_from_bytes_and_from_a_file(tmp_path) -> None:
    assert (cmd("tr", "a-z", "A-Z") | cmd("rev")).read(input=b"abc\n") == "CBA\n"
    path = tmp_path / "in"
    path.write_text("3\n1\n2\n")
    assert (cmd("sort") | cmd("head", "-n", "1")).read(input=path) == "1\n"


def test_lines_streams_the_last_stage() -> None:
    got = list((cmd("seq", "1", "5") | cmd("grep", "-v", "3")).lines())
    assert got == ["1", "2", "4", "5"]


def test_leaving_lines_early_stops_every_stage() -> None:
    lines = (cmd("yes") | cmd("cat")).lines()
    assert [next(lines) for _ in range(3)] == ["y", "y", "y"]
    lines.close()  # no process may be left; the leak check verifies it


def test_lines_raises_at_the_end_if_the_pipeline_failed() -> None:
    with pytest.raises(NonZeroExit):
        list((cmd("echo", "x") | cmd("sh", "-c", "cat; exit 2")).lines())


def test_timeout_stops_all_stages() -> None:
    pipeline = cmd("sh", "-c", "sleep 30 & echo $!; wait") | cmd("cat")
    with pytest.raises(TimeoutExpired) as info:
        pipeline.run(timeout=0.3)
    assert str(info.value).startswith(
        "sh -c 'sleep 30 & echo $!; wait' | cat timed out after 0.3s and was stopped"
    )
    assert info.value.result is not None
    assert not pid_alive(int(info.value.result.stdout or b"0"))


async def test_arun_pipeline() -> None:
    result = await (cmd("printf", "b\\na\\n") | cmd("sort")).arun(check=True)
    assert result.stdout == b"a\nb\n"


def test_a_stage_that_cannot_start_stops_the_others() -> None:
    with pytest.raises(SpawnError) as info:
        (cmd("sleep", "30") | cmd("no-such-program-procvisor")).run()
    assert info.value.reason == "not_found"


def test_pipeline_wide_limits_belong_to_the_pipeline() -> None:
    with pytest.raises(ValueError, match="whole pipeline"):
        cmd("true", limits=procvisor.Limits(wall_time=1))
    ok = cmd("sh", "-c", "ulimit -n", limits=procvisor.Limits(open_files=33)) | cmd("cat")
    assert ok.read() == "33\n"
