"""The fork server a :class:`~procvisor.Pool` forks its workers from.

A Python pool starts one fork server (:func:`procvisor.pool._worker.serve_forks`) and asks it
for each worker, so a worker starts in about a millisecond, with everything the server has
imported, instead of booting an interpreter:

* :meth:`ForkServer.fork` forks the caller itself. Only safe while the caller has a single
  thread (no lock can be held by a thread the child would not have); the server then has the
  caller's modules and globals, as a ``fork`` start of multiprocessing would.
* :meth:`ForkServer.start` runs the server as a fresh interpreter instead.

The server is the one reaper of its workers. The pool talks to it over a ``SOCK_SEQPACKET``
control socket: a spawn request carries the worker's two pipe ends and is answered with its
pid and the read end of a *status pipe*, on which the server writes the worker's wait status
once it has reaped it. A :class:`ForkedWorker` is the pool's handle on such a worker: the
status pipe is its exit fd, as a pidfd is a :class:`~procvisor.process.Child`'s. Kills go
through the server, which signals a worker's group only while it has not reaped it, so no
reused pid is ever signalled. When the server dies, every status pipe ends without a status.
The server exits, after killing its workers, at end of file on the control socket: when the
pool closes it, or when the pool's process dies.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import sys
from collections.abc import Mapping
from typing import Literal

from procvisor.errors import SpawnError
from procvisor.pool import _worker
from procvisor.pool._worker import KILL, PID, SPAWN
from procvisor.process import Child, ExitStatus, start_child

__all__ = ["ForkServer", "ForkedWorker"]

_REPLY_TIMEOUT = 30.0  # a fresh server boots first; a live one answers in about a millisecond
_CLOSE_GRACE = 5.0
_UNKNOWN = ExitStatus(None, None, None)


class ForkedWorker:
    """A worker forked by a :class:`ForkServer`: a :class:`~procvisor.process.Child` to the
    pool's engine (pid, exit fd, ``poll``, ``kill``, ``wait``)."""

    __slots__ = ("_fd", "_server", "pid", "status")

    def __init__(self, pid: int, status_fd: int, server: ForkServer) -> None:
        self.pid = pid
        self.status: ExitStatus | None = None
        self._fd = status_fd
        self._server = server

    def __repr__(self) -> str:
        return f"<ForkedWorker pid={self.pid}>"

    def fileno(self) -> int:
        """An fd that turns readable when the worker has been reaped (-1 once polled)."""
        return self._fd

    def poll(self) -> ExitStatus | None:
        """Its exit status once its server reaped it (unknown if the server died first)."""
        if self.status is not None:
            return self.status
        try:
            data = os.read(self._fd, PID.size)
        except BlockingIOError:
            return None
        os.close(self._fd)
        self._fd = -1
        # Nothing to read: the server died before it could reap this worker.
        full = len(data) == PID.size
        self.status = ExitStatus.from_wait_status(PID.unpack(data)[0]) if full else _UNKNOWN
        return self.status

    def kill(self) -> None:
        """SIGKILL the worker's whole process group (through its server, which reaps it)."""
        if self.status is None:
            self._server.kill(self.pid)

    def wait(self) -> ExitStatus:
        """Block until the server reports the worker's exit (or dies)."""
        if self.status is None:
            os.set_blocking(self._fd, True)
        status = self.poll()
        assert status is not None
        return status


class ForkServer:
    """A running fork server (see the module docstring); use :meth:`fork` or :meth:`start`."""

    __slots__ = ("_ctl", "child", "forked")

    def __init__(self, child: Child, ctl: socket.socket, *, forked: bool) -> None:
        self.child = child
        self.forked = forked
        self._ctl = ctl
        ctl.settimeout(_REPLY_TIMEOUT)

    def __repr__(self) -> str:
        how = "forked" if self.forked else "fresh"
        return f"<ForkServer pid={self.child.pid} {how}>"

    @classmethod
    def fork(cls, env: Mapping[str, str]) -> ForkServer:
        """Fork the calling process into a fork server; call it only with a single thread.

        ``env`` is added to the server's environment, which its workers inherit.
        """
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        for stream in (sys.stdout, sys.stderr):  # what they buffer would be written twice
            with contextlib.suppress(Exception):
                stream.flush()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:

            def serve() -> None:
                ours.close()
                os.setsid()
                os.environ.update(env)
                _worker.serve_forks(theirs, parent)

            _worker.exit_after(serve)
        theirs.close()
        return cls(Child(pid), ours, forked=True)

    @classmethod
    def start(
        cls,
        command: list[str],
        env: Mapping[str, str],
        stderr: int | Literal["inherit"],
    ) -> ForkServer:
        """Start a fork server as a fresh interpreter running ``command``.

        Raises:
            SpawnError: the interpreter could not be started.
        """
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            child = start_child(
                command, stdin=theirs.fileno(), stdout="devnull", stderr=stderr, env=env
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        return cls(child, ours, forked=False)

    def spawn(self, stdin: int, stdout: int, command: list[str]) -> ForkedWorker:
        """Fork a worker that reads tasks from ``stdin`` and writes results to ``stdout``
        (the caller closes its copies of both).

        Raises:
            ConnectionError: the server has died (close it and start another).
            SpawnError: the server could not fork (``command`` is named in the error).
        """
        try:
            socket.send_fds(self._ctl, [SPAWN], [stdin, stdout])
            msg, fds, _, _ = socket.recv_fds(self._ctl, PID.size, 1)
        except TimeoutError:
            raise ConnectionError(f"fork server pid {self.child.pid} does not answer") from None
        if len(msg) != PID.size:
            for fd in fds:
                os.close(fd)
            raise ConnectionError(f"fork server pid {self.child.pid} has died")
        (pid,) = PID.unpack(msg)
        if pid < 0:
            raise SpawnError(
                f"the pool's fork server could not fork a worker: {os.strerror(-pid)}",
                reason="resource_exhausted",
                command=command,
                errno=-pid,
            )
        os.set_blocking(fds[0], False)
        return ForkedWorker(pid, fds[0], self)

    def kill(self, pid: int) -> None:
        """Ask the server to SIGKILL worker ``pid``'s group, unless it has reaped it."""
        with contextlib.suppress(OSError):  # it has died, and its workers with it
            self._ctl.send(KILL + PID.pack(pid))

    def close(self) -> ExitStatus:
        """Close the control socket: the server kills the workers it still has and exits.
        Returns once it has, with its exit status (a server stuck for 5 s is killed: its
        workers die with it)."""
        self._ctl.close()
        if self.child.poll() is None and not select.select([self.child], [], [], _CLOSE_GRACE)[0]:
            self.child.kill()
        return self.child.wait()
