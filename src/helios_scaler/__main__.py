"""Command line: ``helios-scaler serve`` and ``helios-scaler demo``.

CLI → Settings → logging → app.run().  Every server option is also a config-file key
and a ``HELIOS_*`` environment variable (see :mod:`helios_scaler.config`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from helios_scaler import __version__
from helios_scaler.config import ENV_PREFIX, FIELDS, Settings, load_settings
from helios_scaler.errors import HeliosError

DEMO_METADATA = {"query": "worldcup98", "threshold": "1000", "leadTime": "5m"}

logger = logging.getLogger("helios_scaler")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (and exception)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)


def _add_server_options(parser: argparse.ArgumentParser, *, demo: bool) -> None:
    parser.add_argument("--config", type=Path, help="YAML config file (keys are the option names with _)")
    for name, field in FIELDS.items():
        if (demo and name.startswith("prometheus_")) or (demo and name == "allowed_server_addresses"):
            continue
        flag = "--" + name.replace("_", "-")
        default = field.default
        shown = ",".join(default) if isinstance(default, tuple) else default
        parser.add_argument(
            flag,
            dest=name,
            default=None,
            help=f"{field.metadata['help']} (default: {shown}; env {ENV_PREFIX}{name.upper()})",
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="helios-scaler",
        description="Predictive autoscaling for Kubernetes: a KEDA external scaler that serves the load "
        "forecast for a lead time ahead, from each workload's own Prometheus history.",
    )
    parser.add_argument("--version", action="version", version=f"helios-scaler {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser("serve", help="serve KEDA's ExternalScaler API from a real Prometheus")
    _add_server_options(serve, demo=False)
    demo = commands.add_parser(
        "demo",
        help="serve forecasts of an embedded real trace (WorldCup98): no Prometheus or cluster needed",
    )
    _add_server_options(demo, demo=True)
    demo.add_argument(
        "--replay-speed",
        type=float,
        default=1.0,
        help="how fast the embedded trace is replayed (default: 1.0)",
    )
    _add_backtest_parser(commands)
    return parser


def _add_backtest_parser(commands: Any) -> None:
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
    trigger.add_argument("--quantile", default="0.9", help="metadata quantile (default: 0.9)")
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


def _settings(args: argparse.Namespace) -> Settings:
    cli = {name: getattr(args, name, None) for name in FIELDS}
    return load_settings(args.config, os.environ, cli)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "backtest":
        from helios_scaler.backtest.cli import backtest

        return backtest(args)
    try:
        settings = _settings(args)
    except HeliosError as exc:
        print(f"helios-scaler: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings)
    try:
        return asyncio.run(_run(args, settings))
    except HeliosError as exc:
        logger.error("%s", exc)
        return 2
    except OSError as exc:
        logger.error("cannot start: %s", exc)
        return 1


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    from helios_scaler import app as app_module
    from helios_scaler.source.registry import SourceResolver
    from helios_scaler.trigger import ScalerMetadata

    stop = asyncio.Event()
    app_module.install_signal_handlers(stop)
    if args.command == "demo":
        from helios_scaler.source.replay import ReplaySource

        resolver = SourceResolver(ReplaySource(speed=args.replay_speed), {})
        app = app_module.build(settings, resolver)
        prewarm = [("demo", "worldcup98", ScalerMetadata.parse(DEMO_METADATA))]

        def started(running: app_module.App) -> None:
            logger.info(
                "demo: replaying the WorldCup98 trace as a live series named 'worldcup98'. Try:\n"
                "  grpcurl -plaintext -d '%s' localhost:%d externalscaler.ExternalScaler/GetMetrics\n"
                "  curl -s localhost:%d/metrics | grep ^helios_",
                json.dumps(
                    {
                        "scaledObjectRef": {
                            "name": "worldcup98",
                            "namespace": "demo",
                            "scalerMetadata": DEMO_METADATA,
                        }
                    }
                ),
                running.grpc_port,
                running.http_port,
            )

        await app_module.run(app, stop, started, prewarm)
        return 0
    if settings.prometheus_url is None and not settings.allowed_server_addresses:
        logger.warning("no Prometheus configured: every trigger must name an allowed serverAddress (none are)")
    app = app_module.build(settings, SourceResolver.from_settings(settings))
    await app_module.run(app, stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
