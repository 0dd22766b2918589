"""The composition root: the one place that wires every part together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial

from helios_scaler.config import Settings
from helios_scaler.demand import Quotas, Subscriptions
from helios_scaler.errors import ConfigError, HeliosError
from helios_scaler.events.calendar import CalendarSet
from helios_scaler.serving.keda import ExternalScalerService
from helios_scaler.serving.server import GrpcServer, HttpServer
from helios_scaler.source.prometheus import normalize_url
from helios_scaler.source.registry import SourceResolver
from helios_scaler.store import ForecastStore
from helios_scaler.telemetry import Telemetry
from helios_scaler.training.checkpoint import FileRepository, ModelRepository, NoRepository
from helios_scaler.training.executor import process_pool
from helios_scaler.training.loop import Trainer
from helios_scaler.trigger import ScalerMetadata

logger = logging.getLogger(__name__)


@dataclass
class App:
    """A running helios-scaler: its ports and parts (tests read ``grpc_port``/``http_port``)."""

    settings: Settings
    resolver: SourceResolver
    store: ForecastStore
    subscriptions: Subscriptions
    telemetry: Telemetry
    trainer: Trainer
    grpc: GrpcServer
    http: HttpServer
    clock: Callable[[], datetime]
    repository: ModelRepository = field(default_factory=NoRepository)

    @property
    def grpc_port(self) -> int:
        return int(self.grpc.port)

    @property
    def http_port(self) -> int:
        return self.http.port

    def readiness(self) -> tuple[bool, str]:
        return readiness(self.store, self.settings.stale_after, self.clock)


def readiness(store: ForecastStore, stale_after: timedelta, clock: Callable[[], datetime]) -> tuple[bool, str]:
    """Ready unless every tracked series is stale (its source has stopped answering)."""
    states = list(store.snapshot.series.values())
    now = clock()
    fresh = [s for s in states if s.is_fresh(now, stale_after)]
    if states and not fresh:
        return False, f"all {len(states)} series are stale (no new observation within {stale_after} plus a step)"
    return True, f"ready: {len(fresh)} of {len(states)} series fresh"


def quotas(settings: Settings, resolver: SourceResolver) -> Quotas:
    """The server's and each namespace's limits; ConfigError for a namespace bound to an address not allowed."""
    allowed = set(resolver.allowed_addresses)
    bound: dict[str, set[str]] = {}
    for namespace, url in settings.namespace_server_addresses:
        address = normalize_url(url)
        if address not in allowed:
            raise ConfigError(
                f"setting namespace_server_addresses: {namespace}={url} names an address that is neither "
                f"prometheus_url nor in allowed_server_addresses (allowed: {', '.join(sorted(allowed)) or 'none'})"
            )
        bound.setdefault(namespace, set()).add(address)
    return Quotas(
        max_series=settings.max_series,
        series_per_namespace=settings.max_series_per_namespace,
        scaledobjects_per_namespace=settings.max_scaledobjects_per_namespace,
        namespace_sources={namespace: frozenset(urls) for namespace, urls in bound.items()},
    )


def build(
    settings: Settings,
    resolver: SourceResolver,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    calendars: CalendarSet | None = None,
) -> App:
    """Wire the parts (nothing starts yet)."""
    store = ForecastStore()
    subscriptions = Subscriptions(
        resolver,
        quotas(settings, resolver),
        settings.refresh_interval,
        calendars=calendars or CalendarSet(settings.calendar_dir),
    )
    telemetry = Telemetry()
    repository: ModelRepository = (
        NoRepository()
        if settings.state_dir is None
        else FileRepository(settings.state_dir, telemetry.checkpoint_ignored)
    )
    telemetry.register_snapshot_collector(store, subscriptions, settings.stale_after, clock)
    trainer = Trainer(
        subscriptions,
        store,
        settings.refresh_interval,
        settings.retrain_interval,
        executor=process_pool(settings.training_workers),
        repository=repository,
        events=telemetry,
        fetches_per_source=settings.max_fetches_per_source,
        fit_slots=settings.training_workers,
    )
    service = ExternalScalerService(store, subscriptions, settings.stale_after, clock)
    grpc_server = GrpcServer(service, telemetry, f"{settings.bind_address}:{settings.grpc_port}")
    http = HttpServer(
        telemetry,
        partial(readiness, store, settings.stale_after, clock),
        settings.bind_address,
        settings.http_port,
    )
    return App(settings, resolver, store, subscriptions, telemetry, trainer, grpc_server, http, clock, repository)


async def run(
    app: App,
    stop: asyncio.Event,
    on_started: Callable[[App], None] | None = None,
    prewarm: list[tuple[str, str, ScalerMetadata]] | None = None,
) -> None:
    """Serve until ``stop`` is set, then shut down gracefully."""
    await app.grpc.start()
    app.http.start()
    for namespace, name, meta in prewarm or []:
        app.subscriptions.register(namespace, name, meta)
    await restore(app)
    trainer = asyncio.create_task(app.trainer.run(stop), name="trainer")
    health = asyncio.create_task(_follow_readiness(app, stop), name="health follower")
    logger.info(
        "helios-scaler serving: gRPC on %s:%d, HTTP on %s:%d",
        app.settings.bind_address,
        app.grpc_port,
        app.settings.bind_address,
        app.http_port,
    )
    if on_started is not None:
        on_started(app)
    try:
        await stop.wait()
    finally:
        stop.set()  # also when ``run`` itself is cancelled: the trainer and the health task end on it
        await _shut_down(app, [trainer, health])


async def _shut_down(app: App, tasks: list[asyncio.Task[None]]) -> None:
    """Stop within ``shutdown_grace``: streams end with OK, in-flight RPCs get the grace, then the
    trainer stops (abandoning fetches and fits in flight) and the ports close."""
    grace = app.settings.shutdown_grace.total_seconds()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    logger.info("shutting down (grace %s)", app.settings.shutdown_grace)
    try:
        await app.grpc.stop(grace)
    finally:
        done, late = await asyncio.wait(tasks, timeout=max(0.0, deadline - loop.time()))
        for task in late:  # not seen in practice: the trainer only awaits futures it can drop
            logger.warning("the %s did not stop within the grace; cancelling it", task.get_name())
            task.cancel()
        if late:
            await asyncio.wait(late, timeout=0.5)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                logger.error("the %s failed", task.get_name(), exc_info=task.exception())
        app.resolver.close()
        app.http.stop()
        logger.info("stopped")


async def restore(app: App) -> int:
    """Register again the triggers of every checkpointed series (warm restart): their series are served
    from the checkpoint at the trainer's first tick, before KEDA asks.  Returns the series restored."""
    restored = 0
    for checkpoint in await asyncio.to_thread(app.repository.load_all):  # file reads: off the event loop
        for owner in checkpoint.owners:
            try:
                app.subscriptions.register(owner.namespace, owner.name, owner.meta)
            except HeliosError as exc:  # e.g. its address is no longer allowed: KEDA will be told when it asks
                logger.warning("checkpointed trigger %s/%s not restored: %s", owner.namespace, owner.name, exc)
        restored += 1
    if restored:
        logger.info("warm restart: %d checkpointed series restored from %s", restored, app.settings.state_dir)
    return restored


async def _follow_readiness(app: App, stop: asyncio.Event, every: float = 2.0) -> None:
    """Keep the gRPC health status in step with data freshness."""
    serving = True
    while not stop.is_set():
        ok, why = app.readiness()
        if ok != serving:
            serving = ok
            logger.warning("health now %s: %s", "SERVING" if ok else "NOT_SERVING", why)
            await app.grpc.set_serving(ok)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)


def install_signal_handlers(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT only set the flag; the main loop does the work."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
