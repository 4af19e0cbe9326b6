"""What a user asks for when submitting a job: :class:`JobSpec`, validated field by field."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import math
import os
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from procvisor.policy.admission import Requests, parse_requests, parse_timeout
from procvisor.policy.cron import check_cron
from procvisor.policy.jobqueue import DEFAULT_TENANT
from procvisor.policy.jobstate import parse_backoff
from procvisor.policy.taskqueue import Priority, parse_priority
from procvisor.policy.units import DURATION_FORMS, parse_duration

__all__ = ["OVERLAP_POLICIES", "JobSpec", "parse_when"]

OVERLAP_POLICIES = ("skip", "allow")
"""What a cron schedule does at a fire time while its previous job has not finished."""

_DEFAULT_REQUESTS = Requests()
_DEFAULT_BACKOFF = (1.0, 60.0)
_TENANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@:/-]{0,127}$")


def parse_when(
    value: float | str | _dt.datetime | None, *, field: str, now: float | None = None
) -> float | None:
    """Return the wall-clock time (seconds since the epoch) that ``value`` names.

    A number is already such a time; a ``datetime`` or an ISO 8601 string
    (``"2025-01-31T18:00"``, local time unless it has an offset) is absolute; any other string
    is a duration from ``now`` (``"30m"``; ``now`` defaults to ``time.time()``).

    Raises:
        ValueError: none of those, naming ``field``.
    """
    if value is None:
        return None
    if isinstance(value, _dt.datetime):
        return value.timestamp()
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"{field}: {value!r} must be a time in seconds since the epoch")
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            return _dt.datetime.fromisoformat(text).timestamp()
        except ValueError:
            pass
        try:
            seconds = parse_duration(text, field=field)
        except ValueError:
            seconds = -1.0
        if seconds >= 0:
            import time  # noqa: PLC0415 - only for a relative time

            return (time.time() if now is None else now) + seconds
    raise ValueError(
        f"{field}: {value!r} is neither a time (ISO 8601 such as '2025-01-31T18:00', or "
        f"seconds since the epoch) nor a duration from now ({DURATION_FORMS})"
    )


def _command(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        try:
            args = tuple(shlex.split(value))
        except ValueError as exc:
            raise ValueError(f"command: {value!r} cannot be split into arguments: {exc}") from None
    elif isinstance(value, Sequence) and not isinstance(value, bytes):
        args = tuple(os.fspath(a) if isinstance(a, os.PathLike) else a for a in value)
        for i, arg in enumerate(args):
            if not isinstance(arg, str):
                raise ValueError(f"command[{i}]: {arg!r} must be a string")
    else:
        raise ValueError(
            f"command: {value!r} must be an argv list or a string (split like a shell would; "
            "no shell runs)"
        )
    if not args or not args[0]:
        raise ValueError("command: empty; give the program and its arguments, e.g. ['make', 'all']")
    for arg in args:
        if "\0" in arg:
            raise ValueError(f"command: {arg!r} contains a NUL byte, which no program can receive")
    return args


def _whole(value: object, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{field}: {value!r} must be a whole number, 0 or more")
    return value


@dataclass(frozen=True, slots=True)
class JobSpec:
    """A command job to run: what, for whom, with what, when and how often.

    Every field is checked when the spec is made, and the forms users write are accepted and
    normalised (``timeout="10m"`` becomes ``600.0``). Errors name the field and what it
    accepts. What depends on the scheduler (the node's capacity, the tenant's quota, whether
    the jobs in ``depends_on`` exist) is checked by :meth:`Scheduler.submit
    <procvisor.jobs.Scheduler.submit>`.

    Attributes:
        command: the argv; a string is split like a shell would (no shell runs: wrap it as
            ``["sh", "-c", "..."]`` for one).
        name: shown in listings; the program's name by default.
        priority: ``critical > high > normal > low > background`` (or 4 to 0).
        tenant: who the job belongs to, for quotas and fair share.
        requests: what it needs while it runs: ``"cpu=2,memory=1G,gpu=1"``, a mapping, or a
            :class:`~procvisor.policy.admission.Requests`; 1 CPU by default.
        timeout: seconds (or ``"10m"``) after which its whole process group is stopped and
            the run counts as failed; more than 0, or None for no timeout.
        retries: how many times a failed run is retried.
        backoff: the delay before retries, ``"1s..1m"`` (doubling) or one duration; a
            ``(initial, max)`` pair once parsed.
        deadline: the latest time it may *start* (wall clock: epoch seconds, ISO 8601, or a
            duration from now); a job still waiting then is ``expired``.
        not_before: the earliest time it may start (same forms): a delayed job.
        cron: a cron expression: the job then runs once per period (see :attr:`overlap`).
        overlap: ``skip`` (default): a fire time that comes while the previous job of the
            schedule has not finished is skipped, so runs never pile up; ``allow``: a new
            job is queued at every fire time.
        depends_on: ids of jobs that must succeed before this one may start; if one of them
            fails for good, this job is cancelled.
        env: variables added to the daemon's environment for the job.
        cwd: the directory it runs in.
        preemptible: whether a waiting job of higher priority may suspend or requeue it.
        requeue_on_restart: when the scheduler restarts (after a crash, or a shutdown) while
            the job runs, queue it again (True, the default; it does not use a retry), or
            fail it (for commands that must not run twice).

    Raises:
        ValueError: a field is malformed, naming it.
    """

    command: tuple[str, ...]
    name: str = ""
    priority: Priority = Priority.NORMAL
    tenant: str = DEFAULT_TENANT
    requests: Requests = _DEFAULT_REQUESTS
    timeout: float | None = None
    retries: int = 0
    backoff: tuple[float, float] = _DEFAULT_BACKOFF
    deadline: float | None = None
    not_before: float | None = None
    cron: str | None = None
    overlap: str = "skip"
    depends_on: tuple[int, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    preemptible: bool = False
    requeue_on_restart: bool = True

    def __post_init__(self) -> None:
        put = object.__setattr__
        command = _command(self.command)
        put(self, "command", command)
        if not isinstance(self.name, str):
            raise ValueError(f"name: {self.name!r} must be a string")
        put(self, "name", self.name.strip() or os.path.basename(command[0]))
        put(self, "priority", parse_priority(self.priority))
        if not isinstance(self.tenant, str) or not _TENANT_RE.match(self.tenant):
            raise ValueError(
                f"tenant: {self.tenant!r} must be 1 to 128 letters, digits and '_.@:/-', "
                "starting with a letter or digit"
            )
        if self.requests is not _DEFAULT_REQUESTS:
            put(self, "requests", parse_requests(self.requests))
        if self.timeout is not None:
            put(self, "timeout", parse_timeout(self.timeout))
        put(self, "retries", _whole(self.retries, "retries"))
        if self.backoff is not _DEFAULT_BACKOFF:
            backoff: Any = self.backoff
            if isinstance(backoff, Sequence) and not isinstance(backoff, str):
                if len(backoff) != 2:
                    raise ValueError(f"backoff: {backoff!r} must be (initial, max) in seconds")
                backoff = f"{backoff[0]}..{backoff[1]}"
            put(self, "backoff", parse_backoff(backoff))
        put(self, "deadline", parse_when(self.deadline, field="deadline"))
        put(self, "not_before", parse_when(self.not_before, field="not_before"))
        if self.cron is not None:
            put(self, "cron", check_cron(self.cron, field="cron"))
            for name in ("deadline", "not_before", "depends_on"):
                if getattr(self, name):
                    raise ValueError(
                        f"{name}: a cron job cannot have one (it would apply to every run); "
                        "leave it out, or submit one job without cron"
                    )
        if self.overlap not in OVERLAP_POLICIES:
            raise ValueError(
                f"overlap: {self.overlap!r} must be one of "
                + ", ".join(repr(p) for p in OVERLAP_POLICIES)
            )
        deps = self.depends_on
        if isinstance(deps, int) or not isinstance(deps, Sequence):
            raise ValueError(f"depends_on: {deps!r} must be a list of job ids")
        for dep in deps:
            if isinstance(dep, bool) or not isinstance(dep, int) or dep < 1:
                raise ValueError(f"depends_on: {dep!r} is not a job id (a whole number from 1)")
        put(self, "depends_on", tuple(dict.fromkeys(deps)))
        if not isinstance(self.env, Mapping):
            raise ValueError(f"env: {self.env!r} must map variable names to strings")
        for key, value in self.env.items():
            if not isinstance(key, str) or not key or "=" in key or "\0" in key:
                raise ValueError(f"env: {key!r} is not a variable name")
            if not isinstance(value, str) or "\0" in value:
                raise ValueError(f"env.{key}: {value!r} must be a string without NUL bytes")
        put(self, "env", dict(self.env))
        if self.cwd is not None:
            if not isinstance(self.cwd, str | os.PathLike):
                raise ValueError(f"cwd: {self.cwd!r} must be a directory path")
            put(self, "cwd", os.fspath(self.cwd))
        for name in ("preemptible", "requeue_on_restart"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}: {getattr(self, name)!r} must be true or false")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobSpec:
        """Make a spec from a mapping of field names (as :meth:`to_dict` and JSON give).

        Raises:
            ValueError: an unknown field, or a malformed one.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"spec: {data!r} must be a mapping of field names to values")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(
                f"spec: unknown field {unknown[0]!r}; the fields are " + ", ".join(sorted(names))
            )
        if "command" not in data:
            raise ValueError("command: missing; give the program and its arguments")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the fields that differ from their defaults (and ``command``)."""
        out: dict[str, Any] = {"command": list(self.command), "name": self.name}
        if self.priority is not Priority.NORMAL:
            out["priority"] = self.priority.name.lower()
        if self.tenant != DEFAULT_TENANT:
            out["tenant"] = self.tenant
        if self.requests is not _DEFAULT_REQUESTS and self.requests != _DEFAULT_REQUESTS:
            req: dict[str, Any] = {"cpu": self.requests.cpu}
            if self.requests.memory:
                req["memory"] = self.requests.memory
            req.update(self.requests.resources)
            out["requests"] = req
        for name in ("timeout", "deadline", "not_before", "cron", "cwd"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.retries:
            out["retries"] = self.retries
        if self.backoff != _DEFAULT_BACKOFF:
            out["backoff"] = list(self.backoff)
        if self.overlap != "skip":
            out["overlap"] = self.overlap
        if self.depends_on:
            out["depends_on"] = list(self.depends_on)
        if self.env:
            out["env"] = dict(self.env)
        if self.preemptible:
            out["preemptible"] = True
        if not self.requeue_on_restart:
            out["requeue_on_restart"] = False
        return out

    def describe(self) -> str:
        """The command as a shell would show it."""
        return shlex.join(self.command)
