"""Run the real helios-scaler app (real gRPC and HTTP on loopback) inside a test; both tiers use it."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Mapping
from datetime import timedelta

import grpc

from helios_scaler import app as app_module
from helios_scaler._proto import externalscaler_pb2 as pb
from helios_scaler._proto import externalscaler_pb2_grpc as pb_grpc
from helios_scaler.config import Settings
from helios_scaler.events.calendar import CalendarSet
from helios_scaler.source.registry import SourceResolver


def scaler_settings(**overrides: object) -> Settings:
    """Settings for tests: loopback, OS-chosen ports, fast refresh."""
    base = Settings(
        grpc_port=0,
        http_port=0,
        bind_address="127.0.0.1",
        refresh_interval=timedelta(seconds=1),
        shutdown_grace=timedelta(seconds=1),
    )
    return dataclasses.replace(base, **overrides)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def running_app(
    settings: Settings, resolver: SourceResolver | None = None, calendars: CalendarSet | None = None
) -> AsyncIterator[app_module.App]:
    """Run the app until the block exits; always stop it."""
    app = app_module.build(settings, resolver or SourceResolver.from_settings(settings), calendars=calendars)
    stop = asyncio.Event()
    started = asyncio.Event()
    task = asyncio.create_task(app_module.run(app, stop, lambda _: started.set()))
    await asyncio.wait_for(started.wait(), 10)
    try:
        yield app
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


def ref(metadata: Mapping[str, str], name: str = "web", namespace: str = "shop") -> pb.ScaledObjectRef:
    return pb.ScaledObjectRef(name=name, namespace=namespace, scalerMetadata=dict(metadata))


@contextlib.asynccontextmanager
async def scaler_stub(app: app_module.App) -> AsyncIterator[pb_grpc.ExternalScalerStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        yield pb_grpc.ExternalScalerStub(channel)


async def wait_for_value(
    stub: pb_grpc.ExternalScalerStub, request: pb.GetMetricsRequest, timeout: float = 60.0
) -> pb.GetMetricsResponse:
    """Poll GetMetrics like KEDA does until it answers (the first fetch is asynchronous)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            response: pb.GetMetricsResponse = await stub.GetMetrics(request, timeout=3)
            return response
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE or loop.time() > deadline:
                raise
        await asyncio.sleep(0.2)


async def http_get(port: int, path: str) -> tuple[int, str]:
    def get() -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
                return int(response.status), response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    return await asyncio.to_thread(get)
