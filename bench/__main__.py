"""``python -m bench NAME [options]`` runs a benchmark; ``python -m bench --list`` lists them.

Every module of this package whose name does not start with ``_`` is a benchmark. It has a
docstring (its first line is the summary shown by ``--list``) and exposes:

* ``add_arguments(parser)``: its own options;
* ``QUICK``: option values that ``--quick`` sets (a short run for smoke tests);
* ``run(args) -> Report`` (see :mod:`bench._report`).

The report is printed and appended to ``bench/RESULTS.md`` (or ``--results PATH``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import shlex
import sys
from pathlib import Path
from types import ModuleType

from bench import _report


def benchmarks() -> dict[str, ModuleType]:
    """The benchmark modules of this package, by name."""
    return {
        info.name: importlib.import_module(f"bench.{info.name}")
        for info in pkgutil.iter_modules([str(Path(__file__).parent)])
        if not info.name.startswith("_")
    }


def _summary(module: ModuleType) -> str:
    return (module.__doc__ or "").strip().splitlines()[0]


def _parser(found: dict[str, ModuleType]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Run one of procvisor's benchmarks."
    )
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    names = parser.add_subparsers(dest="name", metavar="NAME")
    for name, module in found.items():
        sub = names.add_parser(
            name,
            help=_summary(module),
            description=module.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.add_argument(
            "--reps", type=int, default=5, help="repetitions of every variant (default 5)"
        )
        quick = ", ".join(f"--{key} {value}" for key, value in module.QUICK.items())
        sub.add_argument("--quick", action="store_true", help=f"a short run: {quick}")
        sub.add_argument(
            "--results",
            type=Path,
            default=_report.RESULTS,
            help="markdown file the report is appended to (default bench/RESULTS.md)",
        )
        module.add_arguments(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv``, run the benchmark, print its report and append it to the results."""
    argv = sys.argv[1:] if argv is None else argv
    found = benchmarks()
    parser = _parser(found)
    args = parser.parse_args(argv)
    if args.list:
        for name, module in found.items():
            print(f"{name:12} {_summary(module)}")
        return 0
    if args.name is None:
        parser.error("give the NAME of a benchmark (see --list)")
    module = found[args.name]
    if args.quick:
        vars(args).update(module.QUICK)
    if args.reps < 1:
        parser.error("--reps must be 1 or more")
    load_before = os.getloadavg()[0]
    report = module.run(args)
    section = _report.render(report, "python -m bench " + shlex.join(argv), load_before)
    print(section)
    _report.append(section, args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
