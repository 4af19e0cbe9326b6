"""Real processes for the monitor's tests: started with a handshake, always killed after."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import psutil
import pytest

from helpers import pid_alive, wait_for


@dataclass
class Child:
    """A started Python child and the words of its handshake line."""

    proc: subprocess.Popen[str]
    words: list[str]

    @property
    def pid(self) -> int:
        return self.proc.pid


class Children:
    """Starts Python children in their own session; :meth:`close` kills every descendant."""

    def __init__(self) -> None:
        self._started: list[subprocess.Popen[str]] = []
        self._before = self._descendants()

    @staticmethod
    def _descendants() -> set[int]:
        return {p.pid for p in psutil.Process().children(recursive=True)}

    def start(self, code: str, *, session: bool = True) -> Child:
        """Run ``code``; return once it printed its first line (its handshake)."""
        proc = subprocess.Popen(
            [sys.executable, "-c", code],
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=session,
        )
        self._started.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, f"child exited before its handshake: {code!r}"
        return Child(proc, line.split())

    def close(self) -> None:
        new = self._descendants() - self._before
        for proc in self._started:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        for pid in new:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for proc in self._started:
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        # Once every one of them is dead, each orphan is our child (we are a subreaper).
        wait_for(lambda: not any(pid_alive(pid) for pid in new))
        for pid in new:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


@pytest.fixture
def children() -> Iterator[Children]:
    started = Children()
    try:
        yield started
    finally:
        started.close()
