"""Cleaning raw samples onto a regular grid, and model features.  Pure polars, no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import polars as pl

from helios_scaler.features.schema import DS, DS_DTYPE, Y_DTYPE, Y

#: Gaps up to this many missing steps are filled by linear interpolation; a longer gap
#: cuts the series, and only the part after the last long gap is kept.
DEFAULT_MAX_GAP_STEPS = 10


@dataclass(frozen=True)
class CleanReport:
    """What :func:`align_to_grid` did, for logs and metrics."""

    raw_rows: int
    dropped_non_finite: int
    duplicates: int
    filled: int
    cut_before_gap: int

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
    ``max_gap_steps`` missing steps by linear interpolation and keeps only the stretch
    after the last longer gap.  The result has no nulls and a strictly regular ``ds``.
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
    if snapped.is_empty():
        return snapped, CleanReport(raw.height, frame.height - finite.height, duplicates, 0, 0)
    grid = snapped.upsample(DS, every=_every(step))
    missing = grid[Y].is_null()
    # Length of the run of missing steps each row belongs to.
    run_id = (missing != missing.shift(1)).cum_sum()
    run_len = grid.select(pl.len().over(run_id).alias("n"))["n"]
    long_gap = missing & (run_len > max_gap_steps)
    cut = 0
    if long_gap.any():
        last_long = int(long_gap.arg_true()[-1])
        cut = int((~missing[: last_long + 1]).sum())
        grid = grid.slice(last_long + 1)
        missing = missing.slice(last_long + 1)
    filled = int(missing.sum())
    grid = grid.with_columns(pl.col(Y).interpolate())
    report = CleanReport(raw.height, frame.height - finite.height, duplicates, filled, cut)
    return grid, report


def append_new(history: pl.DataFrame, new: pl.DataFrame, max_points: int) -> pl.DataFrame:
    """Append newer grid points to ``history`` (new values win on overlap), keep the newest ``max_points``."""
    if history.is_empty():
        merged = new
    elif new.is_empty():
        merged = history
    else:
        first_new = new[DS][0]
        merged = pl.concat([history.filter(pl.col(DS) < first_new), new])
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
