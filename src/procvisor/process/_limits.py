"""Resource limits for one process group, and how each one is enforced.

Mechanisms, reported per limit in ``Result.limits`` / ``Process.limits``:

``rlimit``
    a kernel resource limit (``setrlimit``) set in the child before it runs the command.
    procvisor sets it through util-linux ``prlimit(1)`` as an exec trampoline, which keeps
    the fast vfork/posix_spawn path; where ``prlimit`` is missing it falls back to
    ``preexec_fn`` (a full fork; see bench/RESULTS.md for what each costs).
``timer``
    the parent stops the group when the time is up (``wall_time``).
``cgroup``
    a cgroup of the group's own, where the machine lets procvisor make one (see
    :mod:`procvisor.process._cgroup`), for the command's whole tree: ``pids.max``
    (``processes``; a fork beyond it fails), ``memory.limit_in_bytes`` (``memory``; the OOM
    killer ends the largest process beyond it) and a CFS quota (``cpus``; the tree waits).
``setpriority``
    the parent sets the group's niceness (``nice``) right after it starts, with
    ``setpriority(PRIO_PGRP)``: every process in the group then, and all they start later.
``sampled``
    the parent counts the group's processes every ``SAMPLE_INTERVAL`` seconds and stops the
    group when it is over (``processes`` when the child runs as root, whom the kernel exempts
    from ``RLIMIT_NPROC``, and no cgroup can be made).

Without a cpu cgroup, ``cpus`` is ``sampled`` too: the parent holds the group to it with a
SIGSTOP/SIGCONT duty cycle (:mod:`procvisor.process._throttle`).
"""

from __future__ import annotations

import math
import resource
from dataclasses import dataclass

from procvisor.policy.units import format_duration, format_size, parse_duration, parse_size
from procvisor.process import _cgroup

SAMPLE_INTERVAL = 0.1


def format_limit(name: str, value: float) -> str:
    """A limit's value as its config spells it: ``512M``, ``10s``, ``256``."""
    if name in ("cpu_time", "wall_time"):
        return format_duration(value)
    if name in ("memory", "core"):
        return format_size(int(value))
    if name == "cpus":
        return f"{value:g} CPU" + ("" if value == 1 else "s")
    return f"{value:g}"


_RLIMITS = {
    "memory": ("as", resource.RLIMIT_AS),
    "cpu_time": ("cpu", resource.RLIMIT_CPU),
    "open_files": ("nofile", resource.RLIMIT_NOFILE),
    "processes": ("nproc", resource.RLIMIT_NPROC),
    "core": ("core", resource.RLIMIT_CORE),
}


def _count(value: int | str | None, field: str, minimum: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"limits.{field}: {value!r} is not a whole number")
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"limits.{field}: {value!r} is not a whole number") from None
    if number < minimum:
        raise ValueError(f"limits.{field}: {value!r} must be {minimum} or more")
    return number


@dataclass(frozen=True, slots=True, init=False)
class Limits:
    """What a process group may use.

    Sizes take bytes or strings like ``"512M"``; durations take seconds or strings like
    ``"250ms"``, ``"2m"``. Each limit is optional.

    Args:
        memory: bytes of memory for the command's whole tree (a memory cgroup) where one
            can be made; else address space per process (``RLIMIT_AS``).
        cpu_time: CPU seconds per process (``RLIMIT_CPU``; SIGXCPU, then SIGKILL a second
            later).
        wall_time: seconds the whole group may run before it is stopped.
        open_files: open file descriptors per process (``RLIMIT_NOFILE``).
        processes: processes in the command's tree (a pids cgroup) where one can be made;
            else processes of the user (``RLIMIT_NPROC``) or, for root, in the group
            (sampled).
        core: core file size, bytes (``0`` disables core dumps).
        nice: the group's CPU priority, from -20 (highest; raising it needs root) to 19
            (lowest), as ``nice(1)`` and systemd's ``Nice=``.
        cpus: CPUs' worth of time the whole tree may use, e.g. ``0.5`` or ``2`` (a CPU
            cgroup's quota; where none can be made, a SIGSTOP/SIGCONT duty cycle of the
            group).

    Raises:
        ValueError: a value is not of an accepted form; the message names the field.
    """

    memory: int | None
    cpu_time: float | None
    wall_time: float | None
    open_files: int | None
    processes: int | None
    core: int | None
    cpus: float | None
    nice: int | None

    def __init__(
        self,
        memory: int | str | None = None,
        cpu_time: float | str | None = None,
        wall_time: float | str | None = None,
        open_files: int | str | None = None,
        processes: int | str | None = None,
        core: int | str | None = None,
        cpus: float | str | None = None,
        nice: int | str | None = None,
    ) -> None:
        def positive_duration(value: float | str | None, field: str) -> float | None:
            if value is None:
                return None
            seconds = parse_duration(value, field=f"limits.{field}")
            if seconds <= 0:
                raise ValueError(f"limits.{field}: {value!r} must be more than 0 seconds")
            return seconds

        mem = None if memory is None else parse_size(memory, field="limits.memory")
        if mem is not None and mem < 1024 * 1024:
            raise ValueError(f"limits.memory: {memory!r} is below the 1M a process needs to start")
        object.__setattr__(self, "memory", mem)
        object.__setattr__(self, "cpu_time", positive_duration(cpu_time, "cpu_time"))
        object.__setattr__(self, "wall_time", positive_duration(wall_time, "wall_time"))
        object.__setattr__(self, "open_files", _count(open_files, "open_files", 3))
        object.__setattr__(self, "processes", _count(processes, "processes", 1))
        object.__setattr__(
            self, "core", None if core is None else parse_size(core, field="limits.core")
        )
        object.__setattr__(self, "cpus", _cpus(cpus))
        niceness = _count(nice, "nice", -20)
        if niceness is not None and niceness > 19:
            raise ValueError(f"limits.nice: {nice!r} must be 19 or less (-20 to 19)")
        object.__setattr__(self, "nice", niceness)

    def rlimits(self, *, as_root: bool) -> dict[str, tuple[int, int]]:
        """The kernel limits to set, as ``{name: (soft, hard)}`` keyed by limit field."""
        out: dict[str, tuple[int, int]] = {}
        if self.memory is not None and not _cgroup.available("memory"):
            out["memory"] = (self.memory, self.memory)
        if self.cpu_time is not None:
            soft = math.ceil(self.cpu_time)
            out["cpu_time"] = (soft, soft + 1)
        if self.open_files is not None:
            out["open_files"] = (self.open_files, self.open_files)
        if self.processes is not None and not as_root and not _cgroup.available("pids"):
            out["processes"] = (self.processes, self.processes)
        if self.core is not None:
            out["core"] = (self.core, self.core)
        return out

    def mechanisms(self, *, as_root: bool) -> dict[str, str]:
        """Which mechanism enforces each limit that is set."""
        out = dict.fromkeys(self.rlimits(as_root=as_root), "rlimit")
        if self.wall_time is not None:
            out["wall_time"] = "timer"
        if self.nice is not None:
            out["nice"] = "setpriority"
        out.update(dict.fromkeys(self._cgroup_limits(), "cgroup"))
        if self.processes is not None and "processes" not in out and as_root:
            out["processes"] = "sampled"
        if self.cpus is not None and "cpus" not in out:
            out["cpus"] = "sampled"
        return out

    def sampled_processes(self, *, as_root: bool) -> int | None:
        """The process count to enforce by sampling, if any."""
        return self.processes if as_root and not _cgroup.available("pids") else None

    def sampled_cpus(self) -> float | None:
        """The CPUs to hold the group to by a duty cycle, if any (no cpu cgroup here)."""
        return self.cpus if not _cgroup.available("cpu") else None

    def _cgroup_limits(self) -> dict[str, float]:
        wanted = {"processes": "pids", "memory": "memory", "cpus": "cpu"}
        return {
            name: value
            for name, controller in wanted.items()
            if (value := getattr(self, name)) is not None and _cgroup.available(controller)
        }

    def cgroup(self) -> _cgroup.Cgroup | None:
        """A cgroup with the limits a cgroup enforces here, if any (the caller removes it).

        Raises:
            OSError: it could not be made.
        """
        wanted = self._cgroup_limits()
        if not wanted:
            return None
        memory, processes = wanted.get("memory"), wanted.get("processes")
        return _cgroup.Cgroup(
            processes=None if processes is None else int(processes),
            memory=None if memory is None else int(memory),
            cpus=wanted.get("cpus"),
        )


def _cpus(value: float | str | None) -> float | None:
    if value is None:
        return None
    problem = f"limits.cpus: {value!r} is not a number of CPUs (accepted: a number like 0.5 or 2)"
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(problem)
    try:
        cpus = float(value)
    except ValueError:
        raise ValueError(problem) from None
    if not math.isfinite(cpus) or cpus < 0.01:
        raise ValueError(f"limits.cpus: {value!r} must be 0.01 or more")
    return cpus


def prlimit_args(rlimits: dict[str, tuple[int, int]]) -> list[str]:
    """``prlimit(1)`` options that set ``rlimits`` (see :meth:`Limits.rlimits`)."""
    return [f"--{_RLIMITS[name][0]}={soft}:{hard}" for name, (soft, hard) in rlimits.items()]


def setrlimits(rlimits: dict[str, tuple[int, int]]) -> None:
    """Set ``rlimits`` on the calling process (used as a ``preexec_fn`` fallback)."""
    for name, (soft, hard) in rlimits.items():
        resource.setrlimit(_RLIMITS[name][1], (soft, hard))
