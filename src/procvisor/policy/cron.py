"""Cron expressions: checking one, and when it next fires (croniter does the arithmetic).

Pure: the time to count from is an argument. Cron is about the wall clock, so ``after`` is
Unix time (``time.time()``), read in the local time zone, as cron does.
"""

from __future__ import annotations

from datetime import datetime

__all__ = ["CRON_FORMS", "check_cron", "next_fire"]

CRON_FORMS = (
    "5 fields (minute hour day-of-month month day-of-week), e.g. '*/5 * * * *', or 6 with "
    "seconds last, e.g. '* * * * * */10'"
)
"""What a cron expression may look like, for error messages."""


def check_cron(expr: object, *, field: str) -> str:
    """``expr`` with its whitespace normalized, if it is a cron expression.

    croniter (and dateutil) are imported here, with the first cron expression, not with
    every daemon.

    Raises:
        ValueError: it is not one; the message names ``field`` and the accepted forms.
    """
    from croniter import croniter  # noqa: PLC0415 - see above

    if not isinstance(expr, str) or not croniter.is_valid(expr.strip()):
        raise ValueError(f"{field}: {expr!r} is not a cron expression; use {CRON_FORMS}")
    return " ".join(expr.split())


def next_fire(cron: str, after: float) -> float:
    """The first fire time of ``cron`` after ``after`` (wall clock, local time zone)."""
    from croniter import croniter  # noqa: PLC0415 - see check_cron

    start = datetime.fromtimestamp(after).astimezone()
    return float(croniter(cron, start).get_next(float))
