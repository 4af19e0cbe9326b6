"""Prometheus metrics of the daemon: ``GET /metrics`` (prometheus_client's text format).

Names follow Prometheus conventions: the ``procvisor_`` prefix, base units in the name
(``_seconds``, ``_bytes``, ``_ratio``), ``_total`` on counters. Two kinds of series:

- **Event series**, updated as things happen: the supervisor's :class:`Observer` calls
  (spawn duration, exits by reason, probe latency and failures) and alerts fired.
- **State series**, read at scrape time by a collector: per instance ``up``, ``healthy``,
  restarts and, from the monitor's last sample, CPU, memory, fds and threads; per command pool
  workers, queue, task counts and the task-latency histogram; and the daemon's own process
  (``process_*``, prometheus_client's process collector).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from procvisor._util import Histogram

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.core import Metric

__all__ = ["CONTENT_TYPE", "DaemonMetrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_FAST = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Buckets of the spawn and probe histograms (seconds)."""

InstanceRows = Callable[[], Sequence[Mapping[str, Any]]]
"""Returns one dict per instance: ``service``, ``instance``, ``state``, ``health``,
``restarts``, and when sampled ``cpu_percent``, ``rss``, ``vms``, ``fds``, ``threads``."""
PoolRows = Callable[[], Sequence[tuple[str, Any]]]
"""Returns ``(name, pool)`` for each running command pool."""


def _buckets(cumulative: list[tuple[float, int]]) -> list[tuple[str, float]]:
    return [("+Inf" if bound == math.inf else repr(bound), n) for bound, n in cumulative]


class _Collector:
    """Every series, built at scrape time from the recorder and the daemon's state."""

    def __init__(self, recorder: DaemonMetrics) -> None:
        self._r = recorder

    def collect(self) -> Iterator[Metric]:
        yield from self._event_metrics()
        yield from self._instance_metrics()
        yield from self._pool_metrics()
        yield from self._job_metrics()

    def _job_metrics(self) -> Iterator[Metric]:
        from prometheus_client.core import (  # noqa: PLC0415
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        r = self._r
        duration = HistogramMetricFamily(
            "procvisor_job_duration_seconds",
            "Job runs, start to end, by how they ended",
            labels=["state"],
        )
        for state, hist in r.job_durations.items():
            duration.add_metric([state], _buckets(hist.cumulative()), hist.total)
        yield duration
        if r.queue is None:
            return
        q = r.queue()
        jobs = GaugeMetricFamily("procvisor_jobs", "Jobs by scheduler state", labels=["state"])
        for state in ("queued", "delayed", "retrying", "running", "suspended"):
            jobs.add_metric([state], q[state])
        queued = GaugeMetricFamily(
            "procvisor_jobs_queued_by_priority", "Queued jobs by priority", labels=["priority"]
        )
        for priority, n in q["by_priority"].items():
            queued.add_metric([priority], n)
        in_use = GaugeMetricFamily(
            "procvisor_jobs_resource_in_use", "Resources held by running jobs", labels=["resource"]
        )
        for resource, amount in q["in_use"].items():
            in_use.add_metric([resource], amount)
        wait = GaugeMetricFamily(
            "procvisor_jobs_oldest_wait_seconds", "How long the oldest queued job has waited"
        )
        wait.add_metric([], q["oldest_wait"] or 0.0)
        yield from (jobs, queued, in_use, wait)

    def _event_metrics(self) -> Iterator[Metric]:
        from prometheus_client.core import (  # noqa: PLC0415 - at the first scrape only
            CounterMetricFamily,
            HistogramMetricFamily,
        )

        r = self._r
        spawn = HistogramMetricFamily(
            "procvisor_spawn_duration_seconds",
            "Time to start an instance's process",
            labels=["service"],
        )
        for service, hist in r.spawns.items():
            spawn.add_metric([service], _buckets(hist.cumulative()), hist.total)
        probe = HistogramMetricFamily(
            "procvisor_probe_duration_seconds", "Health probe latency", labels=["service"]
        )
        for service, hist in r.probes.items():
            probe.add_metric([service], _buckets(hist.cumulative()), hist.total)
        exits = CounterMetricFamily(
            "procvisor_exits",
            "Instance process ends (or failed starts), by reason",
            labels=["service", "reason"],
        )
        for (service, reason), n in r.exits.items():
            exits.add_metric([service, reason], n)
        failures = CounterMetricFamily(
            "procvisor_probe_failures", "Health probes that failed", labels=["service"]
        )
        for service, n in r.probe_failures.items():
            failures.add_metric([service], n)
        ooms = CounterMetricFamily(
            "procvisor_oom_kills",
            "Processes of instances the kernel's OOM killer killed at their memory limit",
            labels=["service"],
        )
        for service, n in r.oom_kills.items():
            ooms.add_metric([service], n)
        fired = CounterMetricFamily(
            "procvisor_alerts_fired", "Alerts that started firing", labels=["rule", "severity"]
        )
        for (rule, severity), n in r.alerts_fired.items():
            fired.add_metric([rule, severity], n)
        sent = CounterMetricFamily(
            "procvisor_notifications",
            "Alert notifications by notifier and outcome (delivered, failed, dropped)",
            labels=["notifier", "outcome"],
        )
        for name, st in (r.notifications() if r.notifications is not None else {}).items():
            for outcome in ("delivered", "failed", "dropped"):
                sent.add_metric([name, outcome], getattr(st, outcome))
        yield from (spawn, probe, exits, failures, ooms, fired, sent)

    def _instance_metrics(self) -> Iterator[Metric]:
        from prometheus_client.core import (  # noqa: PLC0415
            CounterMetricFamily,
            GaugeMetricFamily,
        )

        labels = ["service", "instance"]
        up = GaugeMetricFamily("procvisor_instance_up", "1 if the instance runs", labels=labels)
        healthy = GaugeMetricFamily(
            "procvisor_instance_healthy",
            "1 healthy, 0 unhealthy (instances with a probe and a verdict)",
            labels=labels,
        )
        restarts = CounterMetricFamily(
            "procvisor_instance_restarts", "Restarts since the daemon started", labels=labels
        )
        sampled = {
            "cpu_percent": GaugeMetricFamily(
                "procvisor_instance_cpu_usage_ratio",
                "CPU used by the instance's process tree, in cores (1.0 = one core)",
                labels=labels,
            ),
            "rss": GaugeMetricFamily(
                "procvisor_instance_memory_rss_bytes",
                "Resident memory of the instance's process tree",
                labels=labels,
            ),
            "vms": GaugeMetricFamily(
                "procvisor_instance_memory_vms_bytes",
                "Virtual memory of the instance's process tree",
                labels=labels,
            ),
            "fds": GaugeMetricFamily(
                "procvisor_instance_open_fds",
                "Open file descriptors of the instance's process tree",
                labels=labels,
            ),
            "threads": GaugeMetricFamily(
                "procvisor_instance_threads",
                "Threads of the instance's process tree",
                labels=labels,
            ),
        }
        for row in self._r.instances():
            values = [str(row["service"]), str(row["instance"])]
            up.add_metric(values, 1.0 if row["state"] == "running" else 0.0)
            if row.get("health") in ("healthy", "unhealthy"):
                healthy.add_metric(values, 1.0 if row["health"] == "healthy" else 0.0)
            restarts.add_metric(values, float(row["restarts"]))
            if row["state"] != "running":
                continue
            for key, family in sampled.items():
                value = row.get(key)
                if value is not None:
                    family.add_metric(values, value / 100 if key == "cpu_percent" else value)
        yield from (up, healthy, restarts, *sampled.values())

    def _pool_metrics(self) -> Iterator[Metric]:
        from prometheus_client.core import (  # noqa: PLC0415
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        labels = ["pool"]
        workers = GaugeMetricFamily("procvisor_pool_workers", "Worker processes", labels=labels)
        busy = GaugeMetricFamily("procvisor_pool_workers_busy", "Busy workers", labels=labels)
        queued = GaugeMetricFamily(
            "procvisor_pool_tasks_queued", "Tasks waiting for a worker", labels=labels
        )
        tasks = CounterMetricFamily(
            "procvisor_pool_tasks", "Tasks finished, by outcome", labels=["pool", "outcome"]
        )
        retried = CounterMetricFamily(
            "procvisor_pool_tasks_retried", "Task attempts retried", labels=labels
        )
        lifecycle = CounterMetricFamily(
            "procvisor_pool_workers_events",
            "Workers started, recycled (hygiene) and crashed",
            labels=["pool", "event"],
        )
        latency = HistogramMetricFamily(
            "procvisor_pool_task_duration_seconds",
            "Task latency, submit to outcome",
            labels=labels,
        )
        for name, pool in self._r.pools():
            st = pool.stats()
            workers.add_metric([name], st.workers)
            busy.add_metric([name], st.busy)
            queued.add_metric([name], st.queued)
            # done and failed are disjoint; timed_out is a part of failed.
            for outcome, value in (
                ("done", st.done),
                ("failed", st.failed - st.timed_out),
                ("timed_out", st.timed_out),
            ):
                tasks.add_metric([name, outcome], value)
            retried.add_metric([name], st.retried)
            for event, value in (
                ("started", st.workers_started),
                ("recycled", st.workers_recycled),
                ("crashed", st.workers_crashed),
            ):
                lifecycle.add_metric([name, event], value)
            cumulative, total = pool.latency_histogram()
            latency.add_metric([name], _buckets(cumulative), total)
        yield from (workers, busy, queued, tasks, retried, lifecycle, latency)


class DaemonMetrics:
    """Records what happens, for ``/metrics``; also the supervisor's
    :class:`~procvisor.supervisor.Observer`.

    Recording is plain Python; prometheus_client (about 50 ms to import) is loaded at the
    first scrape, so the daemon's start does not wait for it.
    """

    def __init__(self, instances: InstanceRows, pools: PoolRows) -> None:
        self.instances = instances
        self.pools = pools
        self.spawns: dict[str, Histogram] = {}
        self.probes: dict[str, Histogram] = {}
        self.exits: Counter[tuple[str, str]] = Counter()
        self.probe_failures: Counter[str] = Counter()
        self.oom_kills: Counter[str] = Counter()
        self.alerts_fired: Counter[tuple[str, str]] = Counter()
        self.notifications: Callable[[], Mapping[str, Any]] | None = None
        """The notifiers' delivery counts (``Dispatcher.stats``), once they run."""
        self.queue: Callable[[], Mapping[str, Any]] | None = None
        """The job queue's summary (``Scheduler.summary().to_dict()``), once it runs."""
        self.job_durations: dict[str, Histogram] = {}  # by final state
        self._job_started: dict[int, float] = {}
        self._registry: CollectorRegistry | None = None

    # -- the supervisor's observer ----------------------------------------------------------

    def spawned(self, service: str, seconds: float) -> None:
        hist = self.spawns.get(service)
        if hist is None:
            hist = self.spawns[service] = Histogram(_FAST)
        hist.observe(seconds)

    def exited(self, service: str, reason: str) -> None:
        self.exits[service, reason] += 1

    def probed(self, service: str, ok: bool, seconds: float) -> None:
        hist = self.probes.get(service)
        if hist is None:
            hist = self.probes[service] = Histogram(_FAST)
        hist.observe(seconds)
        if not ok:
            self.probe_failures[service] += 1

    def oom_killed(self, service: str) -> None:
        self.oom_kills[service] += 1

    def job_event(self, job: int, ts: float, new: str) -> None:
        """A job changed state: a run's duration is observed when it ends."""
        if new == "running":
            self._job_started[job] = ts
        elif new != "suspended":
            started = self._job_started.pop(job, None)
            if started is not None:
                hist = self.job_durations.get(new)
                if hist is None:
                    hist = self.job_durations[new] = Histogram()
                hist.observe(max(0.0, ts - started))

    def alert_fired(self, rule: str, severity: str) -> None:
        self.alerts_fired[rule, severity] += 1

    def render(self) -> bytes:
        """The exposition text of every series."""
        from prometheus_client import CollectorRegistry, generate_latest  # noqa: PLC0415
        from prometheus_client.process_collector import ProcessCollector  # noqa: PLC0415

        if self._registry is None:
            self._registry = CollectorRegistry(auto_describe=False)
            self._registry.register(_Collector(self))
            ProcessCollector(registry=self._registry)
        return generate_latest(self._registry)
