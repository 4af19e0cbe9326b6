"""Child: the handle on a bare child process (pool workers, a pool's fork server)."""

from __future__ import annotations

import os
import sys

import pytest

from procvisor.process import Child

pytestmark = pytest.mark.timeout(30)


def test_a_child_without_a_process_group_of_its_own_is_killed_alone() -> None:
    # As a forked pool worker is until it has called setsid: its pid names no group yet.
    argv = [sys.executable, "-c", "import time; time.sleep(60)"]
    child = Child(os.posix_spawn(argv[0], argv, os.environ))
    assert os.getpgid(child.pid) == os.getpgid(0)
    child.kill()
    status = child.wait()
    assert status.signal == "SIGKILL"
