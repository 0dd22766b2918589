"""KEDA + the Kubernetes HPA, simulated on a series of served values.

Per step (one HPA decision per step; the HPA's own 15 s sync is finer than any step
this tool accepts, so its rate limits are applied per step):

- ``AverageValue`` target: the recommendation is ``ceil(value / threshold)``, unless
  ``value / (threshold * current)`` is within the HPA's tolerance (10 %) of 1, when the
  replica count stays as it is;
- min/max replicas clamp it;
- scale-up rate limit (the HPA's default policy: per 15 s, double or add 4 pods,
  whichever allows more);
- scale-down stabilization (default 300 s): the HPA takes the highest recommendation
  of the window, so it scales down only when every recent recommendation agrees;
- a pod ordered at ``t`` serves from ``t + startup``; on scale-down, pods still
  starting are removed first.

Demand above ``ready_pods * threshold`` is unserved.  Cost counts every pod from the
moment it is ordered (a starting pod is paid for).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from datetime import timedelta

import numpy as np

from helios_scaler.features.schema import BoolArray, FloatArray, IntArray

HPA_SYNC = timedelta(seconds=15)


@dataclass(frozen=True)
class HpaConfig:
    threshold: float
    step: timedelta
    startup: timedelta
    min_replicas: int = 1
    max_replicas: int = 10_000
    tolerance: float = 0.1
    scale_down_window: timedelta = timedelta(seconds=300)

    def __post_init__(self) -> None:
        if self.threshold <= 0:
            raise ValueError(f"threshold must be > 0, got {self.threshold}")
        if not 0 <= self.min_replicas <= self.max_replicas:
            raise ValueError(f"need 0 <= min_replicas <= max_replicas, got {self.min_replicas}, {self.max_replicas}")
        if self.startup < timedelta(0):
            raise ValueError(f"startup must be >= 0, got {self.startup}")


@dataclass(frozen=True)
class Simulation:
    """Per-step outcome of one strategy."""

    desired: IntArray
    ready: IntArray
    unserved: FloatArray


def ideal_pods(demand: FloatArray, config: HpaConfig) -> IntArray:
    """Pods a perfect scaler would run at each step: ``ceil(demand / threshold)`` within min/max."""
    pods = np.ceil(np.maximum(demand, 0) / config.threshold).astype(np.int64)
    return np.clip(pods, config.min_replicas, config.max_replicas)


def simulate(values: FloatArray, demand: FloatArray, config: HpaConfig) -> Simulation:
    """Run the HPA on ``values`` (what the scaler serves at each step) against ``demand``."""
    if values.shape != demand.shape:
        raise ValueError(f"values and demand differ in length: {values.shape} vs {demand.shape}")
    n = len(values)
    delay = math.ceil(config.startup / config.step)
    window = max(1, math.ceil(config.scale_down_window / config.step))
    syncs = max(1, math.ceil(config.step / HPA_SYNC))
    threshold, tolerance = config.threshold, config.tolerance
    low, high = config.min_replicas, config.max_replicas

    desired = np.empty(n, dtype=np.int64)
    ready = np.empty(n, dtype=np.int64)
    current = max(low, min(high, math.ceil(max(float(values[0]), 0.0) / threshold)))
    ready_now = current  # the workload starts fully ready at its initial size
    starting: deque[list[int]] = deque()  # [step it becomes ready, count], oldest first
    recent: deque[tuple[int, int]] = deque()  # (step, recommendation) inside the scale-down window
    for t, value in enumerate(values.tolist()):
        while starting and starting[0][0] <= t:
            ready_now += starting.popleft()[1]
        value = max(value, 0.0)
        ratio = value / (threshold * current) if current > 0 else math.inf
        if current > 0 and abs(ratio - 1.0) <= tolerance:
            recommendation = current
        else:
            recommendation = max(low, min(high, math.ceil(value / threshold)))
        recent.append((t, recommendation))
        while recent[0][0] <= t - window:
            recent.popleft()
        # Scale-down stabilization: never below the highest recommendation of the window.
        target = min(current, max(r for _, r in recent)) if recommendation < current else recommendation
        if target > current:
            limit = current
            for _ in range(syncs):  # per 15 s sync: double or add 4, whichever allows more
                limit = max(2 * limit, limit + 4)
            target = min(target, limit, high)
            starting.append([t + delay, target - current])
            if delay == 0:
                ready_now += starting.pop()[1]
        elif target < current:
            remove = current - target
            while remove and starting:
                take = min(remove, starting[-1][1])
                starting[-1][1] -= take
                remove -= take
                if starting[-1][1] == 0:
                    starting.pop()
            ready_now -= remove
        current = target
        desired[t] = current
        ready[t] = ready_now
    unserved = np.maximum(demand - ready * threshold, 0.0)
    return Simulation(desired, ready, unserved)


def summarise(
    sim: Simulation, demand: FloatArray, config: HpaConfig, scored: BoolArray | None = None
) -> dict[str, float]:
    """Unserved fraction, under-provisioned steps, pod-minutes vs ideal, scaling events.

    ``scored`` leaves steps out of every figure but the scaling events (the steps of a hole in
    the data, whose demand is not known)."""
    keep = np.ones(len(demand), dtype=bool) if scored is None else scored
    total = float(np.sum(np.maximum(demand[keep], 0)))
    ideal = float(np.sum(ideal_pods(demand[keep], config)))
    desired = float(np.sum(sim.desired[keep]))
    changes = int(np.count_nonzero(np.diff(sim.desired)))
    return {
        "unserved_fraction": float(np.sum(sim.unserved[keep])) / total if total > 0 else 0.0,
        "underprovisioned_steps_fraction": float(np.mean(sim.unserved[keep] > 0)) if keep.any() else 0.0,
        "pod_minutes": desired * config.step.total_seconds() / 60.0,
        "pod_minutes_ratio": desired / ideal if ideal > 0 else math.nan,
        "scaling_events": float(changes),
    }
