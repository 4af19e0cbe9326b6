"""procvisor: a process manager for Linux.

Layers, each importing only those below it (see DESIGN.md)::

    cli, daemon                 the procvisor command; the composition root
    supervisor, jobs, pool      the capabilities
    store                       durable state
    process                     the OS layer: spawn, limits, signals, output, pipelines
    policy                      pure decisions: units, backoff, queues, ...

This module re-exports only what users call.
"""

import typing as _typing

from procvisor.errors import (
    DeadlineExpired,
    LimitExceeded,
    NonZeroExit,
    PoolError,
    ProcessError,
    ProtocolError,
    RemoteTraceback,
    Signaled,
    SpawnError,
    TaskFailed,
    TaskTimeout,
    TimeoutExpired,
    WorkerCrashed,
)
from procvisor.process import (
    Command,
    Limits,
    Metrics,
    OutputLine,
    Pipeline,
    PipelineResult,
    Process,
    Result,
    Usage,
    arun,
    cmd,
    run,
    spawn,
)

if _typing.TYPE_CHECKING:
    from procvisor.client import Client
    from procvisor.pool import AsyncPool, Balancer, CommandPool, Pool, PoolStats

__version__ = "0.1.0"

_LAZY = {"AsyncPool", "Balancer", "CommandPool", "Pool", "PoolStats"}
_LAZY_CLIENT = {"Client"}


def __getattr__(name: str) -> _typing.Any:
    # The pool layer (threads, selectors, concurrent.futures) loads on first use, so that
    # `procvisor run` and `import procvisor` for run() pay nothing for it.
    if name in _LAZY_CLIENT:
        from procvisor.client import Client  # noqa: PLC0415

        return Client
    if name in _LAZY:
        from procvisor import pool  # noqa: PLC0415

        return getattr(pool, name)
    raise AttributeError(f"module 'procvisor' has no attribute {name!r}")


__all__ = [
    "AsyncPool",
    "Balancer",
    "Client",
    "Command",
    "CommandPool",
    "DeadlineExpired",
    "LimitExceeded",
    "Limits",
    "Metrics",
    "NonZeroExit",
    "OutputLine",
    "Pipeline",
    "PipelineResult",
    "Pool",
    "PoolError",
    "PoolStats",
    "Process",
    "ProcessError",
    "ProtocolError",
    "RemoteTraceback",
    "Result",
    "Signaled",
    "SpawnError",
    "TaskFailed",
    "TaskTimeout",
    "TimeoutExpired",
    "Usage",
    "WorkerCrashed",
    "__version__",
    "arun",
    "cmd",
    "run",
    "spawn",
]
