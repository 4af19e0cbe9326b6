"""The two ways an :class:`~procvisor.process._exec.Execution` is driven.

* :func:`drive_sync` blocks in ``poll(2)``. Ctrl-C starts the stop sequence; a second Ctrl-C
  kills the group at once; either way the original ``KeyboardInterrupt`` is re-raised only
  after the group is gone.
* :class:`AsyncDriver` registers the fds with the running asyncio loop and a timer for the
  next deadline. It needs no task of its own: its :attr:`~AsyncDriver.done` future is set
  from loop callbacks. :func:`wait_async` awaits it; cancellation starts the stop sequence, a
  second cancellation kills the group, and the ``CancelledError`` propagates once the group
  is gone.
"""

from __future__ import annotations

import asyncio
import math
import select
import time
from collections.abc import Iterator

from procvisor.process._exec import Execution
from procvisor.process._hub import get_hub


def _watch(ex: Execution) -> select.poll:
    """A poll object watching every fd ``ex`` has open now."""
    poller = select.poll()
    for fd in ex.read_fds():
        poller.register(fd, select.POLLIN)
    if ex.stdin_fd is not None:
        poller.register(ex.stdin_fd, select.POLLOUT)
    return poller


def drive_steps(ex: Execution) -> Iterator[None]:
    """Drive ``ex`` in this thread, yielding after each round of events until it is done."""
    poller = _watch(ex)
    interrupt: KeyboardInterrupt | None = None
    while True:
        try:
            wake = ex.tick(time.monotonic())
            if ex.done:
                break
            timeout = None
            if wake is not None:
                timeout = max(0, math.ceil((wake - time.monotonic()) * 1000))
            for fd, _ in poller.poll(timeout):
                # The fds only go away here, reported by the handler that closed them.
                if ex.on_writable(fd) if fd == ex.stdin_fd else ex.on_readable(fd):
                    poller.unregister(fd)
            yield
        except KeyboardInterrupt as exc:
            # It may have landed between an fd's close and its unregister: watch afresh.
            poller = _watch(ex)
            if interrupt is None:
                interrupt = exc
                ex.begin_stop("interrupted")
            else:
                ex.kill()
    if interrupt is not None:
        raise interrupt


def drive_sync(ex: Execution) -> None:
    """Run ``ex`` to completion in this thread."""
    try:
        for _ in drive_steps(ex):
            pass
    finally:
        if not ex.done:
            # A Ctrl-C landed before drive_steps could take charge of it: kill the group
            # and collect it, then let the KeyboardInterrupt go on.
            ex.kill()
            for _ in drive_steps(ex):
                pass


class AsyncDriver:
    """Drives ``ex`` from the running loop's callbacks; :attr:`done` completes with it."""

    __slots__ = ("_fds", "_hub", "_loop", "_timer", "_timer_at", "done", "ex")

    def __init__(self, ex: Execution) -> None:
        self.ex = ex
        self._loop = asyncio.get_running_loop()
        self._hub = hub = get_hub()
        self.done: asyncio.Future[None] = self._loop.create_future()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        # Every fd ex has open; each goes away as ex releases it (just before closing it).
        self._fds = set(ex.read_fds())
        for fd in self._fds:
            hub.register(fd, False, self._on_read)
        if ex.stdin_fd is not None:
            self._fds.add(ex.stdin_fd)
            hub.register(ex.stdin_fd, True, self._on_write)
        ex.release = self._forget
        self.step()

    def _on_read(self, fd: int) -> None:
        if self.ex.on_readable(fd):
            self._forget(fd)
        self.step()

    def _on_write(self, fd: int) -> None:
        if self.ex.on_writable(fd):
            self._forget(fd)
        self.step()

    def _forget(self, fd: int) -> None:
        """Stop watching ``fd``: before ex closes it, or when ex says it is done with it."""
        if fd in self._fds:
            self._fds.discard(fd)
            self._hub.unregister(fd)

    def step(self) -> None:
        """Advance the execution and re-arm the timer (called after every event)."""
        if self.done.done():
            return
        ex = self.ex
        try:
            wake = ex.tick(time.monotonic())
        except Exception as exc:
            # Never leave a group running because bookkeeping failed: kill it, report it.
            ex.kill()
            self._set_done(exc)
            return
        if ex.done:
            self._set_done(None)
        elif wake != self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = wake
            self._timer = None
            if wake is not None:
                delay = max(0.0, wake - time.monotonic())
                self._timer = self._loop.call_later(delay, self._on_timer)

    def renew(self) -> None:
        """A fresh :attr:`done` if a cancellation cancelled it. The execution cannot have
        finished since: :meth:`step` does nothing while :attr:`done` is done."""
        if self.done.cancelled():
            self.done = self._loop.create_future()

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self.step()

    def _set_done(self, exc: BaseException | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for fd in self._fds:
            self._hub.unregister(fd)
        self._fds.clear()
        self.ex.release = None  # no cycle left to keep the driver, its hub and epoll alive
        if not self.done.done():
            if exc is None:
                self.done.set_result(None)
            else:
                self.done.set_exception(exc)


async def wait_async(
    driver: AsyncDriver, *, stop_reason: str = "cancelled", shared: bool = False
) -> None:
    """Await ``driver.done``; if cancelled, stop the group first, then re-raise.

    ``shared``: other tasks may await ``driver.done`` too (a Process's ``wait()``), so it is
    shielded, and cancelling one of them leaves it to the others. Otherwise it is awaited
    bare (a shield costs a future and a callback per run, 1-3 % of an ``arun``), and the
    cancellation, which cancels it, is followed by a fresh one.
    """
    try:
        await (asyncio.shield(driver.done) if shared else driver.done)
    except asyncio.CancelledError:
        driver.renew()
        driver.ex.begin_stop(stop_reason)
        driver.step()
        while not driver.done.done():
            try:
                await asyncio.shield(driver.done)
            except asyncio.CancelledError:
                driver.ex.kill()
                driver.step()
        raise


async def stop_async(driver: AsyncDriver, grace: float | None, sig: int | None) -> None:
    """The stop sequence for a running group (a Process's), awaited to its end."""
    driver.ex.begin_stop("stopped", grace=grace, sig=sig)
    driver.step()
    await wait_async(driver, shared=True)
