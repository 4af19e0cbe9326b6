"""The daemon's command pools: ``[pools.NAME]`` tables turned into running CommandPools.

Each pool runs its own I/O thread (see :mod:`procvisor.pool._engine`); the daemon's loop only
submits tasks and awaits their futures. Starting and shutting down a pool block for a moment
(workers are spawned, or given 5 s to exit), so both run in a thread. A pool whose program
cannot be started does not stop the daemon: it is reported with its error, and a reload that
fixes the table starts it.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from procvisor.daemon._envfile import read_env_files
from procvisor.daemon.config import CommandPoolSection
from procvisor.errors import PoolError, ProcessError

if TYPE_CHECKING:
    from procvisor.pool import CommandPool

__all__ = ["CommandPools"]

log = logging.getLogger("procvisor.daemon")


def _start(name: str, section: CommandPoolSection, log_dir: Path) -> CommandPool:
    from procvisor.pool import CommandPool  # noqa: PLC0415 - threads only when pools exist

    return CommandPool(
        list(section.command),
        section.workers,
        env={**read_env_files(section.env_file), **section.env},
        inherit_env=section.inherit_env,
        cwd=section.cwd,
        stderr=log_dir / f"pool-{name}.log",
        ping_interval=section.ping_interval or None,
        ping_timeout=section.ping_timeout,
        timeout=section.timeout,
        min_workers=section.min_workers,
        max_workers=section.max_workers,
        idle_timeout=section.idle_timeout,
        max_tasks_per_worker=section.max_tasks_per_worker,
        max_memory_per_worker=section.max_memory_per_worker,
        max_worker_age=section.max_worker_age,
        prefetch=section.prefetch,
    )


class CommandPools:
    """The command pools of one daemon, by name."""

    def __init__(self, log_dir: Path) -> None:
        self._log_dir = log_dir
        self._sections: dict[str, CommandPoolSection] = {}
        self._pools: dict[str, CommandPool] = {}
        self._errors: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._sections)

    async def apply(self, sections: Mapping[str, CommandPoolSection]) -> dict[str, list[str]]:
        """Start new pools, shut down removed ones, replace changed ones.

        Returns the names (as ``pools.NAME``) under ``started``, ``stopped`` and ``restarted``.
        """
        gone = [n for n in self._sections if n not in sections]
        changed = [n for n in sections if n in self._sections and self._sections[n] != sections[n]]
        new = [n for n in sections if n not in self._sections]
        for name in gone + changed:
            await self._stop(name)
        for name in changed + new:
            self._sections[name] = sections[name]
            await self._start(name)
        # A pool that could not start is tried again, changed or not (its program may be
        # installed now).
        retried = [n for n in list(self._errors) if n not in changed + new]
        for name in retried:
            await self._start(name)
        new += [n for n in retried if n in self._pools]
        return {
            "started": [f"pools.{n}" for n in new],
            "stopped": [f"pools.{n}" for n in gone],
            "restarted": [f"pools.{n}" for n in changed],
        }

    async def _start(self, name: str) -> None:
        os.makedirs(self._log_dir, mode=0o700, exist_ok=True)
        try:
            pool = await asyncio.to_thread(_start, name, self._sections[name], self._log_dir)
        except (ProcessError, ValueError, OSError) as exc:
            self._errors[name] = str(exc)
            log.error("pool %s cannot start: %s", name, exc)
            return
        self._errors.pop(name, None)
        self._pools[name] = pool
        log.info("pool %s started with %d workers", name, len(pool.pids()))

    async def _stop(self, name: str) -> None:
        self._sections.pop(name, None)
        self._errors.pop(name, None)
        pool = self._pools.pop(name, None)
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, True, cancel_futures=True)

    async def close(self) -> None:
        """Shut every pool down (queued tasks are cancelled, running ones finish)."""
        await asyncio.gather(*(self._stop(name) for name in list(self._sections)))

    def running(self) -> list[tuple[str, CommandPool]]:
        """``(name, pool)`` of every pool that runs."""
        return list(self._pools.items())

    def _pool(self, name: str) -> CommandPool:
        if name not in self._sections:
            known = ", ".join(self._sections) or "none are configured"
            raise LookupError(f"no pool named {name!r}; pools: {known}")
        pool = self._pools.get(name)
        if pool is None:
            raise LookupError(f"pool {name!r} is not running: {self._errors.get(name)}")
        return pool

    def status(self, name: str | None = None) -> list[dict[str, Any]]:
        """For each pool (or ``name``): its command, whether it runs, its stats or error."""
        if name is not None and name not in self._sections:
            self._pool(name)  # raises LookupError naming the pools
        names = [name] if name is not None else list(self._sections)
        out = []
        for n in names:
            pool = self._pools.get(n)
            out.append(
                {
                    "name": n,
                    "command": list(self._sections[n].command),
                    "running": pool is not None,
                    "error": self._errors.get(n),
                    "pids": pool.pids() if pool is not None else [],
                    "stats": pool.stats().to_dict() if pool is not None else None,
                }
            )
        return out

    async def submit(
        self,
        name: str,
        data: Any,
        *,
        timeout: float | str | None = None,
        priority: str | int = "normal",
    ) -> dict[str, Any]:
        """Run one task; ``{"ok": True, "result": ...}`` or ``{"ok": False, "error": {...}}``.

        Raises:
            LookupError: no such pool, or it is not running.
            ValueError, TypeError: a bad option, or data JSON cannot hold.
        """
        pool = self._pool(name)
        future = pool.schedule(data, timeout=timeout, priority=priority)
        try:
            result = await asyncio.wrap_future(future)
        except PoolError as exc:
            error: dict[str, Any] = {"type": type(exc).__name__, "message": str(exc)}
            for attr in ("error", "exit_code", "signal"):  # TaskFailed's; WorkerCrashed's
                if hasattr(exc, attr):
                    error[attr] = getattr(exc, attr)
            return {"ok": False, "error": error}
        return {"ok": True, "result": result}
