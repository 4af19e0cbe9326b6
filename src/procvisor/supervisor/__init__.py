"""Keep services alive: instances, restart policy, health probes, hooks and rotated logs.

Built on the ``process`` layer (spawning, exit events, stopping groups), ``policy`` (restart
and health decisions) and ``store`` (events, and the pids a killed daemon leaves behind). It
is told what to run with :class:`ServiceSpec` objects; it never reads a config file.
"""

from procvisor.supervisor._instance import ExitInfo, Instance, State
from procvisor.supervisor._observer import EXIT_REASONS, NullObserver, Observer
from procvisor.supervisor._spec import ChangeWatch, HookSpec, LogSpec, ProbeSpec, ServiceSpec
from procvisor.supervisor._supervisor import ReloadResult, Supervisor

__all__ = [
    "EXIT_REASONS",
    "ChangeWatch",
    "ExitInfo",
    "HookSpec",
    "Instance",
    "LogSpec",
    "NullObserver",
    "Observer",
    "ProbeSpec",
    "ReloadResult",
    "ServiceSpec",
    "State",
    "Supervisor",
]
