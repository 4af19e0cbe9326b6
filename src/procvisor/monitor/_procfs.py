"""Direct reads of /proc: one scan per sample, then a few files per member.

The scan reads every process, or only the descendants of one (see :func:`scan_below`).

psutil reads the same files, but through an object per process and a method call per field;
reading them here costs about a third (bench/monitor.py measures both). Every read may find
the process gone (ENOENT, ESRCH) or not ours to read (EACCES): a gone process is reported as
None, an unreadable field as None; nothing here raises for a process that vanished.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

# Indexes into the fields of /proc/PID/stat that follow the command name, per proc(5) minus 3.
STATE, PPID, PGRP = 0, 1, 2
UTIME, STIME, NUM_THREADS, STARTTIME, VSIZE, RSS = 11, 12, 17, 19, 20, 21

_O_READ = os.O_RDONLY | os.O_CLOEXEC

STATE_NAMES = {
    "R": "running",
    "S": "sleeping",
    "D": "disk-sleep",
    "T": "stopped",
    "t": "tracing-stop",
    "Z": "zombie",
    "X": "dead",
    "I": "idle",
    "P": "parked",
    "W": "waking",
    "K": "wake-kill",
}
"""The state letters of /proc/PID/stat, named as psutil names them."""


def _read(path: str, size: int = 4096) -> bytes:
    fd = os.open(path, _O_READ)
    try:
        return os.read(fd, size)
    finally:
        os.close(fd)


def _fd_count_from_stat() -> bool:
    """Whether ``stat("/proc/PID/fd").st_size`` counts the open fds (Linux 6.2 and later).

    Probed on an fd of our own, so at least one is open: older kernels report 0.
    """
    try:
        fd = os.open("/proc/self/fd", _O_READ | os.O_DIRECTORY)
    except OSError:
        return False
    try:
        return os.fstat(fd).st_size > 0
    finally:
        os.close(fd)


FD_COUNT_FROM_STAT = _fd_count_from_stat()


@dataclass(slots=True)
class Scan:
    """Every process on the machine at one moment: its stat fields, children and groups.

    ``stats[pid]`` holds the raw fields of /proc/PID/stat after the command name (bytes, see
    the index constants); ``comm[pid]`` the command name; zombies are included, so that their
    children are still found below them.
    """

    stats: dict[int, list[bytes]]
    comm: dict[int, bytes]
    children: dict[int, list[int]]
    groups: dict[int, list[int]]


def _stat(pid: int | str) -> tuple[list[bytes], bytes] | None:
    """The fields of /proc/PID/stat after the command name, and the name (None: gone)."""
    try:
        raw = _read(f"/proc/{pid}/stat")
    except OSError:
        return None  # gone while we looked
    # The command name may hold spaces and parentheses; the fields after the last ')' don't.
    close = raw.rfind(b")")
    fields = raw[close + 2 :].split()
    if len(fields) <= RSS:
        return None
    return fields, raw[raw.find(b"(") + 1 : close]


def scan() -> Scan:
    """Read /proc/PID/stat of every process once (a process gone meanwhile is skipped)."""
    stats: dict[int, list[bytes]] = {}
    comm: dict[int, bytes] = {}
    children: dict[int, list[int]] = {}
    groups: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit() or (read := _stat(name)) is None:
            continue
        pid = int(name)
        fields = stats[pid] = read[0]
        comm[pid] = read[1]
        children.setdefault(int(fields[PPID]), []).append(pid)
        groups.setdefault(int(fields[PGRP]), []).append(pid)
    return Scan(stats, comm, children, groups)


CHILDREN_FILES = os.path.exists("/proc/thread-self/children")
"""Whether this kernel lists each thread's children (``CONFIG_PROC_CHILDREN``)."""


def count() -> int:
    """How many processes the machine has now (one directory listing)."""
    return sum(1 for name in os.listdir("/proc") if name.isdigit())


def _children(pid: int, threads: int) -> list[int]:
    """The children of every thread of ``pid`` (``threads``: how many it has; 0: unknown)."""
    if threads == 1:
        tids = [str(pid)]
    else:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            return []
    kids: list[int] = []
    for tid in tids:
        path = f"/proc/{pid}/task/{tid}/children"
        try:
            fd = os.open(path, _O_READ)
        except OSError:
            continue  # the thread or the process ended
        parts = []
        try:
            while part := os.read(fd, 65536):
                parts.append(part)
        except OSError:
            pass  # the process ended while we read
        finally:
            os.close(fd)
        kids.extend(map(int, b"".join(parts).split()))
    return sorted(kids)


def scan_below(root: int, seeds: Iterable[int] = ()) -> Scan:
    """The same as :func:`scan`, for ``root``'s descendants only (``root`` left out), and
    ``seeds`` with theirs: the children files may skip a child that exits while they are
    read, and the roots of the trees to sample must not be missed for that.

    They are found through the children files of every thread, so this reads two files per
    descendant instead of one per process on the machine: cheaper while the descendants are
    fewer than about two thirds of all processes. An orphan of a descendant is found only if
    it stays below ``root``, as it does when ``root`` is a child subreaper. Needs
    :data:`CHILDREN_FILES`.
    """
    stats: dict[int, list[bytes]] = {}
    comm: dict[int, bytes] = {}
    children: dict[int, list[int]] = {}
    groups: dict[int, list[int]] = {}
    stack: list[tuple[int, int | None]] = [(pid, None) for pid in seeds]
    stack += [(kid, root) for kid in reversed(_children(root, 0))]
    while stack:
        pid, parent = stack.pop()
        if pid in stats or (read := _stat(pid)) is None:
            continue
        fields = read[0]
        ppid = int(fields[PPID])
        if parent is not None and ppid != parent:
            continue  # exited, and its pid was taken by another process meanwhile
        stats[pid], comm[pid] = fields, read[1]
        children.setdefault(ppid, []).append(pid)
        groups.setdefault(int(fields[PGRP]), []).append(pid)
        stack.extend((kid, pid) for kid in reversed(_children(pid, int(fields[NUM_THREADS]))))
    return Scan(stats, comm, children, groups)


@dataclass(frozen=True, slots=True)
class Extras:
    """What /proc/PID/stat does not tell: fds, I/O and context switches (None: not readable)."""

    fds: int | None
    read_bytes: int | None
    write_bytes: int | None
    ctx_switches: int | None


_NO_EXTRAS = Extras(None, None, None, None)


def _gone(exc: OSError) -> bool:
    return not isinstance(exc, PermissionError)


def read_extras(pid: int) -> Extras | None:
    """Read the fds, I/O counters and context switches of ``pid``; None if it is gone.

    Context switches are those of the process's main thread (``/proc/PID/status``, which is
    also what psutil reports); I/O is the storage-layer ``read_bytes``/``write_bytes`` of
    ``/proc/PID/io``, which only root or the owner may read.
    """
    try:
        status = _read(f"/proc/{pid}/status", 8192)
    except OSError as exc:
        if _gone(exc):
            return None
        ctx = None
    else:
        ctx = _ctx_switches(status)
    try:
        io = _read(f"/proc/{pid}/io")
    except OSError as exc:
        if _gone(exc):
            return None
        read_bytes = write_bytes = None
    else:
        read_bytes, write_bytes = _io_bytes(io)
    try:
        if FD_COUNT_FROM_STAT:
            fds: int | None = os.stat(f"/proc/{pid}/fd").st_size
        else:
            fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError as exc:
        if _gone(exc):
            return None
        fds = None
    if fds is None and read_bytes is None and ctx is None:
        return _NO_EXTRAS
    return Extras(fds, read_bytes, write_bytes, ctx)


def _field(text: bytes, key: bytes) -> int | None:
    at = text.find(key)
    if at < 0:
        return None
    at += len(key)
    end = text.find(b"\n", at)
    return int(text[at : end if end >= 0 else len(text)])


def _ctx_switches(status: bytes) -> int | None:
    # The leading newline keeps "voluntary" from matching inside "nonvoluntary".
    voluntary = _field(status, b"\nvoluntary_ctxt_switches:")
    involuntary = _field(status, b"\nnonvoluntary_ctxt_switches:")
    if voluntary is None or involuntary is None:
        return None
    return voluntary + involuntary


def _io_bytes(io: bytes) -> tuple[int | None, int | None]:
    return _field(io, b"\nread_bytes:"), _field(io, b"\nwrite_bytes:")
