"""Supervisor daemons side by side: procvisor, supervisord and circusd keeping N idle services.

Each daemon runs in the foreground as our child, in its own session, on a config of N
services p0..pN-1 (one process each; restart at once; stop timeout 2 s). One daemon
lifetime measures, without talking to the daemon except where said:

(a) start    daemon exec -> first child and -> N children exist (we read
             /proc/<daemon>/task/*/children every 5 ms), and -> the API/RPC says all N
             are running (polled every 50 ms after the passive mark).
(b) idle     after --settle s, the daemon's CPU % over --cpu-secs s (psutil cpu_times
             delta, no API traffic in the window); RSS, threads, fds; then the time of one
             "status of everything" call (median of 5).
(c) restart  kill -9 of one child (PID looked up over the API, then a seeded uniform(0,
             --kill-jitter) s sleep so the kill lands at a random phase of the daemon's
             timers) -> a new child PID exists (/proc polled every 1 ms), then -> the API
             reports that service running with a new PID (polled every 2 ms).
(d) stop     children that ignore SIGTERM (sh -c 'trap "" TERM; exec sleep'), so every stop
             costs the 2 s timeout and a SIGKILL: the API stop-all (procvisor
             POST /stop all; supervisor.stopAllProcesses(wait=True); circus stop waiting),
             procvisor POST /down, and SIGTERM to the daemon; time until every child is
             gone (and, for /down and SIGTERM, the daemon exited); children left alive
             after the daemon exited (orphans).

The steady lifetimes (a, b, c, then an API stop-all of their plain /bin/sleep children)
are repeated --reps times per daemon and N, interleaved; the stop lifetimes (d) --stop-reps
times. Peers run from --peer-python's venv (supervisor 4.3.0, circus 0.19.0); their RPC
clients run in a small bridge process of that venv, driven over a pipe. A peer that is not
installed there is skipped, and the report says so. Every process started is killed on the
way out (the daemon by PID, then only PIDs seen as its children whose command line is ours).
This is the approach of the team's harness shared/peers/sup_bench.py, in one process.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
import psutil

from bench._report import (
    Report,
    Table,
    Target,
    bytecode_env,
    median,
    number,
    percentile,
    spread,
)

QUICK = {
    "ns": "10",
    "tools": "procvisor",
    "reps": 2,
    "kills": 8,
    "cpu_secs": 3.0,
    "settle": 1.0,
    "stop_reps": 1,
}

STOP_TIMEOUT = 2.0
"""Seconds between the stop signal and SIGKILL, for every daemon."""
CHILDREN = {
    "sleep": ["/bin/sleep", "100000"],
    "ignterm": ["/bin/sh", "-c", 'trap "" TERM; exec /bin/sleep 100000'],
}
MARK = b"100000"
"""In the command line of every child we start: only such PIDs are ever killed by us."""
START_TIMEOUT = 120.0
STOP_SETTLE = 0.5
"""Seconds between "all running" and the stop, in the stop lifetimes."""
STATUS_CALLS = 5
SLOW_STOP_WAIT = 600.0
PEER_FIGURE_SUP_N200_SIGTERM = (
    "402.6 s (1 run in shared/peers/RESULTS.md §3c; not rerun here, see `--slow-peers`)"
)
GOAL_RESTART_P50_MS = 10.0
GOAL_RESTART_P99_MS = 50.0
GOAL_START_S = 0.5
GOAL_STOP_S = STOP_TIMEOUT + 0.5
GOAL_RSS_MIB = 40.0

_perf = time.perf_counter


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The supervise benchmark's own options."""
    parser.add_argument(
        "--ns", default="10,200", help="numbers of services, comma-separated (default 10,200)"
    )
    parser.add_argument(
        "--tools",
        default="procvisor,supervisord,circusd",
        help="daemons to run, comma-separated (default procvisor,supervisord,circusd)",
    )
    parser.add_argument(
        "--check-delays",
        default="5,0.1",
        help="circusd check_delay values to run, comma-separated (default 5,0.1: its default "
        "and a tuned one)",
    )
    parser.add_argument(
        "--kills",
        type=int,
        default=30,
        help="kill -9 restarts of procvisor per N, spread over the repetitions (default 30)",
    )
    parser.add_argument(
        "--peer-kills",
        type=int,
        default=10,
        help="kill -9 restarts of each peer per N, spread over the repetitions (default 10)",
    )
    parser.add_argument(
        "--kill-jitter",
        type=float,
        default=1.2,
        help="sleep uniform(0, X) s between the PID lookup and the kill (default 1.2)",
    )
    parser.add_argument(
        "--cpu-secs",
        type=float,
        default=10.0,
        help="idle CPU window per daemon lifetime, seconds (default 10)",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=2.0,
        help="seconds between all running and the CPU window (default 2)",
    )
    parser.add_argument(
        "--stop-reps",
        type=int,
        default=3,
        help="lifetimes per daemon, N and stop mode with SIGTERM-ignoring children (default 3)",
    )
    parser.add_argument(
        "--slow-peers",
        action="store_true",
        help="also measure supervisord's SIGTERM stop of N > 10 SIGTERM-ignoring children, "
        "once (it stops them one by one, 2 s each: ~400 s for 200); otherwise the shared "
        "peers' figure is cited",
    )
    parser.add_argument(
        "--peer-python",
        default="/tmp/peervenv/bin/python",
        help="python of the venv that has supervisor and circus (default /tmp/peervenv/bin/python)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path("/tmp/pvbench"),
        help="configs, state, sockets and logs, one folder per daemon (default /tmp/pvbench)",
    )


# -- /proc -----------------------------------------------------------------------------------


def children_of(pid: int) -> set[int]:
    """Direct children of ``pid`` (zombies included), from /proc: it does not wake the daemon."""
    kids: set[int] = set()
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return kids
    for tid in tids:
        with (
            contextlib.suppress(FileNotFoundError, ProcessLookupError),
            open(f"/proc/{pid}/task/{tid}/children") as f,
        ):
            kids.update(int(x) for x in f.read().split())
    return kids


def alive(pids: set[int]) -> set[int]:
    """Those of ``pids`` that exist and are not zombies."""
    out = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            continue
        if state != "Z":
            out.add(pid)
    return out


def _is_ours(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return MARK in f.read()
    except (FileNotFoundError, ProcessLookupError):
        return False


# -- the daemons -----------------------------------------------------------------------------


class Tool(Protocol):
    """One daemon's config and control channel."""

    argv: list[str]

    def running(self) -> int:
        """How many services the daemon reports running."""
        ...

    def prog_pid(self, idx: int) -> tuple[int | None, bool]:
        """Service ``p<idx>``'s PID and whether it is reported running."""
        ...

    def stop_all(self) -> None:
        """Stop every service; returns when the daemon says they are stopped."""
        ...

    def shutdown(self) -> None:
        """Ask the daemon to stop everything and exit."""
        ...

    def close(self) -> None:
        """Close the control channel."""
        ...


@dataclass(frozen=True, slots=True)
class Variant:
    """A daemon with its settings."""

    tool: str
    check_delay: float | None = None

    @property
    def label(self) -> str:
        if self.check_delay is None:
            return self.tool
        return f"{self.tool} (check_delay={self.check_delay:g})"

    @property
    def key(self) -> str:
        return self.tool if self.check_delay is None else f"{self.tool}-{self.check_delay:g}"


class Procvisor:
    """``procvisor up -c FILE``; its API over the Unix socket with httpx."""

    def __init__(self, base: Path, n: int, child: str, exe: str) -> None:
        state = base / "state"
        lines = ["[daemon]", f"state_dir = {json.dumps(str(state))}", ""]
        for i in range(n):
            lines += [
                f"[services.p{i}]",
                f"command = {json.dumps(CHILDREN[child])}",
                'restart = "always"',
                'min_uptime = "0s"',
                f'stop_timeout = "{STOP_TIMEOUT:g}s"',
                "",
            ]
        conf = base / "procvisor.toml"
        conf.write_text("\n".join(lines))
        self.argv = [exe, "up", "-c", str(conf)]
        self._socket = state / "procvisor.sock"
        self._client: httpx.Client | None = None

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(
                transport=httpx.HTTPTransport(uds=str(self._socket)),
                base_url="http://procvisor",
                timeout=120,
            )
        return self._client

    def _get(self, path: str, **params: str) -> Any:
        response = self.client.get(path, params=params)
        response.raise_for_status()
        return response.json()

    def _post(self, path: str, body: dict[str, Any] | None = None) -> None:
        self.client.post(path, json=body).raise_for_status()

    def running(self) -> int:
        return sum(1 for s in self._get("/status") if s["state"] == "running")

    def prog_pid(self, idx: int) -> tuple[int | None, bool]:
        (status,) = self._get("/status", service=f"p{idx}")
        return status["pid"], status["state"] == "running"

    def stop_all(self) -> None:
        self._post("/stop", {"targets": ["all"]})

    def shutdown(self) -> None:
        self._post("/down")

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


BRIDGE = r"""
import json, sys, xmlrpc.client
kind, endpoint = sys.argv[1], sys.argv[2]
conn = None
if kind == "supervisord":
    from supervisor.xmlrpc import SupervisorTransport
    def connect():
        return xmlrpc.client.ServerProxy(
            "http://127.0.0.1", transport=SupervisorTransport(None, None, "unix://" + endpoint))
    def running(c):
        return sum(1 for i in c.supervisor.getAllProcessInfo() if i["statename"] == "RUNNING")
    def pid(c, idx):
        i = c.supervisor.getProcessInfo("p%d" % idx)
        return [i["pid"] or None, i["statename"] == "RUNNING"]
    def stop_all(c):
        c.supervisor.stopAllProcesses(True)
    def shutdown(c):
        c.supervisor.shutdown()
else:
    from circus.client import CircusClient
    def connect():
        return CircusClient(endpoint=endpoint, timeout=120)
    def call(c, command, **props):
        r = c.call({"command": command, "properties": props})
        if r.get("status") != "ok":
            raise RuntimeError("circus %s: %r" % (command, r))
        return r
    def running(c):
        return call(c, "numprocesses")["numprocesses"]
    def pid(c, idx):
        pids = call(c, "list", name="p%d" % idx)["pids"]
        return [pids[0], True] if pids else [None, False]
    def stop_all(c):
        call(c, "stop", waiting=True)
    def shutdown(c):
        call(c, "quit", waiting=True)
OPS = {"running": running, "pid": pid, "stop_all": stop_all, "shutdown": shutdown}
for line in sys.stdin:
    op, args = json.loads(line)
    try:
        if conn is None:
            conn = connect()
        out = {"value": OPS[op](conn, *args)}
    except Exception as e:
        if kind == "supervisord":
            conn = None  # a fresh transport after an error
        out = {"error": repr(e)[:300]}
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
"""
"""The peers' RPC clients, run by the peer venv's python: one JSON request and reply a line."""


class BridgeError(RuntimeError):
    """The peer's RPC call failed (or the bridge died)."""


class Peer:
    """supervisord or circusd, configured as the shared harness does, driven through BRIDGE."""

    def __init__(self, variant: Variant, base: Path, n: int, child: str, python: str) -> None:
        bin_dir = Path(python).parent
        command = shlex.join(CHILDREN[child])
        if variant.tool == "supervisord":
            endpoint = str(base / "sup.sock")
            lines = [
                "[unix_http_server]",
                f"file={endpoint}",
                "",
                "[supervisord]",
                "nodaemon=true",
                f"logfile={base}/supervisord.log",
                f"pidfile={base}/supervisord.pid",
                f"childlogdir={base}/logs",
                "minfds=4096",
                "",
                "[rpcinterface:supervisor]",
                "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
                "",
            ]
            for i in range(n):
                lines += [
                    f"[program:p{i}]",
                    f"command={command}",
                    "autostart=true",
                    "autorestart=true",
                    "startsecs=0",
                    "startretries=3",
                    f"stopwaitsecs={STOP_TIMEOUT:g}",
                    "stopsignal=TERM",
                    "",
                ]
            (base / "logs").mkdir()
            conf = base / "supervisord.conf"
            self.argv = [str(bin_dir / "supervisord"), "-c", str(conf)]
        else:
            endpoint = f"ipc://{base}/circus-ctl.sock"
            lines = [
                "[circus]",
                f"endpoint = {endpoint}",
                f"pubsub_endpoint = ipc://{base}/circus-pub.sock",
                "multicast_endpoint = ",
                "statsd = false",
                "httpd = false",
                f"check_delay = {variant.check_delay:g}",
                "warmup_delay = 0",
                f"logoutput = {base}/circusd.log",
                "loglevel = info",
                "",
            ]
            for i in range(n):
                lines += [
                    f"[watcher:p{i}]",
                    f"cmd = {command}",
                    "numprocesses = 1",
                    "warmup_delay = 0",
                    "respawn = true",
                    "max_retry = -1",
                    f"graceful_timeout = {STOP_TIMEOUT:g}",
                    "stop_signal = TERM",
                    "",
                ]
            conf = base / "circus.ini"
            self.argv = [str(bin_dir / "circusd"), str(conf)]
        conf.write_text("\n".join(lines))
        self._log = (base / "bridge.log").open("w")
        self._bridge = subprocess.Popen(
            [python, "-c", BRIDGE, variant.tool, endpoint],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            start_new_session=True,
        )

    def _call(self, op: str, *args: Any) -> Any:
        assert self._bridge.stdin is not None and self._bridge.stdout is not None
        try:
            self._bridge.stdin.write(json.dumps([op, args]) + "\n")
            self._bridge.stdin.flush()
        except BrokenPipeError:
            raise BridgeError("the RPC bridge died") from None
        line = self._bridge.stdout.readline()
        if not line:
            raise BridgeError("the RPC bridge died")
        reply = json.loads(line)
        if "error" in reply:
            raise BridgeError(reply["error"])
        return reply["value"]

    def running(self) -> int:
        return int(self._call("running"))

    def prog_pid(self, idx: int) -> tuple[int | None, bool]:
        pid, running = self._call("pid", idx)
        return pid, running

    def stop_all(self) -> None:
        self._call("stop_all")

    def shutdown(self) -> None:
        self._call("shutdown")

    def close(self) -> None:
        if self._bridge.poll() is None:
            self._bridge.kill()
        self._bridge.wait()
        for pipe in (self._bridge.stdin, self._bridge.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        self._log.close()


class Daemon:
    """One daemon lifetime: started now; :meth:`close` kills what is left of it."""

    def __init__(self, tool: Tool, base: Path) -> None:
        self.tool = tool
        self.seen: set[int] = set()
        self.left: int | None = None
        self._log_path = base / "daemon.log"
        self._log = self._log_path.open("w")
        self.t0 = _perf()
        try:
            self.proc = subprocess.Popen(
                tool.argv,
                env=bytecode_env(),
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except BaseException:
            tool.close()
            self._log.close()
            raise
        self.pid = self.proc.pid

    def kids(self) -> set[int]:
        kids = children_of(self.pid)
        self.seen |= kids
        return kids

    def _died(self, what: str) -> RuntimeError:
        self._log.flush()
        tail = self._log_path.read_text(errors="replace").strip().splitlines()[-3:]
        return RuntimeError(
            f"the daemon exited ({self.proc.returncode}) while waiting for {what}: "
            + " / ".join(tail)
        )

    def wait_until(
        self, pred: Callable[[], object], timeout: float, interval: float, what: str
    ) -> float:
        """``perf_counter()`` when ``pred()`` is first true; errors from it mean not yet."""
        deadline = _perf() + timeout
        last: Exception | None = None
        while True:
            try:
                if pred():
                    return _perf()
            except Exception as exc:  # not ready yet (socket missing, RPC refused, ...)
                last = exc
            if self.proc.poll() is not None:
                raise self._died(what)
            if _perf() > deadline:
                raise TimeoutError(f"no {what} after {timeout:g} s (last error: {last!r})")
            time.sleep(interval)

    def wait_exit(self, timeout: float) -> float:
        """``perf_counter()`` when the daemon has exited (polled every 5 ms: it is our child)."""
        deadline = _perf() + timeout
        while self.proc.poll() is None:
            if _perf() > deadline:
                raise TimeoutError(f"the daemon still runs {timeout:g} s later")
            time.sleep(0.005)
        return _perf()

    def close(self) -> int:
        """Kill the daemon if it still runs, then the children we saw that are still alive.

        Returns how many children had to be killed; a second call does nothing.
        """
        if self.left is not None:
            return self.left
        if self.proc.poll() is None:
            self.kids()
            self.proc.kill()
            self.proc.wait()
        left = {pid for pid in alive(self.seen) if _is_ours(pid)}
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.tool.close()
        self._log.close()
        self.left = len(left)
        return self.left


def wait_gone(pids: set[int], timeout: float) -> float | None:
    """``perf_counter()`` when none of ``pids`` is alive any more; None after ``timeout``."""
    deadline = _perf() + timeout
    left = set(pids)
    while True:
        left = alive(left)
        if not left:
            return _perf()
        if _perf() > deadline:
            return None
        time.sleep(0.005)


# -- one daemon lifetime ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Setup:
    """Where the daemons come from and how long each phase lasts."""

    workdir: Path
    procvisor: str
    peer_python: str
    settle: float
    cpu_secs: float
    kill_jitter: float


def _tool(variant: Variant, base: Path, n: int, child: str, setup: Setup) -> Tool:
    if variant.tool == "procvisor":
        return Procvisor(base, n, child, setup.procvisor)
    return Peer(variant, base, n, child, setup.peer_python)


def _fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


class LifetimeError(RuntimeError):
    """A daemon lifetime failed; its folder (config, logs) was kept for a look."""


def _keep(base: Path, exc: Exception) -> LifetimeError:
    """Move ``base`` aside so that the next lifetime does not wipe it; say where it went."""
    for k in range(1, 1000):
        kept = base.with_name(f"{base.name}-failed{k}")
        if not kept.exists():
            break
    base.rename(kept)
    return LifetimeError(f"{type(exc).__name__}: {exc} (config and logs kept in {kept})")


def _start(d: Daemon, n: int) -> dict[str, float]:
    first: float | None = None

    def have_all() -> bool:
        nonlocal first
        kids = d.kids()
        if kids and first is None:
            first = _perf()
        return len(kids) >= n

    t_kids = d.wait_until(have_all, START_TIMEOUT, 0.005, f"{n} children")
    t_api = d.wait_until(lambda: d.tool.running() == n, START_TIMEOUT, 0.05, "all running")
    assert first is not None
    return {
        "first_child_s": first - d.t0,
        "children_s": t_kids - d.t0,
        "api_s": t_api - d.t0,
    }


def voluntary_switches(pid: int) -> int:
    """Voluntary context switches of all of ``pid``'s threads so far: how often they slept."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with (
            contextlib.suppress(FileNotFoundError, ProcessLookupError),
            open(f"/proc/{pid}/task/{tid}/status") as f,
        ):
            for line in f:
                if line.startswith("voluntary_ctxt_switches:"):
                    total += int(line.split()[1])
    return total


def _idle(d: Daemon, setup: Setup) -> dict[str, float]:
    time.sleep(setup.settle)
    ps = psutil.Process(d.pid)
    c0, s0, w0 = ps.cpu_times(), voluntary_switches(d.pid), _perf()
    time.sleep(setup.cpu_secs)
    c1, s1, w1 = ps.cpu_times(), voluntary_switches(d.pid), _perf()
    cpu = (c1.user + c1.system) - (c0.user + c0.system)
    out = {
        "cpu_s": cpu,
        "window_s": w1 - w0,
        "cpu_pct": 100 * cpu / (w1 - w0),
        "wakeups": (s1 - s0) / (w1 - w0),
        "rss_mib": ps.memory_info().rss / 2**20,
        "threads": ps.num_threads(),
        "fds": ps.num_fds(),
    }
    calls = []
    for _ in range(STATUS_CALLS):
        t = _perf()
        d.tool.running()
        calls.append(_perf() - t)
    out["status_ms"] = median(calls) * 1e3
    return out


def _restarts(
    d: Daemon, n: int, kills: int, jitter: float, seed: int
) -> tuple[list[float], list[float]]:
    rnd = random.Random(seed)
    passive, api = [], []
    for i in range(kills):
        idx = (i * 7 + 3) % n  # different services (7 is prime to 10 and 200)
        old, _ = d.tool.prog_pid(idx)
        assert old is not None
        time.sleep(rnd.uniform(0, jitter))
        before = d.kids()
        # The clock starts before kill(2): on 2 cores the daemon may respawn the child
        # before we are scheduled again, and a clock read after the call would miss that.
        tk = _perf()
        os.kill(old, signal.SIGKILL)

        def respawned(before: set[int] = before) -> bool:
            return bool(d.kids() - before)

        tp = d.wait_until(respawned, 30, 0.001, "a new child")

        def reported(idx: int = idx, old: int = old) -> bool:
            pid, running = d.tool.prog_pid(idx)
            return running and pid not in (None, old)

        tr = d.wait_until(reported, 30, 0.002, "the new PID over the API")
        passive.append((tp - tk) * 1e3)
        api.append((tr - tk) * 1e3)
        d.kids()
        time.sleep(0.3)
    return passive, api


def _api_stop(d: Daemon) -> dict[str, float | None]:
    progs = d.kids()
    ts = _perf()
    d.tool.stop_all()
    out: dict[str, float | None] = {"stop_call_s": _perf() - ts}
    gone = wait_gone(progs, 120)
    out["stop_gone_s"] = None if gone is None else gone - ts
    t1 = _perf()
    with contextlib.suppress(Exception):  # the connection may drop as the daemon exits
        d.tool.shutdown()
    out["shutdown_s"] = d.wait_exit(60) - t1
    return out


def steady(variant: Variant, n: int, kills: int, rep: int, setup: Setup) -> dict[str, Any]:
    """(a), (b), (c), then an API stop-all of /bin/sleep children and a shutdown."""
    base = _fresh(setup.workdir / f"{variant.key}-n{n}")
    d = Daemon(_tool(variant, base, n, "sleep", setup), base)
    out: dict[str, Any] = {}
    try:
        out.update(_start(d, n))
        out.update(_idle(d, setup))
        out["restart_ms"], out["restart_api_ms"] = _restarts(
            d, n, kills, setup.kill_jitter, seed=1000 * rep + n
        )
        out.update(_api_stop(d))
    except Exception as exc:
        d.close()
        raise _keep(base, exc) from exc
    finally:
        out["leftovers"] = d.close()
    return out


def stop(variant: Variant, n: int, mode: str, setup: Setup, wait: float) -> dict[str, Any]:
    """(d): N SIGTERM-ignoring children, stopped by ``mode``: api, down or sigterm."""
    base = _fresh(setup.workdir / f"{variant.key}-n{n}-{mode}")
    d = Daemon(_tool(variant, base, n, "ignterm", setup), base)
    out: dict[str, Any] = {}
    try:
        out.update(_start(d, n))
        time.sleep(STOP_SETTLE)
        if mode == "api":
            out.update(_api_stop(d))
            return out
        progs = d.kids()
        ts = _perf()
        if mode == "down":
            d.tool.shutdown()
        else:
            os.kill(d.pid, signal.SIGTERM)
        # Children gone (the stop itself) and daemon exited (its own teardown too), apart.
        left, gone = set(progs), None
        while d.proc.poll() is None:
            if gone is None:
                left = alive(left)
                if not left:
                    gone = _perf()
            if _perf() - ts > wait:
                raise TimeoutError(f"the daemon still runs {wait:g} s after the stop")
            time.sleep(0.005 if _perf() - ts < 10 else 0.05)
        exited = _perf()
        out["orphans"] = len(alive(progs))
        if gone is None:
            gone = wait_gone(progs, 10)
        out["exit_s"] = exited - ts
        out["gone_s"] = None if gone is None else gone - ts
        out["done_s"] = None if gone is None else max(gone, exited) - ts
    except Exception as exc:
        d.close()
        raise _keep(base, exc) from exc
    finally:
        out["leftovers"] = d.close()
    return out


# -- the run ---------------------------------------------------------------------------------


def _csv(text: str, kind: Callable[[str], Any]) -> list[Any]:
    return [kind(x) for x in text.split(",") if x.strip()]


def _peer_versions(python: str) -> dict[str, str | None]:
    """``{"supervisord": "4.3.0" | None, "circusd": ...}``: None where it is not installed."""
    found: dict[str, str | None] = {"supervisord": None, "circusd": None}
    if not Path(python).exists():
        return found
    for tool, dist in (("supervisord", "supervisor"), ("circusd", "circus")):
        probe = subprocess.run(
            [python, "-c", f"import {dist}, importlib.metadata as m; print(m.version({dist!r}))"],
            capture_output=True,
            text=True,
            check=False,
        )
        if probe.returncode == 0 and (Path(python).parent / tool).exists():
            found[tool] = probe.stdout.strip()
    return found


def _procvisor_exe() -> str:
    exe = Path(sys.executable).parent / "procvisor"
    if exe.exists():
        return str(exe)
    found = shutil.which("procvisor")
    if found is None:
        raise RuntimeError("no procvisor command beside this python nor on PATH")
    return found


@dataclass(slots=True)
class Results:
    steady: dict[tuple[str, int], list[dict[str, Any]]]
    stops: dict[tuple[str, int, str], list[dict[str, Any]]]
    errors: list[str]


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _attempt(
    bucket: list[dict[str, Any]],
    errors: list[str],
    what: str,
    measure: Callable[[], dict[str, Any]],
) -> None:
    """Run one lifetime; its figures go to ``bucket``, or its failure to ``errors``."""
    try:
        out = measure()
    except Exception as exc:
        errors.append(
            f"{what} failed: {exc}" if isinstance(exc, LifetimeError) else f"{what} failed: {exc!r}"
        )
        _progress(f"{what}: FAILED: {exc!r}")
        return
    bucket.append(out)
    _progress(f"{what}: " + ", ".join(f"{k} {_brief(v)}" for k, v in out.items()))


def _brief(value: Any) -> str:
    if isinstance(value, list):
        return f"p50 {number(median(value))}" if value else "-"
    if isinstance(value, float):
        return number(value)
    return str(value)


def _stop_modes(variant: Variant) -> list[str]:
    return ["api", "down", "sigterm"] if variant.tool == "procvisor" else ["api", "sigterm"]


def run(args: argparse.Namespace) -> Report:
    """Run every daemon lifetime, interleaved, and report."""
    ns = _csv(args.ns, int)
    tools = _csv(args.tools, str)
    unknown = set(tools) - {"procvisor", "supervisord", "circusd"}
    if unknown or not ns or min(ns) < 1:
        raise ValueError(f"--tools: unknown {sorted(unknown)}; --ns: whole numbers ≥ 1")
    versions = _peer_versions(args.peer_python)
    notes: list[str] = []
    variants: list[Variant] = []
    for tool in tools:
        if tool == "procvisor":
            variants.append(Variant(tool))
        elif versions[tool] is None:
            notes.append(
                f"**{tool} skipped**: not installed in `{args.peer_python}` (make it with "
                "`python3 -m venv /tmp/peervenv && /tmp/peervenv/bin/pip install "
                "supervisor==4.3.0 circus==0.19.0 psutil`)."
            )
        elif tool == "circusd":
            variants += [Variant(tool, delay) for delay in _csv(args.check_delays, float)]
        else:
            variants.append(Variant(tool))
    setup = Setup(
        workdir=args.workdir,
        procvisor=_procvisor_exe(),
        peer_python=args.peer_python,
        settle=args.settle,
        cpu_secs=args.cpu_secs,
        kill_jitter=args.kill_jitter,
    )
    results = Results(
        steady={(v.key, n): [] for v in variants for n in ns},
        stops={},
        errors=[],
    )
    # The stop lifetimes: circusd once, at its default check_delay (its stop does not use it).
    stop_variants = [v for v in variants if v.check_delay in (None, 5.0)]
    if not any(v.tool == "circusd" and v.check_delay == 5.0 for v in stop_variants):
        stop_variants += [v for v in variants if v.tool == "circusd"][:1]
    for v in stop_variants:
        for n in ns:
            for mode in _stop_modes(v):
                results.stops[(v.key, n, mode)] = []

    try:
        for rep in range(1, args.reps + 1):
            for n in ns:
                for v in variants:
                    total = args.kills if v.tool == "procvisor" else args.peer_kills
                    kills = math.ceil(total / args.reps) if total > 0 else 0
                    _attempt(
                        results.steady[(v.key, n)],
                        results.errors,
                        f"steady {v.label} N={n} rep {rep}/{args.reps}",
                        lambda v=v, n=n, kills=kills, rep=rep: steady(v, n, kills, rep, setup),
                    )
        for rep in range(1, args.stop_reps + 1):
            for n in ns:
                for v in stop_variants:
                    for mode in _stop_modes(v):
                        slow = v.tool == "supervisord" and mode == "sigterm" and n > 10
                        if slow and (not args.slow_peers or rep > 1):
                            continue
                        wait = SLOW_STOP_WAIT if slow else 120.0
                        _attempt(
                            results.stops[(v.key, n, mode)],
                            results.errors,
                            f"stop {v.label} N={n} {mode} rep {rep}/{args.stop_reps}",
                            lambda v=v, n=n, mode=mode, wait=wait: stop(v, n, mode, setup, wait),
                        )
    finally:
        if not results.errors:
            shutil.rmtree(args.workdir, ignore_errors=True)

    return _report(args, variants, stop_variants, ns, versions, results, notes)


# -- the report ------------------------------------------------------------------------------


def _values(runs: Sequence[dict[str, Any]], key: str) -> list[float]:
    return [r[key] for r in runs if r.get(key) is not None]


def _pooled(runs: Sequence[dict[str, Any]], key: str) -> list[float]:
    return [x for r in runs for x in r.get(key, [])]


def _cell(values: Sequence[float], fmt: Callable[[float], str] = number) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{fmt(values[0])} (1 run)"
    if min(values) == max(values):
        return fmt(values[0])
    return spread(values, fmt)


def _whole(value: float) -> str:
    return f"{value:,.0f}"


def pooled_cpu(runs: Sequence[dict[str, Any]]) -> float | None:
    """CPU % over all idle windows together: total CPU seconds / total window seconds."""
    window = sum(_values(runs, "window_s"))
    return 100 * sum(_values(runs, "cpu_s")) / window if window else None


def _cpu_cell(runs: Sequence[dict[str, Any]]) -> str:
    pooled = pooled_cpu(runs)
    if pooled is None:
        return "–"
    each = _values(runs, "cpu_pct")
    return f"{pooled:.2f} [{min(each):.2f}–{max(each):.2f}]"


def _lat(values: Sequence[float]) -> str:
    if not values:
        return "–"
    return (
        f"{number(percentile(values, 50))} / {number(percentile(values, 99))} / "
        f"{number(max(values))}"
    )


def _steady_table(
    variants: Sequence[Variant], ns: Sequence[int], results: Results
) -> tuple[Table, Table]:
    rows, restart_rows = [], []
    for n in ns:
        for v in variants:
            runs = results.steady[(v.key, n)]
            rows.append(
                [
                    v.label,
                    str(n),
                    str(len(runs)),
                    _cell(_values(runs, "first_child_s")),
                    _cell(_values(runs, "children_s")),
                    _cell(_values(runs, "api_s")),
                    _cpu_cell(runs),
                    _cell(_values(runs, "wakeups"), _whole),
                    _cell(_values(runs, "rss_mib")),
                    _cell(_values(runs, "threads"), _whole),
                    _cell(_values(runs, "fds"), _whole),
                    _cell(_values(runs, "status_ms")),
                    _cell(_values(runs, "stop_gone_s")),
                ]
            )
            passive, api = _pooled(runs, "restart_ms"), _pooled(runs, "restart_api_ms")
            restart_rows.append(
                [
                    v.label,
                    str(n),
                    str(len(passive)),
                    _lat(passive),
                    f"{number(min(passive))}" if passive else "–",
                    _lat(api),
                ]
            )
    return (
        Table(
            "(a) start and (b) idle, children `/bin/sleep 100000` "
            "(s unless stated; median [min–max] over lifetimes)",
            [
                "daemon",
                "N",
                "lifetimes",
                "exec → first child",
                "exec → N children",
                "exec → API: all running",
                "idle CPU % (all windows pooled) [min–max]",
                "idle wakeups/s",
                "RSS MiB",
                "threads",
                "fds",
                "status-of-all call ms",
                "API stop-all → children gone",
            ],
            rows,
        ),
        Table(
            "(c) restart after kill -9 of one child (ms; all kills of all lifetimes pooled)",
            [
                "daemon",
                "N",
                "kills",
                "kill → new child PID exists p50 / p99 / max",
                "min",
                "kill → API reports it running with the new PID p50 / p99 / max",
            ],
            restart_rows,
        ),
    )


def _stop_table(
    stop_variants: Sequence[Variant], ns: Sequence[int], results: Results, slow: bool
) -> Table:
    rows = []
    for n in ns:
        for v in stop_variants:
            api = results.stops.get((v.key, n, "api"), [])
            down = results.stops.get((v.key, n, "down"), [])
            term = results.stops.get((v.key, n, "sigterm"), [])
            term_gone, term_done = _cell(_values(term, "gone_s")), _cell(_values(term, "done_s"))
            if v.tool == "supervisord" and n > 10 and not slow:
                term_gone = "–"
                term_done = PEER_FIGURE_SUP_N200_SIGTERM if n == 200 else "not run (`--slow-peers`)"
            orphans = _values(down, "orphans") + _values(term, "orphans")
            mine = v.tool == "procvisor"
            rows.append(
                [
                    v.label,
                    str(n),
                    _cell(_values(api, "stop_call_s")),
                    _cell(_values(api, "stop_gone_s")),
                    _cell(_values(api, "shutdown_s")),
                    _cell(_values(down, "gone_s")) if mine else "n/a",
                    _cell(_values(down, "done_s")) if mine else "n/a",
                    term_gone,
                    term_done,
                    f"{max(orphans):.0f}" if orphans else "–",
                ]
            )
    return Table(
        "(d) stop N children that ignore SIGTERM, stop timeout 2 s "
        "(s from the request or signal; median [min–max] over lifetimes)",
        [
            "daemon",
            "N",
            "API stop-all: call returns",
            "API stop-all: children gone",
            "then shutdown: daemon exited",
            "`POST /down`: children gone",
            "`POST /down`: children gone + daemon exited",
            "SIGTERM: children gone",
            "SIGTERM: children gone + daemon exited",
            "orphans (max, down/SIGTERM)",
        ],
        rows,
    )


def _median_of(runs: Sequence[dict[str, Any]], key: str) -> float | None:
    values = _values(runs, key)
    return median(values) if values else None


def _targets(ns: Sequence[int], results: Results, notes: list[str]) -> list[Target]:
    pv = {n: results.steady.get(("procvisor", n), []) for n in ns}
    targets: list[Target] = []
    kills = {n: _pooled(pv[n], "restart_ms") for n in ns if _pooled(pv[n], "restart_ms")}
    if kills:
        p50 = {n: percentile(k, 50) for n, k in kills.items()}
        p99 = {n: percentile(k, 99) for n, k in kills.items()}

        def each(values: dict[int, float]) -> str:
            return ", ".join(
                f"N={n}: {number(x)} ms ({len(kills[n])} kills)" for n, x in values.items()
            )

        targets += [
            Target(
                f"restart after kill -9, median < {GOAL_RESTART_P50_MS:g} ms",
                all(x < GOAL_RESTART_P50_MS for x in p50.values()),
                each(p50),
            ),
            Target(
                f"restart after kill -9, p99 < {GOAL_RESTART_P99_MS:g} ms",
                all(x < GOAL_RESTART_P99_MS for x in p99.values()),
                each(p99),
            ),
        ]
    big = 200 if 200 in ns else None
    if big is None:
        notes.append("The N=200 targets were not evaluated: N=200 is not in this run.")
        return targets
    mine = pooled_cpu(pv[big])
    peers = {
        label: pooled_cpu(results.steady.get((key, big), []))
        for key, label in (
            ("supervisord", "supervisord"),
            ("circusd-5", "circusd (check_delay=5)"),
        )
    }
    tuned = pooled_cpu(results.steady.get(("circusd-0.1", big), []))
    if mine is not None and all(x is not None for x in peers.values()):
        detail = f"procvisor {mine:.2f} % vs " + ", ".join(
            f"{label} {x:.2f} %" for label, x in peers.items() if x is not None
        )
        if tuned is not None:
            detail += f" (circusd check_delay=0.1: {tuned:.2f} %)"
        targets.append(
            Target(
                "daemon CPU with 200 idle services below both peers (at their defaults)",
                all(mine < x for x in peers.values() if x is not None),
                detail + "; CPU seconds / seconds over all idle windows",
            )
        )
    else:
        notes.append("The CPU target was not evaluated: a peer's N=200 idle figure is missing.")
    kids = _median_of(pv[big], "children_s")
    if kids is not None:
        # The peer figures for "start 200 services" (supervisord 2.6 s, circus
        # 1.35 s) are shared/peers' "start -> N children exist" column: the same mark here.
        first = _median_of(pv[big], "first_child_s")
        api_s = _median_of(pv[big], "api_s")
        targets.append(
            Target(
                f"200 services running within {GOAL_START_S:g} s of `up` (exec → 200 children)",
                kids <= GOAL_START_S,
                f"exec → 200 children {number(kids)} s (first child {number(first or 0)} s; "
                f"the API reports all running at {number(api_s or 0)} s); medians",
            )
        )
    for mode, label in (("down", "`procvisor down` (`POST /down`)"), ("sigterm", "SIGTERM")):
        runs = results.stops.get(("procvisor", big, mode), [])
        done = _values(runs, "done_s")
        if done:
            orphans = max(_values(runs, "orphans"), default=0)
            targets.append(
                Target(
                    f"stop 200 SIGTERM-ignoring services through {label}: children gone and "
                    f"daemon exited within {GOAL_STOP_S:g} s (2 s timeout + 0.5 s), no orphans",
                    median(done) <= GOAL_STOP_S and orphans == 0,
                    f"{spread(done)} s over {len(done)} runs (children gone "
                    f"{spread(_values(runs, 'gone_s'))} s), orphans {orphans:.0f}",
                )
            )
    rss = {n: _median_of(pv[n], "rss_mib") for n in ns}
    if all(x is not None for x in rss.values()):
        targets.append(
            Target(
                f"daemon RSS ≤ {GOAL_RSS_MIB:g} MiB",
                all(x is not None and x <= GOAL_RSS_MIB for x in rss.values()),
                ", ".join(f"N={n}: {number(x or 0)} MiB" for n, x in rss.items()),
            )
        )
    return targets


def _report(
    args: argparse.Namespace,
    variants: Sequence[Variant],
    stop_variants: Sequence[Variant],
    ns: Sequence[int],
    versions: dict[str, str | None],
    results: Results,
    notes: list[str],
) -> Report:
    start_table, restart_table = _steady_table(variants, ns, results)
    tables = [start_table, restart_table, _stop_table(stop_variants, ns, results, args.slow_peers)]
    targets = _targets(ns, results, notes)
    peers = ", ".join(f"{t} {v}" for t, v in versions.items() if v) or "none"
    summary = (
        f"N = {', '.join(map(str, ns))} services, one process each; {args.reps} steady lifetimes "
        f"per daemon and N (start, {args.settle:g} s settle, {args.cpu_secs:g} s idle CPU window, "
        f"kill -9 restarts: {args.kills} per N for procvisor and {args.peer_kills} for each "
        f"peer, each after a uniform(0, {args.kill_jitter:g}) s pause), then "
        f"{args.stop_reps} stop lifetimes per daemon, N and stop mode, all interleaved. "
        "Times are measured from our side: /proc is read every 1–5 ms without talking to the "
        "daemon; API/RPC marks are polled after the passive ones. Peers: "
        f"{peers} from `{args.peer_python}`."
    )
    notes += [
        "Bytecode. procvisor's modules are compiled before the first lifetime and the daemons "
        "run without PYTHONDONTWRITEBYTECODE, as from `pip install` (the peers' venv has "
        "bytecode too): an editable install under that variable compiles ~50 modules from "
        "source at every `up`, about 0.15 s of its start.",
        'Settings. procvisor: `restart = "always"`, `min_uptime = "0s"`, '
        '`stop_timeout = "2s"`, everything else default (output of every service captured to '
        "rotated log files). supervisord: `startsecs=0 startretries=3 autorestart=true "
        "stopwaitsecs=2 stopsignal=TERM minfds=4096`, logs AUTO. circusd: `warmup_delay=0 "
        "respawn=true max_retry=-1 graceful_timeout=2 stop_signal=TERM`, no multicast, statsd "
        "or httpd; the same settings as shared/peers/sup_bench.py.",
        "The peers' RPC goes through a bridge process (their own client libraries in their "
        "venv, over a pipe), which adds well under 1 ms to an RPC mark; /proc marks do not "
        "depend on it. Status-of-all call: procvisor `GET /status`, supervisord "
        "`getAllProcessInfo`, circusd `numprocesses`, median of 5 after the idle window.",
        "p99 is nearest-rank over the pooled kills: with fewer than 100 kills it is the "
        "slowest one. The `POST /down` stop exists for procvisor only (the peers' shutdown "
        "RPCs take the same path as their SIGTERM).",
    ]
    notes += results.errors
    return Report("supervise", summary, tables, targets, notes)
