"""The public surface: what `procvisor` exports, and that each export is documented."""

from __future__ import annotations

import inspect

import procvisor
import procvisor.policy
import procvisor.process

EXPECTED = {
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
}


def test_root_exports_exactly_the_public_names() -> None:
    assert set(procvisor.__all__) == EXPECTED
    public = {n for n in dir(procvisor) if not n.startswith("_")}
    assert public - EXPECTED <= {
        "errors",
        "policy",
        "process",
        "store",
        "pool",
        "monitor",
        "jobs",
        "client",
        "supervisor",
        "cli",
        "daemon",
    }


def test_every_export_resolves_and_is_documented() -> None:
    for module in (procvisor, procvisor.process, procvisor.policy):
        for name in module.__all__:
            obj = getattr(module, name)
            if name == "__version__" or not (inspect.isclass(obj) or callable(obj)):
                continue
            assert inspect.getdoc(obj), f"{module.__name__}.{name} has no docstring"


def test_runtime_errors_share_one_root() -> None:
    for name in ("SpawnError", "TimeoutExpired", "LimitExceeded", "NonZeroExit", "Signaled"):
        assert issubclass(getattr(procvisor, name), procvisor.ProcessError)
    assert not issubclass(procvisor.ProcessError, ValueError)
