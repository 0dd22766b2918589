"""The server process' lifecycle as a real process: SIGTERM under load, ``kill -9``, a port already taken.

Each test starts ``helios-scaler serve`` as a user does and talks to it over real gRPC and HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from pathlib import Path

import grpc
import pytest
from hostile import hostile_server
from processes import alive, children
from prom import SilentServer
from scaler_app import ref
from server_process import GRACE_S, serve

from helios_scaler._proto import externalscaler_pb2 as pb
from helios_scaler._proto import externalscaler_pb2_grpc as pb_grpc

# Reads /proc: Linux only, as the container and CI are (no skip: a skipped test would prove nothing).
pytestmark = pytest.mark.integration

#: The process must be gone within the shutdown grace plus this margin.
EXIT_MARGIN_S = 2.0
STREAMS = 200


async def _end_of(call: grpc.aio.UnaryStreamCall) -> grpc.StatusCode:
    """How a stream ends: its status code."""
    try:
        async for _ in call:
            pass
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    code: grpc.StatusCode = await call.code()
    return code


async def test_sigterm_ends_200_streams_with_ok_and_exits_within_the_grace_despite_a_stuck_fetch(
    tmp_path: Path, silent_server: SilentServer
) -> None:
    """The fetches hang on a Prometheus that accepts and never answers (the query timeout is far away)."""
    options = ("--prometheus-url", silent_server.url, "--query-timeout", "60s")
    with serve(tmp_path, *options) as server:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            stub = pb_grpc.ExternalScalerStub(channel)
            calls = [
                stub.StreamIsActive(ref({"query": f"up{{job='j{i % 10}'}}", "threshold": "10"}, name=f"web-{i}"))
                for i in range(STREAMS)
            ]
            ends = [asyncio.create_task(_end_of(call)) for call in calls]
            deadline = time.monotonic() + 20
            while (
                await asyncio.to_thread(server.metric, "helios_scaledobjects") != STREAMS or not silent_server.accepted
            ):
                assert time.monotonic() < deadline, "the streams did not all reach the server, or no fetch started"
                await asyncio.sleep(0.1)
            assert not any(end.done() for end in ends)  # every stream is open, the fetches are stuck

            server.process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            codes = await asyncio.wait_for(asyncio.gather(*ends), GRACE_S + EXIT_MARGIN_S)
            returncode = await asyncio.to_thread(server.process.wait, GRACE_S + EXIT_MARGIN_S + 5)
            exited_after = time.monotonic() - signalled

    assert codes == [grpc.StatusCode.OK] * STREAMS
    assert exited_after < GRACE_S + EXIT_MARGIN_S
    assert returncode == 0
    logs = [json.loads(line) for line in server.logs()]  # every line is one JSON object
    messages = [entry["message"] for entry in logs]
    assert "stopped" in messages
    # The stuck fetch threads were abandoned at the deadline, not waited for (until the query timeout).
    assert any(m.startswith("stopped; abandoning thread helios-fetch") for m in messages) or exited_after < GRACE_S


async def test_after_kill_9_no_training_worker_or_resource_tracker_outlives_the_server(
    tmp_path: Path,
) -> None:
    metadata = {"query": "sum(rate(http_requests_total[5m]))", "threshold": "10", "historyTimeWindow": "2h"}
    # A Prometheus stand-in answering every range query with one valid series, so a fit starts.
    with (
        hostile_server("ok") as prometheus,
        serve(tmp_path, "--prometheus-url", prometheus.url, "--training-workers", "2") as server,
    ):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            stub = pb_grpc.ExternalScalerStub(channel)
            with contextlib.suppress(grpc.aio.AioRpcError):  # UNAVAILABLE until the first forecast: it registers
                await stub.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=ref(metadata)), timeout=5)
        deadline = time.monotonic() + 30
        while not any("spawn_main" in command for command in children(server.process.pid).values()):
            assert server.process.poll() is None, "\n".join(server.logs())
            assert time.monotonic() < deadline, "no training worker was started:\n" + "\n".join(server.logs())
            await asyncio.sleep(0.1)
        family = children(server.process.pid)
        assert any("resource_tracker" in command for command in family.values()), family
        lines_before_kill = server.logs()

        server.process.kill()
        server.process.wait()
        deadline = time.monotonic() + 5
        while (left := [pid for pid in family if alive(pid)]) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for pid in left:  # never leave them behind, even when the test fails
            os.kill(pid, signal.SIGKILL)
    assert left == [], {pid: family[pid] for pid in left}
    for line in lines_before_kill:  # the main process' and the workers' records alike
        assert {"time", "level", "logger", "message"} <= set(json.loads(line)), line


def test_a_second_server_on_the_same_grpc_port_fails_at_start_naming_the_address(
    tmp_path: Path, silent_server: SilentServer
) -> None:
    with serve(tmp_path, "--prometheus-url", silent_server.url) as first:
        with serve(tmp_path, "--prometheus-url", silent_server.url, grpc_port=first.grpc_port, wait=False) as second:
            assert second.process.wait(timeout=30) == 1
            logs = [json.loads(line) for line in second.logs() if line.startswith("{")]
        assert first.process.poll() is None
    errors = [entry["message"] for entry in logs if entry["level"] == "error"]
    assert errors == [
        f"cannot start: [Errno 98] cannot bind the gRPC port at 127.0.0.1:{first.grpc_port}: Address already in use "
        "(another process listens there: is a helios-scaler already running?)"
    ]
