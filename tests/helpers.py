"""Helpers for tests: wait on a condition with a deadline, never a bare sleep."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float = 5.0, interval: float = 0.005) -> T:
    """Call ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {predicate}")
        time.sleep(interval)


async def await_for(predicate: Callable[[], T], timeout: float = 5.0) -> T:
    """The async :func:`wait_for`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {predicate}")
        await asyncio.sleep(0.005)


def pid_alive(pid: int) -> bool:
    """True if ``pid`` runs and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):  # gone, or reaped while we read
        return False
    return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] != b"Z"


def reaped_and_gone(pid: int) -> bool:
    """Reap ``pid`` if it became our zombie (the tests are a subreaper); whether it is gone."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    return not pid_alive(pid)


# A service speaking sd_notify(3) with nothing but the standard library. Its argv says what
# to do, in order: `wait PATH` (until PATH exists), `send MESSAGE`, `env` (print the watchdog
# variables and its pid), `ping PATH` (WATCHDOG=1 every 50 ms until PATH exists), `sleep`.
NOTIFY_SERVICE = r"""
import os, socket, sys, time

def send(message):
    address = os.environ["NOTIFY_SOCKET"]
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(message.replace("\\n", "\n").encode(), address)

args = sys.argv[1:]
while args:
    verb = args.pop(0)
    if verb == "wait":
        path = args.pop(0)
        while not os.path.exists(path):
            time.sleep(0.01)
    elif verb == "send":
        send(args.pop(0))
    elif verb == "env":
        print(os.environ["WATCHDOG_USEC"], os.environ["WATCHDOG_PID"], os.getpid(), flush=True)
    elif verb == "ping":
        path = args.pop(0)
        while not os.path.exists(path):
            send("WATCHDOG=1")
            time.sleep(0.05)
    elif verb == "sleep":
        time.sleep(600)
"""
