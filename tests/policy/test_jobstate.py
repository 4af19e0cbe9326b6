"""The job lifecycle and retry delays: procvisor.policy.jobstate."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from procvisor.policy.jobstate import (
    TERMINAL_STATES,
    TRANSITIONS,
    JobState,
    check_transition,
    parse_backoff,
    retry_delay,
)
from procvisor.policy.restart import Backoff

S = JobState


# --- Job states -------------------------------------------------------------------------------


def test_the_lifecycle_of_the_design_is_allowed() -> None:
    paths = [
        [S.QUEUED, S.SCHEDULED, S.RUNNING, S.SUCCEEDED],
        [S.QUEUED, S.SCHEDULED, S.RUNNING, S.FAILED],
        [S.QUEUED, S.SCHEDULED, S.RUNNING, S.RETRYING, S.QUEUED, S.SCHEDULED],
        [S.QUEUED, S.EXPIRED],
        [S.QUEUED, S.CANCELLED],
        [S.RUNNING, S.PREEMPTED, S.QUEUED],
        [S.RUNNING, S.PREEMPTED, S.RUNNING, S.CANCELLED],
        [S.SCHEDULED, S.QUEUED],
        [S.QUEUED, S.FAILED],
    ]
    for path in paths:
        for old, new in itertools.pairwise(path):
            assert check_transition(old, new) is new


def test_terminal_states_have_no_way_out() -> None:
    assert {S.SUCCEEDED, S.FAILED, S.EXPIRED, S.CANCELLED} == TERMINAL_STATES
    assert set(TRANSITIONS) == set(JobState)
    for state in JobState:
        assert (not TRANSITIONS[state]) == (state in TERMINAL_STATES)
        assert state not in TRANSITIONS[state]
        assert state.value == state.name.lower()


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("succeeded", "running", "cannot go from succeeded to running; succeeded is final"),
        (
            S.QUEUED,
            S.RUNNING,
            "cannot go from queued to running; from queued a job may go to scheduled, "
            "failed, expired, cancelled",
        ),
        ("running", "running", "cannot go from running to running"),
    ],
)
def test_an_illegal_move_names_both_states(old: str, new: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"^job state: {message}"):
        check_transition(old, new)


def test_an_unknown_state_lists_the_states() -> None:
    with pytest.raises(ValueError, match=r"^new: 'done' is not a job state; use one of 'queued'"):
        check_transition("queued", "done")


# --- Retries ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1s..1m", (1.0, 60.0)),
        ("250ms..30s", (0.25, 30.0)),
        (" 2s .. 2s ", (2.0, 2.0)),
        ("5s", (5.0, 5.0)),
        (3, (3.0, 3.0)),
    ],
)
def test_parse_backoff(value: str, expected: tuple[float, float]) -> None:
    assert parse_backoff(value) == expected


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("1m..1s", r"^retry\.backoff: '1m\.\.1s' has its max below its initial delay"),
        ("0s..1m", r"^retry\.backoff: '0s\.\.1m' starts at 0"),
        ("soon..1m", r"^retry\.backoff initial: 'soon' is not a duration"),
        ("1s..", r"^retry\.backoff max: '' is not a duration"),
        (None, r"^retry\.backoff: None is not a backoff; use initial\.\.max"),
    ],
)
def test_parse_backoff_names_the_field(value: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_backoff(value, field="retry.backoff")  # type: ignore[arg-type]


def test_retry_delay_doubles_up_to_the_cap() -> None:
    assert [retry_delay(n, 1.0, 60.0) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert retry_delay(3, 0.5, 10.0, multiplier=3.0) == 4.5
    assert retry_delay(10**6, 1.0, 60.0) == 60.0
    with pytest.raises(ValueError, match=r"^attempt: 0 must be 1 or more"):
        retry_delay(0, 1.0, 60.0)
    with pytest.raises(ValueError, match=r"^backoff\.max: 0\.5 is below backoff\.initial"):
        retry_delay(1, 1.0, 0.5)


@given(
    st.integers(min_value=1, max_value=200),
    st.floats(min_value=0.001, max_value=100),
    st.floats(min_value=1, max_value=1000),
    st.floats(min_value=1, max_value=4),
)
def test_retry_delay_is_restart_backoff_without_jitter(
    attempt: int, initial: float, factor: float, multiplier: float
) -> None:
    longest = initial * factor
    delay = retry_delay(attempt, initial, longest, multiplier)
    assert delay == Backoff(initial, longest, multiplier, jitter=0.0).delay(attempt, 0.0)
    assert initial <= delay <= longest
    assert delay <= retry_delay(attempt + 1, initial, longest, multiplier)
