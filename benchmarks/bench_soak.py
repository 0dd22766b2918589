"""Soak: the real ``helios-scaler serve`` against a real Prometheus, at KEDA's rate and at 10x, for minutes.

Run from the repository root::

    .venv/bin/python benchmarks/bench_soak.py            # 2 x 10 minutes + warm-up, about 25 minutes
    .venv/bin/python benchmarks/bench_soak.py --quick    # 2 x 1 minute, 100 ScaledObjects, about 3 minutes

Method
------
* **Prometheus**: a real one (``prometheus`` / ``promtool`` on PATH), started and backfilled exactly as
  the integration tests do (``tests/integration/prom.py``: 8 days of the WorldCup98 trace and of a NAB
  CPU series, plus small series this benchmark does not query).  The series are stamped to end
  ``--future`` minutes after the start, beyond the end of the soak, so every query keeps returning
  fresh samples for the whole run, as a live series would (Prometheus answers an instant ``t`` from
  the newest sample at or before ``t``; helios drops anything after its query's end).
* **ScaledObjects**: ``--series`` (1,000) triggers spread over 10 namespaces (100 each, inside the
  default per-namespace quotas), each with its own PromQL selecting one backfilled series at its own
  offset (three in four ``helios_wc98_requests offset <i>m``, one in four ``helios_nab_cpu offset
  <i>m``), so every query returns exactly one series and every trigger is its own series.  Every
  trigger asks for ``model: seasonal_naive`` and ``historyTimeWindow: 1d`` (warm-up in seconds);
  ``threshold`` is the series' p99 / 30 (``bench_backtest.capacity_per_pod``).
* **helios**: ``.venv/bin/helios-scaler serve`` as a subprocess on loopback ports, ``--prometheus-url``
  the Prometheus above, default settings (30 s refresh, 1 training worker, 5 s shutdown grace) except
  ``--retrain-interval`` (5 minutes, 1 with ``--quick``) so retrains happen during the soak, and JSON
  logs at WARNING kept for the report.
* **Client** (this process, grpc.aio, ``--channels`` connections): ``GetMetricSpec`` for every trigger
  (the metric names it returns are used by ``GetMetrics``, as KEDA does), a wait until ``/metrics``
  shows every trigger served from a forecast, then ``--streams`` (200) ``StreamIsActive`` streams held
  open for the whole run (trigger ``k mod series``) and two phases of open-loop polling: every
  ScaledObject gets ``GetMetrics`` and ``IsActive`` once per ``--poll-interval`` (KEDA's default
  pollingInterval, 30 s: 1,000 / 30 = 33 req/s of each), then ``--multiplier`` (10) times as often.
  Latency runs from the *scheduled* send time (no coordinated omission); a request unanswered after
  its 5 s deadline counts as ``DEADLINE_EXCEEDED``.  Answers are checked: one metric value, the
  registered metric name, a finite value >= 0.
* **Sampling** every ``--sample-every`` (10) seconds: VmRSS, open FDs and threads of the server and,
  separately, of its descendants (the training workers and the process pool's helpers), CPU seconds,
  the streams still open, and ``helios_served_reason`` from the server's ``/metrics``.
* **Shutdown**: KEDA-rate polling keeps running while the server gets SIGTERM (as during a rolling
  update); recorded: seconds until the process exited, its exit code, how each stream ended (OK or
  which code) and how long after SIGTERM, what the polls got meanwhile, and whether any descendant
  outlived the server.

Every process started here (Prometheus, helios and its process group) is stopped in ``finally``
blocks, on errors, Ctrl-C and SIGTERM alike.

Results: ``benchmarks/results/soak.md`` (tables and a per-minute time series) and
``benchmarks/results/soak.json`` (every sample, every phase's raw figures, machine facts).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from _machine import machine_jiffies, proc_cpu_seconds, terminate, write_results
from bench_backtest import capacity_per_pod
from bench_serving import RESULTS, CpuWindow, _channels, _fmt, _latency_figures, machine_facts, served_reasons
from bench_serving import wait_for_forecasts as _wait_for_forecasts

from helios_scaler._proto import externalscaler_pb2 as pb
from helios_scaler._proto import externalscaler_pb2_grpc as pb_grpc

REPO = Path(__file__).resolve().parents[1]
# The integration tests' Prometheus helpers (prom.py imports tests/traces.py).
sys.path[:0] = [str(REPO / "tests"), str(REPO / "tests" / "integration")]
from prom import NAB_CPU, WC98, free_port, missing_binaries, nab_cpu_series, run_prometheus, wc98_series  # noqa: E402

HELIOS = Path(sys.executable).parent / "helios-scaler"
NAMESPACES = 10
METHODS = ("GetMetrics", "IsActive")
REQUEST_TIMEOUT = 5.0
#: How long to wait for the server to exit after SIGTERM before killing its process group.
EXIT_TIMEOUT = 60.0
MIB = 1024.0


# --------------------------------------------------------------------------- ScaledObjects


def series_query(index: int) -> tuple[str, str]:
    """(metric, PromQL) of trigger ``index``: one backfilled series at its own offset (one series result)."""
    metric = NAB_CPU if index % 4 == 3 else WC98
    return metric, (f"{metric} offset {index}m" if index else metric)


def scaled_objects(series: int, thresholds: dict[str, float]) -> list[pb.ScaledObjectRef]:
    refs = []
    for i in range(series):
        metric, promql = series_query(i)
        threshold = thresholds[metric]
        meta = {
            "scalerAddress": "helios-scaler.helios-system.svc.cluster.local:6000",
            "query": promql,
            "threshold": f"{threshold:.6g}",
            "activationThreshold": f"{threshold * 15:.6g}",
            "leadTime": "5m",
            "historyTimeWindow": "1d",
            "model": "seasonal_naive",
        }
        refs.append(pb.ScaledObjectRef(name=f"so-{i:04d}", namespace=f"soak-{i % NAMESPACES}", scalerMetadata=meta))
    return refs


def thresholds_per_metric() -> dict[str, float]:
    """Each backfilled metric's capacity per pod (p99 / 30), the rule every benchmark uses."""
    end = datetime.now(UTC)
    return {
        WC98: capacity_per_pod(wc98_series(end)["y"].to_numpy()),
        NAB_CPU: capacity_per_pod(nab_cpu_series(end)["y"].to_numpy()),
    }


# --------------------------------------------------------------------------- the server process


def _proc_status(pid: int) -> dict[str, int]:
    """VmRSS (kB) and Threads of ``pid`` from /proc/<pid>/status ({} when it is gone)."""
    figures: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "Threads"):
                figures[key] = int(value.split()[0])
    return figures


def _open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (the forkserver, the training workers, the resource tracker)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class Helios:
    """``helios-scaler serve`` in its own process group on free loopback ports; always stopped."""

    def __init__(self, prometheus_url: str, retrain_interval: str, logdir: Path, src: Path | None = None) -> None:
        self.log = logdir / "helios.log"
        self.ports = {"grpc_port": free_port(), "http_port": free_port()}
        env = dict(os.environ)
        if src is not None:  # another checkout's code (e.g. `git archive HEAD`), run by this venv
            env["PYTHONPATH"] = str(src)
        command = [
            *([sys.executable, "-m", "helios_scaler"] if src is not None else [str(HELIOS)]),
            "serve",
            "--prometheus-url",
            prometheus_url,
            "--bind-address",
            "127.0.0.1",
            "--grpc-port",
            str(self.ports["grpc_port"]),
            "--http-port",
            str(self.ports["http_port"]),
            "--retrain-interval",
            retrain_interval,
            "--log-level",
            "WARNING",
            "--log-format",
            "json",
        ]
        self.command = command
        with self.log.open("wb") as log:
            # Its own session: a Ctrl-C here does not reach it (we stop it), and its group holds the workers.
            self.proc = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=env,
            )
        self._wait_healthy(60.0)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"helios exited with {self.proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(OSError):
                url = f"http://127.0.0.1:{self.ports['http_port']}/healthz"
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status == 200:
                        return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"helios did not answer /healthz within {timeout:g}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"

    def log_summary(self, distinct: int = 15) -> dict[str, Any]:
        """Log lines by level and the first distinct messages (numbers masked), from the JSON log."""
        levels: Counter[str] = Counter()
        messages: Counter[str] = Counter()
        with contextlib.suppress(OSError):
            for line in self.log.read_text(errors="replace").splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    levels["non-json"] += 1
                    messages[line[:200]] += 1
                    continue
                levels[entry.get("level", "?")] += 1
                masked = re.sub(r"\d+(\.\d+)?", "N", str(entry.get("message", "")))[:300]
                messages[f"{entry.get('level')} {entry.get('logger')}: {masked}"] += 1
        return {"lines_by_level": dict(levels), "messages": dict(messages.most_common(distinct))}

    def stop(self) -> None:
        """SIGTERM, then SIGKILL the whole process group (workers included) if anything is left."""
        terminate(self.proc)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)


def rpc_counts(http_port: int) -> dict[str, int]:
    """The server's own ``helios_rpc_requests_total`` by ``method/code``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    counts: dict[str, int] = {}
    for match in re.finditer(r"^helios_rpc_requests_total\{([^}]*)\} ([0-9.e+]+)$", text, re.M):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
        counts[f"{labels.get('method')}/{labels.get('code')}"] = int(float(match.group(2)))
    return counts


# --------------------------------------------------------------------------- client side


@dataclass
class MethodStats:
    latencies: list[float] = field(default_factory=list)
    codes: Counter[str] = field(default_factory=Counter)
    lags: list[float] = field(default_factory=list)
    bad_answers: int = 0
    active: int = 0

    def figures(self) -> dict[str, Any]:
        requests = sum(self.codes.values())
        errors = {code: n for code, n in self.codes.items() if code != "OK"}
        return {
            "requests": requests,
            "ok": self.codes.get("OK", 0),
            "errors": errors,
            "error_count": sum(errors.values()),
            "bad_answers": self.bad_answers,
            "active_true": self.active,
            "send_lag_p99_ms": float(np.percentile(self.lags, 99) * 1e3) if self.lags else float("nan"),
            **_latency_figures(self.latencies),
        }


@dataclass
class Window:
    """Requests scheduled within one sampling window (all methods)."""

    latencies: list[float] = field(default_factory=list)
    errors: int = 0


@dataclass
class StreamRecord:
    opened: bool = False
    messages: int = 0
    last: bool | None = None
    code: str | None = None
    ended_at: float | None = None


class Soak:
    """Client, streams, sampler and the shutdown of one soak run (one event loop)."""

    def __init__(self, helios: Helios, refs: list[pb.ScaledObjectRef], args: argparse.Namespace) -> None:
        self.helios = helios
        self.refs = refs
        self.args = args
        self.origin = time.perf_counter()
        self.phase = "startup"
        self.windows: dict[int, Window] = {}
        self.samples: list[dict[str, Any]] = []
        self.streams = [StreamRecord() for _ in range(args.streams)]
        self.metric_names: list[str] = []

    # -- helpers

    def now(self) -> float:
        return time.perf_counter() - self.origin

    def _window(self, scheduled: float) -> Window:
        return self.windows.setdefault(int((scheduled - self.origin) // self.args.sample_every), Window())

    def log(self, message: str) -> None:
        print(f"[{self.now():7.1f}s] {message}", file=sys.stderr, flush=True)

    # -- registration and warm-up

    async def register(self, stub: pb_grpc.ExternalScalerStub) -> dict[str, int]:
        errors: Counter[str] = Counter()
        self.metric_names = [""] * len(self.refs)
        for start in range(0, len(self.refs), 100):
            batch = range(start, min(start + 100, len(self.refs)))
            calls = [stub.GetMetricSpec(self.refs[i], timeout=10) for i in batch]
            for i, outcome in zip(batch, await asyncio.gather(*calls, return_exceptions=True), strict=True):
                if isinstance(outcome, grpc.aio.AioRpcError):
                    errors[outcome.code().name] += 1
                elif isinstance(outcome, BaseException):
                    raise outcome
                else:
                    self.metric_names[i] = outcome.metricSpecs[0].metricName
        return dict(errors)

    # -- streams

    async def follow(self, stub: pb_grpc.ExternalScalerStub, k: int) -> None:
        record = self.streams[k]
        call = stub.StreamIsActive(self.refs[k % len(self.refs)])
        record.opened = True
        try:
            async for message in call:
                record.messages += 1
                record.last = message.result
            record.code = "OK"
        except grpc.aio.AioRpcError as exc:
            record.code = exc.code().name
        except asyncio.CancelledError:
            record.code = "NOT_ENDED"
            call.cancel()
            raise
        finally:
            record.ended_at = self.now()
            if self.phase != "shutdown" and record.code != "NOT_ENDED":
                self.log(f"stream {k} ended early: {record.code}")

    def streams_open(self) -> int:
        return sum(1 for s in self.streams if s.opened and s.code is None)

    # -- open-loop polling

    async def _one(
        self, stats: dict[str, MethodStats], method: str, stub: pb_grpc.ExternalScalerStub, i: int, scheduled: float
    ) -> None:
        record = stats[method]
        window = self._window(scheduled)
        record.lags.append(time.perf_counter() - scheduled)
        ref = self.refs[i]
        try:
            if method == "GetMetrics":
                request = pb.GetMetricsRequest(scaledObjectRef=ref, metricName=self.metric_names[i])
                response = await stub.GetMetrics(request, timeout=REQUEST_TIMEOUT)
                values = response.metricValues
                if (
                    len(values) != 1
                    or values[0].metricName != self.metric_names[i]
                    or not math.isfinite(values[0].metricValueFloat)
                    or values[0].metricValueFloat < 0
                ):
                    record.bad_answers += 1
            else:
                answer = await stub.IsActive(ref, timeout=REQUEST_TIMEOUT)
                record.active += int(answer.result)
        except grpc.aio.AioRpcError as exc:
            record.codes[exc.code().name] += 1
            window.errors += 1
            return
        latency = time.perf_counter() - scheduled
        record.codes["OK"] += 1
        record.latencies.append(latency)
        window.latencies.append(latency)

    async def poll(
        self,
        stubs: list[pb_grpc.ExternalScalerStub],
        rate: float,
        duration: float | None,
        stop: asyncio.Event | None = None,
    ) -> dict[str, MethodStats]:
        """Each tick polls one ScaledObject with GetMetrics and IsActive; ``rate`` ticks/s, open loop."""
        stats = {method: MethodStats() for method in METHODS}
        tasks: dict[asyncio.Task[None], str] = {}
        total = math.inf if duration is None else int(rate * duration)
        t0 = time.perf_counter()
        sent = 0
        while sent < total and not (stop is not None and stop.is_set()):
            due = min(total, int((time.perf_counter() - t0) * rate) + 1)
            while sent < due:
                scheduled = t0 + sent / rate
                for method in METHODS:
                    stub = stubs[sent % len(stubs)]
                    task = asyncio.create_task(self._one(stats, method, stub, sent % len(self.refs), scheduled))
                    tasks[task] = method
                    task.add_done_callback(tasks.pop)
                sent += 1
            await asyncio.sleep(max(0.0, t0 + sent / rate - time.perf_counter()))
        if tasks:
            await asyncio.wait(tasks, timeout=REQUEST_TIMEOUT + 5)
        for task, method in list(tasks.items()):  # never answered, not even by a deadline: count, then drop
            stats[method].codes["NO_ANSWER"] += 1
            task.cancel()
        return stats

    # -- sampling

    def sample(self) -> dict[str, Any]:
        pid = self.helios.pid
        server = _proc_status(pid)
        kids = descendants(pid)
        kid_status = [_proc_status(k) for k in kids]
        window = self.windows.get(int(self.now() // self.args.sample_every) - 1)
        return {
            "t_s": round(self.now(), 1),
            "phase": self.phase,
            "server_rss_kb": server.get("VmRSS"),
            "server_threads": server.get("Threads"),
            "server_fds": _open_fds(pid),
            "server_cpu_s": proc_cpu_seconds(pid) if server else None,
            "children": len(kids),
            "children_rss_kb": sum(s.get("VmRSS", 0) for s in kid_status),
            "children_fds": sum(_open_fds(k) for k in kids),
            "children_cpu_s": sum(_cpu_or_zero(k) for k in kids),
            "streams_open": self.streams_open(),
            "prev_window_requests": (len(window.latencies) + window.errors) if window else 0,
            "prev_window_errors": window.errors if window else 0,
            "prev_window_p99_ms": (
                float(np.percentile(window.latencies, 99) * 1e3) if window and window.latencies else None
            ),
            "loadavg_1m": os.getloadavg()[0],
        }

    async def sampler(self) -> None:
        k = 1
        while self.helios.proc.poll() is None:
            await asyncio.sleep(max(0.0, k * self.args.sample_every - self.now()))
            k += 1
            if self.helios.proc.poll() is not None:
                break
            row = self.sample()
            if self.phase not in ("shutdown",):
                try:
                    reasons = await asyncio.to_thread(served_reasons, self.helios.ports["http_port"])
                    row["served_reasons"] = dict(reasons)
                except OSError as exc:
                    row["served_reasons"] = {"scrape_error": str(exc)}
            self.samples.append(row)
            if self.phase != "shutdown":
                self.log(
                    f"{self.phase:9} rss {_mib(row['server_rss_kb'])} MiB + workers {_mib(row['children_rss_kb'])} "
                    f"MiB ({row['children']})  fds {row['server_fds']}  streams {row['streams_open']}  "
                    f"window p99 {_fmt(row['prev_window_p99_ms'] or float('nan'))} ms "
                    f"errors {row['prev_window_errors']}  load {row['loadavg_1m']:.2f}"
                )

    # -- shutdown

    async def shutdown(self, stubs: list[pb_grpc.ExternalScalerStub], rate: float) -> dict[str, Any]:
        """SIGTERM while KEDA-rate polling goes on; time the exit; how streams and polls ended."""
        self.phase = "shutdown"
        pid = self.helios.pid
        before = descendants(pid)
        stop = asyncio.Event()
        polling = asyncio.create_task(self.poll(stubs, rate, None, stop))
        await asyncio.sleep(2.0)
        sent_at = self.now()
        self.helios.proc.send_signal(signal.SIGTERM)
        try:
            code: int | None = await asyncio.to_thread(self.helios.proc.wait, EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            code = None
        exit_seconds = self.now() - sent_at
        if code is None:  # hung: end the server alone (its group is killed at cleanup) to see what outlives it
            stuck = {"threads": _proc_status(pid).get("Threads"), "descendants": len(descendants(pid))}
            self.helios.proc.kill()
            await asyncio.to_thread(self.helios.proc.wait, 10)
        survivors = [k for k in before if _alive(k)]
        await asyncio.sleep(1.0)  # polls meet a closed port, as KEDA would until the new pod is up
        stop.set()
        stats = await polling
        ended = [s for s in self.streams if s.code is not None]
        return {
            "exit_seconds": exit_seconds,
            "exit_code": code,
            "killed_after_timeout": code is None,
            "when_killed": stuck if code is None else None,
            "descendants_before": len(before),
            "descendants_alive_after_exit": len(survivors),
            "streams_open_at_sigterm": sum(1 for s in self.streams if s.ended_at is None or s.ended_at >= sent_at),
            "stream_end_codes": dict(Counter(s.code or "NOT_ENDED" for s in self.streams)),
            "stream_end_after_sigterm_s": {
                "min": min((s.ended_at - sent_at for s in ended if s.ended_at is not None), default=float("nan")),
                "max": max((s.ended_at - sent_at for s in ended if s.ended_at is not None), default=float("nan")),
            },
            "polls_during_shutdown": {m: s.figures() for m, s in stats.items()},
        }

    # -- the run

    async def run(self) -> dict[str, Any]:
        args = self.args
        chans = _channels(self.helios.ports["grpc_port"], args.channels)
        stubs = [pb_grpc.ExternalScalerStub(c) for c in chans]
        for chan in chans:
            await asyncio.wait_for(chan.channel_ready(), 10)
        sampler = asyncio.create_task(self.sampler())
        followers: list[asyncio.Task[None]] = []
        try:
            self.phase = "warmup"
            registration_errors = await self.register(stubs[0])
            if registration_errors:
                raise RuntimeError(f"GetMetricSpec failed: {registration_errors}")
            warmup_s = await asyncio.to_thread(
                _wait_for_forecasts, self.helios, len(self.refs), args.warmup_timeout, self.log
            )
            self.log(f"all {len(self.refs)} triggers served from a forecast after {warmup_s:.1f}s")
            followers = [asyncio.create_task(self.follow(stubs[k % len(stubs)], k)) for k in range(args.streams)]
            await asyncio.sleep(2.0)
            streams_with_answer = sum(1 for s in self.streams if s.messages)
            phases: list[dict[str, Any]] = []
            base_rate = len(self.refs) / args.poll_interval
            for name, rate in (("keda", base_rate), (f"keda_x{args.multiplier:g}", base_rate * args.multiplier)):
                self.phase = name
                started = self.now()
                cpu = CpuWindow(self.helios.pid)
                cpu.start()
                children_cpu0 = sum(_cpu_or_zero(k) for k in descendants(self.helios.pid))
                self.log(f"phase {name}: {rate:.1f} polls/s (GetMetrics + IsActive each) for {args.phase_seconds:g}s")
                stats = await self.poll(stubs, rate, args.phase_seconds)
                requests = sum(sum(s.codes.values()) for s in stats.values())
                cpu.stop(requests)
                wall = self.now() - started
                children_cpu = sum(_cpu_or_zero(k) for k in descendants(self.helios.pid)) - children_cpu0
                phases.append(
                    {
                        "phase": name,
                        "polls_per_s": rate,
                        "started_s": started,
                        "wall_s": wall,
                        "methods": {m: s.figures() for m, s in stats.items()},
                        "cpu": {**cpu.figures, "workers_cpu_cores": children_cpu / wall},
                        "streams_open_at_end": self.streams_open(),
                    }
                )
                self.log(
                    f"phase {name} done: "
                    + "; ".join(
                        f"{m} {f['requests']} req, errors {f['errors'] or 0}, p50 {f['p50_ms']:.2f} "
                        f"p99 {f['p99_ms']:.2f} max {f['max_ms']:.1f} ms"
                        for m, f in phases[-1]["methods"].items()
                    )
                )
            last_sample = self.sample()
            served = dict(await asyncio.to_thread(served_reasons, self.helios.ports["http_port"]))
            server_rpc_counts = await asyncio.to_thread(rpc_counts, self.helios.ports["http_port"])
            shutdown = await self.shutdown(stubs, base_rate)
            await asyncio.wait(followers, timeout=10)
        finally:
            for task in [*followers, sampler]:
                task.cancel()
            await asyncio.gather(*followers, sampler, return_exceptions=True)
            for chan in chans:
                await chan.close()
        return {
            "warmup_seconds": warmup_s,
            "streams_with_first_answer_2s_after_open": streams_with_answer,
            "stream_messages": {
                "total": sum(s.messages for s in self.streams),
                "max_per_stream": max((s.messages for s in self.streams), default=0),
            },
            "phases": phases,
            "pre_shutdown_sample": last_sample,
            "served_reasons_before_shutdown": served,
            "server_rpc_counts": server_rpc_counts,
            "shutdown": shutdown,
            "samples": self.samples,
        }


def _cpu_or_zero(pid: int) -> float:
    try:
        return proc_cpu_seconds(pid)
    except OSError:
        return 0.0


def _mib(kb: int | None) -> str:
    return "n/a" if kb is None else f"{kb / MIB:.1f}"


# --------------------------------------------------------------------------- report


def _range(rows: list[dict[str, Any]], key: str, scale: float = 1.0) -> dict[str, float | None]:
    values = [row[key] / scale for row in rows if row.get(key) is not None]
    if not values:
        return {"min": None, "max": None, "first": None, "last": None}
    return {"min": min(values), "max": max(values), "first": values[0], "last": values[-1]}


def resources_by_phase(samples: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for phase in dict.fromkeys(row["phase"] for row in samples):
        rows = [row for row in samples if row["phase"] == phase]
        out[phase] = {
            "samples": len(rows),
            "server_rss_mib": _range(rows, "server_rss_kb", MIB),
            "children_rss_mib": _range(rows, "children_rss_kb", MIB),
            "children": _range(rows, "children"),
            "server_fds": _range(rows, "server_fds"),
            "children_fds": _range(rows, "children_fds"),
            "server_threads": _range(rows, "server_threads"),
            "streams_open": _range(rows, "streams_open"),
        }
    return out


def per_minute(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The last sample of every minute, with the worst window p99 and the errors of that minute."""
    minutes: dict[int, list[dict[str, Any]]] = {}
    for row in samples:
        minutes.setdefault(int(row["t_s"] // 60), []).append(row)
    out = []
    for minute, rows in sorted(minutes.items()):
        last = rows[-1]
        p99s = [r["prev_window_p99_ms"] for r in rows if r.get("prev_window_p99_ms") is not None]
        out.append(
            {
                "minute": minute + 1,
                "phase": last["phase"],
                "server_rss_mib": (last["server_rss_kb"] or 0) / MIB,
                "children_rss_mib": last["children_rss_kb"] / MIB,
                "children": last["children"],
                "server_fds": last["server_fds"],
                "server_threads": last["server_threads"],
                "streams_open": last["streams_open"],
                "requests": sum(r["prev_window_requests"] for r in rows),
                "errors": sum(r["prev_window_errors"] for r in rows),
                "worst_window_p99_ms": max(p99s) if p99s else None,
                "loadavg_1m": last["loadavg_1m"],
            }
        )
    return out


def _code(state: dict[str, Any]) -> str:
    if "src" in state:
        return f"`{state['src']}`"
    if not state["src_files_changed"]:
        return f"commit {state['commit']}, no local changes under src/"
    return (
        f"commit {state['commit']} plus uncommitted changes to {state['src_files_changed']} files under src/ "
        f"(diff sha1 {state['src_diff_sha1']}; other work was in progress in the tree)"
    )


def _codes(errors: dict[str, int]) -> str:
    return ", ".join(f"{code} {n}" for code, n in sorted(errors.items())) or "0"


def _span(r: dict[str, float | None], digits: int = 1) -> str:
    if r["min"] is None:
        return "n/a"
    return f"{r['min']:.{digits}f} to {r['max']:.{digits}f} (last {r['last']:.{digits}f})"


def markdown(result: dict[str, Any]) -> str:
    config, facts, soak = result["config"], result["machine"], result["soak"]
    down = soak["shutdown"]
    lines = [
        "# Soak: helios-scaler serve against a real Prometheus",
        "",
        f"`{config['command']}` — {facts['date']}, commit {facts['git_commit']}, {facts['cpu_count']} CPUs "
        f"({facts['cpu_model']}), Python {facts['python']}, grpcio {facts['grpcio']}, {result['prometheus_version']}.",
        f"Load average at start {', '.join(f'{v:.2f}' for v in facts['loadavg_at_start'])}; at end "
        f"{', '.join(f'{v:.2f}' for v in result['loadavg_at_end'])} (a shared machine: other work ran too).",
        f"Server code: {_code(result['server_code'])}.",
        "",
        f"{config['series']} ScaledObjects in {NAMESPACES} namespaces, each its own PromQL returning one backfilled "
        f"real series (WorldCup98 / NAB CPU at its own offset), `model: seasonal_naive`, `historyTimeWindow: 1d`; "
        f"{config['streams']} `StreamIsActive` streams open throughout; {config['channels']} client connections. "
        f"Server: `helios-scaler serve` defaults except `--retrain-interval {config['retrain_interval']}`. "
        f"Every trigger served from a forecast {soak['warmup_seconds']:.1f} s after registration; "
        f"{soak['streams_with_first_answer_2s_after_open']}/{config['streams']} streams had their first answer "
        f"within 2 s. Latency: open loop, from the scheduled send time; deadline {REQUEST_TIMEOUT:g} s.",
        "",
        "## Requests per phase",
        "",
        "| phase | method | req/s | requests | errors by code | bad answers | p50 ms | p99 ms | max ms "
        "| client send lag p99 ms |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for phase in soak["phases"]:
        for method, f in phase["methods"].items():
            lines.append(
                f"| {phase['phase']} ({phase['wall_s'] / 60:.1f} min) | {method} | {phase['polls_per_s']:.1f} "
                f"| {f['requests']:,} | {_codes(f['errors'])} | {f['bad_answers']} | {_fmt(f['p50_ms'])} "
                f"| {_fmt(f['p99_ms'])} | {_fmt(f['max_ms'])} | {_fmt(f['send_lag_p99_ms'])} |"
            )
    lines += [
        "",
        "| phase | server CPU (cores) | workers CPU (cores) | client CPU (cores) | machine busy (cores) "
        "| server CPU µs/request | streams open at end |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for phase in soak["phases"]:
        cpu = phase["cpu"]
        lines.append(
            f"| {phase['phase']} | {cpu['server_cpu_cores']:.3f} | {cpu['workers_cpu_cores']:.3f} "
            f"| {cpu['client_cpu_cores']:.3f} | {cpu['machine_busy_cores']:.2f} "
            f"| {_fmt(cpu['server_cpu_us_per_request'])} | {phase['streams_open_at_end']} |"
        )
    lines += [
        "",
        f"## Resources (sampled every {config['sample_every']:g} s; min to max, last)",
        "",
        "| phase | samples | server RSS MiB | workers RSS MiB | workers | server FDs | workers FDs "
        "| server threads | streams open |",
        "|---|---:|---|---|---|---|---|---|---|",
    ]
    for phase, r in result["resources_by_phase"].items():
        lines.append(
            f"| {phase} | {r['samples']} | {_span(r['server_rss_mib'])} | {_span(r['children_rss_mib'])} "
            f"| {_span(r['children'], 0)} | {_span(r['server_fds'], 0)} | {_span(r['children_fds'], 0)} "
            f"| {_span(r['server_threads'], 0)} | {_span(r['streams_open'], 0)} |"
        )
    stream_end = down["stream_end_after_sigterm_s"]
    polls = down["polls_during_shutdown"]
    lines += [
        "",
        "## SIGTERM",
        "",
        "| figure | value |",
        "|---|---|",
        f"| SIGTERM → process exit | {down['exit_seconds']:.2f} s (exit code {down['exit_code']}"
        + (
            f"; still running after {EXIT_TIMEOUT:g} s with {down['when_killed']['threads']} threads, "
            "killed with SIGKILL"
            if down["killed_after_timeout"]
            else ""
        )
        + ") |",
        f"| streams open at SIGTERM | {down['streams_open_at_sigterm']} |",
        f"| how streams ended | {_codes(down['stream_end_codes'])} |",
        f"| stream end after SIGTERM | {_fmt(stream_end['min'])} to {_fmt(stream_end['max'])} s |",
        f"| descendants before / alive after exit | {down['descendants_before']} / "
        f"{down['descendants_alive_after_exit']} |",
        "| KEDA-rate polls from 2 s before SIGTERM to 1 s after exit | "
        + "; ".join(f"{m}: {f['ok']} OK, errors {_codes(f['errors'])}" for m, f in polls.items())
        + " |",
        "",
        f"Served reasons before SIGTERM: {soak['served_reasons_before_shutdown']}. "
        f"Server log: {result['server_log']['lines_by_level'] or 'no lines'} (WARNING and above).",
        "",
        "## Time series (last sample of each minute)",
        "",
        "| min | phase | server RSS MiB | workers RSS MiB (n) | server FDs | threads | streams open "
        "| requests | errors | worst 10 s p99 ms | load 1m |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["per_minute"]:
        lines.append(
            f"| {row['minute']} | {row['phase']} | {row['server_rss_mib']:.1f} | {row['children_rss_mib']:.1f} "
            f"({row['children']}) | {row['server_fds']} | {row['server_threads']} | {row['streams_open']} "
            f"| {row['requests']:,} | {row['errors']} | {_fmt(row['worst_window_p99_ms'] or float('nan'))} "
            f"| {row['loadavg_1m']:.2f} |"
        )
    if result["server_log"]["messages"]:
        lines += ["", "Server log messages (numbers masked, count):", ""]
        lines += [f"- {count} x `{message}`" for message, count in result["server_log"]["messages"].items()]
    lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------- orchestration


def prometheus_version() -> str:
    done = subprocess.run(["prometheus", "--version"], capture_output=True, text=True, check=False)
    return (done.stdout or done.stderr).splitlines()[0] if (done.stdout or done.stderr) else "prometheus ?"


@contextlib.contextmanager
def helios_server(prometheus_url: str, retrain_interval: str, logdir: Path, src: Path | None) -> Iterator[Helios]:
    server = Helios(prometheus_url, retrain_interval, logdir, src)
    try:
        yield server
    finally:
        server.stop()


def source_state() -> dict[str, Any]:
    """Which server code ran: the commit, and the uncommitted changes under src/ (read-only git)."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], capture_output=True, text=True, cwd=REPO, check=False)
        return done.stdout

    diff = git("diff", "HEAD", "--", "src")
    return {
        "commit": git("rev-parse", "--short", "HEAD").strip(),
        "src_files_changed": len([line for line in git("status", "--porcelain", "--", "src").splitlines() if line]),
        "src_diff_sha1": hashlib.sha1(diff.encode()).hexdigest()[:12] if diff else None,
    }


def orchestrate(args: argparse.Namespace, log: Callable[[str], None]) -> int:
    if args.quick:
        args.series, args.phase_seconds, args.retrain_interval = 100, 60.0, "1m"
    missing = missing_binaries()
    if missing:
        raise SystemExit(f"{' and '.join(missing)} not found on PATH (make prometheus)")
    config = {
        "command": "python benchmarks/bench_soak.py " + " ".join(sys.argv[1:]),
        **{k: v for k, v in vars(args).items() if k != "quick"},
        "quick": args.quick,
    }
    facts = machine_facts(None)
    server_code = {"src": str(args.server_src)} if args.server_src else source_state()
    jiffies0 = machine_jiffies()
    refs = scaled_objects(args.series, thresholds_per_metric())
    # Samples reach past the soak's end, so the series stay fresh throughout (see the module docstring).
    series_end = datetime.now(UTC) + timedelta(minutes=args.future)
    log(f"backfilling and starting Prometheus (series end {series_end:%H:%M} UTC)")
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as logdir, run_prometheus(series_end) as prom:
        log(f"  Prometheus at {prom.url} ready in {prom.startup_seconds:.1f}s")
        with helios_server(prom.url, args.retrain_interval, Path(logdir), args.server_src) as helios:
            log(f"  helios pid {helios.pid}, ports {helios.ports}")
            soak = asyncio.run(Soak(helios, refs, args).run())
            server_log = helios.log_summary()
    busy1, total1 = machine_jiffies()
    result: dict[str, Any] = {
        "config": config,
        "machine": facts,
        "machine_busy_cores_whole_run": (busy1 - jiffies0[0]) / max(1, total1 - jiffies0[1]) * (os.cpu_count() or 1),
        "loadavg_at_end": os.getloadavg(),
        "prometheus_version": prometheus_version(),
        "server_command": helios.command,
        "server_code": server_code,
        "server_log": server_log,
        "resources_by_phase": resources_by_phase(soak["samples"]),
        "per_minute": per_minute(soak["samples"]),
        "soak": soak,
    }
    text = markdown(result)
    print(text)
    if not args.no_write:
        write_results(RESULTS, "soak", text, result, log)
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="100 ScaledObjects, 1 minute per phase (~3 min)")
    parser.add_argument("--series", type=int, default=1000, help="ScaledObjects, each its own query (1000)")
    parser.add_argument("--streams", type=int, default=200, help="StreamIsActive streams held open (200)")
    parser.add_argument("--phase-seconds", type=float, default=600.0, help="seconds per phase (600)")
    parser.add_argument("--poll-interval", type=float, default=30.0, help="KEDA pollingInterval, seconds (30)")
    parser.add_argument("--multiplier", type=float, default=10.0, help="rate of the second phase, x KEDA's (10)")
    parser.add_argument("--channels", type=int, default=4, help="client connections (4)")
    parser.add_argument("--sample-every", type=float, default=10.0, help="seconds between resource samples (10)")
    parser.add_argument("--retrain-interval", default="5m", help="server --retrain-interval (5m; 1m with --quick)")
    parser.add_argument("--warmup-timeout", type=float, default=600.0, help="seconds to wait for every forecast")
    parser.add_argument(
        "--future", type=float, default=90.0, help="minutes past now the backfilled series end (must outlast the run)"
    )
    parser.add_argument(
        "--server-src", type=Path, help="run the server from this src/ directory (default: the installed entry point)"
    )
    parser.add_argument("--no-write", action="store_true", help="print only; leave benchmarks/results alone")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks: stop every process

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    return orchestrate(args, log)


if __name__ == "__main__":
    sys.exit(main())
