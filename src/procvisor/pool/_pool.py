"""Pools of persistent Python worker processes: :class:`Pool` (an Executor) and :class:`AsyncPool`.

One I/O thread per pool owns the workers: it spawns them (fresh interpreters, each in its own
session, through the ``process`` layer), writes tasks to their pipes, reads results, watches
their exits through pidfds, and keeps the timers (task timeouts, deadlines, retry backoff,
idle shrinking, worker age). Callers only push onto the priority queue
(:class:`procvisor.policy.taskqueue.TaskQueue`) and wake the thread.

Each worker holds at most ``prefetch + 1`` tasks: the one it runs and ``prefetch`` waiting in
its pipe, so it never idles for a round trip. A task's timeout starts when the task before it
on that worker finished. When a worker dies or is killed for a timeout, only the task it was
running fails; the tasks waiting in its pipe never started and go back to the queue.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import contextlib
import heapq
import itertools
import math
import os
import selectors
import sys
import threading
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Generator, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from procvisor.errors import (
    DeadlineExpired,
    RemoteTraceback,
    SpawnError,
    TaskTimeout,
    WorkerCrashed,
)
from procvisor.policy.taskqueue import Priority, TaskQueue, parse_priority
from procvisor.policy.units import format_duration, parse_duration, parse_size
from procvisor.pool import _worker
from procvisor.pool._worker import (
    CALL,
    ENV_MEASURE_RSS,
    ENV_PARENT,
    ENV_PATH,
    ERR,
    INIT,
    INIT_FAILED,
    OK,
    READY,
    FrameReader,
    dumps,
    dumps_by_value,
    frame,
)
from procvisor.process import Child, start_child

__all__ = ["AsyncPool", "Pool", "PoolStats"]

_READ = 1 << 16
_LATENCIES = 10_000
_START_FAILURES = 3
_WORKER_FILE = os.path.abspath(_worker.__file__)


@dataclass(slots=True)
class PoolStats:
    """A snapshot of a pool (see :meth:`Pool.stats`)."""

    workers: int
    idle: int
    busy: int
    queued: int
    running: int
    done: int
    failed: int
    timed_out: int
    retried: int
    latency_p50: float | None
    latency_p99: float | None
    workers_started: int
    workers_recycled: int
    workers_crashed: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True, eq=False)
class _Task:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    future: cf.Future[Any]
    priority: Priority
    timeout: float | None
    deadline: float | None
    retries: int
    retry_on: tuple[type[BaseException], ...]
    backoff: float
    submitted: float
    id: int = 0
    attempts: int = 0


@dataclass(slots=True, eq=False)
class _Worker:
    child: Child
    rfd: int
    wfd: int
    started: float
    reader: FrameReader = field(default_factory=FrameReader)
    out: bytearray = field(default_factory=bytearray)
    tasks: deque[_Task] = field(default_factory=deque)
    head_since: float = 0.0
    ready: bool = False
    writing: bool = False  # its input pipe is registered for writability
    retiring: bool = False
    done_tasks: int = 0
    idle_since: float = 0.0
    fns: set[int] = field(default_factory=set)
    exit_reason: str = ""


def _seconds(value: float | str | None, name: str, *, allow_zero: bool = False) -> float | None:
    if value is None:
        return None
    seconds = parse_duration(value, field=name) if isinstance(value, str) else float(value)
    if isinstance(value, bool) or not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{name}: {value!r} must be a duration such as 30, '250ms' or '5m'")
    if seconds == 0 and not allow_zero:
        raise ValueError(f"{name}: {value!r} must be more than 0 seconds")
    return seconds


def _count(value: int | None, name: str, *, minimum: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: {value!r} must be a whole number of at least {minimum}")
    return value


class Pool(cf.Executor):
    """A pool of persistent Python worker processes; a :class:`concurrent.futures.Executor`.

    Args:
        workers: a fixed number of workers (default: the number of CPUs).
        min_workers, max_workers: autoscaling bounds instead of ``workers``: the pool grows
            while queued tasks outnumber idle workers and shrinks a worker idle for
            ``idle_timeout`` seconds, never below ``min_workers``.
        initial_workers: how many start at once (default ``workers`` or ``min_workers``).
        initializer, initargs: run in every worker once, before its first task.
        max_tasks_per_worker: replace a worker after this many tasks.
        max_memory_per_worker: replace a worker whose RSS exceeds this after a task
            (bytes, or a size such as ``"512M"``).
        max_worker_age: replace a worker older than this (seconds or ``"1h"``), between tasks.
        aging: seconds of waiting that raise a queued task's priority by one level (0: never).
        prefetch: tasks sent ahead to a busy worker (0 to 8); more hides the round trip, less
            keeps priorities and timeouts tighter.

    Raises:
        ValueError: a size, limit or duration is invalid (the message names the field).
    """

    def __init__(
        self,
        workers: int | None = None,
        *,
        min_workers: int | None = None,
        max_workers: int | None = None,
        initial_workers: int | None = None,
        idle_timeout: float | str = 60.0,
        initializer: Callable[..., Any] | None = None,
        initargs: tuple[Any, ...] = (),
        max_tasks_per_worker: int | None = None,
        max_memory_per_worker: int | str | None = None,
        max_worker_age: float | str | None = None,
        aging: float | str = 10.0,
        prefetch: int = 0,
    ) -> None:
        _count(workers, "workers", minimum=1)
        _count(min_workers, "min_workers", minimum=0)
        _count(max_workers, "max_workers", minimum=1)
        _count(initial_workers, "initial_workers", minimum=0)
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
        self._idle_timeout = _seconds(idle_timeout, "idle_timeout") or 60.0
        self._max_tasks = _count(max_tasks_per_worker, "max_tasks_per_worker", minimum=1)
        self._max_memory: int | None = None
        if max_memory_per_worker is not None:
            self._max_memory = (
                parse_size(max_memory_per_worker, field="max_memory_per_worker")
                if isinstance(max_memory_per_worker, str)
                else _count(max_memory_per_worker, "max_memory_per_worker", minimum=1)
            )
        self._max_age = _seconds(max_worker_age, "max_worker_age")
        aging_s = _seconds(aging, "aging", allow_zero=True)
        if not 0 <= prefetch <= 8 or isinstance(prefetch, bool):
            raise ValueError(f"prefetch: {prefetch!r} must be a whole number from 0 to 8")
        self._capacity = prefetch + 1
        self._init_bytes = dumps((initializer, tuple(initargs)))

        self._lock = threading.Lock()
        self._queue: TaskQueue[_Task] = TaskQueue(aging=aging_s or 0.0)
        self._delayed: list[tuple[float, int, _Task]] = []  # retries waiting out their backoff
        self._ids = itertools.count(1)
        self._closed = False
        self._cancel_pending = False
        self._sleeping = False
        self._workers: dict[int, _Worker] = {}  # by pid
        self._zombies: dict[int, _Worker] = {}  # closed or killed, not reaped yet
        self._fn_keys: OrderedDict[int, tuple[Any, int, bytes]] = OrderedDict()
        self._latencies: deque[float] = deque(maxlen=_LATENCIES)
        self._start_failures = 0
        self._last_start_error = ""
        self._counts = dict.fromkeys(
            ("done", "failed", "timed_out", "retried", "started", "recycled", "crashed"), 0
        )
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        # Workers must start before the constructor returns so a missing interpreter is an
        # error here; they are started by the I/O thread (PR_SET_PDEATHSIG follows it).
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="procvisor-pool", daemon=True)
        self._thread.start()
        self._started.wait()
        if self._start_error is not None:
            self._thread.join()
            raise self._start_error

    # -- the public API -------------------------------------------------------------------

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<procvisor.Pool {state} workers={len(self._workers)} queued={len(self._queue)}>"

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future[Any]:
        """Run ``fn(*args, **kwargs)`` in a worker at normal priority; return its future."""
        if not callable(fn):
            raise TypeError(f"fn: {fn!r} is not callable")
        now = time.monotonic()
        future: cf.Future[Any] = cf.Future()
        self._add(_Task(fn, args, kwargs, future, Priority.NORMAL, None, None, 0, (), 0.0, now))
        return future

    def schedule(
        self,
        fn: Callable[..., Any],
        args: Iterable[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        priority: Priority | int | str = Priority.NORMAL,
        timeout: float | str | None = None,
        deadline: float | str | None = None,
        retries: int = 0,
        retry_on: tuple[type[BaseException], ...] = (),
        backoff: float | str = 0.1,
    ) -> cf.Future[Any]:
        """Submit with options: priority, timeout, deadline (from now), retries.

        Raises:
            RuntimeError: the pool is shut down.
            ValueError: an option is invalid.
        """
        if not callable(fn):
            raise TypeError(f"fn: {fn!r} is not callable")
        level = parse_priority(priority)
        limit = _seconds(timeout, "timeout")
        within = _seconds(deadline, "deadline", allow_zero=True)
        _count(retries, "retries", minimum=0)
        if retries and not retry_on:
            raise ValueError(
                "retry_on: name the exception types to retry, e.g. retry_on=(ConnectionError,)"
            )
        if not isinstance(retry_on, tuple) or not all(
            isinstance(t, type) and issubclass(t, BaseException) for t in retry_on
        ):
            raise ValueError(f"retry_on: {retry_on!r} must be a tuple of exception types")
        pause = _seconds(backoff, "backoff", allow_zero=True) or 0.0
        now = time.monotonic()
        future: cf.Future[Any] = cf.Future()
        task = _Task(
            fn,
            tuple(args),
            dict(kwargs or {}),
            future,
            level,
            limit,
            None if within is None else now + within,
            retries,
            retry_on,
            pause,
            now,
        )
        self._add(task)
        return future

    def _add(self, task: _Task) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot schedule new tasks after shutdown")
            task.id = next(self._ids)
            self._enqueue(task)
            self._wake()

    def _enqueue(self, task: _Task) -> None:
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
        with self._lock:
            workers = list(self._workers.values())
            lat = sorted(self._latencies)
            c = self._counts
            busy = sum(1 for w in workers if w.tasks)
            return PoolStats(
                workers=len(workers),
                idle=len(workers) - busy,
                busy=busy,
                queued=len(self._queue) + len(self._delayed),
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

    # -- the I/O thread -------------------------------------------------------------------

    def _wake(self) -> None:
        """Wake the I/O thread (called with the lock held; cheap when it is awake)."""
        if self._sleeping:
            self._sleeping = False
            with contextlib.suppress(BlockingIOError):
                os.write(self._wake_w, b"x")

    def _spawn_worker(self) -> _Worker:
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        env = {ENV_PARENT: str(os.getpid()), ENV_PATH: os.pathsep.join(sys.path)}
        if self._max_memory is not None:
            env[ENV_MEASURE_RSS] = "1"
        try:
            child = start_child(
                [sys.executable, _WORKER_FILE],
                stdin=to_child_r,
                stdout=from_child_w,
                env=env,
            )
        except BaseException:
            for fd in (to_child_w, from_child_r):
                os.close(fd)
            raise
        finally:
            os.close(to_child_r)
            os.close(from_child_w)
        os.set_blocking(to_child_w, False)
        os.set_blocking(from_child_r, False)
        now = time.monotonic()
        worker = _Worker(child, from_child_r, to_child_w, now, idle_since=now)
        worker.out += frame(dumps((INIT, self._init_bytes)))
        self._workers[child.pid] = worker
        self._sel.register(from_child_r, selectors.EVENT_READ, ("r", worker))
        self._sel.register(child.fileno(), selectors.EVENT_READ, ("x", worker))
        self._flush(worker)
        self._counts["started"] += 1
        return worker

    def _run(self) -> None:
        try:
            for _ in range(self._initial):
                self._spawn_worker()
        except BaseException as exc:
            self._start_error = exc
            self._kill_all()
            self._started.set()
            return
        self._started.set()
        try:
            self._loop()
        finally:
            self._kill_all()
            self._sel.close()
            os.close(self._wake_r)
            os.close(self._wake_w)

    def _loop(self) -> None:
        while True:
            now = time.monotonic()
            with self._lock:
                self._dispatch(now)
                if self._closed and self._finished():
                    break
                timeout = self._next_timer(now)
                self._sleeping = True
            events = self._sel.select(timeout)
            with self._lock:
                self._sleeping = False
            for key, _ in events:
                if key.data is None:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_r, 4096)
                    continue
                kind, worker = key.data
                if kind == "r":
                    self._on_readable(worker)
                elif kind == "w":
                    self._flush(worker)
                else:
                    self._on_exit(worker)
        self._retire_all()

    def _finished(self) -> bool:
        if self._cancel_pending:
            self._cancel_queued()
        return (
            not self._queue
            and not self._delayed
            and not any(w.tasks for w in self._workers.values())
        )

    def _cancel_queued(self) -> None:
        now = time.monotonic()
        tasks = [t for _, _, t in self._delayed]
        self._delayed.clear()
        while self._queue:
            item, expired = self._queue.pop(now + 1e9)
            tasks += [q.item for q in expired] + ([item.item] if item is not None else [])
        for task in tasks:
            # Retried and requeued tasks' futures are running: they cannot be cancelled.
            if not task.future.cancel() and not task.future.done():
                task.future.set_exception(cf.CancelledError("the pool was shut down"))

    def _next_timer(self, now: float) -> float | None:
        times: list[float] = []
        for w in self._workers.values():
            if w.tasks and w.tasks[0].timeout is not None:
                times.append(w.head_since + w.tasks[0].timeout)
            elif not w.tasks and len(self._workers) > self._min:
                times.append(w.idle_since + self._idle_timeout)
            if self._max_age is not None and not w.tasks:
                times.append(w.started + self._max_age)
        deadline = self._queue.next_deadline()
        if deadline is not None:
            times.append(deadline)
        if self._delayed:
            times.append(self._delayed[0][0])
        if not times:
            return None
        return max(0.0, min(times) - now)

    # -- dispatching ----------------------------------------------------------------------

    def _dispatch(self, now: float) -> None:
        """Move due retries into the queue, expire, time out, scale, and feed workers."""
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
        if not self._queue:
            return
        # Least loaded ready workers first; each takes up to its capacity.
        ready = [w for w in self._workers.values() if w.ready and not w.retiring]
        for slot in range(self._capacity):
            for w in ready:
                # A task that fails to be sent (it does not pickle) leaves the slot free.
                while self._queue and len(w.tasks) <= slot:
                    if not self._feed(w, slot, now):
                        return

    def _feed(self, w: _Worker, slot: int, now: float) -> bool:
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

    def _send(self, w: _Worker, task: _Task, now: float) -> None:
        # A retried or requeued task's future is running already.
        if not task.future.running() and not task.future.set_running_or_notify_cancel():
            return
        key, fn_bytes = self._fn_key(task.fn)
        try:
            payload = dumps(
                (CALL, task.id, key, None if key in w.fns else fn_bytes, task.args, task.kwargs)
            )
        except Exception as exc:
            task.future.set_exception(
                TypeError(f"the task's function or arguments cannot be pickled: {exc}")
            )
            self._counts["failed"] += 1
            return
        w.fns.add(key)
        if not w.tasks:
            w.head_since = now
        w.tasks.append(task)
        task.attempts += 1
        w.out += frame(payload)
        self._flush(w)

    def _fn_key(self, fn: Callable[..., Any]) -> tuple[int, bytes]:
        entry = self._fn_keys.get(id(fn))
        if entry is not None and entry[0] is fn:
            self._fn_keys.move_to_end(id(fn))
            return entry[1], entry[2]
        # The worker's __main__ is not the caller's: send __main__ functions by value.
        by_value = getattr(fn, "__module__", None) == "__main__"
        data = dumps_by_value(fn) if by_value else dumps(fn)
        key = next(self._ids)
        self._fn_keys[id(fn)] = (fn, key, data)
        if len(self._fn_keys) > 1024:
            self._fn_keys.popitem(last=False)
        return key, data

    def _flush(self, w: _Worker) -> None:
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

    def _on_readable(self, w: _Worker) -> None:
        try:
            data = os.read(w.rfd, _READ)
        except BlockingIOError:
            return
        if not data:
            self._sel.unregister(w.rfd)
            return
        now = time.monotonic()
        with self._lock:
            for msg in w.reader.feed(data):
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

    def _on_result(self, w: _Worker, msg: tuple[Any, ...], now: float) -> None:
        task = w.tasks.popleft()
        rss = msg[-1]
        if msg[0] == OK:
            task.future.set_result(msg[2])
            self._counts["done"] += 1
        else:
            exc, tb = msg[2], msg[3]
            if self._retry(task, exc, now):
                pass
            else:
                exc.__cause__ = RemoteTraceback(tb)
                task.future.set_exception(exc)
                self._counts["failed"] += 1
        self._latencies.append(now - task.submitted)
        w.done_tasks += 1
        w.head_since = now
        if not w.tasks:
            w.idle_since = now
        if self._max_tasks is not None and w.done_tasks >= self._max_tasks:
            self._retire(w, "max_tasks_per_worker")
        elif self._max_memory is not None and rss > self._max_memory:
            self._retire(w, "max_memory_per_worker")
        self._close_if_retired(w)

    def _retry(self, task: _Task, exc: BaseException, now: float) -> bool:
        if task.attempts > task.retries or not isinstance(exc, task.retry_on):
            return False
        delay = task.backoff * (2 ** (task.attempts - 1))
        heapq.heappush(self._delayed, (now + delay, task.id, task))
        self._counts["retried"] += 1
        return True

    def _fail(self, task: _Task, exc: BaseException, now: float) -> None:
        if self._retry(task, exc, now):
            return
        if task.future.done():
            return
        if not task.future.running() and not task.future.set_running_or_notify_cancel():
            return
        task.future.set_exception(exc)
        self._counts["failed"] += 1
        if isinstance(exc, TaskTimeout):
            self._counts["timed_out"] += 1
        self._latencies.append(now - task.submitted)

    def _deadline_text(self, task: _Task) -> str:
        waited = format_duration(time.monotonic() - task.submitted)
        name = getattr(task.fn, "__name__", "task")
        return f"{name}: not started before its deadline (waited {waited}); it never ran"

    def _time_out(self, w: _Worker, now: float) -> None:
        task = w.tasks[0]
        assert task.timeout is not None
        w.exit_reason = "timeout"
        w.child.kill()
        self._detach(w)
        w.tasks.popleft()
        self._fail(
            task,
            TaskTimeout(
                f"{getattr(task.fn, '__name__', 'task')} ran past its timeout of "
                f"{format_duration(task.timeout)}; its worker (pid {w.child.pid}) was killed"
            ),
            now,
        )
        self._requeue(w)

    def _requeue(self, w: _Worker) -> None:
        """Tasks waiting in a dead worker's pipe never started: back to the queue."""
        while w.tasks:
            task = w.tasks.pop()
            task.attempts -= 1
            self._enqueue(task)

    def _detach(self, w: _Worker) -> None:
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

    def _on_exit(self, w: _Worker) -> None:
        fd = w.child.fileno()
        status = w.child.poll()
        if status is None:
            return
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(fd)  # poll() closed it; nothing was opened since
        with self._lock:
            if w.rfd >= 0:  # drain what it wrote before dying
                with contextlib.suppress(OSError):
                    while data := os.read(w.rfd, _READ):
                        for msg in w.reader.feed(data):
                            if msg[0] in (OK, ERR):
                                self._on_result(w, msg, time.monotonic())
            was_known = w.child.pid in self._workers
            self._detach(w)
            self._zombies.pop(w.child.pid, None)
            now = time.monotonic()
            if not w.ready and w.exit_reason != "retired":
                self._start_failures += 1
                if not self._last_start_error:
                    self._last_start_error = f"a worker exited with {status.returncode}"
            if w.tasks and was_known and w.exit_reason not in ("retired", "timeout"):
                task = w.tasks.popleft()
                what = (
                    f"killed by {status.signal}"
                    if status.signal
                    else f"exited with code {status.returncode}"
                )
                self._counts["crashed"] += 1
                self._fail(
                    task,
                    WorkerCrashed(
                        f"the worker running {getattr(task.fn, '__name__', 'the task')} "
                        f"(pid {w.child.pid}) {what}; the pool replaced it",
                        exit_code=None if status.signal else status.returncode,
                        signal=status.signal,
                    ),
                    now,
                )
            elif was_known and w.exit_reason not in ("retired", "timeout", "init"):
                self._counts["crashed"] += 1
            self._requeue(w)

    def _retire(self, w: _Worker, why: str) -> None:
        """Let a worker finish what it holds, then exit (its input is closed)."""
        if w.retiring:
            return
        w.retiring = True
        w.exit_reason = "retired"
        if why != "idle":
            self._counts["recycled"] += 1
        self._close_if_retired(w)

    def _close_if_retired(self, w: _Worker) -> None:
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
                self._retire(w, "idle")
        deadline = time.monotonic() + 5.0
        while self._zombies and time.monotonic() < deadline:
            for key, _ in self._sel.select(0.05):
                if key.data is not None and key.data[0] == "x":
                    self._on_exit(key.data[1])
                elif key.data is not None and key.data[0] == "r":
                    with contextlib.suppress(OSError):
                        os.read(key.fd, _READ)

    def _kill_all(self) -> None:
        for w in [*self._workers.values(), *self._zombies.values()]:
            w.child.kill()
            w.child.wait()
            for fd in (w.rfd, w.wfd):
                if fd >= 0:
                    with contextlib.suppress(OSError):
                        os.close(fd)
        self._workers.clear()
        self._zombies.clear()


class AsyncPool:
    """:class:`Pool` for asyncio: ``await pool.submit(fn, *args)`` returns the result."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._pool = Pool(*args, **kwargs)

    async def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.wrap_future(self._pool.submit(fn, *args, **kwargs))

    async def schedule(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.wrap_future(self._pool.schedule(fn, *args, **kwargs))

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any]) -> _AsyncMap:
        """Submit ``fn`` over the iterables; ``await`` it for a list, or ``async for`` it."""
        return _AsyncMap([self._pool.submit(fn, *a) for a in zip(*iterables, strict=False)])

    def stats(self) -> PoolStats:
        return self._pool.stats()

    def pids(self) -> list[int]:
        return self._pool.pids()

    async def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        await asyncio.to_thread(self._pool.shutdown, wait, cancel_futures=cancel_futures)

    async def __aenter__(self) -> AsyncPool:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.shutdown()


class _AsyncMap:
    """The results of :meth:`AsyncPool.map`, in order: awaitable as a list, or async-iterable."""

    def __init__(self, futures: list[cf.Future[Any]]) -> None:
        self._futures = futures

    def __await__(self) -> Generator[Any, None, list[Any]]:
        return self._all().__await__()

    async def _all(self) -> list[Any]:
        return list(await asyncio.gather(*(asyncio.wrap_future(f) for f in self._futures)))

    async def __aiter__(self) -> AsyncIterator[Any]:
        for future in self._futures:
            yield await asyncio.wrap_future(future)
