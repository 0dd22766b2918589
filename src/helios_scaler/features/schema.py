"""Column names of the long format used everywhere (statsforecast's convention), and the array types
every layer passes around (low in the house: the store and serving use them without importing models)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import polars as pl

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

DS = "ds"
Y = "y"
#: True on the grid steps of a long hole in the data, whose ``y`` was filled from the day before
#: (models see a regular series; selection and the backtest do not score these steps).
HOLE = "hole"

#: Timestamps are timezone-aware UTC, microsecond precision.
DS_DTYPE = pl.Datetime("us", "UTC")
Y_DTYPE = pl.Float64


def empty_series() -> pl.DataFrame:
    """An empty single-series frame with the canonical ``ds``/``y`` schema."""
    return pl.DataFrame(schema={DS: DS_DTYPE, Y: Y_DTYPE})
