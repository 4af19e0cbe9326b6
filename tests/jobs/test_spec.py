"""JobSpec and JobsConfig: user forms are normalised, bad input names the field."""

from __future__ import annotations

import datetime as dt
import time

import pytest

from procvisor.jobs import JobsConfig, JobSpec, parse_when
from procvisor.policy.admission import Quota, Requests
from procvisor.policy.taskqueue import Priority


def test_user_forms_are_normalised() -> None:
    before = time.time()
    spec = JobSpec(
        "python3 -c 'print(1)'",  # type: ignore[arg-type]
        priority="high",  # type: ignore[arg-type]
        requests="cpu=2,memory=1G,gpu=1",  # type: ignore[arg-type]
        timeout="10m",  # type: ignore[arg-type]
        retries=3,
        backoff="1s..1m",  # type: ignore[arg-type]
        deadline="30m",  # type: ignore[arg-type]
        env={"A": "1"},
    )
    assert spec.command == ("python3", "-c", "print(1)")
    assert spec.name == "python3"
    assert spec.priority is Priority.HIGH
    assert spec.requests == Requests(cpu=2.0, memory=1024**3, resources={"gpu": 1.0})
    assert spec.timeout == 600.0
    assert spec.backoff == (1.0, 60.0)
    assert spec.deadline is not None and before + 1800 <= spec.deadline <= time.time() + 1800


def test_a_spec_survives_its_dict_form() -> None:
    spec = JobSpec(
        ("sleep", "1"),
        name="nap",
        tenant="team-a",
        priority=Priority.LOW,
        requests=Requests(cpu=0.5, memory=10, resources={"gpu": 1}),
        timeout=5.0,
        retries=2,
        backoff=(0.5, 4.0),
        not_before=2_000_000_000.0,
        depends_on=(3, 4),
        env={"X": "y"},
        cwd="/tmp",
        preemptible=True,
        requeue_on_restart=False,
    )
    assert JobSpec.from_dict(spec.to_dict()) == spec
    assert JobSpec(("true",)).to_dict() == {"command": ["true"], "name": "true"}


def test_times_are_absolute_or_from_now() -> None:
    assert parse_when(1_700_000_000, field="at") == 1_700_000_000.0
    local = dt.datetime(2030, 1, 31, 18, 0)
    assert parse_when("2030-01-31T18:00", field="at") == local.timestamp()
    assert parse_when("2030-01-31T18:00+00:00", field="at") == 1896112800.0
    assert parse_when("90s", field="at", now=100.0) == 190.0
    assert parse_when(local, field="at") == local.timestamp()
    assert parse_when(None, field="at") is None
    with pytest.raises(ValueError, match=r"^deadline: 'soonish' is neither a time"):
        parse_when("soonish", field="deadline")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"command": ""}, r"^command: empty"),
        ({"command": "echo 'unclosed"}, r"^command: .* cannot be split"),
        ({"command": ["a", 1]}, r"^command\[1\]: 1 must be a string"),
        ({"timeout": 0}, r"^timeout: 0 must be more than 0"),
        ({"timeout": "-5s"}, r"^timeout: '-5s'"),
        ({"retries": -1}, r"^retries: -1 must be a whole number"),
        ({"priority": "urgent"}, r"^priority: 'urgent' is not a priority"),
        ({"requests": "cpu=0"}, r"^requests\.cpu: '0' must be a number more than 0"),
        ({"backoff": "1m..1s"}, r"^backoff: '1m\.\.1s' has its max below its initial"),
        ({"cron": "every day"}, r"^cron: 'every day' is not a cron expression; use 5 fields"),
        ({"cron": "* * * * *", "depends_on": [1]}, r"^depends_on: a cron job cannot have one"),
        ({"overlap": "queue"}, r"^overlap: 'queue' must be one of 'skip', 'allow'"),
        ({"depends_on": [0]}, r"^depends_on: 0 is not a job id"),
        ({"tenant": "a b"}, r"^tenant: 'a b' must be 1 to 128"),
        ({"env": {"A=B": "x"}}, r"^env: 'A=B' is not a variable name"),
        ({"deadline": "whenever"}, r"^deadline: 'whenever' is neither a time"),
        ({"preemptible": "yes"}, r"^preemptible: 'yes' must be true or false"),
    ],
)
def test_a_bad_field_is_named(fields: dict, message: str) -> None:
    fields.setdefault("command", "true")
    with pytest.raises(ValueError, match=message):
        JobSpec.from_dict(fields)


def test_from_dict_names_unknown_fields() -> None:
    with pytest.raises(ValueError, match=r"^spec: unknown field 'timout'; the fields are"):
        JobSpec.from_dict({"command": "true", "timout": 5})
    with pytest.raises(ValueError, match=r"^command: missing"):
        JobSpec.from_dict({})


def test_config_checks_its_settings() -> None:
    assert JobsConfig().discipline.value == "priority"
    with pytest.raises(ValueError, match=r"^policy: 'lifo' is not a queue discipline"):
        JobsConfig(policy="lifo")
    with pytest.raises(ValueError, match=r"^preempt: 'suspend' needs policy = 'priority'"):
        JobsConfig(policy="fifo", preempt="suspend")
    with pytest.raises(ValueError, match=r"^preempt: 'always' must be one of"):
        JobsConfig(preempt="always")
    with pytest.raises(ValueError, match=r"^max_running: 0"):
        JobsConfig(max_running=0)


def test_an_unknown_tenant_gets_the_default_tenants_quota() -> None:
    default = Quota(max_running=2)
    config = JobsConfig(quotas={"default": default, "big": Quota(max_running=10)})
    assert config.quota("big") == Quota(max_running=10)
    assert config.quota("someone") is default
    assert JobsConfig().quota("someone") is None
    capacity = JobsConfig(max_running=3).resolve_capacity()
    assert capacity.max_running == 3 and capacity.cpu >= 1 and capacity.memory
