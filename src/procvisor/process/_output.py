"""Where a child's output goes: a bounded tail buffer, lines handed to a reader, or a file.

None grows without bound: :class:`TailBuffer` keeps the last ``limit`` bytes and says so
when it dropped some; :class:`LineQueue` holds at most ``limit`` bytes of lines nobody has
read yet, dropping the oldest (and counting them) when the reader falls behind;
:class:`RotatingLog` writes to a file rotated by size, keeping a number of rotated files;
:class:`Timestamped` puts the time each line was read before it, on its way to another sink.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

MAX_LINE = 64 * 1024
"""A longer line is handed out in pieces of this size."""

_WRITE_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC


class OutputSink(Protocol):
    """Where a child's raw output goes, chunk by chunk (``spawn(..., sinks=...)``).

    ``feed`` is called on the reading thread with each chunk as it is read; it must not block
    and must not raise. ``close`` is called once, at end of file.
    """

    def feed(self, data: bytes) -> None: ...
    def close(self) -> None: ...


class TailBuffer:
    """Keeps the last ``limit`` bytes written to it."""

    __slots__ = ("_chunks", "_size", "limit", "total")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.total = 0
        self._chunks: deque[bytes] = deque()
        self._size = 0

    def feed(self, data: bytes) -> None:
        self.total += len(data)
        self._chunks.append(data)
        self._size += len(data)
        while self._size > self.limit:
            excess = self._size - self.limit
            head = self._chunks[0]
            if len(head) <= excess:
                self._chunks.popleft()
                self._size -= len(head)
            else:
                self._chunks[0] = head[excess:]
                self._size -= excess

    def close(self) -> None:
        """Nothing to flush; present so any sink can be closed the same way."""

    @property
    def truncated(self) -> bool:
        return self.total > self._size

    def getvalue(self) -> bytes:
        if len(self._chunks) > 1:
            joined = b"".join(self._chunks)
            self._chunks = deque([joined])
        return self._chunks[0] if self._chunks else b""


@dataclass(frozen=True, slots=True)
class OutputLine:
    """One line of a child's output, without its line ending."""

    stream: str
    """``"stdout"`` or ``"stderr"``."""
    data: bytes

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", "replace")


class LineQueue:
    """Lines from one or more streams, waiting for a reader; bounded by bytes."""

    __slots__ = ("_lines", "_size", "dropped", "limit", "on_line", "open_streams")

    def __init__(self, limit: int, on_line: Callable[[], None]) -> None:
        self.limit = limit
        self.on_line = on_line
        self.dropped = 0
        self.open_streams = 0
        self._lines: deque[OutputLine] = deque()
        self._size = 0

    def sink(self, stream: str) -> LineSink:
        self.open_streams += 1
        return LineSink(self, stream)

    def put(self, line: OutputLine) -> None:
        self._lines.append(line)
        self._size += len(line.data)
        while self._size > self.limit and len(self._lines) > 1:
            old = self._lines.popleft()
            self._size -= len(old.data)
            self.dropped += len(old.data)
        self.on_line()

    def stream_closed(self) -> None:
        self.open_streams -= 1
        self.on_line()

    def get(self) -> OutputLine | None:
        if not self._lines:
            return None
        line = self._lines.popleft()
        self._size -= len(line.data)
        return line

    @property
    def finished(self) -> bool:
        return self.open_streams == 0 and not self._lines


class LineSink:
    """Splits one stream's bytes into lines for a :class:`LineQueue`."""

    __slots__ = ("_partial", "_queue", "stream")

    def __init__(self, queue: LineQueue, stream: str) -> None:
        self._queue = queue
        self.stream = stream
        self._partial = b""

    def feed(self, data: bytes) -> None:
        data = self._partial + data
        *lines, self._partial = data.split(b"\n")
        for line in lines:
            self._put(line)
        while len(self._partial) >= MAX_LINE:
            self._put(self._partial[:MAX_LINE])
            self._partial = self._partial[MAX_LINE:]

    def _put(self, line: bytes) -> None:
        if line.endswith(b"\r"):
            line = line[:-1]
        self._queue.put(OutputLine(self.stream, line))

    def close(self) -> None:
        if self._partial:
            self._put(self._partial)
            self._partial = b""
        self._queue.stream_closed()


def backup_path(path: Path, n: int) -> Path:
    """The ``n``-th rotated file of the log at ``path`` (``path.n``; ``path`` itself for 0)."""
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
        lazy: open (and create) the file at the first :meth:`feed`, not now: a child that
            writes nothing leaves no file, and a failed open is counted like a failed write.

    Raises:
        ValueError: ``max_size`` < 1 or ``backups`` < 0.
        OSError: the file cannot be opened (not with ``lazy``).
    """

    def __init__(
        self, path: str | os.PathLike[str], max_size: int, backups: int, *, lazy: bool = False
    ) -> None:
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
        if not lazy:
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
        return f"<{type(self).__name__} {str(self._path)!r} {state} errors={self.errors}>"

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
        while top < self._backups and os.path.lexists(backup_path(self._path, top)):
            top += 1
        for n in range(top, 0, -1):
            with contextlib.suppress(FileNotFoundError):  # path itself may have been deleted
                os.replace(backup_path(self._path, n - 1), backup_path(self._path, n))
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


def local_timestamp(now: float) -> str:
    """``now`` (Unix time) as ISO 8601 in local time, to the millisecond, with its offset."""
    return datetime.fromtimestamp(now).astimezone().isoformat(timespec="milliseconds")


class Timestamped:
    """An :class:`OutputSink` that starts every line with the time it was read, then passes
    the output on to ``sink``: ``2026-12-07T19:30:01.123+00:00 the line``.

    Lines read in one chunk share its time. A line split across chunks gets one stamp, at its
    start. Each chunk is rewritten with one ``bytes.replace``, so a flood costs a copy, not a
    Python loop per line.

    Args:
        sink: where the stamped output goes (a :class:`RotatingLog`, say).
        now: the clock, for tests; ``time.time`` by default.
    """

    __slots__ = ("_at_line_start", "_now", "sink")

    def __init__(self, sink: OutputSink, now: Callable[[], float] = time.time) -> None:
        self.sink = sink
        self._now = now
        self._at_line_start = True

    def feed(self, data: bytes) -> None:
        if not data:
            return
        stamp = local_timestamp(self._now()).encode() + b" "
        ends_line = data.endswith(b"\n")
        body = data[:-1] if ends_line else data
        out = body.replace(b"\n", b"\n" + stamp)
        if self._at_line_start:
            out = stamp + out
        self._at_line_start = ends_line
        self.sink.feed(out + b"\n" if ends_line else out)

    def close(self) -> None:
        self.sink.close()
