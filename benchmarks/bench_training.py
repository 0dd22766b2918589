"""Training speed and memory of helios-scaler: retraining 1,000 series, event-loop impact, RSS per series.

Run from the repository root::

    .venv/bin/python benchmarks/bench_training.py              # sample of 20 series, 3 repeats, ~12 minutes
    .venv/bin/python benchmarks/bench_training.py --quick      # 6 series, 1 repeat, ~2 minutes
    .venv/bin/python benchmarks/bench_training.py --series 1000 --models auto --modes process --repeats 1 \\
        --no-loop --no-memory --tag 1000                       # the real full retrain of 1,000 series

Targets (issue "Prove it"): retrain 1,000 series of 14 days at 1-minute resolution within 60 s on
2 cores, and stay under 1 MiB of resident memory per served series at steady state.

Method
------
*Data.*  The real WorldCup98 requests-per-minute trace (``shared/traces/worldcup98``, 87 days).
Series ``i`` of 1,000 is the 14-day window starting ``i * 73 days / 1000`` (about 105 minutes
apart, so consecutive windows overlap but no two are equal) multiplied by a deterministic scale
in [0.25, 4] (log-uniform, seeded).  Every window is re-stamped so that all series end at the
same minute — as live series all end "now" — which shifts each one's daily phase like a workload
in another time zone.  Each raw window goes through ``features.align_to_grid`` (the trainer's
cleaning) before it is modelled.  A sample of ``--series`` n is spread evenly over the 1,000 (so it
covers the quiet first weeks and the tournament peak alike).

*Throughput.*  ``select_and_fit(frame, step=1 min, horizon=8, model=m, window=6, target=...)`` — the
trainer's retrain for a 5-minute ``leadTime``
— for ``m`` in ``auto`` and each single model, over the sample, in three modes: **serial** (the
baseline), a ``ThreadPoolExecutor(2)`` (what the trainer uses) and a ``ProcessPoolExecutor(2)``
(forkserver; frames are pickled to the workers and the FittedSeries pickled back, as a
process-pool trainer would have to).  Pools are created and warmed up (imports, first fit) once,
before timing, as a long-running trainer keeps its pool.  Each (model, mode) is timed
``--repeats`` times, repeats outermost so the machine's background load hits every mode alike;
figures are medians; speedups are ratios of medians measured in the same run.  We also record
CPU seconds used (this process' threads, or the worker processes from ``/proc/<pid>/stat``): CPU
per series does not depend on other load on the machine.  Seconds per series x 1,000 is the
**extrapolated** time for 1,000 series (labelled so); ``--series 1000`` measures it for real.

*Event loop.*  A coroutine sleeps ``asyncio.sleep(0.001)`` in a loop and records how late each
wake-up is — the delay a gRPC handler on the same loop would see.  Measured idle, while the
trainer-equivalent ``loop.run_in_executor(ThreadPoolExecutor(2), select_and_fit, ...)`` retrains
series with ``model=auto``, and the same with a ``ProcessPoolExecutor(2)``.

*Memory.*  Each measurement runs in a fresh Python process.  After imports, loading the trace and
warm-up fits, it builds the trainer-equivalent state of series one after another — its own 14-day
cleaned frame, a ``FittedSeries`` and one forecast (mean + 0.5/0.9 bands) — and reads RSS
(``/proc/self/statm``, after ``gc.collect()``) at N1 and N2 series.  MiB per series is the slope
``(RSS(N2) - RSS(N1)) / (N2 - N1)``, which removes fixed costs (interpreter, libraries, numba
code).  Fitting 1,000 series for real would take as long as the throughput run, so each series'
``FittedSeries`` is an independent deep copy (pickle round trip) of one of a few real fits
(``auto``: K real auto fits with their real mix of chosen models; per model: that model only, the
worst case for each).  A copy owns all its memory (LightGBM's ``lgb.train`` already reloads the
booster from its model string and frees the training data, so a copy equals a trained booster).
Frames are distinct real windows, not copies.  Pickle size and the Python heap (tracemalloc) of one
FittedSeries per model are reported for insight; tracemalloc does not see LightGBM's C++ booster,
the RSS slope does.

Results: a Markdown table on stdout and in ``benchmarks/results/training[_TAG].md``; every raw
figure, the machine facts and the load average in ``benchmarks/results/training[_TAG].json``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import multiprocessing
import os
import pickle
import platform
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from _machine import cpu_model, git_commit, machine_jiffies, proc_cpu_seconds
from bench_backtest import capacity_per_pod

from helios_scaler.features.pipeline import align_to_grid
from helios_scaler.features.schema import DS, Y
from helios_scaler.models.selection import FittedSeries, select_and_fit
from helios_scaler.policy import forecast_horizon, lead_steps
from helios_scaler.trigger import Target

STEP = timedelta(minutes=1)
#: The trainer's retrain for a 5-minute leadTime refreshed every 30 s: the horizon it fits, the window it
#: serves, and the workload the cost is measured for (capacity per pod: the series' p99 / 30).
LEAD = timedelta(minutes=5)
HORIZON = forecast_horizon(LEAD, STEP, timedelta(seconds=30))
WINDOW = lead_steps(LEAD, STEP)
DAYS = 14
TOTAL_SERIES = 1000
TARGET_SECONDS = 60.0
TARGET_MIB_PER_SERIES = 1.0
MODELS = ("auto", "seasonal_naive", "ets", "mstl", "lightgbm")
MODES = ("serial", "thread", "process")
WORKERS = 2
QUANTILES = (0.5, 0.9)
ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DEFAULT_TRACES = Path(__file__).resolve().parents[2] / "shared" / "traces"
PAGE = os.sysconf("SC_PAGE_SIZE")
MIB = 1024 * 1024


# --------------------------------------------------------------------------- data


def load_trace(traces: Path) -> pl.DataFrame:
    """The WorldCup98 trace as ``ds`` (UTC) / ``y`` (float)."""
    path = traces / "worldcup98" / "invocation_count.csv"
    raw = pl.read_csv(path, try_parse_dates=True)
    return raw.select(
        pl.col("period").dt.replace_time_zone("UTC").cast(pl.Datetime("us", "UTC")).alias(DS),
        pl.col("count").cast(pl.Float64).alias(Y),
    )


def build_series(trace: pl.DataFrame, indices: Sequence[int], total: int = TOTAL_SERIES) -> list[pl.DataFrame]:
    """Series ``indices`` of ``total``: shifted, scaled 14-day windows, all ending at one minute, cleaned."""
    window = DAYS * 1440
    first, last = trace[DS][0], trace[DS][-1]
    span = int((last - first) / STEP) + 1 - window
    scales = np.exp(np.random.default_rng(98).uniform(np.log(0.25), np.log(4.0), total))
    common_end = last
    frames = []
    for i in indices:
        start = first + (i * span // total) * STEP
        end = start + (window - 1) * STEP
        raw = trace.filter(pl.col(DS).is_between(start, end))
        raw = raw.select(pl.col(DS) + (common_end - end), pl.col(Y) * float(scales[i]))
        clean, _ = align_to_grid(raw, STEP)
        frames.append(clean)
    return frames


def sample_indices(n: int, total: int = TOTAL_SERIES) -> list[int]:
    """``n`` series spread evenly over the ``total``."""
    if n >= total:
        return list(range(total))
    return sorted({int(i) for i in np.linspace(0, total - 1, n).round()})


# --------------------------------------------------------------------------- measuring helpers


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


def fit_one(frame: pl.DataFrame, model: str) -> FittedSeries:
    target = Target(threshold=capacity_per_pod(frame["y"].to_numpy()), step=STEP, startup=LEAD)
    return select_and_fit(frame, STEP, HORIZON, model=model, window=WINDOW, target=target)


def _warm(_: int) -> int:
    return os.getpid()


class Runner:
    """Runs the retrain of a batch of series serially or on a pool, measuring wall and CPU time."""

    def __init__(self, mode: str, workers: int, warm_frame: pl.DataFrame) -> None:
        self.mode = mode
        self.pool: Executor | None = None
        self.pids: list[int] = []
        if mode == "thread":
            self.pool = ThreadPoolExecutor(workers, thread_name_prefix="bench-train")
        elif mode == "process":
            self.pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver"))
            self.pids = sorted(set(self.pool.map(_warm, range(workers * 4))))
        if self.pool is not None:  # imports, numba/statsforecast first calls, LightGBM load
            list(self.pool.map(fit_one, [warm_frame] * workers * 2, ["auto"] * workers * 2))
            if mode == "process":
                self.pids = sorted(set(self.pool.map(_warm, range(workers * 8))) | set(self.pids))
        else:
            fit_one(warm_frame, "auto")

    def cpu(self) -> float:
        if self.mode == "process":
            return sum(proc_cpu_seconds(pid) for pid in self.pids)
        return time.process_time()

    def run(self, frames: Sequence[pl.DataFrame], model: str) -> dict[str, Any]:
        gc.collect()
        load = os.getloadavg()[0]
        busy0, total0 = machine_jiffies()
        cpu0 = self.cpu()
        started = time.perf_counter()
        if self.pool is None:
            fitted = [fit_one(frame, model) for frame in frames]
        else:
            fitted = list(self.pool.map(fit_one, frames, [model] * len(frames)))
        wall = time.perf_counter() - started
        cpu = self.cpu() - cpu0
        busy1, total1 = machine_jiffies()
        cores = os.cpu_count() or 1
        return {
            "wall": wall,
            "cpu": cpu,
            "loadavg_1m": load,
            "machine_busy_cores": (busy1 - busy0) / max(1.0, total1 - total0) * cores,
            "chosen": [f.alias for f in fitted],
            "fit_seconds": {
                alias: float(np.sum([b.fit_seconds for f in fitted for b in f.backtests if b.alias == alias]))
                for alias in ("seasonal_naive", "ets", "mstl", "lightgbm")
            },
        }

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def throughput(
    frames: list[pl.DataFrame], models: Sequence[str], modes: Sequence[str], repeats: int, workers: int
) -> dict[str, Any]:
    runners = {mode: Runner(mode, workers, frames[0]) for mode in modes}
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {m: {mode: [] for mode in modes} for m in models}
    try:
        for repeat in range(repeats):
            for model in models:
                order = list(modes) if repeat % 2 == 0 else list(reversed(modes))
                for mode in order:
                    result = runners[mode].run(frames, model)
                    runs[model][mode].append(result)
                    print(
                        f"  repeat {repeat + 1}/{repeats} {model:>14} {mode:>7}: {result['wall']:7.2f} s wall, "
                        f"{result['cpu']:7.2f} s CPU, load {result['loadavg_1m']:.2f}",
                        file=sys.stderr,
                        flush=True,
                    )
    finally:
        for runner in runners.values():
            runner.close()
    n = len(frames)
    summary: dict[str, Any] = {}
    for model in models:
        rows: dict[str, Any] = {}
        baseline = statistics.median(r["wall"] for r in runs[model][modes[0]]) if "serial" in modes else None
        for mode in modes:
            wall = statistics.median(r["wall"] for r in runs[model][mode])
            cpu = statistics.median(r["cpu"] for r in runs[model][mode])
            per_series = wall / n
            rows[mode] = {
                "wall_median": wall,
                "walls": [r["wall"] for r in runs[model][mode]],
                "cpu_median": cpu,
                "seconds_per_series": per_series,
                "cpu_seconds_per_series": cpu / n,
                "projected_1000_seconds": per_series * TOTAL_SERIES,
                "ratio_to_target": per_series * TOTAL_SERIES / TARGET_SECONDS,
                "speedup_vs_serial": (baseline / wall) if baseline and "serial" in modes else None,
                # Modes run back to back within a repeat, so per-repeat ratios share the machine's load.
                "speedups_per_repeat": [
                    base["wall"] / r["wall"] for base, r in zip(runs[model]["serial"], runs[model][mode], strict=True)
                ]
                if "serial" in modes
                else [],
                "cores_used": cpu / wall if wall > 0 else None,
                "loadavg_1m": [r["loadavg_1m"] for r in runs[model][mode]],
                "machine_busy_cores": [r["machine_busy_cores"] for r in runs[model][mode]],
            }
        first = runs[model][modes[0]][0]
        rows["chosen"] = {alias: first["chosen"].count(alias) for alias in sorted(set(first["chosen"]))}
        rows["candidate_fit_seconds_per_series"] = {
            alias: statistics.median(r["fit_seconds"][alias] for r in runs[model][modes[0]]) / n
            for alias in first["fit_seconds"]
        }
        summary[model] = rows
    return {"series": n, "repeats": repeats, "workers": workers, "models": summary}


# --------------------------------------------------------------------------- event loop


async def _lag_probe(stop: asyncio.Event, lags: list[float]) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        before = loop.time()
        await asyncio.sleep(0.001)
        lags.append(loop.time() - before - 0.001)


def _lag_stats(lags: list[float]) -> dict[str, float]:
    ms = np.asarray(lags) * 1000
    return {
        "samples": len(ms),
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "max_ms": float(ms.max()),
    }


async def _loop_scenario(
    pool: Executor | None, frames: list[pl.DataFrame], model: str, idle_seconds: float
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    lags: list[float] = []
    probe = asyncio.create_task(_lag_probe(stop, lags))
    await asyncio.sleep(0.05)
    started = time.perf_counter()
    if pool is None:
        await asyncio.sleep(idle_seconds)
    else:
        await asyncio.gather(*(loop.run_in_executor(pool, fit_one, frame, model) for frame in frames))
    wall = time.perf_counter() - started
    stop.set()
    await probe
    # Share of the wall time the loop could not run (late beyond the 1 ms it asked to sleep).
    stalled = float(np.sum(lags)) / wall
    return {**_lag_stats(lags), "seconds": wall, "stalled_fraction": stalled, "loadavg_1m": os.getloadavg()[0]}


def event_loop(frames: list[pl.DataFrame], workers: int, models: Sequence[str]) -> dict[str, Any]:
    thread = ThreadPoolExecutor(workers)
    process = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver"))
    try:
        for pool in (thread, process):  # warm up outside the measurement
            list(pool.map(fit_one, [frames[0]] * workers, ["auto"] * workers))
        results = {"idle": asyncio.run(_loop_scenario(None, frames, "auto", 5.0))}
        for model in models:
            if model == "seasonal_naive":
                continue
            results[f"thread pool, {model}"] = asyncio.run(_loop_scenario(thread, frames, model, 0))
        results["process pool, auto"] = asyncio.run(_loop_scenario(process, frames, "auto", 0))
    finally:
        thread.shutdown()
        process.shutdown()
    for name, result in results.items():
        print(f"  event loop {name}: {result}", file=sys.stderr, flush=True)
    return {"series_trained": len(frames), "scenarios": results}


# --------------------------------------------------------------------------- memory (child process)


def memory_child(kind: str, n1: int, n2: int, templates: int, traces: Path) -> dict[str, Any]:
    """Run in a fresh process: RSS slope of the trainer-equivalent state of series (see module doc)."""
    trace = load_trace(traces)
    indices = sample_indices(n2)
    template_frames = build_series(trace, sample_indices(templates))
    fitted_templates: list[FittedSeries] = []
    if kind != "frames":
        for model in ("seasonal_naive", "ets", "mstl", "lightgbm"):  # load every library's code first
            fit_one(template_frames[0], model)
        fitted_templates = [fit_one(frame, kind) for frame in template_frames]
    del template_frames
    gc.collect()
    base = rss_bytes()
    state: list[tuple[pl.DataFrame, FittedSeries | None, Any]] = []
    readings: dict[int, int] = {}
    for count, index in enumerate(indices, start=1):
        frame = build_series(trace, [index])[0]
        if fitted_templates:
            fitted = pickle.loads(pickle.dumps(fitted_templates[count % len(fitted_templates)]))
            forecast = fitted.forecast(frame, QUANTILES)
        else:
            fitted, forecast = None, None
        state.append((frame, fitted, forecast))
        if count in (n1, n2):
            gc.collect()
            readings[count] = rss_bytes()
    per_model: dict[str, Any] = {}
    for template in fitted_templates[:1]:
        tracemalloc.start()
        snapshot_before = tracemalloc.take_snapshot()
        copy = pickle.loads(pickle.dumps(template))
        heap = sum(stat.size_diff for stat in tracemalloc.take_snapshot().compare_to(snapshot_before, "filename"))
        tracemalloc.stop()
        per_model = {"pickle_bytes": len(pickle.dumps(template)), "python_heap_bytes": heap}
        del copy
    frame_bytes = float(np.mean([s[0].estimated_size() for s in state]))
    chosen: dict[str, int] = {}
    for template in fitted_templates:
        chosen[template.alias] = chosen.get(template.alias, 0) + 1
    return {
        "kind": kind,
        "n1": n1,
        "n2": n2,
        "templates": len(fitted_templates),
        "template_models": chosen,
        "rss_base_mib": base / MIB,
        "rss_n1_mib": readings[n1] / MIB,
        "rss_n2_mib": readings[n2] / MIB,
        "mib_per_series": (readings[n2] - readings[n1]) / (n2 - n1) / MIB,
        "frame_bytes": frame_bytes,
        **per_model,
    }


def memory(kinds: Sequence[str], n1: int, n2: int, templates: int, traces: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for kind in kinds:
        command = [
            sys.executable,
            __file__,
            "--memory-child",
            kind,
            "--memory-n",
            str(n1),
            str(n2),
            "--templates",
            str(templates),
            "--traces",
            str(traces),
        ]
        done = subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT)
        results[kind] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"  memory {kind}: {results[kind]}", file=sys.stderr, flush=True)
    return results


# --------------------------------------------------------------------------- report


def machine_facts() -> dict[str, Any]:
    import lightgbm
    import statsforecast

    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
        "polars": pl.__version__,
        "numpy": np.__version__,
        "statsforecast": statsforecast.__version__,
        "lightgbm": lightgbm.__version__,
        "commit": git_commit(ROOT),
        "loadavg_start": os.getloadavg(),
    }


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def report(results: dict[str, Any]) -> str:
    facts = results["machine"]
    lines = [
        "# Training speed and memory",
        "",
        f"`{results['command']}` — {facts['date']}, commit {facts['commit']}, {facts['cpu_count']} x "
        f"{facts['cpu_model']}, Python {facts['python']}, statsforecast {facts['statsforecast']}, "
        f"LightGBM {facts['lightgbm']}, polars {facts['polars']}. Load average at start "
        f"{facts['loadavg_start'][0]:.2f} / {facts['loadavg_start'][1]:.2f} / {facts['loadavg_start'][2]:.2f}, "
        f"at end {results['loadavg_end'][0]:.2f} (the machine was shared with other work).",
        "",
    ]
    tp = results.get("throughput")
    if tp:
        n = tp["series"]
        label = "measured" if n >= TOTAL_SERIES else f"**extrapolated** from {n} series"
        lines += [
            "## Retraining throughput: `select_and_fit(horizon=8, window=6, step=1 min)`, 14 days x 1-minute series",
            "",
            f"{n} real series (of {TOTAL_SERIES}), medians of {tp['repeats']} repeats; pools of {tp['workers']}. "
            f"*1,000 series* is {label}; *x target* = that time / {TARGET_SECONDS:.0f} s (> 1 misses).",
            "",
            "| model | mode | median wall (s) | s / series | CPU s / series | 1,000 series (s) | x target "
            "| speedup vs serial (per repeat) | our cores used | machine busy cores | load 1m |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for model, rows in tp["models"].items():
            for mode in MODES:
                if mode not in rows:
                    continue
                row = rows[mode]
                serial_walls = rows["serial"]["walls"] if "serial" in rows else []
                per_repeat = ", ".join(f"{b / w:.2f}" for b, w in zip(serial_walls, row["walls"], strict=False))
                lines.append(
                    f"| {model} | {mode} | {row['wall_median']:.2f} | {row['seconds_per_series']:.3f} | "
                    f"{row['cpu_seconds_per_series']:.3f} | {row['projected_1000_seconds']:.0f} | "
                    f"{row['ratio_to_target']:.1f} | {_fmt(row['speedup_vs_serial'])} "
                    f"({per_repeat}) | "
                    f"{_fmt(row['cores_used'])} | {statistics.median(row['machine_busy_cores']):.2f} | "
                    f"{statistics.median(row['loadavg_1m']):.2f} |"
                )
        lines += [
            "",
            "*our cores used* = CPU seconds / wall seconds of the measurement; *machine busy cores* = the whole "
            "machine's, from /proc/stat. Where we got ~1 core while the machine was 2 cores busy, other work held "
            "the second core; the per-repeat speedups (modes run back to back) show what a free core gives. "
            "*CPU s / series* does not depend on that load: 1,000 series on 2 free cores with perfect scaling "
            "take CPU s / series x 500.",
        ]
        auto = tp["models"].get("auto")
        if auto:
            costs = auto["candidate_fit_seconds_per_series"]
            first_mode = next(mode for mode in MODES if mode in auto)
            total = auto[first_mode]["seconds_per_series"]
            lines += [
                "",
                f"`auto` in {first_mode} mode: {total:.3f} s per series"
                + (
                    ", of which candidate fits: " + ", ".join(f"{alias} {s:.3f} s" for alias, s in costs.items() if s)
                    if any(costs.values())
                    else " (its candidates are rules with nothing to fit: all of it is the cost backtest)"
                )
                + ". Chosen: "
                + ", ".join(f"{alias} {count}" for alias, count in auto["chosen"].items())
                + ".",
            ]
        lines.append("")
    loop = results.get("event_loop")
    if loop:
        lines += [
            f"## Event-loop lag while training (`asyncio.sleep(0.001)` lateness, {loop['series_trained']} "
            "series per scenario)",
            "",
            "| scenario | seconds | wake-ups | p50 (ms) | p99 (ms) | max (ms) | loop stalled |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for name, row in loop["scenarios"].items():
            lines.append(
                f"| {name} | {row['seconds']:.1f} | {row['samples']} | {row['p50_ms']:.3f} | "
                f"{row['p99_ms']:.3f} | {row['max_ms']:.1f} | {row['stalled_fraction']:.0%} |"
            )
        lines.append("")
    mem = results.get("memory")
    if mem:
        any_row = next(iter(mem.values()))
        lines += [
            f"## Resident memory per served series (fresh process each; slope between {any_row['n1']} and "
            f"{any_row['n2']} series)",
            "",
            f"State per series: 14-day cleaned frame + FittedSeries + one forecast. Target {TARGET_MIB_PER_SERIES} "
            "MiB per series.",
            "",
            "| state | fitted models (real fits copied) | RSS base (MiB) | RSS at N1 | RSS at N2 | MiB / series "
            "| pickle of FittedSeries (KiB) | Python heap of FittedSeries (KiB) |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for kind, row in mem.items():
            models = ", ".join(f"{a} {c}" for a, c in row["template_models"].items()) or "none (frame only)"
            lines.append(
                f"| {kind} | {models} | {row['rss_base_mib']:.0f} | {row['rss_n1_mib']:.0f} | "
                f"{row['rss_n2_mib']:.0f} | {row['mib_per_series']:.3f} | "
                f"{_fmt(row.get('pickle_bytes', 0) / 1024 if 'pickle_bytes' in row else None, '.1f')} | "
                f"{_fmt(row.get('python_heap_bytes', 0) / 1024 if 'python_heap_bytes' in row else None, '.1f')} |"
            )
        lines += ["", f"Frame alone: {any_row['frame_bytes'] / 1024:.0f} KiB (polars `estimated_size`).", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", type=int, default=20, help="series in the throughput sample (1000: full run)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=WORKERS)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--loop-series", type=int, default=6, help="series retrained during the event-loop probe")
    parser.add_argument("--memory-n", type=int, nargs=2, default=(200, 1000), metavar=("N1", "N2"))
    parser.add_argument("--memory-kinds", nargs="+", default=["frames", *MODELS])
    parser.add_argument("--templates", type=int, default=8, help="real fits copied to build the memory state")
    parser.add_argument("--no-throughput", action="store_true")
    parser.add_argument("--no-loop", action="store_true")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--quick", action="store_true", help="6 series, 1 repeat, short memory run")
    parser.add_argument("--traces", type=Path, default=DEFAULT_TRACES)
    parser.add_argument("--tag", default="", help="suffix of the result files (training_TAG.md)")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--render", type=Path, help="only re-render the Markdown of a results JSON")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.series, args.repeats, args.loop_series, args.templates = 6, 1, 4, 3
        args.memory_n = (50, 200)
        args.memory_kinds = ["frames", "auto", "lightgbm"]
        args.tag = args.tag or "quick"
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.memory_child:
        n1, n2 = args.memory_n
        print(json.dumps(memory_child(args.memory_child, n1, n2, args.templates, args.traces)))
        return
    if args.render:
        print(report(json.loads(args.render.read_text())))
        return
    results: dict[str, Any] = {
        "command": " ".join(["benchmarks/bench_training.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine_facts(),
    }
    print(f"load average at start: {results['machine']['loadavg_start']}", file=sys.stderr)
    trace = load_trace(args.traces)
    frames = build_series(trace, sample_indices(args.series))
    heights = {frame.height for frame in frames}
    print(f"{len(frames)} series of {heights} points", file=sys.stderr, flush=True)
    steps: list[tuple[str, Callable[[], Any]]] = []
    if not args.no_throughput:
        steps.append(("throughput", lambda: throughput(frames, args.models, args.modes, args.repeats, args.workers)))
    if not args.no_loop:
        steps.append(("event_loop", lambda: event_loop(frames[: args.loop_series], args.workers, args.models)))
    if not args.no_memory:
        n1, n2 = args.memory_n
        steps.append(("memory", lambda: memory(args.memory_kinds, n1, n2, args.templates, args.traces)))
    for name, step in steps:
        started = time.perf_counter()
        print(f"{name} …", file=sys.stderr, flush=True)
        results[name] = step()
        print(f"{name} done in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    results["loadavg_end"] = os.getloadavg()
    text = report(results)
    print(text)
    if not args.no_write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        stem = "training" + (f"_{args.tag}" if args.tag else "")
        (RESULTS / f"{stem}.md").write_text(text + "\n")
        (RESULTS / f"{stem}.json").write_text(json.dumps(results, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
