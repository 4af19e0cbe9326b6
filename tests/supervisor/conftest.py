"""Fixtures of the supervisor tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from procvisor.store import Store
from procvisor.supervisor import ServiceSpec, Supervisor


@pytest.fixture
async def make(tmp_path: Path) -> AsyncIterator[object]:
    made: list[tuple[Supervisor, Store]] = []

    async def factory(*specs: ServiceSpec, start: bool = True, **options: Any) -> Supervisor:
        store = Store(tmp_path / f"db{len(made)}.sqlite")
        sup = Supervisor(list(specs), log_dir=tmp_path / "logs", store=store, **options)
        made.append((sup, store))
        if start:
            await sup.start_all()
        return sup

    factory.made = made  # type: ignore[attr-defined]  # to reach a supervisor still starting
    yield factory
    for sup, store in made:
        await sup.stop_all()
        store.close()
