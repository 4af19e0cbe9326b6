"""``procvisor up``: the daemon process, wiring the supervisor, the store and the HTTP API.

In order: take the state directory's lock (a second daemon on it is refused), become a child
subreaper (orphans of services are ours to reap, as PID 1 in a container they are anyway),
open the store, stop whatever a SIGKILLed predecessor left running, serve the API on the Unix
socket (and the optional TCP listener), then start the services. Signals only set flags that
the loop acts on: SIGTERM/SIGINT stop every service in reverse dependency order and exit 0
(a second one kills what is still stopping), SIGHUP reloads the config.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import resource
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from procvisor import __version__
from procvisor._util import redact_env
from procvisor.daemon._files import SOCKET_NAME
from procvisor.daemon._jobs import jobs_config
from procvisor.daemon._metrics import DaemonMetrics
from procvisor.daemon._pools import CommandPools
from procvisor.daemon._sockets import Listeners, SocketError
from procvisor.daemon._specs import service_specs
from procvisor.daemon._systemd import Notifier
from procvisor.daemon.config import Config, ConfigError, load_config, state_dir
from procvisor.process import adopted, become_subreaper, reap_orphans, stop_group
from procvisor.store import Store, StoreError
from procvisor.supervisor import Supervisor

if TYPE_CHECKING:
    from procvisor.daemon._monitoring import Monitoring
    from procvisor.jobs import Job, Scheduler
    from procvisor.monitor._notify import Dispatcher

__all__ = ["DaemonError", "run_daemon"]

log = logging.getLogger("procvisor.daemon")

LOCK_NAME = "procvisor.lock"
PID_NAME = "procvisor.pid"
DB_NAME = "procvisor.db"
LOG_DIR_NAME = "logs"
DAEMON_LOG_NAME = "daemon.log"
SOCKET_CHECK_INTERVAL = 2.0
ADOPTED_GRACE = 5.0
"""Seconds an adopted process gets after SIGTERM at shutdown (see Daemon._stop_adopted)."""


class DaemonError(Exception):
    """The daemon cannot start; the message is one line saying why and what to do."""


START_BEFORE_API = 1.0
"""Seconds the services may take to start before the API is served anyway (a service
waiting for a dependency's health can take much longer)."""

_SOCKET_PATH_MAX = 107  # sun_path holds 108 bytes with the final NUL


def prepare_state_dir(path: Path) -> None:
    """Create the state directory with mode 0700 (and tighten it if it is wider)."""

    socket_path = os.fsencode(path / SOCKET_NAME)
    if len(socket_path) > _SOCKET_PATH_MAX:
        raise DaemonError(
            f"state dir {path} is too deep for a Unix socket ({len(socket_path)} bytes, at most "
            f"{_SOCKET_PATH_MAX}); set [daemon] state_dir or $PROCVISOR_STATE_DIR to a shorter path"
        )
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        if path.stat().st_mode & 0o077:
            path.chmod(0o700)
    except OSError as exc:
        raise DaemonError(f"cannot use state dir {path}: {exc.strerror}") from None


_MIN_OPEN_FILES = 65536


def raise_open_files_limit() -> None:
    """Raise the soft RLIMIT_NOFILE towards the hard one (as supervisord's ``minfds``).

    The daemon holds five fds per instance (two pipes, a pidfd, two log files): under the
    common soft limit of 1024 it would run out at about 200 services. Services inherit the
    raised limit unless their ``limits.open_files`` says otherwise.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = _MIN_OPEN_FILES if hard == resource.RLIM_INFINITY else min(hard, _MIN_OPEN_FILES)
    if soft != resource.RLIM_INFINITY and soft < want:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def take_lock(path: Path) -> int:
    """Lock the state directory for this daemon; the fd stays open for its whole life."""
    fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        pid = read_pid(path)
        who = f" (pid {pid})" if pid else ""
        raise DaemonError(
            f"a daemon already runs for state dir {path}{who}; "
            "use 'procvisor status', or 'procvisor down' to stop it"
        ) from None
    return fd


def read_pid(path: Path) -> int | None:
    try:
        return int((path / PID_NAME).read_text().strip())
    except (OSError, ValueError):
        return None


class Daemon:
    """One daemon: the supervisor, the store and the API on one asyncio loop."""

    def __init__(self, config_path: Path, config: Config, state: Path) -> None:
        self.config_path = config_path
        self.config = config
        self.state_dir = state
        self._subreaper = False  # set by run()
        self.started_at = time.time()
        self._stop = asyncio.Event()
        self._stopping = False
        self._systemd = Notifier()  # before any service starts: they must not inherit it
        self._ops = asyncio.Lock()
        self._reap_pending = False
        self.store: Store | None = None
        self.supervisor: Supervisor | None = None
        self.pools = CommandPools(state / LOG_DIR_NAME)
        self.listeners = Listeners()
        self.metrics = DaemonMetrics(self.instance_rows, self.pools.running)
        self.monitoring: Monitoring | None = None
        self.dispatcher: Dispatcher | None = None
        self.jobs: Scheduler | None = None

    async def _start_jobs(self) -> None:
        """Start the job scheduler: it recovers what a killed daemon left, then runs."""
        from procvisor.jobs import Scheduler  # noqa: PLC0415 - after the services

        assert self.store is not None
        self.jobs = Scheduler(self.store, self.state_dir / LOG_DIR_NAME, jobs_config(self.config))
        report = await self.jobs.start()
        if report.requeued or report.failed or report.stopped:
            log.warning("jobs recovered after a crash: %s", report.describe())
        jobs = self.jobs
        self.metrics.queue = lambda: jobs.summary().to_dict()
        self._job_events = asyncio.get_running_loop().create_task(self._observe_jobs(jobs))

    async def _observe_jobs(self, jobs: Scheduler) -> None:
        """Feed job state changes to the metrics (run durations)."""
        async with jobs.events() as events:
            async for event in events:
                self.metrics.job_event(event.job, event.ts, event.new.value)

    async def _stop_jobs(self) -> None:
        """Stop running jobs' groups (they are queued again for the next start)."""
        if self.jobs is not None:
            await self.jobs.aclose()
            await _cancel(self._job_events)

    def instance_rows(self, service: str | None = None) -> list[dict[str, Any]]:
        """Every instance's status (of ``service``), with the last sample's CPU and memory."""
        if self.supervisor is None:
            return []
        rows = self.supervisor.status(service, measure=False)
        if self.monitoring is not None:
            for row in rows:
                if row["pid"] is None:
                    continue
                labels = {"kind": "service", "service": row["service"]}
                labels["instance"] = str(row["instance"])
                sample = self.monitoring.latest(labels, row["pid"])
                if sample is not None and sample.alive:
                    row["cpu_percent"] = None if sample.cpu is None else round(sample.cpu, 1)
                    row.update(rss=sample.rss, vms=sample.vms, fds=sample.fds)
                    row["threads"] = sample.threads
        return rows

    async def _start_monitoring(self) -> asyncio.Task[None]:
        """Start the notifiers and the sampling task (after the services: it imports more)."""
        from procvisor.daemon._monitoring import Monitoring  # noqa: PLC0415
        from procvisor.monitor._notify import Dispatcher  # noqa: PLC0415

        assert self.store is not None
        self.dispatcher = Dispatcher(self.config.alerts.notifier_list())
        await self.dispatcher.start()
        self.metrics.notifications = self.dispatcher.stats
        self.monitoring = Monitoring(
            self.config,
            supervisor=lambda: self.supervisor,
            pools=self.pools,
            store=self.store,
            metrics=self.metrics,
            ops=self._ops,
            notify=self._dispatch,
            jobs=self._running_jobs,
            below=os.getpid() if self._subreaper else None,
        )
        return asyncio.get_running_loop().create_task(self.monitoring.run(), name="monitoring")

    def _running_jobs(self) -> list[tuple[int, int]]:
        if self.jobs is None:
            return []
        running = self.jobs.jobs(state="running", limit=None)
        return [(job.id, job.pid) for job in running if job.pid is not None]

    def _dispatch(self, event: Any) -> None:
        if self.dispatcher is not None:
            self.dispatcher.dispatch(event)

    async def _reconfigure_monitoring(self, config: Config) -> None:
        if self.monitoring is not None:
            self.monitoring.configure(config)
        if self.dispatcher is not None and config.alerts.notifiers != self.config.alerts.notifiers:
            from procvisor.monitor._notify import Dispatcher  # noqa: PLC0415

            old, self.dispatcher = (
                self.dispatcher,
                Dispatcher(config.alerts.notifier_list()),
            )
            await self.dispatcher.start()
            self.metrics.notifications = self.dispatcher.stats
            await old.aclose()

    # -- signals ----------------------------------------------------------------------------

    def _on_stop_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self._stopping and self.supervisor is not None:
            log.warning("%s again: killing what is still stopping", name)
            self.supervisor.kill_all()
            return
        self.request_shutdown(name)

    async def _watchdog(self, interval: float) -> None:
        """Ping systemd's watchdog from the event loop: a hung loop stops the pings."""
        while True:
            self._systemd.watchdog()
            await asyncio.sleep(interval)

    def request_shutdown(self, why: str) -> None:
        if not self._stopping:
            log.info("stopping all services (%s)", why)
            self._systemd.stopping()
        self._stopping = True
        self._stop.set()

    def _on_sighup(self) -> None:
        task = asyncio.get_running_loop().create_task(self._reload_logged())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reload_logged(self) -> None:
        try:
            result = await self.reload()
        except ConfigError as exc:
            for line in exc.lines():
                log.error("reload refused, nothing changed: %s", line)
        else:
            log.info("reloaded: %s", result)

    def _on_sigchld(self) -> None:
        if not self._reap_pending:
            self._reap_pending = True
            asyncio.get_running_loop().call_soon(self._reap)

    def _reap(self) -> None:
        self._reap_pending = False
        for pid, code in reap_orphans():
            log.debug("reaped orphan %d (%d)", pid, code)

    async def _stop_adopted(self) -> None:
        """Stop what services left running outside their groups, once they are stopped.

        A process that called ``setsid`` is in no service's group, so stopping the service
        leaves it running. When its parent exits, the daemon (a child subreaper) adopts it.
        At shutdown, each adopted process's group gets SIGTERM, then SIGKILL after
        :data:`ADOPTED_GRACE`, so nothing a service started outlives ``down``. A group
        stopped this way can leave orphans of its own, which are adopted in turn; hence the
        rounds.
        """
        for _ in range(8):
            pids = adopted()
            if not pids:
                return
            log.warning(
                "stopping %d processes that left their services' groups: %s",
                len(pids),
                ", ".join(map(str, pids)),
            )
            groups = set()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    groups.add(os.getpgid(pid))
            groups.discard(os.getpgrp())  # never the daemon's own
            await asyncio.gather(*(stop_group(g, ADOPTED_GRACE, reap=True) for g in groups))
            self._reap()

    # -- operations -------------------------------------------------------------------------

    async def reload(self) -> dict[str, list[str]]:
        """Read the config file again and apply the difference; a bad file changes nothing."""
        async with self._ops:
            source = str(self.config_path)
            config = load_config(self.config_path)
            specs = service_specs(config, source)  # reads env files: may still refuse
            assert self.supervisor is not None
            try:
                self.listeners.apply(config.sockets)
            except SocketError as exc:
                raise ConfigError.single(source, f"sockets.{exc.name}", exc.reason) from None
            try:
                result = (await self.supervisor.reload(specs)).to_dict()
            finally:
                self.listeners.retire()  # what services held before they restarted
            for what, names in (await self.pools.apply(config.pools)).items():
                result[what] += names
            await self._reconfigure_monitoring(config)
            self.config = config
            return result

    # -- the main coroutine -----------------------------------------------------------------

    async def _start_services(self) -> None:
        assert self.supervisor is not None
        async with self._ops:  # a reload waits for the start to end
            await self.supervisor.start_all()

    async def _serve_api(self) -> Any:
        """Import the API (about half a second) and serve it on the socket (and TCP)."""
        from procvisor.daemon._api import create_app  # noqa: PLC0415 - see run()
        from procvisor.daemon._server import ApiServer  # noqa: PLC0415
        from procvisor.daemon._token import load_or_create_token, token_path  # noqa: PLC0415

        control = Control(self)
        http = self.config.daemon.http
        http_app = None
        if http is not None:
            token = load_or_create_token(token_path(self.config, self.state_dir))
            http_app = create_app(control, token=token)
        server = ApiServer(
            self.state_dir / SOCKET_NAME,
            create_app(control),
            http=(http.host, http.port) if http is not None else None,
            http_app=http_app,
        )
        await server.start()
        return server

    async def run(self, ready: Callable[[str | None], None]) -> int:
        """Run until asked to stop; call ``ready(None)`` once serving, ``ready(error)`` if not.

        The services start before the API is imported and served (FastAPI and uvicorn take
        about half a second to import, and the services should not wait for them), unless
        starting them takes longer than ``START_BEFORE_API``.
        """
        loop = asyncio.get_running_loop()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._subreaper = True
        try:
            become_subreaper()
        except OSError as exc:
            self._subreaper = False
            log.warning("cannot become a child subreaper (%s); orphans go to init", exc)
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_stop_signal, signum)
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        loop.add_signal_handler(signal.SIGCHLD, self._on_sigchld)
        try:
            self.store = Store(self.state_dir / DB_NAME)
        except StoreError as exc:
            ready(str(exc))
            return 1
        server: Any = None
        try:
            self.supervisor = Supervisor(
                service_specs(self.config, str(self.config_path)),
                log_dir=self.state_dir / LOG_DIR_NAME,
                store=self.store,
                observer=self.metrics,
                sockets=self.listeners.fds,
                quiet_dirs=(self.state_dir,),
            )
            left = await self.supervisor.stop_leftovers()
            if left:
                log.warning("stopped what a killed daemon left running: %s", ", ".join(left))
            try:  # once the leftovers, which may hold them, are gone
                self.listeners.apply(self.config.sockets)
            except SocketError as exc:
                raise DaemonError(str(exc)) from None
            # Services first: FastAPI and uvicorn take about half a second to import. But a
            # service that waits for a dependency to be healthy can hold the start for much
            # longer; then the API serves meanwhile (status shows the wait), and a stop
            # request ends the wait.
            starting = loop.create_task(self._start_services())
            stop_asked = loop.create_task(self._stop.wait())
            try:
                first = asyncio.FIRST_COMPLETED
                await asyncio.wait(
                    {starting, stop_asked}, timeout=START_BEFORE_API, return_when=first
                )
                server = await self._serve_api()
                await asyncio.wait({starting, stop_asked}, return_when=first)
            finally:
                stop_asked.cancel()
                if not starting.done():
                    await _cancel(starting)
            if not starting.cancelled():
                starting.result()  # its error, if any
            monitoring: asyncio.Task[None] | None = None
            if not self._stop.is_set():
                await self.pools.apply(self.config.pools)
                await self._start_jobs()
                monitoring = await self._start_monitoring()
                ready(None)
                self._systemd.ready(f"{len(self.config.services)} services")
                if self._systemd.watchdog_interval is not None:
                    pings = loop.create_task(self._watchdog(self._systemd.watchdog_interval))
                    self._tasks.add(pings)
                log.info(
                    "procvisor %s up: %d services, API on %s",
                    __version__,
                    len(self.config.services),
                    self.state_dir / SOCKET_NAME,
                )
            while not self._stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), SOCKET_CHECK_INTERVAL)
                await server.check()
            if monitoring is not None:
                await _cancel(monitoring)  # throttled groups run again before they are stopped
            async with self._ops:
                await asyncio.gather(
                    self.supervisor.stop_all(), self.pools.close(), self._stop_jobs()
                )
                await self._stop_adopted()
            log.info("all services stopped; bye")
            return 0
        except BaseException as exc:
            ready(str(exc) if isinstance(exc, DaemonError) else f"{type(exc).__name__}: {exc}")
            if self.supervisor is not None:
                await self.supervisor.stop_all()
            await self.pools.close()
            await self._stop_jobs()
            await self._stop_adopted()
            raise
        finally:
            if self.dispatcher is not None:
                await self.dispatcher.aclose()
            if server is not None:
                await server.close()
            for task in self._tasks:
                task.cancel()
            self.listeners.close()
            self.store.close()
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
                loop.remove_signal_handler(signum)


async def _cancel(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


class Control:
    """What the HTTP API may ask of the daemon (the ``Control`` protocol of ``_api``)."""

    def __init__(self, daemon: Daemon) -> None:
        self._d = daemon

    @property
    def _sup(self) -> Supervisor:
        assert self._d.supervisor is not None
        return self._d.supervisor

    def info(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "version": __version__,
            "config": str(self._d.config_path.absolute()),
            "state_dir": str(self._d.state_dir),
            "started_at": self._d.started_at,
            "sockets": self._d.listeners.describe(),
        }

    def status(self, service: str | None) -> list[dict[str, Any]]:
        return self._d.instance_rows(service)

    async def start(self, targets: list[str]) -> list[str]:
        async with self._d._ops:
            return await self._sup.start(targets)

    async def stop(self, targets: list[str]) -> list[str]:
        async with self._d._ops:
            return await self._sup.stop(targets)

    async def restart(self, targets: list[str], rolling: bool) -> list[str]:
        async with self._d._ops:
            return await self._sup.restart(targets, rolling=rolling)

    async def scale(self, service: str, instances: int) -> list[str]:
        async with self._d._ops:
            return await self._sup.scale(service, instances)

    def signal(self, targets: list[str], sig: int) -> list[str]:
        return self._sup.signal(targets, sig)

    def log_files(self, target: str, stream: str) -> list[tuple[str, Path, int]]:
        kind, _, job = target.partition(":")
        if kind == "job":
            if not job.isdigit():
                raise ValueError(f"{target!r}: a job is named job:ID, e.g. job:17")
            self._jobs.log_paths(int(job))  # raises LookupError for an unknown job
            return [(target, self._jobs.log_file(int(job)), 1)]
        return self._sup.log_files(target, stream)

    # -- jobs -------------------------------------------------------------------------------

    @property
    def _jobs(self) -> Scheduler:
        if self._d.jobs is None:
            raise LookupError("the job scheduler has not started yet; try again in a moment")
        return self._d.jobs

    def submit(self, specs: list[dict[str, Any]], hold: bool) -> list[int]:
        return self._jobs.submit_many(specs, held=hold)

    def hold(self, ids: list[int], held: bool) -> list[dict[str, Any]]:
        outcomes = self._jobs.hold(ids) if held else self._jobs.release(ids)
        return [
            {"job": o.job, "changed": o.changed, "state": o.state.value, "message": o.message}
            for o in outcomes
        ]

    def jobs(self, state: str | None, tenant: str | None, limit: int) -> list[dict[str, Any]]:
        return [_shown(j) for j in self._jobs.jobs(state=state, tenant=tenant, limit=limit)]

    def job(self, job_id: int) -> dict[str, Any]:
        return _shown(self._jobs.get(job_id))

    async def wait(self, job_id: int, timeout: float | None) -> dict[str, Any]:
        try:
            return _shown(await self._jobs.wait(job_id, timeout))
        except TimeoutError:
            return _shown(self._jobs.get(job_id))

    async def cancel(self, ids: list[int]) -> list[dict[str, Any]]:
        outcomes = await self._jobs.cancel(ids)
        return [
            {"job": o.job, "cancelled": o.cancelled, "state": o.state.value, "message": o.message}
            for o in outcomes
        ]

    def retry(self, job_id: int) -> int:
        return self._jobs.retry(job_id)

    def queue(self) -> dict[str, Any]:
        return self._jobs.summary().to_dict()

    def schedules(self, all: bool) -> list[dict[str, Any]]:
        return [_redacted(s.to_dict()) for s in self._jobs.schedules(active=None if all else True)]

    def cancel_schedule(self, schedule: int) -> dict[str, Any]:
        return {"schedule": schedule, "cancelled": self._jobs.cancel_schedule(schedule)}

    def quotas(self) -> list[dict[str, Any]]:
        return [q.to_dict() for q in self._jobs.quota_usage()]

    def events(self, service: str | None, limit: int, after: int | None) -> list[dict[str, Any]]:
        if service is not None and service not in self._sup.specs:
            self._sup.status(service)  # raises LookupError naming the services
        assert self._d.store is not None
        return [e.to_dict() for e in self._d.store.events(service, limit=limit, after=after)]

    async def reload(self) -> dict[str, list[str]]:
        return await self._d.reload()

    def metrics(self) -> bytes:
        return self._d.metrics.render()

    @property
    def _mon(self) -> Monitoring:
        if self._d.monitoring is None:
            raise LookupError("monitoring has not started yet; try again in a moment")
        return self._d.monitoring

    def alerts(self, include_resolved: bool) -> list[dict[str, Any]]:
        return self._mon.alerts(include_resolved)

    def ack(self, alert_id: str, duration: float | None) -> dict[str, Any]:
        return self._mon.ack(alert_id, duration)

    def top(self) -> list[dict[str, Any]]:
        return self._mon.top()

    async def inspect(self, target: str) -> dict[str, Any]:
        instances = self._sup.resolve([target])
        if len(instances) != 1:
            names = ", ".join(i.name for i in instances)
            raise ValueError(f"{target!r} has {len(instances)} instances ({names}); name one")
        return await self._mon.inspect(instances[0])

    def pools(self, name: str | None) -> list[dict[str, Any]]:
        return self._d.pools.status(name)

    async def pool_submit(
        self, name: str, data: Any, timeout: float | str | None, priority: str | int
    ) -> dict[str, Any]:
        return await self._d.pools.submit(name, data, timeout=timeout, priority=priority)

    def down(self) -> None:
        self._d.request_shutdown("procvisor down")


# --------------------------------------------------------------------------- entry point


def _setup_logging(stream: Any) -> None:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        logging.Formatter("%(asctime)s procvisor[%(process)d]: %(message)s", "%Y-%m-%d %H:%M:%S")
    )
    root = logging.getLogger("procvisor")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False


def _serve(
    config_path: Path, config: Config, state: Path, ready: Callable[[str | None], None]
) -> int:
    lock = take_lock(state)
    raise_open_files_limit()
    pid_file = state / PID_NAME
    pid_file.write_text(f"{os.getpid()}\n")
    try:
        daemon = Daemon(config_path, config, state)
        return asyncio.run(daemon.run(ready))
    finally:
        with contextlib.suppress(OSError):
            if read_pid(state) == os.getpid():
                pid_file.unlink()
        os.close(lock)


def run_daemon(config_path: Path, *, detach: bool) -> int:
    """Load the config and run the daemon; with ``detach``, in the background.

    In the foreground it never returns: it exits the process when the daemon stops. With
    ``detach`` it returns the exit status once the daemon serves its API
    and has started its services (or has failed to, with its reason printed).

    Raises:
        ConfigError: the config file is invalid.
        DaemonError: the state dir is unusable or another daemon holds it.
    """
    config = load_config(config_path)  # errors name the file as the user did
    config_path = config_path.absolute()  # reload reads it after the chdir below
    state = state_dir(config, config_path)
    prepare_state_dir(state)
    if not detach:
        os.chdir(config_path.parent)  # see _detach
        _setup_logging(sys.stderr)
        code = _serve(config_path, config, state, lambda error: None)
        _exit_now(code)
    return _detach(config_path, config, state)


def _exit_now(code: int) -> NoReturn:
    """Exit without the interpreter's final garbage collection.

    Everything is stopped, closed and flushed by now; the collection at interpreter exit
    took over 2 s with 200 services, which `procvisor down` and SIGTERM would wait for.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _detach(config_path: Path, config: Config, state: Path) -> int:
    # Fail early, in the foreground, if another daemon holds the state dir.
    os.close(take_lock(state))
    r, w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid > 0:
        os.close(w)
        with os.fdopen(r, "rb") as pipe:
            message = pipe.read().decode(errors="replace").strip()
        os.waitpid(pid, 0)
        if message.startswith("ok "):
            print(f"procvisor: daemon started (pid {message[3:]}), state dir {state}")
            return 0
        raise DaemonError(message or f"the daemon exited before it was ready; see {state}")
    # The first child: a new session, then the daemon as its child, so it is no session leader.
    os.close(r)
    code = 1
    try:
        os.setsid()
        if os.fork() > 0:
            os._exit(0)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        out = os.open(state / DAEMON_LOG_NAME, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.close(out)
        # The daemon works in the config file's directory, the default cwd of its services
        # and jobs: they start with posix_spawn there, which has no chdir (see spawn()).
        os.chdir(config_path.parent)
        _setup_logging(sys.stderr)

        def ready(error: str | None) -> None:
            nonlocal w
            if w < 0:
                return
            with contextlib.suppress(OSError):
                os.write(w, (f"ok {os.getpid()}" if error is None else error).encode())
            os.close(w)
            w = -1

        try:
            code = _serve(config_path, config, state, ready)
        except DaemonError as exc:
            ready(str(exc))
        except BaseException as exc:  # report, never leave the parent waiting
            ready(f"{type(exc).__name__}: {exc}")
            log.exception("daemon failed")
        ready("the daemon stopped before it was ready")
    finally:
        os._exit(code)


def _shown(job: Job) -> dict[str, Any]:
    """A job as the API shows it: secret-looking environment values redacted."""
    return _redacted(job.to_dict())


def _redacted(view: dict[str, Any]) -> dict[str, Any]:
    """A job's or schedule's view with the secret-looking values of its spec's env hidden."""
    if "env" in view["spec"]:
        view["spec"]["env"] = redact_env(view["spec"]["env"])
    return view
