"""The daemon's config: the example file, every kind of error, and ``check-config``."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import pickle
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydantic import BaseModel

import procvisor
from procvisor.cli._config import check_config, startup
from procvisor.daemon import config as module
from procvisor.daemon._jobs import jobs_config
from procvisor.daemon._specs import service_specs
from procvisor.daemon.config import (
    Config,
    ConfigError,
    ConfigProblem,
    Endpoint,
    ExecProbe,
    HttpProbe,
    TcpProbe,
    check_runtime,
    find_config,
    load_config,
    parse_config,
    state_dir,
)
from procvisor.supervisor import ChangeWatch

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EXAMPLE = EXAMPLES / "procvisor.toml"


def problems(text: str, *, source: str = "procvisor.toml") -> list[str]:
    """The error lines ``parse_config`` reports for ``text``."""
    with pytest.raises(ConfigError) as info:
        parse_config(text, source=source)
    lines = str(info.value).splitlines()
    assert lines == info.value.lines()
    assert all(line.startswith(f"{source}: ") for line in lines)
    return lines


def only_problem(text: str) -> str:
    """The single error line ``parse_config`` reports for ``text``."""
    lines = problems(text)
    assert len(lines) == 1, lines
    return lines[0]


def service(body: str, name: str = "web") -> Config:
    """A config of one service whose table holds ``body`` (plus a command if none)."""
    if "command" not in body:
        body = 'command = ["python3", "app.py"]\n' + body
    return parse_config(f"[services.{name}]\n{body}", base_dir="/srv")


# ----------------------------------------------------------------------------- the example


def test_example_file_validates() -> None:
    config = load_config(EXAMPLE)
    assert list(config.services) == ["web", "worker", "job"]
    assert config.start_order() == ("web", "worker", "job")
    assert config.stop_order() == ("job", "worker", "web")
    web, worker, job = config.services.values()
    assert isinstance(web.health, HttpProbe)
    assert web.health.url == "http://127.0.0.1:8765/"
    assert web.cwd == EXAMPLES
    assert web.limits.memory == 512 * 1024**2
    assert web.umask == 0o022
    assert worker.command == ("python3", "worker.py")
    assert worker.instances == 2
    assert worker.stop_signal == signal.SIGINT
    assert worker.hooks.post_stop is not None
    assert worker.hooks.post_stop[:2] == ("python3", "-c")
    assert job.depends_on == {"worker": "started"}


def test_example_job_runs_to_success() -> None:
    job = load_config(EXAMPLE).services["job"]
    result = procvisor.run(
        job.command,
        cwd=job.cwd,
        env=job.env,
        inherit_env=job.inherit_env,
        limits=job.limits,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "task 3 done" in result.stdout_text
    assert result.returncode in job.success_exit_codes


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as http.server does
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


async def test_example_web_answers_its_probe() -> None:
    web = load_config(EXAMPLE).services["web"]
    assert isinstance(web.health, HttpProbe)
    if not _port_free(8765):
        pytest.skip("port 8765 is in use on this machine")

    def probe() -> int | None:
        assert isinstance(web.health, HttpProbe)
        try:
            with urllib.request.urlopen(web.health.url, timeout=web.health.timeout) as response:
                return int(response.status)
        except (urllib.error.URLError, ConnectionError):
            return None

    async with await procvisor.spawn(
        web.command, cwd=web.cwd, env=web.env, stop_signal=web.stop_signal, grace=2
    ) as proc:
        deadline = time.monotonic() + 20
        status = None
        while status is None and proc.running and time.monotonic() < deadline:
            status = await asyncio.to_thread(probe)
            if status is None:
                await asyncio.sleep(0.05)
        assert status == 200


# ----------------------------------------------------------------------------- values


@pytest.mark.parametrize(
    ("body", "attribute", "expected"),
    [
        ('min_uptime = "250ms"', "min_uptime", 0.25),
        ('stop_timeout = "1m30s"', "stop_timeout", 90.0),
        ("stop_timeout = 3", "stop_timeout", 3.0),
        ('cooldown = "1h"', "cooldown", 3600.0),
        ('restart_window = "2.5s"', "restart_window", 2.5),
        ('stop_signal = "SIGINT"', "stop_signal", signal.SIGINT),
        ("stop_signal = 9", "stop_signal", signal.SIGKILL),
        ('umask = "0027"', "umask", 0o027),
        ("umask = 0o077", "umask", 0o077),
        ('user = "1000"', "user", 1000),
        ('user = "www"', "user", "www"),
        ("success_exit_codes = [0, 3]", "success_exit_codes", (0, 3)),
        ('depends_on = ["web"]', "depends_on", {"web": "started"}),
        ('depends_on = { web = "started" }', "depends_on", {"web": "started"}),
    ],
)
def test_values_are_normalized(body: str, attribute: str, expected: object) -> None:
    config = parse_config(
        f'[services.web]\ncommand = ["true"]\n[services.api]\ncommand = ["true"]\n{body}'
    )
    assert getattr(config.services["api"], attribute) == expected


def test_durations_become_seconds_and_sizes_bytes() -> None:
    config = service(
        'backoff = { initial = "100ms", max = "1m", multiplier = 3, jitter = 0 }\n'
        'logs = { max_size = "1.5M", backups = 2 }\n'
        'limits = { memory = "1G", cpu_time = "90s", open_files = 64, core = 0, cpus = 1.5, '
        "nice = 5 }\n"
        "[services.web.health]\n"
        'type = "tcp"\nport = 8000\ninterval = "2s"\ntimeout = "500ms"\nstart_period = "1m"\n'
        '[services.web.hooks]\npost_stop = ["true"]\ntimeout = "5s"\n'
    )
    web = config.services["web"]
    assert (web.backoff.initial, web.backoff.max, web.backoff.multiplier) == (0.1, 60.0, 3.0)
    assert web.backoff.jitter == 0.0
    assert (web.logs.max_size, web.logs.backups) == (int(1.5 * 1024**2), 2)
    assert web.limits == procvisor.Limits(
        memory="1G", cpu_time=90, open_files=64, core=0, cpus=1.5, nice=5
    )
    assert isinstance(web.health, TcpProbe)
    assert (web.health.host, web.health.port) == ("127.0.0.1", 8000)
    assert (web.health.interval, web.health.timeout, web.health.start_period) == (2.0, 0.5, 60.0)
    assert web.hooks.timeout == 5.0


def test_defaults() -> None:
    web = service("").services["web"]
    assert web.instances == 1
    assert web.restart == "on-failure"
    assert web.success_exit_codes == (0,)
    assert (web.min_uptime, web.max_restarts, web.restart_window, web.cooldown) == (
        1.0,
        5,
        60.0,
        300.0,
    )
    assert (web.stop_signal, web.stop_timeout) == (signal.SIGTERM, 10.0)
    assert (web.backoff.initial, web.backoff.max) == (0.5, 30.0)
    assert web.hooks.timeout == 30.0
    assert web.health is None
    assert web.limits == procvisor.Limits()
    assert (web.logs.max_size, web.logs.backups) == (10 * 1024**2, 5)
    assert web.env == {}
    assert web.inherit_env and web.autostart and not web.shell
    assert web.cwd == Path("/srv")


def test_every_field_is_described() -> None:
    models: list[type[BaseModel]] = [
        module.Config,
        module.DaemonSection,
        module.Service,
        module.Backoff,
        module.Hooks,
        HttpProbe,
        TcpProbe,
        ExecProbe,
        module.Logs,
    ]
    for model in models:
        assert model.__doc__
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"
    schema = Config.model_json_schema()["$defs"]["Service"]["properties"]
    assert schema["command"]["description"]
    assert {"type": "string"} in schema["command"]["anyOf"]
    assert {"type": "string"} in schema["stop_timeout"]["anyOf"]
    limit_fields = {field.name for field in dataclasses.fields(procvisor.Limits)}
    assert set(schema["limits"]["properties"]) == limit_fields


def test_string_command_is_split_with_shlex() -> None:
    web = service('command = "python3 -c \'print(1)\' --flag=\\"a b\\""').services["web"]
    assert web.command == ("python3", "-c", "print(1)", "--flag=a b")


def test_shell_true_runs_strings_through_sh() -> None:
    web = service(
        'command = "echo $HOME | tr a-z A-Z"\nshell = true\n'
        'hooks = { pre_start = "test -d /tmp && echo ok", post_stop = ["true"] }\n'
        'health = { type = "exec", command = "exit 0" }'
    ).services["web"]
    assert web.command == ("/bin/sh", "-c", "echo $HOME | tr a-z A-Z")
    assert web.hooks.pre_start == ("/bin/sh", "-c", "test -d /tmp && echo ok")
    assert web.hooks.post_stop == ("true",)
    assert isinstance(web.health, ExecProbe)
    assert web.health.command == ("/bin/sh", "-c", "exit 0")


def test_env_values_become_strings() -> None:
    web = service('env = { A = "x", PORT = 8000, RATIO = 0.5, EMPTY = "" }').services["web"]
    assert web.env == {"A": "x", "PORT": "8000", "RATIO": "0.5", "EMPTY": ""}


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    file = tmp_path / "procvisor.toml"
    file.write_text(
        '[daemon]\nstate_dir = "run"\nhttp = "[::1]:9876"\n'
        '[services.web]\ncommand = ["true"]\ncwd = "app"\n'
        '[services.abs]\ncommand = ["true"]\ncwd = "/"\n'
    )
    config = load_config(file)
    assert config.services["web"].cwd == tmp_path / "app"
    assert config.services["abs"].cwd == Path("/")
    assert config.daemon.state_dir == tmp_path / "run"
    assert config.daemon.http == Endpoint("::1", 9876)
    assert str(config.daemon.http) == "[::1]:9876"


def test_a_validated_config_validates_again_unchanged() -> None:
    config = parse_config(
        EXAMPLE.read_text().replace('# http = "127', 'http = "127'), base_dir=EXAMPLES
    )
    assert Config.model_validate(config.model_dump()) == config
    assert Config.model_validate_json(config.model_dump_json()) == config
    assert config.model_dump(mode="json")["daemon"]["http"] == "127.0.0.1:9876"
    assert config.model_dump()["services"]["web"]["limits"] == {
        "memory": 512 * 1024**2,
        "open_files": 1024,
    }


def test_models_are_frozen() -> None:
    web = service("").services["web"]
    with pytest.raises(ValueError, match="frozen"):
        web.instances = 3


# ----------------------------------------------------------------------------- errors


def test_an_error_names_the_file_the_key_path_and_the_accepted_forms() -> None:
    line = only_problem('[services.web]\ncommand = ["x"]\nbackoff = { initial = "fast" }')
    assert line.startswith("procvisor.toml: services.web.backoff.initial: 'fast' is not a duration")
    assert "use a number of seconds or a string like '250ms'" in line


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('min_uptime = "soon"', "services.web.min_uptime: 'soon' is not a duration; use"),
        ("stop_timeout = -1", "services.web.stop_timeout: -1 must be a duration of 0 or more"),
        ("restart_window = 0", "services.web.restart_window: 0 must be more than 0 seconds"),
        ('logs = { max_size = "big" }', "services.web.logs.max_size: 'big' is not a size; use"),
        ('stop_signal = "TREM"', "services.web.stop_signal: 'TREM' is not a signal; use a name"),
        ('limits = { memory = "lots" }', "services.web.limits.memory: 'lots' is not a size"),
        ("limits = { open_files = 1 }", "services.web.limits.open_files: 1 must be 3 or more"),
        ('limits = { cpus = "half" }', "services.web.limits.cpus: 'half' is not a number of CPUs"),
        (
            'watchdog = "10s"',
            "services.web.watchdog: the pings come through $NOTIFY_SOCKET: set notify = true, "
            "or remove watchdog",
        ),
        ("notify = true\nstart_timeout = 0", "services.web.start_timeout: 0 must be more than 0"),
        (
            "restart_on_change = { paths = [] }",
            "services.web.restart_on_change.paths: is empty; give at least one file or directory",
        ),
        (
            'restart_on_change = { paths = ["no-such-dir"] }',
            "services.web.restart_on_change.paths: '",
        ),
        ('umask = "999"', "services.web.umask: '999' is not an octal umask; use an octal"),
        ("instances = 0", "services.web.instances: 0 must be 1 or more"),
        (
            'restart = "sometimes"',
            "services.web.restart: 'sometimes' is not accepted; use 'always'",
        ),
        ("success_exit_codes = [0, 256]", "services.web.success_exit_codes[1]: 256 must be 255"),
        (
            'backoff = { initial = "1m" }',
            "services.web.backoff.initial: '1m' is more than max ('30s')",
        ),
        ("backoff = { jitter = 2 }", "services.web.backoff.jitter: 2 must be 1.0 or less"),
        ('env = { "A=B" = "x" }', 'services.web.env."A=B": is not a valid environment variable'),
    ],
)
def test_bad_values(body: str, expected: str) -> None:
    line = only_problem(f'[services.web]\ncommand = ["x"]\n{body}')
    assert f"procvisor.toml: {expected}" in line


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            'instances = "2"',
            "services.web.instances: '2' is not a count; give a whole number or 'max'",
        ),
        ('autostart = "yes"', "services.web.autostart: expected true or false, got a string"),
        (
            "depends_on = 'db'",
            "services.web.depends_on: expected an array of service names or a table of "
            "name = 'started' | 'healthy' | 'completed', got a string 'db'",
        ),
        ("backoff = 5", "services.web.backoff: expected a table, got an integer 5"),
        ("env = { A = true }", "services.web.env.A: expected a string, got a boolean true"),
        ("min_uptime = true", "services.web.min_uptime: expected a duration, got a boolean true"),
        ('backoff = { multiplier = "2" }', "services.web.backoff.multiplier: expected a number"),
        ("user = 1.5", "services.web.user: expected a name or a numeric id, got a float 1.5"),
    ],
)
def test_wrong_types_name_the_expected_type(body: str, expected: str) -> None:
    assert f"procvisor.toml: {expected}" in only_problem(f'[services.web]\ncommand = ["x"]\n{body}')


def test_instances_max_is_one_per_usable_cpu() -> None:
    assert service('instances = "max"').services["web"].instances == len(os.sched_getaffinity(0))


def test_notify_settings_reach_the_supervisor() -> None:
    config = service('notify = true\nstart_timeout = "2m"\nwatchdog = "15s"\n')
    [web] = service_specs(config)
    assert (web.notify, web.start_timeout, web.watchdog) == (True, 120.0, 15.0)
    [plain] = service_specs(service(""))
    assert (plain.notify, plain.start_timeout, plain.watchdog) == (False, 90.0, None)


def test_restart_on_change_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    body = (
        '[services.web]\ncommand = ["x"]\nrestart_on_change = { paths = "src", ignore = "*.log" }'
    )
    [web] = service_specs(parse_config(body, base_dir=tmp_path))
    assert web.restart_on_change == ChangeWatch((tmp_path / "src",), ("*.log",), 0.5)
    with pytest.raises(ConfigError) as info:
        parse_config(body.replace('"src"', '"nope"'), base_dir=tmp_path)
    assert str(info.value) == (
        f"procvisor.toml: services.web.restart_on_change.paths: '{tmp_path / 'nope'}' does not "
        "exist; give a file or directory"
    )


def test_jobs_enforce_names_the_requests_made_limits() -> None:
    config = parse_config('[jobs]\nenforce = ["cpu", "memory"]\n')
    assert jobs_config(config).enforce == ("cpu", "memory")
    assert jobs_config(parse_config("")).enforce == ()
    line = only_problem('[jobs]\nenforce = ["disk"]\n')
    assert line == "procvisor.toml: jobs.enforce[0]: 'disk' is not accepted; use 'cpu' or 'memory'"


def test_unknown_key_suggests_the_close_one() -> None:
    line = only_problem('[services.web]\ncommand = ["x"]\nintances = 2')
    assert line == "procvisor.toml: services.web.intances: unknown key; did you mean 'instances'?"


def test_unknown_key_without_a_close_one_lists_the_accepted_keys() -> None:
    line = only_problem('[services.web]\ncommand = ["x"]\nbackoff = { zzz = 1 }')
    assert line == (
        "procvisor.toml: services.web.backoff.zzz: unknown key; "
        "accepted keys: initial, max, multiplier, jitter"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[servces.web]\ncommand = ["x"]', "servces: unknown key; did you mean 'services'?"),
        ('[deamon]\nstate_dir = "x"', "deamon: unknown key; did you mean 'daemon'?"),
        ('[daemon]\nhtpp = "x"', "daemon.htpp: unknown key; did you mean 'http'?"),
        (
            '[services.web]\ncommand = ["x"]\nlimits = { mem = "1G" }',
            "services.web.limits.mem: unknown key; did you mean 'memory'?",
        ),
        (
            '[services.web]\ncommand = ["x"]\n[services.web.hooks]\nprestart = "x"',
            "services.web.hooks.prestart: unknown key; did you mean 'pre_start'?",
        ),
        (
            '[services.web]\ncommand = ["x"]\n[services.web.health]\ntype = "tcp"\nport = 1\n'
            'url = "http://x/"',
            "services.web.health.url: unknown key; accepted keys: interval,",
        ),
    ],
)
def test_unknown_keys_everywhere(text: str, expected: str) -> None:
    assert f"procvisor.toml: {expected}" in only_problem(text)


@pytest.mark.parametrize(
    ("health", "expected"),
    [
        ('{ type = "grpc" }', "health.type: 'grpc' is not accepted; use one of 'http', 'tcp'"),
        ('{ url = "http://x/" }', "health.type: is required but missing; use one of 'http'"),
        ('{ type = "tcp" }', "health.port: is required but missing"),
        ('{ type = "exec" }', "health.command: is required but missing"),
        ('{ type = "http", url = "ftp://x" }', "health.url: 'ftp://x' is not an http URL"),
        ('{ type = "tcp", port = 70000 }', "health.port: 70000 must be 65535 or less"),
        (
            '{ type = "http", url = "http://x/", failure_threshold = 0 }',
            "health.failure_threshold: 0 must be 1 or more",
        ),
        (
            '{ type = "http", url = "http://x/", on_unhealthy = "kill" }',
            "health.on_unhealthy: 'kill' is not accepted; use 'restart' or 'none'",
        ),
    ],
)
def test_health_probe_errors(health: str, expected: str) -> None:
    line = only_problem(f'[services.web]\ncommand = ["x"]\nhealth = {health}')
    assert f"procvisor.toml: services.web.{expected}" in line


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("[]", "services.web.command: is empty; give the program and its arguments"),
        ('""', "services.web.command: is empty; give the program and its arguments"),
        ('"   "', "services.web.command: is empty"),
        ('["", "x"]', "services.web.command[0]: the program name is empty"),
        ('["python3", 3]', "services.web.command[1]: expected a string, got an integer 3"),
        ("42", "services.web.command: expected a string or an array of strings"),
        ('"echo \'a"', "cannot be split into arguments (no closing quotation)"),
    ],
)
def test_bad_commands(command: str, expected: str) -> None:
    assert expected in only_problem(f"[services.web]\ncommand = {command}")


def test_missing_command() -> None:
    line = only_problem("[services.web]\ninstances = 2")
    assert line == "procvisor.toml: services.web.command: is required but missing"


def test_shell_true_needs_a_string_command() -> None:
    line = only_problem('[services.web]\ncommand = ["echo", "hi"]\nshell = true')
    assert "services.web.shell: shell = true runs a string command through /bin/sh" in line


@pytest.mark.parametrize("name", ["my web", "web:0", "wéb", "-web", "a.b"])
def test_bad_service_names(name: str) -> None:
    line = only_problem(f'[services."{name}"]\ncommand = ["x"]')
    assert f"{name!r} is not a valid service name; use letters, digits, '-' and '_'" in line


def test_unknown_dependency_suggests_a_service() -> None:
    line = only_problem(
        '[services.db]\ncommand = ["x"]\n[services.web]\ncommand = ["x"]\ndepends_on = ["dbb"]'
    )
    assert (
        line
        == "procvisor.toml: services.web.depends_on: 'dbb' is not a service; did you mean 'db'?"
    )


def test_unknown_dependency_lists_the_services() -> None:
    line = only_problem('[services.web]\ncommand = ["x"]\ndepends_on = ["queue"]')
    assert line.endswith("'queue' is not a service; defined services: web")


def test_restart_cron_takes_a_cron_expression() -> None:
    config = service('restart_cron = "0  4 * * *"')
    assert config.services["web"].restart_cron == "0 4 * * *"
    assert only_problem('[services.web]\ncommand = ["x"]\nrestart_cron = "every night"') == (
        "procvisor.toml: services.web.restart_cron: 'every night' is not a cron expression; "
        "use 5 fields (minute hour day-of-month month day-of-week), e.g. '*/5 * * * *', or 6 "
        "with seconds last, e.g. '* * * * * */10'"
    )


def test_a_healthy_dependency_needs_a_probe_and_a_known_condition() -> None:
    db = '[services.db]\ncommand = ["x"]\n'
    probed = db + 'health = { type = "tcp", port = 5432 }\n'
    app = '[services.app]\ncommand = ["x"]\ndepends_on = { db = "%s" }\n'
    assert parse_config(probed + app % "healthy").services["app"].depends_on == {"db": "healthy"}
    assert only_problem(db + app % "healthy") == (
        "procvisor.toml: services.app.depends_on.db: 'healthy' needs a health probe, and "
        "[services.db] has none; add [services.db.health] or use 'started'"
    )
    assert only_problem(probed + app % "ready") == (
        "procvisor.toml: services.app.depends_on.db: 'ready' is not accepted; use 'started', "
        "'healthy' or 'completed'"
    )


def test_a_completed_dependency_must_be_able_to_end() -> None:
    app = '[services.app]\ncommand = ["x"]\ndepends_on = { migrate = "completed" }\n'
    migrate = '[services.migrate]\ncommand = ["x"]\nrestart = "%s"\n'
    [_, app_spec] = service_specs(parse_config(migrate % "never" + app))
    assert app_spec.wait_completed == ("migrate",) and app_spec.depends_on == ("migrate",)
    assert only_problem(migrate % "always" + app) == (
        "procvisor.toml: services.app.depends_on.migrate: 'completed' waits for migrate to "
        "end, and its restart = 'always' starts it again; use restart = 'on-failure' or "
        "'never' there, or 'started' here"
    )


def test_dependency_cycle_is_named_in_order() -> None:
    text = "".join(
        f'[services.{name}]\ncommand = ["x"]\ndepends_on = ["{dependency}"]\n'
        for name, dependency in [("a", "b"), ("b", "c"), ("c", "a")]
    )
    line = only_problem(text)
    assert line.startswith(
        "procvisor.toml: services.a.depends_on: dependency cycle: a -> b -> c -> a"
    )


def test_self_dependency_is_a_cycle() -> None:
    line = only_problem('[services.a]\ncommand = ["x"]\ndepends_on = ["a"]')
    assert "services.a.depends_on: dependency cycle: a -> a" in line


def test_toml_syntax_error_names_line_and_column() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config('[services.web]\ncommand = ["x"]\ninstances = = 2\n', source="app.toml")
    error = info.value
    problem = error.problems[0]
    assert (problem.line, problem.column) == (3, 13)
    assert str(error).startswith("app.toml: line 3, column 13: invalid TOML: ")
    assert "\n" not in str(error)


@pytest.mark.parametrize("end", ["", "\n", "\ninstances = 1\n"])
def test_duplicate_key_is_a_syntax_error(end: str) -> None:
    line = only_problem(f'[services.web]\ncommand = ["x"]\ncommand = ["y"]{end}')
    assert line.startswith("procvisor.toml: line 3, column ")
    assert line.endswith("invalid TOML: Cannot overwrite a value")


def test_all_problems_are_reported_in_file_order() -> None:
    lines = problems(
        "[services.web]\n"
        'command = ["x"]\n'
        "intances = 2\n"
        'restart = "sometimes"\n'
        'depends_on = ["nope"]\n'
        "[services.worker]\n"
        "command = []\n"
        'stop_timeout = "x"\n'
    )
    assert [line.split(": ")[1] for line in lines] == [
        "services.web.intances",
        "services.web.restart",
        "services.web.depends_on",
        "services.worker.command",
        "services.worker.stop_timeout",
    ]


def test_config_error_survives_pickling() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("[services.web]\nintances = 2\n")
    error = info.value
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is ConfigError
    assert (copy.source, copy.path, copy.message) == (error.source, error.path, error.message)
    assert copy.problems == error.problems
    assert str(copy) == str(error)


def test_config_error_fields() -> None:
    error = ConfigError(
        "x.toml", [ConfigProblem("services.a.cwd", "bad"), ConfigProblem("", "worse", 2, 5)]
    )
    assert (error.source, error.path, error.message) == ("x.toml", "services.a.cwd", "bad")
    assert str(error) == "x.toml: services.a.cwd: bad\nx.toml: line 2, column 5: worse"
    with pytest.raises(ValueError, match="at least one problem"):
        ConfigError("x.toml", [])


# ----------------------------------------------------------------------------- runtime checks


def test_user_and_group_need_a_root_daemon() -> None:
    config = service('user = "www"\ngroup = "www"')
    with pytest.raises(ConfigError) as info:
        check_runtime(config, euid=1000)
    assert info.value.lines() == [
        "procvisor.toml: services.web.user: user = 'www' needs the daemon to run as root "
        "(it runs as uid 1000); remove user, or start procvisor as root",
        "procvisor.toml: services.web.group: group = 'www' needs the daemon to run as root "
        "(it runs as uid 1000); remove group, or start procvisor as root",
    ]


def test_unknown_user_and_group_are_reported_for_a_root_daemon() -> None:
    config = service('user = "no-such-user-x"\ngroup = "no-such-group-x"')
    with pytest.raises(ConfigError) as info:
        check_runtime(config, euid=0)
    assert [p.path for p in info.value.problems] == ["services.web.user", "services.web.group"]
    assert "no user 'no-such-user-x' on this system" in info.value.problems[0].message


def test_existing_user_and_numeric_ids_pass_for_a_root_daemon() -> None:
    check_runtime(service('user = "root"\ngroup = 0\ncwd = "/"'), euid=0)
    check_runtime(service('user = 12345\ncwd = "/"'), euid=0)


def test_load_config_checks_the_machine(tmp_path: Path) -> None:
    file = tmp_path / "procvisor.toml"
    file.write_text('[services.web]\ncommand = ["x"]\ncwd = "missing"\n')
    with pytest.raises(ConfigError) as info:
        load_config(file)
    assert str(info.value) == (
        f"{file}: services.web.cwd: '{tmp_path}/missing' is not a directory; "
        "create it or fix the path"
    )
    assert load_config(file, runtime=False).services["web"].cwd == tmp_path / "missing"


def test_load_config_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.toml: no such file$"):
        load_config(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b'# caf\xe9\n[services.web]\ncommand = ["x"]\n')
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        load_config(bad)


# ----------------------------------------------------------------------------- finding files


def test_find_config_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PROCVISOR_CONFIG", raising=False)
    for name in ("explicit.toml", "env.toml", "procvisor.toml"):
        (tmp_path / name).write_text("")
    monkeypatch.setenv("PROCVISOR_CONFIG", "env.toml")
    assert find_config("explicit.toml") == Path("explicit.toml")
    assert find_config(None) == Path("env.toml")
    monkeypatch.setenv("PROCVISOR_CONFIG", "")
    assert find_config(None) == Path("procvisor.toml")


def test_find_config_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PROCVISOR_CONFIG", raising=False)
    with pytest.raises(ConfigError) as info:
        find_config(None)
    assert str(info.value) == (
        f"procvisor.toml: not found in {tmp_path}; pass -c FILE or set $PROCVISOR_CONFIG"
    )
    with pytest.raises(ConfigError, match=r"^nope\.toml: no such file$"):
        find_config("nope.toml")
    monkeypatch.setenv("PROCVISOR_CONFIG", "gone.toml")
    with pytest.raises(ConfigError, match=r"^gone\.toml: no such file \(named by \$PROCVISOR"):
        find_config(None)
    with pytest.raises(ConfigError, match="is not a file"):
        find_config(str(tmp_path))


def test_state_dir_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PROCVISOR_STATE_DIR", raising=False)
    file = tmp_path / "conf" / "procvisor.toml"
    plain = parse_config("", base_dir=file.parent)
    assert state_dir(plain, file) == tmp_path / "conf" / ".procvisor"
    assert state_dir(plain, "procvisor.toml") == tmp_path / ".procvisor"
    monkeypatch.setenv("PROCVISOR_STATE_DIR", "from-env")
    assert state_dir(plain, file) == tmp_path / "from-env"
    named = parse_config('[daemon]\nstate_dir = "state"', base_dir=file.parent)
    assert state_dir(named, file) == tmp_path / "conf" / "state"


# ----------------------------------------------------------------------------- check-config


def test_check_config_ok() -> None:
    result = CliRunner().invoke(check_config, ["-c", str(EXAMPLE)])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{EXAMPLE}: OK (3 services: web, worker, job; 1 pool: upper)\n"


def test_check_config_uses_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = tmp_path / "one.toml"
    file.write_text(f'[services.solo]\ncommand = ["true"]\ncwd = "{tmp_path}"\n')
    monkeypatch.setenv("PROCVISOR_CONFIG", str(file))
    result = CliRunner().invoke(check_config, [])
    assert result.exit_code == 0
    assert result.stdout == f"{file}: OK (1 service: solo)\n"


def test_check_config_reports_every_problem(tmp_path: Path) -> None:
    file = tmp_path / "procvisor.toml"
    file.write_text('[services.web]\ncommand = ["x"]\nintances = 2\nrestart = "sometimes"\n')
    result = CliRunner().invoke(check_config, ["-c", str(file)])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"procvisor: {file}: services.web.intances: unknown key; did you mean 'instances'?",
        f"procvisor: {file}: services.web.restart: 'sometimes' is not accepted; use 'always', "
        "'on-failure', 'never' or 'unless-stopped'",
    ]


def test_check_config_missing_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(check_config, ["-c", str(tmp_path / "nope.toml")])
    assert result.exit_code == 2
    assert result.stderr == f"procvisor: {tmp_path}/nope.toml: no such file\n"


def test_check_config_usage_error_is_one_line() -> None:
    result = CliRunner().invoke(check_config, ["-c"])
    assert result.exit_code == 2
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith("procvisor: ")


def test_check_config_lets_bugs_surface(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(path: object, **kwargs: object) -> Config:
        raise RuntimeError("a bug")

    monkeypatch.setattr("procvisor.daemon.config.load_config", broken)
    result = CliRunner().invoke(check_config, ["-c", str(EXAMPLE)])
    assert isinstance(result.exception, RuntimeError)
    assert os.fspath(EXAMPLE) not in result.stderr


def test_monitor_cpu_budget() -> None:
    assert parse_config("").monitor.cpu_budget == 0.05
    assert parse_config("[monitor]\ncpu_budget = 0").monitor.cpu_budget == 0.0
    assert parse_config("[monitor]\ncpu_budget = 0.5").monitor.cpu_budget == 0.5
    assert "monitor.cpu_budget" in only_problem("[monitor]\ncpu_budget = -1")
    assert "monitor.cpu_budget" in only_problem('[monitor]\ncpu_budget = "0.1%"')


# ----------------------------------------------------------------------------------- startup


def test_startup_prints_a_unit_that_runs_this_procvisor_on_this_config(tmp_path: Path) -> None:
    # Two levels: web (a 20 s stop and a 5 s pre_stop hook) stops after app (30 s).
    folder = tmp_path / "50% off"
    folder.mkdir()
    file = folder / "procvisor.toml"
    file.write_text(
        '[services.web]\ncommand = ["x"]\nstop_timeout = "20s"\n'
        '[services.web.hooks]\npre_stop = ["true"]\ntimeout = "5s"\n'
        '[services.app]\ncommand = ["x"]\nstop_timeout = "30s"\ndepends_on = ["web"]\n'
    )
    result = CliRunner().invoke(startup, ["-c", str(file), "--user", "svc"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    config = str(file).replace("%", "%%")
    assert f"ExecStart={sys.executable} -m procvisor up -c '{config}'" in lines
    assert f"WorkingDirectory={str(folder).replace('%', '%%')}" in lines
    assert "Type=notify" in lines and "User=svc" in lines and "KillMode=mixed" in lines
    assert "TimeoutStopSec=65" in lines  # 30 + (20 + 5) + 10 to spare
    # The printed command, as systemd reads it, runs this procvisor on the same config.
    [exec_start] = [line.split("=", 1)[1] for line in lines if line.startswith("ExecStart=")]
    words = shlex.split(exec_start.replace("%%", "%"))
    words[words.index("up")] = "check-config"
    check = subprocess.run(words, capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stderr
    assert check.stdout.startswith(f"{file}: OK (2 services")


def test_startup_refuses_a_bad_config(tmp_path: Path) -> None:
    file = tmp_path / "procvisor.toml"
    file.write_text('[services.web]\ncommand = ["x"]\nintances = 2\n')
    result = CliRunner().invoke(startup, ["-c", str(file)])
    assert result.exit_code == 2 and result.stdout == ""
    assert "intances: unknown key" in result.stderr
