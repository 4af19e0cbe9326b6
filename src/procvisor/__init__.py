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
    SoftTimeout,
    SpawnError,
    TaskFailed,
    TaskTimeout,
    TimeoutExpired,
    WorkerCrashed,
)

if _typing.TYPE_CHECKING:
    from procvisor.client import Client
    from procvisor.pool import AsyncPool, Balancer, CommandPool, Pool, PoolStats
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

__version__ = "0.1.0"

# Each layer loads on first use of one of its names: `procvisor status` and the other
# commands that only talk to the daemon need neither asyncio nor the process layer (~60 ms),
# and run() pays nothing for the pool layer (threads, selectors, concurrent.futures).
_LAZY = {
    "procvisor.client": ("Client",),
    "procvisor.pool": ("AsyncPool", "Balancer", "CommandPool", "Pool", "PoolStats"),
    "procvisor.process": (
        "Command",
        "Limits",
        "Metrics",
        "OutputLine",
        "Pipeline",
        "PipelineResult",
        "Process",
        "Result",
        "Usage",
        "arun",
        "cmd",
        "run",
        "spawn",
    ),
}
_MODULE_OF = {name: module for module, names in _LAZY.items() for name in names}


def __getattr__(name: str) -> _typing.Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'procvisor' has no attribute {name!r}")
    import importlib  # noqa: PLC0415

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


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
    "SoftTimeout",
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
