"""What the supervisor is told to run: plain, validated-elsewhere service specifications.

The daemon builds these from the TOML config (``procvisor.daemon.config``); the supervisor
never reads files. Durations are seconds, sizes bytes, signals numbers.
"""

from __future__ import annotations

import signal as _signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from procvisor.policy.restart import RestartPolicy
from procvisor.process import Limits

__all__ = ["HookSpec", "LogSpec", "ProbeSpec", "ServiceSpec"]


@dataclass(frozen=True, slots=True)
class ProbeSpec:
    """A health probe: ``http`` (GET ``url``, 2xx/3xx), ``tcp`` (connect), ``exec`` (exit 0)."""

    type: Literal["http", "tcp", "exec"]
    url: str | None = None
    host: str = "127.0.0.1"
    port: int | None = None
    command: tuple[str, ...] | None = None
    interval: float = 5.0
    timeout: float = 2.0
    start_period: float = 0.0
    failure_threshold: int = 3
    success_threshold: int = 1
    on_unhealthy: Literal["restart", "none"] = "restart"


@dataclass(frozen=True, slots=True)
class HookSpec:
    """Commands run around an instance's life, each stopped after ``timeout`` seconds."""

    pre_start: tuple[str, ...] | None = None
    post_start: tuple[str, ...] | None = None
    pre_stop: tuple[str, ...] | None = None
    post_stop: tuple[str, ...] | None = None
    on_failure: tuple[str, ...] | None = None
    timeout: float = 30.0


@dataclass(frozen=True, slots=True)
class LogSpec:
    """Size-based rotation of an instance's stdout and stderr files, whether each line starts
    with the time it was read, and whether stderr goes to the stdout file."""

    max_size: int = 10 * 1024 * 1024
    backups: int = 5
    timestamps: bool = False
    merge_stderr: bool = False


@dataclass(frozen=True, slots=True)
class ChangeWatch:
    """Files whose changes restart a service's running instances, rolling."""

    paths: tuple[Path, ...]
    ignore: tuple[str, ...] = ()
    """Glob patterns of paths that do not count, e.g. ``*.log``, ``tmp``."""
    debounce: float = 0.5
    """Seconds of quiet that end a batch of changes (one restart per batch)."""


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """One ``[services.NAME]`` table, as the supervisor needs it."""

    name: str
    command: tuple[str, ...]
    instances: int = 1
    cwd: Path | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    inherit_env: bool = True
    user: str | int | None = None
    group: str | int | None = None
    umask: int | None = None
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    restart_cron: str | None = None
    """A cron expression: its running instances are restarted on it, rolling."""
    restart_on_change: ChangeWatch | None = None
    """Files whose changes restart its running instances, rolling."""
    stop_signal: int = _signal.SIGTERM
    stop_timeout: float = 10.0
    depends_on: tuple[str, ...] = ()
    wait_healthy: tuple[str, ...] = ()
    """Of ``depends_on``, those whose instances must all be healthy (not only running) before
    this service starts."""
    wait_completed: tuple[str, ...] = ()
    """Of ``depends_on``, those whose instances must all have exited with a success code
    before this service starts (a migration, a set-up step)."""
    sockets: tuple[tuple[str, str], ...] = ()
    """``(name, address)`` of the listening sockets the instances get as fds 3, 4, ...; the
    supervisor is given each name's fd, and the address tells a moved socket apart."""
    autostart: bool = True
    hooks: HookSpec = field(default_factory=HookSpec)
    health: ProbeSpec | None = None
    limits: Limits | None = None
    logs: LogSpec = field(default_factory=LogSpec)
    notify: bool = False
    """systemd's ``Type=notify``: the instance gets ``$NOTIFY_SOCKET`` and is ``starting``
    until it sends ``READY=1``."""
    start_timeout: float = 90.0
    """With ``notify``: how long an instance may take to send ``READY=1`` before it is
    stopped as a failed start (``EXTEND_TIMEOUT_USEC`` extends it)."""
    on_oom: Literal["restart", "none"] = "restart"
    """When the OOM killer kills any process of an instance at its cgroup ``memory`` limit:
    restart the instance (systemd's ``OOMPolicy=stop``), or only record it."""
    watchdog: float | None = None
    """With ``notify``: the longest time between ``WATCHDOG=1`` pings once it is ready; an
    instance that misses one is stopped and restarted as a failure."""
