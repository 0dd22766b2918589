"""The background loop: fetch new points, refresh forecasts, retrain on a schedule.

This is the only module that spans source, features, models and store.  Blocking work
(range queries, polars) runs in a thread pool and model fitting in the injected executor
(see :mod:`.executor`: a process pool in the server); fitted models are offered to the
injected model repository (see :mod:`.checkpoint`).  Each series has at most one refresh and
one fit in flight (the fit runs beside the refreshes, so a series waiting for a worker keeps
being fetched); its results are published to the store as one new immutable
:class:`~helios_scaler.store.SeriesState`.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import itertools
import logging
import random
import re
import time
from collections.abc import Callable, Coroutine
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl

from helios_scaler.demand import SeriesDemand, Subscriptions, series_id
from helios_scaler.errors import HeliosError, ModelError, NoData, SourceError
from helios_scaler.features.pipeline import align_to_grid, append_new
from helios_scaler.features.schema import DS, Y
from helios_scaler.models.selection import MIN_HISTORY_POINTS, FittedSeries, select_and_fit
from helios_scaler.store import ForecastStore, SeriesState, TrainingEvents
from helios_scaler.training.checkpoint import Checkpoint, ModelRepository, NoRepository, Owner
from helios_scaler.training.executor import ExecutorFactory, io_pool
from helios_scaler.trigger import SeriesKey

logger = logging.getLogger(__name__)

#: How long staged states wait so that a burst of refreshes becomes one snapshot swap.
PUBLISH_COALESCE_SECONDS = 0.05
#: How often the calendar files are looked at for changes (a ConfigMap update takes about a minute anyway).
CALENDAR_RECHECK_SECONDS = 30.0
#: Longest wait between fetches of a series whose fetches keep failing (exponential back-off, with jitter).
MAX_BACKOFF_SECONDS = 300.0
#: Between fits, how often a fitted series is checkpointed again (so a restart misses few points).
CHECKPOINT_SECONDS = 300.0


@dataclass
class _Work:
    """Trainer-private, mutable state of one series (never shared with readers)."""

    demand: SeriesDemand
    state: SeriesState
    frame: pl.DataFrame
    fitted: FittedSeries | None = None
    fitted_for: tuple[int, str] | None = None
    next_refresh: float = 0.0
    next_retrain: float = 0.0
    busy: bool = False
    #: A fit of this series is queued or running (it runs beside the refreshes, which keep fetching).
    fitting: bool = False
    #: When the series is next checkpointed between fits.
    next_save: float = 0.0
    #: Fetches failed in a row (the back-off grows with it; reset by a success).
    failures: int = 0
    #: The kind of the last error logged for this series (an error is logged once per change of state, not
    #: every cycle).
    logged_error: str | None = None


def fetch_and_clean(demand: SeriesDemand, history: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """Fetch new points and append them, cleaned, to ``history`` (blocking: runs in a pool).

    Returns the new history and the raw sample count.  A stretch with no data — inside the
    answer or between the history and the answer — is kept as a hole (see
    :func:`~helios_scaler.features.pipeline.fill_gaps`): the history is never thrown away.
    """
    source = demand.source
    end = floor_time(source.now(), demand.step)
    if history.is_empty():
        start = end - demand.history
    else:
        # Re-read a couple of steps: the newest points may have been incomplete.  Never past ``end``
        # (a history reaching into the future: a clock moved back), never before the history window
        # (a checkpoint from long ago: what lies between is a hole).
        start = min(history[DS][-1] - 2 * demand.step, end - demand.step)
        start = max(start, end - demand.history)
    raw = source.fetch(demand.key.query, start, end, demand.step)
    # A sample stamped after ``end`` (a bad clock, a hostile answer) would stop every later fetch.
    raw = raw.filter(pl.col(DS) <= end)
    clean, report = align_to_grid(raw, demand.step)
    if clean.is_empty():
        raise NoData(
            f"query {demand.key.query!r} returned {report.raw_rows} samples, none finite "
            f"({report.dropped_non_finite} NaN/Inf dropped)"
        )
    if report.dropped_non_finite or report.filled or report.hole_steps:
        logger.info("query %r cleaned: %s", demand.key.query, report)
    if not history.is_empty() and clean[DS][0] > history[DS][-1] + demand.step:
        logger.warning(
            "query %r: no data from %s to %s; kept as a hole in the history (filled from the day before, not scored)",
            demand.key.query,
            history[DS][-1].isoformat(),
            clean[DS][0].isoformat(),
        )
    return append_new(history, clean, int(demand.history / demand.step), demand.step), raw.height


class _PriorityGate:
    """At most ``slots`` holders at once; waiters are let in by priority (lower first), then arrival.

    Fits wait here rather than in the process pool's FIFO queue, so a series KEDA asks about and that has
    no model yet goes before re-training one that already serves forecasts."""

    def __init__(self, slots: int) -> None:
        self._free = max(1, slots)
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._arrivals = itertools.count()

    async def acquire(self, priority: int) -> None:
        if self._free > 0 and not self._waiting:
            self._free -= 1
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (priority, next(self._arrivals), turn))
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():  # the slot was handed over just as we were cancelled
                self.release()
            else:
                self._waiting = [entry for entry in self._waiting if entry[2] is not turn]
                heapq.heapify(self._waiting)
            raise

    def release(self) -> None:
        while self._waiting:
            _, _, turn = heapq.heappop(self._waiting)
            if not turn.done():
                turn.set_result(None)  # the slot passes straight to the waiter
                return
        self._free += 1


def floor_time(moment: datetime, step: timedelta) -> datetime:
    """``moment`` rounded down to a multiple of ``step`` since the epoch."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return epoch + ((moment - epoch) // step) * step


class Trainer:
    """Keeps every demanded series fetched, forecast and periodically retrained."""

    def __init__(
        self,
        subscriptions: Subscriptions,
        store: ForecastStore,
        refresh_interval: timedelta,
        retrain_interval: timedelta,
        executor: ExecutorFactory,
        repository: ModelRepository | None = None,
        events: TrainingEvents | None = None,
        clock: Callable[[], float] = time.monotonic,
        fetch_workers: int = 8,
        fetches_per_source: int = 2,
        fit_slots: int = 1,
    ) -> None:
        self._subs = subscriptions
        self._store = store
        self._refresh = refresh_interval.total_seconds()
        self._retrain = retrain_interval.total_seconds()
        self._events = events or TrainingEvents()
        self._clock = clock
        self._io = io_pool(fetch_workers, "helios-fetch")  # daemon threads: a stuck fetch never holds up exit
        # Per source, at most this many range queries in flight: a slow or failing Prometheus holds a few
        # fetch threads (each for at most its query timeout), never all of them.
        self._fetches_per_source = max(1, fetches_per_source)
        self._source_slots: dict[str, asyncio.Semaphore] = {}
        # Fits in the executor at once (its worker count): the rest wait by priority (see _PriorityGate).
        self._fit_gate = _PriorityGate(fit_slots)
        self._executor = executor
        self._train = executor()
        self._repository = repository or NoRepository()
        self._work: dict[SeriesKey, _Work] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._pending: dict[SeriesKey, SeriesState] = {}
        self._flush: asyncio.Task[None] | None = None
        self._jitter = random.Random(0)
        self._calendars_due = clock() + CALENDAR_RECHECK_SECONDS
        subscriptions.on_change(self.wake)

    def wake(self) -> None:
        """Look at the demand now (a new ScaledObject should not wait for the next tick)."""
        self._wake.set()

    async def run(self, stop: asyncio.Event, tick: float = 1.0) -> None:
        """Schedule due work until ``stop`` is set, then wait for jobs in flight."""
        try:
            while not stop.is_set():
                try:
                    await self._schedule()
                except Exception:  # never let one bad tick end the trainer (every series would go stale)
                    logger.exception("trainer tick failed; trying again at the next tick")
                self._wake.clear()
                waiters = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
                await asyncio.wait(waiters, timeout=tick, return_when=asyncio.FIRST_COMPLETED)
                for waiter in waiters:
                    waiter.cancel()
        finally:
            for task in [*self._tasks, *([self._flush] if self._flush else [])]:
                task.cancel()
            await asyncio.gather(*self._tasks, *([self._flush] if self._flush else []), return_exceptions=True)
            self.close()

    async def tick(self) -> None:
        """Start the work that is due now and wait until it is done and published."""
        await self._schedule()
        while self._tasks:
            await asyncio.gather(*self._tasks)
        if self._flush is not None:
            await self._flush

    def close(self) -> None:
        """Stop the fetch and training pools (jobs in flight are abandoned)."""
        self._io.shutdown(wait=False, cancel_futures=True)
        self._train.shutdown(wait=False, cancel_futures=True)

    async def _schedule(self) -> None:
        now = self._clock()
        if now >= self._calendars_due:  # file I/O: in the fetch pool, never on the event loop
            self._calendars_due = now + CALENDAR_RECHECK_SECONDS
            await asyncio.get_running_loop().run_in_executor(self._io, self._subs.calendars.refresh)
        self._subs.expire()
        demand = self._subs.demand()
        removed = frozenset(key for key in self._work if key not in demand)
        for key in removed:
            del self._work[key]
            self._repository.discard(key)
        if removed:
            await self._store.publish({}, removed)
        now = self._clock()
        for key, wanted in demand.items():
            work = self._work.get(key)
            if work is None:
                work = self._work[key] = self._start(key, wanted)
            work.demand = wanted
            if not work.busy and now >= work.next_refresh:
                work.busy = True
                self._spawn(self._cycle(work))

    def _start(self, key: SeriesKey, wanted: SeriesDemand) -> _Work:
        """A newly demanded series: from its checkpoint when the repository has one, else from nothing."""
        state = SeriesState(key=key, series_id=series_id(key), step=wanted.step)
        checkpoint = self._repository.load(key)
        if checkpoint is None:
            return _Work(wanted, state, pl.DataFrame())
        fitted = checkpoint.fitted
        state = replace(
            state, model=fitted.alias, mase=fitted.mase, backtest_mae=fitted.mae, trained_at=checkpoint.trained_at
        )
        work = _Work(wanted, state, checkpoint.history, fitted=fitted, fitted_for=(fitted.horizon, key.model))
        work.next_retrain = self._clock() + self._retrain
        work.next_save = self._clock() + CHECKPOINT_SECONDS
        logger.info(
            "query %r restored from its checkpoint: model %s trained %s, %d points of history",
            key.query,
            fitted.alias,
            checkpoint.trained_at.isoformat(),
            checkpoint.history.height,
        )
        return work

    async def _save(self, work: _Work, trained_at: datetime | None = None) -> None:
        """Checkpoint the series (off the event loop); a failure is logged and counted, never fatal."""
        if work.fitted is None or work.state.trained_at is None:
            return
        key = work.demand.key
        owners = tuple(Owner(sub.namespace, sub.name, sub.meta) for sub in self._subs.all() if sub.key == key)
        checkpoint = Checkpoint(key, work.fitted, work.frame, trained_at or work.state.trained_at, owners)
        work.next_save = self._clock() + CHECKPOINT_SECONDS
        try:
            await asyncio.get_running_loop().run_in_executor(self._io, self._repository.save, checkpoint)
        except Exception as exc:  # a full or read-only disk must not stop serving
            self._events.checkpoint_failed(key, exc)
            logger.warning("checkpoint of query %r failed: %s", key.query, exc)

    async def _cycle(self, work: _Work) -> None:
        """One refresh of one series: fetch, maybe retrain, forecast, publish."""
        loop = asyncio.get_running_loop()
        try:
            try:
                await self._fetch(work, loop)
            except Exception as exc:  # typed, counted and shown on the RPC; the next cycle tries again
                error = exc if isinstance(exc, HeliosError) else _unexpected(work, exc)
                work.failures += 1
                self._events.fetch_failed(work.demand.key, work.demand.source.name, error)
                self._log_error(work, "fetch failed", error)
                work.state = replace(work.state, error=error)
                self._stage(work)
                return
            work.failures = 0
            self._log_error(work, "fetch", None)
            self._stage(work)
            if work.frame.height < MIN_HISTORY_POINTS:
                logger.info(
                    "query %r is warming up: %d of %d points needed before modelling",
                    work.demand.key.query,
                    work.frame.height,
                    MIN_HISTORY_POINTS,
                )
                return
            if not work.fitting and self._retrain_due(work):
                # The fit runs beside the refreshes: while it waits for a worker the series keeps being
                # fetched and served (its observation while warming up, the previous model's forecast after).
                work.fitting = True
                self._spawn(self._fit_then_forecast(work))
            await self._forecast(work, loop)
            if not work.fitting and self._clock() >= work.next_save:
                await self._save(work)
        except Exception as exc:  # a defect, not a data problem: shown on the RPC, logged, never lost in a task
            error = ModelError(f"refresh failed: {type(exc).__name__}: {exc}")
            self._log_error(work, "refresh failed", error)
            work.state = replace(work.state, error=error)
            self._stage(work)
        finally:
            work.next_refresh = self._clock() + self._next_wait(work.failures)
            work.busy = False

    def _spawn(self, job: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(job)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _forecast(self, work: _Work, loop: asyncio.AbstractEventLoop) -> None:
        """Forecast from the newest history with the fitted model (if any) and stage the result."""
        if work.fitted is None:
            return
        fitted, frame, wanted = work.fitted, work.frame, work.demand
        origin = frame[DS][-1]
        try:
            mean, bands = await loop.run_in_executor(self._io, fitted.forecast, frame, wanted.quantiles, wanted.events)
        except (HeliosError, ValueError, ArithmeticError) as exc:  # the last forecast ages, the error shows
            work.state = replace(work.state, error=ModelError(f"forecast failed: {exc}"))
            self._log_error(work, "forecast failed", work.state.error)
            self._stage(work)
            return
        newest = work.state.forecast_origin
        if newest is not None and origin < newest and work.fitted is fitted:
            return  # a refresh running alongside already forecast from newer points with this model
        work.state = replace(work.state, forecast_origin=origin, mean=mean, bands=bands)
        self._stage(work)

    async def _fit_then_forecast(self, work: _Work) -> None:
        """Wait for a training slot (first fits first), fit, then forecast with the new model at once."""
        loop = asyncio.get_running_loop()
        try:
            await self._fit_gate.acquire(0 if work.fitted is None else 1)
            try:
                if self._work.get(work.demand.key) is not work:
                    return  # nobody asks for the series any more
                await self._fit(work, loop)
            finally:
                self._fit_gate.release()
            self._stage(work)
            await self._forecast(work, loop)
        except Exception as exc:  # as in _cycle: a defect is shown on the RPC and logged, never lost in a task
            error = ModelError(f"training failed: {type(exc).__name__}: {exc}")
            self._log_error(work, "training failed", error)
            work.state = replace(work.state, error=error)
            self._stage(work)
        finally:
            work.fitting = False

    def _next_wait(self, failures: int) -> float:
        """Seconds until the next refresh: the interval plus up to 10 % (so 1,000 series don't all refresh
        in one tick); after failures, an exponential back-off with full jitter, at most 5 minutes."""
        if failures == 0:
            return self._refresh + self._jitter.uniform(0, 0.1 * self._refresh)
        backoff = min(self._refresh * 2.0 ** (failures - 1), max(MAX_BACKOFF_SECONDS, self._refresh))
        return self._jitter.uniform(self._refresh, max(self._refresh, backoff))

    def _log_error(self, work: _Work, what: str, error: Exception | None) -> None:
        """Log an error once per change of state (and the recovery), not on every cycle."""
        text = None if error is None else str(error)
        # The same failure with other numbers in it (the asked range moves every step) is no change of state.
        kind = None if text is None else f"{type(error).__name__}: {re.sub(r'[0-9]+', '#', text)}"
        if kind == work.logged_error:
            return
        if text is None:
            logger.info("query %r recovered", work.demand.key.query)
        else:
            logger.warning("%s for query %r: %s", what, work.demand.key.query, text)
        work.logged_error = kind

    def _stage(self, work: _Work) -> None:
        """Queue a series' new state; a burst of refreshes is published as one snapshot swap."""
        self._pending[work.demand.key] = work.state
        if self._flush is None or self._flush.done():
            self._flush = asyncio.create_task(self._publish_pending())

    async def _publish_pending(self) -> None:
        # Loop: states staged while ``publish`` waits for the store are published by this task too.
        while self._pending:
            await asyncio.sleep(PUBLISH_COALESCE_SECONDS)
            pending, self._pending = self._pending, {}
            await self._store.publish({key: state for key, state in pending.items() if key in self._work})

    def _retrain_due(self, work: _Work) -> bool:
        if work.fitted is None:  # the first fit, or retrying one that failed (after its back-off)
            return self._clock() >= work.next_retrain
        wanted = (work.demand.horizon, work.demand.key.model)
        return work.fitted_for != wanted or self._clock() >= work.next_retrain

    async def _fetch(self, work: _Work, loop: asyncio.AbstractEventLoop) -> None:
        started = time.perf_counter()
        source = work.demand.source.name
        slots = self._source_slots.get(source)
        if slots is None:
            slots = self._source_slots[source] = asyncio.Semaphore(self._fetches_per_source)
        async with slots:
            frame, raw_rows = await loop.run_in_executor(self._io, fetch_and_clean, work.demand, work.frame)
        work.frame = frame
        newest = frame[DS][-1]
        advanced = work.state.observed_at is None or newest > work.state.observed_at
        work.state = replace(
            work.state,
            observed_at=newest,
            last_value=float(frame[Y][-1]),
            fetched_at=work.demand.source.now() if advanced else work.state.fetched_at,
            error=None,
        )
        self._events.fetched(work.state, raw_rows, time.perf_counter() - started)

    async def _fit(self, work: _Work, loop: asyncio.AbstractEventLoop) -> None:
        demand = work.demand
        started = time.perf_counter()
        try:
            fitted = await loop.run_in_executor(
                self._train,
                functools.partial(
                    select_and_fit,
                    work.frame,
                    demand.step,
                    demand.horizon,
                    demand.key.model,
                    window=demand.window,
                    target=demand.target,
                    events=demand.events,
                ),
            )
        except (HeliosError, ValueError, ArithmeticError, BrokenProcessPool) as exc:
            if isinstance(exc, BrokenProcessPool):  # a worker died (e.g. killed for memory): start afresh
                self._train.shutdown(wait=False, cancel_futures=True)
                self._train = self._executor()
            self._events.train_failed(demand.key, exc)
            logger.warning("training failed for query %r: %s", demand.key.query, exc)
            work.state = replace(work.state, error=ModelError(f"training failed: {exc}"))
            work.next_retrain = self._clock() + min(self._retrain, 300.0)
            return
        seconds = time.perf_counter() - started
        trained_at = datetime.now(UTC)
        work.fitted = fitted
        work.fitted_for = (demand.horizon, demand.key.model)
        work.next_retrain = self._clock() + self._retrain
        work.state = replace(
            work.state,
            model=fitted.alias,
            mase=fitted.mase,
            backtest_mae=fitted.mae,
            trained_at=trained_at,
            training_seconds=seconds,
        )
        self._events.trained(work.state, seconds)
        await self._save(work, trained_at)
        # Why this model, and the headroom that met the service level on the backtest (reported, not served).
        scores = ", ".join(f"{alias} {cost:.4f}" for alias, cost in fitted.scores)
        margin = f"{fitted.margin:.3f} at cost {fitted.cost:.4f}" if fitted.margin and fitted.cost else ""
        logger.info(
            "trained query %r: chose %s with %s bands (backtest MAE %.4g, MASE %.3f) in %.2fs%s%s%s",
            demand.key.query,
            fitted.alias,
            fitted.band,
            fitted.mae,
            fitted.mase,
            seconds,
            f"; cost at SLO by candidate: {scores}" if scores else "",
            f"; margin meeting the SLO {margin}" if margin else "",
            f"; fallback: {fitted.fallback_reason}" if fitted.fallback_reason else "",
        )


def _unexpected(work: _Work, exc: Exception) -> SourceError:
    """An exception no source should raise, as the typed error the RPC shows (the traceback is logged once)."""
    logger.debug("unexpected fetch failure for query %r", work.demand.key.query, exc_info=exc)
    detail = str(exc)
    detail = detail if len(detail) <= 300 else detail[:300] + "…"
    return SourceError(
        f"reading query {work.demand.key.query[:200]!r} failed unexpectedly: {type(exc).__name__}: {detail}"
    )
