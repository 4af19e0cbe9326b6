"""A stream of job state changes for one reader: what :meth:`Scheduler.events` returns."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from types import TracebackType

from procvisor.jobs._model import JobEvent

__all__ = ["JobEvents"]


class JobEvents:
    """Every job state change from its creation on, in order, as an async iterator.

    Use it as ``async with scheduler.events() as events: async for event in events: ...``.
    A reader that falls more than ``maxlen`` events behind loses the oldest: :attr:`dropped`
    counts them (the store has the full history of each job). Iteration ends when the stream
    is closed (by leaving the ``async with``, or when the scheduler closes).
    """

    def __init__(self, maxlen: int, on_close: Callable[[JobEvents], None]) -> None:
        self._buffer: deque[JobEvent] = deque()
        self._maxlen = maxlen
        self._on_close = on_close
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self.dropped = 0
        """Events lost because the reader fell behind."""

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"buffered={len(self._buffer)}"
        return f"<JobEvents {state} dropped={self.dropped}>"

    def _put(self, event: JobEvent) -> None:
        if self._closed:
            return
        if len(self._buffer) >= self._maxlen:
            self._buffer.popleft()
            self.dropped += 1
        self._buffer.append(event)
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def close(self) -> None:
        """Stop the stream; a waiting reader gets the buffered events, then the end."""
        if not self._closed:
            self._closed = True
            self._on_close(self)
            self._wake()

    async def __aenter__(self) -> JobEvents:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __aiter__(self) -> AsyncIterator[JobEvent]:
        return self

    async def __anext__(self) -> JobEvent:
        while not self._buffer:
            if self._closed:
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._buffer.popleft()
