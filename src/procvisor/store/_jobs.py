"""The job scheduler's tables: jobs, their state history, and cron schedules.

:class:`JobTables` is mixed into :class:`~procvisor.store.Store`; the jobs layer is its only
user. A job is one row of ``jobs`` (its spec as JSON, its state, and its current or last run:
pid, start time, exit) plus one row of ``job_events`` per state change. Every method commits
before it returns, and every batch (:meth:`~JobTables.add_jobs`,
:meth:`~JobTables.update_jobs`) is one transaction: all of it is stored, or none.

:meth:`~JobTables.update_jobs` compares and sets: each change names the state it expects the
job to be in, and the whole batch is refused if one job is not, so a writer that lost track of
a job (another node, a bug) cannot overwrite what someone else decided.

Times are wall-clock seconds (``time.time()``): they must mean the same after a reboot.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from procvisor.store._errors import StoreError
from procvisor.store._sql import Select, immediate

__all__ = [
    "JOB_HOLDS",
    "JOB_TABLES",
    "JobChange",
    "JobEventRecord",
    "JobRecord",
    "JobTables",
    "NewJob",
    "ScheduleRecord",
]

# The migration that adds the tables, appended to the store's list of migrations.
JOB_TABLES: tuple[str, ...] = (
    # AUTOINCREMENT: a job id is never reused, even after the newest job was pruned, so an id
    # a user saw names one job forever.
    """CREATE TABLE jobs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        state TEXT NOT NULL,
        name TEXT NOT NULL,
        tenant TEXT NOT NULL,
        priority INTEGER NOT NULL,
        spec TEXT NOT NULL,
        submitted REAL NOT NULL,
        not_before REAL,
        deadline REAL,
        schedule INTEGER,
        runs INTEGER NOT NULL DEFAULT 0,
        failures INTEGER NOT NULL DEFAULT 0,
        pid INTEGER,
        start_ticks REAL,
        started REAL,
        ended REAL,
        exit_code INTEGER,
        signal TEXT,
        cpu_seconds REAL NOT NULL DEFAULT 0,
        duration REAL,
        stop_reason TEXT,
        reason TEXT NOT NULL DEFAULT '',
        updated REAL NOT NULL
    )""",
    "CREATE INDEX jobs_by_state ON jobs (state, id)",
    "CREATE INDEX jobs_by_tenant ON jobs (tenant, id)",
    # Runs that were started and not seen to end: what a restart must look for.
    "CREATE INDEX jobs_open_runs ON jobs (id) WHERE pid IS NOT NULL AND ended IS NULL",
    """CREATE TABLE job_events (
        id INTEGER PRIMARY KEY,
        job INTEGER NOT NULL,
        ts REAL NOT NULL,
        old TEXT,
        new TEXT NOT NULL,
        reason TEXT NOT NULL
    )""",
    "CREATE INDEX job_events_by_job ON job_events (job, id)",
    """CREATE TABLE job_schedules (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        cron TEXT NOT NULL,
        overlap TEXT NOT NULL,
        spec TEXT NOT NULL,
        next_fire REAL,
        last_job INTEGER,
        runs INTEGER NOT NULL DEFAULT 0,
        skipped INTEGER NOT NULL DEFAULT 0,
        active INTEGER NOT NULL DEFAULT 1,
        created REAL NOT NULL
    )""",
)

# A later migration: a queued job may be held (`procvisor hold`) until released.
JOB_HOLDS: tuple[str, ...] = ("ALTER TABLE jobs ADD COLUMN held INTEGER NOT NULL DEFAULT 0",)

_TERMINAL = ("succeeded", "failed", "expired", "cancelled")
_encode = json.JSONEncoder(separators=(",", ":")).encode

# The columns a JobChange writes, in its field order after (id, old, new, ts, reason).
_RUN_FIELDS = (
    "not_before",
    "runs",
    "failures",
    "pid",
    "start_ticks",
    "started",
    "ended",
    "exit_code",
    "signal",
    "cpu_seconds",
    "duration",
    "stop_reason",
    "held",
)
_JOB_COLUMNS = (
    "id, state, name, tenant, priority, spec, submitted, not_before, deadline, schedule, "
    "runs, failures, pid, start_ticks, started, ended, exit_code, signal, cpu_seconds, "
    "duration, stop_reason, reason, updated, held"
)
_UPDATE_JOB = (
    "UPDATE jobs SET state = ?, reason = ?, updated = ?, "
    + ", ".join(f"{name} = ?" for name in _RUN_FIELDS)
    + " WHERE id = ? AND state = ?"
)
_INSERT_JOB = (
    "INSERT INTO jobs (id, state, name, tenant, priority, spec, submitted, not_before, "
    "deadline, schedule, reason, updated, held) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_EVENT = "INSERT INTO job_events (job, ts, old, new, reason) VALUES (?, ?, ?, ?, ?)"
_SCHEDULE_COLUMNS = "id, cron, overlap, spec, next_fire, last_job, runs, skipped, active, created"


@dataclass(frozen=True, slots=True)
class NewJob:
    """A job to insert: what :meth:`JobTables.add_jobs` takes.

    ``spec`` is the job's JSON-ready spec; the other fields are the columns queries filter and
    sort on. ``reason`` goes into the first event (``None`` → ``state``).
    """

    name: str
    tenant: str
    priority: int
    spec: Mapping[str, Any]
    submitted: float
    not_before: float | None = None
    deadline: float | None = None
    schedule: int | None = None
    state: str = "queued"
    reason: str = "submitted"
    held: bool = False


@dataclass(frozen=True, slots=True)
class JobRecord:
    """One stored job: its spec, its state, and its current or last run.

    ``runs`` counts the starts, ``failures`` the failed runs that used a retry. ``pid`` and
    ``start_ticks`` (the start time in clock ticks since boot, from ``/proc/PID/stat``) name
    the process of the current or last run; while ``ended`` is None that run is open (it may
    still be running). ``cpu_seconds`` adds up every run. ``stop_reason`` says why the job's
    process is being stopped (``cancel``, ``timeout``, ``preempt``, ``shutdown``) once that
    was decided. Times are wall-clock seconds.
    """

    id: int
    state: str
    name: str
    tenant: str
    priority: int
    spec: dict[str, Any]
    submitted: float
    not_before: float | None
    deadline: float | None
    schedule: int | None
    runs: int
    failures: int
    pid: int | None
    start_ticks: float | None
    started: float | None
    ended: float | None
    exit_code: int | None
    signal: str | None
    cpu_seconds: float
    duration: float | None
    stop_reason: str | None
    reason: str
    updated: float
    held: bool = False
    """Kept out of the queue until released (``procvisor hold``)."""

    @property
    def run_open(self) -> bool:
        """Whether a run was started and not seen to end (its process may still live)."""
        return self.pid is not None and self.ended is None


@dataclass(frozen=True, slots=True)
class JobChange:
    """A change to one job, for :meth:`JobTables.update_jobs`.

    The job must be in state ``old``; it moves to ``new`` (an event is recorded when they
    differ) and every run field is written as given (pass the job's current values for the
    ones that do not change).
    """

    id: int
    old: str
    new: str
    ts: float
    reason: str
    not_before: float | None = None
    runs: int = 0
    failures: int = 0
    pid: int | None = None
    start_ticks: float | None = None
    started: float | None = None
    ended: float | None = None
    exit_code: int | None = None
    signal: str | None = None
    cpu_seconds: float = 0.0
    duration: float | None = None
    stop_reason: str | None = None
    held: bool = False


@dataclass(frozen=True, slots=True)
class JobEventRecord:
    """One state change of a job: ``old`` is None for its submission."""

    id: int
    job: int
    ts: float
    old: str | None
    new: str
    reason: str


@dataclass(frozen=True, slots=True)
class ScheduleRecord:
    """A cron schedule: it creates a job from ``spec`` at every fire time.

    ``next_fire`` is the next fire time (wall clock), ``last_job`` the job it created last,
    ``runs`` how many jobs it created, ``skipped`` how many fire times it let pass because the
    previous job had not finished (``overlap = "skip"``).
    """

    id: int
    cron: str
    overlap: str
    spec: dict[str, Any]
    next_fire: float | None
    last_job: int | None
    runs: int
    skipped: int
    active: bool
    created: float


class _Conflict(Exception):
    """A change expected a state its job is not in (internal to update_jobs)."""


def _record(row: tuple[Any, ...]) -> JobRecord:
    values = list(row)
    values[5] = json.loads(values[5])
    values[-1] = bool(values[-1])  # held
    return JobRecord(*values)


def _schedule(row: tuple[Any, ...]) -> ScheduleRecord:
    values = list(row)
    values[3] = json.loads(values[3])
    values[8] = bool(values[8])
    return ScheduleRecord(*values)


class JobTables:
    """The job methods of :class:`~procvisor.store.Store` (a mixin; see the module docstring)."""

    _path: str

    def _connection(self) -> sqlite3.Connection:  # pragma: no cover - Store defines it
        raise NotImplementedError

    def _job_error(self, exc: sqlite3.Error, doing: str) -> StoreError:
        name = getattr(exc, "sqlite_errorname", "")
        if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
            why = "another process is using it: is a daemon running?"
        else:
            why = "check the disk and the file's permissions"
        return StoreError(self._path, f"cannot {doing} ({exc}); {why}")

    def _write(self, doing: str, work: Any) -> Any:
        """Run ``work(conn)`` in one IMMEDIATE transaction, committed or rolled back."""
        conn = self._connection()
        try:
            with immediate(conn):
                out = work(conn)
        except sqlite3.Error as exc:
            raise self._job_error(exc, doing) from exc
        return out

    def _read(self, doing: str, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            return self._connection().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise self._job_error(exc, doing) from exc

    # -- writing ---------------------------------------------------------------------------

    # Cost, measured on the 2-vCPU dev VM: add_jobs ~12 µs a job in batches of 10,000 (a row,
    # its two index entries and its first event); update_jobs ~8 µs a change in batches, and
    # one commit (~60 µs) per call.
    @staticmethod
    def _insert_jobs(conn: sqlite3.Connection, jobs: Sequence[NewJob], ts: float) -> list[int]:
        # We hold the write lock, so the ids after the highest ever used are ours: assign them
        # here and insert with executemany (which cannot return generated ids).
        row = conn.execute(
            "SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'jobs'), 0), "
            "coalesce((SELECT max(id) FROM jobs), 0))"
        ).fetchone()
        first = int(row[0]) + 1
        ids = list(range(first, first + len(jobs)))
        conn.executemany(
            _INSERT_JOB,
            [
                (
                    job_id,
                    job.state,
                    job.name,
                    job.tenant,
                    job.priority,
                    _encode(job.spec),
                    job.submitted,
                    job.not_before,
                    job.deadline,
                    job.schedule,
                    job.reason,
                    ts,
                    job.held,
                )
                for job_id, job in zip(ids, jobs, strict=True)
            ],
        )
        conn.executemany(
            _INSERT_EVENT,
            [
                (job_id, ts, None, job.state, job.reason)
                for job_id, job in zip(ids, jobs, strict=True)
            ],
        )
        return ids

    def add_jobs(self, jobs: Sequence[NewJob], *, ts: float | None = None) -> list[int]:
        """Insert jobs in one transaction; return their ids, in order (ids only grow).

        Raises:
            TypeError: a spec is not JSON-serializable (nothing is stored).
            StoreError: the write failed; none of the jobs is stored.
        """
        if not jobs:
            return []
        now = time.time() if ts is None else ts
        try:
            for job in jobs:
                _encode(job.spec)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"job spec must be JSON-serializable: {exc}") from exc
        ids: list[int] = self._write("record jobs", lambda c: self._insert_jobs(c, jobs, now))
        return ids

    def update_jobs(self, changes: Iterable[JobChange]) -> None:
        """Apply job changes in one transaction, recording an event for each state change.

        Raises:
            StoreError: the write failed, or a job was not in the state its change expected
                (then nothing is stored).
        """
        rows = []
        events = []
        for ch in changes:
            rows.append(
                (
                    ch.new,
                    ch.reason,
                    ch.ts,
                    *(getattr(ch, name) for name in _RUN_FIELDS),
                    ch.id,
                    ch.old,
                )
            )
            if ch.old != ch.new:
                events.append((ch.id, ch.ts, ch.old, ch.new, ch.reason))
        if not rows:
            return

        def work(conn: sqlite3.Connection) -> None:
            cursor = conn.executemany(_UPDATE_JOB, rows)
            if cursor.rowcount != len(rows):
                raise _Conflict  # rolled back by _write
            if events:
                conn.executemany(_INSERT_EVENT, events)

        try:
            self._write("record job changes", work)
        except _Conflict:
            # Replay the batch on the stored states to name the changes that were refused.
            state = self.job_states(r[-2] for r in rows)
            stale = []
            for r in rows:
                job_id, old, new = r[-2], r[-1], r[0]
                if state.get(job_id) != old:
                    stale.append(f"job {job_id} is {state.get(job_id, 'not stored')}, not {old}")
                else:
                    state[job_id] = new
            raise StoreError(
                self._path,
                "job changes refused, nothing stored: "
                + "; ".join(stale[:5])
                + " (another writer changed them; reload the jobs from the store)",
            ) from None

    def add_schedule(
        self,
        cron: str,
        overlap: str,
        spec: Mapping[str, Any],
        next_fire: float | None,
        first: NewJob,
        *,
        ts: float | None = None,
    ) -> tuple[int, int]:
        """Store a cron schedule and its first job in one transaction: ``(schedule, job)``.

        ``first.schedule`` is ignored: the job is tied to the new schedule.

        Raises:
            TypeError: ``spec`` is not JSON-serializable.
            StoreError: the write failed; nothing is stored.
        """
        now = time.time() if ts is None else ts
        try:
            text = _encode(spec)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"schedule spec must be JSON-serializable: {exc}") from exc

        def work(conn: sqlite3.Connection) -> tuple[int, int]:
            cursor = conn.execute(
                "INSERT INTO job_schedules (cron, overlap, spec, next_fire, runs, created) "
                "VALUES (?, ?, ?, ?, 1, ?)",
                (cron, overlap, text, next_fire, now),
            )
            schedule_id = cursor.lastrowid
            assert schedule_id is not None
            job = NewJob(
                first.name,
                first.tenant,
                first.priority,
                first.spec,
                first.submitted,
                first.not_before,
                first.deadline,
                schedule_id,
                first.state,
                first.reason,
            )
            (job_id,) = self._insert_jobs(conn, [job], now)
            conn.execute(
                "UPDATE job_schedules SET last_job = ? WHERE id = ?", (job_id, schedule_id)
            )
            return schedule_id, job_id

        out: tuple[int, int] = self._write("record a schedule", work)
        return out

    def fire_schedule(
        self,
        schedule: int,
        next_fire: float | None,
        job: NewJob | None,
        *,
        ts: float | None = None,
    ) -> int | None:
        """Record one fire time of a schedule: the job it created (or a skip), and the next.

        With ``job`` None the fire time was skipped (``skipped`` grows). Returns the new
        job's id, or None. One transaction.

        Raises:
            StoreError: the write failed; nothing is stored.
        """
        now = time.time() if ts is None else ts

        def work(conn: sqlite3.Connection) -> int | None:
            if job is None:
                conn.execute(
                    "UPDATE job_schedules SET next_fire = ?, skipped = skipped + 1 WHERE id = ?",
                    (next_fire, schedule),
                )
                return None
            (job_id,) = self._insert_jobs(conn, [job], now)
            conn.execute(
                "UPDATE job_schedules SET next_fire = ?, last_job = ?, runs = runs + 1 "
                "WHERE id = ?",
                (next_fire, job_id, schedule),
            )
            return job_id

        out: int | None = self._write("record a schedule's run", work)
        return out

    def deactivate_schedule(self, schedule: int) -> bool:
        """Stop a schedule from creating jobs; False if it was not active.

        Raises:
            StoreError: the write failed.
        """

        def work(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "UPDATE job_schedules SET active = 0, next_fire = NULL WHERE id = ? AND active = 1",
                (schedule,),
            )
            return cursor.rowcount == 1

        out: bool = self._write("stop a schedule", work)
        return out

    def prune_jobs(self, before: float) -> int:
        """Delete finished jobs last changed before ``before``, with their events; how many.

        Raises:
            StoreError: the write failed.
        """

        def work(conn: sqlite3.Connection) -> int:
            marks = ",".join("?" * len(_TERMINAL))
            where = f"state IN ({marks}) AND updated < ? AND (pid IS NULL OR ended IS NOT NULL)"
            conn.execute(
                f"DELETE FROM job_events WHERE job IN (SELECT id FROM jobs WHERE {where})",
                (*_TERMINAL, before),
            )
            return conn.execute(f"DELETE FROM jobs WHERE {where}", (*_TERMINAL, before)).rowcount

        out: int = self._write("prune jobs", work)
        return out

    # -- reading ---------------------------------------------------------------------------

    def job(self, job_id: int) -> JobRecord | None:
        """The job with this id, or None.

        Raises:
            StoreError: the read failed.
        """
        rows = self._read("read a job", f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,))
        return _record(rows[0]) if rows else None

    def job_events(self, job_id: int) -> list[JobEventRecord]:
        """Every state change of a job, oldest first.

        Raises:
            StoreError: the read failed.
        """
        rows = self._read(
            "read a job's history",
            "SELECT id, job, ts, old, new, reason FROM job_events WHERE job = ? ORDER BY id",
            (job_id,),
        )
        return [JobEventRecord(*row) for row in rows]

    def jobs(
        self,
        *,
        state: str | Sequence[str] | None = None,
        tenant: str | None = None,
        limit: int | None = 100,
        before: int | None = None,
        held: bool | None = None,
    ) -> list[JobRecord]:
        """Jobs, newest first.

        Args:
            state: only jobs in this state (or in any of these states).
            tenant: only this tenant's jobs.
            held: only jobs that are (True) or are not (False) held.
            limit: at most this many (None: all).
            before: only jobs whose id is below this (to page on from the last one seen).

        Raises:
            ValueError: ``limit`` is negative.
            StoreError: the read failed.
        """
        if limit is not None and limit < 0:
            raise ValueError(f"limit must not be negative, not {limit}")
        query = Select(f"SELECT {_JOB_COLUMNS} FROM jobs")
        if state is not None:
            states = [state] if isinstance(state, str) else list(state)
            query.where(f"state IN ({','.join('?' * len(states))})", *states)
        if tenant is not None:
            query.where("tenant = ?", tenant)
        if before is not None:
            query.where("id < ?", before)
        if held is not None:
            query.where("held = ?", int(held))
        sql, params = query.build("id DESC", limit)
        return [_record(row) for row in self._read("read jobs", sql, params)]

    def unfinished_jobs(self) -> list[JobRecord]:
        """Jobs not in a final state, and jobs with an open run, oldest first.

        What a scheduler loads when it starts.

        Raises:
            StoreError: the read failed.
        """
        marks = ",".join("?" * len(_TERMINAL))
        sql = (
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id IN ("
            f"SELECT id FROM jobs WHERE state NOT IN ({marks}) "
            "UNION SELECT id FROM jobs WHERE pid IS NOT NULL AND ended IS NULL) ORDER BY id"
        )
        return [_record(row) for row in self._read("read unfinished jobs", sql, _TERMINAL)]

    def job_states(self, ids: Iterable[int]) -> dict[int, str]:
        """The state of each of these jobs that is stored.

        Raises:
            StoreError: the read failed.
        """
        wanted = list(dict.fromkeys(ids))
        out: dict[int, str] = {}
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            rows = self._read(
                "read job states",
                f"SELECT id, state FROM jobs WHERE id IN ({','.join('?' * len(chunk))})",
                chunk,
            )
            out.update(rows)
        return out

    def job_state_counts(self) -> dict[str, int]:
        """How many stored jobs are in each state.

        Raises:
            StoreError: the read failed.
        """
        rows = self._read("count jobs", "SELECT state, count(*) FROM jobs GROUP BY state")
        return dict(rows)

    def oldest_queued(self) -> float | None:
        """When the longest-waiting queued job was submitted, or None if none is queued.

        Raises:
            StoreError: the read failed.
        """
        rows = self._read(
            "read the queue", "SELECT min(submitted) FROM jobs WHERE state = 'queued'"
        )
        return rows[0][0] if rows else None

    def tenant_usage(self, since: float) -> list[tuple[str, float, float]]:
        """``(tenant, cpu_seconds, ended)`` of every job whose last run ended at ``since`` or later.

        Raises:
            StoreError: the read failed.
        """
        return self._read(
            "read tenant usage",
            "SELECT tenant, cpu_seconds, ended FROM jobs WHERE ended >= ? AND cpu_seconds > 0 "
            "ORDER BY ended",
            (since,),
        )

    def schedules(self, *, active: bool | None = True) -> list[ScheduleRecord]:
        """Cron schedules by id: only active ones by default (None: all).

        Raises:
            StoreError: the read failed.
        """
        query = Select(f"SELECT {_SCHEDULE_COLUMNS} FROM job_schedules")
        if active is not None:
            query.where("active = ?", int(active))
        sql, params = query.build("id")
        return [_schedule(row) for row in self._read("read schedules", sql, params)]

    def schedule(self, schedule: int) -> ScheduleRecord | None:
        """The schedule with this id, or None.

        Raises:
            StoreError: the read failed.
        """
        rows = self._read(
            "read a schedule",
            f"SELECT {_SCHEDULE_COLUMNS} FROM job_schedules WHERE id = ?",
            (schedule,),
        )
        return _schedule(rows[0]) if rows else None
