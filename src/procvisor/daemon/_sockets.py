"""The listening sockets of ``[sockets.NAME]``: bound by the daemon, shared by its services.

The daemon binds each socket once and keeps it for as long as the config names it, so every
instance of a service accepts on the same socket (``instances = 4`` behind one port), and
connections made while an instance restarts wait in the kernel's backlog instead of being
refused. Instances get the sockets as fds 3, 4, ... (see ``Instance``), as under systemd's
socket activation.

On reload, new sockets are bound before any service changes, so a socket that cannot be bound
refuses the whole reload; a socket whose address changed is bound anew beside the old one,
which is closed once the services that held it were restarted. A new backlog or file mode
applies to the socket in place.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
from collections.abc import Mapping
from pathlib import Path

from procvisor.daemon.config import Endpoint, SocketSection

__all__ = ["Listeners", "SocketError"]


class SocketError(Exception):
    """A socket could not be bound: ``name`` is its ``[sockets.NAME]``, ``reason`` says why
    (with its address, and what to do)."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"sockets.{name}: {reason}")
        self.name = name
        self.reason = reason


class _Listener:
    __slots__ = ("section", "sock", "unix_ino")

    def __init__(self, section: SocketSection, sock: socket.socket, unix_ino: int | None) -> None:
        self.section = section
        self.sock = sock
        self.unix_ino = unix_ino  # the socket file we made, unlinked only if still ours

    def close(self) -> None:
        address = self.section.address
        if isinstance(address, Path) and self.unix_ino is not None:
            with contextlib.suppress(OSError):
                if os.lstat(address).st_ino == self.unix_ino:
                    os.unlink(address)
        self.sock.close()


def _bind(name: str, section: SocketSection) -> _Listener:
    address = section.address
    try:
        if isinstance(address, Endpoint):
            family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
            sock = socket.create_server(
                (address.host, address.port), family=family, backlog=section.backlog
            )
            return _Listener(section, sock, None)
        _remove_stale(address)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(os.fspath(address))
            os.chmod(address, section.mode)
            sock.listen(section.backlog)
            ino = os.lstat(address).st_ino
        except BaseException:
            sock.close()
            raise
        return _Listener(section, sock, ino)
    except OSError as exc:
        # create_server's errors carry a long strerror of their own: say it the usual way.
        why = os.strerror(exc.errno) if exc.errno else str(exc)
        if exc.errno == errno.EEXIST and exc.strerror:
            why = exc.strerror
        hint = {
            errno.EADDRINUSE: "; another process listens there (ss -ltnp shows which)",
            errno.EACCES: "; ports below 1024 need root",
            errno.EADDRNOTAVAIL: "; no interface of this machine has that address",
        }.get(exc.errno or 0, "")
        raise SocketError(name, f"cannot listen on {address}: {why}{hint}") from None


def _remove_stale(path: Path) -> None:
    """Remove a socket file nobody listens on (a killed daemon's); refuse anything else."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(errno.EEXIST, "it exists and is not a socket; remove it or choose another")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(os.fspath(path))
        except ConnectionRefusedError:
            os.unlink(path)
            return
    raise OSError(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE))


class Listeners:
    """The daemon's listening sockets by name; :attr:`fds` maps each name to its fd."""

    def __init__(self) -> None:
        self._open: dict[str, _Listener] = {}
        self._retired: list[_Listener] = []
        self.fds: dict[str, int] = {}

    def apply(self, sections: Mapping[str, SocketSection]) -> None:
        """Bind new and moved sockets, adjust the others; all or nothing.

        Sockets that are gone or were replaced stay open until :meth:`retire`, once the
        services holding them have been restarted.

        Raises:
            SocketError: a socket could not be bound; nothing changed.
        """
        bound: dict[str, _Listener] = {}
        try:
            for name, section in sections.items():
                old = self._open.get(name)
                if old is None or old.section.address != section.address:
                    try:
                        bound[name] = _bind(name, section)
                    except SocketError as exc:
                        if old is None:
                            raise
                        raise SocketError(
                            name,
                            f"{exc.reason}; the services that use it still hold "
                            f"{old.section.address}: stop them and reload, or restart the "
                            "daemon",
                        ) from None
        except SocketError:
            for listener in bound.values():
                listener.close()
            raise
        for name, section in sections.items():
            old = self._open.get(name)
            if name in bound:
                if old is not None:
                    self._retired.append(old)
                self._open[name] = bound[name]
            elif old is not None and old.section != section:
                old.sock.listen(section.backlog)
                if isinstance(section.address, Path):
                    with contextlib.suppress(OSError):
                        os.chmod(section.address, section.mode)
                old.section = section
        for name in [n for n in self._open if n not in sections]:
            self._retired.append(self._open.pop(name))
        self.fds.clear()
        self.fds.update((name, listener.sock.fileno()) for name, listener in self._open.items())

    def retire(self) -> None:
        """Close the sockets :meth:`apply` replaced or dropped."""
        while self._retired:
            self._retired.pop().close()

    def describe(self) -> dict[str, str]:
        """Each socket's address, by name."""
        return {name: str(listener.section.address) for name, listener in self._open.items()}

    def close(self) -> None:
        """Close every socket (and remove the Unix socket files this daemon made)."""
        self.retire()
        for listener in self._open.values():
            listener.close()
        self._open.clear()
        self.fds.clear()
