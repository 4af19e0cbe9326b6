"""The jobs layer's errors: both are misuse (a wrong id, a wrong moment), not runtime failures.

    LookupError
    └── JobNotFound          no job (or schedule) has this id
    ValueError
    └── JobStateError        the job is in a state that does not allow the operation

A job that fails is not an exception: it is a job in state ``failed`` with its reason.
"""

from __future__ import annotations

from typing import Any

__all__ = ["JobNotFound", "JobStateError"]


class JobNotFound(LookupError):
    """No job has this id (it was never submitted, or it was pruned).

    Attributes:
        job: the id asked for.
        what: ``"job"`` or ``"schedule"``.
    """

    def __init__(self, job: int, what: str = "job") -> None:
        self.job = job
        self.what = what
        super().__init__(f"no {what} {job}; list them with `procvisor {what}s`")

    def __str__(self) -> str:
        return str(self.args[0])

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.job, self.what))


class JobStateError(ValueError):
    """The job's state does not allow the operation (retrying a job that is running, ...).

    Attributes:
        job: the job's id.
        state: the state it is in.
        message: what was refused and what to do instead.
    """

    def __init__(self, job: int, state: str, message: str) -> None:
        self.job = job
        self.state = state
        self.message = message
        super().__init__(f"job {job} is {state}: {message}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.job, self.state, self.message))
