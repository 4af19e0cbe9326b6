"""Fixtures of the job scheduler tests: schedulers on a store in tmp_path, closed after."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from procvisor.jobs import JobsConfig, Scheduler
from procvisor.policy.admission import Capacity
from procvisor.store import Store

GiB = 1024**3
NODE = Capacity(cpu=4.0, memory=8 * GiB)
"""The node the tests schedule on: the same on every machine."""

MakeScheduler = Callable[..., Awaitable[Scheduler]]


@pytest.fixture
async def make_scheduler(tmp_path: Path) -> AsyncIterator[MakeScheduler]:
    """``await make_scheduler(**JobsConfig fields)``: a started scheduler on tmp_path's store."""
    made: list[tuple[Scheduler, Store]] = []

    async def make(**settings: Any) -> Scheduler:
        settings.setdefault("capacity", NODE)
        settings.setdefault("grace", 2.0)
        store = Store(tmp_path / "jobs.db")
        scheduler = Scheduler(store, tmp_path / "logs", JobsConfig(**settings))
        made.append((scheduler, store))
        await scheduler.start()
        return scheduler

    yield make
    for scheduler, store in reversed(made):
        await scheduler.aclose()
        store.close()


def lines(path: Path) -> list[str]:
    """The lines of a file the jobs append to (none if it does not exist yet)."""
    return path.read_text().split() if path.exists() else []
