"""Process groups: signal them, see who is in them, collect what is left of them, stop them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time


def signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to every process in group ``pgid``; False if the group is empty."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # members exist, but run as someone we may not signal
    return True


def group_alive(pgid: int) -> bool:
    """True while any process (zombies included) is in group ``pgid``."""
    return signal_group(pgid, 0)


def reap_group(pgid: int) -> int:
    """Reap any of *our* children in group ``pgid`` that have exited; return how many.

    Only grandchildren adopted by this process (when it is a child subreaper or PID 1) are
    our children here; the group's own members are reaped by whoever started them.
    """
    reaped = 0
    while True:
        try:
            pid, _ = os.waitpid(-pgid, os.WNOHANG)
        except ChildProcessError:
            return reaped
        if pid == 0:
            return reaped
        reaped += 1


def group_members(pgid: int) -> list[int]:
    """Pids of the live (non-zombie) processes in group ``pgid``, read from /proc."""
    return group_pids().get(pgid, [])


def group_pids() -> dict[int, list[int]]:
    """Every live (non-zombie) process on the machine by process group, in one read of /proc."""
    groups: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue  # gone while we looked
        # The comm field may hold spaces and parentheses; the fields after the last ')' don't.
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 2 and fields[0] != b"Z":
            groups.setdefault(int(fields[2]), []).append(int(name))
    return groups


_TICK_NS = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
_TICK = 1 / os.sysconf("SC_CLK_TCK")


def group_cpu(pgid: int) -> float | None:
    """User + system CPU seconds so far of the live members of group ``pgid`` (all their
    threads), from ``/proc``; None when it has none."""
    members = group_members(pgid)
    if not members:
        return None
    ticks = 0
    for pid in members:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue  # gone since
        fields = stat[stat.rfind(b")") + 2 :].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks * _TICK


def boot_ticks() -> int:
    """Now, in the clock ticks since boot that ``/proc/PID/stat`` gives start times in.

    The kernel stamps a new process with the boot-time clock at fork and shows it truncated
    to ticks, so a child started between two equal readings of this has that start time:
    known without reading ``/proc`` (see ``Execution.start_ticks``).
    """
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME) // _TICK_NS


def start_ticks(pid: int) -> float | None:
    """When ``pid`` started, in clock ticks since boot (``/proc/PID/stat``), or None if gone.

    With the pid it names one process for the life of the machine: a reused pid has another
    start time. One read of /proc, cheaper than psutil's create_time (which also reads
    /proc/stat for the boot time) on the path of every spawn.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return float(stat[stat.rfind(b")") + 2 :].split()[19])


async def stop_group(
    pgid: int, grace: float, *, sig: int = signal.SIGTERM, reap: bool = False
) -> None:
    """Stop a process group that is not our child: ``sig`` (and SIGCONT), grace, SIGKILL.

    These groups have no exit event to wait on, so this polls ``/proc`` with a growing pause
    and returns once no live member is left. With ``reap``, members that were adopted by this
    process (when it is a child subreaper) are reaped on the way; without it they are left to
    whoever reaps them (a group may hold children that another part of this process watches).
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
        os.killpg(pgid, signal.SIGCONT)
    deadline = time.monotonic() + grace
    pause = 0.002
    while True:
        if reap:
            reap_group(pgid)
        if not group_members(pgid):
            break
        if time.monotonic() >= deadline:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
            deadline = float("inf")
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.1)
    if reap:
        reap_group(pgid)
