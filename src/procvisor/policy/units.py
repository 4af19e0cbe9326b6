"""Sizes and durations as people write them: ``"512M"``, ``"1.5G"``, ``"250ms"``, ``"1m30s"``.

Sizes use powers of 1024 (``K`` = KiB), as systemd, Docker and the kernel's own knobs do.
Every error is a ``ValueError`` that names the field and lists the accepted forms.
"""

from __future__ import annotations

import math
import re

_SIZE_UNITS: dict[str, int] = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1024,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1024**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1024**3,
    "gib": 1024**3,
    "t": 1024**4,
    "tb": 1024**4,
    "tib": 1024**4,
}

_DURATION_UNITS: dict[str, float] = {
    "us": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*([a-zA-Z]*)\s*$")
_DURATION_PART_RE = re.compile(r"(\d+(?:\.\d+)?|\.\d+)\s*(us|ms|s|m|h|d)")

SIZE_FORMS = "a number of bytes or a string like '512M', '1.5G', '64K' (units B, K, M, G, T)"
DURATION_FORMS = (
    "a number of seconds or a string like '250ms', '10s', '2m', '1h', '1m30s' "
    "(units us, ms, s, m, h, d)"
)


def parse_size(value: int | float | str, *, field: str = "size") -> int:
    """Return ``value`` as a whole number of bytes.

    Raises:
        ValueError: the value is negative, not finite, or not one of the accepted forms;
            the message names ``field``.
    """
    if isinstance(value, bool):
        raise ValueError(f"{field}: {value!r} is not a size; use {SIZE_FORMS}")
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{field}: {value!r} must be a size of 0 or more; use {SIZE_FORMS}")
        return int(value)
    if isinstance(value, str):
        match = _SIZE_RE.match(value)
        if match is not None:
            unit = _SIZE_UNITS.get(match.group(2).lower())
            if unit is not None:
                return int(float(match.group(1)) * unit)
    raise ValueError(f"{field}: {value!r} is not a size; use {SIZE_FORMS}")


def parse_duration(value: int | float | str, *, field: str = "duration") -> float:
    """Return ``value`` as seconds (a float, 0 or more).

    Raises:
        ValueError: the value is negative, not finite, or not one of the accepted forms;
            the message names ``field``.
    """
    if isinstance(value, bool):
        raise ValueError(f"{field}: {value!r} is not a duration; use {DURATION_FORMS}")
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0:
            raise ValueError(
                f"{field}: {value!r} must be a duration of 0 or more; use {DURATION_FORMS}"
            )
        return float(value)
    if isinstance(value, str):
        text = value.strip().lower()
        try:
            return parse_duration(float(text), field=field)
        except ValueError:
            pass
        if text and not text.startswith("-"):
            total = 0.0
            pos = 0
            for part in _DURATION_PART_RE.finditer(text):
                if part.start() != pos:
                    break
                total += float(part.group(1)) * _DURATION_UNITS[part.group(2)]
                pos = part.end()
            else:
                if pos == len(text) and pos > 0:
                    return total
    raise ValueError(f"{field}: {value!r} is not a duration; use {DURATION_FORMS}")


def format_size(n: int) -> str:
    """Render a byte count the short way people read it: ``1536`` -> ``"1.5K"``."""
    value = float(n)
    for unit in ("B", "K", "M", "G"):
        if abs(value) < 1024:
            return f"{n}B" if unit == "B" else f"{value:.3g}{unit}"
        value /= 1024
    return f"{value:.3g}T"


def format_duration(seconds: float) -> str:
    """Render seconds briefly: ``0.25`` -> ``"250ms"``, ``90`` -> ``"1m30s"``."""
    if seconds < 1:
        return f"{round(seconds * 1000, 1):g}ms"
    if seconds < 60:
        return f"{seconds:.3g}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs}s" if secs else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes}m" if minutes else f"{hours}h"
