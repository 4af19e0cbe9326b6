"""``GET /metrics``: Prometheus naming, and what a real daemon reports as things happen."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from helpers import wait_for
from procvisor.daemon._metrics import DaemonMetrics
from procvisor.pool import CommandPool

from .test_daemon import Daemon, write_config

EXAMPLES = Path(__file__).parent.parent.parent / "examples" / "workers"


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(fams: dict[str, Any], name: str, **labels: str) -> float | None:
    family = name.removesuffix("_total").removesuffix("_count").removesuffix("_sum")
    for sample in fams[family].samples if family in fams else ():
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
            return float(sample.value)
    return None


def test_series_follow_prometheus_naming_and_count_what_was_observed() -> None:
    rows = [
        {"service": "web", "instance": 0, "state": "running", "health": "healthy", "restarts": 2},
        {"service": "web", "instance": 1, "state": "fatal", "health": None, "restarts": 5},
    ]
    with CommandPool([sys.executable, str(EXAMPLES / "upper.py")], workers=1) as pool:
        assert pool.submit("a").result(timeout=10) == "A"
        metrics = DaemonMetrics(lambda: rows, lambda: [("upper", pool)])
        metrics.spawned("web", 0.002)
        metrics.spawned("web", 0.004)
        metrics.exited("web", "failure")
        metrics.probed("web", False, 0.01)
        metrics.probed("web", True, 0.02)
        metrics.oom_killed("web")
        metrics.alert_fired("high-rss", "warning")
        fams = families(metrics.render().decode())
    for name, fam in fams.items():
        assert name.startswith(("procvisor_", "process_")), name
        if fam.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in fam.samples), name
    assert value(fams, "procvisor_spawn_duration_seconds_count", service="web") == 2
    assert value(fams, "procvisor_exits_total", service="web", reason="failure") == 1
    assert value(fams, "procvisor_probe_failures_total", service="web") == 1
    assert value(fams, "procvisor_oom_kills_total", service="web") == 1
    assert value(fams, "procvisor_probe_duration_seconds_count", service="web") == 2
    assert value(fams, "procvisor_alerts_fired_total", rule="high-rss") == 1
    assert value(fams, "procvisor_instance_up", service="web", instance="0") == 1
    assert value(fams, "procvisor_instance_up", service="web", instance="1") == 0
    assert value(fams, "procvisor_instance_healthy", service="web", instance="0") == 1
    assert value(fams, "procvisor_instance_restarts_total", service="web", instance="1") == 5
    assert value(fams, "procvisor_pool_tasks_total", pool="upper", outcome="done") == 1
    assert value(fams, "procvisor_pool_task_duration_seconds_count", pool="upper") == 1
    assert value(fams, "procvisor_pool_workers", pool="upper") == 1
    assert value(fams, "process_open_fds") is not None


SERVICES = f"""
[services.crash]
command = ["{sys.executable}", "-c", "import sys; sys.exit(3)"]
min_uptime = "0s"
max_restarts = 2
backoff = {{ initial = "10ms" }}

[services.ok]
command = ["{sys.executable}", "-c", "import time; time.sleep(600)"]
"""


def test_a_running_daemon_reports_spawns_exits_and_instances(workdir, daemons) -> None:
    write_config(workdir, SERVICES)
    daemons.append(Daemon(workdir))
    sock = workdir / ".procvisor" / "procvisor.sock"
    wait_for(sock.exists, timeout=20)
    client = httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)), base_url="http://pv")

    def scraped() -> dict[str, Any] | None:
        response = client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
        fams = families(response.text)
        exits = value(fams, "procvisor_exits_total", service="crash", reason="failure")
        return fams if exits == 3 else None  # the first run and its two restarts

    with client:
        fams = wait_for(scraped, timeout=20)
    assert value(fams, "procvisor_spawn_duration_seconds_count", service="crash") == 3
    assert value(fams, "procvisor_instance_up", service="ok", instance="0") == 1
    assert value(fams, "procvisor_instance_up", service="crash", instance="0") == 0
    assert value(fams, "procvisor_instance_restarts_total", service="crash", instance="0") == 2
