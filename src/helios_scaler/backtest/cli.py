"""The ``backtest`` command: its arguments, then sources and metadata → run → files."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from helios_scaler.backtest import report
from helios_scaler.backtest.run import BacktestConfig, load, run_backtest
from helios_scaler.compat import progress
from helios_scaler.config import Settings, load_settings
from helios_scaler.durations import format_duration, parse_duration
from helios_scaler.errors import HeliosError, InputDataError
from helios_scaler.events.calendar import load_calendar
from helios_scaler.source.base import Source
from helios_scaler.source.csv import CsvSource, infer_step, parse_iso_utc
from helios_scaler.source.registry import SourceResolver
from helios_scaler.trigger import ScalerMetadata

logger = logging.getLogger(__name__)


def _time(flag: str, text: str | None) -> datetime:
    if not text:
        raise InputDataError(f"{flag} is required with --query (ISO 8601, e.g. 2026-11-01T00:00:00Z)")
    try:
        return parse_iso_utc(text)
    except ValueError:
        raise InputDataError(f"{flag} {text!r} is not ISO 8601 (e.g. 2026-11-01T00:00:00Z)") from None


def _duration(flag: str, text: str) -> timedelta:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise InputDataError(f"{flag}: {exc}") from None


def _source(args: argparse.Namespace, settings: Settings) -> tuple[Source, str, datetime, datetime, timedelta | None]:
    """The source, query and range to read, and the step the history implies (CSV)."""
    if (args.input is None) == (args.query is None):
        raise InputDataError("give either --input FILE.csv or --query with --start/--end")
    if args.input is not None:
        csv = CsvSource(args.input, args.duplicates)
        first, last = csv.frame["ds"][0], csv.frame["ds"][-1]
        return csv, str(args.input), first, last, infer_step(csv.frame)
    resolver = SourceResolver.from_settings(settings)
    return resolver.resolve(None), args.query, _time("--start", args.start), _time("--end", args.end), None


def add_parser(commands: Any) -> None:
    """The ``backtest`` subcommand's arguments (``commands``: the CLI's subparsers)."""
    backtest = commands.add_parser(
        "backtest",
        help="what-if: replay history through the serving code path and simulate KEDA + HPA for every strategy",
        description="Replay a history (CSV or Prometheus) through the exact code path that serves GetMetrics, on a "
        "simulated clock, and simulate KEDA + the HPA on what helios, reactive scaling, Holt-Winters (PHPA), an FFT "
        "periodic forecast (Crane EHPA) and an oracle would have served. Writes steps.csv, summary.json, report.md "
        "and PNG plots into --out.",
    )
    source = backtest.add_argument_group("history (a CSV, or a Prometheus query over a range)")
    source.add_argument("--input", type=Path, help="CSV file: first column timestamp, second column value")
    source.add_argument(
        "--duplicates",
        choices=("error", "last"),
        default="error",
        help="a repeated timestamp in the CSV: refuse it (default) or keep its last row (daylight-saving exports)",
    )
    source.add_argument("--query", help="PromQL returning one series (with --start/--end and --prometheus-url)")
    source.add_argument("--start", help="range start, ISO 8601 (with --query)")
    source.add_argument("--end", help="range end, ISO 8601 (with --query)")
    source.add_argument("--prometheus-url", dest="prometheus_url", help="Prometheus base URL (with --query)")
    source.add_argument("--config", type=Path, help="server config file (credentials, allowlist) for --query")
    trigger = backtest.add_argument_group("the trigger, as in the ScaledObject's metadata")
    trigger.add_argument("--threshold", required=True, help="target value per replica (metadata threshold)")
    trigger.add_argument("--lead-time", default="5m", help="metadata leadTime (default: 5m)")
    trigger.add_argument("--quantile", default="auto", help="metadata quantile (default: auto)")
    trigger.add_argument(
        "--calendar",
        type=Path,
        action="append",
        default=[],
        help="a known-event calendar file (CSV or YAML: start,end,name,kind; times with a UTC offset); repeatable",
    )
    trigger.add_argument("--model", default="auto", help="metadata model (default: auto)")
    trigger.add_argument("--history", default="7d", help="metadata historyTimeWindow (default: 7d)")
    trigger.add_argument("--step", help="metadata queryStep (default: the CSV's own step; 1m for --query)")
    workload = backtest.add_argument_group("the workload and the HPA")
    workload.add_argument("--startup", required=True, help="pod start-up time: ordered at t, serving from t + startup")
    workload.add_argument("--min-replicas", type=int, default=1, help="minReplicaCount (default: 1)")
    workload.add_argument("--max-replicas", type=int, default=10_000, help="maxReplicaCount (default: 10000)")
    workload.add_argument("--scale-down-window", default="300s", help="HPA scale-down stabilization (default: 300s)")
    run = backtest.add_argument_group("the run")
    run.add_argument("--retrain-interval", default=None, help="retrain schedule (default: the server's, 1d)")
    run.add_argument("--warmup", default=None, help="history before evaluation starts (default: --history)")
    run.add_argument("--workers", type=int, default=2, help="processes fitting retrains in parallel (default: 2)")
    run.add_argument("--out", type=Path, default=Path("backtest-out"), help="output directory (default: backtest-out)")
    run.add_argument("--title", default=None, help="report title (default: the input's name)")
    run.add_argument("--no-plots", action="store_true", help="skip the PNG plots (no matplotlib needed)")


def backtest(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        settings = load_settings(args.config, os.environ, {"prometheus_url": args.prometheus_url})
        source, query, start, end, csv_step = _source(args, settings)
        step = args.step or (format_duration(csv_step) if csv_step else "1m")
        metadata = {
            "query": query,
            "threshold": args.threshold,
            "leadTime": args.lead_time,
            "quantile": args.quantile,
            "model": args.model,
            "historyTimeWindow": args.history,
            "queryStep": step,
        }
        meta = ScalerMetadata.parse(metadata)
        config = BacktestConfig(
            meta=meta,
            startup=_duration("--startup", args.startup),
            retrain_interval=_duration("--retrain-interval", args.retrain_interval)
            if args.retrain_interval
            else settings.retrain_interval,
            refresh_interval=settings.refresh_interval,
            stale_after=settings.stale_after,
            min_replicas=args.min_replicas,
            max_replicas=args.max_replicas,
            scale_down_window=_duration("--scale-down-window", args.scale_down_window),
            warmup=_duration("--warmup", args.warmup) if args.warmup else None,
            workers=max(1, args.workers),
            events=tuple(sorted(event for path in args.calendar for event in load_calendar(path).events)),
        )
        frame, clean = load(source, query, start, end, meta.query_step)
        logger.info(
            "read %d points (%d filled, %d NaN/Inf dropped); replaying at %s, retraining every %s",
            frame.height,
            clean.filled,
            clean.dropped_non_finite,
            format_duration(meta.query_step),
            format_duration(config.retrain_interval),
        )
        outcome = run_backtest(frame, clean, config, lambda items: progress(items, desc="retrains"))
        title = args.title or (args.input.name if args.input is not None else query)
        written = report.write(outcome, args.out, title, with_plots=not args.no_plots)
    except (HeliosError, ValueError, OSError) as exc:
        print(f"helios-scaler backtest: {exc}", file=sys.stderr)
        return 2
    print(report.markdown(outcome, title).split("\n*Cost at SLO*")[0])
    print(f"\nwrote {', '.join(str(path) for path in written)}")
    return 0
