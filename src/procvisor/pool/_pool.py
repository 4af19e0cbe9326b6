"""Pools of persistent Python worker processes: :class:`Pool` (an Executor) and :class:`AsyncPool`.

The workers run :mod:`procvisor.pool._worker`, forked by the caller itself (the first ones, when it
may fork) or by the pool's fork server (:mod:`procvisor.pool._forkserver`); tasks and results
travel as pickle frames (cloudpickle for closures and lambdas). Everything else -- queueing,
timers, hygiene, crashes -- is the shared :class:`~procvisor.pool._engine.Engine`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import itertools
import os
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Literal, Unpack

from procvisor.errors import SpawnError
from procvisor.policy.taskqueue import Priority
from procvisor.pool import _worker
from procvisor.pool._engine import (
    Engine,
    MapWindow,
    Sizing,
    Task,
    TaskOptions,
    Worker,
    count,
    map_results,
)
from procvisor.pool._forkserver import ForkedWorker, ForkServer, fork_pool
from procvisor.pool._worker import (
    CALL,
    CALL_MANY,
    ENV_MEASURE_RSS,
    ENV_PARENT,
    ENV_PATH,
    INIT,
    FrameReader,
    dumps,
    dumps_by_value,
    frame,
)

if TYPE_CHECKING:
    from procvisor.pool._stats import PoolStats

__all__ = ["AsyncPool", "Pool"]

_WORKER_FILE = os.path.abspath(_worker.__file__)
_FN_KEYS = 1024  # the worker caches more (4096): what the pool still sends, it has


class _Chunk:
    """The task of one chunk of a ``map``: ``fn`` over a tuple of argument tuples.

    It never travels: the worker is sent ``fn`` itself (cached like any other) and the
    chunk, and answers with the list of results.
    """

    __slots__ = ("__name__", "fn")

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.__name__ = getattr(fn, "__name__", "task")

    def __call__(self, *arg_tuples: tuple[Any, ...]) -> list[Any]:
        return [self.fn(*a) for a in arg_tuples]


def _map_args(
    fn: Callable[..., Any], iterables: tuple[Iterable[Any], ...], chunksize: int
) -> tuple[Callable[..., Any], Iterator[tuple[Any, ...]]]:
    """What ``map`` submits: ``fn`` and each item's arguments, or a chunk runner and chunks."""
    count(chunksize, "chunksize", minimum=1)
    items = zip(*iterables, strict=False)
    if chunksize == 1:
        return fn, items
    return _Chunk(fn), iter(lambda: tuple(itertools.islice(items, chunksize)), ())


class Pool(Engine, cf.Executor):
    _soft_timeouts = True

    """A pool of persistent Python worker processes; a :class:`concurrent.futures.Executor`.

    Args:
        workers: a fixed number of workers (default: the number of CPUs).
        min_workers, max_workers: autoscaling bounds instead of ``workers``: the pool grows
            while queued tasks outnumber idle workers and shrinks a worker idle for
            ``idle_timeout`` seconds, never below ``min_workers``.
        initial_workers: how many start at once (default ``workers`` or ``min_workers``).
        initializer, initargs: run in every worker once, before its first task.
        start_method: where workers are forked from (a worker starts in about a millisecond,
            replacements too). ``"auto"``: a fork of this process when the pool is made in
            the main thread and no other thread runs, so workers start with this process's
            modules, globals and open files as they are now (as multiprocessing's ``fork``):
            the first workers are forked from this process directly, later ones from a fork
            server forked from it at the same time; otherwise a fresh interpreter.
            ``"fresh"``: always a fresh interpreter, so workers share nothing with this
            process. The initializer works the same in both.
        max_tasks_per_worker: replace a worker after this many tasks.
        max_memory_per_worker: replace a worker whose RSS grew by more than this since it was
            forked, after a task (bytes, or a size such as ``"512M"``).
        max_worker_age: replace a worker older than this (seconds or ``"1h"``), between tasks.
        aging: seconds of waiting that raise a queued task's priority by one level (0: never).
        prefetch: tasks sent ahead to a busy worker (0 to 8, default 4), to hide the round
            trip between two tasks. A task sent ahead is committed to its worker: it runs after
            the task there even if a higher priority task is submitted meanwhile, or another
            worker frees up first. So a worker gets tasks ahead only while its current task
            started less than 10 ms ago, and tasks with a deadline are never sent ahead;
            ``prefetch=0`` sends a task only to an idle worker, for strict priority order.

    Raises:
        ValueError: a size, limit, duration or ``start_method`` is invalid (the message names
            the field).
        SpawnError: the fork server could not be started.
    """

    def __init__(
        self,
        workers: int | None = None,
        *,
        initializer: Callable[..., Any] | None = None,
        initargs: tuple[Any, ...] = (),
        start_method: Literal["auto", "fresh"] = "auto",
        **sizing: Unpack[Sizing],
    ) -> None:
        if start_method not in ("auto", "fresh"):
            raise ValueError(
                f"start_method: {start_method!r} must be 'auto' (fork this process when it "
                "has a single thread) or 'fresh' (workers share nothing with this process)"
            )
        self._start_method = start_method
        self._server: ForkServer | None = None
        self._init_bytes = dumps((initializer, tuple(initargs)))
        self._fn_keys: OrderedDict[int, tuple[Any, int, bytes]] = OrderedDict()
        self._fn_ids = itertools.count(1)
        try:
            super().__init__(workers, **sizing)
        except BaseException:
            self._cleanup()  # idempotent: the I/O thread may have done it already
            raise

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future[Any]:
        """Run ``fn(*args, **kwargs)`` in a worker at normal priority; return its future."""
        if not callable(fn):
            raise TypeError(f"fn: {fn!r} is not callable")
        now = time.monotonic()
        future: cf.Future[Any] = cf.Future()
        name = getattr(fn, "__name__", "task")
        task = Task(fn, args, kwargs, future, Priority.NORMAL, None, None, 0, (), 0.0, now, name)
        self._add(task)
        return future

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        buffersize: int | None = None,
    ) -> Iterator[Any]:
        """``fn`` over the iterables in the workers; the results in order, as they come.

        As :meth:`concurrent.futures.Executor.map`: the tasks are submitted at once, the
        first exception raises when its result is reached, and ``timeout`` (seconds from
        this call) raises TimeoutError. ``chunksize`` items travel as one task, as with
        ProcessPoolExecutor: far faster for small tasks (an exception fails its chunk).
        ``buffersize`` (as in Python 3.14) submits only that many tasks ahead of the
        results consumed, so an endless or huge iterable is read lazily.
        """
        call, args = _map_args(fn, iterables, chunksize)
        return map_results(
            lambda a: self.submit(call, *a),
            args,
            timeout=timeout,
            buffersize=buffersize,
            chunked=chunksize > 1,
        )

    def schedule(
        self,
        fn: Callable[..., Any],
        args: Iterable[Any] = (),
        kwargs: dict[str, Any] | None = None,
        **options: Unpack[TaskOptions],
    ) -> cf.Future[Any]:
        """Submit with options: ``priority``, ``timeout``, ``deadline`` (seconds from now),
        ``retries`` with ``retry_on`` (the exception types to retry) and ``backoff``.

        Raises:
            RuntimeError: the pool is shut down.
            ValueError: an option is invalid.
        """
        if not callable(fn):
            raise TypeError(f"fn: {fn!r} is not callable")
        name = getattr(fn, "__name__", "task")
        return self._new_task(fn, tuple(args), dict(kwargs or {}), name, options)

    # -- the Python worker and its pickle frames ------------------------------------------

    def _command(self) -> list[str]:
        return [sys.executable, _WORKER_FILE]

    def _spawn_options(self) -> tuple[dict[str, str], bool, str | None, int | Literal["inherit"]]:
        env = {ENV_PARENT: str(os.getpid()), ENV_PATH: os.pathsep.join(sys.path)}
        if self._max_memory is not None:
            env[ENV_MEASURE_RSS] = "1"
        return env, True, None, "inherit"

    def _before_io_thread(self) -> None:
        # A fork is safe only where no other thread can hold a lock the child would inherit
        # held; the main thread forks, as PR_SET_PDEATHSIG follows the thread that forked.
        # The first workers are forked here, one hop from the caller, and the I/O thread
        # adopts them; the fork server forks the ones that come later.
        if (
            self._start_method == "auto"
            and threading.active_count() == 1
            and threading.current_thread() is threading.main_thread()
        ):
            self._server, workers = fork_pool(self._spawn_options()[0], self._initial)
            self._adoptable.extend(workers)

    def _start_process(self, stdin: int, stdout: int) -> ForkedWorker:
        env, _, _, stderr = self._spawn_options()
        for _ in range(2):
            if self._server is None:  # a fresh one, started from the I/O thread
                self._server = ForkServer.start(self._command(), env, stderr)
            try:
                return self._server.spawn(stdin, stdout, self._command())
            except ConnectionError:
                # It died (killed from outside?) and its workers with it: their status pipes
                # tell the engine. Another fork of the caller is not safe any more.
                status = self._server.close()
                self._server = None
        raise SpawnError(
            f"the pool's fork server exited at start ({status.returncode})",
            reason="os_error",
            command=self._command(),
        )

    def _cleanup(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    def _greeting(self) -> bytes:
        return frame(dumps((INIT, self._init_bytes)))

    def _ready_at_start(self) -> bool:
        return False  # it says READY once its initializer ran

    def _new_reader(self) -> FrameReader:
        return FrameReader()

    def _decode(self, w: Worker, data: bytes) -> Iterable[tuple[Any, ...]]:
        reader: FrameReader = w.reader
        return reader.feed(data)

    def _encode(self, w: Worker, task: Task) -> bytes:
        assert task.fn is not None
        if isinstance(task.fn, _Chunk):
            kind, fn, args, kwargs = CALL_MANY, task.fn.fn, task.args, None
        else:
            kind, fn, args, kwargs = CALL, task.fn, task.args, task.kwargs
        key, fn_bytes = self._fn_key(fn)
        fn_sent = None if key in w.fns else fn_bytes
        try:
            payload = dumps((kind, task.id, key, fn_sent, args, kwargs, task.soft_timeout))
        except Exception as exc:
            raise TypeError(f"the task's function or arguments cannot be pickled: {exc}") from None
        w.fns.add(key)
        return frame(payload)

    def _fn_key(self, fn: Callable[..., Any]) -> tuple[int, bytes]:
        entry = self._fn_keys.get(id(fn))
        if entry is not None and entry[0] is fn:
            self._fn_keys.move_to_end(id(fn))
            return entry[1], entry[2]
        # The worker's __main__ is not the caller's: send __main__ functions by value.
        by_value = getattr(fn, "__module__", None) == "__main__"
        try:
            data = dumps_by_value(fn) if by_value else dumps(fn)
        except Exception as exc:
            raise TypeError(f"the task's function cannot be pickled: {exc}") from None
        key = next(self._fn_ids)
        self._fn_keys[id(fn)] = (fn, key, data)
        if len(self._fn_keys) > _FN_KEYS:
            self._fn_keys.popitem(last=False)
        return key, data


class AsyncPool:
    """:class:`Pool` for asyncio: ``await pool.submit(fn, *args)`` returns the result."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._pool = Pool(*args, **kwargs)

    async def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.wrap_future(self._pool.submit(fn, *args, **kwargs))

    async def schedule(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.wrap_future(self._pool.schedule(fn, *args, **kwargs))

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        chunksize: int = 1,
        buffersize: int | None = None,
    ) -> _AsyncMap:
        """Submit ``fn`` over the iterables; ``await`` it for a list, or ``async for`` it.

        ``chunksize`` and ``buffersize`` as with :meth:`Pool.map`. The results can be taken
        once, as from an iterator.
        """
        call, args = _map_args(fn, iterables, chunksize)
        window = MapWindow(lambda a: self._pool.submit(call, *a), args, buffersize)
        return _AsyncMap(window, chunked=chunksize > 1)

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

    def __init__(self, window: MapWindow, *, chunked: bool = False) -> None:
        self._window = window
        self._chunked = chunked

    def __await__(self) -> Generator[Any, None, list[Any]]:
        return self._all().__await__()

    async def _all(self) -> list[Any]:
        return [item async for item in self]

    async def __aiter__(self) -> AsyncIterator[Any]:
        try:
            while (future := self._window.take()) is not None:
                result = await asyncio.wrap_future(future)
                if self._chunked:
                    for item in result:
                        yield item
                else:
                    yield result
        finally:
            self._window.cancel()
