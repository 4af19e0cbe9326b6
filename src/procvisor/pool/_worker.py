"""The worker process of a Python :class:`~procvisor.Pool`, and the fork server it is forked from.

A worker is forked either by the pool's caller itself (a pool's first workers, when the caller
may fork) or by the pool's fork server (every other worker); :func:`start_worker` sets both
up the same way. It speaks length-prefixed pickle frames on two pipe fds, and points its
stdin and stdout at /dev/null and stderr, so that a task that prints cannot corrupt the
protocol. Messages from the pool:

* ``(INIT, initializer_bytes)``: run the initializer once, then answer ``(READY, pid)`` (or
  ``(INIT_FAILED, traceback_text)`` and exit 1);
* ``(CALL, task_id, fn_key, fn_bytes_or_None, args, kwargs, soft_timeout)``: run
  ``fn(*args, **kwargs)``; ``fn_bytes`` comes only the first time a function is sent, after
  that only its key. With ``soft_timeout`` (seconds, or None), SIGALRM raises
  ``procvisor.SoftTimeout`` inside the task once it has run that long;
* ``(CALL_MANY, task_id, fn_key, fn_bytes_or_None, arg_tuples, None, None)``: a chunk of a
  ``map``, answered with the list of ``fn(*args)`` for each (the first exception fails it);

answered with ``(OK, task_id, result, rss)`` or ``(ERR, task_id, exception, traceback_text,
rss)``. End of file on its input means: exit now. A worker dies with the process that forked
it (the pool's, or its fork server, which dies with the pool's): each asks the kernel for
SIGKILL when its parent dies (``PR_SET_PDEATHSIG``) and checks the parent is still the one
that started it.

This file is the one definition of the wire format (frames of a 4-byte big-endian length and
a pickle; plain data through the C pickler, what it refuses through cloudpickle). It imports
nothing of procvisor, so a fresh fork server (:func:`main`, ``python _worker.py``) is a bare
interpreter running this file, with the pool's ``sys.path`` (passed in ``PROCVISOR_POOL_PATH``)
to find the tasks' modules. :mod:`procvisor.pool._forkserver` is the pool's side of it.
"""

from __future__ import annotations

import _pickle  # the C pickler that `pickle` re-exports: importing `pickle` costs ~1.5 ms more
import contextlib
import ctypes
import os
import select
import signal
import socket
import struct
import sys
from collections import OrderedDict

TYPE_CHECKING = False  # not `from typing import`: typing costs ~5 ms of a fork server's start
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from typing import Any, NoReturn

CALL, INIT, OK, ERR, READY, INIT_FAILED, CALL_MANY = range(7)
ENV_PARENT = "PROCVISOR_POOL_PARENT"
"""The pid of the pool's process, so a worker can tell its parent died before it looked."""
ENV_MEASURE_RSS = "PROCVISOR_POOL_RSS"
"""Set to 1 when the pool recycles by memory: the worker reports after each task how much its
RSS grew since it was forked (the pages it shares with the process it was forked from do not
count)."""
ENV_PATH = "PROCVISOR_POOL_PATH"
"""The pool's ``sys.path``, joined with ``os.pathsep``."""
_LEN = struct.Struct(">I")
_HIGHEST = -1
"""``pickle.HIGHEST_PROTOCOL``, as a protocol argument."""


def dumps(obj: Any) -> bytes:
    """Pickle ``obj``; with cloudpickle when the standard pickler refuses it.

    Raises:
        TypeError, pickle.PicklingError, AttributeError: neither can pickle it.
    """
    try:
        return _pickle.dumps(obj, protocol=_HIGHEST)
    except (_pickle.PicklingError, TypeError, AttributeError):
        return dumps_by_value(obj)


def dumps_by_value(obj: Any) -> bytes:
    """Pickle with cloudpickle: lambdas, closures and ``__main__`` functions by value."""
    import cloudpickle  # type: ignore[import-untyped]  # noqa: PLC0415 - only when needed

    data: bytes = cloudpickle.dumps(obj, protocol=_HIGHEST)
    return data


def frame(payload: bytes) -> bytes:
    return _LEN.pack(len(payload)) + payload


class FrameReader:
    """Collects bytes and yields every complete message they hold, unpickled."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> Iterator[Any]:
        buf = self._buf
        buf += data
        pos = 0
        end = len(buf)
        try:
            while end - pos >= 4:
                (size,) = _LEN.unpack_from(buf, pos)
                if end - pos - 4 < size:
                    break
                start = pos + 4
                pos = start + size
                yield _pickle.loads(bytes(buf[start:pos]))
        finally:
            del buf[:pos]


_PR_SET_PDEATHSIG = 1
_prctl = ctypes.CDLL(None, use_errno=True).prctl
"""Looked up once, before the forks: a worker that looked it up itself would write to (and so
copy) ~30 more of the pages it shares with the process it was forked from."""
_FN_CACHE = 4096  # more than the pool's 1024: what the pool still sends is here


def _die_with_parent(parent: int) -> None:
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if parent and os.getppid() != parent:  # it died before we asked: go now
        os._exit(1)


def _rss() -> int:
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _format(exc: BaseException) -> str:
    import traceback  # noqa: PLC0415 - only when a task fails

    return "".join(traceback.format_exception(exc))


class _SoftTimer:
    """Raises ``procvisor.SoftTimeout`` inside the running task, from SIGALRM."""

    def __init__(self) -> None:
        self.error: type[BaseException] | None = None
        self.limit = 0.0
        self.running = False

    def arm(self, seconds: float) -> None:
        if self.error is None:  # imported once, when first needed: not in a signal handler
            from procvisor.errors import SoftTimeout  # noqa: PLC0415

            self.error = SoftTimeout
            signal.signal(signal.SIGALRM, self._fire)
        self.limit = seconds
        self.running = True
        signal.setitimer(signal.ITIMER_REAL, seconds)

    def disarm(self) -> None:
        self.running = False  # first: an alarm from now on finds no task to interrupt
        signal.setitimer(signal.ITIMER_REAL, 0)

    def _fire(self, signum: int, frame: object) -> None:
        if self.running and self.error is not None:
            self.running = False
            raise self.error(f"the task ran past its soft timeout of {self.limit:g}s")


_soft = _SoftTimer()


def _error_reply(task_id: int, exc: BaseException, rss: int) -> bytes:
    tb = _format(exc)
    try:
        return dumps((ERR, task_id, exc, tb, rss))
    except Exception:  # the exception itself does not pickle: send what it said
        substitute = RuntimeError(f"{type(exc).__name__}: {exc}")
        return dumps((ERR, task_id, substitute, tb, rss))


def _serve(rfd: int, wfd: int) -> NoReturn:
    """The worker's loop: tasks from ``rfd``, results to ``wfd``, until end of file."""
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)  # print() in a task goes to stderr, never into the protocol
    measure = os.environ.get(ENV_MEASURE_RSS) == "1"
    base = _rss() if measure else 0  # what it shares with the process it was forked from
    reader = FrameReader()
    fns: OrderedDict[int, Any] = OrderedDict()
    while True:
        data = os.read(rfd, 1 << 16)
        if not data:
            os._exit(0)
        # Each answer goes out before the next task starts: a task sent ahead may run long,
        # and the pool times each task from the answer of the one before it.
        for msg in reader.feed(data):
            kind = msg[0]
            if kind in (CALL, CALL_MANY):
                _, task_id, key, fn_bytes, args, kwargs, soft = msg
                try:
                    if fn_bytes is not None:
                        fns[key] = _pickle.loads(fn_bytes)
                        if len(fns) > _FN_CACHE:
                            fns.popitem(last=False)
                    fn = fns[key]
                    fns.move_to_end(key)
                    if soft is not None:
                        _soft.arm(soft)
                    try:
                        result = fn(*args, **kwargs) if kind == CALL else [fn(*a) for a in args]
                    finally:
                        if soft is not None:
                            _soft.disarm()
                except BaseException as exc:
                    if isinstance(exc, SystemExit | KeyboardInterrupt):
                        exc = RuntimeError(f"task raised {type(exc).__name__}: {exc}")
                    _write_all(
                        wfd, frame(_error_reply(task_id, exc, _rss() - base if measure else 0))
                    )
                    continue
                rss = _rss() - base if measure else 0
                try:
                    answer = frame(dumps((OK, task_id, result, rss)))
                except Exception as exc:
                    err = TypeError(
                        f"the task's result ({type(result).__name__}) cannot be pickled: {exc}"
                    )
                    answer = frame(_error_reply(task_id, err, rss))
                _write_all(wfd, answer)
            elif kind == INIT:
                try:
                    initializer, initargs = _pickle.loads(msg[1])
                    if initializer is not None:
                        initializer(*initargs)
                except BaseException as exc:
                    tb = _format(exc)
                    _write_all(wfd, frame(dumps((INIT_FAILED, tb))))
                    os._exit(1)
                _write_all(wfd, frame(dumps((READY, os.getpid()))))


# -- the fork server ------------------------------------------------------------------------

SPAWN, KILL = b"S", b"K"
"""Requests to a fork server: ``SPAWN`` with the worker's input and output fds attached,
answered with the new pid (or ``-errno``) and the read end of its status pipe attached;
``KILL`` and a pid, not answered."""
PID = struct.Struct("i")
"""A pid (or ``-errno``) in a fork server's messages, and a wait status on a status pipe."""
SERVER_NAME = b"pool-forkserver"
"""The fork server's process name (``ps -o comm``, ``/proc/PID/comm``)."""
_PR_SET_NAME = 15


def _set_name(name: bytes) -> None:
    _prctl(_PR_SET_NAME, ctypes.c_char_p(name), 0, 0, 0)


def exit_after(fn: Callable[[], object]) -> NoReturn:
    """Run ``fn`` in a forked child and exit, never returning into the code that forked."""
    code = 1
    try:
        fn()
        code = 0
    except BaseException:
        import traceback  # noqa: PLC0415 - only when it fails

        traceback.print_exc()
        sys.stderr.flush()
    finally:
        os._exit(code)


def start_worker(
    rfd: int, wfd: int, parent: int, close: Iterable[int], name: bytes | None = None
) -> NoReturn:
    """Make this freshly forked process a pool worker and serve tasks until end of file.

    The same for a worker its fork server forked and one the pool's caller forked directly:
    its own session, SIGKILL when ``parent`` dies (at once if it has died already), the
    signal handlers of the process it was forked from dropped, and none of the fds in
    ``close`` kept (the pipe ends and sockets of the pool, its server and other workers).
    ``name`` becomes its process name.
    """
    os.setsid()
    _die_with_parent(parent)
    _drop_signal_handlers()
    for fd in close:
        os.close(fd)
    if name is not None:
        _set_name(name)
    _serve(rfd, wfd)


def _drop_signal_handlers() -> None:
    """Default dispositions for the signals the process this one was forked from handled
    (what it ignored stays ignored), SIGINT ignored, no wakeup fd."""
    signal.set_wakeup_fd(-1)
    for sig in range(1, signal.NSIG):  # not valid_signals(): making its members copies pages
        handler = signal.getsignal(sig)
        if callable(handler) and handler is not signal.default_int_handler:
            signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in a terminal is the pool's to handle


def serve_forks(ctl: socket.socket, parent: int) -> NoReturn:
    """Be a pool's fork server: fork a worker per ``SPAWN`` on ``ctl``, kill on ``KILL``, and
    write each worker's wait status to its status pipe once it is reaped. At end of file on
    ``ctl`` (the pool closed it, or its process died) kill and reap the workers left, then exit.

    Runs in a process of its own and its own session: forked from the pool's caller, or a
    fresh interpreter (:func:`main`). It and its workers die with ``parent`` as workers do.
    """
    _die_with_parent(parent)
    _drop_signal_handlers()  # the caller's handlers are not ours
    with open("/proc/self/comm", "rb") as f:
        worker_name = f.read().strip()
    _set_name(SERVER_NAME)
    live: dict[int, int] = {}  # worker pid -> the write end of its status pipe
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so that SIGCHLD wakes us

    def spawn(rfd: int, wfd: int) -> None:
        status_r, status_w = os.pipe()
        try:
            pid = os.fork()
        except OSError as exc:
            ctl.send(PID.pack(-(exc.errno or 1)))
            os.close(status_r)
            os.close(status_w)
            return
        if pid == 0:
            exit_after(lambda: worker(rfd, wfd, [status_r, status_w, *live.values()]))
        live[pid] = status_w
        socket.send_fds(ctl, [PID.pack(pid)], [status_r])
        os.close(status_r)

    def worker(rfd: int, wfd: int, fds: list[int]) -> None:
        ctl.close()
        start_worker(rfd, wfd, server, [wake_r, wake_w, *fds], worker_name)

    def kill(pid: int) -> None:
        # The worker's group; the worker alone before its setsid made it a group of its own.
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            os.kill(pid, signal.SIGKILL)

    def reap(block: bool) -> None:
        while live:
            try:
                pid, status = os.waitpid(-1, 0 if block else os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            fd = live.pop(pid, None)
            if fd is not None:
                with contextlib.suppress(OSError):  # the pool has gone
                    os.write(fd, PID.pack(status))
                os.close(fd)

    def loop() -> None:
        while True:
            ready = select.select([ctl.fileno(), wake_r], [], [])[0]
            if wake_r in ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_r, 512)
                reap(block=False)
            if ctl.fileno() not in ready:
                continue
            msg, fds, _, _ = socket.recv_fds(ctl, 16, 2)
            if not msg:
                return
            if msg[:1] == SPAWN and len(fds) == 2:
                spawn(*fds)
                for fd in fds:
                    os.close(fd)
            elif msg[:1] == KILL and len(msg) == 1 + PID.size:
                (pid,) = PID.unpack_from(msg, 1)
                if pid in live:  # not reaped: its pid cannot have been reused
                    kill(pid)
            else:
                for fd in fds:
                    os.close(fd)

    server = os.getpid()
    try:
        loop()
    finally:
        for pid in live:
            kill(pid)
        reap(block=True)
        os._exit(0)


def main() -> None:
    """A fresh fork server (``python _worker.py``): its control socket is its stdin."""
    path = os.environ.get(ENV_PATH)
    if path is not None:
        sys.path[:] = path.split(os.pathsep)
    ctl = socket.socket(fileno=os.dup(0))
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    serve_forks(ctl, int(os.environ.get(ENV_PARENT, "0") or 0))


if __name__ == "__main__":
    main()
