"""The values other scaling strategies would serve, for the same simulation.

- ``reactive``: KEDA's ``prometheus`` scaler — the latest observed value.
- ``holt_winters``: how the predictive-horizontal-pod-autoscaler works — additive
  Holt-Winters with hand-set smoothing factors on the *replica count* history (the
  reactive ``ceil(value / threshold)``), forecasting one step ahead; before it has
  ``stored_seasons`` seasons of history it serves the reactive value.
- ``periodic_max``: Crane's EHPA — an FFT of the recent (linearly detrended) history
  keeps the strongest periodic components, is refitted every ``refit`` and extrapolated; the value is the
  prediction's maximum over ``[now, now + window]``, never below the observation (EHPA
  feeds both metrics to the HPA, which takes the larger).
- ``oracle``: knows the future — the largest demand over ``[now, now + startup]``, so
  pods ordered now are ready for it (the physical limit of any scaler).
"""

from __future__ import annotations

import math

import numpy as np

from helios_scaler.features.schema import FloatArray


def reactive(demand: FloatArray) -> FloatArray:
    """The observation itself (KEDA's ``prometheus`` scaler)."""
    return demand.copy()


def acts_next_step(values: FloatArray) -> FloatArray:
    """``values[t]``, computed after seeing step ``t``, acts from step ``t + 1`` (the first step keeps its own)."""
    if len(values) == 0:
        return values.copy()
    return np.concatenate([values[:1], values[:-1]])


def oracle(demand: FloatArray, startup_steps: int) -> FloatArray:
    """Maximum of ``demand[t : t + startup_steps + 1]`` for each t (the end is padded with the last value)."""
    k = max(0, startup_steps)
    padded = np.concatenate([demand, np.full(k, demand[-1])])
    windows = np.lib.stride_tricks.sliding_window_view(padded, k + 1)
    return np.asarray(windows.max(axis=1), dtype=np.float64)


def holt_winters(
    demand: FloatArray,
    threshold: float,
    season: int,
    alpha: float = 0.9,
    beta: float = 0.9,
    gamma: float = 0.9,
    stored_seasons: int = 2,
) -> FloatArray:
    """One-step additive Holt-Winters forecast of the replica count, as a value (replicas x threshold).

    The defaults follow the predictive-horizontal-pod-autoscaler's Holt-Winters example
    (alpha = beta = gamma = 0.9, a seasonal length of one day).
    """
    replicas = np.ceil(np.maximum(demand, 0) / threshold)
    out = demand.copy()
    warm = stored_seasons * season
    if len(replicas) <= warm:
        return out
    # Initialise from the first stored seasons, like a classic HW start-up.
    first = replicas[:season]
    second = replicas[season : 2 * season]
    level = float(first.mean())
    trend = float((second.mean() - first.mean()) / season)
    seasonal = list((first - level).tolist())
    values = replicas.tolist()
    for t in range(season, len(values)):
        phase = t % season
        if t >= warm:
            predicted = level + trend + seasonal[phase]
            out[t - 1] = max(0.0, math.ceil(predicted)) * threshold
        observed = values[t]
        previous_level = level
        level = alpha * (observed - seasonal[phase]) + (1 - alpha) * (level + trend)
        trend = beta * (level - previous_level) + (1 - beta) * trend
        seasonal[phase] = gamma * (observed - level) + (1 - gamma) * seasonal[phase]
    return out


def periodic_max(
    demand: FloatArray,
    season: int,
    window_steps: int,
    refit_steps: int,
    history_seasons: int = 7,
    components: int = 8,
) -> FloatArray:
    """Crane-EHPA-style FFT prediction, max over the prediction window, floored at the observation."""
    n = len(demand)
    out = demand.copy()
    start = 2 * season
    for refit_at in range(start, n, refit_steps):
        # Whole seasons only: the extrapolation repeats the window, so it must end in phase.
        seasons = min(history_seasons, refit_at // season)
        past = demand[refit_at - seasons * season : refit_at]
        length = len(past)
        # The trend is removed first and extrapolated (a periodic fit alone repeats the window's start,
        # which on a growing series is always behind). It is estimated from the first and last seasons'
        # means, which a purely periodic signal leaves at exactly zero (a least-squares line does not).
        x = np.arange(length)
        slope = (past[-season:].mean() - past[:season].mean()) / ((seasons - 1) * season)
        intercept = past.mean() - slope * (length - 1) / 2
        spectrum = np.fft.rfft(past - (slope * x + intercept))
        keep = np.argsort(np.abs(spectrum[1:]))[::-1][:components] + 1
        horizon = min(refit_steps, n - refit_at) + window_steps
        t = np.arange(length, length + horizon)
        periodic = (
            2.0
            / length
            * np.sum(
                np.abs(spectrum[keep])[:, None]
                * np.cos(2 * np.pi * (keep / length)[:, None] * t[None, :] + np.angle(spectrum[keep])[:, None]),
                axis=0,
            )
        )
        prediction = slope * t + intercept + periodic
        for offset in range(min(refit_steps, n - refit_at)):
            now = refit_at + offset
            # Served at ``now`` with data through ``now``: predict (now, now + window].
            ahead = prediction[offset + 1 : offset + 1 + window_steps]
            out[now] = max(demand[now], float(ahead.max()) if len(ahead) else demand[now])
    return out
