"""The fork server a :class:`~procvisor.Pool` forks its workers from.

A Python pool starts one fork server (:func:`procvisor.pool._worker.serve_forks`) and asks it
for its workers, so a worker starts in about a millisecond, with everything the server has
imported, instead of booting an interpreter:

* :func:`fork_pool` forks the caller itself: first the pool's first workers, one hop from the
  caller as multiprocessing's ``fork`` start makes them (no round trip to a server on the way
  to the first result), then the server (:meth:`ForkServer.fork`) for the workers that come
  later (replacements, growth). Only safe while the caller has a single thread (no lock can
  be held by a thread the child would not have); workers and server then have the caller's
  modules and globals. The first workers are the caller's children, with a
  :class:`~procvisor.process.Child` (a pidfd) as their handle.
* :meth:`ForkServer.start` runs the server as a fresh interpreter instead, and it forks every
  worker.

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
import signal
import socket
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Literal

from procvisor.errors import SpawnError
from procvisor.pool import _worker
from procvisor.pool._worker import KILL, PID, SPAWN
from procvisor.process import Child, ExitStatus, start_child

__all__ = ["ForkServer", "ForkedWorker", "fork_pool"]

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

    def poll(self, release: Callable[[int], None] | None = None) -> ExitStatus | None:
        """Its exit status once its server reaped it (unknown if the server died first).

        As :meth:`Child.poll <procvisor.process.Child.poll>`: ``release`` is called with the
        fd just before it is closed.
        """
        if self.status is not None:
            return self.status
        try:
            data = os.read(self._fd, PID.size)
        except BlockingIOError:
            return None
        if release is not None:
            release(self._fd)
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
    def fork(cls, env: Mapping[str, str], parent: int, close: Iterable[int]) -> ForkServer:
        """Fork the calling process into a fork server; only with a single thread, as
        :func:`fork_pool` calls it.

        ``env`` is added to the server's environment, which its workers inherit; ``parent``
        is the pid of the caller; the server closes its copies of ``close``.
        """
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)

        def serve() -> None:
            ours.close()
            for fd in close:
                os.close(fd)
            os.setsid()
            os.environ.update(env)
            _worker.serve_forks(theirs, parent)

        try:
            pid = _fork(serve)
        except BaseException:
            ours.close()
            raise
        finally:
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


def fork_pool(
    env: Mapping[str, str], workers: int
) -> tuple[ForkServer, list[tuple[Child, int, int]]]:
    """Fork a pool's first ``workers`` workers from the caller, then its fork server, for the
    workers that come later; call it only with a single thread.

    The workers are the caller's own children (one hop, as multiprocessing's ``fork`` start
    method makes them), set up as a worker of the server is (:func:`_worker.start_worker`),
    and reaped by the caller. Each comes with the read end of its output pipe and the write
    end of its input pipe. ``env`` is added to the environment of the workers and the server.

    Raises:
        OSError: a fork failed (what was forked is killed and reaped).
    """
    parent = os.getpid()
    forked: list[tuple[int, int, int]] = []
    ours: list[int] = []  # the pool's pipe ends so far: no child forked later keeps a copy
    try:
        for _ in range(workers):
            theirs: list[int] = []
            try:
                to_r, to_w = os.pipe()
                theirs.append(to_r)
                ours.append(to_w)
                from_r, from_w = os.pipe()
                theirs.append(from_w)
                ours.append(from_r)
                pid = _fork(_direct_worker, to_r, from_w, parent, list(ours), env)
            finally:
                for fd in theirs:
                    os.close(fd)
            forked.append((pid, from_r, to_w))
        server = ForkServer.fork(env, parent, ours)
        try:
            # Exit watches only now: one may start a thread, and a fork is safe only without.
            return server, [(Child(pid), rfd, wfd) for pid, rfd, wfd in forked]
        except BaseException:
            server.close()
            raise
    except BaseException:
        for pid, _, _ in forked:
            os.kill(pid, signal.SIGKILL)  # alone: it may not have a group of its own yet
            os.waitpid(pid, 0)
        for fd in ours:
            os.close(fd)
        raise


def _direct_worker(
    rfd: int, wfd: int, parent: int, close: list[int], env: Mapping[str, str]
) -> None:
    os.environ.update(env)
    _worker.start_worker(rfd, wfd, parent, close)


def _fork(then: Callable[..., object], *args: object) -> int:
    """Fork the caller, which must have a single thread; the child runs ``then(*args)`` and
    exits."""
    for stream in (sys.stdout, sys.stderr):  # what they buffer would be written twice
        with contextlib.suppress(Exception):
            stream.flush()
    pid = os.fork()
    if pid == 0:
        _worker.exit_after(lambda: then(*args))
    return pid
