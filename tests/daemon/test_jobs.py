"""Jobs through the real daemon: the CLI commands, the Python Client, and a SIGKILL of the
daemon in the middle of a batch after which every job is accounted for."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

import procvisor
from helpers import pid_alive, reaped_and_gone, wait_for

from .test_daemon import Daemon, cli, write_config
from .test_metrics import families, value

PY = sys.executable

CONFIG = """
[jobs]
max_running = 2
[quotas.bob]
max_running = 1
"""


def up(workdir: Path, daemons: list[Daemon], body: str = CONFIG) -> Daemon:
    write_config(workdir, body)
    d = Daemon(workdir)
    daemons.append(d)
    wait_for(lambda: cli(workdir, "queue").returncode == 0, timeout=20)
    return d


def test_a_jobs_secrets_are_redacted_where_it_is_shown(workdir, daemons) -> None:
    up(workdir, daemons)
    (workdir / "job.env").write_text("API_TOKEN=hunter2\nMODE=slow\n")
    secret = ["--env-file", "job.env", "--env", "MODE=fast"]  # --env wins over the file
    waited = cli(workdir, "submit", "--wait", *secret, "--", "sh", "-c", "echo $API_TOKEN")
    assert waited.stdout == "hunter2\n"  # the job itself gets the value
    job_id = json.loads(cli(workdir, "jobs", "--json").stdout)[0]["id"]
    for shown in (
        json.loads(cli(workdir, "job", str(job_id), "--json").stdout)["spec"]["env"],
        json.loads(cli(workdir, "jobs", "--json").stdout)[0]["spec"]["env"],
    ):
        assert shown == {"API_TOKEN": "<redacted>", "MODE": "fast"}
    text = cli(workdir, "job", str(job_id)).stdout
    assert "hunter2" not in text and "env: API_TOKEN=<redacted> MODE=fast" in text


def test_job_shows_sizes_durations_and_times(workdir, daemons) -> None:
    up(workdir, daemons)
    options = ["--memory", "64M", "--cpu", "0.5", "--timeout", "10m", "--after", "1h"]
    job_id = cli(workdir, "submit", *options, "--", "true").stdout.strip()
    lines = cli(workdir, "job", job_id).stdout.splitlines()
    assert "requests: cpu 0.5, memory 64M" in lines and "timeout: 10m" in lines
    due = next(line for line in lines if line.startswith("not_before: "))
    assert time.strptime(due.split(": ", 1)[1], "%Y-%m-%d %H:%M:%S %z")
    cli(workdir, "cancel", job_id)


def test_submit_wait_list_show_logs_cancel_and_retry(workdir, daemons) -> None:
    up(workdir, daemons)
    waited = cli(workdir, "submit", "--wait", "--", "sh", "-c", "echo one; echo two >&2; exit 3")
    assert waited.returncode == 3
    assert waited.stdout == "one\ntwo\n"
    killed = cli(workdir, "submit", "--wait", "--", "sh", "-c", "kill -9 $$")
    assert killed.returncode == 128 + signal.SIGKILL

    ok = cli(workdir, "submit", "--name", "hello", "--tenant", "bob", "--", "echo", "hi")
    assert ok.returncode == 0
    job_id = int(ok.stdout)
    done = wait_for(
        lambda: (
            json.loads(cli(workdir, "job", str(job_id), "--json").stdout)["state"] == "succeeded"
        ),
        timeout=20,
    )
    assert done
    shown = cli(workdir, "job", str(job_id)).stdout
    assert shown.startswith(f"job {job_id} (hello): succeeded: exited with code 0")
    assert "running    succeeded" in shown
    assert cli(workdir, "logs", "--job", str(job_id)).stdout == "hi\n"
    listed = cli(workdir, "jobs", "--tenant", "bob").stdout.splitlines()
    assert listed[0].split()[:3] == ["ID", "NAME", "STATE"]
    assert listed[1].split()[:4] == [str(job_id), "hello", "succeeded", "bob"]

    long = int(cli(workdir, "submit", "--", "sh", "-c", "sleep 60 & sleep 60").stdout)
    wait_for(
        lambda: json.loads(cli(workdir, "job", str(long), "--json").stdout)["state"] == "running",
        timeout=20,
    )
    pid = json.loads(cli(workdir, "job", str(long), "--json").stdout)["pid"]
    cancelled = cli(workdir, "cancel", str(long))
    assert (cancelled.returncode, cancelled.stdout) == (0, f"job {long}: cancelled\n")
    assert not pid_alive(pid)
    again = cli(workdir, "cancel", str(long))
    assert "already cancelled" in again.stdout
    retried = cli(workdir, "retry", str(long))
    assert retried.returncode == 0 and int(retried.stdout) > long
    cli(workdir, "cancel", retried.stdout.strip())

    cron = cli(workdir, "submit", "--cron", "0 3 * * *", "--overlap", "allow", "--", "true")
    assert cron.returncode == 0, cron.stderr
    scheduled = json.loads(cli(workdir, "job", cron.stdout.strip(), "--json").stdout)
    assert scheduled["spec"]["overlap"] == "allow" and scheduled["schedule"] is not None
    assert scheduled["not_before"] > time.time()

    queue = cli(workdir, "queue")
    assert queue.returncode == 0 and queue.stdout.startswith("queued ")
    quotas = cli(workdir, "quotas").stdout.splitlines()
    assert quotas[0].split()[:3] == ["TENANT", "RUNNING", "CPU"]
    assert any(line.split()[:4] == ["bob", "0", "/", "1"] for line in quotas[1:])


def test_hold_and_release_through_the_cli(workdir, daemons) -> None:
    up(workdir, daemons)
    held = cli(workdir, "submit", "--hold", "--", "true").stdout.strip()
    rows = cli(workdir, "jobs").stdout.splitlines()
    assert rows[1].split()[:3] == [held, "true", "held"]
    assert "held 1" in cli(workdir, "queue").stdout.splitlines()[0]
    assert [
        j["id"] for j in json.loads(cli(workdir, "jobs", "--state", "held", "--json").stdout)
    ] == [int(held)]
    assert cli(workdir, "job", held).stdout.startswith(f"job {held} (true): queued (held): ")
    released = cli(workdir, "release", held)
    assert released.stdout == f"job {held}: released by user\n"
    wait_for(lambda: json.loads(cli(workdir, "job", held, "--json").stdout)["state"] == "succeeded")
    again = cli(workdir, "hold", held)
    assert again.returncode == 1
    assert again.stdout == f"job {held}: succeeded; only a queued or retrying job can be held\n"
    wait = cli(workdir, "submit", "--hold", "--wait", "--", "true")
    assert wait.returncode == 2 and "release it first" in wait.stderr


def test_a_cron_schedule_is_listed_and_stopped_by_its_id(workdir, daemons) -> None:
    up(workdir, daemons)
    every_second = ["--cron", "* * * * * */1", "--env", "API_TOKEN=hunter2"]
    out = cli(workdir, "submit", *every_second, "--", "true")
    assert out.returncode == 0, out.stderr
    assert out.stderr == (
        "procvisor: schedule 1 will submit a job per period; "
        "stop it with: procvisor schedules cancel 1\n"
    )

    def made() -> int:
        return len(json.loads(cli(workdir, "jobs", "--json").stdout))

    wait_for(lambda: made() >= 2, timeout=20)  # the first job, then one per second
    # Cancelling its jobs does not stop a schedule.
    cli(
        workdir,
        "cancel",
        *(str(j["id"]) for j in json.loads(cli(workdir, "jobs", "--json").stdout)),
    )
    [row] = json.loads(cli(workdir, "schedules", "--json").stdout)
    assert (row["id"], row["cron"], row["active"]) == (1, "* * * * * */1", True)
    assert row["spec"]["env"] == {"API_TOKEN": "<redacted>"}
    table = cli(workdir, "schedules").stdout.splitlines()
    assert table[0].split() == [
        "ID",
        "CRON",
        "NEXT",
        "RUNS",
        "SKIPPED",
        "LAST-JOB",
        "STATE",
        "COMMAND",
    ]
    stopped = cli(workdir, "schedules", "cancel", "1")
    assert stopped.stdout == "schedule 1: stopped\n"
    count = made()
    time.sleep(2.5)  # two more periods: a live schedule would have submitted again
    assert made() == count
    assert cli(workdir, "schedules").stdout == "no schedules\n"
    assert json.loads(cli(workdir, "schedules", "--all", "--json").stdout)[0]["active"] is False
    again = cli(workdir, "schedules", "cancel", "1")
    assert again.stdout == "schedule 1: already stopped\n"
    missing = cli(workdir, "schedules", "cancel", "7")
    assert missing.returncode == 1
    assert missing.stderr == "procvisor: no schedule 7; list them with `procvisor schedules`\n"


def test_an_array_submits_one_job_per_index_or_none(workdir, daemons) -> None:
    up(workdir, daemons)
    script = "echo index $PROCVISOR_ARRAY_INDEX"
    out = cli(workdir, "submit", "--array", "1-5:2", "--", "sh", "-c", script)
    assert out.returncode == 0, out.stderr
    ids = out.stdout.split()
    assert len(ids) == 3

    def finished() -> list[dict[str, object]]:
        jobs = json.loads(cli(workdir, "jobs", "--json").stdout)
        return [j for j in jobs if str(j["id"]) in ids and j["state"] == "succeeded"]

    wait_for(lambda: len(finished()) == 3, timeout=20)
    assert sorted(str(j["name"]) for j in finished()) == ["sh[1]", "sh[3]", "sh[5]"]
    logs = [cli(workdir, "logs", "--job", i).stdout for i in ids]
    assert logs == ["index 1\n", "index 3\n", "index 5\n"]
    # One bad spec refuses them all.
    bad = cli(workdir, "submit", "--array", "1-3", "--cpu", "999", "--", "true")
    assert bad.returncode == 1 and "requests.cpu" in bad.stderr
    assert len(json.loads(cli(workdir, "jobs", "--json").stdout)) == 3
    # --wait: all of them, then the highest exit status, and each failure named.
    script = "exit $((PROCVISOR_ARRAY_INDEX - 1))"
    waited = cli(workdir, "submit", "--array", "1-3", "--wait", "--", "sh", "-c", script)
    assert waited.returncode == 2
    assert waited.stdout == "1 of 3 jobs succeeded\n"
    told, *failures = waited.stderr.splitlines()
    assert told.startswith("procvisor: submitted jobs 4, 5, 6; waiting for them")
    assert [line.split(": ", 2)[1] for line in failures] == ["job 5 (sh[2])", "job 6 (sh[3])"]
    assert "exited with code 2" in failures[1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["submit", "--cpu", "999", "--", "true"], "requests.cpu: 999 is more than the node's"),
        (["submit", "--timeout", "0", "--", "true"], "timeout: '0' must be more than 0"),
        (["submit", "--cron", "every day", "--", "true"], "cron: "),
        (["submit", "--deadline", "soon", "--", "true"], "deadline: 'soon' is neither"),
        (["job", "999"], "no job 999"),
        (["cancel", "999"], "no job 999"),
    ],
)
def test_bad_input_is_one_line_naming_the_field(workdir, daemons, args, message) -> None:
    up(workdir, daemons)
    out = cli(workdir, *args)
    assert out.returncode == 1
    assert out.stderr.startswith("procvisor: ") and message in out.stderr
    assert len(out.stderr.splitlines()) == 1


def test_the_python_client_submits_batches_and_waits(workdir, daemons) -> None:
    up(workdir, daemons)
    with procvisor.Client(str(workdir / "procvisor.toml")) as daemon:
        ids = daemon.submit_many([{"command": ["true"], "name": f"t{i}"} for i in range(50)])
        assert len(ids) == 50
        assert all(daemon.wait(i, timeout=30)["state"] == "succeeded" for i in ids)
        failing = daemon.submit(["sh", "-c", "exit 5"], retries=1, backoff="10ms")
        job = daemon.wait(failing, timeout=30)
        assert (job["state"], job["exit_code"], job["runs"]) == ("failed", 5, 2)
        sock = workdir / ".procvisor" / "procvisor.sock"
        transport = httpx.HTTPTransport(uds=str(sock))
        with httpx.Client(transport=transport, base_url="http://pv") as http:
            fams = families(http.get("/metrics").text)
        assert value(fams, "procvisor_job_duration_seconds_count", state="succeeded") == 50
        assert value(fams, "procvisor_job_duration_seconds_count", state="failed") == 1
        assert value(fams, "procvisor_jobs", state="queued") == 0
        with pytest.raises(LookupError, match="no job 99999"):
            daemon.get(99999)
        with pytest.raises(ValueError, match="timeout"):
            daemon.submit(["true"], timeout=-1)
    elsewhere = workdir / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "procvisor.toml").write_text("")
    with pytest.raises(ConnectionError, match="no daemon running"):
        procvisor.Client(str(elsewhere / "procvisor.toml"))
    with pytest.raises(ValueError, match="no such file"):
        procvisor.Client(str(workdir / "nowhere.toml"))


def test_a_daemon_killed_mid_batch_loses_no_job(workdir, daemons) -> None:
    d = up(workdir, daemons)
    ran = workdir / "ran"
    script = (
        f"import os,sys,time; open({str(ran)!r}, 'a').write(sys.argv[1] + '\\n'); time.sleep(0.3)"
    )
    with procvisor.Client(str(workdir / "procvisor.toml")) as daemon:
        ids = daemon.submit_many([{"command": [PY, "-c", script, str(i)]} for i in range(12)])
        wait_for(lambda: ran.exists() and len(ran.read_text().split()) >= 3, timeout=30)
    # The running jobs become orphans of this test process (a subreaper), as they would
    # become init's: the next daemon stops them, and we reap them as init would.
    orphans = [c.pid for c in psutil.Process(d.pid).children()]
    os.kill(d.pid, signal.SIGKILL)
    d.stop()
    daemons.append(Daemon(workdir))  # the next daemon recovers the store
    wait_for(lambda: cli(workdir, "queue").returncode == 0, timeout=20)
    with procvisor.Client(str(workdir / "procvisor.toml")) as daemon:
        jobs = [daemon.wait(i, timeout=60) for i in ids]
    assert [j["state"] for j in jobs] == ["succeeded"] * 12
    started = ran.read_text().split()
    assert set(started) == {str(i) for i in range(12)}  # every job ran; interrupted ones again
    wait_for(lambda: all([reaped_and_gone(pid) for pid in orphans]), timeout=10)
