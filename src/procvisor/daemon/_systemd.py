"""Telling systemd how the daemon is doing, as a ``Type=notify`` service (sd_notify(3)).

When systemd starts ``procvisor up`` with ``Type=notify``, it passes ``$NOTIFY_SOCKET``: the
daemon sends ``READY=1`` once it serves its API and has started its services (so units
ordered ``After=`` it start only then), ``STOPPING=1`` when it begins to stop, and, with
``WatchdogSec=``, ``WATCHDOG=1`` from its event loop at half that period, so that systemd
restarts a daemon whose loop hangs. Outside systemd nothing is sent.

The variables are taken out of the daemon's environment when read: services and jobs must not
inherit them, or a service that speaks sd_notify itself would report to the daemon's unit.
"""

from __future__ import annotations

import logging
import os
import socket

__all__ = ["Notifier"]

log = logging.getLogger("procvisor.daemon")

_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


class Notifier:
    """The daemon's line to systemd; every method is a no-op outside ``Type=notify``."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        """Read (and remove) the variables from ``environ`` (default: ``os.environ``)."""
        env = os.environ if environ is None else environ
        found = {name: env.pop(name, "") for name in _VARIABLES}
        path = found["NOTIFY_SOCKET"]
        # An abstract socket is given as "@name" (see sd_notify(3)).
        self._address = "\0" + path[1:] if path.startswith("@") else path
        self.watchdog_interval: float | None = None
        """Seconds between ``WATCHDOG=1`` pings (half of ``WatchdogSec``), or None."""
        usec, pid = found["WATCHDOG_USEC"], found["WATCHDOG_PID"]
        for_us = not pid or (pid.isdigit() and int(pid) == os.getpid())
        if self._address and usec.isdigit() and int(usec) > 0 and for_us:
            self.watchdog_interval = int(usec) / 2e6

    @property
    def active(self) -> bool:
        """Whether systemd listens."""
        return bool(self._address)

    def ready(self, status: str) -> None:
        self._send(f"READY=1\nSTATUS={status}\nMAINPID={os.getpid()}")

    def stopping(self) -> None:
        self._send("STOPPING=1\nSTATUS=stopping")

    def watchdog(self) -> None:
        self._send("WATCHDOG=1")

    def _send(self, message: str) -> None:
        if not self._address:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.connect(self._address)
                s.sendall(message.encode())
        except OSError as exc:
            # The daemon runs on regardless; say so once, not at every watchdog ping.
            log.warning("cannot notify systemd at %s (%s); not trying again", self._address, exc)
            self._address = ""
            self.watchdog_interval = None
