"""Reaping what nobody else will: orphans adopted by a subreaper (or by PID 1).

A supervisor that is a *child subreaper* (``prctl(PR_SET_CHILD_SUBREAPER)``) becomes the
parent of every orphaned descendant, such as the child of a service that forked and exited,
or anything left by a process that was run with ``setsid``. When those exit they stay
zombies until their parent reaps them, and as PID 1 in a container everything orphaned on the
machine is ours. :func:`reap_orphans` reaps exactly those: our exited children that no
:class:`~procvisor.process._exitwatch.ExitWatch` is waiting for, so no status that belongs to
a watched child is ever taken.
"""

from __future__ import annotations

import ctypes
import os

from procvisor.process._exitwatch import watched

__all__ = ["adopted", "become_subreaper", "reap_orphans"]

_PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> None:
    """Make this process the reaper of its orphaned descendants.

    Raises:
        OSError: the kernel refused (it has supported this since Linux 3.4).
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(errno)}")


def _children() -> set[int]:
    pids: set[int] = set()
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return pids
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/children", "rb") as f:
                pids.update(int(p) for p in f.read().split())
        except OSError:
            continue  # the thread ended while we looked
    return pids


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] == b"Z"


def reap_orphans() -> list[tuple[int, int]]:
    """Reap every exited child of ours that nothing in this process watches.

    Returns ``(pid, returncode)`` for each one reaped (``-N`` for signal ``N``). Cheap enough
    to call on every SIGCHLD: it reads ``/proc/self/task/*/children`` and the stat of each
    unwatched child.
    """
    reaped = []
    for pid in _children() - watched:
        if pid in watched or not _is_zombie(pid):
            continue
        try:
            got, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            continue
        if got:
            reaped.append((got, os.waitstatus_to_exitcode(status)))
    return reaped


def adopted() -> list[int]:
    """Our live children that nothing in this process watches: processes adopted as a
    subreaper (or PID 1) that still run, such as one that left its service's group."""
    return sorted(pid for pid in _children() - watched if not _is_zombie(pid))
