"""The supervisor: every service's instances, in dependency order, and what the user asks of them.

It starts services in dependency order (a service starts once every service it depends on has
its instances running) and stops them in the reverse order, each level at once, so stopping
200 services that ignore SIGTERM takes one ``stop_timeout``, not 200. It applies a reload as a
difference, records each instance's pid in the store (so the next daemon can stop what a killed
one left behind), and reports every event to the store and the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from procvisor.policy.cron import next_fire
from procvisor.process import group_pids, start_ticks, stop_group
from procvisor.store import InstanceRecord, Store
from procvisor.supervisor._changes import watch_changes
from procvisor.supervisor._instance import Instance, State
from procvisor.supervisor._notify import NotifyHub
from procvisor.supervisor._observer import NullObserver, Observer
from procvisor.supervisor._probes import Prober
from procvisor.supervisor._spec import ChangeWatch, ServiceSpec

if TYPE_CHECKING:
    import psutil

__all__ = ["ReloadResult", "Supervisor"]

log = logging.getLogger("procvisor.supervisor")


@dataclass(frozen=True, slots=True)
class ReloadResult:
    started: list[str]
    stopped: list[str]
    restarted: list[str]
    scaled: list[str]
    unchanged: list[str]

    def to_dict(self) -> dict[str, list[str]]:
        return {
            "started": self.started,
            "stopped": self.stopped,
            "restarted": self.restarted,
            "scaled": self.scaled,
            "unchanged": self.unchanged,
        }


class _Service:
    __slots__ = ("instances", "spec")

    def __init__(self, spec: ServiceSpec) -> None:
        self.spec = spec
        self.instances: list[Instance] = []


def _log_failure(task: asyncio.Task[Any]) -> None:
    """A loop of the supervisor ended with an error, not a cancellation: say so, loudly."""
    if not task.cancelled() and task.exception() is not None:
        log.error("%s ended: %r", task.get_name(), task.exception())


def _ready_timeout(spec: ServiceSpec) -> float:
    """How long an instance of ``spec`` may take to be ready: 10 s to run, its start timeout
    if it sends READY=1, and, with a probe, its start period and enough probes to pass (or
    fail) its thresholds."""
    health = spec.health
    timeout = 10.0 + (spec.start_timeout if spec.notify else 0.0)
    if health is not None:
        timeout += health.start_period + health.interval * (
            health.success_threshold + health.failure_threshold
        )
    return timeout


def start_levels(specs: Mapping[str, ServiceSpec], names: Iterable[str]) -> list[list[str]]:
    """Group ``names`` into levels: each only depends on services of earlier levels."""
    wanted = list(names)
    level_of: dict[str, int] = {}

    def level(name: str) -> int:
        if name not in level_of:
            level_of[name] = -1  # cycles are refused at config load; guard anyway
            deps = [d for d in specs[name].depends_on if d in specs]
            level_of[name] = 1 + max((level(d) for d in deps), default=-1)
        return level_of[name]

    levels: dict[int, list[str]] = {}
    for name in wanted:
        levels.setdefault(level(name), []).append(name)
    return [levels[k] for k in sorted(levels)]


class Supervisor:
    """Keeps the instances of a set of services alive; one per daemon."""

    def __init__(
        self,
        specs: Sequence[ServiceSpec],
        *,
        log_dir: Path,
        store: Store,
        observer: Observer | None = None,
        sockets: Mapping[str, int] | None = None,
        quiet_dirs: Sequence[Path] = (),
    ) -> None:
        """``sockets``: the fd of each listening socket the specs name, as the owner keeps
        it (it is read at every spawn, so a socket bound anew is passed from then on).
        ``quiet_dirs``: where changes never restart a service (the owner's state directory;
        ``log_dir`` is always one)."""
        self._log_dir = log_dir
        self._sockets: Mapping[str, int] = {} if sockets is None else sockets
        self._store = store
        self._observer: Observer = observer if observer is not None else NullObserver()
        self._prober = Prober()
        self._notify_hub = NotifyHub()
        self._services: dict[str, _Service] = {}
        self._ps: dict[int, psutil.Process] = {}
        # restart_cron and restart_on_change loops, by service; the event stops a file watch
        self._restarters: dict[str, list[tuple[asyncio.Task[None], asyncio.Event]]] = {}
        self._quiet_dirs = (log_dir, *quiet_dirs)
        for spec in specs:
            self._services[spec.name] = _Service(spec)
        log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)

    # -- events and records -----------------------------------------------------------------

    def emit(
        self,
        service: str,
        instance: int | None,
        kind: str,
        message: str,
        data: Mapping[str, Any] | None = None,
    ) -> None:
        where = service if instance is None else f"{service}:{instance}"
        log.info("%s: %s: %s", where, kind, message)
        self._store.add_event(service, instance, kind, message, data)

    def _on_spawn(self, inst: Instance) -> None:
        assert inst.pid is not None
        created = inst.start_ticks
        if created is None:
            return  # already gone: nothing to find after a crash
        self._store.record_instance(
            InstanceRecord(inst.service, inst.index, inst.pid, created, time.time())
        )

    def _on_gone(self, inst: Instance) -> None:
        self._store.forget_instance(inst.service, inst.index)

    def _new_instance(self, spec: ServiceSpec, index: int) -> Instance:
        return Instance._create(
            spec,
            index,
            log_dir=self._log_dir,
            emit=self.emit,
            prober=self._prober,
            on_spawn=self._on_spawn,
            on_gone=self._on_gone,
            observer=self._observer,
            sockets=self._sockets,
            notify_hub=self._notify_hub,
        )

    # -- lookups ----------------------------------------------------------------------------

    @property
    def specs(self) -> dict[str, ServiceSpec]:
        return {name: svc.spec for name, svc in self._services.items()}

    def _unknown(self, name: str) -> LookupError:
        known = ", ".join(self._services) or "none"
        return LookupError(f"no service {name!r}; services: {known}")

    def resolve(self, targets: Sequence[str]) -> list[Instance]:
        """Instances named by ``targets``: service names, ``all``, or ``web:1``.

        Raises:
            LookupError: a name that is no service or instance (nothing is done then).
        """
        if not targets:
            raise ValueError("targets: name at least one service, 'all', or an instance 'web:1'")
        out: dict[str, Instance] = {}
        for target in targets:
            if target == "all":
                picked = [i for svc in self._services.values() for i in svc.instances]
            else:
                name, sep, index = target.partition(":")
                svc = self._services.get(name)
                if svc is None:
                    raise self._unknown(name)
                if not sep:
                    picked = list(svc.instances)
                elif not index.isdigit() or int(index) >= len(svc.instances):
                    raise LookupError(
                        f"no instance {target!r}; {name} has instances 0..{len(svc.instances) - 1}"
                    )
                else:
                    picked = [svc.instances[int(index)]]
            for inst in picked:
                out[inst.name] = inst
        return list(out.values())

    def _services_of(self, instances: Iterable[Instance]) -> list[str]:
        return list(dict.fromkeys(i.service for i in instances))

    # -- whole-daemon operations ------------------------------------------------------------

    async def start_all(self) -> None:
        """Create every service's instances and start those with ``autostart``."""
        for svc in self._services.values():
            while len(svc.instances) < svc.spec.instances:
                svc.instances.append(self._new_instance(svc.spec, len(svc.instances)))
        for name in self._services:
            self._arm_restarts(name)
        auto = [n for n, svc in self._services.items() if svc.spec.autostart]
        await self._start_services(auto)

    # -- restarts on a schedule or on file changes --------------------------------------------

    def _arm_restarts(self, name: str) -> None:
        """(Re)start the restart_cron and restart_on_change loops of service ``name``."""
        self._disarm_restarts(name)
        spec = self._services[name].spec
        loops = []
        stop = asyncio.Event()
        if spec.restart_cron is not None:
            loops.append((self._cron_restarts(name, spec.restart_cron), f"cron {name}"))
        if spec.restart_on_change is not None:
            changes = self._change_restarts(name, spec.restart_on_change, stop)
            loops.append((changes, f"changes {name}"))
        for coro, label in loops:
            task = asyncio.create_task(coro, name=label)
            task.add_done_callback(_log_failure)
            self._restarters.setdefault(name, []).append((task, stop))

    def _disarm_restarts(self, name: str) -> list[asyncio.Task[None]]:
        """Stop the loops of ``name``; a restart in progress stops where it is (stop()
        finishes it). Returns the tasks, to await."""
        tasks = []
        for task, stop in self._restarters.pop(name, []):
            stop.set()  # a file watch's thread ends within 50 ms, then the task can end
            task.cancel()
            tasks.append(task)
        return tasks

    async def _cron_restarts(self, name: str, cron: str) -> None:
        """Restart the running instances of ``name`` at each fire time of ``cron``, rolling."""
        while True:
            await asyncio.sleep(max(0.0, next_fire(cron, time.time()) - time.time()))
            await self._restart_running(name, "cron-restart", f"restart on schedule {cron!r}")

    async def _change_restarts(self, name: str, watch: ChangeWatch, stop: asyncio.Event) -> None:
        """Restart the running instances of ``name`` after each batch of file changes."""
        async for changed in watch_changes(watch, self._quiet_dirs, stop):
            more = f" and {len(changed) - 1} more" if len(changed) > 1 else ""
            await self._restart_running(name, "change-restart", f"{changed[0]}{more} changed")

    async def _restart_running(self, name: str, kind: str, why: str) -> None:
        running = [i.name for i in self._services[name].instances if i.active]
        if not running:
            return  # a stopped service stays stopped
        self.emit(name, None, kind, why)
        try:
            await self.restart(running, rolling=True)
        except (RuntimeError, LookupError) as exc:
            self.emit(name, None, f"{kind}-failed", str(exc))

    async def _start_services(self, names: Sequence[str]) -> None:
        for level in start_levels(self.specs, names):
            await asyncio.gather(
                *(self._start_instances(n, self._services[n].instances) for n in level)
            )

    async def _start_instances(self, name: str, insts: Sequence[Instance]) -> None:
        """Start ``insts`` of service ``name`` once the dependencies it waits on are healthy.

        A dependency that is not healthy in time leaves them stopped, with an event saying
        which instance held them back (``procvisor start`` tries again).
        """
        spec = self._services[name].spec
        for dependency in spec.wait_healthy:
            for inst in self._services[dependency].instances:
                if not await inst.wait_ready(_ready_timeout(inst.spec)):
                    state = inst.state.value
                    if inst.state is State.RUNNING and inst.health is not None:
                        state = inst.health.health.value  # health counts while it runs
                    self.emit(
                        name,
                        None,
                        "not-started",
                        f"not started: {inst.name} is {state} instead of healthy, and "
                        f"{name} waits for it to be healthy",
                    )
                    return
        for dependency in spec.wait_completed:
            for inst in self._services[dependency].instances:
                if not await inst.wait_completed():
                    last = inst.last_exit.reason if inst.last_exit is not None else "never ran"
                    self.emit(
                        name,
                        None,
                        "not-started",
                        f"not started: {inst.name} is {inst.state.value} ({last}) instead of "
                        f"completed, and {name} waits for it to complete",
                    )
                    return
        await asyncio.gather(*(i.start() for i in insts))

    async def _stop_services(self, names: Sequence[str], only: set[str] | None = None) -> None:
        for level in reversed(start_levels(self.specs, names)):
            insts = [
                i
                for n in level
                for i in self._services[n].instances
                if only is None or i.name in only
            ]
            await asyncio.gather(*(i.stop() for i in insts))

    async def stop_all(self) -> None:
        """Stop every instance, dependents before their dependencies; then close."""
        loops = [t for name in list(self._restarters) for t in self._disarm_restarts(name)]
        await asyncio.gather(*loops, return_exceptions=True)  # gone before anything stops
        await self._stop_services(list(self._services))
        for svc in self._services.values():
            for inst in svc.instances:
                await inst.close()
        await self._prober.aclose()
        self._notify_hub.close()

    def kill_all(self) -> None:
        """SIGKILL every running instance's group now (a second SIGTERM to the daemon)."""
        for svc in self._services.values():
            for inst in svc.instances:
                inst.signal(signal.SIGKILL)

    # -- control ----------------------------------------------------------------------------

    async def start(self, targets: Sequence[str]) -> list[str]:
        insts = self.resolve(targets)
        names = {i.name for i in insts}
        for level in start_levels(self.specs, self._services_of(insts)):
            await asyncio.gather(
                *(
                    self._start_instances(
                        n, [i for i in self._services[n].instances if i.name in names]
                    )
                    for n in level
                )
            )
        return [i.name for i in insts]

    async def stop(self, targets: Sequence[str]) -> list[str]:
        insts = self.resolve(targets)
        await self._stop_services(self._services_of(insts), {i.name for i in insts})
        return [i.name for i in insts]

    async def restart(self, targets: Sequence[str], *, rolling: bool = False) -> list[str]:
        """Restart the instances; ``rolling``: one at a time, each ready before the next."""
        insts = self.resolve(targets)
        if not rolling:
            await self.stop([i.name for i in insts])
            await self.start([i.name for i in insts])
            return [i.name for i in insts]
        for inst in insts:
            await inst.restart()
            if not await inst.wait_ready(_ready_timeout(inst.spec)):
                raise RuntimeError(
                    f"rolling restart stopped at {inst.name}: it is {inst.state.value}"
                    + (f" ({inst.reason})" if inst.reason else "")
                    + " instead of ready; the instances after it were not restarted"
                )
        return [i.name for i in insts]

    def signal(self, targets: Sequence[str], sig: int) -> list[str]:
        return [i.name for i in self.resolve(targets) if i.signal(sig)]

    async def scale(self, service: str, count: int) -> list[str]:
        """Run ``count`` instances of ``service``; returns the instances started or stopped."""
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= 1000:
            raise ValueError(f"instances: {count!r} must be a whole number from 0 to 1000")
        svc = self._services.get(service)
        if svc is None:
            raise self._unknown(service)
        svc.spec = replace(svc.spec, instances=count)
        changed: list[str] = []
        while len(svc.instances) > count:
            inst = svc.instances.pop()
            await inst.close()
            changed.append(inst.name)
        added = []
        while len(svc.instances) < count:
            inst = self._new_instance(svc.spec, len(svc.instances))
            svc.instances.append(inst)
            added.append(inst)
        await asyncio.gather(*(i.start() for i in added))
        self.emit(service, None, "scale", f"scaled to {count} instances")
        return changed + [i.name for i in added]

    async def reload(self, specs: Sequence[ServiceSpec]) -> ReloadResult:
        """Apply a new set of services as a difference; untouched instances keep running."""
        new = {s.name: s for s in specs}
        old = self.specs
        removed = [n for n in old if n not in new]
        added = [n for n in new if n not in old]
        changed, scaled, unchanged = [], [], []
        for name, spec in new.items():
            if name not in old:
                continue
            if spec == old[name]:
                unchanged.append(name)
            elif replace(spec, instances=old[name].instances) == old[name]:
                scaled.append(name)
            else:
                changed.append(name)
        for name in [*removed, *changed]:
            self._disarm_restarts(name)
        # Stop what goes away or changes (dependents first), then start in dependency order.
        await self._stop_services([*removed, *changed])
        for name in removed:
            for inst in self._services[name].instances:
                await inst.close()
            del self._services[name]
            self.emit(name, None, "reload", "removed")
        running_before = {
            name: any(i.active for i in self._services[name].instances) for name in changed
        }
        for name in changed:
            for inst in self._services[name].instances:
                await inst.close()
        # Rebuild the table in the new file's order.
        services: dict[str, _Service] = {}
        for name, spec in new.items():
            svc = self._services.get(name) or _Service(spec)
            if name in changed:
                svc = _Service(spec)
            services[name] = svc
        self._services = services
        for name in [*added, *changed]:
            svc = self._services[name]
            svc.instances = [self._new_instance(svc.spec, i) for i in range(svc.spec.instances)]
            self._arm_restarts(name)
        to_start = [n for n in added if new[n].autostart]
        to_start += [n for n in changed if new[n].autostart or running_before[n]]
        await self._start_services(to_start)
        for name in scaled:
            await self.scale(name, new[name].instances)
            self._services[name].spec = new[name]
        for name in added:
            self.emit(name, None, "reload", "added")
        for name in changed:
            self.emit(name, None, "reload", "changed: restarted")
        counts = [f"{name}={new[name].instances}" for name in scaled]
        return ReloadResult(added, removed, changed, counts, unchanged)

    async def stop_leftovers(self) -> list[str]:
        """Stop the service processes a previous daemon left behind (it was SIGKILLed).

        The store records each instance's pid and start time; a process that still has both
        (so the pid was not reused) and still leads its group is stopped like an instance: its
        service's stop signal to the group, ``stop_timeout``, then SIGKILL. Adopting them instead
        would keep them running, but their stdout and stderr pipes died with the old daemon, so
        their next write would fail; a clean restart is the honest choice.
        """
        stopped = []
        waits = []
        records = self._store.instances()
        live = group_pids() if records else {}  # one read of /proc for all of them
        for rec in records:
            self._store.forget_instance(rec.service, rec.instance)
            try:
                if start_ticks(rec.pid) != rec.create_time or os.getpgid(rec.pid) != rec.pid:
                    continue  # gone, or the pid now belongs to another process
            except ProcessLookupError:
                continue
            if rec.pid not in live:
                continue  # only zombies are left: it ended, and its reaper has not reaped it
            spec = self._services.get(rec.service)
            sig = spec.spec.stop_signal if spec else signal.SIGTERM
            grace = spec.spec.stop_timeout if spec else 10.0
            name = f"{rec.service}:{rec.instance}"
            self.emit(
                rec.service,
                rec.instance,
                "leftover",
                f"stopping pid {rec.pid}, left running by a daemon that was killed",
                {"pid": rec.pid},
            )
            stopped.append(name)
            waits.append(stop_group(rec.pid, grace, sig=sig))
        await asyncio.gather(*waits)
        return stopped

    # -- reporting --------------------------------------------------------------------------

    def status(self, service: str | None = None, *, measure: bool = True) -> list[dict[str, Any]]:
        """One dict per instance (see :meth:`Instance.status`), with CPU and memory unless
        ``measure`` is false (then the caller fills them in from its own samples)."""
        if service is not None and service not in self._services:
            raise self._unknown(service)
        insts = [
            i
            for name, svc in self._services.items()
            if service is None or name == service
            for i in svc.instances
        ]
        if not measure:
            return [inst.status() for inst in insts]
        import psutil  # noqa: PLC0415 - not before the first service starts: ~20 ms

        groups = group_pids() if any(i.pid for i in insts) else {}
        seen: dict[int, psutil.Process] = {}
        out = []
        for inst in insts:
            row = inst.status()
            if inst.pid is not None:
                cpu, rss = 0.0, 0
                for pid in groups.get(inst.pid, [inst.pid]):
                    with contextlib.suppress(psutil.Error):  # it may be gone by now
                        proc = self._ps.get(pid) or psutil.Process(pid)
                        with proc.oneshot():
                            cpu += proc.cpu_percent()
                            rss += proc.memory_info().rss
                        seen[pid] = proc
                row["cpu_percent"] = round(cpu, 1)
                row["rss"] = rss
            out.append(row)
        if service is None:
            self._ps = seen
        else:
            self._ps.update(seen)
        return out

    def log_files(self, target: str, stream: str) -> list[tuple[str, Path, int]]:
        if stream not in ("stdout", "stderr"):
            raise ValueError(f"stream: {stream!r} must be 'stdout' or 'stderr'")
        return [(i.name, i.log_path(stream), i.spec.logs.backups) for i in self.resolve([target])]
