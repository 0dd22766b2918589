"""Command line: ``helios-scaler serve`` and ``helios-scaler demo``.

CLI → Settings → logging → app.run().  Every server option is also a config-file key
and a ``HELIOS_*`` environment variable (see :mod:`helios_scaler.config`).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import logging
import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import NoReturn

from helios_scaler import __version__, logs
from helios_scaler.config import ENV_PREFIX, FIELDS, Settings, load_settings
from helios_scaler.errors import ConfigError, HeliosError

DEMO_METADATA = {"query": "worldcup98", "threshold": "1000", "leadTime": "5m", "calendar": "worldcup98"}

logger = logging.getLogger("helios_scaler")


#: How long past the grace a stuck shutdown may run before the watchdog ends the process.
HARD_EXIT_MARGIN_SECONDS = 1.0


def configure_logging(settings: Settings) -> None:
    """stderr, ``json`` or ``text``; the training workers log the same way (see :mod:`.logs`)."""
    logs.configure_logging(settings.log_format, settings.log_level)


class ShutdownDeadline:
    """From the stop signal on, the process gets ``grace`` seconds to exit, always.

    :meth:`arm` starts the clock (SIGTERM).  A shutdown still stuck ``grace`` plus a margin later
    is ended by a watchdog thread (an error is logged, exit status 1).  When the server has
    stopped, threads or child processes still running (a fetch from a Prometheus that never
    answers) get until the deadline and are then abandoned (a warning, the normal exit status)
    rather than joined by the interpreter for as long as they block.  Both ends use
    ``os._exit`` after flushing the logs: the last resort, not the normal path.
    """

    def __init__(self, grace: float, margin: float = HARD_EXIT_MARGIN_SECONDS) -> None:
        self.grace = grace
        self._margin = margin
        self._deadline: float | None = None
        self._watchdog: threading.Timer | None = None

    def arm(self) -> None:
        if self._deadline is not None:
            return
        self._deadline = time.monotonic() + self.grace
        self._watchdog = threading.Timer(self.grace + self._margin, self._expired)
        self._watchdog.name = "helios-shutdown-watchdog"
        self._watchdog.daemon = True
        self._watchdog.start()

    def remaining(self) -> float:
        self.arm()
        assert self._deadline is not None
        return max(0.0, self._deadline - time.monotonic())

    def _expired(self) -> None:
        logger.error(
            "shutdown did not finish within the grace of %gs; exiting now (still running: %s)",
            self.grace,
            _describe_threads() or "only the main thread",
        )
        _hard_exit(1)

    def abandon(self, what: str, code: int) -> NoReturn:
        logger.warning("stopped; abandoning %s after the grace of %gs", what, self.grace)
        _hard_exit(code)

    def finish(self, code: int) -> int:
        """Return ``code`` once nothing holds up the exit, or exit with it at the deadline."""
        for thread in _blocking_threads():
            thread.join(self.remaining())
        for child in multiprocessing.active_children():  # joined by multiprocessing at exit
            child.join(self.remaining())
        blocked, children = _describe_threads(), multiprocessing.active_children()
        if blocked or children:
            self.abandon(
                ", ".join(filter(None, [blocked, f"{len(children)} child process(es)" if children else ""])), code
            )
        if self._watchdog is not None:
            self._watchdog.cancel()
        return code


def _blocking_threads() -> list[threading.Thread]:
    """The threads the interpreter would wait for at exit."""
    main = threading.main_thread()
    return [t for t in threading.enumerate() if t is not main and not t.daemon and t.is_alive()]


def _describe_threads() -> str:
    return ", ".join(f"thread {t.name}" for t in _blocking_threads())


def _hard_exit(code: int) -> NoReturn:
    for handler in logging.getLogger().handlers:
        handler.flush()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # closed or broken: nothing more to save
            stream.flush()
    os._exit(code)


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
    deadline = ShutdownDeadline(settings.shutdown_grace.total_seconds())
    return deadline.finish(_serve(args, settings, deadline))


def _serve(args: argparse.Namespace, settings: Settings, deadline: ShutdownDeadline) -> int:
    """``asyncio.run(_run(...))``, but its ending is bounded by ``deadline``."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    code = 1  # the exit status if an unexpected exception propagates
    try:
        code = loop.run_until_complete(_run(args, settings, deadline))
    except HeliosError as exc:
        logger.error("%s", exc)
        code = 2
    except OSError as exc:
        logger.error("cannot start: %s", exc)
        code = 1
    finally:
        try:
            stuck = _settle(loop, deadline)
            if stuck:
                kinds = ", ".join(f"{count} x {name}" for name, count in sorted(collections.Counter(stuck).items()))
                deadline.abandon(f"{len(stuck)} asyncio task(s) that did not end ({kinds})", code)
        finally:
            asyncio.set_event_loop(None)
            loop.close()  # also shuts the default executor down, without waiting
    return code


def _settle(loop: asyncio.AbstractEventLoop, deadline: ShutdownDeadline) -> list[str]:
    """End the tasks left on ``loop`` (as ``asyncio.run`` does) within the deadline; the names of
    those that did not end.

    Tasks already being cancelled are left to finish first.  ``asyncio.run`` cancels every
    task once more; on Python 3.11 a second cancel of a task inside ``asyncio.wait_for``
    abandons the inner task, and when that one waits on an ``asyncio.Condition`` the lock
    stays held and every other waiter spins for ever re-acquiring it: with twenty open
    StreamIsActive streams the process never exited.
    """

    async def settle() -> list[asyncio.Task[object]]:
        this = asyncio.current_task()

        def others() -> list[asyncio.Task[object]]:
            return [task for task in asyncio.all_tasks() if task is not this and not task.done()]

        while (unwinding := [task for task in others() if task.cancelling()]) and deadline.remaining():
            await asyncio.wait(unwinding, timeout=deadline.remaining())
        rest = others()
        for task in rest:
            task.cancel()
        if rest:
            await asyncio.wait(rest, timeout=deadline.remaining())
        for task in rest:
            if task.done() and not task.cancelled() and task.exception() is not None:
                loop.call_exception_handler(
                    {"message": "unhandled exception during shutdown", "exception": task.exception(), "task": task}
                )
        return others()

    stuck = loop.run_until_complete(settle())
    if not stuck:
        shutdown_asyncgens = loop.create_task(loop.shutdown_asyncgens())
        loop.run_until_complete(asyncio.wait([shutdown_asyncgens], timeout=deadline.remaining()))
    return sorted(getattr(task.get_coro(), "__qualname__", task.get_name()) for task in stuck)


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


async def _run(args: argparse.Namespace, settings: Settings, deadline: ShutdownDeadline) -> int:
    """Serve until SIGTERM or SIGINT; the shutdown deadline starts with the signal."""
    from helios_scaler import app as app_module

    stop = asyncio.Event()
    app_module.install_signal_handlers(stop)

    async def arm_on_stop() -> None:
        await stop.wait()
        deadline.arm()

    arming = asyncio.create_task(arm_on_stop(), name="shutdown deadline")
    try:
        return await _serve_app(args, settings, stop)
    finally:
        arming.cancel()


async def _serve_app(args: argparse.Namespace, settings: Settings, stop: asyncio.Event) -> int:
    from helios_scaler import app as app_module
    from helios_scaler.source.registry import SourceResolver
    from helios_scaler.trigger import ScalerMetadata

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
