"""Pools of workers in any language that speak JSON lines: :class:`CommandPool`.

The protocol (docs/worker-protocol.md has it in full, with a Python and a shell worker): the
pool writes one request per line to the worker's stdin, ``{"id":7,"data":...}``, or a health
ping, ``{"id":8,"ping":true}``; the worker answers each, in order, with one line on stdout:
``{"id":7,"result":...}`` or ``{"id":7,"error":...}``. The worker exits at end of file on
stdin. Its stderr goes to the pool's log. Anything else on stdout -- text that is not JSON, an
object without ``result`` or ``error``, an answer to another id -- fails the task with
:class:`~procvisor.ProtocolError`, and the worker is killed and replaced.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import json
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal, Unpack

from procvisor.errors import TaskFailed
from procvisor.pool._engine import (
    BAD,
    Engine,
    Sizing,
    Task,
    TaskOptions,
    Worker,
    iter_lines,
    map_results,
    seconds,
)
from procvisor.pool._worker import ERR, OK
from procvisor.process import prepare

__all__ = ["CommandPool"]

_MAX_LINE = 64 << 20  # a response longer than this, with no newline yet, breaks the protocol
_SETPRIV = shutil.which("setpriv")
_encode_json = json.JSONEncoder(separators=(",", ":")).encode
_decode_json = json.JSONDecoder().decode


def _shown(line: bytes) -> str:
    text = repr(line[:80])
    return text + ("..." if len(line) > 80 else "")


class CommandPool(Engine):
    """A pool of worker programs, in any language, that answer JSON requests line by line.

    ``pool.submit(data)`` sends ``data`` (anything JSON can encode) to a free worker and
    returns a :class:`concurrent.futures.Future` of the ``result`` it answers; an ``error``
    answer raises :class:`~procvisor.TaskFailed` with the error in ``.error``.

    Args:
        command: the worker program: an argv list, or a string split like a shell would
            (no shell runs).
        env, inherit_env, cwd: the workers' environment and working directory.
        stderr: a file that the workers' stderr is appended to; ``None`` leaves it on the
            pool's own stderr.
        ping_interval: how long a worker may sit idle before it gets a health ping
            (seconds or ``"30s"``; ``None`` for no pings).
        ping_timeout: how long it has to answer one before it is killed and replaced.
        timeout: the default per-task timeout (``schedule`` can override it).
        workers, min_workers, max_workers, initial_workers, idle_timeout,
        max_tasks_per_worker, max_memory_per_worker, max_worker_age, aging, prefetch:
            as for :class:`~procvisor.Pool`.

    Raises:
        SpawnError: the program cannot be found or run (or the cwd does not exist).
        ValueError: an option is invalid (the message names it).
    """

    def __init__(
        self,
        command: str | Sequence[str],
        workers: int | None = None,
        *,
        env: Mapping[str, str] | None = None,
        inherit_env: bool = True,
        cwd: str | os.PathLike[str] | None = None,
        stderr: str | os.PathLike[str] | None = None,
        ping_interval: float | str | None = "30s",
        ping_timeout: float | str = "5s",
        timeout: float | str | None = None,
        **sizing: Unpack[Sizing],
    ) -> None:
        prepared = prepare(command, env=env, inherit_env=inherit_env, cwd=cwd)
        self._args = list(prepared.args)
        self._argv = [prepared.executable, *prepared.args[1:]]
        if _SETPRIV is not None:
            # The kernel kills a worker whose pool's process dies, even while it is busy;
            # without setpriv a worker notices only at end of file on its stdin.
            self._argv = [_SETPRIV, "--pdeathsig", "KILL", "--", *self._argv]
        self._env = dict(env or {})
        self._inherit_env = inherit_env
        self._cwd = os.fspath(cwd) if cwd is not None else None
        self._ping_interval = seconds(ping_interval, "ping_interval")
        self._ping_timeout = seconds(ping_timeout, "ping_timeout") or 5.0
        self._timeout = seconds(timeout, "timeout")
        self._log_fd: int | Literal["inherit"] = "inherit"
        if stderr is not None:
            self._log_fd = os.open(
                stderr, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600
            )
        try:
            super().__init__(workers, **sizing)
        except BaseException:
            self._cleanup()  # idempotent: the I/O thread may have done it already
            raise

    def submit(self, data: Any) -> cf.Future[Any]:
        """Send ``data`` to a worker at normal priority; return the future of its result.

        Raises:
            TypeError: ``data`` cannot be encoded as JSON.
            RuntimeError: the pool is shut down.
        """
        return self.schedule(data)

    def schedule(self, data: Any, **options: Unpack[TaskOptions]) -> cf.Future[Any]:
        """Submit ``data`` with options: priority, timeout, deadline (from now), retries.

        ``retry_on`` names what to retry: :class:`~procvisor.TaskFailed`,
        :class:`~procvisor.WorkerCrashed`, :class:`~procvisor.TaskTimeout`,
        :class:`~procvisor.ProtocolError`.

        Raises:
            TypeError: ``data`` cannot be encoded as JSON.
            RuntimeError: the pool is shut down.
            ValueError: an option is invalid.
        """
        try:
            body = _encode_json(data).encode()
        except (TypeError, ValueError) as exc:
            raise TypeError(f"data: cannot be encoded as JSON ({exc})") from None
        if options.get("timeout") is None:
            options["timeout"] = self._timeout
        return self._new_task(None, (body,), {}, "the task", options)

    def map(
        self,
        items: Iterable[Any],
        *,
        timeout: float | None = None,
        buffersize: int | None = None,
    ) -> Iterator[Any]:
        """Submit every item; yield the results in order (the first error is raised).

        ``timeout`` bounds the wait for all of them, from this call, as ``Executor.map``'s;
        ``buffersize`` submits only that many items ahead of the results consumed.
        """
        return map_results(self.submit, iter(items), timeout=timeout, buffersize=buffersize)

    # -- the worker program and its JSON lines --------------------------------------------

    def _command(self) -> list[str]:
        return self._argv

    def _shown_command(self) -> list[str]:
        return self._args

    def _spawn_options(self) -> tuple[dict[str, str], bool, str | None, int | Literal["inherit"]]:
        return self._env, self._inherit_env, self._cwd, self._log_fd

    def _new_reader(self) -> bytearray:
        return bytearray()

    def _encode(self, w: Worker, task: Task) -> bytes:
        if task.ping:
            return b'{"id":%d,"ping":true}\n' % task.id
        return b'{"id":%d,"data":%b}\n' % (task.id, task.args[0])

    def _decode(self, w: Worker, data: bytes) -> Iterator[tuple[Any, ...]]:
        for line in iter_lines(w.reader, data, _MAX_LINE):
            if line is None:
                yield (BAD, f"it wrote more than {_MAX_LINE >> 20} MiB without a newline")
                return
            if not line.strip():
                continue  # a blank line says nothing
            try:
                msg = _decode_json(line.decode())
            except (UnicodeDecodeError, ValueError):
                yield (BAD, f"it wrote {_shown(line)}, which is not JSON")
                return
            expected = w.tasks[0].id if w.tasks else None
            got = msg.get("id") if isinstance(msg, dict) else None
            if not isinstance(msg, dict) or ("result" not in msg and "error" not in msg):
                yield (BAD, f'it wrote {_shown(line)}; a response is {{"id":..,"result":..}}')
                return
            if expected is None or got != expected or isinstance(got, bool):
                wanted = "no answer" if expected is None else f"an answer to id {expected}"
                yield (BAD, f"it answered id {got!r} when {wanted} was due (answer in order)")
                return
            if "error" in msg and not w.tasks[0].ping:
                error = msg["error"]
                text = error.get("message", error) if isinstance(error, dict) else error
                exc = TaskFailed(f"the worker answered: {text}", error=error, command=self._args)
                yield (ERR, got, exc, None, -1)
            else:
                yield (OK, got, msg.get("result"), -1)

    def _cleanup(self) -> None:
        if isinstance(self._log_fd, int):
            with contextlib.suppress(OSError):
                os.close(self._log_fd)
            self._log_fd = "inherit"
