"""The daemon's HTTP API on real sockets: routes, error mapping, token, socket life.

The API is served by ``ApiServer`` on a real Unix socket (and TCP) over a small in-test
``FakeControl``: these tests are about the HTTP layer (requests in, control calls, errors
out); the supervisor behind the real control is tested end to end elsewhere.
"""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import socket
import stat
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers import await_for
from procvisor.daemon._api import create_app
from procvisor.daemon._server import SOCKET_NAME, ApiServer
from procvisor.daemon._token import load_or_create_token, token_path
from procvisor.daemon.config import ConfigError, ConfigProblem, parse_config
from procvisor.supervisor import _logs as logfiles

SERVICES = {"web": 2, "worker": 1}


def _status(name: str, index: int, **changes: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "name": f"{name}:{index}",
        "service": name,
        "instance": index,
        "state": "running",
        "pid": 1000 + index,
        "uptime": 12.5,
        "restarts": 0,
        "last_exit": None,
        "health": None,
        "cpu_percent": 0.5,
        "rss": 10 * 1024 * 1024,
        "reason": "",
        "status_text": None,
    }
    item.update(changes)
    return item


class FakeControl:
    """Answers as the daemon would and records every call."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.calls: list[tuple[Any, ...]] = []
        self.reload_error: ConfigError | None = None
        self.down_called = asyncio.Event()
        self.on_down: Callable[[], None] | None = None
        self.pid = os.getpid()

    def _instances(self, targets: list[str]) -> list[str]:
        names: list[str] = []
        for target in targets:
            if target == "all":
                names += [f"{s}:{i}" for s, n in SERVICES.items() for i in range(n)]
                continue
            service, _, index = target.partition(":")
            if service not in SERVICES:
                raise LookupError(f"no service {service!r}; services: web, worker")
            count = SERVICES[service]
            if index and (not index.isdigit() or int(index) >= count):
                raise LookupError(f"no instance {target!r}; {service} has {count}")
            names += [target] if index else [f"{service}:{i}" for i in range(count)]
        return names

    def info(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "version": "0.1.0",
            "config": "/etc/procvisor.toml",
            "state_dir": "/var/lib/procvisor",
            "started_at": 1700000000.0,
            "sockets": {"web": "127.0.0.1:8000"},
        }

    def status(self, service: str | None) -> list[dict[str, Any]]:
        self.calls.append(("status", service))
        targets = [service] if service is not None else list(SERVICES)
        out = []
        for name in self._instances(targets):
            svc, _, index = name.partition(":")
            out.append(_status(svc, int(index)))
        return out

    async def start(self, targets: list[str]) -> list[str]:
        self.calls.append(("start", targets))
        await asyncio.sleep(0)
        return self._instances(targets)

    async def stop(self, targets: list[str]) -> list[str]:
        self.calls.append(("stop", targets))
        return self._instances(targets)

    async def restart(self, targets: list[str], rolling: bool) -> list[str]:
        self.calls.append(("restart", targets, rolling))
        return self._instances(targets)

    async def scale(self, service: str, instances: int) -> list[str]:
        self.calls.append(("scale", service, instances))
        self._instances([service])
        if instances > 10:
            raise ValueError(f"instances: {instances} is more than the 10 allowed")
        return [f"{service}:{i}" for i in range(SERVICES[service], instances)]

    def signal(self, targets: list[str], sig: int) -> list[str]:
        self.calls.append(("signal", targets, sig))
        return self._instances(targets)

    def log_files(self, target: str, stream: str) -> list[tuple[str, Path, int]]:
        self.calls.append(("log_files", target, stream))
        return [
            (name, self.log_dir / f"{name.replace(':', '-')}.{stream}.log", 2)
            for name in self._instances([target])
        ]

    def events(self, service: str | None, limit: int, after: int | None) -> list[dict[str, Any]]:
        self.calls.append(("events", service, limit, after))
        return [
            {
                "id": 7,
                "ts": 1700000001.5,
                "service": "web",
                "instance": "web:0",
                "kind": "exited",
                "message": "exit code 1",
                "data": {"code": 1},
            }
        ]

    def metrics(self) -> bytes:
        return b"procvisor_instance_up 1.0\n"

    def alerts(self, include_resolved: bool) -> list[dict[str, Any]]:
        self.calls.append(("alerts", include_resolved))
        return []

    def ack(self, alert_id: str, duration: float | None) -> dict[str, Any]:
        self.calls.append(("ack", alert_id, duration))
        if not alert_id.startswith("high-rss"):
            raise LookupError(f"no alert rule {alert_id.partition('/')[0]!r}; rules: high-rss")
        return {"id": alert_id, "acknowledged": True}

    def top(self) -> list[dict[str, Any]]:
        return []

    async def inspect(self, target: str) -> dict[str, Any]:
        self._instances([target])
        return {"name": target}

    def pools(self, name: str | None) -> list[dict[str, Any]]:
        self.calls.append(("pools", name))
        if name not in (None, "upper"):
            raise LookupError(f"no pool named {name!r}; pools: upper")
        return [
            {
                "name": "upper",
                "command": ["upper"],
                "running": True,
                "error": None,
                "pids": [11, 12],
                "stats": None,
            }
        ]

    async def pool_submit(
        self, name: str, data: Any, timeout: float | str | None, priority: str | int
    ) -> dict[str, Any]:
        self.calls.append(("pool_submit", name, data, timeout, priority))
        return {"ok": True, "result": data}

    async def reload(self) -> dict[str, list[str]]:
        self.calls.append(("reload",))
        if self.reload_error is not None:
            raise self.reload_error
        return {
            "started": ["new"],
            "stopped": [],
            "restarted": ["web"],
            "scaled": ["pool=3"],
            "unchanged": ["worker"],
        }

    def down(self) -> None:
        self.calls.append(("down",))
        self.down_called.set()
        if self.on_down is not None:
            self.on_down()


@pytest.fixture
def control(tmp_path: Path) -> FakeControl:
    logs = tmp_path / "logs"
    logs.mkdir()
    return FakeControl(logs)


@pytest.fixture
async def server(tmp_path: Path, control: FakeControl) -> AsyncIterator[ApiServer]:
    api = ApiServer(tmp_path / SOCKET_NAME, create_app(control), grace=0.5)
    await api.start()
    try:
        yield api
    finally:
        await api.close()


@pytest.fixture
async def client(server: ApiServer) -> AsyncIterator[httpx.AsyncClient]:
    async with _uds_client(server.socket_path) as c:
        yield c


def _uds_client(path: Path) -> httpx.AsyncClient:
    # No TLS on a Unix socket (verify=False skips loading CA certificates), and no proxy.
    return httpx.AsyncClient(
        transport=httpx.AsyncHTTPTransport(uds=str(path), verify=False),
        base_url="http://procvisor",
        trust_env=False,
    )


# --------------------------------------------------------------------------- the socket


async def test_the_socket_is_private_to_its_owner(server: ApiServer) -> None:
    mode = os.lstat(server.socket_path).st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600


async def test_close_removes_the_socket_file(tmp_path: Path, control: FakeControl) -> None:
    path = tmp_path / SOCKET_NAME
    async with ApiServer(path, create_app(control)):
        assert path.exists()
    assert not path.exists()
    assert os.listdir(tmp_path) == ["logs"]  # no temporary socket left either


async def test_a_stale_socket_is_replaced(tmp_path: Path, control: FakeControl) -> None:
    path = tmp_path / SOCKET_NAME
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(path))  # what a killed daemon leaves: a file nobody listens on
    async with ApiServer(path, create_app(control)), _uds_client(path) as c:
        assert (await c.get("/info")).status_code == 200


async def test_a_live_daemons_socket_is_refused(server: ApiServer, control: FakeControl) -> None:
    second = ApiServer(server.socket_path, create_app(control))
    with pytest.raises(OSError, match="another procvisor daemon") as info:
        await second.start()
    assert info.value.errno == errno.EADDRINUSE
    await second.close()


async def test_a_file_in_the_sockets_place_is_refused(tmp_path: Path, control: FakeControl) -> None:
    path = tmp_path / SOCKET_NAME
    path.write_text("not a socket")
    with pytest.raises(OSError, match="is not a socket"):
        await ApiServer(path, create_app(control)).start()
    assert path.read_text() == "not a socket"


async def test_a_deleted_socket_is_bound_again(
    server: ApiServer, client: httpx.AsyncClient
) -> None:
    assert not await server.check()  # nothing to do while the file is ours
    os.unlink(server.socket_path)
    assert await server.check()
    assert stat.S_IMODE(os.lstat(server.socket_path).st_mode) == 0o600
    async with _uds_client(server.socket_path) as fresh:
        assert (await fresh.get("/info")).json()["version"] == "0.1.0"


async def test_a_replaced_socket_is_bound_again(server: ApiServer) -> None:
    os.unlink(server.socket_path)
    server.socket_path.write_text("junk")
    assert await server.check()
    async with _uds_client(server.socket_path) as fresh:
        assert (await fresh.get("/info")).status_code == 200


async def test_a_deleted_state_dir_is_made_again(tmp_path: Path, control: FakeControl) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    async with ApiServer(state / SOCKET_NAME, create_app(control)) as api:
        os.unlink(api.socket_path)
        state.rmdir()
        assert await api.check()
        assert stat.S_IMODE(os.stat(state).st_mode) == 0o700
        async with _uds_client(api.socket_path) as fresh:
            assert (await fresh.get("/info")).status_code == 200


async def test_watch_socket_restores_the_socket_by_itself(server: ApiServer) -> None:
    watcher = asyncio.create_task(server.watch_socket(interval=0.01))
    try:
        os.unlink(server.socket_path)
        await await_for(server.socket_path.exists)
        async with _uds_client(server.socket_path) as fresh:
            assert (await fresh.get("/info")).status_code == 200
    finally:
        watcher.cancel()
        with pytest.raises(asyncio.CancelledError):
            await watcher


# --------------------------------------------------------------------------- routes


async def test_info(client: httpx.AsyncClient) -> None:
    response = await client.get("/info")
    assert response.status_code == 200
    assert response.json() == {
        "pid": os.getpid(),
        "version": "0.1.0",
        "config": "/etc/procvisor.toml",
        "state_dir": "/var/lib/procvisor",
        "started_at": 1700000000.0,
        "sockets": {"web": "127.0.0.1:8000"},
    }


async def test_status_of_all_and_of_one_service(
    client: httpx.AsyncClient, control: FakeControl
) -> None:
    everything = (await client.get("/status")).json()
    assert [item["name"] for item in everything] == ["web:0", "web:1", "worker:0"]
    assert everything[0] == _status("web", 0)
    web = (await client.get("/status", params={"service": "web"})).json()
    assert [item["name"] for item in web] == ["web:0", "web:1"]
    assert control.calls == [("status", None), ("status", "web")]


async def test_an_unknown_service_is_404_with_the_controls_message(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/status", params={"service": "nope"})
    assert response.status_code == 404
    assert response.json() == {"detail": "no service 'nope'; services: web, worker"}
    response = await client.post("/stop", json={"targets": ["web:5"]})
    assert response.status_code == 404
    assert response.json() == {"detail": "no instance 'web:5'; web has 2"}


async def test_start_stop_and_restart(client: httpx.AsyncClient, control: FakeControl) -> None:
    response = await client.post("/start", json={"targets": ["web"]})
    assert response.status_code == 200
    assert response.json() == {"instances": ["web:0", "web:1"]}
    assert (await client.post("/stop", json={"targets": ["web:1"]})).json() == {
        "instances": ["web:1"]
    }
    restarted = await client.post("/restart", json={"targets": ["all"], "rolling": True})
    assert restarted.json() == {"instances": ["web:0", "web:1", "worker:0"]}
    await client.post("/restart", json={"targets": ["worker"]})
    assert control.calls == [
        ("start", ["web"]),
        ("stop", ["web:1"]),
        ("restart", ["all"], True),
        ("restart", ["worker"], False),
    ]


async def test_a_malformed_body_is_422_with_one_detail_string(client: httpx.AsyncClient) -> None:
    for body in ({}, {"targets": []}, {"targets": "web"}, {"targets": ["web"], "extra": 1}):
        response = await client.post("/start", json=body)
        assert response.status_code == 422, body
        detail = response.json()["detail"]
        assert isinstance(detail, str)
        assert detail.startswith(("targets: ", "extra: ")), detail
    response = await client.post("/start", content=b"{nope", headers={"content-type": "x"})
    assert response.status_code == 422
    response = await client.post(
        "/start", content=b"garbage", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json() == {
        "detail": "request body: not valid JSON (Expecting value at character 0)"
    }


async def test_scale(client: httpx.AsyncClient, control: FakeControl) -> None:
    response = await client.post("/scale", json={"service": "web", "instances": 4})
    assert response.json() == {"instances": ["web:2", "web:3"]}
    assert control.calls == [("scale", "web", 4)]


async def test_a_bad_count_is_400_with_the_controls_message(client: httpx.AsyncClient) -> None:
    response = await client.post("/scale", json={"service": "web", "instances": 11})
    assert response.status_code == 400
    assert response.json() == {"detail": "instances: 11 is more than the 10 allowed"}
    negative = await client.post("/scale", json={"service": "web", "instances": -1})
    assert negative.status_code == 422
    assert "instances" in negative.json()["detail"]


@pytest.mark.parametrize("given", ["HUP", "SIGHUP", "hup", 1, "1"])
async def test_signal_by_name_or_number(
    client: httpx.AsyncClient, control: FakeControl, given: int | str
) -> None:
    response = await client.post("/signal", json={"targets": ["web:0"], "signal": given})
    assert response.status_code == 200
    assert response.json() == {"instances": ["web:0"]}
    assert control.calls == [("signal", ["web:0"], signal.SIGHUP)]


@pytest.mark.parametrize("given", ["NOPE", 0, 999, "", "-1"])
async def test_a_bad_signal_is_400_naming_the_accepted_forms(
    client: httpx.AsyncClient, control: FakeControl, given: int | str
) -> None:
    response = await client.post("/signal", json={"targets": ["web"], "signal": given})
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert "is not a signal" in detail
    assert "'HUP'" in detail and "'SIGHUP'" in detail and "number" in detail
    assert control.calls == []


async def test_events_pass_their_filters_through(
    client: httpx.AsyncClient, control: FakeControl
) -> None:
    response = await client.get("/events")
    assert response.json()[0]["kind"] == "exited"
    assert response.json()[0]["data"] == {"code": 1}
    await client.get("/events", params={"service": "web", "limit": 5, "after": 6})
    assert control.calls == [("events", None, 50, None), ("events", "web", 5, 6)]
    assert (await client.get("/events", params={"limit": 0})).status_code == 422


async def test_reload_reports_what_changed(client: httpx.AsyncClient) -> None:
    response = await client.post("/reload")
    assert response.status_code == 200
    assert response.json() == {
        "started": ["new"],
        "stopped": [],
        "restarted": ["web"],
        "scaled": ["pool=3"],
        "unchanged": ["worker"],
    }


async def test_an_invalid_config_on_reload_is_400_with_every_line(
    client: httpx.AsyncClient, control: FakeControl
) -> None:
    control.reload_error = ConfigError(
        "procvisor.toml",
        [
            ConfigProblem("services.web.instances", "expected an integer, got a string '2'"),
            ConfigProblem("services.db.command", "missing; set command = ..."),
        ],
    )
    response = await client.post("/reload")
    assert response.status_code == 400
    assert response.json() == {
        "detail": "procvisor.toml: services.web.instances: expected an integer, got a string "
        "'2'\nprocvisor.toml: services.db.command: missing; set command = ..."
    }


async def test_down_is_accepted_and_returns_at_once(
    client: httpx.AsyncClient, control: FakeControl
) -> None:
    response = await client.post("/down")
    assert response.status_code == 202
    assert control.down_called.is_set()


async def test_a_bug_in_the_control_is_500_json(
    client: httpx.AsyncClient, control: FakeControl, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any) -> Any:
        raise RuntimeError("oops")

    monkeypatch.setattr(control, "events", broken)
    response = await client.get("/events")
    assert response.status_code == 500
    assert response.json() == {
        "detail": "internal error in the daemon (RuntimeError: oops); see its log"
    }
    assert (await client.get("/info")).status_code == 200  # and it goes on serving


async def test_a_reply_that_breaks_the_contract_is_500_not_400(
    client: httpx.AsyncClient, control: FakeControl, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(control, "status", lambda service: [{"name": "web:0"}])
    response = await client.get("/status")
    assert response.status_code == 500
    assert response.json()["detail"].startswith(
        "internal error in the daemon (ResponseValidationError"
    )


async def test_pool_tasks_pass_data_and_options_and_unknown_ones_are_422(
    client: httpx.AsyncClient, control: FakeControl
) -> None:
    reply = await client.post("/pools/upper/tasks", json={"data": {"a": [1]}, "timeout": "2s"})
    assert reply.status_code == 200
    assert reply.json() == {"ok": True, "result": {"a": [1]}, "error": None}
    assert control.calls[-1] == ("pool_submit", "upper", {"a": [1]}, "2s", "normal")
    extra = await client.post("/pools/upper/tasks", json={"data": 1, "retries": 3})
    assert extra.status_code == 422
    missing = await client.get("/pools", params={"name": "nope"})
    assert missing.status_code == 404
    assert missing.json() == {"detail": "no pool named 'nope'; pools: upper"}


async def test_metrics_are_prometheus_text(client: httpx.AsyncClient) -> None:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert response.text == "procvisor_instance_up 1.0\n"


async def test_alert_ack_takes_a_duration_and_unknown_rules_are_404(
    client: httpx.AsyncClient, control: FakeControl
) -> None:
    silenced = await client.post("/alerts/ack", json={"id": "high-rss/web:0", "for": "1h"})
    assert silenced.status_code == 200
    assert control.calls[-1] == ("ack", "high-rss/web:0", 3600.0)
    bad = await client.post("/alerts/ack", json={"id": "high-rss", "for": "soon"})
    assert bad.status_code == 400 and bad.json()["detail"].startswith("for: 'soon'")
    unknown = await client.post("/alerts/ack", json={"id": "nope/web:0"})
    assert unknown.status_code == 404
    assert (await client.get("/inspect", params={"target": "nope:0"})).status_code == 404


async def test_an_unknown_route_is_404_json(client: httpx.AsyncClient) -> None:
    response = await client.get("/nope")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}


async def test_openapi_lists_every_route_and_the_error_shape(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    assert set(schema["paths"]) == {
        "/info",
        "/status",
        "/start",
        "/stop",
        "/restart",
        "/scale",
        "/signal",
        "/logs",
        "/events",
        "/reload",
        "/down",
        "/pools",
        "/pools/{name}/tasks",
        "/metrics",
        "/alerts",
        "/alerts/ack",
        "/top",
        "/inspect",
        "/jobs",
        "/jobs/{job_id}",
        "/jobs/{job_id}/wait",
        "/jobs/cancel",
        "/jobs/hold",
        "/jobs/release",
        "/jobs/{job_id}/retry",
        "/schedules",
        "/schedules/{schedule_id}/cancel",
        "/queue",
        "/quotas",
    }
    stop = schema["paths"]["/stop"]["post"]
    assert stop["responses"]["404"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorDetail"
    }
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    assert "security" not in schema  # the socket needs no token


# --------------------------------------------------------------------------- TCP and token


async def test_tcp_requires_the_token_and_the_socket_does_not(
    tmp_path: Path, control: FakeControl
) -> None:
    token = load_or_create_token(tmp_path / "token")
    api = ApiServer(
        tmp_path / SOCKET_NAME,
        create_app(control),
        http=("127.0.0.1", 0),
        http_app=create_app(control, token=token),
    )
    async with api:
        assert api.http_address is not None
        host, port = api.http_address
        assert host == "127.0.0.1" and port > 0
        async with httpx.AsyncClient(base_url=f"http://{host}:{port}", trust_env=False) as tcp:
            for path in ("/info", "/openapi.json", "/docs", "/nope"):
                response = await tcp.get(path)
                assert response.status_code == 401, path
                assert response.headers["www-authenticate"] == "Bearer"
                assert "Authorization: Bearer" in response.json()["detail"]
            wrong = await tcp.get("/info", headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401
            basic = await tcp.get("/info", headers={"Authorization": f"Basic {token}"})
            assert basic.status_code == 401
            auth = {"Authorization": f"Bearer {token}"}
            assert (await tcp.get("/info", headers=auth)).json()["pid"] == os.getpid()
            assert (await tcp.post("/down", headers=auth)).status_code == 202
            schema = (await tcp.get("/openapi.json", headers=auth)).json()
            assert schema["security"] == [{"bearer": []}]
            assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
        async with _uds_client(api.socket_path) as unix:
            assert (await unix.get("/info")).status_code == 200


async def test_tcp_without_its_app_is_refused(tmp_path: Path, control: FakeControl) -> None:
    with pytest.raises(ValueError, match="http_app is required"):
        ApiServer(tmp_path / SOCKET_NAME, create_app(control), http=("127.0.0.1", 0))


async def test_a_taken_tcp_port_fails_start_and_leaves_no_socket(
    tmp_path: Path, control: FakeControl
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        app = create_app(control, token="t")
        api = ApiServer(
            tmp_path / SOCKET_NAME, create_app(control), http=("127.0.0.1", port), http_app=app
        )
        with pytest.raises(OSError) as info:
            await api.start()
        assert info.value.errno == errno.EADDRINUSE
    assert not (tmp_path / SOCKET_NAME).exists()


# --------------------------------------------------------------------------- logs


def _write(path: Path, data: bytes) -> None:
    with open(path, "ab") as file:
        file.write(data)


async def test_logs_of_one_instance_are_its_raw_last_lines(
    client: httpx.AsyncClient, control: FakeControl
) -> None:
    log = control.log_dir / "worker-0.stdout.log"
    _write(log.with_name(log.name + ".1"), b"old 1\nold 2\n")
    _write(log, b"new 1\nnew 2\nnew 3\n")
    response = await client.get("/logs", params={"target": "worker", "lines": 4})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert response.content == b"old 2\nnew 1\nnew 2\nnew 3\n"
    default = await client.get("/logs", params={"target": "worker:0"})
    assert default.content == b"old 1\nold 2\nnew 1\nnew 2\nnew 3\n"
    assert control.calls[-1] == ("log_files", "worker:0", "stdout")


async def test_logs_of_several_instances_are_prefixed_by_instance(
    client: httpx.AsyncClient, control: FakeControl
) -> None:
    _write(control.log_dir / "web-0.stderr.log", b"a\nb\n")
    _write(control.log_dir / "web-1.stderr.log", b"c\nno newline")
    response = await client.get("/logs", params={"target": "web", "stream": "stderr"})
    assert response.content == b"web:0 | a\nweb:0 | b\nweb:1 | c\nweb:1 | no newline\n"


async def test_logs_errors(client: httpx.AsyncClient) -> None:
    assert (await client.get("/logs", params={"target": "nope"})).status_code == 404
    bad_stream = await client.get("/logs", params={"target": "web", "stream": "stdin"})
    assert bad_stream.status_code == 422
    assert "stream" in bad_stream.json()["detail"]
    assert (await client.get("/logs", params={"target": "web", "lines": -1})).status_code == 422


async def _read_until(chunks: AsyncIterator[bytes], seen: bytearray, wanted: bytes) -> None:
    async with asyncio.timeout(5):
        while wanted not in seen:
            seen += await anext(chunks)


def _follow_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("procvisor-logs-")]


async def test_follow_sends_the_tail_then_new_output_and_stops_when_the_client_leaves(
    client: httpx.AsyncClient, control: FakeControl
) -> None:
    log = control.log_dir / "worker-0.stdout.log"
    _write(log, b"one\ntwo\n")
    params = {"target": "worker", "lines": 1, "follow": True}
    async with client.stream("GET", "/logs", params=params) as response:
        assert response.status_code == 200
        chunks = response.aiter_raw()
        seen = bytearray()
        await _read_until(chunks, seen, b"two\n")
        assert bytes(seen) == b"two\n"
        await await_for(_follow_tasks)
        _write(log, b"three, partial")
        await _read_until(chunks, seen, b"partial")
        assert bytes(seen) == b"two\nthree, partial"
    await await_for(lambda: not _follow_tasks())


async def test_follow_of_a_file_created_after_the_request_sends_it_once(
    client: httpx.AsyncClient, control: FakeControl, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A job that has printed nothing when `submit --wait` starts following: the file appears
    # between the request's mark (no file) and the read of the history.
    log = control.log_dir / "worker-0.stdout.log"
    real = logfiles.position

    def position_then_write(path: Any) -> Any:
        mark = real(path)
        _write(log, b"one\n")
        return mark

    monkeypatch.setattr(logfiles, "position", position_then_write)
    params = {"target": "worker", "follow": True}
    async with client.stream("GET", "/logs", params=params) as response:
        chunks = response.aiter_raw()
        seen = bytearray()
        await _read_until(chunks, seen, b"one\n")
        await await_for(_follow_tasks)
        _write(log, b"two\n")
        await _read_until(chunks, seen, b"two\n")
        assert bytes(seen) == b"one\ntwo\n"


async def test_follow_of_several_instances_prefixes_whole_lines(
    client: httpx.AsyncClient, control: FakeControl
) -> None:
    web0, web1 = control.log_dir / "web-0.stdout.log", control.log_dir / "web-1.stdout.log"
    _write(web0, b"a\n")
    params = {"target": "web", "follow": True}
    async with client.stream("GET", "/logs", params=params) as response:
        chunks = response.aiter_raw()
        seen = bytearray()
        await _read_until(chunks, seen, b"web:0 | a\n")
        await await_for(lambda: len(_follow_tasks()) == 2)
        _write(web1, b"half of a li")  # held back until its newline comes
        _write(web0, b"b\n")
        await _read_until(chunks, seen, b"web:0 | b\n")
        _write(web1, b"ne\n")
        await _read_until(chunks, seen, b"web:1 | half of a line\n")
        assert bytes(seen) == b"web:0 | a\nweb:0 | b\nweb:1 | half of a line\n"
    await await_for(lambda: not _follow_tasks())


async def test_close_ends_a_follow_in_progress(tmp_path: Path, control: FakeControl) -> None:
    api = ApiServer(tmp_path / SOCKET_NAME, create_app(control), grace=0.1)
    await api.start()
    try:
        async with _uds_client(api.socket_path) as c:
            params = {"target": "worker", "follow": True}
            async with c.stream("GET", "/logs", params=params) as response:
                await await_for(_follow_tasks)
                await api.close()
                with pytest.raises(httpx.HTTPError):  # the server cut the endless response
                    async for _ in response.aiter_raw():
                        pass
    finally:
        await api.close()
    assert not _follow_tasks()
    assert not api.socket_path.exists()


async def test_a_cancelled_close_does_not_cut_the_shutdown_short(
    tmp_path: Path, control: FakeControl
) -> None:
    api = ApiServer(tmp_path / SOCKET_NAME, create_app(control), grace=0.2)
    await api.start()
    try:
        async with _uds_client(api.socket_path) as c:
            params = {"target": "worker", "follow": True}
            async with c.stream("GET", "/logs", params=params):
                await await_for(_follow_tasks)
                first = asyncio.create_task(api.close())
                await await_for(lambda: "closing" in repr(api))  # waiting out the follow
                first.cancel()
                await api.close()  # returns once that one shutdown is over
                assert not _follow_tasks()
                assert "closed" in repr(api)
    finally:
        await api.close()


async def test_a_follow_survives_its_socket_being_bound_again(
    server: ApiServer, client: httpx.AsyncClient, control: FakeControl
) -> None:
    log = control.log_dir / "worker-0.stdout.log"
    params = {"target": "worker", "follow": True}
    async with client.stream("GET", "/logs", params=params) as response:
        await await_for(_follow_tasks)
        os.unlink(server.socket_path)
        assert await server.check()
        _write(log, b"still here\n")
        seen = bytearray()
        await _read_until(response.aiter_raw(), seen, b"still here\n")


# --------------------------------------------------------------------------- token file


def test_a_new_token_is_random_private_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "token"
    token = load_or_create_token(path)
    assert len(token) >= 40
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert path.read_text() == token + "\n"
    assert load_or_create_token(path) == token
    assert load_or_create_token(tmp_path / "other") != token
    assert sorted(os.listdir(tmp_path)) == ["other", "token"]  # no temporary file left


def test_a_token_written_by_hand_is_used(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("  my-secret \n")
    path.chmod(0o600)
    assert load_or_create_token(path) == "my-secret"


def test_a_token_others_may_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "token"
    load_or_create_token(path)
    path.chmod(0o644)
    with pytest.raises(ValueError, match=r"mode 0644\); run 'chmod 600 "):
        load_or_create_token(path)


def test_an_empty_token_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.touch(mode=0o600)
    with pytest.raises(ValueError, match="the token file is empty"):
        load_or_create_token(path)


def test_the_token_files_directory_is_made_private(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "api.token"
    load_or_create_token(path)
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700


def test_token_path_is_token_file_else_in_the_state_dir(tmp_path: Path) -> None:
    state = tmp_path / "state"
    plain = parse_config("[daemon]\nhttp = '127.0.0.1:9876'\n", base_dir=tmp_path)
    assert token_path(plain, state) == state / "token"
    named = parse_config("[daemon]\ntoken_file = 'api.token'\n", base_dir=tmp_path)
    assert token_path(named, state) == tmp_path / "api.token"


async def test_an_empty_token_is_refused(control: FakeControl) -> None:
    with pytest.raises(ValueError, match="token must not be empty"):
        create_app(control, token="")


async def test_start_twice_is_refused(server: ApiServer) -> None:
    with pytest.raises(RuntimeError, match="start"):
        await server.start()
