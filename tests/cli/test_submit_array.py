"""`procvisor submit --array`: which indexes a spec names, and the specs made of them."""

from __future__ import annotations

import pytest

from procvisor.cli._jobs import ARRAY_ENV, MAX_ARRAY, _array_specs, array_indexes
from procvisor.cli._run import UsageLine


@pytest.mark.parametrize(
    ("text", "indexes"),
    [
        ("3", [3]),
        ("1-4", [1, 2, 3, 4]),
        ("0,4,8-10", [0, 4, 8, 9, 10]),
        ("0-20:5", [0, 5, 10, 15, 20]),
        ("1-6:4, 9", [1, 5, 9]),
    ],
)
def test_indexes_are_read_as_slurm_reads_them(text: str, indexes: list[int]) -> None:
    assert array_indexes(text) == indexes


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is not a list of indexes like 1-10"),
        ("1-", "is not a list of indexes"),
        ("a-b", "is not a list of indexes"),
        ("-3", "is not a list of indexes"),
        ("0-9:0", "is not a list of indexes"),
        ("5-2", "'5-2' ends before it starts"),
        ("1-3,2", "names an index twice"),
        (f"1-{MAX_ARRAY + 1}", f"names more than {MAX_ARRAY:,} jobs"),
    ],
)
def test_a_bad_array_says_what_is_accepted(text: str, message: str) -> None:
    with pytest.raises(UsageLine, match=r"^--array: ") as info:
        array_indexes(text)
    assert message in str(info.value)


def test_each_job_of_an_array_is_named_and_told_its_index() -> None:
    spec = {"command": ["./render.sh", "scene"], "env": {"MODE": "fast"}}
    specs = _array_specs(spec, [0, 7])
    assert [s["name"] for s in specs] == ["render.sh[0]", "render.sh[7]"]
    assert [s["env"] for s in specs] == [
        {"MODE": "fast", ARRAY_ENV: "0"},
        {"MODE": "fast", ARRAY_ENV: "7"},
    ]
    assert spec == {"command": ["./render.sh", "scene"], "env": {"MODE": "fast"}}
    assert _array_specs({**spec, "name": "frames"}, [2])[0]["name"] == "frames[2]"
