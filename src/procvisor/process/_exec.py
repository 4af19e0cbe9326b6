"""One execution of a command or pipeline, as a state machine free of any event loop.

An :class:`Execution` owns the children of one process group, the pipes to and from them,
and the stop sequence. It does no waiting of its own: a driver (``_sync`` with ``poll``,
``_async`` with the asyncio loop) tells it when an fd is ready and calls :meth:`tick` with the
time; :meth:`tick` advances the state and says when it next needs to be called.

Stop sequence (timeout, limit, cancellation, Ctrl-C, an explicit stop, or members of the
group left behind by a command that has exited): the stop signal and SIGCONT to the whole
group, ``grace`` seconds, then SIGKILL to the group. The execution is done when every child
it started is reaped, the group is empty and the pipes are drained; nothing outlives it that
stayed in its group.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO, Literal

from procvisor.errors import SpawnError
from procvisor.process._cgroup import Cgroup
from procvisor.process._exitwatch import ExitStatus, ExitWatch
from procvisor.process._group import (
    boot_ticks,
    group_alive,
    group_members,
    reap_group,
    signal_group,
    start_ticks,
)
from procvisor.process._limits import SAMPLE_INTERVAL
from procvisor.process._output import LineQueue, OutputSink, TailBuffer
from procvisor.process._result import Result
from procvisor.process._spawn import PreparedCommand, spawn
from procvisor.process._throttle import CpuThrottle

InputLike = bytes | str | IO[bytes] | IO[str] | os.PathLike[str] | Literal["inherit"] | None


_READ_SIZE = 65536
_GROUP_POLL_MAX = 0.05


@dataclass(slots=True)
class _Stage:
    command: PreparedCommand
    pid: int
    watch: ExitWatch
    stderr: TailBuffer | None
    status: ExitStatus | None = None
    ended: float = 0.0


class Execution:
    """Children of one process group, their pipes, and the stop sequence."""

    __slots__ = (
        "_cgroup",
        "_exits",
        "_group_check_at",
        "_group_empty",
        "_group_poll",
        "_kill_at",
        "_killed",
        "_max_procs",
        "_next_sample",
        "_oom",
        "_pending_input",
        "_spawned",
        "_start_ticks",
        "_throttle",
        "_timed",
        "_timeout_at",
        "_wall_at",
        "commands",
        "done",
        "grace",
        "limit_observed",
        "lines",
        "pgid",
        "readers",
        "release",
        "stages",
        "started",
        "stdin_fd",
        "stdout",
        "stop_signal",
        "stopping",
        "timeout",
    )

    def __init__(
        self,
        commands: Sequence[PreparedCommand],
        *,
        input: InputLike = None,
        capture: bool = True,
        merge_stderr: bool = False,
        max_output: int = 16 * 1024 * 1024,
        stop_signal: int = signal.SIGTERM,
        grace: float = 5.0,
        timeout: float | None = None,
        lines: LineQueue | None = None,
        lines_stderr: bool = True,
        sinks: tuple[OutputSink, OutputSink] | None = None,
    ) -> None:
        if grace < 0:
            raise ValueError(f"grace: {grace!r} must be 0 or more seconds")
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout: {timeout!r} must be more than 0 seconds")
        if max_output < 0:
            raise ValueError(f"max_output: {max_output!r} must be 0 or more bytes")
        self.commands = tuple(commands)
        self.stop_signal = stop_signal
        self.grace = grace
        self.timeout = timeout
        self.stages: list[_Stage] = []
        self._spawned: list[int] = []  # every pid started, recorded even if interrupted
        self.pgid = 0
        # Called with each fd a driver watches just before it is closed here: an epoll can
        # drop an fd only while it is open (after the close, a copy of it that a fork in
        # another thread holds for a moment would keep it registered).
        self.release: Callable[[int], None] | None = None
        self._start_ticks: float | None = None
        self.started = time.monotonic()
        self.done = False
        self.stopping: str | None = None
        self.limit_observed: float | None = None
        self._kill_at: float | None = None
        self._killed = False
        self._timeout_at = None if timeout is None else self.started + timeout
        self._wall_at: float | None = None
        self._max_procs: int | None = None
        self._next_sample: float | None = None
        limits = self.commands[0].limits
        if limits is not None:
            if limits.wall_time is not None:
                self._wall_at = self.started + limits.wall_time
            self._max_procs = limits.sampled_processes(as_root=self.commands[0].as_root)
            if self._max_procs is not None:
                self._next_sample = self.started
        cpus = limits.sampled_cpus() if limits is not None else None
        # Without a timeout, wall_time or sampled limit, the only timer is the group check.
        self._timed = (
            timeout is not None
            or self._wall_at is not None
            or self._max_procs is not None
            or cpus is not None
        )
        self._throttle: CpuThrottle | None = None
        self._group_check_at: float | None = None
        self._group_poll = 0.001
        self._group_empty = False
        # fd -> sink for output; exit-watch fd -> stage still running; the stdin pipe and
        # what is left to write into it
        self.readers: dict[int, OutputSink] = {}
        self._exits: dict[int, _Stage] = {}
        self.stdin_fd: int | None = None
        self._pending_input = memoryview(b"")
        self.lines = lines
        self.stdout: TailBuffer | None = None
        self._cgroup: Cgroup | None = None
        self._oom = (0, 0)  # OOM kills in the memory cgroup, its peak usage
        self._start(input, capture, merge_stderr, max_output, lines, lines_stderr, sinks)
        if cpus is not None:
            self._throttle = CpuThrottle(self.pgid, cpus, time.monotonic())

    # -- starting -------------------------------------------------------------------------

    def _start(
        self,
        input: InputLike,
        capture: bool,
        merge_stderr: bool,
        max_output: int,
        lines: LineQueue | None,
        lines_stderr: bool,
        sinks: tuple[OutputSink, OutputSink] | None,
    ) -> None:
        to_close: list[int] = []  # the child's ends of pipes, closed once all have started
        try:
            procs = self._make_cgroup()
            stdin = self._stdin(input, to_close)
            n = len(self.commands)
            out_sink: OutputSink | None = None
            if capture and sinks is not None:
                out_sink = sinks[0]
            elif capture:
                out_sink = lines.sink("stdout") if lines else TailBuffer(max_output)
                if isinstance(out_sink, TailBuffer):
                    self.stdout = out_sink
            for i, command in enumerate(self.commands):
                # stdout: a pipe to the next stage, or the captured/inherited final output
                next_stdin: int | None = None
                stdout: int | Literal["inherit"]
                if i < n - 1:
                    next_stdin, stdout = os.pipe()
                    to_close.append(stdout)
                elif capture:
                    r, stdout = os.pipe()
                    to_close.append(stdout)
                    self._add_reader(r, out_sink)
                else:
                    stdout = "inherit"
                stage_err: TailBuffer | None = None
                stderr: int | Literal["inherit", "stdout"]
                if not capture:
                    stderr = "stdout" if merge_stderr else "inherit"
                elif merge_stderr and i == n - 1:
                    stderr = "stdout"
                else:
                    r, stderr = os.pipe()
                    to_close.append(stderr)
                    if merge_stderr:
                        self._add_reader(r, out_sink)
                    elif sinks is not None:
                        self._add_reader(r, sinks[1])
                    elif lines is not None and lines_stderr:
                        self._add_reader(r, lines.sink("stderr"))
                    else:
                        stage_err = TailBuffer(max_output)
                        self._add_reader(r, stage_err)
                pgroup = None if n == 1 else (0 if i == 0 else self.pgid)
                before = boot_ticks()
                pid = spawn(
                    command,
                    stdin=stdin,
                    stdout=stdout,
                    stderr=stderr,
                    pgroup=pgroup,
                    started=self._spawned,
                    cgroup_procs=procs,
                )
                if i == 0:
                    self.pgid = pid
                    if boot_ticks() == before:
                        self._start_ticks = float(before)
                stage = _Stage(command, pid, ExitWatch(pid), stage_err)
                self.stages.append(stage)
                self._exits[stage.watch.fileno()] = stage
                if next_stdin is not None:
                    to_close.append(next_stdin)
                    stdin = next_stdin
            self._set_nice()
            while to_close:
                os.close(to_close.pop())
        except BaseException:
            # Any failure, a Ctrl-C included, once a child may have started: kill what
            # started, reap it, close every fd, then let the exception go on.
            while to_close:
                with contextlib.suppress(OSError):
                    os.close(to_close.pop())
            self._abort()
            raise

    def _set_nice(self) -> None:
        """Give the group its ``nice`` limit: every process in it now, and so all they start.

        Raises:
            SpawnError: a niceness below this process's needs a privilege it lacks.
        """
        command = self.commands[0]
        nice = command.limits.nice if command.limits is not None else None
        if nice is None:
            return
        try:
            os.setpriority(os.PRIO_PGRP, self.pgid, nice)
        except ProcessLookupError:
            pass  # already gone: nothing left to run at any priority
        except PermissionError as exc:
            raise SpawnError(
                f"cannot set limits.nice to {nice}: raising a priority needs root "
                "(CAP_SYS_NICE); use a niceness of "
                f"{os.getpriority(os.PRIO_PROCESS, 0)} or more",
                reason="permission_denied",
                command=command.args,
                errno=exc.errno,
            ) from None

    def _make_cgroup(self) -> tuple[str, ...]:
        """The cgroup of the limits a cgroup enforces, where one can be made; its procs files."""
        command = self.commands[0]
        if command.limits is None:
            return ()
        try:
            self._cgroup = command.limits.cgroup()
            if self._cgroup is None:
                return ()
            if command.uid is not None:  # the child joins it itself, once it is that user
                for path in self._cgroup.procs_files:
                    os.chown(path, command.uid, -1)
        except OSError as exc:
            self._remove_cgroup()
            raise SpawnError(
                f"cannot make the cgroup for the limits: {exc}",
                reason="os_error",
                command=command.args,
                errno=exc.errno,
            ) from None
        return self._cgroup.procs_files

    def start_ticks(self) -> float | None:
        """When the first stage started, in clock ticks since boot (None: read too late).

        With the pid it names the process for the life of the machine. Known from the
        boot-time clock read around its spawn when both readings fell in one tick (most
        spawns take well under one); else read from ``/proc``, where a child still running
        its loader after exec can keep the read waiting for a while.
        """
        if self._start_ticks is None:
            self._start_ticks = start_ticks(self.pgid)
        return self._start_ticks

    def _stdin(self, input: InputLike, to_close: list[int]) -> int | Literal["devnull", "inherit"]:
        if input is None:
            return "devnull"
        if isinstance(input, str) and input == "inherit":
            return "inherit"
        if isinstance(input, bytes | bytearray | memoryview | str):
            data = input.encode() if isinstance(input, str) else bytes(input)
            r, w = os.pipe()
            to_close.append(r)
            if data:
                os.set_blocking(w, False)
                self.stdin_fd = w
                self._pending_input = memoryview(data)
            else:
                os.close(w)
            return r
        if isinstance(input, os.PathLike):
            fd = os.open(input, os.O_RDONLY | os.O_CLOEXEC)
            to_close.append(fd)
            return fd
        if hasattr(input, "fileno"):
            return int(input.fileno())
        raise TypeError(
            "input must be bytes, str, a file object, a path, 'inherit' or None, "
            f"not {type(input).__name__}"
        )

    def _add_reader(self, fd: int, sink: OutputSink | None) -> None:
        # Left blocking: a read happens only when poll says the fd is ready (saves two
        # fcntl calls per pipe on the hot path; _finish checks readiness itself).
        assert sink is not None
        self.readers[fd] = sink

    def _abort(self) -> None:
        """A later stage failed to start: kill and reap what did start, close our fds."""
        if not self.pgid and self._spawned:  # interrupted before it was recorded
            self.pgid = self._spawned[0]
        if self.pgid:
            signal_group(self.pgid, signal.SIGKILL)
        for stage in self.stages:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(stage.pid, 0)
            stage.watch.close()
        self._exits.clear()
        # A stage whose pid was not recorded yet (interrupted right after it started) is
        # still our child in the group: reap every one of those too.
        while self.pgid:
            try:
                os.waitpid(-self.pgid, 0)
            except ChildProcessError:
                break
        for fd in list(self.readers):
            self._close(fd)
        self.readers.clear()
        self._close_stdin()
        self._remove_cgroup()

    def oom_notifier(self) -> int | None:
        """An eventfd signalled at each OOM kill in the group's memory cgroup, if it has one
        (see :meth:`Cgroup.oom_notifier`)."""
        return None if self._cgroup is None else self._cgroup.oom_notifier()

    def _remove_cgroup(self) -> None:
        if self._cgroup is not None:
            self._oom = self._cgroup.oom_kills()
            self._cgroup.remove()
            self._cgroup = None

    # -- what the driver watches ----------------------------------------------------------

    def read_fds(self) -> list[int]:
        """Fds to watch for reading: output pipes, and exit watches of running children.

        The set only shrinks once started, and only in :meth:`on_readable`,
        :meth:`on_writable` (which say so) and when the execution is done.
        """
        return [*self.readers, *self._exits]

    def on_readable(self, fd: int) -> bool:
        """Handle a readable fd; True once it is closed (or not ours) and must be forgotten."""
        sink = self.readers.get(fd)
        if sink is not None:
            return not self._read(fd, sink)
        stage = self._exits.get(fd)
        if stage is None:
            return True
        status = stage.watch.poll(self.release)
        if status is None:
            return False
        stage.status = status
        stage.ended = time.monotonic()
        del self._exits[fd]
        return True

    def _read(self, fd: int, sink: OutputSink) -> bool:
        """Read what one ready fd has; on EOF close it. Returns False at EOF."""
        data = os.read(fd, _READ_SIZE)
        if not data:
            del self.readers[fd]
            self._close(fd)
            sink.close()
            return False
        sink.feed(data)
        return True

    def on_writable(self, fd: int) -> bool:
        """Write more input; True once stdin is closed (all written, or the child left)."""
        if fd != self.stdin_fd:
            return True
        try:
            n = os.write(fd, self._pending_input)
        except BlockingIOError:
            return False
        except (BrokenPipeError, ConnectionResetError):
            n = len(self._pending_input)  # the child stopped reading; drop the rest
        self._pending_input = self._pending_input[n:]
        if self._pending_input:
            return False
        self._close_stdin()
        return True

    def _close_stdin(self) -> None:
        if self.stdin_fd is not None:
            self._close(self.stdin_fd)
            self.stdin_fd = None

    def _close(self, fd: int) -> None:
        if self.release is not None:
            self.release(fd)
        os.close(fd)

    # -- stopping -------------------------------------------------------------------------

    def begin_stop(self, reason: str, grace: float | None = None, sig: int | None = None) -> None:
        """Start the stop sequence (idempotent; a shorter grace can only bring SIGKILL closer)."""
        now = time.monotonic()
        grace = self.grace if grace is None else grace
        if self.stopping is None:
            self.stopping = reason
            signal_group(self.pgid, self.stop_signal if sig is None else sig)
            signal_group(self.pgid, signal.SIGCONT)
        kill_at = now + grace
        if self._kill_at is None or kill_at < self._kill_at:
            self._kill_at = kill_at

    def kill(self) -> None:
        """SIGKILL the group now (a second Ctrl-C, a second cancellation)."""
        if self.stopping is None:
            self.stopping = "killed"
        self._kill_at = time.monotonic()
        self._killed = True
        signal_group(self.pgid, signal.SIGKILL)

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` to the whole group (no-op once it is empty)."""
        if not self.done:
            signal_group(self.pgid, sig)
            if self._throttle is not None and sig in (signal.SIGSTOP, signal.SIGCONT):
                self._throttle.pause(sig == signal.SIGSTOP, time.monotonic())

    # -- the state machine ----------------------------------------------------------------

    def tick(self, now: float) -> float | None:
        """Advance; return when to be called again (``None``: only when an fd is ready).

        Sets :attr:`done` once every child is reaped, the group is empty, and output is
        drained.
        """
        if self.done:
            return None
        if self.stopping is None and self._timed:
            self._check_deadlines(now)
            throttle = self._throttle
            if throttle is not None and self.stopping is None and now >= throttle.next_at:
                throttle.step(now)
        if self._kill_at is not None and not self._killed and now >= self._kill_at:
            self._killed = True
            signal_group(self.pgid, signal.SIGKILL)
        if not self._exits:
            if not self._group_empty and (
                self._group_check_at is None or now >= self._group_check_at
            ):
                self._check_group(now)
            if self._group_empty:
                self._finish()
                return None
        if self.stopping is None:
            if not self._timed:
                return self._group_check_at
            times: tuple[float | None, ...] = (
                self._group_check_at,
                self._timeout_at,
                self._wall_at,
                self._next_sample,
                None if self._throttle is None else self._throttle.next_at,
            )
        else:
            times = (self._group_check_at, None if self._killed else self._kill_at)
        return min((t for t in times if t is not None), default=None)

    def _check_deadlines(self, now: float) -> None:
        if self._timeout_at is not None and now >= self._timeout_at:
            self.begin_stop("timeout")
        elif self._wall_at is not None and now >= self._wall_at:
            self.limit_observed = now - self.started
            self.begin_stop("wall_time")
        elif self._next_sample is not None and now >= self._next_sample:
            self._sample(now)

    def _sample(self, now: float) -> None:
        assert self._max_procs is not None
        count = len(group_members(self.pgid))
        if count > self._max_procs:
            self.limit_observed = count
            self.begin_stop("processes")
        self._next_sample = now + SAMPLE_INTERVAL

    def _check_group(self, now: float) -> None:
        # Zombies still count for kill(); a group of zombies only is dead all the same (its
        # reaper may be a PID 1 that never reaps), so confirm with a look at /proc. Adopted
        # zombies (when this process is a subreaper) are ours to reap first.
        if not group_alive(self.pgid) or (
            reap_group(self.pgid) >= 0
            and (not group_alive(self.pgid) or not group_members(self.pgid))
        ):
            self._group_empty = True
            self._group_check_at = None
            return
        # The command exited but left processes in its group: stop them too.
        if self.stopping is None:
            self.begin_stop("leftover")
        self._group_check_at = now + self._group_poll
        self._group_poll = min(self._group_poll * 2, _GROUP_POLL_MAX)

    def _finish(self) -> None:
        if self.readers:
            poller = select.poll()
            for fd in self.readers:
                poller.register(fd, select.POLLIN)
            # Bounded: a process that left the group may still hold a pipe and write to it.
            for _ in range(64):
                events = poller.poll(0)
                if not events:
                    break
                for fd, _ in events:
                    sink = self.readers.get(fd)
                    if sink is None or not self._read(fd, sink):
                        poller.unregister(fd)
            for fd, sink in list(self.readers.items()):
                self._close(fd)
                sink.close()
            self.readers.clear()
        self._close_stdin()
        self._remove_cgroup()
        self.done = True

    # -- outcome --------------------------------------------------------------------------

    def limit_exceeded(self) -> str | None:
        if self.stopping in ("wall_time", "processes"):
            return self.stopping
        kills, peak = self._oom
        if kills:
            self.limit_observed = float(peak)
            return "memory"
        limits = self.commands[0].limits
        if limits is None or limits.cpu_time is None:
            return None
        for stage in self.stages:
            st = stage.status
            if st is None or st.usage is None:
                continue
            by_us = self._killed and self.stopping is not None
            if st.signal == "SIGXCPU" or (
                st.signal == "SIGKILL" and not by_us and st.usage.cpu >= limits.cpu_time
            ):
                self.limit_observed = st.usage.cpu
                return "cpu_time"
        return None

    def stage_result(self, index: int) -> Result:
        stage = self.stages[index]
        status = stage.status
        assert status is not None
        last = index == len(self.stages) - 1
        out = self.stdout.getvalue() if last and self.stdout is not None else b""
        err = stage.stderr.getvalue() if stage.stderr is not None else b""
        truncated = bool(
            (last and self.stdout is not None and self.stdout.truncated)
            or (stage.stderr is not None and stage.stderr.truncated)
        )
        return Result(
            args=stage.command.args,
            pid=stage.pid,
            returncode=status.returncode,
            signal=status.signal,
            stdout=out,
            stderr=err,
            duration=stage.ended - self.started,
            timed_out=self.stopping == "timeout",
            limit_exceeded=self.limit_exceeded(),
            truncated=truncated,
            usage=status.usage,
            limits=stage.command.mechanisms,
        )
