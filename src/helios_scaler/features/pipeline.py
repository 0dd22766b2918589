"""Cleaning raw samples onto a regular grid, and model features.  Pure polars, no I/O.

Short gaps (up to ``max_gap_steps`` missing steps) are filled by linear interpolation.  A
longer gap — an outage, a retention hole — is a *hole*, not a restart: its steps are filled
with the value one day earlier (so every model sees a regular series and keeps its history)
and flagged in the :data:`~helios_scaler.features.schema.HOLE` column, which model selection
and the backtest use to leave them out of every score.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import polars as pl

from helios_scaler.features.schema import DS, DS_DTYPE, HOLE, Y_DTYPE, Y

#: Gaps up to this many missing steps are filled by linear interpolation; a longer gap is a
#: hole, filled from the day before and flagged.
DEFAULT_MAX_GAP_STEPS = 10


@dataclass(frozen=True)
class CleanReport:
    """What :func:`align_to_grid` did, for logs and metrics."""

    raw_rows: int
    dropped_non_finite: int
    duplicates: int
    filled: int
    #: Grid steps inside long gaps (holes), filled from the day before and flagged.
    hole_steps: int

    @property
    def kept_fraction(self) -> float:
        return 1.0 if self.raw_rows == 0 else 1.0 - self.dropped_non_finite / self.raw_rows


def _every(step: timedelta) -> str:
    return f"{int(step.total_seconds() * 1_000_000)}us"


def align_to_grid(
    raw: pl.DataFrame, step: timedelta, max_gap_steps: int = DEFAULT_MAX_GAP_STEPS
) -> tuple[pl.DataFrame, CleanReport]:
    """Put raw ``ds``/``y`` samples on the ``step`` grid.

    Drops NaN/Inf, sorts, snaps timestamps down to the grid (the last sample in a grid
    cell wins, so duplicates resolve to the newest), fills gaps of up to
    ``max_gap_steps`` missing steps by linear interpolation and longer gaps (holes) from
    the day before (see :func:`fill_gaps`).  The result has no nulls in ``y``, a strictly
    regular ``ds`` and the ``hole`` flags.
    """
    frame = raw.select(pl.col(DS).cast(DS_DTYPE), pl.col(Y).cast(Y_DTYPE))
    finite = frame.filter(pl.col(Y).is_finite())
    snapped = (
        finite.sort(DS, maintain_order=True)
        .with_columns(pl.col(DS).dt.truncate(_every(step)))
        .group_by(DS, maintain_order=True)
        .agg(pl.col(Y).last())
    )
    duplicates = finite.height - snapped.height
    dropped = frame.height - finite.height
    if snapped.is_empty():
        return snapped.with_columns(pl.lit(False).alias(HOLE)), CleanReport(raw.height, dropped, duplicates, 0, 0)
    grid = snapped.upsample(DS, every=_every(step)).with_columns(pl.lit(False).alias(HOLE))
    missing = int(grid[Y].null_count())
    grid = fill_gaps(grid, step, max_gap_steps)
    holes = int(grid[HOLE].sum())
    return grid, CleanReport(raw.height, dropped, duplicates, missing - holes, holes)


def fill_gaps(grid: pl.DataFrame, step: timedelta, max_gap_steps: int = DEFAULT_MAX_GAP_STEPS) -> pl.DataFrame:
    """Fill the null ``y`` of a regular ``ds``/``y``/``hole`` grid.

    A run of at most ``max_gap_steps`` nulls is interpolated linearly.  A longer run is a hole:
    each of its steps takes the value one day (one daily season) earlier — itself possibly
    filled, so a hole longer than a day repeats the last day before it — or, within the first
    day of the data, the linear interpolation across the hole; its ``hole`` flag is set.
    """
    missing = grid[Y].is_null()
    if not missing.any():
        return grid
    # Length of the run of missing steps each row belongs to.
    run_id = (missing != missing.shift(1)).cum_sum()
    run_len = grid.select(pl.len().over(run_id).alias("n"))["n"]
    long_gap = (missing & (run_len > max_gap_steps)).to_numpy()
    y = grid[Y].interpolate().fill_null(strategy="forward").fill_null(strategy="backward").to_numpy().copy()
    if long_gap.any():
        season = season_length(step)
        for index in np.flatnonzero(long_gap):
            if index >= season:
                y[index] = y[index - season]
    return grid.with_columns(pl.Series(Y, y, dtype=Y_DTYPE), (pl.col(HOLE) | pl.Series(long_gap)).alias(HOLE))


def append_new(
    history: pl.DataFrame, new: pl.DataFrame, max_points: int, step: timedelta | None = None
) -> pl.DataFrame:
    """Append newer grid points to ``history`` (new values win on overlap), keep the newest ``max_points``.

    With ``step``, a stretch missing between the two (the source answered nothing for it) is
    filled as :func:`fill_gaps` fills gaps: the history is kept across a hole.
    """
    if history.is_empty():
        merged = new
    elif new.is_empty():
        merged = history
    else:
        first_new = new[DS][0]
        merged = pl.concat([history.filter(pl.col(DS) < first_new), new], how="diagonal_relaxed")
        if HOLE in merged.columns:
            merged = merged.with_columns(pl.col(HOLE).fill_null(False))
        if step is not None and first_new > history[DS][-1] + step:
            merged = fill_gaps(
                merged.upsample(DS, every=_every(step)).with_columns(pl.col(HOLE).fill_null(False)), step
            )
    return merged.tail(max_points)


def season_length(step: timedelta, period: timedelta = timedelta(days=1)) -> int:
    """Steps per seasonal period (a day by default)."""
    return max(1, round(period / step))


def lag_features(
    y: pl.Series, ds: pl.Series, season: int, lags: tuple[int, ...], windows: tuple[int, ...]
) -> pl.DataFrame:
    """Features describing the series at each row, relative to the row's own value.

    Everything is expressed as a difference from ``y`` at that row so a tree model
    learns changes, not levels (levels drift: WorldCup98 grows twentyfold).
    """
    frame = pl.DataFrame({DS: ds, Y: y})
    exprs: list[pl.Expr] = [(pl.col(Y).shift(lag) - pl.col(Y)).alias(f"lag_{lag}") for lag in lags]
    for window in windows:
        exprs.append((pl.col(Y).rolling_mean(window) - pl.col(Y)).alias(f"mean_{window}"))
        exprs.append(pl.col(Y).rolling_std(window).alias(f"std_{window}"))
    exprs.append((pl.col(Y).shift(season - 1) - pl.col(Y)).alias("season_next"))
    exprs.append((pl.col(Y).shift(season) - pl.col(Y)).alias("season_now"))
    return frame.select(exprs)


def calendar_features(ds: pl.Series) -> pl.DataFrame:
    """Minute of day and day of week of each timestamp."""
    frame = pl.DataFrame({DS: ds})
    return frame.select(
        (pl.col(DS).dt.hour().cast(pl.Int32) * 60 + pl.col(DS).dt.minute().cast(pl.Int32)).alias("minute_of_day"),
        pl.col(DS).dt.weekday().cast(pl.Int32).alias("weekday"),
    )
