"""``procvisor.Client``: submit and follow jobs of a running daemon from Python.

It speaks to the daemon's API on its Unix socket, found as the CLI finds it (the config
file: ``config=``, else ``$PROCVISOR_CONFIG``, else ``./procvisor.toml``)::

    with procvisor.Client() as daemon:
        job_id = daemon.submit(["make", "test"], timeout="10m", retries=2)
        ids = daemon.submit_many([{"command": ["true"]} for _ in range(1000)])
        job = daemon.wait(job_id)            # a dict: state, exit_code, history, ...

Errors: :class:`LookupError` for an unknown job, :class:`ValueError` for a bad spec (the
message names the field), :class:`ConnectionError` when no daemon answers.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any

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
    """A connection to one daemon, for jobs; use it as a context manager (or :meth:`close`).

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

    def submit(self, command: str | Sequence[str], **spec: Any) -> int:
        """Submit one job; its id. ``spec``: name, priority, tenant, requests, timeout,
        retries, backoff, deadline, not_before, cron, overlap, depends_on, env, cwd,
        preemptible (as ``procvisor submit``'s options)."""
        cmd = command if isinstance(command, str) else list(command)
        (job_id,) = self.submit_many([{"command": cmd, **spec}])
        return job_id

    def submit_many(self, specs: Iterable[Mapping[str, Any]]) -> list[int]:
        """Submit many jobs in one transaction (all or none); their ids, in order."""
        ids: list[int] = self._call("POST", "/jobs", {"jobs": [dict(s) for s in specs]})["ids"]
        return ids

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
