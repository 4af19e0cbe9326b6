"""Restart policy: backoff, which exits restart, the restart budget and the breaker's cooldown."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from procvisor.policy import (
    Backoff,
    BreakerState,
    RestartAction,
    RestartMode,
    RestartPolicy,
    RestartState,
    decide_restart,
    on_cooldown_elapsed,
)

NO_JITTER = Backoff(initial=0.5, max=30.0, multiplier=2.0, jitter=0.0)


def crash(
    policy: RestartPolicy, state: RestartState, now: float, *, uptime: float = 0.25, rand=0.5
):
    """An exit with code 1 after ``uptime`` seconds, not asked for by the user."""
    return decide_restart(
        policy,
        state,
        exit_code=1,
        signal=None,
        uptime=uptime,
        stopped_by_user=False,
        now=now,
        rand=rand,
    )


# --- Backoff ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "expected"),
    [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (6, 16.0), (7, 30.0), (1000, 30.0)],
)
def test_backoff_doubles_up_to_the_cap(attempt, expected) -> None:
    assert NO_JITTER.delay(attempt, 0.5) == expected


def test_jitter_spreads_plus_minus_a_fraction_around_the_base() -> None:
    backoff = Backoff(initial=1.0, max=30.0, multiplier=2.0, jitter=0.1)
    assert backoff.delay(1, 0.0) == pytest.approx(0.9)
    assert backoff.delay(1, 0.5) == pytest.approx(1.0)
    assert backoff.delay(1, 0.999999) == pytest.approx(1.1, abs=1e-6)


def test_jitter_window_is_trimmed_at_the_cap_not_clamped() -> None:
    backoff = Backoff(initial=1.0, max=30.0, multiplier=2.0, jitter=0.1)
    # attempt 10: base = min(512, 30) = 30, window [27, min(33, 30)] = [27, 30].
    assert backoff.delay(10, 0.0) == pytest.approx(27.0)
    assert backoff.delay(10, 0.5) == pytest.approx(28.5)
    assert backoff.delay(10, 0.999999) <= 30.0
    # attempt 5: base 16, window [14.4, 17.6]: far from the cap, untouched.
    assert backoff.delay(5, 0.5) == pytest.approx(16.0)


def test_huge_attempts_do_not_overflow() -> None:
    assert NO_JITTER.delay(10**30, 0.5) == 30.0
    assert Backoff(initial=2.0, max=5.0, multiplier=1.0, jitter=0.0).delay(10**30, 0.3) == 2.0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"initial": 0.0}, "backoff.initial"),
        ({"initial": -1.0}, "backoff.initial"),
        ({"initial": 40.0}, "backoff.max"),
        ({"multiplier": 0.5}, "backoff.multiplier"),
        ({"jitter": 1.0}, "backoff.jitter"),
        ({"jitter": -0.1}, "backoff.jitter"),
        ({"max": float("inf")}, "backoff.max"),
        ({"multiplier": float("nan")}, "backoff.multiplier"),
    ],
)
def test_bad_backoff_settings_name_the_field(kwargs, field) -> None:
    with pytest.raises(ValueError, match=rf"^{field}: "):
        Backoff(**kwargs)


@pytest.mark.parametrize(("attempt", "rand"), [(0, 0.5), (-1, 0.5), (1, 1.0), (1, -0.1)])
def test_delay_refuses_bad_arguments(attempt, rand) -> None:
    with pytest.raises(ValueError, match=r"^(attempt|rand): "):
        NO_JITTER.delay(attempt, rand)


backoffs = st.builds(
    lambda initial, spread, multiplier, jitter: Backoff(
        initial=initial, max=initial * spread, multiplier=multiplier, jitter=jitter
    ),
    st.floats(min_value=1e-6, max_value=1e4),
    st.floats(min_value=1.0, max_value=1e6),
    st.floats(min_value=1.0, max_value=100.0),
    st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
)
rands = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)
attempts = st.integers(min_value=1, max_value=10**6)


@given(backoffs, attempts, rands)
def test_delay_stays_between_its_floor_and_its_cap(backoff: Backoff, attempt, rand) -> None:
    delay = backoff.delay(attempt, rand)
    assert 0 < backoff.initial * (1 - backoff.jitter) <= delay <= backoff.max


@given(backoffs, attempts, rands)
def test_delays_never_decrease_without_jitter(backoff: Backoff, attempt, rand) -> None:
    plain = Backoff(backoff.initial, backoff.max, backoff.multiplier, jitter=0.0)
    assert plain.delay(attempt, rand) <= plain.delay(attempt + 1, rand)


@given(backoffs, attempts, rands)
def test_delays_never_decrease_for_a_fixed_rand(backoff: Backoff, attempt, rand) -> None:
    # Holds exactly in real arithmetic; allow the rounding of a few float operations.
    assert backoff.delay(attempt, rand) <= backoff.delay(attempt + 1, rand) * (1 + 1e-12)


# --- Which exits restart ---------------------------------------------------------------------

EXITS = {
    # name: (exit_code, signal, uptime, stopped_by_user, counts as failure)
    "clean": (0, None, 10.0, False, False),
    "bad-code": (1, None, 10.0, False, True),
    "signal": (None, "SIGKILL", 10.0, False, True),
    "subprocess-signal": (-9, "SIGKILL", 10.0, False, True),
    "unknown": (None, None, 10.0, False, True),
    "clean-too-soon": (0, None, 0.5, False, True),
    "user-stop": (None, "SIGTERM", 10.0, True, False),
    "user-stop-clean": (0, None, 0.5, True, False),
}
R, S = RestartAction.RESTART, RestartAction.STAY_STOPPED
EXPECTED = {
    RestartMode.ALWAYS: {"clean": R, "user-stop": S, "user-stop-clean": S},
    RestartMode.UNLESS_STOPPED: {"clean": R, "user-stop": S, "user-stop-clean": S},
    RestartMode.ON_FAILURE: {"clean": S, "user-stop": S, "user-stop-clean": S},
    RestartMode.NEVER: {},
}


def expected_action(mode: RestartMode, kind: str) -> RestartAction:
    if mode is RestartMode.NEVER:
        return S
    return EXPECTED[mode].get(kind, R)


@pytest.mark.parametrize("mode", list(RestartMode))
@pytest.mark.parametrize("kind", list(EXITS))
def test_each_mode_and_exit_kind(mode: RestartMode, kind: str) -> None:
    exit_code, signal, uptime, by_user, failure = EXITS[kind]
    policy = RestartPolicy(restart=mode, backoff=NO_JITTER)
    decision, _ = decide_restart(
        policy,
        RestartState(),
        exit_code=exit_code,
        signal=signal,
        uptime=uptime,
        stopped_by_user=by_user,
        now=100.0,
        rand=0.5,
    )
    assert decision.action is expected_action(mode, kind)
    assert decision.failure is failure
    # Only a failed start (sooner than min_uptime) waits; a run that lasted restarts at once.
    backoff = decision.action is R and uptime < policy.min_uptime
    assert decision.delay == (0.5 if backoff else 0.0)
    assert decision.retry_at is None


def test_success_exit_codes_decide_what_is_clean() -> None:
    policy = RestartPolicy(success_exit_codes=frozenset({0, 3}))
    for code, action in [(3, S), (0, S), (2, R)]:
        decision, _ = decide_restart(
            policy,
            RestartState(),
            exit_code=code,
            signal=None,
            uptime=5.0,
            stopped_by_user=False,
            now=10.0,
            rand=0.5,
        )
        assert decision.action is action, code


def test_uptime_equal_to_min_uptime_is_a_real_start() -> None:
    policy = RestartPolicy(min_uptime=1.0)
    assert policy.failure_reason(exit_code=0, signal=None, uptime=1.0) == ""
    assert policy.failure_reason(exit_code=0, signal=None, uptime=0.9) == (
        "exit code 0 after 900ms, sooner than min_uptime 1s"
    )


def test_reasons_say_what_happened() -> None:
    policy = RestartPolicy(backoff=NO_JITTER)
    decision, _ = crash(policy, RestartState(), 10.0, uptime=5.0)
    assert decision.reason == "exit code 1; restart now"
    decision, _ = decide_restart(
        policy,
        RestartState(),
        exit_code=0,
        signal=None,
        uptime=5.0,
        stopped_by_user=False,
        now=10.0,
        rand=0.5,
    )
    assert decision.reason == "exit code 0; restart = on-failure"


@pytest.mark.parametrize(
    ("exit_code", "signal", "reason"),
    [
        (None, "SIGKILL", "killed by SIGKILL"),
        (-9, "SIGKILL", "killed by SIGKILL"),
        (-15, None, "killed by signal 15"),
        (None, None, "exit status unknown (reaped elsewhere)"),
        (2, None, "exit code 2"),
        (0, None, ""),
    ],
)
def test_failure_reasons_name_the_exit(exit_code, signal, reason) -> None:
    policy = RestartPolicy()
    assert policy.failure_reason(exit_code=exit_code, signal=signal, uptime=5.0) == reason


def test_a_user_stop_leaves_the_state_untouched() -> None:
    state = RestartState(failures=(1.0, 2.0), failed_starts=2, breaker=BreakerState.HALF_OPEN)
    decision, new = decide_restart(
        RestartPolicy(restart=RestartMode.ALWAYS),
        state,
        exit_code=None,
        signal="SIGTERM",
        uptime=0.1,
        stopped_by_user=True,
        now=3.0,
        rand=0.5,
    )
    assert decision.action is S
    assert new is state


# --- Budget, backoff and the breaker, with exact times ----------------------------------------


def test_crash_loop_backs_off_then_goes_fatal_then_half_open() -> None:
    policy = RestartPolicy(backoff=NO_JITTER)  # max_restarts 5 in 60s, cooldown 300s
    state = RestartState()
    # Each run lasts 0.25s, then waits the decided delay before starting again.
    delays = []
    now = 0.25
    for _ in range(5):
        decision, state = crash(policy, state, now)
        assert decision.action is R
        delays.append(decision.delay)
        now += decision.delay + 0.25
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0]
    assert now == 17.0
    assert state.failures == (0.25, 1.0, 2.25, 4.5, 8.75)

    decision, state = crash(policy, state, now)
    assert decision.action is RestartAction.FATAL
    assert decision.retry_at == 317.0
    assert decision.reason == (
        "exit code 1 after 250ms, sooner than min_uptime 1s; 6 failures within 1m exceed "
        "max_restarts = 5; fatal, one more try in 5m"
    )
    assert state.breaker is BreakerState.OPEN
    assert state.open_until == 317.0

    # The timer fired a little early: nothing changes yet.
    assert on_cooldown_elapsed(state, 316.9) is state
    state = on_cooldown_elapsed(state, 317.0)
    assert state.breaker is BreakerState.HALF_OPEN
    assert state.open_until is None

    # The trial start fails at once: fatal again for another cooldown.
    decision, state = crash(policy, state, 317.25)
    assert decision.action is RestartAction.FATAL
    assert decision.retry_at == 617.25
    assert "half-open trial start failed" in decision.reason
    assert state.breaker is BreakerState.OPEN

    # The next trial runs 5s (more than min_uptime) and then exits with code 1: the breaker
    # closes with a clean slate, and that exit is the first failure of the new slate.
    state = on_cooldown_elapsed(state, 617.25)
    decision, state = crash(policy, state, 622.25, uptime=5.0)
    assert decision.action is R
    assert decision.delay == 0.0  # it ran 5s: restart at once
    assert state == RestartState(failures=(622.25,), failed_starts=0)


def test_half_open_success_with_a_clean_exit_closes_and_stays_stopped() -> None:
    policy = RestartPolicy()
    state = RestartState(failures=(1.0, 2.0), failed_starts=6, breaker=BreakerState.HALF_OPEN)
    decision, state = decide_restart(
        policy,
        state,
        exit_code=0,
        signal=None,
        uptime=30.0,
        stopped_by_user=False,
        now=400.0,
        rand=0.5,
    )
    assert decision.action is S
    assert state == RestartState()


def test_a_long_run_restarts_at_once_and_resets_the_backoff_but_not_the_budget() -> None:
    policy = RestartPolicy(backoff=NO_JITTER, max_restarts=3)
    decision, state = crash(policy, RestartState(), 1.0)
    assert decision.delay == 0.5
    decision, state = crash(policy, state, 2.0)
    assert decision.delay == 1.0
    assert state.failed_starts == 2
    decision, state = crash(policy, state, 20.0, uptime=15.0)  # ran 15s, then failed
    assert (decision.action, decision.delay, state.failed_starts) == (R, 0.0, 0)
    decision, state = crash(policy, state, 21.0)  # fourth failure in 60s > 3
    assert decision.action is RestartAction.FATAL
    assert decision.retry_at == 321.0


@pytest.mark.parametrize(("second", "action"), [(9.5, RestartAction.FATAL), (10.0, R)])
def test_a_failure_leaves_the_window_after_exactly_restart_window(second, action) -> None:
    policy = RestartPolicy(backoff=NO_JITTER, max_restarts=1, restart_window=10.0)
    _, state = crash(policy, RestartState(), 0.0)
    decision, state = crash(policy, state, second)
    assert decision.action is action
    assert state.failures == ((0.0, second) if action is RestartAction.FATAL else (second,))


def test_max_restarts_zero_makes_the_first_failure_fatal() -> None:
    decision, _ = crash(RestartPolicy(max_restarts=0, cooldown=60.0), RestartState(), 5.0)
    assert decision.action is RestartAction.FATAL
    assert decision.retry_at == 65.0


def test_a_restart_storm_sees_growing_delays_up_to_max_then_goes_fatal() -> None:
    """A service that exits at once forever never restarts in a tight loop."""
    policy = RestartPolicy(max_restarts=20, restart_window=3600.0)  # default backoff, jitter 0.1
    rng = random.Random(1234)
    state = RestartState()
    now = 0.0
    delays = []
    while True:
        decision, state = decide_restart(
            policy,
            state,
            exit_code=1,
            signal=None,
            uptime=0.0,
            stopped_by_user=False,
            now=now,
            rand=rng.random(),
        )
        if decision.action is not R:
            break
        delays.append(decision.delay)
        now += decision.delay
    assert decision.action is RestartAction.FATAL
    assert len(delays) == 20
    assert all(0.45 <= d <= 30.0 for d in delays)
    assert delays[:5] == sorted(delays[:5])  # doubling outruns ±10% jitter
    assert all(d >= 27.0 for d in delays[7:])  # at the cap: within [max*(1-jitter), max]


# --- Properties of the budget -----------------------------------------------------------------

budgets = st.integers(min_value=0, max_value=20)
windows = st.floats(min_value=0.01, max_value=1e5)


@given(budgets, windows, st.data())
def test_crash_loop_goes_fatal_after_exactly_max_restarts_plus_one_failures(
    max_restarts: int, window: float, data: st.DataObject
) -> None:
    times = sorted(
        data.draw(
            st.lists(
                st.floats(min_value=0.0, max_value=window, exclude_max=True),
                min_size=max_restarts + 1,
                max_size=max_restarts + 1,
            )
        )
    )
    policy = RestartPolicy(max_restarts=max_restarts, restart_window=window)
    state = RestartState()
    for i, now in enumerate(times, start=1):
        decision, state = crash(policy, state, now, rand=data.draw(rands))
        if i <= max_restarts:
            assert decision.action is R
            assert decision.delay > 0
        else:
            assert decision.action is RestartAction.FATAL
            assert decision.retry_at == now + policy.cooldown


@given(
    st.integers(min_value=1, max_value=20),
    windows,
    st.lists(st.floats(min_value=1e-3, max_value=3.0), min_size=1, max_size=60),
)
def test_failures_spread_wider_than_the_window_never_go_fatal(
    max_restarts: int, window: float, extras: list[float]
) -> None:
    # Gaps of at least window / max_restarts: any max_restarts + 1 failures span >= window.
    policy = RestartPolicy(max_restarts=max_restarts, restart_window=window)
    state = RestartState()
    now = 0.0
    for extra in extras:
        decision, state = crash(policy, state, now)
        assert decision.action is R
        assert len(state.failures) <= max_restarts
        now += window / max_restarts * (1 + extra)


# --- Misuse -----------------------------------------------------------------------------------


def test_deciding_while_the_breaker_is_open_is_refused() -> None:
    state = RestartState(breaker=BreakerState.OPEN, open_until=50.0)
    with pytest.raises(ValueError, match=r"breaker is open .*on_cooldown_elapsed"):
        crash(RestartPolicy(), state, 10.0)


def test_cooldown_only_elapses_for_an_open_breaker() -> None:
    with pytest.raises(ValueError, match=r"breaker is closed, not open"):
        on_cooldown_elapsed(RestartState(), 10.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"now": 0.5}, r"^now: 0.5 is earlier than the last failure"),
        ({"now": float("nan")}, r"^now: "),
        ({"rand": 1.0}, r"^rand: "),
        ({"uptime": -1.0}, r"^uptime: "),
        ({"exit_code": 1, "signal": "SIGKILL"}, r"pass one of them"),
    ],
)
def test_decide_refuses_bad_arguments(kwargs, match) -> None:
    args = {
        "exit_code": 1,
        "signal": None,
        "uptime": 0.1,
        "stopped_by_user": False,
        "now": 5.0,
        "rand": 0.5,
    } | kwargs
    with pytest.raises(ValueError, match=match):
        decide_restart(RestartPolicy(), RestartState(failures=(1.0,)), **args)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"restart": "sometimes"}, "restart"),
        ({"success_exit_codes": frozenset({256})}, "success_exit_codes"),
        ({"min_uptime": -1.0}, "min_uptime"),
        ({"restart_window": 0.0}, "restart_window"),
        ({"cooldown": float("inf")}, "cooldown"),
        ({"max_restarts": -1}, "max_restarts"),
    ],
)
def test_bad_policy_settings_name_the_field(kwargs, field) -> None:
    with pytest.raises(ValueError, match=rf"^{field}: "):
        RestartPolicy(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"failed_starts": -1},
        {"failures": (2.0, 1.0)},
        {"breaker": BreakerState.OPEN},
        {"open_until": 5.0},
    ],
)
def test_inconsistent_states_are_refused(kwargs) -> None:
    with pytest.raises(ValueError):
        RestartState(**kwargs)
