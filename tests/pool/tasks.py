"""Task functions the pool tests send to workers.

They live in an importable module so that they pickle by reference, as a user's own functions
do; workers must be able to import them. Tasks that report to the test write files, because a
worker is another process: a file is the simplest channel both sides can see.
"""

from __future__ import annotations

import ctypes
import faulthandler
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

GREETING: str | None = None
"""Set by :func:`set_greeting`, the initializer the tests pass to pools."""

_HOARD: list[bytes] = []

MARK = "as imported"
"""A test sets it before it makes a pool: a worker forked from the caller sees the new value."""


class Boom(Exception):
    """An exception type of the tests' own: its type must survive the trip back."""


def add(a: int, b: int) -> int:
    return a + b


def square(x: int) -> int:
    return x * x


def identity(x: object) -> object:
    return x


def pid() -> int:
    return os.getpid()


def pid_after(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def sleep_then(seconds: float, value: object = None) -> object:
    time.sleep(seconds)
    return value


def fail(message: str) -> None:
    raise Boom(message)


def fail_at(x: int, bad: int) -> int:
    """``x``, or Boom when ``x`` is ``bad``."""
    if x == bad:
        raise Boom(str(x))
    return x


def exit_with(code: int) -> None:
    os._exit(code)


def segfault() -> None:
    # A forked worker inherits pytest's faulthandler, whose crash report would land in the
    # suite's output and read like a crash of the suite itself.
    faulthandler.disable()
    ctypes.string_at(0)


def _write_atomically(path: str, text: str) -> None:
    """Write ``text`` so that the test never reads a half-written file."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _wait_for_file(path: str, timeout: float) -> None:
    # Runs inside a worker, where no event from the test can reach it; a short poll is the
    # simplest gate. The timeout only bounds a broken test.
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {timeout}s")
        time.sleep(0.005)


def hold(started: str, release: str, value: object = None) -> object:
    """Say "started", then keep the worker busy until the test creates ``release``."""
    _write_atomically(started, str(os.getpid()))
    _wait_for_file(release, 10.0)
    return value


def append(path: str, text: str) -> str:
    with open(path, "a") as f:
        f.write(text + "\n")
    return text


def touch(path: str) -> None:
    Path(path).touch()


def _count_attempt(path: str) -> int:
    with open(path, "a") as f:
        f.write("attempt\n")
    with open(path) as f:
        return len(f.read().splitlines())


def fail_until(path: str, failures: int) -> int:
    """Raise ConnectionError on the first ``failures`` attempts, then return the attempt count."""
    n = _count_attempt(path)
    if n <= failures:
        raise ConnectionError(f"attempt {n} failed")
    return n


def crash_until(path: str, failures: int) -> int:
    """Kill the worker (exit 3) on the first ``failures`` attempts, then return the count."""
    n = _count_attempt(path)
    if n <= failures:
        os._exit(3)
    return n


def announce_and_sleep(path: str, seconds: float = 10.0) -> None:
    """Write the worker's pid to ``path``, then sleep (until the test kills the worker)."""
    _write_atomically(path, str(os.getpid()))
    time.sleep(seconds)


def spawn_child_and_sleep(path: str, seconds: float = 10.0) -> None:
    """Start a ``sleep`` child, write its pid to ``path``, then sleep."""
    child = subprocess.Popen(["sleep", "60"])
    _write_atomically(path, str(child.pid))
    time.sleep(seconds)


def set_greeting(value: str) -> None:
    global GREETING
    GREETING = value


def greeting_and_pid() -> tuple[str | None, int]:
    return GREETING, os.getpid()


def hoard(mib: int) -> int:
    """Allocate and touch ``mib`` MiB and keep it, so the worker's RSS stays high."""
    _HOARD.append(b"\x01" * (mib * 1024 * 1024))
    return len(_HOARD)


def make_lock() -> threading.Lock:
    return threading.Lock()


def mark_and_parent() -> tuple[str, int, int]:
    """This worker's :data:`MARK`, pid and parent pid (its pool's fork server)."""
    return MARK, os.getpid(), os.getppid()


def open_fds() -> dict[int, str]:
    """This process's open fds and what each is (``pipe:[123]``, a path...)."""
    fds = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds[int(fd)] = os.readlink(f"/proc/self/fd/{fd}")
        except FileNotFoundError:  # the listing's own fd
            continue
    return fds


def worker_setup(seconds: float = 0.0) -> dict[str, object]:
    """How this worker was set up: its session, signal dispositions, stdin and open fds
    (after ``seconds``, so that a burst of these lands on every worker)."""
    time.sleep(seconds)
    fds = open_fds()
    return {
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "own_session": os.getsid(0) == os.getpid(),
        "sigint_ignored": signal.getsignal(signal.SIGINT) == signal.SIG_IGN,
        "sigterm_default": signal.getsignal(signal.SIGTERM) == signal.SIG_DFL,
        "stdin": fds.get(0),
        "fds": fds,
    }


def sleep_or_clean_up(seconds: float, catch: bool) -> str:
    """Sleep; with ``catch``, answer "cleaned up" when the soft timeout interrupts it."""
    import procvisor  # noqa: PLC0415 - as a task would, to catch the pool's exception

    try:
        time.sleep(seconds)
    except procvisor.SoftTimeout:
        if not catch:
            raise
        return "cleaned up"
    return "slept"
