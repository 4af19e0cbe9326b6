"""The SQLite store: events, instance records, durability and refusal of unusable files."""

from __future__ import annotations

import os
import pickle
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from procvisor.store import SCHEMA_VERSION, Event, InstanceRecord, Store, StoreError


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


@pytest.fixture
def store(db: Path):
    with Store(db) as s:
        yield s


def ids(events: list[Event]) -> list[int]:
    return [e.id for e in events]


# events


def test_an_event_reads_back_as_written(store: Store) -> None:
    data = {"code": 1, "signal": None, "argv": ["a", "b"], "nested": {"x": 1.5}}
    event_id = store.add_event("web", 2, "exited", "exited with code 1", data, ts=1234.5)
    [event] = store.events()
    assert event == Event(event_id, 1234.5, "web", 2, "exited", "exited with code 1", data)
    assert event.to_dict() == {
        "id": event_id,
        "ts": 1234.5,
        "service": "web",
        "instance": 2,
        "kind": "exited",
        "message": "exited with code 1",
        "data": data,
    }


def test_an_event_defaults_to_wall_clock_time_and_empty_data(store: Store) -> None:
    before = time.time()
    store.add_event("web", None, "started", "service started")
    after = time.time()
    [event] = store.events()
    assert before <= event.ts <= after
    assert event.instance is None
    assert event.data == {}


def test_data_reads_back_as_json_does(store: Store) -> None:
    store.add_event("web", 0, "k", "m", {"t": (1, 2)})
    assert store.events()[0].data == {"t": [1, 2]}


def test_data_that_is_not_json_is_refused_and_nothing_is_stored(store: Store) -> None:
    with pytest.raises(TypeError, match="JSON-serializable"):
        store.add_event("web", 0, "k", "m", {"x": object()})
    assert store.events() == []


def test_ids_grow(store: Store) -> None:
    first = store.add_event("a", 0, "k", "1")
    second = store.add_event("b", 0, "k", "2")
    assert second > first


def test_events_are_the_newest_limit_returned_oldest_first(store: Store) -> None:
    all_ids = [store.add_event("web", 0, "k", str(i)) for i in range(10)]
    assert ids(store.events(limit=3)) == all_ids[-3:]
    assert [e.message for e in store.events(limit=3)] == ["7", "8", "9"]
    assert ids(store.events(limit=100)) == all_ids
    assert store.events(limit=0) == []


def test_after_keeps_only_later_events(store: Store) -> None:
    all_ids = [store.add_event("web", 0, "k", str(i)) for i in range(10)]
    assert ids(store.events(after=all_ids[6])) == all_ids[7:]
    assert ids(store.events(after=all_ids[2], limit=2)) == all_ids[-2:]
    assert store.events(after=all_ids[-1]) == []


def test_events_filter_by_service(store: Store) -> None:
    web = []
    for i in range(6):
        web.append(store.add_event("web", i, "k", "w"))
        store.add_event("db", i, "k", "d")
    assert ids(store.events("web")) == web
    assert {e.service for e in store.events("db")} == {"db"}
    assert ids(store.events("web", limit=2, after=web[1])) == web[-2:]
    assert ids(store.events("web", after=web[3])) == web[4:]
    assert store.events("nope") == []
    assert len(store.events()) == 12


def test_a_negative_limit_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="limit"):
        store.events(limit=-1)


def test_old_events_are_pruned_and_ids_are_not_reused(db: Path) -> None:
    with Store(db, max_events=100) as store:
        all_ids = [store.add_event("web", 0, "k", str(i)) for i in range(1000)]
        kept = ids(store.events(limit=10_000))
        # Pruning runs in batches of max_events // 10, so at most 10 extra events remain.
        assert 100 <= len(kept) <= 110
        assert kept == all_ids[-len(kept) :]
        later = store.add_event("web", 0, "k", "later")
        assert later > all_ids[-1]


def test_reopening_with_a_smaller_max_events_prunes_at_once(db: Path) -> None:
    with Store(db) as store:
        all_ids = [store.add_event("web", 0, "k", str(i)) for i in range(50)]
    with Store(db, max_events=5) as store:
        assert ids(store.events(limit=100)) == all_ids[-5:]


def test_max_events_must_be_positive(db: Path) -> None:
    with pytest.raises(ValueError, match="max_events"):
        Store(db, max_events=0)


# instances


def test_record_instance_upserts_by_service_and_instance(store: Store) -> None:
    store.record_instance(InstanceRecord("web", 1, 100, 10.0, 1000.0))
    store.record_instance(InstanceRecord("web", 0, 101, 11.0, 1001.0))
    store.record_instance(InstanceRecord("api", 0, 102, 12.0, 1002.0))
    store.record_instance(InstanceRecord("web", 1, 200, 20.0, 2000.0))
    assert store.instances() == [
        InstanceRecord("api", 0, 102, 12.0, 1002.0),
        InstanceRecord("web", 0, 101, 11.0, 1001.0),
        InstanceRecord("web", 1, 200, 20.0, 2000.0),
    ]


def test_forget_instance_deletes_only_that_instance(store: Store) -> None:
    store.record_instance(InstanceRecord("web", 0, 100, 10.0, 1000.0))
    store.record_instance(InstanceRecord("web", 1, 101, 11.0, 1001.0))
    store.forget_instance("web", 0)
    store.forget_instance("web", 7)  # unknown: nothing to do
    assert store.instances() == [InstanceRecord("web", 1, 101, 11.0, 1001.0)]


# the file


def test_the_file_is_created_private(db: Path) -> None:
    old = os.umask(0)
    try:
        with Store(db) as store:
            store.add_event("web", 0, "k", "m")
            assert stat.S_IMODE(db.stat().st_mode) == 0o600
            # SQLite gives its WAL and shared-memory files the database file's mode.
            for extra in ("-wal", "-shm"):
                assert stat.S_IMODE(Path(f"{db}{extra}").stat().st_mode) == 0o600
    finally:
        os.umask(old)


def test_the_store_is_in_wal_mode_with_the_current_schema(store: Store, db: Path) -> None:
    store.add_event("web", 0, "k", "m")
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        conn.close()


def test_an_empty_existing_file_becomes_a_store(db: Path) -> None:
    db.touch()
    with Store(db) as store:
        store.add_event("web", 0, "k", "m")
        assert len(store.events()) == 1


def test_reopening_keeps_everything(db: Path) -> None:
    with Store(db) as store:
        event_id = store.add_event("web", 0, "started", "up", {"pid": 5}, ts=100.0)
        store.record_instance(InstanceRecord("web", 0, 5, 1.5, 2.5))
    with Store(db) as store:
        assert store.events() == [Event(event_id, 100.0, "web", 0, "started", "up", {"pid": 5})]
        assert store.instances() == [InstanceRecord("web", 0, 5, 1.5, 2.5)]
        assert store.add_event("web", 0, "k", "m") > event_id


CHILD = """
import os, sys
from procvisor.store import InstanceRecord, Store
store = Store(sys.argv[1])
store.record_instance(InstanceRecord("web", 0, 42, 1.0, 2.0))
store.add_event("web", 0, "started", "written just before SIGKILL", {"n": 1})
print("ok", flush=True)
os.kill(os.getpid(), 9)
"""


def test_a_write_survives_the_writer_being_killed_right_after(db: Path) -> None:
    with Store(db) as store:
        store.add_event("web", 0, "before", "from the parent")
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(db)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    assert out == b"ok\n", err
    assert proc.returncode == -9
    with Store(db) as store:
        assert [e.message for e in store.events()] == [
            "from the parent",
            "written just before SIGKILL",
        ]
        assert store.instances() == [InstanceRecord("web", 0, 42, 1.0, 2.0)]


def test_a_file_that_is_not_a_database_is_refused_clearly(db: Path) -> None:
    db.write_bytes(b"this is a log file, not a database\n" * 200)
    with pytest.raises(StoreError, match="not a procvisor store") as info:
        Store(db)
    assert info.value.path == str(db)
    assert str(db) in str(info.value)
    assert "move the file away" in str(info.value)
    assert not isinstance(info.value.__cause__, StoreError)


def test_a_corrupt_store_is_refused_clearly(db: Path) -> None:
    with Store(db) as store:
        for i in range(100):
            store.add_event("web", 0, "k", "x" * 100, {"i": i})
    # Overwrite the schema on page 1, after the 100-byte header.
    with open(db, "r+b") as f:
        f.seek(100)
        f.write(b"\xff" * 3000)
    with pytest.raises(StoreError, match="corrupt"):
        Store(db)


def test_another_programs_database_is_refused(db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE notes (body TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="another program's SQLite database"):
        Store(db)


def test_a_newer_schema_is_refused_naming_both_versions(db: Path) -> None:
    Store(db).close()
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 98}")
    conn.close()
    with pytest.raises(StoreError) as info:
        Store(db)
    message = str(info.value)
    assert f"schema version {SCHEMA_VERSION + 98}" in message
    assert f"version {SCHEMA_VERSION})" in message
    assert "upgrade procvisor" in message


def test_a_missing_directory_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="directory exists"):
        Store(tmp_path / "nope" / "state.db")


def test_store_error_survives_pickling() -> None:
    error = pickle.loads(pickle.dumps(StoreError("/x/state.db", "corrupt; move it away")))
    assert isinstance(error, StoreError)
    assert (error.path, error.message) == ("/x/state.db", "corrupt; move it away")
    assert str(error) == "store /x/state.db: corrupt; move it away"


# lifecycle


def test_close_is_idempotent_and_a_closed_store_refuses_use(db: Path) -> None:
    store = Store(db)
    store.close()
    store.close()
    assert "closed" in repr(store)
    with pytest.raises(RuntimeError, match="closed"):
        store.add_event("web", 0, "k", "m")
    with pytest.raises(RuntimeError, match="closed"):
        store.instances()
