"""Trigger metadata → one typed :class:`ScalerMetadata` and the :class:`SeriesKey` it names, in one place.

Key names follow KEDA's own ``prometheus`` and ``predictkube`` scalers.  Every bad key
raises :class:`~helios_scaler.errors.InvalidMetadata` naming the key, the value (an excerpt
when long) and what is accepted; an unknown key is an error too, with the closest known key
suggested.  No input raises anything else: numbers and durations are ASCII digits only and
bounded, ``query`` and ``serverAddress`` have a length limit, and ``serverAddress`` is
checked against the URL syntax accepted before anything parses it as a URL.

It sits low in the house (it imports only errors and durations): the store, the policy,
the demand, the trainer and the backtest all speak in these types.
"""

from __future__ import annotations

import difflib
import hashlib
import ipaddress
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final
from urllib.parse import urlsplit

from helios_scaler.durations import ACCEPTED as DURATION_ACCEPTED
from helios_scaler.durations import format_duration, parse_duration
from helios_scaler.errors import EXCERPT_CHARS, InvalidMetadata, excerpt

#: The ``model`` values a trigger may name; ``auto`` picks per series by backtest.  Each other name has
#: its factory in :mod:`helios_scaler.models.registry`, which checks the two agree.
AUTO: Final = "auto"
MODELS: Final = (AUTO, "seasonal_naive", "ets", "mstl", "lightgbm")
MODES: Final = ("forecast", "shadow")

#: Keys KEDA itself adds to or reads from an external trigger's metadata.
KEDA_KEYS: Final = frozenset(
    {"scalerAddress", "enableTLS", "unsafeSsl", "caCert", "tlsCertFile", "tlsClientCert", "tlsClientKey"}
)

MIN_STEP = timedelta(seconds=10)
MAX_STEP = timedelta(hours=1)
MAX_LEAD = timedelta(hours=6)
MIN_HISTORY = timedelta(hours=1)
MAX_HISTORY = timedelta(days=90)
#: Bound on history points per series (memory per series stays small).
MAX_POINTS = 50_000
#: A calendar's name (its file's stem) and an event kind: what a trigger and a metric label can carry.
NAME_PATTERN: Final = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
#: Largest threshold: far below int64 (KEDA's int fields), and past any real per-replica load.
MAX_THRESHOLD = 1e15
#: Smallest threshold: a smaller one (down to subnormal floats) only turns any load into a huge replica count.
MIN_THRESHOLD = 1e-6
#: Longest ``query`` (characters): a PromQL expression this long is an attack or a mistake.
MAX_QUERY_CHARS = 16 * 1024
#: Longest ``serverAddress`` (characters).
MAX_ADDRESS_CHARS = 2048
#: A number as the metadata may write it: ASCII digits, optional sign, fraction and exponent (``float()``
#: alone would also take fullwidth or Arabic-Indic digits, ``1_000``, ``nan`` and ``inf``).
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_HOST_NAME = r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,252})"
_PATH_CHAR = r"(?:[A-Za-z0-9._~!$&'()*+,;=:@/-]|%[0-9A-Fa-f]{2})"
#: ``http(s)://host[:port][/path]``; an IPv6 host in brackets (checked by :mod:`ipaddress`); no user, query
#: or fragment.
_ADDRESS = re.compile(
    rf"(?P<scheme>https?)://(?:(?P<name>{_HOST_NAME})|\[(?P<ipv6>[0-9A-Fa-f:.]+)\])"
    rf"(?::(?P<port>[0-9]{{1,5}}))?(?P<path>/{_PATH_CHAR}*)?"
)


#: Unserved demand a series may have (share of its total): the service level targeted.
SLO_UNSERVED = 0.005


@dataclass(frozen=True)
class Target:
    """The workload a series' forecasts are judged for: what a pod serves, how long it takes to start,
    and the service level (unserved demand at most ``slo`` of the total)."""

    threshold: float
    step: timedelta
    startup: timedelta
    scale_down_window: timedelta = timedelta(seconds=300)
    min_replicas: int = 1
    slo: float = SLO_UNSERVED

    @property
    def delay_steps(self) -> int:
        return math.ceil(self.startup / self.step)

    @property
    def window_steps(self) -> int:
        return max(1, math.ceil(self.scale_down_window / self.step))


@dataclass(frozen=True)
class SeriesKey:
    """What identifies one fetched series: ScaledObjects with equal keys share data and model."""

    source: str
    query: str
    step_seconds: int
    model: str
    #: The known-event calendars the series' forecast includes (sorted names).
    calendars: tuple[str, ...] = ()


@dataclass(frozen=True)
class ScalerMetadata:
    """A ScaledObject trigger's parsed configuration."""

    query: str
    threshold: float
    server_address: str | None = None
    activation_threshold: float = 0.0
    lead_time: timedelta = timedelta(minutes=5)
    history_time_window: timedelta = timedelta(days=7)
    query_step: timedelta = timedelta(minutes=1)
    model: str = AUTO
    #: The band served: a quantile of the forecast's backtest errors, or None for ``auto`` (the point
    #: forecast times the series' own margin that met the service level at least cost on its backtest).
    quantile: float | None = None
    #: Known-event calendars (server-side files, by name) whose events' uplift the forecast includes.
    calendars: tuple[str, ...] = ()
    mode: str = "forecast"

    @property
    def history_points(self) -> int:
        return int(self.history_time_window / self.query_step)

    def metric_name(self) -> str:
        """A stable ``[a-z0-9-]`` metric name derived from what determines the value served."""
        slug = re.sub(r"[^a-z0-9]+", "-", self.query.lower()).strip("-")[:40].strip("-") or "query"
        digest = hashlib.sha256(
            "\x00".join(
                (
                    self.server_address or "",
                    self.query,
                    str(self.query_step.total_seconds()),
                    str(self.lead_time.total_seconds()),
                    repr(self.quantile),
                    self.model,
                    self.mode,
                    *([",".join(self.calendars)] if self.calendars else []),
                )
            ).encode()
        ).hexdigest()[:8]
        return f"helios-{slug}-{digest}"

    def series_key(self, source_name: str) -> SeriesKey:
        return SeriesKey(source_name, self.query, int(self.query_step.total_seconds()), self.model, self.calendars)

    @classmethod
    def parse(cls, metadata: Mapping[str, str]) -> ScalerMetadata:
        """Parse and validate a trigger's ``scalerMetadata`` map."""
        values = _resolve_from_env(metadata)
        unknown = [key for key in values if key not in _PARSERS and key not in KEDA_KEYS]
        if unknown:
            key = sorted(unknown)[0]
            raise InvalidMetadata(key, values[key], _unknown_key_hint(key), unknown=True)
        parsed: dict[str, Any] = {}
        for key, (field, parser, _) in _PARSERS.items():
            if key in values:
                parsed[field] = parser(key, values[key])
        for key in ("query", "threshold"):
            if key not in values:
                raise InvalidMetadata(key, None, _PARSERS[key][2])
        meta = cls(**parsed)
        if meta.history_time_window < max(MIN_HISTORY, 4 * meta.lead_time):
            raise InvalidMetadata(
                "historyTimeWindow",
                values.get("historyTimeWindow", "7d"),
                f"at least {format_duration(MIN_HISTORY)} and at least 4 x leadTime",
            )
        if meta.history_points > MAX_POINTS:
            raise InvalidMetadata(
                "historyTimeWindow",
                values.get("historyTimeWindow", "7d"),
                f"at most {MAX_POINTS} points of queryStep {format_duration(meta.query_step)} "
                f"(here {meta.history_points}); raise queryStep or shorten the window",
            )
        return meta


def _resolve_from_env(metadata: Mapping[str, str]) -> dict[str, str]:
    """Read ``<key>FromEnv`` as ``<key>`` (KEDA resolves its value from the workload's env)."""
    values: dict[str, str] = {}
    for key, value in metadata.items():
        base = key[: -len("FromEnv")] if key.endswith("FromEnv") and len(key) > len("FromEnv") else key
        if base != key and base in metadata:
            raise InvalidMetadata(key, value, f"either {excerpt(base)} or {excerpt(key)}, not both")
        values[base] = value
    return values


def _unknown_key_hint(key: str) -> str:
    known = sorted({*_PARSERS, *KEDA_KEYS})
    by_lower = {name.lower(): name for name in known}
    close = [by_lower[key.lower()]] if key.lower() in by_lower else []
    if len(key) <= EXCERPT_CHARS:  # no known key is anywhere near that long: spare difflib the work
        close = close or difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return hint + "known keys: " + ", ".join(known)


def _query(key: str, value: str) -> str:
    if not value.strip() or len(value) > MAX_QUERY_CHARS:
        raise InvalidMetadata(key, value, _PARSERS[key][2])
    return value.strip()


def _address(key: str, value: str) -> str | None:
    text = value.strip().rstrip("/")
    if not text:
        return None
    if len(value) > MAX_ADDRESS_CHARS or not _valid_address(text):
        raise InvalidMetadata(key, value, _PARSERS[key][2])
    return text


def _valid_address(text: str) -> bool:
    """``text`` is ``http(s)://host[:port][/path]`` (what :data:`_ADDRESS` matches, a real IPv6 address in
    brackets, a port from 1 to 65535) and :func:`urllib.parse.urlsplit` reads it without error."""
    match = _ADDRESS.fullmatch(text)
    if match is None:
        return False
    if match["ipv6"] is not None:
        try:
            ipaddress.IPv6Address(match["ipv6"])
        except ValueError:
            return False
    if match["port"] is not None and not 1 <= int(match["port"]) <= 65535:
        return False
    try:  # What the allowlist comparison (normalize_url) and the HTTP client will do with it.
        parts = urlsplit(text)
        _ = parts.port
    except ValueError:
        return False
    return bool(parts.hostname)


def _number(low: float, high: float, *, low_open: bool, high_open: bool) -> Callable[[str, str], float]:
    def parse(key: str, value: str) -> float:
        text = value.strip()
        number = float(text) if _NUMBER.fullmatch(text) else math.nan
        ok = math.isfinite(number)
        ok = ok and (number > low if low_open else number >= low)
        ok = ok and (number < high if high_open else number <= high)
        if not ok:
            raise InvalidMetadata(key, value, _PARSERS[key][2])
        return number

    return parse


def _duration(low: timedelta, high: timedelta, whole_seconds: bool = False) -> Callable[[str, str], timedelta]:
    def parse(key: str, value: str) -> timedelta:
        try:
            parsed = parse_duration(value)
        except ValueError:  # not a duration, or longer than durations.MAX_DURATION
            raise InvalidMetadata(key, value, _PARSERS[key][2]) from None
        if not low <= parsed <= high or (whole_seconds and parsed % timedelta(seconds=1)):
            raise InvalidMetadata(key, value, _PARSERS[key][2])
        return parsed

    return parse


def _quantile(key: str, value: str) -> float | None:
    if value.strip().lower() == AUTO:
        return None
    return _number(0, 1, low_open=True, high_open=True)(key, value)


def _calendars(key: str, value: str) -> tuple[str, ...]:
    names = [name.strip() for name in value.split(",") if name.strip()]
    if not names or not all(NAME_PATTERN.match(name) for name in names):
        raise InvalidMetadata(key, value, _PARSERS[key][2])
    return tuple(sorted(set(names)))


def _choice(options: tuple[str, ...]) -> Callable[[str, str], str]:
    def parse(key: str, value: str) -> str:
        if value.strip().lower() not in options:
            raise InvalidMetadata(key, value, _PARSERS[key][2])
        return value.strip().lower()

    return parse


#: metadata key → (ScalerMetadata field, parser, what is accepted)
_PARSERS: dict[str, tuple[str, Callable[[str, str], Any], str]] = {
    "query": (
        "query",
        _query,
        f"a PromQL expression returning exactly one series, at most {MAX_QUERY_CHARS} characters",
    ),
    "serverAddress": (
        "server_address",
        _address,
        "an http:// or https:// Prometheus base URL, http(s)://host[:port][/path] (an IPv6 host in brackets; "
        f"at most {MAX_ADDRESS_CHARS} characters), that is the server's default or on its allowlist",
    ),
    "threshold": (
        "threshold",
        _number(MIN_THRESHOLD, MAX_THRESHOLD, low_open=False, high_open=False),
        "a number >= 1e-6 and <= 1e15 (ASCII digits, e.g. 100, 2.5 or 1e3)",
    ),
    "activationThreshold": (
        "activation_threshold",
        _number(0, MAX_THRESHOLD, low_open=False, high_open=False),
        "a number >= 0 and <= 1e15 (ASCII digits, e.g. 0, 2.5 or 1e3)",
    ),
    "leadTime": ("lead_time", _duration(timedelta(0), MAX_LEAD), f"{DURATION_ACCEPTED}, from 0s to 6h"),
    "historyTimeWindow": (
        "history_time_window",
        _duration(MIN_HISTORY, MAX_HISTORY),
        f"{DURATION_ACCEPTED}, from 1h to 90d",
    ),
    "queryStep": (
        "query_step",
        _duration(MIN_STEP, MAX_STEP, whole_seconds=True),
        f"{DURATION_ACCEPTED} of whole seconds, from 10s to 1h",
    ),
    "model": ("model", _choice(MODELS), "one of " + ", ".join(MODELS)),
    "quantile": (
        "quantile",
        _quantile,
        "auto (the point forecast times the margin that met the service level at least cost on the series' "
        "own backtest) or a number strictly between 0 and 1 (ASCII digits)",
    ),
    "calendar": (
        "calendars",
        _calendars,
        "comma-separated names of the server's known-event calendars (lower-case letters, digits, '_', '-', '.')",
    ),
    "mode": ("mode", _choice(MODES), "one of " + ", ".join(MODES)),
}
