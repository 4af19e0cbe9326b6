"""The SQLite store: one file, WAL journal, one connection owned by the daemon's loop thread."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from procvisor.store._errors import StoreError
from procvisor.store._jobs import JOB_HOLDS, JOB_TABLES, JobTables
from procvisor.store._sql import Select, immediate

__all__ = ["APPLICATION_ID", "SCHEMA_VERSION", "Event", "HistoryRow", "InstanceRecord", "Store"]

# PRAGMA application_id marks the file as ours ("PVIS"), so that another program's SQLite
# database is refused instead of being migrated.
APPLICATION_ID = 0x50564953

# Each entry upgrades the schema by one version; PRAGMA user_version holds how many ran.
# Append, never edit: a later feature (the job scheduler) adds its tables as a new entry.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE events (
            id INTEGER PRIMARY KEY,
            ts REAL NOT NULL,
            service TEXT NOT NULL,
            instance INTEGER,
            kind TEXT NOT NULL,
            message TEXT NOT NULL,
            data TEXT NOT NULL
        )""",
        "CREATE INDEX events_by_service ON events (service, id)",
        """CREATE TABLE instances (
            service TEXT NOT NULL,
            instance INTEGER NOT NULL,
            pid INTEGER NOT NULL,
            create_time REAL NOT NULL,
            started REAL NOT NULL,
            PRIMARY KEY (service, instance)
        ) WITHOUT ROWID""",
    ),
    # Monitoring history: each sampled target's samples summarised per minute. A target is
    # stored once, by its labels, and its rows point at it by id (a label set is ~60 bytes,
    # 1,440 times a day). The by-ts index makes the once-a-minute prune a range delete.
    (
        """CREATE TABLE history_targets (
            id INTEGER PRIMARY KEY,
            labels TEXT NOT NULL UNIQUE
        )""",
        """CREATE TABLE history (
            target INTEGER NOT NULL REFERENCES history_targets (id),
            ts REAL NOT NULL,
            span REAL NOT NULL,
            count INTEGER NOT NULL,
            alive REAL NOT NULL,
            pid INTEGER NOT NULL,
            processes_avg REAL,
            processes_max INTEGER,
            cpu_avg REAL,
            cpu_max REAL,
            rss_avg REAL,
            rss_max INTEGER,
            vms_avg REAL,
            vms_max INTEGER,
            threads_avg REAL,
            threads_max INTEGER,
            fds_avg REAL,
            fds_max INTEGER,
            read_bytes INTEGER,
            write_bytes INTEGER,
            ctx_switches INTEGER,
            PRIMARY KEY (target, ts)
        ) WITHOUT ROWID""",
        "CREATE INDEX history_by_ts ON history (ts)",
    ),
    # The job scheduler: jobs, their state history, cron schedules (see _jobs.py).
    JOB_TABLES,
    JOB_HOLDS,
)

SCHEMA_VERSION = len(_MIGRATIONS)

# Pruning deletes a batch of old events at most this often (every N inserts).
_PRUNE_EVERY = 500

_EVENT_COLUMNS = "id, ts, service, instance, kind, message, data"

# One encoder: json.dumps() builds a new one on every call that passes options.
_encode_json = json.JSONEncoder(separators=(",", ":")).encode
# Labels are a target's identity in the history tables: one canonical text per label set.
_encode_labels = json.JSONEncoder(separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode

# The history columns after (target, ts), in HistoryRow's order after labels and ts.
_HISTORY_FIELDS = (
    "span",
    "count",
    "alive",
    "pid",
    "processes_avg",
    "processes_max",
    "cpu_avg",
    "cpu_max",
    "rss_avg",
    "rss_max",
    "vms_avg",
    "vms_max",
    "threads_avg",
    "threads_max",
    "fds_avg",
    "fds_max",
    "read_bytes",
    "write_bytes",
    "ctx_switches",
)


def _merge_history_sql() -> str:
    """The upsert that folds a second row for the same (target, minute) into the first.

    It happens when a partial minute was written at shutdown and the next daemon samples the
    rest of that minute, or when the wall clock steps back: averages are weighted by count,
    maxima and sums combine, and a missing value (NULL) on one side takes the other's.
    """

    def either(col: str, both: str) -> str:
        return (
            f"{col} = CASE WHEN {col} IS NULL THEN excluded.{col} "
            f"WHEN excluded.{col} IS NULL THEN {col} ELSE {both} END"
        )

    sets = [
        "span = max(span, excluded.span)",
        "alive = (alive * count + excluded.alive * excluded.count) / (count + excluded.count)",
        "pid = excluded.pid",
    ]
    for name in _HISTORY_FIELDS:
        if name.endswith("_avg"):
            sets.append(
                either(
                    name,
                    f"({name} * count + excluded.{name} * excluded.count) "
                    "/ (count + excluded.count)",
                )
            )
        elif name.endswith("_max"):
            sets.append(either(name, f"max({name}, excluded.{name})"))
        elif name in ("read_bytes", "write_bytes", "ctx_switches"):
            sets.append(either(name, f"{name} + excluded.{name}"))
    sets.append("count = count + excluded.count")  # every SET expression reads the old row
    columns = ", ".join(("target", "ts", *_HISTORY_FIELDS))
    values = ", ".join(["(SELECT id FROM history_targets WHERE labels = ?)"] + ["?"] * 20)
    return (
        f"INSERT INTO history ({columns}) VALUES ({values}) "
        f"ON CONFLICT (target, ts) DO UPDATE SET {', '.join(sets)}"
    )


_INSERT_HISTORY = _merge_history_sql()
_HISTORY_COLUMNS = ", ".join(f"h.{name}" for name in ("ts", *_HISTORY_FIELDS))


@dataclass(frozen=True, slots=True)
class Event:
    """One thing that happened to a service or instance, as stored.

    ``ts`` is wall-clock time (``time.time()``); ``instance`` is None for service-wide events;
    ``data`` is whatever JSON-serializable mapping was recorded with it.
    """

    id: int
    ts: float
    service: str
    instance: int | None
    kind: str
    message: str
    data: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field (``data`` is copied)."""
        return {
            "id": self.id,
            "ts": self.ts,
            "service": self.service,
            "instance": self.instance,
            "kind": self.kind,
            "message": self.message,
            "data": dict(self.data),
        }


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    """A running instance, recorded so that the next daemon finds it after a crash.

    ``create_time`` is when the process started, as its recorder measures it (the supervisor
    uses clock ticks since boot from ``/proc/PID/stat``): a pid whose process has another start
    time was reused and is not ours. ``started`` is wall-clock time.
    """

    service: str
    instance: int
    pid: int
    create_time: float
    started: float


@dataclass(frozen=True, slots=True)
class HistoryRow:
    """One monitored target's samples over one bucket of time (a minute), summarised.

    The monitor writes one row per target and minute; ``labels`` name the target (e.g.
    ``{"kind": "service", "service": "web", "instance": "0"}``). ``ts`` is the wall-clock
    start of the bucket and ``span`` its length in seconds; ``count`` samples went into it.
    ``alive`` is the share of them (0 to 1) in which the target's root process was alive and
    ``pid`` its pid in the last one. ``*_avg`` and ``*_max`` are the average and largest of the
    tree totals (``cpu`` in percent of one core; ``rss``, ``vms`` in bytes); ``read_bytes``,
    ``write_bytes`` and ``ctx_switches`` are how much those counters grew during the bucket.
    A value no sample of the bucket had is None.
    """

    labels: Mapping[str, str]
    ts: float
    span: float
    count: int
    alive: float
    pid: int
    processes_avg: float | None = None
    processes_max: int | None = None
    cpu_avg: float | None = None
    cpu_max: float | None = None
    rss_avg: float | None = None
    rss_max: int | None = None
    vms_avg: float | None = None
    vms_max: int | None = None
    threads_avg: float | None = None
    threads_max: int | None = None
    fds_avg: float | None = None
    fds_max: int | None = None
    read_bytes: int | None = None
    write_bytes: int | None = None
    ctx_switches: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field (``labels`` is copied)."""
        out: dict[str, Any] = {"labels": dict(self.labels), "ts": self.ts}
        for name in _HISTORY_FIELDS:
            out[name] = getattr(self, name)
        return out


def _labels_text(labels: Mapping[str, str]) -> str:
    for key, value in labels.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"labels must map strings to strings, not {key!r}: {value!r}")
    return _encode_labels(dict(labels))


def _fail(path: str, exc: sqlite3.Error, doing: str) -> StoreError:
    name = getattr(exc, "sqlite_errorname", "")
    if name in ("SQLITE_NOTADB", "SQLITE_CORRUPT"):
        return StoreError(
            path,
            f"not a procvisor store, or corrupt ({exc}); move the file away and procvisor "
            "will create a new one, or restore it from a backup",
        )
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return StoreError(
            path, f"cannot {doing} ({exc}); another process is using it: is a daemon running?"
        )
    return StoreError(path, f"cannot {doing} ({exc}); check the disk and the file's permissions")


class Store(JobTables):
    """Durable daemon state in one SQLite file: events, instances, monitoring history.

    It holds the event log, the instances to re-adopt after a crash, and the monitoring
    history (per-minute summaries of each monitored target's samples, see :class:`HistoryRow`).

    The file is created with mode 0600 and opened in WAL mode with ``synchronous=NORMAL``:
    every write is committed when the call returns, so it survives the daemon being killed
    (a power loss may lose the last few commits). Use it from one thread: the connection
    refuses others.

    Args:
        path: the database file; created if missing, its directory must exist.
        max_events: how many events to keep. The oldest are pruned in batches, so between
            prunes up to ``max_events + min(500, max_events // 10)`` may be stored.

    Raises:
        StoreError: the file cannot be opened, is not a procvisor store, is corrupt, or has
            a newer schema than this version of procvisor knows.
        ValueError: ``max_events`` is less than 1.
    """

    def __init__(self, path: str | os.PathLike[str], *, max_events: int = 10_000) -> None:
        if max_events < 1:
            raise ValueError(f"max_events must be at least 1, not {max_events}")
        self._path = os.fspath(path)
        self._max_events = max_events
        self._prune_every = max(1, min(_PRUNE_EVERY, max_events // 10))
        self._since_prune = 0
        try:
            # Create the file ourselves so it is never, even briefly, readable by others.
            os.close(os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
        except OSError as exc:
            raise StoreError(
                self._path,
                f"cannot open ({exc.strerror}); check that its directory exists and is writable",
            ) from exc
        try:
            # isolation_level=None: every statement outside BEGIN...COMMIT commits itself.
            self._conn: sqlite3.Connection | None = sqlite3.connect(
                self._path, isolation_level=None
            )
        except sqlite3.Error as exc:
            raise _fail(self._path, exc, "open") from exc
        try:
            self._open(self._conn)
        except sqlite3.Error as exc:
            self._conn.close()
            raise _fail(self._path, exc, "open") from exc
        except BaseException:
            self._conn.close()
            raise

    def _open(self, conn: sqlite3.Connection) -> None:
        # Reading the header first turns a foreign file into SQLITE_NOTADB here.
        self._check_ours(conn)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        self._migrate(conn)
        self._prune(conn)

    def _check_ours(self, conn: sqlite3.Connection) -> int:
        app_id: int = conn.execute("PRAGMA application_id").fetchone()[0]
        version: int = conn.execute("PRAGMA user_version").fetchone()[0]
        if app_id != APPLICATION_ID:
            tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if app_id != 0 or version != 0 or tables:
                raise StoreError(
                    self._path,
                    "not a procvisor store (it is another program's SQLite database); "
                    "choose another path, or move the file away",
                )
        if version > SCHEMA_VERSION:
            raise StoreError(
                self._path,
                f"schema version {version} is newer than this procvisor knows "
                f"(version {SCHEMA_VERSION}); upgrade procvisor, or move the file away "
                "to start a new store",
            )
        return version

    def _migrate(self, conn: sqlite3.Connection) -> None:
        if conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
            return
        # IMMEDIATE takes the write lock, so two processes opening a new file cannot both
        # run the migrations; the version is read again under the lock.
        with immediate(conn):
            version = self._check_ours(conn)
            for statements in _MIGRATIONS[version:]:
                for statement in statements:
                    conn.execute(statement)
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _prune(self, conn: sqlite3.Connection) -> None:
        # A new id is max(id) + 1 and the newest event is never deleted, so ids only grow
        # (without AUTOINCREMENT, which costs one more page write per insert) and the ids kept
        # are exactly the last max_events: one range delete on the primary key.
        self._since_prune = 0
        conn.execute(
            "DELETE FROM events WHERE id <= (SELECT max(id) FROM events) - ?", (self._max_events,)
        )

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError(f"store {self._path} is closed")
        return self._conn

    def _fetch(
        self, conn: sqlite3.Connection, doing: str, sql: str, params: Sequence[object] = ()
    ) -> list[Any]:
        """The rows of ``sql``; a failed read raises :class:`StoreError` (cannot ``doing``)."""
        try:
            return conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise _fail(self._path, exc, doing) from exc

    @property
    def path(self) -> str:
        """The database file."""
        return self._path

    def close(self) -> None:
        """Close the database (idempotent). Pending writes are already committed."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._conn is None else "open"
        return f"<Store {self._path!r} {state}>"

    # Cost, measured on the 2-vCPU dev VM (ext4, Python 3.11.7, SQLite 3.40.1), median of
    # 5 x 5,000 calls: add_event ~60 µs with no data, ~75 µs with a 3-key data dict;
    # record_instance ~40 µs. A commit appends two pages (the row and its by-service index
    # entry) to the WAL and does not fsync; AUTOINCREMENT would add a third (~+20 µs). The
    # prune every 500 inserts adds ~1 ms to that call.
    def add_event(
        self,
        service: str,
        instance: int | None,
        kind: str,
        message: str,
        data: Mapping[str, Any] | None = None,
        *,
        ts: float | None = None,
    ) -> int:
        """Record an event and commit it; return its id (ids only grow).

        ``ts`` defaults to ``time.time()``. ``data`` must be JSON-serializable; it reads back
        as JSON does (tuples become lists, keys become strings).

        Raises:
            TypeError: ``data`` is not JSON-serializable.
            StoreError: the write failed (disk full, file corrupt, ...).
        """
        conn = self._connection()
        try:
            text = _encode_json(data) if data else "{}"
        except (TypeError, ValueError) as exc:
            raise TypeError(f"event data must be JSON-serializable: {exc}") from exc
        try:
            cursor = conn.execute(
                "INSERT INTO events (ts, service, instance, kind, message, data) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (time.time() if ts is None else ts, service, instance, kind, message, text),
            )
            self._since_prune += 1
            if self._since_prune >= self._prune_every:
                self._prune(conn)
        except sqlite3.Error as exc:
            raise _fail(self._path, exc, "record an event") from exc
        event_id = cursor.lastrowid
        assert event_id is not None
        return event_id

    def events(
        self, service: str | None = None, *, limit: int = 50, after: int | None = None
    ) -> list[Event]:
        """The newest ``limit`` events, oldest first.

        Args:
            service: only this service's events.
            after: only events whose id is greater than this.

        Raises:
            ValueError: ``limit`` is negative.
            StoreError: the read failed.
        """
        if limit < 0:
            raise ValueError(f"limit must not be negative, not {limit}")
        conn = self._connection()
        query = Select(f"SELECT {_EVENT_COLUMNS} FROM events")
        if service is not None:
            query.where("service = ?", service)
        if after is not None:
            query.where("id > ?", after)
        sql, params = query.build("id DESC", limit)
        rows = self._fetch(conn, "read events", sql, params)
        return [
            Event(id_, ts, svc, inst, kind, message, {} if data == "{}" else json.loads(data))
            for id_, ts, svc, inst, kind, message, data in reversed(rows)
        ]

    def record_instance(self, rec: InstanceRecord) -> None:
        """Insert or replace the record of ``(rec.service, rec.instance)``, committed.

        Raises:
            StoreError: the write failed.
        """
        conn = self._connection()
        try:
            conn.execute(
                "INSERT INTO instances (service, instance, pid, create_time, started) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (service, instance) DO UPDATE SET "
                "pid = excluded.pid, create_time = excluded.create_time, "
                "started = excluded.started",
                (rec.service, rec.instance, rec.pid, rec.create_time, rec.started),
            )
        except sqlite3.Error as exc:
            raise _fail(self._path, exc, "record an instance") from exc

    def forget_instance(self, service: str, instance: int) -> None:
        """Delete the record of ``service:instance`` if there is one, committed.

        Raises:
            StoreError: the write failed.
        """
        conn = self._connection()
        try:
            conn.execute(
                "DELETE FROM instances WHERE service = ? AND instance = ?", (service, instance)
            )
        except sqlite3.Error as exc:
            raise _fail(self._path, exc, "forget an instance") from exc

    def instances(self) -> list[InstanceRecord]:
        """Every recorded instance, by service then instance number.

        Raises:
            StoreError: the read failed.
        """
        rows = self._fetch(
            self._connection(),
            "read instances",
            "SELECT service, instance, pid, create_time, started FROM instances "
            "ORDER BY service, instance",
        )
        return [InstanceRecord(*row) for row in rows]

    # Cost, measured on the 2-vCPU dev VM: add_history of 500 rows (a minute of 500 targets)
    # ~5 ms, one transaction; history() of one target's day (1,440 rows) ~6 ms; pruning one
    # minute of 500 targets from 60,000 rows ~8 ms, most of it the check for targets left
    # without rows.
    def add_history(self, rows: Iterable[HistoryRow]) -> int:
        """Write summarised monitoring rows in one transaction; return how many.

        A row for a (labels, ts) already stored is merged into it (averages weighted by
        ``count``, maxima and counter growth combined) rather than refused.

        Raises:
            TypeError: a row's labels are not a mapping of strings to strings.
            StoreError: the write failed; none of the rows is stored.
        """
        conn = self._connection()
        params = []
        texts = set()
        for row in rows:
            text = _labels_text(row.labels)
            texts.add(text)
            params.append((text, row.ts, *(getattr(row, name) for name in _HISTORY_FIELDS)))
        if not params:
            return 0
        try:
            with immediate(conn):
                conn.executemany(
                    "INSERT INTO history_targets (labels) VALUES (?) "
                    "ON CONFLICT (labels) DO NOTHING",
                    [(text,) for text in sorted(texts)],
                )
                conn.executemany(_INSERT_HISTORY, params)
        except sqlite3.Error as exc:
            raise _fail(self._path, exc, "record monitoring history") from exc
        return len(params)

    def history(
        self,
        labels: Mapping[str, str] | None = None,
        *,
        since: float | None = None,
        until: float | None = None,
        limit: int | None = None,
    ) -> list[HistoryRow]:
        """Summarised monitoring rows, oldest first (by ``ts``, then by labels).

        Args:
            labels: only the target with exactly these labels; all targets if None.
            since: only rows whose ``ts`` is at or after this (wall-clock seconds).
            until: only rows whose ``ts`` is before this.
            limit: at most this many, the newest.

        Raises:
            ValueError: ``limit`` is negative.
            TypeError: ``labels`` is not a mapping of strings to strings.
            StoreError: the read failed.
        """
        if limit is not None and limit < 0:
            raise ValueError(f"limit must not be negative, not {limit}")
        conn = self._connection()
        query = Select(
            f"SELECT t.labels, {_HISTORY_COLUMNS} FROM history AS h "
            "JOIN history_targets AS t ON t.id = h.target"
        )
        if labels is not None:
            query.where("t.labels = ?", _labels_text(labels))
        if since is not None:
            query.where("h.ts >= ?", since)
        if until is not None:
            query.where("h.ts < ?", until)
        sql, params = query.build("h.ts DESC, t.labels DESC", limit)
        rows = self._fetch(conn, "read monitoring history", sql, params)
        decoded: dict[str, dict[str, str]] = {}
        out = []
        for text, *values in reversed(rows):
            found = decoded.get(text)
            if found is None:
                found = decoded[text] = json.loads(text)
            out.append(HistoryRow(found, *values))
        return out

    def history_targets(self) -> list[dict[str, str]]:
        """The label sets of every target with stored history, in their canonical order.

        Raises:
            StoreError: the read failed.
        """
        rows = self._fetch(
            self._connection(),
            "read monitoring targets",
            "SELECT labels FROM history_targets ORDER BY labels",
        )
        return [json.loads(text) for (text,) in rows]

    def prune_history(self, before: float) -> int:
        """Delete history rows whose ``ts`` is before ``before``; return how many.

        Targets left without any row are forgotten too.

        Raises:
            StoreError: the write failed.
        """
        conn = self._connection()
        try:
            with immediate(conn):
                deleted = conn.execute("DELETE FROM history WHERE ts < ?", (before,)).rowcount
                if deleted:
                    conn.execute(
                        "DELETE FROM history_targets WHERE NOT EXISTS "
                        "(SELECT 1 FROM history WHERE target = history_targets.id)"
                    )
        except sqlite3.Error as exc:
            raise _fail(self._path, exc, "prune monitoring history") from exc
        return deleted
