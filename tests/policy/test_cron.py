"""Cron expressions: what is accepted, and when one next fires."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from procvisor.policy.cron import check_cron, next_fire

# Unix times from 2001 to 2100: any moment the clock may read.
moments = st.floats(min_value=1e9, max_value=4.1e9, allow_nan=False)


@given(moments)
def test_a_five_field_expression_fires_after_now_on_a_whole_minute(after: float) -> None:
    fire = next_fire("*/5 * * * *", after)
    assert after < fire <= after + 5 * 60 + 1e-3  # datetime rounds to the microsecond
    assert fire % 60 == 0  # (time zones are whole minutes from UTC)


@given(moments)
def test_a_sixth_field_counts_seconds(after: float) -> None:
    fire = next_fire("* * * * * */10", after)
    assert after < fire <= after + 10 + 1e-3 and fire % 10 == 0


def test_the_expression_is_normalized_and_a_bad_one_named() -> None:
    assert check_cron("  0   4 * * * ", field="restart_cron") == "0 4 * * *"
    for bad in ("every night", "61 * * * *", 5, None):
        with pytest.raises(ValueError, match=r"^restart_cron: .* is not a cron expression; use 5"):
            check_cron(bad, field="restart_cron")
