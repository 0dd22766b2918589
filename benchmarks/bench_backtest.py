"""What-if backtests on the real traces in ../shared/traces, and forecast accuracy.

For every trace this runs ``helios-scaler backtest``'s engine (the serving code path on
a simulated clock, then KEDA + HPA simulated for helios, reactive, Holt-Winters (PHPA),
an FFT periodic forecast (Crane EHPA) and the oracle) and records cost at SLO and the
share of the reactive-to-oracle gap each strategy closes.  Separately it replays helios
with ``leadTime`` 5, 15, 30 and 60 minutes and reports MASE of the point forecast at
that horizon against seasonal naive on the same steps.

Traces and settings (stated, the same for every trace, never tuned per trace):
- WorldCup98 requests/minute, 87 days, 1-minute step: pod start-up 2 and 5 minutes, each
  without and with the real 1998 kick-off calendar (../shared/events);
- every NAB realAWSCloudwatch series (5-minute step, ~14 days): start-up one step (5m);
- NAB nyc_taxi (30-minute step, 7 months): start-up one step (30m).
Every trace: leadTime = start-up; capacity per pod (threshold) = the trace's 99th percentile
/ 30; historyTimeWindow 15 days (the weekly candidates need two weeks); the first 7 days (half
the trace for the one NAB file shorter than two weeks) only train; daily retraining; model
auto and quantile auto (the defaults).  Timing, the same for every strategy but the oracle: a
value computed after seeing the observation of step t acts from step t + 1.  Cost at SLO
sweeps a headroom multiplier over every strategy from 0.5 (grid, then bisection to better
than 0.25 %).

    .venv/bin/python benchmarks/bench_backtest.py            # everything (~20 min on 2 cores)
    .venv/bin/python benchmarks/bench_backtest.py --quick    # two NAB series, no accuracy sweep
    .venv/bin/python benchmarks/bench_backtest.py --speed 3  # the 87-day WorldCup98 replay, 3 times

Writes benchmarks/results/backtest.{md,json} and the table between the markers in README.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from helios_scaler.backtest.replay import ReplayResult, replay
from helios_scaler.backtest.run import BacktestConfig, load, run_backtest
from helios_scaler.config import Settings
from helios_scaler.durations import format_duration
from helios_scaler.errors import HeliosError
from helios_scaler.events.calendar import load_calendar
from helios_scaler.source.csv import CsvSource, infer_step
from helios_scaler.training.executor import for_workers
from helios_scaler.trigger import ScalerMetadata

ROOT = Path(__file__).resolve().parents[1]
TRACES = Path(os.environ.get("HELIOS_TRACES", ROOT.parent / "shared" / "traces"))
RESULTS = ROOT / "benchmarks" / "results"
README_START = "<!-- bench_backtest:start -->"
README_END = "<!-- bench_backtest:end -->"
ACCURACY_LEADS = (5, 15, 30, 60)
BAR = 0.75
CALENDAR = TRACES.parent / "events" / "worldcup98_kickoffs.csv"
#: The same settings for every trace (never tuned per trace): history window, warm-up, capacity per pod.
HISTORY = timedelta(days=15)
WARMUP = timedelta(days=7)
PODS_AT_P99 = 30


@dataclass(frozen=True)
class Trace:
    name: str
    path: Path
    startups: tuple[timedelta, ...]
    #: A known-event calendar for the trace: rows are run with it and without it.
    calendar: Path | None = None


def capacity_per_pod(y: np.ndarray[Any, np.dtype[np.float64]]) -> float:
    """The threshold every trace is run with: its 99th percentile / 30 (30 pods at its p99)."""
    return float(np.percentile(y, 99)) / PODS_AT_P99 or 1.0


def traces(quick: bool) -> list[Trace]:
    nab = TRACES / "nab" / "data"
    cloudwatch = sorted((nab / "realAWSCloudwatch").glob("*.csv"))
    if quick:
        cloudwatch = [p for p in cloudwatch if p.stem in ("elb_request_count_8c0756", "ec2_cpu_utilization_5f5533")]
        return [Trace(p.stem, p, (timedelta(minutes=5),)) for p in cloudwatch]
    return [
        Trace(
            "worldcup98",
            TRACES / "worldcup98" / "invocation_count.csv",
            (timedelta(minutes=2), timedelta(minutes=5)),
            CALENDAR,
        ),
        *[Trace(p.stem, p, (timedelta(minutes=5),)) for p in cloudwatch],
        Trace("nyc_taxi", nab / "realKnownCause" / "nyc_taxi.csv", (timedelta(minutes=30),)),
    ]


def metadata(
    query: str,
    step: timedelta,
    threshold: float,
    lead: timedelta,
    quantile: float | None = None,
    history: timedelta = HISTORY,
) -> ScalerMetadata:
    return ScalerMetadata.parse(
        {
            "query": query,
            "threshold": repr(threshold),
            "leadTime": format_duration(lead),
            "queryStep": format_duration(step),
            "quantile": "auto" if quantile is None else repr(quantile),
            "historyTimeWindow": format_duration(history),
        }
    )


def run_trace(trace: Trace, settings: Settings, workers: int, accuracy: bool) -> list[dict[str, Any]]:
    # NAB's DST artefact: some AWS files repeat 03:00 twelve times (see shared/traces/README.md).
    source = CsvSource(trace.path, duplicates="last")
    step = infer_step(source.frame)
    frame, clean = load(source, trace.name, source.frame["ds"][0], source.frame["ds"][-1], step)
    y = frame["y"].to_numpy()
    threshold = capacity_per_pod(y)
    # Seven days only train, or half the trace where it is shorter than two weeks (one NAB file has 4 days).
    span = frame["ds"][-1] - frame["ds"][0]
    warmup = min(WARMUP, span / 2 // timedelta(hours=1) * timedelta(hours=1))
    events = tuple(load_calendar(trace.calendar).events) if trace.calendar is not None else ()
    rows = []
    #: Each start-up's helios replay (without the calendar), by lead time: the accuracy sweep reuses them.
    replays: dict[timedelta, ReplayResult] = {}
    for startup in trace.startups:
        for calendar in (False, True) if events else (False,):
            lead = max(startup, step)
            config = BacktestConfig(
                meta=metadata(trace.name, step, threshold, lead),
                startup=startup,
                retrain_interval=settings.retrain_interval,
                refresh_interval=settings.refresh_interval,
                stale_after=settings.stale_after,
                warmup=warmup,
                workers=workers,
                events=events if calendar else (),
            )
            outcome = run_backtest(frame, clean, config)
            if not calendar:
                replays[lead] = outcome.replay
            results = outcome.results
            # The same trigger with quantile 0.5: the headroom sweep supplies the margin, the median the shape.
            median = run_backtest(
                frame, clean, replace(config, meta=metadata(trace.name, step, threshold, lead, quantile=0.5))
            ).results["helios"]
            row: dict[str, Any] = {
                "trace": trace.name + (" + calendar" if calendar else ""),
                "step": format_duration(step),
                "startup": format_duration(startup),
                "lead_time": format_duration(lead),
                "threshold": round(threshold, 3),
                "history": format_duration(HISTORY),
                "warmup": format_duration(warmup),
                "steps": len(outcome.demand),
                "seconds": round(outcome.seconds, 1),
                "models": sorted(set(outcome.replay.models)),
                "mae_vs_persistence": _num(outcome.replay.mae_vs_persistence),
            }
            row["helios_q50_cost_at_slo"] = _num(median.cost_at_slo)
            row["helios_q50_gap_closed"] = _num(median.gap_closed)
            for name, result in results.items():
                row[f"{name}_cost_at_slo"] = _num(result.cost_at_slo)
                row[f"{name}_gap_closed"] = _num(result.gap_closed)
                row[f"{name}_unserved"] = round(result.figures["unserved_fraction"], 5)
            rows.append(row)
            print(f"  {row['trace']} startup {row['startup']}: {_line(row)} ({row['seconds']} s)", flush=True)
    if accuracy:
        accuracy_row = {"trace": trace.name, "step": format_duration(step)}
        for minutes in ACCURACY_LEADS:
            lead = timedelta(minutes=minutes)
            if lead < step:
                accuracy_row[f"mase_{minutes}m"] = None
                accuracy_row[f"persistence_{minutes}m"] = None
                continue
            result = replays.get(lead)
            if result is None:
                meta = metadata(trace.name, step, threshold, lead)
                start = math.ceil(warmup / step)
                result = replay(
                    frame,
                    meta,
                    settings.retrain_interval,
                    settings.refresh_interval,
                    settings.stale_after,
                    start,
                    for_workers(workers),
                )
            accuracy_row[f"mase_{minutes}m"] = _num(result.mase)
            accuracy_row[f"persistence_{minutes}m"] = _num(result.mae_vs_persistence)
        rows[0]["accuracy"] = accuracy_row
        print(f"  {trace.name} MASE: {accuracy_row}", flush=True)
    return rows


def _num(value: float) -> float | None:
    return None if value is None or math.isnan(value) else round(float(value), 4)


def _line(row: dict[str, Any]) -> str:
    return (
        f"cost@SLO helios {row['helios_cost_at_slo']} reactive {row['reactive_cost_at_slo']} "
        f"oracle {row['oracle_cost_at_slo']}; gap closed {row['helios_gap_closed']}"
    )


def _fmt(value: float | None, pct: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{100 * value:.0f} %" if pct else f"{value:.2f}"


def verdict(row: dict[str, Any]) -> str:
    helios, reactive, gap = row["helios_cost_at_slo"], row["reactive_cost_at_slo"], row["helios_gap_closed"]
    if helios is None:
        return "no: SLO not reached"
    if reactive is None:
        return "yes: reactive never reaches the SLO"
    if helios > reactive:
        return "no: costlier than reactive"
    if row["oracle_cost_at_slo"] is not None and reactive <= row["oracle_cost_at_slo"]:
        return "yes: not worse than reactive (reactive is already at or below the oracle)"
    return "yes" if gap is not None and gap >= BAR else "no: < 75 % of the gap"


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        f"Measured {meta['date']} on {meta['cpus']} CPUs (`{meta['command']}`, {meta['seconds']:.0f} s). "
        "Cost at SLO = the smallest pod-minutes / ideal ratio at which unserved demand stays ≤ 0.5 %, sweeping a "
        "headroom multiplier; gap closed = share of the reactive → oracle difference in cost at SLO.",
        "",
        "| trace | step | start-up = lead | cost at SLO: helios | helios q0.5 | reactive (+headroom) | Holt-Winters "
        "| FFT max | oracle | gap closed: helios | helios q0.5 | Holt-Winters | FFT max "
        "| MAE / persistence | unserved as served: helios / reactive | bar met (helios) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['trace']} | {row['step']} | {row['startup']} | {_fmt(row['helios_cost_at_slo'])} "
            f"| {_fmt(row['helios_q50_cost_at_slo'])} "
            f"| {_fmt(row['reactive_cost_at_slo'])} | {_fmt(row['holt_winters_cost_at_slo'])} "
            f"| {_fmt(row['periodic_max_cost_at_slo'])} | {_fmt(row['oracle_cost_at_slo'])} "
            f"| {_fmt(row['helios_gap_closed'], True)} | {_fmt(row['helios_q50_gap_closed'], True)} "
            f"| {_fmt(row['holt_winters_gap_closed'], True)} "
            f"| {_fmt(row['periodic_max_gap_closed'], True)} | {_fmt(row['mae_vs_persistence'])} "
            f"| {100 * row['helios_unserved']:.2f} % / {100 * row['reactive_unserved']:.2f} % | {verdict(row)} |"
        )
    for failure in meta.get("failed", []):
        lines.append(f"| {failure.split(':', 1)[0]} | — | — | failed: {failure.split(':', 1)[1].strip()} |")
    accuracy = [row["accuracy"] for row in rows if "accuracy" in row]
    if accuracy:
        lines += [
            "",
            "Forecast accuracy of helios' point forecast at the end of the served window (lead time + one step), "
            "on the same steps: MAE over seasonal naive's (one day earlier; MASE) and over persistence's (the last "
            "value, the real rival at short horizons); < 1 beats it. n/a: the lead time is shorter than the step.",
            "",
            "| trace | step | "
            + " | ".join(f"MASE {m} min" for m in ACCURACY_LEADS)
            + " | "
            + " | ".join(f"vs persistence {m} min" for m in ACCURACY_LEADS)
            + " |",
            "|---|---|" + "---|" * (2 * len(ACCURACY_LEADS)),
        ]
        for row in accuracy:
            cells = " | ".join(_fmt(row[f"mase_{m}m"]) for m in ACCURACY_LEADS)
            versus = " | ".join(_fmt(row.get(f"persistence_{m}m")) for m in ACCURACY_LEADS)
            lines.append(f"| {row['trace']} | {row['step']} | {cells} | {versus} |")
    return "\n".join(lines) + "\n"


def speed(repeat: int, settings: Settings, workers: int) -> dict[str, Any]:
    """The 87-day WorldCup98 replay (the table's settings, auto with the calendar) vs seasonal naive only
    (the baseline), same run."""
    trace = TRACES / "worldcup98" / "invocation_count.csv"
    source = CsvSource(trace)
    step = infer_step(source.frame)
    frame, clean = load(source, "worldcup98", source.frame["ds"][0], source.frame["ds"][-1], step)
    threshold = capacity_per_pod(frame["y"].to_numpy())
    events = tuple(load_calendar(CALENDAR).events)
    configs = {
        model: BacktestConfig(
            meta=ScalerMetadata.parse(
                {
                    "query": "worldcup98",
                    "threshold": repr(threshold),
                    "leadTime": "5m",
                    "queryStep": "1m",
                    "model": model,
                    "historyTimeWindow": format_duration(HISTORY),
                }
            ),
            startup=timedelta(minutes=5),
            retrain_interval=settings.retrain_interval,
            refresh_interval=settings.refresh_interval,
            stale_after=settings.stale_after,
            warmup=WARMUP,
            workers=workers,
            events=events if model == "auto" else (),
        )
        for model in ("auto", "seasonal_naive")
    }
    timings: dict[str, list[float]] = {model: [] for model in configs}
    for _ in range(repeat):
        for model, config in configs.items():
            started = time.perf_counter()
            run_backtest(frame, clean, config)
            timings[model].append(time.perf_counter() - started)
            print(f"  worldcup98 87-day replay, model {model}: {timings[model][-1]:.1f} s", flush=True)
    auto, naive = statistics.median(timings["auto"]), statistics.median(timings["seasonal_naive"])
    return {
        "points": frame.height,
        "runs": repeat,
        "median_seconds_auto": round(auto, 1),
        "median_seconds_seasonal_naive": round(naive, 1),
        "ratio_auto_to_naive": round(auto / naive, 2),
        "all_seconds": timings,
        "target_seconds": 180,
    }


def update_readme(text: str) -> None:
    readme = ROOT / "README.md"
    content = readme.read_text()
    if README_START not in content or README_END not in content:
        raise SystemExit(f"README.md lacks the markers {README_START} / {README_END}")
    head, rest = content.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    readme.write_text(f"{head}{README_START}\n{text}{README_END}{tail}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="two NAB series, no accuracy sweep, README untouched")
    parser.add_argument("--speed", type=int, default=0, metavar="N", help="only time the 87-day replay, N runs")
    parser.add_argument("--workers", type=int, default=2, help="processes for retrains (default 2)")
    parser.add_argument("--no-accuracy", action="store_true", help="skip the MASE sweep")
    parser.add_argument(
        "--only", action="append", default=[], metavar="TRACE", help="only these traces (repeatable; README untouched)"
    )
    args = parser.parse_args()
    if not TRACES.is_dir():
        raise SystemExit(f"traces not found at {TRACES}: check out shared/ beside the repository or set HELIOS_TRACES")
    settings = Settings()
    RESULTS.mkdir(parents=True, exist_ok=True)
    machine = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "loadavg_start": os.getloadavg(),
        "command": "python benchmarks/bench_backtest.py" + (" --quick" if args.quick else ""),
    }
    started = time.perf_counter()
    if args.speed:
        result = {**machine, **speed(args.speed, settings, args.workers)}
        (RESULTS / "backtest_speed.json").write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
        return 0
    rows: list[dict[str, Any]] = []
    failed: list[str] = []
    chosen = [trace for trace in traces(args.quick) if not args.only or trace.name in args.only]
    for trace in chosen:
        try:
            rows.extend(run_trace(trace, settings, args.workers, accuracy=not (args.quick or args.no_accuracy)))
        except (HeliosError, ValueError) as exc:  # report the trace, go on with the others
            print(f"  {trace.name}: FAILED: {exc}", flush=True)
            failed.append(f"{trace.name}: {exc}")
    machine["failed"] = failed
    machine["seconds"] = time.perf_counter() - started
    table = markdown(rows, machine)
    print(table)
    suffix = "_quick" if args.quick else "_only" if args.only else ""
    (RESULTS / f"backtest{suffix}.md").write_text(table)
    (RESULTS / f"backtest{suffix}.json").write_text(json.dumps({**machine, "rows": rows}, indent=2) + "\n")
    if not args.quick and not args.only:
        update_readme(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
