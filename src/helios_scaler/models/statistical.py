"""statsforecast models: seasonal naive, AutoETS, and MSTL with a daily season.

AutoETS is fitted by statsforecast; the cheap refresh then carries the fitted model's
last state (level, trend) forward through newer points with the ETS recursions, so a
refresh costs O(new points) and one pass serves many forecast origins.  The recursions
reproduce statsforecast's own fitted states exactly (``tests/unit/test_models.py``).
Point forecasts use the textbook damped-trend sum ``l + (phi + ... + phi^h) b``.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any, Self

import numpy as np
import polars as pl

from helios_scaler.errors import ModelError
from helios_scaler.features.schema import DS, FloatArray, IntArray
from helios_scaler.models.base import BaseForecaster, check_origins, phase_index, require, values

#: statsforecast's STL is quadratic-ish in the season length; a daily season at one
#: minute (1440) takes ~10 s.  MSTL decomposes at a coarser step with at most this many
#: points per season, then works at full resolution.
MAX_DECOMPOSITION_SEASON = 288


class SeasonalNaive(BaseForecaster):
    """The value one season ago (the baseline every other model must beat)."""

    alias = "seasonal_naive"

    def __init__(self, season: int) -> None:
        if season < 1:
            raise ValueError(f"season must be >= 1, got {season}")
        self.season = season
        self.min_points = 2

    def fit(self, frame: pl.DataFrame) -> Self:
        require(frame, self)
        self.fitted_ = True
        return self

    def forecast_many(self, frame: pl.DataFrame, origins: IntArray, h: int) -> FloatArray:
        check_origins(frame, origins)
        y = values(frame)
        steps = np.arange(h) % self.season
        index = origins[:, None] - self.season + steps[None, :]
        # Before one full season of history: the last value.
        index = np.where(origins[:, None] >= self.season, index, origins[:, None] - 1)
        return np.asarray(y[index], dtype=np.float64)


class EtsFilter:
    """The non-seasonal ETS state recursions with fitted parameters (error A/M, trend N/A/Ad)."""

    def __init__(self, components: str, par: FloatArray) -> None:
        self.multiplicative = components[0] == "M"
        self.has_trend = components[1] != "N"
        if components[1] == "M" or components[2] != "N":
            raise ModelError(f"ETS({components}) is not supported (only non-seasonal, additive or no trend)")
        self.alpha = float(par[0])
        self.beta = float(par[1]) if self.has_trend else 0.0
        damped = len(components) > 3 and components[3] == "D"
        self.phi = float(par[3]) if damped else (1.0 if self.has_trend else 0.0)

    def run(self, y: FloatArray, level: float, trend: float) -> tuple[FloatArray, FloatArray]:
        """States after each point of ``y``, starting from ``(level, trend)``."""
        levels = np.empty(len(y))
        trends = np.empty(len(y))
        alpha, beta, phi, mult = self.alpha, self.beta, self.phi, self.multiplicative
        for i, observed in enumerate(y.tolist()):
            q = level + phi * trend
            if mult:
                e = (observed - q) / q if q != 0.0 else 0.0
                level = q * (1.0 + alpha * e)
                trend = phi * trend + beta * q * e
            else:
                e = observed - q
                level = q + alpha * e
                trend = phi * trend + beta * e
            levels[i] = level
            trends[i] = trend
        return levels, trends

    def forecasts(self, levels: FloatArray, trends: FloatArray, h: int) -> FloatArray:
        """Point forecasts of ``h`` steps from each state, shape (states, h)."""
        if not self.has_trend:
            return np.repeat(levels[:, None], h, axis=1)
        damping = np.cumsum(self.phi ** np.arange(1, h + 1))
        return np.asarray(levels[:, None] + damping[None, :] * trends[:, None], dtype=np.float64)


class _StatefulEts:
    """An AutoETS fit whose state is carried forward from the end of its training data."""

    def __init__(self, y: FloatArray, last_ds: Any, model: str) -> None:
        from statsforecast.models import AutoETS

        try:
            fitted = AutoETS(season_length=1, model=model).fit(y).model_
        except Exception as exc:  # statsforecast raises bare Exceptions from its optimiser
            raise ModelError(f"AutoETS failed to fit: {exc}") from exc
        self.filter = EtsFilter(str(fitted["components"]), np.asarray(fitted["par"], dtype=np.float64))
        state = np.asarray(fitted["states"][-1], dtype=np.float64)
        self.level = float(state[0])
        self.trend = float(state[1]) if self.filter.has_trend else 0.0
        self.method = str(fitted["method"])
        self.last_ds = last_ds

    def forecast_many(self, frame: pl.DataFrame, y: FloatArray, origins: IntArray, h: int) -> FloatArray:
        """Forecasts from each origin, ``y`` being the (possibly transformed) series of ``frame``."""
        check_origins(frame, origins)
        end = int(frame[DS].search_sorted(self.last_ds, side="left"))
        if end >= frame.height or frame[DS][end] != self.last_ds:
            raise ModelError("the frame no longer holds the end of the model's training data; retrain")
        if int(origins.min()) < end + 1:
            raise ModelError("a forecast origin lies before the end of the model's training data")
        levels, trends = self.filter.run(y[end + 1 : int(origins.max())], self.level, self.trend)
        levels = np.concatenate([[self.level], levels])
        trends = np.concatenate([[self.trend], trends])
        at = origins - (end + 1)
        return self.filter.forecasts(levels[at], trends[at], h)


class ETS(BaseForecaster):
    """statsforecast AutoETS (non-seasonal: level and trend adapt fast), fitted on a recent window."""

    alias = "ets"

    def __init__(self, fit_window: int = 2880) -> None:
        if fit_window < 10:
            raise ValueError(f"fit_window must be >= 10, got {fit_window}")
        self.fit_window = fit_window
        self.min_points = 10

    def fit(self, frame: pl.DataFrame) -> Self:
        require(frame, self)
        self.model_ = _StatefulEts(values(frame)[-self.fit_window :], frame[DS][-1], "ZZN")
        return self

    def forecast_many(self, frame: pl.DataFrame, origins: IntArray, h: int) -> FloatArray:
        return self.model_.forecast_many(frame, values(frame), origins, h)


class MSTL(BaseForecaster):
    """MSTL with a daily season: STL seasonal profile + AutoETS on the deseasonalised series.

    The decomposition runs on the series averaged to at most
    :data:`MAX_DECOMPOSITION_SEASON` points per season; the profile is held per absolute
    phase, so the cheap refresh only deseasonalises new points and carries the ETS on.
    """

    alias = "mstl"

    def __init__(self, season: int, step: timedelta, fit_window: int = 2880) -> None:
        if season < 4:
            raise ValueError(f"season must be >= 4 steps, got {season}")
        self.season = season
        self.step = step
        self.fit_window = fit_window
        self.min_points = 2 * season

    def fit(self, frame: pl.DataFrame) -> Self:
        require(frame, self)
        from statsforecast.mstl import mstl

        factor = math.ceil(self.season / MAX_DECOMPOSITION_SEASON)
        coarse_season = self.season // factor
        if coarse_season * factor != self.season:
            factor, coarse_season = 1, self.season
        y = values(frame)
        phase = phase_index(frame, self.step, self.season)
        # Start on a coarse-bucket boundary and keep whole buckets.
        start = int((-phase[0]) % factor)
        usable = (len(y) - start) // factor * factor
        coarse = y[start : start + usable].reshape(-1, factor).mean(axis=1)
        if len(coarse) < 2 * coarse_season:
            raise ModelError(f"mstl needs two full seasons ({2 * self.season} points), got {len(y)}")
        try:
            decomposition = mstl(coarse, coarse_season)
        except Exception as exc:  # statsforecast raises bare Exceptions
            raise ModelError(f"MSTL decomposition failed: {exc}") from exc
        seasonal = np.asarray(decomposition["seasonal"], dtype=np.float64)
        coarse_phase = phase[start : start + usable : factor] // factor
        profile_coarse = np.zeros(coarse_season)
        profile_coarse[coarse_phase[-coarse_season:]] = seasonal[-coarse_season:]
        self.profile_ = np.repeat(profile_coarse, factor)
        deseasonalised = self._deseasonalise(frame)
        self.model_ = _StatefulEts(deseasonalised[-self.fit_window :], frame[DS][-1], "ZZN")
        return self

    def _deseasonalise(self, frame: pl.DataFrame) -> FloatArray:
        return np.asarray(values(frame) - self.profile_[phase_index(frame, self.step, self.season)], dtype=np.float64)

    def forecast_many(self, frame: pl.DataFrame, origins: IntArray, h: int) -> FloatArray:
        trend = self.model_.forecast_many(frame, self._deseasonalise(frame), origins, h)
        last_phase = phase_index(frame, self.step, self.season)[origins - 1]
        future = (last_phase[:, None] + np.arange(1, h + 1)[None, :]) % self.season
        return np.asarray(trend + self.profile_[future], dtype=np.float64)
