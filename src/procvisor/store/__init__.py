"""Durable state: what the daemon must still know after it restarts.

The supervisor records its events (the history ``procvisor events`` shows) and the instances
it runs (so that a restarted daemon re-adopts them instead of starting duplicates); the job
scheduler keeps its jobs, their state history and its cron schedules here (:class:`JobRecord`,
:class:`JobChange`, ...: the methods of :class:`Store` from ``_jobs.py``). The default
backend is one SQLite file (stdlib ``sqlite3``, WAL journal) owned by the daemon's event-loop
thread; cluster mode will add a PostgreSQL backend with the same methods.

Every write is committed before the call returns. A file that cannot be used raises
:class:`StoreError`, whose message says what to do.
"""

from procvisor.store._errors import StoreError
from procvisor.store._jobs import JobChange, JobEventRecord, JobRecord, NewJob, ScheduleRecord
from procvisor.store._sqlite import SCHEMA_VERSION, Event, InstanceRecord, Store

__all__ = [
    "SCHEMA_VERSION",
    "Event",
    "InstanceRecord",
    "JobChange",
    "JobEventRecord",
    "JobRecord",
    "NewJob",
    "ScheduleRecord",
    "Store",
    "StoreError",
]
