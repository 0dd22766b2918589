"""Which ScaledObjects ask for what: the demand the trainer works from (registered by the KEDA handlers).

Handlers register a ScaledObject on every call (a dictionary update: no I/O, O(1) in the
number of ScaledObjects).  The trainer reads the union per series: the longest horizon and
history, every quantile asked for.  A ScaledObject that KEDA has not asked about for ``ttl``
is forgotten, and so is a series nobody asks about any more.

Tenants are namespaces.  Besides the server's ``max_series``, each namespace has its own
quota of series and of ScaledObjects (:class:`Quotas`), so one namespace cannot take every
slot; and a namespace may be bound to the Prometheus addresses it is allowed to read
(``namespace_server_addresses``).
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from helios_scaler.errors import InvalidMetadata, SourceNotAllowed, TooManySeries
from helios_scaler.events.calendar import CalendarSet, Event
from helios_scaler.policy import forecast_horizon, lead_steps
from helios_scaler.source.base import Source
from helios_scaler.source.registry import SourceResolver
from helios_scaler.trigger import ScalerMetadata, SeriesKey, Target

#: Most metadata maps the parse cache keeps, and most characters over all of them (a few huge queries
#: with changing thresholds must not grow it without end).
PARSE_CACHE_ENTRIES = 4096
PARSE_CACHE_CHARS = 8 * 1024 * 1024


@dataclass(frozen=True)
class Quotas:
    """What one server, and each namespace, may register (0: no per-namespace limit)."""

    max_series: int = 1000
    series_per_namespace: int = 0
    scaledobjects_per_namespace: int = 0
    #: Namespace → the normalized Prometheus URLs its triggers may read (namespaces not listed: any allowed).
    namespace_sources: Mapping[str, frozenset[str]] = field(default_factory=dict)


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
        max_series: int | Quotas,
        refresh_interval: timedelta,
        ttl: timedelta = timedelta(minutes=10),
        clock: Callable[[], float] = time.monotonic,
        calendars: CalendarSet | None = None,
    ) -> None:
        self._resolver = resolver
        self.calendars = calendars or CalendarSet(None)
        self._quotas = max_series if isinstance(max_series, Quotas) else Quotas(max_series=max_series)
        self._refresh_interval = refresh_interval
        self._ttl = ttl.total_seconds()
        self._clock = clock
        self._subs: dict[tuple[str, str, str], Subscription] = {}
        self._seen: dict[tuple[str, str, str], float] = {}
        # Counts kept on every change so that registering is O(1): ScaledObjects per series, and per
        # namespace its ScaledObjects and its series.
        self._per_series: Counter[SeriesKey] = Counter()
        self._ns_objects: Counter[str] = Counter()
        self._ns_series: dict[str, Counter[SeriesKey]] = {}
        self._parsed: OrderedDict[tuple[tuple[str, str], ...], ScalerMetadata] = OrderedDict()
        self._parsed_chars = 0
        self._on_change: Callable[[], None] = lambda: None

    def on_change(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` whenever the demand changes (the trainer's wake-up)."""
        self._on_change = callback

    def parse(self, metadata: Mapping[str, str]) -> ScalerMetadata:
        """Parse metadata, memoised (KEDA sends the same map every few seconds) in a bounded LRU cache."""
        cache_key = tuple(sorted(metadata.items()))
        meta = self._parsed.get(cache_key)
        if meta is not None:
            self._parsed.move_to_end(cache_key)
            return meta
        meta = ScalerMetadata.parse(metadata)
        chars = sum(len(key) + len(value) for key, value in cache_key)
        if chars <= PARSE_CACHE_CHARS // 16:  # one huge map is parsed each time rather than evict everything
            self._parsed[cache_key] = meta
            self._parsed_chars += chars
            while len(self._parsed) > PARSE_CACHE_ENTRIES or self._parsed_chars > PARSE_CACHE_CHARS:
                old, _ = self._parsed.popitem(last=False)
                self._parsed_chars -= sum(len(key) + len(value) for key, value in old)
        return meta

    def register(self, namespace: str, name: str, meta: ScalerMetadata) -> Subscription:
        """Record that KEDA asked about this trigger; resolve its source (allowlist) and check the quotas."""
        ident = (namespace, name, meta.metric_name())
        existing = self._subs.get(ident)
        if existing is not None and existing.meta == meta:
            self._seen[ident] = self._clock()
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
        self._check_namespace_source(namespace, source.name)
        key = meta.series_key(source.name)
        self._check_quotas(namespace, key, existing)
        sub = Subscription(namespace, name, ident[2], meta, key, source)
        if existing is not None:
            self._forget(existing)
        self._remember(sub)
        self._subs[ident] = sub
        self._seen[ident] = self._clock()
        self._on_change()
        return sub

    def _check_namespace_source(self, namespace: str, source: str) -> None:
        allowed = self._quotas.namespace_sources.get(namespace)
        if allowed is not None and source not in allowed:  # both normalized (a source's name is its URL's)
            raise SourceNotAllowed(
                f"namespace {namespace!r} may read only from {', '.join(sorted(allowed)) or 'no address'}, "
                f"not {source} (setting namespace_server_addresses)"
            )

    def _check_quotas(self, namespace: str, key: SeriesKey, existing: Subscription | None) -> None:
        quotas = self._quotas
        objects = quotas.scaledobjects_per_namespace
        if existing is None and objects and self._ns_objects[namespace] >= objects:
            raise TooManySeries(
                f"namespace {namespace!r} already has its maximum of {objects} "
                "ScaledObject triggers on this server (setting max_scaledobjects_per_namespace)"
            )
        ns_series = self._ns_series.get(namespace, Counter())
        if key in ns_series:
            return
        if quotas.series_per_namespace and len(ns_series) >= quotas.series_per_namespace:
            raise TooManySeries(
                f"namespace {namespace!r} already tracks its maximum of {quotas.series_per_namespace} series "
                f"(setting max_series_per_namespace); query {_excerpt(key.query)} was not added"
            )
        if key not in self._per_series and len(self._per_series) >= quotas.max_series:
            raise TooManySeries(
                f"this server already tracks its maximum of {quotas.max_series} series (setting max_series); "
                f"query {_excerpt(key.query)} from namespace {namespace!r} was not added"
            )

    def _remember(self, sub: Subscription) -> None:
        self._per_series[sub.key] += 1
        self._ns_objects[sub.namespace] += 1
        self._ns_series.setdefault(sub.namespace, Counter())[sub.key] += 1

    def _forget(self, sub: Subscription) -> None:
        for counter, item in ((self._per_series, sub.key), (self._ns_series[sub.namespace], sub.key)):
            counter[item] -= 1
            if counter[item] <= 0:
                del counter[item]
        self._ns_objects[sub.namespace] -= 1
        if self._ns_objects[sub.namespace] <= 0:
            del self._ns_objects[sub.namespace]
            del self._ns_series[sub.namespace]

    def get(self, namespace: str, name: str, metric_name: str) -> Subscription | None:
        return self._subs.get((namespace, name, metric_name))

    def all(self) -> list[Subscription]:
        return list(self._subs.values())

    def keys(self) -> set[SeriesKey]:
        return set(self._per_series)

    def expire(self) -> list[Subscription]:
        """Forget ScaledObjects KEDA has not asked about for ``ttl``."""
        cutoff = self._clock() - self._ttl
        gone = [ident for ident, seen in self._seen.items() if seen < cutoff]
        removed = [self._subs.pop(ident) for ident in gone if ident in self._subs]
        for ident in gone:
            del self._seen[ident]
        for sub in removed:
            self._forget(sub)
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


def _excerpt(text: str, limit: int = 100) -> str:
    """``text`` quoted, cut to ``limit`` characters (error messages must stay small)."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}… ({len(text)} characters)"
