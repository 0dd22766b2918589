"""``helios-scaler backtest``: history in, what every strategy would have done out.

source (CSV or Prometheus) → the live feature pipeline → :func:`replay` through the
serving code path → the other strategies → the HPA simulation → figures and files.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import polars as pl

from helios_scaler.backtest import strategies
from helios_scaler.backtest.evaluate import StrategyResult, evaluate
from helios_scaler.backtest.hpa import HpaConfig
from helios_scaler.backtest.replay import ReplayResult, replay
from helios_scaler.durations import format_duration
from helios_scaler.errors import InputDataError
from helios_scaler.events.calendar import Event
from helios_scaler.features.pipeline import CleanReport, align_to_grid, season_length
from helios_scaler.features.schema import DS, HOLE
from helios_scaler.models.base import values
from helios_scaler.models.selection import MIN_HISTORY_POINTS, candidates, holdout_points
from helios_scaler.policy import forecast_horizon, lead_steps
from helios_scaler.source.base import Source
from helios_scaler.training.executor import for_workers
from helios_scaler.trigger import AUTO, ScalerMetadata

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BacktestConfig:
    meta: ScalerMetadata
    startup: timedelta
    retrain_interval: timedelta
    refresh_interval: timedelta
    stale_after: timedelta
    min_replicas: int = 1
    max_replicas: int = 10_000
    scale_down_window: timedelta = timedelta(seconds=300)
    #: Steps before evaluation starts (the history the scaler has when it starts); None: the history window.
    warmup: timedelta | None = None
    workers: int = 1
    #: Known events (from ``--calendar`` files): their uplift is learnt and applied as the server would.
    events: tuple[Event, ...] = ()


@dataclass(frozen=True)
class BacktestOutcome:
    config: BacktestConfig
    timestamps: list[datetime]
    demand: np.ndarray[Any, np.dtype[np.float64]]
    replay: ReplayResult
    results: dict[str, StrategyResult]
    clean: CleanReport
    seconds: float

    @property
    def hpa(self) -> HpaConfig:
        return hpa_config(self.config)


def hpa_config(config: BacktestConfig) -> HpaConfig:
    return HpaConfig(
        threshold=config.meta.threshold,
        step=config.meta.query_step,
        startup=config.startup,
        min_replicas=config.min_replicas,
        max_replicas=config.max_replicas,
        scale_down_window=config.scale_down_window,
    )


def load(
    source: Source, query: str, start: datetime, end: datetime, step: timedelta
) -> tuple[pl.DataFrame, CleanReport]:
    """Fetch the whole range once and clean it exactly as the live path does."""
    raw = source.fetch(query, start, end, step)
    return align_to_grid(raw, step)


def run_backtest(
    frame: pl.DataFrame,
    clean: CleanReport,
    config: BacktestConfig,
    progress: Callable[[Iterable[int]], Iterable[int]] = lambda it: it,
) -> BacktestOutcome:
    """Replay helios and the other strategies over ``frame`` (already on the grid)."""
    meta = config.meta
    step = meta.query_step
    season = season_length(step)
    warmup = config.warmup if config.warmup is not None else meta.history_time_window
    start = max(MIN_HISTORY_POINTS, math.ceil(warmup / step))
    evaluation = frame.height - start
    lead = lead_steps(meta.lead_time, step)
    minimum = max(2 * lead, season_length(step, timedelta(hours=6)))
    if evaluation < minimum:
        raise InputDataError(
            f"history too short: {frame.height} points at step {format_duration(step)} after cleaning; the first "
            f"{start} (warm-up of {format_duration(warmup)}) only train, and at least {minimum} more are needed to "
            "evaluate. "
            "Give more history or a shorter --history/--warmup."
        )
    if meta.model != AUTO:
        horizon = forecast_horizon(meta.lead_time, step, config.refresh_interval)
        model = candidates(meta.model, step, horizon, meta.history_points)[0]
        history = min(meta.history_points, start)
        train_points = history - holdout_points(history, season) - horizon
        if model.min_points > train_points:
            raise InputDataError(
                f"model {meta.model} needs at least {model.min_points} points to train (for mstl: two daily seasons "
                f"of {season} steps at {format_duration(step)}), but a history of {history} points leaves "
                f"{train_points} after the backtest holdout and horizon; "
                "give a longer --history/--warmup or use model auto"
            )
    started = time.perf_counter()
    result = replay(
        frame,
        meta,
        config.retrain_interval,
        config.refresh_interval,
        config.stale_after,
        start,
        for_workers(config.workers),
        progress,
        config.events,
    )
    y = values(frame)
    demand = y[start:]
    startup_steps = math.ceil(config.startup / step)
    # The timing rule, the same for every strategy but the oracle: a value computed after seeing the
    # observation of step t acts from step t + 1 (KEDA asks after the step has ended).
    served = {
        "helios": strategies.acts_next_step(result.served),
        "reactive": strategies.acts_next_step(strategies.reactive(demand)),
        "holt_winters": strategies.acts_next_step(strategies.holt_winters(y, meta.threshold, season)[start:]),
        "periodic_max": strategies.acts_next_step(
            strategies.periodic_max(y, season, window_steps=lead, refit_steps=max(1, round(timedelta(hours=1) / step)))[
                start:
            ]
        ),
        "oracle": strategies.oracle(demand, startup_steps),
    }
    scored = ~frame[HOLE].to_numpy()[start:].astype(bool) if HOLE in frame.columns else None
    results = evaluate(served, demand, hpa_config(config), scored)
    seconds = time.perf_counter() - started
    timestamps = frame[DS].to_list()[start:]
    return BacktestOutcome(config, timestamps, demand, result, results, clean, seconds)
