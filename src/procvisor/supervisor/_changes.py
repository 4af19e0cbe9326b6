"""Watching a service's files, to restart it when they change (PM2's ``watch``, nodemon).

The watching is watchfiles' (inotify through Rust's ``notify``, with debouncing), run in a
thread of its own per watched service. What never counts as a change: watchfiles' defaults
(``.git``, ``__pycache__``, ``node_modules``, editor swap files, ...), the daemon's own state
directory (its logs and store are written all the time: a service watching its config
file's directory would otherwise restart forever), and the service's ``ignore`` patterns.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Sequence
from fnmatch import fnmatchcase
from pathlib import Path, PurePath

from watchfiles import Change, DefaultFilter, awatch

from procvisor.supervisor._spec import ChangeWatch

__all__ = ["ChangeFilter", "watch_changes"]


class ChangeFilter(DefaultFilter):
    """watchfiles' default filter, plus quiet directories and glob patterns.

    A pattern matches a changed path relative to the watched path it is under, or any one
    component of it: ``*.log``, ``tmp``, ``build/*``.
    """

    def __init__(self, roots: Sequence[Path], ignore: Sequence[str], quiet: Sequence[Path]):
        super().__init__(ignore_paths=[str(p) for p in quiet])
        self._roots = [str(r) for r in roots]
        self._patterns = tuple(ignore)

    def __call__(self, change: Change, path: str) -> bool:
        if not super().__call__(change, path):
            return False
        for root in self._roots:
            if path == root or path.startswith(root.rstrip(os.sep) + os.sep):
                rel = PurePath(os.path.relpath(path, root))
                break
        else:
            rel = PurePath(os.path.basename(path))
        return not any(
            fnmatchcase(str(rel), pattern) or any(fnmatchcase(part, pattern) for part in rel.parts)
            for pattern in self._patterns
        )


async def watch_changes(
    watch: ChangeWatch, quiet: Sequence[Path], stop: asyncio.Event
) -> AsyncIterator[list[Path]]:
    """Each batch of changed paths (sorted), after ``watch.debounce`` of quiet; until ``stop``.

    Set ``stop`` to end it: the watching thread notices within 50 ms.
    """
    paths = [p.resolve() for p in watch.paths]
    changes_filter = ChangeFilter(paths, watch.ignore, [q.resolve() for q in quiet])
    async for changes in awatch(
        *paths,
        watch_filter=changes_filter,
        debounce=max(1, round(watch.debounce * 1000)),
        stop_event=stop,
    ):
        yield sorted({Path(path) for _, path in changes})
