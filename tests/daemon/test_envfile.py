"""``env_file``: KEY=VALUE files for services and pools."""

from __future__ import annotations

import sys
import textwrap

import pytest

from helpers import wait_for
from procvisor.daemon._envfile import EnvFileError, parse_env_file, read_env_files
from procvisor.daemon.config import ConfigError, load_config

from .test_daemon import Daemon, all_running, cli, write_config


def test_the_format_docker_compose_and_systemd_agree_on() -> None:
    text = (
        textwrap.dedent(
            """\
        # a comment
        PLAIN=value with spaces
        export EXPORTED=1
          INDENTED = trimmed
        COMMENTED=kept # dropped
        HASH=a#b
        SINGLE='keeps \\n, $HOME and # as they are'
        DOUBLE="line\\nbreak, \\"quoted\\", \\\\ and \\$HOME" # a comment
        EMPTY=
        EMPTY_QUOTED=""
        URL=postgres://u:p@h:5432/db?x=1
        PLAIN=later wins
        """
        )
        + "TRAILING=trimmed   \n"
    )
    assert parse_env_file(text) == {
        "PLAIN": "later wins",
        "EXPORTED": "1",
        "INDENTED": "trimmed",
        "COMMENTED": "kept",
        "HASH": "a#b",
        "SINGLE": "keeps \\n, $HOME and # as they are",
        "DOUBLE": 'line\nbreak, "quoted", \\ and $HOME',
        "EMPTY": "",
        "EMPTY_QUOTED": "",
        "URL": "postgres://u:p@h:5432/db?x=1",
        "TRAILING": "trimmed",
    }


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("JUST_A_NAME", "line 2: expected KEY=VALUE, got 'JUST_A_NAME'"),
        ("1ST=x", "line 2: '1ST' is not a variable name"),
        ("A-B=x", "line 2: 'A-B' is not a variable name"),
        ("Q='open", "line 2: the ' that opens the value is not closed on this line"),
        ('Q="a" b', "line 2: unexpected 'b' after the closing quote"),
        ("N=a\0b", "line 2: the value of N contains a NUL byte"),
    ],
)
def test_a_bad_line_is_an_error_naming_the_file_and_line(line, message) -> None:
    with pytest.raises(EnvFileError) as info:
        parse_env_file(f"OK=1\n{line}\n", "app.env")
    assert str(info.value).startswith(f"app.env: {message}")


def test_files_are_read_in_order_and_a_missing_one_is_named(tmp_path) -> None:
    (tmp_path / "a.env").write_text("X=a\nY=a\n")
    (tmp_path / "b.env").write_text("Y=b\n")
    assert read_env_files([tmp_path / "a.env", tmp_path / "b.env"]) == {"X": "a", "Y": "b"}
    with pytest.raises(EnvFileError, match=r"/nope.env: no such file$"):
        read_env_files([tmp_path / "nope.env"])


def test_check_config_reports_every_bad_env_file_with_its_key(tmp_path) -> None:
    (tmp_path / "bad.env").write_text("fine=1\nnot valid\n")
    config = tmp_path / "procvisor.toml"
    config.write_text(
        '[services.a]\ncommand = "true"\nenv_file = "bad.env"\n'
        '[services.b]\ncommand = "true"\nenv_file = ["missing.env"]\n'
        '[pools.p]\ncommand = "true"\nenv_file = "missing.env"\n'
    )
    with pytest.raises(ConfigError) as info:
        load_config(config)
    lines = info.value.lines()
    assert lines == [
        f"{config}: services.a.env_file: {tmp_path}/bad.env: line 2: expected KEY=VALUE, "
        "got 'not valid'",
        f"{config}: services.b.env_file: {tmp_path}/missing.env: no such file",
        f"{config}: pools.p.env_file: {tmp_path}/missing.env: no such file",
    ]


ENV_DUMP = (
    f'["{sys.executable}", "-c", '
    "\"import os, time; print(os.environ['GREETING'], os.environ['WHO'], flush=True); "
    'time.sleep(600)"]'
)


def test_a_service_gets_its_env_files_and_reload_applies_their_changes(workdir, daemons) -> None:
    env = workdir / "app.env"
    env.write_text("GREETING=hello\nWHO=file\n")
    config = write_config(
        workdir,
        f"""
        [services.app]
        command = {ENV_DUMP}
        env_file = "app.env"
        env = {{ WHO = "table" }}
        stop_timeout = "2s"
        """,
    )
    d = Daemon(workdir)
    daemons.append(d)
    first = wait_for(lambda: all_running(workdir, {"app:0"}), timeout=20)
    # env wins over the file, as docker compose's environment wins over its env_file.
    wait_for(lambda: "hello table" in cli(workdir, "logs", "app").stdout, timeout=10)
    env.write_text("GREETING=bonjour\nWHO=file\n")
    out = cli(workdir, "reload")
    assert (out.returncode, out.stdout) == (0, "restarted: app\n"), out.stderr
    wait_for(lambda: "bonjour table" in cli(workdir, "logs", "app").stdout, timeout=10)
    # A broken file refuses the reload, and the service keeps running as it was.
    env.write_text("GREETING bonjour\n")
    bad = cli(workdir, "reload")
    assert bad.returncode == 2
    assert f"services.app.env_file: {env}: line 1: expected KEY=VALUE" in bad.stderr
    running = all_running(workdir, {"app:0"})
    assert running is not None and running["app:0"]["pid"] != first["app:0"]["pid"]
    assert config.exists()
