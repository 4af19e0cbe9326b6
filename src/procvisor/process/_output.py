"""Where a child's output goes: a bounded tail buffer, or lines handed to a reader.

Neither grows without bound: :class:`TailBuffer` keeps the last ``limit`` bytes and says so
when it dropped some; :class:`LineQueue` holds at most ``limit`` bytes of lines nobody has
read yet, dropping the oldest (and counting them) when the reader falls behind.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

MAX_LINE = 64 * 1024
"""A longer line is handed out in pieces of this size."""


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
