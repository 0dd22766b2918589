"""A direct multi-horizon LightGBM model on polars lag, rolling and calendar features.

One model serves every horizon step: each training row is an (origin ``t``, step
``k``) pair with the features of the series at ``t``, ``k`` itself, the calendar of the
target time and the value one season before the target; the target is
``y[t + k] - y[t]``.  Forecasting from the newest point is one batch ``predict`` of
``h`` rows, cheap enough to run on every refresh.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Self

import numpy as np
import numpy.typing as npt
import polars as pl

from helios_scaler.errors import ModelError
from helios_scaler.features.pipeline import calendar_features, lag_features
from helios_scaler.features.schema import DS, FloatArray, IntArray
from helios_scaler.models.base import BaseForecaster, check_origins, require, values

LAGS = (1, 2, 3, 5, 10, 15, 30, 60)
WINDOWS = (5, 15, 60)


class LightGBM(BaseForecaster):
    """Gradient-boosted trees on lag/rolling/calendar features, direct over ``max_horizon`` steps."""

    alias = "lightgbm"

    def __init__(
        self,
        season: int,
        step: timedelta,
        max_horizon: int,
        max_rows: int = 20_000,
        n_estimators: int = 80,
        num_leaves: int = 31,
        learning_rate: float = 0.1,
        seed: int = 0,
    ) -> None:
        if max_horizon < 1:
            raise ValueError(f"max_horizon must be >= 1, got {max_horizon}")
        self.season = season
        self.step = step
        self.max_horizon = max_horizon
        self.max_rows = max_rows
        self.n_estimators = n_estimators
        self.num_leaves = num_leaves
        self.learning_rate = learning_rate
        self.seed = seed
        self.min_points = max(LAGS) + max(WINDOWS) + max_horizon + 50

    def _features_at(self, frame: pl.DataFrame) -> npt.NDArray[np.float64]:
        return lag_features(frame["y"], frame[DS], self.season_, LAGS, WINDOWS).to_numpy().astype(np.float64)

    def _rows(
        self,
        y: FloatArray,
        base: npt.NDArray[np.float64],
        last: npt.NDArray[np.int64],
        ks: npt.NDArray[np.int64],
        target_ds: pl.Series,
    ) -> npt.NDArray[np.float64]:
        """Feature matrix for (last known row, step ahead) pairs; nothing after ``last`` is read."""
        seasonal_index = last + ks - self.season_
        usable = (seasonal_index >= 0) & (seasonal_index <= last)
        seasonal = np.where(usable, y[np.clip(seasonal_index, 0, last)] - y[last], np.nan)
        calendar = calendar_features(target_ds).to_numpy().astype(np.float64)
        return np.column_stack([base[last], ks.astype(np.float64), seasonal, calendar])

    def fit(self, frame: pl.DataFrame) -> Self:
        require(frame, self)
        import lightgbm as lgb

        # A history shorter than two seasons uses a shorter "season" for its seasonal features.
        self.season_ = min(self.season, max(2, frame.height // 2))
        y = values(frame)
        base = self._features_at(frame)
        rng = np.random.default_rng(self.seed)
        first = max(LAGS) + max(WINDOWS)
        candidates = (len(y) - 1 - self.max_horizon - first + 1) * self.max_horizon
        if candidates <= 0:
            raise ModelError(f"lightgbm needs at least {self.min_points} points, got {len(y)}")
        n = min(self.max_rows, candidates)
        origins = rng.integers(first, len(y) - self.max_horizon, size=n)
        ks = rng.integers(1, self.max_horizon + 1, size=n)
        ds = frame[DS]
        target_ds = ds.gather(origins + ks)
        features = self._rows(y, base, origins, ks, target_ds)
        target = y[origins + ks] - y[origins]
        params = {
            "objective": "regression",
            "num_leaves": self.num_leaves,
            "learning_rate": self.learning_rate,
            "seed": self.seed,
            "num_threads": 1,
            "verbose": -1,
        }
        self.model_ = lgb.train(params, lgb.Dataset(features, target), num_boost_round=self.n_estimators)
        return self

    def forecast_many(self, frame: pl.DataFrame, origins: IntArray, h: int) -> FloatArray:
        check_origins(frame, origins)
        if h > self.max_horizon:
            raise ModelError(f"lightgbm was fitted for {self.max_horizon} steps, asked for {h}")
        # Features only look back, so the rows up to the last origin are all that is needed.
        known = frame.head(int(origins.max()))
        y = values(known)
        base = self._features_at(known)
        last = np.repeat(origins - 1, h)
        ks = np.tile(np.arange(1, h + 1, dtype=np.int64), len(origins))
        step_us = int(self.step.total_seconds() * 1_000_000)
        last_us = known[DS].dt.epoch("us").to_numpy()[last]
        target_ds = pl.Series(DS, last_us + ks * step_us).cast(pl.Datetime("us", "UTC"))
        features = self._rows(y, base, last, ks, target_ds)
        predicted = y[last] + self.model_.predict(features)
        return np.asarray(predicted, dtype=np.float64).reshape(len(origins), h)
