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
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from helios_scaler import __version__
from helios_scaler.config import ENV_PREFIX, FIELDS, Settings, load_settings
from helios_scaler.errors import ConfigError, HeliosError

DEMO_METADATA = {"query": "worldcup98", "threshold": "1000", "leadTime": "5m", "calendar": "worldcup98"}

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
    demo.add_argument(
        "--replay-start",
        default=None,
        help="the trace time shown at start, ISO 8601 in 1998-06-11..06-24 UTC, e.g. 1998-06-17T15:20:00Z, "
        "ten minutes before a kick-off (default: 1998-06-17T00:00:00Z, a week into the trace)",
    )
    from helios_scaler.backtest.cli import add_parser as add_backtest_parser

    add_backtest_parser(commands)
    return parser


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


def _replay_history(start: str | None) -> timedelta:
    """The history before the replay's first shown trace time (``--replay-start``)."""
    from helios_scaler.events.calendar import TIME_ACCEPTED, parse_time
    from helios_scaler.source.replay import load_trace

    first: datetime = load_trace()["ds"][0]
    if start is None:
        return timedelta(days=7)
    try:  # the same rule as a calendar's times: ISO 8601 with a UTC offset or Z
        moment = parse_time(start)
    except (ValueError, OverflowError):
        raise ConfigError(f"--replay-start {start!r} is not valid; accepted: {TIME_ACCEPTED}") from None
    history = moment - first
    if not timedelta(days=1) <= history <= timedelta(days=14):
        raise ConfigError(f"--replay-start {start!r} must lie from 1998-06-11 to 1998-06-24 (the bundled trace)")
    return history


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    from helios_scaler import app as app_module
    from helios_scaler.source.registry import SourceResolver
    from helios_scaler.trigger import ScalerMetadata

    stop = asyncio.Event()
    app_module.install_signal_handlers(stop)
    if args.command == "demo":
        from helios_scaler.events.calendar import CalendarSet
        from helios_scaler.source.replay import ReplaySource

        replay = ReplaySource(speed=args.replay_speed, history=_replay_history(args.replay_start))
        resolver = SourceResolver(replay, {})
        # The 1998 kick-off calendar on the replay's clock, beside any calendar_dir of the settings.
        calendars = CalendarSet(settings.calendar_dir, [replay.calendar()])
        app = app_module.build(settings, resolver, calendars=calendars)
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
