"""procvisor.run: output, exit codes, errors, stopping, with real processes."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import procvisor
from helpers import pid_alive
from procvisor import NonZeroExit, Signaled, SpawnError, TimeoutExpired

PY = sys.executable


def test_captures_stdout_stderr_and_exit_code() -> None:
    r = procvisor.run(
        [PY, "-c", "import sys; print('out'); print('err', file=sys.stderr); exit(3)"]
    )
    assert (r.returncode, r.stdout, r.stderr) == (3, b"out\n", b"err\n")
    assert r.signal is None and not r.ok and r.exit_status == 3
    assert r.stdout_text == "out\n" and r.pid > 0 and r.duration > 0


def test_string_command_is_split_without_a_shell() -> None:
    r = procvisor.run("echo '$HOME' \"a b\"")
    assert r.stdout == b"$HOME a b\n"


def test_shell_runs_only_when_asked() -> None:
    r = procvisor.run("echo $((2+3)) | tr 5 6", shell=True)
    assert r.stdout == b"6\n"


def test_check_raises_nonzero_exit_with_stderr_tail() -> None:
    with pytest.raises(NonZeroExit) as info:
        procvisor.run(["sh", "-c", "echo boom >&2; exit 7"], check=True)
    err = info.value
    assert err.returncode == 7 and "boom" in err.stderr_tail and "boom" in str(err)
    assert err.command == ("sh", "-c", "echo boom >&2; exit 7")
    assert err.result is not None and err.result.returncode == 7


def test_killed_by_signal_reports_its_name() -> None:
    r = procvisor.run(["sh", "-c", "kill -SEGV $$"])
    assert r.returncode == -signal.SIGSEGV and r.signal == "SIGSEGV"
    assert r.exit_status == 128 + signal.SIGSEGV
    with pytest.raises(Signaled) as info:
        procvisor.run(["sh", "-c", "kill -SEGV $$"], check=True)
    assert info.value.signal == "SIGSEGV"


def test_timeout_stops_the_group_and_keeps_partial_output() -> None:
    with pytest.raises(TimeoutExpired) as info:
        procvisor.run(["sh", "-c", "echo started; exec sleep 30"], timeout="200ms")
    err = info.value
    assert err.timeout == pytest.approx(0.2)
    assert err.stdout == b"started\n" and err.result is not None
    assert err.result.timed_out and err.result.signal == "SIGTERM"
    assert err.result.exit_status == 124


def test_timeout_kills_term_ignoring_child_and_grandchild_after_grace() -> None:
    script = "trap '' TERM; sleep 30 & echo $!; wait"
    with pytest.raises(TimeoutExpired) as info:
        procvisor.run(["sh", "-c", script], timeout=0.3, grace=0.2)
    result = info.value.result
    assert result is not None and result.signal == "SIGKILL"
    grandchild = int(result.stdout)
    assert not pid_alive(grandchild)


def test_leftover_group_members_are_stopped_when_the_command_exits() -> None:
    r = procvisor.run(["sh", "-c", "sleep 30 & echo $!"], timeout=10)
    assert r.returncode == 0
    assert not pid_alive(int(r.stdout))


def test_big_input_and_output_do_not_deadlock() -> None:
    data = os.urandom(3 * 1024 * 1024)
    r = procvisor.run(["cat"], input=data)
    assert r.stdout == data and not r.truncated


def test_text_input_and_input_from_a_file(tmp_path) -> None:
    assert procvisor.run(["cat"], input="héllo").stdout == "héllo".encode()
    path = tmp_path / "in.txt"
    path.write_bytes(b"from file")
    assert procvisor.run(["cat"], input=path).stdout == b"from file"
    with open(path, "rb") as f:
        assert procvisor.run(["cat"], input=f).stdout == b"from file"


def test_stdin_is_devnull_by_default() -> None:
    assert procvisor.run(["cat"], timeout=5).stdout == b""


def test_max_output_keeps_the_tail_and_says_so() -> None:
    r = procvisor.run([PY, "-c", "print('a' * 5000 + 'END')"], max_output=100)
    assert r.truncated and len(r.stdout) == 100 and r.stdout.endswith(b"END\n")


def test_env_is_added_to_or_replaces_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("PROCVISOR_TEST_OUTER", "outer")
    code = "import os; print(os.environ.get('PROCVISOR_TEST_OUTER'), os.environ.get('X'))"
    assert procvisor.run([PY, "-c", code], env={"X": "1"}).stdout == b"outer 1\n"
    r = procvisor.run([PY, "-c", code], env={"X": "2"}, inherit_env=False)
    assert r.stdout == b"None 2\n"


def test_cwd_and_umask(tmp_path) -> None:
    r = procvisor.run(["sh", "-c", "pwd; umask"], cwd=tmp_path, umask="027")
    assert r.stdout.decode().split() == [str(tmp_path), "0027"]


def test_cwd_that_is_ours_or_another(tmp_path, monkeypatch) -> None:
    # Our own directory needs no chdir (posix_spawn); another one does (subprocess): the
    # child runs where it was asked to either way, also after we moved.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    for cwd, where in ((tmp_path, tmp_path), (".", tmp_path), ("sub", tmp_path / "sub")):
        assert procvisor.run(["pwd"], cwd=cwd).stdout.decode().strip() == str(where)
    monkeypatch.chdir(tmp_path / "sub")
    assert procvisor.run(["pwd"], cwd=tmp_path).stdout.decode().strip() == str(tmp_path)


def test_merge_stderr_interleaves_into_stdout() -> None:
    r = procvisor.run(["sh", "-c", "echo a; echo b >&2; echo c"], merge_stderr=True)
    assert r.stdout == b"a\nb\nc\n" and r.stderr == b""


def test_capture_false_inherits_the_parents_fds(capfd) -> None:
    r = procvisor.run(["sh", "-c", "echo to-out; echo to-err >&2"], capture=False)
    assert r.stdout == b"" and r.returncode == 0
    captured = capfd.readouterr()
    assert captured.out == "to-out\n" and captured.err == "to-err\n"


def test_usage_comes_from_the_kernel() -> None:
    r = procvisor.run([PY, "-c", "sum(range(3_000_000))"])
    assert r.usage is not None and r.usage.cpu > 0 and r.usage.max_rss > 0


def test_child_runs_in_its_own_session() -> None:
    code = "import os; print(os.getsid(0) == os.getpid(), os.getpgid(0) == os.getpid())"
    assert procvisor.run([PY, "-c", code]).stdout == b"True True\n"


def test_sigpipe_is_default_in_the_child() -> None:
    # Python ignores SIGPIPE; a child must not inherit that, or `yes | head` never ends.
    r = procvisor.run(["sh", "-c", "yes | head -c 1 >/dev/null; echo done"], timeout=10)
    assert r.stdout == b"done\n"


def _signal_mask(status: bytes, field: bytes) -> int:
    line = next(x for x in status.splitlines() if x.startswith(field + b":"))
    return int(line.split()[1], 16)


@pytest.mark.parametrize("cwd", [None, "/"], ids=["posix_spawn", "subprocess"])
def test_the_child_keeps_ignored_signals_and_resets_the_rest(cwd: str | None) -> None:
    # What exec itself keeps: a signal ignored here (as under nohup) stays ignored, a handled
    # one is default again; SIGPIPE and SIGXFSZ, which Python ignores for itself, are default.
    bit = lambda sig: 1 << (sig - 1)  # noqa: E731
    old = {s: signal.getsignal(s) for s in (signal.SIGHUP, signal.SIGUSR1)}
    try:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGUSR1, lambda *_: None)
        status = procvisor.run(["cat", "/proc/self/status"], cwd=cwd, check=True).stdout
        # And once this process stops ignoring it, neither does the child.
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        after = procvisor.run(["cat", "/proc/self/status"], cwd=cwd, check=True).stdout
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    ignored, caught = _signal_mask(status, b"SigIgn"), _signal_mask(status, b"SigCgt")
    assert ignored & bit(signal.SIGHUP)
    assert not ignored & (bit(signal.SIGPIPE) | bit(signal.SIGXFSZ) | bit(signal.SIGUSR1))
    assert caught == 0
    assert not _signal_mask(after, b"SigIgn") & bit(signal.SIGHUP)


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_runs_as_another_user_without_roots_groups() -> None:
    r = procvisor.run(["id", "-u"], user="nobody")
    assert r.stdout.strip() == b"65534"
    groups = procvisor.run(["id", "-G"], user="nobody").stdout.split()
    assert b"0" not in groups


# -- bad input: each gives its specific error, nothing is left running --------------------


def test_empty_argv_is_a_value_error() -> None:
    for bad in ([], "", "   ", [""]):
        with pytest.raises(ValueError, match="cmd is empty"):
            procvisor.run(bad)


def test_nul_bytes_are_refused() -> None:
    with pytest.raises(ValueError, match=r"cmd\[1\] contains a NUL byte"):
        procvisor.run(["echo", "a\0b"])
    with pytest.raises(ValueError, match=r"env\['X'\] contains a NUL byte"):
        procvisor.run(["true"], env={"X": "a\0b"})
    with pytest.raises(ValueError, match="not a valid variable name"):
        procvisor.run(["true"], env={"A=B": "x"})


def test_missing_program() -> None:
    with pytest.raises(SpawnError) as info:
        procvisor.run(["no-such-program-procvisor"])
    assert info.value.reason == "not_found" and "not found in PATH" in str(info.value)
    with pytest.raises(SpawnError) as info:
        procvisor.run(["/no/such/program"])
    assert info.value.reason == "not_found"


def test_file_that_is_not_executable(tmp_path) -> None:
    path = tmp_path / "script.sh"
    path.write_text("#!/bin/sh\necho hi\n")
    with pytest.raises(SpawnError) as info:
        procvisor.run([str(path)])
    assert info.value.reason == "permission_denied" and "chmod +x" in str(info.value)
    with pytest.raises(SpawnError) as info:
        procvisor.run([str(tmp_path)])
    assert info.value.reason == "permission_denied"


def test_executable_without_interpreter_line(tmp_path) -> None:
    path = tmp_path / "noshebang"
    path.write_bytes(b"\x00\x01\x02garbage")
    path.chmod(0o755)
    with pytest.raises(SpawnError) as info:
        procvisor.run([str(path)])
    assert info.value.reason == "exec_format"


@pytest.mark.parametrize("cwd", [None, "/"], ids=["posix_spawn", "subprocess"])
def test_a_script_whose_interpreter_is_missing_names_it(tmp_path, cwd) -> None:
    path = tmp_path / "script"
    path.write_text("#!/no/such/interpreter -x\necho hi\n")
    path.chmod(0o755)
    with pytest.raises(SpawnError) as info:
        procvisor.run([str(path)], cwd=cwd)
    assert info.value.reason == "not_found"
    assert str(info.value) == (
        f"cannot start {str(path)!r}: its '#!' line names '/no/such/interpreter', "
        "which does not exist"
    )


def test_a_binary_whose_loader_is_missing_says_so(tmp_path) -> None:
    binary = Path("/bin/true").read_bytes()
    loader = next(part for part in binary.split(b"\0") if part.startswith(b"/lib"))
    path = tmp_path / "foreign"
    path.write_bytes(binary.replace(loader, loader[:-1] + b"X", 1))
    path.chmod(0o755)
    with pytest.raises(SpawnError) as info:
        procvisor.run([str(path)])
    assert info.value.reason == "not_found"
    assert "its dynamic loader does not exist here" in str(info.value)


def test_bad_cwd_user_and_group(tmp_path) -> None:
    with pytest.raises(SpawnError) as info:
        procvisor.run(["true"], cwd=tmp_path / "missing")
    assert info.value.reason == "bad_cwd"
    with pytest.raises(SpawnError) as info:
        procvisor.run(["true"], user="no-such-user-procvisor")
    assert info.value.reason == "bad_user"
    with pytest.raises(SpawnError) as info:
        procvisor.run(["true"], group="no-such-group-procvisor")
    assert info.value.reason == "bad_group"


def test_bad_option_values_name_the_field() -> None:
    with pytest.raises(ValueError, match="timeout"):
        procvisor.run(["true"], timeout="soon")
    with pytest.raises(ValueError, match="timeout"):
        procvisor.run(["true"], timeout=0)
    with pytest.raises(ValueError, match="stop_signal"):
        procvisor.run(["true"], stop_signal="NOPE")
    with pytest.raises(ValueError, match="umask"):
        procvisor.run(["true"], umask="999")
    with pytest.raises(TypeError, match="limits"):
        procvisor.run(["true"], limits={"memory": "1G"})  # type: ignore[arg-type]


def test_errors_survive_pickling() -> None:
    try:
        procvisor.run(["sh", "-c", "echo x >&2; exit 2"], check=True)
    except NonZeroExit as exc:
        copy = pickle.loads(pickle.dumps(exc))
        assert type(copy) is NonZeroExit and str(copy) == str(exc)
        assert copy.returncode == 2 and copy.result == exc.result
    try:
        procvisor.run(["no-such-program-procvisor"])
    except SpawnError as exc:
        copy = pickle.loads(pickle.dumps(exc))
        assert copy.reason == "not_found" and copy.command == exc.command


def test_ctrl_c_in_the_sync_api_stops_the_whole_group(tmp_path) -> None:
    script = textwrap.dedent(
        """
        import procvisor, signal
        # Background jobs start with SIGINT ignored; a terminal's Ctrl-C path needs the handler.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        code = "trap '' TERM; sleep 300 & echo $!; echo ready; wait"
        procvisor.run(["sh", "-c", code], capture=False, grace=0.3)
        """
    )
    child = subprocess.Popen([PY, "-c", script], stdout=subprocess.PIPE)
    assert child.stdout is not None
    grandchild = int(child.stdout.readline())
    assert child.stdout.readline() == b"ready\n"
    child.send_signal(signal.SIGINT)
    assert child.wait(timeout=20) == -signal.SIGINT  # KeyboardInterrupt propagated
    child.stdout.close()
    assert not pid_alive(grandchild)


RACE = textwrap.dedent(
    """
    import os, random, signal, sys, threading, time
    import procvisor
    from procvisor.process import _exec, _group

    signal.signal(signal.SIGINT, signal.default_int_handler)
    spawned = []
    real_spawn = _exec.spawn

    def recording_spawn(*args, **kwargs):
        pid = real_spawn(*args, **kwargs)
        spawned.append(pid)
        return pid

    _exec.spawn = recording_spawn
    go, fired = threading.Semaphore(0), threading.Semaphore(0)
    rng = random.Random(int(sys.argv[1]))

    def interrupter():
        while True:
            go.acquire()
            # Busy-wait holding the GIL: the signal then lands just as the main thread
            # gets the GIL back from a syscall (posix_spawn, close, ...), in every window.
            end = time.perf_counter() + rng.uniform(0, 0.003)
            while time.perf_counter() < end:
                pass
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
            fired.release()

    threading.Thread(target=interrupter, daemon=True).start()
    leaked = 0
    for _ in range(int(sys.argv[2])):
        count = len(spawned)
        try:
            go.release()
            procvisor.run(["sleep", "30"], grace=0.2)
        except KeyboardInterrupt:
            pass
        while True:
            try:
                fired.acquire()
                time.sleep(0.002)
                break
            except KeyboardInterrupt:
                pass
        if len(spawned) > count and _group.group_members(spawned[-1]):
            leaked += 1
            os.killpg(spawned[-1], signal.SIGKILL)
    # Also a Ctrl-C raised the instant posix_spawn returns, before recording_spawn above
    # could see the pid: procvisor recorded it (in C) and stopped that child too, so none
    # of our children is left, attributed or not.
    import psutil
    strays = psutil.Process().children()
    for child in strays:
        child.kill()
        child.wait()
    print(f"spawned={len(spawned)} leaked={leaked} strays={len(strays)}")
    """
)


def test_ctrl_c_at_any_moment_of_a_sync_run_leaves_no_group() -> None:
    # A SIGINT 0-3 ms after run() starts lands anywhere: before, during or after the spawn.
    out = subprocess.run(
        [PY, "-c", RACE, "1234", "150"], capture_output=True, timeout=50, check=True
    ).stdout.decode()
    spawned, leaked, strays = (int(part.split("=")[1]) for part in out.split())
    assert spawned > 10 and leaked == strays == 0, out
