"""The control commands (status, start, ..., down, token) against a real API server.

The server is the real ``ApiServer`` + ``create_app`` on the config's Unix socket, run by an
event loop in a background thread, over an in-test ``FakeControl``: these tests are about the
CLI (what it sends, prints and exits with). Most run in process with ``CliRunner``; Ctrl-C
and a closed output pipe need the real ``procvisor`` command.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from procvisor.cli import main
from procvisor.daemon._api import create_app
from procvisor.daemon._server import SOCKET_NAME, ApiServer
from procvisor.daemon._token import load_or_create_token
from procvisor.daemon.config import ConfigError, ConfigProblem

PROCVISOR = os.path.join(os.path.dirname(sys.executable), "procvisor")

CONFIG = """\
[daemon]
state_dir = "state"
{extra}
[services.web]
command = ["sleep", "1000"]
instances = 2

[services.worker]
command = ["sleep", "1000"]
"""

STATUS = [
    {
        "name": "web:0",
        "service": "web",
        "instance": 0,
        "state": "running",
        "pid": 4242,
        "uptime": 3725.0,
        "restarts": 2,
        "last_exit": {
            "pid": 41,
            "code": 1,
            "signal": None,
            "at": 1700000000.0,
            "reason": "exit code 1",
        },
        "health": "healthy",
        "cpu_percent": 1.25,
        "rss": 15 * 1024 * 1024,
        "reason": "",
        "status_text": "serving 3 clients",
    },
    {
        "name": "web:1",
        "service": "web",
        "instance": 1,
        "state": "fatal",
        "pid": None,
        "uptime": None,
        "restarts": 5,
        "last_exit": {
            "pid": 42,
            "code": None,
            "signal": "SIGKILL",
            "at": 1700000000.0,
            "reason": "killed by SIGKILL",
        },
        "health": None,
        "cpu_percent": None,
        "rss": None,
        "reason": "5 restarts in 60s; trying again in 5m",
        "status_text": None,
    },
    {
        "name": "cron:0",
        "service": "cron",
        "instance": 0,
        "state": "fatal",
        "pid": None,
        "uptime": None,
        "restarts": 0,
        "last_exit": {
            "pid": None,
            "code": None,
            "signal": None,
            "at": 1700000000.0,
            "reason": "cannot start: program 'crond' not found in PATH (/usr/bin:/bin)",
        },
        "health": None,
        "cpu_percent": None,
        "rss": None,
        "reason": "cannot start: program 'crond' not found in PATH (/usr/bin:/bin); fatal",
        "status_text": None,
    },
]


class FakeControl:
    """Answers as the daemon would and records every call."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.calls: list[tuple[Any, ...]] = []
        self.pid = os.getpid()
        self.reload_error: ConfigError | None = None
        self.on_down: Callable[[], None] = lambda: None

    def _check(self, targets: list[str]) -> list[str]:
        names = []
        for target in targets:
            service, _, index = target.partition(":")
            if service == "all":
                names += ["web:0", "web:1", "worker:0"]
            elif service not in {"web", "worker"}:
                raise LookupError(f"no service {service!r}; services: web, worker")
            elif index:
                names.append(target)
            else:
                names += ["web:0", "web:1"] if service == "web" else ["worker:0"]
        return names

    def info(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "version": "0.1.0",
            "config": "procvisor.toml",
            "state_dir": "state",
            "started_at": 1700000000.0,
        }

    def status(self, service: str | None) -> list[dict[str, Any]]:
        self.calls.append(("status", service))
        if service is not None:
            self._check([service])
        return [item for item in STATUS if service in (None, item["service"])]

    async def start(self, targets: list[str]) -> list[str]:
        self.calls.append(("start", targets))
        return self._check(targets)

    async def stop(self, targets: list[str]) -> list[str]:
        self.calls.append(("stop", targets))
        self._check(targets)
        return []  # already stopped

    async def restart(self, targets: list[str], rolling: bool) -> list[str]:
        self.calls.append(("restart", targets, rolling))
        return self._check(targets)

    async def scale(self, service: str, instances: int) -> list[str]:
        self.calls.append(("scale", service, instances))
        if instances > 8:
            raise ValueError(f"instances: at most 8, not {instances}")
        return [f"{service}:{i}" for i in range(2, instances)]

    def signal(self, targets: list[str], sig: int) -> list[str]:
        self.calls.append(("signal", targets, sig))
        return self._check(targets)

    def log_files(self, target: str, stream: str) -> list[tuple[str, Path, int]]:
        return [(name, self.log_dir / f"{name}.{stream}", 0) for name in self._check([target])]

    def events(self, service: str | None, limit: int, after: int | None) -> list[dict[str, Any]]:
        self.calls.append(("events", service, limit, after))
        ts = time.mktime((2024, 5, 17, 14, 3, 9, 0, 0, -1))
        return [
            {
                "id": 1,
                "ts": ts,
                "service": None,
                "instance": None,
                "kind": "daemon-started",
                "message": "procvisor 0.1.0",
                "data": {},
            },
            {
                "id": 2,
                "ts": ts + 1,
                "service": "web",
                "instance": 1,
                "kind": "exited",
                "message": "killed by SIGKILL",
                "data": {},
            },
        ]

    async def reload(self) -> dict[str, list[str]]:
        if self.reload_error is not None:
            raise self.reload_error
        return {
            "started": ["new"],
            "stopped": ["old"],
            "restarted": [],
            "scaled": ["worker=2"],
            "unchanged": ["web"],
        }

    def down(self) -> None:
        self.calls.append(("down",))
        self.on_down()


class BackgroundDaemon:
    """An ``ApiServer`` on ``socket_path`` run by an event loop in a thread."""

    def __init__(self, socket_path: Path, control: FakeControl) -> None:
        self.control = control
        self.api = ApiServer(socket_path, create_app(control), grace=0.2)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> BackgroundDaemon:
        self._thread.start()
        self.call(self.api.start())
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            self.call(self.api.close())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()

    def call(self, coroutine: Any) -> Any:
        """Run ``coroutine`` on the server's loop and wait for its result."""
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        return future.result(10)

    def close_soon(self) -> None:
        """Close the server from its own loop (what ``down`` makes the daemon do)."""
        self.loop.call_soon_threadsafe(lambda: self.loop.create_task(self.api.close()))


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "state").mkdir(mode=0o700)
    (tmp_path / "logs").mkdir()
    path = tmp_path / "procvisor.toml"
    path.write_text(CONFIG.format(extra=""))
    return path


@pytest.fixture
def daemon(config: Path) -> Iterator[BackgroundDaemon]:
    control = FakeControl(config.parent / "logs")
    with BackgroundDaemon(config.parent / "state" / SOCKET_NAME, control) as background:
        yield background


def invoke(config: Path, *args: str) -> Result:
    """``procvisor ARGS -c CONFIG`` in process."""
    result = CliRunner().invoke(main, [*args, "-c", str(config)], prog_name="procvisor")
    assert "Traceback" not in result.output + result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def one_error_line(result: Result) -> str:
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("procvisor: "), lines[0]
    return lines[0]


# --------------------------------------------------------------------------- no daemon


def test_without_a_daemon_one_line_says_how_to_start_it(config: Path) -> None:
    result = invoke(config, "status")
    assert result.exit_code == 3
    state = config.parent / "state"
    assert one_error_line(result) == (
        f"procvisor: no daemon running for {config} (state dir {state}); "
        f"start it with: procvisor up -c {config} -d"
    )


def test_a_stale_socket_counts_as_no_daemon(config: Path) -> None:
    import socket  # noqa: PLC0415

    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(str(config.parent / "state" / SOCKET_NAME))
    result = invoke(config, "stop", "web")
    assert result.exit_code == 3
    assert "no daemon running" in one_error_line(result)


def test_an_invalid_config_is_reported_line_by_line_with_status_2(tmp_path: Path) -> None:
    config = tmp_path / "procvisor.toml"
    config.write_text("[services.web]\ninstances = 'x'\n")
    result = invoke(config, "status")
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 2
    assert all(line.startswith(f"procvisor: {config}: services.web.") for line in lines)


def test_a_missing_config_is_one_line_with_status_2(tmp_path: Path) -> None:
    result = invoke(tmp_path / "nope.toml", "status")
    assert result.exit_code == 2
    assert one_error_line(result) == f"procvisor: {tmp_path / 'nope.toml'}: no such file"


# --------------------------------------------------------------------------- status


def test_status_is_an_aligned_table(daemon: BackgroundDaemon, config: Path) -> None:
    result = invoke(config, "status")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == [
        "NAME    STATE    PID   UPTIME  RESTARTS  LAST-EXIT    HEALTH   CPU   MEM",
        "web:0   running  4242  1h2m    2         exit 1       healthy  1.2%  15M",
        "web:1   fatal    -     -       5         SIGKILL      -        -     -",
        "cron:0  fatal    -     -       0         not started  -        -     -",
        "web:1: 5 restarts in 60s; trying again in 5m",
        "cron:0: cannot start: program 'crond' not found in PATH (/usr/bin:/bin); fatal",
        "web:0 says: serving 3 clients",
    ]


def test_status_of_a_running_daemon_loads_neither_the_config_models_nor_asyncio(
    daemon: BackgroundDaemon, config: Path
) -> None:
    # A fresh interpreter: this one has loaded everything already.
    script = (
        "import sys\n"
        "from procvisor.cli import main\n"
        "try:\n"
        "    main(['status', '-c', sys.argv[1]], standalone_mode=False)\n"
        "finally:\n"
        "    loaded = ('pydantic', 'asyncio', 'procvisor.daemon.config', 'procvisor.process')\n"
        "    print([m for m in loaded if m in sys.modules], file=sys.stderr)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "web:0" in proc.stdout
    assert proc.stderr.strip() == "[]"


def test_a_running_daemon_is_reached_while_its_config_is_invalid(
    daemon: BackgroundDaemon, config: Path
) -> None:
    config.write_text(config.read_text() + "\n[services.web.backoff]\ninitial = 'soon'\n")
    assert "web:0" in invoke(config, "status").stdout
    # Commands that need the file itself still report it.
    result = invoke(config, "token")
    assert result.exit_code == 2
    assert "services.web.backoff.initial" in one_error_line(result)


def test_status_json_is_the_apis_answer(daemon: BackgroundDaemon, config: Path) -> None:
    result = invoke(config, "status", "web", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == [item for item in STATUS if item["service"] == "web"]
    assert daemon.control.calls == [("status", "web")]


def test_an_unknown_service_is_one_line_with_status_1(
    daemon: BackgroundDaemon, config: Path
) -> None:
    result = invoke(config, "status", "nope")
    assert result.exit_code == 1
    assert one_error_line(result) == "procvisor: no service 'nope'; services: web, worker"
    assert result.stdout == ""


# --------------------------------------------------------------------------- actions


def test_start_stop_restart(daemon: BackgroundDaemon, config: Path) -> None:
    started = invoke(config, "start", "web", "worker:0")
    assert (started.exit_code, started.stdout) == (0, "started web:0, web:1, worker:0\n")
    stopped = invoke(config, "stop", "all")
    assert (stopped.exit_code, stopped.stdout) == (0, "stopped nothing\n")
    restarted = invoke(config, "restart", "--rolling", "web:1", "--json")
    assert json.loads(restarted.stdout) == {"instances": ["web:1"]}
    assert daemon.control.calls == [
        ("start", ["web", "worker:0"]),
        ("stop", ["all"]),
        ("restart", ["web:1"], True),
    ]


def test_an_action_needs_a_target(daemon: BackgroundDaemon, config: Path) -> None:
    result = invoke(config, "start")
    assert result.exit_code == 2
    assert "missing argument" in one_error_line(result).lower()
    assert daemon.control.calls == []


def test_scale(daemon: BackgroundDaemon, config: Path) -> None:
    result = invoke(config, "scale", "web", "4")
    assert result.stdout == "scaled web to 4 instances (web:2, web:3)\n"
    refused = invoke(config, "scale", "web", "9")
    assert refused.exit_code == 1
    assert one_error_line(refused) == "procvisor: instances: at most 8, not 9"
    negative = invoke(config, "scale", "web", "-1")
    assert negative.exit_code == 2
    assert "-1 is not in the range x>=0" in one_error_line(negative)


@pytest.mark.parametrize(
    ("given", "label"), [("hup", "SIGHUP"), ("SIGUSR1", "SIGUSR1"), ("15", "SIGTERM")]
)
def test_signal(daemon: BackgroundDaemon, config: Path, given: str, label: str) -> None:
    result = invoke(config, "signal", "web", given)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"sent {label} to web:0, web:1\n"
    number = daemon.control.calls[-1][2]
    assert signal.Signals(number).name == label


def test_a_bad_signal_names_the_accepted_forms(daemon: BackgroundDaemon, config: Path) -> None:
    result = invoke(config, "signal", "web", "NOPE")
    assert result.exit_code == 1
    line = one_error_line(result)
    assert "'NOPE' is not a signal" in line and "'HUP'" in line


# --------------------------------------------------------------------------- events, logs


def test_events(daemon: BackgroundDaemon, config: Path) -> None:
    result = invoke(config, "events", "-n", "5")
    assert result.stdout.splitlines() == [
        "2024-05-17 14:03:09  daemon  daemon-started  procvisor 0.1.0",
        "2024-05-17 14:03:10  web:1   exited          killed by SIGKILL",
    ]
    as_json = invoke(config, "events", "web", "--json")
    assert [event["id"] for event in json.loads(as_json.stdout)] == [1, 2]
    assert daemon.control.calls == [("events", None, 5, None), ("events", "web", 50, None)]


def test_logs_prints_the_tail(daemon: BackgroundDaemon, config: Path) -> None:
    logs = config.parent / "logs"
    (logs / "web:0.stderr").write_bytes(b"a\nb\n")
    (logs / "web:1.stderr").write_bytes(b"c\n")
    (logs / "worker:0.stdout").write_bytes(b"1\n2\n3\n")
    assert invoke(config, "logs", "worker", "-n", "2").stdout == "2\n3\n"
    both = invoke(config, "logs", "web", "--stderr")
    assert both.stdout == "web:0 | a\nweb:0 | b\nweb:1 | c\n"
    unknown = invoke(config, "logs", "nope")
    assert unknown.exit_code == 1
    assert "no service 'nope'" in one_error_line(unknown)


def test_logs_points_to_stderr_when_stdout_is_empty(daemon: BackgroundDaemon, config: Path) -> None:
    logs = config.parent / "logs"
    (logs / "web:0.stdout").write_bytes(b"")
    (logs / "web:0.stderr").write_bytes(b"Traceback: it crashed\n")
    result = invoke(config, "logs", "web:0")
    assert result.exit_code == 0 and result.stdout == ""
    assert one_error_line(result) == (
        "procvisor: web:0 wrote nothing to stdout; its stderr has output: "
        "procvisor logs --stderr web:0"
    )
    # Nothing to point to: nothing is said.
    quiet = invoke(config, "logs", "worker")
    assert quiet.exit_code == 0 and quiet.stdout == quiet.stderr == ""


def _start_cli(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [PROCVISOR, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )


def test_logs_follow_ends_quietly_on_ctrl_c(daemon: BackgroundDaemon, config: Path) -> None:
    log = config.parent / "logs" / "worker:0.stdout"
    log.write_bytes(b"first\n")
    with _start_cli("logs", "worker", "-f", "-c", str(config)) as cli:
        try:
            assert cli.stdout is not None
            assert cli.stdout.readline() == b"first\n"
            with open(log, "ab") as file:
                file.write(b"second\n")
            assert cli.stdout.readline() == b"second\n"
            cli.send_signal(signal.SIGINT)
            _, stderr = cli.communicate(timeout=10)
        finally:
            cli.kill()
    assert cli.returncode == 130
    assert stderr == b""


def test_logs_into_a_closed_pipe_ends_quietly(daemon: BackgroundDaemon, config: Path) -> None:
    log = config.parent / "logs" / "worker:0.stdout"
    log.write_bytes(b"first\n")
    with _start_cli("logs", "worker", "-f", "-c", str(config)) as cli:
        try:
            assert cli.stdout is not None and cli.stderr is not None
            assert cli.stdout.readline() == b"first\n"
            cli.stdout.close()  # as `| head -1` does once it has its line
            with open(log, "ab") as file:
                file.write(b"second\n")
            stderr = cli.stderr.read()
            cli.wait(10)
        finally:
            cli.kill()
    assert cli.returncode == 141
    assert stderr == b""


# --------------------------------------------------------------------------- reload


def test_reload_prints_what_changed(daemon: BackgroundDaemon, config: Path) -> None:
    result = invoke(config, "reload")
    assert (result.exit_code, result.stdout) == (
        0,
        "started: new\nstopped: old\nscaled: worker=2\n",
    )


def test_an_invalid_config_on_reload_is_each_line_with_status_2(
    daemon: BackgroundDaemon, config: Path
) -> None:
    daemon.control.reload_error = ConfigError(
        "procvisor.toml",
        [
            ConfigProblem("services.web.instances", "expected an integer"),
            ConfigProblem("services.db", "unknown dependency 'cache'"),
        ],
    )
    result = invoke(config, "reload")
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "procvisor: procvisor.toml: services.web.instances: expected an integer",
        "procvisor: procvisor.toml: services.db: unknown dependency 'cache'",
    ]


# --------------------------------------------------------------------------- down


@pytest.fixture
def stand_in() -> Iterator[subprocess.Popen[bytes]]:
    """A process standing in for the daemon's pid, for ``down`` to watch."""
    process = subprocess.Popen(["sleep", "60"])
    yield process
    process.kill()
    process.wait()


def test_down_waits_until_the_daemon_is_gone(
    daemon: BackgroundDaemon, config: Path, stand_in: subprocess.Popen[bytes]
) -> None:
    daemon.control.pid = stand_in.pid

    def down() -> None:  # what the daemon does: stop, remove its socket, exit
        daemon.close_soon()
        stand_in.terminate()

    daemon.control.on_down = down
    result = invoke(config, "down")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"daemon stopped (pid {stand_in.pid})\n"
    assert stand_in.poll() is not None
    assert daemon.control.calls == [("down",)]
    assert invoke(config, "status").exit_code == 3


def test_down_gives_up_after_its_timeout(
    daemon: BackgroundDaemon, config: Path, stand_in: subprocess.Popen[bytes]
) -> None:
    daemon.control.pid = stand_in.pid
    started = time.monotonic()
    result = invoke(config, "down", "--timeout", "200ms")
    assert result.exit_code == 124
    assert time.monotonic() - started < 5
    assert one_error_line(result) == (
        f"procvisor: the daemon (pid {stand_in.pid}) is still stopping after 0.2s; it goes on "
        "stopping its services (see 'procvisor status')"
    )


def test_down_with_a_bad_timeout_is_a_usage_error(config: Path) -> None:
    result = invoke(config, "down", "--timeout", "soon")
    assert result.exit_code == 2
    assert "--timeout" in one_error_line(result)


# --------------------------------------------------------------------------- token


def test_token_without_http_says_so(config: Path) -> None:
    result = invoke(config, "token")
    assert result.exit_code == 1
    assert one_error_line(result) == (
        f"procvisor: [daemon] http is not set in {config}: the API is only on the Unix "
        "socket, which needs no token"
    )


def test_token_prints_the_daemons_token(config: Path) -> None:
    config.write_text(CONFIG.format(extra='http = "127.0.0.1:9876"\n'))
    missing = invoke(config, "token")
    assert missing.exit_code == 1
    assert "the daemon creates it when it starts" in one_error_line(missing)
    token = load_or_create_token(config.parent / "state" / "token")
    result = invoke(config, "token")
    assert (result.exit_code, result.stdout) == (0, token + "\n")


def test_token_file_in_the_config_is_used(config: Path) -> None:
    config.write_text(
        CONFIG.format(extra='http = "127.0.0.1:9876"\ntoken_file = "secret/api.token"\n')
    )
    token = load_or_create_token(config.parent / "secret" / "api.token")
    assert invoke(config, "token").stdout == token + "\n"


def test_help_lists_the_control_commands() -> None:
    result = CliRunner().invoke(main, ["--help"], prog_name="procvisor")
    for name in ("status", "start", "stop", "restart", "scale", "signal", "logs", "events"):
        assert f"  {name} " in result.stdout
    for name in ("reload", "down", "token"):
        assert f"  {name} " in result.stdout
