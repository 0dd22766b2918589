"""Go-style durations (``90s``, ``5m``, ``1h30m``, ``7d``) as used in KEDA metadata."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")

ACCEPTED = "a duration such as 90s, 5m, 1h30m, 7d (units ms, s, m, h, d, w)"


def parse_duration(text: str) -> timedelta:
    """Parse a Go-style duration; raise ``ValueError`` naming what is accepted."""
    s = text.strip()
    if not s:
        raise ValueError(f"empty duration; expected {ACCEPTED}")
    pos = 0
    seconds = 0.0
    for match in _PART.finditer(s):
        if match.start() != pos:
            break
        seconds += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(s):
        raise ValueError(f"{text!r} is not a duration; expected {ACCEPTED}")
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
