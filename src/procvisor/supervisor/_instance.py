"""One instance of a service (``web:0``): its state machine and the task that keeps it alive.

Each instance is driven by one runner task, owned by the instance, that loops while the
instance is wanted: run ``pre_start``, spawn the command (its output to rotating files), run
``post_start``, wait for the exit (an event from the process layer, not a poll), ask the
restart policy (:func:`procvisor.policy.restart.decide_restart`) what to do, and do it:
restart at once, after a backoff delay, or go ``fatal`` until the cooldown lets it try once
more. A health probe runs beside the process while it runs.

Every state change goes through :meth:`Instance._set_state`, which refuses an illegal move by
name and reports an event::

    stopped → starting → running → (stopping → stopped) | (exited → backoff → starting …)
                                  | fatal → (after the cooldown) starting
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import random
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from procvisor._util import NoPublicConstructor
from procvisor.errors import ProcessError, SpawnError
from procvisor.policy.health import Health, HealthState, HealthThresholds, observe
from procvisor.policy.restart import (
    BreakerState,
    RestartAction,
    RestartState,
    decide_restart,
    on_cooldown_elapsed,
)
from procvisor.policy.units import format_duration, format_size
from procvisor.process import OutputSink, Process, Result, RotatingLog, Timestamped, spawn
from procvisor.supervisor._hooks import run_hook
from procvisor.supervisor._notify import NotifyHub
from procvisor.supervisor._observer import Observer
from procvisor.supervisor._probes import Prober
from procvisor.supervisor._spec import ServiceSpec

__all__ = ["ExitInfo", "Instance", "State"]

log = logging.getLogger("procvisor.supervisor")


class State(StrEnum):
    """The run state of an instance (health is kept apart)."""

    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    EXITED = "exited"
    BACKOFF = "backoff"
    FATAL = "fatal"


_MOVES: dict[State, frozenset[State]] = {
    State.STOPPED: frozenset({State.STARTING}),
    State.STARTING: frozenset({State.RUNNING, State.EXITED, State.STOPPING, State.FATAL}),
    State.RUNNING: frozenset({State.STOPPING, State.EXITED}),
    State.STOPPING: frozenset({State.STOPPED, State.EXITED}),  # EXITED: stopped to restart
    State.EXITED: frozenset({State.BACKOFF, State.STARTING, State.STOPPED, State.FATAL}),
    State.BACKOFF: frozenset({State.STARTING, State.STOPPED}),
    State.FATAL: frozenset({State.STARTING, State.STOPPED}),
}

# Spawn failures that another attempt will not fix by itself: the instance goes fatal at once
# (with its cooldown's one retry later) instead of spending its restart budget.
_PERMANENT_SPAWN = frozenset(
    {"not_found", "permission_denied", "exec_format", "bad_cwd", "bad_user", "bad_group"}
)

EventSink = Callable[[str, int | None, str, str, Mapping[str, Any] | None], None]
"""``(service, instance, kind, message, data)``: where instances report what happens."""


@dataclass(frozen=True, slots=True)
class ExitInfo:
    """How the last run of an instance ended."""

    pid: int | None
    code: int | None
    signal: str | None
    at: float
    """Wall-clock time of the exit."""
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "code": self.code,
            "signal": self.signal,
            "at": self.at,
            "reason": self.reason,
        }


class Instance(metaclass=NoPublicConstructor):
    """One running copy of a service; created and owned by the supervisor."""

    def __init__(
        self,
        spec: ServiceSpec,
        index: int,
        *,
        log_dir: Path,
        emit: EventSink,
        prober: Prober,
        on_spawn: Callable[[Instance], None],
        on_gone: Callable[[Instance], None],
        observer: Observer,
        sockets: Mapping[str, int],
        notify_hub: NotifyHub,
    ) -> None:
        self.spec = spec
        self.index = index
        self.state = State.STOPPED
        self.pid: int | None = None
        self.started_at: float | None = None  # monotonic, while a process runs
        self.started_wall: float | None = None
        self.start_ticks: float | None = None  # with pid, names the process (see Process)
        self.restarts = 0
        self.last_exit: ExitInfo | None = None
        self.reason = ""
        self.health: HealthState | None = None
        self._log_dir = log_dir
        self._emit = emit
        self._prober = prober
        self._on_spawn = on_spawn
        self._on_gone = on_gone
        self._observer = observer
        self._sockets = sockets
        self._hub = notify_hub
        self.notify_status: str | None = None
        """The last ``STATUS=`` text of a ``notify`` instance's current run."""
        self._ready_at: float | None = None  # monotonic: when READY=1 came (notify)
        self._notified = _Notified()
        self._proc: Process | None = None
        self._runner: asyncio.Task[None] | None = None
        self._wanted = False
        self._stop_requested = False
        self._unhealthy_restart = ""
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()
        self._lock = asyncio.Lock()
        self._side_tasks: set[asyncio.Task[Any]] = set()
        self._restart_state = RestartState()
        self._rand = random.Random()
        self._attempts = 0  # starts tried; start() waits until the one it caused settles
        self._settled = 0

    # -- naming and reporting ---------------------------------------------------------------

    @property
    def service(self) -> str:
        return self.spec.name

    @property
    def name(self) -> str:
        return f"{self.spec.name}:{self.index}"

    def __repr__(self) -> str:
        return f"<Instance {self.name} {self.state.value} pid={self.pid}>"

    def log_path(self, stream: str) -> Path:
        """The file ``stream`` is written to (stderr's is stdout's with ``merge_stderr``)."""
        if self.spec.logs.merge_stderr:
            stream = "stdout"
        return self._log_dir / f"{self.spec.name}.{self.index}.{stream}.log"

    def _event(self, kind: str, message: str, data: Mapping[str, Any] | None = None) -> None:
        self._emit(self.spec.name, self.index, kind, message, data)

    def _set_state(self, new: State, reason: str = "", *, force: bool = False) -> None:
        """Move to ``new``; ``force`` skips the check (only the runner's error and cancel paths)."""
        old = self.state
        if not force and new not in _MOVES[old]:
            raise RuntimeError(f"{self.name}: illegal state change {old.value} -> {new.value}")
        self.state = new
        self.reason = reason
        if new is not State.STARTING and new is not State.STOPPING:
            self._settled = self._attempts
        self._notify()

    def _notify(self) -> None:
        """Wake everyone waiting for a change (``start``, ``wait_ready``)."""
        self._changed.set()
        self._changed = asyncio.Event()

    def status(self) -> dict[str, Any]:
        """What ``procvisor status`` shows (CPU and memory are filled in by the supervisor)."""
        uptime = None
        # A notify instance is up from READY=1, as its restart policy counts it.
        since = self._ready_at if self.spec.notify else self.started_at
        if since is not None and self.state in (State.RUNNING, State.STOPPING):
            uptime = time.monotonic() - since
        health = None  # a verdict on a process: none while no process runs
        if self.spec.health is not None and uptime is not None:
            health = self.health.health.value if self.health is not None else "unknown"
        return {
            "name": self.name,
            "service": self.spec.name,
            "instance": self.index,
            "state": self.state.value,
            "pid": self.pid,
            "uptime": uptime,
            "restarts": self.restarts,
            "last_exit": self.last_exit.to_dict() if self.last_exit else None,
            "health": health,
            "cpu_percent": None,
            "rss": None,
            "reason": self.reason,
            "status_text": self.notify_status,
        }

    # -- control ----------------------------------------------------------------------------

    @property
    def active(self) -> bool:
        """True while the runner task keeps the instance alive (or is trying to)."""
        return self._runner is not None and not self._runner.done()

    async def start(self) -> None:
        """Start the instance if it is not running; a fatal one gets a fresh restart budget.

        Returns once the start is over: the process runs, or it failed to start (``exited``,
        ``backoff`` or ``fatal``, with the reason).
        """
        async with self._lock:
            if self.active and self.state is not State.FATAL:
                goal = self._attempts  # the start in progress, if there is one
            else:
                goal = self._attempts + 1
                self._restart_state = RestartState()
                if self.active:  # fatal: wake it with a clean slate
                    self._wake.set()
                else:
                    self._wanted = True
                    self._stop_requested = False
                    self._runner = asyncio.create_task(self._run(), name=f"procvisor {self.name}")
            runner = self._runner
        # Outside the lock: a stop must not wait behind a start that waits for READY=1.
        assert runner is not None
        while self._settled < goal and not runner.done():
            await self._changed.wait()

    async def stop(self) -> None:
        """Stop it: ``pre_stop``, stop signal, ``stop_timeout``, SIGKILL, ``post_stop``."""
        async with self._lock:
            self._wanted = False
            self._stop_requested = True
            self._wake.set()
            runner = self._runner
            if runner is None:
                return
            proc = self._proc
            if proc is not None and self.state in (State.STARTING, State.RUNNING):
                await self._stop_process(proc, "stopped by user")
            with contextlib.suppress(asyncio.CancelledError):
                await runner
            self._runner = None

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    def signal(self, sig: int) -> bool:
        """Send ``sig`` to the instance's process group; False when it is not running."""
        proc = self._proc
        if proc is None or not proc.running:
            return False
        proc.signal(sig)
        return True

    async def wait_ready(self, timeout: float) -> bool:
        """Wait until the instance runs (and is healthy, when it has a probe)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.state is State.RUNNING and (
                self.spec.health is None
                or (self.health is not None and self.health.health is Health.HEALTHY)
            ):
                return True
            if self.state is State.FATAL or not self.active:
                return False
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    async def wait_completed(self) -> bool:
        """Wait until the instance has run and exited with a success code, for good; False
        if it ended otherwise (a failure it is not restarted after, fatal, stopped)."""
        while True:
            last = self.last_exit
            done = self.state is State.EXITED and not self.active
            if done and last is not None and last.signal is None:
                return last.code in self.spec.restart.success_exit_codes
            if self.state in (State.FATAL, State.STOPPED) or done:
                return False
            await self._changed.wait()

    async def _stop_process(self, proc: Process, why: str) -> None:
        if self.state in (State.RUNNING, State.STARTING):  # starting: waiting for READY=1
            self._set_state(State.STOPPING, why)
        await self._hook("pre_stop")
        await proc.stop(self.spec.stop_timeout)

    async def close(self) -> None:
        """Stop and forget every task (the supervisor is shutting down or removing it)."""
        await self.stop()
        for task in list(self._side_tasks):
            task.cancel()
        for task in list(self._side_tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- the runner -------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            while self._wanted:
                decision_delay = await self._run_once()
                if decision_delay is None or not self._wanted:
                    break
                if decision_delay > 0:
                    await self._sleep(decision_delay)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug here must not leave a silent dead instance
            log.exception("%s: supervisor error", self.name)
            self._event("error", f"supervisor error: {exc!r}")
            if self._proc is not None and self._proc.running:
                await self._proc.stop(self.spec.stop_timeout)
            self._set_state(State.FATAL, f"supervisor error: {exc!r}", force=True)
        finally:
            self._wanted = False
            if self.state in (State.STARTING, State.RUNNING, State.STOPPING, State.BACKOFF):
                self._set_state(State.STOPPED, self.reason, force=True)
            elif self.state is State.FATAL and self._stop_requested:
                self._set_state(State.STOPPED, "stopped by user")
            self._notify()  # the runner is done: `active` changed

    async def _sleep(self, seconds: float) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    def _env(self, **extra: str) -> dict[str, str]:
        env = {"PROCVISOR_SERVICE": self.spec.name, "PROCVISOR_INSTANCE": str(self.index)}
        env.update(extra)
        return env

    def _listen_fds(self, env: dict[str, str]) -> dict[int, int]:
        """The listening sockets as fds 3, 4, ..., announced in ``env`` as systemd does.

        Raises:
            SpawnError: a socket the spec names is not open (its owner closed it).
        """
        fds: dict[int, int] = {}
        for i, (name, address) in enumerate(self.spec.sockets):
            fd = self._sockets.get(name)
            if fd is None:
                raise SpawnError(
                    f"socket {name!r} ({address}) is not open in the daemon",
                    reason="os_error",
                    command=self.spec.command,
                    errno=errno.EBADF,
                )
            fds[3 + i] = fd
        if fds:
            env["LISTEN_FDS"] = str(len(fds))
            env["LISTEN_FDNAMES"] = ":".join(name for name, _ in self.spec.sockets)
        return fds

    async def _hook(self, which: str, **extra: str) -> bool:
        argv = getattr(self.spec.hooks, which)
        if argv is None:
            return True
        if self.pid is not None:
            extra.setdefault("PROCVISOR_PID", str(self.pid))
        outcome = await run_hook(
            which,
            argv,
            timeout=self.spec.hooks.timeout,
            env=self._env(**extra),
            cwd=self.spec.cwd,
        )
        if not outcome.ok:
            self._event("hook-failed", f"{which} hook failed: {outcome.detail}")
        return outcome.ok

    async def _run_once(self) -> float | None:
        """One start and exit; return the delay before the next start, or None to stay down."""
        spec = self.spec
        self._attempts += 1
        if self.state is State.FATAL and self._restart_state.breaker is BreakerState.OPEN:
            # The cooldown is over (the runner slept until then): one trial start.
            until = self._restart_state.open_until or 0.0
            self._restart_state = on_cooldown_elapsed(
                self._restart_state, max(time.monotonic(), until)
            )
            self._set_state(State.STARTING, "half-open: one trial start after the cooldown")
        else:
            self._set_state(State.STARTING)
        if not await self._hook("pre_start"):
            return self._after_exit(code=None, signal=None, uptime=0.0, why="pre_start hook failed")
        if not self._wanted:
            return None
        spawning = time.monotonic()
        try:
            env = {**spec.env, **self._env()}
            fds = self._listen_fds(env)
            pid_env = ["LISTEN_PID"] if fds else []
            if spec.notify:
                env["NOTIFY_SOCKET"] = self._hub.address
                if spec.watchdog is not None:
                    env["WATCHDOG_USEC"] = str(round(spec.watchdog * 1e6))
                    pid_env.append("WATCHDOG_PID")
            proc = await spawn(
                spec.command,
                cwd=spec.cwd,
                env=env,
                inherit_env=spec.inherit_env,
                user=spec.user,
                group=spec.group,
                umask=spec.umask,
                limits=spec.limits,
                stop_signal=spec.stop_signal,
                grace=spec.stop_timeout,
                pass_fds=fds,
                pid_env=pid_env,
                merge_stderr=spec.logs.merge_stderr,
                sinks=self._logs(),
            )
        except SpawnError as exc:
            return self._spawn_failed(exc)
        self._proc = proc
        self.pid = proc.pid
        self.start_ticks = proc.start_ticks
        self.started_at = time.monotonic()
        self._observer.spawned(spec.name, self.started_at - spawning)
        self.started_wall = time.time()
        self._on_spawn(self)
        watchers = []
        self._ready_at = None  # notify_status was cleared when the last run ended
        if spec.notify:
            self._notified = _Notified(time.monotonic() + spec.start_timeout)
            self.reason = "waiting for READY=1"  # still starting: shown by status
            self._hub.watch(proc.pid, self._on_notify, since=spawning)
            self._event("start", f"started, pid {proc.pid}; waiting for READY=1", {"pid": proc.pid})
            watchers.append(self._notify_loop(proc))
        else:
            self._set_state(State.RUNNING)
            self._event("start", f"started, pid {proc.pid}", {"pid": proc.pid})
        if spec.health is not None:
            self.health = HealthState(started=self.started_at)
            watchers.append(self._probe_loop(proc))
        if proc.limits.get("memory") == "cgroup":
            watchers.append(self._oom_loop(proc))
        tasks = [asyncio.create_task(w, name=f"watch {self.name}") for w in watchers]
        if spec.hooks.post_start is not None:
            self._side(self._hook("post_start"))
        try:
            result = await self._wait(proc)
        finally:
            self._hub.unwatch(proc.pid)
            self.notify_status = None  # it spoke for a process that is gone
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        # A notify service is up from READY=1: one that never got there failed to start.
        if spec.notify:
            uptime = 0.0 if self._ready_at is None else time.monotonic() - self._ready_at
        else:
            uptime = time.monotonic() - self.started_at
        self._proc = None
        self._on_gone(self)
        if self._stop_requested:
            self.last_exit = ExitInfo(
                self.pid,
                result.returncode if result.signal is None else None,
                result.signal,
                time.time(),
                "stopped by user",
            )
            self._event("stop", f"stopped ({_describe(result)})", _exit_data(result))
            self._observer.exited(spec.name, "stopped")
            self._set_state(State.STOPPED, "stopped by user")
            await self._hook("post_stop", PROCVISOR_EXIT_CODE=str(result.returncode))
            self.pid = None
            return None
        why = self._unhealthy_restart
        self._unhealthy_restart = ""
        memory = spec.limits.memory if spec.limits is not None else None
        if not why and result.limit_exceeded == "memory" and memory is not None:
            why = (
                "out of memory: the kernel killed a process at the "
                f"{format_size(memory)} memory limit ({_describe(result)})"
            )
        delay = self._after_exit(
            code=result.returncode if result.signal is None else None,
            signal=result.signal,
            uptime=uptime,
            why=why,
            result=result,
        )
        self.pid = None
        return delay

    def _logs(self) -> tuple[OutputSink, OutputSink]:
        """The sinks of stdout and stderr: one file for both with ``merge_stderr``."""
        out = self._log("stdout")
        return (out, out) if self.spec.logs.merge_stderr else (out, self._log("stderr"))

    def _log(self, stream: str) -> OutputSink:
        size = self.spec.logs.max_size or sys.maxsize  # 0: never rotate
        log = RotatingLog(self.log_path(stream), size, self.spec.logs.backups)
        return Timestamped(log) if self.spec.logs.timestamps else log

    async def _wait(self, proc: Process) -> Result:
        try:
            return await proc.wait()
        except ProcessError as exc:  # a limit stopped it: the result is attached
            assert exc.result is not None
            return exc.result

    def _side(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    def _spawn_failed(self, exc: SpawnError) -> float | None:
        if exc.reason in _PERMANENT_SPAWN:
            self._observer.exited(self.spec.name, "spawn_error")
            message = f"cannot start: {exc}"
            self.last_exit = ExitInfo(None, None, None, time.time(), message)
            self._set_state(State.EXITED, message)
            retry_at = time.monotonic() + self.spec.restart.cooldown
            self._restart_state = RestartState(
                self._restart_state.failures,
                self._restart_state.failed_starts + 1,
                BreakerState.OPEN,
                retry_at,
            )
            cooldown = format_duration(self.spec.restart.cooldown)
            return self._go_fatal(f"{message}; fatal, one more try in {cooldown}", retry_at)
        return self._after_exit(code=None, signal=None, uptime=0.0, why=f"cannot start: {exc}")

    def _after_exit(
        self,
        *,
        code: int | None,
        signal: str | None,
        uptime: float,
        why: str = "",
        result: Result | None = None,
    ) -> float | None:
        decision, self._restart_state = decide_restart(
            self.spec.restart,
            self._restart_state,
            exit_code=code,
            signal=signal,
            uptime=uptime,
            stopped_by_user=False,
            now=time.monotonic(),
            rand=self._rand.random(),
        )
        self._observer.exited(self.spec.name, self._exit_reason(code, signal, why))
        outcome, _, action = decision.reason.partition("; ")
        if why:  # say what happened in our words, and what the policy does about it
            outcome = why
        reason = f"{outcome}; {action}" if action else outcome
        self.last_exit = ExitInfo(self.pid, code, signal, time.time(), outcome)
        if self.state is not State.EXITED:
            self._set_state(State.EXITED, reason)
        data = _exit_data(result) if result is not None else {}
        self._event("exit", reason, {**data, "uptime": round(uptime, 3)})
        if decision.failure and self.spec.hooks.on_failure is not None:
            code_text = "" if code is None else str(code)
            self._side(self._hook("on_failure", PROCVISOR_EXIT_CODE=code_text))
        if not self._wanted:
            return None
        if decision.action is RestartAction.RESTART:
            self.restarts += 1
            if decision.delay > 0:
                self._set_state(State.BACKOFF, reason)
            return decision.delay
        if decision.action is RestartAction.FATAL:
            assert decision.retry_at is not None
            return self._go_fatal(reason, decision.retry_at)
        self._wanted = False
        return None

    def _exit_reason(self, code: int | None, signal: str | None, why: str) -> str:
        """The EXIT_REASONS word for how a run ended (``why``: the runner's own words)."""
        for prefix, reason in _WHY_REASONS:
            if why.startswith(prefix):
                return reason
        if signal is not None:
            return "signal"
        return "success" if code in self.spec.restart.success_exit_codes else "failure"

    def _go_fatal(self, reason: str, retry_at: float) -> float | None:
        self._set_state(State.FATAL, reason)
        self._event("fatal", reason)
        return max(0.001, retry_at - time.monotonic())

    def _on_notify(self, fields: Mapping[str, str]) -> None:
        """A message from this instance's process group on the notify socket."""
        note = self._notified
        if "STATUS" in fields:
            self.notify_status = fields["STATUS"]
            self._notify()
        if fields.get("READY") == "1":
            note.ready = True
        extend = fields.get("EXTEND_TIMEOUT_USEC", "")
        if extend.isdigit() and not note.ready:
            note.deadline = max(note.deadline, time.monotonic() + int(extend) / 1e6)
        if fields.get("WATCHDOG") == "1":
            note.pinged = True
        elif fields.get("WATCHDOG") == "trigger":
            note.triggered = True
        note.poke.set()

    async def _notify_loop(self, proc: Process) -> None:
        """Wait for READY=1 until the start timeout; then, with a watchdog, for its pings."""
        spec, note = self.spec, self._notified
        while not note.ready:
            if not await note.wait_until(note.deadline):
                why = f"not ready: no READY=1 within {format_duration(spec.start_timeout)}"
                await self._stop_for(proc, why)
                return
        self._ready_at = time.monotonic()
        if self.state is not State.STARTING:
            return  # being stopped
        self._set_state(State.RUNNING)
        self._event("ready", "ready (READY=1)")
        if spec.watchdog is None:
            return
        last = time.monotonic()
        while True:
            if note.triggered:
                await self._stop_for(proc, "watchdog: the service triggered it (WATCHDOG=trigger)")
                return
            if note.pinged:
                note.pinged, last = False, time.monotonic()
            if not await note.wait_until(last + spec.watchdog) and not note.pinged:
                why = f"watchdog: no WATCHDOG=1 for {format_duration(spec.watchdog)}"
                await self._stop_for(proc, why)
                return

    async def _oom_loop(self, proc: Process) -> None:
        """Record each OOM kill in the instance's memory cgroup; restart it, unless told not to.

        The command's own kill ends it anyway; a kill of another of its processes (a worker
        of a master that carries on) would otherwise go unseen.
        """
        assert self.spec.limits is not None and self.spec.limits.memory is not None
        limit = format_size(self.spec.limits.memory)
        seen = 0
        async for count in proc.oom_kills():
            for _ in range(count - seen):
                self._observer.oom_killed(self.spec.name)
            seen = count
            what = f"the kernel killed a process at the {limit} memory limit ({count} so far)"
            self._event("oom", what, {"oom_kills": count})
            if self.spec.on_oom == "restart":
                await self._stop_for(proc, f"out of memory: {what}")
                return

    async def _stop_for(self, proc: Process, why: str) -> None:
        """Stop the instance's process to restart it (a failure for the restart policy)."""
        if not proc.running or self._stop_requested:
            return
        self._unhealthy_restart = why
        self._event("restart", f"restarting: {why}")
        await self._stop_process(proc, why)

    async def _probe_loop(self, proc: Process) -> None:
        spec = self.spec.health
        assert spec is not None and self.health is not None
        thresholds = HealthThresholds(
            failure_threshold=spec.failure_threshold,
            success_threshold=spec.success_threshold,
            start_period=spec.start_period,
        )
        env = self._env(PROCVISOR_PID=str(proc.pid))
        while proc.running:
            outcome = await self._prober.check(spec, env=env, cwd=self.spec.cwd)
            if not proc.running or self._stop_requested:
                return
            self._observer.probed(self.spec.name, outcome.ok, outcome.latency)
            self.health, change = observe(
                thresholds, self.health, outcome.ok, time.monotonic(), outcome.detail
            )
            if change is not None:
                self._notify()
                self._event(
                    "health",
                    f"{change.old.value} -> {change.new.value}: {change.reason}",
                    {"health": change.new.value},
                )
                if change.new is Health.UNHEALTHY and spec.on_unhealthy == "restart":
                    self._unhealthy_restart = f"unhealthy ({change.reason})"
                    self._event("restart", f"restarting: {self._unhealthy_restart}")
                    await self._stop_process(proc, self._unhealthy_restart)
                    return
            # Until the first verdict, probe at least every second (as Docker's
            # start_interval): a fresh instance becomes healthy soon after it can.
            fast = self.health.health is Health.UNKNOWN
            await asyncio.sleep(min(spec.interval, 1.0) if fast else spec.interval)


class _Notified:
    """What a ``notify`` instance's current run has said on the notify socket."""

    __slots__ = ("deadline", "pinged", "poke", "ready", "triggered")

    def __init__(self, deadline: float = 0.0) -> None:
        self.deadline = deadline  # monotonic: READY=1 is due by then
        self.ready = self.pinged = self.triggered = False
        self.poke = asyncio.Event()

    async def wait_until(self, at: float) -> bool:
        """Wait for a message until ``at`` (monotonic); False if none came by then."""
        self.poke.clear()
        left = at - time.monotonic()
        if left <= 0:
            return False
        try:
            await asyncio.wait_for(self.poke.wait(), left)
        except TimeoutError:
            return False
        return True


_WHY_REASONS = (
    ("unhealthy", "unhealthy"),
    ("cannot start", "spawn_error"),
    ("pre_start", "hook_failed"),
    ("out of memory", "oom"),
    ("not ready", "start_timeout"),
    ("watchdog", "watchdog"),
)
"""How the runner's own words for an end (``why``) begin, and the EXIT_REASONS word of each."""


def _describe(result: Result) -> str:
    if result.signal is not None:
        return f"killed by {result.signal}"
    if result.returncode is None:
        return "exit status unknown"
    return f"exit code {result.returncode}"


def _exit_data(result: Result) -> dict[str, Any]:
    return {"code": result.returncode, "signal": result.signal, "pid": result.pid}
