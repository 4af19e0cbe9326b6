"""The store's job tables: batches in one transaction, compare-and-set changes, schedules."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from procvisor.store import JobChange, NewJob, Store, StoreError


@pytest.fixture
def store(tmp_path: Path):
    with Store(tmp_path / "state.db") as s:
        yield s


def new(name: str = "job", **kw) -> NewJob:
    fields = {"tenant": "default", "priority": 2, "spec": {"command": [name]}, "submitted": 10.0}
    fields.update(kw)
    return NewJob(name, **fields)


def test_add_jobs_returns_growing_ids_and_records_the_submission(store: Store) -> None:
    first = store.add_jobs([new("a"), new("b", tenant="t2", priority=4)], ts=11.0)
    second = store.add_jobs([new("c")], ts=12.0)
    assert first == [1, 2] and second == [3]
    job = store.job(2)
    assert job is not None
    assert (job.name, job.tenant, job.priority, job.state) == ("b", "t2", 4, "queued")
    assert job.spec == {"command": ["b"]}
    assert not job.run_open
    [event] = store.job_events(2)
    assert (event.old, event.new, event.reason, event.ts) == (None, "queued", "submitted", 11.0)
    assert store.add_jobs([]) == []


def test_ids_are_never_reused_after_the_newest_job_is_pruned(store: Store) -> None:
    store.add_jobs([new("a"), new("b")], ts=1.0)
    change = JobChange(2, "queued", "cancelled", 2.0, "no")
    store.update_jobs([change])
    assert store.prune_jobs(before=3.0) == 1
    assert store.job(2) is None and store.job_events(2) == []
    assert store.add_jobs([new("c")]) == [3]


def test_a_spec_that_is_not_json_is_refused_before_anything_is_stored(store: Store) -> None:
    with pytest.raises(TypeError, match="JSON-serializable"):
        store.add_jobs([new("a"), new("b", spec={"x": object()})])
    assert store.jobs() == []


def test_update_jobs_records_every_field_and_one_event_per_state_change(store: Store) -> None:
    [job_id] = store.add_jobs([new()], ts=1.0)
    store.update_jobs(
        [
            JobChange(job_id, "queued", "scheduled", 2.0, "admitted", runs=1),
            JobChange(
                job_id,
                "scheduled",
                "running",
                3.0,
                "started",
                runs=1,
                pid=42,
                start_ticks=7.0,
                started=3.0,
            ),
            JobChange(
                job_id,
                "running",
                "running",
                3.5,
                "stopping",
                runs=1,
                pid=42,
                start_ticks=7.0,
                started=3.0,
                stop_reason="cancel",
            ),
        ]
    )
    job = store.job(job_id)
    assert job is not None
    assert (job.state, job.pid, job.start_ticks, job.stop_reason, job.reason) == (
        "running",
        42,
        7.0,
        "cancel",
        "stopping",
    )
    assert job.run_open
    assert [(e.old, e.new) for e in store.job_events(job_id)] == [
        (None, "queued"),
        ("queued", "scheduled"),
        ("scheduled", "running"),
    ]
    assert [j.id for j in store.unfinished_jobs()] == [job_id]


def test_a_change_from_a_state_the_job_is_not_in_refuses_the_whole_batch(store: Store) -> None:
    a, b = store.add_jobs([new("a"), new("b")])
    with pytest.raises(StoreError, match=r"nothing stored: job 2 is queued, not running \(another"):
        store.update_jobs(
            [
                JobChange(a, "queued", "scheduled", 1.0, "admitted"),
                JobChange(b, "running", "succeeded", 1.0, "done"),
            ]
        )
    assert store.job_states([a, b]) == {a: "queued", b: "queued"}
    assert len(store.job_events(a)) == 1


def test_unfinished_jobs_include_finished_ones_whose_run_is_still_open(store: Store) -> None:
    a, b, c = store.add_jobs([new("a"), new("b"), new("c")])
    store.update_jobs(
        [
            JobChange(a, "queued", "cancelled", 1.0, "x"),
            # cancelled while running: the stop may not have finished when the daemon died
            JobChange(b, "queued", "cancelled", 1.0, "x", pid=99, started=1.0),
        ]
    )
    assert [j.id for j in store.unfinished_jobs()] == [b, c]
    assert store.job_state_counts() == {"cancelled": 2, "queued": 1}


def test_jobs_filters_by_state_and_tenant_newest_first(store: Store) -> None:
    store.add_jobs([new("a"), new("b", tenant="x"), new("c", tenant="x")])
    store.update_jobs([JobChange(3, "queued", "cancelled", 1.0, "x")])
    assert [j.id for j in store.jobs()] == [3, 2, 1]
    assert [j.id for j in store.jobs(tenant="x")] == [3, 2]
    assert [j.id for j in store.jobs(state="queued")] == [2, 1]
    assert [j.id for j in store.jobs(state=["queued", "cancelled"], limit=2)] == [3, 2]
    assert [j.id for j in store.jobs(before=3)] == [2, 1]
    with pytest.raises(ValueError, match="limit"):
        store.jobs(limit=-1)
    assert store.oldest_queued() == 10.0


def test_tenant_usage_lists_runs_that_ended_since(store: Store) -> None:
    a, b = store.add_jobs([new("a"), new("b", tenant="t")])
    store.update_jobs(
        [
            JobChange(a, "queued", "cancelled", 1.0, "x", ended=5.0, cpu_seconds=1.5),
            JobChange(b, "queued", "cancelled", 1.0, "x", ended=9.0, cpu_seconds=2.0),
        ]
    )
    assert store.tenant_usage(since=6.0) == [("t", 2.0, 9.0)]
    assert store.tenant_usage(since=0.0) == [("default", 1.5, 5.0), ("t", 2.0, 9.0)]


def test_a_schedule_records_its_runs_and_skips(store: Store) -> None:
    sid, first = store.add_schedule("* * * * *", "skip", {"command": ["x"]}, 60.0, new("x"))
    job = store.job(first)
    assert job is not None and job.schedule == sid
    second = store.fire_schedule(sid, 120.0, new("x", schedule=sid))
    assert second == first + 1
    assert store.fire_schedule(sid, 180.0, None) is None
    [sched] = store.schedules()
    assert (sched.runs, sched.skipped, sched.last_job, sched.next_fire) == (2, 1, second, 180.0)
    assert sched.active and sched.spec == {"command": ["x"]}
    assert store.deactivate_schedule(sid) is True
    assert store.deactivate_schedule(sid) is False
    assert store.schedules() == []
    stopped = store.schedule(sid)
    assert stopped is not None and not stopped.active and stopped.next_fire is None
    assert store.schedule(999) is None


def test_the_job_tables_are_one_migration(tmp_path: Path) -> None:
    Store(tmp_path / "s.db").close()
    conn = sqlite3.connect(tmp_path / "s.db")
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    conn.close()
    assert {"jobs", "job_events", "job_schedules"} <= tables
