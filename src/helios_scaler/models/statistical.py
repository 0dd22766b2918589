"""statsforecast models: seasonal naive, AutoETS, and MSTL with a daily season."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any, Self

import numpy as np
import polars as pl

from helios_scaler.errors import ModelError
from helios_scaler.models.base import FloatArray, phase_index, require, values

#: statsforecast's STL is quadratic-ish in the season length; a daily season at one
#: minute (1440) takes ~10 s.  MSTL decomposes at a coarser step with at most this many
#: points per season, then works at full resolution.
MAX_DECOMPOSITION_SEASON = 288


class SeasonalNaive:
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

    def forecast(self, frame: pl.DataFrame, h: int) -> FloatArray:
        y = values(frame)
        if len(y) < self.season:
            return np.full(h, y[-1])
        last_cycle = y[-self.season :]
        return np.asarray(last_cycle[np.arange(h) % self.season], dtype=np.float64)


class ETS:
    """statsforecast AutoETS (non-seasonal: trend and level adapt fast), fitted on a recent window."""

    alias = "ets"

    def __init__(self, fit_window: int = 2880) -> None:
        if fit_window < 10:
            raise ValueError(f"fit_window must be >= 10, got {fit_window}")
        self.fit_window = fit_window
        self.min_points = 10

    def fit(self, frame: pl.DataFrame) -> Self:
        require(frame, self)
        from statsforecast.models import AutoETS

        self.model_ = AutoETS(season_length=1).fit(values(frame)[-self.fit_window :])
        return self

    def forecast(self, frame: pl.DataFrame, h: int) -> FloatArray:
        return _forward(self.model_, values(frame)[-self.fit_window :], h)


class MSTL:
    """MSTL with a daily season: STL seasonal profile + AutoETS on the deseasonalised series.

    The decomposition runs on the series averaged to at most
    :data:`MAX_DECOMPOSITION_SEASON` points per season; the profile is held per absolute
    phase, so the cheap refresh only deseasonalises new points and forwards the ETS.
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
        from statsforecast.models import AutoETS
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
        decomposition = mstl(coarse, coarse_season)
        seasonal = np.asarray(decomposition["seasonal"], dtype=np.float64)
        coarse_phase = phase[start : start + usable : factor] // factor
        profile_coarse = np.zeros(coarse_season)
        last = seasonal[-coarse_season:]
        profile_coarse[coarse_phase[-coarse_season:]] = last
        self.profile_ = np.repeat(profile_coarse, factor)
        self.model_ = AutoETS(model="ZZN").fit(self._deseasonalise(frame)[-self.fit_window :])
        return self

    def _deseasonalise(self, frame: pl.DataFrame) -> FloatArray:
        return values(frame) - self.profile_[phase_index(frame, self.step, self.season)]

    def forecast(self, frame: pl.DataFrame, h: int) -> FloatArray:
        trend = _forward(self.model_, self._deseasonalise(frame)[-self.fit_window :], h)
        future = phase_index(frame.tail(1), self.step, self.season, offset=0)[0] + np.arange(1, h + 1)
        return np.asarray(trend + self.profile_[future % self.season], dtype=np.float64)


def _forward(model: Any, y: FloatArray, h: int) -> FloatArray:
    """Apply a fitted statsforecast model to (newer) data without refitting."""
    try:
        result = model.forward(y=y, h=h)
    except Exception as exc:  # statsforecast raises bare Exceptions from numeric code
        raise ModelError(f"{type(model).__name__}.forward failed: {exc}") from exc
    return np.asarray(result["mean"], dtype=np.float64)
