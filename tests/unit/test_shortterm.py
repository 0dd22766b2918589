"""Short-term rules: exact values on hand-made series, the batched-origin contract, no look-ahead."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from helios_scaler.errors import ModelError
from helios_scaler.features.schema import DS, DS_DTYPE, Y_DTYPE, Y
from helios_scaler.models.base import Forecaster
from helios_scaler.models.shortterm import (
    LevelSeasonal,
    Line,
    Persistence,
    Trend,
    short_term_candidates,
)

START = datetime(2024, 1, 1, tzinfo=UTC)
SEASON = 6
BASE_ALIASES = ["persistence", "trend_3", "trend_6", "trend_12", "line_3", "line_6", "line_12"]


def series(y: list[float] | np.ndarray) -> pl.DataFrame:
    """A regular 1-minute ``ds``/``y`` frame."""
    n = len(y)
    return pl.DataFrame(
        {
            DS: pl.datetime_range(START, START + timedelta(minutes=n - 1), "1m", eager=True).cast(DS_DTYPE),
            Y: pl.Series(np.asarray(y, dtype=np.float64)).cast(Y_DTYPE),
        }
    )


def origins(*o: int) -> np.ndarray:
    return np.array(o, dtype=np.int64)


def noisy(n: int, seed: int = 0) -> np.ndarray:
    """A positive series with a daily (``SEASON``) shape, a drift and noise."""
    rng = np.random.default_rng(seed)
    i = np.arange(n)
    return 50 + 20 * np.sin(2 * np.pi * i / SEASON) + 0.3 * i + rng.normal(0, 5, n)


# --- persistence ---------------------------------------------------------------------------


def test_persistence_holds_the_last_known_value() -> None:
    frame = series([1.0, 5.0, 3.0])
    model = Persistence().fit(frame)
    assert model.alias == "persistence"
    np.testing.assert_array_equal(model.forecast(frame, 3), [3.0, 3.0, 3.0])
    np.testing.assert_array_equal(model.forecast_many(frame, origins(1, 2, 3), 2), [[1.0, 1.0], [5.0, 5.0], [3.0, 3.0]])


def test_persistence_needs_one_point() -> None:
    with pytest.raises(ModelError, match="persistence needs at least 1 points, got 0"):
        Persistence().fit(series([]))


# --- trend and line ------------------------------------------------------------------------


@pytest.mark.parametrize("window", [3, 6, 12])
def test_trend_and_line_continue_a_perfect_line(window: int) -> None:
    y = 2.0 * np.arange(30) + 1.0
    frame = series(y)
    expected = 2.0 * np.arange(30, 35) + 1.0
    for model in (Trend(window), Line(window)):
        np.testing.assert_allclose(model.fit(frame).forecast(frame, 5), expected, rtol=0, atol=1e-12)


def test_trend_and_line_anchor_differently_on_a_noisy_series() -> None:
    # Points 0, 3, 1, 4 at index 0..3: slope = (-1.5*0 - 0.5*3 + 0.5*1 + 1.5*4) / 5 = 1,
    # mean 2, so the line's value at the last point is 2 + 1 * 3/2 = 3.5 (the last point is 4).
    frame = series([0.0, 3.0, 1.0, 4.0])
    np.testing.assert_allclose(Trend(3).fit(frame).forecast(frame, 3), [5.0, 6.0, 7.0])
    np.testing.assert_allclose(Line(3).fit(frame).forecast(frame, 3), [4.5, 5.5, 6.5])


def test_trend_is_clipped_at_zero() -> None:
    # Slope -3 from 4: 1, -2, -5 -> 1, 0, 0.
    frame = series([13.0, 10.0, 7.0, 4.0])
    np.testing.assert_allclose(Trend(3).fit(frame).forecast(frame, 3), [1.0, 0.0, 0.0])
    np.testing.assert_allclose(Line(3).fit(frame).forecast(frame, 3), [1.0, 0.0, 0.0])


def test_trend_and_line_are_persistence_without_a_full_window() -> None:
    frame = series([0.0, 3.0, 1.0, 4.0])
    # Origin 3 has three points before it; window 3 needs four.
    np.testing.assert_array_equal(Trend(3).forecast_many(frame, origins(1, 3), 2), [[0.0, 0.0], [1.0, 1.0]])
    np.testing.assert_array_equal(Line(3).forecast_many(frame, origins(1, 3), 2), [[0.0, 0.0], [1.0, 1.0]])


def test_trend_and_line_aliases_and_minimum_length() -> None:
    assert (Trend(6).alias, Line(12).alias) == ("trend_6", "line_12")
    assert (Trend(6).min_points, Line(12).min_points) == (7, 13)
    with pytest.raises(ModelError, match="trend_3 needs at least 4 points, got 3"):
        Trend(3).fit(series([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="window must be >= 1"):
        Line(0)


# --- level-seasonal ------------------------------------------------------------------------

#: One "day" of six steps, then the same ramp 20 higher (additive) or twice as high (multiplicative).
DAY = [10.0, 20.0, 30.0, 40.0, 50.0, 60.0]
SHIFTED = [*DAY, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0]
SCALED = [*DAY, 20.0, 40.0, 60.0, 80.0, 100.0, 120.0]


def test_additive_moves_yesterdays_shape_to_todays_level() -> None:
    # Origin 9: t = 8, y[t] = 50.  sm[2] = 30, sm[3] = 40, sm[4] = 50, sm[5] = (50 + 60 + 30) / 3.
    # 50 + 40 - 30 = 60, 50 + 50 - 30 = 70 (the true next values), 50 + 140/3 - 30 = 200/3.
    model = LevelSeasonal(SEASON, "additive", "daily")
    assert model.alias == "sadd_daily"
    forecast = model.fit(series(SHIFTED)).forecast_many(series(SHIFTED), origins(9), 3)
    np.testing.assert_allclose(forecast, [[60.0, 70.0, 200.0 / 3]])


def test_multiplicative_scales_yesterdays_shape_to_todays_level() -> None:
    # Origin 9: t = 8, y[t] = 60.  sm[2] = 30, sm[3] = 40, sm[4] = 50, sm[5] = (50 + 60 + 20) / 3.
    # 60 * 40/30 = 80, 60 * 50/30 = 100 (the true next values), 60 * (130/3) / 30 = 260/3.
    model = LevelSeasonal(SEASON, "multiplicative", "daily")
    assert model.alias == "smul_daily"
    forecast = model.fit(series(SCALED)).forecast_many(series(SCALED), origins(9), 3)
    np.testing.assert_allclose(forecast, [[80.0, 100.0, 260.0 / 3]])


def test_multiplicative_ratio_is_bounded() -> None:
    # Yesterday: zero around t-S (no shape to rescale: persistence), then rising; then from 30 down to 3
    # (ratio 0.1 -> 0.2).
    y = [0.0, 0.0, 0.0, 30.0, 30.0, 30.0, 30.0, 30.0, 4.0]
    model = LevelSeasonal(SEASON, "multiplicative", "daily")
    # Origin 9: t = 8, sm[2] = 10, sm[3] = 20 -> 4 * 2 = 8.  Origin 8: t = 7, sm[1] = 0 -> persistence, 30.
    np.testing.assert_allclose(model.forecast_many(series(y), origins(8, 9), 1), [[30.0], [8.0]])
    rising = [1.0, 1.0, 1.0, 30.0, 30.0, 30.0, 30.0, 30.0, 4.0]
    # Origin 8: t = 7, sm[1] = 1, sm[2] = 32 / 3 -> ratio 10.7, bounded at 5: 30 * 5.
    np.testing.assert_allclose(model.forecast_many(series(rising), origins(8), 1), [[150.0]])
    falling = [30.0, 30.0, 30.0, 3.0, 3.0, 3.0, 3.0, 10.0]
    # Origin 8: t = 7, sm[1] = 30, sm[2] = 21 -> 0.7; sm[3] = 12 -> 0.4; sm[4] = 3 -> 0.1, bounded at 0.2.
    np.testing.assert_allclose(model.forecast_many(series(falling), origins(8), 3), [[7.0, 4.0, 2.0]], rtol=1e-12)


def test_level_seasonal_is_persistence_before_a_season_of_history() -> None:
    frame = series(SHIFTED)
    for mode in ("additive", "multiplicative"):
        model = LevelSeasonal(SEASON, mode, "daily")  # type: ignore[arg-type]
        forecast = model.forecast_many(frame, origins(1, 7, 8), 2)
        # Origins 1 and 7 (t - S - 1 < 0): the last value; origin 8 (t = 7, t - S - 1 = 0): seasonal.
        np.testing.assert_array_equal(forecast[:2], [[10.0, 10.0], [30.0, 30.0]])
        assert not np.array_equal(forecast[2], [40.0, 40.0])


def test_level_seasonal_falls_back_to_persistence_where_not_finite() -> None:
    y = list(SHIFTED)
    y[3] = float("nan")  # spoils sm[2..4], hence the reference of origin 9 and its forecasts
    forecast = LevelSeasonal(SEASON, "additive", "daily").forecast_many(series(y), origins(9, 12), 2)
    np.testing.assert_array_equal(forecast[0], [50.0, 50.0])
    assert np.all(np.isfinite(forecast[1])) and not np.array_equal(forecast[1], [80.0, 80.0])


def test_level_seasonal_is_clipped_at_zero() -> None:
    # Additive: y[t] = 5, yesterday fell by 30 from t-S to t+1-S.
    y = [0.0, 40.0, 40.0, 40.0, 10.0, 10.0, 10.0, 10.0, 5.0]
    forecast = LevelSeasonal(SEASON, "additive", "daily").forecast_many(series(y), origins(9), 1)
    np.testing.assert_array_equal(forecast, [[0.0]])


def test_level_seasonal_horizon_is_below_a_season() -> None:
    frame = series(SHIFTED)
    model = LevelSeasonal(SEASON, "additive", "daily").fit(frame)
    assert model.forecast_many(frame, origins(12), SEASON - 1).shape == (1, SEASON - 1)
    with pytest.raises(ModelError, match=r"sadd_daily forecasts at most season - 1 = 5 steps ahead, asked for 6"):
        model.forecast_many(frame, origins(12), SEASON)


def test_level_seasonal_needs_a_season_and_two_points() -> None:
    model = LevelSeasonal(SEASON, "multiplicative", "weekly")
    assert (model.alias, model.min_points) == ("smul_weekly", SEASON + 2)
    with pytest.raises(ModelError, match="smul_weekly needs at least 8 points, got 7"):
        model.fit(series(SHIFTED[:7]))
    with pytest.raises(ValueError, match="mode must be"):
        LevelSeasonal(SEASON, "both", "daily")  # type: ignore[arg-type]


# --- the contract, over every candidate ----------------------------------------------------

N = 100
HORIZON = 5
#: With 2 * 7 * SEASON = 84 <= N points of history: the daily and the weekly pairs are in.
CANDIDATES = short_term_candidates(SEASON, N, HORIZON)


def test_all_candidates_are_offered_with_two_weeks_of_history() -> None:
    assert [model.alias for model in CANDIDATES] == [
        *BASE_ALIASES,
        "sadd_daily",
        "smul_daily",
        "sadd_weekly",
        "smul_weekly",
    ]


@pytest.mark.parametrize("model", CANDIDATES, ids=lambda model: model.alias)
def test_forecast_many_equals_forecast_on_each_head(model: Forecaster) -> None:
    frame = series(noisy(N))
    every = np.arange(1, N + 1, dtype=np.int64)
    batched = model.fit(frame).forecast_many(frame, every, HORIZON)
    assert batched.shape == (N, HORIZON) and batched.dtype == np.float64
    one_by_one = np.stack([model.forecast(frame.head(int(o)), HORIZON) for o in every])
    np.testing.assert_array_equal(batched, one_by_one)
    assert np.all(batched >= 0)


@pytest.mark.parametrize("model", CANDIDATES, ids=lambda model: model.alias)
def test_no_forecast_reads_the_rows_at_or_after_its_origin(model: Forecaster) -> None:
    y = noisy(N)
    cut = 90
    changed = y.copy()
    changed[cut:] = np.random.default_rng(1).uniform(0, 1000, N - cut)
    before = np.arange(1, cut + 1, dtype=np.int64)
    original = model.forecast_many(series(y), before, HORIZON)
    np.testing.assert_array_equal(model.forecast_many(series(changed), before, HORIZON), original)
    # ... while the forecasts after the cut do see the change.
    after = np.arange(cut + 1, N + 1, dtype=np.int64)
    assert not np.array_equal(
        model.forecast_many(series(changed), after, HORIZON), model.forecast_many(series(y), after, HORIZON)
    )


# --- candidates ----------------------------------------------------------------------------


def test_candidates_grow_with_history_and_respect_the_horizon() -> None:
    def aliases(history: int, horizon: int) -> list[str]:
        return [model.alias for model in short_term_candidates(SEASON, history, horizon)]

    daily = [*BASE_ALIASES, "sadd_daily", "smul_daily"]
    weekly = ["sadd_weekly", "smul_weekly"]
    assert aliases(SEASON + 1, 3) == BASE_ALIASES
    assert aliases(SEASON + 2, 3) == daily
    # A week and more, but not two weeks: no weekly pair.
    assert aliases(2 * 7 * SEASON - 1, 3) == daily
    assert aliases(2 * 7 * SEASON, 3) == [*daily, *weekly]
    # A horizon of a season (or more) rules out the daily pair only; of a week, the weekly too.
    assert aliases(2 * 7 * SEASON, SEASON) == [*BASE_ALIASES, *weekly]
    assert aliases(2 * 7 * SEASON, 7 * SEASON) == BASE_ALIASES
    seasonal = short_term_candidates(SEASON, 2 * 7 * SEASON, 3)[-4:]
    assert [model.season for model in seasonal if isinstance(model, LevelSeasonal)] == [6, 6, 42, 42]
