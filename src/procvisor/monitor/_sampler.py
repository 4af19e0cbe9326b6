"""The sampler: what every monitored process tree uses, from one scan of /proc per call."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from procvisor.monitor import _procfs
from procvisor.monitor._procfs import (
    CLK_TCK,
    NUM_THREADS,
    PAGE_SIZE,
    PGRP,
    PPID,
    RSS,
    STARTTIME,
    STATE,
    STATE_NAMES,
    STIME,
    UTIME,
    VSIZE,
)

LabelKey = tuple[tuple[str, str], ...]
"""A label set as a hashable, ordered tuple of ``(name, value)`` pairs."""


def label_key(labels: Mapping[str, str]) -> LabelKey:
    """The hashable identity of a label set (its items, sorted)."""
    return tuple(sorted(labels.items()))


@dataclass(frozen=True, slots=True)
class Target:
    """A process tree to sample: its root pid and the labels that name it.

    The tree is the root, every member of its process group if the root leads one (as every
    process procvisor starts does), and every descendant of those, including children that
    called ``setsid``. Labels say what the tree is, e.g. ``{"kind": "service", "service":
    "web", "instance": "0"}``, ``{"kind": "pool", "pool": "upper", "worker": "1234"}`` or
    ``{"kind": "job", "job": "17"}``.

    Args:
        pid: the root process.
        labels: names and values, both strings (copied, read-only).
        start_ticks: when the root started, in clock ticks since boot (field 22 of
            ``/proc/PID/stat``, as the supervisor records it). A process found at ``pid`` with
            another start time is another process that reused the pid, and the target is
            reported dead. Without it, the start time seen at the first sample is used.

    Raises:
        ValueError: ``pid`` is not positive.
        TypeError: a label name or value is not a string.
    """

    pid: int
    labels: Mapping[str, str] = field(compare=False)
    start_ticks: float | None = None
    key: LabelKey = field(init=False, repr=False)
    """The labels as a hashable tuple (see :func:`label_key`); targets compare by it."""

    def __post_init__(self) -> None:
        if self.pid <= 0:
            raise ValueError(f"pid must be a positive process id, not {self.pid}")
        for name, value in self.labels.items():
            if not isinstance(name, str) or not isinstance(value, str):
                raise TypeError(
                    f"labels must map strings to strings, not {name!r}: {value!r}; "
                    "convert numbers with str()"
                )
        labels = MappingProxyType(dict(self.labels))
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "key", label_key(labels))


@dataclass(frozen=True, slots=True)
class ProcessSample:
    """One process of a sampled tree (see :class:`Sample` for the fields)."""

    pid: int
    ppid: int
    pgid: int
    name: str
    state: str
    cpu: float | None
    rss: int
    vms: int
    threads: int
    fds: int | None
    read_bytes: int | None
    write_bytes: int | None
    ctx_switches: int | None
    uptime: float

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return {name: getattr(self, name) for name in _PROCESS_FIELDS}


_PROCESS_FIELDS = tuple(ProcessSample.__dataclass_fields__)


@dataclass(frozen=True, slots=True)
class Sample:
    """The totals of one target's process tree at one moment.

    Attributes:
        ts: wall-clock time of the sample (``time.time()``), for display and storage.
        mono: the ``now`` it was taken at (``time.monotonic()`` unless the caller passed
            another), for windows and rates.
        labels: the target's labels.
        pid: the target's root pid.
        alive: whether the root process runs (not gone, not a zombie, not a reused pid).
        state: the root's state as psutil names it (``running``, ``sleeping``,
            ``disk-sleep``, ``stopped``, ``zombie``, ...), or ``dead`` when it is gone or its
            pid now belongs to another process.
        processes: how many live processes the totals are over. When the root is gone,
            the survivors of its process group (and their descendants) are still counted.
        cpu: percent of one core used by the tree since the previous sample of this target
            (or an earlier one, see ``Sampler``'s ``min_interval``); the CPU time of
            processes that exited in between is lost. None until there is such a sample.
        rss, vms: resident and virtual memory in bytes, summed.
        threads: threads, summed.
        fds: open file descriptors, summed over the processes we may read (None: none).
        read_bytes, write_bytes: bytes the tree's live processes have read from and written
            to storage since they started (``/proc/PID/io``), summed over those we may read;
            None when none are readable.
        ctx_switches: voluntary plus involuntary context switches of each process's main
            thread (as psutil reports them), summed.
        uptime: seconds since the root started; None unless ``alive``.
        detail: the processes one by one, when the sample was asked for with ``detail``.
    """

    ts: float
    mono: float
    labels: Mapping[str, str]
    pid: int
    alive: bool
    state: str
    processes: int
    cpu: float | None
    rss: int
    vms: int
    threads: int
    fds: int | None
    read_bytes: int | None
    write_bytes: int | None
    ctx_switches: int | None
    uptime: float | None
    detail: tuple[ProcessSample, ...] = ()

    def metrics(self) -> dict[str, Any]:
        """The measured fields by name (``pid`` to ``uptime``), as alert rules read them."""
        return {name: getattr(self, name) for name in METRIC_FIELDS}

    def fields(self) -> dict[str, Any]:
        """The labels and :meth:`metrics` in one flat mapping, for alert expressions.

        The names match :data:`procvisor.policy.alertexpr.SAMPLE_FIELDS`; the daemon may add
        ``restarts`` and ``health``. A metric wins over a label of the same name.
        """
        out: dict[str, Any] = dict(self.labels)
        out.update(self.metrics())
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: ``ts``, ``labels``, the metrics, and ``detail`` if sampled."""
        out: dict[str, Any] = {"ts": self.ts, "labels": dict(self.labels)}
        out.update(self.metrics())
        if self.detail:
            out["detail"] = [p.to_dict() for p in self.detail]
        return out


METRIC_FIELDS = (
    "pid",
    "alive",
    "state",
    "processes",
    "cpu",
    "rss",
    "vms",
    "threads",
    "fds",
    "read_bytes",
    "write_bytes",
    "ctx_switches",
    "uptime",
)
"""The measured fields of a :class:`Sample`, in order."""


class _Baseline:
    """The CPU ticks of a tree's members at one sample, by (pid, start ticks).

    Keyed by start time too, so that a reused pid never yields a delta against the old
    process's CPU time.
    """

    __slots__ = ("boot", "cpu", "mono")

    def __init__(self, mono: float, boot: float, cpu: dict[tuple[int, int], int]) -> None:
        self.mono = mono
        self.boot = boot
        self.cpu = cpu


class _TargetState:
    """What the sampler remembers of a target between samples: for CPU deltas and pid reuse."""

    __slots__ = ("baselines", "leader", "root_start", "used")

    def __init__(self, root_start: float | None) -> None:
        self.root_start = root_start
        self.leader = False
        # Newest last. CPU time is counted in clock ticks (10 ms), too coarse to measure
        # over a few milliseconds, so a sample taken soon after another (an on-demand
        # inspect) measures against an older baseline, at least min_interval old.
        self.baselines: list[_Baseline] = []
        self.used = 0.0

    def baseline(self, mono: float, min_interval: float) -> _Baseline | None:
        """The newest baseline at least ``min_interval`` old, if any."""
        for base in reversed(self.baselines):
            if mono - base.mono >= min_interval:
                return base
        return None

    def remember(self, base: _Baseline, min_interval: float) -> None:
        self.baselines.append(base)
        # An older baseline is needed only while the next one is too young to use.
        while len(self.baselines) > 1 and base.mono - self.baselines[1].mono >= min_interval:
            del self.baselines[0]


def _plus(total: int | None, value: int | None) -> int | None:
    if value is None:
        return total
    return value if total is None else total + value


class Sampler:
    """Measures process trees from /proc; remembers just enough for CPU % and pid reuse.

    Each call of :meth:`sample` reads ``/proc/PID/stat`` of every process on the machine
    once (to find the trees), or with ``below`` of only the processes below that pid while
    they are few, then ``status``, ``io`` and the size of the ``fd`` directory of each
    process in a tree. With 500 processes that costs 25–40 ms of CPU, 3–4 % of a
    core at a 1 s interval (bench/RESULTS.md, ``monitor``): cheap, but it is blocking file
    I/O, and a /proc read can stall on a process whose memory map is locked. So call it in a
    worker thread (``await asyncio.to_thread(sampler.sample, targets)``), not in the event
    loop.

    Thread-safety: :meth:`sample` may be called from any thread; calls are serialised by a
    lock, so a periodic sampler and an on-demand ``inspect`` may share one instance. The
    returned samples are immutable.

    Args:
        min_interval: the shortest span CPU % is measured over. CPU time comes in clock
            ticks (10 ms), so over a few milliseconds it would be mostly noise: a sample
            taken sooner than this after the previous one measures from an older one, and
            the first samples of a target, until it has one that old, report ``cpu=None``.
        forget_after: seconds after which the state of a target that is no longer sampled is
            dropped (its next sample, if any, then has ``cpu=None``).
        below: every target is a descendant of this pid, and stays one with all of its tree:
            the pid of a child subreaper that started them (the daemon). Then, while the
            processes below it are under two thirds of the machine's, only they are read,
            through their threads' children files. A service's share of a host with many
            other processes then costs what the service has, not what the host has.

    Raises:
        ValueError: ``min_interval`` is negative or ``forget_after`` is not more than 0.
    """

    def __init__(
        self, *, min_interval: float = 0.5, forget_after: float = 300.0, below: int | None = None
    ) -> None:
        if not min_interval >= 0:
            raise ValueError(f"min_interval must be 0 seconds or more, not {min_interval!r}")
        if not forget_after > 0:
            raise ValueError(f"forget_after must be more than 0 seconds, not {forget_after!r}")
        self._min_interval = min_interval
        self._forget_after = forget_after
        self._below = below if _procfs.CHILDREN_FILES else None
        self._below_count = 0  # processes below ``below`` at the last scan
        self._states: dict[tuple[LabelKey, int], _TargetState] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<Sampler remembering {len(self._states)} targets>"

    def sample(
        self, targets: Iterable[Target], *, now: float | None = None, detail: bool = False
    ) -> list[Sample]:
        """Sample every target's tree; one :class:`Sample` per target, in order.

        Processes that exit while they are read, or whose files we may not read, never
        raise: a gone process is left out, an unreadable field is left out of its sum.

        Args:
            now: the time to stamp the samples with (``Sample.mono``); ``time.monotonic()``
                if None. Rates use the clock read here, whatever ``now`` says.
            detail: also report every process of each tree (``Sample.detail``).
        """
        with self._lock:
            mono = time.monotonic()
            boot = time.clock_gettime(time.CLOCK_BOOTTIME)
            wall = time.time()
            targets = list(targets)
            found = self._scan(targets)
            stamp = mono if now is None else now
            out = [
                self._sample_one(target, found, mono, boot, wall, stamp, detail)
                for target in targets
            ]
            horizon = mono - self._forget_after
            stale = [key for key, state in self._states.items() if state.used < horizon]
            for key in stale:
                del self._states[key]
            return out

    def _scan(self, targets: list[Target]) -> _procfs.Scan:
        """Every process, or only those below ``below`` while they are few enough for
        reading two files each to cost less than one file of every process."""
        if self._below is None:
            return _procfs.scan()
        few = self._below_count < 16  # then cheaper on any machine: skip counting
        if few or self._below_count * 3 < _procfs.count() * 2:
            found = _procfs.scan_below(self._below, [t.pid for t in targets])
            self._below_count = len(found.stats)
        else:
            found = _procfs.scan()
            self._below_count = len(_tree(found.children.get(self._below, []), found.children))
        return found

    def _sample_one(
        self,
        target: Target,
        found: _procfs.Scan,
        mono: float,
        boot: float,
        wall: float,
        stamp: float,
        detail: bool,
    ) -> Sample:
        pid = target.pid
        root = found.stats.get(pid)
        start = int(root[STARTTIME]) if root is not None else None
        key = (target.key, pid)
        state = self._states.get(key)
        expected = target.start_ticks
        if expected is None and state is not None:
            expected = state.root_start
        if expected is None:
            expected = start
        if state is None or state.root_start != expected:
            state = self._states[key] = _TargetState(expected)
        state.used = mono
        ours = root is not None and start == expected
        seeds: list[int] = []
        if ours:
            assert root is not None
            seeds.append(pid)
            if int(root[PGRP]) == pid:
                state.leader = True
        if state.leader and (ours or root is None):
            # A pid stays taken while its process group has members, so a group named after
            # a root that is gone still holds that root's leftovers.
            seeds.extend(found.groups.get(pid, ()))

        base = state.baseline(mono, self._min_interval)
        interval = mono - base.mono if base is not None else 0.0
        members = _tree(seeds, found.children)
        cpu_now: dict[tuple[int, int], int] = {}
        used_ticks = 0
        processes = rss = vms = threads = 0
        fds = read_bytes = write_bytes = ctx = None
        procs: list[ProcessSample] = []
        for member in members:
            stat = found.stats[member]
            if stat[STATE] == b"Z":
                continue
            extras = _procfs.read_extras(member)
            if extras is None:
                continue  # exited while we read it
            member_start = int(stat[STARTTIME])
            ticks = int(stat[UTIME]) + int(stat[STIME])
            cpu_key = (member, member_start)
            cpu_now[cpu_key] = ticks
            before = base.cpu.get(cpu_key) if base is not None else None
            if before is not None:
                used: int | None = max(0, ticks - before)
            elif base is not None and (member_start + 1) / CLK_TCK > base.boot:
                # Born since the baseline (the start time is truncated to a tick, hence the
                # +1): all of its CPU time is new.
                used = ticks
            else:
                used = None
            used_ticks += used or 0
            processes += 1
            member_rss = int(stat[RSS]) * PAGE_SIZE
            member_vms = int(stat[VSIZE])
            member_threads = int(stat[NUM_THREADS])
            rss += member_rss
            vms += member_vms
            threads += member_threads
            fds = _plus(fds, extras.fds)
            read_bytes = _plus(read_bytes, extras.read_bytes)
            write_bytes = _plus(write_bytes, extras.write_bytes)
            ctx = _plus(ctx, extras.ctx_switches)
            if detail:
                procs.append(
                    ProcessSample(
                        pid=member,
                        ppid=int(stat[PPID]),
                        pgid=int(stat[PGRP]),
                        name=found.comm[member].decode("utf-8", "replace"),
                        state=STATE_NAMES.get(chr(stat[STATE][0]), "unknown"),
                        cpu=_percent(used, interval),
                        rss=member_rss,
                        vms=member_vms,
                        threads=member_threads,
                        fds=extras.fds,
                        read_bytes=extras.read_bytes,
                        write_bytes=extras.write_bytes,
                        ctx_switches=extras.ctx_switches,
                        uptime=max(0.0, boot - member_start / CLK_TCK),
                    )
                )
        state.remember(_Baseline(mono, boot, cpu_now), self._min_interval)

        if ours:
            assert root is not None and start is not None
            status = STATE_NAMES.get(chr(root[STATE][0]), "unknown")
            alive = status != "zombie"
        else:
            status, alive = "dead", False
        return Sample(
            ts=wall,
            mono=stamp,
            labels=target.labels,
            pid=pid,
            alive=alive,
            state=status,
            processes=processes,
            cpu=_percent(used_ticks, interval),
            rss=rss,
            vms=vms,
            threads=threads,
            fds=fds,
            read_bytes=read_bytes,
            write_bytes=write_bytes,
            ctx_switches=ctx,
            uptime=max(0.0, boot - start / CLK_TCK) if alive and start is not None else None,
            detail=tuple(procs),
        )


def _percent(ticks: int | None, interval: float) -> float | None:
    if ticks is None or not interval > 0 or not math.isfinite(interval):
        return None
    return ticks / CLK_TCK / interval * 100.0


def _tree(seeds: list[int], children: dict[int, list[int]]) -> list[int]:
    """The seeds and all their descendants, each once, in the order found."""
    seen: set[int] = set()
    order: list[int] = []
    stack = list(reversed(seeds))
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        order.append(pid)
        stack.extend(reversed(children.get(pid, ())))
    return order
