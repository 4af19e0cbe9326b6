"""Sizes and durations: every accepted form, every refusal naming the field."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from procvisor.policy.units import format_duration, format_size, parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("512", 512),
        ("512B", 512),
        ("64k", 64 * 1024),
        ("512M", 512 * 1024**2),
        ("512MiB", 512 * 1024**2),
        ("1.5G", int(1.5 * 1024**3)),
        ("2 GB", 2 * 1024**3),
        ("1T", 1024**4),
    ],
)
def test_size_strings(text, expected) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("250ms", 0.25),
        ("10s", 10.0),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
        ("1m30s", 90.0),
        ("1.5", 1.5),
        ("500us", 0.0005),
        (" 3s ", 3.0),
    ],
)
def test_duration_strings(text, expected) -> None:
    assert parse_duration(text) == pytest.approx(expected)


@pytest.mark.parametrize("bad", ["", "M", "12X", "-1M", "1.2.3G", "inf", True, float("nan"), -5])
def test_bad_sizes_name_the_field_and_the_forms(bad) -> None:
    with pytest.raises(ValueError, match=r"^memory: .*'512M'"):
        parse_size(bad, field="memory")


@pytest.mark.parametrize("bad", ["", "s", "10x", "-1s", "1s2", "1 s x", True, float("inf"), -1])
def test_bad_durations_name_the_field_and_the_forms(bad) -> None:
    with pytest.raises(ValueError, match=r"^timeout: .*'250ms'"):
        parse_duration(bad, field="timeout")


@given(st.integers(min_value=0, max_value=2**50))
def test_a_number_of_bytes_is_itself(n) -> None:
    assert parse_size(n) == n and parse_size(str(n)) == n


@given(st.integers(min_value=0, max_value=10**6), st.sampled_from(["K", "M", "G"]))
def test_units_are_powers_of_1024(n, unit) -> None:
    assert parse_size(f"{n}{unit}") == n * {"K": 1024, "M": 1024**2, "G": 1024**3}[unit]


@given(st.integers(min_value=0, max_value=10**5), st.integers(min_value=0, max_value=59))
def test_compound_durations_add_up(minutes, seconds) -> None:
    assert parse_duration(f"{minutes}m{seconds}s") == minutes * 60 + seconds


@given(st.floats(min_value=0.001, max_value=10**6))
def test_format_duration_reads_back_close(seconds) -> None:
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds, rel=0.02, abs=0.6)


def test_format_size() -> None:
    assert [format_size(n) for n in (0, 1536, 512 * 1024**2, 3 * 1024**4)] == [
        "0B",
        "1.5K",
        "512M",
        "3T",
    ]
