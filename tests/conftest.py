"""Test-wide fixtures.

The test process makes itself a *child subreaper*: every process a test starts, and every
grandchild those leave behind, stays our descendant. After each test, the ``no_leaks``
fixture fails the test if any descendant it started is still alive, or if a process-group
leader (what procvisor spawns) was left unreaped as a zombie. Orphaned grandchildren that
died are reaped here, as init would.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import psutil
import pytest

from procvisor.process import become_subreaper

sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture(scope="session", autouse=True)
def subreaper() -> None:
    try:
        become_subreaper()
    except OSError as exc:
        pytest.exit(f"cannot become a child subreaper ({exc}); the leak check would be blind", 3)


def _descendants() -> dict[int, psutil.Process]:
    return {p.pid: p for p in psutil.Process().children(recursive=True)}


def _describe(proc: psutil.Process) -> str:
    try:
        return f"{proc.pid} {proc.status()} {' '.join(proc.cmdline())!r}"
    except psutil.Error:
        return f"{proc.pid} (gone)"


def _live(procs: dict[int, psutil.Process]) -> list[psutil.Process]:
    out = []
    for p in procs.values():
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


@pytest.fixture(autouse=True)
def no_leaks():
    before = set(_descendants())
    yield
    deadline = time.monotonic() + 5.0
    while True:
        new = {pid: p for pid, p in _descendants().items() if pid not in before}
        live = _live(new)
        if not live or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    leaked_zombie_leaders = []
    for pid, proc in new.items():
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                if os.getpgid(pid) == pid:
                    leaked_zombie_leaders.append(_describe(proc))
                os.waitpid(pid, os.WNOHANG)  # reap, as init would
        except (psutil.NoSuchProcess, ProcessLookupError, ChildProcessError):
            pass
    if live:
        text = [_describe(p) for p in live]
        for p in live:
            try:
                p.send_signal(signal.SIGKILL)
                p.wait(2)
            except psutil.Error:
                pass
        pytest.fail(f"test left processes running: {text}")
    if leaked_zombie_leaders:
        pytest.fail(f"test left unreaped zombie group leaders: {leaked_zombie_leaders}")
