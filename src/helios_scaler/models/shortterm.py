"""Short-horizon candidates: cheap rules over the recent past.

A few steps ahead, the last value and the local slope carry most of the signal, and a
fitted model rarely beats them by much; yesterday's (or last week's) *shape* around the
same time adds what the recent past cannot know, such as a ramp that is about to start.
These rules have no fitted state (``fit`` only checks the length), so they cost nothing
to refresh and give model selection honest baselines to beat.

Every rule is vectorised over forecast origins: for origin ``o`` the newest known value
is ``y[o-1]`` and nothing at or after row ``o`` is read, so ``forecast_many`` over tens of
thousands of origins (the backtest) is a handful of numpy operations.  All forecasts are
clipped at zero: the series are counts and rates.
"""

from __future__ import annotations

from typing import Literal, Self

import numpy as np
import polars as pl

from helios_scaler.errors import ModelError
from helios_scaler.features.schema import FloatArray, IntArray
from helios_scaler.models.base import BaseForecaster, Forecaster, check_origins, require, values

#: Floor of the reference level a multiplicative seasonal ratio divides by (avoids dividing by zero).
TINY = 1e-9
#: Bounds of the multiplicative seasonal ratio: one odd point yesterday must not scale today five-fold and more.
RATIO_MIN = 0.2
RATIO_MAX = 5.0

SeasonalMode = Literal["additive", "multiplicative"]


def _check_h(h: int) -> None:
    if h < 1:
        raise ModelError(f"the forecast horizon must be >= 1 step, got {h}")


def _steps(h: int) -> FloatArray:
    """``1 .. h`` as a float row vector, shape (1, h)."""
    return np.arange(1, h + 1, dtype=np.float64)[None, :]


def _finish(forecast: FloatArray) -> FloatArray:
    """Clip at zero (the series are non-negative)."""
    return np.asarray(np.maximum(forecast, 0.0), dtype=np.float64)


class _Rule(BaseForecaster):
    """A rule over the recent past: nothing to learn, ``fit`` only checks the history is long enough."""

    min_points: int

    def fit(self, frame: pl.DataFrame) -> Self:
        require(frame, self)  # type: ignore[arg-type]
        return self


class Persistence(_Rule):
    """The last known value, held flat: ``forecast(o, k) = y[o-1]``."""

    alias = "persistence"

    def __init__(self) -> None:
        self.min_points = 1

    def forecast_many(self, frame: pl.DataFrame, origins: IntArray, h: int) -> FloatArray:
        check_origins(frame, origins)
        _check_h(h)
        last = values(frame)[origins - 1]
        return _finish(np.repeat(last[:, None], h, axis=1))


def _local_line(y: FloatArray, origins: IntArray, window: int) -> tuple[FloatArray, FloatArray]:
    """Least-squares line through the ``window + 1`` points ``y[o-1-window .. o-1]`` of each origin.

    Returns ``(slope, fitted_end)``: the slope per step and the line's value at ``o-1``.  Where
    the window would start before row 0 the slope is 0 and ``fitted_end`` is ``y[o-1]``.
    """
    last = origins - 1
    start = last - window
    enough = start >= 0
    # Origins without enough history read clipped rows, discarded below.
    first = np.maximum(start, 0)
    total = np.zeros(len(origins))
    moment = np.zeros(len(origins))
    sxx = 0.0
    # A loop over the window (not the origins), in a fixed order: the sums, hence the forecasts,
    # are bit-for-bit the same whether one origin is asked for or thousands (a matrix product is not).
    for j in range(window + 1):
        point = y[np.minimum(first + j, len(y) - 1)]
        centred = j - window / 2
        total += point
        moment += centred * point
        sxx += centred * centred
    slope = moment / sxx
    fitted_end = total / (window + 1) + slope * (window / 2)
    slope = np.where(enough, slope, 0.0)
    fitted_end = np.where(enough, fitted_end, y[last])
    return np.asarray(slope, dtype=np.float64), np.asarray(fitted_end, dtype=np.float64)


class _LocalLine(_Rule):
    """A least-squares line over the last ``window + 1`` points, extrapolated."""

    alias: str

    def __init__(self, window: int) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.window = window
        self.min_points = window + 1

    def _anchor(self, y: FloatArray, origins: IntArray, fitted_end: FloatArray) -> FloatArray:
        raise NotImplementedError

    def forecast_many(self, frame: pl.DataFrame, origins: IntArray, h: int) -> FloatArray:
        check_origins(frame, origins)
        _check_h(h)
        y = values(frame)
        slope, fitted_end = _local_line(y, origins, self.window)
        anchor = self._anchor(y, origins, fitted_end)
        return _finish(anchor[:, None] + slope[:, None] * _steps(h))


class Trend(_LocalLine):
    """The last value plus the local least-squares slope: ``y[o-1] + k * s``.

    ``s`` is the slope of the ``window + 1`` points ``y[o-1-window .. o-1]`` against their
    index; with fewer points before the origin, ``s = 0`` (persistence).
    """

    def __init__(self, window: int) -> None:
        super().__init__(window)
        self.alias = f"trend_{window}"

    def _anchor(self, y: FloatArray, origins: IntArray, fitted_end: FloatArray) -> FloatArray:
        return np.asarray(y[origins - 1], dtype=np.float64)


class Line(_LocalLine):
    """The local least-squares line itself, extrapolated: ``fitted_end + k * s``.

    Unlike :class:`Trend` it is anchored at the line's own value at ``o-1``
    (``mean(y[o-1-window .. o-1]) + s * window / 2``), so one noisy last point moves it
    less.  With fewer points before the origin it is persistence.
    """

    def __init__(self, window: int) -> None:
        super().__init__(window)
        self.alias = f"line_{window}"

    def _anchor(self, y: FloatArray, origins: IntArray, fitted_end: FloatArray) -> FloatArray:
        return fitted_end


def _centred_mean(y: FloatArray) -> FloatArray:
    """``sm[i] = mean(y[i-1], y[i], y[i+1])``; NaN at both ends, where it is undefined."""
    sm = np.full(len(y), np.nan)
    if len(y) >= 3:
        sm[1:-1] = (y[:-2] + y[1:-1] + y[2:]) / 3.0
    return sm


class LevelSeasonal(_Rule):
    """Today's level with the shape of one season ago (``season`` steps back).

    With ``t = o-1``, ``S = season`` and ``sm`` the centred 3-point mean of ``y``, the
    forecast ``k`` steps ahead is

    * additive: ``y[t] + sm[t+k-S] - sm[t-S]``;
    * multiplicative: ``y[t] * clip(sm[t+k-S] / sm[t-S], 0.2, 5)`` (persistence where ``sm[t-S]`` is 0).

    ``sm[t+k-S]`` reads ``y[t+k-S+1]``, which is known only while ``k <= S - 1``, so a longer
    horizon is a :class:`ModelError`.  Before a season of history (``t-S-1 < 0``), and
    wherever the result is not finite, the forecast is persistence.
    """

    def __init__(self, season: int, mode: SeasonalMode, label: str) -> None:
        if season < 2:
            raise ValueError(f"season must be >= 2 steps, got {season}")
        if mode not in ("additive", "multiplicative"):
            raise ValueError(f"mode must be 'additive' or 'multiplicative', got {mode!r}")
        self.season = season
        self.mode: SeasonalMode = mode
        self.label = label
        self.alias = f"{'sadd' if mode == 'additive' else 'smul'}_{label}"
        self.min_points = season + 2

    def forecast_many(self, frame: pl.DataFrame, origins: IntArray, h: int) -> FloatArray:
        check_origins(frame, origins)
        _check_h(h)
        if h > self.season - 1:
            raise ModelError(
                f"{self.alias} forecasts at most season - 1 = {self.season - 1} steps ahead, asked for {h}"
            )
        y = values(frame)
        sm = _centred_mean(y)
        last = origins - 1
        enough = last - self.season - 1 >= 0
        # Origins without a season of history are clipped into range and then discarded.
        reference = sm[np.maximum(last - self.season, 0)][:, None]
        shape = sm[np.maximum(last[:, None] - self.season + np.arange(1, h + 1)[None, :], 0)]
        level = y[last][:, None]
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            if self.mode == "additive":
                forecast = level + shape - reference
            else:
                forecast = level * np.clip(shape / np.maximum(reference, TINY), RATIO_MIN, RATIO_MAX)
        usable = enough[:, None] & np.isfinite(forecast)
        if self.mode != "additive":  # a season ago was (nearly) zero: no shape to rescale
            usable &= reference > TINY
        forecast = np.where(usable, forecast, level)
        return _finish(forecast)


def short_term_candidates(season: int, history_points: int, horizon: int) -> list[Forecaster]:
    """The short-term rules worth backtesting for a series, in a fixed order.

    Persistence, ``Trend`` and ``Line`` over 3, 6 and 12 steps always; the daily
    level-seasonal pair (``season`` steps) once ``history_points`` holds a season and two
    points and ``horizon <= season - 1``; the weekly pair (``7 * season``) once it holds two
    weeks and ``horizon <= 7 * season - 1``.
    """
    candidates: list[Forecaster] = [Persistence(), Trend(3), Trend(6), Trend(12), Line(3), Line(6), Line(12)]
    if history_points >= season + 2 and horizon <= season - 1:
        candidates += [
            LevelSeasonal(season, "additive", "daily"),
            LevelSeasonal(season, "multiplicative", "daily"),
        ]
    week = 7 * season
    if history_points >= 2 * week and horizon <= week - 1:
        candidates += [
            LevelSeasonal(week, "additive", "weekly"),
            LevelSeasonal(week, "multiplicative", "weekly"),
        ]
    return candidates
