"""History: the recent samples of each target in memory, per-minute summaries in the store."""

from __future__ import annotations

import dataclasses
import math
import time
from array import array
from collections.abc import Iterable, Iterator, Mapping
from typing import Final

from procvisor.monitor._sampler import METRIC_FIELDS, LabelKey, Sample, label_key
from procvisor.policy.alerts import Trend, trend
from procvisor.store._sqlite import HistoryRow, Store

# The numeric fields a ring keeps per sample, as doubles (None as NaN); the state string is
# kept beside them. 14 doubles and a pointer: ~120 bytes a sample, so 10 minutes at 2 s cost
# ~36 KB per target, and 500 targets ~18 MB.
_COLUMNS: Final = ("mono", "ts", *(name for name in METRIC_FIELDS if name != "state"))
_STRIDE: Final = len(_COLUMNS)
_COLUMN: Final = {name: i for i, name in enumerate(_COLUMNS)}
_NAN: Final = math.nan

TREND_FIELDS: Final = ("cpu", "rss", "vms", "threads", "fds", "processes")
"""The fields :meth:`History.trend` summarises: the gauges, kept in both ring and store."""

# Fields averaged per bucket (and their maxima kept), and the counters whose growth is summed.
_GAUGES: Final = TREND_FIELDS
_COUNTERS: Final = ("read_bytes", "write_bytes", "ctx_switches")


def _num(value: float | None) -> float:
    return _NAN if value is None else float(value)


def _int_or_none(value: float) -> int | None:
    return None if math.isnan(value) else int(value)


class _Ring:
    """One target's samples, oldest first, in one array of doubles (``_STRIDE`` per sample)."""

    __slots__ = ("_data", "_start", "_states")

    def __init__(self) -> None:
        self._data = array("d")
        self._states: list[str] = []
        self._start = 0  # samples before this index are dropped but not yet compacted

    def __len__(self) -> int:
        return len(self._states) - self._start

    def append(self, s: Sample) -> None:
        self._data.extend(
            (
                s.mono,
                s.ts,
                s.pid,
                1.0 if s.alive else 0.0,
                s.processes,
                _num(s.cpu),
                s.rss,
                s.vms,
                s.threads,
                _num(s.fds),
                _num(s.read_bytes),
                _num(s.write_bytes),
                _num(s.ctx_switches),
                _num(s.uptime),
            )
        )
        self._states.append(s.state)

    def drop_before(self, mono: float) -> None:
        """Drop the samples taken before ``mono``."""
        data, end, i = self._data, len(self._states), self._start
        while i < end and data[i * _STRIDE] < mono:
            i += 1
        self._start = i
        if i >= 32 and 2 * i >= end:  # compact now and then: amortised O(1) per sample
            del data[: i * _STRIDE]
            del self._states[:i]
            self._start = 0

    def newest_mono(self) -> float | None:
        return self._data[(len(self._states) - 1) * _STRIDE] if len(self) else None

    def indexes(self, since: float | None) -> Iterator[int]:
        data = self._data
        for i in range(self._start, len(self._states)):
            if since is None or data[i * _STRIDE] >= since:
                yield i

    def sample(self, i: int, labels: Mapping[str, str]) -> Sample:
        v = self._data[i * _STRIDE : (i + 1) * _STRIDE]
        return Sample(
            ts=v[1],
            mono=v[0],
            labels=labels,
            pid=int(v[2]),
            alive=v[3] != 0.0,
            state=self._states[i],
            processes=int(v[4]),
            cpu=None if math.isnan(v[5]) else v[5],
            rss=int(v[6]),
            vms=int(v[7]),
            threads=int(v[8]),
            fds=_int_or_none(v[9]),
            read_bytes=_int_or_none(v[10]),
            write_bytes=_int_or_none(v[11]),
            ctx_switches=_int_or_none(v[12]),
            uptime=None if math.isnan(v[13]) else v[13],
        )

    def points(self, column: int, since: float | None) -> list[tuple[float, float]]:
        data = self._data
        out = []
        for i in self.indexes(since):
            value = data[i * _STRIDE + column]
            if not math.isnan(value):
                out.append((data[i * _STRIDE], value))
        return out


class _Bucket:
    """One target's samples in one bucket of time, being summarised."""

    __slots__ = ("alive", "count", "growth", "index", "maxes", "pid", "seen", "sums")

    def __init__(self, index: int) -> None:
        self.index = index
        self.count = 0
        self.alive = 0
        self.pid = 0
        self.sums = [0.0] * len(_GAUGES)
        self.seen = [0] * len(_GAUGES)
        self.maxes: list[float | None] = [None] * len(_GAUGES)
        self.growth: list[int | None] = [None] * len(_COUNTERS)

    def add(self, s: Sample, previous: Sample | None) -> None:
        self.count += 1
        self.alive += s.alive
        self.pid = s.pid
        for i, name in enumerate(_GAUGES):
            value = getattr(s, name)
            if value is None:
                continue
            self.sums[i] += value
            self.seen[i] += 1
            top = self.maxes[i]
            if top is None or value > top:
                self.maxes[i] = value
        for i, name in enumerate(_COUNTERS):
            grew = _growth(s, previous, name)
            if grew is not None:
                total = self.growth[i]
                self.growth[i] = grew if total is None else total + grew

    def row(self, labels: Mapping[str, str], span: float) -> HistoryRow:
        def avg(name: str) -> float | None:
            i = _GAUGES.index(name)
            return self.sums[i] / self.seen[i] if self.seen[i] else None

        def top(name: str) -> int | None:
            value = self.maxes[_GAUGES.index(name)]
            return None if value is None else int(value)

        read_bytes, write_bytes, ctx_switches = self.growth
        return HistoryRow(
            labels=labels,
            ts=self.index * span,
            span=span,
            count=self.count,
            alive=self.alive / self.count,
            pid=self.pid,
            processes_avg=avg("processes"),
            processes_max=top("processes"),
            cpu_avg=avg("cpu"),
            cpu_max=self.maxes[_GAUGES.index("cpu")],
            rss_avg=avg("rss"),
            rss_max=top("rss"),
            vms_avg=avg("vms"),
            vms_max=top("vms"),
            threads_avg=avg("threads"),
            threads_max=top("threads"),
            fds_avg=avg("fds"),
            fds_max=top("fds"),
            read_bytes=read_bytes,
            write_bytes=write_bytes,
            ctx_switches=ctx_switches,
        )


def _growth(s: Sample, previous: Sample | None, name: str) -> int | None:
    """How much counter ``name`` grew since ``previous`` (None when unknown).

    A drop (a process of the tree exited and took its count along) counts as no growth; a new
    root pid (the target restarted) means the whole count is new.
    """
    now = getattr(s, name)
    if now is None or previous is None:
        return None
    if previous.pid != s.pid:
        return int(now)
    before = getattr(previous, name)
    if before is None:
        return None
    return max(0, int(now) - int(before))


class _Series:
    __slots__ = ("bucket", "labels", "last", "ring")

    def __init__(self, labels: Mapping[str, str]) -> None:
        self.labels = labels
        self.ring = _Ring()
        self.bucket: _Bucket | None = None
        self.last: Sample | None = None


class History:
    """Each target's recent samples (a ring in memory) and their per-minute summaries (store).

    Feed it what :meth:`Sampler.sample` returns with :meth:`add`. The ring of each target
    keeps ``window`` seconds of samples at full resolution, by ``Sample.mono``. With a store,
    every target's samples are also summarised per ``bucket`` of wall-clock time (aligned on
    multiples of it: whole minutes by default) into :class:`HistoryRow` rows: a bucket is
    written once a later one begins, all targets in one transaction, so the store sees one
    write a minute; rows older than ``retention`` are pruned at the same time.

    Time comes only from the samples (``mono`` for the ring, ``ts`` for the buckets), so
    tests drive it by building samples.

    Thread-safety: none; use it from the thread that owns the store (the daemon's event loop
    thread), and hand it samples taken in a worker thread.

    Args:
        store: where the per-minute rows go; without one, only the ring is kept.
        window: seconds of samples each ring keeps (default 10 minutes).
        bucket: seconds summarised into one stored row (default 60).
        retention: seconds of rows kept in the store (default 24 hours).

    Raises:
        ValueError: a duration is not more than 0.
    """

    def __init__(
        self,
        store: Store | None = None,
        *,
        window: float = 600.0,
        bucket: float = 60.0,
        retention: float = 86400.0,
    ) -> None:
        for name, value in (("window", window), ("bucket", bucket), ("retention", retention)):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a number of seconds above 0, not {value!r}")
        self._store = store
        self.window = window
        self.bucket = bucket
        self.retention = retention
        self._series: dict[LabelKey, _Series] = {}
        self._mono: float | None = None
        self._wall: float | None = None
        self._pruned: int | None = None  # the bucket index of the last prune

    def __repr__(self) -> str:
        store = "" if self._store is None else f" into {self._store.path!r}"
        return f"<History of {len(self._series)} targets, {self.window:g} s{store}>"

    def add(self, samples: Iterable[Sample]) -> int:
        """Keep ``samples`` and write the buckets they complete; return how many rows went out.

        Add the periodic samples only: an on-demand sample (an ``inspect``) would crowd the
        ring and weigh twice in its minute.

        Raises:
            StoreError: the store refused the rows (the samples are kept in the rings; the
                rows of the completed buckets are lost).
        """
        finished: list[HistoryRow] = []
        for s in samples:
            key = label_key(s.labels)
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = _Series(s.labels)
            series.ring.append(s)
            if self._mono is None or s.mono > self._mono:
                self._mono = s.mono
            if self._wall is None or s.ts > self._wall:
                self._wall = s.ts
            if self._store is not None:
                index = math.floor(s.ts / self.bucket)
                bucket = series.bucket
                if bucket is not None and bucket.index != index:
                    finished.append(bucket.row(series.labels, self.bucket))
                    bucket = None
                if bucket is None:
                    bucket = series.bucket = _Bucket(index)
                bucket.add(s, series.last)
            series.last = s
        if self._mono is None or self._wall is None:
            return 0
        current = math.floor(self._wall / self.bucket)
        horizon = self._mono - self.window
        for key, series in list(self._series.items()):
            bucket = series.bucket
            if bucket is not None and bucket.index < current:
                # A target that is no longer sampled still gets its last bucket written.
                finished.append(bucket.row(series.labels, self.bucket))
                series.bucket = None
            series.ring.drop_before(horizon)
            if not len(series.ring) and series.bucket is None:
                del self._series[key]
        return self._write(finished, current)

    def _write(self, rows: list[HistoryRow], current: int) -> int:
        if self._store is None:
            return 0
        written = self._store.add_history(rows) if rows else 0
        if self._pruned != current and self._wall is not None:
            self._pruned = current
            self._store.prune_history(self._wall - self.retention)
        return written

    def flush(self) -> int:
        """Write every bucket not yet complete (at shutdown); return how many rows went out.

        A later :meth:`add` in the same bucket writes a second row for it, which the store
        merges into the first.

        Raises:
            StoreError: the store refused the rows.
        """
        rows = []
        for series in self._series.values():
            if series.bucket is not None:
                rows.append(series.bucket.row(series.labels, self.bucket))
                series.bucket = None
        if self._store is None or not rows:
            return 0
        return self._store.add_history(rows)

    def forget(self, labels: Mapping[str, str]) -> int:
        """Drop a target's ring (a service removed from the config) after writing its bucket.

        Returns how many rows went out (0 or 1).
        """
        series = self._series.pop(label_key(labels), None)
        if series is None or series.bucket is None or self._store is None:
            return 0
        return self._store.add_history([series.bucket.row(series.labels, self.bucket)])

    def targets(self) -> list[Mapping[str, str]]:
        """The labels of every target with samples in memory."""
        return [series.labels for series in self._series.values()]

    def latest(self, labels: Mapping[str, str]) -> Sample | None:
        """The newest sample of the target with these labels, if it has one in memory."""
        series = self._series.get(label_key(labels))
        if series is None or not len(series.ring):
            return None
        return series.last

    def recent(self, labels: Mapping[str, str], *, window: float | None = None) -> list[Sample]:
        """The target's samples in memory, oldest first (without per-process detail).

        Args:
            window: only those of the last ``window`` seconds before the newest sample
                added (of any target).
        """
        series = self._series.get(label_key(labels))
        if series is None or self._mono is None:
            return []
        since = None if window is None else self._mono - window
        ring = series.ring
        return [ring.sample(i, series.labels) for i in ring.indexes(since)]

    def rows(
        self,
        labels: Mapping[str, str] | None = None,
        *,
        since: float | None = None,
        until: float | None = None,
    ) -> list[HistoryRow]:
        """The stored per-minute rows of one target (or all), oldest first.

        ``since`` and ``until`` are wall-clock times (``time.time()``). The bucket still
        being filled is not among them: :meth:`recent` has those samples. Without a store,
        an empty list.

        Raises:
            StoreError: the read failed.
        """
        if self._store is None:
            return []
        return self._store.history(labels, since=since, until=until)

    def trend(self, labels: Mapping[str, str], field: str, *, window: float) -> Trend | None:
        """Average, extremes and least-squares growth of ``field`` over the last ``window`` s.

        A window that fits in the ring is read from it (every sample); a longer one from the
        stored per-minute averages (their ``maximum`` is the largest sample, not the largest
        average). The window ends at the newest sample added (of any target; without any,
        at ``time.time()`` for the stored rows). ``Trend.per_hour`` of ``rss`` is bytes per
        hour. None when there is no point in the window.

        Raises:
            ValueError: ``field`` is not one of :data:`TREND_FIELDS`, or ``window`` is not
                more than 0.
            StoreError: the read failed.
        """
        if field not in TREND_FIELDS:
            raise ValueError(f"field must be one of {', '.join(TREND_FIELDS)}, not {field!r}")
        if not (math.isfinite(window) and window > 0):
            raise ValueError(f"window must be a number of seconds above 0, not {window!r}")
        if window <= self.window:
            series = self._series.get(label_key(labels))
            if series is None or self._mono is None:
                return None
            since = self._mono - window
            return trend(series.ring.points(_COLUMN[field], since), now=self._mono, window=window)
        now = self._wall if self._wall is not None else time.time()
        points = []
        top: float | None = None
        for row in self.rows(labels, since=now - window):
            value = getattr(row, f"{field}_avg")
            if value is None:
                continue
            points.append((row.ts, float(value)))
            high = getattr(row, f"{field}_max")
            if high is not None and (top is None or high > top):
                top = float(high)
        found = trend(points)
        if found is None or top is None:
            return found
        return dataclasses.replace(found, maximum=top)
