"""Replay a history through the serving code path on a simulated clock.

At every step ``t`` the scaler knows the clean grid up to ``t`` and nothing after it.
It is retrained on the schedule the server uses (``retrain_interval``) with the same
:func:`~helios_scaler.models.selection.select_and_fit` on the same history window, its
forecasts are refreshed at every step with the fitted model (batched with
``forecast_many``, which equals one refresh per step), and the value served is
:func:`helios_scaler.policy.decide` applied to the same :class:`~helios_scaler.store.SeriesState`
the trainer would publish.  Retrains are independent given their data, so they run in
the executor the caller injects (:mod:`helios_scaler.training.executor`, as the server's).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta

import numpy as np
import polars as pl

from helios_scaler.demand import series_id
from helios_scaler.errors import ModelError
from helios_scaler.events.calendar import Event
from helios_scaler.features.pipeline import season_length
from helios_scaler.features.schema import DS, HOLE, FloatArray
from helios_scaler.models.base import values
from helios_scaler.models.selection import MIN_HISTORY_POINTS, FittedSeries, select_and_fit
from helios_scaler.policy import Reason, decide, forecast_horizon, lead_steps
from helios_scaler.store import SeriesState
from helios_scaler.training.executor import ExecutorFactory, inline
from helios_scaler.trigger import ScalerMetadata, Target

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReplayResult:
    """What helios served at each evaluated step, and its forecast accuracy."""

    start: int
    served: FloatArray
    reasons: list[str]
    models: list[str]
    #: Point forecast of the served window's last step (``leadTime`` plus one step ahead), seasonal
    #: naive's and persistence's (the last value) for the same step, with the truth.
    forecast_at_lead: FloatArray
    naive_at_lead: FloatArray
    truth_at_lead: FloatArray
    retrains: int
    failed_retrains: int
    persistence_at_lead: FloatArray | None = None

    @property
    def mae_vs_persistence(self) -> float:
        """MAE of the forecast at the window's end over persistence's (the last value), on the same steps."""
        if self.persistence_at_lead is None:
            return math.nan
        ok = np.isfinite(self.truth_at_lead) & np.isfinite(self.forecast_at_lead)
        last = float(np.mean(np.abs(self.truth_at_lead[ok] - self.persistence_at_lead[ok])))
        model = float(np.mean(np.abs(self.truth_at_lead[ok] - self.forecast_at_lead[ok])))
        return model / last if last > 0 else math.nan

    @property
    def mase(self) -> float:
        """MAE of the forecast ``leadTime`` ahead over seasonal naive's, on the same steps."""
        ok = np.isfinite(self.truth_at_lead) & np.isfinite(self.forecast_at_lead) & np.isfinite(self.naive_at_lead)
        naive = float(np.mean(np.abs(self.truth_at_lead[ok] - self.naive_at_lead[ok])))
        model = float(np.mean(np.abs(self.truth_at_lead[ok] - self.forecast_at_lead[ok])))
        return model / naive if naive > 0 else math.nan


def _fit(
    window: pl.DataFrame,
    step: timedelta,
    horizon: int,
    model: str,
    served_window: int,
    target: Target,
    events: Sequence[Event],
) -> FittedSeries | str:
    """One retrain; a failure is returned as its message (the previous model keeps serving)."""
    try:
        return select_and_fit(window, step, horizon, model, window=served_window, target=target, events=events)
    except (ModelError, ValueError, ArithmeticError) as exc:  # what the trainer survives, the replay survives
        return str(exc)


def replay(
    frame: pl.DataFrame,
    meta: ScalerMetadata,
    retrain_interval: timedelta,
    refresh_interval: timedelta,
    stale_after: timedelta,
    start: int,
    executor: ExecutorFactory = inline,
    progress: Callable[[Iterable[int]], Iterable[int]] = lambda it: it,
    events: Sequence[Event] = (),
) -> ReplayResult:
    """Serve every step from ``start`` on as the live server would have."""
    step = meta.query_step
    n = frame.height
    if not MIN_HISTORY_POINTS <= start < n:
        raise ValueError(f"start must lie in {MIN_HISTORY_POINTS}..{n - 1}, got {start}")
    horizon = forecast_horizon(meta.lead_time, step, refresh_interval)
    every = max(1, round(retrain_interval / step))
    history = meta.history_points
    lead = lead_steps(meta.lead_time, step)
    train_at = list(range(start, n, every))
    windows = [frame.slice(max(0, t + 1 - history), min(t + 1, history)) for t in train_at]

    pool = executor()
    try:
        # The server's workload, as it knows it: the trigger's threshold, and leadTime as the pod start-up.
        target = Target(threshold=meta.threshold, step=step, startup=meta.lead_time)
        futures = [pool.submit(_fit, w, step, horizon, meta.model, lead, target, events) for w in windows]
        results: Iterable[FittedSeries | str] = (f.result() for f in futures)
        return _serve(frame, meta, train_at, results, horizon, lead, stale_after, start, progress, events)
    finally:
        pool.shutdown(cancel_futures=True)


def _serve(
    frame: pl.DataFrame,
    meta: ScalerMetadata,
    train_at: list[int],
    results: Iterable[FittedSeries | str],
    horizon: int,
    lead: int,
    stale_after: timedelta,
    start: int,
    progress: Callable[[Iterable[int]], Iterable[int]],
    events: Sequence[Event],
) -> ReplayResult:
    n = frame.height
    y = values(frame)
    ds = frame[DS].to_list()
    season = season_length(meta.query_step)
    key = meta.series_key("backtest")
    base = SeriesState(key=key, series_id=series_id(key), step=meta.query_step)
    served = np.empty(n - start)
    forecast_at_lead = np.full(n - start, np.nan)
    reasons: list[str] = []
    models: list[str] = []
    fitted: FittedSeries | None = None
    failures = 0
    bounds = [*train_at, n]
    result_iter = iter(results)
    for segment in progress(range(len(train_at))):
        outcome = next(result_iter)
        if isinstance(outcome, str):
            failures += 1
            logger.warning(
                "retrain at step %d failed, the previous model keeps serving: %s", train_at[segment], outcome
            )
        else:
            fitted = outcome
        first, last = bounds[segment], bounds[segment + 1]
        steps = np.arange(first, last)
        if fitted is not None:
            mean, bands = fitted.forecast_many(frame, steps + 1, [meta.quantile], events)
        for row, t in enumerate(steps.tolist()):
            state = replace(base, observed_at=ds[t], last_value=float(y[t]), fetched_at=ds[t])
            if fitted is not None:
                state = replace(
                    state, forecast_origin=ds[t], mean=mean[row], bands={meta.quantile: bands[meta.quantile][row]}
                )
                forecast_at_lead[t - start] = mean[row][lead - 1]
            decision = decide(state, meta, ds[t], stale_after)
            served[t - start] = decision.value
            reasons.append(decision.reason.value)
            models.append(fitted.alias if fitted is not None else Reason.WARMING_UP.value)
    index = np.arange(start, n)
    target = index + lead
    inside = target < n
    truth = np.full(n - start, np.nan)
    truth[inside] = y[target[inside]]
    if HOLE in frame.columns:  # a hole's filled values are no truth: not scored
        hole = frame[HOLE].to_numpy().astype(bool)
        truth[inside & hole[np.minimum(target, n - 1)]] = np.nan
    naive = np.full(n - start, np.nan)
    # Seasonal naive for the step ``lead`` ahead, knowing only data through ``t``.
    source = target - season * math.ceil(lead / season)
    usable = inside & (source >= 0)
    naive[usable] = y[source[usable]]
    persistence = y[index].astype(np.float64)
    return ReplayResult(
        start, served, reasons, models, forecast_at_lead, naive, truth, len(train_at), failures, persistence
    )
