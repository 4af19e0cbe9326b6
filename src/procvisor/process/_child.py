"""A bare child process with fds the caller owns: what pools build their workers from.

:func:`start_child` spawns a command in its own session (so its group can be stopped whole)
with the given fds as its stdin, stdout and stderr, and returns a :class:`Child` whose
:meth:`~Child.fileno` turns readable when it exits. The caller runs its own event loop
(a selector thread, asyncio...) and reaps with :meth:`~Child.poll`. ``Child(pid)`` is also
the handle on a child the caller forked itself (a Python pool's first workers and its fork
server).
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Mapping
from typing import Literal

from procvisor.process._exitwatch import ExitStatus, ExitWatch
from procvisor.process._group import signal_group
from procvisor.process._spawn import CommandLike, prepare, spawn

__all__ = ["Child", "start_child"]


class Child:
    """A started child: its pid, an exit fd to watch, and its exit status once reaped."""

    __slots__ = ("_watch", "pid")

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._watch = ExitWatch(pid)

    def __repr__(self) -> str:
        return f"<Child pid={self.pid}>"

    def fileno(self) -> int:
        """An fd that turns readable when the child has exited (-1 once reaped)."""
        return self._watch.fileno()

    def poll(self, release: Callable[[int], None] | None = None) -> ExitStatus | None:
        """Reap the child if it has exited; its status, or ``None`` while it runs.

        Once reaped, its exit fd is closed, after ``release`` (if given) was called with it:
        an epoll or selector watching the fd must drop it while it is still open.
        """
        return self._watch.poll(release)

    @property
    def status(self) -> ExitStatus | None:
        return self._watch.status

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the child's whole process group, or to the child alone while it has
        no group of its own yet (a fork that has not called ``setsid``)."""
        # Unreaped, so its pid cannot have been reused.
        if self._watch.status is None and not signal_group(self.pid, sig):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def kill(self) -> None:
        """SIGKILL the child's whole process group."""
        self.signal(signal.SIGKILL)

    def wait(self) -> ExitStatus:
        """Block until the child exits and reap it."""
        status = self._watch.poll()
        while status is None:
            with contextlib.suppress(ChildProcessError):  # someone else reaped it: "unknown"
                os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOWAIT)
            status = self._watch.poll()
        return status


def start_child(
    cmd: CommandLike,
    *,
    stdin: int | Literal["devnull", "inherit"],
    stdout: int | Literal["inherit", "devnull"],
    stderr: int | Literal["inherit", "devnull", "stdout"] = "inherit",
    env: Mapping[str, str] | None = None,
    inherit_env: bool = True,
    cwd: str | os.PathLike[str] | None = None,
) -> Child:
    """Start ``cmd`` in a new session with the given fds; the caller closes its copies.

    Raises:
        SpawnError: the program could not be started.
        ValueError, TypeError: bad arguments.
    """
    command = prepare(cmd, env=env, inherit_env=inherit_env, cwd=cwd)
    return Child(spawn(command, stdin=stdin, stdout=stdout, stderr=stderr))
