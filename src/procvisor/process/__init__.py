"""The OS layer: spawn, limit, watch, stop and inspect process groups.

It knows nothing about services, pools or jobs. Every child starts in its own process group
(a new session for a single command), is watched for exit through a pidfd (or a waitid
thread where pidfds are refused), and is stopped as a group: stop signal, grace, SIGKILL.
Everything above it (supervisor, pool, jobs) starts processes through this layer.
"""

from procvisor.process._api import DEFAULT_MAX_OUTPUT, Metrics, Process, arun, run, spawn
from procvisor.process._child import Child, start_child
from procvisor.process._exitwatch import ExitStatus
from procvisor.process._exitwatch import mechanism as exit_watch_mechanism
from procvisor.process._group import (
    group_cpu,
    group_members,
    group_pids,
    start_ticks,
    stop_group,
)
from procvisor.process._limits import Limits, format_limit
from procvisor.process._output import (
    OutputLine,
    OutputSink,
    RotatingLog,
    Timestamped,
    backup_path,
)
from procvisor.process._pipeline import Command, Pipeline, PipelineResult, cmd
from procvisor.process._reaper import adopted, become_subreaper, reap_orphans
from procvisor.process._result import Result, Usage, parse_signal, signal_name
from procvisor.process._spawn import prepare, rlimit_method

__all__ = [
    "DEFAULT_MAX_OUTPUT",
    "Child",
    "Command",
    "ExitStatus",
    "Limits",
    "Metrics",
    "OutputLine",
    "OutputSink",
    "Pipeline",
    "PipelineResult",
    "Process",
    "Result",
    "RotatingLog",
    "Timestamped",
    "Usage",
    "adopted",
    "arun",
    "backup_path",
    "become_subreaper",
    "cmd",
    "exit_watch_mechanism",
    "format_limit",
    "group_cpu",
    "group_members",
    "group_pids",
    "parse_signal",
    "prepare",
    "reap_orphans",
    "rlimit_method",
    "run",
    "signal_name",
    "spawn",
    "start_child",
    "start_ticks",
    "stop_group",
]
