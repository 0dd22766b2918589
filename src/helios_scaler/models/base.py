"""The model contract, in the scikit-learn / statsforecast spirit.

``__init__`` stores and validates hyperparameters; ``fit(frame)`` learns from a clean,
regular ``ds``/``y`` frame and returns ``self``; fitted state lives in attributes ending
in ``_``.  ``forecast(frame, h)`` is the cheap refresh: it uses the fitted state on the
(possibly newer) ``frame`` and returns ``h`` point forecasts for the steps after its
last ``ds``, without refitting.  Each model has an ``alias``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Protocol, Self

import numpy as np
import numpy.typing as npt
import polars as pl

from helios_scaler.errors import ModelError
from helios_scaler.features.schema import DS, Y

FloatArray = npt.NDArray[np.float64]


class Forecaster(Protocol):
    alias: str
    #: Fewest points ``fit`` accepts.
    min_points: int

    def fit(self, frame: pl.DataFrame) -> Self: ...

    def forecast(self, frame: pl.DataFrame, h: int) -> FloatArray: ...


def values(frame: pl.DataFrame) -> FloatArray:
    """The ``y`` column as a float64 numpy array (the model boundary)."""
    return frame[Y].to_numpy().astype(np.float64, copy=False)


def phase_index(frame: pl.DataFrame, step: timedelta, season: int, offset: int = 0) -> npt.NDArray[np.int64]:
    """Absolute seasonal phase of each row (+``offset`` steps), stable across refreshes."""
    step_us = int(step.total_seconds() * 1_000_000)
    epoch_steps = frame[DS].dt.epoch("us").to_numpy() // step_us
    return np.asarray((epoch_steps + offset) % season, dtype=np.int64)


def require(frame: pl.DataFrame, model: Forecaster) -> None:
    if frame.height < model.min_points:
        raise ModelError(f"{model.alias} needs at least {model.min_points} points, got {frame.height}")
