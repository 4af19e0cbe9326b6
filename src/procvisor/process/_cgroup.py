"""A pids cgroup for each process group with a ``processes`` limit, where the machine allows.

``pids.max`` counts every process and thread of the cgroup, however deep in the tree and
whether or not it left the process group, and a ``fork`` beyond it fails in the child: the
same effect as ``RLIMIT_NPROC``, but for the command's own tree, not for every process its
user runs, and for root too (the kernel exempts root from ``RLIMIT_NPROC``; without a
cgroup a root command's processes can only be counted by sampling).

The cgroup v1 ``pids`` hierarchy is used where it is mounted and writable (it is on this
project's machines); cgroup v2 is not used yet: none of the project's machines has a v2
tree with controllers to test it on. Layout: ``<hierarchy>/<our cgroup>/procvisor/<our
pid>/<n>``. The child moves itself into its leaf before it execs the command (a ``/bin/sh``
trampoline writes ``$$`` to ``cgroup.procs``), so nothing runs outside the limit. A leaf is
removed once its group has ended (or, if a process that left the group still runs in it, at
a later removal); leaves of processes that died without removing theirs are swept when
another process starts using cgroups.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from pathlib import Path

__all__ = ["PidsCgroup", "pids_available"]

disabled = False
"""Tests set this to exercise the mechanisms used where no pids cgroup can be made."""

_root: Path | bool | None = False  # False: not looked for yet
_counter = itertools.count()


def _pids_hierarchy() -> Path | None:
    """The directory of our own cgroup in the v1 ``pids`` hierarchy, if mounted."""
    mount = None
    with contextlib.suppress(OSError), open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            dash = fields.index("-")
            fstype, options = fields[dash + 1], fields[dash + 3].split(",")
            if fstype == "cgroup" and "pids" in options:
                mount = Path(fields[4])
                break
    if mount is None:
        return None
    own = "/"
    with contextlib.suppress(OSError), open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if "pids" in controllers.split(","):
                own = path
    return mount / own.lstrip("/")


def _base() -> Path | None:
    """Our own directory of leaves (made on first use), or None where none can be made."""
    global _root
    if _root is False:
        _root = None
        hierarchy = _pids_hierarchy()
        if hierarchy is not None:
            base = hierarchy / "procvisor" / str(os.getpid())
            try:
                base.mkdir(parents=True, exist_ok=True)
                _sweep(base.parent)
            except OSError:
                pass  # read-only, or not ours to write: the other mechanisms apply
            else:
                _root = base
    return _root if isinstance(_root, Path) else None


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


def pids_available() -> bool:
    """Whether a ``processes`` limit is enforced by a pids cgroup here (looked up once)."""
    return not disabled and _base() is not None


class PidsCgroup:
    """One leaf cgroup with ``pids.max``; the spawned child joins it through its trampoline."""

    __slots__ = ("path",)

    def __init__(self, limit: int) -> None:
        """Make the leaf and set its limit.

        Raises:
            OSError: the leaf could not be made or limited.
        """
        base = _base()
        if base is None:
            raise OSError("no pids cgroup hierarchy to make a cgroup in")
        base.mkdir(parents=True, exist_ok=True)  # swept away by another process's start
        self.path = base / str(next(_counter))
        self.path.mkdir()
        try:
            (self.path / "pids.max").write_text(str(limit))
        except OSError:
            self.path.rmdir()
            raise

    @property
    def procs_file(self) -> str:
        """The file a process writes its pid to, to join."""
        return str(self.path / "cgroup.procs")

    def remove(self) -> None:
        """Remove the leaf, and any earlier one that still held processes then.

        A process that left the group (``setsid``) is still in the leaf, which cannot be
        removed until it exits: it is tried again at the next removal.
        """
        _unremoved.add(self.path)
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
