"""Knowing when a child exits, as a file descriptor that becomes readable.

Two mechanisms, chosen once per process:

* ``pidfd``: ``pidfd_open(2)`` (Linux 5.3+). The pidfd turns readable when the child exits;
  no thread, no signal handler. Checked to work before it is used, since seccomp filters in
  some containers refuse it.
* ``thread``: a thread blocks in ``waitid(P_PID, pid, WEXITED | WNOWAIT)`` (which leaves the
  child unreaped) and then writes one byte to a pipe.

Either way, the exit status is collected in exactly one place, :meth:`ExitWatch.reap`, with
``wait4`` so the kernel's rusage comes with it. If something else reaped the child first,
the status is recorded as unknown, never invented.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass

from procvisor.process._result import Usage, signal_name

_pidfd_ok: bool | None = None
watched: set[int] = set()
"""Pids of children an :class:`ExitWatch` will reap; :func:`reap_orphans` leaves them alone."""
force_thread = False
"""Tests set this to exercise the thread mechanism on kernels that have pidfd."""


def pidfd_works() -> bool:
    """True when ``pidfd_open`` works here (checked once)."""
    global _pidfd_ok
    if _pidfd_ok is None:
        try:
            fd = os.pidfd_open(os.getpid())
        except (AttributeError, OSError):
            _pidfd_ok = False
        else:
            os.close(fd)
            _pidfd_ok = True
    return _pidfd_ok


def mechanism() -> str:
    """The exit-watch mechanism in use: ``"pidfd"`` or ``"thread"``."""
    return "pidfd" if pidfd_works() and not force_thread else "thread"


@dataclass(frozen=True, slots=True)
class ExitStatus:
    """How a child ended. ``returncode`` is ``None`` when another reaper took it."""

    returncode: int | None
    signal: str | None
    usage: Usage | None

    @classmethod
    def from_wait_status(cls, status: int, usage: Usage | None = None) -> ExitStatus:
        """The exit status that a ``wait`` call's ``status`` stands for."""
        returncode = os.waitstatus_to_exitcode(status)
        return cls(returncode, signal_name(-returncode) if returncode < 0 else None, usage)

    @property
    def signum(self) -> int | None:
        if self.returncode is not None and self.returncode < 0:
            return -self.returncode
        return None


UNKNOWN = ExitStatus(None, None, None)


def _thread_wait(pid: int, wfd: int) -> None:
    try:
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
    except ChildProcessError:
        pass  # reaped by someone else; reap() records "unknown"
    finally:
        # OSError: the watch was closed before the child ended; nobody is listening.
        with contextlib.suppress(OSError):
            os.write(wfd, b"x")
        os.close(wfd)


class ExitWatch:
    """Watches one child: :meth:`fileno` turns readable when it has exited."""

    __slots__ = ("_fd", "_thread", "pid", "status")

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.status: ExitStatus | None = None
        watched.add(pid)
        self._thread: threading.Thread | None = None
        if mechanism() == "pidfd":
            try:
                self._fd = os.pidfd_open(pid)
                return
            except ProcessLookupError:
                pass  # already reaped by someone else: fall through to the thread, which ends
        rfd, wfd = os.pipe()
        self._fd = rfd
        self._thread = threading.Thread(
            target=_thread_wait, args=(pid, wfd), name=f"procvisor-wait-{pid}", daemon=True
        )
        self._thread.start()

    def fileno(self) -> int:
        return self._fd

    def poll(self, release: Callable[[int], None] | None = None) -> ExitStatus | None:
        """Reap the child if it has exited; return its status, or ``None`` if it still runs.

        Once reaped, the fd is closed, after ``release`` (if given) was called with it.
        """
        if self.status is not None:
            return self.status
        try:
            pid, status, rusage = os.wait4(self.pid, os.WNOHANG)
        except ChildProcessError:
            self.status = UNKNOWN
        else:
            if pid == 0:
                return None
            usage = Usage(
                max_rss=rusage.ru_maxrss * 1024,
                user_cpu=rusage.ru_utime,
                system_cpu=rusage.ru_stime,
            )
            self.status = ExitStatus.from_wait_status(status, usage)
        if release is not None and self._fd >= 0:
            release(self._fd)
        self.close()
        return self.status

    def close(self) -> None:
        """Release the fd (and join the thread, which has ended once the child exited)."""
        watched.discard(self.pid)
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._thread is not None and self.status is not None:
            self._thread.join()
            self._thread = None
