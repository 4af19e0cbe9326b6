"""Fixtures of the daemon tests: a short working directory, and daemons stopped after each test."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def workdir() -> Iterator[Path]:
    # Short on purpose: the control socket's path must fit in 107 bytes.
    path = Path(tempfile.mkdtemp(prefix="pvd", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def daemons() -> Iterator[list[Any]]:
    started: list[Any] = []  # test_daemon.Daemon objects
    yield started
    for d in started:
        d.stop()  # also closes the pipes of one that has exited
