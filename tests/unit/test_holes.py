"""Holes in the data are kept, and never scored: model selection and the backtest skip them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl

from helios_scaler.backtest.hpa import HpaConfig, simulate, summarise
from helios_scaler.features.schema import DS, HOLE, Y
from helios_scaler.models.selection import scored_origins

MINUTE = timedelta(minutes=1)


def frame_with_hole(n: int, hole: range) -> pl.DataFrame:
    flags = np.zeros(n, dtype=bool)
    flags[list(hole)] = True
    ds = [datetime(2026, 1, 1, tzinfo=UTC) + i * MINUTE for i in range(n)]
    return pl.DataFrame({DS: ds, Y: np.arange(n, dtype=float), HOLE: flags})


def test_backtest_origins_never_forecast_into_a_hole() -> None:
    frame = frame_with_hole(200, range(120, 140))
    origins = scored_origins(frame, 60, 195, horizon=5, count=200)
    assert len(origins) > 0
    for origin in origins.tolist():
        assert not any(120 <= origin + k < 140 for k in range(5)), origin
    # Origins right before and right after the hole are still used.
    assert 115 in origins.tolist() and 140 in origins.tolist()


def test_without_holes_origins_are_spread_evenly() -> None:
    frame = frame_with_hole(200, range(0))
    origins = scored_origins(frame, 100, 195, horizon=5, count=48)
    assert origins[0] == 100 and origins[-1] == 195 and len(origins) == 48


def test_the_hpa_figures_leave_the_hole_steps_out() -> None:
    config = HpaConfig(threshold=10.0, step=MINUTE, startup=timedelta(0), scale_down_window=timedelta(0))
    demand = np.array([10.0, 10.0, 500.0, 500.0, 10.0, 10.0])  # the 500s are a hole's filled values
    served = np.full(6, 10.0)
    scored = np.array([True, True, False, False, True, True])
    simulation = simulate(served, demand, config)
    everything = summarise(simulation, demand, config)
    outside = summarise(simulation, demand, config, scored)
    assert everything["unserved_fraction"] > 0.9
    assert outside["unserved_fraction"] == 0.0
    assert outside["pod_minutes_ratio"] == 1.0
