"""Watch what managed processes use: sample their trees, keep the history, summarise trends.

Built on ``process`` (how procvisor's children are grouped), ``policy`` (trend arithmetic)
and ``store`` (the per-minute history). It knows targets only by a root pid and labels
(``{"kind": "service", "service": "web", "instance": "0"}``); the daemon says what to watch.

- :class:`Sampler` measures every :class:`Target`'s process tree (root, its process group,
  their descendants) from one scan of /proc: CPU %, RSS, VMS, threads, fds, I/O, context
  switches, uptime, state, as a :class:`Sample` per target (and per process on request).
- :class:`History` keeps each target's recent samples in memory (10 minutes) and writes
  per-minute averages and maxima to the store (:class:`HistoryRow`, kept 24 hours), and
  answers :meth:`History.trend` (average, maximum, growth per hour).

How the daemon drives it, every interval (2 s by default)::

    samples = await asyncio.to_thread(sampler.sample, targets)  # blocking /proc reads
    history.add(samples)  # in the loop thread, which owns the store

An ``inspect`` of one target calls ``sampler.sample([target], detail=True)`` (per-process
rows in ``Sample.detail``) and leaves the history alone. The sampler is safe to call from any
thread; the history belongs to the store's thread.
"""

from procvisor.monitor._history import TREND_FIELDS, History
from procvisor.monitor._sampler import (
    METRIC_FIELDS,
    LabelKey,
    ProcessSample,
    Sample,
    Sampler,
    Target,
    label_key,
)
from procvisor.store._sqlite import HistoryRow

__all__ = [
    "METRIC_FIELDS",
    "TREND_FIELDS",
    "History",
    "HistoryRow",
    "LabelKey",
    "ProcessSample",
    "Sample",
    "Sampler",
    "Target",
    "label_key",
]
