"""Go-style durations (``90s``, ``5m``, ``1h30m``, ``7d``) as used in KEDA metadata.

Numbers are ASCII digits only (a fullwidth or an Arabic-Indic digit is not one), and a duration is at
most :data:`MAX_DURATION`, so no input can overflow :class:`~datetime.timedelta`.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import Final

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
#: ``[0-9]``, not ``\d``: ``\d`` matches every Unicode decimal digit.
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d|w)")

#: Longest duration accepted anywhere (settings, trigger metadata, backtest flags); each use may bound it
#: further (a trigger's leadTime, for one, is at most 6h).
MAX_DURATION: Final = timedelta(days=400)

ACCEPTED = "a duration such as 90s, 5m, 1h30m, 7d (units ms, s, m, h, d, w; ASCII digits; at most 400d)"


def _shown(text: str) -> str:
    """The text as an error message shows it: its ``repr``, cut after 100 characters."""
    return repr(text) if len(text) <= 100 else f"{text[:100]!r}… ({len(text)} characters)"


def parse_duration(text: str) -> timedelta:
    """Parse a Go-style duration; raise ``ValueError`` naming what is accepted."""
    s = text.strip()
    if not s:
        raise ValueError(f"empty duration; expected {ACCEPTED}")
    pos = 0
    seconds = 0.0
    # Part after part from where the last ended (finditer would search on from every position: quadratic
    # time on a long run of digits without a unit).
    while pos < len(s) and (match := _PART.match(s, pos)) is not None:
        seconds += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(s):
        raise ValueError(f"{_shown(text)} is not a duration; expected {ACCEPTED}")
    # float() of a long digit string is inf, not an error: compare before timedelta() can overflow.
    if not math.isfinite(seconds) or seconds > MAX_DURATION.total_seconds():
        raise ValueError(f"{_shown(text)} is longer than {format_duration(MAX_DURATION)}; expected {ACCEPTED}")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """Format a duration compactly, the inverse of :func:`parse_duration` for whole seconds."""
    total = int(value.total_seconds())
    if total == 0:
        return "0s"
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, total = divmod(total, size)
        if count:
            out.append(f"{count}{unit}")
    return "".join(out)
