"""Requests enforced as limits (``enforce``): a job's cgroups hold it to what it asked for."""

from __future__ import annotations

import sys

import pytest

from procvisor.jobs import JobsConfig, JobSpec, JobState
from procvisor.process import _cgroup

from .conftest import MakeScheduler

PY = sys.executable
HOG = f"{PY} -c 'b = bytearray(300 * 1024 * 1024)'"
needs_cgroups = pytest.mark.skipif(
    not (_cgroup.available("memory") and _cgroup.available("cpu")),
    reason="no writable cgroup v1 memory and cpu hierarchies here",
)


@needs_cgroups
async def test_a_job_over_its_enforced_memory_request_fails_out_of_memory(
    make_scheduler: MakeScheduler,
) -> None:
    jobs = await make_scheduler(enforce=("memory",))
    # The shell goes on after its child is killed and exits 0: the job still failed.
    [job_id] = jobs.submit_many(
        [JobSpec(("sh", "-c", f"{HOG}; exit 0"), requests="cpu=0.1,memory=64M")]
    )
    job = await jobs.wait(job_id, timeout=30)
    assert job.state is JobState.FAILED
    assert job.reason == (
        "out of memory: the kernel killed a process at its memory request (exited with code 0)"
    )


async def test_requests_only_decide_admission_unless_enforced(
    make_scheduler: MakeScheduler,
) -> None:
    jobs = await make_scheduler()
    [job_id] = jobs.submit_many([JobSpec(("sh", "-c", HOG), requests="cpu=0.1,memory=64M")])
    job = await jobs.wait(job_id, timeout=30)
    assert (job.state, job.reason) == (JobState.SUCCEEDED, "exited with code 0")


@needs_cgroups
async def test_an_enforced_cpu_request_is_a_quota_for_the_job(
    make_scheduler: MakeScheduler,
) -> None:
    # A second of wall time spinning: about 0.2 s of CPU at cpu=0.2, about 1 s unlimited.
    spin = "import time\nend = time.monotonic() + 1\nwhile time.monotonic() < end: pass\n"
    jobs = await make_scheduler(enforce=("cpu", "memory"))
    [job_id] = jobs.submit_many([JobSpec((PY, "-c", spin), requests="cpu=0.2")])
    job = await jobs.wait(job_id, timeout=30)
    assert job.state is JobState.SUCCEEDED, job.reason
    assert 0 < job.cpu_seconds < 0.6


@pytest.mark.parametrize(
    ("enforce", "message"),
    [
        (("disk",), "enforce: 'disk' cannot be enforced; use 'cpu' and/or 'memory'"),
        ("cpu", "enforce: 'cpu' must be a list of 'cpu' and 'memory'"),
    ],
)
def test_enforce_takes_only_cpu_and_memory(enforce: object, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        JobsConfig(enforce=enforce)  # type: ignore[arg-type]
