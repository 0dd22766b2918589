"""Column names of the long format used everywhere (statsforecast's convention)."""

from __future__ import annotations

import polars as pl

DS = "ds"
Y = "y"

#: Timestamps are timezone-aware UTC, microsecond precision.
DS_DTYPE = pl.Datetime("us", "UTC")
Y_DTYPE = pl.Float64


def empty_series() -> pl.DataFrame:
    """An empty single-series frame with the canonical ``ds``/``y`` schema."""
    return pl.DataFrame(schema={DS: DS_DTYPE, Y: Y_DTYPE})
