"""Immutable forecast snapshots and the store that swaps them atomically.

The trainer is the only writer: it publishes new :class:`SeriesState` objects on the
event loop thread; the store builds a new :class:`ForecastSnapshot` and swaps it in with
one reference assignment.  Readers (gRPC handlers, the metrics collector) take the
current snapshot and never see a half-written one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType

from helios_scaler.errors import HeliosError
from helios_scaler.features.schema import FloatArray
from helios_scaler.trigger import SeriesKey


@dataclass(frozen=True)
class SeriesState:
    """Everything serving needs to know about one series, frozen at publish time."""

    key: SeriesKey
    #: Short stable id used as a metrics label.
    series_id: str
    step: timedelta
    #: Time and value of the newest observation (None before the first successful fetch).
    observed_at: datetime | None = None
    last_value: float | None = None
    #: When the newest observation was first fetched (reported; freshness is judged by ``observed_at``).
    fetched_at: datetime | None = None
    #: Forecast for the steps ``forecast_origin + k * step``, k = 1..len(mean); ``forecast_origin`` is
    #: the newest observation the forecast knew (it lags ``observed_at`` until the next refresh).
    forecast_origin: datetime | None = None
    mean: FloatArray | None = None
    #: Bands by quantile (None: ``quantile: auto``, the point forecast, with the event margin near known events).
    bands: Mapping[float | None, FloatArray] = field(default_factory=dict)
    model: str | None = None
    mase: float | None = None
    backtest_mae: float | None = None
    trained_at: datetime | None = None
    training_seconds: float | None = None
    #: The latest error fetching or modelling this series (None when the last attempt worked).
    error: HeliosError | None = None

    @property
    def has_forecast(self) -> bool:
        return self.mean is not None and self.forecast_origin is not None

    def is_fresh(self, now: datetime, stale_after: timedelta) -> bool:
        """The newest *sample* is at most ``stale_after`` old (plus one step: points come a step apart).

        Judged by the sample's own time, not by when it was fetched: a target that stopped
        before the series was registered, or data that lag a day, are stale however recently
        the source answered."""
        return self.observed_at is not None and now - self.observed_at <= stale_after + self.step


class TrainingEvents:
    """What the trainer reports besides the states it publishes (telemetry implements it; tests may
    record).  It lives beside the store so that readers of training outcomes need not import training."""

    def fetched(self, state: SeriesState, points: int, seconds: float) -> None: ...

    def fetch_failed(self, key: SeriesKey, source: str, error: HeliosError) -> None: ...

    def trained(self, state: SeriesState, seconds: float) -> None: ...

    def train_failed(self, key: SeriesKey, error: Exception) -> None: ...

    def checkpoint_failed(self, key: SeriesKey, error: Exception) -> None: ...

    def checkpoint_ignored(self, reason: str) -> None: ...


@dataclass(frozen=True)
class ForecastSnapshot:
    """The states of every tracked series at one moment."""

    series: Mapping[SeriesKey, SeriesState]
    version: int

    def get(self, key: SeriesKey) -> SeriesState | None:
        return self.series.get(key)


class ForecastStore:
    """Holds the current snapshot; publishing swaps in a new one and wakes waiters."""

    def __init__(self) -> None:
        self._snapshot = ForecastSnapshot(MappingProxyType({}), 0)
        # Set (and replaced) by every publish.  An Event, not a Condition: cancelling hundreds of
        # waiters on a Condition at shutdown left its lock held for good on Python 3.11 (the
        # process never exited); an Event's waiters hold nothing.
        self._changed: asyncio.Event | None = None

    @property
    def snapshot(self) -> ForecastSnapshot:
        return self._snapshot

    def _event(self) -> asyncio.Event:
        if self._changed is None:
            self._changed = asyncio.Event()
        return self._changed

    async def publish(
        self, states: Mapping[SeriesKey, SeriesState], removed: frozenset[SeriesKey] = frozenset()
    ) -> None:
        """Swap in a snapshot with ``states`` updated and ``removed`` dropped (event loop only)."""
        merged = {k: v for k, v in self._snapshot.series.items() if k not in removed}
        merged.update(states)
        self._snapshot = ForecastSnapshot(MappingProxyType(merged), self._snapshot.version + 1)
        changed, self._changed = self._changed, None
        if changed is not None:
            changed.set()

    async def wait_for_change(self, version: int, timeout: float) -> ForecastSnapshot:
        """Wait until the snapshot is newer than ``version`` (or ``timeout`` seconds pass)."""
        if self._snapshot.version <= version:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._event().wait()
        return self._snapshot
