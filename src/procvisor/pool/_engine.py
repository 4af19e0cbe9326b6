"""The engine both kinds of pool share: workers, the I/O thread, queueing, timers, hygiene.

One I/O thread per pool owns the workers: it spawns them (each in its own session, through the
``process`` layer or a Python pool's fork server) or adopts the ones started before it (a Python
pool's first workers, forked from the caller), writes tasks to their pipes, reads results, watches
their exits through pidfds, and keeps the timers (task timeouts, deadlines, retry backoff, idle
shrinking, worker age, health pings). Callers only append to an inbox and wake the thread if it
sleeps; the thread moves the inbox into the priority queue
(:class:`procvisor.policy.taskqueue.TaskQueue`), resolves futures only after releasing its lock (so
a done callback may submit again), and writes each worker's pipe once per wake.

Each worker holds at most ``prefetch + 1`` tasks (``prefetch`` is 4 by default): the one it
runs and ``prefetch`` waiting in its pipe, so it never idles for a round trip. A task sent ahead
is committed to its worker: it runs after the tasks ahead of it there, whatever comes into the
queue meanwhile. So sending ahead is limited (:meth:`Engine._fill`): only while no worker is
starting and the queue holds a task for every ready worker (so no worker that frees up first
goes without while a task waits behind a busy one), only to a worker whose current task started
less than 10 ms ago (one that runs longer may be long, and the round trip saved is small beside
it), and never a task with a deadline. A task's timeout starts when the task before it on that
worker finished (the worker answers each task before it starts the next). When a worker dies or
is killed (a timeout, a protocol error, a failed health ping), only the task it was running
fails; the tasks waiting in its pipe never started and go back to the queue.

What differs between :class:`~procvisor.Pool` (Python callables, pickle frames) and
:class:`~procvisor.CommandPool` (any program, JSON lines) is the worker's command and its wire
format: a subclass provides them through the hooks at the end of :class:`Engine`. The messages
a subclass decodes are tuples: ``(OK, task_id, result, rss)``, ``(ERR, task_id, exception,
traceback_or_None, rss)``, ``(READY, pid)``, ``(INIT_FAILED, text)`` and ``(BAD, text)``, the
last for output that breaks the protocol.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import heapq
import itertools
import math
import os
import selectors
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Literal, Self, TypedDict, Unpack

from procvisor._util import Histogram
from procvisor.errors import (
    DeadlineExpired,
    ProtocolError,
    RemoteTraceback,
    SpawnError,
    TaskTimeout,
    WorkerCrashed,
)
from procvisor.policy.taskqueue import Priority, TaskQueue, parse_priority
from procvisor.policy.units import format_duration, parse_duration, parse_size
from procvisor.pool._forkserver import ForkedWorker
from procvisor.pool._worker import ERR, INIT_FAILED, OK, READY
from procvisor.process import Child, start_child

if TYPE_CHECKING:
    from procvisor.pool._stats import PoolStats

__all__ = ["BAD", "Engine", "Sizing", "TaskOptions"]

BAD = -1
"""The message kind for output that breaks the protocol: ``(BAD, description)``."""

_READ = 1 << 16
_AHEAD_WITHIN = 0.01
"""A task is sent ahead only to a worker whose current task started less than this long ago:
one running longer may be a long one, and the round trip saved is small beside it."""
DEFAULT_PREFETCH = 4
"""Tasks sent ahead to a busy worker unless a pool says otherwise. When tasks are short the
pool's own process is the bottleneck, and each wake of its I/O thread (a select, a read and a
write per worker, the timers) is shared by the tasks a worker holds: 4 measured ~20 % more
no-op tasks/s than 2. A priority task still waits behind at most 4 tasks per worker."""
_LATENCIES = 10_000
_START_FAILURES = 3
_PAGE = os.sysconf("SC_PAGE_SIZE")
_SCHED_PARAM = os.sched_param(0)


class Task:
    """One task: ``fn(*args, **kwargs)`` for a Python pool, ``args == (json_bytes,)`` for a
    command pool. A health ping is a task with ``ping`` set and no future anyone waits on."""

    # A plain class, not a dataclass: making a dataclass costs ~1 ms of `import procvisor.pool`,
    # which is inside a pool's start -> first result.
    __slots__ = (
        "args",
        "attempts",
        "backoff",
        "deadline",
        "fn",
        "future",
        "id",
        "kwargs",
        "name",
        "ping",
        "priority",
        "retries",
        "retry_on",
        "sent",
        "soft_timeout",
        "submitted",
        "timeout",
    )

    def __init__(
        self,
        fn: Callable[..., Any] | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        future: cf.Future[Any],
        priority: Priority,
        timeout: float | None,
        deadline: float | None,
        retries: int,
        retry_on: tuple[type[BaseException], ...],
        backoff: float,
        submitted: float,
        name: str = "task",
    ) -> None:
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.future = future
        self.priority = priority
        self.timeout = timeout
        self.deadline = deadline
        self.retries = retries
        self.retry_on = retry_on
        self.backoff = backoff
        self.submitted = submitted
        self.name = name
        self.id = 0
        self.attempts = 0
        self.sent = False  # its future is running: it was sent to a worker once
        self.ping = False
        self.soft_timeout: float | None = None  # raised inside the task (Python pools only)

    def __repr__(self) -> str:
        return f"<Task {self.id} {self.name} attempts={self.attempts}>"


class Worker:
    """A worker as the engine sees it: its process, its pipes and the tasks it holds."""

    __slots__ = (
        "child",
        "done_tasks",
        "exit_reason",
        "fns",
        "head_since",
        "idle_since",
        "out",
        "pinged",
        "reader",
        "ready",
        "retiring",
        "rfd",
        "started",
        "tasks",
        "wfd",
        "writing",
    )

    def __init__(
        self,
        child: Child | ForkedWorker,
        rfd: int,
        wfd: int,
        started: float,
        reader: Any,
        *,
        ready: bool,
    ) -> None:
        self.child = child
        self.rfd = rfd
        self.wfd = wfd
        self.started = started
        self.reader = reader
        self.out = bytearray()
        self.tasks: deque[Task] = deque()
        self.head_since = 0.0
        self.ready = ready
        self.writing = False  # its input pipe is registered for writability
        self.retiring = False
        self.done_tasks = 0
        self.idle_since = started
        self.pinged = started  # when it last answered a health ping
        self.fns: set[int] = set()
        self.exit_reason = ""

    def __repr__(self) -> str:
        return f"<Worker pid={self.child.pid} tasks={len(self.tasks)} ready={self.ready}>"


def seconds(value: float | str | None, name: str, *, allow_zero: bool = False) -> float | None:
    """A duration option in seconds (a number or ``"250ms"``), or None; ValueError naming it."""
    if value is None:
        return None
    secs = parse_duration(value, field=name) if isinstance(value, str) else float(value)
    if isinstance(value, bool) or not math.isfinite(secs) or secs < 0:
        raise ValueError(f"{name}: {value!r} must be a duration such as 30, '250ms' or '5m'")
    if secs == 0 and not allow_zero:
        raise ValueError(f"{name}: {value!r} must be more than 0 seconds")
    return secs


def count(value: int | None, name: str, *, minimum: int) -> int | None:
    """A whole-number option of at least ``minimum``, or None; ValueError naming it."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: {value!r} must be a whole number of at least {minimum}")
    return value


class MapWindow:
    """The futures of a ``map``, in order: all submitted at once (as ``Executor.map``), or,
    with ``buffersize``, only that many ahead of those taken, so the items are read lazily."""

    def __init__(
        self,
        submit: Callable[[Any], cf.Future[Any]],
        items: Iterator[Any],
        buffersize: int | None,
    ) -> None:
        count(buffersize, "buffersize", minimum=1)
        self._submit = submit
        first = items if buffersize is None else itertools.islice(items, buffersize)
        self._futures = deque(map(submit, first))
        self._rest = None if buffersize is None else items

    def take(self) -> cf.Future[Any] | None:
        """The next future (and one more item submitted), or None when all were taken."""
        if not self._futures:
            return None
        future = self._futures.popleft()  # not kept here once taken
        if self._rest is not None:
            self._futures.extend(map(self._submit, itertools.islice(self._rest, 1)))
        return future

    def cancel(self) -> None:
        """Cancel the futures not taken yet (the caller stopped reading the results)."""
        for future in self._futures:
            future.cancel()


def map_results(
    submit: Callable[[Any], cf.Future[Any]],
    items: Iterator[Any],
    *,
    timeout: float | None,
    buffersize: int | None,
    chunked: bool = False,
) -> Iterator[Any]:
    """The ``map`` of both pools: ``submit`` each item, and yield the results in order.

    Submitted as :class:`MapWindow` says; ``timeout`` counts from now. The futures still
    pending are cancelled when the iterator is closed or fails. ``chunked``: each result is
    a list, yielded item by item.
    """
    window = MapWindow(submit, items, buffersize)
    end = None if timeout is None else time.monotonic() + timeout

    def results() -> Iterator[Any]:
        try:
            while (future := window.take()) is not None:
                try:
                    result = future.result(None if end is None else end - time.monotonic())
                except TimeoutError:
                    future.cancel()
                    raise TimeoutError(
                        f"map: a result was not ready within the timeout of {timeout}s"
                    ) from None
                del future
                if chunked:
                    yield from result
                else:
                    yield result
        finally:
            window.cancel()

    return results()


def check_names(given: Mapping[str, object], accepted: type) -> None:
    """TypeError for a keyword that ``accepted`` (a TypedDict) does not have, with a guess."""
    names = accepted.__annotations__
    for name in given:
        if name not in names:
            import difflib  # noqa: PLC0415 - only for the error: ~1 ms of the pool's import

            close = difflib.get_close_matches(name, names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise TypeError(f"unexpected keyword argument {name!r}{hint}")


def statm_rss(pid: int) -> int:
    """The resident set size of ``pid`` in bytes, or 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


class Sizing(TypedDict, total=False):
    """The sizing and hygiene options every pool takes (see :class:`~procvisor.Pool`)."""

    min_workers: int | None
    max_workers: int | None
    initial_workers: int | None
    idle_timeout: float | str
    max_tasks_per_worker: int | None
    max_memory_per_worker: int | str | None
    max_worker_age: float | str | None
    aging: float | str
    prefetch: int


class TaskOptions(TypedDict, total=False):
    """The per-task options of ``schedule`` (see :meth:`~procvisor.Pool.schedule`)."""

    priority: Priority | int | str
    timeout: float | str | None
    soft_timeout: float | str | None
    deadline: float | str | None
    retries: int
    retry_on: tuple[type[BaseException], ...]
    backoff: float | str


class Engine:
    """The machinery of a pool; see :class:`~procvisor.Pool` for the sizing and hygiene options.

    A subclass sets its worker command first, then calls ``super().__init__``, which starts
    the I/O thread and the initial workers.
    """

    _ping_interval: float | None = None
    _ping_timeout: float = 5.0
    _soft_timeouts = False  # whether its workers can raise SoftTimeout inside a task

    def __init__(self, workers: int | None = None, **sizing: Unpack[Sizing]) -> None:
        check_names(sizing, Sizing)
        min_workers = sizing.get("min_workers")
        max_workers = sizing.get("max_workers")
        initial_workers = sizing.get("initial_workers")
        max_memory_per_worker = sizing.get("max_memory_per_worker")
        prefetch = sizing.get("prefetch", DEFAULT_PREFETCH)
        count(workers, "workers", minimum=1)
        count(min_workers, "min_workers", minimum=0)
        count(max_workers, "max_workers", minimum=1)
        count(initial_workers, "initial_workers", minimum=0)
        if workers is not None and (min_workers is not None or max_workers is not None):
            raise ValueError("workers: give either workers, or min_workers/max_workers, not both")
        if workers is None and min_workers is None and max_workers is None:
            workers = os.cpu_count() or 1
        if workers is not None:
            self._min = self._max = workers
        else:
            self._min = min_workers if min_workers is not None else 0
            self._max = max_workers if max_workers is not None else max(self._min, 1)
            if self._min > self._max:
                raise ValueError(f"min_workers: {self._min} is more than max_workers {self._max}")
        initial = initial_workers if initial_workers is not None else self._min
        if initial > self._max:
            raise ValueError(f"initial_workers: {initial} is more than the {self._max} allowed")
        self._initial = initial
        self._idle_timeout = seconds(sizing.get("idle_timeout", 60.0), "idle_timeout") or 60.0
        self._max_tasks = count(
            sizing.get("max_tasks_per_worker"), "max_tasks_per_worker", minimum=1
        )
        self._max_memory: int | None = None
        if max_memory_per_worker is not None:
            self._max_memory = (
                parse_size(max_memory_per_worker, field="max_memory_per_worker")
                if isinstance(max_memory_per_worker, str)
                else count(max_memory_per_worker, "max_memory_per_worker", minimum=1)
            )
        self._max_age = seconds(sizing.get("max_worker_age"), "max_worker_age")
        aging_s = seconds(sizing.get("aging", 10.0), "aging", allow_zero=True)
        if not 0 <= prefetch <= 8 or isinstance(prefetch, bool):
            raise ValueError(f"prefetch: {prefetch!r} must be a whole number from 0 to 8")
        self._capacity = prefetch + 1

        self._lock = threading.Lock()
        self._queue: TaskQueue[Task] = TaskQueue(aging=aging_s or 0.0)
        self._delayed: list[tuple[float, int, Task]] = []  # retries waiting out their backoff
        self._ids = itertools.count(1)
        self._closed = False
        self._gone = False  # the I/O thread has ended
        self._cancel_pending = False
        self._inbox: deque[Task] = deque()  # submitted, not yet in the queue
        # Futures to resolve once the lock is released: (set_result or the like, its argument).
        self._later: list[tuple[Callable[[Any], object], Any]] = []
        self._sleeping = False
        self._batch = False
        self._workers: dict[int, Worker] = {}  # by pid
        self._zombies: dict[int, Worker] = {}  # closed or killed, not reaped yet
        self._latencies: deque[float] = deque(maxlen=_LATENCIES)
        self._histogram = Histogram()
        self._start_failures = 0
        self._last_start_error = ""
        self._counts = dict.fromkeys(
            ("done", "failed", "timed_out", "retried", "started", "recycled", "crashed"), 0
        )
        # Workers started before the I/O thread (by _before_io_thread): its first workers.
        self._adoptable: list[tuple[Child | ForkedWorker, int, int]] = []
        self._before_io_thread()
        try:
            self._sel = selectors.DefaultSelector()
            self._wake_r, self._wake_w = os.pipe()
            os.set_blocking(self._wake_r, False)
            os.set_blocking(self._wake_w, False)
            self._sel.register(self._wake_r, selectors.EVENT_READ, None)
            # Workers must start before the constructor returns so a missing program is an
            # error here; they are started by the I/O thread (PR_SET_PDEATHSIG follows it),
            # or adopted by it from _before_io_thread, which forks in the main thread.
            self._started = threading.Event()
            self._start_error: BaseException | None = None
            self._thread = threading.Thread(target=self._run, name="procvisor-pool", daemon=True)
            self._thread.start()
        except BaseException:
            self._kill_all()  # only adoptable ones exist yet
            raise
        self._started.wait()
        if self._start_error is not None:
            self._thread.join()
            raise self._start_error

    # -- the public API -------------------------------------------------------------------

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown(wait=True)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (
            f"<procvisor.{type(self).__name__} {state} workers={len(self._workers)} "
            f"queued={len(self._queue) + len(self._inbox)}>"
        )

    def _new_task(
        self,
        fn: Callable[..., Any] | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        name: str,
        options: TaskOptions,
    ) -> cf.Future[Any]:
        """Check the per-task options, queue the task and return its future.

        Raises:
            RuntimeError: the pool is shut down.
            ValueError: an option is invalid.
        """
        check_names(options, TaskOptions)
        priority = options.get("priority", Priority.NORMAL)
        timeout = options.get("timeout")
        deadline = options.get("deadline")
        retries = options.get("retries", 0)
        retry_on = options.get("retry_on", ())
        backoff = options.get("backoff", 0.1)
        level = parse_priority(priority)
        limit = seconds(timeout, "timeout")
        within = seconds(deadline, "deadline", allow_zero=True)
        count(retries, "retries", minimum=0)
        if retries and not retry_on:
            raise ValueError(
                "retry_on: name the exception types to retry, e.g. retry_on=(ConnectionError,)"
            )
        if not isinstance(retry_on, tuple) or not all(
            isinstance(t, type) and issubclass(t, BaseException) for t in retry_on
        ):
            raise ValueError(f"retry_on: {retry_on!r} must be a tuple of exception types")
        pause = seconds(backoff, "backoff", allow_zero=True) or 0.0
        soft = seconds(options.get("soft_timeout"), "soft_timeout")
        if soft is not None and not self._soft_timeouts:
            raise ValueError(
                "soft_timeout: only a Python Pool can raise inside a task; a command worker "
                "has timeout alone"
            )
        if soft is not None and limit is not None and soft >= limit:
            raise ValueError(
                f"soft_timeout: {soft:g}s must be shorter than timeout ({limit:g}s), which "
                "kills the worker"
            )
        now = time.monotonic()
        future: cf.Future[Any] = cf.Future()
        task = Task(
            fn,
            args,
            kwargs,
            future,
            level,
            limit,
            None if within is None else now + within,
            retries,
            retry_on,
            pause,
            now,
            name,
        )
        task.soft_timeout = soft
        self._add(task)
        return future

    def _add(self, task: Task) -> None:
        # No lock: the I/O thread moves the inbox into the queue (deque.append is atomic).
        if self._closed:
            raise RuntimeError("cannot schedule new tasks after shutdown")
        task.id = next(self._ids)
        self._inbox.append(task)
        if self._sleeping:
            self._wake()
        if self._gone:  # it raced shutdown, and the I/O thread has ended: nobody will run it
            self._cancel_inbox()

    def _cancel_inbox(self) -> None:
        with contextlib.suppress(IndexError):
            while True:
                _cancel(self._inbox.popleft().future)

    def _enqueue(self, task: Task) -> None:
        """Queue ``task`` (new, retried or given back) by its own submit time and options."""
        self._queue.push(task, now=task.submitted, priority=task.priority, deadline=task.deadline)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking tasks; finish (or with ``cancel_futures`` cancel) the queued ones.

        With ``wait`` it returns once every worker has exited.
        """
        with self._lock:
            self._closed = True
            if cancel_futures:
                self._cancel_pending = True
            self._wake()
        if wait and threading.current_thread() is not self._thread:
            self._thread.join()

    @property
    def healthy(self) -> bool:
        """False once shut down, or while its workers keep failing to start."""
        return not self._closed and self._start_failures < _START_FAILURES

    def pids(self) -> list[int]:
        """The pids of the current workers."""
        with self._lock:
            return list(self._workers)

    def stats(self) -> PoolStats:
        """Counts of workers and tasks, and task latency (submit to result) percentiles."""
        from procvisor.pool._stats import PoolStats  # noqa: PLC0415 - see _stats

        with self._lock:
            workers = list(self._workers.values())
            lat = sorted(self._latencies)
            c = self._counts
            busy = sum(1 for w in workers if w.tasks and not w.tasks[0].ping)
            return PoolStats(
                workers=len(workers),
                idle=len(workers) - busy,
                busy=busy,
                queued=len(self._queue) + len(self._inbox) + len(self._delayed),
                running=busy,
                done=c["done"],
                failed=c["failed"],
                timed_out=c["timed_out"],
                retried=c["retried"],
                latency_p50=lat[len(lat) // 2] if lat else None,
                latency_p99=lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else None,
                workers_started=c["started"],
                workers_recycled=c["recycled"],
                workers_crashed=c["crashed"],
            )

    def latency_histogram(self) -> tuple[list[tuple[float, int]], float]:
        """Task latency (submit to outcome) so far: cumulative ``(bound, count)`` per bucket
        (the last bound is ``inf``) and the sum of the latencies."""
        with self._lock:
            return self._histogram.cumulative(), self._histogram.total

    def _record_latency(self, seconds: float) -> None:
        self._latencies.append(seconds)
        self._histogram.observe(seconds)

    # -- what a kind of pool provides -------------------------------------------------------

    def _command(self) -> list[str]:
        """The worker's argv."""
        raise NotImplementedError

    def _shown_command(self) -> list[str]:
        """The command to name in errors."""
        return self._command()

    def _spawn_options(self) -> tuple[dict[str, str], bool, str | None, int | Literal["inherit"]]:
        """The worker's ``env``, ``inherit_env``, ``cwd`` and ``stderr``."""
        raise NotImplementedError

    def _start_process(self, stdin: int, stdout: int) -> Child | ForkedWorker:
        """Start a worker on these pipe ends (the caller closes its copies); on the I/O thread.

        Raises:
            SpawnError: it could not be started.
        """
        env, inherit_env, cwd, stderr = self._spawn_options()
        return start_child(
            self._command(),
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            env=env,
            inherit_env=inherit_env,
            cwd=cwd,
        )

    def _before_io_thread(self) -> None:
        """Called by the constructor once the options are checked, before the I/O thread
        starts: while the caller's thread may still be the only one."""

    def _greeting(self) -> bytes:
        """What a new worker is sent first."""
        return b""

    def _ready_at_start(self) -> bool:
        """Whether a new worker takes tasks at once, or only after it says ``READY``."""
        return True

    def _new_reader(self) -> Any:
        """The per-worker decoding state handed to :meth:`_decode`."""
        raise NotImplementedError

    def _encode(self, w: Worker, task: Task) -> bytes:
        """The bytes that send ``task`` to ``w``; TypeError if it cannot be encoded."""
        raise NotImplementedError

    def _decode(self, w: Worker, data: bytes) -> Iterable[tuple[Any, ...]]:
        """The messages in ``data``, read from ``w``; lazily, so ``w.tasks[0]`` is current."""
        raise NotImplementedError

    def _cleanup(self) -> None:
        """Release what the pool holds besides its workers, once they are gone."""

    # -- the I/O thread -------------------------------------------------------------------

    def _wake(self) -> None:
        """Wake the I/O thread if it sleeps (two callers may both wake it: no harm)."""
        if self._sleeping:
            self._sleeping = False
            with contextlib.suppress(BlockingIOError):
                os.write(self._wake_w, b"x")

    def _spawn_worker(self) -> Worker:
        if self._adoptable:
            child, from_child_r, to_child_w = self._adoptable.pop(0)
        else:
            child, from_child_r, to_child_w = self._start_worker()
        os.set_blocking(to_child_w, False)
        os.set_blocking(from_child_r, False)
        now = time.monotonic()
        worker = Worker(
            child, from_child_r, to_child_w, now, self._new_reader(), ready=self._ready_at_start()
        )
        worker.out += self._greeting()
        self._workers[child.pid] = worker
        self._sel.register(from_child_r, selectors.EVENT_READ, ("r", worker))
        self._sel.register(child.fileno(), selectors.EVENT_READ, ("x", worker))
        self._flush(worker)
        self._counts["started"] += 1
        return worker

    def _start_worker(self) -> tuple[Child | ForkedWorker, int, int]:
        """A new worker, the read end of its output and the write end of its input."""
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        try:
            child = self._start_process(to_child_r, from_child_w)
        except BaseException:
            for fd in (to_child_w, from_child_r):
                os.close(fd)
            raise
        finally:
            os.close(to_child_r)
            os.close(from_child_w)
        return child, from_child_r, to_child_w

    def _run(self) -> None:
        try:
            try:
                for _ in range(self._initial):
                    self._spawn_worker()
            except BaseException as exc:
                self._start_error = exc  # the constructor joins this thread and raises it
                return
            finally:
                self._started.set()
            self._loop()
        finally:
            self._gone = True
            self._cancel_inbox()
            self._kill_all()
            self._sel.close()
            os.close(self._wake_r)
            os.close(self._wake_w)
            self._cleanup()

    def _loop(self) -> None:
        received: list[tuple[Worker, bytes]] = []
        exited: list[Worker] = []
        while True:
            # One hold of the lock per wake: take in what the workers said, then dispatch.
            with self._lock:
                now = time.monotonic()
                for w, data in received:
                    self._handle(w, data, now)
                for w in exited:
                    self._on_exit(w, now)
                fed = self._dispatch(now)
                # Every worker has a task sent ahead, and more wait: see _set_batch.
                saturated = bool(self._queue and self._workers) and all(
                    len(w.tasks) > 1 for w in self._workers.values()
                )
                done = self._closed and self._finished()
                timeout = self._next_timer(now)
                self._sleeping = not done
                if self._inbox:  # submitted since _dispatch, by a caller that saw it awake
                    timeout = 0.0
            for w in fed:  # one write per worker per wake, however many tasks it was given
                self._flush(w)
            if saturated is not self._batch:
                self._set_batch(saturated)
            self._settle()
            if done:
                break
            events = self._sel.select(timeout)
            self._sleeping = False  # without the lock: at worst a caller wakes it for nothing
            received, exited = self._gather(events)
        self._retire_all()

    def _gather(
        self, events: list[tuple[selectors.SelectorKey, int]]
    ) -> tuple[list[tuple[Worker, bytes]], list[Worker]]:
        """Read what the ready workers wrote and reap the ones that exited (without the lock,
        so callers can queue meanwhile); flush the pipes that drained."""
        received: list[tuple[Worker, bytes]] = []
        exited: list[Worker] = []
        for key, _ in events:
            if key.data is None:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 4096)
                continue
            kind, w = key.data
            if kind == "r":
                try:
                    data = os.read(w.rfd, _READ)
                except BlockingIOError:
                    continue
                if data:
                    received.append((w, data))
                else:
                    self._sel.unregister(w.rfd)
            elif kind == "w":
                self._flush(w)
            elif w.child.poll(self._sel.unregister) is not None:
                exited.append(w)
        return received, exited  # exits last: what a worker wrote comes before its death

    def _set_batch(self, batch: bool) -> None:
        """Make this (the I/O) thread ``SCHED_BATCH`` while the pool is saturated: every worker
        holds a task sent ahead of the one it runs, and more wait in the queue; else
        ``SCHED_OTHER``.

        When every worker is busy, waking this thread for each result preempts a worker
        (often the one that just wrote it, before it starts its next task) for a few tens of
        microseconds of bookkeeping. A batch thread does not preempt on wake-up: it runs when
        a CPU frees up or at a scheduler tick, and then takes in several results at once,
        while the tasks sent ahead keep every worker going. Results reach their futures a
        little later (at most a tick, a few ms) only while tasks queue anyway; a pool that
        is not saturated answers at once (the round trip of a lone task is unchanged).
        """
        self._batch = batch
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, os.SCHED_BATCH if batch else os.SCHED_OTHER, _SCHED_PARAM)

    def _settle(self) -> None:
        """Resolve the futures decided under the lock, now that it is free: their callbacks
        may call the pool (submit from a done callback)."""
        settle, self._later = self._later, []
        for resolve, value in settle:
            resolve(value)

    def _finished(self) -> bool:
        if self._cancel_pending:
            self._cancel_queued()
        return (
            not self._queue
            and not self._inbox
            and not self._delayed
            and not any(not t.ping for w in self._workers.values() for t in w.tasks)
        )

    def _cancel_queued(self) -> None:
        now = time.monotonic()
        tasks = [t for _, _, t in self._delayed]
        self._delayed.clear()
        while self._queue:
            item, expired = self._queue.pop(now + 1e9)
            tasks += [q.item for q in expired] + ([item.item] if item is not None else [])
        for task in tasks:
            self._later.append((_cancel, task.future))

    def _ping_due(self, w: Worker) -> float | None:
        if self._ping_interval is None or w.tasks or w.retiring or not w.ready:
            return None
        return max(w.idle_since, w.pinged) + self._ping_interval

    def _next_timer(self, now: float) -> float | None:
        times: list[float] = []
        for w in self._workers.values():
            if w.tasks and w.tasks[0].timeout is not None:
                times.append(w.head_since + w.tasks[0].timeout)
            elif not w.tasks and len(self._workers) > self._min:
                times.append(w.idle_since + self._idle_timeout)
            if self._max_age is not None and not w.tasks:
                times.append(w.started + self._max_age)
            ping = self._ping_due(w)
            if ping is not None:
                times.append(ping)
        deadline = self._queue.next_deadline()
        if deadline is not None:
            times.append(deadline)
        if self._delayed:
            times.append(self._delayed[0][0])
        if not times:
            return None
        return max(0.0, min(times) - now)

    # -- dispatching ----------------------------------------------------------------------

    def _dispatch(self, now: float) -> list[Worker]:
        """Move new tasks and due retries into the queue, expire, time out, scale, ping and feed
        workers.

        Returns the workers fed, whose pipes the caller flushes once it has released the lock.
        """
        inbox = self._inbox
        while inbox:
            self._enqueue(inbox.popleft())
        while self._delayed and self._delayed[0][0] <= now:
            _, _, task = heapq.heappop(self._delayed)
            self._enqueue(task)
        for q in self._queue.expire(now):
            self._fail(q.item, DeadlineExpired(self._deadline_text(q.item)), now)
        for w in list(self._workers.values()):
            if w.tasks and w.tasks[0].timeout is not None:
                if now - w.head_since >= w.tasks[0].timeout:
                    self._time_out(w, now)
            elif not w.tasks and not w.retiring:
                if self._max_age is not None and now - w.started >= self._max_age:
                    self._retire(w, "max_worker_age")
                elif len(self._workers) > self._min and now - w.idle_since >= self._idle_timeout:
                    self._retire(w, "idle")
        if self._cancel_pending:
            self._cancel_queued()
        self._scale(now)
        if self._ping_interval is not None:
            for w in list(self._workers.values()):
                due = self._ping_due(w)
                if due is not None and due <= now and not self._queue:
                    self._send_ping(w, now)
        if not self._queue:
            return []
        takers = [w for w in self._workers.values() if not w.retiring]
        ready = [w for w in takers if w.ready]
        # While a worker starts, the queue waits for it rather than behind a busy one.
        self._fill(ready, self._capacity if len(ready) == len(takers) else 1, now)
        return ready

    def _fill(self, ready: list[Worker], capacity: int, now: float) -> None:
        """Give the ready workers queued tasks: least loaded first, each up to ``capacity``.

        A task goes ahead to a busy worker only while the queue holds one for every ready
        worker, so that a worker that frees up first does not find the queue empty while that
        task waits; and only to a worker whose current task started less than
        ``_AHEAD_WITHIN`` ago, as one running longer may be long.
        """
        for slot in range(capacity):
            for w in ready:
                if slot and (len(self._queue) < len(ready) or now - w.head_since >= _AHEAD_WITHIN):
                    continue
                if not self._may_take(w, now):
                    continue
                # A task that fails to be sent (it cannot be encoded) leaves the slot free.
                while self._queue and len(w.tasks) <= slot:
                    if not self._feed(w, slot, now):
                        return

    def _may_take(self, w: Worker, now: float) -> bool:
        """Whether ``w`` may be given one more task: it holds fewer than it may still run
        before ``max_tasks_per_worker`` replaces it, and it is younger than ``max_worker_age``
        (an old one is left to go idle, and is replaced then)."""
        if self._max_tasks is not None and w.done_tasks + len(w.tasks) >= self._max_tasks:
            return False
        return self._max_age is None or now - w.started < self._max_age

    def _feed(self, w: Worker, slot: int, now: float) -> bool:
        """Send ``w`` the next task; False when none can go now."""
        item, expired = self._queue.pop(now)
        for q in expired:
            self._fail(q.item, DeadlineExpired(self._deadline_text(q.item)), now)
        if item is None:
            return False
        task = item.item
        if slot and task.deadline is not None:
            # Sent ahead, it would count as started while it waits in the pipe: a task with
            # a deadline waits in the queue for a free worker instead.
            self._enqueue(task)
            return False
        self._send(w, task, now)
        return True

    def _scale(self, now: float) -> None:
        live = [w for w in self._workers.values() if not w.retiring]
        idle = sum(1 for w in live if not w.tasks)
        want = len(self._queue)
        while len(live) < self._min or (want > idle and len(live) < self._max):
            if self._start_failures >= _START_FAILURES:
                self._fail_queued_for_start()
                return
            try:
                live.append(self._spawn_worker())
            except SpawnError as exc:
                self._last_start_error = str(exc)
                self._start_failures = _START_FAILURES
                self._fail_queued_for_start()
                return
            idle += 1

    def _fail_queued_for_start(self) -> None:
        now = time.monotonic()
        err = f"workers fail to start: {self._last_start_error}"
        while self._queue:
            item, expired = self._queue.pop(now)
            for q in [*expired, *([item] if item else [])]:
                self._fail(q.item, WorkerCrashed(err), now)

    def _send(self, w: Worker, task: Task, now: float) -> None:
        # A retried or requeued task's future is running already.
        if not task.sent and not task.future.set_running_or_notify_cancel():
            return
        task.sent = True
        try:
            payload = self._encode(w, task)
        except Exception as exc:
            self._later.append((task.future.set_exception, exc))
            self._counts["failed"] += 1
            return
        if not w.tasks:
            w.head_since = now
        w.tasks.append(task)
        task.attempts += 1
        w.out += payload

    def _send_ping(self, w: Worker, now: float) -> None:
        ping = Task(
            None, (), {}, cf.Future(), Priority.CRITICAL, self._ping_timeout, None, 0, (), 0.0, now
        )
        ping.id, ping.ping, ping.name = next(self._ids), True, "health ping"
        ping.future.set_running_or_notify_cancel()
        w.head_since = now
        w.tasks.append(ping)
        w.out += self._encode(w, ping)
        self._flush(w)

    def _flush(self, w: Worker) -> None:
        if not w.out:
            return
        try:
            n = os.write(w.wfd, w.out)
        except BlockingIOError:
            n = 0
        except BrokenPipeError:
            w.out.clear()
            return  # it died; its exit fd tells us
        del w.out[:n]
        if w.out and not w.writing:  # the pipe is full: finish when it drains
            self._sel.register(w.wfd, selectors.EVENT_WRITE, ("w", w))
            w.writing = True
        elif not w.out and w.writing:
            self._sel.unregister(w.wfd)
            w.writing = False

    # -- results and exits ----------------------------------------------------------------

    def _handle(self, w: Worker, data: bytes, now: float) -> None:
        for msg in self._decode(w, data):
            kind = msg[0]
            if kind in (OK, ERR):
                self._on_result(w, msg, now)
            elif kind == READY:
                w.ready = True
                w.idle_since = now
                self._start_failures = 0
            elif kind == INIT_FAILED:
                self._last_start_error = f"the initializer failed:\n{msg[1]}"
                w.exit_reason = "init"
            elif kind == BAD:
                self._kill(w, "protocol", self._protocol_error(w, msg[1]), now)
                return

    def _protocol_error(self, w: Worker, what: str) -> ProtocolError:
        return ProtocolError(
            f"worker pid {w.child.pid} broke the protocol: {what}; it was replaced",
            command=self._shown_command(),
        )

    def _on_result(self, w: Worker, msg: tuple[Any, ...], now: float) -> None:
        task = w.tasks.popleft()
        rss = msg[-1]
        if task.ping:
            w.pinged = now
            self._start_failures = 0
        elif msg[0] == OK:
            self._later.append((task.future.set_result, msg[2]))
            self._counts["done"] += 1
        else:
            exc, tb = msg[2], msg[3]
            if self._retry(task, exc, now):
                pass
            else:
                if tb is not None:
                    exc.__cause__ = RemoteTraceback(tb)
                self._later.append((task.future.set_exception, exc))
                self._counts["failed"] += 1
        if not task.ping:
            self._record_latency(now - task.submitted)
            w.done_tasks += 1
            if not w.tasks:
                w.idle_since = now
        w.head_since = now
        if self._max_tasks is not None and w.done_tasks >= self._max_tasks:
            self._retire(w, "max_tasks_per_worker")
        elif self._max_memory is not None:
            if rss < 0:  # the worker does not report it: measure it here
                rss = statm_rss(w.child.pid)
            if rss > self._max_memory:
                self._retire(w, "max_memory_per_worker")
        self._close_if_retired(w)

    def _retry(self, task: Task, exc: BaseException, now: float) -> bool:
        if task.attempts > task.retries or not isinstance(exc, task.retry_on):
            return False
        delay = task.backoff * (2 ** (task.attempts - 1))
        heapq.heappush(self._delayed, (now + delay, task.id, task))
        self._counts["retried"] += 1
        return True

    def _fail(self, task: Task, exc: BaseException, now: float) -> None:
        if task.ping or self._retry(task, exc, now):
            return
        if task.future.done():
            return
        if not task.sent and not task.future.set_running_or_notify_cancel():
            return
        self._later.append((task.future.set_exception, exc))
        self._counts["failed"] += 1
        if isinstance(exc, TaskTimeout):
            self._counts["timed_out"] += 1
        self._record_latency(now - task.submitted)

    def _deadline_text(self, task: Task) -> str:
        waited = format_duration(time.monotonic() - task.submitted)
        return f"{task.name}: not started before its deadline (waited {waited}); it never ran"

    def _time_out(self, w: Worker, now: float) -> None:
        task = w.tasks[0]
        assert task.timeout is not None
        if task.ping:
            what = (
                f"worker pid {w.child.pid} did not answer a health ping within "
                f"{format_duration(task.timeout)}; it was replaced"
            )
            self._kill(w, "unhealthy", WorkerCrashed(what), now)
            return
        self._kill(
            w,
            "timeout",
            TaskTimeout(
                f"{task.name} ran past its timeout of {format_duration(task.timeout)}; "
                f"its worker (pid {w.child.pid}) was killed"
            ),
            now,
        )

    def _kill(self, w: Worker, reason: str, exc: BaseException, now: float) -> None:
        """Kill ``w``, fail the task it was running with ``exc``, requeue the ones waiting."""
        w.exit_reason = reason
        w.child.kill()
        self._detach(w)
        if reason != "timeout":
            self._counts["crashed"] += 1
        if w.tasks:
            self._fail(w.tasks.popleft(), exc, now)
        self._requeue(w)

    def _requeue(self, w: Worker) -> None:
        """Tasks waiting in a dead worker's pipe never started: back to the queue."""
        while w.tasks:
            task = w.tasks.pop()
            if task.ping:
                continue
            task.attempts -= 1
            self._enqueue(task)

    def _detach(self, w: Worker) -> None:
        """Forget a worker's pipes (its exit fd stays registered until it is reaped)."""
        if self._workers.get(w.child.pid) is w:
            del self._workers[w.child.pid]
        for fd in (w.rfd, w.wfd):
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(fd)
            with contextlib.suppress(OSError):
                os.close(fd)
        w.rfd = w.wfd = -1
        self._zombies[w.child.pid] = w

    def _on_exit(self, w: Worker, now: float) -> None:
        """Account for a worker that exited (reaped by :meth:`_gather`)."""
        status = w.child.status
        assert status is not None
        if w.rfd >= 0:  # take what it wrote before dying
            with contextlib.suppress(OSError):
                while w.rfd >= 0 and (data := os.read(w.rfd, _READ)):
                    self._handle(w, data, now)
        was_known = w.child.pid in self._workers
        self._detach(w)
        self._zombies.pop(w.child.pid, None)
        if not w.ready and w.exit_reason != "retired":
            self._start_failures += 1
            if not self._last_start_error:
                self._last_start_error = f"a worker exited with {status.returncode}"
        if w.tasks and was_known and w.exit_reason not in ("retired", "timeout"):
            task = w.tasks.popleft()
            if status.signal:
                what = f"killed by {status.signal}"
            elif status.returncode is not None:
                what = f"exited with code {status.returncode}"
            else:  # its fork server died before it could reap it
                what = "ended with an unknown exit status"
            self._counts["crashed"] += 1
            self._fail(
                task,
                WorkerCrashed(
                    f"the worker running {task.name} (pid {w.child.pid}) {what}; "
                    "the pool replaced it",
                    exit_code=None if status.signal else status.returncode,
                    signal=status.signal,
                ),
                now,
            )
        elif was_known and w.exit_reason not in ("retired", "init"):
            self._counts["crashed"] += 1
        self._requeue(w)

    def _retire(self, w: Worker, why: str) -> None:
        """Let a worker finish what it holds, then exit (its input is closed)."""
        if w.retiring:
            return
        w.retiring = True
        w.exit_reason = "retired"
        if why != "idle":
            self._counts["recycled"] += 1
        self._close_if_retired(w)

    def _close_if_retired(self, w: Worker) -> None:
        """Close a retiring worker's input once it holds no task: it exits at end of file."""
        if not w.retiring or w.tasks or w.wfd < 0:
            return
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(w.wfd)
        with contextlib.suppress(OSError):
            os.close(w.wfd)
        w.wfd = -1
        if self._workers.get(w.child.pid) is w:
            del self._workers[w.child.pid]
        self._zombies[w.child.pid] = w

    def _retire_all(self) -> None:
        with self._lock:
            for w in list(self._workers.values()):
                # A health ping still out is not worth waiting for.
                if w.tasks and all(t.ping for t in w.tasks):
                    w.tasks.clear()
                self._retire(w, "idle")
        deadline = time.monotonic() + 5.0
        while self._zombies and time.monotonic() < deadline:
            _, exited = self._gather(self._sel.select(0.05))  # what they say is not awaited
            with self._lock:
                for w in exited:
                    self._on_exit(w, time.monotonic())
            self._settle()

    def _kill_all(self) -> None:
        """Kill and reap every worker, the ones never adopted from ``_before_io_thread``
        included, and close their pipes."""
        held = [(w.child, w.rfd, w.wfd) for w in [*self._workers.values(), *self._zombies.values()]]
        for child, rfd, wfd in [*self._adoptable, *held]:
            child.kill()
            child.wait()
            for fd in (rfd, wfd):
                if fd >= 0:
                    with contextlib.suppress(OSError):
                        os.close(fd)
        self._adoptable.clear()
        self._workers.clear()
        self._zombies.clear()


def _cancel(future: cf.Future[Any]) -> None:
    # Retried and requeued tasks' futures are running: they cannot be cancelled.
    if not future.cancel() and not future.done():
        future.set_exception(cf.CancelledError("the pool was shut down"))


def iter_lines(buf: bytearray, data: bytes, limit: int) -> Iterator[bytes | None]:
    """Append ``data`` to ``buf`` and yield each complete line in it, without its newline.

    Yields None (once, then stops) when ``buf`` holds more than ``limit`` bytes without one.
    """
    buf += data
    pos = 0
    try:
        while (end := buf.find(b"\n", pos)) >= 0:
            line = bytes(buf[pos:end])
            pos = end + 1
            yield line
        if len(buf) - pos > limit:
            yield None
    finally:
        del buf[:pos]
