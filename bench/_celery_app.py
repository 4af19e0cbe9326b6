"""The Celery peer of ``python -m bench jobs``: the app, its one task, and the producer.

It runs under the Python of a separate virtual environment that has ``celery`` and
``redis`` (``--celery-python``, default /tmp/peervenv-celery/bin/python), never under
procvisor's: bench.jobs copies this file into a scratch directory and runs, there,

* the worker: ``PYTHON -m celery -A _celery_app worker --pool prefork --concurrency C ...``;
  it creates the file named by ``$PVBENCH_CELERY_READY`` when Celery says it is ready
  (signal ``worker_ready``: the pool's processes are forked and it consumes);
* the producer, once per measurement: ``PYTHON _celery_app.py N``. It purges the queue,
  then (timed) sends N ``run_true`` tasks one ``apply_async`` each over one producer
  connection and waits for every result (``ResultSet.join``: the Redis result backend
  pushes each result over pub/sub, no polling); it prints one JSON line: ``wall`` seconds
  from the first send to the last result, ``send`` seconds until the last task was sent, and
  each task's submit→start seconds (the task returns ``time.time()`` as it starts). The
  results are deleted from Redis after;
* ``PYTHON _celery_app.py --cleanup`` at the end: deletes kombu's keys for the queue and
  the worker's remote-control box.

Broker and result backend: ``$PVBENCH_CELERY_BROKER`` (default redis://127.0.0.1:6379/0),
queue ``pvbench-jobs``; results expire after 10 minutes whatever happens.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from celery import Celery
from celery.result import ResultSet
from celery.signals import worker_ready

BROKER = os.environ.get("PVBENCH_CELERY_BROKER", "redis://127.0.0.1:6379/0")
QUEUE = "pvbench-jobs"

app = Celery("pvbench", broker=BROKER, backend=BROKER)
app.conf.update(
    task_default_queue=QUEUE,
    result_expires=600,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="pvbench.run_true")
def run_true() -> float:
    """Run `true`; return when the task started (time.time())."""
    started = time.time()
    subprocess.run(["true"], check=True)
    return started


@worker_ready.connect
def _ready(**_: object) -> None:
    path = os.environ.get("PVBENCH_CELERY_READY")
    if path:
        Path(path).touch()


def produce(n: int) -> dict[str, object]:
    """Send ``n`` tasks, wait for all of them; the wall time and the submit→start waits."""
    app.control.purge()
    submitted = []
    results = []
    with app.producer_or_acquire() as producer:
        start = time.perf_counter()
        for _ in range(n):
            submitted.append(time.time())
            results.append(run_true.apply_async(producer=producer))
        sent = time.perf_counter()
        done = ResultSet(results)
        started = done.join(timeout=3600, propagate=True)
        wall = time.perf_counter() - start
    done.forget()
    waits = [s - t for s, t in zip(started, submitted, strict=True)]
    return {"n": n, "wall": wall, "send": sent - start, "waits": waits}


def cleanup() -> None:
    """Delete what kombu keeps in Redis for our queue (its bindings, the queue itself) and
    for the worker's remote-control box (``celery.pidbox``, in ``_kombu.binding_deadlines``;
    Redis drops that set when it empties)."""
    with app.connection_for_write() as conn:
        client = conn.default_channel.client
        keys = [k for k in client.keys(f"*{QUEUE}*") if QUEUE.encode() in k]
        if keys:
            client.delete(*keys)
        client.zrem("_kombu.binding_deadlines", QUEUE, "celery.pidbox")


if __name__ == "__main__":
    if sys.argv[1] == "--cleanup":
        cleanup()
    else:
        print(json.dumps(produce(int(sys.argv[1]))), flush=True)
