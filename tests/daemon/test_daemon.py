"""``procvisor up`` end to end: the real daemon, real services, driven by the real CLI."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil

from helpers import NOTIFY_SERVICE, pid_alive, wait_for

PROCVISOR = [sys.executable, "-m", "procvisor"]
SLEEPER = f'["{sys.executable}", "-c", "import time; time.sleep(600)"]'


def write_config(workdir: Path, body: str) -> Path:
    config = workdir / "procvisor.toml"
    config.write_text(textwrap.dedent(body))
    return config


def cli(workdir: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PROCVISOR, *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        env={**os.environ, "PROCVISOR_CONFIG": "", "PROCVISOR_STATE_DIR": ""},
    )


def status(workdir: Path) -> dict[str, dict]:
    out = cli(workdir, "status", "--json")
    assert out.returncode == 0, out.stderr
    return {row["name"]: row for row in json.loads(out.stdout)}


def all_running(workdir: Path, names: set[str]) -> dict[str, dict] | None:
    out = cli(workdir, "status", "--json")
    if out.returncode != 0:
        return None
    rows = {row["name"]: row for row in json.loads(out.stdout)}
    ok = set(rows) == names and all(r["state"] == "running" for r in rows.values())
    return rows if ok else None


class Daemon:
    """A foreground ``procvisor up`` started by a test, always gone after it."""

    def __init__(self, workdir: Path, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [*PROCVISOR, "up"],
            cwd=workdir,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            env=None if env is None else {**os.environ, **env},
        )
        self.pid = self.proc.pid

    def stop(self) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=30)
        return self.proc.returncode, err


TWO = f"""
[services.db]
command = {SLEEPER}
stop_timeout = "5s"

[services.app]
command = {SLEEPER}
instances = 2
depends_on = ["db"]
"""


def up(workdir: Path, daemons: list[Daemon], body: str) -> Daemon:
    """Write ``body`` as the config and start a daemon on it (stopped after the test)."""
    write_config(workdir, body)
    d = Daemon(workdir)
    daemons.append(d)
    return d


def test_under_systemd_it_notifies_ready_watchdog_and_stopping(workdir, daemons) -> None:
    # systemd's side of Type=notify with WatchdogSec=: a datagram socket in $NOTIFY_SOCKET.
    write_config(
        workdir,
        """
        [services.envdump]
        command = ["sh", "-c", "env > env.txt; exec sleep 600"]
        """,
    )
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind(str(workdir / "notify"))
        systemd.settimeout(20)
        env = {"NOTIFY_SOCKET": str(workdir / "notify"), "WATCHDOG_USEC": "200000"}
        d = Daemon(workdir, env)
        daemons.append(d)
        ready = systemd.recv(4096).decode().split("\n")
        assert ready[0] == "READY=1" and f"MAINPID={d.pid}" in ready
        assert status(workdir)["envdump:0"]["state"] == "running"  # started before READY
        # Pings every 0.1 s (half of 0.2 s) from the event loop.
        assert [systemd.recv(4096) for _ in range(3)] == [b"WATCHDOG=1"] * 3
        # Services do not inherit systemd's variables.
        env_txt = workdir / "env.txt"
        wait_for(lambda: env_txt.exists() and env_txt.read_text().endswith("\n"))
        assert "NOTIFY_SOCKET" not in env_txt.read_text()
        assert "WATCHDOG_USEC" not in env_txt.read_text()
        d.proc.send_signal(signal.SIGTERM)
        while (message := systemd.recv(4096)) == b"WATCHDOG=1":
            pass
        assert message.startswith(b"STOPPING=1")
        code, err = d.stop()
        assert code == 0, err


def test_up_runs_services_and_sigterm_stops_them_then_exits_0(workdir, daemons) -> None:
    write_config(workdir, TWO)
    d = Daemon(workdir)
    daemons.append(d)
    rows = wait_for(lambda: all_running(workdir, {"db:0", "app:0", "app:1"}), timeout=20)
    pids = [r["pid"] for r in rows.values()]
    assert all(pid_alive(p) for p in pids)
    assert {p.pid for p in psutil.Process(d.pid).children()} >= set(pids)
    code, err = d.stop()
    assert code == 0, err
    assert not any(pid_alive(p) for p in pids)
    # Dependents stop before their dependencies.
    stops = [line for line in err.splitlines() if ": stop: " in line]
    assert stops[-1].split("]: ")[1].startswith("db:0: stop")
    assert (workdir / ".procvisor").stat().st_mode & 0o777 == 0o700
    assert not (workdir / ".procvisor" / "procvisor.sock").exists()


def test_the_daemon_works_in_the_config_files_directory(workdir) -> None:
    # Started from elsewhere, and detached: services and jobs without a cwd run beside the
    # config file, and so does the daemon (whose own cwd lets them start with posix_spawn).
    conf = workdir / "conf"
    conf.mkdir()
    config = write_config(conf, f"[services.app]\ncommand = {SLEEPER}\n")
    up = cli(workdir, "up", "-d", "-c", "conf/procvisor.toml")
    assert up.returncode == 0, up.stderr
    daemon_pid = int((conf / ".procvisor" / "procvisor.pid").read_text())
    try:
        assert os.readlink(f"/proc/{daemon_pid}/cwd") == str(conf)
        app = json.loads(cli(workdir, "status", "-c", str(config), "--json").stdout)[0]
        assert os.readlink(f"/proc/{app['pid']}/cwd") == str(conf)
        job = cli(workdir, "submit", "-c", str(config), "--", "pwd").stdout.strip()
        wait_for(
            lambda: (
                json.loads(cli(workdir, "job", job, "-c", str(config), "--json").stdout)["state"]
                == "succeeded"
            )
        )
        logged = cli(workdir, "logs", "--job", job, "-c", str(config))
        assert logged.stdout == f"{conf}\n"
    finally:
        down = cli(workdir, "down", "-c", str(config))
    assert down.returncode == 0, down.stderr


def test_a_second_daemon_on_the_same_state_dir_is_refused(workdir, daemons) -> None:
    write_config(workdir, TWO)
    daemons.append(Daemon(workdir))
    wait_for(lambda: all_running(workdir, {"db:0", "app:0", "app:1"}), timeout=20)
    second = cli(workdir, "up")
    assert second.returncode == 1
    assert second.stderr.startswith("procvisor: a daemon already runs for state dir ")
    assert len(second.stderr.splitlines()) == 1


def test_detach_then_status_then_down(workdir) -> None:
    write_config(workdir, TWO)
    up = cli(workdir, "up", "-d")
    assert up.returncode == 0, up.stderr
    assert up.stdout.startswith("procvisor: daemon started (pid ")
    daemon_pid = int((workdir / ".procvisor" / "procvisor.pid").read_text())
    try:
        rows = status(workdir)
        assert {r["state"] for r in rows.values()} == {"running"}
        table = cli(workdir, "status").stdout.splitlines()
        assert table[0].split()[:3] == ["NAME", "STATE", "PID"]
        pids = [r["pid"] for r in rows.values()]
    finally:
        down = cli(workdir, "down")
    assert down.returncode == 0, down.stderr
    assert not pid_alive(daemon_pid)
    assert not any(pid_alive(p) for p in pids)
    assert not (workdir / ".procvisor" / "procvisor.pid").exists()
    again = cli(workdir, "status")
    assert again.returncode == 3
    assert "no daemon running" in again.stderr and "procvisor up" in again.stderr


def test_reload_applies_the_difference_and_refuses_a_bad_file(workdir, daemons) -> None:
    config = write_config(workdir, TWO)
    d = Daemon(workdir)
    daemons.append(d)
    before = wait_for(lambda: all_running(workdir, {"db:0", "app:0", "app:1"}), timeout=20)
    # A bad file changes nothing and says why.
    config.write_text(TWO + "\n[services.bad]\ncomand = 'x'\n")
    bad = cli(workdir, "reload")
    assert bad.returncode == 2
    assert "services.bad.comand" in bad.stderr and "did you mean 'command'" in bad.stderr
    assert {n: r["pid"] for n, r in status(workdir).items()} == {
        n: r["pid"] for n, r in before.items()
    }
    # Drop app, add web; db untouched keeps its pid. Then SIGHUP applies a scale.
    config.write_text(
        f'[services.db]\ncommand = {SLEEPER}\nstop_timeout = "5s"\n\n'
        f"[services.web]\ncommand = {SLEEPER}\n"
    )
    ok = cli(workdir, "reload")
    assert ok.returncode == 0, ok.stderr
    after = wait_for(lambda: all_running(workdir, {"db:0", "web:0"}), timeout=20)
    assert after["db:0"]["pid"] == before["db:0"]["pid"]
    assert not pid_alive(before["app:0"]["pid"])
    config.write_text(
        f'[services.db]\ncommand = {SLEEPER}\nstop_timeout = "5s"\n\n'
        f"[services.web]\ncommand = {SLEEPER}\ninstances = 2\n"
    )
    os.kill(d.pid, signal.SIGHUP)
    final = wait_for(lambda: all_running(workdir, {"db:0", "web:0", "web:1"}), timeout=20)
    assert final["web:0"]["pid"] == after["web:0"]["pid"]
    # A count set by `scale` lasts until the next reload, which goes back to the file's.
    assert cli(workdir, "scale", "web", "3").returncode == 0
    again = cli(workdir, "reload")
    assert (again.returncode, again.stdout) == (0, "scaled: web=2\n")
    assert set(status(workdir)) == {"db:0", "web:0", "web:1"}


def test_after_a_sigkill_the_next_daemon_stops_the_leftovers(workdir, daemons) -> None:
    write_config(workdir, TWO)
    first = Daemon(workdir)
    daemons.append(first)
    old = wait_for(lambda: all_running(workdir, {"db:0", "app:0", "app:1"}), timeout=20)
    os.kill(first.pid, signal.SIGKILL)
    first.proc.wait(timeout=10)
    assert all(pid_alive(r["pid"]) for r in old.values())  # orphaned, still running
    daemons.append(Daemon(workdir))
    new = wait_for(lambda: all_running(workdir, {"db:0", "app:0", "app:1"}), timeout=20)
    assert not any(pid_alive(r["pid"]) for r in old.values())
    for r in old.values():  # orphaned to this test process (a subreaper): ours to reap
        os.waitpid(r["pid"], 0)
    assert {r["pid"] for r in new.values()}.isdisjoint(r["pid"] for r in old.values())
    kinds = json.loads(cli(workdir, "events", "--json", "-n", "100").stdout)
    assert sum(e["kind"] == "leftover" for e in kinds) == 3


def test_a_deleted_socket_comes_back(workdir, daemons) -> None:
    write_config(workdir, TWO)
    daemons.append(Daemon(workdir))
    wait_for(lambda: all_running(workdir, {"db:0", "app:0", "app:1"}), timeout=20)
    sock = workdir / ".procvisor" / "procvisor.sock"
    sock.unlink()
    wait_for(lambda: sock.exists() and cli(workdir, "status").returncode == 0, timeout=15)


def _up_forky(workdir: Path, daemons: list[Daemon], script: str) -> Daemon:
    """A daemon running one service, ``sh -c script``, once it runs."""
    write_config(workdir, f'[services.forky]\ncommand = ["/bin/sh", "-c", "{script}"]\n')
    d = Daemon(workdir)
    daemons.append(d)
    wait_for(lambda: all_running(workdir, {"forky:0"}), timeout=20)
    return d


def test_orphans_of_services_are_reaped_by_the_daemon(workdir, daemons) -> None:
    # The service leaves a process that escapes its group (setsid) and exits later: the
    # daemon, a child subreaper, inherits it and must reap it, or zombies pile up.
    d = _up_forky(workdir, daemons, "(setsid sleep 4 &); exec sleep 600")
    daemon = psutil.Process(d.pid)

    def adopted() -> list[psutil.Process]:
        found = []
        for kid in daemon.children():
            # A child that exited a moment ago is a zombie until reaped: no cmdline then.
            with contextlib.suppress(psutil.ZombieProcess, psutil.NoSuchProcess):
                if kid.cmdline() == ["sleep", "4"]:
                    found.append(kid)
        return found

    orphan = wait_for(adopted, timeout=10)[0]
    # Reaped: gone from the daemon's children, where a zombie would still be listed.
    wait_for(lambda: orphan.pid not in {k.pid for k in daemon.children()}, timeout=10)
    assert not pid_alive(orphan.pid)
    assert not any(k.status() == psutil.STATUS_ZOMBIE for k in daemon.children())


def test_down_stops_what_left_a_services_group(workdir, daemons) -> None:
    # A setsid'd grandchild is in no service's group: stopping the service leaves it, its
    # parent's exit makes it the daemon's, and the daemon must stop it before it exits.
    d = _up_forky(workdir, daemons, "setsid sleep 600 & echo $! > escaped; exec sleep 600")
    pidfile = workdir / "escaped"
    escaped = int(wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), timeout=10))
    assert pid_alive(escaped)
    code, err = d.stop()
    assert code == 0, err
    assert not pid_alive(escaped)
    assert "stopping 1 processes that left their services' groups" in err


def test_a_bad_config_is_one_line_per_problem_and_exit_2(workdir) -> None:
    write_config(workdir, "[services.a]\ncommand = []\nrestart = 'sometimes'\n")
    out = cli(workdir, "up")
    assert out.returncode == 2
    lines = out.stderr.splitlines()
    assert all(line.startswith("procvisor: procvisor.toml: services.a.") for line in lines)
    assert len(lines) == 2


def test_more_services_than_the_inherited_open_files_limit_allows(workdir, daemons) -> None:
    # 60 services hold ~300 fds; the daemon is started with a soft limit of 256 and must
    # raise its own limit (as supervisord's minfds) instead of failing at os.pipe().
    import resource  # noqa: PLC0415

    names = [f"s{i}" for i in range(60)]
    body = "".join(f"[services.{n}]\ncommand = {SLEEPER}\n" for n in names)
    write_config(workdir, body)
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    d = Daemon.__new__(Daemon)
    d.proc = subprocess.Popen(
        ["prlimit", f"--nofile=256:{hard}", *PROCVISOR, "up"],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    d.pid = d.proc.pid
    daemons.append(d)
    wait_for(lambda: all_running(workdir, {f"{n}:0" for n in names}), timeout=30)


TALK = "print('one'); print('two', flush=True); import time; time.sleep(600)"


def test_logs_with_timestamps_start_each_line_with_its_time(workdir, daemons) -> None:
    write_config(
        workdir,
        f"""
        [services.talker]
        command = ["{sys.executable}", "-c", "{TALK}"]
        logs = {{ timestamps = true }}
        """,
    )
    d = Daemon(workdir)
    daemons.append(d)
    wait_for(lambda: "two" in cli(workdir, "logs", "talker").stdout, timeout=20)
    lines = cli(workdir, "logs", "talker").stdout.splitlines()
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d"
    assert [re.fullmatch(rf"{stamp} (\w+)", line).group(1) for line in lines] == ["one", "two"]


def _waits_for_healthy_db(workdir: Path) -> None:
    write_config(
        workdir,
        f"""
        [services.db]
        command = {SLEEPER}
        stop_timeout = "5s"

        [services.db.health]
        type = "exec"
        command = ["test", "-e", "ready"]
        interval = "100ms"
        start_period = "60s"

        [services.app]
        command = {SLEEPER}
        depends_on = {{ db = "healthy" }}
        """,
    )


def _db_up_app_waiting(workdir: Path) -> bool:
    out = cli(workdir, "status", "--json")
    if out.returncode != 0:
        return False
    rows = {row["name"]: row for row in json.loads(out.stdout)}
    return rows["db:0"]["state"] == "running" and rows["app:0"]["state"] == "stopped"


def test_while_a_service_waits_for_a_healthy_dependency_the_api_serves(workdir, daemons) -> None:
    _waits_for_healthy_db(workdir)
    d = Daemon(workdir)
    daemons.append(d)
    wait_for(lambda: _db_up_app_waiting(workdir), timeout=20)
    (workdir / "ready").touch()
    rows = wait_for(lambda: all_running(workdir, {"db:0", "app:0"}), timeout=20)
    assert rows["db:0"]["health"] == "healthy"


def test_a_stop_ends_the_wait_for_a_healthy_dependency(workdir, daemons) -> None:
    _waits_for_healthy_db(workdir)
    d = Daemon(workdir)
    daemons.append(d)
    wait_for(lambda: _db_up_app_waiting(workdir), timeout=20)
    db = status(workdir)["db:0"]["pid"]
    code, err = d.stop()  # SIGTERM: no waiting out the dependency's start_period
    assert code == 0, err
    assert "all services stopped; bye" in err
    assert not pid_alive(db)


def test_logs_without_a_name_shows_every_instance(workdir, daemons) -> None:
    write_config(
        workdir,
        f"""
        [services.a]
        command = ["{sys.executable}", "-c", "{TALK}"]

        [services.b]
        command = ["{sys.executable}", "-c", "{TALK}"]
        instances = 2
        """,
    )
    d = Daemon(workdir)
    daemons.append(d)
    expected = {f"{name} | {word}" for name in ("a:0", "b:0", "b:1") for word in ("one", "two")}
    wait_for(lambda: set(cli(workdir, "logs").stdout.splitlines()) == expected, timeout=20)
    both = cli(workdir, "logs", "a", "--job", "1")
    assert both.returncode == 2 and "not both" in both.stderr


def test_a_notify_service_holds_its_dependents_until_ready(workdir, daemons) -> None:
    (workdir / "service.py").write_text(NOTIFY_SERVICE)
    up(
        workdir,
        daemons,
        f"""
        [services.db]
        command = ["{sys.executable}", "service.py", "wait", "ready", "send",
                   "STATUS=serving 3 clients\\\\nREADY=1", "sleep"]
        notify = true

        [services.app]
        command = {SLEEPER}
        depends_on = ["db"]
        """,
    )

    def db_starting_app_waiting() -> bool:
        out = cli(workdir, "status", "--json")
        rows = {r["name"]: r for r in json.loads(out.stdout)} if out.returncode == 0 else {}
        return bool(rows) and (rows["db:0"]["state"], rows["app:0"]["state"]) == (
            "starting",
            "stopped",
        )

    wait_for(db_starting_app_waiting, timeout=20)
    (workdir / "ready").touch()
    wait_for(lambda: all_running(workdir, {"db:0", "app:0"}), timeout=20)
    assert "db:0 says: serving 3 clients" in cli(workdir, "status").stdout.splitlines()
    kinds = [e["kind"] for e in json.loads(cli(workdir, "events", "db", "--json").stdout)]
    assert "ready" in kinds


CHATTY = "import time\\nwhile True:\\n    print('busy', flush=True)\\n    time.sleep(0.01)"


def test_changes_restart_a_service_and_its_own_logs_do_not(workdir, daemons) -> None:
    # The service watches the config file's directory, where the daemon keeps its state
    # (.procvisor: logs written every 10 ms, the store): only the files touched count.
    up(
        workdir,
        daemons,
        f"""
        [services.app]
        command = ["{sys.executable}", "-c", "{CHATTY}"]
        restart_on_change = {{ paths = ["."], debounce = "100ms" }}
        """,
    )
    first = wait_for(lambda: all_running(workdir, {"app:0"}), timeout=20)["app:0"]["pid"]

    def change_restarts() -> list[str]:
        out = cli(workdir, "events", "app", "--json")
        return [e["message"] for e in json.loads(out.stdout) if e["kind"] == "change-restart"]

    for n, name in enumerate(("one.txt", "two.txt"), start=1):
        (workdir / name).write_text("changed")
        wait_for(lambda n=n: len(change_restarts()) >= n, timeout=20)
    assert change_restarts() == [f"{workdir / 'one.txt'} changed", f"{workdir / 'two.txt'} changed"]
    row = wait_for(lambda: all_running(workdir, {"app:0"}), timeout=20)["app:0"]
    assert row["pid"] != first
