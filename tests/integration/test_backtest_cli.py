"""`helios-scaler backtest` as a user runs it: a real process on real traces (CSV and a real Prometheus)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from prom import PrometheusFixture, nab_cpu_series
from traces import TRACES, trace_path

from helios_scaler.features.schema import DS, Y

pytestmark = [pytest.mark.integration]

BIN = Path(sys.executable).parent / "helios-scaler"
ELB_FILE = "nab/data/realAWSCloudwatch/elb_request_count_8c0756.csv"
ELB = TRACES / ELB_FILE
STRATEGIES = ("helios", "reactive", "holt_winters", "periodic_max", "oracle")
FIGURES = (
    "unserved_fraction",
    "underprovisioned_steps_fraction",
    "pod_minutes_ratio",
    "scaling_events",
    "cost_at_slo",
    "gap_closed",
)
FAST = ["--history", "3d", "--warmup", "3d", "--workers", "1", "--model", "ets"]
PNG = b"\x89PNG\r\n\x1a\n"
STEP = timedelta(minutes=5)


@dataclass(frozen=True)
class Run:
    result: subprocess.CompletedProcess[str]
    out: Path

    def steps(self) -> pl.DataFrame:
        frame = pl.read_csv(self.out / "steps.csv", infer_schema_length=None)
        return frame.with_columns(pl.col("timestamp").str.to_datetime("%Y-%m-%dT%H:%M:%S%.f%z", time_unit="us"))

    def summary(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.out / "summary.json").read_text())
        return data


def backtest(*args: str | Path, out: Path) -> Run:
    trace_path(ELB_FILE)
    env = {key: value for key, value in os.environ.items() if not key.startswith("HELIOS_")}
    result = subprocess.run(
        [str(BIN), "backtest", *map(str, args), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    return Run(result, out)


def csv_head(tmp_path: Path, rows: int, edit: dict[int, str] | None = None) -> Path:
    """The first ``rows`` data rows of the ELB trace; ``edit`` replaces whole file lines (1 = header)."""
    lines = ELB.read_text().splitlines()[: rows + 1]
    for number, text in (edit or {}).items():
        lines[number - 1] = text
    path = tmp_path / "history.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def elb_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """One full run on the ELB request-count trace (11 days at 5 min), shared by the checks below.

    Threshold 200 with a 10-minute start-up: reactive scaling can meet the SLO with headroom, so
    the reactive-to-oracle gap is defined.
    """
    out = tmp_path_factory.mktemp("backtest") / "out"
    run = backtest("--input", ELB, "--threshold", "200", "--startup", "10m", *FAST, out=out)
    assert run.result.returncode == 0, run.result.stderr[-3000:]
    return run


def test_exits_zero_and_writes_every_output(elb_run: Run) -> None:
    assert sorted(path.name for path in elb_run.out.iterdir()) == [
        "capacity.png",
        "report.md",
        "steps.csv",
        "summary.json",
        "tradeoff.png",
    ]
    assert "wrote " in elb_run.result.stdout
    assert "Traceback" not in elb_run.result.stderr


def test_steps_csv_has_one_row_per_evaluated_step(elb_run: Run) -> None:
    steps = elb_run.steps()
    expected = ["timestamp", "demand"] + [
        f"{name}_{part}" for name in STRATEGIES for part in ("value", "desired", "ready")
    ]
    assert steps.columns == expected
    summary = elb_run.summary()
    assert steps.height == summary["steps_evaluated"] > 0
    stamps = steps["timestamp"]
    assert stamps[0].isoformat() == summary["first_evaluated"]
    assert stamps[-1].isoformat() == summary["last_evaluated"]
    assert stamps.diff().drop_nulls().unique().to_list() == [STEP]  # every step of the grid, once
    # The grid starts at 2014-04-10 00:00 (samples at :04, :09 snap down to the 5-minute grid);
    # 3 days of warm-up = 864 steps only train.
    assert stamps[0] == datetime(2014, 4, 13, tzinfo=UTC)


def test_demand_is_the_trace(elb_run: Run) -> None:
    steps = elb_run.steps()
    # The live path snaps each sample down to its grid cell: 00:04 → 00:00.
    trace = pl.read_csv(ELB, schema={"timestamp": pl.String, "value": pl.Float64}).select(
        pl.col("timestamp").str.to_datetime("%Y-%m-%d %H:%M:%S", time_unit="us", time_zone="UTC").dt.truncate("5m"),
        pl.col("value"),
    )
    joined = steps.select("timestamp", "demand").join(trace, on="timestamp", how="inner")
    assert joined.height >= steps.height - 10  # all but the few filled gaps
    assert (joined["demand"] == joined["value"]).all()


def test_helios_never_serves_below_the_demand_it_saw(elb_run: Run) -> None:
    """The value acting at step t was computed after seeing step t - 1 (the timing rule every strategy
    follows), and is never below that observation."""
    steps = elb_run.steps().with_columns(pl.col("demand").shift(1).alias("seen")).slice(1)
    below = steps.filter(pl.col("helios_value") < pl.col("seen"))
    assert below.is_empty(), below.head()


def test_summary_has_every_strategy_and_figure(elb_run: Run) -> None:
    strategies = elb_run.summary()["strategies"]
    assert set(strategies) == set(STRATEGIES)
    for name in STRATEGIES:
        assert set(FIGURES) <= set(strategies[name]), name
    assert strategies["oracle"]["gap_closed"] == 1.0
    assert strategies["reactive"]["gap_closed"] == 0.0
    assert strategies["reactive"]["cost_at_slo"] > strategies["oracle"]["cost_at_slo"]


def test_report_and_plots(elb_run: Run) -> None:
    report = (elb_run.out / "report.md").read_text()
    assert report.startswith("# Backtest: elb_request_count_8c0756.csv")
    for label in ("helios", "reactive (KEDA prometheus)", "oracle (knows the future)", "capacity.png", "tradeoff.png"):
        assert label in report
    for name in ("capacity.png", "tradeoff.png"):
        data = (elb_run.out / name).read_bytes()
        assert data[:8] == PNG and len(data) > 10_000, name


def test_non_numeric_value_exits_2_naming_the_line(tmp_path: Path) -> None:
    lines = ELB.read_text().splitlines()
    timestamp = lines[4].split(",")[0]
    path = csv_head(tmp_path, 20, {5: f"{timestamp},n/a"})
    run = backtest("--input", path, "--threshold", "200", "--startup", "10m", *FAST, out=tmp_path / "out")
    assert run.result.returncode == 2
    errors = run.result.stderr.strip().splitlines()
    assert len(errors) == 1, run.result.stderr
    assert errors[0] == f"helios-scaler backtest: {path}, line 5: value 'n/a' is not a number"
    assert not (tmp_path / "out").exists()


def test_history_too_short_for_the_warmup_exits_2(tmp_path: Path) -> None:
    # 3 days at 5 minutes = 864 warm-up points; 900 rows leave 36 to evaluate, and a 5-minute grid
    # needs at least 72 (6 hours).
    path = csv_head(tmp_path, 900)
    run = backtest("--input", path, "--threshold", "200", "--startup", "10m", *FAST, out=tmp_path / "out")
    assert run.result.returncode == 2
    errors = [line for line in run.result.stderr.splitlines() if line.startswith("helios-scaler backtest:")]
    assert len(errors) == 1, run.result.stderr
    match = re.search(r"history too short: (\d+) points .*the first 864 .*at least 72 more are needed", errors[0])
    assert match, errors[0]
    assert 900 <= int(match.group(1)) < 864 + 72
    assert "Traceback" not in run.result.stderr


def test_no_plots_writes_no_png(tmp_path: Path) -> None:
    path = csv_head(tmp_path, 864 + 150)
    out = tmp_path / "out"
    run = backtest("--input", path, "--threshold", "200", "--startup", "10m", "--no-plots", *FAST, out=out)
    assert run.result.returncode == 0, run.result.stderr[-3000:]
    assert sorted(item.name for item in out.iterdir()) == ["report.md", "steps.csv", "summary.json"]
    assert run.steps().height == run.summary()["steps_evaluated"] > 0


def test_out_that_is_a_file_exits_2_without_a_traceback(tmp_path: Path) -> None:
    path = csv_head(tmp_path, 864 + 150)
    taken = tmp_path / "taken"
    taken.write_text("not a directory\n")
    run = backtest("--input", path, "--threshold", "200", "--startup", "10m", "--no-plots", *FAST, out=taken)
    assert run.result.returncode == 2
    errors = [line for line in run.result.stderr.splitlines() if line.startswith("helios-scaler backtest:")]
    assert len(errors) == 1 and str(taken) in errors[0], run.result.stderr
    assert "Traceback" not in run.result.stderr
    assert taken.read_text() == "not a directory\n"


def test_query_against_a_real_prometheus(prometheus: PrometheusFixture, tmp_path: Path) -> None:
    start, end = prometheus.end - timedelta(days=8), prometheus.end
    run = backtest(
        "--query",
        prometheus.nab_cpu,
        "--start",
        start.isoformat(),
        "--end",
        end.isoformat(),
        "--prometheus-url",
        prometheus.url,
        "--step",
        "5m",
        "--threshold",
        "10",
        "--startup",
        "10m",
        "--no-plots",
        *FAST,
        out=tmp_path / "out",
    )
    assert run.result.returncode == 0, run.result.stderr[-3000:]
    steps = run.steps()
    # 8 days of 5-minute samples ending at `end`; 3 days of them only train.
    assert steps.height == run.summary()["steps_evaluated"] == 8 * 288 - 3 * 288
    # Samples sit at `end` - k x 5 min; the grid snaps them down to whole 5-minute cells.
    backfilled = nab_cpu_series(end).select(pl.col(DS).dt.truncate("5m").alias("timestamp"), pl.col(Y).alias("value"))
    assert steps["timestamp"][-1] == backfilled["timestamp"][-1]
    joined = steps.select("timestamp", "demand").join(backfilled, on="timestamp", how="left")
    assert joined["value"].null_count() == 0
    assert joined["demand"].to_list() == pytest.approx(joined["value"].to_list(), abs=1e-9)
