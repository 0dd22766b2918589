"""events.uplift: per-kind uplift curves learnt only from finished events, and the factors they give."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest
from traces import SHARED, TRACES

from helios_scaler.errors import InputDataError
from helios_scaler.events.calendar import Event, load_calendar
from helios_scaler.events.uplift import UpliftCurves, factors, in_event_window, learn_uplift
from helios_scaler.features.pipeline import align_to_grid
from helios_scaler.features.schema import DS, DS_DTYPE, HOLE, Y_DTYPE, Y

STEP = timedelta(minutes=1)
T0 = datetime(2026, 6, 1, tzinfo=UTC)
DAY = 24 * 60
LEVEL = 100.0


def at(row: int) -> datetime:
    return T0 + row * STEP


def match(row: int, name: str = "m", kind: str = "match", minutes: int = 60) -> Event:
    return Event(at(row), at(row) + timedelta(minutes=minutes), name, kind)


def series(rows: int, surges: dict[int, float], holes: tuple[int, ...] = ()) -> pl.DataFrame:
    """A flat level of 100, multiplied by ``surges[start]`` over the 60 rows from each ``start``."""
    y = np.full(rows, LEVEL)
    for start, multiple in surges.items():
        y[start : start + 60] *= multiple
    hole = np.zeros(rows, dtype=bool)
    hole[list(holes)] = True
    return pl.DataFrame(
        {
            DS: pl.datetime_range(T0, at(rows - 1), STEP, eager=True).cast(DS_DTYPE),
            Y: pl.Series(y, dtype=Y_DTYPE),
            HOLE: hole,
        }
    )


# Two finished events (06:00 and 12:00 on day 0) tripling the load; a third one at 20:00.
FIRST, SECOND, THIRD = 6 * 60, 12 * 60, 20 * 60
TWO = [match(FIRST, "a"), match(SECOND, "b")]


def curve_of(curves: UpliftCurves, kind: str = "match") -> dict[int, float]:
    return dict(zip(curves.offsets(kind).tolist(), curves.curves[kind].tolist(), strict=True))


def test_two_finished_events_give_a_curve_of_three_inside_and_one_before() -> None:
    curves = learn_uplift(series(2 * DAY, {FIRST: 3.0, SECOND: 3.0}), TWO, STEP, at(DAY))
    assert curves.pre_steps == 10
    assert dict(curves.events_used) == {"match": 2}
    curve = curve_of(curves)
    assert min(curve) == -10 and max(curve) == 60
    assert all(curve[offset] == pytest.approx(1.0) for offset in range(-10, 0))
    assert all(curve[offset] == pytest.approx(3.0) for offset in range(60))
    with pytest.raises(ValueError):  # the arrays are read-only
        curves.curves["match"][0] = 7.0


def test_pre_steps_is_at_least_one_and_rounds_up() -> None:
    frame = series(2 * DAY, {FIRST: 3.0, SECOND: 3.0})
    assert learn_uplift(frame, TWO, STEP, at(DAY), pre=timedelta(seconds=10)).pre_steps == 1
    assert learn_uplift(frame, TWO, STEP, at(DAY), pre=timedelta(seconds=90)).pre_steps == 2


def test_an_unfinished_event_is_never_used() -> None:
    """Surges of 2 and 4 (median 3); the third one, of 5, moves the median to 4 once it is used."""
    frame = series(2 * DAY, {FIRST: 2.0, SECOND: 4.0, THIRD: 5.0})
    baseline = learn_uplift(frame, TWO, STEP, at(DAY))
    events = [*TWO, match(THIRD, "c")]
    # The curve window ends at offset +60: the event is finished once that row is in the past.
    for as_of in (at(THIRD + 30), at(THIRD + 60)):
        early = learn_uplift(frame, events, STEP, as_of)
        assert dict(early.events_used) == {"match": 2}
        np.testing.assert_array_equal(early.curves["match"], baseline.curves["match"])
    assert curve_of(baseline)[30] == pytest.approx(3.0)
    late = learn_uplift(frame, events, STEP, at(THIRD + 61))
    assert dict(late.events_used) == {"match": 3}
    assert curve_of(late)[30] == pytest.approx(4.0)


@pytest.mark.parametrize("hole_row", [THIRD - 25, THIRD - 5, THIRD + 30, THIRD + 60])
def test_an_event_whose_windows_touch_a_hole_is_skipped(hole_row: int) -> None:
    """A hole in the reference window (-40..-11), the pre-start ramp, the event, or the last row."""
    events = [*TWO, match(THIRD, "c")]
    frame = series(2 * DAY, {FIRST: 3.0, SECOND: 3.0, THIRD: 5.0}, holes=(hole_row,))
    curves = learn_uplift(frame, events, STEP, at(DAY))
    assert dict(curves.events_used) == {"match": 2}
    clean = learn_uplift(frame.with_columns(pl.lit(False).alias(HOLE)), events, STEP, at(DAY))
    assert dict(clean.events_used) == {"match": 3}


def test_an_event_partly_outside_the_frame_or_on_a_zero_level_is_skipped() -> None:
    frame = series(2 * DAY, {20: 3.0, FIRST: 3.0, SECOND: 3.0})
    near_start = match(20, "no reference before row 0")
    before_frame = match(-500, "before the data")
    assert dict(learn_uplift(frame, [near_start, before_frame, *TWO], STEP, at(DAY)).events_used) == {"match": 2}
    zero = frame.with_columns(pl.when(pl.col(DS) < at(FIRST)).then(0.0).otherwise(pl.col(Y)).alias(Y))
    assert dict(learn_uplift(zero, TWO, STEP, at(DAY)).events_used) == {"match": 1}


def test_the_median_keeps_one_outlier_event_from_moving_the_curve() -> None:
    frame = series(2 * DAY, {FIRST: 3.0, SECOND: 3.0, THIRD: 10.0})
    curves = learn_uplift(frame, [*TWO, match(THIRD, "outlier")], STEP, at(DAY))
    assert dict(curves.events_used) == {"match": 3}
    curve = curve_of(curves)
    assert all(curve[offset] == pytest.approx(3.0) for offset in range(60))
    assert all(curve[offset] == pytest.approx(1.0) for offset in range(-10, 0))


def test_the_curve_lasts_as_long_as_the_longest_event_of_its_kind() -> None:
    """A longer event of the kind, even one in the future, sets the curve's length."""
    frame = series(3 * DAY, {FIRST: 3.0, SECOND: 3.0})
    curves = learn_uplift(frame, [*TWO, match(2 * DAY, "long", minutes=90)], STEP, at(DAY))
    assert curves.post_steps("match") == 90
    assert len(curves.curves["match"]) == 10 + 90 + 1


def learned() -> UpliftCurves:
    return learn_uplift(series(2 * DAY, {FIRST: 3.0, SECOND: 3.0}), TWO, STEP, at(DAY))


def test_factors_bring_in_a_future_event_ahead_of_it() -> None:
    """Origin 5 steps before a start beyond the end of the data: 1 before the start, ~3 from it on."""
    start = 2 * DAY + 100  # the frame has 2 * DAY rows: the event is only in the calendar
    origin = start - 5
    out = factors(learned(), [match(start, "future")], T0, np.array([origin], dtype=np.int64), 20)
    assert out.shape == (1, 20)
    targets = origin - 1 + np.arange(1, 21)
    np.testing.assert_allclose(out[0, targets < start], 1.0)
    np.testing.assert_allclose(out[0, targets >= start], 3.0)
    assert (targets < start).sum() == 5


def test_factors_inside_an_event_are_one_and_windows_are_flagged() -> None:
    curves = learned()
    start = 2 * DAY + 100
    events = [match(start, "future")]
    origins = np.array([start + 21, start - 5, start - 500], dtype=np.int64)  # inside, ahead of, far from it
    out = factors(curves, events, T0, origins, 20)
    np.testing.assert_allclose(out[0], 1.0)  # the base forecast already starts from the uplifted level
    assert not np.allclose(out[1], 1.0)
    np.testing.assert_array_equal(out[2], 1.0)
    np.testing.assert_array_equal(in_event_window(curves, events, T0, origins, 20), [True, True, False])


def test_overlapping_windows_take_the_largest_uplift() -> None:
    """At row a+25, event a is at +25 (3) and event b at -5 (1): 3 wins whatever the order."""
    curves = learned()
    a = 2 * DAY
    origin = a - 30  # rows a-31 .. a-31+h
    for events in ([match(a, "a"), match(a + 30, "b")], [match(a + 30, "b"), match(a, "a")]):
        out = factors(curves, events, T0, np.array([origin], dtype=np.int64), 60)
        target = a + 25
        assert out[0, target - (origin - 1) - 1] == pytest.approx(3.0)


def test_a_kind_without_a_finished_event_gives_ones() -> None:
    frame = series(2 * DAY, {FIRST: 3.0, SECOND: 3.0})
    launches = [match(DAY + 100, "l1", kind="launch"), match(DAY + 300, "l2", kind="launch")]
    curves = learn_uplift(frame, [*TWO, *launches], STEP, at(DAY))  # the launches are still to come
    assert dict(curves.events_used) == {"match": 2}
    assert "launch" not in curves.curves
    origins = np.arange(1, 2 * DAY, dtype=np.int64)
    np.testing.assert_array_equal(factors(curves, launches, T0, origins, 10), 1.0)
    assert not in_event_window(curves, launches, T0, origins, 10).any()
    empty = learn_uplift(frame, launches, STEP, at(FIRST))
    assert dict(empty.curves) == {} and dict(empty.events_used) == {}
    np.testing.assert_array_equal(factors(empty, TWO, T0, origins, 10), 1.0)


def test_offsets_other_than_utc_land_on_the_same_steps() -> None:
    plus_two = timezone(timedelta(hours=2))
    frame = series(2 * DAY, {FIRST: 3.0, SECOND: 3.0})
    shifted = [Event(e.start.astimezone(plus_two), e.end.astimezone(plus_two), e.name, e.kind) for e in TWO]
    assert shifted[0].start.utcoffset() == timedelta(hours=2)
    utc, local = learn_uplift(frame, TWO, STEP, at(DAY)), learn_uplift(frame, shifted, STEP, at(DAY))
    np.testing.assert_array_equal(local.curves["match"], utc.curves["match"])
    future = Event(at(2 * DAY + 100), at(2 * DAY + 160), "f", "match")
    future_local = Event(future.start.astimezone(plus_two), future.end.astimezone(plus_two), "f", "match")
    off_grid = Event(future.start + timedelta(seconds=20), future.end, "f", "match")  # snaps to the nearest step
    origins = np.arange(2 * DAY, 2 * DAY + 200, dtype=np.int64)
    expected = factors(utc, [future], T0, origins, 20)
    assert not np.allclose(expected, 1.0)
    for event in (future_local, off_grid):
        np.testing.assert_array_equal(factors(utc, [event], T0.astimezone(plus_two), origins, 20), expected)


def test_bad_input_is_refused() -> None:
    frame = series(2 * DAY, {FIRST: 3.0, SECOND: 3.0})
    with pytest.raises(InputDataError, match="regular grid"):
        learn_uplift(frame.filter(pl.col(DS) != at(50)), TWO, STEP, at(DAY))
    with pytest.raises(InputDataError, match="regular grid"):
        learn_uplift(frame, TWO, timedelta(minutes=5), at(DAY))
    with pytest.raises(ValueError, match="UTC offset"):
        learn_uplift(frame, TWO, STEP, datetime(2026, 6, 2))
    with pytest.raises(ValueError, match="h must be"):
        factors(learned(), TWO, T0, np.array([5], dtype=np.int64), 0)


def test_factors_are_fast_enough_for_a_backtest() -> None:
    """40,000 origins x h=20 with 60 events: one pass per event, well under a second."""
    curves = learned()
    events = [match(2 * DAY + 600 * i + 7, f"e{i}", minutes=60 + i) for i in range(60)]
    origins = np.arange(2 * DAY, 2 * DAY + 40_000, dtype=np.int64)
    began = time.perf_counter()
    out = factors(curves, events, T0, origins, 20)
    flagged = in_event_window(curves, events, T0, origins, 20)
    elapsed = time.perf_counter() - began
    assert out.shape == (40_000, 20)
    assert 0 < flagged.mean() < 1
    assert elapsed < 1.0, f"factors + in_event_window took {elapsed:.2f} s"


def test_the_worldcup98_match_curve_rises_after_kick_off() -> None:
    raw = pl.read_csv(TRACES / "worldcup98" / "invocation_count.csv", try_parse_dates=True)
    raw = raw.select(pl.col("period").dt.replace_time_zone("UTC").alias(DS), pl.col("count").alias(Y))
    frame, _ = align_to_grid(raw, STEP)  # the trace has a few missing minutes
    calendar = load_calendar(SHARED / "events" / "worldcup98_kickoffs.csv")
    as_of = datetime(1998, 6, 20, tzinfo=UTC)
    curves = learn_uplift(frame, calendar.events, STEP, as_of)
    finished = sum(event.start + timedelta(minutes=151) <= as_of for event in calendar.events)
    assert 20 <= curves.events_used["match"] <= finished  # 24 of 24 when written
    curve = curve_of(curves)
    assert curve[-10] == pytest.approx(1.0, abs=0.1)  # ~0.99 when written: the reference is the pre-match level
    first_hour = np.median([curve[offset] for offset in range(5, 61)])
    assert first_hour > 1.2  # ~1.35 when written
    assert curve[30] > curve[0] + 0.15  # ~1.05 at kick-off, ~1.37 half an hour in


def test_a_prior_multiplier_serves_until_an_event_of_the_kind_has_finished() -> None:
    """The calendar's ``uplift`` column: a flat prior from the start to the end of the kind's events,
    replaced by the learnt curve as soon as one event of the kind is over."""
    launch = Event(at(FIRST), at(FIRST) + timedelta(minutes=60), "launch", "launch", uplift=2.5)
    frame = series(2 * DAY, {FIRST: 3.0})
    before = learn_uplift(frame, [launch], STEP, at(FIRST - 30))
    assert before.events_used["launch"] == 0
    prior = curve_of(before, "launch")
    assert prior[-5] == 1.0 and prior[0] == 2.5 and prior[60] == 2.5
    rising = factors(before, [launch], T0, np.array([FIRST - 2]), 4)  # newest row FIRST - 3
    np.testing.assert_allclose(rising, [[1.0, 1.0, 2.5, 2.5]])
    after = learn_uplift(frame, [launch], STEP, at(FIRST + 120))
    assert after.events_used["launch"] == 1
    assert curve_of(after, "launch")[30] == pytest.approx(3.0)  # taught by the real event, not the prior
