"""The public face of the process layer: ``run``, ``arun``, ``spawn`` and ``Process``."""

from __future__ import annotations

import asyncio
import os
import shlex
import signal as _signal
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from procvisor._util import NoPublicConstructor
from procvisor.errors import (
    LimitExceeded,
    NonZeroExit,
    ProcessError,
    Signaled,
    TimeoutExpired,
)
from procvisor.policy.units import parse_duration
from procvisor.process._drivers import AsyncDriver, drive_sync, stop_async, wait_async
from procvisor.process._exec import Execution, InputLike
from procvisor.process._group import group_members
from procvisor.process._limits import Limits, format_limit
from procvisor.process._output import LineQueue, OutputLine, OutputSink
from procvisor.process._result import Result, parse_signal
from procvisor.process._spawn import CommandLike, FdsLike, prepare

if TYPE_CHECKING:
    import psutil

DEFAULT_MAX_OUTPUT = 16 * 1024 * 1024
"""Bytes of each captured stream kept by default (the tail, when a process writes more)."""


def stderr_tail(data: bytes, lines: int = 5, chars: int = 500) -> str:
    """The last few lines of ``data``, for an error message."""
    text = data.decode("utf-8", "replace").strip()
    tail = " | ".join(text.splitlines()[-lines:])
    return tail if len(tail) <= chars else "..." + tail[-chars:]


def _duration(value: float | str | None, field: str, *, positive: bool) -> float | None:
    if value is None:
        return None
    seconds = parse_duration(value, field=field)
    if positive and seconds <= 0:
        raise ValueError(f"{field}: {value!r} must be more than 0 seconds")
    return seconds


def _limit_value(limits: Limits | None, name: str) -> float:
    value = getattr(limits, name, None) if limits is not None else None
    return float(value) if value is not None else 0.0


def raise_for_outcome(ex: Execution, result: Result, *, check: bool, stage: int | None) -> None:
    """Raise the error ``result`` calls for; timeouts and limits raise even without check."""
    if result.timed_out:
        # A pipeline times out as a whole: name all of it, not the stage the result is of.
        subject = " | ".join(shlex.join(c.args) for c in ex.commands)
        raise TimeoutExpired(
            timeout=ex.timeout or 0.0, command=result.args, result=result, subject=subject
        )
    if result.limit_exceeded is not None:
        name = result.limit_exceeded
        allowed = _limit_value(ex.commands[0].limits, name)
        observed = ex.limit_observed
        # CPU time is accounted in ticks: a process stopped at its limit can show a little
        # less or a little more, and "limit of 1s (observed 998.8ms)" or "limit of 1s
        # (observed 1s)" would read as a contradiction or as noise.
        seen = ""
        if observed is not None and observed > allowed:
            shown = format_limit(name, observed)
            if shown != format_limit(name, allowed):
                seen = f" (observed {shown})"
        # The kernel, not procvisor, ends a tree over its memory cgroup: one process of it.
        how = (
            "the kernel's OOM killer killed a process of it" if name == "memory" else "was stopped"
        )
        raise LimitExceeded(
            f"{shlex.join(result.args)} exceeded its {name} limit of "
            f"{format_limit(name, allowed)}{seen} and {how}; raise the limit or "
            "make the command use less",
            limit=name,
            observed=observed,
            allowed=allowed,
            command=result.args,
            result=result,
        )
    if not check:
        return
    if result.returncode is None:
        raise ProcessError(
            f"exit status of {result.args[0]!r} is unknown: another part of this program "
            "reaped it (a SIGCHLD handler or waitpid(-1))",
            command=result.args,
            result=result,
        )
    if result.signal is not None:
        raise Signaled(signal=result.signal, stage=stage, command=result.args, result=result)
    if result.returncode != 0:
        raise NonZeroExit(
            returncode=result.returncode,
            stderr_tail=stderr_tail(result.stderr),
            stage=stage,
            command=result.args,
            result=result,
        )


def _execution(
    cmd: CommandLike,
    *,
    timeout: float | str | None,
    input: InputLike,
    cwd: str | os.PathLike[str] | None,
    env: Mapping[str, str] | None,
    inherit_env: bool,
    user: str | int | None,
    group: str | int | None,
    umask: int | str | None,
    limits: Limits | None,
    capture: bool,
    merge_stderr: bool,
    max_output: int,
    stop_signal: int | str,
    grace: float | str,
    shell: bool,
    pass_fds: FdsLike = (),
    pid_env: str | Sequence[str] | None = None,
    lines: LineQueue | None = None,
    sinks: tuple[OutputSink, OutputSink] | None = None,
) -> Execution:
    command = prepare(
        cmd,
        shell=shell,
        env=env,
        inherit_env=inherit_env,
        cwd=cwd,
        user=user,
        group=group,
        umask=umask,
        limits=limits,
        pass_fds=pass_fds,
        pid_env=pid_env,
    )
    return Execution(
        [command],
        input=input,
        capture=capture,
        merge_stderr=merge_stderr,
        max_output=max_output,
        stop_signal=parse_signal(stop_signal, field="stop_signal"),
        grace=_duration(grace, "grace", positive=False) or 0.0,
        timeout=_duration(timeout, "timeout", positive=True),
        lines=lines,
        sinks=sinks,
    )


def run(
    cmd: CommandLike,
    *,
    timeout: float | str | None = None,
    check: bool = False,
    input: InputLike = None,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    inherit_env: bool = True,
    user: str | int | None = None,
    group: str | int | None = None,
    umask: int | str | None = None,
    limits: Limits | None = None,
    capture: bool = True,
    merge_stderr: bool = False,
    max_output: int = DEFAULT_MAX_OUTPUT,
    stop_signal: int | str = _signal.SIGTERM,
    grace: float | str = 5.0,
    shell: bool = False,
    pass_fds: FdsLike = (),
) -> Result:
    """Run a command in its own process group, wait for it, and return its :class:`Result`.

    Args:
        cmd: an argv list, or a string split like a shell would (no shell runs unless
            ``shell=True``).
        timeout: seconds (or ``"30s"``) before the group is stopped; raises TimeoutExpired.
        check: raise NonZeroExit / Signaled when the command fails.
        input: bytes or str to write to stdin, a file object or path to read it from,
            ``"inherit"`` for this process's stdin, or ``None`` for ``/dev/null``.
        env: variables to set; added to this process's environment unless
            ``inherit_env=False``.
        limits: resource limits (see :class:`Limits`).
        capture: capture stdout and stderr (else they are inherited).
        merge_stderr: send stderr to wherever stdout goes.
        max_output: bytes kept per captured stream; beyond it the tail is kept and
            ``Result.truncated`` is set.
        stop_signal, grace: how the group is stopped: ``stop_signal``, then SIGKILL after
            ``grace`` seconds.
        pass_fds: more fds for the child: ``{child_fd: our_fd}`` (3 and above), or a list of
            our fds, passed at the same numbers (as ``subprocess``'s ``pass_fds``).

    Raises:
        SpawnError: the command could not be started.
        TimeoutExpired, LimitExceeded: it was stopped for running too long or using too much.
        NonZeroExit, Signaled: with ``check=True``, it failed.
        ValueError, TypeError: the arguments are wrong.

    Ctrl-C stops the whole group (a second Ctrl-C kills it) before KeyboardInterrupt
    propagates.
    """
    ex = _execution(
        cmd,
        timeout=timeout,
        input=input,
        cwd=cwd,
        env=env,
        inherit_env=inherit_env,
        user=user,
        group=group,
        umask=umask,
        limits=limits,
        capture=capture,
        merge_stderr=merge_stderr,
        max_output=max_output,
        stop_signal=stop_signal,
        grace=grace,
        shell=shell,
        pass_fds=pass_fds,
    )
    drive_sync(ex)
    result = ex.stage_result(0)
    raise_for_outcome(ex, result, check=check, stage=None)
    return result


async def arun(
    cmd: CommandLike,
    *,
    timeout: float | str | None = None,
    check: bool = False,
    input: InputLike = None,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    inherit_env: bool = True,
    user: str | int | None = None,
    group: str | int | None = None,
    umask: int | str | None = None,
    limits: Limits | None = None,
    capture: bool = True,
    merge_stderr: bool = False,
    max_output: int = DEFAULT_MAX_OUTPUT,
    stop_signal: int | str = _signal.SIGTERM,
    grace: float | str = 5.0,
    shell: bool = False,
    pass_fds: FdsLike = (),
) -> Result:
    """The awaitable :func:`run`: same arguments, same result, same errors.

    Cancelling the awaiting task stops the whole group (a second cancellation kills it at
    once); the ``CancelledError`` propagates once the group is gone.
    """
    ex = _execution(
        cmd,
        timeout=timeout,
        input=input,
        cwd=cwd,
        env=env,
        inherit_env=inherit_env,
        user=user,
        group=group,
        umask=umask,
        limits=limits,
        capture=capture,
        merge_stderr=merge_stderr,
        max_output=max_output,
        stop_signal=stop_signal,
        grace=grace,
        shell=shell,
        pass_fds=pass_fds,
    )
    await wait_async(AsyncDriver(ex))
    result = ex.stage_result(0)
    raise_for_outcome(ex, result, check=check, stage=None)
    return result


@dataclass(frozen=True, slots=True)
class Metrics:
    """A sample of a whole process group (every live member summed)."""

    processes: int
    cpu_percent: float
    """Percent of one core since the previous sample (0.0 on the first)."""
    rss: int
    threads: int
    fds: int


class Process(metaclass=NoPublicConstructor):
    """A running process group started by :func:`spawn`.

    Iterate it (``async for line in proc``) to receive output lines as
    :class:`OutputLine` objects tagged ``stdout``/``stderr``; lines nobody reads are kept up to
    ``max_output`` bytes, the oldest dropped first (counted in :attr:`dropped_bytes`).
    ``async with`` stops the group on exit if it still runs.
    """

    def __init__(self, ex: Execution, driver: AsyncDriver, lines: LineQueue | None) -> None:
        self._ex = ex
        self._driver = driver
        self._lines = lines
        self._line_waiter: asyncio.Future[None] | None = None
        self._ps: dict[int, psutil.Process] = {}

    def _wake_reader(self) -> None:
        waiter = self._line_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    @property
    def pid(self) -> int:
        """The pid of the command (also its process group id)."""
        return self._ex.pgid

    @property
    def args(self) -> tuple[str, ...]:
        return self._ex.commands[0].args

    @property
    def start_ticks(self) -> float | None:
        """When it started, in clock ticks since boot, as ``/proc/PID/stat`` gives it.

        With :attr:`pid` it names this process for the life of the machine (a reused pid has
        another start time); None if it had to be read from ``/proc`` and was gone by then.
        """
        return self._ex.start_ticks()

    @property
    def limits(self) -> Mapping[str, str]:
        """Which mechanism enforces each limit: ``{"memory": "cgroup", ...}``."""
        return self._ex.commands[0].mechanisms

    @property
    def returncode(self) -> int | None:
        """The exit code (``-N`` for signal ``N``), or ``None`` while it runs."""
        status = self._ex.stages[0].status
        return status.returncode if status is not None else None

    @property
    def running(self) -> bool:
        """True until the command has exited and its group is gone."""
        return not self._ex.done

    @property
    def dropped_bytes(self) -> int:
        """Output bytes dropped because nobody read them in time."""
        return self._lines.dropped if self._lines is not None else 0

    def __repr__(self) -> str:
        state = "running" if self.running else f"exited({self.returncode})"
        return f"<procvisor.Process pid={self.pid} {state} args={list(self.args)!r}>"

    async def wait(self) -> Result:
        """Wait for the command to exit and its group to be gone; return its Result.

        Raises:
            TimeoutExpired, LimitExceeded: it was stopped by its timeout or a limit.
        """
        await wait_async(self._driver, shared=True)
        return self._outcome()

    def _outcome(self) -> Result:
        result = self._ex.stage_result(0)
        raise_for_outcome(self._ex, result, check=False, stage=None)
        return result

    async def oom_kills(self) -> AsyncIterator[int]:
        """Each time the kernel's OOM killer kills a process of the group at its cgroup
        ``memory`` limit, the number of kills it has notified so far; ends when the group has
        ended (or when the caller stops iterating, e.g. by cancelling).

        Yields nothing where ``memory`` is not a cgroup (see :attr:`limits`). A kill of the
        command itself also ends it, which :meth:`wait` reports as ``LimitExceeded``.
        """
        fd = self._ex.oom_notifier() if not self._ex.done else None
        if fd is None:
            return
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        loop.add_reader(fd, wake.set)
        # Counted from the kernel's notifications: its kill counter is raised only after it
        # notifies, so reading that counter now could miss the kill being notified.
        kills = 0
        try:
            while not self._ex.done:
                await wake.wait()
                wake.clear()
                try:
                    notified = os.eventfd_read(fd)
                except BlockingIOError:
                    continue
                if self._ex.done:
                    return  # the cgroup was removed with the group: no kill
                kills += notified
                yield kills
        finally:
            loop.remove_reader(fd)
            os.close(fd)

    def signal(self, sig: int | str) -> None:
        """Send ``sig`` (a number or a name like ``"HUP"``) to every process in the group."""
        self._ex.send_signal(parse_signal(sig))

    async def stop(self, grace: float | str | None = None) -> Result:
        """Stop the group: its stop signal, ``grace`` seconds, then SIGKILL; return the Result."""
        seconds = _duration(grace, "grace", positive=False)
        if not self._ex.done:
            await stop_async(self._driver, seconds, None)
        return self._ex.stage_result(0)

    async def __aenter__(self) -> Process:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def __aiter__(self) -> AsyncIterator[OutputLine]:
        return self._iter_lines()

    async def _iter_lines(self) -> AsyncIterator[OutputLine]:
        queue = self._lines
        if queue is None:
            return
        loop = asyncio.get_running_loop()
        while True:
            line = queue.get()
            if line is not None:
                yield line
                continue
            if queue.finished:
                return
            self._line_waiter = loop.create_future()
            try:
                await self._line_waiter
            finally:
                self._line_waiter = None

    def metrics(self) -> Metrics:
        """Sample every live process in the group with psutil (CPU %, RSS, threads, fds)."""
        import psutil  # noqa: PLC0415 - imported on first use: it costs ~10 ms at start-up

        members = group_members(self._ex.pgid)
        cpu = 0.0
        rss = threads = fds = count = 0
        seen = {}
        for pid in members:
            proc = self._ps.get(pid) or psutil.Process(pid)
            try:
                with proc.oneshot():
                    cpu += proc.cpu_percent()
                    rss += proc.memory_info().rss
                    threads += proc.num_threads()
                    fds += proc.num_fds()
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                continue
            except psutil.AccessDenied:
                pass  # counted, but its details are not ours to read
            seen[pid] = proc
            count += 1
        self._ps = seen
        return Metrics(processes=count, cpu_percent=cpu, rss=rss, threads=threads, fds=fds)


async def spawn(
    cmd: CommandLike,
    *,
    timeout: float | str | None = None,
    input: InputLike = None,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    inherit_env: bool = True,
    user: str | int | None = None,
    group: str | int | None = None,
    umask: int | str | None = None,
    limits: Limits | None = None,
    capture: bool = True,
    merge_stderr: bool = False,
    max_output: int = DEFAULT_MAX_OUTPUT,
    stop_signal: int | str = _signal.SIGTERM,
    grace: float | str = 5.0,
    shell: bool = False,
    pass_fds: FdsLike = (),
    pid_env: str | Sequence[str] | None = None,
    sinks: tuple[OutputSink, OutputSink] | None = None,
) -> Process:
    """Start a command in its own process group and return a :class:`Process` at once.

    Arguments as for :func:`run`, and ``pid_env``: the name of a variable (or a list of
    names) to set to the child's own pid (``"LISTEN_PID"`` for socket activation,
    ``"WATCHDOG_PID"`` for a systemd watchdog; the command then starts through
    ``/bin/sh``'s ``exec``, which keeps the pid). With ``capture=True`` its output is read
    line by line (``async for line in proc``) and not kept after it has been handed out.
    With ``sinks`` (a stdout and a stderr :class:`OutputSink`), raw output chunks go to them
    instead, as they are read (``merge_stderr`` sends both to the first); the process then
    yields no lines.

    Raises:
        SpawnError, ValueError, TypeError: as for :func:`run`.
    """
    holder: list[Process] = []
    lines = None
    if capture and sinks is None:
        lines = LineQueue(max_output, lambda: holder[0]._wake_reader() if holder else None)
    ex = _execution(
        cmd,
        timeout=timeout,
        input=input,
        cwd=cwd,
        env=env,
        inherit_env=inherit_env,
        user=user,
        group=group,
        umask=umask,
        limits=limits,
        capture=capture,
        merge_stderr=merge_stderr,
        max_output=max_output,
        stop_signal=stop_signal,
        grace=grace,
        shell=shell,
        pass_fds=pass_fds,
        pid_env=pid_env,
        lines=lines,
        sinks=sinks,
    )
    proc: Process = Process._create(ex, AsyncDriver(ex), lines)
    holder.append(proc)
    return proc


__all__ = ["DEFAULT_MAX_OUTPUT", "Metrics", "Process", "arun", "run", "spawn"]
