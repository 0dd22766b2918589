"""Real traces for unit tests, read from the shared trace directory (``/work/shared/traces``).

Only the files are shared between checkouts, so the path is resolved from this file:
``<checkout>/tests/unit/conftest.py`` → ``<checkout>/../shared``.  A missing file fails the
test (never skips it): these tests are meaningless without their data.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from functools import cache

import polars as pl
import pytest
from traces import trace_path

from helios_scaler.features.schema import DS, DS_DTYPE, Y_DTYPE, Y


@cache
def _worldcup_full() -> pl.DataFrame:
    raw = pl.read_csv(trace_path("worldcup98", "invocation_count.csv"), try_parse_dates=True)
    return raw.select(
        pl.col("period").dt.replace_time_zone("UTC").cast(DS_DTYPE).alias(DS),
        pl.col("count").cast(Y_DTYPE).alias(Y),
    )


@cache
def _nab(relative: str) -> pl.DataFrame:
    raw = pl.read_csv(trace_path("nab", "data", relative), try_parse_dates=True)
    # NAB timestamps are naive; they are treated as UTC here (only spacing matters in tests).
    return raw.select(
        pl.col("timestamp").dt.replace_time_zone("UTC").cast(DS_DTYPE).alias(DS),
        pl.col("value").cast(Y_DTYPE).alias(Y),
    )


WorldCup = Callable[[datetime, timedelta], pl.DataFrame]


@pytest.fixture(scope="session")
def worldcup() -> WorldCup:
    """``worldcup(start, span)``: WorldCup98 requests/minute (UTC ``ds``, ``y``) in ``[start, start+span)``.

    Only the CSV is cached (read once per session, ~0.2 s); each call returns a new slice.
    """

    def window(start: datetime, span: timedelta) -> pl.DataFrame:
        frame = _worldcup_full().filter((pl.col(DS) >= start) & (pl.col(DS) < start + span))
        if frame.is_empty():
            pytest.fail(f"no WorldCup98 rows in [{start}, {start + span})", pytrace=False)
        return frame

    return window


@pytest.fixture(scope="session")
def nab() -> Callable[[str], pl.DataFrame]:
    """``nab("realTraffic/occupancy_6005.csv")``: a NAB file as ``ds``/``y`` (raw, unsorted as stored)."""
    return _nab
