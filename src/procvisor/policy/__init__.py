"""Pure decisions: no I/O, no sleeping, no global clock.

Everything here is a plain function or a small class. Anything that depends on time takes
``now`` (a float from ``time.monotonic()``) as an argument, so the rules are tested exactly.
The layers above (``process``, the capabilities, the daemon) ask these functions what to do
and do it.
"""

from procvisor.policy.restart import (
    Backoff,
    BreakerState,
    RestartAction,
    RestartDecision,
    RestartMode,
    RestartPolicy,
    RestartState,
    decide_restart,
    on_cooldown_elapsed,
)
from procvisor.policy.units import format_duration, format_size, parse_duration, parse_size

__all__ = [
    "Backoff",
    "BreakerState",
    "RestartAction",
    "RestartDecision",
    "RestartMode",
    "RestartPolicy",
    "RestartState",
    "decide_restart",
    "format_duration",
    "format_size",
    "on_cooldown_elapsed",
    "parse_duration",
    "parse_size",
]
