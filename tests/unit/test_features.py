"""features.pipeline: cleaning raw samples onto a regular grid, appending, and model features."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from helios_scaler.features.pipeline import (
    align_to_grid,
    append_new,
    calendar_features,
    lag_features,
    season_length,
)
from helios_scaler.features.schema import DS, DS_DTYPE, HOLE, Y_DTYPE, Y, empty_series

MINUTE = timedelta(minutes=1)
T = datetime(2024, 1, 1, tzinfo=UTC)


def raw(points: list[tuple[timedelta, float]]) -> pl.DataFrame:
    return pl.DataFrame(
        {DS: [T + offset for offset, _ in points], Y: [value for _, value in points]},
        schema={DS: DS_DTYPE, Y: Y_DTYPE},
    )


def minutes(*offsets: int) -> list[datetime]:
    return [T + offset * MINUTE for offset in offsets]


def assert_regular(frame: pl.DataFrame, step: timedelta) -> None:
    assert frame.schema == pl.Schema({DS: DS_DTYPE, Y: Y_DTYPE, HOLE: pl.Boolean})
    assert frame[DS].diff().drop_nulls().unique().to_list() == [step]
    assert frame[Y].null_count() == 0
    assert frame[Y].is_finite().all()


# --- align_to_grid -----------------------------------------------------------------------


def test_drops_nan_and_inf_and_counts_them() -> None:
    frame, report = align_to_grid(
        raw(
            [
                (0 * MINUTE, 1.0),
                (MINUTE, math.nan),
                (2 * MINUTE, 3.0),
                (3 * MINUTE, math.inf),
                (4 * MINUTE, 5.0),
            ]
        ),
        MINUTE,
    )
    assert report.raw_rows == 5
    assert report.dropped_non_finite == 2
    assert report.kept_fraction == pytest.approx(0.6)
    # The dropped steps are gaps now, filled by interpolation from their neighbours.
    assert frame[DS].to_list() == minutes(0, 1, 2, 3, 4)
    assert frame[Y].to_list() == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert report.filled == 2


def test_snaps_to_grid_and_newest_in_a_cell_wins_for_sorted_input() -> None:
    frame, report = align_to_grid(
        raw([(timedelta(seconds=10), 1.0), (timedelta(seconds=50), 5.0), (timedelta(seconds=70), 2.0)]),
        MINUTE,
    )
    assert frame[DS].to_list() == minutes(0, 1)
    assert frame[Y].to_list() == [5.0, 2.0]
    assert report.duplicates == 1


def test_exact_duplicate_timestamps_resolve_to_the_later_row() -> None:
    frame, report = align_to_grid(raw([(0 * MINUTE, 1.0), (0 * MINUTE, 2.0), (MINUTE, 3.0)]), MINUTE)
    assert frame[Y].to_list() == [2.0, 3.0]
    assert report.duplicates == 1


def test_newest_in_a_cell_wins_for_unsorted_input() -> None:
    # The 00:00:50 sample is newer than the 00:00:10 one, whatever the input order.
    frame, report = align_to_grid(
        raw([(timedelta(seconds=50), 5.0), (timedelta(seconds=10), 1.0), (timedelta(seconds=70), 2.0)]),
        MINUTE,
    )
    assert frame[DS].to_list() == minutes(0, 1)
    assert frame[Y].to_list() == [5.0, 2.0]
    assert report.duplicates == 1


def test_sorts_unsorted_input() -> None:
    frame, _ = align_to_grid(raw([(2 * MINUTE, 3.0), (0 * MINUTE, 1.0), (MINUTE, 2.0)]), MINUTE)
    assert frame[DS].to_list() == minutes(0, 1, 2)
    assert frame[Y].to_list() == [1.0, 2.0, 3.0]


def test_short_gap_filled_by_linear_interpolation() -> None:
    frame, report = align_to_grid(raw([(0 * MINUTE, 0.0), (MINUTE, 1.0), (5 * MINUTE, 9.0)]), MINUTE)
    assert frame[DS].to_list() == minutes(0, 1, 2, 3, 4, 5)
    assert frame[Y].to_list() == [0.0, 1.0, 3.0, 5.0, 7.0, 9.0]
    assert report.filled == 3
    assert report.hole_steps == 0


def test_gap_of_exactly_max_gap_steps_is_filled() -> None:
    frame, report = align_to_grid(raw([(0 * MINUTE, 0.0), (4 * MINUTE, 8.0)]), MINUTE, max_gap_steps=3)
    assert frame[Y].to_list() == [0.0, 2.0, 4.0, 6.0, 8.0]
    assert (report.filled, report.hole_steps) == (3, 0)


def test_a_long_gap_is_a_hole_filled_from_the_day_before_and_flagged() -> None:
    """A gap longer than max_gap_steps keeps the history: its steps take the value one day earlier
    and are flagged as a hole; short gaps are still interpolated and not flagged."""
    day = 24 * 60
    points = [(i * MINUTE, float(i % day)) for i in range(day + 5)]  # one day and 5 minutes of data
    points += [(i * MINUTE, 1000.0 + i) for i in range(day + 12, day + 14)]  # a 7-step hole, then data
    points += [(i * MINUTE, 5000.0) for i in (day + 16,)]  # a 2-step gap: interpolated
    frame, report = align_to_grid(raw(points), MINUTE, max_gap_steps=3)
    assert_regular(frame, MINUTE)
    assert frame.height == day + 17
    hole = frame[HOLE].to_list()
    assert [i for i, flagged in enumerate(hole) if flagged] == list(range(day + 5, day + 12))
    y = frame[Y].to_list()
    assert y[day + 5 : day + 12] == [float(i) for i in range(5, 12)]  # yesterday, same minute
    assert y[day + 14 : day + 16] == pytest.approx([3302.0, 4151.0])  # 2453 -> 5000 in thirds
    assert (report.hole_steps, report.filled) == (7, 2)


def test_a_hole_in_the_first_day_is_interpolated_and_flagged() -> None:
    frame, report = align_to_grid(raw([(0 * MINUTE, 0.0), (6 * MINUTE, 6.0)]), MINUTE, max_gap_steps=3)
    assert frame[Y].to_list() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert frame[HOLE].to_list() == [False, True, True, True, True, True, False]
    assert report.hole_steps == 5


def test_other_steps_align_to_their_own_grid() -> None:
    step = timedelta(minutes=5)
    frame, _ = align_to_grid(raw([(timedelta(minutes=2), 1.0), (timedelta(minutes=17), 4.0)]), step)
    assert frame[DS].to_list() == minutes(0, 5, 10, 15)
    assert frame[Y].to_list() == [1.0, 2.0, 3.0, 4.0]


def test_empty_input() -> None:
    frame, report = align_to_grid(empty_series(), MINUTE)
    assert frame.is_empty()
    assert frame.schema == pl.Schema({DS: DS_DTYPE, Y: Y_DTYPE, HOLE: pl.Boolean})
    assert report == type(report)(0, 0, 0, 0, 0)
    assert report.kept_fraction == 1.0


def test_all_non_finite_input_is_empty() -> None:
    frame, report = align_to_grid(raw([(0 * MINUTE, math.nan), (MINUTE, -math.inf)]), MINUTE)
    assert frame.is_empty()
    assert report.dropped_non_finite == 2
    assert report.kept_fraction == 0.0


def test_worldcup98_short_gaps_are_filled(worldcup) -> None:
    # 1998-05-17 has five gaps of 1-3 missing minutes (8 minutes in all; traces README).
    day = worldcup(datetime(1998, 5, 17, tzinfo=UTC), timedelta(days=1))
    assert day.height == 1440 - 8
    frame, report = align_to_grid(day, MINUTE)
    assert_regular(frame, MINUTE)
    assert frame.height == 1440
    assert (report.filled, report.hole_steps, report.duplicates) == (8, 0, 0)
    # 06:09 is missing: the mean of its neighbours.
    at = {row[DS]: row[Y] for row in day.iter_rows(named=True)}
    filled = frame.filter(pl.col(DS) == datetime(1998, 5, 17, 6, 9, tzinfo=UTC))[Y].item()
    assert filled == pytest.approx(
        (at[datetime(1998, 5, 17, 6, 8, tzinfo=UTC)] + at[datetime(1998, 5, 17, 6, 10, tzinfo=UTC)]) / 2
    )


def test_worldcup98_a_gap_longer_than_allowed_is_a_hole(worldcup) -> None:
    # With at most 2 missing steps allowed, the 3-minute gap before 09:46 is a hole; the day is kept.
    day = worldcup(datetime(1998, 5, 17, tzinfo=UTC), timedelta(days=1))
    frame, report = align_to_grid(day, MINUTE, max_gap_steps=2)
    assert_regular(frame, MINUTE)
    assert frame[DS][0] == datetime(1998, 5, 17, tzinfo=UTC)
    assert frame[DS][-1] == datetime(1998, 5, 17, 23, 59, tzinfo=UTC)
    holes = frame.filter(pl.col(HOLE))[DS].to_list()
    assert holes == [datetime(1998, 5, 17, 9, 43 + i, tzinfo=UTC) for i in range(3)]
    assert (report.hole_steps, report.filled) == (3, 5)


def test_nab_elb_shuffled_equals_sorted(nab) -> None:
    # elb_request_count has 8 single missing 5-minute steps (traces README).
    series = nab("realAWSCloudwatch/elb_request_count_8c0756.csv")
    step = timedelta(minutes=5)
    frame, report = align_to_grid(series, step)
    assert_regular(frame, step)
    assert (frame.height, report.filled, report.duplicates) == (4040, 8, 0)
    shuffled, _ = align_to_grid(series.sample(fraction=1.0, shuffle=True, seed=7), step)
    assert shuffled.equals(frame)


def test_nab_traffic_keeps_its_whole_history_across_long_gaps(nab) -> None:
    series = nab("realTraffic/occupancy_6005.csv")
    step = timedelta(minutes=5)
    frame, report = align_to_grid(series, step)
    assert_regular(frame, step)
    newest, oldest = series[DS].max(), series[DS].min()
    assert frame[DS][-1] == newest.replace(second=0) - timedelta(minutes=newest.minute % 5)
    assert frame[DS][0] == oldest.replace(second=0) - timedelta(minutes=oldest.minute % 5)
    assert report.hole_steps > 0
    # Every grid cell with data is kept and not flagged; the flagged cells are exactly the holes.
    assert frame.filter(~pl.col(HOLE)).height == series[DS].dt.truncate("5m").n_unique() + report.filled
    assert frame.filter(pl.col(HOLE)).height == report.hole_steps


# --- append_new --------------------------------------------------------------------------


def grid(start: int, values: list[float]) -> pl.DataFrame:
    return pl.DataFrame({DS: minutes(*range(start, start + len(values))), Y: values}, schema={DS: DS_DTYPE, Y: Y_DTYPE})


def test_append_new_overlap_new_wins() -> None:
    merged = append_new(grid(0, [0.0, 1.0, 2.0, 3.0]), grid(2, [20.0, 30.0, 40.0]), max_points=100)
    assert merged[DS].to_list() == minutes(0, 1, 2, 3, 4)
    assert merged[Y].to_list() == [0.0, 1.0, 20.0, 30.0, 40.0]


def test_append_new_trims_to_the_newest_max_points() -> None:
    merged = append_new(grid(0, [0.0, 1.0, 2.0]), grid(3, [3.0, 4.0]), max_points=3)
    assert merged[DS].to_list() == minutes(2, 3, 4)
    assert merged[Y].to_list() == [2.0, 3.0, 4.0]


def test_append_new_with_an_empty_side() -> None:
    history = grid(0, [0.0, 1.0, 2.0])
    assert append_new(empty_series(), history, max_points=2).equals(grid(1, [1.0, 2.0]))
    assert append_new(history, empty_series(), max_points=10).equals(history)


# --- season_length, lag_features, calendar_features --------------------------------------


@pytest.mark.parametrize(
    ("step", "period", "expected"),
    [
        (MINUTE, timedelta(days=1), 1440),
        (timedelta(minutes=5), timedelta(days=1), 288),
        (timedelta(seconds=30), timedelta(days=1), 2880),
        (timedelta(hours=1), timedelta(days=7), 168),
        (timedelta(minutes=7), timedelta(days=1), 206),
        (timedelta(hours=2), timedelta(hours=1), 1),
    ],
)
def test_season_length(step: timedelta, period: timedelta, expected: int) -> None:
    assert season_length(step, period) == expected


def test_lag_features_columns_and_values() -> None:
    y = pl.Series(Y, [1.0, 2.0, 4.0, 7.0, 11.0])
    features = lag_features(y, pl.Series(DS, minutes(0, 1, 2, 3, 4)), season=3, lags=(1, 2), windows=(2,))
    assert features.columns == ["lag_1", "lag_2", "mean_2", "std_2", "season_next", "season_now"]
    assert features["lag_1"].to_list() == [None, -1.0, -2.0, -3.0, -4.0]
    assert features["lag_2"].to_list() == [None, None, -3.0, -5.0, -7.0]
    assert features["mean_2"].to_list() == [None, -0.5, -1.0, -1.5, -2.0]
    assert features["std_2"].to_list()[1:] == pytest.approx([x / math.sqrt(2) for x in (1.0, 2.0, 3.0, 4.0)])
    assert features["std_2"][0] is None
    # One season before the next step (t + 1 - 3) and before this one (t - 3), minus y[t].
    assert features["season_next"].to_list() == [None, None, -3.0, -5.0, -7.0]
    assert features["season_now"].to_list() == [None, None, None, -6.0, -9.0]


def test_calendar_features() -> None:
    ds = pl.Series(
        DS,
        [
            datetime(1998, 6, 10, 0, 0, tzinfo=UTC),  # Wednesday
            datetime(1998, 6, 13, 13, 37, tzinfo=UTC),  # Saturday
            datetime(1998, 6, 14, 23, 59, tzinfo=UTC),  # Sunday
        ],
        dtype=DS_DTYPE,
    )
    features = calendar_features(ds)
    assert features.columns == ["minute_of_day", "weekday"]
    assert features["minute_of_day"].to_list() == [0, 13 * 60 + 37, 23 * 60 + 59]
    assert features["weekday"].to_list() == [3, 6, 7]
