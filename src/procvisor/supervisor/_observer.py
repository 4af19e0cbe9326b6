"""What the supervisor tells an observer as it works: spawns, exits, probes (for metrics).

The supervisor keeps no metrics of its own: the daemon passes an :class:`Observer` that turns
these calls into Prometheus series. Calls are made on the daemon's event loop and must return
at once.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["EXIT_REASONS", "NullObserver", "Observer"]

EXIT_REASONS = (
    "success",
    "failure",
    "signal",
    "stopped",
    "unhealthy",
    "spawn_error",
    "hook_failed",
    "oom",
    "start_timeout",
    "watchdog",
)
"""Why an instance's process ended (or never ran), as :meth:`Observer.exited` names it:
an exit code in ``success_exit_codes``; another code; killed by a signal it did not expect;
stopped on request; restarted for failing its probe; the program could not be started; the
``pre_start`` hook failed; the kernel's OOM killer killed it at its cgroup ``memory`` limit;
a ``notify`` service sent no ``READY=1`` within its ``start_timeout``, or missed a
``watchdog`` ping."""


class Observer(Protocol):
    def spawned(self, service: str, seconds: float) -> None:
        """An instance's process was started; ``seconds`` the spawn took."""
        ...

    def exited(self, service: str, reason: str) -> None:
        """An instance's process ended, or a start failed; ``reason`` is in EXIT_REASONS."""
        ...

    def probed(self, service: str, ok: bool, seconds: float) -> None:
        """A health probe ran: its outcome and latency."""
        ...

    def oom_killed(self, service: str) -> None:
        """The OOM killer killed a process of an instance at its cgroup memory limit."""
        ...


class NullObserver:
    """Observes nothing."""

    def spawned(self, service: str, seconds: float) -> None:
        pass

    def exited(self, service: str, reason: str) -> None:
        pass

    def probed(self, service: str, ok: bool, seconds: float) -> None:
        pass

    def oom_killed(self, service: str) -> None:
        pass
