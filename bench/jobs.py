"""The job scheduler: N `true` jobs end to end, submit rates, decision cost vs queue size.

All in one process, variants interleaved repetition by repetition:

e2e       N `true` jobs submitted at once (one submit_many) to a Scheduler on a fresh SQLite
          store, each asking cpu=0.01, max_running = --concurrency; jobs/s from submit to the
          last job recorded succeeded (every transition written to the store first).
          Peer: `xargs -P C -n 1 true` over the same N lines, the floor for running N
          commands C at a time with nothing durable.
latency   submit-to-start while capacity is free: one job submitted every --interval
          seconds (far below the throughput), latency = the store's `started - submitted`.
submit    submit_many of N delayed jobs (they never run) into a running Scheduler (spec
          checks, one transaction, queue pushes), and Store.add_jobs alone (the store's part).
decision  one scheduling decision (JobQueue.candidates + decide_starts, then removing the jobs
          started) with 1,000 / 10,000 / 100,000 jobs queued, per discipline: (a) 16 slots
          free, 16 jobs start; (b) nothing fits, so decide_starts looks at max_scan = 500
          candidates, the most one decision does. The curve should be flat.

Celery (prefork pool, Redis on loopback) is the peer the issue names; it is not installed
here. To add it: a variant in `_peers()` that sends N `subprocess.run(["true"])` tasks and
waits for their results, measured like `xargs` (see the note in the report).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench._report import Report, Sample, Table, Target, median, number, percentile, repeat, spread
from procvisor.jobs import JobsConfig, JobSpec, Scheduler
from procvisor.policy.admission import Capacity, Requests, decide_starts
from procvisor.policy.jobqueue import JobQueue
from procvisor.store import NewJob, Store

QUICK = {"n": 1000, "reps": 2, "latency_jobs": 200, "sizes": "1000,10000"}

TRUE = ("true",)
SMALL = Requests(cpu=0.01)


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
    e2e = repeat({"procvisor Scheduler": _procvisor(n, c), "xargs -P": _xargs(n, c)}, args.reps)
    waits = [w for s in e2e["procvisor Scheduler"] for w in s.latencies]
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
    tables = [
        Table(
            f"(a) {n:,} `true` jobs end to end, {c} at a time (jobs/s; median [min–max])",
            ["method", "jobs/s", "× xargs -P", "submit→start p50 / p99 ms (queued behind others)"],
            [
                [
                    "procvisor Scheduler (SQLite store, every transition written first)",
                    spread(rates["procvisor Scheduler"]),
                    f"{median(rates['procvisor Scheduler']) / floor:.2f}×",
                    f"{_ms(percentile(waits, 50))} / {_ms(percentile(waits, 99))}",
                ],
                ["`xargs -P` (floor: nothing stored)", spread(rates["xargs -P"]), "1.00×", "–"],
            ],
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
        "Celery (prefork pool, Redis broker on loopback) is not installed on this machine; "
        "add it as a third variant of (a) when it is (see the module docstring).",
    ]
    return Report(
        "jobs",
        "The job scheduler end to end, its submit rate, and what one decision costs.",
        tables,
        targets,
        notes,
    )
