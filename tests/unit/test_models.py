"""Models on real WorldCup98 minutes: fit/forecast contract, cheap refresh, backtest selection, quantiles."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from helios_scaler.errors import ModelError
from helios_scaler.models import selection
from helios_scaler.models.cost import cost_at_slo
from helios_scaler.models.gbm import LightGBM
from helios_scaler.models.selection import FittedSeries, select_and_fit
from helios_scaler.models.shortterm import Persistence, Trend
from helios_scaler.models.statistical import ETS, MSTL, SeasonalNaive
from helios_scaler.trigger import Target

MINUTE = timedelta(minutes=1)
SEASON = 1440
HORIZON = 5
#: Four training days and one held-out day, early in the tournament (June 1-5, 1998).
START = datetime(1998, 6, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def five_days(worldcup) -> pl.DataFrame:
    frame = worldcup(START, timedelta(days=5))
    assert frame.height == 5 * SEASON  # no gaps in June: already on the grid
    return frame


@pytest.fixture(scope="module")
def train(five_days: pl.DataFrame) -> pl.DataFrame:
    return five_days.head(4 * SEASON)


@pytest.fixture(scope="module")
def fitted(train: pl.DataFrame) -> FittedSeries:
    """A named model through the holdout path (the conformal bands' tests use it)."""
    return select_and_fit(train, MINUTE, HORIZON, model="ets")


#: A workload on the WorldCup98 slice: ~40 pods at its busiest, 2-minute start-up.
TARGET = Target(threshold=250.0, step=MINUTE, startup=timedelta(minutes=2))


@pytest.fixture(scope="module")
def auto(train: pl.DataFrame) -> FittedSeries:
    return select_and_fit(train, MINUTE, HORIZON, window=3, target=TARGET)


# --- individual models -------------------------------------------------------------------


def test_seasonal_naive_repeats_the_last_season(train: pl.DataFrame) -> None:
    model = SeasonalNaive(SEASON).fit(train)
    y = train["y"].to_numpy()
    forecast = model.forecast(train, SEASON + 60)
    assert forecast.shape == (SEASON + 60,)
    np.testing.assert_array_equal(forecast[:SEASON], y[-SEASON:])
    np.testing.assert_array_equal(forecast[SEASON:], y[-SEASON : -SEASON + 60])


def test_seasonal_naive_shorter_than_a_season_repeats_the_last_value(train: pl.DataFrame) -> None:
    short = train.head(100)
    forecast = SeasonalNaive(SEASON).fit(short).forecast(short, 7)
    np.testing.assert_array_equal(forecast, np.full(7, short["y"][-1]))


def test_seasonal_naive_needs_two_points(train: pl.DataFrame) -> None:
    with pytest.raises(ModelError, match="seasonal_naive needs at least 2 points, got 1"):
        SeasonalNaive(SEASON).fit(train.head(1))


@pytest.mark.parametrize(
    "make",
    [
        lambda: ETS(),
        lambda: MSTL(SEASON, MINUTE),
        lambda: LightGBM(SEASON, MINUTE, max_horizon=30, n_estimators=30),
    ],
    ids=["ets", "mstl", "lightgbm"],
)
def test_fit_on_real_data_forecasts_finite_values(make, train: pl.DataFrame) -> None:
    model = make()
    assert model.fit(train) is model
    forecast = model.forecast(train, 30)
    assert forecast.shape == (30,)
    assert forecast.dtype == np.float64
    assert np.all(np.isfinite(forecast))
    # Sane scale: within the range the series itself spans over these days.
    y = train["y"].to_numpy()
    assert np.all(forecast > 0.25 * y.min()) and np.all(forecast < 4 * y.max())


def test_lightgbm_refuses_a_horizon_beyond_its_fit(train: pl.DataFrame) -> None:
    model = LightGBM(SEASON, MINUTE, max_horizon=3, n_estimators=5).fit(train)
    with pytest.raises(ModelError, match="fitted for 3 steps, asked for 4"):
        model.forecast(train, 4)


def test_mstl_needs_two_seasons(train: pl.DataFrame) -> None:
    with pytest.raises(ModelError, match="mstl needs at least 2880 points"):
        MSTL(SEASON, MINUTE).fit(train.head(SEASON))


def test_mstl_cheap_refresh_does_not_refit_and_follows_new_points(five_days: pl.DataFrame) -> None:
    train = five_days.head(4 * SEASON)
    model = MSTL(SEASON, MINUTE).fit(train)
    fitted_ets, profile = model.model_, model.profile_
    before = model.forecast(train, 30)

    extended = five_days.head(4 * SEASON + 45)
    after = model.forecast(extended, 30)

    assert model.model_ is fitted_ets
    assert model.profile_ is profile
    assert np.all(np.isfinite(after))
    assert not np.allclose(before, after)
    # Same frame, same forecast: the refresh is a pure function of the frame.
    np.testing.assert_array_equal(model.forecast(extended, 30), after)


# --- selection ---------------------------------------------------------------------------


def test_auto_picks_the_candidate_that_costs_least_at_the_service_level(
    auto: FittedSeries, train: pl.DataFrame
) -> None:
    """Every candidate's served window maximum over the last week, through the HPA at the SLO."""
    aliases = [alias for alias, _ in auto.scores]
    assert aliases[0] == "persistence" and "trend_6" in aliases and "sadd_daily" in aliases
    assert "sadd_weekly" not in aliases  # needs two weeks of history
    best = min(auto.scores, key=lambda pair: pair[1])
    assert auto.alias == best[0]
    # Recompute one candidate's score independently.
    y = train["y"].to_numpy()
    origins = np.arange(train.height - 7 * SEASON if train.height > 7 * SEASON + 30 else 30, train.height)
    point = Persistence().forecast_many(train, origins, HORIZON)
    cost, _ = cost_at_slo(point[:, :3].max(axis=1), y[origins], TARGET)
    assert dict(auto.scores)["persistence"] == pytest.approx(cost)
    assert auto.margin is not None and 0.5 < auto.margin < 3
    assert auto.persistence_mae is not None and auto.lead_mae is not None
    assert auto.fallback_reason is None


def test_auto_serves_the_point_forecast(auto: FittedSeries, train: pl.DataFrame) -> None:
    mean, bands = auto.forecast(train, [None, 0.9])
    assert auto.margin is not None
    np.testing.assert_allclose(bands[None], mean)  # no event calendar: the point forecast itself
    assert np.all(np.isfinite(bands[0.9]))


def test_auto_bands_are_calibrated_on_the_served_window_maximum(auto: FittedSeries, train: pl.DataFrame) -> None:
    """A quantile band of auto is what covers the window's largest load that often, on its own backtest."""
    assert auto.band in ("additive", "relative", "sqrt")
    y = train["y"].to_numpy()
    origins = np.arange(30, train.height - 3)
    mean, bands = auto.forecast_many(train, origins, [0.9])
    truth = np.stack([y[origins + k] for k in range(3)], axis=1).max(axis=1)
    coverage = float(np.mean(truth <= bands[0.9][:, :3].max(axis=1)))
    assert 0.85 <= coverage <= 0.95, coverage
    assert float(np.mean(truth <= mean[:, :3].max(axis=1))) < 0.75  # the point forecast alone covers less


def test_auto_without_a_workload_picks_by_error_at_the_window_end(train: pl.DataFrame) -> None:
    chosen = select_and_fit(train, MINUTE, HORIZON, window=3)
    assert chosen.margin is None
    assert chosen.alias == min(chosen.scores, key=lambda pair: pair[1])[0]
    _, bands = chosen.forecast(train, [None])
    np.testing.assert_allclose(bands[None], chosen.forecast(train, [])[0])


def test_quantile_bands_are_ordered(fitted: FittedSeries, train: pl.DataFrame) -> None:
    mean, bands = fitted.forecast(train, [0.5, 0.9, 0.99])
    assert mean.shape == (HORIZON,)
    assert set(bands) == {0.5, 0.9, 0.99}
    for band in bands.values():
        assert band.shape == (HORIZON,) and np.all(np.isfinite(band))
    assert np.all(bands[0.5] <= bands[0.9])
    assert np.all(bands[0.9] <= bands[0.99])
    assert np.any(bands[0.5] < bands[0.99])


def test_model_seasonal_naive_restricts_the_candidates(train: pl.DataFrame) -> None:
    only = select_and_fit(train, MINUTE, HORIZON, model="seasonal_naive")
    assert only.alias == "seasonal_naive"
    assert [backtest.alias for backtest in only.backtests] == ["seasonal_naive"]
    assert only.mase == pytest.approx(1.0)
    assert only.fallback_reason is None


def test_too_short_history_raises(train: pl.DataFrame) -> None:
    with pytest.raises(ModelError, match="need at least 60 points of history, have 59"):
        select_and_fit(train.head(59), MINUTE, HORIZON)
    with pytest.raises(ModelError, match="too short for a 40-step backtest"):
        select_and_fit(train.head(60), MINUTE, 40)


def test_irregular_history_raises(train: pl.DataFrame) -> None:
    with pytest.raises(ModelError, match="regular grid"):
        select_and_fit(train.filter(pl.int_range(pl.len()) != 100), MINUTE, HORIZON)


def test_a_candidate_failing_is_skipped(monkeypatch: pytest.MonkeyPatch, train: pl.DataFrame) -> None:
    def fail(self, frame, origins, h):
        raise RuntimeError("boom")

    monkeypatch.setattr(Trend, "forecast_many", fail)
    result = select_and_fit(train, MINUTE, HORIZON, window=3, target=TARGET)
    aliases = [alias for alias, _ in result.scores]
    assert not any(alias.startswith("trend_") for alias in aliases)
    assert "persistence" in aliases and "line_6" in aliases


@pytest.mark.parametrize("name", ["ets", "mstl", "lightgbm"])
def test_every_candidate_failing_falls_back_to_seasonal_naive(
    monkeypatch: pytest.MonkeyPatch, train: pl.DataFrame, name: str
) -> None:
    broken = {"ets": ETS, "mstl": MSTL, "lightgbm": LightGBM}[name]

    def fail(self, frame):
        raise RuntimeError("numerical trouble")

    monkeypatch.setattr(broken, "fit", fail)
    result = select_and_fit(train, MINUTE, HORIZON, model=name)
    assert result.alias == "seasonal_naive"
    assert result.fallback_reason is not None
    assert f"{name}: numerical trouble" in result.fallback_reason
    assert np.all(np.isfinite(result.forecast(train, [0.9])[1][0.9]))


def test_fallback_on_real_history_too_short_for_the_model(train: pl.DataFrame) -> None:
    # One day is less than MSTL's two seasons: no monkeypatching needed.
    one_day = train.head(SEASON)
    result = select_and_fit(one_day, MINUTE, HORIZON, model="mstl")
    assert result.alias == "seasonal_naive"
    assert result.fallback_reason is not None and "mstl" in result.fallback_reason


def test_auto_leaves_out_the_seasons_the_history_is_too_short_for() -> None:
    aliases = [model.alias for model in selection.candidates("auto", MINUTE, HORIZON, SEASON)]
    assert aliases == ["persistence", "trend_3", "trend_6", "trend_12", "line_3", "line_6", "line_12"]
    daily = [model.alias for model in selection.candidates("auto", MINUTE, HORIZON, 2 * SEASON)]
    assert daily[-2:] == ["sadd_daily", "smul_daily"]
    weekly = [model.alias for model in selection.candidates("auto", MINUTE, HORIZON, 14 * SEASON)]
    assert weekly[-2:] == ["sadd_weekly", "smul_weekly"]


def test_q90_band_coverage_on_held_out_real_data(fitted: FittedSeries, five_days: pl.DataFrame) -> None:
    """The 0.9 band must cover the truth in roughly 90% of held-out steps.

    Bound 0.70-0.99: the band is calibrated on 48 backtest origins (sampling error alone is
    about ±4 points), and real traffic is not exchangeable (the level grows through the
    tournament and match days spike), so 4+1-day slices of this trace give 82-96% (this
    one: 88%).  Gross breakage falls outside: serving the mean gives 50%, the error
    quantile subtracted instead of added 15%.  Too wide a band is only caught loosely: the
    0.99 band gives 98% here, inside the bound; the upper end only rejects a band that
    (nearly) never misses.
    """
    y = five_days["y"].to_numpy()
    covered = []
    for origin in range(4 * SEASON, 5 * SEASON - HORIZON, 12):  # 120 origins across day 5
        _, bands = fitted.forecast(five_days.head(origin), [0.9])
        covered.append(y[origin : origin + HORIZON] <= bands[0.9])
    coverage = float(np.mean(covered))
    assert 0.70 <= coverage <= 0.99, coverage


def _errors(level: np.ndarray, relative: bool, seed: int = 0) -> np.ndarray:
    """Backtest-shaped errors (48 origins x HORIZON) whose size grows with ``level`` or not."""
    noise = np.random.default_rng(seed).standard_normal((48, HORIZON))
    return noise * (0.1 * level if relative else 10.0)


def test_band_loss_prefers_the_scale_the_errors_really_have() -> None:
    """Unit check of the additive/relative choice on errors of known shape."""
    level = np.repeat(np.geomspace(10, 1000, 48)[:, None], HORIZON, axis=1)
    proportional, constant = _errors(level, relative=True), _errors(level, relative=False)
    assert selection.band_loss(proportional, level) < selection.band_loss(proportional, 1.0)
    assert selection.band_loss(constant, 1.0) < selection.band_loss(constant, level)


def test_relative_bands_grow_with_the_forecast(five_days: pl.DataFrame) -> None:
    """A relative band is the scaled error quantile times the forecast (never less than the floor)."""
    naive = SeasonalNaive(SEASON).fit(five_days.head(4 * SEASON))
    errors = np.sort(np.random.default_rng(1).standard_normal((48, HORIZON)), axis=0)
    floor = 50.0
    fitted = FittedSeries(naive, HORIZON, errors, floor, mae=1.0, naive_mae=1.0)
    origins = np.array([4 * SEASON, 4 * SEASON + 600], dtype=np.int64)
    mean, bands = fitted.forecast_many(five_days, origins, [0.9])
    assert fitted.band == "relative"
    expected = mean + np.quantile(errors, 0.9, axis=0)[None, :] * np.maximum(np.abs(mean), floor)
    np.testing.assert_allclose(bands[0.9], expected)
    additive = FittedSeries(naive, HORIZON, errors, None, mae=1.0, naive_mae=1.0)
    _, flat = additive.forecast_many(five_days, origins, [0.9])
    assert additive.band == "additive"
    np.testing.assert_allclose(flat[0.9] - mean, np.broadcast_to(np.quantile(errors, 0.9, axis=0), mean.shape))


def test_select_and_fit_keeps_the_band_the_backtest_calibrates_better(
    fitted: FittedSeries, train: pl.DataFrame
) -> None:
    best = next(backtest for backtest in fitted.backtests if backtest.alias == fitted.alias)
    assert best.forecasts.shape == best.errors.shape
    floor = selection.SCALE_FLOOR * float(np.mean(train["y"].to_numpy()))
    relative = selection.band_scale(best.forecasts, floor)
    additive_loss, relative_loss = selection.band_loss(best.errors, 1.0), selection.band_loss(best.errors, relative)
    if relative_loss < additive_loss:
        assert (fitted.band, fitted.scale_floor) == ("relative", pytest.approx(floor))
        np.testing.assert_allclose(fitted.sorted_errors, np.sort(best.errors / relative, axis=0))
    else:
        assert (fitted.band, fitted.scale_floor) == ("additive", None)
        np.testing.assert_allclose(fitted.sorted_errors, np.sort(best.errors, axis=0))


# --- the batched refresh -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["seasonal_naive", "ets", "mstl", "lightgbm"])
def test_forecast_many_equals_one_forecast_per_origin(five_days: pl.DataFrame, name: str) -> None:
    """The backtest's batched forecasts are exactly what the live refresh would have served."""
    model = selection.candidates(name, MINUTE, HORIZON, five_days.height)[0].fit(five_days.head(4 * SEASON))
    origins = np.arange(4 * SEASON, 5 * SEASON - HORIZON, 97, dtype=np.int64)
    batched = model.forecast_many(five_days, origins, HORIZON)
    assert batched.shape == (len(origins), HORIZON)
    for row, origin in enumerate(origins):
        one = model.forecast(five_days.head(int(origin)), HORIZON)
        np.testing.assert_allclose(batched[row], one, rtol=1e-9, err_msg=f"{name} at origin {origin}")


@pytest.mark.parametrize(
    ("spec", "damped"),
    [("ANN", False), ("MNN", False), ("AAN", False), ("AAN", True), ("MAN", False), ("MAN", True)],
)
def test_ets_filter_reproduces_statsforecast_states(train: pl.DataFrame, spec: str, damped: bool) -> None:
    """Our recursions carry the fitted state forward exactly as statsforecast computed it."""
    from statsforecast.models import AutoETS

    from helios_scaler.models.statistical import EtsFilter

    y = train["y"].to_numpy()[-2000:].astype(float)
    fitted = AutoETS(model=spec, damped=damped).fit(y).model_
    ets = EtsFilter(str(fitted["components"]), np.asarray(fitted["par"]))
    first = fitted["states"][0]
    levels, trends = ets.run(y, float(first[0]), float(first[1]) if ets.has_trend else 0.0)
    np.testing.assert_allclose(levels, fitted["states"][1:, 0], rtol=1e-9)
    if ets.has_trend:
        np.testing.assert_allclose(trends, fitted["states"][1:, 1], rtol=1e-7, atol=1e-9)


def test_forecast_from_before_the_training_end_is_refused(train: pl.DataFrame) -> None:
    model = ETS().fit(train)
    with pytest.raises(ModelError, match="before the end of the model's training data"):
        model.forecast_many(train, np.array([train.height - 10], dtype=np.int64), HORIZON)
