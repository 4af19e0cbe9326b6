"""Probes against real things: HTTP servers, listening and closed ports, real programs."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest

import procvisor
from helpers import await_for, pid_alive
from procvisor.supervisor._probes import ProbeOutcome, Prober, _describe_os_error
from procvisor.supervisor._spec import ProbeSpec

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def prober() -> AsyncIterator[Prober]:
    async with Prober() as p:
        yield p


@contextlib.asynccontextmanager
async def serve(respond: Handler) -> AsyncIterator[int]:
    """An asyncio TCP server on 127.0.0.1 running ``respond`` per connection; yields its port.

    On exit every connection still open is cancelled and closed.
    """
    tasks: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await respond(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the probe gave up or closed first, as it may
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


def reply(status: str, headers: str = "") -> Handler:
    """A handler that reads one request and answers ``status`` with an empty body."""

    async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            f"HTTP/1.1 {status}\r\n{headers}Content-Length: 0\r\nConnection: close\r\n\r\n".encode()
        )
        await writer.drain()

    return respond


async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    await asyncio.Event().wait()  # until the server is torn down


async def trickle_headers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer so slowly that no single read waits long, but the response never ends."""
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\n")
    for i in range(10_000):
        writer.write(f"X-Slow-{i}: 1\r\n".encode())
        await writer.drain()
        await asyncio.sleep(0.02)  # the server's pace, not a synchronisation


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port nothing listens on: bound (so no one else takes it) but not listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def http(url: str, timeout: float = 2.0) -> ProbeSpec:
    return ProbeSpec(type="http", url=url, timeout=timeout)


# --- http ------------------------------------------------------------------------------------


async def test_http_200_from_a_real_http_server_is_healthy(prober, tmp_path) -> None:
    server = await procvisor.spawn(
        [sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1"],
        cwd=tmp_path,
        grace=1.0,
    )
    async with server:
        lines = server.__aiter__()
        async with asyncio.timeout(10):
            while not (match := re.search(r"port (\d+)", (await lines.__anext__()).text)):
                pass
        outcome = await prober.check(http(f"http://127.0.0.1:{match[1]}/"))
    assert outcome.ok, outcome
    assert outcome.detail == "HTTP 200"
    assert 0 < outcome.latency < 2.0


@pytest.mark.parametrize(
    ("status", "ok"),
    [("204 No Content", True), ("404 Not Found", False), ("503 Service Unavailable", False)],
)
async def test_http_status_decides(prober, status, ok) -> None:
    async with serve(reply(status)) as port:
        outcome = await prober.check(http(f"http://127.0.0.1:{port}/health"))
    assert (outcome.ok, outcome.detail) == (ok, f"HTTP {status.split()[0]}")


async def test_http_redirect_counts_as_healthy_and_is_not_followed(prober, closed_port) -> None:
    # Following it would reach the closed port and fail.
    location = f"Location: http://127.0.0.1:{closed_port}/\r\n"
    async with serve(reply("302 Found", location)) as port:
        outcome = await prober.check(http(f"http://127.0.0.1:{port}/"))
    assert (outcome.ok, outcome.detail) == (True, "HTTP 302")


async def test_http_closed_port_is_connection_refused(prober, closed_port) -> None:
    outcome = await prober.check(http(f"http://127.0.0.1:{closed_port}/"))
    assert outcome == ProbeOutcome(False, "connection refused", outcome.latency)


async def test_http_server_that_hangs_up_without_answering(prober) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")

    async with serve(hang_up) as port:
        outcome = await prober.check(http(f"http://127.0.0.1:{port}/"))
    assert not outcome.ok
    assert outcome.detail == (
        "RemoteProtocolError: Server disconnected without sending a response."
    )


async def test_http_server_that_never_answers_times_out(prober) -> None:
    async with serve(never_answer) as port:
        outcome = await prober.check(http(f"http://127.0.0.1:{port}/", timeout=0.3))
    assert (outcome.ok, outcome.detail) == (False, "timed out after 300ms")
    assert 0.3 <= outcome.latency < 2.0


async def test_http_timeout_bounds_the_whole_probe_not_each_read(prober) -> None:
    async with serve(trickle_headers) as port:
        outcome = await prober.check(http(f"http://127.0.0.1:{port}/", timeout=0.3))
    assert (outcome.ok, outcome.detail) == (False, "timed out after 300ms")
    assert outcome.latency < 2.0


async def test_http_ignores_proxy_settings_of_the_environment(prober, monkeypatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:1")
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:1")
    async with serve(reply("200 OK")) as port:
        outcome = await prober.check(http(f"http://127.0.0.1:{port}/"))
    assert outcome.ok, outcome


async def test_one_client_serves_many_concurrent_probes(prober) -> None:
    async with serve(reply("200 OK")) as port:
        outcomes = await asyncio.gather(
            *(prober.check(http(f"http://127.0.0.1:{port}/")) for _ in range(20))
        )
    assert all(o.ok for o in outcomes)


# --- tcp -------------------------------------------------------------------------------------


async def test_tcp_open_port_is_healthy(prober) -> None:
    connected = asyncio.Event()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connected.set()
        await reader.read()  # until the probe closes its end

    async with serve(accept) as port:
        outcome = await prober.check(ProbeSpec(type="tcp", port=port))
        assert connected.is_set()
    assert (outcome.ok, outcome.detail) == (True, f"connected to 127.0.0.1:{port}")


async def test_tcp_closed_port_is_unhealthy(prober, closed_port) -> None:
    outcome = await prober.check(ProbeSpec(type="tcp", port=closed_port))
    assert (outcome.ok, outcome.detail) == (False, "connection refused")


async def test_tcp_by_host_name(prober, closed_port) -> None:
    outcome = await prober.check(ProbeSpec(type="tcp", host="localhost", port=closed_port))
    assert (outcome.ok, outcome.detail) == (False, "connection refused")


def test_the_same_error_on_every_address_of_a_host_is_said_once() -> None:
    # What asyncio raises when "localhost" is ::1 and 127.0.0.1 and both refuse.
    both = OSError(
        "Multiple exceptions: [Errno 111] Connect call failed ('::1', 1, 0, 0), "
        "[Errno 111] Connect call failed ('127.0.0.1', 1)"
    )
    assert _describe_os_error(both) == "connection refused"
    mixed = OSError("Multiple exceptions: [Errno 111] a, [Errno 101] b")
    assert _describe_os_error(mixed) == str(mixed)


def test_the_same_error_in_an_exception_group_is_said_once() -> None:
    # What anyio (under httpx) raises when every address of a host refuses.
    refused = [ConnectionRefusedError(111, "Connect call failed") for _ in range(2)]
    try:
        raise OSError("All connection attempts failed") from ExceptionGroup("all", refused)
    except OSError as exc:
        assert _describe_os_error(exc) == "connection refused"


# --- exec ------------------------------------------------------------------------------------


def exec_spec(*argv: str, timeout: float = 5.0) -> ProbeSpec:
    return ProbeSpec(type="exec", command=argv, timeout=timeout)


async def test_exec_exit_zero_is_healthy(prober) -> None:
    outcome = await prober.check(exec_spec("true"))
    assert (outcome.ok, outcome.detail) == (True, "exit code 0")


async def test_exec_nonzero_reports_the_code_and_last_line(prober) -> None:
    script = "echo starting; echo 'not ready: 3 pending' >&2; exit 3"
    outcome = await prober.check(exec_spec("sh", "-c", script))
    assert (outcome.ok, outcome.detail) == (False, "exit code 3: not ready: 3 pending")


async def test_exec_false(prober) -> None:
    outcome = await prober.check(exec_spec("false"))
    assert (outcome.ok, outcome.detail) == (False, "exit code 1")


async def test_exec_gets_env_and_cwd(prober, tmp_path) -> None:
    script = 'test "$PROBE_TOKEN" = abc && test "$(pwd)" = "$1"'
    spec = exec_spec("sh", "-c", script, "sh", str(tmp_path))
    outcome = await prober.check(spec, env={"PROBE_TOKEN": "abc"}, cwd=tmp_path)
    assert outcome.ok, outcome


async def test_exec_past_its_timeout_fails_and_leaves_no_process(prober, tmp_path) -> None:
    marker = tmp_path / "pid"
    script = f"trap '' TERM; sleep 300 & echo $! > {marker}; echo waiting; wait"
    outcome = await prober.check(exec_spec("sh", "-c", script, timeout=0.5))
    assert (outcome.ok, outcome.detail) == (False, "timed out after 500ms: waiting")
    # Stop signal ignored: SIGKILL after the 0.5 s grace.
    assert 0.5 <= outcome.latency < 3.0
    assert not pid_alive(int(marker.read_text()))


async def test_exec_missing_program_fails_with_the_reason(prober) -> None:
    outcome = await prober.check(exec_spec("procvisor-no-such-program"))
    assert not outcome.ok
    assert "'procvisor-no-such-program' not found" in outcome.detail


async def test_cancelling_an_exec_probe_leaves_no_process(prober, tmp_path) -> None:
    marker = tmp_path / "pid"
    script = f"trap '' TERM; sleep 300 & echo $! > {marker}; wait"
    task = asyncio.ensure_future(prober.check(exec_spec("sh", "-c", script, timeout=60)))
    await await_for(lambda: marker.exists() and marker.read_text().strip())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not pid_alive(int(marker.read_text()))


# --- misuse ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        (ProbeSpec(type="http"), "url is required"),
        (ProbeSpec(type="http", url="ftp://example.com/"), "http:// or https://"),
        (ProbeSpec(type="http", url="http:///path"), "with a host"),
        (ProbeSpec(type="tcp"), "port None"),
        (ProbeSpec(type="tcp", port=70000), "port 70000"),
        (ProbeSpec(type="exec"), "command is required"),
        (ProbeSpec(type="exec", command=("true",), timeout=0), "timeout"),
    ],
)
async def test_a_spec_that_describes_no_probe_is_a_value_error(prober, spec, match) -> None:
    with pytest.raises(ValueError, match=match):
        await prober.check(spec)


async def test_a_closed_prober_refuses_to_check() -> None:
    prober = Prober()
    await prober.aclose()
    await prober.aclose()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        await prober.check(ProbeSpec(type="tcp", port=1))
    assert repr(prober) == "<Prober closed>"
