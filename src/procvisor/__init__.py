"""procvisor: a process manager for Linux.

Layers, each importing only those below it (see DESIGN.md)::

    cli, daemon                 the procvisor command; the composition root
    supervisor, jobs, pool      the capabilities
    store                       durable state
    process                     the OS layer: spawn, limits, signals, output, pipelines
    policy                      pure decisions: units, backoff, queues, ...

This module re-exports only what users call.
"""

from procvisor.errors import (
    LimitExceeded,
    NonZeroExit,
    ProcessError,
    Signaled,
    SpawnError,
    TimeoutExpired,
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

__version__ = "0.1.0"

__all__ = [
    "Command",
    "LimitExceeded",
    "Limits",
    "Metrics",
    "NonZeroExit",
    "OutputLine",
    "Pipeline",
    "PipelineResult",
    "Process",
    "ProcessError",
    "Result",
    "Signaled",
    "SpawnError",
    "TimeoutExpired",
    "Usage",
    "__version__",
    "arun",
    "cmd",
    "run",
    "spawn",
]
