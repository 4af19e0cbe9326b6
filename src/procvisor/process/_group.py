"""Process groups: signal them, see who is in them, collect what is left of them."""

from __future__ import annotations

import os


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
