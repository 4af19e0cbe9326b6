"""Spawn `true` N times: one at a time, under asyncio, and with a kernel limit set.

All variants run in the same process and are interleaved, repetition by repetition:

seq     one spawn at a time; latency = call -> child reaped.
          subprocess.run(["true"])                      the peer
          os.posix_spawn("/bin/true") + os.waitpid      the floor for Python
          the same capturing: 2 pipes, setsid, poll over them and a pidfd, reads, reap
          procvisor.run(["true"])                       (captures stdout and stderr)
          procvisor.run(["true"], capture=False)
async   all N coroutines created up front, an asyncio.Semaphore(c) bounds those in flight,
        c = 100 and 10; latency = semaphore acquired -> finished.
          asyncio.create_subprocess_exec("true") + wait(), asyncio's default child watcher
          the same with asyncio.PidfdChildWatcher, and with stdout/stderr=PIPE + communicate()
          await procvisor.arun(["true"])
limits  what one limit costs per spawn, Limits(open_files=1024) unless named:
          procvisor.run, default mechanism (exec trampoline through util-linux prlimit(1))
          procvisor.run, preexec_fn fallback (forced by hiding prlimit(1); a full fork)
          procvisor.run, Limits(processes=64) by a pids cgroup (where one can be made), and
            as root without one (sampled every 0.1 s)
          procvisor.run, Limits(memory="512M") by a memory cgroup, Limits(cpus=1) by a cpu
            cgroup, and all three cgroups at once; Limits(cpus=1) without a cgroup (a
            SIGSTOP/SIGCONT duty cycle)
          reference: subprocess.run(preexec_fn=lambda: None) (a full fork), and
          os.posix_spawn + prlimit(2) on the new pid (racy: the child may run unlimited)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import resource
import select
import subprocess
import time
import warnings
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence

import procvisor
from bench._report import Report, Sample, Table, Target, median, number, percentile, repeat, spread
from procvisor.process import _cgroup as pv_cgroup
from procvisor.process import _spawn as pv_spawn
from procvisor.process import exit_watch_mechanism, rlimit_method

QUICK = {"n": 300, "reps": 2}
WARMUP = 20
"""Calls made, untimed, before each measurement."""
CONCURRENCY = (100, 10)
NOFILE = 1024
LIMITS = procvisor.Limits(open_files=NOFILE)
PROCESSES = procvisor.Limits(processes=64)
MEMORY = procvisor.Limits(memory="512M")
CPUS = procvisor.Limits(cpus=1)
CGROUPS = procvisor.Limits(processes=64, memory="512M", cpus=1)

_perf = time.perf_counter


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The spawn benchmark's own option: ``--n``."""
    parser.add_argument(
        "--n", type=int, default=2000, help="spawns per variant and repetition (default 2000)"
    )


# -- how one variant is measured ------------------------------------------------------------


def _sequential(call: Callable[[], object], n: int) -> Callable[[], Sample]:
    def measure() -> Sample:
        for _ in range(WARMUP):
            call()
        latencies = []
        before = resource.getrusage(resource.RUSAGE_SELF)
        start = _perf()
        for _ in range(n):
            t = _perf()
            call()
            latencies.append(_perf() - t)
        wall = _perf() - start
        after = resource.getrusage(resource.RUSAGE_SELF)
        usage = (
            after.ru_utime - before.ru_utime,
            after.ru_stime - before.ru_stime,
            after.ru_nvcsw - before.ru_nvcsw,
        )
        return Sample(n, wall, latencies, usage)

    return measure


def _concurrent(
    job: Callable[[], Awaitable[object]],
    n: int,
    concurrency: int,
    watcher: Callable[[], asyncio.AbstractChildWatcher] | None = None,
) -> Callable[[], Sample]:
    """All coroutines made at once, ``concurrency`` of them let through by a semaphore.

    ``watcher`` makes the child watcher for this measurement; ``None`` leaves asyncio's
    default (``ThreadedChildWatcher`` on 3.11).
    """

    async def batch(count: int, limit: int) -> Sample:
        semaphore = asyncio.Semaphore(limit)
        latencies: list[float] = []

        async def one() -> None:
            async with semaphore:
                t = _perf()
                await job()
                latencies.append(_perf() - t)

        start = _perf()
        await asyncio.gather(*(one() for _ in range(count)))
        return Sample(count, _perf() - start, latencies)

    async def main() -> Sample:
        await batch(WARMUP, min(WARMUP, concurrency))
        return await batch(n, concurrency)

    def measure() -> Sample:
        with _watcher(watcher):
            return asyncio.run(main())

    return measure


@contextlib.contextmanager
def _watcher(factory: Callable[[], asyncio.AbstractChildWatcher] | None) -> Iterator[None]:
    """Install a child watcher (``None``: asyncio's default) for the loops made inside."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # child watchers, from 3.12 on
        asyncio.set_child_watcher(None if factory is None else factory())
        try:
            yield
        finally:
            asyncio.set_child_watcher(None)


@contextlib.contextmanager
def _preexec_fallback() -> Iterator[None]:
    """procvisor as on a machine without prlimit(1): kernel limits set by ``preexec_fn``."""
    pv_spawn._prlimit_path = None
    try:
        yield
    finally:
        pv_spawn._prlimit_path = False  # looked up again on next use


def _without_cgroups(measure: Callable[[], Sample]) -> Callable[[], Sample]:
    """procvisor as on a machine where no pids cgroup can be made."""

    def wrapped() -> Sample:
        pv_cgroup.disabled = True
        try:
            return measure()
        finally:
            pv_cgroup.disabled = False

    return wrapped


def _under_fallback(measure: Callable[[], Sample]) -> Callable[[], Sample]:
    def wrapped() -> Sample:
        with _preexec_fallback():
            return measure()

    return wrapped


# -- the calls ------------------------------------------------------------------------------


def _posix_spawn(env: Mapping[str, str]) -> Callable[[], object]:
    def call() -> object:
        return os.waitpid(os.posix_spawn("/bin/true", ["true"], env), 0)

    return call


def _posix_spawn_captured(env: Mapping[str, str]) -> Callable[[], object]:
    """The syscalls of a capturing run and nothing else: two pipes, a new session, the
    signals reset as procvisor resets them, one poll over the pipes and a pidfd, the reads
    to end of file, the reap."""
    reset = pv_spawn.signals_to_reset()

    def call() -> object:
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        pid = os.posix_spawn(
            "/bin/true",
            ["true"],
            env,
            setsid=True,
            setsigdef=reset,
            setsigmask=(),
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, out_w, 1),
                (os.POSIX_SPAWN_DUP2, err_w, 2),
            ],
        )
        os.close(out_w)
        os.close(err_w)
        pidfd = os.pidfd_open(pid)
        poller = select.poll()
        for fd in (out_r, err_r, pidfd):
            poller.register(fd, select.POLLIN)
        left, status = {out_r, err_r}, None
        while left or status is None:
            for fd, _ in poller.poll():
                if fd == pidfd:
                    status = os.wait4(pid, 0)
                    poller.unregister(fd)
                    os.close(fd)
                elif not os.read(fd, 65536):
                    poller.unregister(fd)
                    left.discard(fd)
                    os.close(fd)
        return status

    return call


def _posix_spawn_prlimit(env: Mapping[str, str]) -> Callable[[], object]:
    def call() -> object:
        pid = os.posix_spawn("/bin/true", ["true"], env)
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (NOFILE, NOFILE))
        return os.waitpid(pid, 0)

    return call


async def _asyncio_true() -> int:
    proc = await asyncio.create_subprocess_exec("true")
    return await proc.wait()


async def _asyncio_true_captured() -> tuple[bytes, bytes]:
    proc = await asyncio.create_subprocess_exec(
        "true", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    return await proc.communicate()


async def _arun_true() -> procvisor.Result:
    return await procvisor.arun(["true"])


async def _arun_true_nocapture() -> procvisor.Result:
    return await procvisor.arun(["true"], capture=False)


# -- variants and table rows ----------------------------------------------------------------

SEQ = {
    "subprocess.run": "`subprocess.run(['true'])`",
    "subprocess.run capture": "`subprocess.run(['true'], capture_output=True)`",
    "posix_spawn": "`os.posix_spawn('/bin/true')` + `waitpid` (floor)",
    "posix_spawn capture": "the floor's syscalls capturing: 2 pipes, setsid, poll, pidfd",
    "procvisor.run": "`procvisor.run(['true'])`",
    "procvisor.run nocapture": "`procvisor.run(['true'], capture=False)`",
}
ASYNC = {
    "asyncio default": "asyncio `create_subprocess_exec`, default watcher",
    "asyncio pidfd": "asyncio `create_subprocess_exec`, `PidfdChildWatcher`",
    "asyncio pidfd capture": "the same, `stdout=PIPE, stderr=PIPE` + `communicate()`",
    "procvisor.arun": "`await procvisor.arun(['true'])`",
    "procvisor.arun nocapture": "`await procvisor.arun(['true'], capture=False)`",
}
LIMIT = [
    # (key, label, the same call without a limit: extra µs are counted against it)
    ("procvisor.run", "`procvisor.run(['true'])`, no limits", None),
    ("limits prlimit(1)", "`procvisor.run`, prlimit(1) trampoline (default)", "procvisor.run"),
    ("limits preexec_fn", "`procvisor.run`, `preexec_fn` fallback", "procvisor.run"),
    (
        "limits pids cgroup",
        "`procvisor.run`, `Limits(processes=64)`: a pids cgroup (mkdir, sh trampoline, rmdir)",
        "procvisor.run",
    ),
    (
        "limits sampled",
        "`procvisor.run`, `Limits(processes=64)` as root without a cgroup: sampled",
        "procvisor.run",
    ),
    (
        "limits memory cgroup",
        "`procvisor.run`, `Limits(memory='512M')`: a memory cgroup",
        "procvisor.run",
    ),
    ("limits cpu cgroup", "`procvisor.run`, `Limits(cpus=1)`: a cpu cgroup", "procvisor.run"),
    (
        "limits cpus sampled",
        "`procvisor.run`, `Limits(cpus=1)` without a cgroup: a duty cycle",
        "procvisor.run",
    ),
    (
        "limits 3 cgroups",
        "`procvisor.run`, `Limits(processes=64, memory='512M', cpus=1)`: three cgroups",
        "procvisor.run",
    ),
    ("subprocess.run", "reference: `subprocess.run(['true'])`", None),
    (
        "subprocess.run preexec_fn",
        "reference: `subprocess.run(['true'], preexec_fn=lambda: None)`",
        "subprocess.run",
    ),
    ("posix_spawn", "reference: `os.posix_spawn` + `waitpid`", None),
    (
        "posix_spawn prlimit(2)",
        "reference: `os.posix_spawn` + `resource.prlimit(pid)` (racy)",
        "posix_spawn",
    ),
]


def _variants(n: int) -> dict[str, Callable[[], Sample]]:
    env = dict(os.environ)
    variants = {
        "subprocess.run": _sequential(lambda: subprocess.run(["true"], check=False), n),
        "subprocess.run capture": _sequential(
            lambda: subprocess.run(["true"], check=False, capture_output=True), n
        ),
        "posix_spawn": _sequential(_posix_spawn(env), n),
        "posix_spawn capture": _sequential(_posix_spawn_captured(env), n),
        "procvisor.run": _sequential(lambda: procvisor.run(["true"]), n),
        "procvisor.run nocapture": _sequential(lambda: procvisor.run(["true"], capture=False), n),
    }
    for c in CONCURRENCY:
        variants[f"c={c} asyncio default"] = _concurrent(_asyncio_true, n, c)
        variants[f"c={c} asyncio pidfd"] = _concurrent(
            _asyncio_true, n, c, asyncio.PidfdChildWatcher
        )
        variants[f"c={c} asyncio pidfd capture"] = _concurrent(
            _asyncio_true_captured, n, c, asyncio.PidfdChildWatcher
        )
        variants[f"c={c} procvisor.arun"] = _concurrent(_arun_true, n, c)
        variants[f"c={c} procvisor.arun nocapture"] = _concurrent(_arun_true_nocapture, n, c)
    variants["limits prlimit(1)"] = _sequential(lambda: procvisor.run(["true"], limits=LIMITS), n)
    variants["limits preexec_fn"] = _under_fallback(
        _sequential(lambda: procvisor.run(["true"], limits=LIMITS), n)
    )
    variants["limits pids cgroup"] = _sequential(
        lambda: procvisor.run(["true"], limits=PROCESSES), n
    )
    variants["limits sampled"] = _without_cgroups(
        _sequential(lambda: procvisor.run(["true"], limits=PROCESSES), n)
    )
    for key, limits in (
        ("limits memory cgroup", MEMORY),
        ("limits cpu cgroup", CPUS),
        ("limits 3 cgroups", CGROUPS),
    ):
        variants[key] = _sequential(functools.partial(procvisor.run, ["true"], limits=limits), n)
    variants["limits cpus sampled"] = _without_cgroups(
        _sequential(lambda: procvisor.run(["true"], limits=CPUS), n)
    )
    variants["subprocess.run preexec_fn"] = _sequential(
        lambda: subprocess.run(["true"], check=False, preexec_fn=lambda: None), n
    )
    variants["posix_spawn prlimit(2)"] = _sequential(_posix_spawn_prlimit(env), n)
    return variants


def _check() -> dict[str, str]:
    """Make sure each procvisor path works and sets the limit; return what it runs on."""
    facts = {
        "exit watch": exit_watch_mechanism(),
        "rlimits": f"{rlimit_method()} ({pv_spawn.prlimit_binary() or 'no prlimit(1)'})",
        "limits": ", ".join(
            f"{name} by {mechanism}"
            for name, mechanism in CGROUPS.mechanisms(as_root=os.geteuid() == 0).items()
        )
        + f" (as root: {os.geteuid() == 0})",
    }
    probe = ["sh", "-c", "ulimit -n"]
    with _preexec_fallback():
        if rlimit_method() != "preexec_fn":
            raise RuntimeError("hiding prlimit(1) did not select the preexec_fn fallback")
        fallback = procvisor.run(probe, limits=LIMITS, check=True).stdout
    default = procvisor.run(probe, limits=LIMITS, check=True).stdout
    for mechanism, out in (("default", default), ("preexec_fn", fallback)):
        if out.strip() != str(NOFILE).encode():
            raise RuntimeError(f"limits via {mechanism}: `ulimit -n` printed {out!r}")
    with _watcher(None):
        facts["asyncio default watcher"] = type(asyncio.get_child_watcher()).__name__
    return facts


# -- the report -----------------------------------------------------------------------------


def _rates(samples: Sequence[Sample]) -> list[float]:
    return [s.rate for s in samples]


def _ms(samples: Sequence[Sample], p: float) -> list[float]:
    """The ``p``-th latency percentile of each repetition, in ms."""
    return [percentile(s.latencies, p) * 1e3 for s in samples]


def _extra_us(samples: Sequence[Sample], base: Sequence[Sample]) -> list[float]:
    """Extra µs per spawn over ``base``, paired repetition by repetition."""
    return [(s.per_op - b.per_op) * 1e6 for s, b in zip(samples, base, strict=True)]


def _per_spawn(samples: Sequence[Sample], field: int) -> float:
    """The median over repetitions of one ``Sample.usage`` field, per spawn."""
    return median([s.usage[field] / s.count for s in samples if s.usage is not None])


def _parent_cpu(samples: Sequence[Sample]) -> str:
    """This process's own CPU time per spawn (the child's is not in it), user / system."""
    return f"{number(_per_spawn(samples, 0) * 1e6)} / {number(_per_spawn(samples, 1) * 1e6)}"


def _sleeps(samples: Sequence[Sample]) -> str:
    """Voluntary context switches per spawn: each is a sleep and a wake-up."""
    return f"{_per_spawn(samples, 2):.2f}"


def _ratio(samples: Sequence[Sample], peer: Sequence[Sample]) -> float:
    return median(_rates(samples)) / median(_rates(peer))


def _target(label: str, ratio: float, goal: float, what: str) -> Target:
    return Target(label, ratio >= goal, f"{what} = {ratio:.2f}× (goal ≥ {goal:g}×)")


def _targets(s: dict[str, list[Sample]]) -> list[Target]:
    arun, default, pidfd = (
        s["c=100 procvisor.arun"],
        s["c=100 asyncio default"],
        s["c=100 asyncio pidfd"],
    )
    run, sub, floor = s["procvisor.run"], s["subprocess.run"], s["posix_spawn"]

    def rate(samples: Sequence[Sample]) -> str:
        return f"{number(median(_rates(samples)))}/s"

    p99 = median(_ms(arun, 99))
    return [
        _target(
            "(a) arun, c=100, ≥ 1.2× bare asyncio (default watcher)",
            _ratio(arun, default),
            1.2,
            f"{rate(arun)} / {rate(default)}",
        ),
        _target(
            "(b) arun, c=100, within 10% of asyncio with PidfdChildWatcher",
            _ratio(arun, pidfd),
            0.9,
            f"{rate(arun)} / {rate(pidfd)}",
        ),
        Target(
            "(c) arun, c=100, p99 latency < 60 ms",
            p99 < 60,
            f"p99 {spread(_ms(arun, 99))} ms, median {number(p99)} ms (goal < 60 ms)",
        ),
        _target(
            "(d) sequential procvisor.run ≥ subprocess.run",
            _ratio(run, sub),
            1.0,
            f"{rate(run)} / {rate(sub)}",
        ),
        _target(
            "(e) sequential procvisor.run within 15% of raw posix_spawn",
            _ratio(run, floor),
            0.85,
            f"{rate(run)} / {rate(floor)}",
        ),
    ]


def _tables(s: dict[str, list[Sample]], n: int) -> list[Table]:
    seq_rows = [
        [
            label,
            spread(_rates(s[key])),
            f"{_ratio(s[key], s['subprocess.run']):.2f}×",
            f"{_ratio(s[key], s['posix_spawn']):.2f}×",
            f"{number(median(_ms(s[key], 50)))} / {number(median(_ms(s[key], 99)))}",
            _parent_cpu(s[key]),
            _sleeps(s[key]),
        ]
        for key, label in SEQ.items()
    ]
    async_rows = [
        [
            label,
            str(c),
            spread(_rates(s[f"c={c} {key}"])),
            f"{_ratio(s[f'c={c} {key}'], s[f'c={c} asyncio default']):.2f}×",
            f"{_ratio(s[f'c={c} {key}'], s[f'c={c} asyncio pidfd']):.2f}×",
            number(median(_ms(s[f"c={c} {key}"], 50))),
            spread(_ms(s[f"c={c} {key}"], 99)),
        ]
        for c in CONCURRENCY
        for key, label in ASYNC.items()
    ]
    limit_rows = [
        [
            label,
            spread([x.per_op * 1e6 for x in s[key]]),
            spread(_extra_us(s[key], s[twin])) if twin else "–",
            f"`{twin}`" if twin else "–",
        ]
        for key, label, twin in LIMIT
    ]
    return [
        Table(
            f"Sequential: {n:,} × `true`, one at a time",
            [
                "method",
                "jobs/s",
                "× subprocess.run",
                "× posix_spawn",
                "latency p50 / p99 ms",
                "parent CPU µs, user / system",
                "parent sleeps",
            ],
            seq_rows,
        ),
        Table(
            f"asyncio: {n:,} coroutines up front, Semaphore(c)",
            [
                "method",
                "c",
                "jobs/s",
                "× asyncio default",
                "× asyncio pidfd",
                "latency p50 ms",
                "latency p99 ms",
            ],
            async_rows,
        ),
        Table(
            f"Cost of one limit (`Limits(open_files={NOFILE})` unless named), sequential",
            ["method", "µs per spawn", "extra µs per spawn", "against (no limit)"],
            limit_rows,
        ),
    ]


def run(args: argparse.Namespace) -> Report:
    """Measure every variant ``args.reps`` times with ``args.n`` spawns each."""
    if args.n < 1:
        raise ValueError("--n must be 1 or more")
    facts = _check()
    samples = repeat(_variants(args.n), args.reps)
    summary = (
        f"`true` spawned {args.n:,} times per variant and repetition, {args.reps} repetitions, "
        "interleaved. Figures: median [min–max] over repetitions; ratios: between medians of "
        "this run; latency percentiles: per repetition, then the median of those (p99 of the "
        "asyncio rows with [min–max]). Sequential latency: call → child reaped; asyncio latency: "
        "semaphore acquired → finished. µs per spawn: wall time / N; extra µs: paired "
        "repetition by repetition. Parent CPU and sleeps (voluntary context switches): this "
        "process's own, from getrusage, per spawn; the child's time is not in them."
    )
    notes = [
        "procvisor here: " + ", ".join(f"{k}: {v}" for k, v in facts.items()) + ".",
        "`procvisor.run`/`arun` capture stdout and stderr (two pipes) unless `capture=False`, "
        "start each child in a new session and check that its group is empty; the "
        "`subprocess`/asyncio peers inherit stdout and stderr.",
    ]
    notes.append(_like_for_like(samples))
    return Report("spawn", summary, _tables(samples, args.n), _targets(samples), notes)


def _like_for_like(s: dict[str, list[Sample]]) -> str:
    """The targets' ratios again, with the peers capturing too (not targets; context)."""
    pairs = [
        ("`run` / captured `subprocess.run`", "procvisor.run", "subprocess.run capture"),
        ("`run` / the capturing floor", "procvisor.run", "posix_spawn capture"),
        ("the capturing floor / `posix_spawn`", "posix_spawn capture", "posix_spawn"),
        ("the capturing floor / `subprocess.run`", "posix_spawn capture", "subprocess.run"),
        (
            "`arun` / asyncio pidfd capturing, c=100",
            "c=100 procvisor.arun",
            "c=100 asyncio pidfd capture",
        ),
    ]
    text = ", ".join(f"{what} {_ratio(s[a], s[b]):.2f}×" for what, a, b in pairs)
    return f"Like for like (every side capturing both streams): {text}."
