"""A job's output file: size-capped, the tail kept.

The job's stdout and stderr go, merged as a terminal would show them, to ``ID.log``; when a
chunk would take it past ``max_size`` it is renamed ``ID.log.1`` (replacing the one before)
and a new ``ID.log`` begins. So the last ``max_size`` to ``2 * max_size`` bytes are kept, in
two files read in the order ``ID.log.1``, ``ID.log``. The file is created at the first byte:
a job that prints nothing leaves no file.
"""

from __future__ import annotations

from pathlib import Path

from procvisor.process import RotatingLog, backup_path

__all__ = ["JobLog", "log_files"]


def log_files(path: Path) -> list[Path]:
    """The files of the log at ``path`` that exist, oldest first."""
    return [p for p in (backup_path(path, 1), path) if p.exists()]


class JobLog(RotatingLog):
    """A :class:`~procvisor.process.RotatingLog` with one rotated file, created at the first
    byte, that keeps only the tail of a chunk larger than ``max_size`` (rather than splitting
    it across files).

    Never raises from :meth:`feed`: a failed write (disk full) drops the chunk and is
    counted in :attr:`errors`, with the bytes lost in :attr:`dropped`.
    """

    def __init__(self, path: Path, max_size: int) -> None:
        super().__init__(path, max_size, backups=1, lazy=True)

    def feed(self, data: bytes) -> None:
        """Append ``data`` (its last ``max_size`` bytes), starting a new file first if it
        would not fit."""
        if len(data) > self._max_size:
            data = data[-self._max_size :]  # only its tail can be kept
        super().feed(data)
