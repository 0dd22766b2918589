"""models.cost: the vectorised HPA used to choose models by cost agrees with the step-by-step simulation."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from helios_scaler.backtest.hpa import HpaConfig, simulate
from helios_scaler.models.cost import cost_at_slo, pods_and_unserved
from helios_scaler.trigger import Target

MINUTE = timedelta(minutes=1)


@pytest.mark.parametrize("startup", [0, 1, 2, 5])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pods_equal_the_step_by_step_hpa_without_tolerance_and_rate_limits(startup: int, seed: int) -> None:
    """Without the 10 % tolerance, and with changes the rate limit never binds (at most +4 pods a
    step), the closed form is exact: desired = max over the scale-down window, ready = min over
    the start-up."""
    rng = np.random.default_rng(seed)
    pods = np.clip(20 + np.cumsum(rng.integers(-3, 4, size=2000)), 1, None)
    served = pods * 10.0 - rng.uniform(0, 9.9, size=2000)  # ceil(served / 10) == pods
    demand = served * rng.uniform(0.8, 1.3, size=2000)
    target = Target(threshold=10.0, step=MINUTE, startup=startup * MINUTE)
    exact = simulate(served, demand, HpaConfig(threshold=10.0, step=MINUTE, startup=startup * MINUTE, tolerance=0.0))
    desired, unserved = pods_and_unserved(served, demand, target)
    np.testing.assert_array_equal(desired, exact.desired)
    assert unserved == pytest.approx(float(exact.unserved.sum() / demand.sum()))


def test_cost_at_slo_finds_the_cheapest_headroom_meeting_the_slo() -> None:
    demand = np.full(500, 100.0)
    demand[::50] = 130.0  # a spike every 50 steps: 2 % of steps
    target = Target(threshold=10.0, step=MINUTE, startup=timedelta(0))
    ratio, headroom = cost_at_slo(demand.copy(), demand, target)
    # Serving the truth itself needs no headroom (pods round up, so a little less still meets it).
    assert 0.9 <= headroom <= 1.0
    assert pods_and_unserved(demand * headroom, demand, target)[1] <= target.slo
    assert pods_and_unserved(demand * (headroom - 0.01), demand, target)[1] > target.slo
    flat = np.full(500, 100.0)
    ratio, headroom = cost_at_slo(flat, demand, target)
    # 10 spikes of 30 over 50,300 in all is 0.6 % unserved at 1.0: a little headroom is needed.
    assert 1.0 < headroom < 1.3 and ratio > 1.0
    _, unserved = pods_and_unserved(flat * headroom, demand, target)
    assert unserved <= target.slo


def test_cost_at_slo_out_of_reach_is_infinite() -> None:
    demand = np.full(100, 100.0)
    ratio, headroom = cost_at_slo(np.zeros(100), demand, Target(threshold=10.0, step=MINUTE, startup=MINUTE))
    assert ratio == float("inf") and np.isnan(headroom)
