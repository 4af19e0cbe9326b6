"""Python worker pools side by side: procvisor.Pool, the stdlib's two pools, loky and pebble.

Every measurement is one fresh interpreter (``python -m bench.pools CONFIG``, a child of the
runner, cwd the repository root) that builds one pool, warms it up (2 × 4·workers no-op tasks,
except for startup) and prints one JSON line: the approach, adapters and task functions of the
team's harness shared/peers/pool_bench.py. procvisor runs with this interpreter, the peers with
--peer-python's (a venv with loky and pebble). 2 workers unless said. Tasks: ``noop(x): return
x`` and ``busy1ms(x)``, which spins on ``time.perf_counter()`` for 1 ms; both are functions of
this module, which every pool sends by reference.

submit   N tasks submitted one at a time (``submit`` + ``add_done_callback``; mp:
         ``apply_async(callback=)``; pebble: ``schedule`` + ``add_done_callback``), then all
         awaited. Throughput = N / (last completion - first submit); "burst" latency = callback
         time - time just before that task's submit (mostly queueing). Over the same window:
         CPU time of the pool's process (all threads) and of its workers (/proc), per task.
         After it, with psutil: RSS and USS of each worker process (median over the workers).
map      ``map(fn, range(N), chunksize=C)``, consumed into a list; throughput only. C is 1
         (every task on its own), and 256 for no-op tasks (how a user maps many tiny
         ones; procvisor-cmd has no chunks and runs it with one task per item).
rtt      submit one no-op task, wait for its result, repeat: the unloaded round trip.
startup  pool constructor -> first no-op result (the import of the module that holds the
         pool is timed apart, before, as in the team harness: for procvisor that is
         ``procvisor.pool._pool``; lazy imports on first use are inside), then the time until the
         pool's worker processes all exist, and shutdown (``shutdown(wait=True)``; mp,
         pebble: close + join).
profile  (once per procvisor row, after the rest) the no-op submit run under cProfile, in the
         calling thread and the pool's I/O thread: where procvisor's own CPU per task goes.

Tools: procvisor (``procvisor.Pool(workers=2)``, its default ``prefetch=4``), procvisor-pf0
(the same with ``prefetch=0``: a task only to an idle worker), cf
(``concurrent.futures.ProcessPoolExecutor``), mp
(``multiprocessing.Pool``, fork), loky (``loky.get_reusable_executor``), pebble
(``pebble.ProcessPool``). Runs are interleaved: each repetition runs every configuration with
every tool, in an order that rotates from one repetition to the next. Before them: a wait for
the 1-minute load to drop to --max-load (the machine is shared), then one untimed run per tool
(warm bytecode and page caches; the children write bytecode even though the dev shells set
PYTHONDONTWRITEBYTECODE). Targets, PASS or MISS per procvisor row: no-op
submit ≥ mp and ≥ 1.5× cf, loky and pebble; 1 ms tasks ≥ 90 % of 2,000/s; round-trip p99 and
start → first result below all four peers.
"""

from __future__ import annotations

import os
import sys
import time

# This module is also every measured child, and the module the workers import the tasks from
# (fresh-interpreter pools import it in each worker before its first task). So it imports next
# to nothing at the top, as the harness's tasks.py (not even typing); the rest is imported
# where it is used.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Sequence
    from typing import Any

    from bench._report import Report, Table

    Results = dict[tuple[str, str], list[dict[str, Any]]]
    """(tool, configuration key) -> the figures of each run."""

QUICK = {
    "n": 2000,
    "busy_n": 400,
    "rtt_n": 200,
    "reps": 1,
    "busy_reps": 1,
    "startup_reps": 1,
    "load_wait": 0,
}
TOOLS = ("procvisor", "procvisor-pf0", "procvisor-cmd", "cf", "mp", "loky", "pebble")
PEERS = ("cf", "mp", "loky", "pebble")
OURS = ("procvisor", "procvisor-pf0")
"""The rows the targets are checked on."""
OWN = (*OURS, "procvisor-cmd")
"""The rows that run with this interpreter."""
LABELS = {
    "procvisor": "procvisor.Pool (default, prefetch=4)",
    "procvisor-pf0": "procvisor.Pool (prefetch=0)",
    "procvisor-cmd": "procvisor.CommandPool (Python JSON-lines worker)",
    "cf": "concurrent.futures.ProcessPoolExecutor",
    "mp": "multiprocessing.Pool",
    "loky": "loky.get_reusable_executor",
    "pebble": "pebble.ProcessPool",
}
IMPORTS = {
    # The module that holds each tool's pool, imported before the timed start as the team
    # harness does (``import procvisor``, and ``import procvisor.pool`` too, leave the pool's
    # module to its first use).
    "procvisor": "procvisor.pool._pool",
    "procvisor-pf0": "procvisor.pool._pool",
    "procvisor-cmd": "procvisor.pool._command",
    "cf": "concurrent.futures",
    "mp": "multiprocessing",
    "loky": "loky",
    "pebble": "pebble",
}
WORKERS = 2
IDEAL_BUSY = WORKERS / 1e-3
"""Tasks per second of 2 workers doing nothing but 1 ms tasks."""
CHUNKSIZE = 256
"""Items per task in the chunked no-op map."""
BUSY_GOAL = 0.9
CHILD_TIMEOUT = 300.0
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WAITS = ("<method 'poll' of 'select.epoll' objects>", "<method 'acquire' of '_thread.lock")
"""Profile entries that are blocking waits, not work: left out of the profile table."""

POOL_THREAD = "procvisor-pool"
COUNTED: dict[str, Callable[[str], bool]] = {
    "write": lambda w: w == "<built-in method posix.write>",
    "read": lambda w: w == "<built-in method posix.read>",
    "epoll": lambda w: w == WAITS[0],
    "unregister": lambda w: w.startswith("selectors.py:") and w.endswith("(unregister)"),
}
"""Calls per task counted in the pool's I/O thread for the analysis (waits included)."""

perf = time.perf_counter


# == the measured child ========================================================================


def noop(x: Any) -> Any:
    return x


def busy1ms(x: Any) -> Any:
    end = perf() + 0.001
    while perf() < end:
        pass
    return x


TASKS = {"noop": noop, "busy1ms": busy1ms}


def pct(values: Sequence[float], p: float) -> float:
    """The nearest-rank percentile (as :func:`bench._report.percentile`)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


class _CF:
    lazy_import_s = 0.0
    """Seconds of the imports ``create`` triggers (timed in the startup runs' first result)."""

    def create(self, workers: int) -> None:
        t = perf()
        from concurrent.futures import ProcessPoolExecutor  # noqa: PLC0415 - lazy in the stdlib

        self.lazy_import_s = perf() - t
        self.ex: Any = ProcessPoolExecutor(max_workers=workers)

    def submit(self, fn: Callable[[Any], Any], arg: Any, cb: Callable[[], None]) -> Any:
        f = self.ex.submit(fn, arg)
        f.add_done_callback(lambda _: cb())
        return f

    def call(self, fn: Callable[[Any], Any], arg: Any) -> Any:
        return self.ex.submit(fn, arg).result()

    def map(self, fn: Callable[[Any], Any], it: range, chunksize: int) -> list[Any]:
        return list(self.ex.map(fn, it, chunksize=chunksize))

    def shutdown(self) -> None:
        self.ex.shutdown(wait=True)


class _Loky(_CF):
    def create(self, workers: int) -> None:
        from loky import get_reusable_executor  # noqa: PLC0415

        self.ex = get_reusable_executor(max_workers=workers)


class _Procvisor(_CF):
    prefetch: int | None = None  # the pool's default

    def create(self, workers: int) -> None:
        t = perf()
        from procvisor.pool import Pool  # noqa: PLC0415 - imported before the timed start

        self.lazy_import_s = perf() - t
        if self.prefetch is None:
            self.ex = Pool(workers=workers)
        else:
            self.ex = Pool(workers=workers, prefetch=self.prefetch)


class _ProcvisorPf0(_Procvisor):
    prefetch = 0


class _ProcvisorCmd(_CF):
    """A CommandPool whose workers run bench/_cmd_worker.py; a task names the function."""

    def create(self, workers: int) -> None:
        t = perf()
        from procvisor.pool import CommandPool  # noqa: PLC0415

        self.lazy_import_s = perf() - t
        worker = os.path.join(ROOT, "bench", "_cmd_worker.py")
        self.ex = CommandPool([sys.executable, worker], workers=workers)

    def submit(self, fn: Callable[[Any], Any], arg: Any, cb: Callable[[], None]) -> Any:
        f = self.ex.submit([fn.__name__, arg])
        f.add_done_callback(lambda _: cb())
        return f

    def call(self, fn: Callable[[Any], Any], arg: Any) -> Any:
        return self.ex.submit([fn.__name__, arg]).result()

    def map(self, fn: Callable[[Any], Any], it: range, chunksize: int) -> list[Any]:
        return list(self.ex.map([fn.__name__, x] for x in it))  # no chunks: one per item


class _MP:
    lazy_import_s = 0.0

    def create(self, workers: int) -> None:
        import multiprocessing  # noqa: PLC0415

        self.pool: Any = multiprocessing.Pool(workers)

    def submit(self, fn: Callable[[Any], Any], arg: Any, cb: Callable[[], None]) -> Any:
        return self.pool.apply_async(fn, (arg,), callback=lambda _: cb())

    def call(self, fn: Callable[[Any], Any], arg: Any) -> Any:
        return self.pool.apply_async(fn, (arg,)).get()

    def map(self, fn: Callable[[Any], Any], it: range, chunksize: int) -> list[Any]:
        return list(self.pool.map(fn, it, chunksize=chunksize))

    def shutdown(self) -> None:
        self.pool.close()
        self.pool.join()


class _Pebble(_MP):
    def create(self, workers: int) -> None:
        from pebble import ProcessPool  # noqa: PLC0415

        self.pool = ProcessPool(max_workers=workers)

    def submit(self, fn: Callable[[Any], Any], arg: Any, cb: Callable[[], None]) -> Any:
        f = self.pool.schedule(fn, args=(arg,))
        f.add_done_callback(lambda _: cb())
        return f

    def call(self, fn: Callable[[Any], Any], arg: Any) -> Any:
        return self.pool.schedule(fn, args=(arg,)).result()

    def map(self, fn: Callable[[Any], Any], it: range, chunksize: int) -> list[Any]:
        return list(self.pool.map(fn, it, chunksize=chunksize).result())


ADAPTERS: dict[str, type[Any]] = {
    "procvisor": _Procvisor,
    "procvisor-pf0": _ProcvisorPf0,
    "procvisor-cmd": _ProcvisorCmd,
    "cf": _CF,
    "mp": _MP,
    "loky": _Loky,
    "pebble": _Pebble,
}


def _children(pid: int) -> set[str]:
    kids: set[str] = set()
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids.update(f.read().split())
        except FileNotFoundError:
            pass
    return kids


def worker_pids() -> list[int]:
    """This process's children (/proc, every thread's), but loky's resource tracker; a
    procvisor pool's fork server stands for its children."""
    out = []
    for kid in _children(os.getpid()):
        try:
            with open(f"/proc/{kid}/cmdline", "rb") as f:
                if b"resource_tracker" in f.read():
                    continue
            with open(f"/proc/{kid}/comm", "rb") as f:
                if f.read().strip() == b"pool-forkserver":
                    out += [int(p) for p in _children(int(kid))]
                    continue
        except FileNotFoundError:
            continue
        out.append(int(kid))
    return out


def _cpu_of(pids: Sequence[int]) -> float:
    """User + system CPU seconds so far of ``pids`` (all their threads), from /proc."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system


def _warm(ad: Any, workers: int) -> None:
    for _ in range(2):
        futs = [ad.submit(noop, i, lambda: None) for i in range(workers * 4)]
        for f in futs:
            f.result() if hasattr(f, "result") else f.get()


def _run_submit(ad: Any, fn: Callable[[Any], Any], n: int) -> dict[str, Any]:
    import itertools  # noqa: PLC0415
    import threading  # noqa: PLC0415

    t_sub = [0.0] * n
    t_done = [0.0] * n
    counter = itertools.count(1)
    done = threading.Event()

    def make_cb(i: int) -> Callable[[], None]:
        def cb() -> None:
            t_done[i] = perf()
            if next(counter) == n:
                done.set()

        return cb

    cbs = [make_cb(i) for i in range(n)]
    futs = []
    workers = worker_pids()
    cpu_workers, cpu_own, cpu_caller = _cpu_of(workers), _own_cpu(), time.thread_time()
    t0 = perf()
    for i in range(n):
        t_sub[i] = perf()
        futs.append(ad.submit(fn, i, cbs[i]))
    t_submitted = perf()
    cpu_caller = time.thread_time() - cpu_caller  # this thread's part: the submits
    if not done.wait(CHILD_TIMEOUT):
        raise RuntimeError("timeout waiting for results")
    t_end = max(t_done)
    cpu_own = _own_cpu() - cpu_own
    cpu_workers = _cpu_of(workers) - cpu_workers
    lat = [(d - s) * 1e3 for s, d in zip(t_sub, t_done, strict=True)]
    return {
        "wall_s": t_end - t0,
        "tasks_per_s": n / (t_end - t0),
        "submit_phase_s": t_submitted - t0,
        "lat_ms_p50": pct(lat, 50),
        "lat_ms_p99": pct(lat, 99),
        "parent_cpu_us": cpu_own / n * 1e6,
        "caller_cpu_us": cpu_caller / n * 1e6,
        "workers_cpu_us": cpu_workers / n * 1e6,
        "parent_cores": cpu_own / (t_end - t0),
        "workers_cores": cpu_workers / (t_end - t0),
    }


def _run_map(ad: Any, fn: Callable[[Any], Any], n: int, chunksize: int) -> dict[str, Any]:
    cpu_own = _own_cpu()
    t0 = perf()
    res = ad.map(fn, range(n), chunksize)
    t1 = perf()
    cpu_own = _own_cpu() - cpu_own
    if len(res) != n or res[-1] != n - 1:
        raise RuntimeError(f"map returned {len(res)} results, the last {res[-1]!r}")
    return {"wall_s": t1 - t0, "tasks_per_s": n / (t1 - t0), "parent_cpu_us": cpu_own / n * 1e6}


def _run_rtt(ad: Any, fn: Callable[[Any], Any], n: int) -> dict[str, Any]:
    lat = []
    for i in range(n):
        t = perf()
        r = ad.call(fn, i)
        lat.append((perf() - t) * 1e3)
        if r != i:
            raise RuntimeError(f"task {i} returned {r!r}")
    return {
        "wall_s": sum(lat) / 1e3,
        "tasks_per_s": n / (sum(lat) / 1e3),
        "lat_ms_p50": pct(lat, 50),
        "lat_ms_p99": pct(lat, 99),
    }


def _memory(pids: Sequence[int]) -> dict[str, Any]:
    """Median RSS and USS (MiB) of the workers; psutil is imported only now, untimed."""
    try:
        import psutil  # noqa: PLC0415
    except ImportError:  # not in the peers' venv: no memory figures
        return {}

    rss, uss = [], []
    for pid in pids:
        info = psutil.Process(pid).memory_full_info()
        rss.append(info.rss / 2**20)
        uss.append(info.uss / 2**20)
    rss.sort()
    uss.sort()
    return {"rss_mib": rss[len(rss) // 2], "uss_mib": uss[len(uss) // 2], "n_workers": len(pids)}


def _startup(ad: Any, workers: int) -> dict[str, Any]:
    t0 = perf()
    ad.create(workers)
    t_created = perf()
    r = ad.call(noop, 7)
    t1 = perf()
    if r != 7:
        raise RuntimeError(f"the first task returned {r!r}")
    deadline = t1 + 30
    t_all = None
    while perf() < deadline:
        if len(worker_pids()) >= workers:
            t_all = perf()
            break
        time.sleep(0.001)
    t2 = perf()
    ad.shutdown()
    t3 = perf()
    return {
        "first_result_s": t1 - t0,
        "create_s": t_created - t0,
        "lazy_import_s": ad.lazy_import_s,
        "construct_s": t_created - t0 - ad.lazy_import_s,
        "all_workers_alive_s": (t_all - t0) if t_all else None,
        "shutdown_s": t3 - t2,
    }


def _profile(ad: Any, n: int, top: int) -> dict[str, Any]:
    """The no-op submit run under cProfile, in this thread and in the threads the pool starts."""
    import cProfile  # noqa: PLC0415
    import pstats  # noqa: PLC0415
    import threading  # noqa: PLC0415

    profiles: dict[str, cProfile.Profile] = {}

    def hook(*_: object) -> None:  # the first event of each new thread starts its profiler
        sys.setprofile(None)
        name = threading.current_thread().name
        if name not in profiles:
            profiles[name] = cProfile.Profile()
            profiles[name].enable()

    threading.setprofile(hook)
    ad.create(WORKERS)
    threading.setprofile(None)  # type: ignore[arg-type]
    _warm(ad, WORKERS)
    for p in profiles.values():
        p.disable()
        p.clear()  # only the timed part
        p.enable()
    caller = profiles["caller"] = cProfile.Profile()
    caller.enable()
    out = _run_submit(ad, noop, n)
    caller.disable()
    ad.shutdown()
    rows = []
    for thread, p in profiles.items():
        p.disable()
        for (file, line, fn), (_, calls, tottime, _, _) in pstats.Stats(p).stats.items():  # type: ignore[attr-defined]
            where = fn if file == "~" else f"{os.path.basename(file)}:{line}({fn})"
            rows.append((thread, where, calls / n, tottime / n * 1e6))
    rows.sort(key=lambda r: -r[3])
    shown = [row for row in rows if not row[1].startswith(WAITS)]
    counts = {  # the most of the matching entries (a call through super() is two entries)
        label: max(
            (c for thread, where, c, _ in rows if thread == POOL_THREAD and match(where)),
            default=0.0,
        )
        for label, match in COUNTED.items()
    }
    return {"profile": shown[:top], "counts": counts, "profiled_tasks_per_s": out["tasks_per_s"]}


def child_main(argv: Sequence[str]) -> None:
    """Measure one configuration (JSON in ``argv[0]``); print the figures as one JSON line."""
    import json  # noqa: PLC0415

    cfg = json.loads(argv[0])
    tool, mode, workers = cfg["tool"], cfg["mode"], cfg["workers"]
    module = IMPORTS[tool]
    t_imp = perf()
    __import__(module.partition(".")[0])
    t_package = perf()
    __import__(module)
    t_module = perf()
    ad = ADAPTERS[tool]()
    out: dict[str, Any] = dict(
        cfg,
        import_s=t_module - t_imp,
        module_import_s=t_module - t_package,  # the pool's module, where not the package
        python=sys.version.split()[0],
    )
    if mode == "startup":
        out.update(_startup(ad, workers))
    elif mode == "profile":
        out.update(_profile(ad, cfg["n"], cfg["top"]))
    else:
        fn = TASKS[cfg["task"]]
        ad.create(workers)
        _warm(ad, workers)
        if mode == "submit":
            out.update(_run_submit(ad, fn, cfg["n"]))
            out.update(_memory(worker_pids()))
        elif mode == "map":
            out.update(_run_map(ad, fn, cfg["n"], cfg.get("chunksize", 1)))
        else:
            out.update(_run_rtt(ad, fn, cfg["n"]))
        ad.shutdown()
    print(json.dumps(out), flush=True)


# == the runner ================================================================================


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The pools benchmark's own options."""
    from pathlib import Path  # noqa: PLC0415

    parser.add_argument(
        "--tools",
        default=",".join(TOOLS),
        help=f"tools to run, comma-separated (default {','.join(TOOLS)})",
    )
    parser.add_argument(
        "--n", type=int, default=20000, help="no-op tasks per submit and map run (default 20000)"
    )
    parser.add_argument(
        "--busy-n",
        type=int,
        default=20000,
        help="1 ms tasks per submit and map run (default 20000)",
    )
    parser.add_argument(
        "--rtt-n", type=int, default=2000, help="round trips per rtt run (default 2000)"
    )
    parser.add_argument(
        "--busy-reps", type=int, default=3, help="runs of each 1 ms configuration (default 3)"
    )
    parser.add_argument(
        "--startup-reps", type=int, default=7, help="runs of each startup configuration (default 7)"
    )
    parser.add_argument(
        "--startup-workers",
        default="2,8",
        help="pool sizes of the startup runs, comma-separated (default 2,8)",
    )
    parser.add_argument(
        "--profile-top",
        type=int,
        default=12,
        help="rows of the profile of procvisor's submit path, 0 for no profile (default 12)",
    )
    parser.add_argument(
        "--peer-python",
        default="/tmp/peervenv-pools/bin/python",
        help="python of the venv that has loky and pebble; cf and mp run with it too (default "
        "/tmp/peervenv-pools/bin/python)",
    )
    parser.add_argument(
        "--raw",
        type=Path,
        default=None,
        help="also write every run's figures to this file, one JSON line each (default: none)",
    )
    parser.add_argument(
        "--max-load",
        type=float,
        default=1.5,
        help="before starting, wait while the 1-minute load average is above this (polled every "
        "30 s, at most --load-wait s; default 1.5)",
    )
    parser.add_argument(
        "--load-wait", type=float, default=600.0, help="longest wait for the load (default 600 s)"
    )


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _wait_for_load(limit: float, longest: float) -> str:
    """Wait while the machine is busy; say how long it took and what the load was."""
    start = time.monotonic()
    while (load := os.getloadavg()[0]) > limit and time.monotonic() - start < longest:
        _progress(f"load {load:.2f} > {limit:g}: waiting (polled every 30 s)")
        time.sleep(30)
    waited = time.monotonic() - start
    state = "still above the limit" if load > limit else "at or below the limit"
    return (
        f"1-minute load {load:.2f} when measuring began ({state} {limit:g}; waited {waited:.0f} s)"
    )


def _versions(python: str) -> dict[str, str | None]:
    """Versions of the peers' packages in ``python``'s venv (None: not installed)."""
    import subprocess  # noqa: PLC0415

    code = (
        "import importlib.metadata as m, sys\n"
        "for d in ('loky', 'pebble', 'cloudpickle'):\n"
        "    try: print(d, m.version(d))\n"
        "    except m.PackageNotFoundError: print(d, '-')\n"
        "print('python', sys.version.split()[0])\n"
    )
    found: dict[str, str | None] = dict.fromkeys(("loky", "pebble", "cloudpickle", "python"))
    try:
        out = subprocess.run(
            [python, "-c", code], capture_output=True, text=True, check=True, timeout=60
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return found
    for line in out.splitlines():
        name, version = line.split()
        found[name] = None if version == "-" else version
    return found


def _child(python: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """Run one measurement in a fresh ``python``; its figures."""
    import json  # noqa: PLC0415
    import subprocess  # noqa: PLC0415

    from bench._report import bytecode_env  # noqa: PLC0415

    proc = subprocess.run(
        [python, "-m", "bench.pools", json.dumps(cfg)],
        cwd=ROOT,
        env=bytecode_env(),
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
        check=False,
    )
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no stderr)"])[-1]
        raise RuntimeError(f"exit {proc.returncode}: {tail}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _floors(reps: int) -> dict[str, Any]:
    """What a fresh-interpreter worker pays before it can run a task, with this interpreter.

    ``pass_ms``: ``python -c pass``; ``worker_ms``: procvisor's worker script alone, as the
    fresh fork server it is, started on a control socket whose other end is closed (it imports
    what it needs, reads end of file and exits); ``imports``: its top-level imports by
    cumulative ms, from one ``-X importtime`` run. (A forked worker pays none of this.)
    """
    import importlib.util  # noqa: PLC0415
    import socket  # noqa: PLC0415
    import subprocess  # noqa: PLC0415

    from bench._report import bytecode_env, median  # noqa: PLC0415

    spec = importlib.util.find_spec("procvisor.pool._worker")
    if spec is None or spec.origin is None:
        raise RuntimeError("procvisor.pool._worker not found")
    env = bytecode_env()

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.close()

    def timed(cmd: list[str]) -> float:
        t = perf()
        subprocess.run(cmd, check=True, env=env, stdin=theirs)
        return (perf() - t) * 1e3

    runs = max(reps, 5)
    pass_ms = median([timed([sys.executable, "-c", "pass"]) for _ in range(runs)])
    worker_ms = median([timed([sys.executable, spec.origin]) for _ in range(runs)])
    trace = subprocess.run(
        [sys.executable, "-X", "importtime", spec.origin],
        env=env,
        stdin=theirs,
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    theirs.close()
    imports = []
    for line in trace.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit() and not parts[2].startswith("  "):
            imports.append((parts[2].strip(), int(parts[1]) / 1e3))
    imports.sort(key=lambda x: -x[1])
    return {"pass_ms": pass_ms, "worker_ms": worker_ms, "imports": imports}


def _unregister_miss_us() -> float:
    """µs of ``selector.unregister`` of an fd it does not hold, the KeyError suppressed.

    The stdlib's cost, which procvisor's ``_flush`` pays per task (see the analysis).
    """
    import contextlib  # noqa: PLC0415
    import selectors  # noqa: PLC0415

    sel = selectors.DefaultSelector()
    r, w = os.pipe()
    try:
        sel.register(r, selectors.EVENT_READ)
        n = 20000
        t = perf()
        for _ in range(n):
            with contextlib.suppress(KeyError):
                sel.unregister(w)
        return (perf() - t) / n * 1e6
    finally:
        sel.close()
        os.close(r)
        os.close(w)


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _configs(args: argparse.Namespace) -> list[tuple[str, int, dict[str, Any]]]:
    """(key, runs, child configuration) of every configuration but the profile."""
    out: list[tuple[str, int, dict[str, Any]]] = [
        ("noop submit", args.reps, {"task": "noop", "mode": "submit", "n": args.n}),
        ("noop map", args.reps, {"task": "noop", "mode": "map", "n": args.n}),
        (
            "noop map chunks",
            args.reps,
            {"task": "noop", "mode": "map", "n": args.n, "chunksize": CHUNKSIZE},
        ),
        ("noop rtt", args.reps, {"task": "noop", "mode": "rtt", "n": args.rtt_n}),
        ("busy submit", args.busy_reps, {"task": "busy1ms", "mode": "submit", "n": args.busy_n}),
        ("busy map", args.busy_reps, {"task": "busy1ms", "mode": "map", "n": args.busy_n}),
    ]
    out += [
        (f"startup {w}", args.startup_reps, {"mode": "startup", "workers": w})
        for w in (int(x) for x in _csv(args.startup_workers))
    ]
    for _, _, cfg in out:
        cfg.setdefault("workers", WORKERS)
    return out


def _brief(figures: dict[str, Any]) -> str:
    keys = ("tasks_per_s", "lat_ms_p99", "first_result_s", "shutdown_s", "parent_cpu_us")
    return ", ".join(f"{k} {figures[k]:.4g}" for k in keys if figures.get(k) is not None)


def _warm_up(pythons: dict[str, str]) -> None:
    """One short untimed run of each tool: fills the bytecode cache and the page cache."""
    for tool, python in pythons.items():
        for cfg in (
            {"mode": "startup", "workers": WORKERS},
            {"task": "noop", "mode": "submit", "n": 200, "workers": WORKERS},
        ):
            try:
                _child(python, dict(cfg, tool=tool))
            except Exception as exc:
                _progress(f"warm-up {tool} {cfg['mode']}: FAILED: {exc}")


def _measure(
    args: argparse.Namespace, pythons: dict[str, str], errors: list[str], loads: list[float]
) -> Results:
    configs = _configs(args)
    results: Results = {(t, key): [] for t in pythons for key, _, _ in configs}
    tools = list(pythons)
    for rep in range(max(runs for _, runs, _ in configs)):
        order = tools[rep % len(tools) :] + tools[: rep % len(tools)]
        for key, runs, cfg in configs:
            if rep >= runs:
                continue
            for tool in order:
                loads.append(os.getloadavg()[0])
                what = f"[{rep + 1}/{runs}] {key} {tool}"
                try:
                    figures = _child(pythons[tool], dict(cfg, tool=tool))
                except Exception as exc:
                    errors.append(f"{what} failed: {exc}")
                    _progress(f"{what}: FAILED: {exc}")
                    continue
                results[(tool, key)].append(figures)
                _progress(f"{what}: {_brief(figures)}")
    return results


# -- the report -------------------------------------------------------------------------------


def _values(results: Results, tool: str, key: str, field: str, scale: float = 1.0) -> list[float]:
    return [r[field] * scale for r in results.get((tool, key), []) if r.get(field) is not None]


def _med(results: Results, tool: str, key: str, field: str, scale: float = 1.0) -> float | None:
    from bench._report import median  # noqa: PLC0415

    values = _values(results, tool, key, field, scale)
    return median(values) if values else None


def _cell(results: Results, tool: str, key: str, field: str, scale: float = 1.0) -> str:
    from bench._report import spread  # noqa: PLC0415

    values = _values(results, tool, key, field, scale)
    return spread(values) if values else "–"


def _one(results: Results, tool: str, key: str, field: str, scale: float = 1.0) -> str:
    from bench._report import number  # noqa: PLC0415

    value = _med(results, tool, key, field, scale)
    return "–" if value is None else number(value)


def _tables(r: Results, tools: Sequence[str], args: argparse.Namespace) -> list[Table]:
    from bench._report import Table  # noqa: PLC0415

    def vs_mp(tool: str) -> str:
        ours, mp = (
            _med(r, tool, "noop submit", "tasks_per_s"),
            _med(r, "mp", "noop submit", "tasks_per_s"),
        )
        return "–" if ours is None or mp is None else f"{ours / mp:.2f}×"

    def of_ideal(tool: str, key: str) -> str:
        rate = _med(r, tool, key, "tasks_per_s")
        return "–" if rate is None else f"{rate / IDEAL_BUSY:.0%}"

    sizes = [int(x) for x in _csv(args.startup_workers)]
    return [
        Table(
            f"Throughput, {WORKERS} workers (tasks/s; no-op: {args.n:,} tasks, runs: "
            f"{args.reps}; 1 ms: {args.busy_n:,} tasks, runs: {args.busy_reps})",
            [
                "tool",
                "no-op submit",
                "× mp",
                "no-op map(cs=1)",
                f"no-op map(cs={CHUNKSIZE})",
                "1 ms submit",
                "1 ms map(cs=1)",
                "1 ms submit, map: % of ideal",
            ],
            [
                [
                    LABELS[t],
                    _cell(r, t, "noop submit", "tasks_per_s"),
                    vs_mp(t),
                    _cell(r, t, "noop map", "tasks_per_s"),
                    _cell(r, t, "noop map chunks", "tasks_per_s"),
                    _cell(r, t, "busy submit", "tasks_per_s"),
                    _cell(r, t, "busy map", "tasks_per_s"),
                    f"{of_ideal(t, 'busy submit')}, {of_ideal(t, 'busy map')}",
                ]
                for t in tools
            ],
        ),
        Table(
            f"Latency, {WORKERS} workers (ms)",
            [
                "tool",
                f"round trip p50 ({args.rtt_n:,} × 1 in flight)",
                "round trip p99",
                "burst p50 / p99 (no-op submit)",
                "burst p50 / p99 (1 ms submit)",
            ],
            [
                [
                    LABELS[t],
                    _cell(r, t, "noop rtt", "lat_ms_p50"),
                    _cell(r, t, "noop rtt", "lat_ms_p99"),
                    f"{_one(r, t, 'noop submit', 'lat_ms_p50')} / "
                    f"{_one(r, t, 'noop submit', 'lat_ms_p99')}",
                    f"{_one(r, t, 'busy submit', 'lat_ms_p50')} / "
                    f"{_one(r, t, 'busy submit', 'lat_ms_p99')}",
                ]
                for t in tools
            ],
        ),
        Table(
            "CPU (over the submit runs) and memory per worker (after the no-op submit run)",
            [
                "tool",
                "no-op: pool process µs/task",
                "of which the caller's thread",
                "no-op: pool process, cores",
                "no-op: workers µs/task",
                "1 ms: pool process, cores",
                "1 ms: workers, cores (of 2)",
                "RSS per worker MiB",
                "USS per worker MiB",
            ],
            [
                [
                    LABELS[t],
                    _cell(r, t, "noop submit", "parent_cpu_us"),
                    _one(r, t, "noop submit", "caller_cpu_us"),
                    _one(r, t, "noop submit", "parent_cores"),
                    _cell(r, t, "noop submit", "workers_cpu_us"),
                    _one(r, t, "busy submit", "parent_cores"),
                    _one(r, t, "busy submit", "workers_cores"),
                    _cell(r, t, "noop submit", "rss_mib"),
                    _cell(r, t, "noop submit", "uss_mib"),
                ]
                for t in tools
            ],
        ),
        Table(
            f"Pool start → first no-op result, and shutdown (ms; runs: {args.startup_reps})",
            [
                "tool",
                "import",
                *[
                    f"{w} workers: {what}"
                    for w in sizes
                    for what in ("first result", "all alive", "shutdown")
                ],
            ],
            [
                [
                    LABELS[t],
                    _cell(r, t, f"startup {sizes[0]}", "import_s", 1e3),
                    *[
                        _cell(r, t, f"startup {w}", field, 1e3)
                        for w in sizes
                        for field in ("first_result_s", "all_workers_alive_s", "shutdown_s")
                    ],
                ]
                for t in tools
            ],
        ),
    ]


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**PASS**" if ok else "**MISS**")


def _targets(r: Results, tools: Sequence[str], sizes: Sequence[int]) -> list[list[str]]:
    """Rows: target, procvisor variant, figures, PASS/MISS (n/a when a peer is missing)."""
    from bench._report import number  # noqa: PLC0415

    rows = []
    for ours in (t for t in OURS if t in tools):
        rate = _med(r, ours, "noop submit", "tasks_per_s")
        for peer, goal in (("mp", 1.0), ("cf", 1.5), ("loky", 1.5), ("pebble", 1.5)):
            other = _med(r, peer, "noop submit", "tasks_per_s")
            ok = None if rate is None or other is None else rate >= goal * other
            figure = (
                "–"
                if rate is None or other is None
                else f"{number(rate)} / {number(other)} = {rate / other:.2f}×"
            )
            rows.append([f"no-op submit ≥ {goal:g}× {peer}", LABELS[ours], figure, _verdict(ok)])
        for key, what in (("busy submit", "submit"), ("busy map", "map(cs=1)")):
            busy = _med(r, ours, key, "tasks_per_s")
            ok = None if busy is None else busy >= BUSY_GOAL * IDEAL_BUSY
            figure = "–" if busy is None else f"{number(busy)}/s = {busy / IDEAL_BUSY:.0%}"
            goal_text = f"≥ {BUSY_GOAL:.0%} of {number(IDEAL_BUSY)}/s"
            rows.append([f"1 ms {what} {goal_text}", LABELS[ours], figure, _verdict(ok)])
        checks = [("round trip p99 < all four", "noop rtt", "lat_ms_p99", 1.0, "ms")]
        checks += [
            (
                f"start → first result, {w} workers, < all four",
                f"startup {w}",
                "first_result_s",
                1e3,
                "ms",
            )
            for w in sizes
        ]
        for label, key, field, scale, unit in checks:
            mine = _med(r, ours, key, field, scale)
            theirs = {p: _med(r, p, key, field, scale) for p in PEERS}
            known = {p: v for p, v in theirs.items() if v is not None}
            ok = None if mine is None or len(known) < len(PEERS) else mine < min(known.values())
            peers = ", ".join(f"{p} {number(v)}" for p, v in known.items())
            figure = "–" if mine is None else f"{number(mine)} {unit} (peers: {peers})"
            rows.append([label, LABELS[ours], figure, _verdict(ok)])
    return rows


def _profile_table(profile: dict[str, Any] | None, n: int) -> list[Table]:
    from bench._report import Table, number  # noqa: PLC0415

    if not profile:
        return []
    return [
        Table(
            f"Where procvisor.Pool's threads spend their time: no-op submit of {n:,} tasks under "
            f"cProfile ({number(profile['profiled_tasks_per_s'])} tasks/s profiled), top by own "
            "time; blocking waits (epoll, lock acquire) left out. cProfile times are wall time "
            "per thread: inflated by the profiler, and for calls that release the GIL (read, "
            "write) by the wait to get it back from the other thread",
            ["thread", "function", "calls per task", "own µs per task (profiled)"],
            [
                [f"`{thread}`", f"`{where}`", f"{calls:.2f}", f"{us:.1f}"]
                for thread, where, calls, us in profile["profile"]
            ],
        )
    ]


def _ratio_text(r: Results, ours: str, key: str, field: str, peers: Sequence[str]) -> str:
    mine = _med(r, ours, key, field)
    parts = []
    for p in peers:
        theirs = _med(r, p, key, field)
        if mine is not None and theirs is not None:
            parts.append(f"{mine / theirs:.2f}× {p}")
    return ", ".join(parts)


def _verdicts(rows: Sequence[Sequence[str]]) -> str:
    """The targets grouped by which procvisor rows pass them."""
    by_target: dict[str, dict[str, str]] = {}
    for target, row, _, verdict in rows:
        by_target.setdefault(target, {})[row.removeprefix("procvisor.Pool ")] = verdict
    groups: dict[str, list[str]] = {}
    for target, verdicts in by_target.items():
        passing = [row for row, v in verdicts.items() if v == "**PASS**"]
        if len(passing) == len(verdicts):
            group = "passed by both rows"
        elif passing:
            group = f"passed only by {', '.join(passing)}"
        elif all(v == "**MISS**" for v in verdicts.values()):
            group = "missed by both rows"
        else:
            group = "not measured"
        groups.setdefault(group, []).append(target)
    return "; ".join(
        f"{group}: " + ", ".join(f"“{t}”" for t in targets) for group, targets in groups.items()
    )


def _analysis(
    r: Results,
    tools: Sequence[str],
    rows: Sequence[Sequence[str]],
    profiles: dict[str, dict[str, Any]],
    floors: dict[str, Any],
) -> str:
    """The paragraph under the tables: what passes, what misses, and the evidence for why."""
    from bench._report import number  # noqa: PLC0415

    def med(tool: str, key: str, field: str, scale: float = 1.0) -> str:
        value = _med(r, tool, key, field, scale)
        return "–" if value is None else number(value)

    def each(key: str, field: str, scale: float = 1.0, among: Sequence[str] = PEERS) -> str:
        return ", ".join(f"{t} {med(t, key, field, scale)}" for t in among if t in tools)

    passed = sum(1 for row in rows if row[3] == "**PASS**")
    text = [f"**Analysis.** {passed} of {len(rows)} target rows pass ({_verdicts(rows)})."]
    if "procvisor" not in tools or "procvisor-pf0" not in tools:
        return " ".join(text)
    pv, pf0 = "procvisor", "procvisor-pf0"
    text.append(
        "*No-op throughput* is bounded by the pool's own process, where one GIL serialises "
        "the caller's submits and the pool's threads: it was on CPU "
        + each("noop submit", "parent_cores", among=TOOLS)
        + " cores, so each rate is about 1 / its CPU per task. procvisor spends "
        f"{med(pv, 'noop submit', 'parent_cpu_us')} µs per task (prefetch=0: "
        f"{med(pf0, 'noop submit', 'parent_cpu_us')}), of which the caller's thread, "
        f"submitting, {med(pv, 'noop submit', 'caller_cpu_us')} and the pool's threads the "
        f"rest; multiprocessing.Pool {med('mp', 'noop submit', 'parent_cpu_us')} (caller "
        f"{med('mp', 'noop submit', 'caller_cpu_us')})."
    )
    if pv in profiles and pf0 in profiles:
        c, c0 = profiles[pv]["counts"], profiles[pf0]["counts"]
        text.append(
            f"Per task, procvisor's I/O thread makes {c['write']:.2f} write(2), "
            f"{c['read']:.2f} read(2) and {c['epoll']:.2f} epoll waits (prefetch=0: "
            f"{c0['write']:.2f}, {c0['read']:.2f}, {c0['epoll']:.2f})"
            + "; the rest is bookkeeping of a few µs each (profile table: the queue's `pop`, "
            "`_dispatch`, `_send`, `_flush`, the Future)"
            + (
                f". A slow path: `_flush` calls `selector.unregister` {c['unregister']:.2f} "
                "times per task on a write fd that is registered only while a write is "
                "blocked, so nearly every call raises and suppresses a KeyError "
                f"({floors['unregister_us']:.1f} µs a call here, measured apart)"
                if c["unregister"] >= 0.5
                else ""
            )
            + "."
        )
    text.append(
        f"*1 ms tasks*: the workers were on CPU {med(pv, 'busy submit', 'workers_cores')} cores "
        f"of 2 with the default prefetch=4 and {med(pf0, 'busy submit', 'workers_cores')} with "
        "prefetch=0, where a worker holds one task and waits a full round trip (p50 "
        f"{med(pv, 'noop rtt', 'lat_ms_p50')} ms) after each; the pool's process "
        f"({med(pv, 'busy submit', 'parent_cores')} cores) and the machine's other load take "
        "CPU from the spinning workers on 2 cores"
        + (
            ", which is also why every peer misses 90 % ("
            if all(
                (_med(r, p, "busy submit", "tasks_per_s") or 0) < BUSY_GOAL * IDEAL_BUSY
                for p in PEERS
            )
            else " (peers: "
        )
        + each("busy submit", "tasks_per_s")
        + "/s)."
    )
    worker_imports = ", ".join(f"{m} {number(ms)}" for m, ms in floors["imports"][:4])
    typing_note = (
        " (`typing` only for `TYPE_CHECKING`: a slow path)"
        if any(m == "typing" for m, _ in floors["imports"][:6])
        else ""
    )
    text.append(
        f"*Round trip*: p50 {med(pv, 'noop rtt', 'lat_ms_p50')} ms, p99 "
        f"{med(pv, 'noop rtt', 'lat_ms_p99')} (prefetch=0: {med(pf0, 'noop rtt', 'lat_ms_p99')}) "
        f"against p99 {each('noop rtt', 'lat_ms_p99')}; a p99 of a few thousand sub-ms round "
        "trips on a shared 2-core machine is mostly scheduling noise. *Start*: the "
        "constructor forks the first workers straight from the caller (it has one thread "
        "here), then a fork server for the workers that come later; "
        f"the first result came after {med(pv, 'startup 2', 'first_result_s', 1e3)} ms "
        f"(2 workers; {med(pv, 'startup 2', 'construct_s', 1e3)} in the constructor), "
        "against "
        + each("startup 2", "first_result_s", 1e3)
        + " ms; the import of `procvisor.pool._pool` before it took "
        f"{med(pv, 'startup 2', 'module_import_s', 1e3)} ms. A caller "
        "with threads gets a fresh fork server instead: `python -c pass` takes "
        f"{number(floors['pass_ms'])} ms here and the worker script alone "
        f"{number(floors['worker_ms'])} ms (imports, ms: {worker_imports}{typing_note}). "
        "*Memory*: procvisor's workers are forks too, so their RSS counts pages shared with "
        f"the caller; USS procvisor {med(pv, 'noop submit', 'uss_mib')} MiB, "
        + each("noop submit", "uss_mib", among=("cf", "mp", "pebble", "loky"))
        + " MiB."
    )
    return " ".join(text)


def run(args: argparse.Namespace) -> Report:
    """Run every configuration of every tool, each in a fresh interpreter, and report."""
    from bench._report import Report, Table, median, number  # noqa: PLC0415

    tools = _csv(args.tools)
    unknown = sorted(set(tools) - set(TOOLS))
    if unknown or not tools:
        raise ValueError(f"--tools: unknown {unknown}; choose from {', '.join(TOOLS)}")
    for name in ("n", "busy_n", "rtt_n", "busy_reps", "startup_reps"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be 1 or more")
    notes: list[str] = []
    versions = _versions(args.peer_python)
    pythons: dict[str, str] = {}
    for tool in tools:
        if tool in OWN:
            pythons[tool] = sys.executable
        elif versions["python"] is None:
            notes.append(
                f"**{tool} skipped**: no working `{args.peer_python}` (make it with "
                "`python3 -m venv /tmp/peervenv-pools && /tmp/peervenv-pools/bin/pip install "
                "loky pebble psutil`)."
            )
        elif tool in ("loky", "pebble") and versions[tool] is None:
            notes.append(f"**{tool} skipped**: not installed in `{args.peer_python}`.")
        else:
            pythons[tool] = args.peer_python
    tools = [t for t in TOOLS if t in pythons]  # report order
    pythons = {t: pythons[t] for t in tools}
    load_note = _wait_for_load(args.max_load, args.load_wait)
    _warm_up(pythons)
    errors: list[str] = []
    loads: list[float] = []
    results = _measure(args, pythons, errors, loads)
    if args.raw is not None:
        import json  # noqa: PLC0415

        with args.raw.open("w", encoding="utf-8") as f:
            for runs in results.values():
                f.writelines(json.dumps(figures) + "\n" for figures in runs)
    profiles: dict[str, dict[str, Any]] = {}
    for tool in (t for t in OURS if t in pythons and args.profile_top > 0):
        cfg = {"tool": tool, "mode": "profile", "n": args.n, "workers": WORKERS}
        try:
            profiles[tool] = _child(sys.executable, dict(cfg, top=args.profile_top))
        except Exception as exc:
            errors.append(f"profile of {tool} failed: {exc}")
    floors = _floors(args.startup_reps)
    floors["unregister_us"] = _unregister_miss_us()
    sizes = [int(x) for x in _csv(args.startup_workers)]
    target_rows = _targets(results, tools, sizes)
    tables = _tables(results, tools, args)
    tables.append(Table("Targets", ["target", "procvisor row", "this run", "verdict"], target_rows))
    tables += _profile_table(profiles.get("procvisor"), args.n)
    peer_versions = ", ".join(
        f"{d} {versions[d]}" for d in ("loky", "pebble", "cloudpickle") if versions[d]
    )
    summary = (
        f"Each figure: median [min–max] over runs; every run a fresh interpreter, the runs "
        f"interleaved across tools. Peers from `{args.peer_python}` (CPython "
        f"{versions['python'] or '–'}; {peer_versions or 'no loky nor pebble'}), procvisor from "
        f"`{sys.executable}`. Throughput = tasks / (last completion − first submit); burst "
        "latency = callback − just before that task's submit (mostly queueing: all tasks are "
        "queued at once); round trip = submit → result() with one task in flight. CPU per task "
        "is user + system time over the submit window, of the pool's process (all threads) and "
        "of its workers (/proc, 10 ms ticks). RSS/USS: psutil, after the no-op submit run, "
        "median over the workers. Startup excludes the import of the module that holds the "
        "pool (own column; for procvisor `procvisor.pool._pool`, which `import procvisor` leaves "
        "to first use), as the team harness does, but includes lazy imports on first use (cf's "
        "`concurrent.futures.process`)."
    )
    notes.append(
        load_note
        + (
            f"; during the runs: min {min(loads):.2f}, median {median(loads):.2f}, max "
            f"{max(loads):.2f} (sampled before each run; the bench itself adds up to ~2)."
            if loads
            else "."
        )
    )
    notes.append(
        f"Fresh interpreter floor: `{sys.executable} -c pass` takes {number(floors['pass_ms'])} "
        "ms (median); procvisor's worker script alone, on an empty input (its imports, then "
        f"exit at end of file), {number(floors['worker_ms'])} ms; its top-level imports "
        "(`-X importtime`, cumulative): "
        + ", ".join(f"{m} {number(ms)} ms" for m, ms in floors["imports"][:5])
        + "."
    )
    notes += errors
    notes.append(_analysis(results, tools, target_rows, profiles, floors))
    return Report("pools", summary, tables, (), notes)


if __name__ == "__main__":
    # Run as bench.pools, not as __main__, so that the pools send the tasks by reference.
    from bench.pools import child_main as _child_main

    _child_main(sys.argv[1:])
