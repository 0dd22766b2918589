"""Every strategy through the same HPA simulation, and the figures that compare them.

Cost at SLO: each strategy's values are scaled by a headroom multiplier, swept over a
grid and refined by bisection, and the smallest pod-minutes ratio (pod-minutes over the
ideal ``ceil(demand / threshold)`` every step) whose unserved demand stays within the SLO
is reported.  Reactive scaling with headroom is the reactive strategy's point on that
curve; the share of the reactive-to-oracle gap a strategy closes is computed from it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from helios_scaler.backtest.hpa import HpaConfig, Simulation, simulate, summarise
from helios_scaler.features.schema import BoolArray, FloatArray
from helios_scaler.models.cost import search_headroom
from helios_scaler.trigger import SLO_UNSERVED

HEADROOM_GRID = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.35, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0)
BISECTIONS = 6
STRATEGIES = ("helios", "reactive", "holt_winters", "periodic_max", "oracle")


@dataclass(frozen=True)
class StrategyResult:
    name: str
    values: FloatArray
    simulation: Simulation
    figures: dict[str, float]
    #: (headroom, pod_minutes_ratio, unserved_fraction) for every multiplier tried.
    curve: list[tuple[float, float, float]] = field(default_factory=list)
    cost_at_slo: float = math.nan
    headroom_at_slo: float = math.nan
    gap_closed: float = math.nan


def cost_at_slo(
    values: FloatArray,
    demand: FloatArray,
    config: HpaConfig,
    slo: float = SLO_UNSERVED,
    scored: BoolArray | None = None,
) -> tuple[float, float, list[tuple[float, float, float]]]:
    """(pod-minutes ratio, headroom) of the cheapest multiplier meeting the SLO, and the curve."""

    def run(headroom: float) -> tuple[float, float]:
        figures = summarise(simulate(values * headroom, demand, config), demand, config, scored)
        return figures["pod_minutes_ratio"], figures["unserved_fraction"]

    curve = search_headroom(run, slo, HEADROOM_GRID, BISECTIONS)
    meeting = [point for point in curve if point[2] <= slo]
    curve.sort()
    if not meeting:
        return math.nan, math.nan, curve
    best = min(meeting, key=lambda point: point[1])
    return best[1], best[0], curve


def evaluate(
    values: Mapping[str, FloatArray], demand: FloatArray, config: HpaConfig, scored: BoolArray | None = None
) -> dict[str, StrategyResult]:
    """Simulate every strategy as served and across headroom; fill in cost at SLO and gap closed.

    ``scored`` (default: every step) leaves the steps of holes in the data out of the figures."""
    results: dict[str, StrategyResult] = {}
    for name, served in values.items():
        simulation = simulate(served, demand, config)
        cost, headroom, curve = cost_at_slo(served, demand, config, scored=scored)
        results[name] = StrategyResult(
            name, served, simulation, summarise(simulation, demand, config, scored), curve, cost, headroom
        )
    reactive, oracle = results.get("reactive"), results.get("oracle")
    if reactive is not None and oracle is not None:
        gap = reactive.cost_at_slo - oracle.cost_at_slo
        for name, result in results.items():
            closed = (reactive.cost_at_slo - result.cost_at_slo) / gap if gap > 0 else math.nan
            results[name] = replace(result, gap_closed=closed)
    return results


def summary_row(result: StrategyResult) -> dict[str, Any]:
    """The JSON-able figures of one strategy."""
    return {
        **{key: round(value, 6) for key, value in result.figures.items()},
        "cost_at_slo": _round(result.cost_at_slo),
        "headroom_at_slo": _round(result.headroom_at_slo),
        "gap_closed": _round(result.gap_closed),
    }


def _round(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 6)
