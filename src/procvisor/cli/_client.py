"""The CLI's side of the daemon API: find the daemon, send requests, turn failures into lines.

The daemon is found as it finds itself: the config file (``-c FILE``, else
``$PROCVISOR_CONFIG``, else ``./procvisor.toml``), its state directory, and the socket
``procvisor.sock`` in it. Requests go over that Unix socket with httpx.

Every failure is a :class:`CliError`: one or more ``procvisor: ...`` lines on stderr and an
exit status, never a traceback::

    EXIT_FAILED     1    the daemon refused the request (unknown service, bad value), or
                         failed, or the connection broke
    EXIT_USAGE      2    bad usage, or a missing/invalid config file (also on reload)
    EXIT_NO_DAEMON  3    no daemon answers on the socket
    EXIT_TIMEOUT    124  ``down --timeout`` expired before the daemon was gone

httpx and the config models are imported when first needed, not when the CLI starts.
"""

from __future__ import annotations

import os
import shlex
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

import click

from procvisor.daemon._files import SOCKET_NAME, ConfigError, find_config, state_dir_of_file

if TYPE_CHECKING:
    import httpx

    from procvisor.daemon.config import Config

__all__ = [
    "EXIT_FAILED",
    "EXIT_NO_DAEMON",
    "EXIT_TIMEOUT",
    "EXIT_USAGE",
    "CliError",
    "ConnectionLost",
    "DaemonClient",
    "DaemonError",
    "InvalidConfig",
    "Location",
    "NoDaemon",
    "connect",
    "locate",
]

EXIT_FAILED = 1
"""The daemon refused or failed the request, or the connection to it broke."""
EXIT_USAGE = 2
"""Bad usage, or the config file is missing or invalid (also when the daemon reloads it)."""
EXIT_NO_DAEMON = 3
"""No daemon answers on the config's socket."""
EXIT_TIMEOUT = 124
"""``procvisor down --timeout`` expired before the daemon was gone (as coreutils ``timeout``)."""

_READ_TIMEOUT = 30.0
"""How long a query (status, events, info) may take; actions and log streams have no limit."""


class CliError(click.ClickException):
    """A failure shown as ``procvisor: ...`` lines on stderr; exits :data:`EXIT_FAILED`.

    Subclasses say which other exit status applies.
    """

    exit_code = EXIT_FAILED

    def __init__(self, *lines: str) -> None:
        super().__init__("\n".join(lines))
        self.lines = [line for text in lines for line in text.splitlines()] or ["failed"]

    def show(self, file: IO[Any] | None = None) -> None:
        for line in self.lines:
            click.echo(f"procvisor: {line}", err=True, file=file)


class InvalidConfig(CliError):
    """The config file is missing or invalid, one line per problem; exits :data:`EXIT_USAGE`."""

    exit_code = EXIT_USAGE


class NoDaemon(CliError):
    """Nobody answers on the daemon's socket; exits :data:`EXIT_NO_DAEMON`."""

    exit_code = EXIT_NO_DAEMON


class ConnectionLost(CliError):
    """The connection to the daemon broke in the middle of a request."""


class DaemonError(CliError):
    """The daemon answered with an error status (``status``); its detail, line by line."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


@dataclass(frozen=True)
class Location:
    """Where a config's daemon lives."""

    config_path: Path
    """The config file, as the user named it."""
    state_dir: Path

    @property
    def socket_path(self) -> Path:
        """The daemon's control socket."""
        return self.state_dir / SOCKET_NAME

    def config(self) -> Config:
        """The config file, validated (the daemon itself may run an earlier version of it).

        Raises:
            InvalidConfig: it is invalid now, one line per problem.
        """
        from procvisor.daemon.config import load_config  # noqa: PLC0415

        try:
            return load_config(self.config_path, runtime=False)
        except ConfigError as exc:
            raise InvalidConfig(*exc.lines()) from None

    def no_daemon(self) -> NoDaemon:
        """The error for "nobody answers on the socket"."""
        config = shlex.quote(os.fspath(self.config_path))
        return NoDaemon(
            f"no daemon running for {os.fspath(self.config_path)} (state dir "
            f"{self.state_dir}); start it with: procvisor up -c {config} -d"
        )


def locate(config_file: str | None) -> Location:
    """Find the config file and its state directory as the daemon does.

    Only ``[daemon] state_dir`` is read at first: when a daemon's socket is there, the daemon
    has the file's last good version, and validating all of it (pydantic and the models,
    ~140 ms) would only slow the command down. Where no socket is found, the whole file is
    validated, so that a wrong file is reported as such and not as a missing daemon.

    Raises:
        InvalidConfig: the config file is missing, or invalid and no daemon runs for it.
    """
    try:
        path = find_config(config_file)
    except ConfigError as exc:
        raise InvalidConfig(*exc.lines()) from None
    found = state_dir_of_file(path)
    if (found / SOCKET_NAME).exists():
        return Location(path, found)
    from procvisor.daemon.config import state_dir  # noqa: PLC0415

    config = Location(path, found).config()  # InvalidConfig if it is invalid
    return Location(path, state_dir(config, path))


def connect(config_file: str | None) -> DaemonClient:
    """A client for the daemon of the config ``config_file`` (see :func:`locate`)."""
    return DaemonClient(locate(config_file))


class DaemonClient:
    """Requests to one daemon over its Unix socket; use it as a context manager.

    Every method raises :class:`CliError`: :class:`DaemonError` for an error status (its
    ``detail``, exit 1), ``EXIT_NO_DAEMON`` when nobody answers, exit 1 for a broken
    connection or a timeout.
    """

    def __init__(self, location: Location) -> None:
        import httpx  # noqa: PLC0415

        self.location = location
        # Find out first whether anyone answers: httpcore's sync Unix-socket connect leaves
        # its socket unclosed when the connect fails (a ResourceWarning), and this names
        # the problem better than httpx's ConnectError would.
        self._check_socket()
        self._httpx = httpx
        # No TLS over a Unix socket (verify=False spares loading CA certificates), and no
        # proxy from the environment: this traffic never leaves the machine.
        transport = httpx.HTTPTransport(uds=os.fspath(location.socket_path), verify=False)
        self._client = httpx.Client(
            transport=transport,
            base_url="http://procvisor",
            trust_env=False,
            timeout=httpx.Timeout(_READ_TIMEOUT, connect=5.0),
        )

    def __enter__(self) -> DaemonClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection."""
        self._client.close()

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        """GET ``path``; the decoded JSON answer."""
        return self._call("GET", path, params=_drop_none(params))

    def post(self, path: str, body: Mapping[str, Any] | None = None) -> Any:
        """POST ``body`` to ``path`` and wait as long as the action takes; the JSON answer."""
        return self._call("POST", path, json=body, timeout=self._no_read_timeout())

    @contextmanager
    def stream(self, path: str, params: Mapping[str, Any] | None = None) -> Iterator[Response]:
        """GET ``path`` and hand over the response before its body (no read timeout)."""
        request = self._client.build_request(
            "GET", path, params=_drop_none(params), timeout=self._no_read_timeout()
        )
        with self._errors():
            response = self._client.send(request, stream=True)
        try:
            if response.is_error:
                with self._errors():
                    response.read()
                raise _daemon_error(response)
            yield Response(response, self)
        finally:
            response.close()

    def answers(self) -> bool:
        """True if something accepts connections on the socket right now."""
        try:
            self._check_socket()
        except NoDaemon:
            return False
        return True

    def _check_socket(self) -> None:
        path = self.location.socket_path
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(1.0)
            try:
                probe.connect(os.fspath(path))
            except (ConnectionRefusedError, FileNotFoundError):
                raise self.location.no_daemon() from None
            except PermissionError:
                raise NoDaemon(
                    f"cannot connect to {path}: permission denied (the daemon runs as "
                    "another user; run procvisor as that user)"
                ) from None
            except TimeoutError:
                pass  # a full backlog: the daemon is there, but busy
            except OSError as exc:
                raise NoDaemon(f"cannot connect to {path}: {exc.strerror or exc}") from None

    def _no_read_timeout(self) -> httpx.Timeout:
        return self._httpx.Timeout(_READ_TIMEOUT, connect=5.0, read=None)

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        with self._errors():
            response = self._client.request(method, path, **kwargs)
        if response.is_error:
            raise _daemon_error(response)
        try:
            return response.json()
        except ValueError:
            raise CliError(
                f"the daemon sent an answer that is not JSON to {method} {path}"
            ) from None

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Turn httpx's connection failures into one-line errors."""
        httpx = self._httpx
        try:
            yield
        except httpx.ConnectError:
            raise self.location.no_daemon() from None
        except httpx.TimeoutException:
            raise CliError(
                f"the daemon did not answer within {_READ_TIMEOUT:g}s; it may be overloaded "
                "or stuck"
            ) from None
        except httpx.TransportError as exc:
            raise ConnectionLost(
                f"the connection to the daemon broke ({exc or type(exc).__name__}); "
                "it may have stopped"
            ) from None


class Response:
    """A streamed answer from the daemon; iterate :meth:`iter_bytes` for its body."""

    def __init__(self, response: httpx.Response, client: DaemonClient) -> None:
        self._response = response
        self._client = client

    def iter_bytes(self) -> Iterator[bytes]:
        """The body's chunks as they arrive; a broken connection raises :class:`CliError`."""
        with self._client._errors():
            yield from self._response.iter_raw()


def _drop_none(params: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if params is None:
        return None
    return {key: value for key, value in params.items() if value is not None}


def _daemon_error(response: httpx.Response) -> DaemonError:
    detail: Any = None
    with suppress(ValueError, AttributeError):
        detail = response.json().get("detail")
    if not isinstance(detail, str) or not detail:
        text = response.text.strip()
        detail = f"the daemon answered {response.status_code} {response.reason_phrase}" + (
            f": {text}" if text else ""
        )
    return DaemonError(response.status_code, detail)
