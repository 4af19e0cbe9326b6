"""Run one health probe and say how it went: :class:`Prober` and :class:`ProbeOutcome`.

Three kinds, as :class:`~procvisor.supervisor._spec.ProbeSpec` describes them:

- ``http``: GET ``url``; healthy on a 2xx or 3xx status. Redirects are not followed (a 3xx
  already counts), the body is not read (the status line decides), no proxy or ``.netrc`` from
  the environment applies (``trust_env=False``: the daemon's ``HTTP_PROXY`` must not send a
  local probe elsewhere), and, as Kubernetes does for its probes, the server's certificate is
  not verified: a probe sends nothing secret and only asks whether the service answers.
  Connections are not kept alive between probes, so every probe tests accepting a connection.
- ``tcp``: connect to ``host:port``, then close the connection.
- ``exec``: run ``command`` through :func:`procvisor.arun` (its own process group, stopped as
  a group at the timeout); healthy on exit code 0.

Every probe is bounded by ``spec.timeout`` as a whole. A failed probe is an outcome, never an
exception: only misuse (a spec that does not describe a probe, a closed prober) raises, and
cancelling the awaiting task propagates ``CancelledError`` after an exec probe's group is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from procvisor.errors import ProcessError, TimeoutExpired
from procvisor.policy.units import format_duration
from procvisor.process import Result, arun
from procvisor.supervisor._spec import ProbeSpec

if TYPE_CHECKING:
    import httpx

__all__ = ["ProbeOutcome", "Prober"]

_EXEC_GRACE = 0.5
"""Seconds between the stop signal and SIGKILL for an exec probe past its timeout."""
_EXEC_MAX_OUTPUT = 64 * 1024
"""Bytes of an exec probe's output kept (the tail); only its last line is reported."""
_DETAIL_CHARS = 200
_USER_AGENT = "procvisor-probe"
_ERRNO_RE = re.compile(r"\[Errno (\d+)\]")


@dataclass(frozen=True, slots=True)
class ProbeOutcome:
    """The result of one probe.

    Attributes:
        ok: the probe succeeded.
        detail: one line on what happened: ``"HTTP 200"``, ``"HTTP 503"``,
            ``"connection refused"``, ``"timed out after 2s"``, ``"exit code 1: not ready"``.
        latency: seconds the probe took, whatever its outcome.
    """

    ok: bool
    detail: str
    latency: float


def _clip(text: str) -> str:
    return text if len(text) <= _DETAIL_CHARS else text[: _DETAIL_CHARS - 3] + "..."


def _errno_text(errno: int | None) -> str | None:
    return os.strerror(errno).lower() if errno is not None and errno > 0 else None


def _errnos(err: BaseException) -> set[int | None]:
    if isinstance(err, BaseExceptionGroup):
        return set().union(*(_errnos(e) for e in err.exceptions))
    return {err.errno if isinstance(err, OSError) else None}


def _describe_os_error(exc: BaseException) -> str:
    """The shortest faithful line for a failed connection: ``"connection refused"``."""
    # httpx, httpcore and anyio each wrap the OSError (httpx with its context suppressed,
    # so follow __context__ too): the root cause is the one to show.
    chain: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in chain:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    for err in reversed(chain):
        if isinstance(err, socket.gaierror):
            return f"cannot resolve host: {err.strerror}"
        if isinstance(err, BaseExceptionGroup):
            # anyio: one failure per address of the host; when they all agree, say it once.
            codes = _errnos(err)
            if len(codes) == 1 and (text := _errno_text(codes.pop())):
                return text
        if isinstance(err, OSError) and (text := _errno_text(err.errno)):
            return text
    text = str(exc) or type(exc).__name__
    # asyncio reports the failures on every address of a host (::1 and 127.0.0.1 for
    # "localhost") as one OSError without an errno; when they all agree, say it once.
    numbers = set(_ERRNO_RE.findall(text))
    if len(numbers) == 1 and (errno_text := _errno_text(int(numbers.pop()))):
        return errno_text
    return _clip(text)


def _last_line(data: bytes) -> str:
    lines = data.decode("utf-8", "replace").strip().splitlines()
    return _clip(lines[-1].strip()) if lines else ""


def _describe_exit(result: Result) -> str:
    if result.signal is not None:
        what = f"killed by {result.signal}"
    elif result.returncode is None:
        what = "exit status unknown (reaped elsewhere)"
    else:
        what = f"exit code {result.returncode}"
    line = _last_line(result.stdout)
    return f"{what}: {line}" if line else what


def _validate(spec: ProbeSpec) -> None:
    if isinstance(spec.timeout, bool) or not math.isfinite(spec.timeout) or spec.timeout <= 0:
        raise ValueError(f"probe timeout: {spec.timeout!r} must be more than 0 seconds")
    if spec.type == "http":
        if not spec.url:
            raise ValueError("http probe: url is required, e.g. 'http://127.0.0.1:8080/health'")
        import httpx  # noqa: PLC0415 - ~5 MiB of RSS, paid only by daemons with http probes

        try:
            url = httpx.URL(spec.url)
        except httpx.InvalidURL as exc:
            raise ValueError(f"http probe: url {spec.url!r} is not a valid URL: {exc}") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(
                f"http probe: url {spec.url!r} must be an http:// or https:// URL with a host"
            )
    elif spec.type == "tcp":
        if spec.port is None or isinstance(spec.port, bool) or not 0 < spec.port < 65536:
            raise ValueError(f"tcp probe: port {spec.port!r} must be a port number (1..65535)")
    elif spec.type == "exec":
        if not spec.command:
            raise ValueError("exec probe: command is required, e.g. ['pg_isready']")
    else:
        raise ValueError(f"probe type: {spec.type!r} must be 'http', 'tcp' or 'exec'")


class Prober:
    """Runs probes; owns the HTTP client they share, created on the first http probe.

    Close it with :meth:`aclose` (or ``async with Prober() as prober``) when done.
    """

    def __init__(self) -> None:
        self._client: httpx.AsyncClient | None = None
        self._closed = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open" if self._client else "idle"
        return f"<Prober {state}>"

    async def __aenter__(self) -> Prober:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client, if one was created. Idempotent."""
        self._closed = True
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def _http_client(self) -> httpx.AsyncClient:
        import httpx  # noqa: PLC0415

        if self._client is None:
            self._client = httpx.AsyncClient(
                trust_env=False,
                follow_redirects=False,
                verify=False,
                limits=httpx.Limits(max_keepalive_connections=0),
                headers={"User-Agent": _USER_AGENT},
            )
        return self._client

    async def check(
        self,
        spec: ProbeSpec,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> ProbeOutcome:
        """Run the probe ``spec`` describes once, bounded by ``spec.timeout``.

        Args:
            spec: the probe.
            env: for an exec probe, variables set on top of the daemon's environment.
            cwd: for an exec probe, its working directory.

        Raises:
            ValueError: ``spec`` lacks what its type needs (``url``, ``port``, ``command``),
                the URL is not http(s), or the timeout is not more than 0.
            RuntimeError: the prober is closed.
        """
        if self._closed:
            raise RuntimeError("Prober.check: this prober is closed; create a new Prober")
        _validate(spec)
        started = time.monotonic()
        if spec.type == "http":
            ok, detail = await self._http(spec)
        elif spec.type == "tcp":
            ok, detail = await _tcp(spec)
        else:
            ok, detail = await _exec(spec, env, cwd)
        return ProbeOutcome(ok, detail, time.monotonic() - started)

    async def _http(self, spec: ProbeSpec) -> tuple[bool, str]:
        import httpx  # noqa: PLC0415

        assert spec.url is not None
        client = self._http_client()
        try:
            async with (
                asyncio.timeout(spec.timeout),
                client.stream("GET", spec.url, timeout=spec.timeout) as response,
            ):
                status = response.status_code
        except (TimeoutError, httpx.TimeoutException):
            return False, f"timed out after {format_duration(spec.timeout)}"
        except httpx.ConnectError as exc:
            return False, _describe_os_error(exc)
        except httpx.HTTPError as exc:
            return False, _clip(f"{type(exc).__name__}: {exc}" if str(exc) else repr(exc))
        return 200 <= status < 400, f"HTTP {status}"


async def _tcp(spec: ProbeSpec) -> tuple[bool, str]:
    assert spec.port is not None
    try:
        async with asyncio.timeout(spec.timeout):
            _, writer = await asyncio.open_connection(spec.host, spec.port)
    except TimeoutError:
        return False, f"timed out after {format_duration(spec.timeout)}"
    except OSError as exc:
        return False, _describe_os_error(exc)
    writer.close()
    # The port accepted the connection, which is all this probe asks; a reset while
    # closing does not change that.
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True, f"connected to {spec.host}:{spec.port}"


async def _exec(
    spec: ProbeSpec, env: Mapping[str, str] | None, cwd: Path | None
) -> tuple[bool, str]:
    assert spec.command is not None
    try:
        result = await arun(
            spec.command,
            timeout=spec.timeout,
            env=env,
            cwd=cwd,
            capture=True,
            merge_stderr=True,
            max_output=_EXEC_MAX_OUTPUT,
            grace=_EXEC_GRACE,
        )
    except TimeoutExpired as exc:
        detail = f"timed out after {format_duration(spec.timeout)}"
        line = _last_line(exc.stdout)
        return False, f"{detail}: {line}" if line else detail
    except ProcessError as exc:
        # A SpawnError (missing program, bad cwd); no limits are set, so nothing else comes.
        # Not clipped: its message ends with what to do.
        return False, str(exc)
    return result.returncode == 0, _describe_exit(result)
