"""Trainer pieces: appending fetched points, restarting after a long gap, freshness, retry back-off."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from helios_scaler.demand import SeriesDemand, Subscriptions
from helios_scaler.features.schema import DS, Y
from helios_scaler.source.registry import SourceResolver
from helios_scaler.store import ForecastStore, SeriesState
from helios_scaler.training import Trainer, _fetch_and_clean, _Work
from helios_scaler.trigger import SeriesKey

STEP = timedelta(minutes=1)
T0 = datetime(2026, 11, 2, tzinfo=UTC)


def grid(first: int, last: int) -> pl.DataFrame:
    """Points at T0 + i minutes for i in first..last, value i."""
    index = np.arange(first, last + 1)
    ds = [T0 + int(i) * STEP for i in index]
    return pl.DataFrame({DS: ds, Y: index.astype(float)}).with_columns(pl.col(DS).cast(pl.Datetime("us", "UTC")))


class StoredSource:
    """An in-memory source over a fixed frame; its clock is set by the test."""

    name = "http://fake:9090"

    def __init__(self, frame: pl.DataFrame, clock: datetime) -> None:
        self.frame = frame
        self.clock = clock

    def now(self) -> datetime:
        return self.clock

    def fetch(self, query: str, start: datetime, end: datetime, step: timedelta) -> pl.DataFrame:
        return self.frame.filter((pl.col(DS) >= start) & (pl.col(DS) <= end))


def demand(source: StoredSource) -> SeriesDemand:
    key = SeriesKey(source.name, "load", 60, "ets")
    return SeriesDemand(key, source, STEP, horizon=7, history=timedelta(hours=12), quantiles=(0.9,))  # type: ignore[arg-type]


def test_new_points_are_appended() -> None:
    source = StoredSource(grid(0, 110), T0 + 110 * STEP)
    frame, raw_rows, restarted = _fetch_and_clean(demand(source), grid(0, 100))
    assert not restarted
    assert frame[Y].to_list() == [float(i) for i in range(111)]
    assert raw_rows == 13  # re-reads from two steps before the newest point held


def test_a_gap_too_long_to_fill_restarts_the_history_after_it() -> None:
    """A 19-step outage (longer than the 10 steps filled): the history keeps only what follows it,
    as a full re-fetch would, so it stays on a regular grid."""
    source = StoredSource(pl.concat([grid(0, 100), grid(120, 140)]), T0 + 140 * STEP)
    frame, _, restarted = _fetch_and_clean(demand(source), grid(0, 100))
    assert restarted
    assert frame[Y].to_list() == [float(i) for i in range(120, 141)]


@pytest.fixture
def trainer() -> Iterator[Trainer]:
    subscriptions = Subscriptions(SourceResolver(None, {}), 10, timedelta(seconds=30))  # type: ignore[arg-type]
    clock = [0.0]
    made = Trainer(subscriptions, ForecastStore(), timedelta(seconds=30), timedelta(days=1), clock=lambda: clock[0])
    made.test_clock = clock  # type: ignore[attr-defined]
    yield made
    made._io.shutdown(wait=False)
    made._train.shutdown(wait=False)


def work_for(source: StoredSource) -> _Work:
    wanted = demand(source)
    return _Work(wanted, SeriesState(key=wanted.key, series_id="abc", step=STEP), pl.DataFrame())


async def test_a_source_repeating_old_points_goes_stale(trainer: Trainer) -> None:
    """A target that stopped: Prometheus keeps answering with the same old points. Freshness is
    when the newest point was first fetched, so the series goes stale instead of serving the old
    value forever."""
    source = StoredSource(grid(0, 100), T0 + 100 * STEP)
    work = work_for(source)
    loop = asyncio.get_running_loop()
    await trainer._fetch(work, loop)
    first = work.state.fetched_at
    assert first == source.clock
    source.clock += timedelta(minutes=10)  # nothing new arrives
    await trainer._fetch(work, loop)
    assert work.state.fetched_at == first
    assert not work.state.is_fresh(source.clock, timedelta(minutes=5))
    source.frame = grid(0, 111)  # the target is back
    await trainer._fetch(work, loop)
    assert work.state.fetched_at == source.clock
    assert work.state.is_fresh(source.clock, timedelta(minutes=5))


async def test_a_restart_after_a_gap_drops_the_fitted_model(trainer: Trainer) -> None:
    source = StoredSource(grid(0, 100), T0 + 100 * STEP)
    work = work_for(source)
    loop = asyncio.get_running_loop()
    await trainer._fetch(work, loop)
    work.fitted, work.fitted_for = object(), (7, "ets")  # type: ignore[assignment]
    source.frame, source.clock = pl.concat([grid(0, 100), grid(130, 140)]), T0 + 140 * STEP
    await trainer._fetch(work, loop)
    assert work.fitted is None and work.state.mean is None and work.state.forecast_origin is None
    assert work.frame.height == 11
    assert trainer._retrain_due(work)


def test_a_failed_first_fit_waits_for_its_back_off(trainer: Trainer) -> None:
    work = work_for(StoredSource(grid(0, 100), T0))
    assert trainer._retrain_due(work)  # never fitted: due at once
    work.next_retrain = 300.0  # what a failed fit sets
    assert not trainer._retrain_due(work)
    trainer.test_clock[0] = 300.0  # type: ignore[attr-defined]
    assert trainer._retrain_due(work)
