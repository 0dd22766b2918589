"""Calendars of known events: parse, validate, look up.

A calendar file lists events with ``start``, ``end``, ``name`` and ``kind`` (``kind`` groups
events whose effect on load is alike: every ``match``, every ``launch``).  CSV has a header
row with those columns; YAML is a list of mappings with those keys, or a mapping with an
``events:`` list.  Times are ISO 8601 *with* a UTC offset or ``Z`` (``2026-06-10T15:30:00Z``,
``2026-06-10T17:30:00+02:00``): a time without one is refused, because a local wall-clock
time is ambiguous around daylight-saving changes.  Everything is held in UTC.

Every bad row is an :class:`~helios_scaler.errors.InputDataError` naming the file, the row,
the column, the value and what is accepted.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import yaml

from helios_scaler.errors import InputDataError
from helios_scaler.trigger import NAME_PATTERN

logger = logging.getLogger(__name__)

COLUMNS: Final = ("start", "end", "name", "kind", "uplift")
#: The range of a prior uplift multiplier (``uplift`` column).
MAX_PRIOR_UPLIFT: Final = 100.0
DEFAULT_KIND: Final = "event"
SUFFIXES: Final = (".csv", ".yaml", ".yml")
#: Longest event accepted: a longer one is almost certainly a typo in a date.
MAX_DURATION: Final = timedelta(days=31)
TIME_ACCEPTED: Final = "ISO 8601 with a UTC offset or Z, e.g. 2026-06-10T15:30:00Z"


@dataclass(frozen=True, order=True)
class Event:
    start: datetime
    end: datetime
    name: str
    kind: str
    #: An optional prior: the load multiplier expected during events of this kind, used only until one
    #: event of the kind has finished and taught the real curve.
    uplift: float | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Calendar:
    """One calendar's events, sorted by start."""

    name: str
    events: tuple[Event, ...]

    @property
    def kinds(self) -> frozenset[str]:
        return frozenset(event.kind for event in self.events)


def parse_time(text: str) -> datetime:
    """An ISO 8601 time with an explicit offset, in UTC.  ValueError otherwise."""
    moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("no UTC offset")
    return moment.astimezone(UTC)


def _event(where: str, row: Mapping[str, Any]) -> Event:
    missing = [column for column in ("start", "end", "name") if not str(row.get(column) or "").strip()]
    if missing:
        raise InputDataError(f"{where}: column {missing[0]!r} is empty or missing; each event needs start, end, name")
    times: dict[str, datetime] = {}
    for column in ("start", "end"):
        raw = row[column]
        if isinstance(raw, datetime):  # YAML reads unquoted timestamps itself
            raw = raw.isoformat()
        try:
            times[column] = parse_time(str(raw))
        except (ValueError, OverflowError):
            raise InputDataError(f"{where}: {column} {str(raw)!r} is not valid; accepted: {TIME_ACCEPTED}") from None
    start, end = times["start"], times["end"]
    if end <= start:
        raise InputDataError(f"{where}: end {end.isoformat()} is not after start {start.isoformat()}")
    if end - start > MAX_DURATION:
        raise InputDataError(
            f"{where}: the event lasts {end - start}, longer than the {MAX_DURATION.days} days accepted"
        )
    kind = str(row.get("kind") or DEFAULT_KIND).strip().lower()
    if not NAME_PATTERN.match(kind):
        raise InputDataError(
            f"{where}: kind {kind!r} is not valid; accepted: lower-case letters, digits, '_', '-', '.' (at most 63)"
        )
    prior: float | None = None
    raw_prior = str(row.get("uplift") if row.get("uplift") is not None else "").strip()
    if raw_prior:
        try:
            prior = float(raw_prior)
        except ValueError:
            prior = math.nan
        if not 0 < prior <= MAX_PRIOR_UPLIFT:
            raise InputDataError(
                f"{where}: uplift {raw_prior!r} is not valid; accepted: a multiplier > 0 and <= {MAX_PRIOR_UPLIFT:g} "
                "(e.g. 2 for twice the usual load), or empty"
            )
    return Event(start, end, str(row["name"]).strip(), kind, prior)


def parse_calendar(name: str, text: str, fmt: str, origin: str = "") -> Calendar:
    """Parse a calendar's text (``fmt``: ``csv`` or ``yaml``); ``origin`` names it in errors."""
    origin = origin or f"calendar {name!r}"
    rows: list[tuple[str, Mapping[str, Any]]] = []
    if fmt == "csv":
        reader = csv.DictReader(io.StringIO(text))
        header = [column.strip() for column in reader.fieldnames or []]
        unknown = [column for column in header if column not in COLUMNS]
        if not header or unknown or not {"start", "end", "name"} <= set(header):
            raise InputDataError(
                f"{origin}: header {','.join(header) or '(none)'} is not valid; "
                "accepted: start,end,name[,kind][,uplift]"
            )
        for number, row in enumerate(reader, start=2):
            rows.append((f"{origin}, line {number}", {key.strip(): value for key, value in row.items() if key}))
    elif fmt == "yaml":
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise InputDataError(f"{origin}: not valid YAML: {exc}") from None
        items = loaded.get("events") if isinstance(loaded, dict) else loaded
        if not isinstance(items, list):
            raise InputDataError(f"{origin}: expected a list of events, or a mapping with an 'events' list")
        for number, item in enumerate(items, start=1):
            if not isinstance(item, dict):
                raise InputDataError(
                    f"{origin}, event {number}: expected a mapping with start, end, name, kind, uplift"
                )
            unknown = sorted(str(key) for key in item if key not in COLUMNS)
            if unknown:
                raise InputDataError(
                    f"{origin}, event {number}: key {unknown[0]!r} is not known; accepted: {', '.join(COLUMNS)}"
                )
            rows.append((f"{origin}, event {number}", item))
    else:
        raise InputDataError(f"{origin}: format {fmt!r} is not known; accepted: csv, yaml")
    events = tuple(sorted(_event(where, row) for where, row in rows))
    return Calendar(name, events)


def calendar_name(path: Path) -> str:
    """A calendar's name: its file name without the suffix."""
    return path.stem


def load_calendar(path: Path) -> Calendar:
    """Read one calendar file (``.csv``, ``.yaml`` or ``.yml``)."""
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise InputDataError(f"calendar file {path}: suffix {suffix!r} is not known; accepted: {', '.join(SUFFIXES)}")
    name = calendar_name(path)
    if not NAME_PATTERN.match(name):
        raise InputDataError(
            f"calendar file {path}: name {name!r} is not valid; accepted: lower-case letters, digits, '_', '-', '.'"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputDataError(f"calendar file {path}: cannot be read: {exc}") from None
    return parse_calendar(name, text, "csv" if suffix == ".csv" else "yaml", f"calendar file {path}")


class CalendarSet:
    """The server's calendars: every calendar file in a directory, re-read when a file changes.

    A file that fails to parse is logged and left out (the previous good version of it, if any,
    is kept), so one bad edit of a ConfigMap never takes the other calendars down.
    """

    def __init__(self, directory: Path | None, calendars: Iterable[Calendar] = ()) -> None:
        self._directory = directory
        self._static = {calendar.name: calendar for calendar in calendars}
        self._loaded: dict[str, Calendar] = {}
        self._stamps: dict[Path, tuple[float, int]] = {}
        self.errors: dict[str, str] = {}
        self.refresh()

    def refresh(self) -> None:
        """Re-read the files that changed since the last look."""
        if self._directory is None:
            return
        try:
            paths = sorted(p for p in self._directory.iterdir() if p.suffix.lower() in SUFFIXES and p.is_file())
        except OSError as exc:
            self.errors[str(self._directory)] = str(exc)
            logger.warning("calendar directory %s cannot be read: %s", self._directory, exc)
            return
        present = {calendar_name(path) for path in paths}
        for name in [name for name in self._loaded if name not in present]:
            del self._loaded[name]
        for path in paths:
            try:
                stat = os.stat(path)
            except OSError:  # gone between the listing and now (a ConfigMap swap): the next look sees it
                continue
            stamp = (stat.st_mtime, stat.st_size)
            if self._stamps.get(path) == stamp:
                continue
            self._stamps[path] = stamp
            try:
                calendar = load_calendar(path)
            except InputDataError as exc:
                self.errors[calendar_name(path)] = str(exc)
                logger.warning("calendar left out: %s", exc)
                continue
            self.errors.pop(calendar.name, None)
            self._loaded[calendar.name] = calendar
            logger.info(
                "calendar %r: %d events of kinds %s", calendar.name, len(calendar.events), sorted(calendar.kinds)
            )

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(sorted({*self._static, *self._loaded}))

    def get(self, name: str) -> Calendar | None:
        return self._loaded.get(name) or self._static.get(name)
