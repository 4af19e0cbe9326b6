"""The ``sd_notify`` protocol for services: readiness, status text and watchdog pings.

A service with ``notify = true`` gets ``$NOTIFY_SOCKET``, as under systemd's ``Type=notify``,
and sends datagrams of ``KEY=VALUE`` lines to it: ``READY=1`` once it serves, ``STATUS=...``,
``WATCHDOG=1`` pings, ``EXTEND_TIMEOUT_USEC=...`` while it starts. Programs written for
systemd (``sd_notify(3)``, ``systemd-notify``, Python's ``sdnotify``) work unchanged.

One socket serves every instance of the daemon. It is in the abstract namespace
(``@procvisor-notify-...``), so a service that runs as another user can reach it without a
file it may write, and no path length limit applies. A message counts only for the instance
it comes from, told by the sender's pid, which the kernel attaches (``SO_PASSCRED``; a
process cannot forge another's): the instance's main process, or any live process of its
process group. Anything else is dropped.

A program can speak before its spawn has returned to the daemon, so before it is known as an
instance: the last messages from unknown senders are kept for a moment, and those sent by
the new process or its group since its spawn began are handed over when it is watched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import struct
import time
from collections import deque
from collections.abc import Callable

__all__ = ["NotifyHub", "parse_notify"]

log = logging.getLogger("procvisor.supervisor")

_CREDS = struct.Struct("3i")  # struct ucred: pid, uid, gid
_MAX_MESSAGE = 4096
_UNPLACED = 64  # messages of unknown senders kept, for an instance not watched yet

Handler = Callable[[dict[str, str]], None]


def parse_notify(data: bytes) -> dict[str, str]:
    """The ``KEY=VALUE`` lines of one message (a line without ``=`` is ignored, as systemd
    does; a later key wins)."""
    fields: dict[str, str] = {}
    for line in data.decode("utf-8", "replace").split("\n"):
        key, sep, value = line.partition("=")
        if sep and key:
            fields[key] = value
    return fields


class NotifyHub:
    """The daemon's notify socket, and which instance each process group's messages go to."""

    def __init__(self) -> None:
        self._sock: socket.socket | None = None
        self._address = ""
        self._handlers: dict[int, Handler] = {}  # by the instance's pid (its group's id)
        # (received, sender pid, its group id or None, fields) of senders not placed yet
        self._unplaced: deque[tuple[float, int, int | None, dict[str, str]]] = deque(
            maxlen=_UNPLACED
        )

    @property
    def address(self) -> str:
        """``$NOTIFY_SOCKET`` for a service: the socket is made on first use (in the loop)."""
        if self._sock is None:
            sock = socket.socket(
                socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
            )
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
                name = f"procvisor-notify-{os.getpid()}-{secrets.token_hex(6)}"
                sock.bind(f"\0{name}")
                asyncio.get_running_loop().add_reader(sock.fileno(), self._read)
            except BaseException:
                sock.close()
                raise
            self._sock, self._address = sock, f"@{name}"
        return self._address

    def watch(self, pid: int, handler: Handler, *, since: float) -> None:
        """Send the messages of process group ``pid`` (an instance's) to ``handler``, with
        those it sent from ``since`` (``time.monotonic()`` when its spawn began) until now."""
        self._handlers[pid] = handler
        early = [m for m in self._unplaced if m[0] >= since and pid in (m[1], m[2])]
        for message in early:
            self._unplaced.remove(message)
            handler(message[3])

    def unwatch(self, pid: int) -> None:
        self._handlers.pop(pid, None)

    def _read(self) -> None:
        sock = self._sock
        assert sock is not None
        for _ in range(64):  # a bounded batch per wake-up: a flood cannot starve the loop
            try:
                data, ancdata, _flags, _addr = sock.recvmsg(
                    _MAX_MESSAGE, socket.CMSG_SPACE(_CREDS.size)
                )
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("notify socket: %s", exc)
                return
            pid = None
            for level, kind, payload in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = _CREDS.unpack(payload[: _CREDS.size])[0]
            if pid is None:
                continue
            handler, pgid = self._handlers.get(pid), None
            if handler is None:  # another process of an instance's group, or no instance's
                with contextlib.suppress(OSError):
                    pgid = os.getpgid(pid)
                handler = self._handlers.get(pgid or -1)
            if handler is None:
                log.debug("notify message from pid %s, which is no instance's (yet)", pid)
                self._unplaced.append((time.monotonic(), pid, pgid, parse_notify(data)))
                continue
            handler(parse_notify(data))

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                asyncio.get_running_loop().remove_reader(sock.fileno())
            sock.close()
