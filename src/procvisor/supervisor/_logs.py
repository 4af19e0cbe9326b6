"""Per-instance log files, rotated by size: the writer, a tail reader and a follower.

A log is ``path`` plus up to ``backups`` rotated files ``path.1`` (newest) to ``path.N``
(oldest); read in the order ``path.N ... path.1, path`` they are one stream of bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
from collections.abc import AsyncGenerator
from pathlib import Path

__all__ = ["RotatingLog", "follow", "read_tail"]

_WRITE_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_CLOEXEC
_BLOCK = 64 * 1024
# follow() looks this far down path.1, path.2, ... for the file it was reading.
_MAX_BACKUP_SCAN = 1000


def _backup(path: Path, n: int) -> Path:
    return path if n == 0 else path.with_name(f"{path.name}.{n}")


class RotatingLog:
    """A sink for a child's output: :meth:`feed` appends to ``path``, rotating by size.

    When a chunk would take the file past ``max_size``, the file is rotated first
    (``path.{backups-1}`` → ``path.{backups}``, ..., ``path`` → ``path.1``; the oldest is
    dropped), or truncated in place when ``backups`` is 0. A chunk larger than ``max_size`` is
    split across files, so no file this class writes ever exceeds ``max_size``. A split cuts
    after the last newline within the ``max_size`` bytes if that newline lies in their second
    half, otherwise exactly at ``max_size``: lines stay whole unless they are longer than about
    half a file. A file already larger than ``max_size`` when opened is rotated before the
    first write.

    Writing never raises: a failed write, rotation or reopen (disk full, I/O error) drops the
    rest of the chunk and is counted in :attr:`errors` (the last one kept in
    :attr:`last_error`, the bytes lost in :attr:`dropped`); the next :meth:`feed` tries again.
    Nothing is buffered: each chunk goes straight to ``os.write``.

    Args:
        path: the log file; created with mode 0600 if missing. Its directory must exist.
        max_size: the largest a file may grow, in bytes (at least 1).
        backups: how many rotated files to keep (0: truncate in place).

    Raises:
        ValueError: ``max_size`` < 1 or ``backups`` < 0.
        OSError: the file cannot be opened.
    """

    def __init__(self, path: str | os.PathLike[str], max_size: int, backups: int) -> None:
        if max_size < 1:
            raise ValueError(f"max_size must be at least 1 byte, not {max_size}")
        if backups < 0:
            raise ValueError(f"backups must not be negative, not {backups}")
        self._path = Path(path)
        self._max_size = max_size
        self._backups = backups
        self._fd: int | None = None
        self._size = 0
        self._closed = False
        self.errors = 0
        """How many feeds lost data to an OS error."""
        self.dropped = 0
        """How many bytes were lost to those errors."""
        self.last_error: OSError | None = None
        """The most recent of those errors."""
        self._open()

    @property
    def path(self) -> Path:
        """The current log file (rotated files are ``path.1`` ... ``path.{backups}``)."""
        return self._path

    @property
    def size(self) -> int:
        """The size of the current file, in bytes."""
        return self._size

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"size={self._size}"
        return f"<RotatingLog {str(self._path)!r} {state} errors={self.errors}>"

    def _open(self) -> int:
        fd = os.open(self._path, _WRITE_FLAGS, 0o600)
        try:
            self._size = os.fstat(fd).st_size
        except OSError:
            os.close(fd)
            raise
        self._fd = fd
        return fd

    def _rotate(self, fd: int) -> int:
        if self._backups == 0:
            os.ftruncate(fd, 0)
            self._size = 0
            return fd
        # Shift only the files there are: up to the first gap, or over the oldest kept.
        top = 1
        while top < self._backups and os.path.lexists(_backup(self._path, top)):
            top += 1
        for n in range(top, 0, -1):
            with contextlib.suppress(FileNotFoundError):  # path itself may have been deleted
                os.replace(_backup(self._path, n - 1), _backup(self._path, n))
        # Never write into path.1 once it is renamed: drop the fd before opening the new file.
        self._fd = None
        os.close(fd)
        return self._open()

    def feed(self, data: bytes) -> None:
        """Append ``data``, rotating first if it would not fit. Never raises OSError.

        Raises:
            ValueError: the log is closed.
        """
        if self._closed:
            raise ValueError(f"feed() on closed log {self._path}")
        if not isinstance(data, bytes):
            data = bytes(data)
        view = memoryview(data)
        pos, end = 0, len(data)
        try:
            fd = self._open() if self._fd is None else self._fd
            while pos < end:
                room = self._max_size - self._size
                if end - pos > room and self._size > 0:
                    fd = self._rotate(fd)
                    # Only another writer racing us could leave the new file non-empty.
                    room = max(1, self._max_size - self._size)
                cut = min(end, pos + room)
                if cut < end:
                    newline = data.rfind(b"\n", pos, cut)
                    if newline >= pos + (cut - pos) // 2:
                        cut = newline + 1
                while pos < cut:
                    written = os.write(fd, view[pos:cut])
                    if written == 0:  # never for a regular file; do not spin on it
                        raise OSError(errno.EIO, "write() wrote nothing")
                    pos += written
                    self._size += written
        except OSError as exc:
            self.errors += 1
            self.dropped += end - pos
            self.last_error = exc

    def close(self) -> None:
        """Close the file (idempotent)."""
        self._closed = True
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def read_tail(path: str | os.PathLike[str], lines: int, *, backups: int = 5) -> bytes:
    """The last ``lines`` lines of a log, across ``path.{backups}`` ... ``path.1``, ``path``.

    A final line without a newline counts as a line. Missing files read as empty. Reads only
    as much as it needs, from the end. A rotation while it reads is harmless: files are opened
    newest first and a file seen twice (under its old and new name) is read once.

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
    for n in range(backups + 1):
        if newlines > lines:
            break
        try:
            fd = os.open(_backup(base, n), _READ_FLAGS)
        except FileNotFoundError:
            continue
        try:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            stop = st.st_size
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
            identity = _identity(_backup(path, n))
            if identity is None:
                break
            if identity == current:
                found = n
                break
        if found is None:
            # Deleted, or rotated out of the backups: go on with the current file, from its start.
            return _open_for_reading(path)
        fd = _open_for_reading(_backup(path, found - 1))
        # Ours is renamed before the one after it, so if ours has not moved, what we opened
        # is the file written after it.
        if fd is None or _identity(_backup(path, found)) == current:
            return fd
        os.close(fd)
    return None


async def follow(
    path: str | os.PathLike[str], *, poll: float = 0.1, from_end: bool = True
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
        if fd is not None and from_end:
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
