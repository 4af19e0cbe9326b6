"""``procvisor.Client``: drive a running daemon from Python, as the CLI does from the shell.

It speaks to the daemon's API on its Unix socket, found as the CLI finds it (the config
file: ``config=``, else ``$PROCVISOR_CONFIG``, else ``./procvisor.toml``)::

    with procvisor.Client() as daemon:
        job_id = daemon.submit(["make", "test"], timeout="10m", retries=2)
        ids = daemon.submit_many([{"command": ["true"]} for _ in range(1000)])
        job = daemon.wait(job_id)            # a dict: state, exit_code, history, ...
        daemon.restart("web", rolling=True)  # services, as procvisor restart
        upper = daemon.pool_task("upper", "hi")   # one task on a [pools.NAME] command pool

Errors: :class:`LookupError` for an unknown job, service or pool, :class:`ValueError` for a
bad spec or argument (the message names the field), :class:`ConnectionError` when no daemon
answers; a pool task that fails raises the pool's own error (``procvisor.TaskFailed``,
``TaskTimeout``, ``WorkerCrashed``, ``DeadlineExpired``, ``ProtocolError``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any

from procvisor import errors
from procvisor.cli._client import (
    CliError,
    DaemonClient,
    DaemonError,
    InvalidConfig,
    NoDaemon,
    connect,
)

__all__ = ["Client"]

_FINAL = frozenset({"succeeded", "failed", "expired", "cancelled"})


def _python_error(exc: CliError) -> Exception:
    message = "\n".join(exc.lines)
    if isinstance(exc, DaemonError):
        if exc.status == 404:
            return LookupError(message)
        if exc.status in (400, 422):
            return ValueError(message)
    if isinstance(exc, NoDaemon):
        return ConnectionError(message)
    if isinstance(exc, InvalidConfig):
        return ValueError(message)
    return RuntimeError(message)


class Client:
    """A connection to one daemon; use it as a context manager (or :meth:`close`).

    Raises:
        ConnectionError: no daemon answers for that config.
        ValueError: the config file is missing or invalid.
    """

    def __init__(self, config: str | None = None) -> None:
        try:
            self._daemon: DaemonClient = connect(config)
        except CliError as exc:
            raise _python_error(exc) from None

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._daemon.close()

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        try:
            if method == "GET":
                return self._daemon.get(path, body)
            return self._daemon.post(path, body)
        except CliError as exc:
            raise _python_error(exc) from None

    def submit(self, command: str | Sequence[str], *, hold: bool = False, **spec: Any) -> int:
        """Submit one job; its id. ``spec``: name, priority, tenant, requests, timeout,
        retries, backoff, deadline, not_before, cron, overlap, depends_on, env, cwd,
        preemptible (as ``procvisor submit``'s options); ``hold`` as in :meth:`submit_many`."""
        cmd = command if isinstance(command, str) else list(command)
        (job_id,) = self.submit_many([{"command": cmd, **spec}], hold=hold)
        return job_id

    def submit_many(self, specs: Iterable[Mapping[str, Any]], *, hold: bool = False) -> list[int]:
        """Submit many jobs in one transaction (all or none); their ids, in order.

        ``hold``: none of them starts until :meth:`release`.
        """
        body = {"jobs": [dict(s) for s in specs], "hold": hold}
        ids: list[int] = self._call("POST", "/jobs", body)["ids"]
        return ids

    def hold(self, *job_ids: int) -> list[dict[str, Any]]:
        """Keep queued or retrying jobs from starting until :meth:`release`; what happened
        to each (``changed`` False: it was not queued, or held already)."""
        outcomes: list[dict[str, Any]] = self._call("POST", "/jobs/hold", {"ids": list(job_ids)})
        return outcomes

    def release(self, *job_ids: int) -> list[dict[str, Any]]:
        """Let held jobs start again; what happened to each."""
        outcomes: list[dict[str, Any]] = self._call("POST", "/jobs/release", {"ids": list(job_ids)})
        return outcomes

    def get(self, job_id: int) -> dict[str, Any]:
        """The job, with its state history."""
        job: dict[str, Any] = self._call("GET", f"/jobs/{job_id}")
        return job

    def wait(self, job_id: int, timeout: float | None = None) -> dict[str, Any]:
        """Wait until the job has finished; the job. TimeoutError after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = 30.0 if deadline is None else max(0.001, min(30.0, deadline - time.monotonic()))
            job: dict[str, Any] = self._call("GET", f"/jobs/{job_id}/wait", {"timeout": left})
            if job["state"] in _FINAL:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {job_id} is still {job['state']} after {timeout}s")

    def cancel(self, *job_ids: int) -> list[dict[str, Any]]:
        """Cancel jobs (a running one's process group is stopped); what happened to each."""
        outcomes: list[dict[str, Any]] = self._call("POST", "/jobs/cancel", {"ids": list(job_ids)})
        return outcomes

    def jobs(
        self, *, state: str | None = None, tenant: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Jobs, newest first."""
        found: list[dict[str, Any]] = self._call(
            "GET", "/jobs", {"state": state, "tenant": tenant, "limit": limit}
        )
        return found

    def schedules(self, *, all: bool = False) -> list[dict[str, Any]]:
        """Cron schedules (``submit(..., cron=...)``): the active ones, or all."""
        found: list[dict[str, Any]] = self._call("GET", "/schedules", {"all": all or None})
        return found

    def cancel_schedule(self, schedule: int) -> bool:
        """Stop a schedule from submitting jobs; False if it was stopped already."""
        cancelled: bool = self._call("POST", f"/schedules/{schedule}/cancel")["cancelled"]
        return cancelled

    # -- services -------------------------------------------------------------------------

    def status(self, service: str | None = None) -> list[dict[str, Any]]:
        """Every instance (or one service's): state, pid, uptime, restarts, health, CPU, RSS."""
        rows: list[dict[str, Any]] = self._call("GET", "/status", {"service": service})
        return rows

    def start(self, *targets: str) -> list[str]:
        """Start services, ``"all"``, or instances (``"web:1"``); the instances started."""
        return self._act("/start", {"targets": list(targets)})

    def stop(self, *targets: str) -> list[str]:
        """Stop them (stop signal to each group, stop_timeout, SIGKILL); the instances."""
        return self._act("/stop", {"targets": list(targets)})

    def restart(self, *targets: str, rolling: bool = False) -> list[str]:
        """Restart them; ``rolling``: one at a time, each once the one before is ready."""
        return self._act("/restart", {"targets": list(targets), "rolling": rolling})

    def scale(self, service: str, instances: int) -> list[str]:
        """Run ``instances`` copies of ``service``; the instances started or stopped."""
        return self._act("/scale", {"service": service, "instances": instances})

    def signal(self, sig: int | str, *targets: str) -> list[str]:
        """Send ``sig`` (``"HUP"``, ``15``) to every process of each instance's group."""
        return self._act("/signal", {"targets": list(targets), "signal": sig})

    def events(self, service: str | None = None, *, limit: int = 50) -> list[dict[str, Any]]:
        """The latest events (of ``service``): starts, exits, restarts, health, reloads."""
        found: list[dict[str, Any]] = self._call(
            "GET", "/events", {"service": service, "limit": limit}
        )
        return found

    def reload(self) -> dict[str, list[str]]:
        """Apply the config file's changes; the services started, stopped, restarted,
        scaled and unchanged."""
        changes: dict[str, list[str]] = self._call("POST", "/reload")
        return changes

    def _act(self, path: str, body: dict[str, Any]) -> list[str]:
        instances: list[str] = self._call("POST", path, body)["instances"]
        return instances

    # -- command pools --------------------------------------------------------------------

    def pools(self) -> list[dict[str, Any]]:
        """Every command pool: command, workers, task counts and latency."""
        found: list[dict[str, Any]] = self._call("GET", "/pools")
        return found

    def pool_task(
        self,
        pool: str,
        data: Any,
        *,
        timeout: float | str | None = None,
        priority: int | str = "normal",
    ) -> Any:
        """Run one task on a ``[pools.NAME]`` command pool; its result (any JSON).

        Raises:
            TaskFailed, TaskTimeout, WorkerCrashed, DeadlineExpired, ProtocolError: as the
                pool raised it in the daemon.
        """
        body = {"data": data, "timeout": timeout, "priority": priority}
        reply: dict[str, Any] = self._call("POST", f"/pools/{pool}/tasks", body)
        if reply["ok"]:
            return reply["result"]
        raise _task_error(reply["error"])


def _task_error(error: Mapping[str, Any]) -> errors.PoolError:
    """The exception a pool raised in the daemon, made again from its JSON form."""
    message = error["message"]
    kind = error["type"]
    if kind == "TaskFailed":
        return errors.TaskFailed(message, error=error.get("error"))
    if kind == "WorkerCrashed":
        return errors.WorkerCrashed(
            message, exit_code=error.get("exit_code"), signal=error.get("signal")
        )
    known: dict[str, type[errors.PoolError]] = {
        "TaskTimeout": errors.TaskTimeout,
        "DeadlineExpired": errors.DeadlineExpired,
        "ProtocolError": errors.ProtocolError,
    }
    return known.get(kind, errors.PoolError)(message)
