"""Alert rules and their lifecycle, watch limits, throttling, trends and instance status."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from procvisor.policy.alertexpr import ExprError, FieldKind, compile_expr, compile_template
from procvisor.policy.alerts import (
    Alert,
    AlertEvent,
    AlertEventKind,
    AlertRule,
    AlertStatus,
    AlertTracker,
    Breach,
    ExprCondition,
    Facts,
    Flapping,
    InstanceStatus,
    Limit,
    ProbeFailing,
    RestartStorm,
    ServiceFatal,
    Severity,
    SlidingWindow,
    StatusReport,
    WatchAction,
    WatchLimits,
    WatchState,
    acknowledge,
    advance,
    check_watch,
    count_in_window,
    downsample,
    fit_line,
    format_growth,
    instance_status,
    label_set,
    looks_like_leak,
    parse_alert_rule,
    parse_severity,
    parse_watch,
    parse_watch_action,
    silence,
    trend,
)
from procvisor.policy.throttle import ThrottlePlan, plan_throttle
from procvisor.policy.units import parse_size

MiB = 1024**2
WEB0 = {"service": "web", "instance": "web:0"}
LABELS = label_set(WEB0)


def rule(for_: float = 0.0, text: str = "rss > 400M", **kw: object) -> AlertRule:
    return AlertRule("high_memory", ExprCondition(compile_expr(text)), for_, **kw)  # type: ignore[arg-type]


def run(
    r: AlertRule, steps: list[tuple[float, bool]], alert: Alert | None = None
) -> tuple[Alert, list[AlertEvent]]:
    """Advance an alert through ``(now, holds)`` steps; return it and every event."""
    alert = alert if alert is not None else Alert(r.name, LABELS)
    events = []
    for now, holds in steps:
        alert, event = advance(r, alert, holds, now, {"rss": 512 * MiB, **WEB0})
        if event is not None:
            events.append(event)
    return alert, events


# --- severity --------------------------------------------------------------------------------


def test_severities_parse_in_any_case_and_rank_in_order() -> None:
    assert parse_severity(" Critical ") is Severity.CRITICAL
    assert parse_severity(Severity.INFO) is Severity.INFO
    assert [s.rank for s in Severity] == [0, 1, 2, 3]
    assert Severity.EMERGENCY.rank > Severity.CRITICAL.rank > Severity.WARNING.rank


@pytest.mark.parametrize("bad", ["fatal", "", 3, None, True])
def test_bad_severities_name_the_field_and_the_choices(bad: object) -> None:
    with pytest.raises(ValueError, match=r"^alerts.x.severity: .*'info', 'warning'"):
        parse_severity(bad, field="alerts.x.severity")


# --- windows ---------------------------------------------------------------------------------


def test_count_in_window_counts_the_half_open_window() -> None:
    times = [10.0, 20.0, 30.0, 40.0]
    assert count_in_window(times, 40.0, 20.0) == 2  # 30 and 40; 20 is exactly out
    assert count_in_window(times, 49.9, 20.0) == 2
    assert count_in_window(times, 25.0, 100.0) == 2  # later events are not counted yet
    assert count_in_window(reversed(times), 40.0, 30.0) == 3
    with pytest.raises(ValueError, match="window"):
        count_in_window(times, 40.0, 0.0)


def test_a_sliding_window_forgets_old_events() -> None:
    window = SlidingWindow(60.0)
    for t in (0.0, 10.0, 50.0):
        window.add(t)
    assert window.count(55.0) == 3
    assert window.count(60.0) == 2 and window.times == (10.0, 50.0)
    assert window.count(200.0) == 0 and len(window) == 0
    window.add(100.0)
    with pytest.raises(ValueError, match="earlier than the last event"):
        window.add(10.0)
    assert "window=60.0" in repr(window)


@given(st.lists(st.floats(0, 1000), max_size=30), st.floats(0, 1000), st.floats(0.1, 500))
def test_the_sliding_window_agrees_with_count_in_window(
    times: list[float], now: float, width: float
) -> None:
    window = SlidingWindow(width)
    for t in sorted(times):
        window.add(t)
    if not times or now >= max(times):
        assert window.count(now) == count_in_window(times, now, width)


# --- conditions and rules --------------------------------------------------------------------


def test_built_in_conditions() -> None:
    assert ServiceFatal().holds(Facts({"state": "fatal"}), 0.0)
    assert not ServiceFatal().holds(Facts({"state": "running"}), 0.0)
    assert ProbeFailing().holds(Facts({"health": "unhealthy"}), 0.0)
    assert not ProbeFailing().holds(Facts({}), 0.0)
    storm = RestartStorm(restarts=3, window=60.0)
    assert storm.holds(Facts(restarts=[10.0, 20.0, 30.0]), 60.0)
    assert not storm.holds(Facts(restarts=[10.0, 20.0, 30.0]), 70.0)
    flapping = Flapping(changes=4, window=600.0)
    assert flapping.holds(Facts(state_changes=[1.0, 2.0, 3.0, 4.0]), 100.0)
    assert not flapping.holds(Facts(state_changes=[1.0, 2.0, 3.0]), 100.0)
    assert storm.describe() == "3 restarts within 1m"
    assert flapping.describe() == "4 state changes within 10m"
    with pytest.raises(ValueError, match="restarts: 0"):
        RestartStorm(0, 60.0)
    with pytest.raises(ValueError, match="window"):
        Flapping(3, 0.0)


def test_parse_an_expression_rule() -> None:
    r = parse_alert_rule(
        "high_memory",
        {
            "expr": "rss > 400M and service == 'web'",
            "for": "5m",
            "severity": "critical",
            "summary": "{service}:{instance} uses {rss} ({alert}, {severity})",
        },
    )
    assert r.for_ == 300.0 and r.severity is Severity.CRITICAL
    assert isinstance(r.condition, ExprCondition)
    assert r.condition.expr == compile_expr("rss > 400M and service == 'web'")
    summary = r.render_summary((("instance", "0"), ("service", "web")), {"rss": 512 * MiB})
    assert summary == "web:0 uses 512M (high_memory, critical)"


def test_parse_built_in_rules_with_their_defaults() -> None:
    fatal = parse_alert_rule("dead", {"kind": "fatal"})
    assert fatal.condition == ServiceFatal() and fatal.severity is Severity.CRITICAL
    storm = parse_alert_rule("storm", {"kind": "restart-storm", "count": 3, "window": "1m"})
    assert storm.condition == RestartStorm(3, 60.0) and storm.severity is Severity.WARNING
    assert parse_alert_rule("flap", {"kind": "flapping"}).condition == Flapping(6, 600.0)
    assert parse_alert_rule("probe", {"kind": "probe-failing"}).condition == ProbeFailing()


def test_the_default_summary_names_the_rule_condition_and_labels() -> None:
    r = parse_alert_rule("storm", {"kind": "restart-storm"})
    assert r.render_summary(LABELS, {}) == (
        "storm: 5 restarts within 5m [instance=web:0 service=web]"
    )
    assert rule().render_summary((), {}) == "high_memory: rss > 400M"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"exp": "rss > 1"}, r"alerts.r: unknown key 'exp'; did you mean 'expr'\? accepted: "),
        ({}, "alerts.r: set expr = "),
        ({"kind": "oom"}, "alerts.r.kind: 'oom' is not a rule kind; use one of 'expr', "),
        ({"kind": 3}, "alerts.r.kind: 3 is not a rule kind"),
        ({"kind": "expr"}, "alerts.r.expr: required when kind is 'expr'"),
        ({"expr": 5}, "alerts.r.expr: 5 is not an expression"),
        ({"kind": "fatal", "expr": "rss > 1"}, "alerts.r.expr: not used with kind 'fatal'"),
        ({"kind": "fatal", "window": "1m"}, "alerts.r.window: only used with kind 'flapping'"),
        ({"kind": "flapping", "count": 0}, "alerts.r.count: 0 must be a whole number"),
        ({"kind": "flapping", "window": "0s"}, "alerts.r.window: '0s' must be a duration of more"),
        ({"kind": "flapping", "window": [1]}, r"alerts.r.window: \[1\] is not a duration"),
        ({"expr": "rss > 1", "for": "soon"}, "alerts.r.for: 'soon' is not a duration"),
        ({"expr": "rss > 1", "severity": "high"}, "alerts.r.severity: 'high' is not a severity"),
        ({"expr": "rss > 1", "summary": 3}, "alerts.r.summary: 3 is not a template"),
    ],
)
def test_rule_errors_name_the_key_and_what_it_accepts(
    table: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match="^" + message):
        parse_alert_rule("r", table)


def test_expression_and_template_errors_carry_the_key_path() -> None:
    with pytest.raises(ExprError, match=r"^alerts.r.expr: unknown name 'rsss'"):
        parse_alert_rule("r", {"expr": "rsss > 1"})
    with pytest.raises(ExprError, match=r"^alerts.r.summary: '\{a.b\}' is not a plain"):
        parse_alert_rule("r", {"expr": "rss > 1", "summary": "{a.b}"})
    with pytest.raises(ExprError, match=r"^services.web.alerts.r.expr: "):
        parse_alert_rule("r", {"expr": "rss >"}, field="services.web.alerts.r")


def test_rules_validate_their_fields() -> None:
    with pytest.raises(ValueError, match="name"):
        AlertRule("", ServiceFatal())
    with pytest.raises(ValueError, match="for: -1"):
        AlertRule("r", ServiceFatal(), -1.0)
    with pytest.raises(ValueError, match="parse_severity"):
        AlertRule("r", ServiceFatal(), 0.0, "critical")  # type: ignore[arg-type]


# --- lifecycle -------------------------------------------------------------------------------


def test_with_for_zero_a_holding_condition_fires_at_once() -> None:
    alert, events = run(rule(0.0), [(10.0, True)])
    assert alert.status is AlertStatus.FIRING and alert.fired_at == 10.0
    assert events == [
        AlertEvent(
            AlertEventKind.FIRED,
            "high_memory",
            LABELS,
            Severity.WARNING,
            10.0,
            10.0,
            "high_memory: rss > 400M [instance=web:0 service=web]",
            True,
        )
    ]


def test_the_condition_must_hold_for_the_whole_for_duration() -> None:
    r = rule(30.0)
    alert, events = run(r, [(0.0, True), (10.0, True), (29.9, True)])
    assert alert.status is AlertStatus.PENDING and alert.pending_since == 0.0 and events == []
    alert, events = run(r, [(30.0, True)], alert)
    assert alert.status is AlertStatus.FIRING and [e.kind for e in events] == ["fired"]


def test_one_evaluation_that_does_not_hold_resets_a_pending_alert() -> None:
    r = rule(30.0)
    alert, events = run(r, [(0.0, True), (20.0, False), (25.0, True), (50.0, True)])
    assert alert.status is AlertStatus.PENDING and alert.pending_since == 25.0 and events == []
    alert, events = run(r, [(55.0, True)], alert)
    assert alert.status is AlertStatus.FIRING and events[0].at == 55.0


def test_a_firing_alert_resolves_when_the_condition_stops_holding_and_can_fire_again() -> None:
    r = rule(0.0)
    alert, events = run(r, [(0.0, True), (5.0, True), (9.0, False), (12.0, False)])
    assert alert.status is AlertStatus.RESOLVED and alert.resolved_at == 9.0
    assert [(e.kind, e.at, e.fired_at) for e in events] == [
        (AlertEventKind.FIRED, 0.0, 0.0),
        (AlertEventKind.RESOLVED, 9.0, 0.0),
    ]
    assert events[1].summary == events[0].summary and events[1].notify
    alert, events = run(r, [(20.0, True)], alert)
    assert alert.status is AlertStatus.FIRING and events[0].kind is AlertEventKind.FIRED


def test_a_pending_alert_that_stops_holding_goes_back_to_inactive_silently() -> None:
    alert, events = run(rule(60.0), [(0.0, True), (1.0, False)])
    assert alert.status is AlertStatus.INACTIVE and alert.pending_since is None and events == []


def test_the_summary_is_rendered_from_the_sample_when_firing() -> None:
    r = rule(0.0, summary=compile_template("{service} uses {rss}"))
    alert, event = advance(r, Alert(r.name, LABELS), True, 1.0, {"service": "web", "rss": MiB})
    assert event is not None and event.summary == "web uses 1M" and alert.summary == "web uses 1M"


def test_only_a_firing_alert_can_be_acknowledged_and_until_it_resolves() -> None:
    r = rule(10.0)
    pending, _ = run(r, [(0.0, True)])
    with pytest.raises(ValueError, match="'high_memory' is pending; only a firing alert"):
        acknowledge(pending, 1.0)
    firing, _ = run(r, [(10.0, True)], pending)
    acked = acknowledge(firing, 11.0)
    assert acked.acknowledged
    resolved, events = run(r, [(12.0, False)], acked)
    assert not resolved.acknowledged and events[0].notify  # its firing was announced
    again, _ = run(r, [(13.0, True), (23.0, True)], resolved)
    assert again.status is AlertStatus.FIRING and not again.acknowledged


def test_a_silence_mutes_notifications_but_keeps_the_events() -> None:
    r = rule(0.0)
    alert = silence(Alert(r.name, LABELS), 0.0, 60.0)
    assert alert.silenced(59.9) and not alert.silenced(60.0)
    alert, events = run(r, [(1.0, True), (2.0, False)], alert)
    assert [(e.kind, e.notify) for e in events] == [("fired", False), ("resolved", False)]


def test_an_alert_still_firing_when_its_silence_ends_is_announced_then() -> None:
    r = rule(0.0)
    alert = silence(Alert(r.name, LABELS), 0.0, 60.0)
    alert, events = run(r, [(1.0, True), (30.0, True), (60.0, True), (70.0, True)], alert)
    assert [(e.kind, e.at, e.notify, e.fired_at) for e in events] == [
        (AlertEventKind.FIRED, 1.0, False, 1.0),
        (AlertEventKind.FIRED, 60.0, True, 1.0),
    ]
    assert alert.notified and alert.silenced_until is None
    _, events = run(r, [(80.0, False)], alert)
    assert events[0].notify


def test_an_acknowledged_alert_is_not_announced_when_its_silence_ends() -> None:
    r = rule(0.0)
    alert = silence(Alert(r.name, LABELS), 0.0, 60.0)
    alert, _ = run(r, [(1.0, True)], alert)
    alert, events = run(r, [(61.0, True), (62.0, False)], acknowledge(alert, 2.0))
    assert [(e.kind, e.notify) for e in events] == [("resolved", False)]


def test_silence_with_zero_duration_lifts_it() -> None:
    alert = silence(silence(Alert("r"), 0.0, 60.0), 1.0, 0.0)
    assert alert.silenced_until is None
    with pytest.raises(ValueError, match="duration"):
        silence(alert, 0.0, -1.0)


def test_time_may_not_go_back_and_alerts_belong_to_their_rule() -> None:
    r = rule(0.0)
    alert, _ = run(r, [(10.0, True)])
    with pytest.raises(ValueError, match="earlier than the alert's last change"):
        advance(r, alert, True, 9.0)
    with pytest.raises(ValueError, match="now: nan"):
        advance(r, alert, True, math.nan)
    with pytest.raises(ValueError, match="belongs to rule 'other'"):
        advance(r, Alert("other"), True, 11.0)


@settings(max_examples=300, deadline=None)
@given(
    st.floats(0, 100),
    st.lists(st.tuples(st.floats(0, 40), st.booleans()), max_size=40),
)
def test_an_alert_never_fires_before_its_condition_held_for_for(
    for_: float, steps: list[tuple[float, bool]]
) -> None:
    r = rule(for_)
    alert = Alert(r.name, LABELS)
    now = 0.0
    streak_start: float | None = None
    kinds = []
    for dt, holds in steps:
        now += dt
        if holds and streak_start is None:
            streak_start = now
        if not holds:
            streak_start = None
        alert, event = advance(r, alert, holds, now)
        if event is not None:
            kinds.append(event.kind)
            if event.kind is AlertEventKind.FIRED:
                assert streak_start is not None and now - streak_start >= for_
        held_long_enough = streak_start is not None and now - streak_start >= for_
        assert (alert.status is AlertStatus.FIRING) == held_long_enough
    # Without silences, events alternate fired, resolved, fired, ...
    assert kinds == [AlertEventKind.FIRED, AlertEventKind.RESOLVED] * (len(kinds) // 2) + (
        [AlertEventKind.FIRED] if len(kinds) % 2 else []
    )


# --- tracker ---------------------------------------------------------------------------------


def tracker() -> AlertTracker:
    return AlertTracker(
        [
            rule(10.0),
            parse_alert_rule("dead", {"kind": "fatal"}),
            parse_alert_rule("storm", {"kind": "restart-storm", "count": 2, "window": "1m"}),
        ]
    )


def test_the_tracker_evaluates_every_rule_per_label_set() -> None:
    t = tracker()
    big = Facts({"rss": 512 * MiB, "state": "running", **WEB0}, restarts=[1.0, 2.0])
    assert [(e.rule, e.kind) for e in t.observe(WEB0, big, 5.0)] == [("storm", "fired")]
    events = t.observe(WEB0, big, 15.0)
    assert [(e.rule, e.kind) for e in events] == [("high_memory", "fired")]
    assert events[0].summary.startswith("high_memory: rss > 400M [instance=web:0")
    web1 = {"service": "web", "instance": "web:1"}
    assert t.observe(web1, Facts({"state": "fatal", **web1}), 16.0)[0].rule == "dead"
    assert {a.rule for a in t.alerts(AlertStatus.FIRING)} == {"high_memory", "storm", "dead"}
    assert t.get("high_memory", WEB0) is not None and t.get("dead", WEB0) is None
    assert repr(t) == "AlertTracker(rules=3, alerts=3, firing=3)"
    events = t.observe(WEB0, Facts({"rss": MiB}), 100.0)
    assert sorted(e.rule for e in events) == ["high_memory", "storm"]


def test_a_rule_wide_silence_covers_label_sets_that_start_holding_later() -> None:
    t = tracker()
    t.silence("dead", None, 0.0, 100.0)
    events = t.observe(WEB0, Facts({"state": "fatal"}), 10.0)
    assert [(e.rule, e.notify) for e in events] == [("dead", False)]
    events = t.observe(WEB0, Facts({"state": "fatal"}), 100.0)
    assert [(e.rule, e.kind, e.notify) for e in events] == [("dead", "fired", True)]


def test_the_tracker_silences_and_acknowledges_one_label_set() -> None:
    t = tracker()
    t.silence("dead", WEB0, 0.0, 50.0)
    assert [e.notify for e in t.observe(WEB0, Facts({"state": "fatal"}), 1.0)] == [False]
    assert t.acknowledge("dead", WEB0, 2.0).acknowledged
    assert t.observe(WEB0, Facts({"state": "fatal"}), 60.0) == []  # acknowledged: not announced
    with pytest.raises(ValueError, match="is inactive"):
        t.acknowledge("high_memory", WEB0, 61.0)
    t.silence("dead", None, 61.0, 0.0)
    assert t.get("dead", WEB0).silenced_until is None  # type: ignore[union-attr]


def test_forgetting_a_label_set_resolves_its_firing_alerts() -> None:
    t = tracker()
    t.observe(WEB0, Facts({"state": "fatal"}), 1.0)
    events = t.forget(WEB0, 2.0)
    assert [(e.rule, e.kind) for e in events] == [("dead", "resolved")]
    assert t.alerts() == []


def test_tracker_misuse() -> None:
    with pytest.raises(ValueError, match="two rules are named 'high_memory'"):
        AlertTracker([rule(), rule()])
    with pytest.raises(ValueError, match="no rule named 'nope'; rules: high_memory, dead"):
        tracker().silence("nope", None, 0.0, 1.0)


def test_label_sets_are_sorted_string_pairs() -> None:
    assert label_set({"service": "web", "instance": 0}) == (("instance", "0"), ("service", "web"))
    assert label_set((("b", "1"), ("a", "2"))) == (("a", "2"), ("b", "1"))


# --- watch limits ----------------------------------------------------------------------------


def test_parse_watch() -> None:
    watch = parse_watch(
        {"max_memory": "500M", "max_cpu": 90, "max_fds": 1000, "for": "30s", "action": "restart"}
    )
    assert watch.for_ == 30.0 and watch.action is WatchAction.RESTART
    assert watch.limits == (
        Limit("max_memory", "rss", 500.0 * MiB, 400.0 * MiB, FieldKind.SIZE),
        Limit("max_cpu", "cpu", 90.0, 72.0, FieldKind.PERCENT),
        Limit("max_fds", "fds", 1000.0, 800.0, FieldKind.NUMBER),
    )
    custom = parse_watch(
        {"max_cpu": "150%", "warn_cpu": "100%", "max_threads": 200, "warning": "50%"}
    )
    assert [(lim.maximum, lim.warn_at) for lim in custom.limits] == [(150.0, 100.0), (200.0, 100.0)]
    assert custom.action is WatchAction.ALERT and custom.for_ == 0.0


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"max_mem": "1G"}, r"watch: unknown key 'max_mem'; did you mean 'max_memory'\?"),
        ({}, "watch: set at least one of max_memory, max_cpu, max_fds, max_threads"),
        ({"max_memory": "lots"}, "watch.max_memory: 'lots' is not a size"),
        ({"max_memory": 0}, "watch.max_memory: 0 must be more than 0"),
        ({"max_cpu": "fast"}, "watch.max_cpu: 'fast' is not a percentage"),
        ({"max_cpu": -5}, "watch.max_cpu: -5 is not a percentage"),
        ({"max_fds": 1.5}, "watch.max_fds: 1.5 must be a whole number"),
        ({"max_fds": True}, "watch.max_fds: True must be a whole number"),
        ({"max_fds": 10, "warn_fds": 20}, "watch.warn_fds: 20 is above max_fds 10"),
        (
            {"max_memory": "1G", "warn_memory": "2G"},
            "watch.warn_memory: '2G' is above max_memory 1G",
        ),
        ({"warn_cpu": 50, "max_fds": 5}, "watch.warn_cpu: set max_cpu too"),
        ({"max_fds": 5, "warning": 1.5}, r"watch.warning: 1.5 must be a ratio in \(0, 1\]"),
        ({"max_fds": 5, "for": "a while"}, "watch.for: 'a while' is not a duration"),
        ({"max_fds": 5, "action": "kill"}, "watch.action: 'kill' is not an action; use one of"),
        ({"max_fds": 5, "action": "throttle"}, "watch.action: 'throttle' slows the CPU"),
    ],
)
def test_watch_errors_name_the_key(table: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match="^" + message):
        parse_watch(table)


def test_parse_watch_action() -> None:
    assert parse_watch_action("STOP") is WatchAction.STOP
    with pytest.raises(ValueError, match=r"^action: 3 is not an action"):
        parse_watch_action(3)


def memory_watch(for_: float = 30.0, action: WatchAction = WatchAction.RESTART) -> WatchLimits:
    return WatchLimits(
        (Limit("max_memory", "rss", 500.0 * MiB, kind=FieldKind.SIZE),), for_, action
    )


def feed(
    watch: WatchLimits, samples: list[tuple[float, object]], state: WatchState | None = None
) -> tuple[WatchState, list[tuple[float, Breach]]]:
    state = state if state is not None else WatchState()
    found = []
    for now, rss in samples:
        state, breaches = check_watch(watch, state, {"rss": rss}, now)
        found += [(now, b) for b in breaches]
    return state, found


def test_a_limit_exceeded_for_the_whole_for_duration_is_breached_once() -> None:
    over = 600 * MiB
    state, found = feed(memory_watch(), [(0.0, over), (15.0, over), (29.0, over)])
    assert found == [] and state.over_since == {"max_memory": 0.0}
    state, found = feed(memory_watch(), [(30.0, over), (45.0, over)], state)
    assert found == [
        (
            30.0,
            Breach(
                "max_memory", "rss", over, 500.0 * MiB, 0.0, WatchAction.RESTART, FieldKind.SIZE
            ),
        )
    ]
    assert found[0][1].describe(30.0) == "rss 600M over max_memory 500M for 30s"
    assert state.triggered == frozenset({"max_memory"})


def test_a_value_back_at_or_below_the_limit_starts_over() -> None:
    over, limit = 600 * MiB, 500 * MiB
    state, found = feed(memory_watch(), [(0.0, over), (20.0, limit), (25.0, over), (50.0, over)])
    assert found == [] and state.over_since == {"max_memory": 25.0}
    state, found = feed(
        memory_watch(), [(55.0, over), (60.0, 1), (61.0, over), (91.0, over)], state
    )
    assert [now for now, _ in found] == [55.0, 91.0]  # a new excursion is reported again


def test_a_sample_without_the_field_changes_nothing() -> None:
    over = 600 * MiB
    _, found = feed(memory_watch(), [(0.0, over), (10.0, None), (20.0, "x"), (30.0, over)])
    assert [now for now, _ in found] == [30.0]


def test_for_zero_breaches_at_the_first_sample_over() -> None:
    _, found = feed(memory_watch(0.0), [(5.0, 501 * MiB)])
    assert [now for now, _ in found] == [5.0]


def test_throttle_applies_to_cpu_and_other_limits_alert() -> None:
    watch = parse_watch({"max_cpu": 90, "max_threads": 10, "action": "throttle"})
    _, breaches = check_watch(watch, WatchState(), {"cpu": 150.0, "threads": 20}, 0.0)
    assert [(b.limit, b.action) for b in breaches] == [
        ("max_cpu", WatchAction.THROTTLE),
        ("max_threads", WatchAction.ALERT),
    ]


def test_watch_refuses_time_going_back() -> None:
    state, _ = feed(memory_watch(), [(10.0, 600 * MiB)])
    with pytest.raises(ValueError, match="earlier than a sample"):
        check_watch(memory_watch(), state, {"rss": 600 * MiB}, 5.0)


@settings(max_examples=200, deadline=None)
@given(st.floats(0, 60), st.lists(st.tuples(st.floats(0, 20), st.booleans()), max_size=40))
def test_a_breach_never_comes_before_for_has_elapsed_over_the_limit(
    for_: float, steps: list[tuple[float, bool]]
) -> None:
    watch = memory_watch(for_)
    state, now, since = WatchState(), 0.0, None
    for dt, over in steps:
        now += dt
        since = (since if since is not None else now) if over else None
        state, breaches = check_watch(watch, state, {"rss": 600 * MiB if over else MiB}, now)
        for breach in breaches:
            assert since is not None and breach.since == since and now - since >= for_


# --- throttle --------------------------------------------------------------------------------


def test_a_throttle_plan_holds_the_average_at_the_target() -> None:
    plan = plan_throttle(target=50.0, demand=100.0, period=1.0)
    assert plan == ThrottlePlan(run=0.5, stop=0.5) and plan.throttled and plan.duty == 0.5
    plan = plan_throttle(target=90.0, demand=300.0, period=2.0)
    assert plan.run == pytest.approx(0.6) and plan.stop == pytest.approx(1.4)


def test_no_throttle_when_the_demand_is_within_the_target_or_the_stop_too_short() -> None:
    assert plan_throttle(90.0, 80.0) == ThrottlePlan(1.0, 0.0)
    assert not plan_throttle(90.0, 91.0, 1.0, min_slice=0.05).throttled
    assert plan_throttle(1.0, 1000.0, 1.0, min_slice=0.05).run == 0.05  # never stopped for good


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0.0, 100.0), "target: 0.0 must be more than 0; to halt it, use 'stop'"),
        ((50.0, -1.0), "demand"),
        ((50.0, 100.0, 0.0), "period"),
        ((50.0, math.inf), "demand: inf must be a finite number"),
    ],
)
def test_throttle_misuse(args: tuple[float, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plan_throttle(*args)


@given(st.floats(1, 400), st.floats(1, 1600), st.floats(0.1, 10))
def test_a_throttle_never_lets_the_average_exceed_the_target_by_more_than_a_slice(
    target: float, demand: float, period: float
) -> None:
    plan = plan_throttle(target, demand, period, min_slice=0.01)
    assert math.isclose(plan.period, period)
    average = demand * plan.duty
    assert average <= max(target, demand * 0.01 / period) * (1 + 1e-9) or not plan.throttled


# --- trends ----------------------------------------------------------------------------------


def test_a_trend_summarises_points() -> None:
    points = [(0.0, 10.0), (60.0, 20.0), (120.0, 30.0)]
    found = trend(points)
    assert found is not None
    assert (found.count, found.start, found.end, found.span) == (3, 0.0, 120.0, 120.0)
    assert (found.average, found.minimum, found.maximum) == (20.0, 10.0, 30.0)
    assert found.slope == pytest.approx(1 / 6) and found.per_hour == pytest.approx(600.0)
    assert found.r_squared == pytest.approx(1.0)


def test_a_window_keeps_only_recent_points() -> None:
    points = [(t, t * 2) for t in range(0, 1000, 10)]
    found = trend(points, now=500.0, window=100.0)
    assert found is not None and (found.start, found.end, found.count) == (400, 500, 11)
    assert trend(points, now=5000.0, window=10.0) is None
    with pytest.raises(ValueError, match="now: required with a window"):
        trend(points, window=10.0)


def test_edge_cases_of_a_trend() -> None:
    assert trend([]) is None
    one = trend([(5.0, 7.0)])
    assert one is not None and (one.slope, one.r_squared) == (0.0, 0.0)
    flat = trend([(0.0, 3.0), (1.0, 3.0)])
    assert flat is not None and (flat.slope, flat.r_squared) == (0.0, 1.0)
    assert fit_line([(1.0, 1.0), (1.0, 2.0)]) is None
    with pytest.raises(ValueError, match="not a pair of finite numbers"):
        trend([(0.0, math.nan)])


@given(
    st.floats(-1e4, 1e4),
    st.floats(-1e9, 1e9),
    st.floats(0, 1e6),
    st.lists(st.floats(0.5, 120), min_size=2, max_size=50),
)
def test_least_squares_recovers_a_known_line(
    slope: float, intercept: float, t0: float, gaps: list[float]
) -> None:
    times = [t0]
    for gap in gaps:
        times.append(times[-1] + gap)
    fitted = fit_line([(t, slope * t + intercept) for t in times])
    assert fitted is not None
    scale = abs(slope) + abs(intercept) / (times[-1] - times[0]) + 1e-9
    assert fitted[0] == pytest.approx(slope, abs=1e-6 * scale)


def test_a_slow_steady_rss_growth_looks_like_a_leak_and_noise_does_not() -> None:
    leak = [(t, 300 * MiB + t * 3000.0) for t in range(0, 7200, 60)]  # ~10M an hour
    found = trend(leak)
    assert found is not None and format_growth(found.slope) == "+10.3M/h"
    assert looks_like_leak(found, min_growth_per_hour=parse_size("5M"))
    noisy = [(t, 300 * MiB + (50 * MiB if (t // 60) % 2 else 0)) for t in range(0, 7200, 60)]
    found = trend(noisy)
    assert found is not None and not looks_like_leak(found, min_growth_per_hour=1.0)
    short = trend(leak[:10])
    assert short is not None and not looks_like_leak(short, min_growth_per_hour=1.0)


def test_format_growth() -> None:
    assert format_growth(-1024 / 3600) == "-1K/h"
    assert format_growth(0.0) == "+0B/h"
    assert format_growth(0.5, FieldKind.NUMBER) == "+1800/h"


def test_downsample_averages_into_aligned_buckets() -> None:
    points = [(125.0, 4.0), (0.0, 1.0), (59.9, 3.0), (61.0, 10.0), (150.0, 6.0)]
    assert downsample(points) == [(0.0, 2.0), (60.0, 10.0), (120.0, 5.0)]
    assert downsample(points, bucket=1000.0) == [(0.0, 4.8)]
    assert downsample([]) == []
    with pytest.raises(ValueError, match="bucket"):
        downsample(points, bucket=0.0)


# --- status ----------------------------------------------------------------------------------


def test_instance_status() -> None:
    watch = parse_watch({"max_memory": "500M", "max_fds": 1000, "warn_fds": 900})
    assert instance_status({"rss": 100 * MiB, "fds": 10}, watch) == StatusReport(InstanceStatus.OK)
    assert instance_status({"rss": 420 * MiB}, watch) == StatusReport(
        InstanceStatus.WARNING, ("rss 420M 84% of max_memory 500M",)
    )
    report = instance_status({"rss": 500 * MiB, "fds": 950}, watch)
    assert report.status is InstanceStatus.CRITICAL
    assert report.reasons == ("rss 500M at or over max_memory 500M", "fds 950 95% of max_fds 1000")
    assert instance_status({"rss": 900 * MiB}, watch, alive=False) == StatusReport(
        InstanceStatus.DEAD, ("process is gone",)
    )
    assert instance_status(None, watch.limits).status is InstanceStatus.OK
    assert [s.rank for s in InstanceStatus] == [0, 1, 2, 3]


def test_limits_validate_their_values() -> None:
    with pytest.raises(ValueError, match="max_fds: 0"):
        Limit("max_fds", "fds", 0)
    with pytest.raises(ValueError, match="warning for max_fds: 20"):
        Limit("max_fds", "fds", 10, 20)
    with pytest.raises(ValueError, match="names repeat"):
        WatchLimits((Limit("a", "fds", 1), Limit("a", "fds", 2)))
