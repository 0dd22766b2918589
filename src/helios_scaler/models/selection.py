"""Per-series model selection by backtest, and what to serve above the forecast.

Two paths, one result (:class:`FittedSeries`):

- ``model: auto`` backtests the short-horizon candidates (persistence, trends, lines,
  level-adjusted daily and weekly seasonal naive: :mod:`.shortterm`) from *every* origin of
  the last week of history, with the known events' uplift applied (:mod:`helios_scaler.events.uplift`),
  and keeps the one whose served values — the window maximum KEDA would have been given —
  meet the service level with the fewest pod-minutes through the HPA
  (:func:`helios_scaler.models.cost.cost_at_slo`).  Cost is the error that matters: at a
  few minutes ahead the last value is hard to beat on mean error, yet a trend that sees a
  surge coming saves pods.
- a named model (``seasonal_naive``, ``ets``, ``mstl``, ``lightgbm``) is fitted once on the
  history before a holdout stretch and forecasts from up to 48 origins in it with its cheap
  refresh, exactly as it will serve between retrains.

Either way the backtest's errors per horizon step give the quantile bands (split conformal
prediction): as they are (additive bands) or divided by the size of their forecasts
(relative bands), whichever a cross-fitted pinball loss on the same backtest prefers.
``quantile: auto`` serves the point forecast itself — times an *event margin* on origins near
a known event (how far the window's truth exceeded the forecast on past event origins) — and
leaves the steady headroom to the ScaledObject's threshold: a band re-calibrated at every
retrain moves from day to day for no reason tied to risk, and measured on WorldCup98 it cost
more than a steady headroom.  The margin that met the service level on the backtest is still
measured and reported (:attr:`FittedSeries.margin`).  A candidate that fails is skipped; if all
fail the seasonal naive model is used (statsforecast's ``fallback_model`` idea).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta

import numpy as np
import polars as pl

from helios_scaler.errors import ModelError
from helios_scaler.events.calendar import Event
from helios_scaler.events.uplift import UpliftCurves, factors_as_learnt, learn_uplift
from helios_scaler.features.pipeline import season_length
from helios_scaler.features.schema import DS, HOLE, BoolArray, FloatArray, IntArray
from helios_scaler.models import registry
from helios_scaler.models.base import Forecaster, values
from helios_scaler.models.cost import cost_at_slo
from helios_scaler.models.shortterm import short_term_candidates
from helios_scaler.models.statistical import SeasonalNaive
from helios_scaler.trigger import AUTO, Target

logger = logging.getLogger(__name__)

#: Fewest points any series needs before it is modelled (until then it is served as observed).
MIN_HISTORY_POINTS = 60
#: Scale floor of relative bands, as a share of the history's mean absolute level.
SCALE_FLOOR = 0.1
#: Quantiles whose pinball loss decides between additive and relative bands.
BAND_QUANTILES = (0.5, 0.75, 0.9)
#: How far back ``auto`` scores its candidates: every origin of the last week.
SCORING_SPAN = timedelta(days=7)
#: Past origins inside known-event windows needed before an event margin is learnt, and its quantile.
EVENT_MARGIN_MIN_ORIGINS = 50
EVENT_MARGIN_QUANTILE = 0.8
#: Most backtest origins whose errors ``auto`` keeps for its bands (spread evenly over the week).
BAND_ORIGINS = 2000


def _spread(n: int, count: int) -> IntArray:
    """Up to ``count`` indices spread evenly over ``0..n - 1`` (ends included)."""
    return np.linspace(0, max(0, n - 1), min(n, count)).astype(np.int64)


def _window_max(point: FloatArray, window: int) -> FloatArray:
    """What is served from each origin: the largest point forecast of the window, never below 0."""
    return np.asarray(np.maximum(point[:, :window].max(axis=1), 0.0), dtype=np.float64)


def candidates(name: str, step: timedelta, horizon: int, history_points: int) -> list[Forecaster]:
    """The models ``name`` stands for (``auto``: the short-horizon candidates the history is long enough for)."""
    if name != AUTO:
        return [registry.build(name, step, horizon)]
    every = short_term_candidates(season_length(step), history_points, horizon)
    return [model for model in every if model.min_points <= history_points]


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
    #: ``sqrt`` for bands that grow with the square root of the forecast (else derived from ``scale_floor``).
    band_kind: str = ""
    #: The multiplier of the point forecast that met the service level at least cost on the backtest (None:
    #: no workload to measure cost for).  Reported, not served: re-measured at every retrain it swings from
    #: day to day, and serving it cost more than a steady headroom (benchmarks/results/backtest.md).
    margin: float | None = None
    #: Pod-minutes over ideal at that margin on the backtest (None when not measured).
    cost: float | None = None
    #: Known events: uplift per kind learnt from finished events, and the extra margin (``quantile: auto``)
    #: on origins near an event.
    uplift: UpliftCurves | None = None
    event_margin: float = 0.0
    #: Mean absolute error of persistence (the last value) on the same backtest, at the served window's end.
    persistence_mae: float | None = None
    #: The chosen model's mean absolute error at the served window's end (compare with ``persistence_mae``).
    lead_mae: float | None = None
    #: ``auto``: every candidate's score on the backtest (cost at the service level, or mean error at the
    #: window's end without a target), in the order tried: why the model was chosen.
    scores: tuple[tuple[str, float], ...] = ()

    @property
    def alias(self) -> str:
        return self.model.alias

    @property
    def mase(self) -> float:
        """Backtest error relative to seasonal naive (< 1 beats the baseline)."""
        return self.mae / self.naive_mae if self.naive_mae > 0 else float("nan")

    def forecast_many(
        self,
        frame: pl.DataFrame,
        origins: IntArray,
        quantiles: Sequence[float | None],
        events: Sequence[Event] = (),
    ) -> tuple[FloatArray, dict[float | None, FloatArray]]:
        """Point forecasts and bands from each origin, each of shape (origins, horizon).

        ``None`` in ``quantiles`` is ``quantile: auto``: the point forecast, times ``1 + event_margin`` on
        origins near a known event.  With ``events`` and learnt uplift curves, the known events' uplift
        multiplies the forecast."""
        mean = self.model.forecast_many(frame, origins, self.horizon)
        near_event: BoolArray | None = None
        if self.uplift is not None and events:
            lift, near_event = factors_as_learnt(frame, events, self.uplift.step, origins, self.horizon)
            mean = mean * lift
        scale: FloatArray | float = 1.0
        if self.scale_floor is not None:
            scale = band_scale(mean, self.scale_floor)
            if self.band == "sqrt":
                scale = np.sqrt(scale)
        bands: dict[float | None, FloatArray] = {}
        for q in quantiles:
            if q is None:
                auto = mean
                if near_event is not None and self.event_margin > 0:
                    auto = auto * np.where(near_event, 1.0 + self.event_margin, 1.0)[:, None]
                bands[q] = auto
            else:
                bands[q] = mean + np.quantile(self.sorted_errors, q, axis=0)[None, :] * scale
        return mean, bands

    @property
    def band(self) -> str:
        """How the quantile bands grow: ``additive`` (fixed widths), ``relative`` (with the forecast) or
        ``sqrt`` (with its square root, as count noise does)."""
        return self.band_kind or ("additive" if self.scale_floor is None else "relative")

    def forecast(
        self, frame: pl.DataFrame, quantiles: Sequence[float | None], events: Sequence[Event] = ()
    ) -> tuple[FloatArray, dict[float | None, FloatArray]]:
        """Point forecast and the requested bands for ``horizon`` steps after ``frame``."""
        mean, bands = self.forecast_many(frame, np.array([frame.height], dtype=np.int64), quantiles, events)
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
    return np.unique(candidates[_spread(len(candidates), count)])


def select_and_fit(
    frame: pl.DataFrame,
    step: timedelta,
    horizon: int,
    model: str = AUTO,
    max_origins: int = 48,
    *,
    window: int | None = None,
    target: Target | None = None,
    events: Sequence[Event] = (),
) -> FittedSeries:
    """Backtest the candidates on ``frame``'s own history and return the best, fitted.

    ``window``: the forecast steps a served value covers (default: the whole horizon);
    ``target``: the workload whose cost decides (``auto``) and calibrates the margin (None: by MAE,
    no margin); ``events``: known events, their uplift learnt from those finished by the frame's end.
    """
    if frame.height < MIN_HISTORY_POINTS:
        raise ModelError(f"need at least {MIN_HISTORY_POINTS} points of history, have {frame.height}")
    if frame[DS].diff().drop_nulls().n_unique() > 1:
        raise ModelError("history must be on a regular grid (run features.align_to_grid first)")
    window = min(window or horizon, horizon)
    uplift = learn_uplift(frame, events, step, frame[DS][-1]) if events else None
    if model == AUTO:
        return _select_by_cost(frame, step, horizon, window, target, events, uplift)
    fitted, fitted_until = _select_by_holdout(frame, step, horizon, model, max_origins)
    origins = np.arange(fitted_until, frame.height, dtype=np.int64)
    point = fitted.model.forecast_many(frame, origins, horizon)
    near: BoolArray | None = None
    if uplift is not None:
        lift, near = factors_as_learnt(frame, events, step, origins, horizon)
        point = point * lift
    return _with_margins(fitted, frame, origins, point, window, target, uplift, near)


def _select_by_holdout(
    frame: pl.DataFrame, step: timedelta, horizon: int, model: str, max_origins: int
) -> tuple[FittedSeries, int]:
    """A named model: fitted before a holdout, scored from up to ``max_origins`` origins in it."""
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
    sorted_errors, scale_floor, kind = _band_errors(best.errors, best.forecasts, frame)
    fitted = FittedSeries(
        model=chosen,
        horizon=horizon,
        sorted_errors=sorted_errors,
        scale_floor=scale_floor,
        band_kind=kind,
        mae=best.mae,
        naive_mae=naive.mae,
        backtests=tuple(result for result, _ in results),
        fallback_reason=fallback_reason,
    )
    return fitted, int(origins[0])


def _band_errors(
    errors: FloatArray, forecasts: FloatArray, frame: pl.DataFrame, kinds: Sequence[str] = ("additive", "relative")
) -> tuple[FloatArray, float | None, str]:
    """The band whose errors the backtest's own cross-fitted pinball loss calibrates best, among ``kinds``:
    ``additive`` (as they are), ``relative`` (divided by the forecast) or ``sqrt`` (by its square root)."""
    floor = SCALE_FLOOR * float(np.mean(np.abs(values(frame)))) or 1.0
    scales: dict[str, FloatArray | float] = {"additive": 1.0}
    if "relative" in kinds:
        scales["relative"] = band_scale(forecasts, floor)
    if "sqrt" in kinds:
        scales["sqrt"] = np.sqrt(band_scale(forecasts, floor))
    kind = "additive"
    if errors.shape[0] >= 4:
        kind = min(scales, key=lambda name: band_loss(errors, scales[name]))
    return np.sort(errors / scales[kind], axis=0), None if kind == "additive" else floor, kind


def _scored(frame: pl.DataFrame, rows: IntArray) -> BoolArray | None:
    """Which of ``rows`` hold real observations (None: all; a hole's filled values are not scored)."""
    if HOLE not in frame.columns:
        return None
    return np.asarray(~frame[HOLE].to_numpy().astype(bool)[rows], dtype=bool)


def _window_truth(y: FloatArray, origins: IntArray, window: int) -> FloatArray:
    """The largest observation in each origin's served window (NaN where it runs past the data)."""
    truth = np.full(len(origins), np.nan)
    inside = origins + window <= len(y)
    if inside.any():
        rows = origins[inside][:, None] + np.arange(window)[None, :]
        truth[inside] = y[rows].max(axis=1)
    return truth


def _with_margins(
    fitted: FittedSeries,
    frame: pl.DataFrame,
    origins: IntArray,
    point: FloatArray,
    window: int,
    target: Target | None,
    uplift: UpliftCurves | None,
    near: BoolArray | None,
) -> FittedSeries:
    """Add the event margin (served by ``quantile: auto``) and the cheapest margin meeting the service
    level (reported), both measured on ``point`` (the chosen model's forecasts from consecutive ``origins``, known
    events' uplift applied as each origin could have learnt it, ``near`` flagging the origins near an event)
    against what followed.  The event margin is only measured on forecasts that had the uplift: without
    it, it would measure the uplift itself."""
    y = values(frame)
    served = _window_max(point, window)
    event_margin = 0.0
    if near is not None:
        truth = _window_truth(y, origins, window)
        usable = near & np.isfinite(truth) & (served > 0)
        scored = _scored(frame, origins)
        if scored is not None:
            usable &= scored
        if int(usable.sum()) >= EVENT_MARGIN_MIN_ORIGINS:
            excess = truth[usable] / served[usable] - 1.0
            event_margin = max(0.0, float(np.quantile(excess, EVENT_MARGIN_QUANTILE)))
            served = served * np.where(near, 1.0 + event_margin, 1.0)
    margin: float | None = None
    cost: float | None = None
    if target is not None:
        ratio, headroom = cost_at_slo(served, y[origins], target, _scored(frame, origins))
        if np.isfinite(headroom):
            margin, cost = headroom, ratio
    return replace(fitted, margin=margin, cost=cost, uplift=uplift, event_margin=event_margin)


def _select_by_cost(
    frame: pl.DataFrame,
    step: timedelta,
    horizon: int,
    window: int,
    target: Target | None,
    events: Sequence[Event],
    uplift: UpliftCurves | None,
) -> FittedSeries:
    """``auto``: the short-horizon candidate whose served values cost least at the service level over
    every origin of the last week (by mean error at the window's end when no target is known)."""
    n = frame.height
    y = values(frame)
    season = season_length(step)
    first = max(MIN_HISTORY_POINTS // 2, n - round(SCORING_SPAN / step))
    origins = np.arange(first, n, dtype=np.int64)
    scored = _scored(frame, origins)
    # The candidates are scored with the uplift each origin could have known (events finished before it).
    lift: FloatArray | None = None
    near: BoolArray | None = None
    if uplift is not None:
        lift, near = factors_as_learnt(frame, events, step, origins, horizon)
    at_end = origins + window - 1
    known = at_end < n
    if scored is not None:
        known &= scored
    truth_end = y[np.minimum(at_end, n - 1)]

    def end_mae(forecast_at_end: FloatArray) -> float | None:
        """Mean absolute error at the served window's last step, over the origins whose truth is known."""
        return float(np.mean(np.abs(truth_end[known] - forecast_at_end[known]))) if known.any() else None

    persistence_mae = end_mae(y[origins - 1])
    results: list[tuple[float, Forecaster, FloatArray]] = []
    failures: list[str] = []
    for candidate in candidates(AUTO, step, horizon, n):
        try:
            point = candidate.fit(frame).forecast_many(frame, origins, horizon)
        except Exception as exc:  # any failure of one candidate is skipped; the others go on
            logger.warning("model %s failed its backtest, skipped: %s", candidate.alias, exc)
            failures.append(f"{candidate.alias}: {exc}")
            continue
        if lift is not None:
            point = point * lift
        if target is not None:
            score = cost_at_slo(_window_max(point, window), y[origins], target, scored)[0]
        else:
            mae = end_mae(point[:, window - 1])
            score = 0.0 if mae is None else mae
        results.append((score, candidate, point))
    if not results:
        raise ModelError("every candidate failed: " + "; ".join(failures))
    # Lowest cost wins; ties go to the earlier (simpler) candidate, persistence first.
    score, chosen, point = min(results, key=lambda item: item[0])
    if not np.isfinite(score):
        score, chosen, point = results[0]
    full = origins + horizon <= n
    errors = y[origins[full][:, None] + np.arange(horizon)[None, :]] - point[full]
    keep = _spread(len(errors), BAND_ORIGINS)
    errors, forecasts = errors[keep], point[full][keep]
    if len(errors) == 0:
        raise ModelError(f"history of {n} points is too short for a {horizon}-step backtest")
    # The bands are calibrated on what is served: the window maximum, against the window's largest load.
    served = _window_max(point, window)
    truth = _window_truth(y, origins, window)
    usable = np.isfinite(truth) & (True if scored is None else scored)
    picks = np.flatnonzero(usable)
    picks = picks[_spread(len(picks), BAND_ORIGINS)]
    if len(picks):
        excess = np.repeat((truth[picks] - served[picks])[:, None], horizon, axis=1)
        sizes = np.repeat(served[picks][:, None], horizon, axis=1)
        sorted_errors, scale_floor, kind = _band_errors(excess, sizes, frame, ("additive", "relative", "sqrt"))
    else:  # no window has ended inside the data yet: per-step errors
        sorted_errors, scale_floor, kind = _band_errors(errors, forecasts, frame)
    naive_mae = math.nan
    try:
        naive = SeasonalNaive(season).fit(frame).forecast_many(frame, origins[full][keep], horizon)
        naive_mae = float(np.mean(np.abs(errors + forecasts - naive)))
    except ModelError:  # less than a season of history: no seasonal baseline
        pass
    fitted = FittedSeries(
        model=chosen,
        horizon=horizon,
        sorted_errors=sorted_errors,
        scale_floor=scale_floor,
        band_kind=kind,
        mae=float(np.mean(np.abs(errors))),
        naive_mae=naive_mae,
        persistence_mae=persistence_mae,
        lead_mae=end_mae(point[:, window - 1]),
        scores=tuple((model.alias, float(value)) for value, model, _ in results),
    )
    return _with_margins(fitted, frame, origins, point, window, target, uplift, near)
