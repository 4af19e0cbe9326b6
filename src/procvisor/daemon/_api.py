"""The daemon's HTTP API: a FastAPI app over a :class:`Control` object.

The app translates HTTP into calls on ``Control`` (implemented by the daemon) and nothing
more: it holds no state of its own. Errors the control raises become JSON responses, always
``{"detail": "..."}``::

    LookupError   404  unknown service or instance
    ValueError    400  a bad value (an instance count, a signal)
    ConfigError   400  ``/reload`` found the file invalid; one line per problem in ``detail``
    (request)     422  the request itself is malformed (a missing field, a wrong type)
    (token)       401  the TCP listener's bearer token is missing or wrong
    anything else 500  a bug in the daemon; the traceback goes to the daemon's log

Every endpoint is ``async`` and calls the control on the daemon's event loop, never from a
worker thread: the control is not thread-safe. Only log files are read in a thread.

The app served on the Unix socket has no token (the socket is 0600 in a 0700 directory);
the app served on TCP is made with ``token=`` and then requires
``Authorization: Bearer <token>`` on every request, ``/openapi.json`` and ``/docs`` included.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocketClose

import procvisor
from procvisor.daemon._metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from procvisor.daemon.config import ConfigError
from procvisor.policy.units import parse_duration
from procvisor.pool._stats import PoolStats
from procvisor.process import parse_signal
from procvisor.supervisor import _logs as logfiles

__all__ = [
    "ActionResult",
    "Control",
    "DaemonInfo",
    "ErrorDetail",
    "Event",
    "InstanceStatus",
    "LastExit",
    "PoolStatus",
    "ReloadResult",
    "TaskReply",
    "create_app",
]

_FOLLOW_QUEUE = 64
"""Chunks buffered between the log followers and a slow client before the followers wait."""
_MAX_PARTIAL_LINE = 64 * 1024
"""A line longer than this is sent in pieces rather than held back for its end."""


class Control(Protocol):
    """What the API asks of the daemon. Every method runs on the daemon's event loop.

    Targets are service names, ``"all"``, or one instance such as ``"web:1"``. Methods raise
    ``LookupError`` for an unknown service or instance and ``ValueError`` for a bad value,
    each with a message fit to show the user.
    """

    def info(self) -> dict[str, Any]:
        """``{"pid", "version", "config", "state_dir", "started_at"}``."""
        ...

    def status(self, service: str | None) -> list[dict[str, Any]]:
        """One dict per instance (see :class:`InstanceStatus`), of ``service`` or of all."""
        ...

    async def start(self, targets: list[str]) -> list[str]:
        """Start the targets; the names of the instances acted on."""
        ...

    async def stop(self, targets: list[str]) -> list[str]:
        """Stop the targets; the names of the instances acted on."""
        ...

    async def restart(self, targets: list[str], rolling: bool) -> list[str]:
        """Restart the targets (one instance at a time with ``rolling``)."""
        ...

    async def scale(self, service: str, instances: int) -> list[str]:
        """Run ``instances`` copies of ``service``; the instances started or stopped."""
        ...

    def signal(self, targets: list[str], sig: int) -> list[str]:
        """Send signal number ``sig`` to the targets' process groups."""
        ...

    def log_files(self, target: str, stream: str) -> list[tuple[str, Path, int]]:
        """``(instance name, current log file, number of backups)`` for each instance."""
        ...

    def events(self, service: str | None, limit: int, after: int | None) -> list[dict[str, Any]]:
        """The last ``limit`` events (of ``service``), oldest first, with ids above ``after``."""
        ...

    async def reload(self) -> dict[str, list[str]]:
        """Re-read the config and apply it; raises ``ConfigError`` (nothing changed)."""
        ...

    def down(self) -> None:
        """Begin stopping every service and then the daemon; returns at once."""
        ...

    def metrics(self) -> bytes:
        """Every Prometheus series, in the text exposition format."""
        ...

    def alerts(self, include_resolved: bool) -> list[dict[str, Any]]:
        """Pending and firing alerts (and resolved ones); see :class:`AlertInfo`."""
        ...

    def ack(self, alert_id: str, duration: float | None) -> dict[str, Any]:
        """Acknowledge an alert (``RULE/TARGET``), or silence it (or a whole rule) ``duration``."""
        ...

    def top(self) -> list[dict[str, Any]]:
        """The last sample of every instance and pool worker; see :class:`TopRow`."""
        ...

    async def inspect(self, target: str) -> dict[str, Any]:
        """A diagnostic snapshot of one instance."""
        ...

    def submit(self, specs: list[dict[str, Any]], hold: bool) -> list[int]:
        """Store jobs (one transaction); their ids. ValueError names a bad spec's field."""
        ...

    def hold(self, ids: list[int], held: bool) -> list[dict[str, Any]]:
        """Hold queued jobs (or release held ones); what happened to each."""
        ...

    def jobs(self, state: str | None, tenant: str | None, limit: int) -> list[dict[str, Any]]:
        """Jobs, newest first."""
        ...

    def job(self, job_id: int) -> dict[str, Any]:
        """One job with its state history; LookupError if there is none."""
        ...

    async def wait(self, job_id: int, timeout: float | None) -> dict[str, Any]:
        """The job once it is finished, or as it is when ``timeout`` passes."""
        ...

    async def cancel(self, ids: list[int]) -> list[dict[str, Any]]:
        """Cancel jobs (a running one's group is stopped); what happened to each."""
        ...

    def retry(self, job_id: int) -> int:
        """Submit a finished job again; the new job's id."""
        ...

    def queue(self) -> dict[str, Any]:
        """The queue at a glance: by priority and tenant, running, utilization, oldest wait."""
        ...

    def schedules(self, all: bool) -> list[dict[str, Any]]:
        """Cron schedules by id: the active ones, or (``all``) stopped ones too."""
        ...

    def cancel_schedule(self, schedule: int) -> dict[str, Any]:
        """Stop a schedule from creating jobs; LookupError if there is none."""
        ...

    def quotas(self) -> list[dict[str, Any]]:
        """Each tenant's use against its quota."""
        ...

    def pools(self, name: str | None) -> list[dict[str, Any]]:
        """One dict per command pool (see :class:`PoolStatus`), of ``name`` or of all."""
        ...

    async def pool_submit(
        self, name: str, data: Any, timeout: float | str | None, priority: str | int
    ) -> dict[str, Any]:
        """Run one task on pool ``name``; see :class:`TaskReply`."""
        ...


# --------------------------------------------------------------------------- models


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Reply(BaseModel):
    # The daemon may add fields before the API documents them; pass them through.
    model_config = ConfigDict(extra="allow")


Targets = Annotated[
    list[str],
    Field(
        min_length=1,
        description="Service names, 'all', or single instances such as 'web:1'.",
        examples=[["web"], ["all"], ["web:1", "worker"]],
    ),
]


class TargetsRequest(_Request):
    """The services or instances to act on."""

    targets: Targets


class RestartRequest(_Request):
    """The services or instances to restart, and how."""

    targets: Targets
    rolling: bool = Field(
        default=False,
        description="Restart one instance at a time, each once the previous one is running.",
    )


class ScaleRequest(_Request):
    """A service and the number of instances it should run."""

    service: str = Field(description="The service name.", examples=["web"])
    instances: int = Field(ge=0, description="How many instances to run.", examples=[4])


class SignalRequest(_Request):
    """The services or instances to signal, and the signal."""

    targets: Targets
    signal: int | str = Field(
        description="A signal name ('HUP' or 'SIGHUP', any case) or number (1).",
        examples=["HUP", "SIGUSR1", 15],
    )


class ErrorDetail(BaseModel):
    """Every error response: what went wrong, fit to show the user."""

    detail: str = Field(description="The message; several problems are on separate lines.")


class DaemonInfo(_Reply):
    """The daemon process and what it serves."""

    pid: int = Field(description="The daemon's process id.")
    version: str = Field(description="procvisor's version.")
    config: str = Field(description="The config file the daemon was started with.")
    state_dir: str = Field(description="The daemon's state directory.")
    started_at: float = Field(description="When the daemon started (Unix time).")
    sockets: dict[str, str] = Field(
        default_factory=dict,
        description="The listening sockets the daemon holds for its services: name -> address.",
    )


class LastExit(_Reply):
    """How an instance's process last ended."""

    pid: int | None = Field(description="The pid of that process, or null if it never started.")
    code: int | None = Field(description="Exit code, or null if it was killed by a signal.")
    signal: str | None = Field(description="The signal that killed it ('SIGKILL'), or null.")
    at: float = Field(description="When it ended (Unix time).")
    reason: str = Field(description="A readable summary, e.g. 'exit code 1'.")


class InstanceStatus(_Reply):
    """One instance of a service."""

    name: str = Field(description="Instance name, e.g. 'web:0'.")
    service: str = Field(description="The service it belongs to.")
    instance: int = Field(description="Its index within the service.")
    state: Literal["stopped", "starting", "running", "stopping", "exited", "backoff", "fatal"]
    pid: int | None = Field(description="The process id while there is a process.")
    uptime: float | None = Field(description="Seconds since it started running, or null.")
    restarts: int = Field(description="Restarts since the daemon started.")
    last_exit: LastExit | None = Field(description="How the last process ended, or null.")
    health: Literal["healthy", "unhealthy", "unknown"] | None = Field(
        description="Health as the probe last saw it; null when there is no probe."
    )
    cpu_percent: float | None = Field(description="CPU use of its process group, in percent.")
    rss: int | None = Field(description="Resident memory of its process group, in bytes.")
    reason: str = Field(
        default="",
        description="Why it is fatal, in backoff, or still starting (notify), else ''.",
    )
    status_text: str | None = Field(
        default=None,
        description="A notify service's last STATUS= text while its process runs, else null.",
    )


class ActionResult(_Reply):
    """What an action did."""

    instances: list[str] = Field(description="The instances acted on, e.g. ['web:0'].")


class ReloadResult(_Reply):
    """What a reload changed, by service."""

    started: list[str]
    stopped: list[str]
    restarted: list[str]
    scaled: list[str] = Field(
        description="Services whose instance count alone changed, as 'name=count'; a count "
        "set by `scale` goes back to the file's."
    )
    unchanged: list[str]


class PoolStatus(_Reply):
    """A command pool: its command, whether it runs, and its stats (or why it does not run)."""

    name: str
    command: list[str]
    running: bool
    error: str | None = Field(description="Why the pool could not start, or null.")
    pids: list[int] = Field(description="Its workers' process ids.")
    stats: PoolStats | None


class TaskRequest(_Request):
    """One task for a command pool."""

    data: Any = Field(description="Sent to a worker as the request's 'data' (any JSON).")
    timeout: float | str | None = Field(
        default=None,
        description="Seconds (or '10s') the task may run; default the pool's timeout.",
    )
    priority: int | str = Field(
        default="normal", description="critical, high, normal, low or background (or 4..0)."
    )


class TaskError(_Reply):
    """Why a task failed."""

    type: str = Field(
        description="TaskFailed, ProtocolError, TaskTimeout, WorkerCrashed or DeadlineExpired."
    )
    message: str
    error: Any = Field(default=None, description="The worker's 'error' value (TaskFailed).")
    exit_code: int | None = Field(default=None, description="The worker's (WorkerCrashed).")
    signal: str | None = Field(
        default=None, description="What killed the worker, e.g. 'SIGKILL' (WorkerCrashed)."
    )


class TaskReply(_Reply):
    """The outcome of a task: ``ok`` with its ``result``, or not with an ``error``."""

    ok: bool
    result: Any = None
    error: TaskError | None = None


class AlertInfo(_Reply):
    """One alert: a rule holding (or having held) for one instance or pool worker."""

    id: str = Field(description="RULE/TARGET, e.g. 'high-rss/web:0'; what 'ack' takes.")
    rule: str
    labels: dict[str, str]
    status: Literal["pending", "firing", "resolved"]
    severity: str | None
    summary: str
    since: float | None = Field(description="When the rule began to hold (Unix time).")
    fired_at: float | None
    resolved_at: float | None
    acknowledged: bool
    silenced_until: float | None


class AckRequest(_Request):
    """Acknowledge an alert until it resolves, or (with ``for``) silence it that long."""

    id: str = Field(description="RULE/TARGET to act on one alert, or RULE to silence a rule.")
    for_: float | str | None = Field(
        default=None, alias="for", description="Silence for this long ('1h'); else acknowledge."
    )


class SubmitRequest(_Request):
    """Jobs to store and schedule, in one transaction (all or none)."""

    jobs: list[dict[str, Any]] = Field(
        min_length=1,
        description=(
            "Job specs: command (required), name, priority, tenant, requests ('cpu=2,"
            "memory=1G,gpu=1'), timeout, retries, backoff ('1s..1m'), deadline, not_before, "
            "cron, overlap, depends_on, env, cwd, preemptible."
        ),
    )
    hold: bool = Field(default=False, description="Submit them held: none starts until released.")


class CancelRequest(_Request):
    """Jobs to cancel, hold or release."""

    ids: list[int] = Field(min_length=1)


class TopRow(_Reply):
    """The last sample of one instance, pool worker or running job."""

    name: str
    kind: Literal["service", "pool", "job"]
    state: str
    status: Literal["ok", "warning", "critical", "dead"]
    pid: int | None
    processes: int
    cpu: float | None = Field(description="Percent of one core, over the last interval.")
    rss: int | None
    threads: int | None
    fds: int | None
    uptime: float | None


class Event(_Reply):
    """Something that happened to a service or to the daemon."""

    id: int = Field(description="Increasing id; pass the last one seen as 'after'.")
    ts: float = Field(description="When it happened (Unix time).")
    service: str | None = Field(description="The service concerned, or null (the daemon).")
    instance: int | str | None = Field(description="The instance concerned, or null.")
    kind: str = Field(description="What happened, e.g. 'started', 'exited', 'unhealthy'.")
    message: str = Field(description="A readable description.")
    data: dict[str, Any] = Field(default_factory=dict, description="Details, by kind.")


class Accepted(BaseModel):
    """The request was accepted and is carried out in the background."""

    detail: str


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorDetail, "description": "A bad value"},
    404: {"model": ErrorDetail, "description": "Unknown service or instance"},
    422: {"model": ErrorDetail, "description": "Malformed request"},
}


# --------------------------------------------------------------------------- the app


def create_app(control: Control, *, token: str | None = None) -> FastAPI:
    """The API over ``control``; with ``token``, every request must carry it as a bearer.

    Raises:
        ValueError: ``token`` is empty.
    """
    if token is not None and not token:
        raise ValueError("token must not be empty")
    app = FastAPI(
        title="procvisor daemon",
        version=procvisor.__version__,
        description=(
            "Control a procvisor daemon: status, start/stop/restart, scale, signals, logs, "
            "events, reload, shutdown. Errors are JSON objects with one 'detail' string."
        ),
        responses=_ERRORS,
    )
    _add_error_handlers(app)

    # Replies are checked against their response_model by FastAPI: a reply that does not
    # fit is the daemon's bug, a 500 (not a ValueError, which would be the client's 400).
    @app.get("/info", tags=["daemon"], response_model=DaemonInfo)
    async def info() -> dict[str, Any]:
        """The daemon's pid, version, config file, state directory and start time."""
        return control.info()

    @app.get("/status", tags=["services"], response_model=list[InstanceStatus])
    async def status(
        service: Annotated[str | None, Query(description="Only this service.")] = None,
    ) -> list[dict[str, Any]]:
        """The state of every instance (of one service)."""
        return control.status(service)

    @app.post("/start", tags=["services"], response_model=ActionResult)
    async def start(body: TargetsRequest) -> dict[str, Any]:
        """Start services or instances that are not running."""
        return {"instances": await control.start(body.targets)}

    @app.post("/stop", tags=["services"], response_model=ActionResult)
    async def stop(body: TargetsRequest) -> dict[str, Any]:
        """Stop services or instances; returns once they have stopped."""
        return {"instances": await control.stop(body.targets)}

    @app.post("/restart", tags=["services"], response_model=ActionResult)
    async def restart(body: RestartRequest) -> dict[str, Any]:
        """Restart services or instances, all at once or one at a time (``rolling``)."""
        return {"instances": await control.restart(body.targets, body.rolling)}

    @app.post("/scale", tags=["services"], response_model=ActionResult)
    async def scale(body: ScaleRequest) -> dict[str, Any]:
        """Change how many instances of a service run."""
        return {"instances": await control.scale(body.service, body.instances)}

    @app.post("/signal", tags=["services"], response_model=ActionResult)
    async def send_signal(body: SignalRequest) -> dict[str, Any]:
        """Send a signal to the process groups of services or instances."""
        return {"instances": control.signal(body.targets, _signal_number(body.signal))}

    @app.get(
        "/logs",
        tags=["services"],
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}, "description": "Log lines"}},
    )
    async def logs(
        target: Annotated[str, Query(description="A service ('web') or instance ('web:1').")],
        stream: Annotated[Literal["stdout", "stderr"], Query(description="Which log.")] = (
            "stdout"
        ),
        lines: Annotated[int, Query(ge=0, description="Lines of history per instance.")] = 100,
        follow: Annotated[
            bool, Query(description="Keep the response open and send new output as it comes.")
        ] = False,
    ) -> Response:
        """The last lines of a service's output, then (``follow``) new output as it is written.

        With several instances, each line is prefixed with its instance (``web:0 | ``);
        with one, lines are sent as they are.
        """
        files = control.log_files(target, stream)
        prefixed = len(files) > 1
        # Where each file ends now: the history stops there and following starts there.
        marks = {path: logfiles.position(path) for _, path, _ in files}
        history = await _read_tails(files, lines, prefixed, marks)
        if not follow:
            return Response(history, media_type="text/plain")
        return _ClosingStreamingResponse(
            _follow_files(history, files, prefixed, marks), media_type="text/plain"
        )

    @app.get("/events", tags=["services"], response_model=list[Event])
    async def events(
        service: Annotated[str | None, Query(description="Only this service's events.")] = None,
        limit: Annotated[int, Query(ge=1, le=10_000, description="At most this many.")] = 50,
        after: Annotated[int | None, Query(description="Only events with a larger id.")] = None,
    ) -> list[dict[str, Any]]:
        """Recent events (starts, exits, restarts, health changes, reloads), oldest first."""
        return control.events(service, limit, after)

    @app.post(
        "/reload",
        tags=["daemon"],
        response_model=ReloadResult,
        responses={400: {"model": ErrorDetail, "description": "The config file is invalid"}},
    )
    async def reload() -> dict[str, list[str]]:
        """Re-read the config file and apply the changes; nothing changes if it is invalid."""
        return await control.reload()

    @app.post("/down", tags=["daemon"], status_code=202)
    async def down() -> Accepted:
        """Stop every service, then the daemon. Returns at once; the daemon exits later."""
        control.down()
        return Accepted(detail="stopping")

    @app.get(
        "/metrics",
        tags=["daemon"],
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text"}},
    )
    async def metrics() -> Response:
        """Prometheus metrics: instances, probes, exits, pools, the daemon's own process."""
        return Response(control.metrics(), media_type=METRICS_CONTENT_TYPE)

    @app.get("/alerts", tags=["monitoring"], response_model=list[AlertInfo])
    async def alerts(
        all: Annotated[bool, Query(description="Resolved alerts too.")] = False,
    ) -> list[dict[str, Any]]:
        """Alerts that are pending or firing (and resolved ones)."""
        return control.alerts(all)

    @app.post("/alerts/ack", tags=["monitoring"])
    async def ack(body: AckRequest) -> dict[str, Any]:
        """Acknowledge a firing alert, or silence an alert or a whole rule for a while."""
        duration = None
        if body.for_ is not None:
            duration = (
                parse_duration(body.for_, field="for") if isinstance(body.for_, str) else body.for_
            )
        return control.ack(body.id, duration)

    @app.get("/top", tags=["monitoring"], response_model=list[TopRow])
    async def top() -> list[dict[str, Any]]:
        """The last sample of every instance and pool worker, with its status."""
        return control.top()

    @app.get("/inspect", tags=["monitoring"])
    async def inspect(
        target: Annotated[
            str, Query(description="An instance ('web:1'), or a one-instance service.")
        ],
    ) -> dict[str, Any]:
        """A diagnostic snapshot: processes, threads, files, sockets, environment (secrets
        redacted), limits and how each is enforced, recent trend."""
        return await control.inspect(target)

    @app.post("/jobs", tags=["jobs"])
    async def submit(body: SubmitRequest) -> dict[str, Any]:
        """Submit jobs; ``{"ids": [...]}``. A bad spec is a 400 naming its field."""
        return {"ids": control.submit(body.jobs, body.hold)}

    @app.get("/jobs", tags=["jobs"])
    async def list_jobs(
        state: Annotated[str | None, Query(description="Only jobs in this state.")] = None,
        tenant: Annotated[str | None, Query(description="Only this tenant's jobs.")] = None,
        limit: Annotated[int, Query(ge=1, le=100_000)] = 100,
    ) -> list[dict[str, Any]]:
        """Jobs, newest first."""
        return control.jobs(state, tenant, limit)

    @app.get("/jobs/{job_id}", tags=["jobs"])
    async def job(job_id: int) -> dict[str, Any]:
        """One job, with its state history."""
        return control.job(job_id)

    @app.get("/jobs/{job_id}/wait", tags=["jobs"])
    async def wait(
        job_id: int,
        timeout: Annotated[float | None, Query(gt=0, description="Seconds to wait.")] = None,
    ) -> dict[str, Any]:
        """The job once it has finished (or as it is when ``timeout`` passes)."""
        return await control.wait(job_id, timeout)

    @app.post("/jobs/cancel", tags=["jobs"])
    async def cancel(body: CancelRequest) -> list[dict[str, Any]]:
        """Cancel jobs; a running job's whole process group is stopped first."""
        return await control.cancel(body.ids)

    @app.post("/jobs/hold", tags=["jobs"])
    async def hold(body: CancelRequest) -> list[dict[str, Any]]:
        """Keep queued or retrying jobs from starting until released."""
        return control.hold(body.ids, True)

    @app.post("/jobs/release", tags=["jobs"])
    async def release(body: CancelRequest) -> list[dict[str, Any]]:
        """Let held jobs start."""
        return control.hold(body.ids, False)

    @app.get("/schedules", tags=["jobs"])
    async def schedules(
        all: Annotated[bool, Query(description="Stopped schedules too.")] = False,
    ) -> list[dict[str, Any]]:
        """Cron schedules (``submit --cron``): cron, next fire, runs, skips, last job, spec."""
        return control.schedules(all)

    @app.post("/schedules/{schedule_id}/cancel", tags=["jobs"])
    async def cancel_schedule(schedule_id: int) -> dict[str, Any]:
        """Stop a schedule from creating jobs; its queued or running jobs are left alone."""
        return control.cancel_schedule(schedule_id)

    @app.post("/jobs/{job_id}/retry", tags=["jobs"])
    async def retry(job_id: int) -> dict[str, Any]:
        """Submit a failed, cancelled or expired job again, as a new job."""
        return {"id": control.retry(job_id)}

    @app.get("/queue", tags=["jobs"])
    async def queue() -> dict[str, Any]:
        """Queued jobs by priority and tenant, running jobs, utilization, the oldest wait."""
        return control.queue()

    @app.get("/quotas", tags=["jobs"])
    async def quotas() -> list[dict[str, Any]]:
        """Each tenant's use against its quota."""
        return control.quotas()

    @app.get("/pools", tags=["pools"], response_model=list[PoolStatus])
    async def pools(
        name: Annotated[str | None, Query(description="Only this pool.")] = None,
    ) -> list[dict[str, Any]]:
        """Every command pool (or one): command, workers, task counts and latency."""
        return control.pools(name)

    @app.post("/pools/{name}/tasks", tags=["pools"], response_model=TaskReply)
    async def pool_task(name: str, body: TaskRequest) -> dict[str, Any]:
        """Run one task on a pool and wait for its outcome.

        A task that fails (an error answer, a timeout, a crashed worker) is a 200 with
        ``ok: false``; an unknown pool is a 404, a bad option a 400.
        """
        return await control.pool_submit(name, body.data, body.timeout, body.priority)

    if token is not None:
        app.add_middleware(_BearerAuth, token=token)
        _document_bearer(app)
    return app


def _signal_number(value: int | str) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    try:
        return parse_signal(value)
    except ValueError:
        raise ValueError(
            f"{value!r} is not a signal; use a name like 'HUP' or 'SIGHUP' (any case), "
            "or a number like 1"
        ) from None


# --------------------------------------------------------------------------- errors


def _message(exc: BaseException) -> str:
    # KeyError('web') would print as "'web'"; its argument is the message.
    if len(exc.args) == 1 and isinstance(exc.args[0], str):
        return exc.args[0]
    return str(exc)


def _error(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


def _add_error_handlers(app: FastAPI) -> None:
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        # Starlette re-raises the exception after this response, so the daemon logs it.
        summary = (str(exc).strip().splitlines() or [""])[0][:200]
        what = f"{type(exc).__name__}: {summary}" if summary else type(exc).__name__
        return _error(500, f"internal error in the daemon ({what}); see its log")

    async def not_found(request: Request, exc: Exception) -> JSONResponse:
        return _error(404, _message(exc))

    async def bad_value(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, ValidationError):  # a model the daemon built: its bug, not yours
            return await internal(request, exc)
        return _error(400, _message(exc))

    async def bad_config(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ConfigError)
        return _error(400, "\n".join(exc.lines()))

    async def malformed(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return _error(422, _describe_validation(exc.errors()))

    app.add_exception_handler(Exception, internal)
    app.add_exception_handler(LookupError, not_found)
    app.add_exception_handler(ValueError, bad_value)
    app.add_exception_handler(ConfigError, bad_config)
    app.add_exception_handler(RequestValidationError, malformed)


def _describe_validation(errors: Sequence[Any]) -> str:
    """pydantic's error list as text: ``targets: Field required; limit: ...``."""
    parts = []
    for error in errors:
        if error.get("type") == "json_invalid":
            # Its loc is ("body", offset) and its msg only "JSON decode error".
            why = error.get("ctx", {}).get("error", "not JSON")
            offset = error.get("loc", ("body", "?"))[-1]
            parts.append(f"request body: not valid JSON ({why} at character {offset})")
            continue
        loc = [str(part) for part in error.get("loc", ())]
        if loc and loc[0] in {"body", "query", "path", "header"}:
            loc = loc[1:]
        where = ".".join(loc) or "request"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "malformed request"


# --------------------------------------------------------------------------- token


class _BearerAuth:
    """Refuse every request that lacks ``Authorization: Bearer <token>`` (401)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in {"http", "websocket"} and not self._authorized(scope):
            if scope["type"] == "websocket":
                await WebSocketClose(code=1008)(scope, receive, send)
                return
            response = JSONResponse(
                {
                    "detail": "missing or wrong token; send 'Authorization: Bearer TOKEN' "
                    "(the daemon's host shows it with 'procvisor token')"
                },
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _authorized(self, scope: Scope) -> bool:
        scheme, _, credentials = Headers(scope=scope).get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        try:
            given = credentials.strip().encode("ascii")
        except UnicodeEncodeError:
            return False
        return hmac.compare_digest(given, self._token)


def _document_bearer(app: FastAPI) -> None:
    """Declare the bearer token in the OpenAPI schema, for clients and ``/docs``."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            components = schema.setdefault("components", {})
            components.setdefault("securitySchemes", {})["bearer"] = {
                "type": "http",
                "scheme": "bearer",
                "description": "The token 'procvisor token' prints on the daemon's host.",
            }
            schema["security"] = [{"bearer": []}]
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]


# --------------------------------------------------------------------------- logs


def _prefixed(prefix: bytes, data: bytes) -> bytes:
    """``data``'s lines, each prefixed; a last line without its newline gets one."""
    if not data:
        return b""
    if data.endswith(b"\n"):
        data = data[:-1]
    return b"".join(prefix + line + b"\n" for line in data.split(b"\n"))


async def _read_tails(
    files: Sequence[tuple[str, Path, int]],
    lines: int,
    prefixed: bool,
    marks: Mapping[Path, logfiles.Position | None],
) -> bytes:
    if lines == 0:
        return b""
    parts = []
    for name, path, backups in files:
        mark = marks.get(path)
        if mark is None:
            continue  # no file when the request came: no history (its follower reads it all)
        data = await asyncio.to_thread(
            functools.partial(logfiles.read_tail, backups=backups, until=mark),
            path,
            lines,
        )
        parts.append(_prefixed(f"{name} | ".encode(), data) if prefixed else data)
    return b"".join(parts)


async def _follow_files(
    history: bytes,
    files: Sequence[tuple[str, Path, int]],
    prefixed: bool,
    marks: Mapping[Path, logfiles.Position | None],
) -> AsyncIterator[bytes]:
    """``history``, then whatever is appended to any of ``files``, until closed.

    ``history`` was read up to each file's mark (its end when the request came), and each
    follower starts at that mark, so nothing written in between is lost or sent twice. A
    file that did not exist then (a job that has printed nothing yet) is followed from its
    first byte.
    """
    queue: asyncio.Queue[bytes] = asyncio.Queue(_FOLLOW_QUEUE)

    async def pump(name: str, path: Path) -> None:
        prefix = f"{name} | ".encode()
        partial = b""
        mark = marks.get(path)
        follower = logfiles.follow(path, from_end=False, start=mark)
        async with contextlib.aclosing(follower) as chunks:
            async for chunk in chunks:
                if not prefixed:
                    await queue.put(chunk)
                    continue
                # Prefix whole lines only, so that instances' lines never interleave.
                partial += chunk
                cut = partial.rfind(b"\n") + 1
                if not cut and len(partial) > _MAX_PARTIAL_LINE:
                    cut = len(partial)
                if cut:
                    await queue.put(_prefixed(prefix, partial[:cut]))
                    partial = partial[cut:]

    async with asyncio.TaskGroup() as group:
        for name, path, _backups in files:
            group.create_task(pump(name, path), name=f"procvisor-logs-{name}")
        if history:
            yield history
        while True:
            yield await queue.get()


class _ClosingStreamingResponse(StreamingResponse):
    """A streaming response that closes its generator as soon as the response ends.

    Starlette cancels the sending task on disconnect but leaves a generator suspended at a
    ``yield`` to the garbage collector; closing it at once stops the log followers at once.
    """

    def __init__(self, content: AsyncIterator[bytes], media_type: str) -> None:
        super().__init__(content, media_type=media_type)
        self._content = content

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            aclose = getattr(self._content, "aclose", None)
            if aclose is not None:
                await aclose()
