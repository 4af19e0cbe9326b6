"""Health thresholds: streaks of results, sticky health, the start period and its early end."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from procvisor.policy.health import (
    Health,
    HealthChange,
    HealthState,
    HealthThresholds,
    in_start_period,
    observe,
)


def feed(
    thresholds: HealthThresholds, state: HealthState, results: str, *, at: float, step: float = 1.0
) -> tuple[HealthState, list[HealthChange]]:
    """Feed results written as a string (``"s"`` success, ``"f"`` failure) from ``at`` on."""
    changes = []
    for i, r in enumerate(results):
        state, change = observe(thresholds, state, r == "s", at + i * step, detail=f"#{i}")
        if change is not None:
            changes.append(change)
    return state, changes


# --- thresholds ------------------------------------------------------------------------------


def test_an_instance_starts_unknown() -> None:
    state = HealthState(started=100.0)
    assert (state.health, state.successes, state.failures) == (Health.UNKNOWN, 0, 0)
    assert HealthThresholds() == HealthThresholds(3, 1, 0.0)


def test_one_success_makes_it_healthy_by_default() -> None:
    state, change = observe(HealthThresholds(), HealthState(started=0.0), True, 1.0, "HTTP 200")
    assert state.health is Health.HEALTHY
    assert change == HealthChange(Health.UNKNOWN, Health.HEALTHY, "probe succeeded: HTTP 200")


def test_failure_threshold_consecutive_failures_make_it_unhealthy() -> None:
    t = HealthThresholds(failure_threshold=3)
    healthy, _ = observe(t, HealthState(started=0.0), True, 1.0)
    state, changes = feed(t, healthy, "ff", at=2.0)
    assert state.health is Health.HEALTHY and changes == []
    state, change = observe(t, state, False, 4.0, "connection refused")
    assert state.health is Health.UNHEALTHY
    assert change == HealthChange(
        Health.HEALTHY, Health.UNHEALTHY, "3 consecutive failures: connection refused"
    )


def test_a_success_breaks_a_streak_of_failures() -> None:
    t = HealthThresholds(failure_threshold=3)
    state, changes = feed(t, HealthState(started=0.0), "sffsffsff", at=1.0)
    assert state.health is Health.HEALTHY
    assert [c.new for c in changes] == [Health.HEALTHY]
    assert state.failures == 2


def test_success_threshold_consecutive_successes_make_it_healthy_again() -> None:
    t = HealthThresholds(failure_threshold=1, success_threshold=3)
    state, changes = feed(t, HealthState(started=0.0), "fssfss", at=1.0)
    assert state.health is Health.UNHEALTHY
    assert [c.new for c in changes] == [Health.UNHEALTHY]
    state, change = observe(t, state, True, 10.0, "exit code 0")
    assert state.health is Health.HEALTHY
    assert change == HealthChange(
        Health.UNHEALTHY, Health.HEALTHY, "3 consecutive successes: exit code 0"
    )


def test_health_is_sticky_and_each_change_is_reported_once() -> None:
    t = HealthThresholds(failure_threshold=2, success_threshold=2)
    state, changes = feed(t, HealthState(started=0.0), "ssssffffffss", at=1.0)
    assert [(c.old, c.new) for c in changes] == [
        (Health.UNKNOWN, Health.HEALTHY),
        (Health.HEALTHY, Health.UNHEALTHY),
        (Health.UNHEALTHY, Health.HEALTHY),
    ]
    assert state.successes == 2


def test_failures_keep_counting_past_the_threshold() -> None:
    t = HealthThresholds(failure_threshold=2)
    state, _ = feed(t, HealthState(started=0.0), "fffff", at=1.0)
    assert (state.health, state.failures) == (Health.UNHEALTHY, 5)


def test_the_reason_without_a_detail() -> None:
    t = HealthThresholds(failure_threshold=2)
    state, _ = observe(t, HealthState(started=0.0), False, 1.0)
    _, change = observe(t, state, False, 2.0)
    assert change is not None and change.reason == "2 consecutive failures"


# --- start period ----------------------------------------------------------------------------


def test_failures_inside_the_start_period_do_not_count() -> None:
    t = HealthThresholds(failure_threshold=2, start_period=10.0)
    state, changes = feed(t, HealthState(started=100.0), "ffffffffff", at=100.0)  # 100..109
    assert (state.health, state.failures, changes) == (Health.UNKNOWN, 0, [])
    state, change = observe(t, state, False, 110.0)  # the period is over at exactly 110
    assert (state.health, state.failures, change) == (Health.UNKNOWN, 1, None)
    state, change = observe(t, state, False, 111.0)
    assert state.health is Health.UNHEALTHY and change is not None


def test_a_success_ends_the_start_period_early() -> None:
    t = HealthThresholds(failure_threshold=3, success_threshold=1, start_period=60.0)
    state, change = observe(t, HealthState(started=0.0), True, 1.0)
    assert change is not None and change.new is Health.HEALTHY and state.start_period_over
    state, changes = feed(t, state, "fff", at=2.0)  # long before started + 60
    assert state.health is Health.UNHEALTHY
    assert [c.reason for c in changes] == ["3 consecutive failures: #2"]


def test_a_success_below_the_success_threshold_also_ends_the_start_period() -> None:
    t = HealthThresholds(failure_threshold=2, success_threshold=3, start_period=60.0)
    state, change = observe(t, HealthState(started=0.0), True, 1.0)
    assert (state.health, change, state.start_period_over) == (Health.UNKNOWN, None, True)
    state, changes = feed(t, state, "ff", at=2.0)
    assert [(c.old, c.new) for c in changes] == [(Health.UNKNOWN, Health.UNHEALTHY)]


def test_in_start_period() -> None:
    t = HealthThresholds(start_period=5.0)
    state = HealthState(started=10.0)
    assert in_start_period(t, state, 10.0) and in_start_period(t, state, 14.999)
    assert not in_start_period(t, state, 15.0)
    assert not in_start_period(HealthThresholds(), state, 10.0)
    state, _ = observe(t, state, True, 11.0)
    assert not in_start_period(t, state, 11.0)


# --- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"failure_threshold": 0}, "failure_threshold"),
        ({"failure_threshold": True}, "failure_threshold"),
        ({"failure_threshold": 1.5}, "failure_threshold"),
        ({"success_threshold": -1}, "success_threshold"),
        ({"start_period": -1.0}, "start_period"),
        ({"start_period": math.inf}, "start_period"),
        ({"start_period": math.nan}, "start_period"),
    ],
)
def test_thresholds_reject_bad_values_by_field_name(kwargs, field) -> None:
    with pytest.raises(ValueError, match=f"^{field}: "):
        HealthThresholds(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"started": math.nan}, "^started: "),
        ({"started": 0.0, "health": "healthy?"}, "^health: "),
        ({"started": 0.0, "failures": -1}, "^failures: "),
        ({"started": 0.0, "successes": 1, "failures": 1, "start_period_over": True}, "streak"),
        ({"started": 0.0, "successes": 1}, "ends the start period"),
    ],
)
def test_state_rejects_impossible_values(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        HealthState(**kwargs)


def test_observe_rejects_a_now_before_the_start() -> None:
    with pytest.raises(ValueError, match=r"^now: .*earlier than the instance's start"):
        observe(HealthThresholds(), HealthState(started=10.0), True, 9.0)
    with pytest.raises(ValueError, match=r"^now: "):
        observe(HealthThresholds(), HealthState(started=10.0), True, math.inf)


# --- properties ------------------------------------------------------------------------------

thresholds_st = st.builds(
    HealthThresholds,
    failure_threshold=st.integers(1, 5),
    success_threshold=st.integers(1, 5),
    start_period=st.sampled_from([0.0, 0.5, 3.0, 10.0]),
)
results_st = st.lists(st.tuples(st.booleans(), st.floats(0.0, 2.0, allow_nan=False)), max_size=60)


def reference(t: HealthThresholds, results: list[tuple[bool, float]]) -> list[Health]:
    """Health after each result, decided from a window over the history, not from counters."""
    history: list[tuple[bool, bool]] = []  # (ok, counted)
    health = Health.UNKNOWN
    out = []
    now = 0.0
    succeeded = False
    for ok, dt in results:
        now += dt
        counted = ok or succeeded or now >= t.start_period
        succeeded = succeeded or ok
        history.append((ok, counted))
        last_s = history[-t.success_threshold :]
        last_f = history[-t.failure_threshold :]
        if len(last_s) == t.success_threshold and all(ok for ok, _ in last_s):
            health = Health.HEALTHY
        elif len(last_f) == t.failure_threshold and all(
            not ok and counted for ok, counted in last_f
        ):
            health = Health.UNHEALTHY
        out.append(health)
    return out


@given(thresholds_st, results_st)
def test_observe_agrees_with_a_window_over_the_history(t, results) -> None:
    state = HealthState(started=0.0)
    now = 0.0
    seen = []
    for ok, dt in results:
        now += dt
        old = state.health
        state, change = observe(t, state, ok, now)
        # A change is reported exactly when the health changes, and describes it.
        if state.health is old:
            assert change is None
        else:
            assert change is not None and (change.old, change.new) == (old, state.health)
        seen.append(state.health)
    assert seen == reference(t, results)


@given(thresholds_st, results_st)
def test_never_unhealthy_inside_the_start_period_without_a_success(t, results) -> None:
    state = HealthState(started=0.0)
    now = 0.0
    for ok, dt in results:
        now += dt
        if ok:
            break
        state, _ = observe(t, state, ok, now)
        if now < t.start_period:
            assert state.health is Health.UNKNOWN
