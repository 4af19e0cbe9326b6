"""The daemon's sd_notify client: which variables it reads, and what it sends where."""

from __future__ import annotations

import os
import socket

import pytest

from procvisor.daemon._systemd import Notifier


def test_outside_systemd_nothing_is_sent_and_nothing_fails() -> None:
    notifier = Notifier({})
    assert not notifier.active and notifier.watchdog_interval is None
    notifier.ready("1 services")
    notifier.watchdog()


def test_the_variables_are_taken_out_of_the_environment() -> None:
    env = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "30000000", "PATH": "/bin"}
    notifier = Notifier(env)
    assert env == {"PATH": "/bin"}
    assert notifier.watchdog_interval == 15.0


@pytest.mark.parametrize(
    ("extra", "interval"),
    [
        ({"WATCHDOG_USEC": "4000000"}, 2.0),
        ({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())}, 2.0),
        ({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"}, None),  # another process's
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
    ],
)
def test_the_watchdog_applies_only_to_this_process(
    extra: dict[str, str], interval: float | None
) -> None:
    assert Notifier({"NOTIFY_SOCKET": "/run/x", **extra}).watchdog_interval == interval


def test_an_abstract_socket_is_reached_by_its_at_name() -> None:
    name = f"procvisor-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind("\0" + name)
        systemd.settimeout(5)
        Notifier({"NOTIFY_SOCKET": "@" + name}).ready("2 services")
        assert systemd.recv(4096).decode().split("\n")[:2] == ["READY=1", "STATUS=2 services"]


def test_a_socket_that_is_gone_is_given_up_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": "/nonexistent/notify", "WATCHDOG_USEC": "1000000"})
    notifier.ready("1 services")
    notifier.watchdog()
    assert not notifier.active and notifier.watchdog_interval is None
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "cannot notify systemd at /nonexistent/notify" in warnings[0]
