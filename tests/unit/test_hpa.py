"""The KEDA + HPA simulation on small hand-made series.

Every expected array is worked out by hand from the rules in ``backtest/hpa.py``'s docstring;
each test says how.  Unless a test is about stabilization, ``scale_down_window=0`` (a window
of one step) makes scale-down immediate so the rule under test is the only one acting.
"""

from __future__ import annotations

import math
from datetime import timedelta

import numpy as np
import pytest

from helios_scaler.backtest.hpa import HpaConfig, Simulation, ideal_pods, simulate, summarise

MINUTE = timedelta(minutes=1)
NO_WINDOW = timedelta(0)


def config(threshold: float = 10.0, **overrides: object) -> HpaConfig:
    settings: dict[str, object] = {"step": MINUTE, "startup": timedelta(0), "scale_down_window": NO_WINDOW}
    settings.update(overrides)
    return HpaConfig(threshold=threshold, **settings)  # type: ignore[arg-type]


def arr(*items: float) -> np.ndarray:
    return np.array(items, dtype=np.float64)


def run(values: np.ndarray, cfg: HpaConfig, demand: np.ndarray | None = None) -> Simulation:
    return simulate(values, values if demand is None else demand, cfg)


# --- the recommendation ------------------------------------------------------------------


def test_average_value_recommendation_is_ceil_of_value_over_threshold() -> None:
    # threshold 10: start at ceil(25/10) = 3; 25/(10*3) = 0.83 → ceil(2.5) = 3;
    # 41/30 = 1.37 → ceil(4.1) = 5; 5/50 = 0.1 → ceil(0.5) = 1; 10/10 = 1.0 → stays 1.
    sim = run(arr(25, 25, 41, 5, 10), config())
    assert sim.desired.tolist() == [3, 3, 5, 1, 1]


def test_within_tolerance_the_replica_count_stays() -> None:
    # Start at 10 pods (100/10).  109/100 = 1.09 and 91/100 = 0.91 are within 10 % of 1: keep 10
    # (ceil would give 11 and 10).  111/100 = 1.11 is outside → ceil(11.1) = 12.  Then 89/120
    # = 0.74 → ceil(8.9) = 9.
    sim = run(arr(100, 109, 91, 109, 111, 89), config())
    assert sim.desired.tolist() == [10, 10, 10, 10, 12, 9]


def test_min_and_max_replicas_clamp() -> None:
    # min 2, max 6: ceil(0) = 0 → 2; ceil(100/10) = 10 → 6 (rate limit allows 32); 1000 → 6; 0 → 2.
    sim = run(arr(0, 100, 1000, 0), config(min_replicas=2, max_replicas=6))
    assert sim.desired.tolist() == [2, 6, 6, 2]
    assert sim.ready.tolist() == [2, 6, 6, 2]


def test_min_replicas_zero_scales_to_zero_and_back() -> None:
    # With 0 pods the tolerance ratio is undefined: the plain recommendation applies.
    sim = run(arr(0, 0, 35, 0), config(min_replicas=0))
    assert sim.desired.tolist() == [0, 0, 4, 0]


def test_ideal_pods_is_ceil_of_demand_clamped() -> None:
    cfg = config(min_replicas=1, max_replicas=2)
    # ceil(0/10)=0→1, ceil(0.5)=1, ceil(1)=1, ceil(1.1)=2, negative → 0 → 1, ceil(99)=10→2
    assert ideal_pods(arr(0, 5, 10, 11, -3, 990), cfg).tolist() == [1, 1, 1, 2, 1, 2]


# --- start-up ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("startup", "ready"),
    [
        # ordered at t=1 (1 → 3 pods), ready at 1 + 2 = 3
        (timedelta(minutes=2), [1, 1, 1, 3, 3]),
        # 90 s is ceil(1.5) = 2 steps
        (timedelta(seconds=90), [1, 1, 1, 3, 3]),
        (timedelta(minutes=1), [1, 1, 3, 3, 3]),
        # startup 0: ready the step it is ordered
        (timedelta(0), [1, 3, 3, 3, 3]),
    ],
)
def test_a_pod_ordered_at_t_is_ready_at_t_plus_startup(startup: timedelta, ready: list[int]) -> None:
    sim = run(arr(10, 30, 30, 30, 30), config(startup=startup))
    assert sim.desired.tolist() == [1, 3, 3, 3, 3]
    assert sim.ready.tolist() == ready


def test_unserved_is_demand_above_ready_capacity() -> None:
    # ready = [1, 1, 1, 3, 3] (startup 2 steps); capacity = ready * 10 = [10, 10, 10, 30, 30]
    # demand [10, 30, 25, 40, 5] → unserved max(d - cap, 0) = [0, 20, 15, 10, 0]
    sim = simulate(arr(10, 30, 30, 30, 30), arr(10, 30, 25, 40, 5), config(startup=2 * MINUTE))
    assert sim.unserved.tolist() == [0.0, 20.0, 15.0, 10.0, 0.0]


# --- scale-down stabilization --------------------------------------------------------------


def test_scale_down_waits_for_the_whole_window() -> None:
    # Default window 300 s at a 1-minute step = 5 steps: the HPA takes the highest recommendation
    # of steps (t-5, t].  Recommendations: 10, 10, 10, then 2 from t=3.  At t=7 the window holds
    # t=3..7, all 2: the drop is applied on the 5th lower recommendation (t=3,4,5,6,7).
    cfg = config(threshold=1.0, scale_down_window=timedelta(seconds=300))
    sim = run(arr(10, 10, 10, 2, 2, 2, 2, 2, 2, 2), cfg)
    assert sim.desired.tolist() == [10] * 7 + [2] * 3


def test_default_scale_down_window_is_300s() -> None:
    assert HpaConfig(threshold=1.0, step=MINUTE, startup=timedelta(0)).scale_down_window == timedelta(seconds=300)
    cfg = HpaConfig(threshold=1.0, step=MINUTE, startup=timedelta(0))
    sim = run(arr(10, 10, 10, 2, 2, 2, 2, 2, 2, 2), cfg)
    assert sim.desired.tolist() == [10] * 7 + [2] * 3


def test_a_spike_inside_the_window_holds_the_count() -> None:
    # Without the spike (7 at t=5) the window at t=6 holds t=2..6, all 2, and the count drops to 2.
    # With it: t=5 → max(window 1..5) = 10 holds; t=6..9 → window max is the spike, 7 (ceil 7/1);
    # t=10 → window 6..10 is all 2.
    cfg = config(threshold=1.0, scale_down_window=timedelta(seconds=300))
    plain = run(arr(10, 10, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2), cfg)
    assert plain.desired.tolist() == [10] * 6 + [2] * 6
    spiked = run(arr(10, 10, 2, 2, 2, 7, 2, 2, 2, 2, 2, 2), cfg)
    assert spiked.desired.tolist() == [10] * 6 + [7] * 4 + [2] * 2


def test_scale_up_is_not_stabilized() -> None:
    # A rise is applied at once even right after a drop was being held.
    cfg = config(threshold=1.0, scale_down_window=timedelta(seconds=300))
    sim = run(arr(10, 2, 2, 20), cfg)
    assert sim.desired.tolist() == [10, 10, 10, 20]


# --- scale-up rate limit -------------------------------------------------------------------


def test_scale_up_limit_per_minute_step_is_x16_from_four_pods_or_more() -> None:
    # 4 syncs of 15 s per step, each allowing max(2c, c + 4); from c >= 4 doubling wins every
    # sync: 4 → 64 → 1024 → 10_000 (max).  From 5: 80.
    cfg = config(threshold=1.0)
    assert run(arr(4, 1e6, 1e6, 1e6), cfg).desired.tolist() == [4, 64, 1024, 10_000]
    assert run(arr(5, 1e6), cfg).desired.tolist() == [5, 80]


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        # One sync per 15 s step: max(2c, c+4): 1 → 5 → 10 → 20 → 40
        (timedelta(seconds=15), [1, 5, 10, 20, 40]),
        # Two syncs per 30 s step: max(2c, c+4) twice; from 4 doubling wins: 4 → 16 → 64 → 256
        (timedelta(seconds=30), [4, 16, 64, 256, 1024]),
    ],
)
def test_scale_up_limit_double_or_plus_four_per_15s(step: timedelta, expected: list[int]) -> None:
    sim = run(arr(expected[0], 1e6, 1e6, 1e6, 1e6), config(threshold=1.0, step=step))
    assert sim.desired.tolist() == expected


def test_scale_up_limit_from_one_pod_compounds_per_sync() -> None:
    # The docstring's rule, "per 15 s, double or add 4 pods, whichever allows more", applied at each
    # of the 4 syncs of a 1-minute step from 1 pod: max(2,5)=5, max(10,9)=10, 20, 40.  (The
    # per-15 s policy is re-chosen every period, as the HPA does.)  From 2: 6, 12, 24, 48.  A 30 s
    # step (2 syncs) from 1: 5, 10.  simulate() instead picks one policy for the whole step,
    # max(c * 2**syncs, c + 4 * syncs): 17, 32 and 9 (BUG, reported).
    cfg = config(threshold=1.0)
    assert run(arr(1, 1e6), cfg).desired.tolist() == [1, 40]
    assert run(arr(2, 1e6), cfg).desired.tolist() == [2, 48]
    assert run(arr(1, 1e6), config(threshold=1.0, step=timedelta(seconds=30))).desired.tolist() == [1, 10]


def test_scale_up_below_the_limit_is_exact() -> None:
    # 10 → 17 is well within max(160, 26).
    assert run(arr(10, 17), config(threshold=1.0)).desired.tolist() == [10, 17]


# --- scale-down removes starting pods first ------------------------------------------------


def test_scale_down_removes_starting_pods_first() -> None:
    # threshold 1, startup 3 steps.  t=1: 10 → 20, 10 pods ready at t=4.  t=2: 15/20 = 0.75 →
    # 15: the 5 removed are starting ones, so ready stays 10 and only 5 arrive at t=4.
    sim = run(arr(10, 20, 15, 15, 15, 15), config(threshold=1.0, startup=3 * MINUTE))
    assert sim.desired.tolist() == [10, 20, 15, 15, 15, 15]
    assert sim.ready.tolist() == [10, 10, 10, 10, 15, 15]


def test_scale_down_beyond_the_starting_pods_removes_ready_ones() -> None:
    # t=2: 20 → 5: all 10 starting pods go, then 5 of the 10 ready ones; nothing arrives at t=4.
    sim = run(arr(10, 20, 5, 5, 5, 5), config(threshold=1.0, startup=3 * MINUTE))
    assert sim.desired.tolist() == [10, 20, 5, 5, 5, 5]
    assert sim.ready.tolist() == [10, 10, 5, 5, 5, 5]


def test_scale_down_removes_the_newest_starting_pods_first() -> None:
    # t=1: +10 (ready at 4); t=2: 20 → 40, +20 (ready at 5); t=3: 30/40 = 0.75 → 30, removing 10 of
    # the newest batch.  Ready: 10 until t=3, 20 at t=4 (the first batch, intact), 30 at t=5.
    sim = run(arr(10, 20, 40, 30, 30, 30, 30), config(threshold=1.0, startup=3 * MINUTE))
    assert sim.desired.tolist() == [10, 20, 40, 30, 30, 30, 30]
    assert sim.ready.tolist() == [10, 10, 10, 10, 20, 30, 30]


# --- summarise ------------------------------------------------------------------------------


def test_summarise_figures_by_hand() -> None:
    # values = 2 x demand, startup 2 steps: start at ceil(20/10) = 2 pods, t=1: ceil(60/10) = 6.
    # desired [2, 6, 6, 6, 6] (sum 26), ready [2, 2, 2, 6, 6], capacity [20, 20, 20, 60, 60]
    # demand  [10, 30, 30, 30, 30] (sum 130) → unserved [0, 10, 10, 0, 0] (sum 20)
    # ideal ceil(demand/10) = [1, 3, 3, 3, 3] (sum 13)
    demand = arr(10, 30, 30, 30, 30)
    cfg = config(startup=2 * MINUTE)
    sim = simulate(2 * demand, demand, cfg)
    assert sim.desired.tolist() == [2, 6, 6, 6, 6]
    assert sim.ready.tolist() == [2, 2, 2, 6, 6]
    figures = summarise(sim, demand, cfg)
    assert figures["unserved_fraction"] == pytest.approx(20 / 130)
    assert figures["underprovisioned_steps_fraction"] == pytest.approx(2 / 5)
    # starting pods are paid for: 26 pod-minutes, not the 22 that are ready
    assert figures["pod_minutes"] == pytest.approx(26.0)
    assert figures["pod_minutes_ratio"] == pytest.approx(26 / 13)
    assert figures["scaling_events"] == 1.0


def test_summarise_on_a_given_simulation() -> None:
    # desired changes 3 times (1→2, 2→4, 4→2); 5-minute step: pod-minutes = 5 * (1+2+4+4+2) = 65.
    cfg = config(step=timedelta(minutes=5))
    demand = arr(10, 20, 40, 40, 0)  # ideal [1, 2, 4, 4, 1] = 12
    sim = Simulation(
        desired=np.array([1, 2, 4, 4, 2]),
        ready=np.array([1, 1, 2, 4, 4]),
        unserved=arr(0, 10, 20, 0, 0),
    )
    figures = summarise(sim, demand, cfg)
    assert figures["unserved_fraction"] == pytest.approx(30 / 110)
    assert figures["underprovisioned_steps_fraction"] == pytest.approx(0.4)
    assert figures["pod_minutes"] == pytest.approx(65.0)
    assert figures["pod_minutes_ratio"] == pytest.approx(13 / 12)
    assert figures["scaling_events"] == 3.0


def test_summarise_with_no_demand() -> None:
    # No demand: nothing unserved; with min 0 the ideal is 0 pods, so the ratio is undefined.
    cfg = config(min_replicas=0)
    demand = arr(0, 0, 0)
    figures = summarise(simulate(demand, demand, cfg), demand, cfg)
    assert figures["unserved_fraction"] == 0.0
    assert figures["underprovisioned_steps_fraction"] == 0.0
    assert math.isnan(figures["pod_minutes_ratio"])


# --- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"threshold": 0.0}, "threshold must be > 0"),
        ({"threshold": -1.0}, "threshold must be > 0"),
        ({"min_replicas": 3, "max_replicas": 2}, "min_replicas <= max_replicas"),
        ({"min_replicas": -1}, "0 <= min_replicas"),
        ({"startup": timedelta(seconds=-1)}, "startup must be >= 0"),
    ],
)
def test_hpa_config_validation(overrides: dict[str, object], message: str) -> None:
    settings: dict[str, object] = {"threshold": 1.0, "step": MINUTE, "startup": timedelta(0)}
    settings.update(overrides)
    with pytest.raises(ValueError, match=message):
        HpaConfig(**settings)  # type: ignore[arg-type]


def test_values_and_demand_must_have_the_same_length() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        simulate(arr(1, 2, 3), arr(1, 2), config())
