"""The whole server under faults: a real Prometheus for the healthy ScaledObjects, hostile loopback
"Prometheus" servers for the others, real gRPC as KEDA calls it.

Every fault runs at once, each on its own allowlisted source, for as long as it takes every faulty
ScaledObject to show its documented error; then the faults end (the servers turn healthy) and every
series must recover by itself.  Throughout:

- each RPC answers within KEDA's 3 s deadline, with the documented code (UNAVAILABLE for an outage
  or an answer that is not Prometheus', INVALID_ARGUMENT for a query returning several series) and a
  short message (never an answer's body);
- the healthy ScaledObject on the real Prometheus keeps being served;
- the test process' resident memory (the server runs in it) grows by less than :data:`MEMORY_BOUND`,
  although two of the answers are 64 MB and one inflates to 64 MB.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from hostile import SECRET_BODY, Hostile, hostile_server
from prom import PrometheusFixture
from scaler_app import ref, running_app, scaler_settings, scaler_stub, wait_for_value

from helios_scaler._proto import externalscaler_pb2 as pb
from helios_scaler._proto import externalscaler_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
#: fault (hostile mode and options) → the code and a part of the message KEDA must get.
FAULTS: dict[str, tuple[dict[str, object], grpc.StatusCode, str]] = {
    "drip": ({"interval": 0.5}, UNAVAILABLE, "no complete answer within 1s"),
    "silent": ({}, UNAVAILABLE, "no answer within 1s"),
    "huge": ({"megabytes": 64}, UNAVAILABLE, "max_answer_bytes"),
    "huge_chunked": ({"megabytes": 64, "chunked": True}, UNAVAILABLE, "max_answer_bytes"),
    "gzip_bomb": ({"megabytes": 64}, UNAVAILABLE, "max_answer_bytes"),
    "redirect": ({}, UNAVAILABLE, "redirects are not followed"),
    "future": ({}, UNAVAILABLE, "year ~33,658"),
    "garbage": ({}, UNAVAILABLE, "not Prometheus' API"),
    "secret": ({}, UNAVAILABLE, "HTTP 500"),
    "many_series": ({"count": 1000}, grpc.StatusCode.INVALID_ARGUMENT, "series"),
    "malformed": ({"variant": "values_an_int"}, UNAVAILABLE, "not Prometheus' API"),
}
#: Most the server's resident memory may grow while every fault runs.
MEMORY_BOUND = 300 * 1024 * 1024
KEDA_DEADLINE = 3.0


def rss() -> int:
    """Resident memory of this process (bytes)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def faulty_metadata(name: str, server: Hostile) -> dict[str, str]:
    return {
        "serverAddress": server.url,
        "query": f"up_{name}",
        "threshold": "10",
        "model": "seasonal_naive",
        "historyTimeWindow": "2h",
    }


@contextlib.contextmanager
def hostile_servers() -> Iterator[dict[str, Hostile]]:
    with contextlib.ExitStack() as stack:
        yield {
            name: stack.enter_context(hostile_server(name.removesuffix("_chunked"), **options))
            for name, (options, _, _) in FAULTS.items()
        }


@contextlib.asynccontextmanager
async def peak_memory() -> AsyncIterator[list[int]]:
    """Samples RSS every 50 ms while the block runs: ``[baseline, peak]``."""
    figures = [rss(), rss()]

    async def sample() -> None:
        while True:
            figures[1] = max(figures[1], rss())
            await asyncio.sleep(0.05)

    task = asyncio.create_task(sample())
    try:
        yield figures
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def get_metrics(stub: pb_grpc.ExternalScalerStub, metadata: dict[str, str], name: str) -> pb.GetMetricsResponse:
    request = pb.GetMetricsRequest(scaledObjectRef=ref(metadata, name=name))
    response: pb.GetMetricsResponse = await stub.GetMetrics(request, timeout=KEDA_DEADLINE)
    return response


async def test_every_fault_at_once_is_reported_contained_and_recovered(prometheus: PrometheusFixture) -> None:
    healthy = {"query": prometheus.wc98, "threshold": "1000", "model": "seasonal_naive", "historyTimeWindow": "1d"}
    with hostile_servers() as servers:
        settings = scaler_settings(
            prometheus_url=prometheus.url,
            allowed_server_addresses=tuple(server.url for server in servers.values()),
            query_timeout=timedelta(seconds=1),
        )
        async with running_app(settings) as app, scaler_stub(app) as stub, peak_memory() as memory:
            await wait_for_value(stub, pb.GetMetricsRequest(scaledObjectRef=ref(healthy, name="healthy")))
            for name, server in servers.items():
                await stub.GetMetricSpec(ref(faulty_metadata(name, server), name=name), timeout=KEDA_DEADLINE)

            # Every faulty ScaledObject shows its documented error; the healthy one is served meanwhile.
            seen: dict[str, grpc.aio.AioRpcError] = {}
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            while len(seen) < len(servers) and loop.time() < deadline:
                await get_metrics(stub, healthy, "healthy")
                for name, server in servers.items():
                    if name in seen:
                        continue
                    try:
                        await get_metrics(stub, faulty_metadata(name, server), name)
                    except grpc.aio.AioRpcError as exc:
                        assert exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED, name
                        if exc.code() == FAULTS[name][1] and FAULTS[name][2] in (exc.details() or ""):
                            seen[name] = exc
                await asyncio.sleep(0.2)
            missing = {
                name: (await _error_of(stub, faulty_metadata(name, servers[name]), name))
                for name in servers
                if name not in seen
            }
            assert not missing, f"faults not reported as documented: {missing}"
            for name, error in seen.items():
                details = error.details() or ""
                assert len(details) < 2048, name
                assert SECRET_BODY not in details and SECRET_BODY[:300] not in details, name
            redirect_target = servers["redirect"].target
            assert redirect_target is not None and redirect_target.hits == []  # never followed off the allowlist
            baseline, peak = memory
            assert peak - baseline < MEMORY_BOUND, f"RSS grew {(peak - baseline) / 2**20:.0f} MiB"

            # The faults end: every series recovers by itself (the back-off after a few failures is seconds).
            for server in servers.values():
                server.mode = "ok"
            for name, server in servers.items():
                request = pb.GetMetricsRequest(scaledObjectRef=ref(faulty_metadata(name, server), name=name))
                response = await wait_for_value(stub, request, timeout=60)
                assert response.metricValues[0].metricValueFloat == pytest.approx(1.0), name
            await get_metrics(stub, healthy, "healthy")


async def _error_of(stub: pb_grpc.ExternalScalerStub, metadata: dict[str, str], name: str) -> str:
    try:
        await get_metrics(stub, metadata, name)
    except grpc.aio.AioRpcError as exc:
        return f"{exc.code().name}: {exc.details()}"
    return "OK"
