"""What to do when a service instance exits: restart after a backoff, stay stopped, or go fatal.

The supervisor asks :func:`decide_restart` on every exit and does what the returned
:class:`RestartDecision` says; the returned :class:`RestartState` replaces the old one. The rules:

- **Which exits are failures.** An exit is a failure when it was killed by a signal, when its
  exit code is not in ``success_exit_codes``, when its status is unknown (another reaper got the
  process first), or when it came sooner than ``min_uptime`` (a failed start, whatever its code).
- **Which exits restart.** ``always`` restarts after any exit; ``on-failure`` only after a
  failure; ``never`` never; ``unless-stopped`` is ``always`` except after a user stop. A stop by
  the user never restarts under any mode and never counts as a failure.
- **Budget.** Each failure is remembered for ``restart_window`` seconds (a sliding window). When
  the failures in the window exceed ``max_restarts``, the instance goes fatal: the breaker opens
  until ``now + cooldown``. With ``max_restarts = 5`` the sixth failure within the window is fatal.
- **Backoff.** An instance whose run lasted ``min_uptime`` restarts at once (delay 0, as
  supervisord and systemd do): a service that crashes after serving for a while is back in
  milliseconds. Exits sooner than ``min_uptime`` are failed starts; the delay grows with the
  number of consecutive failed starts (``initial``, ``initial * multiplier``, ... up to ``max``).
  A run that lasted ``min_uptime`` resets that count, but its failures stay in the window.
- **Half-open.** When the cooldown has elapsed, :func:`on_cooldown_elapsed` moves the breaker to
  half-open and the supervisor starts the instance once. If that run fails to last
  ``min_uptime`` the instance goes fatal again for another cooldown; if it lasts, the breaker
  closes with a clean slate and that exit is then judged like any other.

Because every delay after a failed start is at least ``initial * (1 - jitter) > 0`` and grows
while starts keep failing, and an immediate restart needs a run of ``min_uptime`` first, a
service that exits at once forever cannot make the supervisor spin: its delays rise to ``max``
and, once the budget is spent, it goes fatal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum

from procvisor.policy.units import format_duration

__all__ = [
    "Backoff",
    "BreakerState",
    "RestartAction",
    "RestartDecision",
    "RestartMode",
    "RestartPolicy",
    "RestartState",
    "decide_restart",
    "on_cooldown_elapsed",
]


class RestartMode(StrEnum):
    """The ``restart`` setting of a service: which exits are followed by a restart."""

    ALWAYS = "always"
    ON_FAILURE = "on-failure"
    NEVER = "never"
    UNLESS_STOPPED = "unless-stopped"


class BreakerState(StrEnum):
    """The restart circuit breaker: closed (normal), open (fatal), half-open (one trial start)."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class RestartAction(StrEnum):
    """What the supervisor does after an exit."""

    RESTART = "restart"
    """Start the instance again after :attr:`RestartDecision.delay` seconds."""
    STAY_STOPPED = "stay-stopped"
    """Leave the instance stopped."""
    FATAL = "fatal"
    """The restart budget is spent: leave it fatal until :attr:`RestartDecision.retry_at`."""


def _check_finite(value: float, name: str) -> None:
    if isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"{name}: {value!r} must be a finite number")


def _check_rand(rand: float) -> None:
    if isinstance(rand, bool) or not 0.0 <= rand < 1.0:
        raise ValueError(f"rand: {rand!r} must be in [0, 1); pass random.Random().random()")


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with a cap and symmetric jitter; all durations in seconds.

    The delay for attempt ``n`` (1 for the first restart) is centred on
    ``base = min(initial * multiplier ** (n - 1), max)`` and drawn uniformly from
    ``[base * (1 - jitter), min(base * (1 + jitter), max)]``. The cap holds after jitter: no delay
    ever exceeds ``max``. Near the cap the window is trimmed rather than clamped, so delays there
    spread over ``[max * (1 - jitter), max]`` instead of piling up on ``max`` (which would restart
    every crashed instance in step). Every delay is at least ``initial * (1 - jitter) > 0``, and
    for a fixed ``rand`` delays never decrease as the attempt grows.

    Raises:
        ValueError: ``initial`` is not more than 0, ``max`` is below ``initial``,
            ``multiplier`` is below 1, ``jitter`` is outside ``[0, 1)``, or a value is not finite.
    """

    initial: float = 0.5
    max: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        for name in ("initial", "max", "multiplier", "jitter"):
            _check_finite(getattr(self, name), f"backoff.{name}")
        if self.initial <= 0:
            raise ValueError(
                f"backoff.initial: {self.initial!r} must be more than 0; a zero delay lets a "
                "crashing service restart in a tight loop"
            )
        if self.max < self.initial:
            raise ValueError(
                f"backoff.max: {self.max!r} is below backoff.initial {self.initial!r}; "
                "raise max or lower initial"
            )
        if self.multiplier < 1:
            raise ValueError(f"backoff.multiplier: {self.multiplier!r} must be 1 or more")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"backoff.jitter: {self.jitter!r} must be in [0, 1), e.g. 0.1")

    def delay(self, attempt: int, rand: float) -> float:
        """Return the delay in seconds before restart number ``attempt``.

        Args:
            attempt: 1 for the first restart after a failure, 2 for the next, and so on.
            rand: a uniform number in ``[0, 1)`` choosing the point in the jitter window
                (``random.Random.random()``); 0.5 is the window's middle when it is not trimmed.

        Raises:
            ValueError: ``attempt`` is below 1 or ``rand`` is outside ``[0, 1)``.
        """
        if attempt < 1:
            raise ValueError(f"attempt: {attempt!r} must be 1 or more")
        _check_rand(rand)
        try:
            base = min(self.initial * self.multiplier ** (attempt - 1), self.max)
        except OverflowError:
            base = self.max
        low = base * (1.0 - self.jitter)
        high = min(base * (1.0 + self.jitter), self.max)
        # The final min() guards against a rounding error of one ulp above the cap.
        return min(low + rand * (high - low), self.max)


def _describe_exit(exit_code: int | None, signal: str | None) -> str:
    if signal is not None:
        return f"killed by {signal}"
    if exit_code is None:
        return "exit status unknown (reaped elsewhere)"
    if exit_code < 0:
        return f"killed by signal {-exit_code}"
    return f"exit code {exit_code}"


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """A service's restart settings, durations already in seconds.

    The defaults are those of the configuration reference: ``on-failure``, success code 0,
    ``min_uptime`` 1 s, backoff 0.5 s doubling up to 30 s with ±10 % jitter, at most 5
    failures in 60 s, then a 5 min cooldown.

    Raises:
        ValueError: a duration is negative or not finite, ``restart_window`` is 0,
            ``max_restarts`` is negative, or an exit code is outside 0..255.
    """

    restart: RestartMode = RestartMode.ON_FAILURE
    success_exit_codes: frozenset[int] = frozenset({0})
    min_uptime: float = 1.0
    backoff: Backoff = field(default_factory=Backoff)
    max_restarts: int = 5
    restart_window: float = 60.0
    cooldown: float = 300.0

    def __post_init__(self) -> None:
        if not isinstance(self.restart, RestartMode):
            raise ValueError(
                f"restart: {self.restart!r} is not a restart mode; use one of "
                + ", ".join(repr(m.value) for m in RestartMode)
            )
        for code in self.success_exit_codes:
            if isinstance(code, bool) or not isinstance(code, int) or not 0 <= code <= 255:
                raise ValueError(f"success_exit_codes: {code!r} is not an exit code (0..255)")
        for name in ("min_uptime", "restart_window", "cooldown"):
            value = getattr(self, name)
            _check_finite(value, name)
            if value < 0:
                raise ValueError(f"{name}: {value!r} must be a duration of 0 or more")
        if self.restart_window == 0:
            raise ValueError("restart_window: must be more than 0, e.g. 60 (seconds)")
        if isinstance(self.max_restarts, bool) or self.max_restarts < 0:
            raise ValueError(f"max_restarts: {self.max_restarts!r} must be 0 or more")

    def failure_reason(self, *, exit_code: int | None, signal: str | None, uptime: float) -> str:
        """Return why this exit counts as a failure, or ``""`` when it does not.

        Args:
            exit_code: the exit code; a negative value is :mod:`subprocess`'s ``-N`` for a
                death by signal ``N``. ``None`` with ``signal`` also ``None`` means the exit
                status is unknown, which counts as a failure.
            signal: the name of the signal that killed the process (``"SIGKILL"``), if any.
            uptime: how long the instance ran, in seconds.

        Raises:
            ValueError: ``uptime`` is negative or not finite, or a signal comes with a
                non-negative exit code.
        """
        _check_finite(uptime, "uptime")
        if uptime < 0:
            raise ValueError(f"uptime: {uptime!r} must be 0 or more")
        if signal is not None and exit_code is not None and exit_code >= 0:
            raise ValueError(
                f"exit_code {exit_code!r} and signal {signal!r}: a process that exited with a "
                "code was not killed by a signal; pass one of them"
            )
        what = _describe_exit(exit_code, signal)
        if uptime < self.min_uptime:
            return (
                f"{what} after {format_duration(uptime)}, sooner than min_uptime "
                f"{format_duration(self.min_uptime)}"
            )
        if exit_code is not None and exit_code in self.success_exit_codes and signal is None:
            return ""
        return what


@dataclass(frozen=True, slots=True)
class RestartState:
    """What the restart policy remembers about one instance between exits.

    Start every instance from ``RestartState()``, and again after the user starts it by hand.

    Attributes:
        failures: ``now`` of each failure still inside the restart window, oldest first.
        failed_starts: consecutive exits sooner than ``min_uptime``; picks the backoff attempt.
        breaker: the circuit breaker's state.
        open_until: when the open breaker may go half-open; set exactly when it is open.

    Raises:
        ValueError: ``failed_starts`` is negative, ``failures`` is not in order, or
            ``open_until`` is set without the breaker being open (or missing when it is).
    """

    failures: tuple[float, ...] = ()
    failed_starts: int = 0
    breaker: BreakerState = BreakerState.CLOSED
    open_until: float | None = None

    def __post_init__(self) -> None:
        if self.failed_starts < 0:
            raise ValueError(f"failed_starts: {self.failed_starts!r} must be 0 or more")
        if any(b < a for a, b in zip(self.failures, self.failures[1:], strict=False)):
            raise ValueError(f"failures: {self.failures!r} must be in time order")
        if (self.breaker is BreakerState.OPEN) != (self.open_until is not None):
            raise ValueError(
                f"open_until: {self.open_until!r} must be set exactly when the breaker is open "
                f"(it is {self.breaker.value})"
            )


@dataclass(frozen=True, slots=True)
class RestartDecision:
    """The answer of :func:`decide_restart`.

    Attributes:
        action: what to do.
        reason: one line for logs and events,
            e.g. ``"killed by SIGSEGV; restart in 500ms (attempt 1)"``.
        failure: whether the exit counted as a failure.
        delay: for ``RESTART``, seconds to wait before starting again; otherwise 0.
        retry_at: for ``FATAL``, the ``now`` at which to call :func:`on_cooldown_elapsed`;
            otherwise ``None``.
    """

    action: RestartAction
    reason: str
    failure: bool = False
    delay: float = 0.0
    retry_at: float | None = None


def _wants_restart(mode: RestartMode, failure: bool) -> bool:
    if mode is RestartMode.NEVER:
        return False
    if mode is RestartMode.ON_FAILURE:
        return failure
    return True  # ALWAYS and UNLESS_STOPPED differ only on user stops, handled before.


def decide_restart(
    policy: RestartPolicy,
    state: RestartState,
    *,
    exit_code: int | None,
    signal: str | None,
    uptime: float,
    stopped_by_user: bool,
    now: float,
    rand: float,
) -> tuple[RestartDecision, RestartState]:
    """Decide what follows an exit of an instance and return the decision and the new state.

    See the module docstring for the rules.

    Args:
        policy: the service's restart settings.
        state: what the policy remembered after the previous exit.
        exit_code: the exit code; negative means killed by signal ``-exit_code`` (as in
            :mod:`subprocess`); ``None`` with ``signal`` ``None`` means unknown (a failure).
        signal: the name of the signal that killed the process, if any.
        uptime: how long this run lasted, in seconds.
        stopped_by_user: the exit followed a stop the user asked for; it never restarts and
            the state is returned unchanged.
        now: the current ``time.monotonic()``.
        rand: a uniform number in ``[0, 1)`` for the backoff jitter.

    Raises:
        ValueError: the breaker is open (call :func:`on_cooldown_elapsed` first), ``now`` is
            earlier than a recorded failure, ``rand`` is outside ``[0, 1)``, or the exit
            arguments are invalid (see :meth:`RestartPolicy.failure_reason`).
    """
    _check_finite(now, "now")
    _check_rand(rand)
    reason = policy.failure_reason(exit_code=exit_code, signal=signal, uptime=uptime)
    if stopped_by_user:
        return RestartDecision(RestartAction.STAY_STOPPED, "stopped by user"), state
    if state.breaker is BreakerState.OPEN:
        raise ValueError(
            f"decide_restart: the breaker is open until {state.open_until!r}, so the instance "
            "should not have been running; call on_cooldown_elapsed() first, or start from "
            "RestartState() after a start by the user"
        )
    if state.failures and now < state.failures[-1]:
        raise ValueError(
            f"now: {now!r} is earlier than the last failure at {state.failures[-1]!r}; "
            "pass time.monotonic()"
        )

    failure = bool(reason)
    outcome = reason or _describe_exit(exit_code, signal)
    started = uptime >= policy.min_uptime
    trial = state.breaker is BreakerState.HALF_OPEN
    if trial and started:
        # The trial start held for min_uptime: close the breaker and forget the past.
        state = RestartState()
        trial = False

    failures = tuple(t for t in state.failures if now - t < policy.restart_window)
    if failure:
        failures += (now,)
    failed_starts = 0 if started else state.failed_starts + 1
    new_state = RestartState(failures, failed_starts, state.breaker)

    if not _wants_restart(policy.restart, failure):
        why = f"{outcome}; restart = {policy.restart.value}"
        return RestartDecision(RestartAction.STAY_STOPPED, why, failure), new_state

    if trial or len(failures) > policy.max_restarts:
        retry_at = now + policy.cooldown
        if trial:
            why = f"{outcome}; the half-open trial start failed"
        else:
            why = (
                f"{outcome}; {len(failures)} failures within "
                f"{format_duration(policy.restart_window)} exceed max_restarts = "
                f"{policy.max_restarts}"
            )
        why += f"; fatal, one more try in {format_duration(policy.cooldown)}"
        fatal_state = RestartState(failures, failed_starts, BreakerState.OPEN, retry_at)
        return RestartDecision(RestartAction.FATAL, why, failure, retry_at=retry_at), fatal_state

    if failed_starts == 0:
        return RestartDecision(RestartAction.RESTART, f"{outcome}; restart now", failure), new_state
    delay = policy.backoff.delay(failed_starts, rand)
    why = f"{outcome}; restart in {format_duration(delay)} (attempt {failed_starts})"
    return RestartDecision(RestartAction.RESTART, why, failure, delay=delay), new_state


def on_cooldown_elapsed(state: RestartState, now: float) -> RestartState:
    """Move an open breaker to half-open once its cooldown is over; the caller then starts once.

    Called early (``now`` before ``state.open_until``, as a timer may fire a little early) it
    returns ``state`` unchanged; check ``breaker`` and wait until ``open_until``.

    Raises:
        ValueError: the breaker is not open, or ``now`` is not finite.
    """
    _check_finite(now, "now")
    if state.breaker is not BreakerState.OPEN or state.open_until is None:
        raise ValueError(
            f"on_cooldown_elapsed: the breaker is {state.breaker.value}, not open; "
            "only a fatal instance has a cooldown"
        )
    if now < state.open_until:
        return state
    return RestartState(state.failures, state.failed_starts, BreakerState.HALF_OPEN)
