"""procvisor's exceptions.

Two roots keep "the operation failed" apart from "you used the API wrongly"::

    ProcessError                 a process could not be started, or did not end well
    ├── SpawnError               could not start (.reason: not_found, permission_denied, ...)
    ├── TimeoutExpired           ran past the ``timeout`` it was given; it was stopped
    ├── LimitExceeded            went over one of its ``Limits``; it was stopped
    ├── NonZeroExit              exited with a non-zero code (only with ``check=True``)
    ├── Signaled                 was killed by a signal (only with ``check=True``)
    └── PoolError                a pool task did not complete
        ├── TaskTimeout          ran past its ``timeout``; its worker was killed and replaced
        ├── WorkerCrashed        its worker died (.exit_code, .signal); the pool goes on
        ├── DeadlineExpired      not started before its ``deadline``; it never ran
        ├── ProtocolError        a command worker wrote something that is not a response
        └── TaskFailed           a command worker answered with an error (.error)

    RemoteTraceback              the ``__cause__`` of a task's exception: the worker's traceback

    ValueError / TypeError       bad arguments: empty argv, NUL bytes, invalid limits, ...

Every ``ProcessError`` carries the command it concerns and, once the process has run, the
full :class:`~procvisor.Result` (``.result``) with whatever output it produced. All of them
survive pickling, because they cross process boundaries (pools, the daemon's API).
"""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from procvisor.process._result import Result

__all__ = [
    "DeadlineExpired",
    "LimitExceeded",
    "NonZeroExit",
    "PoolError",
    "ProcessError",
    "ProtocolError",
    "RemoteTraceback",
    "Signaled",
    "SoftTimeout",
    "SpawnError",
    "TaskFailed",
    "TaskTimeout",
    "TimeoutExpired",
    "WorkerCrashed",
]


def _rebuild(cls: type[ProcessError], kwargs: dict[str, Any]) -> ProcessError:
    return cls(**kwargs)


def _describe(command: tuple[str, ...] | None) -> str:
    return _shorten(shlex.join(command)) if command else "command"


def _shorten(text: str) -> str:
    return text if len(text) <= 120 else text[:117] + "..."


class ProcessError(Exception):
    """Base of every runtime failure of a process procvisor started.

    Attributes:
        command: the argv of the process (or pipeline stage) concerned, if any.
        result: the :class:`~procvisor.Result` of the run, when the process got to run.
    """

    def __init__(
        self,
        message: str,
        *,
        command: tuple[str, ...] | list[str] | None = None,
        result: Result | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.command = tuple(command) if command is not None else None
        self.result = result

    def _kwargs(self) -> dict[str, Any]:
        return {"message": self.message, "command": self.command, "result": self.result}

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self._kwargs()))

    def __str__(self) -> str:
        return self.message


class SpawnError(ProcessError):
    """The process could not be started.

    Attributes:
        reason: a stable token for programs: ``not_found``, ``permission_denied``,
            ``exec_format``, ``bad_cwd``, ``bad_user``, ``bad_group``,
            ``resource_exhausted`` or ``os_error``.
        errno: the OS error number behind it, when there is one.
    """

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        command: tuple[str, ...] | list[str] | None = None,
        errno: int | None = None,
        result: Result | None = None,
    ) -> None:
        super().__init__(message, command=command, result=result)
        self.reason = reason
        self.errno = errno

    def _kwargs(self) -> dict[str, Any]:
        return {**super()._kwargs(), "reason": self.reason, "errno": self.errno}


class TimeoutExpired(ProcessError):
    """The process ran past its ``timeout`` and was stopped (its whole process group).

    Attributes:
        timeout: the timeout in seconds.
        stdout, stderr: the output captured before it was stopped (bytes).
    """

    def __init__(
        self,
        message: str | None = None,
        *,
        timeout: float,
        command: tuple[str, ...] | list[str] | None = None,
        result: Result | None = None,
        subject: str | None = None,
    ) -> None:
        if message is None:
            what = _shorten(subject) if subject else _describe(tuple(command) if command else None)
            message = (
                f"{what} timed out after {timeout:g}s and was stopped; "
                "raise the timeout if it needs longer"
            )
        super().__init__(message, command=command, result=result)
        self.timeout = timeout

    @property
    def stdout(self) -> bytes:
        return self.result.stdout if self.result is not None else b""

    @property
    def stderr(self) -> bytes:
        return self.result.stderr if self.result is not None else b""

    def _kwargs(self) -> dict[str, Any]:
        return {**super()._kwargs(), "timeout": self.timeout}


class LimitExceeded(ProcessError):
    """The process went over one of its limits and was stopped.

    Attributes:
        limit: which limit (``memory``, ``cpu_time``, ``wall_time``, ``processes``, ...).
        observed: the value seen (bytes, seconds or a count), if known.
        allowed: the configured limit, in the same unit.
    """

    def __init__(
        self,
        message: str | None = None,
        *,
        limit: str,
        observed: float | None,
        allowed: float,
        command: tuple[str, ...] | list[str] | None = None,
        result: Result | None = None,
    ) -> None:
        if message is None:
            seen = f" (observed {observed:g})" if observed is not None else ""
            message = (
                f"{_describe(tuple(command) if command else None)} exceeded its {limit} "
                f"limit of {allowed:g}{seen} and was stopped; raise the limit or reduce "
                "what the command uses"
            )
        super().__init__(message, command=command, result=result)
        self.limit = limit
        self.observed = observed
        self.allowed = allowed

    def _kwargs(self) -> dict[str, Any]:
        return {
            **super()._kwargs(),
            "limit": self.limit,
            "observed": self.observed,
            "allowed": self.allowed,
        }


class NonZeroExit(ProcessError):
    """The process exited with a non-zero code (raised only with ``check=True``).

    Attributes:
        returncode: the exit code.
        stderr_tail: the last lines of its stderr, for the message.
        stage: for a pipeline, the index of the stage that failed.
    """

    def __init__(
        self,
        message: str | None = None,
        *,
        returncode: int,
        stderr_tail: str = "",
        stage: int | None = None,
        command: tuple[str, ...] | list[str] | None = None,
        result: Result | None = None,
    ) -> None:
        if message is None:
            where = f"pipeline stage {stage} ({_describe(tuple(command) if command else None)})"
            if stage is None:
                where = _describe(tuple(command) if command else None)
            message = f"{where} exited with code {returncode}"
            if stderr_tail:
                message += f": {stderr_tail}"
        super().__init__(message, command=command, result=result)
        self.returncode = returncode
        self.stderr_tail = stderr_tail
        self.stage = stage

    def _kwargs(self) -> dict[str, Any]:
        return {
            **super()._kwargs(),
            "returncode": self.returncode,
            "stderr_tail": self.stderr_tail,
            "stage": self.stage,
        }


class Signaled(ProcessError):
    """The process was killed by a signal it did not ask for (only with ``check=True``).

    Attributes:
        signal: the signal's name, such as ``"SIGSEGV"``.
        stage: for a pipeline, the index of the stage that was killed.
    """

    def __init__(
        self,
        message: str | None = None,
        *,
        signal: str,
        stage: int | None = None,
        command: tuple[str, ...] | list[str] | None = None,
        result: Result | None = None,
    ) -> None:
        if message is None:
            where = _describe(tuple(command) if command else None)
            if stage is not None:
                where = f"pipeline stage {stage} ({where})"
            message = f"{where} was killed by {signal}"
        super().__init__(message, command=command, result=result)
        self.signal = signal
        self.stage = stage

    def _kwargs(self) -> dict[str, Any]:
        return {**super()._kwargs(), "signal": self.signal, "stage": self.stage}


class PoolError(ProcessError):
    """A task submitted to a pool did not complete."""


class TaskTimeout(PoolError):
    """The task ran past its ``timeout``; the worker running it was killed and replaced."""


class SoftTimeout(PoolError):
    """Raised *inside* a task of a Python :class:`~procvisor.Pool` that ran past its
    ``soft_timeout``, so that it can clean up; uncaught, it fails the task (and the worker
    lives on). ``timeout``, if also given, still kills the worker later."""


class DeadlineExpired(PoolError):
    """The task was not started before its ``deadline``; it never ran."""


class WorkerCrashed(PoolError):
    """The worker running the task died; only this task failed, the worker was replaced.

    Attributes:
        exit_code: the worker's exit code, or ``None`` if a signal killed it (or unknown).
        signal: the name of the signal that killed it (``"SIGKILL"``), or ``None``.
    """

    def __init__(
        self,
        message: str,
        *,
        exit_code: int | None = None,
        signal: str | None = None,
        command: tuple[str, ...] | list[str] | None = None,
        result: Result | None = None,
    ) -> None:
        super().__init__(message, command=command, result=result)
        self.exit_code = exit_code
        self.signal = signal

    def _kwargs(self) -> dict[str, Any]:
        return {**super()._kwargs(), "exit_code": self.exit_code, "signal": self.signal}


class ProtocolError(PoolError):
    """A command worker wrote something that is not a valid response; it was replaced."""


class TaskFailed(PoolError):
    """A command worker answered the task with ``{"id": ..., "error": ...}``.

    Attributes:
        error: the ``error`` value of the response, as decoded from JSON.
    """

    def __init__(
        self,
        message: str,
        *,
        error: Any = None,
        command: tuple[str, ...] | list[str] | None = None,
        result: Result | None = None,
    ) -> None:
        super().__init__(message, command=command, result=result)
        self.error = error

    def _kwargs(self) -> dict[str, Any]:
        return {**super()._kwargs(), "error": self.error}


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker, as text (set as ``__cause__``)."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return self.tb
