"""Finding and stopping the process groups a previous scheduler left behind.

Every job runs in its own session, so its process group id is its pid, and the store records
that pid with the process's start time (clock ticks since boot, from ``/proc/PID/stat``): the
two name one process for the life of the machine, so a reused pid is never mistaken for a job.
A job is also started with ``PROCVISOR_JOB=ID:STORE`` in its environment, which finds the
processes of jobs whose pid had not been recorded yet when the scheduler died (between the
spawn and the write that records it).

A job's processes that left its group (``setsid``, a double-forking daemon) carry the same
tag, so a cancel or a timeout finds and stops them too (:func:`escaped_groups`): what a
cgroup per job would do, on machines where none can be made.

These groups are not our children (unless we are their subreaper), so there is no exit event
to wait on: they are stopped with :func:`procvisor.process.stop_group`, which polls ``/proc``
(the supervisor stops the leftovers of a killed daemon the same way).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from procvisor.process import group_members, start_ticks

__all__ = ["MARKER", "escaped_groups", "find_marked", "group_is_ours"]

MARKER = "PROCVISOR_JOB"
"""The environment variable that tags a job's process: ``ID:STORE-PATH``."""


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


def _marked(store_path: str) -> Iterator[tuple[int, int]]:
    """``(job id, pid)`` of every process tagged for this store that this user may read."""
    prefix = f"{MARKER}=".encode()
    suffix = f":{store_path}".encode()
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
                if text.isdigit():
                    yield int(text), int(name)
                break


def find_marked(store_path: str, job_ids: set[int]) -> dict[int, int]:
    """The group leaders (pid) of processes tagged with one of ``job_ids`` for this store.

    Reads ``/proc/*/environ`` of the processes this user may read: run only at start-up.
    """
    if not job_ids:
        return {}
    found: dict[int, int] = {}
    for job, pid in _marked(store_path):
        if job in job_ids:
            with contextlib.suppress(ProcessLookupError):
                found.setdefault(job, os.getpgid(pid))
    return found


def escaped_groups(store_path: str, job_id: int) -> set[int]:
    """The process groups of a job's processes that left its group (``setsid``, a daemon
    that double-forked): found by the tag they inherited. Read after the job's own group
    was stopped, on a cancel or a timeout only (it reads every process's environment)."""
    groups = set()
    for job, pid in _marked(store_path):
        if job == job_id:
            with contextlib.suppress(ProcessLookupError):
                groups.add(os.getpgid(pid))
    return groups
