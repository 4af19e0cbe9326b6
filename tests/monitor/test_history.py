"""History: a ring per target by sample time, per-minute rows in a real store, trends.

Time comes from the samples themselves (``mono`` for the ring, ``ts`` for the minutes), so
every test here builds its samples and states the exact outcome.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from procvisor.monitor import History, HistoryRow, Sample
from procvisor.store import Store

WEB = {"kind": "service", "service": "web", "instance": "0"}
JOB = {"kind": "job", "job": "17"}
MB = 1024 * 1024
T0 = 1_700_000_040.0  # a wall-clock time on a whole minute
M0 = 5_000.0  # a monotonic time


def sample(
    t: float,
    labels: dict[str, str] = WEB,
    *,
    cpu: float | None = 10.0,
    rss: int = 100 * MB,
    pid: int = 42,
    **fields: object,
) -> Sample:
    """A sample ``t`` seconds after T0 (wall) and M0 (monotonic)."""
    base = Sample(
        ts=T0 + t,
        mono=M0 + t,
        labels=labels,
        pid=pid,
        alive=True,
        state="sleeping",
        processes=2,
        cpu=cpu,
        rss=rss,
        vms=4 * rss,
        threads=3,
        fds=7,
        read_bytes=0,
        write_bytes=0,
        ctx_switches=0,
        uptime=100.0 + t,
    )
    return replace(base, **fields)  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "state.db") as s:
        yield s


# the ring


def test_the_ring_keeps_only_its_window() -> None:
    history = History(window=10)
    history.add([sample(t) for t in range(0, 31, 2)])
    kept = history.recent(WEB)
    assert [s.mono - M0 for s in kept] == [20, 22, 24, 26, 28, 30]
    assert kept[-1] == sample(30)
    assert history.latest(WEB) == sample(30)


def test_recent_reads_a_shorter_window_back_from_the_newest_sample() -> None:
    history = History(window=60)
    history.add([sample(t) for t in range(10)])
    assert [s.mono - M0 for s in history.recent(WEB, window=3)] == [6, 7, 8, 9]
    assert history.recent(JOB) == []
    assert history.latest(JOB) is None


def test_none_values_survive_the_ring() -> None:
    history = History()
    gone = sample(0, cpu=None, alive=False, state="dead", fds=None, read_bytes=None, uptime=None)
    history.add([gone])
    assert history.recent(WEB) == [gone]


def test_a_target_no_longer_sampled_leaves_memory_after_the_window() -> None:
    history = History(window=10)
    history.add([sample(0, JOB), sample(0)])
    history.add([sample(5)])
    assert len(history.targets()) == 2
    history.add([sample(11)])
    assert history.targets() == [WEB]
    assert history.recent(JOB) == []


def test_a_long_run_keeps_the_ring_compact() -> None:
    history = History(window=10)
    for t in range(5_000):
        history.add([sample(t * 0.5)])
    assert len(history.recent(WEB)) == 21
    ring = history._series[tuple(sorted(WEB.items()))].ring
    assert len(ring._states) <= 2 * 21 + 32  # what was dropped is compacted away


def test_durations_must_be_positive() -> None:
    for name in ("window", "bucket", "retention"):
        with pytest.raises(ValueError, match=name):
            History(**{name: 0})  # type: ignore[arg-type]


# downsampling into the store


def test_a_minute_is_written_once_the_next_one_begins(store: Store) -> None:
    history = History(store)
    written = [history.add([sample(t, cpu=float(t), rss=t * MB)]) for t in range(0, 60, 2)]
    assert written == [0] * 30  # nothing while the minute is being filled
    assert store.history() == []
    assert history.add([sample(60)]) == 1
    [row] = store.history(WEB)
    assert row.labels == WEB
    assert (row.ts, row.span, row.count, row.alive, row.pid) == (T0, 60.0, 30, 1.0, 42)
    assert row.cpu_avg == pytest.approx(29.0)
    assert row.cpu_max == 58.0
    assert row.rss_avg == pytest.approx(29 * MB)
    assert row.rss_max == 58 * MB
    assert row.vms_max == 4 * 58 * MB
    assert (row.processes_avg, row.processes_max) == (2.0, 2)
    assert (row.threads_avg, row.threads_max, row.fds_avg, row.fds_max) == (3.0, 3, 7.0, 7)
    assert history.rows(WEB) == [row]


def test_every_target_of_a_minute_is_written_together(store: Store) -> None:
    history = History(store)
    history.add([sample(0), sample(0, JOB)])
    history.add([sample(30)])  # the job is no longer sampled
    assert history.add([sample(61)]) == 2
    # Rows of one minute come in the order of their labels' canonical text.
    assert [(r.labels, r.count) for r in store.history()] == [(WEB, 2), (JOB, 1)]


def test_missing_values_are_left_out_of_the_averages(store: Store) -> None:
    history = History(store)
    history.add([sample(0, cpu=None), sample(1, cpu=30.0), sample(2, alive=False, fds=None)])
    history.add([sample(60)])
    [row] = store.history(WEB)
    assert (row.cpu_avg, row.cpu_max, row.count) == (20.0, 30.0, 3)
    assert row.alive == pytest.approx(2 / 3)
    assert row.fds_avg == 7.0


def test_counters_are_stored_as_their_growth_in_the_minute(store: Store) -> None:
    history = History(store)
    history.add([sample(0, read_bytes=1000, write_bytes=None, ctx_switches=5)])
    history.add([sample(10, read_bytes=1500, ctx_switches=9)])
    history.add([sample(20, read_bytes=1200, ctx_switches=10)])  # a child left: no growth
    history.add([sample(30, read_bytes=1300, ctx_switches=11)])
    history.add([sample(40, pid=43, read_bytes=70, ctx_switches=2)])  # restarted: all new
    history.add([sample(60)])
    [row] = store.history(WEB)
    assert row.read_bytes == 500 + 0 + 100 + 70
    assert row.ctx_switches == 4 + 1 + 1 + 2
    assert row.write_bytes == 0  # only the samples where it was known
    assert row.pid == 43


def test_old_rows_are_pruned_once_a_minute(store: Store) -> None:
    history = History(store, retention=3600)
    for minute in range(5):
        history.add([sample(minute * 60, JOB if minute == 0 else WEB)])
    assert len(store.history()) == 4
    assert history.add([sample(3600 + 130)]) == 1  # minute 4 written; 0 to 2 now too old
    assert [r.ts - T0 for r in store.history()] == [180, 240]
    assert store.history_targets() == [WEB]  # the job's only row went, and the job with it


def test_flush_writes_the_minute_being_filled_and_a_later_add_merges(store: Store) -> None:
    history = History(store)
    history.add([sample(0, cpu=10.0), sample(10, cpu=20.0)])
    assert history.flush() == 1
    assert history.flush() == 0
    assert [r.count for r in store.history(WEB)] == [2]
    # As a restarted daemon would: the rest of the same minute, then the next one.
    later = History(store)
    later.add([sample(20, cpu=60.0)])
    later.add([sample(60)])
    [row] = store.history(WEB)
    assert row.count == 3
    assert row.cpu_avg == pytest.approx(30.0)
    assert row.cpu_max == 60.0


def test_forget_writes_the_targets_minute_and_drops_its_ring(store: Store) -> None:
    history = History(store)
    history.add([sample(0), sample(0, JOB)])
    assert history.forget(JOB) == 1
    assert history.forget(JOB) == 0
    assert history.targets() == [WEB]
    assert [r.labels for r in store.history()] == [JOB]


def test_without_a_store_only_the_ring_is_kept() -> None:
    history = History()
    history.add([sample(0)])
    assert history.add([sample(120)]) == 0
    assert history.flush() == 0
    assert history.rows(WEB) == []


def test_rows_are_read_for_a_window(store: Store) -> None:
    history = History(store)
    for minute in range(6):
        history.add([sample(minute * 60)])
    since, until = T0 + 60, T0 + 240
    assert [r.ts - T0 for r in history.rows(WEB, since=since, until=until)] == [60, 120, 180]
    assert all(isinstance(r, HistoryRow) for r in history.rows())


# trends


def test_a_trend_within_the_ring_uses_every_sample() -> None:
    history = History(window=600)
    # RSS grows by 1 MB a second over 5 minutes, with a spike in the middle.
    history.add([sample(t, rss=(100 + t) * MB) for t in range(0, 301)])
    history.add([sample(301, rss=900 * MB)])
    found = history.trend(WEB, "rss", window=300)
    assert found is not None
    assert found.count == 301
    assert found.maximum == 900 * MB
    assert found.per_hour == pytest.approx(3600 * MB, rel=0.05)
    assert history.trend(JOB, "rss", window=300) is None


def test_a_trend_longer_than_the_ring_reads_the_stored_minutes(store: Store) -> None:
    history = History(store, window=120)
    # 30 minutes, RSS growing 10 MB a minute, one sample every 10 s, one spike.
    for t in range(0, 1801, 10):
        history.add([sample(t, rss=(100 + t // 6) * MB)])
    history.add([sample(1805, rss=5000 * MB)])
    found = history.trend(WEB, "rss", window=3600)
    assert found is not None
    assert found.count == 30  # the minute being filled is not stored yet
    assert found.per_hour == pytest.approx(600 * MB, rel=0.01)
    assert found.maximum == (100 + 1790 // 6) * MB  # the largest sample, not average
    assert found.average == pytest.approx(
        sum((100 + t // 6) * MB for t in range(0, 1800, 10)) / 180
    )


def test_a_trend_is_only_for_gauges() -> None:
    history = History()
    with pytest.raises(ValueError, match="read_bytes"):
        history.trend(WEB, "read_bytes", window=60)
    with pytest.raises(ValueError, match="window"):
        history.trend(WEB, "rss", window=0)
