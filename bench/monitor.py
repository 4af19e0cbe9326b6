"""Sample 500 managed processes: the monitor's Sampler against psutil, and its CPU at 1 s.

Two layouts of 500 idle processes, each started in its own session as procvisor starts them:

100x5   100 targets, each `sh -c 'sleep & sleep & sleep & sleep & wait'`: a root and four
        children in its process group.
500x1   500 targets, each one `sleep`.

(a) cost of one sample of every target, interleaved repetition by repetition:
      procvisor   monitor.Sampler().sample(targets): one scan of /proc/*/stat for the trees,
                  then status, io and the fd count of each member, read directly.
      psutil+scan the same trees (one /proc scan), each member read with psutil:
                  Process.oneshot() with cpu_percent, memory_info, num_threads, num_fds,
                  io_counters, num_ctx_switches and status (Process objects kept between
                  samples, as cpu_percent needs).
      psutil      the naive approach: per target, Process(root).children(recursive=True)
                  (psutil scans every /proc/PID/stat for each call) and the same oneshot
                  reads.
    CPU is the calling thread's (time.thread_time: user + system), so it is the sampler's own
    cost whatever else the machine runs; wall time is shown too. Samples are --gap s apart.
(b) the target as the daemon would run it: procvisor's Sampler every --interval s for
    --seconds s, each sample handed to a History writing per-minute rows to a SQLite store
    in a temporary directory; the thread's CPU over the whole window (getrusage
    RUSAGE_THREAD), and how much of it the History took.
(c) what the kernel charges for each file read per process: CPU per read of
    /proc/PID/{stat,status,io} and per stat() of /proc/PID/fd, over the layout's members.
(d) the real daemon: `python -m procvisor up -c CONFIG` on a temporary config of
    --daemon-services services, each `/bin/sleep`, with [monitor] interval = --interval,
    its state directory under a short /tmp path (the Unix socket's path must stay under
    108 bytes). Once `procvisor status --json` shows every one running and a few samples
    have been taken: the daemon's CPU over --idle-seconds (utime + stime of
    /proc/DAEMON/stat, every thread: the monitor's sampling and everything else it does
    while idle), then, --reps times, --scrapes GET /metrics over the Unix socket (httpx,
    one keep-alive connection, --scrape-gap s apart): latency per scrape, and the daemon's
    CPU over the batch per scrape, as measured and net of the idle rate. Then
    `procvisor down -c CONFIG`, and a check that no process of the config is left.

Every process started is killed (its group, SIGKILL) and reaped on the way out.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from bench._report import (
    Report,
    Sample,
    Table,
    Target,
    median,
    number,
    percentile,
    repeat,
    spread,
)
from procvisor import monitor
from procvisor.monitor import _procfs
from procvisor.store import Store

QUICK = {
    "layouts": "100x5",
    "calls": 3,
    "naive_calls": 1,
    "seconds": 5.0,
    "reps": 2,
    "daemon_services": 50,
    "scrapes": 50,
    "idle_seconds": 5.0,
}

SLEEP = "100077"
"""The argument of every sleep we start: in the command line of every process that is ours."""
DAEMON_SLEEP = "100078"
"""The argument of the sleep of every service of the daemon of (d)."""
LAYOUTS = {
    "100x5": (100, ["/bin/sh", "-c", " & ".join([f"/bin/sleep {SLEEP}"] * 4) + " & wait"], 5),
    "500x1": (500, ["/bin/sleep", SLEEP], 1),
}
"""Targets, the root's command, and processes per target."""
GOAL_PERCENT = 5.0
GOAL_PROCESSES = 500

_perf = time.perf_counter


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The monitor benchmark's own options."""
    parser.add_argument(
        "--layouts",
        default="100x5,500x1",
        help="target layouts, comma-separated, from 100x5 and 500x1 (default both)",
    )
    parser.add_argument(
        "--calls", type=int, default=10, help="samples per repetition, (a) (default 10)"
    )
    parser.add_argument(
        "--naive-calls",
        type=int,
        default=2,
        help="samples per repetition of the naive psutil peer, which is slow (default 2)",
    )
    parser.add_argument(
        "--gap", type=float, default=0.05, help="seconds between samples in (a) (default 0.05)"
    )
    parser.add_argument(
        "--interval", type=float, default=1.0, help="sampling interval in (b) (default 1 s)"
    )
    parser.add_argument(
        "--seconds", type=float, default=30.0, help="length of each run of (b) (default 30 s)"
    )
    parser.add_argument(
        "--daemon-services",
        type=int,
        default=200,
        help="services of the real daemon in (d); 0 skips (d) (default 200)",
    )
    parser.add_argument(
        "--scrapes", type=int, default=200, help="GET /metrics per repetition, (d) (default 200)"
    )
    parser.add_argument(
        "--scrape-gap",
        type=float,
        default=0.02,
        help="seconds between two scrapes in (d) (default 0.02)",
    )
    parser.add_argument(
        "--idle-seconds",
        type=float,
        default=30.0,
        help="window of the daemon's idle CPU in (d) (default 30 s)",
    )


# -- the processes ---------------------------------------------------------------------------


@dataclass
class Fleet:
    """The started roots and their targets."""

    roots: list[subprocess.Popen[bytes]]
    targets: list[monitor.Target]
    processes: int


def _ours(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return SLEEP.encode() in f.read()
    except OSError:
        return False


@contextlib.contextmanager
def fleet(layout: str) -> Iterator[Fleet]:
    """Start a layout's processes, wait until every tree is complete, kill them all after."""
    count, argv, per_target = LAYOUTS[layout]
    roots: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(count):
            roots.append(subprocess.Popen(argv, start_new_session=True, stdin=subprocess.DEVNULL))
        deadline = time.monotonic() + 60
        while True:
            groups = _procfs.scan().groups
            if all(len(groups.get(p.pid, ())) >= per_target for p in roots):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{layout}: the trees did not all start within 60 s")
            time.sleep(0.05)
        targets = [
            monitor.Target(p.pid, {"kind": "job", "job": str(i)}) for i, p in enumerate(roots)
        ]
        yield Fleet(roots, targets, count * per_target)
    finally:
        for proc in roots:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        for proc in roots:
            proc.wait()
        # Their children go to init (or our subreaper); wait until no sleep of ours is left.
        deadline = time.monotonic() + 30
        while any(_ours(int(n)) for n in os.listdir("/proc") if n.isdigit()):
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)


# -- the samplers ----------------------------------------------------------------------------


def _psutil_totals(procs: Sequence[psutil.Process]) -> int:
    """Read the fields the monitor reports from each process; return how many answered."""
    seen = 0
    for proc in procs:
        try:
            with proc.oneshot():
                proc.cpu_percent()
                proc.memory_info()
                proc.num_threads()
                proc.num_fds()
                proc.io_counters()
                proc.num_ctx_switches()
                proc.status()
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            continue
        seen += 1
    return seen


class PsutilScan:
    """The monitor's trees (one /proc scan), each member read with psutil."""

    def __init__(self) -> None:
        self._procs: dict[int, psutil.Process] = {}

    def sample(self, targets: Sequence[monitor.Target]) -> int:
        found = _procfs.scan()
        members: list[psutil.Process] = []
        procs: dict[int, psutil.Process] = {}
        for target in targets:
            stack = [target.pid, *found.groups.get(target.pid, ())]
            while stack:
                pid = stack.pop()
                if pid in procs:
                    continue
                proc = self._procs.get(pid)
                if proc is None:
                    try:
                        proc = psutil.Process(pid)
                    except psutil.NoSuchProcess:
                        continue
                procs[pid] = proc
                members.append(proc)
                stack.extend(found.children.get(pid, ()))
        self._procs = procs
        return _psutil_totals(members)


class PsutilNaive:
    """Per target: Process(root).children(recursive=True), then the same psutil reads."""

    def __init__(self) -> None:
        self._roots: dict[int, psutil.Process] = {}
        self._procs: dict[int, psutil.Process] = {}

    def sample(self, targets: Sequence[monitor.Target]) -> int:
        seen = 0
        procs: dict[int, psutil.Process] = {}
        for target in targets:
            root = self._roots.get(target.pid)
            try:
                if root is None:
                    root = self._roots[target.pid] = psutil.Process(target.pid)
                tree = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
            # Keep one Process per pid between samples, for cpu_percent's deltas.
            tree = [procs.setdefault(p.pid, self._procs.get(p.pid, p)) for p in tree]
            seen += _psutil_totals(tree)
        self._procs = procs
        return seen


def _procvisor() -> Callable[[Sequence[monitor.Target]], int]:
    sampler = monitor.Sampler()

    def sample(targets: Sequence[monitor.Target]) -> int:
        return sum(s.processes for s in sampler.sample(targets))

    return sample


FACTORIES: dict[str, Callable[[], Callable[[Sequence[monitor.Target]], int]]] = {
    "procvisor": _procvisor,
    "psutil+scan": lambda: PsutilScan().sample,
    "psutil": lambda: PsutilNaive().sample,
}


@dataclass
class Costs:
    """CPU and wall seconds per sample, one list entry per repetition (the median call)."""

    cpu: list[float]
    wall: list[float]
    seen: set[int]


def _measure(name: str, fl: Fleet, calls: int, gap: float, costs: Costs) -> Callable[[], Sample]:
    def measure() -> Sample:
        sample = FACTORIES[name]()
        sample(fl.targets)  # the first sample has no CPU baseline: untimed
        cpu_times, walls = [], []
        for _ in range(calls):
            time.sleep(gap)
            c, w = time.thread_time(), _perf()
            seen = sample(fl.targets)
            walls.append(_perf() - w)
            cpu_times.append(time.thread_time() - c)
            costs.seen.add(seen)
        costs.cpu.append(median(cpu_times))
        costs.wall.append(median(walls))
        return Sample(calls, sum(cpu_times), cpu_times)

    return measure


# -- (b) at the daemon's pace ----------------------------------------------------------------


@dataclass
class Paced:
    """One run of (b)."""

    samples: int
    seconds: float
    thread_cpu: float
    history_cpu: float
    max_wall: float
    rows: int


def _paced(fl: Fleet, interval: float, seconds: float) -> Paced:
    with tempfile.TemporaryDirectory(prefix="pvbench-monitor-") as tmp:
        store = Store(Path(tmp) / "state.db")
        try:
            history = monitor.History(store)
            sampler = monitor.Sampler()
            history.add(sampler.sample(fl.targets))
            count = rows = 0
            history_cpu = max_wall = 0.0
            start_usage = resource.getrusage(resource.RUSAGE_THREAD)
            start = _perf()
            tick = start
            while True:
                tick += interval
                if tick > start + seconds:
                    break
                time.sleep(max(0.0, tick - _perf()))
                w = _perf()
                samples = sampler.sample(fl.targets)
                c = time.thread_time()
                rows += history.add(samples)
                history_cpu += time.thread_time() - c
                max_wall = max(max_wall, _perf() - w)
                count += 1
            elapsed = _perf() - start
            usage = resource.getrusage(resource.RUSAGE_THREAD)
            rows += history.flush()
        finally:
            store.close()
    cpu = (usage.ru_utime - start_usage.ru_utime) + (usage.ru_stime - start_usage.ru_stime)
    return Paced(count, elapsed, cpu, history_cpu, max_wall, rows)


# -- (c) the files ---------------------------------------------------------------------------

FILES = ("stat", "status", "io", "fd")


def _file_costs(pids: Sequence[int], reps: int) -> dict[str, float]:
    """CPU seconds per read of each file (per stat() for fd), the best of ``reps`` passes."""
    out = {}
    for name in FILES:
        best = float("inf")
        for _ in range(reps):
            c = time.thread_time()
            for pid in pids:
                path = f"/proc/{pid}/{name}"
                with contextlib.suppress(OSError):
                    if name == "fd":
                        os.stat(path)
                    else:
                        fd = os.open(path, os.O_RDONLY)
                        try:
                            os.read(fd, 8192)
                        finally:
                            os.close(fd)
            best = min(best, time.thread_time() - c)
        out[name] = best / len(pids)
    return out


# -- (d) the real daemon ---------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    """utime + stime of process ``pid`` (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _procfs.CLK_TCK


def _daemon_leftovers() -> list[int]:
    """Live processes whose command line carries :data:`DAEMON_SLEEP`."""
    mark = DAEMON_SLEEP.encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                if mark not in f.read():
                    continue
            with open(f"/proc/{name}/stat", "rb") as f:
                if f.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                    continue
        except OSError:
            continue
        found.append(int(name))
    return found


@dataclass
class DaemonRun:
    """What (d) measured."""

    services: int
    start_s: float
    idle_window: float
    idle_cpu: float
    scrape_latencies: list[float]
    scrape_cpu: list[float]
    """Daemon CPU seconds per scrape, one per repetition, as measured."""
    scrape_net: list[float]
    """The same, less the idle rate over the batch's window."""
    body_bytes: int
    series: int
    rss_mib: float
    threads: int
    down_s: float
    left: int


def _procvisor(*args: str) -> list[str]:
    return [sys.executable, "-m", "procvisor", *args]


def _daemon(args: argparse.Namespace) -> DaemonRun:
    """Start a real daemon, measure it idle and scraped, stop it (see the module docstring)."""
    n = args.daemon_services
    base = Path(tempfile.mkdtemp(prefix="pvm-", dir="/tmp"))
    state = base / "s"
    conf = base / "procvisor.toml"
    socket_path = state / "procvisor.sock"
    if len(str(socket_path).encode()) >= 108:
        raise RuntimeError(f"{socket_path}: longer than a Unix socket's path may be")
    lines = [
        "[daemon]",
        f"state_dir = {json.dumps(str(state))}",
        "",
        "[monitor]",
        f'interval = "{args.interval:g}s"',
        "",
    ]
    for i in range(n):
        lines += [f"[services.s{i}]", f'command = ["/bin/sleep", "{DAEMON_SLEEP}"]', ""]
    conf.write_text("\n".join(lines))
    log = (base / "daemon.log").open("w")
    start = _perf()
    proc = subprocess.Popen(
        _procvisor("up", "-c", str(conf)),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    down_s = 0.0
    try:
        deadline = start + 120
        while True:
            if proc.poll() is not None:
                tail = " / ".join((base / "daemon.log").read_text().splitlines()[-3:])
                raise RuntimeError(f"the daemon exited ({proc.returncode}): {tail}")
            status = subprocess.run(
                _procvisor("status", "--json", "-c", str(conf)),
                capture_output=True,
                text=True,
                check=False,
            )
            if status.returncode == 0:
                items = json.loads(status.stdout)
                if len(items) == n and all(item["state"] == "running" for item in items):
                    break
            if _perf() > deadline:
                raise TimeoutError(f"not all {n} services running after 120 s")
            time.sleep(0.5)
        start_s = _perf() - start
        time.sleep(max(3.0, 3 * args.interval))  # a few samples, and the status calls over

        c0, w0 = _cpu_seconds(proc.pid), _perf()
        time.sleep(args.idle_seconds)
        idle_cpu, idle_window = _cpu_seconds(proc.pid) - c0, _perf() - w0
        idle_rate = idle_cpu / idle_window

        latencies: list[float] = []
        per_scrape: list[float] = []
        net: list[float] = []
        with httpx.Client(
            transport=httpx.HTTPTransport(uds=str(socket_path)),
            base_url="http://procvisor",
            timeout=60,
        ) as client:
            for _ in range(5):  # untimed: the connection, first renders
                body = client.get("/metrics").raise_for_status().content
            for _ in range(args.reps):
                c0, w0 = _cpu_seconds(proc.pid), _perf()
                for _ in range(args.scrapes):
                    t = _perf()
                    response = client.get("/metrics")
                    latencies.append(_perf() - t)
                    response.raise_for_status()
                    time.sleep(args.scrape_gap)
                cpu, window = _cpu_seconds(proc.pid) - c0, _perf() - w0
                per_scrape.append(cpu / args.scrapes)
                net.append((cpu - idle_rate * window) / args.scrapes)
        ps = psutil.Process(proc.pid)
        rss, threads = ps.memory_info().rss / 2**20, ps.num_threads()

        t = _perf()
        down = subprocess.run(
            _procvisor("down", "-c", str(conf)), capture_output=True, text=True, check=False
        )
        proc.wait(60)
        down_s = _perf() - t
        if down.returncode != 0:
            raise RuntimeError(f"procvisor down exited {down.returncode}: {down.stderr.strip()}")
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
        deadline = _perf() + 10
        while (left := _daemon_leftovers()) and _perf() < deadline:
            time.sleep(0.05)
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    shutil.rmtree(base, ignore_errors=True)
    text = body.decode()
    return DaemonRun(
        services=n,
        start_s=start_s,
        idle_window=idle_window,
        idle_cpu=idle_cpu,
        scrape_latencies=latencies,
        scrape_cpu=per_scrape,
        scrape_net=net,
        body_bytes=len(body),
        series=sum(1 for line in text.splitlines() if line and not line.startswith("#")),
        rss_mib=rss,
        threads=threads,
        down_s=down_s,
        left=len(left),
    )


# -- the report ------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> Report:
    """Measure every sampler on every layout, then procvisor's at the daemon's pace."""
    layouts = [name.strip() for name in args.layouts.split(",") if name.strip()]
    for name in layouts:
        if name not in LAYOUTS:
            raise ValueError(f"--layouts: unknown layout {name!r}; choose from {list(LAYOUTS)}")
    if args.calls < 1 or args.naive_calls < 1:
        raise ValueError("--calls and --naive-calls must be 1 or more")
    if args.daemon_services < 0 or args.scrapes < 1:
        raise ValueError("--daemon-services must be 0 or more and --scrapes 1 or more")
    host = sum(1 for n in os.listdir("/proc") if n.isdigit())
    rows_a: list[list[str]] = []
    rows_b: list[list[str]] = []
    rows_c: list[list[str]] = []
    targets: list[Target] = []
    notes: list[str] = []
    for layout in layouts:
        with fleet(layout) as fl:
            costs = {name: Costs([], [], set()) for name in FACTORIES}
            variants = {
                name: _measure(
                    name,
                    fl,
                    args.naive_calls if name == "psutil" else args.calls,
                    args.gap,
                    costs[name],
                )
                for name in FACTORIES
            }
            repeat(variants, args.reps)
            scanned = sum(1 for n in os.listdir("/proc") if n.isdigit())
            ours = median(costs["procvisor"].cpu)
            for name, cost in costs.items():
                cpu = median(cost.cpu)
                rows_a.append(
                    [
                        layout,
                        name,
                        f"{fl.processes:,}",
                        spread([c * 1e3 for c in cost.cpu]),
                        number(cpu / fl.processes * 1e6),
                        spread([w * 1e3 for w in cost.wall]),
                        number(cpu / args.interval * 100),
                        "1" if name == "procvisor" else f"{cpu / ours:.1f}×",
                    ]
                )
                if cost.seen != {fl.processes}:
                    notes.append(
                        f"{layout}, {name}: saw {sorted(cost.seen)} processes, not {fl.processes}."
                    )
            found = _procfs.scan()
            members = [p for t in fl.targets for p in found.groups.get(t.pid, ())]
            files = _file_costs(members, args.reps)
            rows_c.append([layout, *(number(files[name] * 1e6) for name in FILES)])
            paced = _paced(fl, args.interval, args.seconds)
            percent = paced.thread_cpu / paced.seconds * 100
            rows_b.append(
                [
                    layout,
                    f"{fl.processes:,}",
                    f"{args.interval:g}",
                    f"{paced.seconds:.1f}",
                    str(paced.samples),
                    f"{percent:.2f}",
                    f"{paced.history_cpu / paced.seconds * 100:.3f}",
                    number(paced.thread_cpu / max(1, paced.samples) * 1e3),
                    number(paced.max_wall * 1e3),
                    str(paced.rows),
                ]
            )
            if fl.processes >= GOAL_PROCESSES:
                targets.append(
                    Target(
                        f"{layout}: {fl.processes} processes sampled every "
                        f"{args.interval:g} s use < {GOAL_PERCENT:g} % of one core",
                        percent < GOAL_PERCENT,
                        f"{percent:.2f} % (sampler and history, thread CPU over "
                        f"{paced.seconds:.0f} s, {paced.samples} samples)",
                    )
                )
            notes.append(
                f"{layout}: {scanned:,} processes on the machine while measured "
                f"({host:,} before the benchmark started them); procvisor's scan reads "
                "/proc/PID/stat of every one of them."
            )
    daemon = _daemon(args) if args.daemon_services else None
    which = " and ".join(layouts) or "No"
    summary = (
        f"{which} targets of idle processes. (a): CPU of the sampling thread "
        f"per sample of every target, median of {args.calls} samples "
        f"({args.naive_calls} for the naive psutil peer) {args.gap:g} s apart per repetition, "
        f"{args.reps} repetitions interleaved, median [min–max] over repetitions; % of one "
        f"core is that CPU per {args.interval:g} s. (b): procvisor's Sampler and History "
        f"every {args.interval:g} s for {args.seconds:g} s."
    )
    if daemon is not None:
        summary += (
            f" (d), (e): a real daemon (`procvisor up`) with {daemon.services} `sleep` "
            f"services sampled every {args.interval:g} s: its idle CPU over "
            f"{args.idle_seconds:g} s, then {args.reps} × {args.scrapes} GET /metrics over "
            f"its Unix socket, {args.scrape_gap:g} s apart."
        )
    fd_method = (
        "stat(/proc/PID/fd).st_size" if _procfs.FD_COUNT_FROM_STAT else "listdir(/proc/PID/fd)"
    )
    notes.append(
        f"procvisor counts fds with {fd_method}; psutil lists the directory. Page size "
        f"{_procfs.PAGE_SIZE}, CLK_TCK {_procfs.CLK_TCK}."
    )
    tables = [
        Table(
            "(a) one sample of every target",
            [
                "layout",
                "sampler",
                "processes",
                "ms CPU / sample",
                "µs CPU / process",
                "ms wall / sample",
                f"% of one core at {args.interval:g} s",
                "vs procvisor",
            ],
            rows_a,
        ),
        Table(
            "(b) procvisor at the daemon's pace: Sampler + History into a SQLite store",
            [
                "layout",
                "processes",
                "interval s",
                "window s",
                "samples",
                "% of one core",
                "of which History %",
                "ms CPU / sample",
                "max ms wall / sample",
                "rows written",
            ],
            rows_b,
        ),
        Table(
            "(c) kernel cost of one read, µs CPU per process (best of --reps passes)",
            [
                "layout",
                *(f"/proc/PID/{name}" + (" (stat)" if name == "fd" else "") for name in FILES),
            ],
            rows_c,
        ),
    ]
    if daemon is not None:
        idle_pct = daemon.idle_cpu / daemon.idle_window * 100
        tables += [
            Table(
                f"(d) the daemon idle with {daemon.services} services sampled every "
                f"{args.interval:g} s (CPU of /proc/DAEMON/stat, every thread)",
                [
                    "services",
                    "interval s",
                    "window s",
                    "CPU s",
                    "% of one core",
                    "ms CPU / interval",
                    "RSS MiB",
                    "threads",
                ],
                [
                    [
                        str(daemon.services),
                        f"{args.interval:g}",
                        f"{daemon.idle_window:.1f}",
                        f"{daemon.idle_cpu:.2f}",
                        f"{idle_pct:.2f}",
                        number(daemon.idle_cpu / daemon.idle_window * args.interval * 1e3),
                        f"{daemon.rss_mib:.0f}",
                        str(daemon.threads),
                    ]
                ],
            ),
            Table(
                f"(e) GET /metrics over the Unix socket, {daemon.services} services: latency "
                f"of {len(daemon.scrape_latencies)} scrapes; the daemon's CPU per scrape, "
                "median [min–max] over repetitions",
                [
                    "body bytes",
                    "series",
                    "p50 ms",
                    "p99 ms",
                    "max ms",
                    "daemon ms CPU / scrape",
                    "net of idle ms",
                ],
                [
                    [
                        f"{daemon.body_bytes:,}",
                        f"{daemon.series:,}",
                        number(percentile(daemon.scrape_latencies, 50) * 1e3),
                        number(percentile(daemon.scrape_latencies, 99) * 1e3),
                        number(max(daemon.scrape_latencies) * 1e3),
                        spread([c * 1e3 for c in daemon.scrape_cpu]),
                        spread([c * 1e3 for c in daemon.scrape_net]),
                    ]
                ],
            ),
        ]
        targets.append(
            Target(
                f"`procvisor down` leaves none of the {daemon.services} services' processes",
                daemon.left == 0,
                f"{daemon.left} left ({daemon.down_s:.1f} s from `down` to the daemon's exit)",
            )
        )
        notes.append(
            f"(d), (e): all {daemon.services} services running {daemon.start_s:.1f} s after "
            "`procvisor up` (polled with `procvisor status --json`); measured from 3 s later. "
            f"CPU from utime + stime at CLK_TCK {_procfs.CLK_TCK} "
            f"({1000 / _procfs.CLK_TCK:g} ms steps), over the idle window "
            "and over each batch of scrapes; 'net of idle' subtracts the idle "
            "rate over the batch's window, leaving what the scrapes themselves cost. The "
            "latency is the client's (httpx, one keep-alive connection), request to body; "
            "series = the body's sample lines."
        )
    return Report("monitor", summary, tables, targets, notes)
