"""Monitoring in a real daemon: a memory hog restarted, a CPU spinner throttled, alerts that
reach a webhook receiver on loopback (while another receiver hangs), and the views."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from helpers import pid_alive, wait_for
from procvisor.daemon._monitoring import paced
from procvisor.process import _cgroup

from .test_daemon import PROCVISOR, Daemon, cli, status, write_config

PY = sys.executable


class Receiver:
    """An HTTP server on 127.0.0.1 that records the JSON bodies POSTed to it (or hangs)."""

    def __init__(self, *, hang: bool = False) -> None:
        self.bodies: list[Any] = []
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if hang:
                    receiver.release.wait(30)
                    return
                receiver.bodies.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers() -> Iterator[tuple[Receiver, Receiver]]:
    good, hanging = Receiver(), Receiver(hang=True)
    yield good, hanging
    good.close()
    hanging.close()


def config(good: str, hanging: str) -> str:
    return f"""
[monitor]
interval = "200ms"
cpu_budget = 0

[services.hog]
command = ["{PY}", "-c", "import time; b = bytearray(80 << 20); time.sleep(600)"]
[services.hog.watch]
max_memory = "40M"
for = "0s"
action = "restart"

[services.spin]
command = ["{PY}", "-c", "while True: pass"]
[services.spin.watch]
max_cpu = 20
action = "throttle"

[services.quiet]
command = ["{PY}", "-c", "import time; time.sleep(600)"]
env = {{ API_TOKEN = "hunter2", DB_PASSWORD = "swordfish", PLAIN = "visible" }}
limits = {{ memory = "512M", open_files = 256 }}

[alerts.rules.quiet-is-up]
expr = "service == 'quiet' and rss > 1M"
severity = "info"
summary = "{{service}}:{{instance}} runs with {{rss}}"

[alerts.notifiers.hook]
type = "webhook"
url = "{good}"

[alerts.notifiers.stuck]
type = "webhook"
url = "{hanging}"
timeout = "20s"
attempts = 1
"""


def events(workdir: Path, kind: str) -> list[dict[str, Any]]:
    out = cli(workdir, "events", "--json", "-n", "500")
    assert out.returncode == 0, out.stderr
    return [e for e in json.loads(out.stdout) if e["kind"] == kind]


def proc_state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except FileNotFoundError:
        return "gone"
    return stat[stat.rfind(b")") + 2 :].split()[0].decode()


def test_watch_limits_alerts_and_views_in_a_running_daemon(workdir, daemons, receivers) -> None:
    good, hanging = receivers
    write_config(workdir, config(good.url, hanging.url))
    d = Daemon(workdir)
    daemons.append(d)
    wait_for(lambda: cli(workdir, "status").returncode == 0, timeout=20)

    # The memory hog goes over max_memory and is restarted by the watch.
    restarts = wait_for(
        lambda: (
            events(workdir, "watch")
            and [e for e in events(workdir, "watch") if e["service"] == "hog"]
        ),
        timeout=30,
    )
    assert "over max_memory 40M" in restarts[0]["message"]
    assert restarts[0]["message"].endswith("restarting")

    # The spinner is throttled: its process is seen stopped (SIGSTOP) between run slices.
    status = {r["name"]: r for r in json.loads(cli(workdir, "status", "--json").stdout)}
    spin = status["spin:0"]["pid"]
    wait_for(lambda: proc_state(spin) == "T", timeout=30, interval=0.002)
    assert any("throttling to 20%" in e["message"] for e in events(workdir, "watch"))

    # An alert rule fires and its notification reaches the good receiver, though the
    # other receiver never answers.
    wait_for(lambda: any(b["rule"] == "quiet-is-up" for b in good.bodies), timeout=30)
    body = next(b for b in good.bodies if b["rule"] == "quiet-is-up")
    assert body["kind"] == "fired" and body["severity"] == "info"
    assert body["summary"].startswith("quiet:0 runs with ")
    assert cli(workdir, "status").returncode == 0  # the daemon answers meanwhile

    listed = cli(workdir, "alerts")
    assert listed.returncode == 0, listed.stderr
    assert "quiet-is-up/quiet:0" in listed.stdout
    acked = cli(workdir, "alerts", "ack", "quiet-is-up/quiet:0")
    assert (acked.returncode, acked.stdout) == (0, "acknowledged quiet-is-up/quiet:0\n")
    shown = json.loads(cli(workdir, "alerts", "--json").stdout)
    assert next(a for a in shown if a["id"] == "quiet-is-up/quiet:0")["acknowledged"]
    missing = cli(workdir, "alerts", "ack", "nope/quiet:0")
    assert missing.returncode == 1 and missing.stderr.startswith("procvisor: no alert rule 'nope'")

    top = json.loads(cli(workdir, "top", "--once", "--json").stdout)
    assert {r["name"] for r in top} == {"hog:0", "spin:0", "quiet:0"}
    assert all(r["status"] in ("ok", "warning", "critical", "dead") for r in top)
    table = cli(workdir, "top", "--once").stdout.splitlines()
    assert table[0].split()[:3] == ["NAME", "STATE", "STATUS"]

    live = subprocess.Popen(
        [*PROCVISOR, "top", "-n", "0.2"],
        cwd=workdir,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PROCVISOR_CONFIG": "", "COLUMNS": "120"},
    )
    try:
        assert live.stdout is not None
        wait_for(lambda: "quiet:0" in live.stdout.readline(), timeout=20)
    finally:
        live.send_signal(signal.SIGINT)
        assert live.wait(10) == 130
        if live.stdout is not None:
            live.stdout.close()

    snapshot = json.loads(cli(workdir, "inspect", "quiet:0", "--json").stdout)
    assert snapshot["threads"][0]["state"] in ("S", "R")
    env = snapshot["environment"]
    assert env["API_TOKEN"] == env["DB_PASSWORD"] == "<redacted>"
    assert env["PLAIN"] == "visible"
    assert snapshot["sample"]["detail"][0]["pid"] == snapshot["pid"]
    assert {(lim["limit"], lim["shown"]) for lim in snapshot["limits"]} == {
        ("memory", "512M"),
        ("open_files", "256"),
    }
    text = cli(workdir, "inspect", "quiet")
    assert text.returncode == 0 and "hunter2" not in text.stdout
    rows = [line.split() for line in text.stdout.splitlines()]
    memory_by = "cgroup" if _cgroup.available("memory") else "rlimit"
    assert ["memory", "512M", memory_by] in rows and ["open_files", "256", "rlimit"] in rows
    # The trend names its window and how much of it the samples cover.
    assert snapshot["trend_window"] == 600 and 0 <= snapshot["trend"]["rss"]["span"] <= 600
    assert any(line[:3] == ["trend", "(last", "10m;"] for line in rows)
    [rss_trend] = [line for line in rows if line[:1] == ["rss"]]
    assert rss_trend[-1].endswith("s")  # OVER: the samples' span, a few seconds here
    assert cli(workdir, "inspect", "nope").returncode == 1

    code, err = d.stop()
    assert code == 0, err
    assert not pid_alive(spin)  # stopped though it was throttled (SIGSTOPped)


def rss_of(pid: int) -> int:
    with open(f"/proc/{pid}/statm", "rb") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def sampled_once(workdir: Path, service: str, script: str) -> None:
    """A config whose CPU budget is so small that, after its first round, the daemon would
    wait for hours before sampling again (unless someone looks)."""
    write_config(
        workdir,
        f"""
        [monitor]
        interval = "100ms"
        cpu_budget = 0.000001

        [services.{service}]
        command = ["{PY}", "-c", {json.dumps(script)}]
        """,
    )


def test_the_cpu_budget_stretches_sampling_until_someone_looks(workdir, daemons) -> None:
    # A budget so small that, after its first round, the daemon would wait for hours: what
    # the service does after that round shows in `status` only once `top` is looking.
    grow = workdir / "grow"
    script = f"""import os, time
while not os.path.exists({str(grow)!r}): time.sleep(0.02)
b = bytearray(60 << 20)
time.sleep(600)"""
    sampled_once(workdir, "late", script)
    daemons.append(Daemon(workdir))
    row = wait_for(lambda: cli(workdir, "status").returncode == 0 and status(workdir)["late:0"])
    row = wait_for(lambda: (r := status(workdir)["late:0"]).get("rss") and r)
    pid, small = row["pid"], row["rss"]
    grow.touch()
    wait_for(lambda: rss_of(pid) > small + (50 << 20), timeout=20)
    assert status(workdir)["late:0"]["rss"] == small  # not sampled again since
    assert cli(workdir, "top", "--once", "--json").returncode == 0  # someone looks
    wait_for(lambda: status(workdir)["late:0"]["rss"] > small + (50 << 20), timeout=20)


def test_a_restarted_instance_shows_no_figures_of_the_process_it_replaced(workdir, daemons) -> None:
    # After the restart, the last sample is the old process's until a round comes.
    sampled_once(workdir, "app", "import time; b = bytearray(30 << 20); time.sleep(600)")
    daemons.append(Daemon(workdir))
    old = wait_for(lambda: cli(workdir, "status").returncode == 0 and status(workdir)["app:0"])
    old = wait_for(lambda: (r := status(workdir)["app:0"]).get("rss") and r)
    assert old["rss"] > 30 << 20
    assert cli(workdir, "restart", "app").returncode == 0
    new = status(workdir)["app:0"]
    assert new["pid"] not in (None, old["pid"])
    assert new.get("rss") is None and new.get("cpu_percent") is None  # not the old figures
    [row] = json.loads(cli(workdir, "top", "--once", "--json").stdout)
    assert (row["pid"], row["state"], row["status"]) == (new["pid"], "running", "ok")
    assert row["rss"] is None or row["rss"] > 30 << 20  # sampled by now, or not yet


def test_paced_keeps_rounds_within_the_budget() -> None:
    assert paced(2.0, 0.025, 0.1) == pytest.approx(25.0)  # 25 ms of CPU per 25 s: 0.1 %
    assert paced(2.0, 0.001, 0.1) == 2.0  # cheap rounds: the interval itself
    assert paced(2.0, 10.0, 0.0) == 2.0  # no budget
