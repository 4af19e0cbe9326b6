"""The job commands: ``submit``, ``jobs``, ``job``, ``cancel``, ``retry``, ``queue``, ``quotas``.

Thin clients of the daemon's ``/jobs``, ``/queue`` and ``/quotas``. ``submit`` prints the job's
id; with ``--wait`` it follows the job's output and exits with the job's exit code (128 + N
for a signal, 1 for a job that failed without one: expired, cancelled, could not start).
Other exit statuses as the other control commands.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any, NoReturn

import click

from procvisor.cli._client import CliError, connect
from procvisor.cli._control import (
    _command,
    _json_option,
    _print_json,
    _show,
    _table,
    listing_group,
)
from procvisor.cli._run import UsageLine, _EnvVar, env_file_option, merged_env

__all__ = ["JOB_COMMANDS", "format_job", "format_jobs", "format_schedules", "schedules_group"]

_FINAL = {"succeeded", "failed", "expired", "cancelled"}


def _ago(ts: float | None) -> str:
    from procvisor.policy.units import format_duration  # noqa: PLC0415

    return "-" if ts is None else format_duration(max(0.0, time.time() - ts)) + " ago"


def _local_time(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(ts))


def _exit(job: dict[str, Any]) -> str:
    if job.get("signal"):
        return str(job["signal"])
    return "-" if job.get("exit_code") is None else str(job["exit_code"])


def format_jobs(items: Sequence[dict[str, Any]]) -> str:
    """Jobs as a table: ID NAME STATE TENANT PRIORITY RUNS EXIT SUBMITTED."""
    if not items:
        return "no jobs"
    rows = [["ID", "NAME", "STATE", "TENANT", "PRIORITY", "RUNS", "EXIT", "SUBMITTED"]]
    rows += [
        [
            str(j["id"]),
            j["name"],
            "held" if j.get("held") and j["state"] == "queued" else j["state"],
            j["tenant"],
            j["priority"],
            str(j["runs"]),
            _exit(j),
            _ago(j.get("submitted")),
        ]
        for j in items
    ]
    return _table(rows)


def format_job(job: dict[str, Any]) -> str:
    """One job: its fields, then its state history."""
    from procvisor.policy.units import format_duration  # noqa: PLC0415

    spec = job.get("spec", {})
    lines = [
        f"job {job['id']} ({job['name']}): {job['state']}{' (held)' if job.get('held') else ''}: "
        f"{job['reason']}",
        f"command: {' '.join(spec.get('command', []))}",
        f"tenant {job['tenant']}, priority {job['priority']}, runs {job['runs']}, "
        f"failures {job['failures']}, exit {_exit(job)}",
    ]
    if job.get("duration") is not None:
        lines.append(
            f"last run: {format_duration(job['duration'])}, "
            f"{job.get('cpu_seconds') or 0:.2f} CPU-seconds, pid {job.get('pid')}"
        )
    extra = {k: v for k, v in spec.items() if k not in ("command", "name", "tenant", "priority")}
    lines += [f"{k}: {_spec_value(k, v)}" for k, v in extra.items()]
    history = [["TIME", "FROM", "TO", "WHY"]]
    for e in job.get("history", []):
        history.append(
            [
                time.strftime("%H:%M:%S", time.localtime(e["ts"])),
                e.get("old") or "-",
                e["new"],
                e["reason"],
            ]
        )
    if len(history) > 1:
        lines += ["", "history:", *("  " + line for line in _table(history).splitlines())]
    return "\n".join(lines)


def _spec_value(key: str, value: Any) -> str:
    """One submitted setting as a person reads it: sizes, durations, local times."""
    from procvisor.policy.units import format_duration, format_size  # noqa: PLC0415

    if key == "requests":
        return ", ".join(
            f"{k} {format_size(int(v)) if k == 'memory' else f'{v:g}'}" for k, v in value.items()
        )
    if key == "timeout":
        return format_duration(value)
    if key in ("deadline", "not_before"):
        return _local_time(value)
    if key == "backoff":
        return "..".join(format_duration(v) for v in value)
    if key == "env":
        return " ".join(f"{k}={v}" for k, v in value.items())
    if key == "depends_on":
        return ", ".join(str(v) for v in value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _ids(values: Sequence[str], what: str) -> list[int]:
    out = []
    for value in values:
        for part in value.split(","):
            if not part.strip().isdigit():
                raise UsageLine(f"job id {part!r} is not a number")
            out.append(int(part))
    return out


ARRAY_ENV = "PROCVISOR_ARRAY_INDEX"
"""The variable that tells each job of a ``submit --array`` its index."""
MAX_ARRAY = 10_000
_ARRAY_FORMS = "like 1-10, 0,4,8-12 or 0-100:10 (FIRST-LAST:STEP)"


def array_indexes(text: str) -> list[int]:
    """The indexes of ``--array``: ``1-10``, ``0,4,8-12`` or ``0-100:10``, as Slurm takes.

    Raises:
        UsageLine: not of that form, empty, repeated, or more than MAX_ARRAY indexes.
    """
    indexes: list[int] = []
    for part in text.split(","):
        span, _, step_text = part.strip().partition(":")
        first, dash, last = span.partition("-")
        step = step_text if step_text else "1"
        numbers = (first, last if dash else first, step)
        if not all(n.strip().isdigit() for n in numbers) or int(step) == 0:
            raise UsageLine(f"--array: {text!r} is not a list of indexes {_ARRAY_FORMS}")
        lo, hi = int(first), int(last if dash else first)
        if hi < lo:
            raise UsageLine(f"--array: {part.strip()!r} ends before it starts")
        if len(indexes) + (hi - lo) // int(step) + 1 > MAX_ARRAY:
            raise UsageLine(f"--array: {text!r} names more than {MAX_ARRAY:,} jobs")
        indexes.extend(range(lo, hi + 1, int(step)))
    if len(set(indexes)) != len(indexes):
        raise UsageLine(f"--array: {text!r} names an index twice")
    return indexes


def _array_specs(spec: dict[str, Any], indexes: list[int]) -> list[dict[str, Any]]:
    """One spec per index: named ``NAME[i]``, with the index in its environment."""
    name = spec.get("name") or os.path.basename(spec["command"][0])
    return [
        {**spec, "name": f"{name}[{i}]", "env": {**spec.get("env", {}), ARRAY_ENV: str(i)}}
        for i in indexes
    ]


@_command("submit")
@click.option("--name", help="Shown in listings (default: the program's name).")
@click.option("--priority", default="normal", show_default=True, help="critical .. background.")
@click.option("--tenant", default="default", show_default=True, help="Who the job is for.")
@click.option("--cpu", type=float, help="Cores it needs while it runs (default 1).")
@click.option("--memory", help="Memory it needs, e.g. 512M.")
@click.option("--resource", multiple=True, metavar="NAME=N", help="Another resource, e.g. gpu=1.")
@click.option("--timeout", help="Stop its process group after this long, e.g. 10m.")
@click.option("--retries", type=click.IntRange(min=0), default=0, help="Retries after failure.")
@click.option("--backoff", help="Delay before retries, INITIAL..MAX (doubling), e.g. 1s..1m.")
@click.option("--deadline", help="It must start within this long, e.g. 30m; else: expired.")
@click.option("--deadline-at", metavar="ISO", help="It must start by then (ISO 8601).")
@click.option("--after", help="Start no sooner than this long from now, e.g. 5m.")
@click.option("--at", "at_", metavar="ISO", help="Start no sooner than then (ISO 8601).")
@click.option("--cron", help="Run once per period of this cron expression, e.g. '*/5 * * * *'.")
@click.option(
    "--overlap",
    type=click.Choice(["skip", "allow"]),
    help="With --cron: skip a period while the last run still runs (default), or allow it.",
)
@click.option("--depends-on", multiple=True, metavar="ID,...", help="Run after these succeed.")
@click.option("--env", multiple=True, type=_EnvVar(), help="KEY=VALUE for the job's environment.")
@env_file_option("A file of KEY=VALUE lines for the job's environment (--env wins).")
@click.option("--cwd", help="Directory to run in.")
@click.option("--preemptible", is_flag=True, help="A waiting higher-priority job may preempt it.")
@click.option("--hold", is_flag=True, help="Hold it: it does not start until procvisor release.")
@click.option(
    "--array",
    metavar="INDEXES",
    help=f"One job per index, e.g. 1-10 or 0,4,8-12 or 0-100:10; each gets ${ARRAY_ENV}.",
)
@click.option("--wait", is_flag=True, help="Follow its output; exit with its exit code.")
@_json_option
@click.argument("command", nargs=-1, required=True, metavar="-- CMD...")
def submit(config_file: str | None, **opts: Any) -> None:
    """Submit a command job to the daemon's scheduler; print its id.

    With --array, the jobs are submitted together (all or none) and their ids printed one
    per line; --wait then waits for all of them and exits with the highest exit status.

    Example: procvisor submit --priority high --timeout 10m --retries 2 -- make test
    """
    indexes = array_indexes(opts["array"]) if opts["array"] else None
    hold = opts["hold"]
    if hold and opts["wait"]:
        raise UsageLine("--wait would wait forever for a held job; release it first")
    spec: dict[str, Any] = {"command": list(opts["command"]), "tenant": opts["tenant"]}
    spec["priority"] = opts["priority"]
    requests = []
    if opts["cpu"] is not None:
        requests.append(f"cpu={opts['cpu']:g}")
    if opts["memory"]:
        requests.append(f"memory={opts['memory']}")
    requests += list(opts["resource"])
    if requests:
        spec["requests"] = ",".join(requests)
    for option, key in (("deadline", "deadline"), ("deadline_at", "deadline")):
        if opts[option]:
            if "deadline" in spec:
                raise UsageLine("give --deadline or --deadline-at, not both")
            spec[key] = opts[option]
    for option in ("after", "at_"):
        if opts[option]:
            if "not_before" in spec:
                raise UsageLine("give --after or --at, not both")
            spec["not_before"] = opts[option]
    for option in ("name", "timeout", "backoff", "cron", "overlap", "cwd"):
        if opts[option]:
            spec[option] = opts[option]
    if opts["retries"]:
        spec["retries"] = opts["retries"]
    if opts["depends_on"]:
        spec["depends_on"] = _ids(opts["depends_on"], "--depends-on")
    env = merged_env(opts["env_files"], opts["env"])
    if env:
        spec["env"] = env
    if opts["preemptible"]:
        spec["preemptible"] = True
    if indexes is not None:
        with connect(config_file) as daemon:
            ids = daemon.post("/jobs", {"jobs": _array_specs(spec, indexes), "hold": hold})["ids"]
            if not opts["wait"]:
                if opts["as_json"]:
                    _print_json({"ids": ids})
                else:
                    click.echo("\n".join(map(str, ids)))
                if opts["cron"]:
                    _say_schedules(daemon, ids)
                return
            click.echo(
                f"procvisor: submitted jobs {', '.join(map(str, ids))}; waiting for them "
                "(Ctrl-C stops the waiting, not the jobs)",
                err=True,
            )
            jobs = [_wait_for(daemon, job_id) for job_id in ids]
        _report_array(jobs, as_json=opts["as_json"])
    with connect(config_file) as daemon:
        (job_id,) = daemon.post("/jobs", {"jobs": [spec], "hold": hold})["ids"]
        if not opts["wait"]:
            if opts["as_json"]:
                _print_json({"id": job_id})
            else:
                click.echo(job_id)
            if opts["cron"]:
                _say_schedules(daemon, [job_id])
            return
        job = _follow_until_done(daemon, job_id)
    if opts["as_json"]:
        _print_json(job)
    sys.exit(_exit_status(job))


def _say_schedules(daemon: Any, ids: Sequence[int]) -> None:
    """Tell on stderr how to stop the schedules that made these jobs (cancelling their jobs
    does not)."""
    schedules = [str(daemon.get(f"/jobs/{job_id}")["schedule"]) for job_id in ids]
    which = ("schedule " if len(schedules) == 1 else "schedules ") + ", ".join(schedules)
    click.echo(
        f"procvisor: {which} will submit a job per period; stop it with: "
        f"procvisor schedules cancel {' '.join(schedules)}",
        err=True,
    )


def _wait_for(daemon: Any, job_id: int) -> dict[str, Any]:
    """The job once it has finished, asked for in 10 s waits (each a request)."""
    while True:
        job: dict[str, Any] = daemon.get(f"/jobs/{job_id}/wait", {"timeout": 10.0})
        if job["state"] in _FINAL:
            return job


def _report_array(jobs: list[dict[str, Any]], *, as_json: bool) -> NoReturn:
    """Exit with the highest exit status of an array's finished jobs, naming each failure."""
    if as_json:
        _print_json(jobs)
    for job in jobs:
        if job["state"] != "succeeded":
            click.echo(f"procvisor: job {job['id']} ({job['name']}): {job['reason']}", err=True)
    ok = sum(job["state"] == "succeeded" for job in jobs)
    if not as_json:
        click.echo(f"{ok} of {len(jobs)} jobs succeeded")
    sys.exit(max(_exit_status(job) for job in jobs))


def _exit_status(job: dict[str, Any]) -> int:
    if job["state"] == "succeeded":
        return 0
    if job.get("signal"):
        try:
            return 128 + int(signal.Signals[job["signal"]])
        except KeyError:
            return 1
    return job["exit_code"] if job.get("exit_code") else 1


def _follow_until_done(daemon: Any, job_id: int) -> dict[str, Any]:
    """Print the job's output as it comes until it has finished; the finished job.

    A thread follows the log; once the job has finished, the log's tail is read once more
    and whatever the follower had not printed yet is printed.
    """
    lock = threading.Lock()
    printed = bytearray()
    done = [False]
    params = {"target": f"job:{job_id}", "lines": 1_000_000}

    def write(chunk: bytes) -> None:
        sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()
        printed.extend(chunk)

    def follow() -> None:
        try:
            with daemon.stream("/logs", {**params, "follow": "true"}) as response:
                for chunk in response.iter_bytes():  # httpx clients are thread-safe
                    with lock:
                        if done[0]:
                            return
                        write(chunk)
        except (CliError, OSError):
            pass

    threading.Thread(target=follow, daemon=True).start()
    # A job that waits for its turn says so on stderr every 10 s (an interactive user
    # would otherwise see nothing), with what it waits for.
    poll = 10.0
    while True:
        job: dict[str, Any] = daemon.get(f"/jobs/{job_id}/wait", {"timeout": poll})
        if job["state"] in _FINAL:
            break
        if job["state"] in ("queued", "retrying", "preempted"):
            waited = time.time() - job["submitted"]
            click.echo(
                f"procvisor: job {job_id} {job['state']} for {waited:.0f}s: {job['reason']}",
                err=True,
            )
    with daemon.stream("/logs", {**params, "follow": "false"}) as response:
        tail = b"".join(response.iter_bytes())
    with lock:
        done[0] = True
        if len(tail) > len(printed) and tail.startswith(printed):
            write(tail[len(printed) :])
    return job


@_command("jobs")
@click.option("--state", help="Only jobs in this state (queued, running, failed, ..., or held).")
@click.option("--tenant", help="Only this tenant's jobs.")
@click.option("-n", "--limit", type=click.IntRange(min=1), default=100, show_default=True)
@_json_option
def jobs(
    config_file: str | None, state: str | None, tenant: str | None, limit: int, as_json: bool
) -> None:
    """List jobs, newest first: ID NAME STATE TENANT PRIORITY RUNS EXIT SUBMITTED."""
    params = {"state": state, "tenant": tenant, "limit": limit}
    _show(config_file, "/jobs", params, as_json, format_jobs)


@_command("job")
@_json_option
@click.argument("job_id", type=int, metavar="ID")
def job(config_file: str | None, as_json: bool, job_id: int) -> None:
    """Show one job: its settings, last run and state history."""
    _show(config_file, f"/jobs/{job_id}", {}, as_json, format_job)


@_command("cancel")
@_json_option
@click.argument("ids", nargs=-1, required=True, metavar="ID...")
def cancel(config_file: str | None, as_json: bool, ids: tuple[str, ...]) -> None:
    """Cancel jobs; a running job's whole process group is stopped first."""
    with connect(config_file) as daemon:
        outcomes = daemon.post("/jobs/cancel", {"ids": _ids(ids, "ID")})
    if as_json:
        _print_json(outcomes)
        return
    for o in outcomes:
        click.echo(f"job {o['job']}: {'cancelled' if o['cancelled'] else o['message']}")


def format_schedules(items: Sequence[dict[str, Any]]) -> str:
    """Schedules as a table: ID CRON NEXT RUNS SKIPPED LAST-JOB STATE COMMAND."""
    if not items:
        return "no schedules"
    rows = [["ID", "CRON", "NEXT", "RUNS", "SKIPPED", "LAST-JOB", "STATE", "COMMAND"]]
    rows += [
        [
            str(s["id"]),
            s["cron"],
            _local_time(s["next_fire"]) if s["active"] and s["next_fire"] else "-",
            str(s["runs"]),
            str(s["skipped"]),
            "-" if s["last_job"] is None else str(s["last_job"]),
            "active" if s["active"] else "stopped",
            shlex.join(s["spec"]["command"]),
        ]
        for s in items
    ]
    return _table(rows)


schedules_group = listing_group(
    "schedules",
    "/schedules",
    format_schedules,
    help="Show the cron schedules of submit --cron; 'schedules cancel ID' stops one.",
    all_help="Stopped schedules too.",
)


@_command("cancel")
@click.argument("ids", nargs=-1, required=True, metavar="ID...")
@click.pass_obj
def cancel_schedules(
    parent_config: str | None, config_file: str | None, ids: tuple[str, ...]
) -> None:
    """Stop schedules from creating jobs; the jobs they made are left alone (cancel those
    by their ids)."""
    with connect(config_file or parent_config) as daemon:
        for schedule in _ids(ids, "ID"):
            result = daemon.post(f"/schedules/{schedule}/cancel")
            state = "stopped" if result["cancelled"] else "already stopped"
            click.echo(f"schedule {schedule}: {state}")


schedules_group.add_command(cancel_schedules)


def _hold(config_file: str | None, as_json: bool, ids: tuple[str, ...], path: str) -> None:
    with connect(config_file) as daemon:
        outcomes = daemon.post(path, {"ids": _ids(ids, "ID")})
    if as_json:
        _print_json(outcomes)
        return
    for o in outcomes:
        click.echo(f"job {o['job']}: {o['message']}")
    if not all(o["changed"] for o in outcomes):
        sys.exit(1)


@_command("hold")
@_json_option
@click.argument("ids", nargs=-1, required=True, metavar="ID...")
def hold(config_file: str | None, as_json: bool, ids: tuple[str, ...]) -> None:
    """Keep queued or retrying jobs from starting until 'procvisor release'."""
    _hold(config_file, as_json, ids, "/jobs/hold")


@_command("release")
@_json_option
@click.argument("ids", nargs=-1, required=True, metavar="ID...")
def release(config_file: str | None, as_json: bool, ids: tuple[str, ...]) -> None:
    """Let held jobs start again (they keep their place in line)."""
    _hold(config_file, as_json, ids, "/jobs/release")


@_command("retry")
@click.argument("job_id", type=int, metavar="ID")
def retry(config_file: str | None, job_id: int) -> None:
    """Submit a failed, cancelled or expired job again (as a new job); print its id."""
    with connect(config_file) as daemon:
        click.echo(daemon.post(f"/jobs/{job_id}/retry")["id"])


def format_queue(q: dict[str, Any]) -> str:
    """The queue summary as lines."""
    from procvisor.policy.units import format_duration, format_size  # noqa: PLC0415

    def amount(name: str, v: Any) -> str:
        if name == "memory":
            return format_size(int(v))
        return f"{v:g}" if isinstance(v, float) else str(v)

    def amounts(d: dict[str, Any]) -> str:
        return ", ".join(f"{k} {amount(k, v)}" for k, v in d.items())

    wait = q.get("oldest_wait")
    capacity = {k: v for k, v in q["capacity"].items() if v is not None}
    in_use = q["in_use"]
    use = ", ".join(
        [f"{k} {amount(k, in_use.get(k, 0))} of {amount(k, v)}" for k, v in capacity.items()]
        + [f"{k} {amount(k, v)}" for k, v in in_use.items() if k not in capacity]
    )
    lines = [
        f"queued {q['queued']} (delayed {q['delayed']}, waiting on dependencies "
        f"{q['waiting_on_dependencies']}, held {q.get('held', 0)}, retrying {q['retrying']});"
        f" running {q['running']} (suspended {q['suspended']})",
        "by priority: " + (amounts(q["by_priority"]) or "-"),
        "by tenant: " + (amounts(q["by_tenant"]) or "-"),
        f"in use: {use or '-'}",
        f"oldest wait: {'-' if wait is None else format_duration(wait)}",
    ]
    return "\n".join(lines)


@_command("queue")
@_json_option
def queue(config_file: str | None, as_json: bool) -> None:
    """The queue: queued jobs by priority and tenant, running, utilization, oldest wait."""
    _show(config_file, "/queue", {}, as_json, format_queue)


def format_quotas(items: Sequence[dict[str, Any]]) -> str:
    """Tenants' use against their quotas."""
    from procvisor.policy.units import format_size  # noqa: PLC0415

    if not items:
        return "no tenants"

    def of(used: Any, limit: Any, size: bool = False) -> str:
        def show(v: Any) -> str:
            return format_size(int(v)) if size else f"{v:g}"

        return show(used) + ("" if limit is None else f" / {show(limit)}")

    rows = [["TENANT", "RUNNING", "CPU", "MEMORY", "QUEUED", "WEIGHT", "CPU-SECONDS"]]
    for t in items:
        quota = t.get("quota") or {}
        rows.append(
            [
                t["tenant"],
                of(t["running"], quota.get("max_running")),
                of(t["cpu"], quota.get("cpu")),
                of(t["memory"], quota.get("memory"), size=True),
                str(t["queued"]),
                f"{t['weight']:g}",
                f"{t['usage']:.1f}",
            ]
        )
    return _table(rows)


@_command("quotas")
@_json_option
def quotas(config_file: str | None, as_json: bool) -> None:
    """Each tenant's running jobs, CPU and memory against its quota ('used / limit')."""
    _show(config_file, "/quotas", {}, as_json, format_quotas)


JOB_COMMANDS: list[click.Command] = [
    submit,
    jobs,
    job,
    cancel,
    hold,
    release,
    retry,
    queue,
    quotas,
]
"""The commands to add to the ``procvisor`` group."""
