"""Run by test_recovery: a scheduler in its own process, to be killed with SIGKILL.

Usage: python crash_worker.py STORE LOG_DIR OUT LOCKS N
Submits N jobs (unless the store has some already), prints "submitted", and runs them.
Each job takes a lock named after itself (flock -n): if another run of the same job still
held it, the job writes "OVERLAP id" instead of running.
"""

from __future__ import annotations

import asyncio
import sys

from procvisor.jobs import JobsConfig, JobSpec, Scheduler
from procvisor.policy.admission import Capacity
from procvisor.store import Store


def job(n: int, out: str, locks: str) -> JobSpec:
    body = f'echo start {n} >> "{out}"; sleep 0.05; echo end {n} >> "{out}"'
    script = (
        f'flock -n "{locks}/{n}" sh -c \'{body}\' || {{ echo OVERLAP {n} >> "{out}"; exit 1; }}'
    )
    return JobSpec(("sh", "-c", script), requests="cpu=0.5")


async def main(store_path: str, log_dir: str, out: str, locks: str, n: int) -> None:
    store = Store(store_path)
    config = JobsConfig(capacity=Capacity(cpu=2.0), grace=1.0)
    async with Scheduler(store, log_dir, config) as jobs:
        jobs.submit_many([job(i, out, locks) for i in range(1, n + 1)])
        print("submitted", flush=True)
        await jobs.wait(n, timeout=60)


if __name__ == "__main__":
    store_path, log_dir, out, locks, count = sys.argv[1:]
    asyncio.run(main(store_path, log_dir, out, locks, int(count)))
