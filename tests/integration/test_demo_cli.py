"""`helios-scaler demo` as a user runs it: a real process, real ports, grpcurl, SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prom import free_port, grpcurl

pytestmark = [pytest.mark.integration]

BIN = Path(sys.executable).parent
DEMO_METADATA = {"query": "worldcup98", "threshold": "1000", "leadTime": "5m", "calendar": "worldcup98"}


def test_demo_serves_forecasts_and_stops_on_sigterm() -> None:
    grpc_port, http_port = free_port(), free_port()
    with subprocess.Popen(
        [
            str(BIN / "helios-scaler"),
            "demo",
            "--grpc-port",
            str(grpc_port),
            "--http-port",
            str(http_port),
            "--bind-address",
            "127.0.0.1",
            "--log-format",
            "json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        _exercise_demo(process, grpc_port, http_port)


def _exercise_demo(process: subprocess.Popen[str], grpc_port: int, http_port: int) -> None:
    try:
        body = json.dumps(
            {"scaledObjectRef": {"name": "worldcup98", "namespace": "demo", "scalerMetadata": DEMO_METADATA}}
        )
        deadline = time.monotonic() + 90
        while True:
            done = grpcurl("-d", body, f"127.0.0.1:{grpc_port}", "externalscaler.ExternalScaler/GetMetrics")
            if done.returncode == 0:
                with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as response:
                    metrics = response.read().decode()
                if 'reason="forecast"' in metrics or 'reason="observed_floor"' in metrics:
                    break
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, f"no forecast served within 90 s: {done.stderr}"
            time.sleep(0.5)
        value = json.loads(done.stdout)["metricValues"][0]
        # WorldCup98 in mid-June 1998: thousands of requests per minute.
        assert float(value["metricValueFloat"]) > 1000
        assert int(value["metricValue"]) == round(float(value["metricValueFloat"]))
        assert "helios_backtest_mase" in metrics

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
        logs = [json.loads(line) for line in (process.stderr.read() if process.stderr else "").splitlines() if line]
        messages = [entry["message"] for entry in logs]
        assert any(m.startswith("trained query 'worldcup98'") for m in messages)
        assert messages[-1] == "stopped"
        assert all({"time", "level", "logger", "message"} <= set(entry) for entry in logs)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_bad_setting_exits_with_one_clear_line() -> None:
    done = subprocess.run(
        [str(BIN / "helios-scaler"), "serve", "--grpc-port", "seventy"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr == "helios-scaler: setting grpc_port: 'seventy' is not valid (expected a whole number)\n"


def test_a_replay_start_outside_the_trace_exits_2_naming_the_range() -> None:
    done = subprocess.run(
        [str(BIN / "helios-scaler"), "demo", "--replay-start", "2020-01-01T00:00:00Z", "--grpc-port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "--replay-start '2020-01-01T00:00:00Z' must lie from 1998-06-11 to 1998-06-24" in done.stderr
