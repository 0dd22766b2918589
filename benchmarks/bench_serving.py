"""Serving speed of helios-scaler's GetMetrics against a bare grpc.aio server, side by side.

Run from the repository root::

    .venv/bin/python benchmarks/bench_serving.py            # full run, about 6 minutes
    .venv/bin/python benchmarks/bench_serving.py --quick    # about 1 minute, for a smoke test

Method
------
Three kinds of process, started by this script and always terminated by it:

* **helios** — the real app (``helios_scaler.app.build`` + ``run``, default settings except
  loopback, port 0 and WARNING logs) with a :class:`TraceSource`: a deterministic in-memory
  source serving 1,000 queries ``wc-0000`` … ``wc-0999``, each the bundled WorldCup98 trace
  (``replay.load_trace()``) shifted by ``20 * i`` minutes.  Every trigger asks for
  ``model: seasonal_naive`` and ``historyTimeWindow: 1d`` so all 1,000 series warm up in seconds
  (the serving path does not depend on the model).  ``refresh_interval`` keeps its default of 30 s,
  so the trainer does its normal background work (fetch + forecast of every series every 30 s)
  while we measure.
* **bare** — a grpc.aio server with the same generated code that implements only
  ``ExternalScaler.GetMetrics`` and returns a constant response: the floor for this RPC in Python.
* **load** — a grpc.aio client process (``--channels`` channels, each its own TCP connection)
  that sends ``GetMetrics`` round-robin over the 1,000 ScaledObjects, each request carrying the
  trigger's full ``scalerMetadata`` as KEDA does.  Two modes:

  - *open loop*: requests are started at a fixed rate (``--rate``, default 2,000/s) whatever the
    server does; latency runs from the *scheduled* start to the response (no coordinated
    omission), with ``time.perf_counter``.  Reported: achieved rate, p50/p90/p99/max, errors.
  - *closed loop*: ``--concurrency`` requests always in flight, for the maximum throughput.

Before measuring, the script registers every ScaledObject with ``GetMetricSpec`` and waits until
helios' ``/metrics`` reports all 1,000 triggers served from a forecast
(``helios_served_reason{reason="forecast"|"observed_floor"}``).  It then measures, for each of
``--repeats`` rounds, open loop and closed loop against both servers, alternating which server
goes first, and reports the median of the rounds and the ratios helios/bare of those medians.

CPU.  On a 2-core machine the load generator competes with the server for CPU.  By default
(``--pin``) both servers are pinned to CPU 0 and the load generator to the other CPUs, so a server
gets one core (like a 1-CPU pod limit) and the generator never steals it.  Every measurement also
records the CPU time the server process used (``/proc/<pid>/stat``: all its threads), the client's
CPU and the whole machine's busy cores (``/proc/stat``), so one can see who was the bottleneck and
what other load was on the machine.  ``server CPU µs/request`` is a client-independent measure of
the cost of one request; ``1e6 / µs`` is the throughput one core could sustain.

The open-loop window defaults to 30 s, one refresh interval, so every helios window contains one
full background refresh of the 1,000 series, whatever its phase.

Results: a Markdown table on stdout and in ``benchmarks/results/serving.md``; every run's raw
figures and the machine facts in ``benchmarks/results/serving.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import re
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np
from _machine import cpu_model, git_commit, machine_jiffies, proc_cpu_seconds, terminate, write_results

from helios_scaler._proto import externalscaler_pb2 as pb
from helios_scaler._proto import externalscaler_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    import polars as pl

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
SERIES = 1000
NAMESPACE = "bench"
#: Minutes between the start points of consecutive series in the 20,160-minute trace.
SERIES_SHIFT_MINUTES = 20
P99_TARGET_MS = 5.0
THROUGHPUT_RATIO_TARGET = 0.5
#: A server process exits by itself after this long, whatever happens to this script.
SERVER_MAX_SECONDS = 3600.0


def query(index: int) -> str:
    return f"wc-{index:04d}"


def metadata(index: int) -> dict[str, str]:
    """A ScaledObject trigger's metadata, as KEDA sends it (scalerAddress included)."""
    return {
        "scalerAddress": "helios-scaler.helios-system.svc.cluster.local:6000",
        "query": query(index),
        "threshold": "1000",
        "activationThreshold": "10",
        "leadTime": "5m",
        "quantile": "0.9",
        "historyTimeWindow": "1d",
        "model": "seasonal_naive",
    }


def scaled_object(index: int) -> pb.ScaledObjectRef:
    return pb.ScaledObjectRef(name=query(index), namespace=NAMESPACE, scalerMetadata=metadata(index))


# --------------------------------------------------------------------------- servers


class TraceSource:
    """Deterministic in-memory Source: ``wc-NNNN`` is the WorldCup98 trace shifted by 20·NNNN minutes.

    The value at clock time ``t`` is trace minute ``(t // 1 min + shift) mod len(trace)``, so every
    series is a different real-looking slice and every fetch is pure numpy (no I/O).
    """

    name = "bench://worldcup98"

    def __init__(self, series: int = SERIES) -> None:
        from helios_scaler.source.replay import load_trace

        self._values = load_trace()["y"].to_numpy()
        self._shift = {query(i): (i * SERIES_SHIFT_MINUTES) % len(self._values) for i in range(series)}

    def now(self) -> datetime:
        return datetime.now(UTC)

    def close(self) -> None:
        """Nothing to release."""

    def fetch(self, query: str, start: datetime, end: datetime, step: timedelta) -> pl.DataFrame:
        import polars as pl

        from helios_scaler.errors import NoData, QueryError
        from helios_scaler.features.schema import DS, DS_DTYPE, Y_DTYPE, Y

        shift = self._shift.get(query.strip())
        if shift is None:
            raise QueryError(f"bench source: unknown series {query!r}")
        epoch = datetime(1970, 1, 1, tzinfo=UTC)
        micro = timedelta(microseconds=1)
        start_us = (start - epoch) // micro
        end_us = (min(end, self.now()) - epoch) // micro
        times = np.arange(start_us, end_us + 1, step // micro, dtype=np.int64)
        if times.size == 0:
            raise NoData(f"bench source: nothing between {start} and {end}")
        minutes = times // 60_000_000 + shift
        return pl.DataFrame(
            {
                DS: pl.Series(times).cast(pl.Datetime("us")).dt.replace_time_zone("UTC"),
                Y: pl.Series(self._values[minutes % len(self._values)], dtype=Y_DTYPE),
            },
            schema={DS: DS_DTYPE, Y: Y_DTYPE},
        )


class ConstantScaler(pb_grpc.ExternalScalerServicer):  # type: ignore[misc]
    """The baseline: GetMetrics answers a constant; nothing else is implemented."""

    RESPONSE = pb.GetMetricsResponse(
        metricValues=[pb.MetricValue(metricName="s0-helios-wc-0000-0123abcd", metricValue=42)]
    )

    async def GetMetrics(
        self, request: pb.GetMetricsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetMetricsResponse:
        return self.RESPONSE


def _pin(cpus: str | None) -> None:
    if cpus:
        os.sched_setaffinity(0, {int(c) for c in cpus.split(",")})


async def _until_orphaned(stop: asyncio.Event, started: float) -> None:
    """Stop when the parent process is gone or after SERVER_MAX_SECONDS (bounded lifetime)."""
    parent = os.getppid()
    while not stop.is_set():
        if os.getppid() != parent or time.monotonic() - started > SERVER_MAX_SECONDS:
            stop.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


async def serve_helios() -> None:
    """The real app on 127.0.0.1, port 0; prints its ports as one JSON line, runs until SIGTERM."""
    from helios_scaler import app as app_module
    from helios_scaler.config import Settings
    from helios_scaler.source.registry import SourceResolver

    started = time.monotonic()
    settings = Settings(
        grpc_port=0,
        http_port=0,
        bind_address="127.0.0.1",
        log_level="WARNING",
        shutdown_grace=timedelta(seconds=1),
    )
    app = app_module.build(settings, SourceResolver(TraceSource(), {}))  # type: ignore[arg-type]
    stop = asyncio.Event()
    app_module.install_signal_handlers(stop)
    watchdog = asyncio.create_task(_until_orphaned(stop, started))

    def announce(running: app_module.App) -> None:
        ports = {"grpc_port": running.grpc_port, "http_port": running.http_port}
        print(json.dumps(ports), flush=True)

    await app_module.run(app, stop, announce)
    await watchdog


async def serve_bare() -> None:
    """The baseline server on 127.0.0.1, port 0; prints its port as one JSON line."""
    started = time.monotonic()
    server = grpc.aio.server()
    pb_grpc.add_ExternalScalerServicer_to_server(ConstantScaler(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(json.dumps({"grpc_port": port}), flush=True)
    await _until_orphaned(stop, started)
    await server.stop(1.0)


# --------------------------------------------------------------------------- load generator


class CpuWindow:
    """CPU used by the server, this client and the whole machine between ``start`` and ``stop``."""

    def __init__(self, server_pid: int) -> None:
        self._pid = server_pid
        self._begin: tuple[float, float, float, tuple[int, int]] | None = None
        self.figures: dict[str, float] = {}

    def _sample(self) -> tuple[float, float, float, tuple[int, int]]:
        return time.perf_counter(), proc_cpu_seconds(self._pid), time.process_time(), machine_jiffies()

    def start(self) -> None:
        self._begin = self._sample()

    def stop(self, requests: int) -> None:
        assert self._begin is not None
        wall0, server0, client0, (busy0, total0) = self._begin
        wall1, server1, client1, (busy1, total1) = self._sample()
        wall = wall1 - wall0
        server = server1 - server0
        self.figures = {
            "server_cpu_cores": server / wall,
            "client_cpu_cores": (client1 - client0) / wall,
            "machine_busy_cores": (busy1 - busy0) / max(1, total1 - total0) * (os.cpu_count() or 1),
            "server_cpu_us_per_request": server / max(1, requests) * 1e6,
        }


def _latency_figures(latencies: list[float]) -> dict[str, float]:
    if not latencies:
        return {
            "p50_ms": float("nan"),
            "p90_ms": float("nan"),
            "p99_ms": float("nan"),
            "max_ms": float("nan"),
        }
    values = np.asarray(latencies) * 1e3
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {"p50_ms": float(p50), "p90_ms": float(p90), "p99_ms": float(p99), "max_ms": float(values.max())}


def _channels(port: int, count: int) -> list[grpc.aio.Channel]:
    # A local subchannel pool gives every channel its own TCP connection.
    options = [("grpc.use_local_subchannel_pool", 1)]
    return [grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) for _ in range(count)]


async def register(port: int, series: int) -> dict[str, Any]:
    """GetMetricSpec once per ScaledObject (what KEDA does first); returns the error count."""
    channel = _channels(port, 1)[0]
    stub = pb_grpc.ExternalScalerStub(channel)
    errors: Counter[str] = Counter()
    async with channel:
        for start in range(0, series, 100):
            batch = [stub.GetMetricSpec(scaled_object(i), timeout=10) for i in range(start, start + 100)]
            for outcome in await asyncio.gather(*batch, return_exceptions=True):
                if isinstance(outcome, grpc.aio.AioRpcError):
                    errors[outcome.code().name] += 1
                elif isinstance(outcome, BaseException):
                    raise outcome
    return {"errors": dict(errors)}


async def _clients(
    port: int, series: int, channels: int
) -> tuple[list[pb.GetMetricsRequest], list[grpc.aio.Channel], list[pb_grpc.ExternalScalerStub]]:
    """One request per ScaledObject, and ready channels with their stubs."""
    requests = [pb.GetMetricsRequest(scaledObjectRef=scaled_object(i), metricName="s0") for i in range(series)]
    chans = _channels(port, channels)
    stubs = [pb_grpc.ExternalScalerStub(c) for c in chans]
    for chan in chans:
        await asyncio.wait_for(chan.channel_ready(), 10)
    return requests, chans, stubs


async def open_loop(
    port: int, server_pid: int, series: int, rate: float, warmup: float, duration: float, channels: int
) -> dict[str, Any]:
    """Start ``rate`` requests/s for ``warmup + duration`` s; measure those of the last ``duration``."""
    requests, chans, stubs = await _clients(port, series, channels)
    latencies: list[float] = []
    lags: list[float] = []
    errors: Counter[str] = Counter()
    cpu = CpuWindow(server_pid)
    last_done = [0.0]

    async def one(index: int, scheduled: float, measured: bool) -> None:
        if measured:
            lags.append(time.perf_counter() - scheduled)
        try:
            await stubs[index % channels].GetMetrics(requests[index % series], timeout=5)
        except grpc.aio.AioRpcError as exc:
            if measured:
                errors[exc.code().name] += 1
            return
        done = time.perf_counter()
        if measured:
            latencies.append(done - scheduled)
            last_done[0] = done

    total = int(rate * (warmup + duration))
    first_measured = int(rate * warmup)
    tasks: set[asyncio.Task[None]] = set()
    t0 = time.perf_counter()
    sent = 0
    while sent < total:
        due = min(total, int((time.perf_counter() - t0) * rate) + 1)
        while sent < due:
            if sent == first_measured:
                cpu.start()
            task = asyncio.create_task(one(sent, t0 + sent / rate, sent >= first_measured))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent += 1
        await asyncio.sleep(max(0.0, t0 + sent / rate - time.perf_counter()))
    if tasks:
        await asyncio.wait(tasks, timeout=10)
    measured = total - first_measured
    cpu.stop(len(latencies))
    window_start = t0 + first_measured / rate
    elapsed = max(duration, last_done[0] - window_start)
    for chan in chans:
        await chan.close()
    return {
        "mode": "open",
        "target_rps": rate,
        "duration_s": duration,
        "requests": measured,
        "ok": len(latencies),
        "errors": dict(errors),
        # Failed RPCs plus any request still unanswered 10 s after the last one was sent.
        "error_count": measured - len(latencies),
        "achieved_rps": len(latencies) / elapsed,
        "send_lag_p99_ms": float(np.percentile(lags, 99) * 1e3) if lags else float("nan"),
        **_latency_figures(latencies),
        **cpu.figures,
    }


async def closed_loop(
    port: int, server_pid: int, series: int, concurrency: int, warmup: float, duration: float, channels: int
) -> dict[str, Any]:
    """Keep ``concurrency`` requests in flight; count the ones started in the last ``duration`` s."""
    requests, chans, stubs = await _clients(port, series, channels)
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    cpu = CpuWindow(server_pid)
    t0 = time.perf_counter()
    record_from = t0 + warmup
    end = record_from + duration

    async def worker(k: int) -> None:
        index = k
        stub = stubs[k % channels]
        while (started := time.perf_counter()) < end:
            try:
                await stub.GetMetrics(requests[index % series], timeout=5)
            except grpc.aio.AioRpcError as exc:
                if started >= record_from:
                    errors[exc.code().name] += 1
                continue
            finally:
                index += concurrency
            if started >= record_from:
                latencies.append(time.perf_counter() - started)

    loop = asyncio.get_running_loop()
    loop.call_at(loop.time() + warmup, cpu.start)
    workers = [asyncio.create_task(worker(k)) for k in range(concurrency)]
    await asyncio.wait_for(asyncio.gather(*workers), warmup + duration + 30)
    cpu.stop(len(latencies))
    for chan in chans:
        await chan.close()
    return {
        "mode": "closed",
        "concurrency": concurrency,
        "duration_s": duration,
        "ok": len(latencies),
        "errors": dict(errors),
        "error_count": sum(errors.values()),
        "achieved_rps": len(latencies) / duration,
        **_latency_figures(latencies),
        **cpu.figures,
    }


# --------------------------------------------------------------------------- orchestration


class Server:
    """A server subprocess: started pinned, its ports read from its first stdout line, always stopped."""

    def __init__(self, kind: str, cpus: str | None, logdir: Path) -> None:
        self.kind = kind
        self.log = logdir / f"{kind}.log"
        args = [sys.executable, __file__, f"_serve-{kind}"] + (["--cpus", cpus] if cpus else [])
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log, text=True)
        line = self._first_line(60.0)
        self.ports: dict[str, int] = json.loads(line)

    def _first_line(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line.strip():
            self.stop()
            raise RuntimeError(f"{self.kind} server did not start; see its log:\n{self.log.read_text()}")
        return line

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        terminate(self.proc)


def run_load(cpus: str | None, timeout: float, *args: str) -> dict[str, Any]:
    """Run the load generator in its own process and return its JSON result."""
    command = [sys.executable, __file__, *args] + (["--cpus", cpus] if cpus else [])
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed ({done.returncode}):\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def served_reasons(http_port: int) -> Counter[str]:
    """How many triggers helios serves for each reason, from its own /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    reasons: Counter[str] = Counter()
    for match in re.finditer(r'^helios_served_reason\{[^}]*reason="([a-z_]+)"[^}]*\} 1\.0$', text, re.M):
        reasons[match.group(1)] += 1
    return reasons


def wait_for_forecasts(helios: Server, series: int, timeout: float, log: Callable[[str], None]) -> float:
    """Block until every trigger is served from a forecast; return the seconds waited."""
    started = time.monotonic()
    deadline = started + timeout
    while True:
        reasons = served_reasons(helios.ports["http_port"])
        ready = reasons["forecast"] + reasons["observed_floor"]
        if ready >= series:
            return time.monotonic() - started
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {ready} of {series} triggers have a forecast after {timeout}s: {reasons}")
        log(f"  warming up: {ready}/{series} triggers have a forecast {dict(reasons)}")
        time.sleep(2.0)


def idle_cpu(servers: dict[str, Server], seconds: float) -> dict[str, float]:
    """Cores each server uses with no requests, over the same window (helios: its background trainer)."""
    before = {name: proc_cpu_seconds(server.pid) for name, server in servers.items()}
    wall = time.perf_counter()
    time.sleep(seconds)
    elapsed = time.perf_counter() - wall
    return {name: (proc_cpu_seconds(server.pid) - before[name]) / elapsed for name, server in servers.items()}


def machine_facts(pinned: tuple[str, str] | None) -> dict[str, Any]:
    from google import protobuf

    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "grpcio": grpc.__version__,
        "protobuf": protobuf.__version__,
        "git_commit": git_commit(ROOT),
        "loadavg_at_start": os.getloadavg(),
        "pinning": (
            {"servers_cpus": pinned[0], "load_generator_cpus": pinned[1]} if pinned else "none (OS scheduling)"
        ),
    }


def median_of(runs: Sequence[dict[str, Any]], key: str) -> float:
    values = [float(run[key]) for run in runs]
    return statistics.median(values) if values else float("nan")


METRIC_ROWS: tuple[tuple[str, str, str], ...] = (
    ("open", "achieved_rps", "req/s achieved"),
    ("open", "p50_ms", "p50 latency (ms)"),
    ("open", "p90_ms", "p90 latency (ms)"),
    ("open", "p99_ms", "p99 latency (ms)"),
    ("open", "max_ms", "max latency (ms)"),
    ("open", "error_count", "errors"),
    ("open", "server_cpu_cores", "server CPU (cores)"),
    ("open", "server_cpu_us_per_request", "server CPU per request (µs)"),
    ("open", "client_cpu_cores", "load generator CPU (cores)"),
    ("open", "machine_busy_cores", "whole machine busy (cores)"),
    ("closed", "achieved_rps", "throughput (req/s)"),
    ("closed", "p50_ms", "p50 latency (ms)"),
    ("closed", "p99_ms", "p99 latency (ms)"),
    ("closed", "error_count", "errors"),
    ("closed", "server_cpu_cores", "server CPU (cores)"),
    ("closed", "server_cpu_us_per_request", "server CPU per request (µs)"),
    ("closed", "client_cpu_cores", "load generator CPU (cores)"),
    ("closed", "machine_busy_cores", "whole machine busy (cores)"),
)


def _fmt(value: float) -> str:
    if value != value:  # NaN
        return "n/a"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}" if abs(value) >= 1 else f"{value:.3f}"


def summarize(runs: dict[str, dict[str, list[dict[str, Any]]]], config: dict[str, Any]) -> dict[str, Any]:
    """Medians per server/mode/metric, the helios/bare ratios and the verdicts."""
    medians: dict[str, dict[str, dict[str, float]]] = {}
    for server in ("helios", "bare"):
        medians[server] = {}
        for mode in ("open", "closed"):
            medians[server][mode] = {key: median_of(runs[server][mode], key) for m, key, _ in METRIC_ROWS if m == mode}
    helios_open, helios_closed = medians["helios"]["open"], medians["helios"]["closed"]
    bare_closed = medians["bare"]["closed"]
    throughput_ratio = helios_closed["achieved_rps"] / bare_closed["achieved_rps"]
    cpu_ratio = helios_closed["server_cpu_us_per_request"] / bare_closed["server_cpu_us_per_request"]
    rate = config["rate"]
    open_ok = helios_open["achieved_rps"] >= 0.98 * rate and all(
        run["error_count"] == 0 for run in runs["helios"]["open"]
    )
    return {
        "medians": medians,
        "ratios": {
            "closed_throughput_helios_over_bare": throughput_ratio,
            "server_cpu_per_request_helios_over_bare": cpu_ratio,
            "open_p99_helios_over_bare": helios_open["p99_ms"] / medians["bare"]["open"]["p99_ms"],
        },
        "targets": {
            "p99_at_rate": {
                "target": f"p99 <= {P99_TARGET_MS} ms at {rate:g} req/s with no errors",
                "value_ms": helios_open["p99_ms"],
                "met": bool(helios_open["p99_ms"] <= P99_TARGET_MS and open_ok),
            },
            "throughput_ratio": {
                "target": f"helios throughput >= {THROUGHPUT_RATIO_TARGET} x bare",
                "value": throughput_ratio,
                "met": bool(throughput_ratio >= THROUGHPUT_RATIO_TARGET),
            },
        },
    }


def markdown(result: dict[str, Any]) -> str:
    config, facts, summary = result["config"], result["machine"], result["summary"]
    med, ratios, targets = summary["medians"], summary["ratios"], summary["targets"]
    lines = [
        "# Serving benchmark: helios-scaler GetMetrics vs a bare grpc.aio server",
        "",
        f"`{config['command']}` — {facts['date']}, commit {facts['git_commit']}, "
        f"{facts['cpu_count']} CPUs ({facts['cpu_model']}), Python {facts['python']}, "
        f"grpcio {facts['grpcio']}, protobuf {facts['protobuf']}.",
        "",
        f"{config['series']} ScaledObjects, round-robin, full scalerMetadata per request; "
        f"{config['channels']} client channels. Open loop: {config['rate']:g} req/s for "
        f"{config['duration']:g} s after {config['warmup']:g} s warm-up. Closed loop: "
        f"{config['concurrency']} in flight for {config['closed_duration']:g} s after "
        f"{config['closed_warmup']:g} s. Median of {config['repeats']} rounds; ratios are of the medians.",
        f"Pinning: {facts['pinning']}. Load average at start: "
        + ", ".join(f"{v:.2f}" for v in facts["loadavg_at_start"])
        + f"; at end: {', '.join(f'{v:.2f}' for v in result['loadavg_at_end'])}.",
        f"Idle CPU with no requests: helios {result['idle_cpu_cores']['helios']:.3f} cores "
        f"(background trainer, measured over {config['idle']:g} s), "
        f"bare {result['idle_cpu_cores']['bare']:.3f} cores. "
        f"All {config['series']} triggers had a forecast "
        f"{result['warmup_seconds']:.1f} s after the first GetMetricSpec.",
        "",
        "| mode | metric | helios | bare | helios/bare |",
        "|---|---|---:|---:|---:|",
    ]
    for mode, key, label in METRIC_ROWS:
        h, b = med["helios"][mode][key], med["bare"][mode][key]
        ratio = _fmt(h / b) if b not in (0, 0.0) and b == b else "n/a"
        title = f"open {config['rate']:g}/s" if mode == "open" else f"closed {config['concurrency']}"
        lines.append(f"| {title} | {label} | {_fmt(h)} | {_fmt(b)} | {ratio} |")
    lines += [
        "",
        "| target | measured | met |",
        "|---|---|---|",
        f"| {targets['p99_at_rate']['target']} | p99 {_fmt(targets['p99_at_rate']['value_ms'])} ms "
        f"| {'yes' if targets['p99_at_rate']['met'] else 'NO'} |",
        f"| {targets['throughput_ratio']['target']} | {_fmt(targets['throughput_ratio']['value'])} x "
        f"| {'yes' if targets['throughput_ratio']['met'] else 'NO'} |",
        "",
        f"Server CPU per request, helios/bare: {_fmt(ratios['server_cpu_per_request_helios_over_bare'])} x "
        "(independent of the load generator's speed).",
        "",
        "Per round (open p99 ms | closed req/s | machine busy cores during the closed run):",
        "",
        "| round | helios open p99 | bare open p99 | helios closed | bare closed | busy (helios/bare) |",
        "|---:|---:|---:|---:|---:|---|",
    ]
    for i in range(config["repeats"]):
        ho, bo = result["runs"]["helios"]["open"][i], result["runs"]["bare"]["open"][i]
        hc, bc = result["runs"]["helios"]["closed"][i], result["runs"]["bare"]["closed"][i]
        lines.append(
            f"| {i + 1} | {_fmt(ho['p99_ms'])} | {_fmt(bo['p99_ms'])} | {_fmt(hc['achieved_rps'])} "
            f"| {_fmt(bc['achieved_rps'])} | {hc['machine_busy_cores']:.2f}/{bc['machine_busy_cores']:.2f} |"
        )
    lines += [
        "",
        "The load generator is Python too and shares the machine: when its CPU is near 1 core in the "
        "closed loop it, not the server, sets the throughput ceiling (then compare server CPU per request).",
        "",
    ]
    return "\n".join(lines)


def orchestrate(args: argparse.Namespace) -> int:
    if args.quick:
        args.repeats, args.duration, args.warmup = 1, 5.0, 1.0
        args.closed_duration, args.closed_warmup, args.idle = 4.0, 1.0, 3.0
    ncpu = os.cpu_count() or 1
    pinned = ("0", ",".join(str(c) for c in range(1, ncpu))) if args.pin and ncpu >= 2 else None
    server_cpus, load_cpus = pinned if pinned else (None, None)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    config = {
        "command": "python benchmarks/bench_serving.py " + " ".join(sys.argv[1:]),
        "series": args.series,
        "rate": args.rate,
        "duration": args.duration,
        "warmup": args.warmup,
        "concurrency": args.concurrency,
        "closed_duration": args.closed_duration,
        "closed_warmup": args.closed_warmup,
        "channels": args.channels,
        "repeats": args.repeats,
        "idle": args.idle,
    }
    facts = machine_facts(pinned)
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {s: {"open": [], "closed": []} for s in ("helios", "bare")}
    servers: dict[str, Server] = {}
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as logdir:
        try:
            log("starting servers")
            servers["helios"] = Server("helios", server_cpus, Path(logdir))
            servers["bare"] = Server("bare", server_cpus, Path(logdir))
            log(f"  helios {servers['helios'].ports}, bare {servers['bare'].ports}")
            registered_at = time.monotonic()
            outcome = run_load(
                load_cpus,
                120,
                "register",
                "--port",
                str(servers["helios"].ports["grpc_port"]),
                "--series",
                str(args.series),
            )
            if outcome["errors"]:
                raise RuntimeError(f"GetMetricSpec failed: {outcome['errors']}")
            wait_for_forecasts(servers["helios"], args.series, 300, log)
            warmup_seconds = time.monotonic() - registered_at
            log(f"  all {args.series} triggers have a forecast after {warmup_seconds:.1f}s")
            idle = idle_cpu(servers, args.idle)
            log(f"  idle CPU: {idle}")
            for round_ in range(args.repeats):
                order = ("helios", "bare") if round_ % 2 == 0 else ("bare", "helios")
                for mode in ("open", "closed"):
                    for name in order:
                        server = servers[name]
                        common = [
                            "--port",
                            str(server.ports["grpc_port"]),
                            "--server-pid",
                            str(server.pid),
                            "--series",
                            str(args.series),
                            "--channels",
                            str(args.channels),
                        ]
                        if mode == "open":
                            extra = [
                                "--rate",
                                str(args.rate),
                                "--warmup",
                                str(args.warmup),
                                "--duration",
                                str(args.duration),
                            ]
                            budget = args.warmup + args.duration + 60
                        else:
                            extra = [
                                "--concurrency",
                                str(args.concurrency),
                                "--warmup",
                                str(args.closed_warmup),
                                "--duration",
                                str(args.closed_duration),
                            ]
                            budget = args.closed_warmup + args.closed_duration + 60
                        result = run_load(load_cpus, budget, mode, *common, *extra)
                        runs[name][mode].append(result)
                        log(
                            f"round {round_ + 1}/{args.repeats} {mode:6} {name:6}: "
                            f"{result['achieved_rps']:8.0f} req/s  p50 {result['p50_ms']:.2f}  "
                            f"p99 {result['p99_ms']:.2f}  max {result['max_ms']:.1f} ms  "
                            f"errors {result['error_count']}  server {result['server_cpu_cores']:.2f} "
                            f"client {result['client_cpu_cores']:.2f} "
                            f"machine {result['machine_busy_cores']:.2f} cores"
                        )
            reasons = served_reasons(servers["helios"].ports["http_port"])
        finally:
            for server in servers.values():
                server.stop()
    result: dict[str, Any] = {
        "config": config,
        "machine": facts,
        "loadavg_at_end": os.getloadavg(),
        "idle_cpu_cores": idle,
        "warmup_seconds": warmup_seconds,
        "served_reasons_at_end": dict(reasons),
        "runs": runs,
    }
    result["summary"] = summarize(runs, config)
    text = markdown(result)
    print(text)
    if not args.no_write:
        write_results(RESULTS, "serving", text, result, log)
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="role")
    # Internal roles (one per child process).
    for role in ("_serve-helios", "_serve-bare"):
        child = sub.add_parser(role)
        child.add_argument("--cpus")
    for role in ("register", "open", "closed"):
        child = sub.add_parser(role)
        child.add_argument("--port", type=int, required=True)
        child.add_argument("--server-pid", type=int, default=0)
        child.add_argument("--series", type=int, default=SERIES)
        child.add_argument("--channels", type=int, default=4)
        child.add_argument("--rate", type=float, default=2000.0)
        child.add_argument("--concurrency", type=int, default=64)
        child.add_argument("--warmup", type=float, default=3.0)
        child.add_argument("--duration", type=float, default=30.0)
        child.add_argument("--cpus")
    parser.add_argument("--quick", action="store_true", help="one short round (about a minute)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds; medians are reported (default 3)")
    parser.add_argument("--series", type=int, default=SERIES, help="distinct ScaledObjects (default 1000)")
    parser.add_argument("--rate", type=float, default=2000.0, help="open-loop requests/s (default 2000)")
    parser.add_argument("--duration", type=float, default=30.0, help="open-loop measured seconds (default 30)")
    parser.add_argument("--warmup", type=float, default=3.0, help="open-loop warm-up seconds (default 3)")
    parser.add_argument("--concurrency", type=int, default=64, help="closed-loop requests in flight (64)")
    parser.add_argument("--closed-duration", type=float, default=10.0, help="closed-loop seconds (10)")
    parser.add_argument("--closed-warmup", type=float, default=2.0, help="closed-loop warm-up seconds (2)")
    parser.add_argument("--channels", type=int, default=4, help="client channels/connections (default 4)")
    parser.add_argument("--idle", type=float, default=30.0, help="seconds to measure idle server CPU (30: one refresh)")
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="servers on CPU 0, load generator on the others (default on)",
    )
    parser.add_argument("--no-write", action="store_true", help="print only; leave benchmarks/results alone")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    role = args.role
    if role in ("_serve-helios", "_serve-bare", "register", "open", "closed"):
        _pin(args.cpus)
    if role == "_serve-helios":
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
        asyncio.run(serve_helios())
        return 0
    if role == "_serve-bare":
        asyncio.run(serve_bare())
        return 0
    if role == "register":
        print(json.dumps(asyncio.run(register(args.port, args.series))))
        return 0
    if role == "open":
        outcome = asyncio.run(
            open_loop(args.port, args.server_pid, args.series, args.rate, args.warmup, args.duration, args.channels)
        )
        print(json.dumps(outcome))
        return 0
    if role == "closed":
        outcome = asyncio.run(
            closed_loop(
                args.port,
                args.server_pid,
                args.series,
                args.concurrency,
                args.warmup,
                args.duration,
                args.channels,
            )
        )
        print(json.dumps(outcome))
        return 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks: stop the servers
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
