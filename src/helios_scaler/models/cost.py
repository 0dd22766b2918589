"""What a forecast costs in pods: a fast HPA approximation for choosing models by cost.

The backtest (``backtest/hpa.py``) simulates KEDA + the HPA step by step, with the tolerance
and rate limits.  Model selection needs the same question answered hundreds of times per
retrain — *which candidate meets the service level with the fewest pod-minutes on this
series' own past?* — so this module answers it vectorised, without the two refinements that
rarely bind (the 10 % tolerance and the scale-up rate limit).  Without them the HPA is exact
in closed form:

- desired pods at ``t`` = the highest recommendation ``ceil(value / threshold)`` over the
  scale-down stabilization window (scale-up is immediate, scale-down waits for the window);
- ready pods at ``t`` = the lowest desired count over ``[t - startup, t]`` (added pods serve
  after the start-up, removed pods go at once, starting ones first).

Cost at a service level is then the pod-minutes over the ideal ``ceil(demand / threshold)``
at the cheapest multiplier (headroom) of the served values that keeps unserved demand
within the target.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from helios_scaler.features.schema import BoolArray, FloatArray
from helios_scaler.trigger import Target

#: Headroom multipliers tried before bisection refines between the last miss and the first hit.
HEADROOM_GRID = (0.8, 0.9, 0.95, 1.0, 1.05, 1.1, 1.2, 1.35, 1.5, 2.0, 3.0, 5.0, 8.0, 16.0)
BISECTIONS = 7


def _rolling(values: FloatArray, width: int, reducer: str) -> FloatArray:
    """Max or min over the trailing ``width`` values (the first rows use what exists)."""
    if width <= 1:
        return values
    padded = np.concatenate([np.full(width - 1, values[0]), values])
    view = sliding_window_view(padded, width)
    return np.asarray(view.max(axis=1) if reducer == "max" else view.min(axis=1), dtype=np.float64)


def pods_and_unserved(
    served: FloatArray, demand: FloatArray, target: Target, scored: BoolArray | None = None
) -> tuple[FloatArray, float]:
    """Pod count ordered at each step, and the share of (scored) demand left unserved."""
    recommended = np.maximum(np.ceil(np.maximum(served, 0.0) / target.threshold), target.min_replicas)
    desired = _rolling(recommended, target.window_steps, "max")
    ready = _rolling(desired, target.delay_steps + 1, "min")
    keep = np.ones(len(demand), dtype=bool) if scored is None else scored
    total = float(np.sum(np.maximum(demand[keep], 0.0)))
    unserved = float(np.sum(np.maximum(demand - ready * target.threshold, 0.0)[keep]))
    return desired, unserved / total if total > 0 else 0.0


def cost_at_slo(
    served: FloatArray, demand: FloatArray, target: Target, scored: BoolArray | None = None
) -> tuple[float, float]:
    """(pod-minutes over ideal, headroom) at the cheapest headroom meeting the service level.

    ``served[i]`` is what was served at the step of ``demand[i]`` (already shifted: computed
    before that step); ``scored`` leaves steps (holes in the data) out.  ``(inf, nan)`` when no
    headroom up to 16x meets it."""
    keep = np.ones(len(demand), dtype=bool) if scored is None else scored
    pods = np.maximum(np.ceil(np.maximum(demand, 0.0) / target.threshold), target.min_replicas)
    ideal = float(np.sum(pods[keep]))
    if ideal <= 0:  # nothing to score (every step a hole)
        return math.inf, math.nan

    def run(headroom: float) -> tuple[float, float]:
        desired, unserved = pods_and_unserved(served * headroom, demand, target, scored)
        return float(np.sum(desired[keep])) / ideal, unserved

    tried = search_headroom(run, target.slo, HEADROOM_GRID, BISECTIONS)
    meeting = [(ratio, headroom) for headroom, ratio, unserved in tried if unserved <= target.slo]
    return min(meeting) if meeting else (math.inf, math.nan)


def search_headroom(
    run: Callable[[float], tuple[float, float]], slo: float, grid: Sequence[float], bisections: int
) -> list[tuple[float, float, float]]:
    """Every ``(headroom, pod-minutes ratio, unserved share)`` tried, in the order tried: ``grid`` up to
    the first headroom meeting ``slo``, then ``bisections`` halvings between the last miss and the
    first hit.  ``run(headroom)`` gives the ratio and the unserved share of one simulation (the
    backtest's step-by-step HPA or the vectorised one here)."""
    tried: list[tuple[float, float, float]] = []

    def point(headroom: float) -> float:
        ratio, unserved = run(headroom)
        tried.append((headroom, ratio, unserved))
        return unserved

    below: float | None = None
    above: float | None = None
    for headroom in grid:
        if point(headroom) <= slo:
            above = headroom
            break
        below = headroom
    if above is not None and below is not None:
        for _ in range(bisections):
            middle = (below + above) / 2
            if point(middle) <= slo:
                above = middle
            else:
                below = middle
    return tried
