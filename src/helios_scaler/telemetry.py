"""Every metric helios-scaler exports, in one module, on an injectable registry.

Event metrics (RPCs, query errors, training runs) are ordinary counters and histograms.
Per-series and per-ScaledObject gauges come from a custom collector that reads the
current forecast snapshot at scrape time, so they can never disagree with what is served.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from helios_scaler.demand import Subscriptions
from helios_scaler.errors import HeliosError, NotReady
from helios_scaler.policy import decide
from helios_scaler.store import ForecastSnapshot, ForecastStore, SeriesState, TrainingEvents
from helios_scaler.trigger import SeriesKey

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0)


class Telemetry(TrainingEvents):
    """The metrics; also the trainer's event sink."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.rpc_requests = Counter(
            "helios_rpc_requests",
            "gRPC requests handled, by method and status code.",
            ["method", "code"],
            registry=self.registry,
        )
        self.rpc_duration = Histogram(
            "helios_rpc_duration_seconds",
            "Time to answer a gRPC request (streams: time to open).",
            ["method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.query_errors = Counter(
            "helios_prometheus_query_errors",
            "Failed history queries, by source and error class.",
            ["source", "error"],
            registry=self.registry,
        )
        self.fetch_duration = Histogram(
            "helios_fetch_duration_seconds",
            "Time to fetch and clean new points of one series.",
            buckets=(0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.training_duration = Histogram(
            "helios_training_duration_seconds",
            "Time to backtest the candidates and fit the chosen model of one series.",
            ["model"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=self.registry,
        )
        self.training_failures = Counter(
            "helios_training_failures",
            "Series whose training failed (the previous model, if any, keeps serving).",
            registry=self.registry,
        )
        self.checkpoint_failures = Counter(
            "helios_checkpoint_failures",
            "Checkpoints that could not be written (state_dir full or read-only); serving goes on.",
            registry=self.registry,
        )
        self.checkpoints_ignored = Counter(
            "helios_checkpoints_ignored",
            "Checkpoint files found unusable and not served, by reason "
            "(truncated, corrupt, version, other_series, unreadable).",
            ["reason"],
            registry=self.registry,
        )

    # TrainingEvents
    def fetched(self, state: SeriesState, points: int, seconds: float) -> None:
        self.fetch_duration.observe(seconds)

    def fetch_failed(self, key: SeriesKey, source: str, error: HeliosError) -> None:
        self.query_errors.labels(source, type(error).__name__).inc()

    def trained(self, state: SeriesState, seconds: float) -> None:
        self.training_duration.labels(state.model or "").observe(seconds)

    def train_failed(self, key: SeriesKey, error: Exception) -> None:
        self.training_failures.inc()

    def checkpoint_failed(self, key: SeriesKey, error: Exception) -> None:
        self.checkpoint_failures.inc()

    def checkpoint_ignored(self, reason: str) -> None:
        self.checkpoints_ignored.labels(reason).inc()

    def register_snapshot_collector(
        self,
        store: ForecastStore,
        subscriptions: Subscriptions,
        stale_after: timedelta,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.registry.register(SnapshotCollector(store, subscriptions, stale_after, clock))


class SnapshotCollector(Collector):
    """Per-series and per-ScaledObject gauges, read from the current snapshot at scrape time."""

    def __init__(
        self,
        store: ForecastStore,
        subscriptions: Subscriptions,
        stale_after: timedelta,
        clock: Callable[[], datetime],
    ) -> None:
        self._store = store
        self._subs = subscriptions
        self._stale_after = stale_after
        self._clock = clock

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        snapshot = self._store.snapshot
        now = self._clock()
        info = GaugeMetricFamily(
            "helios_series_info",
            "One per tracked series: its source, query, step and model setting.",
            labels=["series_id", "source", "query", "step_seconds", "model_setting", "model"],
        )
        observed = GaugeMetricFamily(
            "helios_observed_value", "Newest observed value of the series.", labels=["series_id"]
        )
        age = GaugeMetricFamily(
            "helios_forecast_age_seconds",
            "Age of the newest observation the forecast starts from.",
            labels=["series_id"],
        )
        warming = GaugeMetricFamily(
            "helios_series_warming_up",
            "1 while a series has no forecast yet (observed value served).",
            labels=["series_id"],
        )
        mase = GaugeMetricFamily(
            "helios_backtest_mase",
            "Backtest MAE of the chosen model over seasonal naive's (< 1 beats the baseline).",
            labels=["series_id", "model"],
        )
        mae = GaugeMetricFamily(
            "helios_backtest_mae",
            "Backtest mean absolute error of the chosen model.",
            labels=["series_id", "model"],
        )
        last_train = GaugeMetricFamily(
            "helios_last_training_timestamp_seconds",
            "When the series' model was last trained.",
            labels=["series_id"],
        )
        up = GaugeMetricFamily(
            "helios_series_up",
            "1 when the last fetch of the series worked, 0 when it failed.",
            labels=["series_id"],
        )
        for key, state in snapshot.series.items():
            sid = state.series_id
            info.add_metric([sid, key.source, key.query, str(key.step_seconds), key.model, state.model or ""], 1)
            up.add_metric([sid], 0 if state.error else 1)
            warming.add_metric([sid], 0 if state.has_forecast else 1)
            if state.last_value is not None and state.observed_at is not None:
                observed.add_metric([sid], state.last_value)
                age.add_metric([sid], (now - state.observed_at).total_seconds())
            if state.model is not None and state.mase is not None and state.backtest_mae is not None:
                mase.add_metric([sid, state.model], state.mase if math.isfinite(state.mase) else math.nan)
                mae.add_metric([sid, state.model], state.backtest_mae)
            if state.trained_at is not None:
                last_train.add_metric([sid], state.trained_at.timestamp())
        yield from (info, observed, age, warming, mase, mae, last_train, up)
        yield from self._scaledobject_metrics(snapshot, now)

    def _scaledobject_metrics(self, snapshot: ForecastSnapshot, now: datetime) -> Iterator[Metric]:
        labels = ["namespace", "scaledobject", "metric", "series_id"]
        served = GaugeMetricFamily(
            "helios_served_value", "Value served to KEDA for a ScaledObject trigger.", labels=labels
        )
        forecast = GaugeMetricFamily(
            "helios_forecast_value",
            "Forecast quantile maximum over the served window (one step + leadTime) of a ScaledObject trigger.",
            labels=labels,
        )
        reason = GaugeMetricFamily(
            "helios_served_reason", "1 for why the served value is what it is.", labels=[*labels, "reason"]
        )
        subs = self._subs.all()
        for sub in subs:
            state = snapshot.get(sub.key)
            sid = state.series_id if state else ""
            values = [sub.namespace, sub.name, sub.metric_name, sid]
            try:
                decision = decide(state, sub.meta, now, self._stale_after)
            except NotReady:
                reason.add_metric([*values, "unavailable"], 1)
                continue
            served.add_metric(values, decision.value)
            if decision.forecast is not None:
                forecast.add_metric(values, decision.forecast)
            reason.add_metric([*values, decision.reason.value], 1)
        yield from (served, forecast, reason)
        count = GaugeMetricFamily("helios_scaledobjects", "ScaledObject triggers KEDA has asked about recently.")
        count.add_metric([], len(subs))
        yield count
