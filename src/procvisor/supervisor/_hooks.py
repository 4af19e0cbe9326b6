"""Run one lifecycle hook (``pre_start``, ``post_stop``, ...) and say how it went.

A hook runs through :func:`procvisor.arun`: in its own process group, stdin from
``/dev/null``, stdout and stderr merged and captured (only the tail is kept), the caller's
variables (``PROCVISOR_SERVICE``, ``PROCVISOR_INSTANCE``, ...) set on top of the daemon's
environment. At its timeout the whole group gets SIGTERM, then SIGKILL after a short grace, so
a hook that hangs, or that leaves a background process behind in its group, never outlives its
run. A hook that fails is an outcome, not an exception; cancelling the awaiting task stops the
group first and then propagates ``CancelledError``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from procvisor.errors import ProcessError, TimeoutExpired
from procvisor.policy.units import format_duration
from procvisor.process import Result, arun

__all__ = ["HookOutcome", "run_hook"]

OUTPUT_TAIL = 2048
"""Bytes of a hook's merged output kept in :attr:`HookOutcome.output` (the last ones)."""
_MAX_GRACE = 1.0
"""Seconds at most between the stop signal and SIGKILL for a hook past its timeout."""
_DETAIL_CHARS = 200


@dataclass(frozen=True, slots=True)
class HookOutcome:
    """How a hook run went.

    Attributes:
        name: the hook's name, e.g. ``"pre_start"``.
        ok: it exited with code 0 within its timeout.
        returncode: its exit code (``-N`` when signal ``N`` ended it, including the stop at
            its timeout), or ``None`` when it never started or its status is unknown.
        detail: one line: ``"exit code 0"``, ``"exit code 2: config missing"``,
            ``"timed out after 1s"``, or why it could not start.
        output: the last :data:`OUTPUT_TAIL` bytes or so of its merged stdout and stderr, as
            text.
    """

    name: str
    ok: bool
    returncode: int | None
    detail: str
    output: str


def _tail_text(data: bytes, truncated: bool) -> str:
    if truncated:
        # The kept tail may begin inside a multi-byte UTF-8 character: skip its remains.
        start = 0
        while start < min(len(data), 3) and 0x80 <= data[start] < 0xC0:
            start += 1
        data = data[start:]
    return data.decode("utf-8", "replace")


def _last_line(text: str) -> str:
    lines = text.strip().splitlines()
    if not lines:
        return ""
    line = lines[-1].strip()
    return line if len(line) <= _DETAIL_CHARS else line[: _DETAIL_CHARS - 3] + "..."


def _outcome(name: str, result: Result, detail: str | None = None) -> HookOutcome:
    output = _tail_text(result.stdout, result.truncated)
    if detail is None:
        if result.signal is not None:
            detail = f"killed by {result.signal}"
        elif result.returncode is None:
            detail = "exit status unknown (reaped elsewhere)"
        else:
            detail = f"exit code {result.returncode}"
        if result.returncode != 0 and (line := _last_line(output)):
            detail += f": {line}"
    return HookOutcome(name, result.ok, result.returncode, detail, output)


async def run_hook(
    name: str,
    argv: Sequence[str],
    *,
    timeout: float,
    env: Mapping[str, str],
    cwd: Path | None,
) -> HookOutcome:
    """Run the hook ``argv`` to its end or its timeout and return how it went.

    Args:
        name: the hook's name, for the outcome and messages.
        argv: the command (a string is split like a shell would, but no shell runs unless
            the command is one).
        timeout: seconds before its process group is stopped (SIGTERM, then SIGKILL after
            ``min(1s, timeout)``).
        env: variables set on top of the daemon's environment.
        cwd: its working directory; ``None`` for the daemon's.

    Raises:
        ValueError, TypeError: ``argv`` is empty or not a command, ``timeout`` is not more
            than 0, or a variable in ``env`` is invalid.
        asyncio.CancelledError: the awaiting task was cancelled; the group is gone by then.
    """
    if isinstance(timeout, bool) or not math.isfinite(timeout) or timeout <= 0:
        raise ValueError(f"hook {name}: timeout {timeout!r} must be more than 0 seconds")
    try:
        result = await arun(
            argv,
            timeout=timeout,
            env=env,
            inherit_env=True,
            cwd=cwd,
            capture=True,
            merge_stderr=True,
            max_output=OUTPUT_TAIL,
            grace=min(_MAX_GRACE, timeout),
        )
    except TimeoutExpired as exc:
        detail = f"timed out after {format_duration(timeout)}"
        if exc.result is None:  # arun always attaches it; be exact if it ever does not
            return HookOutcome(name, False, None, detail, "")
        return _outcome(name, exc.result, detail)
    except ProcessError as exc:
        # A SpawnError: a missing program, a bad cwd. No limits are set, so nothing else.
        return HookOutcome(name, False, None, str(exc), "")
    return _outcome(name, result)
