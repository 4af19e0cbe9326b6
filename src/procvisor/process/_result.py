"""What a finished run reports: :class:`Result` and :class:`Usage`."""

from __future__ import annotations

import signal as _signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Usage:
    """Resources the kernel accounted to a finished process (from ``wait4``'s rusage).

    It covers the process and the descendants it waited for itself.
    """

    max_rss: int
    """Peak resident set size, in bytes: never below the spawning process's own peak, which
    the kernel counts as the child's until its exec (see the README)."""
    user_cpu: float
    """CPU seconds spent in user mode."""
    system_cpu: float
    """CPU seconds spent in the kernel on its behalf."""

    @property
    def cpu(self) -> float:
        """User plus system CPU seconds."""
        return self.user_cpu + self.system_cpu


def signal_name(signum: int) -> str:
    """``9`` -> ``"SIGKILL"``; an unknown number -> ``"SIG<n>"``."""
    try:
        return _signal.Signals(signum).name
    except ValueError:
        return f"SIG{signum}"


@dataclass(frozen=True, slots=True)
class Result:
    """The outcome of a process that ran to its end (or was stopped).

    ``returncode`` follows :mod:`subprocess`: the exit code, or ``-N`` when signal ``N``
    killed it, and ``None`` only when another reaper collected the process before procvisor
    could (procvisor never invents an exit status).
    """

    args: tuple[str, ...]
    pid: int
    returncode: int | None
    signal: str | None
    stdout: bytes
    stderr: bytes
    duration: float
    timed_out: bool = False
    limit_exceeded: str | None = None
    truncated: bool = False
    usage: Usage | None = None
    limits: Mapping[str, str] = field(default_factory=dict)
    """Which mechanism enforced each limit: ``{"memory": "cgroup", "wall_time": "timer"}``."""

    @property
    def ok(self) -> bool:
        """True when the process exited with code 0 and was not stopped."""
        return self.returncode == 0 and not self.timed_out and self.limit_exceeded is None

    @property
    def stdout_text(self) -> str:
        """stdout decoded as UTF-8 (undecodable bytes replaced)."""
        return self.stdout.decode("utf-8", "replace")

    @property
    def stderr_text(self) -> str:
        """stderr decoded as UTF-8 (undecodable bytes replaced)."""
        return self.stderr.decode("utf-8", "replace")

    @property
    def exit_status(self) -> int:
        """The shell's view of the outcome: the code, 128+N for signal N, 124 on timeout."""
        if self.timed_out:
            return 124
        if self.returncode is None:
            return 255
        if self.returncode < 0:
            return 128 - self.returncode
        return self.returncode

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (output decoded as UTF-8 text)."""
        usage = self.usage
        return {
            "args": list(self.args),
            "pid": self.pid,
            "returncode": self.returncode,
            "signal": self.signal,
            "exit_status": self.exit_status,
            "stdout": self.stdout_text,
            "stderr": self.stderr_text,
            "duration": self.duration,
            "timed_out": self.timed_out,
            "limit_exceeded": self.limit_exceeded,
            "truncated": self.truncated,
            "usage": None
            if usage is None
            else {
                "max_rss": usage.max_rss,
                "user_cpu": usage.user_cpu,
                "system_cpu": usage.system_cpu,
            },
            "limits": dict(self.limits),
        }


_SIGNUMS = frozenset(int(s) for s in _signal.Signals)


def parse_signal(value: int | str, *, field: str = "signal") -> int:
    """``"TERM"``, ``"SIGTERM"``, ``"term"`` or ``15`` -> ``15``.

    Raises:
        ValueError: not a signal this system knows; the message names ``field``.
    """
    if isinstance(value, bool):
        raise ValueError(f"{field}: {value!r} is not a signal; use a name like 'TERM' or 'INT'")
    if isinstance(value, int):
        if value in _SIGNUMS:
            return int(value)
    elif isinstance(value, str):
        name = value.strip().upper()
        name = name if name.startswith("SIG") else "SIG" + name
        member = getattr(_signal.Signals, name, None)
        if isinstance(member, _signal.Signals):
            return int(member)
    raise ValueError(f"{field}: {value!r} is not a signal; use a name like 'TERM' or 'INT'")
