"""One epoll per asyncio loop for every fd procvisor watches.

``loop.add_reader``/``remove_reader`` cost tens of microseconds of Python each, and every
process needs three (exit watch, stdout, stderr). The hub registers a single epoll fd with the
loop and (un)registers process fds on it directly, which is a C call. Each loop gets its own
hub; it is dropped (and its epoll fd closed) with the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import weakref
from collections.abc import Callable

_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub] = weakref.WeakKeyDictionary()


class Hub:
    """Dispatches readiness of registered fds to their callbacks, from the loop's thread."""

    __slots__ = ("__weakref__", "_callbacks", "_epoll")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._epoll = select.epoll()
        self._callbacks: dict[int, Callable[[int], None]] = {}
        loop.add_reader(self._epoll.fileno(), self._dispatch)

    def register(self, fd: int, writable: bool, callback: Callable[[int], None]) -> None:
        self._epoll.register(fd, select.EPOLLOUT if writable else select.EPOLLIN)
        self._callbacks[fd] = callback

    def unregister(self, fd: int) -> None:
        """Forget ``fd``; call it before closing ``fd`` (a closed fd cannot be removed)."""
        self._callbacks.pop(fd, None)
        with contextlib.suppress(OSError):
            self._epoll.unregister(fd)

    def _dispatch(self) -> None:
        for fd, _ in self._epoll.poll(0):
            callback = self._callbacks.get(fd)
            if callback is not None:
                callback(fd)


def get_hub() -> Hub:
    """The running loop's hub, created on first use."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = Hub(loop)
    return hub
