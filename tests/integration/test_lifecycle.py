"""The server process' lifecycle as a real process: SIGTERM under load, ``kill -9``, a port already taken.

Each test starts ``helios-scaler serve`` as a user does and talks to it over real gRPC and HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from prom import SilentServer, free_port
from prometheus_client.parser import text_string_to_metric_families
from scaler_app import ref

from helios_scaler._proto import externalscaler_pb2 as pb
from helios_scaler._proto import externalscaler_pb2_grpc as pb_grpc

pytestmark = [pytest.mark.integration, pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")]

BIN = Path(sys.executable).parent
#: The shutdown grace the servers here run with; the process must be gone within it plus this margin.
GRACE_S = 2.0
EXIT_MARGIN_S = 2.0
STREAMS = 200


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    grpc_port: int
    http_port: int
    log: Path

    def logs(self) -> list[str]:
        return self.log.read_text().splitlines()

    def metric(self, name: str) -> float | None:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/metrics", timeout=5) as response:
            text = response.read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name:
                    return float(sample.value)
        return None


@contextlib.contextmanager
def serve(tmp_path: Path, *options: str, grpc_port: int | None = None, wait: bool = True) -> Iterator[Server]:
    """``helios-scaler serve`` on loopback, JSON logs to a file; killed at the end if still running."""
    grpc_port = grpc_port or free_port()
    http_port = free_port()
    log = tmp_path / f"server-{grpc_port}-{http_port}.log"
    command = [
        str(BIN / "helios-scaler"),
        "serve",
        "--bind-address",
        "127.0.0.1",
        "--grpc-port",
        str(grpc_port),
        "--http-port",
        str(http_port),
        "--log-format",
        "json",
        "--shutdown-grace",
        f"{GRACE_S:g}s",
        *options,
    ]
    with log.open("wb") as stderr, subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr) as process:
        server = Server(process, grpc_port, http_port, log)
        try:
            if wait:
                _wait_healthy(server)
            yield server
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()


def _wait_healthy(server: Server, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert server.process.poll() is None, "\n".join(server.logs())
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{server.http_port}/healthz", timeout=1):
                return
        except (urllib.error.URLError, OSError):
            assert time.monotonic() < deadline, "the server did not start:\n" + "\n".join(server.logs())
            time.sleep(0.1)


def children(pid: int) -> dict[int, str]:
    """pid → command line of every process whose parent is ``pid`` (from /proc)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                text = stat.read()
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                command = cmdline.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if int(text[text.rindex(")") + 2 :].split()[1]) == pid:
            found[int(entry)] = command
    return found


def alive(pid: int) -> bool:
    """Running (a zombie, dead but not reaped by whoever adopted it, is not)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            text = stat.read()
    except OSError:
        return False
    return text[text.rindex(")") + 2] not in "ZX"


class MatrixServer:
    """A loopback Prometheus stand-in: every range query gets one series on the asked grid."""

    def __init__(self) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                params = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                start, end, step = (int(float(params[key][0])) for key in ("start", "end", "step"))
                values = [[t, f"{100 + 50 * math.sin(t / 600):.3f}"] for t in range(start, end + 1, step)]
                result = [{"metric": {}, "values": values}]
                body = json.dumps({"status": "success", "data": {"resultType": "matrix", "result": result}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def matrix_server() -> Iterator[MatrixServer]:
    server = MatrixServer()
    try:
        yield server
    finally:
        server.close()


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
    tmp_path: Path, matrix_server: MatrixServer
) -> None:
    metadata = {"query": "sum(rate(http_requests_total[5m]))", "threshold": "10", "historyTimeWindow": "2h"}
    options = ("--prometheus-url", matrix_server.url, "--training-workers", "2")
    with serve(tmp_path, *options) as server:
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
