"""Which ScaledObjects ask for what: the demand the trainer works from (registered by the KEDA handlers).

Handlers register a ScaledObject on every call (a dictionary update: no I/O).  The
trainer reads the union per series: the longest horizon and history, every quantile
asked for.  A ScaledObject that KEDA has not asked about for ``ttl`` is forgotten, and so
is a series nobody asks about any more.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta

from helios_scaler.errors import InvalidMetadata, TooManySeries
from helios_scaler.events.calendar import CalendarSet, Event
from helios_scaler.policy import forecast_horizon, lead_steps
from helios_scaler.source.base import Source
from helios_scaler.source.registry import SourceResolver
from helios_scaler.trigger import ScalerMetadata, SeriesKey, Target


@dataclass(frozen=True)
class Subscription:
    namespace: str
    name: str
    metric_name: str
    meta: ScalerMetadata
    key: SeriesKey
    source: Source


@dataclass(frozen=True)
class SeriesDemand:
    """What the trainer must produce for one series."""

    key: SeriesKey
    source: Source
    step: timedelta
    horizon: int
    history: timedelta
    #: The bands asked for (None: ``quantile: auto``).
    quantiles: tuple[float | None, ...]
    #: Forecast steps a served value covers (the longest lead time's window from a fresh forecast).
    window: int = 1
    #: The workload the series' models are chosen and calibrated for: the smallest threshold and the
    #: longest lead time (pod start-up) of its ScaledObjects.
    threshold: float = 1.0
    lead: timedelta = timedelta(0)
    #: The known events of the series' calendars, by start.
    events: tuple[Event, ...] = ()

    @property
    def target(self) -> Target:
        """The workload whose cost at the service level chooses the model and its margin."""
        return Target(threshold=self.threshold, step=self.step, startup=self.lead)


def series_id(key: SeriesKey) -> str:
    """A short, stable id of a series for metric labels."""
    parts = (
        key.source,
        key.query,
        str(key.step_seconds),
        key.model,
        *([",".join(key.calendars)] if key.calendars else []),
    )
    text = "\x00".join(parts)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


class Subscriptions:
    """The registry of ScaledObjects and the series they need."""

    def __init__(
        self,
        resolver: SourceResolver,
        max_series: int,
        refresh_interval: timedelta,
        ttl: timedelta = timedelta(minutes=10),
        clock: Callable[[], float] = time.monotonic,
        calendars: CalendarSet | None = None,
    ) -> None:
        self._resolver = resolver
        self.calendars = calendars or CalendarSet(None)
        self._max_series = max_series
        self._refresh_interval = refresh_interval
        self._ttl = ttl.total_seconds()
        self._clock = clock
        self._subs: dict[tuple[str, str, str], Subscription] = {}
        self._seen: dict[tuple[str, str, str], float] = {}
        self._parsed: dict[tuple[tuple[str, str], ...], ScalerMetadata] = {}
        self._on_change: Callable[[], None] = lambda: None

    def on_change(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` whenever the demand changes (the trainer's wake-up)."""
        self._on_change = callback

    def parse(self, metadata: Mapping[str, str]) -> ScalerMetadata:
        """Parse metadata, memoised: KEDA sends the same map every few seconds."""
        cache_key = tuple(sorted(metadata.items()))
        meta = self._parsed.get(cache_key)
        if meta is None:
            meta = ScalerMetadata.parse(metadata)
            if len(self._parsed) > 10 * self._max_series:
                self._parsed.clear()
            self._parsed[cache_key] = meta
        return meta

    def register(self, namespace: str, name: str, meta: ScalerMetadata) -> Subscription:
        """Record that KEDA asked about this trigger; resolve its source (allowlist)."""
        ident = (namespace, name, meta.metric_name())
        existing = self._subs.get(ident)
        self._seen[ident] = self._clock()
        if existing is not None and existing.meta == meta:
            return existing
        missing = [calendar for calendar in meta.calendars if self.calendars.get(calendar) is None]
        if missing:
            known = ", ".join(self.calendars.names)
            accepted = (
                f"names of the server's calendars: {known}"
                if known
                else "none: the server has no calendars (setting calendar_dir, chart value calendars)"
            )
            broken = "; ".join(self.calendars.errors[each] for each in missing if each in self.calendars.errors)
            raise InvalidMetadata(
                "calendar", ",".join(missing), accepted + (f" (not loaded: {broken})" if broken else "")
            )
        source = self._resolver.resolve(meta.server_address)
        key = meta.series_key(source.name)
        keys = self.keys()
        if key not in keys and len(keys) >= self._max_series:
            raise TooManySeries(
                f"this server already tracks its maximum of {self._max_series} series (setting max_series); "
                f"query {meta.query!r} was not added"
            )
        sub = Subscription(namespace, name, ident[2], meta, key, source)
        self._subs[ident] = sub
        self._on_change()
        return sub

    def get(self, namespace: str, name: str, metric_name: str) -> Subscription | None:
        return self._subs.get((namespace, name, metric_name))

    def all(self) -> list[Subscription]:
        return list(self._subs.values())

    def keys(self) -> set[SeriesKey]:
        return {sub.key for sub in self._subs.values()}

    def expire(self) -> list[Subscription]:
        """Forget ScaledObjects KEDA has not asked about for ``ttl``."""
        cutoff = self._clock() - self._ttl
        gone = [ident for ident, seen in self._seen.items() if seen < cutoff]
        removed = [self._subs.pop(ident) for ident in gone if ident in self._subs]
        for ident in gone:
            del self._seen[ident]
        return removed

    def _events(self, names: tuple[str, ...]) -> tuple[Event, ...]:
        found = [calendar for name in names if (calendar := self.calendars.get(name)) is not None]
        return tuple(sorted(event for calendar in found for event in calendar.events))

    def demand(self) -> dict[SeriesKey, SeriesDemand]:
        """The union of what every ScaledObject of each series needs."""
        grouped: dict[SeriesKey, list[Subscription]] = {}
        for sub in self._subs.values():
            grouped.setdefault(sub.key, []).append(sub)
        out: dict[SeriesKey, SeriesDemand] = {}
        for key, subs in grouped.items():
            step = subs[0].meta.query_step
            lead = max(sub.meta.lead_time for sub in subs)
            out[key] = SeriesDemand(
                key=key,
                source=subs[0].source,
                step=step,
                horizon=forecast_horizon(lead, step, self._refresh_interval),
                history=max(sub.meta.history_time_window for sub in subs),
                quantiles=tuple(sorted({sub.meta.quantile for sub in subs}, key=lambda q: -1.0 if q is None else q)),
                window=lead_steps(lead, step),
                threshold=min(sub.meta.threshold for sub in subs),
                lead=lead,
                events=self._events(key.calendars),
            )
        return out
