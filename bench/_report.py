"""What every benchmark shares: repetitions, statistics, the report and where it is kept.

A benchmark measures :class:`Sample` objects with :func:`repeat`, summarises them with
:func:`spread` and :func:`percentile`, and returns a :class:`Report`; :func:`render` turns
that into markdown under a header line that says when, where and with what it ran, and
:func:`append` adds it to ``bench/RESULTS.md``.
"""

from __future__ import annotations

import functools
import gc
import importlib.metadata
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")

INTRO = """\
# procvisor benchmark results

Each section below is one run of `python -m bench NAME` (from the repository root; `python -m
bench --list` shows the benchmarks, `python -m bench NAME --help` their options). A run measures
procvisor and its peers in the same process, repeats every variant (interleaved: variant A rep 1,
B rep 1, ..., A rep 2, ...) and gives median [min–max] over the repetitions. The machine is shared
and noisy, so compare ratios against the peers of the same run rather than absolute figures
across runs. Sections are appended, newest last; the header line of each says when it ran, on
what machine, and with which versions.
"""


@dataclass(frozen=True, slots=True)
class Sample:
    """One repetition of one variant: ``count`` operations in ``wall`` seconds."""

    count: int
    wall: float
    latencies: Sequence[float] = ()
    """Seconds, one per operation (may be empty when only the total matters)."""
    usage: tuple[float, float, float] | None = None
    """This process's user and system CPU seconds and voluntary context switches (times it
    slept), over the ``count`` operations, where a bench measures them."""

    @property
    def rate(self) -> float:
        """Operations per second."""
        return self.count / self.wall

    @property
    def per_op(self) -> float:
        """Mean seconds per operation."""
        return self.wall / self.count


@dataclass(frozen=True, slots=True)
class Table:
    """A markdown table with a title; cells are already formatted."""

    title: str
    columns: Sequence[str]
    rows: Sequence[Sequence[str]]


@dataclass(frozen=True, slots=True)
class Target:
    """A goal checked against this run's figures, recorded as PASS or FAIL."""

    label: str
    passed: bool
    detail: str


@dataclass(frozen=True, slots=True)
class Report:
    """What a benchmark's ``run(args)`` returns."""

    name: str
    summary: str
    tables: Sequence[Table]
    targets: Sequence[Target] = ()
    notes: Sequence[str] = ()


def repeat(variants: Mapping[str, Callable[[], Sample]], reps: int) -> dict[str, list[Sample]]:
    """Measure every variant ``reps`` times, interleaved (A1 B1 C1 A2 B2 C2 ...).

    Progress goes to stderr, one line per measurement.
    """
    samples: dict[str, list[Sample]] = {name: [] for name in variants}
    for rep in range(1, reps + 1):
        for name, measure in variants.items():
            gc.collect()
            sample = measure()
            samples[name].append(sample)
            print(
                f"[{rep}/{reps}] {name}: {sample.rate:,.0f}/s, {sample.per_op * 1e6:,.0f} µs/op",
                file=sys.stderr,
                flush=True,
            )
    return samples


def percentile(values: Sequence[float], p: float) -> float:
    """The nearest-rank ``p``-th percentile of ``values``."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    """The median of ``values``."""
    return statistics.median(values)


def number(value: float) -> str:
    """A figure with about three significant digits and thousands separators."""
    size = abs(value)
    if size >= 100:
        return f"{value:,.0f}"
    if size >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}" if size >= 1 else f"{value:.3f}"


def spread(values: Sequence[float], fmt: Callable[[float], str] = number) -> str:
    """``median [min–max]`` of ``values``."""
    return f"{fmt(median(values))} [{fmt(min(values))}–{fmt(max(values))}]"


@functools.cache
def bytecode_env() -> dict[str, str]:
    """The environment for the interpreters a benchmark starts: ours, writing bytecode.

    This project's dev shells set PYTHONDONTWRITEBYTECODE, so an editable install has no
    bytecode: every fresh interpreter would compile procvisor's modules from source (~0.15 s
    of a daemon's start), a cost no pip-installed copy pays. So procvisor is compiled once
    here, as ``pip install`` does, and the children write the bytecode of what else they
    import (the peers' venvs have theirs from pip).
    """
    import compileall  # noqa: PLC0415

    import procvisor  # noqa: PLC0415

    compileall.compile_dir(Path(procvisor.__file__).parent, quiet=1)
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def _memory() -> str:
    with open("/proc/meminfo") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("MemTotal:"))
    return f"{kib / 1024**2:.1f} GiB RAM"


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _revision() -> str:
    """The repository's commit, and whether src/ differs from it (others may be editing it)."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--", "src")
    except (OSError, subprocess.CalledProcessError):
        return "no git revision"
    return f"@{commit}" + (" with uncommitted src/ changes" if dirty else "")


def environment(load_before: float) -> str:
    """When, where and with what: date (UTC), machine, Python, procvisor and psutil.

    ``load_before`` is the 1-minute load average when the run began; it is shown with the
    current one, as a hint of how busy the shared machine was.
    """
    return " · ".join(
        [
            time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            f"{os.cpu_count()} cores, {_memory()}",
            f"Linux {platform.release()}",
            f"{platform.python_implementation()} {platform.python_version()}",
            f"procvisor {_version('procvisor')} {_revision()}",
            f"psutil {_version('psutil')}",
            f"load {load_before:.2f} → {os.getloadavg()[0]:.2f}",
        ]
    )


def render(report: Report, command: str, load_before: float) -> str:
    """The markdown section for ``report``, produced by running ``command``."""
    lines = [
        f"## {report.name} · {environment(load_before)}",
        "",
        f"`{command}`",
        "",
        report.summary,
        "",
    ]
    for table in report.tables:
        lines += [f"### {table.title}", ""]
        lines.append("| " + " | ".join(table.columns) + " |")
        lines.append("|" + "---|" * len(table.columns))
        lines += ["| " + " | ".join(row) + " |" for row in table.rows]
        lines.append("")
    if report.targets:
        lines += ["### Targets", ""]
        lines += [
            f"- **{'PASS' if t.passed else 'FAIL'}** {t.label}: {t.detail}" for t in report.targets
        ]
        lines.append("")
    if report.notes:
        lines += ["Notes:", ""]
        lines += [f"- {note}" for note in report.notes]
        lines.append("")
    return "\n".join(lines)


def append(section: str, path: Path = RESULTS) -> None:
    """Append ``section`` to ``path``; a new or empty file starts with :data:`INTRO`."""
    fresh = not path.exists() or path.stat().st_size == 0
    with path.open("a", encoding="utf-8") as f:
        f.write((INTRO if fresh else "") + "\n" + section)
