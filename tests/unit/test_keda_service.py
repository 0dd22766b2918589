"""The ExternalScaler service over a real loopback gRPC socket, with a fake in-memory source."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import grpc
import numpy as np
import polars as pl
import pytest
from scaler_app import ref, running_app, scaler_settings, scaler_stub, wait_for_value

from helios_scaler._proto import externalscaler_pb2 as pb
from helios_scaler.app import App
from helios_scaler.errors import QueryError, SourceUnavailable
from helios_scaler.features.schema import DS, Y
from helios_scaler.source.registry import SourceResolver
from helios_scaler.store import SeriesState
from helios_scaler.trigger import ScalerMetadata, SeriesKey


class FakeSource:
    """An in-memory source: a sine-shaped series per query; ``broken`` queries fail."""

    name = "http://fake:9090"

    def __init__(self) -> None:
        self.broken: set[str] = set()

    def now(self) -> datetime:
        return datetime.now(UTC)

    def close(self) -> None:
        """Nothing to release."""

    def fetch(self, query: str, start: datetime, end: datetime, step: timedelta) -> pl.DataFrame:
        if query in self.broken:
            raise SourceUnavailable(f"fake Prometheus is down for {query!r}")
        if query == "bad(":
            raise QueryError("parse error: unclosed left parenthesis")
        count = int((end - start) / step) + 1
        ds = pl.datetime_range(start, end, step, eager=True, time_zone="UTC").cast(pl.Datetime("us", "UTC"))
        minutes = np.arange(count)
        return pl.DataFrame({DS: ds[:count], Y: 100 + 50 * np.sin(2 * np.pi * minutes / 120)})


def resolver(source: FakeSource) -> SourceResolver:
    return SourceResolver(source, {})  # type: ignore[arg-type]


META = {"query": "load", "threshold": "10", "historyTimeWindow": "12h", "model": "ets"}


async def published_forecast(app: App, key: SeriesKey, timeout: float = 30.0) -> SeriesState:
    """The series' state once the trainer has published a forecast for it (with an observation)."""
    for _ in range(int(timeout / 0.1)):
        state = app.store.snapshot.get(key)
        if state is not None and state.has_forecast and state.last_value is not None:
            return state
        await asyncio.sleep(0.1)
    raise AssertionError(f"no forecast within {timeout}s; state: {app.store.snapshot.get(key)}")


async def test_triggers_with_the_same_query_share_one_series() -> None:
    source = FakeSource()
    async with running_app(scaler_settings(), resolver(source)) as app, scaler_stub(app) as stub:
        first = await stub.GetMetricSpec(ref(META, name="a"), timeout=3)
        second = await stub.GetMetricSpec(ref({**META, "threshold": "20"}, name="b"), timeout=3)
        assert first.metricSpecs[0].metricName == second.metricSpecs[0].metricName
        assert second.metricSpecs[0].targetSizeFloat == 20
        await wait_for_value(stub, pb.GetMetricsRequest(scaledObjectRef=ref(META, name="a")))
        assert len(app.store.snapshot.series) == 1
        assert len(app.subscriptions.all()) == 2


async def test_a_failing_query_does_not_disturb_the_others() -> None:
    source = FakeSource()
    source.broken.add("down")
    async with running_app(scaler_settings(), resolver(source)) as app, scaler_stub(app) as stub:
        good = await wait_for_value(stub, pb.GetMetricsRequest(scaledObjectRef=ref(META)))
        assert good.metricValues[0].metricValueFloat >= 50
        for query, code, text in (
            ("down", grpc.StatusCode.UNAVAILABLE, "fake Prometheus is down"),
            # A rejected query is the ScaledObject's fault, not an outage (issue 7: it used to be UNAVAILABLE).
            ("bad(", grpc.StatusCode.INVALID_ARGUMENT, "parse error"),
        ):
            request = pb.GetMetricsRequest(scaledObjectRef=ref({**META, "query": query}, name=query))
            await stub.GetMetricSpec(request.scaledObjectRef, timeout=3)
            await asyncio.sleep(0.5)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.GetMetrics(request, timeout=3)
            assert caught.value.code() == code
            assert text in caught.value.details()
        again = await stub.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=ref(META)), timeout=3)
        assert again.metricValues[0].metricValueFloat > 0


async def test_max_series_is_enforced_with_resource_exhausted() -> None:
    async with (
        running_app(scaler_settings(max_series=1), resolver(FakeSource())) as app,
        scaler_stub(app) as stub,
    ):
        await stub.GetMetricSpec(ref(META), timeout=3)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetMetricSpec(ref({**META, "query": "other"}, name="other"), timeout=3)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_series" in caught.value.details() and "'other'" in caught.value.details()


async def test_stream_pushes_true_when_the_forecast_crosses_activation() -> None:
    """The stream answers from the store: a published forecast above activationThreshold pushes true
    at once, even while the observed value is still below it (ready ahead of the load)."""
    source = FakeSource()
    meta_map = {**META, "activationThreshold": "500"}
    # One refresh only (the first, at once): nothing overwrites the hand-made forecast below.
    settings = scaler_settings(refresh_interval=timedelta(hours=1))
    async with running_app(settings, resolver(source)) as app, scaler_stub(app) as stub:
        meta = ScalerMetadata.parse(meta_map)
        key = meta.series_key(source.name)
        stream = stub.StreamIsActive(ref(meta_map))
        first = await asyncio.wait_for(stream.read(), 30)
        assert first.result is False  # the sine peaks at 150 < 500
        state = await published_forecast(app, key)
        assert state.last_value < 500
        surge = {q: np.full_like(band, 900.0) for q, band in state.bands.items()}
        started = asyncio.get_running_loop().time()
        await app.store.publish({key: replace(app.store.snapshot.get(key), bands=surge)})  # type: ignore[arg-type]
        pushed = await asyncio.wait_for(stream.read(), 5)
        assert pushed.result is True
        assert asyncio.get_running_loop().time() - started < 1.0
        stream.cancel()


async def test_stream_ends_with_resource_exhausted_when_the_quota_is_full() -> None:
    """A full quota does not clear by waiting for data: the stream ends with it at once (it stayed open and
    silent for minutes before)."""
    async with (
        running_app(scaler_settings(max_series=1), resolver(FakeSource())) as app,
        scaler_stub(app) as stub,
    ):
        await stub.GetMetricSpec(ref(META), timeout=3)
        stream = stub.StreamIsActive(ref({**META, "query": "other"}, name="other"))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await asyncio.wait_for(stream.read(), 3)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_series" in caught.value.details()


@pytest.mark.parametrize(
    ("metadata", "code"),
    [
        ({**META, "leadTime": "99999999999d"}, grpc.StatusCode.INVALID_ARGUMENT),
        ({**META, "serverAddress": "http://[::1"}, grpc.StatusCode.INVALID_ARGUMENT),
        ({**META, "serverAddress": "http://other:9090"}, grpc.StatusCode.PERMISSION_DENIED),
    ],
    ids=["bad-duration", "bad-ipv6", "not-allowed"],
)
async def test_stream_ends_at_once_with_a_client_error(metadata: dict[str, str], code: grpc.StatusCode) -> None:
    async with running_app(scaler_settings(), resolver(FakeSource())) as app, scaler_stub(app) as stub:
        stream = stub.StreamIsActive(ref(metadata))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await asyncio.wait_for(stream.read(), 3)
        assert caught.value.code() == code


async def test_an_infinite_forecast_is_never_served() -> None:
    """GetMetrics used to fail with UNKNOWN ("cannot convert float infinity to integer") on a +Inf forecast
    and the metrics endpoint served +Inf; now the observation is served, and with neither usable KEDA gets
    UNAVAILABLE (its fallback)."""
    source = FakeSource()
    settings = scaler_settings(refresh_interval=timedelta(hours=1))  # nothing overwrites the states below
    async with running_app(settings, resolver(source)) as app, scaler_stub(app) as stub:
        request = pb.GetMetricsRequest(scaledObjectRef=ref(META))
        await wait_for_value(stub, request)
        key = ScalerMetadata.parse(META).series_key(source.name)
        state = await published_forecast(app, key)
        infinite = {q: np.full_like(band, np.inf) for q, band in state.bands.items()}
        await app.store.publish({key: replace(state, bands=infinite)})
        served = (await stub.GetMetrics(request, timeout=3)).metricValues[0]
        assert served.metricValueFloat == state.last_value
        assert served.metricValue == round(state.last_value)
        await app.store.publish({key: replace(state, bands=infinite, last_value=float("nan"))})
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetMetrics(request, timeout=3)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "not a servable number" in caught.value.details()
