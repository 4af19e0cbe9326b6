"""The store's monitoring history: per-minute rows by target labels, merged, read and pruned."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from procvisor.store import SCHEMA_VERSION, Store
from procvisor.store._sqlite import _MIGRATIONS, APPLICATION_ID, HistoryRow

WEB = {"kind": "service", "service": "web", "instance": "0"}
JOB = {"kind": "job", "job": "17"}
T0 = 1_700_000_040.0


def row(minute: int, labels: dict[str, str] = WEB, **fields: object) -> HistoryRow:
    base = HistoryRow(
        labels=labels,
        ts=T0 + 60 * minute,
        span=60.0,
        count=30,
        alive=1.0,
        pid=42,
        processes_avg=2.0,
        processes_max=2,
        cpu_avg=12.5,
        cpu_max=40.0,
        rss_avg=100.5 * 2**20,
        rss_max=120 * 2**20,
        vms_avg=400.0 * 2**20,
        vms_max=410 * 2**20,
        threads_avg=3.0,
        threads_max=4,
        fds_avg=7.0,
        fds_max=9,
        read_bytes=4096,
        write_bytes=0,
        ctx_switches=300,
    )
    return replace(base, **fields)  # type: ignore[arg-type]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


@pytest.fixture
def store(db: Path) -> Iterator[Store]:
    with Store(db) as s:
        yield s


def test_rows_read_back_as_written(store: Store) -> None:
    written = [row(0), row(1, cpu_avg=None, cpu_max=None, read_bytes=None), row(0, JOB)]
    assert store.add_history(written) == 3
    assert store.history(WEB) == written[:2]
    assert store.history(JOB) == [written[2]]
    assert store.history() == [written[0], written[2], written[1]]  # by ts, then labels
    data = json.loads(json.dumps(written[0].to_dict()))
    assert data["labels"] == WEB
    assert data["rss_max"] == 120 * 2**20
    assert set(data) == {f for f in HistoryRow.__dataclass_fields__}


def test_labels_name_a_target_whatever_their_order(store: Store) -> None:
    store.add_history([row(0, {"service": "web", "instance": "0", "kind": "service"})])
    [found] = store.history(WEB)
    assert found.labels == WEB
    assert store.history({"service": "web"}) == []  # exactly these labels, not a subset
    assert store.history_targets() == [WEB]


def test_labels_must_be_strings(store: Store) -> None:
    with pytest.raises(TypeError, match="strings"):
        store.add_history([row(0, {"instance": 0})])  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="strings"):
        store.history({"instance": 0})  # type: ignore[dict-item]
    assert store.history() == []


def test_a_window_and_a_limit_select_the_newest_rows_oldest_first(store: Store) -> None:
    store.add_history(row(m) for m in range(10))
    minutes = [int((r.ts - T0) // 60) for r in store.history(WEB, since=T0 + 120, until=T0 + 360)]
    assert minutes == [2, 3, 4, 5]
    assert [int((r.ts - T0) // 60) for r in store.history(WEB, limit=3)] == [7, 8, 9]
    assert store.history(WEB, limit=0) == []
    with pytest.raises(ValueError, match="limit"):
        store.history(limit=-1)


def test_a_second_row_for_the_same_minute_is_merged(store: Store) -> None:
    store.add_history([row(0, count=10, cpu_avg=10.0, cpu_max=30.0, alive=1.0, fds_avg=None)])
    store.add_history(
        [row(0, count=30, cpu_avg=50.0, cpu_max=20.0, alive=0.0, pid=43, read_bytes=None)]
    )
    [merged] = store.history(WEB)
    assert merged.count == 40
    assert merged.cpu_avg == pytest.approx((10 * 10 + 50 * 30) / 40)
    assert merged.cpu_max == 30.0
    assert merged.alive == pytest.approx(0.25)
    assert merged.pid == 43
    assert merged.fds_avg == 7.0  # missing on one side: the other's
    assert merged.read_bytes == 4096
    assert merged.ctx_switches == 600  # growth adds up


def test_prune_deletes_old_rows_and_targets_left_without_any(store: Store) -> None:
    store.add_history([row(0, JOB), row(0), row(1), row(2)])
    assert store.prune_history(T0 + 60) == 2
    assert [r.ts for r in store.history()] == [T0 + 60, T0 + 120]
    assert store.history_targets() == [WEB]
    assert store.prune_history(T0 + 60) == 0


def test_an_empty_write_is_a_no_op(store: Store) -> None:
    assert store.add_history([]) == 0


def test_a_failed_write_stores_none_of_the_rows(store: Store) -> None:
    with pytest.raises(TypeError):
        store.add_history([row(0), row(1, {"bad": 1})])  # type: ignore[dict-item]
    assert store.history() == []


def test_history_survives_reopening(db: Path) -> None:
    with Store(db) as store:
        store.add_history([row(0)])
    with Store(db) as store:
        assert store.history() == [row(0)]


def test_a_store_of_the_previous_schema_is_upgraded_in_place(db: Path) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        for statement in _MIGRATIONS[0]:
            conn.execute(statement)
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute("PRAGMA user_version = 1")
        conn.execute(
            "INSERT INTO events (ts, service, instance, kind, message, data) "
            "VALUES (1.0, 'web', 0, 'started', 'up', '{}')"
        )
    finally:
        conn.close()
    with Store(db) as store:
        assert [e.kind for e in store.events()] == ["started"]
        store.add_history([row(0)])
        assert store.history() == [row(0)]
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        conn.close()


def test_a_day_of_one_target_reads_quickly(store: Store) -> None:
    # 500 targets' minute is one transaction; a day of one target is one indexed range read.
    store.add_history(row(0, {"kind": "job", "job": str(i)}) for i in range(500))
    store.add_history(row(m) for m in range(1440))
    start = time.perf_counter()
    assert len(store.history(WEB, since=T0)) == 1440
    assert time.perf_counter() - start < 1.0  # generous: the machine is shared
