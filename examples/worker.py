"""A small worker for examples/procvisor.toml: works through tasks, one line of output each.

    python3 worker.py                 run until stopped (SIGTERM or SIGINT), a task per interval
    python3 worker.py --once          do --tasks tasks, then exit 0 (the example's job)

Environment: ``WORKER_INTERVAL`` seconds between tasks (default 1); procvisor sets
``PROCVISOR_SERVICE`` and ``PROCVISOR_INSTANCE``, which name the lines it prints.
"""

import argparse
import os
import signal
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--once", action="store_true", help="do --tasks tasks, then exit")
    parser.add_argument("--tasks", type=int, default=3, help="tasks to do with --once")
    args = parser.parse_args()

    interval = float(os.environ.get("WORKER_INTERVAL", "1"))
    name = os.environ.get("PROCVISOR_INSTANCE") or os.environ.get("PROCVISOR_SERVICE") or "worker"
    # Stop between two tasks, not in the middle of one: the handler only raises SystemExit,
    # which the sleep below lets through.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda signum, frame: sys.exit(0))

    print(f"{name}: started, pid {os.getpid()}", flush=True)
    done = 0
    try:
        while not args.once or done < args.tasks:
            started = time.monotonic()
            total = sum(i * i for i in range(200_000))  # the "work"
            done += 1
            print(
                f"{name}: task {done} done in {time.monotonic() - started:.3f}s ({total})",
                flush=True,
            )
            if not args.once or done < args.tasks:
                time.sleep(interval)
    finally:
        print(f"{name}: stopping after {done} tasks", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
