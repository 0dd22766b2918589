"""Backtest outputs: steps.csv, summary.json, report.md and PNG plots."""

from __future__ import annotations

import dataclasses
import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from helios_scaler.backtest.evaluate import STRATEGIES, summary_row
from helios_scaler.backtest.run import BacktestOutcome
from helios_scaler.durations import format_duration
from helios_scaler.trigger import SLO_UNSERVED

LABELS = {
    "helios": "helios",
    "reactive": "reactive (KEDA prometheus)",
    "holt_winters": "Holt-Winters on replicas (PHPA)",
    "periodic_max": "FFT periodic max (Crane EHPA)",
    "oracle": "oracle (knows the future)",
}


def summary(outcome: BacktestOutcome) -> dict[str, Any]:
    config = outcome.config
    meta = config.meta
    replay = outcome.replay
    return {
        "config": {
            "threshold": meta.threshold,
            "lead_time": format_duration(meta.lead_time),
            "startup": format_duration(config.startup),
            "quantile": meta.quantile,
            "model": meta.model,
            "query_step": format_duration(meta.query_step),
            "history_time_window": format_duration(meta.history_time_window),
            "retrain_interval": format_duration(config.retrain_interval),
            "min_replicas": config.min_replicas,
            "max_replicas": config.max_replicas,
            "scale_down_window": format_duration(config.scale_down_window),
            "slo_unserved": SLO_UNSERVED,
        },
        "steps_evaluated": len(outcome.demand),
        "first_evaluated": outcome.timestamps[0].isoformat(),
        "last_evaluated": outcome.timestamps[-1].isoformat(),
        "cleaning": dataclasses.asdict(outcome.clean),
        "helios": {
            "mase_at_lead_time": _finite(replay.mase),
            "retrains": replay.retrains,
            "failed_retrains": replay.failed_retrains,
            "models_served": dict(Counter(replay.models)),
            "reasons": dict(Counter(replay.reasons)),
        },
        "strategies": {name: summary_row(result) for name, result in outcome.results.items()},
        "seconds": round(outcome.seconds, 3),
    }


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 6)


def steps_frame(outcome: BacktestOutcome) -> pl.DataFrame:
    columns: dict[str, Any] = {"timestamp": outcome.timestamps, "demand": outcome.demand}
    for name in STRATEGIES:
        result = outcome.results[name]
        columns[f"{name}_value"] = np.round(result.values, 6)
        columns[f"{name}_desired"] = result.simulation.desired
        columns[f"{name}_ready"] = result.simulation.ready
    return pl.DataFrame(columns)


def _pct(value: float | None) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.2f} %"


def _ratio(value: float | None) -> str:
    return "not reached" if value is None or math.isnan(value) else f"{value:.3f}"


def markdown(outcome: BacktestOutcome, title: str) -> str:
    data = summary(outcome)
    config = data["config"]
    lines = [
        f"# Backtest: {title}",
        "",
        f"{data['steps_evaluated']} steps of {config['query_step']} evaluated, {data['first_evaluated']} → "
        f"{data['last_evaluated']}; threshold {config['threshold']:g} per replica, pod start-up {config['startup']}, "
        f"lead time {config['lead_time']}, quantile {config['quantile']}, model {config['model']}, "
        f"retrained every {config['retrain_interval']} on {config['history_time_window']} of history.",
        "",
        "| strategy | unserved demand | steps under-provisioned | pod-minutes / ideal | scaling events "
        f"| cost at SLO (unserved ≤ {100 * SLO_UNSERVED:g} %) | headroom at SLO | gap closed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in STRATEGIES:
        row = data["strategies"][name]
        gap = "—" if name in ("reactive", "oracle") else _pct(row["gap_closed"])
        lines.append(
            f"| {LABELS[name]} | {_pct(row['unserved_fraction'])} | {_pct(row['underprovisioned_steps_fraction'])} "
            f"| {row['pod_minutes_ratio']:.3f} | {int(row['scaling_events'])} | {_ratio(row['cost_at_slo'])} "
            f"| {_ratio(row['headroom_at_slo'])} | {gap} |"
        )
    helios = data["helios"]
    mase = helios["mase_at_lead_time"]
    lines += [
        "",
        "*Cost at SLO* is the smallest pod-minutes ratio reached by scaling the strategy's values by a headroom "
        "multiplier (swept, then bisected) while unserved demand stays within the SLO; reactive at that point is "
        "*reactive with headroom*. *Gap closed* is the share of the reactive-to-oracle difference in cost at SLO.",
        "",
        f"helios forecast accuracy: MASE at the lead time = {'—' if mase is None else f'{mase:.3f}'} "
        "(point forecast vs seasonal naive, same steps; < 1 is better than seasonal naive). "
        f"Retrains: {helios['retrains']} ({helios['failed_retrains']} failed). "
        f"Models served (steps): {helios['models_served']}. Reasons: {helios['reasons']}.",
        "",
        f"Cleaning: {data['cleaning']}. Run time {data['seconds']:.1f} s.",
        "",
        "![demand and ready capacity](capacity.png)",
        "",
        "![cost vs unserved](tradeoff.png)",
        "",
    ]
    return "\n".join(lines)


def plots(outcome: BacktestOutcome, out: Path) -> list[Path]:
    """Demand vs ready capacity over time, and the cost/unserved trade-off curve."""
    from helios_scaler.compat import pyplot

    plt = pyplot()
    threshold = outcome.config.meta.threshold
    times = outcome.timestamps
    written = []
    figure, axes = plt.subplots(2, 1, figsize=(12, 7))
    # The whole run, and the busiest day up close.
    steps_per_day = max(1, round(86400 / outcome.config.meta.query_step.total_seconds()))
    busiest = int(np.argmax(outcome.demand))
    lo = max(0, busiest - steps_per_day // 2)
    hi = min(len(times), lo + steps_per_day)
    for ax, (a, b), caption in (
        (axes[0], (0, len(times)), "whole run"),
        (axes[1], (lo, hi), "around the peak"),
    ):
        ax.plot(times[a:b], outcome.demand[a:b], color="black", linewidth=1.0, label="demand")
        for name, colour in (("helios", "tab:orange"), ("reactive", "tab:blue"), ("oracle", "tab:green")):
            capacity = outcome.results[name].simulation.ready[a:b] * threshold
            ax.step(
                times[a:b],
                capacity,
                where="post",
                color=colour,
                linewidth=0.8,
                label=f"{name} ready capacity",
            )
        ax.set_title(f"demand vs ready capacity ({caption})")
        ax.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    path = out / "capacity.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    written.append(path)

    figure, ax = plt.subplots(figsize=(8, 5))
    for name in STRATEGIES:
        curve = outcome.results[name].curve
        ax.plot([p[1] for p in curve], [100 * p[2] for p in curve], marker="o", markersize=3, label=LABELS[name])
    ax.axhline(100 * SLO_UNSERVED, color="grey", linestyle="--", linewidth=0.8, label="SLO")
    ax.set_xlabel("pod-minutes / ideal")
    ax.set_ylabel("unserved demand (%)")
    ax.set_yscale("symlog", linthresh=0.1)
    ax.set_title("cost vs unserved demand, sweeping a headroom multiplier")
    ax.legend(fontsize=8)
    figure.tight_layout()
    path = out / "tradeoff.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    written.append(path)
    return written


def write(outcome: BacktestOutcome, out: Path, title: str, with_plots: bool = True) -> list[Path]:
    """Write every output into ``out``; returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    steps = out / "steps.csv"
    steps_frame(outcome).write_csv(steps)
    summary_path = out / "summary.json"
    summary_path.write_text(json.dumps(summary(outcome), indent=2) + "\n")
    report = out / "report.md"
    report.write_text(markdown(outcome, title))
    written = [steps, summary_path, report]
    if with_plots:
        written += plots(outcome, out)
    return written
