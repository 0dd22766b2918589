"""The model contract, in the scikit-learn / statsforecast spirit.

``__init__`` stores and validates hyperparameters; ``fit(frame)`` learns from a clean,
regular ``ds``/``y`` frame and returns ``self``; fitted state lives in attributes ending
in ``_``.  ``forecast_many(frame, origins, h)`` is the cheap refresh, batched: for each
origin ``o`` it forecasts the ``h`` steps after ``frame.head(o)`` with the fitted state,
without refitting, exactly as if ``forecast(frame.head(o), h)`` had been called — one
pass over the frame serves every origin (the live path asks for one origin, the backtest
for thousands).  Origins must not lie before the end of the data the model was fitted on.
Each model has an ``alias``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Protocol, Self

import numpy as np
import polars as pl

from helios_scaler.errors import ModelError
from helios_scaler.features.schema import DS, FloatArray, IntArray, Y


class Forecaster(Protocol):
    alias: str
    #: Fewest points ``fit`` accepts.
    min_points: int

    def fit(self, frame: pl.DataFrame) -> Self: ...

    def forecast_many(self, frame: pl.DataFrame, origins: IntArray, h: int) -> FloatArray: ...

    def forecast(self, frame: pl.DataFrame, h: int) -> FloatArray: ...


class BaseForecaster:
    """``forecast`` in terms of ``forecast_many`` (one origin: the end of the frame)."""

    def forecast_many(self, frame: pl.DataFrame, origins: IntArray, h: int) -> FloatArray:
        raise NotImplementedError

    def forecast(self, frame: pl.DataFrame, h: int) -> FloatArray:
        return np.asarray(self.forecast_many(frame, np.array([frame.height], dtype=np.int64), h)[0])


def values(frame: pl.DataFrame) -> FloatArray:
    """The ``y`` column as a float64 numpy array (the model boundary)."""
    return frame[Y].to_numpy().astype(np.float64, copy=False)


def phase_index(frame: pl.DataFrame, step: timedelta, season: int, offset: int = 0) -> IntArray:
    """Absolute seasonal phase of each row (+``offset`` steps), stable across refreshes."""
    step_us = int(step.total_seconds() * 1_000_000)
    epoch_steps = frame[DS].dt.epoch("us").to_numpy() // step_us
    return np.asarray((epoch_steps + offset) % season, dtype=np.int64)


def require(frame: pl.DataFrame, model: Forecaster) -> None:
    if frame.height < model.min_points:
        raise ModelError(f"{model.alias} needs at least {model.min_points} points, got {frame.height}")


def check_origins(frame: pl.DataFrame, origins: IntArray) -> None:
    if len(origins) == 0:
        raise ModelError("no forecast origins given")
    if int(origins.min()) < 1 or int(origins.max()) > frame.height:
        raise ModelError(f"forecast origins must lie in 1..{frame.height}, got {origins.min()}..{origins.max()}")
