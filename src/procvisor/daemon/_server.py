"""Serve the API on the daemon's Unix socket, and optionally on TCP, inside its event loop.

uvicorn runs in the caller's loop, one ``uvicorn.Server`` per listening socket, on sockets
made here, so that:

- the socket file is 0600 from before it accepts anything (it is bound under a temporary
  name, chmod-ed, then renamed into place; no process-wide umask change);
- a stale socket left by a dead daemon is replaced, while a live daemon's is refused;
- a socket file deleted (or replaced) under the running daemon is bound again by
  :meth:`ApiServer.check`, while connections made before keep being served;
- uvicorn never touches signal handlers (the daemon handles SIGTERM/SIGINT/SIGHUP) nor the
  logging configuration (its loggers propagate to the daemon's).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import stat
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import uvicorn
from starlette.types import ASGIApp

from procvisor.daemon._files import SOCKET_NAME

__all__ = ["SOCKET_NAME", "ApiServer"]


_BACKLOG = 128
_log = logging.getLogger("procvisor.daemon.api")


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signals alone and says when it listens."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # uvicorn >= 0.29 swaps SIGINT/SIGTERM handlers here; the daemon owns them.
        yield

    def install_signal_handlers(self) -> None:
        # The same hook in uvicorn < 0.29.
        return

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.listening.set()

    # uvicorn's main loop wakes every 100 ms to look at should_exit (10 wakeups a second
    # with nothing to do, the largest part of an idle daemon's CPU): wait for it instead.
    @property
    def should_exit(self) -> bool:
        return self._should_exit

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        self._should_exit = value
        if value:
            self._exit_event().set()

    def _exit_event(self) -> asyncio.Event:
        if not hasattr(self, "_exit"):
            self._exit = asyncio.Event()
        return self._exit

    async def main_loop(self) -> None:
        await self.on_tick(0)  # the default headers, once (no Date header to refresh)
        if not self.should_exit:
            await self._exit_event().wait()


@dataclass(eq=False)
class _Listener:
    """One uvicorn server on one socket, run by one task."""

    server: _Server
    task: asyncio.Task[None]
    name: str
    retired: bool = field(default=False)

    def stop_accepting(self) -> None:
        """Stop listening; connections already made are served to their end."""
        self.retired = True
        self.server.should_exit = True

    def drop_connections(self) -> None:
        """Close every connection, ending long responses such as ``logs --follow``."""
        self.server.force_exit = True
        for connection in list(self.server.server_state.connections):
            transport = getattr(connection, "transport", None)
            if transport is not None:
                transport.close()


class ApiServer:
    """The API on a Unix socket (always) and on TCP (when ``http`` is given).

    Args:
        socket_path: the socket file; its directory must exist (the daemon makes it 0700).
        app: the ASGI app served on the socket (``create_app(control)``).
        http: ``(host, port)`` to listen on as well; port 0 picks a free port (see
            :attr:`http_address`).
        http_app: the app served on TCP; required with ``http``, and it should require a
            token (``create_app(control, token=...)``).
        grace: seconds :meth:`close` lets requests in progress finish before it closes
            their connections.

    Use ``await start()`` … ``await close()``, or ``async with``. Call :meth:`check` every
    few seconds (or run :meth:`watch_socket` as a task) to bring back a deleted socket.
    """

    def __init__(
        self,
        socket_path: str | os.PathLike[str],
        app: ASGIApp,
        *,
        http: tuple[str, int] | None = None,
        http_app: ASGIApp | None = None,
        grace: float = 2.0,
    ) -> None:
        if http is not None and http_app is None:
            raise ValueError("http_app is required with http (the TCP app needs the token)")
        self._path = Path(socket_path).absolute()
        self._app = app
        self._http = http
        self._http_app = http_app
        self._grace = grace
        self._listeners: list[_Listener] = []
        self._unix: _Listener | None = None
        self._unix_id: tuple[int, int] | None = None
        self._http_address: tuple[str, int] | None = None
        self._state = "new"
        self._closing: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        tcp = f" http={self._http_address[0]}:{self._http_address[1]}" if self._http_address else ""
        return f"<ApiServer {self._state} socket={str(self._path)!r}{tcp}>"

    @property
    def socket_path(self) -> Path:
        """The Unix socket's path."""
        return self._path

    @property
    def http_address(self) -> tuple[str, int] | None:
        """The bound TCP ``(host, port)`` once started (the real port if 0 was asked)."""
        return self._http_address

    async def start(self) -> None:
        """Listen; returns once both listeners accept connections.

        Raises:
            OSError: another daemon answers on the socket (``EADDRINUSE``), the path is
                something other than a socket, the TCP address is taken, ...
            RuntimeError: called twice.
        """
        if self._state != "new":
            raise RuntimeError(f"ApiServer.start() called when {self._state}")
        self._state = "starting"
        try:
            _refuse_live_socket(self._path)
            unix_sock, self._unix_id = _bind_unix(self._path)
            self._unix = await self._serve(self._app, unix_sock, "unix")
            if self._http is not None:
                assert self._http_app is not None
                tcp_sock = await _bind_tcp(*self._http)
                host, port = tcp_sock.getsockname()[:2]
                await self._serve(self._http_app, tcp_sock, f"tcp {host}:{port}")
                self._http_address = (host, port)
        except BaseException:
            await self._shutdown()
            raise
        self._state = "serving"

    async def check(self) -> bool:
        """Bind the socket again if its file was deleted or replaced; True if it was.

        A deleted directory is created again (mode 0700). A file put there by someone else
        that is a live socket (another daemon answering on it) is left alone and logged, as
        is a failure to bind (the next check tries again). Connections made on the old
        socket are still served.
        """
        if self._state != "serving":
            return False
        try:
            st = os.lstat(self._path)
        except FileNotFoundError:
            pass
        else:
            if (st.st_dev, st.st_ino) == self._unix_id:
                return False
            if stat.S_ISSOCK(st.st_mode) and _answers(self._path):
                _log.warning("%s is now another process's socket; leaving it alone", self._path)
                return False
        _log.warning("control socket %s was removed or replaced; binding it again", self._path)
        try:
            self._path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            unix_sock, unix_id = _bind_unix(self._path)
        except OSError as exc:
            _log.warning("cannot bind %s again (will retry): %s", self._path, exc)
            return False
        listener = await self._serve(self._app, unix_sock, "unix")
        if self._unix is not None:
            self._unix.stop_accepting()
        self._unix, self._unix_id = listener, unix_id
        self._listeners = [
            item for item in self._listeners if not (item.retired and item.task.done())
        ]
        return True

    async def watch_socket(self, interval: float = 2.0) -> None:
        """Call :meth:`check` every ``interval`` seconds, until cancelled or closed."""
        while self._state in {"new", "starting", "serving"}:
            await asyncio.sleep(interval)
            await self.check()

    async def close(self) -> None:
        """Stop listening, give requests in progress ``grace`` seconds, then close them.

        The socket file is removed if it is still ours. Safe to call more than once, also
        while a close is under way: every call returns once that one shutdown is over (and
        a cancelled caller does not cut it short).
        """
        if self._closing is None:
            if self._state == "closed":
                return
            self._closing = asyncio.ensure_future(self._shutdown())
        await asyncio.shield(self._closing)

    async def __aenter__(self) -> ApiServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _serve(self, app: ASGIApp, sock: socket.socket, name: str) -> _Listener:
        """Run a uvicorn server on ``sock`` (which it then owns) until it listens."""
        config = uvicorn.Config(
            app,
            log_config=None,  # the daemon configures logging, not uvicorn
            log_level="warning",
            access_log=False,
            lifespan="off",
            http="h11",
            ws="none",
            proxy_headers=False,
            server_header=False,
            date_header=False,
        )
        server = _Server(config)
        task = asyncio.create_task(server.serve(sockets=[sock]), name=f"procvisor-api-{name}")
        listener = _Listener(server, task, name)
        self._listeners.append(listener)
        listening = asyncio.create_task(server.listening.wait())
        try:
            await asyncio.wait({task, listening}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            listening.cancel()
        if not server.listening.is_set():
            sock.close()
            task.result()  # raises what went wrong
            raise RuntimeError(f"the API server on {name} ended before it listened")
        return listener

    async def _shutdown(self) -> None:
        self._state = "closing"
        try:
            for listener in self._listeners:
                listener.stop_accepting()
            tasks = {listener.task for listener in self._listeners}
            if tasks:
                _, pending = await asyncio.wait(tasks, timeout=self._grace)
                if pending:
                    for listener in self._listeners:
                        listener.drop_connections()
                    _, pending = await asyncio.wait(pending, timeout=self._grace)
                for task in pending:
                    task.cancel()
                if pending:
                    await asyncio.wait(pending)
                for listener in self._listeners:
                    if listener.task.cancelled():
                        _log.warning("API listener %s did not stop; cancelled", listener.name)
                    elif (error := listener.task.exception()) is not None:
                        _log.error("API listener %s failed", listener.name, exc_info=error)
        finally:
            # A connection accepted as its server stopped (or whose task was cancelled) may
            # still be open: close it now, rather than leave its transport to the collector.
            for listener in self._listeners:
                listener.drop_connections()
            self._listeners.clear()
            self._unix = None
            self._remove_socket_file()
            self._state = "closed"

    def _remove_socket_file(self) -> None:
        if self._unix_id is None:
            return
        try:
            st = os.lstat(self._path)
            if (st.st_dev, st.st_ino) == self._unix_id:
                self._path.unlink()
        except FileNotFoundError:
            pass
        self._unix_id = None


def _answers(path: Path) -> bool:
    """True if something accepts connections on the Unix socket ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(os.fspath(path))
        except (ConnectionRefusedError, FileNotFoundError):
            return False
        except TimeoutError:
            return True  # a full backlog: someone is there
    return True


def _refuse_live_socket(path: Path) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise OSError(
            errno.EEXIST, f"{path} exists and is not a socket; move it away, then start again"
        )
    if _answers(path):
        raise OSError(
            errno.EADDRINUSE,
            f"another procvisor daemon is listening on {path}; stop it with 'procvisor down' "
            "or give this one another state directory",
        )


def _bind_unix(path: Path) -> tuple[socket.socket, tuple[int, int]]:
    """A listening socket at ``path``, mode 0600, replacing whatever file was there.

    Returns the socket and the ``(st_dev, st_ino)`` of its file, to recognize it later.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(os.fspath(tmp))
        # The temporary name is 0600 before it listens and before it is reachable at
        # ``path``; the rename then swaps it in atomically, over a stale socket if any.
        os.chmod(tmp, 0o600)
        st = os.stat(tmp)
        sock.listen(_BACKLOG)
        os.replace(tmp, path)
    except BaseException:
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    return sock, (st.st_dev, st.st_ino)


async def _bind_tcp(host: str, port: int) -> socket.socket:
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(_BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock
