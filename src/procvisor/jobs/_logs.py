"""A job's output file: size-capped, the tail kept.

The job's stdout and stderr go, merged as a terminal would show them, to ``ID.log``; when a
chunk would take it past ``max_size`` it is renamed ``ID.log.1`` (replacing the one before)
and a new ``ID.log`` begins. So the last ``max_size`` to ``2 * max_size`` bytes are kept, in
two files read in the order ``ID.log.1``, ``ID.log``. The file is created at the first byte:
a job that prints nothing leaves no file.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["JobLog", "log_files"]

_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC


def log_files(path: Path) -> list[Path]:
    """The files of the log at ``path`` that exist, oldest first."""
    older = path.with_name(path.name + ".1")
    return [p for p in (older, path) if p.exists()]


class JobLog:
    """An :class:`~procvisor.process.OutputSink` writing to a size-capped file.

    Never raises from :meth:`feed`: a failed write (disk full) drops the chunk and is
    counted in :attr:`errors`, with the bytes lost in :attr:`dropped`.
    """

    __slots__ = ("_fd", "_max", "_path", "_size", "dropped", "errors")

    def __init__(self, path: Path, max_size: int) -> None:
        self._path = path
        self._max = max_size
        self._fd: int | None = None
        self._size = 0
        self.errors = 0
        self.dropped = 0

    def __repr__(self) -> str:
        return f"<JobLog {str(self._path)!r} size={self._size}>"

    def feed(self, data: bytes) -> None:
        """Append ``data``, starting a new file first if it would not fit."""
        if len(data) > self._max:
            data = data[-self._max :]  # only its tail can be kept
        try:
            if self._fd is None:
                self._fd = os.open(self._path, _FLAGS, 0o600)
                self._size = os.fstat(self._fd).st_size
            if self._size + len(data) > self._max and self._size > 0:
                os.close(self._fd)
                self._fd = None
                os.replace(self._path, self._path.with_name(self._path.name + ".1"))
                self._fd = os.open(self._path, _FLAGS, 0o600)
                self._size = 0
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                self._size += written
                view = view[written:]
        except OSError:
            self.errors += 1
            self.dropped += len(data)

    def close(self) -> None:
        """Close the file (idempotent)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
