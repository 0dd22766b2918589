"""The trainer through its public face (tick, the store, injected executor and repository): appending
fetched points, restarting after a long gap, freshness, retry back-off, checkpoints."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import numpy as np
import polars as pl
import pytest

from helios_scaler.demand import SeriesDemand, Subscriptions
from helios_scaler.errors import ModelError, SourceError, SourceUnavailable
from helios_scaler.features.schema import DS, HOLE, Y
from helios_scaler.source.registry import SourceResolver
from helios_scaler.store import ForecastStore, SeriesState, TrainingEvents
from helios_scaler.training.checkpoint import Checkpoint
from helios_scaler.training.executor import InlineExecutor
from helios_scaler.training.loop import MAX_BACKOFF_SECONDS, Trainer, _PriorityGate, fetch_and_clean
from helios_scaler.trigger import ScalerMetadata, SeriesKey

STEP = timedelta(minutes=1)
T0 = datetime(2026, 11, 2, tzinfo=UTC)
REFRESH_SECONDS = 30.0
REFRESH = timedelta(seconds=REFRESH_SECONDS)
#: Past the next refresh of every series (refreshes are spread over a tenth of the interval).
NEXT_REFRESH = 1.1 * REFRESH_SECONDS + 1
T = TypeVar("T")


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

    def close(self) -> None:
        """Nothing to release."""

    def fetch(self, query: str, start: datetime, end: datetime, step: timedelta) -> pl.DataFrame:
        return self.frame.filter((pl.col(DS) >= start) & (pl.col(DS) <= end))


def demand(source: StoredSource) -> SeriesDemand:
    key = SeriesKey(source.name, "load", 60, "ets")
    return SeriesDemand(key, source, STEP, horizon=7, history=timedelta(hours=12), quantiles=(0.9,))  # type: ignore[arg-type]


def test_new_points_are_appended() -> None:
    source = StoredSource(grid(0, 110), T0 + 110 * STEP)
    frame, raw_rows = fetch_and_clean(demand(source), grid(0, 100))
    assert not frame[HOLE].any()
    assert frame[Y].to_list() == [float(i) for i in range(111)]
    assert raw_rows == 13  # re-reads from two steps before the newest point held


def test_a_gap_too_long_to_interpolate_keeps_the_history_as_a_hole() -> None:
    """A 19-step outage (longer than the 10 steps interpolated): the history before it is kept, the
    outage is a flagged hole on the same regular grid."""
    source = StoredSource(pl.concat([grid(0, 100), grid(120, 140)]), T0 + 140 * STEP)
    frame, _ = fetch_and_clean(demand(source), grid(0, 100))
    assert frame[DS].to_list() == [T0 + i * STEP for i in range(141)]
    assert frame.filter(pl.col(HOLE))[DS].to_list() == [T0 + i * STEP for i in range(101, 120)]
    observed = frame.filter(~pl.col(HOLE))[Y].to_list()
    assert observed == [float(i) for i in [*range(101), *range(120, 141)]]


def test_a_hole_between_the_history_and_the_answer_is_kept() -> None:
    """The source answers nothing for the start of the range (its data begins after the outage)."""
    source = StoredSource(grid(130, 140), T0 + 140 * STEP)
    frame, _ = fetch_and_clean(demand(source), grid(0, 100).with_columns(pl.lit(False).alias(HOLE)))
    assert frame[DS].to_list() == [T0 + i * STEP for i in range(141)]
    assert frame.filter(pl.col(HOLE))[DS].to_list() == [T0 + i * STEP for i in range(101, 130)]


class CountingExecutor(InlineExecutor):
    """Fits inline and counts the fits; ``fail`` makes every fit raise a model error."""

    def __init__(self) -> None:
        self.fits = 0
        self.fail = False

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        self.fits += 1
        if self.fail:
            future: Future[T] = Future()
            future.set_exception(ModelError("no candidate could be fitted"))
            return future
        return super().submit(fn, *args, **kwargs)


class RecordingEvents(TrainingEvents):
    def __init__(self) -> None:
        self.failures: list[Exception] = []

    def train_failed(self, key: SeriesKey, error: Exception) -> None:
        self.failures.append(error)


class MemoryRepository:
    """Keeps checkpoints in a dict (a repository for this test only)."""

    def __init__(self) -> None:
        self.saved: dict[SeriesKey, Checkpoint] = {}

    def load(self, key: SeriesKey) -> Checkpoint | None:
        return self.saved.get(key)

    def load_all(self) -> list[Checkpoint]:
        return list(self.saved.values())

    def save(self, checkpoint: Checkpoint) -> None:
        self.saved[checkpoint.key] = checkpoint

    def discard(self, key: SeriesKey) -> None:
        self.saved.pop(key, None)


META = ScalerMetadata.parse(
    {"query": "load", "threshold": "10", "model": "seasonal_naive", "leadTime": "5m", "historyTimeWindow": "12h"}
)


class Harness:
    """A trainer over a StoredSource, on a clock the test moves."""

    def __init__(self, source: StoredSource, repository: MemoryRepository | None = None) -> None:
        self.source = source
        self.clock = 0.0
        self.store = ForecastStore()
        self.executor = CountingExecutor()
        self.events = RecordingEvents()
        subscriptions = Subscriptions(SourceResolver(source, {}), 10, REFRESH)  # type: ignore[arg-type]
        subscriptions.register("ns", "web", META)
        self.key = META.series_key(source.name)
        self.trainer = Trainer(
            subscriptions,
            self.store,
            REFRESH,
            timedelta(days=1),
            executor=lambda: self.executor,
            repository=repository,
            events=self.events,
            clock=lambda: self.clock,
        )

    async def tick(self, seconds: float = 0.0) -> SeriesState:
        """Move the trainer's clock, run what is due, return the published state."""
        self.clock += seconds
        await self.trainer.tick()
        state = self.store.snapshot.get(self.key)
        assert state is not None
        return state


@pytest.fixture
def harness() -> Iterator[Harness]:
    made = Harness(StoredSource(grid(0, 100), T0 + 100 * STEP))
    yield made
    made.trainer.close()


async def test_a_source_repeating_old_points_goes_stale(harness: Harness) -> None:
    """A target that stopped: Prometheus keeps answering with the same old points. Freshness is
    judged by the newest sample's time, so the series goes stale instead of serving the old
    value forever."""
    source = harness.source
    state = await harness.tick()
    first = state.fetched_at
    assert first == source.clock
    source.clock += timedelta(minutes=10)  # nothing new arrives
    state = await harness.tick(NEXT_REFRESH)
    assert state.fetched_at == first
    assert not state.is_fresh(source.clock, timedelta(minutes=5))
    source.frame = grid(0, 111)  # the target is back
    state = await harness.tick(NEXT_REFRESH)
    assert state.fetched_at == source.clock
    assert state.is_fresh(source.clock, timedelta(minutes=5))


async def test_a_long_gap_keeps_the_fitted_model_serving(harness: Harness) -> None:
    """After an outage the fitted model carries on from the kept history: no warm-up, no refit."""
    source = harness.source
    state = await harness.tick()
    assert state.has_forecast and harness.executor.fits == 1
    source.frame, source.clock = pl.concat([grid(0, 100), grid(130, 140)]), T0 + 140 * STEP
    state = await harness.tick(NEXT_REFRESH)
    assert state.has_forecast and state.forecast_origin == T0 + 140 * STEP
    assert state.observed_at == T0 + 140 * STEP
    assert harness.executor.fits == 1


async def test_a_failed_first_fit_waits_for_its_back_off(harness: Harness) -> None:
    harness.executor.fail = True
    state = await harness.tick()  # never fitted: tried at once
    assert harness.executor.fits == 1
    assert [type(error) for error in harness.events.failures] == [ModelError]
    assert not state.has_forecast
    await harness.tick(NEXT_REFRESH)  # refreshed, but the fit waits for its back-off
    assert harness.executor.fits == 1
    harness.executor.fail = False
    state = await harness.tick(300.0)
    assert harness.executor.fits == 2
    assert state.has_forecast and state.error is None


async def test_a_fit_is_checkpointed_and_a_new_trainer_starts_from_it() -> None:
    """The repository seam: a trainer saves each fit; another one sharing the repository serves a
    forecast on its first refresh without fitting."""
    repository = MemoryRepository()
    first = Harness(StoredSource(grid(0, 100), T0 + 100 * STEP), repository)
    try:
        state = await first.tick()
        assert state.has_forecast and first.executor.fits == 1
        saved = repository.saved[first.key]
        assert saved.fitted.alias == state.model == "seasonal_naive"
        assert saved.history.height == 101
    finally:
        first.trainer.close()
    second = Harness(StoredSource(grid(0, 105), T0 + 105 * STEP), repository)
    try:
        state = await second.tick()
        assert second.executor.fits == 0
        assert state.has_forecast and state.model == "seasonal_naive"
        assert state.forecast_origin == T0 + 105 * STEP  # caught up with the new points
    finally:
        second.trainer.close()


class FailingSource(StoredSource):
    """A StoredSource whose fetches raise ``error`` while it is set (counting every fetch)."""

    def __init__(self, frame: pl.DataFrame, clock: datetime) -> None:
        super().__init__(frame, clock)
        self.error: Exception | None = None
        self.fetches = 0

    def fetch(self, query: str, start: datetime, end: datetime, step: timedelta) -> pl.DataFrame:
        self.fetches += 1
        if self.error is not None:
            raise self.error
        return super().fetch(query, start, end, step)


@pytest.fixture
def failing() -> Iterator[Harness]:
    made = Harness(FailingSource(grid(0, 100), T0 + 100 * STEP))
    yield made
    made.trainer.close()


async def test_an_unexpected_exception_is_a_typed_error_and_the_series_recovers(failing: Harness) -> None:
    """A source raising something no source should (a malformed answer tripping a TypeError): the series
    shows a typed SourceError (UNAVAILABLE on the RPC), the failure is counted, and it recovers by itself."""
    source = failing.source
    assert isinstance(source, FailingSource)
    source.error = TypeError("'int' object is not iterable")
    state = await failing.tick()
    assert isinstance(state.error, SourceError)
    assert "TypeError" in str(state.error) and "'load'" in str(state.error)
    source.error = None
    state = await failing.tick(MAX_BACKOFF_SECONDS + 1)
    assert state.error is None and state.observed_at == T0 + 100 * STEP


async def test_failing_fetches_back_off_and_reset_on_success(failing: Harness) -> None:
    """A failing query is not re-fetched every refresh forever: the wait doubles (with jitter, at most
    five minutes) and a success brings the normal interval back."""
    source = failing.source
    assert isinstance(source, FailingSource)
    source.error = SourceUnavailable("connection refused")
    await failing.tick()
    fetches = [source.fetches]
    for _ in range(40):  # 40 normal intervals: 20 minutes
        await failing.tick(REFRESH_SECONDS)
        fetches.append(source.fetches)
    assert fetches[-1] - fetches[0] <= 10  # without back-off: 40 fetches
    source.error = None
    await failing.tick(MAX_BACKOFF_SECONDS)
    recovered = source.fetches
    for _ in range(5):
        await failing.tick(NEXT_REFRESH)
    assert source.fetches - recovered == 5


async def test_samples_after_the_query_end_are_dropped(harness: Harness) -> None:
    """A sample stamped in the future (years ahead) must not make every later fetch fail with
    'start is after end': it is dropped, and the next fetch starts from the real newest point."""
    source = harness.source
    future = pl.DataFrame({DS: [datetime(3000, 1, 1, tzinfo=UTC)], Y: [5.0]}).with_columns(
        pl.col(DS).cast(pl.Datetime("us", "UTC"))
    )
    frame, _ = fetch_and_clean(demand(source), pl.DataFrame())
    unfiltered = StoredSource(pl.concat([source.frame, future]), source.clock)
    unfiltered.fetch = lambda query, start, end, step: unfiltered.frame  # type: ignore[method-assign]
    appended, _ = fetch_and_clean(demand(unfiltered), frame)
    assert appended[DS][-1] == T0 + 100 * STEP
    unfiltered.frame = pl.concat([grid(0, 101), future])
    unfiltered.clock += STEP
    again, _ = fetch_and_clean(demand(unfiltered), appended)
    assert again[DS][-1] == T0 + 101 * STEP


class GatedSource(StoredSource):
    """A StoredSource whose fetches block until ``gate`` is set (a Prometheus that stopped answering)."""

    def __init__(self, name: str, frame: pl.DataFrame, clock: datetime) -> None:
        super().__init__(frame, clock)
        self.name = name
        self.gate = threading.Event()
        self.in_flight = 0
        self.most_in_flight = 0
        self._lock = threading.Lock()

    def fetch(self, query: str, start: datetime, end: datetime, step: timedelta) -> pl.DataFrame:
        with self._lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            self.gate.wait(10)
            return super().fetch(query, start, end, step)
        finally:
            with self._lock:
                self.in_flight -= 1


async def test_a_stuck_source_cannot_starve_the_others() -> None:
    """Six series on a Prometheus that never answers and one on a healthy one: the stuck source holds at
    most max_fetches_per_source fetch threads, and the healthy series is fetched meanwhile."""
    stuck = GatedSource("http://stuck:9090", grid(0, 100), T0 + 100 * STEP)
    healthy = StoredSource(grid(0, 100), T0 + 100 * STEP)
    resolver = SourceResolver(healthy, {stuck.name: stuck})  # type: ignore[dict-item,arg-type]
    subscriptions = Subscriptions(resolver, 10, REFRESH)
    for i in range(6):
        meta = ScalerMetadata.parse({"query": f"stuck{i}", "threshold": "10", "serverAddress": stuck.name})
        subscriptions.register("ns", f"stuck{i}", meta)
    subscriptions.register("ns", "web", META)
    store = ForecastStore()
    trainer = Trainer(
        subscriptions, store, REFRESH, timedelta(days=1), executor=InlineExecutor, fetch_workers=4, fetches_per_source=2
    )
    stop = asyncio.Event()
    running = asyncio.create_task(trainer.run(stop, tick=0.05))
    try:
        key = META.series_key(healthy.name)
        for _ in range(100):
            await asyncio.sleep(0.05)
            state = store.snapshot.get(key)
            if state is not None and state.observed_at is not None:
                break
        assert state is not None and state.observed_at == T0 + 100 * STEP
        assert stuck.most_in_flight == 2
    finally:
        stuck.gate.set()
        stop.set()
        await asyncio.wait_for(running, 10)


class HeldExecutor(InlineExecutor):
    """Holds every fit until the test releases it (a training pool busy with other series)."""

    def __init__(self) -> None:
        self.held: list[tuple[Callable[[], Any], Future[Any]]] = []

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        self.held.append((lambda: fn(*args, **kwargs), future))
        return future

    def release_all(self) -> None:
        held, self.held = self.held, []
        for job, future in held:
            future.set_result(job())


async def test_a_series_waiting_for_its_first_fit_keeps_being_fetched() -> None:
    """Never stale because of a queue: while the first fit waits for a worker, refreshes go on fetching,
    so the series is fresh and served its observation (warming up), then its forecast once fitted."""
    source = StoredSource(grid(0, 100), T0 + 100 * STEP)
    store = ForecastStore()
    executor = HeldExecutor()
    subscriptions = Subscriptions(SourceResolver(source, {}), 10, REFRESH)  # type: ignore[arg-type]
    subscriptions.register("ns", "web", META)
    key = META.series_key(source.name)
    clock = [0.0]
    trainer = Trainer(
        subscriptions, store, REFRESH, timedelta(days=1), executor=lambda: executor, clock=lambda: clock[0]
    )
    try:
        await trainer._schedule()
        for minute in range(1, 11):  # ten minutes of refreshes while the fit is held
            await asyncio.sleep(0.1)
            source.frame, source.clock = grid(0, 100 + minute), T0 + (100 + minute) * STEP
            clock[0] += 60
            await trainer._schedule()
        await asyncio.sleep(0.1)
        state = store.snapshot.get(key)
        assert state is not None and state.observed_at >= T0 + 109 * STEP  # the last refresh may be in flight
        assert state.is_fresh(source.clock, timedelta(minutes=5)) and not state.has_forecast
        assert len(executor.held) == 1  # one fit queued, not one per refresh
        executor.release_all()
        await trainer.tick()
        state = store.snapshot.get(key)
        assert state is not None and state.has_forecast and state.forecast_origin >= T0 + 109 * STEP
    finally:
        trainer.close()


async def test_first_fits_go_before_retrains() -> None:
    """The training gate lets waiters in by priority: a series without a model (0) before a retrain (1),
    arrivals in order within a priority; a cancelled waiter gives its place up."""
    gate = _PriorityGate(1)
    order: list[str] = []

    async def fit(name: str, priority: int) -> None:
        await gate.acquire(priority)
        order.append(name)
        await asyncio.sleep(0)
        gate.release()

    await gate.acquire(1)  # a slot busy with some fit
    retrain_a = asyncio.create_task(fit("retrain a", 1))
    retrain_b = asyncio.create_task(fit("retrain b", 1))
    cancelled = asyncio.create_task(fit("cancelled", 0))
    await asyncio.sleep(0)
    first = asyncio.create_task(fit("first fit", 0))
    await asyncio.sleep(0)
    cancelled.cancel()
    gate.release()
    await asyncio.gather(retrain_a, retrain_b, first)
    assert order == ["first fit", "retrain a", "retrain b"]


async def test_a_failure_is_logged_once_per_change_of_state(failing: Harness, caplog: pytest.LogCaptureFixture) -> None:
    """The same failure every cycle (only its numbers change, e.g. the asked range) is logged once; a
    different failure, and the recovery, are logged again."""
    caplog.set_level(logging.INFO, logger="helios_scaler.training.loop")
    source = failing.source
    assert isinstance(source, FailingSource)
    for minute in range(4):
        source.error = SourceUnavailable(f"no answer for the range ending 12:{minute:02d}")
        await failing.tick(MAX_BACKOFF_SECONDS + 1)
    source.error = SourceUnavailable("HTTP 500 internal")
    await failing.tick(MAX_BACKOFF_SECONDS + 1)
    source.error = None
    await failing.tick(MAX_BACKOFF_SECONDS + 1)
    messages = [record.getMessage() for record in caplog.records if record.name == "helios_scaler.training.loop"]
    failed = [message for message in messages if "fetch failed" in message]
    assert len(failed) == 2 and "12:00" in failed[0] and "HTTP 500" in failed[1]
    assert any("recovered" in message for message in messages)
