"""The worker process of a Python :class:`~procvisor.Pool` (``python -m procvisor.pool._worker``).

It speaks length-prefixed pickle frames (see :mod:`procvisor.pool._wire`) on two fds it takes
over from its stdin and stdout, which it then points at /dev/null and stderr, so that a task
that prints cannot corrupt the protocol. Messages from the pool:

* ``(INIT, initializer_bytes)``: run the initializer once, then answer ``(READY, pid)`` (or
  ``(INIT_FAILED, traceback_text)`` and exit 1);
* ``(CALL, task_id, fn_key, fn_bytes_or_None, args, kwargs)``: run ``fn(*args, **kwargs)``;
  ``fn_bytes`` comes only the first time a function is sent, after that only its key;

answered with ``(OK, task_id, result, rss)`` or ``(ERR, task_id, exception, traceback_text,
rss)``. End of file on its input means: exit now. The worker dies with its pool: it asks the
kernel for SIGKILL when its parent dies (``PR_SET_PDEATHSIG``) and checks the parent is still
the one that started it.

This file is the one definition of the wire format (frames of a 4-byte big-endian length and
a pickle; plain data through the C pickler, what it refuses through cloudpickle). It imports
nothing of procvisor, so a worker starts as a bare interpreter running this file, with the
pool's ``sys.path`` (passed in ``PROCVISOR_POOL_PATH``) to find the tasks' modules.
"""

from __future__ import annotations

import ctypes
import os
import pickle
import signal
import struct
import sys
from collections import OrderedDict

TYPE_CHECKING = False  # not `from typing import`: typing costs ~5 ms of a worker's start
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

CALL, INIT, OK, ERR, READY, INIT_FAILED = range(6)
ENV_PARENT = "PROCVISOR_POOL_PARENT"
"""The pid of the pool's process, so a worker can tell its parent died before it looked."""
ENV_MEASURE_RSS = "PROCVISOR_POOL_RSS"
"""Set to 1 when the pool recycles by memory: the worker reports its RSS after each task."""
ENV_PATH = "PROCVISOR_POOL_PATH"
"""The pool's ``sys.path``, joined with ``os.pathsep``."""
_LEN = struct.Struct(">I")


def dumps(obj: Any) -> bytes:
    """Pickle ``obj``; with cloudpickle when the standard pickler refuses it.

    Raises:
        TypeError, pickle.PicklingError, AttributeError: neither can pickle it.
    """
    try:
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, TypeError, AttributeError):
        return dumps_by_value(obj)


def dumps_by_value(obj: Any) -> bytes:
    """Pickle with cloudpickle: lambdas, closures and ``__main__`` functions by value."""
    import cloudpickle  # type: ignore[import-untyped]  # noqa: PLC0415 - only when needed

    data: bytes = cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
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
                yield pickle.loads(bytes(buf[start:pos]))
        finally:
            del buf[:pos]


_PR_SET_PDEATHSIG = 1
_FN_CACHE = 4096  # more than the pool's 1024: what the pool still sends is here


def _die_with_parent() -> None:
    parent = int(os.environ.get(ENV_PARENT, "0") or 0)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
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


def _error_reply(task_id: int, exc: BaseException, rss: int) -> bytes:
    tb = _format(exc)
    try:
        return dumps((ERR, task_id, exc, tb, rss))
    except Exception:  # the exception itself does not pickle: send what it said
        substitute = RuntimeError(f"{type(exc).__name__}: {exc}")
        return dumps((ERR, task_id, substitute, tb, rss))


def main() -> None:
    _die_with_parent()
    path = os.environ.get(ENV_PATH)
    if path is not None:
        sys.path[:] = path.split(os.pathsep)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in a terminal is the pool's to handle
    rfd, wfd = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)  # print() in a task goes to stderr, never into the protocol
    measure = os.environ.get(ENV_MEASURE_RSS) == "1"
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
            if kind == CALL:
                _, task_id, key, fn_bytes, args, kwargs = msg
                try:
                    if fn_bytes is not None:
                        fns[key] = pickle.loads(fn_bytes)
                        if len(fns) > _FN_CACHE:
                            fns.popitem(last=False)
                    fn = fns[key]
                    fns.move_to_end(key)
                    result = fn(*args, **kwargs)
                except BaseException as exc:
                    if isinstance(exc, SystemExit | KeyboardInterrupt):
                        exc = RuntimeError(f"task raised {type(exc).__name__}: {exc}")
                    _write_all(wfd, frame(_error_reply(task_id, exc, _rss() if measure else 0)))
                    continue
                rss = _rss() if measure else 0
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
                    initializer, initargs = pickle.loads(msg[1])
                    if initializer is not None:
                        initializer(*initargs)
                except BaseException as exc:
                    tb = _format(exc)
                    _write_all(wfd, frame(dumps((INIT_FAILED, tb))))
                    os._exit(1)
                _write_all(wfd, frame(dumps((READY, os.getpid()))))


if __name__ == "__main__":
    main()
