"""Per-instance log files, rotated by size: a tail reader and a follower.

A log is ``path`` plus up to ``backups`` rotated files ``path.1`` (newest) to ``path.N``
(oldest); read in the order ``path.N ... path.1, path`` they are one stream of bytes. They are
written by :class:`procvisor.process.RotatingLog`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncGenerator
from pathlib import Path

from procvisor.process import backup_path

__all__ = ["Position", "follow", "position", "read_tail"]

Position = tuple[int, int, int]
"""Where a reader stands in a log file: the file's device, inode, and an offset in it."""


def position(path: str | os.PathLike[str]) -> Position | None:
    """The current end of the file at ``path`` (None if there is none yet): read the history
    up to it (``read_tail(until=)``) and follow from it (``follow(start=)``), and not a byte
    written in between is lost or repeated."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino, st.st_size)


_READ_FLAGS = os.O_RDONLY | os.O_CLOEXEC
_BLOCK = 64 * 1024
# follow() looks this far down path.1, path.2, ... for the file it was reading.
_MAX_BACKUP_SCAN = 1000


def read_tail(
    path: str | os.PathLike[str],
    lines: int,
    *,
    backups: int = 5,
    until: Position | None = None,
) -> bytes:
    """The last ``lines`` lines of a log, across ``path.{backups}`` ... ``path.1``, ``path``.

    A final line without a newline counts as a line. Missing files read as empty. Reads only
    as much as it needs, from the end. A rotation while it reads is harmless: files are opened
    newest first and a file seen twice (under its old and new name) is read once. With
    ``until``, files rotated in after that position's file hold only later data: skipped.

    Raises:
        ValueError: ``lines`` is negative.
    """
    if lines < 0:
        raise ValueError(f"lines must not be negative, not {lines}")
    if lines == 0:
        return b""
    base = Path(path)
    blocks: list[bytes] = []  # newest first
    newlines = 0
    seen: set[tuple[int, int]] = set()
    before_mark = until is not None  # still looking at files newer than the marked one
    for n in range(backups + 1):
        if newlines > lines:
            break
        try:
            fd = os.open(backup_path(base, n), _READ_FLAGS)
        except FileNotFoundError:
            continue
        try:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            stop = st.st_size
            if until is not None and before_mark:
                if (st.st_dev, st.st_ino) != until[:2]:
                    continue  # written after the reader's position
                before_mark = False
                stop = min(stop, until[2])  # nothing written after the reader's position
            while stop > 0 and newlines <= lines:
                start = max(0, stop - _BLOCK)
                block = os.pread(fd, stop - start, start)
                if len(block) < stop - start:  # truncated while we read: keep what is whole
                    break
                blocks.append(block)
                newlines += block.count(b"\n")
                stop = start
        finally:
            os.close(fd)
    data = b"".join(reversed(blocks))
    cut = len(data) - 1 if data.endswith(b"\n") else len(data)
    for _ in range(lines):
        cut = data.rfind(b"\n", 0, cut)
        if cut < 0:
            return data
    return data[cut + 1 :]


def _open_for_reading(path: Path) -> int | None:
    try:
        return os.open(path, _READ_FLAGS)
    except FileNotFoundError:
        return None


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino)


def _successor(path: Path, current: tuple[int, int]) -> int | None:
    """Open the file written after ``current`` once ``path`` is no longer ``current``.

    Rotation renames ``path.k`` → ``path.{k+1}`` from the oldest down, so the file rotated in
    after ours sits one number below it. Returns None when it does not exist yet (``path`` is
    being recreated); then the caller polls again.
    """
    for _ in range(3):  # a rotation may move the files while we look: look again
        found = None
        for n in range(1, _MAX_BACKUP_SCAN + 1):
            identity = _identity(backup_path(path, n))
            if identity is None:
                break
            if identity == current:
                found = n
                break
        if found is None:
            # Deleted, or rotated out of the backups: go on with the current file, from its start.
            return _open_for_reading(path)
        fd = _open_for_reading(backup_path(path, found - 1))
        # Ours is renamed before the one after it, so if ours has not moved, what we opened
        # is the file written after it.
        if fd is None or _identity(backup_path(path, found)) == current:
            return fd
        os.close(fd)
    return None


async def follow(
    path: str | os.PathLike[str],
    *,
    poll: float = 0.1,
    from_end: bool = True,
    start: Position | None = None,
) -> AsyncGenerator[bytes, None]:
    """Yield data as it is appended to ``path``, forever (the caller cancels or closes).

    Follows rotation like ``tail -F``: when ``path`` is replaced, it reads the rest of the
    file it had, then every file rotated after it in order (from ``path.k`` down to ``path``),
    so no byte is lost or repeated as long as it is not more than ``backups`` rotations behind.
    A file truncated in place (``backups=0``) is read again from its start; what was written
    between the last poll and the truncation is lost. Chunks are not cut at newlines.

    Args:
        poll: seconds to sleep when there is nothing new.
        from_end: skip what the file holds now (if it exists yet) and yield only new data.
        start: begin at this :func:`position` instead, if the file there is still that one.

    Use ``contextlib.aclosing`` (or cancel the consuming task) so the file is closed.

    Raises:
        ValueError: ``poll`` is not positive (on the first iteration).
    """
    if poll <= 0:
        raise ValueError(f"poll must be positive, not {poll}")
    base = Path(path)
    fd = _open_for_reading(base)
    pending: int | None = None
    try:
        if fd is not None and start is not None:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) == start[:2]:
                os.lseek(fd, start[2], os.SEEK_SET)
            # else: rotated since the position was taken; read the new file from its start
        elif fd is not None and from_end:
            os.lseek(fd, 0, os.SEEK_END)
        while fd is None:
            await asyncio.sleep(poll)
            fd = _open_for_reading(base)
        while True:
            while chunk := os.read(fd, _BLOCK):
                yield chunk
            st = os.fstat(fd)
            current = (st.st_dev, st.st_ino)
            if _identity(base) == current:
                if st.st_size < os.lseek(fd, 0, os.SEEK_CUR):
                    os.lseek(fd, 0, os.SEEK_SET)  # truncated in place
                    continue
                await asyncio.sleep(poll)
                continue
            pending = _successor(base, current)
            if pending is None:
                await asyncio.sleep(poll)
                continue
            # Ours was renamed before we looked, so every write to it is done: drain it.
            while chunk := os.read(fd, _BLOCK):
                yield chunk
            os.close(fd)
            fd, pending = pending, None
    finally:
        for leftover in (fd, pending):
            if leftover is not None:
                os.close(leftover)
