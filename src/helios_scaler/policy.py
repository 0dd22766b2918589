"""Forecast → the value KEDA gets.  Pure functions; no I/O.

The value served is the largest forecast quantile over ``[now, now + leadTime]`` and
never below the latest observation, so a forecast can only make a workload ready
earlier, never starve it.  Without a usable forecast the latest *fresh* observation is
served; with neither, :class:`~helios_scaler.errors.NotReady` is raised (KEDA then
applies the ScaledObject's ``fallback``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

from helios_scaler.errors import NotReady
from helios_scaler.store import SeriesState
from helios_scaler.trigger import ScalerMetadata


class Reason(enum.Enum):
    """Why the served value is what it is (exported as a metric label and logged)."""

    FORECAST = "forecast"
    OBSERVED_FLOOR = "observed_floor"
    WARMING_UP = "warming_up"
    STALE_FORECAST = "stale_forecast"
    SHADOW = "shadow"


@dataclass(frozen=True)
class Decision:
    value: float
    reason: Reason
    #: The forecast value for the window (None when no forecast applies).
    forecast: float | None
    observed: float


def decide(state: SeriesState | None, meta: ScalerMetadata, now: datetime, stale_after: timedelta) -> Decision:
    """The value to serve for one ScaledObject, and why."""
    if state is None or state.observed_at is None or state.last_value is None:
        detail = f": {state.error}" if state is not None and state.error else ""
        raise NotReady(f"no data yet for query {meta.query!r} (first fetch pending or failing){detail}")
    observed = state.last_value
    forecast = _window_forecast(state, meta, now)
    fresh = state.is_fresh(now, stale_after)
    if forecast is None and not fresh:
        detail = f"; last error: {state.error}" if state.error else ""
        raise NotReady(
            f"data for query {meta.query!r} is stale (newest point {state.observed_at.isoformat()}) "
            f"and no forecast covers the lead time{detail}"
        )
    if meta.mode == "shadow":
        return Decision(observed, Reason.SHADOW, forecast, observed)
    if forecast is None:
        reason = Reason.WARMING_UP if state.mean is None or meta.quantile not in state.bands else Reason.STALE_FORECAST
        return Decision(observed, reason, None, observed)
    if forecast < observed:
        return Decision(observed, Reason.OBSERVED_FLOOR, forecast, observed)
    return Decision(forecast, Reason.FORECAST, forecast, observed)


def _window_forecast(state: SeriesState, meta: ScalerMetadata, now: datetime) -> float | None:
    """Max of the requested quantile over the forecast steps up to ``now + leadTime``."""
    if not state.has_forecast:
        return None
    band = state.bands.get(meta.quantile)
    if band is None:
        return None
    steps = state.window_steps(now, meta.lead_time)
    if steps > len(band):
        return None
    return max(0.0, float(band[:steps].max()))


def is_active(decision: Decision, meta: ScalerMetadata) -> bool:
    """KEDA's activation: active when the scaled value exceeds ``activationThreshold``."""
    return decision.value > meta.activation_threshold
