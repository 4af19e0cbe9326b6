"""A cgroup of its own for each process group with a limit a cgroup enforces, where allowed.

Three cgroup v1 controllers are used, each where its hierarchy is mounted and writable (they
are on this project's machines):

``pids``
    ``pids.max`` (the ``processes`` limit) counts every process and thread of the cgroup,
    however deep in the tree and whether or not it left the process group, and a ``fork``
    beyond it fails in the child: ``RLIMIT_NPROC``'s effect, but for the command's own tree,
    not for every process its user runs, and for root too (the kernel exempts root from
    ``RLIMIT_NPROC``).
``memory``
    ``memory.limit_in_bytes`` (the ``memory`` limit) caps the memory the whole tree uses
    (resident pages and the page cache it causes), as ``docker run --memory`` and systemd's
    ``MemoryMax=`` do; swap is capped with it where the kernel accounts swap. Beyond it the
    kernel reclaims, then its OOM killer kills the cgroup's largest process, and
    ``memory.oom_control`` counts the kill.
``cpu``
    ``cpu.cfs_quota_us`` over ``cpu.cfs_period_us`` (the ``cpus`` limit) lets the tree use
    that many CPUs' worth of time, as ``docker run --cpus`` and systemd's ``CPUQuota=`` do;
    beyond it the tree waits for the next period.

cgroup v2 is not used yet: none of the project's machines has a v2 tree with controllers to
test it on. Layout, in each hierarchy: ``<hierarchy>/<our cgroup>/procvisor/<our pid>/<n>``.
The child moves itself into its leaves before it execs the command (a ``/bin/sh`` trampoline
writes ``$$`` to each ``cgroup.procs``), so nothing runs outside the limits. A leaf is
removed once its group has ended (or, if a process that left the group still runs in it, at
a later removal), and our directory of leaves when we exit; what a process that was killed
left behind is swept when another process starts using that hierarchy.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
from pathlib import Path

__all__ = ["CONTROLLERS", "Cgroup", "available"]

CONTROLLERS = ("pids", "memory", "cpu")
CPU_PERIOD_US = 100_000
"""The period of a ``cpus`` quota: 100 ms, the kernel's default, as Docker and systemd use."""

disabled = False
"""Tests set this to exercise the mechanisms used where no cgroup can be made."""

_roots: dict[str, Path | None] = {}  # controller -> our directory of leaves (None: none)
_counter = itertools.count()


def _hierarchy(controller: str) -> Path | None:
    """The directory of our own cgroup in the v1 hierarchy of ``controller``, if mounted."""
    mount = None
    with contextlib.suppress(OSError), open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            dash = fields.index("-")
            fstype, options = fields[dash + 1], fields[dash + 3].split(",")
            if fstype == "cgroup" and controller in options:
                mount = Path(fields[4])
                break
    if mount is None:
        return None
    own = "/"
    with contextlib.suppress(OSError), open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if controller in controllers.split(","):
                own = path
    return mount / own.lstrip("/")


def _base(controller: str) -> Path | None:
    """Our own directory of leaves for ``controller`` (made on first use), or None."""
    if controller not in _roots:
        _roots[controller] = None
        hierarchy = _hierarchy(controller)
        if hierarchy is not None:
            base = hierarchy / "procvisor" / str(os.getpid())
            try:
                base.mkdir(parents=True, exist_ok=True)
                _sweep(base.parent)
            except OSError:
                pass  # read-only, or not ours to write: the other mechanisms apply
            else:
                _roots[controller] = base
                atexit.register(_remove_base, base, os.getpid())
    return _roots[controller]


def _remove_base(base: Path, owner: int) -> None:
    """At exit: remove our directory of leaves, if nothing of ours still runs in one (else
    the next process to use the hierarchy sweeps it once it is empty). Not in a forked
    child that exits normally: the directory is its parent's."""
    if os.getpid() != owner:
        return
    for leaf in [p for p in _unremoved if p.parent == base]:
        with contextlib.suppress(OSError):
            leaf.rmdir()
    with contextlib.suppress(OSError):
        base.rmdir()


def _sweep(parent: Path) -> None:
    """Remove the empty leaves of processes that are gone (they could not remove them)."""
    for owner in parent.iterdir():
        if not owner.name.isdigit() or Path(f"/proc/{owner.name}").exists():
            continue
        for leaf in owner.iterdir():
            if leaf.is_dir():
                with contextlib.suppress(OSError):
                    leaf.rmdir()
        with contextlib.suppress(OSError):
            owner.rmdir()


def available(controller: str) -> bool:
    """Whether procvisor can make cgroups of ``controller`` here (looked up once)."""
    return not disabled and _base(controller) is not None


class Cgroup:
    """One leaf in each hierarchy a group's limits need; the child joins them all."""

    __slots__ = ("leaves",)

    def __init__(
        self, *, processes: int | None = None, memory: int | None = None, cpus: float | None = None
    ) -> None:
        """Make a leaf in each hierarchy a given limit needs, and set the limits.

        Raises:
            OSError: a leaf could not be made or set; none is left behind.
        """
        settings: dict[str, list[tuple[str, str, bool]]] = {}  # file, value, needed
        if processes is not None:
            settings["pids"] = [("pids.max", str(processes), True)]
        if memory is not None:
            # memsw (memory + swap) may not be below memory: memory first. It is there only
            # where the kernel accounts swap; without it, swap is not capped.
            settings["memory"] = [
                ("memory.limit_in_bytes", str(memory), True),
                ("memory.memsw.limit_in_bytes", str(memory), False),
            ]
        if cpus is not None:
            settings["cpu"] = [
                ("cpu.cfs_period_us", str(CPU_PERIOD_US), True),
                ("cpu.cfs_quota_us", str(max(1000, round(cpus * CPU_PERIOD_US))), True),
            ]
        self.leaves: dict[str, Path] = {}
        n = next(_counter)
        try:
            for controller, files in settings.items():
                base = _base(controller)
                if base is None:
                    raise OSError(f"no writable cgroup v1 {controller} hierarchy")
                base.mkdir(parents=True, exist_ok=True)  # swept by another process's start
                leaf = base / str(n)
                leaf.mkdir()
                self.leaves[controller] = leaf
                for name, value, needed in files:
                    if needed or (leaf / name).exists():
                        (leaf / name).write_text(value)
        except OSError:
            self.remove()
            raise

    @property
    def procs_files(self) -> tuple[str, ...]:
        """The files a process writes its pid to, to join."""
        return tuple(str(leaf / "cgroup.procs") for leaf in self.leaves.values())

    def oom_notifier(self) -> int | None:
        """An eventfd the kernel signals at each OOM in the memory leaf (None: no leaf).

        The caller reads and closes it; it is signalled once more when the leaf is removed.

        Raises:
            OSError: it could not be registered.
        """
        leaf = self.leaves.get("memory")
        if leaf is None:
            return None
        efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        try:
            control = os.open(leaf / "memory.oom_control", os.O_RDONLY | os.O_CLOEXEC)
            try:
                (leaf / "cgroup.event_control").write_text(f"{efd} {control}")
            finally:
                os.close(control)  # the registration holds what it needs
        except BaseException:
            os.close(efd)
            raise
        return efd

    def oom_kills(self) -> tuple[int, int]:
        """How many processes the OOM killer killed in the memory leaf, and its peak usage."""
        leaf = self.leaves.get("memory")
        if leaf is None:
            return 0, 0
        kills = 0
        with contextlib.suppress(OSError, ValueError):
            for line in (leaf / "memory.oom_control").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    kills = int(value)
        peak = 0
        with contextlib.suppress(OSError, ValueError):
            peak = int((leaf / "memory.max_usage_in_bytes").read_text())
        return kills, peak

    def remove(self) -> None:
        """Remove the leaves, and any earlier one that still held processes then.

        A process that left the group (``setsid``) is still in the leaves, which cannot be
        removed until it exits: they are tried again at the next removal.
        """
        _unremoved.update(self.leaves.values())
        self.leaves = {}
        for path in list(_unremoved):
            try:
                path.rmdir()
            except FileNotFoundError:
                _unremoved.discard(path)
            except OSError:
                continue  # still busy
            else:
                _unremoved.discard(path)


_unremoved: set[Path] = set()
"""Our leaves that still held processes when their group ended."""
