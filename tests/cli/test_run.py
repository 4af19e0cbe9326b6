"""``procvisor run``: exit statuses, one-line errors, JSON, and stopping on signals.

Argument handling, errors and ``--json`` run in process with click's ``CliRunner``. Streaming
and signals need the real command: with its output inherited the command writes to the real
fd 1, and a signal must reach a real procvisor process. Those tests start the installed
console script and wait for a handshake line before signalling it.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest
from click.testing import CliRunner, Result

import procvisor
from helpers import pid_alive
from procvisor.cli import main
from procvisor.cli._run import EXIT_LIMIT_FALLBACK, RunRequest, execute, limit_status
from procvisor.process import _cgroup
from procvisor.process._group import group_members

PROCVISOR = os.path.join(os.path.dirname(sys.executable), "procvisor")

# A command whose shell and grandchild both ignore SIGTERM, so only the SIGKILL after the
# grace period ends them. It prints its own pid (the group's id) and the grandchild's.
STUBBORN = 'trap "" TERM; sleep 300 & echo "ready $$ $!"; wait'


def invoke(*args: str) -> Result:
    """Run ``procvisor run ARGS`` in process."""
    return CliRunner().invoke(main, ["run", *args], prog_name="procvisor")


def one_error_line(result: Result) -> str:
    """The single ``procvisor: ...`` line the command printed on stderr."""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("procvisor: "), lines[0]
    assert "Traceback" not in result.output
    return lines[0]


def read_line(fd: int, timeout: float = 15.0) -> bytes:
    """Read one line from a pipe, failing after ``timeout`` seconds instead of hanging."""
    deadline = time.monotonic() + timeout
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise AssertionError(f"no full line within {timeout}s, got {line!r}")
        chunk = os.read(fd, 1)
        if not chunk:
            raise AssertionError(f"end of file before a full line, got {line!r}")
        line += chunk
    return line


Start = Callable[..., "subprocess.Popen[bytes]"]


def _default_stop_signals() -> None:
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)


@pytest.fixture
def start() -> Iterator[Start]:
    """Start the real ``procvisor`` with pipes; stop whatever is still running afterwards."""
    procs: list[subprocess.Popen[bytes]] = []

    def _start(*args: str, prefix: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [*prefix, PROCVISOR, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,
            # As from a terminal, whatever runs the tests (nohup ignores SIGHUP, a background
            # job SIGINT, and procvisor keeps an inherited "ignore" on purpose).
            preexec_fn=_default_stop_signals,  # noqa: PLW1509
        )
        procs.append(proc)
        return proc

    yield _start
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # procvisor stops its command's group
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def handshake(proc: subprocess.Popen[bytes]) -> tuple[int, int]:
    """Wait for STUBBORN's ``ready`` line; return (group leader, grandchild)."""
    assert proc.stdout is not None
    word, leader, grandchild = read_line(proc.stdout.fileno()).split()
    assert word == b"ready"
    return int(leader), int(grandchild)


# -- exit status ---------------------------------------------------------------------------


@pytest.mark.parametrize("code", [0, 3, 255])
def test_exit_code_is_passed_through(code: int) -> None:
    result = invoke("--", "sh", "-c", f"exit {code}")
    assert result.exit_code == code
    assert result.stderr == ""


def test_killed_by_signal_exits_128_plus_n_and_says_so() -> None:
    result = invoke("--", "sh", "-c", "kill -KILL $$")
    assert result.exit_code == 128 + signal.SIGKILL
    assert "killed by SIGKILL" in one_error_line(result)


def test_sigpipe_exit_is_quiet_as_in_a_shell() -> None:
    result = invoke("--", "sh", "-c", "kill -PIPE $$")
    assert result.exit_code == 128 + signal.SIGPIPE
    assert result.stderr == ""


def test_options_end_at_the_command_name() -> None:
    result = invoke("--json", "sh", "-c", "echo $0 $1", "--json", "--timeout")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["stdout"] == "--json --timeout\n"


# -- spawn errors: one line, the conventional status ----------------------------------------


def test_program_not_found_is_one_line_and_127() -> None:
    result = invoke("--", "procvisor-no-such-program")
    assert result.exit_code == 127
    assert "'procvisor-no-such-program' not found" in one_error_line(result)


def test_file_that_cannot_be_run_is_126(tmp_path) -> None:
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    result = invoke("--", str(script))
    assert result.exit_code == 126
    assert "chmod +x" in one_error_line(result)


def test_empty_command_is_a_usage_error() -> None:
    result = invoke("--", "")
    assert result.exit_code == 2
    assert "cmd is empty" in one_error_line(result)


# -- bad usage: one line naming the option and what it accepts, exit 2 ----------------------


@pytest.mark.parametrize(
    ("args", "option", "accepted"),
    [
        (["--memory", "12X"], "--memory", "'512M'"),
        (["--memory", "1K"], "--memory", "1M"),
        (["--cpu-time", "ten"], "--cpu-time", "'10s'"),
        (["--wall-time", "-1"], "--wall-time", "'10s'"),
        (["--timeout", "0"], "--timeout", "more than 0 seconds"),
        (["--timeout", "soon"], "--timeout", "'250ms'"),
        (["--grace", "1 min"], "--grace", "'2m'"),
        (["--open-files", "2"], "--open-files", "3 or more"),
        (["--processes", "many"], "--processes", "whole number"),
        (["--cpus", "all"], "--cpus", "a number like 0.5 or 2"),
        (["--nice", "25"], "--nice", "19 or less"),
        (["--stop-signal", "FOO"], "--stop-signal", "a name like 'TERM' or 'INT'"),
        (["--env", "NOEQUALS"], "--env", "KEY=VALUE"),
        (["--env", "=value"], "--env", "KEY=VALUE"),
        (["--cwd", "/no/such/dir"], "--cwd", "does not exist"),
    ],
)
def test_bad_option_value_names_the_option(args: list[str], option: str, accepted: str) -> None:
    result = invoke(*args, "--", "true")
    assert result.exit_code == 2
    line = one_error_line(result)
    assert f"'{option}'" in line and accepted in line


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], "missing argument 'CMD [ARGS]...'"),
        (["--bogus", "--", "true"], "no such option '--bogus'"),
        (["--timeout"], "'--timeout' requires an argument"),
        (["--shell", "--", "echo", "two words"], "--shell takes the command as one string"),
    ],
)
def test_usage_errors_are_one_line_with_a_pointer_to_help(args: list[str], expected: str) -> None:
    result = invoke(*args)
    assert result.exit_code == 2
    line = one_error_line(result)
    assert expected in line and "procvisor run --help" in line


def test_unknown_subcommand_is_one_line() -> None:
    result = CliRunner().invoke(main, ["runn"], prog_name="procvisor")
    assert result.exit_code == 2
    assert "no such command 'runn'" in one_error_line(result)


def test_help_documents_the_exit_statuses() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    for text in ("124", "125", "126", "127", "130", "143", "137", "--shell", "--grace"):
        assert text in result.stdout


# -- what the command gets: environment, directory, shell -----------------------------------


def test_env_adds_to_the_inherited_environment(monkeypatch) -> None:
    monkeypatch.setenv("PROCVISOR_TEST_OUTER", "outer")
    script = 'printf "%s|%s|%s" "$PROCVISOR_TEST_OUTER" "$A" "${EMPTY-unset}"'
    result = invoke("--json", "--env", "A=x=y", "--env", "EMPTY=", "--", "sh", "-c", script)
    assert result.exit_code == 0
    assert json.loads(result.stdout)["stdout"] == "outer|x=y|"


def test_env_files_apply_in_order_and_env_wins(tmp_path) -> None:
    (tmp_path / "a.env").write_text("A=from-a\nB=from-a\nC=from-a\n")
    (tmp_path / "b.env").write_text("export B='from b'\n")
    script = 'printf "%s|%s|%s" "$A" "$B" "$C"'
    args = ["--env-file", str(tmp_path / "a.env"), "--env-file", str(tmp_path / "b.env")]
    result = invoke("--json", *args, "--env", "C=cli", "--", "sh", "-c", script)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["stdout"] == "from-a|from b|cli"


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "no such file"), ("A=1\nnot an assignment\n", "line 2: expected KEY=VALUE")],
)
def test_a_bad_env_file_is_one_line_naming_the_file_and_line(tmp_path, content, message) -> None:
    path = tmp_path / "x.env"
    if content is not None:
        path.write_text(content)
    result = invoke("--env-file", str(path), "--", "true")
    assert result.exit_code == 2
    line = one_error_line(result)
    assert "'--env-file'" in line and f"{path}: {message}" in line


def test_cwd(tmp_path) -> None:
    result = invoke("--json", "--cwd", str(tmp_path), "--", "pwd")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["stdout"] == f"{tmp_path}\n"


def test_no_shell_unless_asked() -> None:
    result = invoke("--json", "--", "echo", "$((1+2))", "|", "wc")
    assert json.loads(result.stdout)["stdout"] == "$((1+2)) | wc\n"
    result = invoke("--json", "--shell", "--", "echo $((1+2)) | tr 3 4")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["stdout"] == "4\n" and data["args"] == ["/bin/sh", "-c", "echo $((1+2)) | tr 3 4"]


# -- --json ---------------------------------------------------------------------------------


def test_json_prints_the_whole_result_and_only_it() -> None:
    result = invoke("--json", "--", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert result.exit_code == 3
    assert result.stderr == ""
    assert result.stdout.count("\n") == 1
    data = json.loads(result.stdout)
    assert set(data) == {
        "args",
        "pid",
        "returncode",
        "signal",
        "exit_status",
        "stdout",
        "stderr",
        "duration",
        "timed_out",
        "limit_exceeded",
        "truncated",
        "usage",
        "limits",
    }
    assert data["args"] == ["sh", "-c", "echo out; echo err >&2; exit 3"]
    assert (data["stdout"], data["stderr"]) == ("out\n", "err\n")
    assert (data["returncode"], data["exit_status"], data["signal"]) == (3, 3, None)
    assert data["timed_out"] is False and data["limit_exceeded"] is None
    assert data["pid"] > 0 and data["duration"] > 0 and data["limits"] == {}


def test_json_on_timeout_still_prints_the_result_and_exits_124() -> None:
    result = invoke(
        "--json",
        "--timeout",
        "1s",
        "--grace",
        "0.5",
        "--",
        "sh",
        "-c",
        "echo partial; exec sleep 30",
    )
    assert result.exit_code == 124
    assert "timed out" in one_error_line(result)
    data = json.loads(result.stdout)
    assert data["timed_out"] is True and data["exit_status"] == 124
    assert data["stdout"] == "partial\n" and data["signal"] == "SIGTERM"


def test_json_on_an_exceeded_limit_reports_it_and_exits_with_the_stop_status() -> None:
    result = invoke("--json", "--wall-time", "300ms", "--", "sleep", "30")
    assert result.exit_code == 128 + signal.SIGTERM
    assert "wall_time" in one_error_line(result)
    data = json.loads(result.stdout)
    assert data["limit_exceeded"] == "wall_time" and data["limits"] == {"wall_time": "timer"}


def test_cpu_time_limit_exits_with_the_signal_that_enforced_it() -> None:
    spin = [sys.executable, "-c", "while True: pass"]
    result = invoke("--cpu-time", "1", "--", *spin)
    assert result.exit_code == 128 + signal.SIGXCPU
    assert "cpu_time" in one_error_line(result)


@pytest.mark.skipif(
    not (_cgroup.available("memory") and _cgroup.available("cpu")),
    reason="no writable cgroup v1 memory and cpu hierarchies here",
)
def test_memory_limit_kill_exits_137_and_names_the_limit() -> None:
    hog = [sys.executable, "-c", "b = bytearray(300 * 1024 * 1024)"]
    result = invoke("--json", "--memory", "64M", "--cpus", "1", "--", *hog)
    assert result.exit_code == 128 + signal.SIGKILL
    assert "memory limit of 64M" in one_error_line(result)
    data = json.loads(result.stdout)
    assert data["limit_exceeded"] == "memory"
    assert data["limits"] == {"memory": "cgroup", "cpus": "cgroup"}


def test_stop_signal_is_what_a_timeout_sends() -> None:
    code = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGINT, lambda *a: (print('got INT', flush=True), sys.exit(3)))\n"
        "print('ready', flush=True)\n"
        "time.sleep(30)\n"
    )
    result = invoke(
        "--json", "--timeout", "1s", "--stop-signal", "INT", "--", sys.executable, "-c", code
    )
    assert result.exit_code == 124
    data = json.loads(result.stdout)
    assert data["stdout"] == "ready\ngot INT\n" and data["returncode"] == 3


@pytest.mark.skipif(os.geteuid() != 0, reason="running as another user needs root")
def test_user_and_group_run_the_command_as_them() -> None:
    result = invoke("--json", "--user", "nobody", "--group", "nogroup", "--", "id", "-un")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["stdout"] == "nobody\n"
    unknown = invoke("--user", "procvisor-no-such-user", "--", "true")
    assert unknown.exit_code == 125
    assert "user 'procvisor-no-such-user' does not exist" in one_error_line(unknown)


def test_a_limit_never_exits_0_even_if_the_command_did() -> None:
    # The command caught the stop signal and exited 0: the run still failed.
    stopped = procvisor.Result(
        args=("x",),
        pid=1,
        returncode=0,
        signal=None,
        stdout=b"",
        stderr=b"",
        duration=1.0,
        limit_exceeded="wall_time",
    )
    assert stopped.exit_status == 0
    assert limit_status(stopped) == EXIT_LIMIT_FALLBACK == 137


def test_execute_takes_a_request() -> None:
    assert execute(RunRequest(command=("sh", "-c", "exit 5"))) == 5


# -- the real command: live output, and signals stop the whole group ------------------------


def test_output_streams_live_and_stdin_is_inherited(start: Start) -> None:
    proc = start("run", "--", "sh", "-c", 'echo first; echo to-stderr >&2; read x; echo "got $x"')
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    # "first" arrives while the command still waits for its input: nothing is buffered.
    assert read_line(proc.stdout.fileno()) == b"first\n"
    assert read_line(proc.stderr.fileno()) == b"to-stderr\n"
    proc.stdin.write(b"hello\n")
    assert read_line(proc.stdout.fileno()) == b"got hello\n"
    assert proc.wait(timeout=15) == 0


def test_timeout_exits_124_with_one_line(start: Start) -> None:
    proc = start("run", "--timeout", "1s", "--grace", "0.5", "--", "sh", "-c", STUBBORN)
    leader, grandchild = handshake(proc)
    assert proc.wait(timeout=15) == 124
    assert proc.stderr is not None
    err = proc.stderr.read().decode()
    assert err.startswith("procvisor: ") and err.count("\n") == 1 and "timed out" in err
    assert not pid_alive(leader) and not pid_alive(grandchild)


@pytest.mark.parametrize(
    ("sig", "status"),
    [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)],
)
def test_signal_to_procvisor_stops_the_whole_group(
    start: Start, sig: signal.Signals, status: int
) -> None:
    proc = start("run", "--grace", "0.5", "--", "sh", "-c", STUBBORN)
    leader, grandchild = handshake(proc)
    proc.send_signal(sig)
    assert proc.wait(timeout=15) == status
    assert not pid_alive(leader) and not pid_alive(grandchild)
    assert group_members(leader) == []
    assert proc.stderr is not None
    err = proc.stderr.read().decode()
    assert err.startswith(f"procvisor: {sig.name} received") and err.count("\n") == 1


def test_a_second_signal_kills_the_group_at_once(start: Start) -> None:
    # With a minute of grace, only the second Ctrl-C can end this within the deadline.
    proc = start("run", "--grace", "60", "--", "sh", "-c", STUBBORN)
    leader, grandchild = handshake(proc)
    proc.send_signal(signal.SIGINT)
    assert proc.stderr is not None
    assert b"SIGINT received" in read_line(proc.stderr.fileno())
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=15) == 130
    assert not pid_alive(leader) and not pid_alive(grandchild)


def test_an_ignored_sighup_stays_ignored(start: Start) -> None:
    # As under nohup: SIGHUP was ignored when procvisor started, so it must not stop the run.
    nohup = ("sh", "-c", 'trap "" HUP; exec "$0" "$@"')
    proc = start("run", "--grace", "0.5", "--", "sh", "-c", STUBBORN, prefix=nohup)
    leader, _ = handshake(proc)
    proc.send_signal(signal.SIGHUP)  # dropped by the kernel ...
    proc.send_signal(signal.SIGTERM)  # ... so this is the first signal procvisor sees
    assert proc.wait(timeout=15) == 128 + signal.SIGTERM
    assert group_members(leader) == []
