"""The daemon's monitoring: sample every managed process, act on watch limits, raise alerts.

Every ``[monitor] interval`` (stretched to keep within ``cpu_budget``, see :func:`paced`)
one task of the daemon:

1. samples the process tree of every service instance and command-pool worker
   (:class:`procvisor.monitor.Sampler`, in a worker thread: /proc reads block) and keeps
   the history (:class:`procvisor.monitor.History`: a ring in memory, per-minute rows in the
   store);
2. checks each instance's ``[services.X.watch]`` limits (:func:`procvisor.policy.alerts.
   check_watch`) and acts on a breach: ``restart`` or ``stop`` the instance, ``alert`` (the
   built-in ``watch-limit`` rule fires), or ``throttle`` (a SIGSTOP/SIGCONT duty cycle on
   its process group that holds its CPU near the limit, see :func:`plan_throttle`);
3. evaluates the alert rules (the built-in ones and ``[alerts.rules]``) for every instance
   and worker (:class:`procvisor.policy.alerts.AlertTracker`), records each event in the
   store's event log (kind ``alert``), counts it for ``/metrics`` and hands it to the
   notifiers, which deliver in the background.

Decisions are the pure policy's; this module only feeds it and carries out its answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psutil

from procvisor._util import redact_env
from procvisor.monitor import History, Sample, Sampler, Target, label_key
from procvisor.policy.alertexpr import compile_template
from procvisor.policy.alerts import (
    AlertEvent,
    AlertEventKind,
    AlertRule,
    AlertStatus,
    AlertTracker,
    Facts,
    Flapping,
    ProbeFailing,
    RestartStorm,
    ServiceFatal,
    Severity,
    SlidingWindow,
    WatchAction,
    WatchLimits,
    WatchState,
    check_watch,
    instance_status,
)
from procvisor.policy.throttle import plan_throttle
from procvisor.policy.units import format_duration
from procvisor.process import format_limit
from procvisor.store import StoreError

if TYPE_CHECKING:
    from procvisor.daemon._metrics import DaemonMetrics
    from procvisor.daemon._pools import CommandPools
    from procvisor.daemon.config import Config
    from procvisor.store import Store
    from procvisor.supervisor import Instance, Supervisor

__all__ = ["BUILTIN_RULES", "Monitoring"]

log = logging.getLogger("procvisor.daemon")

_VIEWED = 60.0  # seconds a `top` or `inspect` keeps the plain interval, whatever the budget
_WINDOW = 600.0  # seconds of restarts and state changes remembered (the built-in rules' longest)
_THROTTLE_PERIOD = 1.0
_CALM_PERIODS = 3  # unthrottled periods below the limit before the throttle lets go


@dataclass(frozen=True, slots=True)
class _WatchBreached:
    """Holds while one of the instance's watch limits is exceeded past its ``for``."""

    def holds(self, facts: Facts, now: float) -> bool:
        return bool(facts.values.get("watch_breach"))

    def describe(self) -> str:
        return "a [watch] limit is exceeded"


BUILTIN_RULES = (
    AlertRule("service-fatal", ServiceFatal(), severity=Severity.CRITICAL),
    AlertRule("flapping", Flapping(), severity=Severity.WARNING),
    AlertRule("probe-failing", ProbeFailing(), severity=Severity.WARNING),
    AlertRule("restart-storm", RestartStorm(), severity=Severity.WARNING),
    AlertRule(
        "watch-limit",
        _WatchBreached(),
        severity=Severity.WARNING,
        summary=compile_template(
            "{service}:{instance} is over a [watch] limit (rss {rss}, cpu {cpu})"
        ),
    ),
)
"""The rules evaluated unless ``[alerts] builtin = false``."""


@dataclass(slots=True, eq=False)
class _Tracked:
    """What monitoring remembers about one instance between samples."""

    labels: dict[str, str]
    state: str | None = None
    pid: int | None = None
    restarts: int = 0
    state_changes: SlidingWindow = field(default_factory=lambda: SlidingWindow(_WINDOW))
    restart_times: SlidingWindow = field(default_factory=lambda: SlidingWindow(_WINDOW))
    watch: WatchState = field(default_factory=WatchState)
    throttle: asyncio.Task[None] | None = None


def _instance_labels(inst: Instance) -> dict[str, str]:
    return {"kind": "service", "service": inst.service, "instance": str(inst.index)}


def _target_name(labels: Mapping[str, str]) -> str:
    if labels.get("kind") == "pool":
        return f"{labels.get('pool')}:{labels.get('worker')}"
    if labels.get("kind") == "job":
        return f"job:{labels.get('job')}"
    return f"{labels.get('service')}:{labels.get('instance')}"


def paced(interval: float, cost: float, budget: float) -> float:
    """Seconds from the start of one sampling round to the next.

    ``interval`` at most often; longer when a round cost ``cost`` seconds of CPU and that
    would be more than ``budget`` percent of one core on average (0: no budget). With 200
    services a round costs ~25 ms, which every 2 s is 1.3 % of a core: more than a daemon
    that merely supervises them uses in all (bench/RESULTS.md, ``supervise``).
    """
    if budget <= 0:
        return interval
    return max(interval, cost / (budget / 100.0))


def _wall(mono: float | None, now: float) -> float | None:
    return None if mono is None else time.time() - (now - mono)


class Monitoring:
    """Samples, watches and alerts for one daemon; run :meth:`run` as one of its tasks."""

    def __init__(
        self,
        config: Config,
        *,
        supervisor: Callable[[], Supervisor | None],
        pools: CommandPools,
        store: Store,
        metrics: DaemonMetrics,
        ops: asyncio.Lock,
        notify: Callable[[AlertEvent], None] | None = None,
        jobs: Callable[[], Iterable[tuple[int, int]]] = tuple,
        below: int | None = None,
    ) -> None:
        self._supervisor = supervisor
        self._jobs = jobs
        self._pools = pools
        self._store = store
        self._metrics = metrics
        self._ops = ops
        self._notify = notify
        # The daemon, when it is a subreaper: what it samples is below it (see Sampler).
        self.sampler = Sampler(below=below)
        self._tracked: dict[str, _Tracked] = {}
        self._workers: dict[str, dict[str, str]] = {}  # name -> labels: pool workers, jobs
        self._latest: dict[tuple[tuple[str, str], ...], Sample] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._viewed_until = 0.0
        self._viewed = asyncio.Event()
        self.round_cost = 0.0
        """CPU seconds the last round took (sampling thread and loop), for the pace."""
        self.configure(config)
        self.history = History(
            store, window=config.monitor.history, retention=config.monitor.retention
        )

    def configure(self, config: Config) -> None:
        """Take a (re)loaded config: interval, watch limits and rules (alert states restart
        when the rules change)."""
        self._config = config
        self.interval = config.monitor.interval
        self.budget = config.monitor.cpu_budget
        self._viewed.set()  # a sleeping round re-reads the pace
        rules = [*(BUILTIN_RULES if config.alerts.builtin else ()), *config.alerts.rule_list()]
        # Alert states start over only when the rules change (parsed rules are cached, so
        # an unchanged file gives equal rules).
        old: AlertTracker | None = getattr(self, "tracker", None)
        if old is None or old.rules != tuple(rules):
            self.tracker = AlertTracker(rules)

    def _watch(self, service: str) -> WatchLimits | None:
        svc = self._config.services.get(service)
        return svc.watch_limits if svc is not None else None

    # -- the loop ---------------------------------------------------------------------------

    @property
    def pace(self) -> float:
        """Seconds between rounds now: the plain interval while someone looks (``top``,
        ``inspect``), else the interval stretched to the CPU budget (:func:`paced`)."""
        if time.monotonic() < self._viewed_until:
            return self.interval
        return paced(self.interval, self.round_cost, self.budget)

    def viewed(self) -> None:
        """Someone looks at the samples: use the plain interval for a while."""
        self._viewed_until = time.monotonic() + _VIEWED
        self._viewed.set()

    async def run(self) -> None:
        """Sample every :attr:`pace` until cancelled; a failed round is logged, not fatal."""
        try:
            while True:
                began = time.monotonic()
                try:
                    await self.tick()
                except Exception:
                    log.exception("monitoring: a sampling round failed")
                # Woken early when a viewer arrives or the config changes: the pace is read
                # again, so a long stretched wait shrinks back to the interval.
                while (wait := began + self.pace - time.monotonic()) > 0:
                    self._viewed.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._viewed.wait(), wait)
        finally:
            await self.close()

    async def close(self) -> None:
        """Let every throttled group run again, and stop the actions still in flight."""
        for tracked in self._tracked.values():
            if tracked.throttle is not None:
                tracked.throttle.cancel()
        tasks = [t.throttle for t in self._tracked.values() if t.throttle is not None]
        tasks += list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(StoreError):
            self.history.flush()

    def _targets(self) -> tuple[list[Target], list[Instance]]:
        sup = self._supervisor()
        instances = sup.resolve(["all"]) if sup is not None and sup.specs else []
        targets = [
            Target(inst.pid, _instance_labels(inst)) for inst in instances if inst.pid is not None
        ]
        workers: dict[str, dict[str, str]] = {}
        for name, pool in self._pools.running():
            for pid in pool.pids():
                labels = {"kind": "pool", "pool": name, "worker": str(pid)}
                workers[_target_name(labels)] = labels
                targets.append(Target(pid, labels))
        for job_id, pid in self._jobs():
            labels = {"kind": "job", "job": str(job_id)}
            workers[_target_name(labels)] = labels
            targets.append(Target(pid, labels))
        now = time.monotonic()
        for gone in set(self._workers) - set(workers):
            self._alert_events(self.tracker.forget(self._workers[gone], now))
        self._workers = workers
        return targets, instances

    async def tick(self) -> None:
        """One round: sample, keep, watch, alert; its CPU time goes to :attr:`round_cost`."""
        cpu = time.thread_time()
        targets, instances = self._targets()
        cost = time.thread_time() - cpu
        samples: list[Sample] = []
        if targets:
            samples, cost_there = await asyncio.to_thread(self._sample, targets)
            cost += cost_there
        cpu = time.thread_time()
        try:
            self._keep(samples, instances)
        finally:
            self.round_cost = cost + time.thread_time() - cpu

    def _sample(self, targets: list[Target]) -> tuple[list[Sample], float]:
        cpu = time.thread_time()
        samples = self.sampler.sample(targets)
        return samples, time.thread_time() - cpu

    def _keep(self, samples: list[Sample], instances: list[Instance]) -> None:
        now = time.monotonic()
        try:
            self.history.add(samples)
        except StoreError as exc:
            log.error("monitoring: history not stored: %s", exc)
        self._latest = {label_key(s.labels): s for s in samples}
        seen = set()
        for inst in instances:
            seen.add(inst.name)
            self._instance(inst, now)
        for name in set(self._tracked) - seen:  # removed by a reload or a scale-down
            tracked = self._tracked.pop(name)
            if tracked.throttle is not None:
                tracked.throttle.cancel()
            self._alert_events(self.tracker.forget(tracked.labels, now))
        for labels in self._workers.values():
            sample = self._latest.get(label_key(labels))
            if sample is not None:
                facts = Facts(sample.fields())
                self._alert_events(self.tracker.observe(labels, facts, now))

    def _instance(self, inst: Instance, now: float) -> None:
        tracked = self._tracked.get(inst.name)
        if tracked is None:
            tracked = self._tracked[inst.name] = _Tracked(_instance_labels(inst))
            tracked.state, tracked.restarts = inst.state.value, inst.restarts
        if inst.state.value != tracked.state:
            tracked.state_changes.add(now)
            tracked.state = inst.state.value
        for _ in range(inst.restarts - tracked.restarts):
            tracked.restart_times.add(now)
        tracked.restarts = inst.restarts
        if inst.pid != tracked.pid:  # a new process: its limits start over
            tracked.pid = inst.pid
            tracked.watch = WatchState()
            if tracked.throttle is not None:
                tracked.throttle.cancel()
                tracked.throttle = None
        sample = self._latest.get(label_key(tracked.labels)) if inst.pid else None
        values: dict[str, Any] = dict(tracked.labels)
        if sample is not None and sample.alive:
            values.update(sample.fields())
            watch = self._watch(inst.service)
            if watch is not None:
                tracked.watch, breaches = check_watch(watch, tracked.watch, values, now)
                for breach in breaches:
                    self._act(inst, tracked, breach.action, breach.describe(now), breach.maximum)
                values["watch_breach"] = bool(tracked.watch.triggered)
        values["state"] = inst.state.value
        values["restarts"] = inst.restarts
        if inst.health is not None:
            values["health"] = inst.health.health.value
        facts = Facts(values, tracked.state_changes.times, tracked.restart_times.times)
        self._alert_events(self.tracker.observe(tracked.labels, facts, now))

    # -- actions ----------------------------------------------------------------------------

    def _own(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _event(self, inst: Instance, kind: str, message: str, data: dict[str, Any]) -> None:
        sup = self._supervisor()
        if sup is not None:
            sup.emit(inst.service, inst.index, kind, message, data)

    def _act(
        self, inst: Instance, tracked: _Tracked, action: WatchAction, what: str, limit: float
    ) -> None:
        data = {"action": action.value, "breach": what}
        if action is WatchAction.RESTART:
            self._event(inst, "watch", f"{what}: restarting", data)
            self._own(self._locked("restart", inst.name))
        elif action is WatchAction.STOP:
            self._event(inst, "watch", f"{what}: stopping", data)
            self._own(self._locked("stop", inst.name))
        elif action is WatchAction.THROTTLE and inst.pid is not None:
            if tracked.throttle is None or tracked.throttle.done():
                self._event(inst, "watch", f"{what}: throttling to {limit:g}% of a core", data)
                tracked.throttle = asyncio.ensure_future(self._throttle(inst, inst.pid, limit))
        else:
            self._event(inst, "watch", f"{what}: alert", data)

    async def _locked(self, what: str, name: str) -> None:
        sup = self._supervisor()
        if sup is None:
            return
        async with self._ops:
            if what == "restart":
                await sup.restart([name])
            else:
                await sup.stop([name])

    async def _throttle(self, inst: Instance, pgid: int, target: float) -> None:
        """Hold a group's CPU near ``target`` % with SIGSTOP/SIGCONT until it calms down."""
        calm = 0
        demand = 100.0
        try:
            while calm < _CALM_PERIODS:
                plan = plan_throttle(target, demand, _THROTTLE_PERIOD)
                before = _group_cpu(pgid)
                os.killpg(pgid, signal.SIGCONT)
                await asyncio.sleep(plan.run)
                used = _group_cpu(pgid) - before
                if plan.throttled:
                    os.killpg(pgid, signal.SIGSTOP)
                    await asyncio.sleep(plan.stop)
                demand = max(0.0, used / plan.run * 100)
                calm = calm + 1 if demand <= target else 0
            self._event(inst, "watch", "CPU back under its limit: throttle lifted", {})
        except ProcessLookupError:
            pass  # the group is gone
        finally:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGCONT)

    # -- alerts -----------------------------------------------------------------------------

    def _alert_events(self, events: Iterable[AlertEvent]) -> None:
        for ev in events:
            labels = dict(ev.labels)
            if ev.kind is AlertEventKind.FIRED:
                self._metrics.alert_fired(ev.rule, ev.severity.value)
            name = _target_name(labels)
            service = labels.get("service") or (
                f"job:{labels['job']}" if "job" in labels else f"pool:{labels.get('pool')}"
            )
            instance = labels.get("instance")
            message = f"{ev.rule} {ev.kind.value} ({ev.severity.value}): {ev.summary}"
            log.warning("alert %s on %s", message, name)
            data = {
                "rule": ev.rule,
                "status": ev.kind.value,
                "severity": ev.severity.value,
                "labels": labels,
                "summary": ev.summary,
                "notified": ev.notify,
            }
            with contextlib.suppress(StoreError):
                self._store.add_event(
                    service, int(instance) if instance is not None else None, "alert", message, data
                )
            if ev.notify and self._notify is not None:
                self._notify(ev)

    def alerts(self, include_resolved: bool) -> list[dict[str, Any]]:
        """Alerts that are pending or firing (and with ``include_resolved``, resolved ones)."""
        now = time.monotonic()
        wanted = [AlertStatus.PENDING, AlertStatus.FIRING]
        if include_resolved:
            wanted.append(AlertStatus.RESOLVED)
        rules = {r.name: r for r in self.tracker.rules}
        out = []
        for alert in self.tracker.alerts(*wanted):
            labels = dict(alert.labels)
            rule = rules.get(alert.rule)
            out.append(
                {
                    "id": f"{alert.rule}/{_target_name(labels)}",
                    "rule": alert.rule,
                    "labels": labels,
                    "status": alert.status.value,
                    "severity": rule.severity.value if rule is not None else None,
                    "summary": alert.summary,
                    "since": _wall(alert.pending_since, now),
                    "fired_at": _wall(alert.fired_at, now),
                    "resolved_at": _wall(alert.resolved_at, now)
                    if alert.status is AlertStatus.RESOLVED
                    else None,
                    "acknowledged": alert.acknowledged,
                    "silenced_until": _wall(alert.silenced_until, now)
                    if alert.silenced(now)
                    else None,
                }
            )
        return out

    def ack(self, alert_id: str, duration: float | None) -> dict[str, Any]:
        """Acknowledge the firing alert ``RULE/TARGET`` (until it resolves), or with
        ``duration`` silence it that long; ``RULE`` alone silences the whole rule.

        Raises:
            LookupError: no such alert or rule.
            ValueError: acknowledging an alert that is not firing, or a rule without a duration.
        """
        now = time.monotonic()
        rule, sep, target = alert_id.partition("/")
        if rule not in {r.name for r in self.tracker.rules}:
            names = ", ".join(r.name for r in self.tracker.rules)
            raise LookupError(f"no alert rule {rule!r}; rules: {names}")
        if not sep:
            if duration is None:
                raise ValueError(f"{rule}: silencing a whole rule needs a duration (--for 1h)")
            self.tracker.silence(rule, None, now, duration)
            return {"id": rule, "silenced_for": duration}
        for alert in self.tracker.alerts():
            if alert.rule == rule and _target_name(dict(alert.labels)) == target:
                if duration is not None:
                    self.tracker.silence(rule, alert.labels, now, duration)
                    return {"id": alert_id, "silenced_for": duration}
                self.tracker.acknowledge(rule, alert.labels, now)
                return {"id": alert_id, "acknowledged": True}
        raise LookupError(f"no alert {alert_id!r}; see procvisor alerts --all")

    # -- views ------------------------------------------------------------------------------

    def latest(self, labels: Mapping[str, str], pid: int | None = None) -> Sample | None:
        """The last sample of ``labels``; with ``pid``, only if it was taken of that process
        (an instance restarted since the last round has none yet)."""
        sample = self._latest.get(label_key(labels))
        if sample is not None and pid is not None and sample.pid != pid:
            return None
        return sample

    def top(self) -> list[dict[str, Any]]:
        """The last sample of every instance and worker, with its status (ok/warning/...)."""
        self.viewed()
        rows = []
        sup = self._supervisor()
        instances = sup.resolve(["all"]) if sup is not None and sup.specs else []
        for inst in instances:
            labels = _instance_labels(inst)
            sample = self.latest(labels, inst.pid) if inst.pid else None
            watch = self._watch(inst.service)
            # Not sampled since it (re)started: alive by the supervisor's word, no figures yet.
            alive = sample.alive if sample is not None else inst.pid is not None
            report = instance_status(
                sample.fields() if sample else None, watch.limits if watch else (), alive=alive
            )
            status = report.status.value
            rows.append(_row(inst.name, "service", inst.state.value, inst.pid, sample, status))
        for name, labels in self._workers.items():
            sample = self.latest(labels)
            alive = sample is not None and sample.alive
            report = instance_status(sample.fields() if sample else None, (), alive=alive)
            kind = labels["kind"]
            label = name if kind == "job" else f"pool {name}"
            pid = sample.pid if sample else None
            rows.append(_row(label, kind, "running", pid, sample, report.status.value))
        return rows

    async def inspect(self, inst: Instance) -> dict[str, Any]:
        """A diagnostic snapshot of one instance: its processes, files, sockets, environment
        (secrets redacted), limits and how each is enforced, and its recent trend."""
        self.viewed()
        labels = _instance_labels(inst)
        out: dict[str, Any] = {
            "name": inst.name,
            "state": inst.state.value,
            "pid": inst.pid,
            "health": inst.health.health.value if inst.health is not None else None,
            "restarts": inst.restarts,
        }
        lims = inst.spec.limits
        mechanisms = lims.mechanisms(as_root=os.geteuid() == 0) if lims else {}
        limits = [
            {
                "limit": name,
                "value": getattr(lims, name),
                "shown": format_limit(name, getattr(lims, name)),
                "enforced_by": how,
            }
            for name, how in mechanisms.items()
        ]
        watch = self._watch(inst.service)
        if watch is not None:
            limits += [
                {
                    "limit": lim.name,
                    "value": lim.maximum,
                    "shown": lim.format(lim.maximum),
                    "enforced_by": f"sampled every {format_duration(self.pace)}, "
                    f"for {format_duration(watch.for_)}, then {watch.action.value}",
                }
                for lim in watch.limits
            ]
        out["limits"] = limits
        if inst.pid is not None:
            target = Target(inst.pid, labels)
            (sample,) = await asyncio.to_thread(self.sampler.sample, [target], detail=True)
            out["sample"] = sample.to_dict()
            out.update(await asyncio.to_thread(_process_details, inst.pid))
        window = self._config.monitor.history
        out["trend"] = {}
        out["trend_window"] = window
        for name in ("rss", "cpu"):
            t = self.history.trend(labels, name, window=window)
            if t is not None:
                out["trend"][name] = {
                    "average": t.average,
                    "max": t.maximum,
                    "per_hour": t.per_hour,
                    "samples": t.count,
                    "span": t.span,
                }
        return out


def _row(
    name: str, kind: str, state: str, pid: int | None, s: Sample | None, status: str
) -> dict[str, Any]:
    return {
        "name": name,
        "kind": kind,
        "state": state,
        "status": status,
        "pid": pid,
        "processes": s.processes if s else 0,
        "cpu": s.cpu if s else None,
        "rss": s.rss if s else None,
        "threads": s.threads if s else None,
        "fds": s.fds if s else None,
        "uptime": s.uptime if s else None,
    }


def _group_cpu(pgid: int) -> float:
    """CPU seconds used so far by the live members of process group ``pgid``."""
    from procvisor.process import group_cpu  # noqa: PLC0415

    used = group_cpu(pgid)
    if used is None:
        raise ProcessLookupError(pgid)
    return used


def _thread_state(pid: int, tid: int) -> str:
    """A thread's state letter from /proc (R running, S sleeping, D disk, T stopped...)."""
    try:
        with open(f"/proc/{pid}/task/{tid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return "?"
    return stat[stat.rfind(b")") + 2 :].split()[0].decode()


def _process_details(pid: int) -> dict[str, Any]:
    """cmdline, cwd, user, threads, open files and sockets, environment of ``pid``."""
    out: dict[str, Any] = {}
    try:
        p = psutil.Process(pid)
        with p.oneshot():
            out["cmdline"] = p.cmdline()
            out["user"] = p.username()
            with contextlib.suppress(psutil.Error):
                out["cwd"] = p.cwd()
            out["threads"] = [
                {
                    "tid": t.id,
                    "state": _thread_state(pid, t.id),
                    "cpu_user": t.user_time,
                    "cpu_system": t.system_time,
                }
                for t in p.threads()
            ]
        with contextlib.suppress(psutil.Error):
            out["open_files"] = [{"path": f.path, "fd": f.fd} for f in p.open_files()]
        with contextlib.suppress(psutil.Error):
            out["sockets"] = [
                {
                    "fd": c.fd,
                    "type": c.type.name,
                    "local": f"{c.laddr.ip}:{c.laddr.port}" if c.laddr else "",
                    "remote": f"{c.raddr.ip}:{c.raddr.port}" if c.raddr else "",
                    "status": c.status,
                }
                for c in p.net_connections(kind="inet")
            ]
        with contextlib.suppress(psutil.Error):
            out["environment"] = redact_env(p.environ())
    except psutil.Error as exc:
        out["error"] = f"cannot read process {pid}: {exc}"
    return out
