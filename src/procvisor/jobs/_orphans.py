"""Finding and stopping the process groups a previous scheduler left behind.

Every job runs in its own session, so its process group id is its pid, and the store records
that pid with the process's start time (clock ticks since boot, from ``/proc/PID/stat``): the
two name one process for the life of the machine, so a reused pid is never mistaken for a job.
A job is also started with ``PROCVISOR_JOB=ID:STORE`` in its environment, which finds the
processes of jobs whose pid had not been recorded yet when the scheduler died (between the
spawn and the write that records it).

These groups are not our children (unless we are their subreaper), so there is no exit event
to wait on: stopping one polls ``/proc`` with a growing pause, as the supervisor does.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time

from procvisor.process import group_members
from procvisor.process._group import reap_group

__all__ = ["MARKER", "find_marked", "group_is_ours", "start_ticks", "stop_group"]

MARKER = "PROCVISOR_JOB"
"""The environment variable that tags a job's process: ``ID:STORE-PATH``."""


def start_ticks(pid: int) -> float | None:
    """When ``pid`` started, in clock ticks since boot, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return float(stat[stat.rfind(b")") + 2 :].split()[19])


def group_is_ours(pid: int, ticks: float | None) -> bool:
    """Whether the group a job's run started as ``pid`` at ``ticks`` still has members.

    The leader may be gone while members it forked live on: while any member is in the
    group, the kernel does not hand its id to a new process, so they are the job's if they
    started after it did.
    """
    found = start_ticks(pid)
    if found is not None:  # the pid lives: ours only if it is the same process
        if ticks is not None and found != ticks:
            return False
        try:
            return os.getpgid(pid) == pid
        except ProcessLookupError:
            return False
    members = group_members(pid)
    if not members or ticks is None:
        return False
    return all((start_ticks(m) or 0.0) >= ticks for m in members)


def find_marked(store_path: str, job_ids: set[int]) -> dict[int, int]:
    """The group leaders (pid) of processes tagged with one of ``job_ids`` for this store.

    Reads ``/proc/*/environ`` of the processes this user may read: run only at start-up.
    """
    if not job_ids:
        return {}
    prefix = f"{MARKER}=".encode()
    suffix = f":{store_path}".encode()
    found: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                environ = f.read()
        except OSError:
            continue
        for item in environ.split(b"\0"):
            if item.startswith(prefix) and item.endswith(suffix):
                text = item[len(prefix) : -len(suffix)]
                if text.isdigit() and int(text) in job_ids:
                    pid = int(name)
                    with contextlib.suppress(ProcessLookupError):
                        found.setdefault(int(text), os.getpgid(pid))
                break
    return found


async def stop_group(pgid: int, grace: float) -> None:
    """Stop a process group that is not our child: SIGTERM (and SIGCONT), grace, SIGKILL.

    Returns once the group is empty. Members that were adopted by this process (when it is a
    child subreaper) are reaped on the way.
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
        os.killpg(pgid, signal.SIGCONT)
    deadline = time.monotonic() + grace
    pause = 0.002
    while True:
        reap_group(pgid)
        if not group_members(pgid):
            reap_group(pgid)
            return
        if time.monotonic() >= deadline:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
            deadline = float("inf")
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.1)
