"""Per-series model selection by rolling-origin backtest, and conformal quantiles.

Each candidate is fitted once on the history before a holdout stretch, then forecasts
``horizon`` steps from many origins inside the holdout with its cheap refresh, exactly
as it will serve between retrains.  The candidate with the lowest mean absolute error
wins; its backtest errors per horizon step give the forecast quantiles (split conformal
prediction), the same way for every model: as they are (additive bands), or divided by
the size of their forecasts (relative bands, for load whose noise grows with its level),
whichever a cross-fitted pinball loss on the same backtest prefers.  A candidate that
fails is skipped; if all fail the seasonal naive model is used (statsforecast's
``fallback_model`` idea).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np
import polars as pl

from helios_scaler.errors import ModelError
from helios_scaler.features.pipeline import season_length
from helios_scaler.features.schema import DS, HOLE, FloatArray, IntArray
from helios_scaler.models import registry
from helios_scaler.models.base import Forecaster, values
from helios_scaler.models.statistical import SeasonalNaive
from helios_scaler.trigger import AUTO

logger = logging.getLogger(__name__)

#: Fewest points any series needs before it is modelled (until then it is served as observed).
MIN_HISTORY_POINTS = 60
#: Scale floor of relative bands, as a share of the history's mean absolute level.
SCALE_FLOOR = 0.1
#: Quantiles whose pinball loss decides between additive and relative bands.
BAND_QUANTILES = (0.5, 0.75, 0.9)


def candidates(name: str, step: timedelta, horizon: int, history_points: int) -> list[Forecaster]:
    """The models ``name`` stands for (``auto``: every model the history is long enough for)."""
    if name != AUTO:
        return [registry.build(name, step, horizon)]
    # The backtest fits on the history before its first origin (holdout + horizon from the end):
    # keep the models that can be fitted on that.
    train_points = history_points - holdout_points(history_points, season_length(step)) - horizon
    every = [registry.build(each, step, horizon) for each in registry.FACTORIES]
    return [model for model in every if model.min_points <= train_points]


def holdout_points(history_points: int, season: int) -> int:
    """The backtest holdout: a quarter of the history, at most one season."""
    return max(1, min(season, history_points // 4))


@dataclass(frozen=True)
class Backtest:
    """Errors (truth - forecast) of one model, shape (origins, horizon)."""

    alias: str
    errors: FloatArray
    fit_seconds: float
    #: The forecasts the errors belong to, same shape.
    forecasts: FloatArray

    @property
    def mae(self) -> float:
        return float(np.mean(np.abs(self.errors)))


@dataclass(frozen=True)
class FittedSeries:
    """The chosen, fitted model of one series, with what is needed to serve quantiles."""

    model: Forecaster
    horizon: int
    #: Sorted backtest errors per horizon step (relative bands: divided by each forecast's scale),
    #: shape (origins, horizon).
    sorted_errors: FloatArray
    #: ``None``: additive bands (errors as they are); a number: relative bands, whose errors scale with
    #: the forecast, never with less than this (keeps bands open where forecasts are near 0).
    scale_floor: float | None
    #: Mean absolute error of the chosen model, and of seasonal naive, on the same backtest.
    mae: float
    naive_mae: float
    backtests: tuple[Backtest, ...] = field(default=())
    fallback_reason: str | None = None

    @property
    def alias(self) -> str:
        return self.model.alias

    @property
    def mase(self) -> float:
        """Backtest error relative to seasonal naive (< 1 beats the baseline)."""
        return self.mae / self.naive_mae if self.naive_mae > 0 else float("nan")

    def forecast_many(
        self, frame: pl.DataFrame, origins: IntArray, quantiles: Sequence[float]
    ) -> tuple[FloatArray, dict[float, FloatArray]]:
        """Point forecasts and quantiles from each origin, each of shape (origins, horizon)."""
        mean = self.model.forecast_many(frame, origins, self.horizon)
        scale = 1.0 if self.scale_floor is None else band_scale(mean, self.scale_floor)
        bands = {q: mean + np.quantile(self.sorted_errors, q, axis=0)[None, :] * scale for q in quantiles}
        return mean, bands

    @property
    def band(self) -> str:
        """How the quantile bands grow: ``additive`` (fixed widths) or ``relative`` (with the forecast)."""
        return "additive" if self.scale_floor is None else "relative"

    def forecast(self, frame: pl.DataFrame, quantiles: Sequence[float]) -> tuple[FloatArray, dict[float, FloatArray]]:
        """Point forecast and the requested quantiles for ``horizon`` steps after ``frame``."""
        mean, bands = self.forecast_many(frame, np.array([frame.height], dtype=np.int64), quantiles)
        return mean[0], {q: band[0] for q, band in bands.items()}


def band_scale(forecasts: FloatArray, floor: float) -> FloatArray:
    """What a forecast's error is measured against: its own size, at least ``floor``.

    Load grows noisier as it grows, so errors scaled by the forecast make quantile bands
    proportional to the level (narrow at night, wide at the peak) instead of one width
    learnt from the holdout's mix of both.
    """
    return np.maximum(np.abs(forecasts), floor)


def band_loss(errors: FloatArray, scale: FloatArray | float) -> float:
    """Cross-fitted pinball loss of bands built from ``errors / scale`` over :data:`BAND_QUANTILES`.

    The band offsets are learnt on every other origin and scored on the rest, both ways, so
    that the choice between additive and relative bands is judged on errors it did not see.
    """
    scaled = np.broadcast_to(scale, errors.shape)
    normalized = errors / scaled
    halves = (slice(0, None, 2), slice(1, None, 2))
    losses = []
    for calibrate, score in (halves, halves[::-1]):
        for q in BAND_QUANTILES:
            miss = errors[score] - np.quantile(normalized[calibrate], q, axis=0)[None, :] * scaled[score]
            losses.append(float(np.mean(np.maximum(q * miss, (q - 1) * miss))))
    return float(np.mean(losses))


def _backtest(model: Forecaster, frame: pl.DataFrame, horizon: int, origins: IntArray) -> Backtest:
    started = time.perf_counter()
    model.fit(frame.head(int(origins[0])))
    fit_seconds = time.perf_counter() - started
    y = values(frame)
    truth = y[origins[:, None] + np.arange(horizon)[None, :]]
    forecasts = model.forecast_many(frame, origins, horizon)
    errors = truth - forecasts
    if not np.all(np.isfinite(errors)):
        raise ModelError(f"{model.alias} produced non-finite forecasts")
    return Backtest(model.alias, errors, fit_seconds, forecasts)


def scored_origins(frame: pl.DataFrame, first: int, last: int, horizon: int, count: int) -> IntArray:
    """Up to ``count`` origins evenly spread over ``first..last`` whose forecast steps lie outside holes
    (a hole's filled values are no truth to score against); all of them if every one touches a hole."""
    candidates = np.arange(first, last + 1, dtype=np.int64)
    if HOLE in frame.columns:
        hole = frame[HOLE].to_numpy().astype(bool)
        touched = np.convolve(hole, np.ones(horizon, dtype=int))[horizon - 1 :][: len(hole)] > 0
        clear = candidates[~touched[candidates]]
        candidates = clear if len(clear) else candidates
    picks = np.linspace(0, len(candidates) - 1, min(count, len(candidates))).astype(np.int64)
    return np.unique(candidates[picks])


def select_and_fit(
    frame: pl.DataFrame,
    step: timedelta,
    horizon: int,
    model: str = AUTO,
    max_origins: int = 48,
) -> FittedSeries:
    """Backtest the candidates on ``frame``'s own history and return the best, fitted."""
    if frame.height < MIN_HISTORY_POINTS:
        raise ModelError(f"need at least {MIN_HISTORY_POINTS} points of history, have {frame.height}")
    if frame[DS].diff().drop_nulls().n_unique() > 1:
        raise ModelError("history must be on a regular grid (run features.align_to_grid first)")
    season = season_length(step)
    holdout = holdout_points(frame.height, season)
    last_origin = frame.height - horizon
    first_origin = max(frame.height - holdout - horizon, MIN_HISTORY_POINTS // 2)
    if last_origin <= first_origin:
        raise ModelError(f"history of {frame.height} points is too short for a {horizon}-step backtest")
    origins = scored_origins(frame, first_origin, last_origin, horizon, max_origins)

    naive = _backtest(SeasonalNaive(season), frame, horizon, origins)
    results: list[tuple[Backtest, Forecaster]] = []
    failures: list[str] = []
    for candidate in candidates(model, step, horizon, frame.height):
        if isinstance(candidate, SeasonalNaive):
            results.append((naive, candidate))
            continue
        try:
            results.append((_backtest(candidate, frame, horizon, origins), candidate))
        except Exception as exc:  # any failure of one model falls back; the batch goes on
            logger.warning("model %s failed its backtest, skipped: %s", candidate.alias, exc)
            failures.append(f"{candidate.alias}: {exc}")
    fallback_reason = None
    if not results:
        fallback_reason = "; ".join(failures) or f"no candidate for model {model!r} fits this history"
        results.append((naive, SeasonalNaive(season).fit(frame)))
    best, chosen = min(results, key=lambda pair: pair[0].mae)
    # Additive or relative bands: whichever the backtest's own errors calibrate better.
    floor = SCALE_FLOOR * float(np.mean(np.abs(values(frame)))) or 1.0
    relative = band_scale(best.forecasts, floor)
    if best.errors.shape[0] >= 4 and band_loss(best.errors, relative) < band_loss(best.errors, 1.0):
        sorted_errors, scale_floor = np.sort(best.errors / relative, axis=0), floor
    else:
        sorted_errors, scale_floor = np.sort(best.errors, axis=0), None
    return FittedSeries(
        model=chosen,
        horizon=horizon,
        sorted_errors=sorted_errors,
        scale_floor=scale_floor,
        mae=best.mae,
        naive_mae=naive.mae,
        backtests=tuple(result for result, _ in results),
        fallback_reason=fallback_reason,
    )
