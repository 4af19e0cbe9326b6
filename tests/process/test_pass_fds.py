"""Extra fds for a child (``pass_fds``) and a variable holding its own pid (``pid_env``)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
from collections.abc import Iterator

import pytest

import procvisor

# Each spawn path: posix_spawn (no options), and subprocess's fork (a umask forces it).
PATHS = [pytest.param({}, id="posix_spawn"), pytest.param({"umask": "022"}, id="fork")]


@pytest.fixture
def pipes() -> Iterator[list[tuple[int, int]]]:
    made: list[tuple[int, int]] = []
    yield made
    for r, w in made:
        for fd in (r, w):
            with contextlib.suppress(OSError):  # the test closed it
                os.close(fd)


def _pipe(pipes: list[tuple[int, int]]) -> tuple[int, int]:
    r, w = os.pipe()
    pipes.append((r, w))
    return r, w


def _read_after_close(r: int, w: int) -> bytes:
    os.close(w)  # the child's copies are gone once it exited
    chunks = []
    while chunk := os.read(r, 4096):
        chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize("options", PATHS)
def test_an_fd_is_passed_at_the_number_asked_for(pipes, options) -> None:
    r, w = _pipe(pipes)
    result = procvisor.run(["sh", "-c", "echo to-five >&5"], pass_fds={5: w}, **options)
    assert result.returncode == 0, result.stderr
    assert _read_after_close(r, w) == b"to-five\n"


@pytest.mark.parametrize("options", PATHS)
def test_fds_can_trade_numbers_without_overwriting_each_other(pipes, options) -> None:
    r1, w1 = _pipe(pipes)
    r2, w2 = _pipe(pipes)
    # The child's fd w1 is our w2 and the other way round: a naive dup2 in order would have
    # overwritten the second source before moving it.
    script = f"import os; os.write({w1}, b'first\\n'); os.write({w2}, b'second\\n')"
    result = procvisor.run([sys.executable, "-c", script], pass_fds={w1: w2, w2: w1}, **options)
    assert result.returncode == 0, result.stderr
    assert _read_after_close(r2, w2) == b"first\n"
    assert _read_after_close(r1, w1) == b"second\n"


@pytest.mark.parametrize("options", PATHS)
def test_a_list_passes_fds_at_their_own_numbers_and_nothing_else(pipes, options) -> None:
    _, w = _pipe(pipes)
    other_r, other_w = _pipe(pipes)  # not passed: close-on-exec, as every fd Python opens
    listing = procvisor.run(["ls", "/proc/self/fd"], pass_fds=[w], **options).stdout.split()
    fds = {int(fd) for fd in listing}
    assert w in fds
    assert other_r not in fds and other_w not in fds


def test_stdio_numbers_and_fds_not_open_are_refused() -> None:
    with pytest.raises(ValueError, match=r"pass_fds: child fd 1 is stdin, stdout or stderr"):
        procvisor.run(["true"], pass_fds={1: 0})
    fd = os.open(os.devnull, os.O_RDONLY)
    os.close(fd)
    with pytest.raises(ValueError, match=rf"pass_fds: fd {fd} is not open in this process"):
        procvisor.run(["true"], pass_fds=[fd])
    with pytest.raises(TypeError, match=r"pass_fds must map"):
        procvisor.run(["true"], pass_fds=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"pass_fds: child fd '3' must be an int"):
        procvisor.run(["true"], pass_fds={"3": 0})  # type: ignore[dict-item]


@pytest.mark.parametrize(
    "options", [*PATHS, pytest.param({"limits": procvisor.Limits(open_files=64)}, id="prlimit")]
)
async def test_pid_env_holds_the_childs_own_pid(options) -> None:
    proc = await procvisor.spawn(
        ["sh", "-c", 'echo "$LISTEN_PID $$"; ulimit -n'], pid_env="LISTEN_PID", **options
    )
    lines = [line.text async for line in proc]
    result = await proc.wait()
    assert result.returncode == 0
    listen_pid, own_pid = lines[0].split()
    # The same pid all the way: the shell's exec, and prlimit(1)'s, keep it.
    assert int(listen_pid) == int(own_pid) == proc.pid
    if "limits" in options:
        assert lines[1] == "64"


async def test_pid_env_takes_several_names() -> None:
    script = 'echo "$LISTEN_PID $WATCHDOG_PID $$"'
    proc = await procvisor.spawn(["sh", "-c", script], pid_env=["LISTEN_PID", "WATCHDOG_PID"])
    [line] = [line.text async for line in proc]
    assert (await proc.wait()).returncode == 0
    assert line.split() == [str(proc.pid)] * 3


@pytest.mark.parametrize("names", ["X; rm -rf /", ["OK", "X; rm -rf /"]])
async def test_pid_env_must_be_a_variable_name(names: object) -> None:
    with pytest.raises(ValueError, match=r"pid_env: 'X; rm -rf /' is not a variable name"):
        await procvisor.spawn(["true"], pid_env=names)  # type: ignore[arg-type]


@pytest.mark.parametrize("options", PATHS)
async def test_a_passed_listening_socket_accepts_in_the_child(options) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        script = (
            "import socket; s = socket.socket(fileno=3); c, _ = s.accept(); "
            "c.sendall(b'hello from the child'); c.close()"
        )
        proc = await procvisor.spawn(
            [sys.executable, "-c", script], pass_fds={3: server.fileno()}, timeout=20, **options
        )

        def ask() -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
                return client.recv(100)

        assert await asyncio.to_thread(ask) == b"hello from the child"
        result = await proc.wait()
    assert result.returncode == 0, result.stderr
