"""Warm restarts of the real server process against a real Prometheus: checkpoints survive ``kill -9``
in the middle of being written, and a restarted server serves every checkpointed series at once.

Three ScaledObjects read the backfilled WorldCup98 series: as it is, doubled, and an hour earlier.
The server retrains every 2 s, so checkpoints are written all the time; each round kills it with
SIGKILL the moment a checkpoint is being written (a temporary file exists), when it can catch one,
then checks every file left behind and restarts it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from prom import PrometheusFixture, run_prometheus
from scaler_app import ref
from server_process import Server, serve

from helios_scaler._proto import externalscaler_pb2 as pb
from helios_scaler._proto import externalscaler_pb2_grpc as pb_grpc
from helios_scaler.training.checkpoint import SUFFIX, TEMPORARY, decode, file_name

pytestmark = pytest.mark.integration

ROUNDS = 5
#: How long a restarted server may take to serve every checkpointed series from its checkpoint.
SERVES_WITHIN_S = 10.0


@pytest.fixture(scope="module")
def fresh_prometheus() -> Iterator[PrometheusFixture]:
    """A Prometheus of its own: its series end now, so they stay fresh for the whole test."""
    with run_prometheus() as running:
        yield running


def triggers(prometheus: PrometheusFixture) -> dict[str, dict[str, str]]:
    common = {"threshold": "100", "model": "seasonal_naive", "historyTimeWindow": "1d", "leadTime": "2m"}
    return {
        "plain": {"query": prometheus.wc98, **common},
        "doubled": {"query": f"2 * {prometheus.wc98}", **common},
        "earlier": {"query": f"{prometheus.wc98} offset 1h", **common},
    }


def kill_mid_write(server: Server, state_dir: Path, timeout: float) -> bool:
    """SIGKILL the server as soon as a checkpoint is being written (True), or after ``timeout`` (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with os.scandir(state_dir) as entries:
            if any(TEMPORARY in entry.name for entry in entries):
                server.process.send_signal(signal.SIGKILL)
                server.process.wait()
                return True
    server.process.send_signal(signal.SIGKILL)
    server.process.wait()
    return False


def check_files(state_dir: Path) -> int:
    """Every checkpoint file left behind is whole and belongs to the series its name says."""
    whole = 0
    for path in state_dir.iterdir():
        if TEMPORARY in path.name:
            continue  # a save cut short: the next start removes it, nothing reads it
        assert path.name.endswith(SUFFIX), path
        checkpoint = decode(path.read_bytes())
        assert path.name == file_name(checkpoint.key)
        whole += 1
    return whole


async def served(stub: pb_grpc.ExternalScalerStub, metadata: dict[str, str], name: str) -> float:
    request = pb.GetMetricsRequest(scaledObjectRef=ref(metadata, name=name))
    response: pb.GetMetricsResponse = await stub.GetMetrics(request, timeout=3)
    return float(response.metricValues[0].metricValueFloat)


async def wait_until_served_from_checkpoints(server: Server, metadata: dict[str, dict[str, str]]) -> float:
    """Seconds until every restored series has a forecast (no warming up) and is served OK."""
    started = time.monotonic()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = pb_grpc.ExternalScalerStub(channel)
        while True:
            warming = await asyncio.to_thread(server.metric, "helios_series_warming_up")
            objects = await asyncio.to_thread(server.metric, "helios_scaledobjects")
            if objects == len(metadata) and warming == 0:
                values = {name: await served(stub, meta, name) for name, meta in metadata.items()}
                # The doubled series served exactly twice the plain one: each series has its own model.
                if values["doubled"] == pytest.approx(2 * values["plain"], rel=1e-9):
                    return time.monotonic() - started
            assert server.process.poll() is None, "\n".join(server.logs())
            assert time.monotonic() - started < SERVES_WITHIN_S, (warming, objects, server.logs()[-20:])
            await asyncio.sleep(0.1)


async def test_kill_9_while_checkpointing_then_every_restart_serves_from_the_checkpoints(
    tmp_path: Path, fresh_prometheus: PrometheusFixture
) -> None:
    state_dir = tmp_path / "state"
    options = (
        *("--prometheus-url", fresh_prometheus.url, "--state-dir", str(state_dir)),
        *("--refresh-interval", "1s", "--retrain-interval", "2s"),
    )
    metadata = triggers(fresh_prometheus)
    with serve(tmp_path, *options) as server:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            stub = pb_grpc.ExternalScalerStub(channel)
            for name, meta in metadata.items():
                await stub.GetMetricSpec(ref(meta, name=name), timeout=3)
        deadline = time.monotonic() + 60
        while check_files(state_dir) < len(metadata):
            assert time.monotonic() < deadline, "no checkpoints written:\n" + "\n".join(server.logs()[-20:])
            await asyncio.sleep(0.2)
        caught = [await asyncio.to_thread(kill_mid_write, server, state_dir, 15.0)]

    timings = []
    for _ in range(ROUNDS):
        assert check_files(state_dir) == len(metadata)  # a write cut short left the previous file whole
        with serve(tmp_path, *options) as server:
            timings.append(await wait_until_served_from_checkpoints(server, metadata))
            logs = "\n".join(server.logs())
            assert f"warm restart: {len(metadata)} checkpointed series restored" in logs
            assert "ignored" not in logs  # no checkpoint was unusable
            caught.append(await asyncio.to_thread(kill_mid_write, server, state_dir, 15.0))
    assert check_files(state_dir) == len(metadata)
    assert max(timings) < SERVES_WITHIN_S
    assert sum(caught) >= 1, "no kill landed while a checkpoint was being written"
    print(f"restarts served from checkpoints in {[round(t, 2) for t in timings]} s; kills mid-write: {caught}")
