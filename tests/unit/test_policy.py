"""policy.decide: forecast → the value KEDA gets (lead-time window max, quantile, observed floor)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import grpc
import numpy as np
import pytest

from helios_scaler.durations import parse_duration
from helios_scaler.errors import NotReady, QueryError, SourceUnavailable
from helios_scaler.policy import Decision, Reason, decide, forecast_horizon, is_active, lead_steps, window_steps
from helios_scaler.serving.status import status_code
from helios_scaler.store import SeriesState
from helios_scaler.trigger import ScalerMetadata

MINUTE = timedelta(minutes=1)
OBSERVED_AT = datetime(1998, 6, 30, 18, 0, tzinfo=UTC)
#: 30 s after the newest point: (observed_at, now + 5m] spans 5.5 steps → 6 forecast steps.
NOW = OBSERVED_AT + timedelta(seconds=30)
STALE_AFTER = timedelta(minutes=5)

META = ScalerMetadata.parse({"query": "worldcup98", "threshold": "1000", "leadTime": "5m", "quantile": "0.9"})

MEAN = np.array([100.0, 110.0, 120.0, 130.0, 140.0, 150.0, 160.0, 170.0, 180.0, 190.0])
BANDS = {
    0.5: MEAN.copy(),
    # Step 6 (index 5) is the last inside the window; step 7 (index 6) is outside and huge.
    0.9: np.array([200.0, 210.0, 205.0, 220.0, 230.0, 250.0, 9999.0, 240.0, 240.0, 240.0]),
    0.99: MEAN + 300.0,
}


def state(**changes: object) -> SeriesState:
    base = SeriesState(
        key=META.series_key("replay"),
        series_id="abc123",
        step=MINUTE,
        observed_at=OBSERVED_AT,
        last_value=180.0,
        fetched_at=OBSERVED_AT + timedelta(seconds=5),
        forecast_origin=OBSERVED_AT,
        mean=MEAN,
        bands=BANDS,
        model="mstl",
    )
    return dataclasses.replace(base, **changes)


def meta(**extra: str) -> ScalerMetadata:
    return ScalerMetadata.parse(
        {"query": "worldcup98", "threshold": "1000", "leadTime": "5m", "quantile": "0.9", **extra}
    )


def test_window_max_of_the_requested_quantile() -> None:
    decision = decide(state(), META, NOW, STALE_AFTER)
    assert decision == Decision(250.0, Reason.FORECAST, 250.0, 180.0)


@pytest.mark.parametrize(
    ("quantile", "expected"),
    [("0.5", 180.0), ("0.99", 450.0)],  # 0.5: max(mean[:6]) = 150 < observed → floor
)
def test_other_quantiles(quantile: str, expected: float) -> None:
    assert decide(state(), meta(quantile=quantile), NOW, STALE_AFTER).value == expected


@pytest.mark.parametrize(
    ("now", "lead", "expected"),
    [
        # The newest observation's step has ended: the window reaches one step past origin + leadTime.
        (OBSERVED_AT, "5m", 250.0),  # 5 + 1 steps
        (OBSERVED_AT + timedelta(seconds=1), "5m", 250.0),  # still within the next step: 6 steps
        (OBSERVED_AT, "0s", 200.0),  # at least one step
        (OBSERVED_AT, "90s", 210.0),  # 1 + 1.5 steps → 3
        (OBSERVED_AT + timedelta(minutes=2), "2m", 220.0),  # the window grows with the age of the data: 4 steps
        (OBSERVED_AT + timedelta(minutes=2, seconds=1), "2m", 230.0),  # 5 steps
    ],
)
def test_window_covers_one_step_past_the_observation_plus_lead(now: datetime, lead: str, expected: float) -> None:
    decision = decide(state(last_value=0.0), meta(leadTime=lead), now, STALE_AFTER)
    assert (decision.value, decision.reason) == (expected, Reason.FORECAST)


def test_never_below_the_last_observation() -> None:
    decision = decide(state(last_value=400.0), META, NOW, STALE_AFTER)
    assert decision == Decision(400.0, Reason.OBSERVED_FLOOR, 250.0, 400.0)


def test_negative_forecast_is_clipped_to_zero() -> None:
    bands = {0.9: np.full(10, -5.0)}
    decision = decide(state(last_value=0.0, bands=bands), META, NOW, STALE_AFTER)
    assert decision.forecast == 0.0
    assert decision.value == 0.0


def test_warming_up_serves_the_observation() -> None:
    decision = decide(state(mean=None, bands={}), META, NOW, STALE_AFTER)
    assert decision == Decision(180.0, Reason.WARMING_UP, None, 180.0)


def test_quantile_without_a_band_serves_the_observation() -> None:
    decision = decide(state(), meta(quantile="0.75"), NOW, STALE_AFTER)
    assert decision.value == 180.0
    assert decision.forecast is None
    assert decision.reason == Reason.WARMING_UP


def test_lagging_data_fetched_just_now_is_not_ready() -> None:
    # The newest sample is 20 minutes old although it was fetched 10 s ago (the source lags, or the target
    # stopped): freshness is judged by the sample's time, so it is stale and the forecast does not cover it.
    # (Served as STALE_FORECAST before: freshness was judged by the fetch time.)
    now = OBSERVED_AT + timedelta(minutes=20)
    with pytest.raises(NotReady, match="stale"):
        decide(state(fetched_at=now - timedelta(seconds=10)), META, now, STALE_AFTER)


def test_forecast_too_short_with_fresh_data_is_stale_forecast() -> None:
    # A fresh sample but a forecast made 20 minutes ago (retraining stuck): the observation is served.
    now = OBSERVED_AT + timedelta(minutes=20)
    decision = decide(state(observed_at=now - MINUTE, forecast_origin=OBSERVED_AT), META, now, STALE_AFTER)
    assert decision == Decision(180.0, Reason.STALE_FORECAST, None, 180.0)


def test_forecast_too_short_with_a_stale_fetch_is_not_ready() -> None:
    now = OBSERVED_AT + timedelta(minutes=20)
    with pytest.raises(NotReady) as info:
        decide(state(error=SourceUnavailable("connection refused")), META, now, STALE_AFTER)
    message = str(info.value)
    assert "'worldcup98'" in message
    assert "stale" in message
    assert OBSERVED_AT.isoformat() in message
    assert "connection refused" in message


def test_warming_up_with_a_stale_fetch_is_not_ready() -> None:
    with pytest.raises(NotReady, match="'worldcup98'"):
        decide(state(mean=None, bands={}), META, NOW + timedelta(minutes=6), STALE_AFTER)


def test_stale_sample_boundary() -> None:
    """Fresh while the newest sample is at most stale_after plus one step old (points come a step apart),
    whenever it was fetched."""
    sampled = OBSERVED_AT
    fetched = {"mean": None, "bands": {}, "fetched_at": sampled + STALE_AFTER}
    fresh = decide(state(**fetched), META, sampled + STALE_AFTER + MINUTE, STALE_AFTER)
    assert fresh.reason == Reason.WARMING_UP
    with pytest.raises(NotReady):
        decide(state(**fetched), META, sampled + STALE_AFTER + MINUTE + timedelta(microseconds=1), STALE_AFTER)


def test_the_window_counts_from_the_forecast_origin_not_the_newest_point() -> None:
    """Two new points arrived since the forecast was made: its steps still start at its origin, so the
    window (origin, now + 5m] is 8 steps and reaches the spike at step 7."""
    decision = decide(state(forecast_origin=OBSERVED_AT - 2 * MINUTE), META, NOW, STALE_AFTER)
    assert decision == Decision(9999.0, Reason.FORECAST, 9999.0, 180.0)


def test_covering_forecast_is_served_even_when_the_fetch_is_stale() -> None:
    # A forecast that still covers the lead time is used (it was made for this window).
    decision = decide(state(fetched_at=OBSERVED_AT - timedelta(hours=1)), META, NOW, STALE_AFTER)
    assert (decision.value, decision.reason) == (250.0, Reason.FORECAST)


@pytest.mark.parametrize(
    "observation",
    [{"observed_at": None, "last_value": None}, {"last_value": None}, {"observed_at": None}],
    ids=["neither", "no-value", "no-time"],
)
def test_no_observation_is_not_ready_naming_query_and_error(observation: dict[str, object]) -> None:
    broken = state(**observation, error=QueryError("parse error at char 3"))
    with pytest.raises(NotReady) as info:
        decide(broken, META, NOW, STALE_AFTER)
    assert "'worldcup98'" in str(info.value)
    assert "parse error at char 3" in str(info.value)
    # The client is told what stops it: a rejected query, not an outage.
    assert status_code(info.value) is grpc.StatusCode.INVALID_ARGUMENT


def test_unknown_series_is_not_ready() -> None:
    with pytest.raises(NotReady, match="no data yet for query 'worldcup98'"):
        decide(None, META, NOW, STALE_AFTER)


def test_shadow_serves_observed_and_reports_the_forecast() -> None:
    decision = decide(state(), meta(mode="shadow"), NOW, STALE_AFTER)
    assert decision == Decision(180.0, Reason.SHADOW, 250.0, 180.0)


def test_shadow_without_a_forecast() -> None:
    decision = decide(state(mean=None, bands={}), meta(mode="shadow"), NOW, STALE_AFTER)
    assert decision == Decision(180.0, Reason.SHADOW, None, 180.0)


@pytest.mark.parametrize(("value", "active"), [(0.0, False), (4.9, False), (5.0, False), (5.1, True)])
def test_is_active_above_activation_threshold(value: float, active: bool) -> None:
    decision = Decision(value, Reason.FORECAST, value, value)
    assert is_active(decision, meta(activationThreshold="5")) is active


def test_is_active_default_threshold_is_zero() -> None:
    assert not is_active(Decision(0.0, Reason.WARMING_UP, None, 0.0), META)
    assert is_active(decide(state(last_value=0.5, bands={0.9: np.zeros(10)}), META, NOW, STALE_AFTER), META)


@pytest.mark.parametrize(
    ("lead", "step", "steps"),
    [
        ("5m", "1m", 6),
        ("90s", "1m", 3),
        ("0s", "1m", 1),
        ("30s", "1m", 2),
        ("1h", "5m", 13),
        ("61s", "30s", 4),
    ],
)
def test_lead_steps(lead: str, step: str, steps: int) -> None:
    assert lead_steps(parse_duration(lead), parse_duration(step)) == steps


@pytest.mark.parametrize("step_s", [10, 30, 60, 300, 1800, 3600])
@pytest.mark.parametrize("lead_s", [0, 1, 30, 59, 60, 61, 300, 301, 1800, 3600, 21600])
@pytest.mark.parametrize("refresh_s", [1, 15, 30, 60, 600])
def test_the_fitted_horizon_covers_every_window_served(step_s: int, lead_s: int, refresh_s: int) -> None:
    """The one invariant of the lead-time arithmetic: a forecast at most one refresh plus one
    step old (the oldest a live forecast gets between refreshes) covers ``now + leadTime``."""
    step, lead, refresh = (timedelta(seconds=s) for s in (step_s, lead_s, refresh_s))
    horizon = forecast_horizon(lead, step, refresh)
    origin = OBSERVED_AT
    oldest = refresh + step
    ages = [
        timedelta(0),
        timedelta(microseconds=1),
        step / 2,
        step,
        oldest / 2,
        oldest - timedelta(microseconds=1),
        oldest,
    ]
    for age in ages:
        assert window_steps(origin, origin + age, lead, step) <= horizon, (age, horizon)
    # ...and the bound is tight enough to matter: a much older forecast would not be covered.
    assert window_steps(origin, origin + oldest + (horizon + 1) * step, lead, step) > horizon


def test_a_forecast_older_than_its_horizon_is_not_served() -> None:
    """Past the fitted horizon the window is not covered: the observation is served instead."""
    old = state(forecast_origin=OBSERVED_AT - 10 * MINUTE)
    decision = decide(old, META, NOW, STALE_AFTER)
    assert decision.reason is Reason.STALE_FORECAST
    assert decision.value == 180.0
