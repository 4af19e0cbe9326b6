"""The job scheduler: N `true` jobs end to end, submit rates, decision cost vs queue size.

All in one process, variants interleaved repetition by repetition:

e2e       N `true` jobs submitted at once (one submit_many) to a Scheduler on a fresh SQLite
          store, each asking cpu=0.01, max_running = --concurrency; jobs/s from submit to the
          last job recorded succeeded (every transition written to the store first).
          Peers, interleaved with it: `xargs -P C -n 1 true` over the same N lines, the floor
          for running N commands C at a time with nothing durable; and Celery (below).
latency   submit-to-start while capacity is free: one job submitted every --interval
          seconds (far below the throughput), latency = the store's `started - submitted`.
submit    submit_many of N delayed jobs (they never run) into a running Scheduler (spec
          checks, one transaction, queue pushes), and Store.add_jobs alone (the store's part).
decision  one scheduling decision (JobQueue.candidates + decide_starts, then removing the jobs
          started) with 1,000 / 10,000 / 100,000 jobs queued, per discipline: (a) 16 slots
          free, 16 jobs start; (b) nothing fits, so decide_starts looks at max_scan = 500
          candidates, the most one decision does. The curve should be flat.

Celery, the peer the issue names, runs in its own virtual environment (--celery-python,
default /tmp/peervenv-celery/bin/python; make it with `python3 -m venv /tmp/peervenv-celery
&& /tmp/peervenv-celery/bin/pip install celery redis packaging`): the prefork pool, the
local Redis server (--celery-broker) as broker and result backend, one task that runs
`subprocess.run(["true"])`, at each --celery-concurrency (default: the Scheduler's
max_running, then the number of cores). For each measurement a worker is started in its
own process group (outside the timing) and waited for (its worker_ready signal), the
queue is purged, a producer process of that Python sends the N tasks one apply_async each
and waits for every result; jobs/s = N / (first send to last result). The worker's group
is stopped after (SIGTERM, then SIGKILL to whatever is left). See bench/_celery_app.py.
When that Python or Redis is missing, Celery is skipped and the report says why.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from bench._report import Report, Sample, Table, Target, median, number, percentile, repeat, spread
from procvisor.jobs import JobsConfig, JobSpec, Scheduler
from procvisor.policy.admission import Capacity, Requests, decide_starts
from procvisor.policy.jobqueue import JobQueue
from procvisor.store import NewJob, Store

QUICK = {"n": 1000, "reps": 2, "latency_jobs": 200, "sizes": "1000,10000"}

TRUE = ("true",)
SMALL = Requests(cpu=0.01)
CELERY_PYTHON = "/tmp/peervenv-celery/bin/python"
CELERY_APP = Path(__file__).with_name("_celery_app.py")
REDIS_START = (
    "redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save '' "
    "--appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The jobs benchmark's options."""
    parser.add_argument("--n", type=int, default=10_000, help="jobs per e2e run (10000)")
    parser.add_argument("--concurrency", type=int, default=64, help="max_running and xargs -P (64)")
    parser.add_argument(
        "--latency-jobs", type=int, default=1000, help="jobs in the latency run (1000)"
    )
    parser.add_argument(
        "--interval", type=float, default=0.004, help="seconds between latency submits (0.004)"
    )
    parser.add_argument(
        "--sizes", default="1000,10000,100000", help="queue sizes of the decision curve"
    )
    parser.add_argument(
        "--celery-python",
        default=CELERY_PYTHON,
        help=f"Python of a venv with celery and redis; Celery is skipped without it "
        f"(default {CELERY_PYTHON})",
    )
    parser.add_argument(
        "--celery-broker",
        default="redis://127.0.0.1:6379/0",
        help="Redis URL for Celery's broker and result backend (redis://127.0.0.1:6379/0)",
    )
    parser.add_argument(
        "--celery-concurrency",
        default="",
        help="prefork pool sizes, comma-separated (default: --concurrency, then the cores)",
    )


# -- end to end ------------------------------------------------------------------------------


def _config(concurrency: int) -> JobsConfig:
    return JobsConfig(capacity=Capacity(cpu=64.0), max_running=concurrency, grace=1.0)


async def _e2e(n: int, concurrency: int, root: Path) -> tuple[float, list[float]]:
    """Seconds from submit to the last success, and each job's submit-to-start."""
    with Store(root / "jobs.db") as store:
        jobs = Scheduler(store, root, _config(concurrency))
        await jobs.start()
        try:
            specs = [JobSpec(TRUE, requests=SMALL) for _ in range(n)]
            start = time.perf_counter()
            ids = jobs.submit_many(specs)
            await asyncio.gather(*(jobs.wait(i) for i in ids[-concurrency:]))
            for i in ids:
                await jobs.wait(i)
            wall = time.perf_counter() - start
        finally:
            await jobs.aclose()
        rows = store.jobs(limit=None)
    assert all(r.state == "succeeded" for r in rows), "a job did not succeed"
    return wall, [r.started - r.submitted for r in rows if r.started is not None]


def _fresh_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="pvbench-jobs-"))


def _procvisor(n: int, concurrency: int) -> Callable[[], Sample]:
    def measure() -> Sample:
        root = _fresh_dir()
        try:
            wall, waits = asyncio.run(_e2e(n, concurrency, root))
        finally:
            shutil.rmtree(root, ignore_errors=True)
        return Sample(n, wall, waits)

    return measure


def _xargs(n: int, concurrency: int) -> Callable[[], Sample]:
    lines = "".join(f"{i}\n" for i in range(n)).encode()

    def measure() -> Sample:
        start = time.perf_counter()
        subprocess.run(
            ["xargs", "-P", str(concurrency), "-n", "1", "true"], input=lines, check=True
        )
        return Sample(n, time.perf_counter() - start)

    return measure


# -- Celery ----------------------------------------------------------------------------------


@dataclass
class Celery:
    """Where Celery runs, and what its runs saw (send seconds per measurement, by pool size)."""

    python: str
    broker: str
    workdir: Path
    version: str
    redis: str
    sends: dict[int, list[float]] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        """The environment of its processes: ours, without procvisor's venv."""
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
        }
        env["PVBENCH_CELERY_BROKER"] = self.broker
        return env


def _redis_info(url: str) -> str:
    """Redis's version, after a PING; raises OSError when it does not answer."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 6379
    with socket.create_connection((host, port), timeout=3) as sock:
        reader = sock.makefile("rb")
        sock.sendall(b"PING\r\n")
        if not reader.readline().startswith(b"+PONG"):
            raise OSError(f"{host}:{port} did not answer PING with PONG")
        sock.sendall(b"INFO server\r\n")
        size = int(reader.readline()[1:])
        info = reader.read(size + 2).decode(errors="replace")
    version = next(
        (line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("redis_")),
        "?",
    )
    return f"Redis {version} at {host}:{port}"


def _celery_setup(python: str, broker: str) -> Celery | str:
    """A :class:`Celery` ready to run, or why it cannot."""
    if not os.access(python, os.X_OK):
        return (
            f"Celery skipped: no Python at {python} (make it with `python3 -m venv "
            f"{Path(python).parent.parent} && {Path(python).parent}/pip install celery redis "
            "packaging`, or name another with --celery-python)."
        )
    probe = subprocess.run(
        [python, "-c", "import celery, redis, packaging; print(celery.__version__)"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        return f"Celery skipped: {python} cannot import celery, redis and packaging ({last})."
    try:
        redis = _redis_info(broker)
    except (OSError, ValueError) as exc:
        return (
            f"Celery skipped: Redis at {broker} does not answer ({exc}); start it with "
            f"`{REDIS_START}`."
        )
    workdir = Path(tempfile.mkdtemp(prefix="pvbench-celery-"))
    shutil.copy(CELERY_APP, workdir / CELERY_APP.name)
    return Celery(python, broker, workdir, probe.stdout.strip(), redis)


def _group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``, from /proc."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != b"Z":
            found.append(int(name))
    return found


def _stop_group(proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM to the leader (Celery's warm shutdown), then SIGKILL to whatever is left of its
    process group; returns when no process of the group is alive."""
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(grace)
    deadline = time.monotonic() + 30
    while True:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.wait()
        if not _group_members(proc.pid):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"Celery's process group {proc.pid} is still there after SIGKILL")
        time.sleep(0.05)


@contextlib.contextmanager
def _celery_worker(celery: Celery, concurrency: int) -> Iterator[None]:
    """A prefork worker of ``concurrency`` processes, ready; its whole group stopped after."""
    ready = celery.workdir / f"ready-{concurrency}"
    ready.unlink(missing_ok=True)
    log_path = celery.workdir / f"worker-{concurrency}.log"
    argv = [
        celery.python,
        *("-m", "celery", "-A", "_celery_app", "worker", "--pool", "prefork"),
        *("--concurrency", str(concurrency), "--loglevel", "WARNING"),
        *("--without-gossip", "--without-mingle", "--without-heartbeat"),
        *("--hostname", f"pvbench{concurrency}@%h"),
    ]
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            argv,
            cwd=celery.workdir,
            env={**celery.env(), "PVBENCH_CELERY_READY": str(ready)},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 180
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = " / ".join(log_path.read_text(errors="replace").splitlines()[-3:])
                raise RuntimeError(f"the Celery worker did not get ready: {tail}")
            time.sleep(0.05)
        yield
    finally:
        _stop_group(proc, grace=60)


def _celery(n: int, concurrency: int, celery: Celery) -> Callable[[], Sample]:
    def measure() -> Sample:
        with _celery_worker(celery, concurrency):
            done = subprocess.run(
                [celery.python, CELERY_APP.name, str(n)],
                cwd=celery.workdir,
                env=celery.env(),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=max(600, n / 10),
                check=False,
            )
        if done.returncode != 0:
            tail = " / ".join(done.stderr.strip().splitlines()[-3:])
            raise RuntimeError(f"the Celery producer failed ({done.returncode}): {tail}")
        out = json.loads(done.stdout.strip().splitlines()[-1])
        celery.sends.setdefault(concurrency, []).append(out["send"])
        return Sample(n, out["wall"], out["waits"])

    return measure


def _celery_cleanup(celery: Celery) -> None:
    """Delete kombu's keys for the queue from Redis, then the scratch directory."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(
            [celery.python, CELERY_APP.name, "--cleanup"],
            cwd=celery.workdir,
            env=celery.env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=60,
            check=False,
        )
    shutil.rmtree(celery.workdir, ignore_errors=True)


async def _latency(count: int, interval: float, root: Path) -> list[float]:
    with Store(root / "jobs.db") as store:
        jobs = Scheduler(store, root, _config(64))
        await jobs.start()
        try:
            ids = []
            next_at = time.monotonic()
            for _ in range(count):
                ids.append(jobs.submit(JobSpec(TRUE, requests=SMALL)))
                next_at += interval
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            for i in ids:
                await jobs.wait(i)
        finally:
            await jobs.aclose()
        rows = store.jobs(limit=None)
    return [r.started - r.submitted for r in rows if r.started is not None]


# -- submitting ------------------------------------------------------------------------------


async def _submit_many(n: int, root: Path) -> float:
    with Store(root / "jobs.db") as store:
        jobs = Scheduler(store, root, _config(64))
        await jobs.start()
        try:
            later = time.time() + 3600
            specs = [JobSpec(TRUE, requests=SMALL, not_before=later) for _ in range(n)]
            start = time.perf_counter()
            jobs.submit_many(specs)
            return time.perf_counter() - start
        finally:
            await jobs.aclose()


def _submit(n: int) -> Callable[[], Sample]:
    def measure() -> Sample:
        root = _fresh_dir()
        try:
            return Sample(n, asyncio.run(_submit_many(n, root)))
        finally:
            shutil.rmtree(root, ignore_errors=True)

    return measure


def _add_jobs(n: int) -> Callable[[], Sample]:
    spec = JobSpec(TRUE, requests=SMALL).to_dict()

    def measure() -> Sample:
        root = _fresh_dir()
        try:
            with Store(root / "jobs.db") as store:
                rows = [NewJob("true", "default", 2, spec, time.time()) for _ in range(n)]
                start = time.perf_counter()
                store.add_jobs(rows)
                return Sample(n, time.perf_counter() - start)
        finally:
            shutil.rmtree(root, ignore_errors=True)

    return measure


# -- decision cost ---------------------------------------------------------------------------


def _decision_cost(discipline: str, size: int, *, fits: bool, rounds: int = 200) -> float:
    """Median seconds of one decision with ``size`` jobs queued (kept at that size)."""
    queue: JobQueue[int] = JobQueue(discipline, aging=10.0)
    tenants = [f"t{i}" for i in range(10)]
    levels = itertools.cycle(["normal", "high", "low", "normal", "background"])
    need = Requests(cpu=1.0) if fits else Requests(cpu=2.0)
    now = 0.0
    for i in range(size):
        queue.push(
            i,
            now=now + i * 1e-6,
            tenant=tenants[i % 10],
            priority=next(levels),
            requests=need,
            runtime=60.0,
            deadline=1e6 + i if discipline == "edf" else None,
        )
    # 48 of 64 slots busy (1 CPU each, on 64 CPUs): 16 one-CPU jobs start; a two-CPU job
    # does not fit in what the running ones leave when they hold 63 CPUs.
    from procvisor.policy.admission import RunningJob  # noqa: PLC0415

    busy = 48 if fits else 63
    running = [RunningJob(k, "t0", Requests(cpu=1.0), 0.0, 60.0) for k in range(busy)]
    capacity = Capacity(cpu=64.0, max_running=64)
    times = []
    seq = size
    for r in range(rounds):
        now = 1.0 + r * 1e-3
        start = time.perf_counter()
        queue.expire(now)
        plan = decide_starts(queue.candidates(now), running, capacity, now=now)
        for job in plan.start:
            queue.remove(job)
        times.append(time.perf_counter() - start)
        for job in plan.start:  # put as many back, so the size stays
            queue.push(seq, now=now, tenant=job.tenant, requests=need, runtime=60.0)
            seq += 1
        assert len(plan.start) == (16 if fits else 0) and (fits or plan.scanned == 500)
    return median(times)


# -- the run ---------------------------------------------------------------------------------


def _ms(value: float) -> str:
    return number(value * 1e3)


def _latency_row(name: str, values: list[float]) -> list[str]:
    return [name, _ms(percentile(values, 50)), _ms(percentile(values, 99)), _ms(max(values))]


def run(args: argparse.Namespace) -> Report:
    """Run every part; return the report."""
    n, c = args.n, args.concurrency
    cores = os.cpu_count() or 1
    if args.celery_concurrency:
        pools = [int(x) for x in args.celery_concurrency.split(",") if x.strip()]
    else:
        pools = [c, cores]
    pools = list(dict.fromkeys(pools))
    if not pools or min(pools) < 1:
        raise ValueError("--celery-concurrency: give pool sizes of 1 or more")
    celery = _celery_setup(args.celery_python, args.celery_broker)
    variants = {"procvisor Scheduler": _procvisor(n, c)}
    if isinstance(celery, Celery):
        variants |= {f"Celery {k}": _celery(n, k, celery) for k in pools}
    variants["xargs -P"] = _xargs(n, c)
    try:
        e2e = repeat(variants, args.reps)
    finally:
        if isinstance(celery, Celery):
            _celery_cleanup(celery)
    waits = {name: [w for s in samples for w in s.latencies] for name, samples in e2e.items()}
    rates = {name: [s.rate for s in samples] for name, samples in e2e.items()}

    latencies: list[float] = []
    for _ in range(args.reps):
        root = _fresh_dir()
        try:
            latencies += asyncio.run(_latency(args.latency_jobs, args.interval, root))
        finally:
            shutil.rmtree(root, ignore_errors=True)

    submits = repeat(
        {"Scheduler.submit_many": _submit(n), "Store.add_jobs": _add_jobs(n)}, args.reps
    )
    submit_rates = {name: [s.rate for s in samples] for name, samples in submits.items()}

    sizes = [int(s) for s in args.sizes.split(",")]
    curve: dict[tuple[str, bool], list[float]] = {}
    for discipline in ("fifo", "priority", "fair", "edf"):
        for fits in (True, False):
            curve[discipline, fits] = [
                _decision_cost(discipline, size, fits=fits) for size in sizes
            ]

    floor = median(rates["xargs -P"])
    ours = median(rates["procvisor Scheduler"])

    def why(k: int) -> str:
        same = ["= max_running"] if k == c else []
        same += ["= cores"] if k == cores else []
        return f" ({', '.join(same)})" if same else ""

    labels = {
        "procvisor Scheduler": "procvisor Scheduler, max_running "
        f"{c} (SQLite store, every transition written first)",
        **{
            f"Celery {k}": f"Celery prefork, concurrency {k}{why(k)} (Redis broker and "
            "result backend)"
            for k in pools
        },
        "xargs -P": f"`xargs -P {c}` (floor: nothing stored)",
    }
    rows_a = []
    for name, label in labels.items():
        if name not in rates:
            continue
        rate = median(rates[name])
        rows_a.append(
            [
                label,
                spread(rates[name]),
                f"{rate / floor:.2f}×",
                f"{rate / ours:.2f}×",
                f"{_ms(percentile(waits[name], 50))} / {_ms(percentile(waits[name], 99))}"
                if waits[name]
                else "–",
            ]
        )
    tables = [
        Table(
            f"(a) {n:,} `true` jobs end to end (jobs/s; median [min–max])",
            [
                "method",
                "jobs/s",
                "× xargs -P",
                "× procvisor",
                "submit→start p50 / p99 ms (queued behind others)",
            ],
            rows_a,
        ),
        Table(
            f"(b) submit → start while capacity is free: one job every {args.interval * 1e3:g} "
            f"ms, {args.latency_jobs} jobs × {args.reps} (ms)",
            ["", "p50", "p99", "max"],
            [_latency_row("procvisor Scheduler", latencies)],
        ),
        Table(
            f"(c) submitting {n:,} jobs (jobs/s; median [min–max])",
            ["method", "jobs/s"],
            [[name, spread(rates_)] for name, rates_ in submit_rates.items()],
        ),
        Table(
            "(d) one scheduling decision by queue size (µs, median of 200 decisions): "
            "16 jobs start / nothing fits (500 candidates looked at)",
            ["discipline", *[f"{size:,} queued" for size in sizes], "largest ÷ smallest"],
            [
                [
                    discipline,
                    *[
                        f"{a * 1e6:,.0f} / {b * 1e6:,.0f}"
                        for a, b in zip(
                            curve[discipline, True], curve[discipline, False], strict=True
                        )
                    ],
                    f"{curve[discipline, True][-1] / curve[discipline, True][0]:.2f} / "
                    f"{curve[discipline, False][-1] / curve[discipline, False][0]:.2f}",
                ]
                for discipline in ("fifo", "priority", "fair", "edf")
            ],
        ),
    ]
    worst = max(curve[key][-1] / curve[key][0] for key in curve)
    targets = [
        Target(
            f"{n:,} `true` jobs end to end ≥ 1,000 jobs/s",
            median(rates["procvisor Scheduler"]) >= 1000,
            f"{median(rates['procvisor Scheduler']):,.0f} jobs/s (xargs -P: {floor:,.0f})",
        ),
        Target(
            "p99 submit → start < 100 ms while capacity is free",
            percentile(latencies, 99) < 0.1,
            f"p99 {_ms(percentile(latencies, 99))} ms, p50 {_ms(percentile(latencies, 50))} ms",
        ),
        Target(
            "submit_many ≥ 10,000 jobs/s into the store",
            median(submit_rates["Scheduler.submit_many"]) >= 10_000,
            f"{median(submit_rates['Scheduler.submit_many']):,.0f} jobs/s "
            f"(Store.add_jobs alone {median(submit_rates['Store.add_jobs']):,.0f})",
        ),
        Target(
            f"a decision costs about the same at {sizes[0]:,} and {sizes[-1]:,} queued (≤ 3×)",
            worst <= 3.0,
            f"largest ratio {worst:.2f}× over the disciplines and both cases",
        ),
    ]
    notes = [
        f"{os.cpu_count()} cores. Jobs ask for cpu=0.01 so that the node's CPU count does not "
        f"bound the concurrency; max_running = {c}. The Scheduler runs in this process, with "
        "its SQLite store (WAL, synchronous=NORMAL) in a fresh temporary directory per run.",
        "(a)'s submit→start includes the wait behind the other queued jobs (all N are "
        "submitted at once); (b) is the latency of admission itself.",
    ]
    if isinstance(celery, Celery):
        sends = ", ".join(
            f"{n / median(celery.sends[k]):,.0f} jobs/s at concurrency {k}" for k in pools
        )
        notes.append(
            f"Celery {celery.version} ({Path(celery.python).parent.parent}), {celery.redis} "
            f"({args.celery_broker}) as broker and result backend, queue pvbench-jobs. "
            "Worker: `celery worker --pool prefork --concurrency K --without-gossip "
            "--without-mingle --without-heartbeat --loglevel WARNING`, Celery's defaults "
            "otherwise (prefetch multiplier 4, acks on receipt); a fresh worker per "
            "measurement, started and waited for (worker_ready) outside the timing, its "
            "process group stopped after. The producer, a separate process started outside "
            "the timing, purges the queue, sends N tasks one apply_async each over one "
            "connection and waits for every result (ResultSet.join: results arrive over "
            "Redis pub/sub); jobs/s = N / (first send to last result). Its send phase alone "
            f"ran at {sends} (median). submit→start: from the producer's time.time() before "
            "apply_async to the task's time.time() as it starts, before it runs `true`. "
            f"The producer, the worker, its pool and Redis all share the {cores} cores with the "
            "processes they start."
        )
    else:
        notes.append(celery)
    return Report(
        "jobs",
        "The job scheduler end to end, its submit rate, and what one decision costs.",
        tables,
        targets,
        notes,
    )
