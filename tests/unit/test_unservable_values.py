"""A forecast or observation that is not a servable number (NaN, ±Inf, past KEDA's int64 milli-quantity) is
never served: policy.decide falls back or says NotReady, and serving.keda.int64 clamps what KEDA's int
fields get.  (A +Inf forecast used to be served, and GetMetrics failed with UNKNOWN converting it.)"""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import numpy as np
import pytest

from helios_scaler.errors import ModelError, NotReady, QueryError
from helios_scaler.policy import MAX_VALUE, Decision, Reason, decide, servable
from helios_scaler.serving.keda import INT64_MAX, INT64_MIN, int64
from helios_scaler.serving.status import status_code
from helios_scaler.store import SeriesState
from helios_scaler.trigger import ScalerMetadata

MINUTE = timedelta(minutes=1)
OBSERVED_AT = datetime(1998, 6, 30, 18, 0, tzinfo=UTC)
NOW = OBSERVED_AT + timedelta(seconds=30)
STALE_AFTER = timedelta(minutes=5)
META = ScalerMetadata.parse({"query": "worldcup98", "threshold": "1000", "leadTime": "5m", "quantile": "0.9"})
SHADOW = dataclasses.replace(META, mode="shadow")

UNSERVABLE = [math.inf, -math.inf, math.nan, 1.7e308, MAX_VALUE * 1.01]


def state(band: float | None = 250.0, last_value: float = 180.0, **changes: Any) -> SeriesState:
    forecast = np.full(10, band if band is not None else 0.0)
    base = SeriesState(
        key=META.series_key("replay"),
        series_id="abc123",
        step=MINUTE,
        observed_at=OBSERVED_AT,
        last_value=last_value,
        fetched_at=OBSERVED_AT,
        forecast_origin=OBSERVED_AT if band is not None else None,
        mean=forecast if band is not None else None,
        bands={0.9: forecast} if band is not None else {},
        model="mstl",
    )
    return dataclasses.replace(base, **changes)


def test_servable() -> None:
    assert servable(0.0) and servable(-5.0) and servable(MAX_VALUE) and servable(-MAX_VALUE)
    assert not any(servable(value) for value in UNSERVABLE)
    assert not servable(None)
    # KEDA makes a milli-quantity of the value: int64(value * 1000) must not overflow.
    assert MAX_VALUE * 1000 < INT64_MAX


@pytest.mark.parametrize("forecast", UNSERVABLE, ids=repr)
def test_an_unservable_forecast_falls_back_to_the_observation_and_says_so(forecast: float) -> None:
    decision = decide(state(band=forecast), META, NOW, STALE_AFTER)
    assert decision == Decision(180.0, Reason.UNUSABLE_FORECAST, None, 180.0)


def test_one_nan_step_in_the_window_makes_the_forecast_unusable() -> None:
    """NaN used to vanish: max(0.0, nan) is 0.0, so the forecast read as 0 and the floor was served."""
    band = np.full(10, 250.0)
    band[2] = math.nan
    decision = decide(state(bands={0.9: band}), META, NOW, STALE_AFTER)
    assert decision.reason is Reason.UNUSABLE_FORECAST
    assert decision.value == 180.0


def test_shadow_with_an_unservable_forecast_reports_none() -> None:
    decision = decide(state(band=math.inf), SHADOW, NOW, STALE_AFTER)
    assert decision == Decision(180.0, Reason.SHADOW, None, 180.0)


@pytest.mark.parametrize("forecast", UNSERVABLE, ids=repr)
def test_unservable_forecast_and_observation_is_not_ready_caused_by_the_model(forecast: float) -> None:
    with pytest.raises(NotReady) as info:
        decide(state(band=forecast, last_value=math.nan), META, NOW, STALE_AFTER)
    assert isinstance(info.value.cause, ModelError)
    assert "'worldcup98'" in str(info.value) and "not a servable number" in str(info.value)
    assert status_code(info.value) is grpc.StatusCode.UNAVAILABLE  # KEDA applies its fallback


def test_unservable_forecast_with_stale_data_is_not_ready() -> None:
    now = OBSERVED_AT + timedelta(minutes=20)
    with pytest.raises(NotReady, match="stale") as info:
        decide(state(band=math.inf, bands={0.9: np.full(30, math.inf)}), META, now, STALE_AFTER)
    assert isinstance(info.value.cause, ModelError)


@pytest.mark.parametrize("observed", UNSERVABLE, ids=repr)
def test_an_unservable_observation_gives_way_to_a_servable_forecast(observed: float) -> None:
    decision = decide(state(last_value=observed), META, NOW, STALE_AFTER)
    assert (decision.value, decision.reason, decision.forecast) == (250.0, Reason.FORECAST, 250.0)


@pytest.mark.parametrize("meta", [META, SHADOW], ids=["warming-up", "shadow"])
@pytest.mark.parametrize("observed", UNSERVABLE, ids=repr)
def test_an_unservable_observation_without_a_forecast_is_not_ready(observed: float, meta: ScalerMetadata) -> None:
    with pytest.raises(NotReady, match="not a servable number") as info:
        decide(state(band=None, last_value=observed), meta, NOW, STALE_AFTER)
    assert info.value.cause is None
    assert status_code(info.value) is grpc.StatusCode.UNAVAILABLE


def test_the_series_error_still_decides_the_code() -> None:
    broken = state(band=None, last_value=math.nan, error=QueryError("parse error"))
    with pytest.raises(NotReady) as info:
        decide(broken, META, NOW, STALE_AFTER)
    assert status_code(info.value) is grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.4, 0),
        (2.5, 2),
        (-3.6, -4),
        (MAX_VALUE, int(MAX_VALUE)),
        (1e300, INT64_MAX),
        (-1e300, INT64_MIN),
        (float(INT64_MAX), INT64_MAX),
    ],
)
def test_int64_rounds_and_clamps(value: float, expected: int) -> None:
    assert int64(value) == expected


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan], ids=repr)
def test_int64_refuses_non_finite_values(value: float) -> None:
    with pytest.raises(ModelError, match="not a finite number"):
        int64(value)
