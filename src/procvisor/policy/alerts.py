"""Monitoring decisions: alert rules and their lifecycle, watch limits, throttling, trends, status.

The ``monitor`` layer samples processes and the supervisor reports state changes; both feed
what they saw, with ``now``, to the functions here and act on the answers (notify, store
history, restart, stop, throttle). Nothing here reads a clock or a process.

**Alert rules.** An :class:`AlertRule` pairs a :class:`Condition` with a ``for_`` duration, a
:class:`Severity` and an optional summary template. Conditions are an expression over a sample
(:class:`ExprCondition`, see :mod:`procvisor.policy.alertexpr`) or one of the built-in rules
over supervisor facts: :class:`ServiceFatal`, :class:`ProbeFailing`, :class:`Flapping` (N state
changes within a window) and :class:`RestartStorm` (N restarts within a window), which count
timestamps with :func:`count_in_window`. :func:`parse_alert_rule` builds a rule from its TOML
table.

**Lifecycle.** Each (rule, label set) is an :class:`Alert`, a small state machine driven by
:func:`advance` with whether the condition holds at ``now``::

    inactive ──holds──▶ pending ──held for `for_`──▶ firing ──stops holding──▶ resolved
        ▲                  │                                                      │
        └──stops holding───┘                        holds again: pending (or firing)

- With ``for_ = 0`` a holding condition fires at once. Otherwise it must hold at every
  evaluation from the first one that saw it (``pending_since``) until one at least ``for_``
  later; one evaluation where it does not hold sends a pending alert back to ``inactive``,
  silently. An alert therefore never fires earlier than ``for_`` after the start of an unbroken
  run of holding evaluations.
- :func:`advance` returns an :class:`AlertEvent` when an alert fires (``fired``) or resolves
  (``resolved``), for the caller to notify and store.
- **Acknowledge** (:func:`acknowledge`): an operator has seen a firing alert; it stays
  acknowledged until it resolves.
- **Silence** (:func:`silence`): until ``now + duration``, events still come (history stays
  complete) but with ``notify=False``. If an alert fired while silenced and is still firing,
  unacknowledged, when the silence ends, the next :func:`advance` returns a second ``fired``
  event with ``notify=True``: what was muted is announced late rather than lost. A
  ``resolved`` event notifies only if its ``fired`` was announced and no silence is on.

:class:`AlertTracker` keeps the alerts of many rules and instances and offers the same
operations by rule name and labels.

**Watch limits.** :class:`WatchLimits` (``max_memory``, ``max_cpu``, ``max_fds``,
``max_threads``, ``for``, ``action``; :func:`parse_watch` reads the TOML table) and
:func:`check_watch` say when a sampled value has stayed over its limit for ``for_`` and what to
do about it (a :class:`Breach`); :mod:`procvisor.policy.throttle` plans the SIGSTOP/SIGCONT
duty cycle of the ``throttle`` action.

**Trends.** :func:`trend` summarises ``(t, value)`` points over a window (average, extremes,
least-squares growth rate), :func:`looks_like_leak` flags slow steady growth,
:func:`downsample` buckets samples into averages (1 minute by default).

**Status.** :func:`instance_status` grades an instance ``ok | warning | critical | dead``
against its limits.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Final, Protocol

from procvisor.policy.alertexpr import (
    SAMPLE_FIELDS,
    Expr,
    FieldKind,
    Template,
    compile_expr,
    compile_template,
    format_value,
)
from procvisor.policy.units import (
    DURATION_FORMS,
    SIZE_FORMS,
    format_duration,
    format_size,
    parse_duration,
    parse_size,
)

__all__ = [
    "DEFAULT_WARNING_RATIO",
    "Alert",
    "AlertEvent",
    "AlertEventKind",
    "AlertRule",
    "AlertStatus",
    "AlertTracker",
    "Breach",
    "Condition",
    "ExprCondition",
    "Facts",
    "Flapping",
    "InstanceStatus",
    "Labels",
    "Limit",
    "ProbeFailing",
    "RestartStorm",
    "RuleKind",
    "ServiceFatal",
    "Severity",
    "SlidingWindow",
    "StatusReport",
    "Trend",
    "WatchAction",
    "WatchLimits",
    "WatchState",
    "acknowledge",
    "advance",
    "check_watch",
    "count_in_window",
    "downsample",
    "fit_line",
    "format_growth",
    "instance_status",
    "label_set",
    "looks_like_leak",
    "parse_alert_rule",
    "parse_severity",
    "parse_watch",
    "parse_watch_action",
    "silence",
    "trend",
]

DEFAULT_WARNING_RATIO: Final = 0.8
"""Without a configured warning level, a value at 80% of its limit makes the status warning."""


def _check_finite(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name}: {value!r} must be a finite number")
    return value


def _check_now(now: float) -> float:
    if isinstance(now, bool) or not isinstance(now, int | float) or not math.isfinite(now):
        raise ValueError(f"now: {now!r} must be a finite number; pass time.monotonic()")
    return now


def _check_count(value: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: {value!r} must be a whole number of 1 or more")


def _check_duration(value: float, name: str) -> None:
    _check_finite(value, name)
    if value < 0:
        raise ValueError(f"{name}: {value!r} must be a duration of 0 or more")


def _unknown_key(key: str, accepted: Iterable[str], prefix: str) -> ValueError:
    accepted = sorted(accepted)
    close = difflib.get_close_matches(key, accepted, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return ValueError(f"{prefix}: unknown key '{key}'; {hint}accepted: {', '.join(accepted)}")


# ------------------------------------------------------------------------------ severity


class Severity(StrEnum):
    """How bad an alert is, from least to most: info, warning, critical, emergency."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"
    EMERGENCY = "emergency"

    @property
    def rank(self) -> int:
        """0 for ``info`` up to 3 for ``emergency``: compare severities by rank, not by name."""
        return list(Severity).index(self)


def parse_severity(value: object, *, field: str = "severity") -> Severity:
    """Return the :class:`Severity` named by ``value`` (any case, surrounding blanks ignored).

    Raises:
        ValueError: ``value`` names no severity; the message names ``field`` and lists them.
    """
    if isinstance(value, Severity):
        return value
    if isinstance(value, str):
        member = Severity.__members__.get(value.strip().upper())
        if member is not None:
            return member
    accepted = ", ".join(repr(s.value) for s in Severity)
    raise ValueError(f"{field}: {value!r} is not a severity; use one of {accepted}")


# ----------------------------------------------------------------------- sliding windows


def count_in_window(times: Iterable[float], now: float, window: float) -> int:
    """Count the events at ``times`` in the last ``window`` seconds: ``now - window < t <= now``.

    An event at ``t`` is counted from ``t`` until just before ``t + window``. ``times`` need not
    be sorted; events after ``now`` are not counted.

    Raises:
        ValueError: ``now`` is not finite or ``window`` is not more than 0.
    """
    _check_now(now)
    _check_finite(window, "window")
    if window <= 0:
        raise ValueError(f"window: {window!r} must be a duration of more than 0")
    start = now - window
    return sum(1 for t in times if start < t <= now)


class SlidingWindow:
    """The timestamps of recent events, forgotten ``window`` seconds after they happened.

    Keep one per instance for its restarts or state changes, :meth:`add` each event's ``now``,
    and pass :attr:`times` to :class:`Facts`. Memory stays bounded by the event rate times the
    window, because every call prunes what has aged out.

    Raises:
        ValueError: ``window`` is not more than 0.
    """

    __slots__ = ("_times", "window")

    def __init__(self, window: float) -> None:
        _check_finite(window, "window")
        if window <= 0:
            raise ValueError(f"window: {window!r} must be a duration of more than 0")
        self.window = float(window)
        self._times: deque[float] = deque()

    def add(self, now: float) -> None:
        """Record an event at ``now``.

        Raises:
            ValueError: ``now`` is not finite or is earlier than the last event.
        """
        _check_now(now)
        if self._times and now < self._times[-1]:
            raise ValueError(
                f"now: {now!r} is earlier than the last event at {self._times[-1]!r}; "
                "pass time.monotonic()"
            )
        self._prune(now)
        self._times.append(now)

    def count(self, now: float) -> int:
        """Return how many events happened within the window ending at ``now``."""
        _check_now(now)
        self._prune(now)
        return sum(1 for t in self._times if t <= now)

    @property
    def times(self) -> tuple[float, ...]:
        """The remembered event times, oldest first (some may have aged out since the last call)."""
        return tuple(self._times)

    def _prune(self, now: float) -> None:
        start = now - self.window
        while self._times and self._times[0] <= start:
            self._times.popleft()

    def __len__(self) -> int:
        return len(self._times)

    def __repr__(self) -> str:
        return f"SlidingWindow(window={self.window!r}, events={len(self._times)})"


# ---------------------------------------------------------------------------- conditions


@dataclass(frozen=True, slots=True)
class Facts:
    """What is known about one instance at ``now``, for conditions and summaries.

    Attributes:
        values: the latest sample's fields and the instance's labels (``rss``, ``cpu``,
            ``state``, ``health``, ``service``, ``instance``, ...); see
            :data:`~procvisor.policy.alertexpr.SAMPLE_FIELDS`.
        state_changes: when its run state changed (for :class:`Flapping`).
        restarts: when it was restarted (for :class:`RestartStorm`).
    """

    values: Mapping[str, object] = dataclasses.field(default_factory=dict)
    state_changes: Sequence[float] = ()
    restarts: Sequence[float] = ()


class Condition(Protocol):
    """What makes an alert rule hold: a built-in rule kind or an expression."""

    def holds(self, facts: Facts, now: float) -> bool:
        """Return whether the condition holds for ``facts`` at ``now``."""
        ...

    def describe(self) -> str:
        """One short line for summaries: ``"rss > 400M"``, ``"5 restarts within 5m"``."""
        ...


@dataclass(frozen=True, slots=True)
class ExprCondition:
    """Holds when an alert expression holds for the sample (``Facts.values``)."""

    expr: Expr

    def holds(self, facts: Facts, now: float) -> bool:
        """Return ``expr.evaluate(facts.values)``."""
        return self.expr.evaluate(facts.values)

    def describe(self) -> str:
        """The expression's text."""
        return self.expr.source


@dataclass(frozen=True, slots=True)
class ServiceFatal:
    """Holds while the instance is ``fatal``: its restart budget is spent."""

    def holds(self, facts: Facts, now: float) -> bool:
        """Return whether ``state`` is ``"fatal"``."""
        return facts.values.get("state") == "fatal"

    def describe(self) -> str:
        """``"state is fatal"``."""
        return "state is fatal"


@dataclass(frozen=True, slots=True)
class ProbeFailing:
    """Holds while the instance's health probes say it is ``unhealthy``.

    The probe's own thresholds (:mod:`procvisor.policy.health`) already decide when failures
    make it unhealthy, so this adds none.
    """

    def holds(self, facts: Facts, now: float) -> bool:
        """Return whether ``health`` is ``"unhealthy"``."""
        return facts.values.get("health") == "unhealthy"

    def describe(self) -> str:
        """``"health probe failing"``."""
        return "health probe failing"


def _check_events_in_window(count: int, name: str, window: float) -> None:
    _check_count(count, name)
    _check_finite(window, "window")
    if window <= 0:
        raise ValueError(f"window: {window!r} must be a duration of more than 0")


@dataclass(frozen=True, slots=True)
class Flapping:
    """Holds while ``changes`` or more state changes happened within the last ``window`` seconds.

    Raises:
        ValueError: ``changes`` is not a whole number of 1 or more, or ``window`` is not a
            duration of more than 0.
    """

    changes: int = 6
    window: float = 600.0

    def __post_init__(self) -> None:
        _check_events_in_window(self.changes, "changes", self.window)

    def holds(self, facts: Facts, now: float) -> bool:
        """Count ``facts.state_changes`` in the window ending at ``now``."""
        return count_in_window(facts.state_changes, now, self.window) >= self.changes

    def describe(self) -> str:
        """``"6 state changes within 10m"``."""
        return f"{self.changes} state changes within {format_duration(self.window)}"


@dataclass(frozen=True, slots=True)
class RestartStorm:
    """Holds while ``restarts`` or more restarts happened within the last ``window`` seconds.

    Raises:
        ValueError: ``restarts`` is not a whole number of 1 or more, or ``window`` is not a
            duration of more than 0.
    """

    restarts: int = 5
    window: float = 300.0

    def __post_init__(self) -> None:
        _check_events_in_window(self.restarts, "restarts", self.window)

    def holds(self, facts: Facts, now: float) -> bool:
        """Count ``facts.restarts`` in the window ending at ``now``."""
        return count_in_window(facts.restarts, now, self.window) >= self.restarts

    def describe(self) -> str:
        """``"5 restarts within 5m"``."""
        return f"{self.restarts} restarts within {format_duration(self.window)}"


# --------------------------------------------------------------------------------- rules

Labels = tuple[tuple[str, str], ...]
"""An alert's label set: ``(name, value)`` pairs sorted by name, e.g. service and instance."""


def label_set(labels: Mapping[str, object] | Labels) -> Labels:
    """Return ``labels`` as a :data:`Labels` key: pairs sorted by name, values as strings."""
    pairs = labels.items() if isinstance(labels, Mapping) else labels
    return tuple(sorted((str(k), str(v)) for k, v in pairs))


class RuleKind(StrEnum):
    """The ``kind`` of an alert rule in the configuration."""

    EXPR = "expr"
    FATAL = "fatal"
    FLAPPING = "flapping"
    PROBE_FAILING = "probe-failing"
    RESTART_STORM = "restart-storm"


@dataclass(frozen=True, slots=True)
class AlertRule:
    """One alert rule: a condition that must hold for ``for_`` seconds to fire.

    Attributes:
        name: the rule's name (the key under ``[alerts]``).
        condition: what must hold.
        for_: how long it must hold before the alert fires (``for`` in the configuration);
            0 fires at the first evaluation that sees it.
        severity: how bad it is.
        summary: a template for the one-line summary; without one the summary is
            ``"<name>: <condition> [labels]"``. Templates may use the sample's fields and the
            labels, plus ``alert`` (the rule name) and ``severity``.

    Raises:
        ValueError: ``name`` is empty, ``for_`` is negative or not finite, or ``severity``
            is not a :class:`Severity`.
    """

    name: str
    condition: Condition
    for_: float = 0.0
    severity: Severity = Severity.WARNING
    summary: Template | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"name: {self.name!r} must be a non-empty string")
        _check_duration(self.for_, "for")
        if not isinstance(self.severity, Severity):
            raise ValueError(f"severity: {self.severity!r} is not a Severity; see parse_severity")

    def render_summary(self, labels: Labels, values: Mapping[str, object]) -> str:
        """Return the summary for one alert of this rule, filled from ``values`` and ``labels``."""
        if self.summary is None:
            text = f"{self.name}: {self.condition.describe()}"
            if labels:
                text += " [" + " ".join(f"{k}={v}" for k, v in labels) + "]"
            return text
        extra = {"alert": self.name, "severity": self.severity.value}
        return self.summary.render({**dict(labels), **values, **extra})


_RULE_KEYS: Final = frozenset({"kind", "expr", "for", "severity", "summary", "count", "window"})
_RULE_DEFAULTS: Final = {
    RuleKind.EXPR: Severity.WARNING,
    RuleKind.FATAL: Severity.CRITICAL,
    RuleKind.FLAPPING: Severity.WARNING,
    RuleKind.PROBE_FAILING: Severity.WARNING,
    RuleKind.RESTART_STORM: Severity.WARNING,
}


def parse_alert_rule(
    name: str,
    table: Mapping[str, object],
    *,
    fields: Mapping[str, FieldKind] = SAMPLE_FIELDS,
    field: str | None = None,
) -> AlertRule:
    """Build an :class:`AlertRule` from its configuration table.

    Keys: ``kind`` (``expr`` when there is an ``expr``; else one of ``fatal``, ``flapping``,
    ``probe-failing``, ``restart-storm``), ``expr`` (for ``kind = "expr"`` only), ``for``
    (a duration, default 0), ``severity`` (default ``critical`` for ``fatal``, else
    ``warning``), ``summary`` (a template), and for ``flapping`` and ``restart-storm``
    ``count`` (default 6 and 5) and ``window`` (default ``10m`` and ``5m``)::

        [alerts.high_memory]
        expr = "rss > 400M and service == 'web'"
        for = "5m"
        severity = "critical"
        summary = "{service}:{instance} uses {rss} of memory"

    Args:
        name: the rule's name.
        table: the table's keys and values as TOML gives them.
        fields: the names expressions and summaries may use.
        field: the setting's path for messages; ``alerts.<name>`` by default.

    Raises:
        ExprError: the expression or the summary is invalid (a ``ValueError``, with a caret).
        ValueError: any other key is missing, unknown or invalid; the message names the key
            and what it accepts.
    """
    prefix = field if field is not None else f"alerts.{name}"
    for key in table:
        if key not in _RULE_KEYS:
            raise _unknown_key(key, _RULE_KEYS, prefix)
    kinds = ", ".join(repr(k.value) for k in RuleKind)
    raw_kind = table.get("kind", RuleKind.EXPR if "expr" in table else None)
    if raw_kind is None:
        raise ValueError(f'{prefix}: set expr = "..." (e.g. "rss > 400M") or kind = one of {kinds}')
    try:
        kind = RuleKind(raw_kind if isinstance(raw_kind, str) else "")
    except ValueError:
        raise ValueError(
            f"{prefix}.kind: {raw_kind!r} is not a rule kind; use one of {kinds}"
        ) from None

    condition: Condition
    if kind is RuleKind.EXPR:
        if "expr" not in table:
            raise ValueError(f"{prefix}.expr: required when kind is 'expr', e.g. \"cpu > 90%\"")
        text = table["expr"]
        if not isinstance(text, str):
            raise ValueError(f"{prefix}.expr: {text!r} is not an expression; write a string")
        condition = ExprCondition(compile_expr(text, fields, field=f"{prefix}.expr"))
    elif "expr" in table:
        raise ValueError(f"{prefix}.expr: not used with kind '{kind}'; remove it or the kind")
    elif kind in (RuleKind.FLAPPING, RuleKind.RESTART_STORM):
        flapping = kind is RuleKind.FLAPPING
        count = table.get("count", 6 if flapping else 5)
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"{prefix}.count: {count!r} must be a whole number of 1 or more")
        window = _parse_positive_duration(
            table.get("window", 600.0 if flapping else 300.0), f"{prefix}.window"
        )
        condition = Flapping(count, window) if flapping else RestartStorm(count, window)
    else:
        condition = ServiceFatal() if kind is RuleKind.FATAL else ProbeFailing()
    if kind not in (RuleKind.FLAPPING, RuleKind.RESTART_STORM):
        for key in ("count", "window"):
            if key in table:
                raise ValueError(
                    f"{prefix}.{key}: only used with kind 'flapping' or 'restart-storm'"
                )

    for_ = _parse_duration(table.get("for", 0.0), f"{prefix}.for")
    severity = parse_severity(
        table.get("severity", _RULE_DEFAULTS[kind]), field=f"{prefix}.severity"
    )
    summary = None
    if "summary" in table:
        template_fields = {**fields, "alert": FieldKind.STRING, "severity": FieldKind.STRING}
        text = table["summary"]
        if not isinstance(text, str):
            raise ValueError(f"{prefix}.summary: {text!r} is not a template; write a string")
        summary = compile_template(text, template_fields, field=f"{prefix}.summary")
    return AlertRule(name, condition, for_, severity, summary)


def _parse_duration(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{name}: {value!r} is not a duration; use {DURATION_FORMS}")
    return parse_duration(value, field=name)


def _parse_positive_duration(value: object, name: str) -> float:
    seconds = _parse_duration(value, name)
    if seconds <= 0:
        raise ValueError(f"{name}: {value!r} must be a duration of more than 0, e.g. '5m'")
    return seconds


# ----------------------------------------------------------------------------- lifecycle


class AlertStatus(StrEnum):
    """Where an alert is in its lifecycle (see the module docstring)."""

    INACTIVE = "inactive"
    PENDING = "pending"
    """The condition holds, but not yet for ``for_``."""
    FIRING = "firing"
    RESOLVED = "resolved"
    """It fired, then the condition stopped holding; kept to show when."""


class AlertEventKind(StrEnum):
    """What an :class:`AlertEvent` reports."""

    FIRED = "fired"
    RESOLVED = "resolved"


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert: the state of one rule for one label set.

    Start from ``Alert(rule.name, labels)`` and replace it with what :func:`advance` returns.

    Attributes:
        rule: the rule's name.
        labels: the label set (see :func:`label_set`).
        status: where it is in its lifecycle.
        pending_since: when the current unbroken run of holding evaluations began (pending
            and firing), else None.
        fired_at: when it last fired.
        resolved_at: when it last resolved.
        acknowledged: an operator acknowledged it; cleared when it resolves.
        silenced_until: notifications are muted until then.
        notified: its current firing was announced (a ``fired`` event with ``notify=True``).
        summary: the summary rendered at the last evaluation while firing.
    """

    rule: str
    labels: Labels = ()
    status: AlertStatus = AlertStatus.INACTIVE
    pending_since: float | None = None
    fired_at: float | None = None
    resolved_at: float | None = None
    acknowledged: bool = False
    silenced_until: float | None = None
    notified: bool = False
    summary: str = ""

    def silenced(self, now: float) -> bool:
        """Return whether notifications are muted at ``now``."""
        return self.silenced_until is not None and now < self.silenced_until

    @property
    def last_change(self) -> float | None:
        """The latest time recorded in the alert (``now`` may not go back before it)."""
        times = [t for t in (self.pending_since, self.fired_at, self.resolved_at) if t is not None]
        return max(times) if times else None


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """An alert fired or resolved; the caller notifies (when ``notify``) and stores it.

    Attributes:
        kind: fired or resolved.
        rule: the rule's name.
        labels: the alert's label set.
        severity: the rule's severity.
        at: the ``now`` of the evaluation that produced it.
        fired_at: when the alert fired (for a resolved event, ``at - fired_at`` is how long
            it fired).
        summary: the one-line summary.
        notify: whether to send a notification (False while silenced, see the module
            docstring).
    """

    kind: AlertEventKind
    rule: str
    labels: Labels
    severity: Severity
    at: float
    fired_at: float
    summary: str
    notify: bool


def _check_alert_time(alert: Alert, now: float) -> None:
    _check_now(now)
    last = alert.last_change
    if last is not None and now < last:
        raise ValueError(
            f"now: {now!r} is earlier than the alert's last change at {last!r}; "
            "pass time.monotonic()"
        )


def advance(
    rule: AlertRule,
    alert: Alert,
    holds: bool,
    now: float,
    values: Mapping[str, object] | None = None,
) -> tuple[Alert, AlertEvent | None]:
    """Take one evaluation of ``rule`` into account; return the new alert and its event, if any.

    See the module docstring for the rules.

    Args:
        rule: the alert's rule.
        alert: the alert returned by the previous evaluation (or ``Alert(rule.name, labels)``).
        holds: whether the rule's condition holds now.
        now: the current ``time.monotonic()``.
        values: the sample's fields, for the summary.

    Raises:
        ValueError: ``alert`` belongs to another rule, or ``now`` is not finite or earlier
            than the alert's last change.
    """
    if alert.rule != rule.name:
        raise ValueError(f"alert: belongs to rule {alert.rule!r}, not {rule.name!r}")
    _check_alert_time(alert, now)
    muted = alert.silenced(now)
    if alert.silenced_until is not None and not muted:
        alert = replace(alert, silenced_until=None)  # the silence is over; forget it
    status = alert.status

    def event(kind: AlertEventKind, after: Alert, notify: bool) -> AlertEvent:
        assert after.fired_at is not None
        return AlertEvent(
            kind, rule.name, alert.labels, rule.severity, now, after.fired_at, after.summary, notify
        )

    if holds:
        if status in (AlertStatus.INACTIVE, AlertStatus.RESOLVED):
            alert = replace(alert, status=AlertStatus.PENDING, pending_since=now)
            status = AlertStatus.PENDING
        if status is AlertStatus.PENDING:
            assert alert.pending_since is not None
            if now - alert.pending_since < rule.for_:
                return alert, None
            summary = rule.render_summary(alert.labels, values or {})
            fired = replace(
                alert,
                status=AlertStatus.FIRING,
                fired_at=now,
                acknowledged=False,
                notified=not muted,
                summary=summary,
            )
            return fired, event(AlertEventKind.FIRED, fired, not muted)
        # Firing: refresh the summary; announce a firing that a silence muted.
        summary = rule.render_summary(alert.labels, values or {})
        if not alert.notified and not muted and not alert.acknowledged:
            announced = replace(alert, notified=True, summary=summary)
            return announced, event(AlertEventKind.FIRED, announced, True)
        return replace(alert, summary=summary), None

    if status is AlertStatus.PENDING:
        return replace(alert, status=AlertStatus.INACTIVE, pending_since=None), None
    if status is AlertStatus.FIRING:
        resolved = replace(
            alert,
            status=AlertStatus.RESOLVED,
            pending_since=None,
            resolved_at=now,
            acknowledged=False,
            notified=False,
        )
        return resolved, event(AlertEventKind.RESOLVED, resolved, alert.notified and not muted)
    return alert, None


def acknowledge(alert: Alert, now: float) -> Alert:
    """Mark a firing alert as seen by an operator, until it resolves.

    Raises:
        ValueError: the alert is not firing (only a firing alert can be acknowledged), or
            ``now`` is not finite or earlier than the alert's last change.
    """
    _check_alert_time(alert, now)
    if alert.status is not AlertStatus.FIRING:
        raise ValueError(
            f"alert {alert.rule!r} is {alert.status.value}; only a firing alert can be acknowledged"
        )
    return replace(alert, acknowledged=True)


def silence(alert: Alert, now: float, duration: float) -> Alert:
    """Mute the alert's notifications until ``now + duration``; a duration of 0 lifts a silence.

    Raises:
        ValueError: ``now`` is not finite, or ``duration`` is negative or not finite.
    """
    _check_now(now)
    _check_duration(duration, "duration")
    return replace(alert, silenced_until=now + duration if duration > 0 else None)


class AlertTracker:
    """The alerts of a set of rules over many label sets (one per instance).

    Feed it each instance's facts with :meth:`observe`; it evaluates every rule and returns
    the events. Alerts appear when a rule first holds for a label set and stay until
    :meth:`forget` removes the instance.

    Raises:
        ValueError: two rules share a name.
    """

    def __init__(self, rules: Iterable[AlertRule]) -> None:
        self._rules: dict[str, AlertRule] = {}
        for rule in rules:
            if rule.name in self._rules:
                raise ValueError(f"rules: two rules are named {rule.name!r}; names must be unique")
            self._rules[rule.name] = rule
        self._alerts: dict[tuple[str, Labels], Alert] = {}
        self._rule_silences: dict[str, float] = {}

    @property
    def rules(self) -> tuple[AlertRule, ...]:
        """The rules, in the order given."""
        return tuple(self._rules.values())

    def _rule(self, name: str) -> AlertRule:
        rule = self._rules.get(name)
        if rule is None:
            raise ValueError(
                f"rule: no rule named {name!r}; rules: {', '.join(self._rules) or '(none)'}"
            )
        return rule

    def update(
        self,
        rule: str,
        labels: Mapping[str, object] | Labels,
        holds: bool,
        now: float,
        values: Mapping[str, object] | None = None,
    ) -> AlertEvent | None:
        """Advance one rule's alert for one label set; return its event, if any.

        Raises:
            ValueError: no rule has that name, or ``now`` went back in time.
        """
        return self._update(self._rule(rule), label_set(labels), holds, now, values)

    def _update(
        self,
        the_rule: AlertRule,
        labels: Labels,
        holds: bool,
        now: float,
        values: Mapping[str, object] | None,
    ) -> AlertEvent | None:
        rule = the_rule.name
        key = (rule, labels)
        alert = self._alerts.get(key)
        if alert is None:
            if not holds:
                return None
            alert = Alert(rule, key[1])
        until = self._rule_silences.get(rule)
        if until is not None:
            if now >= until:
                del self._rule_silences[rule]
            elif alert.silenced_until is None or alert.silenced_until < until:
                alert = replace(alert, silenced_until=until)
        alert, event = advance(the_rule, alert, holds, now, values)
        self._alerts[key] = alert
        return event

    def observe(
        self, labels: Mapping[str, object] | Labels, facts: Facts, now: float
    ) -> list[AlertEvent]:
        """Evaluate every rule against one instance's facts; return the events, in rule order.

        Raises:
            ValueError: ``now`` is not finite or went back in time.
        """
        _check_now(now)
        events = []
        key = label_set(labels)  # once for all the rules: this runs every round, per process
        for rule in self._rules.values():
            event = self._update(rule, key, rule.condition.holds(facts, now), now, facts.values)
            if event is not None:
                events.append(event)
        return events

    def get(self, rule: str, labels: Mapping[str, object] | Labels) -> Alert | None:
        """Return the alert of ``rule`` for ``labels``, if it ever held."""
        return self._alerts.get((rule, label_set(labels)))

    def alerts(self, *statuses: AlertStatus) -> list[Alert]:
        """Return the alerts in any of ``statuses`` (all of them when none is given)."""
        return [a for a in self._alerts.values() if not statuses or a.status in statuses]

    def acknowledge(self, rule: str, labels: Mapping[str, object] | Labels, now: float) -> Alert:
        """Acknowledge the firing alert of ``rule`` for ``labels``; return it.

        Raises:
            ValueError: no such rule, or its alert for ``labels`` is not firing.
        """
        self._rule(rule)
        key = (rule, label_set(labels))
        alert = self._alerts.get(key, Alert(rule, key[1]))
        self._alerts[key] = acknowledge(alert, now)
        return self._alerts[key]

    def silence(
        self,
        rule: str,
        labels: Mapping[str, object] | Labels | None,
        now: float,
        duration: float,
    ) -> None:
        """Mute ``rule``'s notifications until ``now + duration``: for ``labels``, or for every
        label set, including those that start holding later, when ``labels`` is None.

        A duration of 0 lifts the silence: that alert's for ``labels``; every silence on the
        rule's alerts for None.

        Raises:
            ValueError: no such rule, or ``duration`` is negative or not finite.
        """
        self._rule(rule)
        if labels is not None:
            key = (rule, label_set(labels))
            self._alerts[key] = silence(self._alerts.get(key, Alert(rule, key[1])), now, duration)
            return
        _check_now(now)
        _check_duration(duration, "duration")
        if duration == 0:
            self._rule_silences.pop(rule, None)
            for key, alert in self._alerts.items():
                if key[0] == rule:
                    self._alerts[key] = replace(alert, silenced_until=None)
        else:
            self._rule_silences[rule] = now + duration

    def forget(self, labels: Mapping[str, object] | Labels, now: float) -> list[AlertEvent]:
        """Drop the alerts of a label set that is gone (a removed instance); firing ones resolve.

        Returns the ``resolved`` events of the alerts that were firing.
        """
        key_labels = label_set(labels)
        events = []
        for key in [k for k in self._alerts if k[1] == key_labels]:
            alert = self._alerts.pop(key)
            if alert.status is AlertStatus.FIRING:
                _, event = advance(self._rules[key[0]], alert, False, now)
                if event is not None:
                    events.append(event)
        return events

    def __repr__(self) -> str:
        firing = sum(1 for a in self._alerts.values() if a.status is AlertStatus.FIRING)
        return (
            f"AlertTracker(rules={len(self._rules)}, alerts={len(self._alerts)}, firing={firing})"
        )


# ---------------------------------------------------------------------------- watch limits


class WatchAction(StrEnum):
    """What to do when a watched value stays over its limit for ``for``."""

    RESTART = "restart"
    STOP = "stop"
    ALERT = "alert"
    """Only report it (an event and, if rules say so, an alert)."""
    THROTTLE = "throttle"
    """Slow the process down with SIGSTOP/SIGCONT (see
    :func:`procvisor.policy.throttle.plan_throttle`); CPU only."""


def parse_watch_action(value: object, *, field: str = "action") -> WatchAction:
    """Return the :class:`WatchAction` named by ``value`` (any case).

    Raises:
        ValueError: ``value`` names no action; the message names ``field`` and lists them.
    """
    if isinstance(value, WatchAction):
        return value
    if isinstance(value, str):
        member = WatchAction.__members__.get(value.strip().upper())
        if member is not None:
            return member
    accepted = ", ".join(repr(a.value) for a in WatchAction)
    raise ValueError(f"{field}: {value!r} is not an action; use one of {accepted}")


@dataclass(frozen=True, slots=True)
class Limit:
    """A ceiling on one sampled field, such as ``max_memory`` on ``rss``.

    Attributes:
        name: the setting (``"max_memory"``).
        field: the sample field it watches (``"rss"``).
        maximum: the limit, in the field's unit (bytes, percent of one core, a count).
        warning: where the status turns warning; None means
            :data:`DEFAULT_WARNING_RATIO` of ``maximum`` (see :attr:`warn_at`).
        kind: the field's kind, for messages (sizes read ``500M``).

    Raises:
        ValueError: ``maximum`` is not more than 0, or ``warning`` is negative or above
            ``maximum``, or one is not finite.
    """

    name: str
    field: str
    maximum: float
    warning: float | None = None
    kind: FieldKind = FieldKind.NUMBER

    def __post_init__(self) -> None:
        _check_finite(self.maximum, self.name)
        if self.maximum <= 0:
            raise ValueError(f"{self.name}: {self.maximum!r} must be more than 0")
        if self.warning is not None:
            _check_finite(self.warning, f"warning for {self.name}")
            if not 0 <= self.warning <= self.maximum:
                raise ValueError(
                    f"warning for {self.name}: {self.warning!r} must be between 0 and the "
                    f"limit {self.format(self.maximum)}"
                )

    @property
    def warn_at(self) -> float:
        """The value from which the status is warning."""
        return self.warning if self.warning is not None else self.maximum * DEFAULT_WARNING_RATIO

    def format(self, value: float) -> str:
        """Render a value of this limit's field: ``format(524288000)`` is ``"500M"``."""
        return format_value(value, self.kind)


@dataclass(frozen=True, slots=True)
class WatchLimits:
    """A service's ``[watch]`` table: limits, how long a breach must last, and the action.

    Attributes:
        limits: the limits, in configuration order.
        for_: how long a value must stay over its limit before the action (``for``).
        action: what to do then. ``throttle`` applies to ``max_cpu``; a breach of another limit
            under ``throttle`` is reported as ``alert`` (stopping a process does not shrink its
            memory).

    Raises:
        ValueError: two limits share a name, or ``for_`` is negative or not finite.
    """

    limits: tuple[Limit, ...] = ()
    for_: float = 0.0
    action: WatchAction = WatchAction.ALERT

    def __post_init__(self) -> None:
        _check_duration(self.for_, "for")
        names = [limit.name for limit in self.limits]
        if len(set(names)) != len(names):
            raise ValueError(f"limits: names repeat in {names!r}")

    def action_for(self, limit: Limit) -> WatchAction:
        """The action a breach of ``limit`` takes."""
        if self.action is WatchAction.THROTTLE and limit.field != "cpu":
            return WatchAction.ALERT
        return self.action


_WATCH_FIELDS: Final = {
    "max_memory": ("rss", FieldKind.SIZE, "warn_memory"),
    "max_cpu": ("cpu", FieldKind.PERCENT, "warn_cpu"),
    "max_fds": ("fds", FieldKind.NUMBER, "warn_fds"),
    "max_threads": ("threads", FieldKind.NUMBER, "warn_threads"),
}
_WATCH_KEYS: Final = frozenset(
    {*_WATCH_FIELDS, *(w for _, _, w in _WATCH_FIELDS.values()), "warning", "for", "action"}
)


def _parse_limit_value(value: object, kind: FieldKind, name: str) -> float:
    if kind is FieldKind.SIZE:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError(f"{name}: {value!r} is not a size; use {SIZE_FORMS}")
        return float(parse_size(value, field=name))
    if kind is FieldKind.PERCENT:
        percent = math.nan
        if isinstance(value, int | float) and not isinstance(value, bool):
            percent = float(value)
        elif isinstance(value, str):
            text = value.strip().removesuffix("%").strip()
            with contextlib.suppress(ValueError):
                percent = float(text)
        if not math.isfinite(percent) or percent < 0:
            raise ValueError(
                f"{name}: {value!r} is not a percentage; use a number of 0 or more like 90 or "
                "'90%' (percent of one core: 200 is two cores)"
            )
        return percent
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name}: {value!r} must be a whole number, e.g. 1000")
    return float(value)


def parse_watch(table: Mapping[str, object], *, field: str = "watch") -> WatchLimits:
    """Build :class:`WatchLimits` from a service's ``[watch]`` table.

    Keys: ``max_memory`` (a size, on ``rss``), ``max_cpu`` (percent of one core: ``90`` or
    ``"90%"``, on ``cpu``), ``max_fds`` and ``max_threads`` (counts); ``warn_memory``,
    ``warn_cpu``, ``warn_fds``, ``warn_threads`` (where the status turns warning, by default
    ``warning`` times the limit); ``warning`` (a ratio such as ``0.8`` or ``"80%"``);
    ``for`` (a duration, default 0); ``action`` (``restart``, ``stop``, ``alert`` (the default)
    or ``throttle``)::

        [services.web.watch]
        max_memory = "500M"
        max_cpu = 90
        for = "30s"
        action = "restart"

    Args:
        field: the table's path, for messages (``"services.web.watch"``).

    Raises:
        ValueError: a key is unknown, a value is invalid, a warning level is above its limit,
            no limit is set, or ``throttle`` is asked for without ``max_cpu``; the message
            names the key and what it accepts.
    """
    for key in table:
        if key not in _WATCH_KEYS:
            raise _unknown_key(key, _WATCH_KEYS, field)
    ratio = DEFAULT_WARNING_RATIO
    if "warning" in table:
        raw = table["warning"]
        ratio = _parse_limit_value(raw, FieldKind.PERCENT, f"{field}.warning")
        if isinstance(raw, str) and raw.strip().endswith("%"):
            ratio /= 100
        if not 0 < ratio <= 1:
            raise ValueError(
                f"{field}.warning: {raw!r} must be a ratio in (0, 1] such as 0.8, or '80%'"
            )
    limits = []
    for name, (sample_field, kind, warn_key) in _WATCH_FIELDS.items():
        if name not in table:
            if warn_key in table:
                raise ValueError(f"{field}.{warn_key}: set {name} too; a warning needs a limit")
            continue
        maximum = _parse_limit_value(table[name], kind, f"{field}.{name}")
        if maximum <= 0:
            raise ValueError(f"{field}.{name}: {table[name]!r} must be more than 0")
        warning = maximum * ratio
        if warn_key in table:
            warning = _parse_limit_value(table[warn_key], kind, f"{field}.{warn_key}")
            if warning > maximum:
                raise ValueError(
                    f"{field}.{warn_key}: {table[warn_key]!r} is above {name} "
                    f"{format_value(maximum, kind)}; a warning comes before the limit"
                )
        limits.append(Limit(name, sample_field, maximum, warning, kind))
    if not limits:
        raise ValueError(f"{field}: set at least one of {', '.join(_WATCH_FIELDS)}")
    action = parse_watch_action(table.get("action", WatchAction.ALERT), field=f"{field}.action")
    if action is WatchAction.THROTTLE and "max_cpu" not in table:
        raise ValueError(f"{field}.action: 'throttle' slows the CPU; set max_cpu too")
    for_ = _parse_duration(table.get("for", 0.0), f"{field}.for")
    return WatchLimits(tuple(limits), for_, action)


@dataclass(frozen=True, slots=True)
class WatchState:
    """What the watch remembers about one instance between samples.

    Start every instance (and every restart of it) from ``WatchState()``.

    Attributes:
        over_since: for each limit currently exceeded, the ``now`` of the first sample over it.
        triggered: the limits whose breach was already reported (once per excursion).
    """

    over_since: Mapping[str, float] = dataclasses.field(default_factory=dict)
    triggered: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Breach:
    """A value stayed over its limit for ``for``: the caller does :attr:`action`.

    Attributes:
        limit: the setting (``"max_memory"``).
        field: the sample field (``"rss"``).
        value: the value in the sample that completed the breach.
        maximum: the limit.
        since: when the value first went over.
        action: what to do.
        kind: the field's kind, for messages.
    """

    limit: str
    field: str
    value: float
    maximum: float
    since: float
    action: WatchAction
    kind: FieldKind = FieldKind.NUMBER

    def describe(self, now: float) -> str:
        """One line for events: ``"rss 612M over max_memory 500M for 30s"``."""
        value, maximum = format_value(self.value, self.kind), format_value(self.maximum, self.kind)
        lasted = format_duration(max(0.0, now - self.since))
        return f"{self.field} {value} over {self.limit} {maximum} for {lasted}"


def _number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def check_watch(
    watch: WatchLimits, state: WatchState, sample: Mapping[str, object], now: float
) -> tuple[WatchState, list[Breach]]:
    """Take one sample into account; return the new state and the limits breached just now.

    A limit is exceeded when the sampled value is above ``maximum``. It is breached when it has
    been exceeded at every sample since the first one over it, and ``now`` is at least
    ``watch.for_`` after that first one; each excursion is reported once. A sample at or below
    the limit ends the excursion (the next one starts over); a sample without the field (or
    with a value that is not a finite number) changes nothing, since it proves neither.

    Raises:
        ValueError: ``now`` is not finite or earlier than a remembered time.
    """
    _check_now(now)
    over = dict(state.over_since)
    triggered = set(state.triggered)
    for since in over.values():
        if now < since:
            raise ValueError(
                f"now: {now!r} is earlier than a sample at {since!r}; pass time.monotonic()"
            )
    breaches = []
    for limit in watch.limits:
        value = _number(sample.get(limit.field))
        if value is None:
            continue
        if value <= limit.maximum:
            over.pop(limit.name, None)
            triggered.discard(limit.name)
            continue
        since = over.setdefault(limit.name, now)
        if limit.name not in triggered and now - since >= watch.for_:
            triggered.add(limit.name)
            breaches.append(
                Breach(
                    limit.name,
                    limit.field,
                    value,
                    limit.maximum,
                    since,
                    watch.action_for(limit),
                    limit.kind,
                )
            )
    return WatchState(over, frozenset(triggered)), breaches


# --------------------------------------------------------------------------------- trends


@dataclass(frozen=True, slots=True)
class Trend:
    """A summary of ``(t, value)`` points: level, extremes and least-squares growth.

    Attributes:
        count: how many points.
        start: the earliest ``t``.
        end: the latest ``t``.
        average: the mean value.
        minimum: the smallest value.
        maximum: the largest value.
        slope: the growth rate in value units per second (least squares; 0 with fewer than
            two distinct times). For ``rss``, bytes per second.
        r_squared: how well a straight line explains the points, from 0 (not at all) to 1
            (exactly); steady growth (a leak) scores high, noise low. 1 for constant values,
            0 with fewer than two distinct times.
    """

    count: int
    start: float
    end: float
    average: float
    minimum: float
    maximum: float
    slope: float
    r_squared: float

    @property
    def span(self) -> float:
        """Seconds between the first and last point."""
        return self.end - self.start

    @property
    def per_hour(self) -> float:
        """The growth rate per hour: ``slope * 3600``."""
        return self.slope * 3600.0


def _points(
    points: Iterable[tuple[float, float]], now: float | None, window: float | None
) -> list[tuple[float, float]]:
    if window is not None:
        if now is None:
            raise ValueError("now: required with a window; pass time.monotonic()")
        _check_finite(window, "window")
        if window <= 0:
            raise ValueError(f"window: {window!r} must be a duration of more than 0")
    if now is not None:
        _check_now(now)
    kept = []
    for t, v in points:
        if not (math.isfinite(t) and math.isfinite(v)):
            raise ValueError(f"points: ({t!r}, {v!r}) is not a pair of finite numbers")
        if window is not None and now is not None and not now - window <= t <= now:
            continue
        kept.append((float(t), float(v)))
    return kept


def _line(points: list[tuple[float, float]]) -> tuple[float, float, float, float, float]:
    """Means of t and v, and the centred sums Sxx, Sxy, Syy (centred for precision)."""
    n = len(points)
    mean_t = math.fsum(t for t, _ in points) / n
    mean_v = math.fsum(v for _, v in points) / n
    sxx = math.fsum((t - mean_t) * (t - mean_t) for t, _ in points)
    sxy = math.fsum((t - mean_t) * (v - mean_v) for t, v in points)
    syy = math.fsum((v - mean_v) * (v - mean_v) for _, v in points)
    return mean_t, mean_v, sxx, sxy, syy


def fit_line(points: Iterable[tuple[float, float]]) -> tuple[float, float] | None:
    """Fit ``value = slope * t + intercept`` by least squares; return ``(slope, intercept)``.

    Returns None with fewer than two distinct times.

    Raises:
        ValueError: a point is not finite.
    """
    pts = _points(points, None, None)
    if len(pts) < 2:
        return None
    mean_t, mean_v, sxx, sxy, _ = _line(pts)
    if sxx <= 0:
        return None
    slope = sxy / sxx
    return slope, mean_v - slope * mean_t


def trend(
    points: Iterable[tuple[float, float]],
    *,
    now: float | None = None,
    window: float | None = None,
) -> Trend | None:
    """Summarise ``(t, value)`` points, optionally only those in ``[now - window, now]``.

    Returns None when no point is left.

    Raises:
        ValueError: a point is not finite, ``window`` is given without ``now``, or is not
            more than 0.
    """
    pts = _points(points, now, window)
    if not pts:
        return None
    _, mean_v, sxx, sxy, syy = _line(pts)
    values = [v for _, v in pts]
    times = [t for t, _ in pts]
    if sxx > 0:
        slope = sxy / sxx
        r_squared = 1.0 if syy == 0 else min(1.0, max(0.0, sxy * sxy / (sxx * syy)))
    else:
        slope, r_squared = 0.0, 0.0
    return Trend(
        len(pts), min(times), max(times), mean_v, min(values), max(values), slope, r_squared
    )


def looks_like_leak(
    found: Trend,
    *,
    min_growth_per_hour: float,
    min_span: float = 1800.0,
    min_r_squared: float = 0.6,
) -> bool:
    """Return whether a trend is slow, steady growth: a likely leak rather than a spike.

    It must cover at least ``min_span`` seconds, grow at least ``min_growth_per_hour`` (e.g.
    ``parse_size("10M")`` for RSS), and fit a line with ``r_squared >= min_r_squared``.
    """
    return (
        found.span >= min_span
        and found.per_hour >= min_growth_per_hour
        and found.r_squared >= min_r_squared
    )


def format_growth(per_second: float, kind: FieldKind = FieldKind.SIZE) -> str:
    """Render a growth rate per hour: ``format_growth(2913)`` is ``"+10M/h"`` for a size."""
    per_hour = per_second * 3600.0
    sign = "-" if per_hour < 0 else "+"
    magnitude = abs(per_hour)
    if kind is FieldKind.SIZE and math.isfinite(magnitude) and magnitude < 2**80:
        text = format_size(round(magnitude))
    else:
        text = format_value(magnitude, kind)
    return f"{sign}{text}/h"


def downsample(
    points: Iterable[tuple[float, float]], bucket: float = 60.0
) -> list[tuple[float, float]]:
    """Average points into buckets of ``bucket`` seconds (1 minute by default).

    Buckets are aligned on multiples of ``bucket``; each result is ``(bucket start, mean)``,
    oldest first; empty buckets are left out. Points need not be sorted.

    Raises:
        ValueError: ``bucket`` is not more than 0, or a point is not finite.
    """
    _check_finite(bucket, "bucket")
    if bucket <= 0:
        raise ValueError(f"bucket: {bucket!r} must be a duration of more than 0")
    sums: dict[int, list[float]] = {}
    for t, v in _points(points, None, None):
        sums.setdefault(math.floor(t / bucket), []).append(v)
    return [(index * bucket, math.fsum(vs) / len(vs)) for index, vs in sorted(sums.items())]


# ---------------------------------------------------------------------------------- status


class InstanceStatus(StrEnum):
    """How an instance is doing against its limits, from best to worst."""

    OK = "ok"
    WARNING = "warning"
    """A value reached its warning level (80% of the limit unless configured)."""
    CRITICAL = "critical"
    """A value is at or over its limit."""
    DEAD = "dead"
    """The process is gone."""

    @property
    def rank(self) -> int:
        """0 for ``ok`` up to 3 for ``dead``."""
        return list(InstanceStatus).index(self)


@dataclass(frozen=True, slots=True)
class StatusReport:
    """An instance's status and why: one reason per limit at warning or worse."""

    status: InstanceStatus
    reasons: tuple[str, ...] = ()


def instance_status(
    sample: Mapping[str, object] | None,
    limits: WatchLimits | Iterable[Limit],
    *,
    alive: bool = True,
) -> StatusReport:
    """Grade an instance: ``dead`` when not ``alive``; else the worst of its limits.

    A value at or over its limit is ``critical``; at or over its warning level, ``warning``;
    otherwise, or with no sample or no such field in it, ``ok``.
    """
    if not alive:
        return StatusReport(InstanceStatus.DEAD, ("process is gone",))
    items = limits.limits if isinstance(limits, WatchLimits) else tuple(limits)
    status = InstanceStatus.OK
    reasons = []
    for limit in items:
        value = _number((sample or {}).get(limit.field))
        if value is None:
            continue
        share = f"{value / limit.maximum:.0%}"
        if value >= limit.maximum:
            level = InstanceStatus.CRITICAL
            what = "at or over"
        elif value >= limit.warn_at:
            level = InstanceStatus.WARNING
            what = f"{share} of"
        else:
            continue
        reasons.append(
            f"{limit.field} {limit.format(value)} {what} {limit.name} {limit.format(limit.maximum)}"
        )
        if level.rank > status.rank:
            status = level
    return StatusReport(status, tuple(reasons))
