"""Forecast → the value KEDA gets.  Pure functions; no I/O.

The value served is the largest forecast quantile over the served window and never below
the latest observation, so a forecast can only make a workload ready
earlier, never starve it.  Without a usable forecast the latest *fresh* observation is
served; with neither, :class:`~helios_scaler.errors.NotReady` is raised (KEDA then
applies the ScaledObject's ``fallback``).

Only a *servable* number is ever served: finite and at most :data:`MAX_VALUE` in size.  A
forecast that is not (NaN, ±Inf, 1e300 from a diverging model) is not used: the fresh
observation is served instead, with the reason ``unusable_forecast``.  An observation that
is not servable (Prometheus answers ``NaN`` for 0/0) gives way to a servable forecast; with
neither, :class:`~helios_scaler.errors.NotReady` (UNAVAILABLE, KEDA's fallback) is raised,
its cause a :class:`~helios_scaler.errors.ModelError` when the forecast was the culprit.

All lead-time arithmetic lives here, in three functions that the server, the trainer and
the backtest share:

- :func:`window_steps`: the forecast steps a served value looks at, from a forecast's
  origin (its newest complete observation) through ``max(now, origin + step) + leadTime``.
  The newest observation describes a step that has already ended when KEDA asks, so a value
  computed from it acts from the next step at the earliest, and the pods it orders serve
  from ``leadTime`` (the pod start-up) after that: the window reaches one query step past
  ``origin + leadTime``, and further when the observation lags the clock;
- :func:`lead_steps`: the same window for a forecast made just now (origin = now);
- :func:`forecast_horizon`: how many steps the trainer fits and forecasts.

The invariant that ties them: **the fitted horizon covers every window served**, i.e.
``window_steps(origin, now, lead, step) <= forecast_horizon(lead, step, refresh)`` for
every forecast at most one refresh interval plus one step old (``now - origin <=
refresh + step``), the oldest a live forecast gets between refreshes.  A forecast older
than that may not cover the window, and :func:`decide` then serves the observation
(``stale_forecast``).  ``tests/unit/test_policy.py`` checks the invariant.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from helios_scaler.errors import HeliosError, ModelError, NotReady, excerpt
from helios_scaler.store import SeriesState
from helios_scaler.trigger import ScalerMetadata


class Reason(enum.Enum):
    """Why the served value is what it is (exported as a metric label and logged)."""

    FORECAST = "forecast"
    OBSERVED_FLOOR = "observed_floor"
    WARMING_UP = "warming_up"
    STALE_FORECAST = "stale_forecast"
    SHADOW = "shadow"
    #: The forecast is not a servable number (NaN, ±Inf, beyond MAX_VALUE): the observation is served.
    UNUSABLE_FORECAST = "unusable_forecast"


#: Largest value served (in size): KEDA turns a value into a milli-quantity, int64(value x 1000), which
#: overflows past about 9.2e15; thresholds are at most 1e15, so a real load never comes near.
MAX_VALUE: Final = 9e15


def servable(value: float | None) -> bool:
    """``value`` is a number KEDA can take: finite and at most :data:`MAX_VALUE` in size."""
    return value is not None and math.isfinite(value) and abs(value) <= MAX_VALUE


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
        cause = state.error if state is not None else None
        raise NotReady(f"no data yet for query {meta.query!r} (first fetch pending or failing){detail}", cause)
    observed = state.last_value
    forecast = _window_forecast(state, meta, now)
    unusable: HeliosError | None = None
    if forecast is not None and not servable(forecast):
        unusable = ModelError(f"the forecast is {forecast!r}, not a servable number")
        forecast = None
    fresh = state.is_fresh(now, stale_after)
    if not servable(observed):
        if forecast is not None and meta.mode != "shadow":
            return Decision(forecast, Reason.FORECAST, forecast, observed)
        detail = f"; {unusable}" if unusable else f"; last error: {state.error}" if state.error else ""
        raise NotReady(
            f"the newest value of query {excerpt(meta.query)} is {observed!r}, not a servable number (finite, "
            f"at most {MAX_VALUE:g} in size), and no forecast can be served instead{detail}",
            state.error or unusable,
        )
    if forecast is None and not fresh:
        detail = f"; {unusable}" if unusable else f"; last error: {state.error}" if state.error else ""
        raise NotReady(
            f"data for query {meta.query!r} is stale (newest point {state.observed_at.isoformat()}) "
            f"and no forecast covers the lead time{detail}",
            state.error or unusable,
        )
    if meta.mode == "shadow":
        return Decision(observed, Reason.SHADOW, forecast, observed)
    if unusable is not None:
        return Decision(observed, Reason.UNUSABLE_FORECAST, None, observed)
    if forecast is None:
        reason = Reason.WARMING_UP if state.mean is None or meta.quantile not in state.bands else Reason.STALE_FORECAST
        return Decision(observed, reason, None, observed)
    if forecast < observed:
        return Decision(observed, Reason.OBSERVED_FLOOR, forecast, observed)
    return Decision(forecast, Reason.FORECAST, forecast, observed)


def _window_forecast(state: SeriesState, meta: ScalerMetadata, now: datetime) -> float | None:
    """Max of the requested quantile over the served window (:func:`window_steps`)."""
    if not state.has_forecast:
        return None
    band = state.bands.get(meta.quantile)
    if band is None:
        return None
    assert state.forecast_origin is not None
    steps = window_steps(state.forecast_origin, now, meta.lead_time, state.step)
    if steps > len(band):
        return None
    peak = float(band[:steps].max())  # NaN if any step is NaN
    # Clip a negative forecast to 0, but not a non-finite one: max(0.0, nan) and max(0.0, -inf) are 0.0.
    return max(0.0, peak) if math.isfinite(peak) else peak


def window_steps(origin: datetime, now: datetime, lead: timedelta, step: timedelta) -> int:
    """Forecast steps ``origin + k * step`` (k = 1, 2, ...) covering ``(origin, max(now, origin + step) + lead]``."""
    return max(1, math.ceil((max(now, origin + step) + lead - origin) / step))


def lead_steps(lead: timedelta, step: timedelta) -> int:
    """The window of a forecast whose origin is ``now``: ``leadTime`` plus one step ahead."""
    epoch = datetime(1970, 1, 1)
    return window_steps(epoch, epoch, lead, step)


def forecast_horizon(lead: timedelta, step: timedelta, refresh_interval: timedelta) -> int:
    """Forecast steps a series is fitted for: the lead time plus a margin, so the forecast still
    covers the window served when its origin is up to one refresh interval plus one step old."""
    return lead_steps(lead, step) + math.ceil(refresh_interval / step) + 1


def is_active(decision: Decision, meta: ScalerMetadata) -> bool:
    """KEDA's activation: active when the scaled value exceeds ``activationThreshold``."""
    return decision.value > meta.activation_threshold
