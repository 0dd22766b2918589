"""PrometheusSource against a real Prometheus loaded with real traces, and against stub servers."""

from __future__ import annotations

import base64
import math
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal
from prom import (
    NAN_EVERY,
    PrometheusFixture,
    RecordingServer,
    SilentServer,
    nab_cpu_series,
    wc98_series,
    with_nan_series,
)

from helios_scaler.config import Settings
from helios_scaler.errors import ConfigError, MultipleSeries, NoData, QueryError, SourceUnavailable
from helios_scaler.features.schema import DS, Y, empty_series
from helios_scaler.source.prometheus import MAX_POINTS_PER_QUERY, PrometheusSource, _chunks

pytestmark = pytest.mark.integration

MINUTE = timedelta(minutes=1)

#: The time of the one sample RecordingServer answers with.
RECORDED_SAMPLE_TIME = datetime.fromtimestamp(1_700_000_000, UTC)


@pytest.fixture(scope="module")
def source(prometheus: PrometheusFixture) -> PrometheusSource:
    return PrometheusSource(prometheus.url + "/")


def test_name_is_the_normalized_url(prometheus: PrometheusFixture, source: PrometheusSource) -> None:
    assert source.name == prometheus.url
    assert PrometheusSource("HTTP://LocalHost:9090//").name == "http://localhost:9090"


def test_fetch_returns_the_backfilled_worldcup98_trace(prometheus: PrometheusFixture, source: PrometheusSource) -> None:
    start = prometheus.end - timedelta(days=1)
    frame = source.fetch(prometheus.wc98, start, prometheus.end, MINUTE)

    assert frame.schema == empty_series().schema
    trace = wc98_series(prometheus.end).filter(pl.col(DS) >= start)
    assert frame.height == 24 * 60 + 1
    assert_frame_equal(frame, trace)


def test_a_window_over_11000_points_is_fetched_in_chunks_without_duplicates(
    prometheus: PrometheusFixture, source: PrometheusSource
) -> None:
    trace = wc98_series(prometheus.end)
    assert trace.height == 8 * 24 * 60 > MAX_POINTS_PER_QUERY
    start = trace[DS][0]

    frame = source.fetch(prometheus.wc98, start, prometheus.end, MINUTE)

    assert frame.height == trace.height
    assert frame[DS].is_unique().all()
    assert frame[DS].is_sorted()
    assert_frame_equal(frame, trace)


def test_a_five_minute_series_comes_back_at_five_minute_steps(
    prometheus: PrometheusFixture, source: PrometheusSource
) -> None:
    trace = nab_cpu_series(prometheus.end)
    frame = source.fetch(prometheus.nab_cpu, trace[DS][0], prometheus.end, timedelta(minutes=5))
    assert_frame_equal(frame, trace)


def test_a_coarser_step_takes_the_sample_at_each_step_time(
    prometheus: PrometheusFixture, source: PrometheusSource
) -> None:
    trace = wc98_series(prometheus.end)
    frame = source.fetch(prometheus.wc98, trace[DS][0], prometheus.end, timedelta(hours=1))
    assert_frame_equal(frame, trace.gather_every(60))


@pytest.mark.parametrize(("start_s", "end_s", "step_s"), [(0, 10_999, 1), (0, 11_000, 1), (7, 50_000, 3), (0, 0, 60)])
def test_chunks_tile_the_range_on_the_step_grid(start_s: int, end_s: int, step_s: int) -> None:
    points = [t for lo, hi in _chunks(start_s, end_s, step_s) for t in range(lo, hi + 1, step_s)]
    assert points == list(range(start_s, end_s + 1, step_s))
    assert all((hi - lo) // step_s + 1 <= MAX_POINTS_PER_QUERY for lo, hi in _chunks(start_s, end_s, step_s))


def test_bad_promql_is_a_query_error_with_prometheus_text(
    prometheus: PrometheusFixture, source: PrometheusSource
) -> None:
    with pytest.raises(QueryError) as caught:
        source.fetch("sum(helios_wc98_requests", prometheus.end - MINUTE * 10, prometheus.end, MINUTE)
    message = str(caught.value)
    assert "parse error" in message
    assert "sum(helios_wc98_requests" in message
    assert prometheus.url in message


def test_no_samples_is_no_data(prometheus: PrometheusFixture, source: PrometheusSource) -> None:
    with pytest.raises(NoData, match="helios_does_not_exist"):
        source.fetch("helios_does_not_exist", prometheus.end - MINUTE * 10, prometheus.end, MINUTE)


def test_two_series_is_multiple_series_naming_them(prometheus: PrometheusFixture, source: PrometheusSource) -> None:
    with pytest.raises(MultipleSeries) as caught:
        source.fetch(prometheus.multi, prometheus.end - timedelta(hours=1), prometheus.end, MINUTE)
    message = str(caught.value)
    assert 'helios_multi{instance="a"}' in message
    assert 'helios_multi{instance="b"}' in message
    assert "sum(" in message

    total = source.fetch(f"sum({prometheus.multi})", prometheus.end - timedelta(hours=1), prometheus.end, MINUTE)
    assert total.height == 61


def test_nan_comes_through_as_nan(prometheus: PrometheusFixture, source: PrometheusSource) -> None:
    trace = with_nan_series(prometheus.end)
    frame = source.fetch(prometheus.with_nan, trace[DS][0], prometheus.end, timedelta(minutes=5))

    assert frame[DS].to_list() == trace[DS].to_list()
    nan_positions = [i for i, value in enumerate(frame[Y]) if math.isnan(value)]
    assert nan_positions == list(range(0, trace.height, NAN_EVERY))
    assert_frame_equal(frame, trace)  # NaN == NaN in polars' comparison


def test_infinities_come_through(prometheus: PrometheusFixture, source: PrometheusSource) -> None:
    frame = source.fetch("vector(1) / 0", prometheus.end - MINUTE, prometheus.end, MINUTE)
    assert frame[Y].to_list() == [math.inf, math.inf]
    frame = source.fetch("-vector(1) / 0", prometheus.end - MINUTE, prometheus.end, MINUTE)
    assert frame[Y].to_list() == [-math.inf, -math.inf]


def test_dead_port_is_source_unavailable(dead_port: int) -> None:
    url = f"http://127.0.0.1:{dead_port}"
    end = datetime.now(UTC)
    started = time.monotonic()
    with pytest.raises(SourceUnavailable) as caught:
        PrometheusSource(url).fetch("up", end - MINUTE, end, MINUTE)
    assert time.monotonic() - started < 2  # no hidden retries with backoff
    assert url in str(caught.value)
    assert "'up'" in str(caught.value)


def test_silent_server_times_out_as_source_unavailable(silent_server: SilentServer) -> None:
    source = PrometheusSource(silent_server.url, timeout=timedelta(seconds=1))
    end = datetime.now(UTC)
    started = time.monotonic()
    with pytest.raises(SourceUnavailable, match="no answer within 1s"):
        source.fetch("up", end - timedelta(days=10), end, MINUTE)  # two chunks: one deadline
    elapsed = time.monotonic() - started
    assert 0.9 < elapsed < 3
    assert silent_server.accepted == 1


def test_http_5xx_is_source_unavailable_without_retries() -> None:
    payload = {"status": "error", "errorType": "unavailable", "error": "TSDB not ready"}
    server = RecordingServer(status=503, payload=payload)
    try:
        end = datetime(2023, 11, 14, 22, 20, tzinfo=UTC)
        with pytest.raises(SourceUnavailable, match="HTTP 503 unavailable: TSDB not ready"):
            PrometheusSource(server.url).fetch("up", end - MINUTE, end, MINUTE)
        assert len(server.requests) == 1
    finally:
        server.close()


def test_a_url_that_is_not_the_prometheus_api_is_source_unavailable(prometheus: PrometheusFixture) -> None:
    source = PrometheusSource(prometheus.url + "/not-prometheus")
    with pytest.raises(SourceUnavailable, match="HTTP 404"):
        source.fetch("up", prometheus.end - MINUTE, prometheus.end, MINUTE)


def test_bearer_token_file_is_sent(recording_server: RecordingServer, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    source = PrometheusSource(recording_server.url, bearer_token_file=token_file)
    end = RECORDED_SAMPLE_TIME  # the stub's one sample lies in the asked range, as Prometheus' would

    frame = source.fetch("up", end - MINUTE, end, MINUTE)

    assert frame[Y].to_list() == [1.0]
    (request,) = recording_server.requests
    assert request.path.startswith("/api/v1/query_range?")
    assert request.headers["Authorization"] == "Bearer s3cret-token"
    assert "s3cret" not in repr(source)


def test_basic_auth_from_settings_is_sent(recording_server: RecordingServer, tmp_path: Path) -> None:
    password_file = tmp_path / "password"
    password_file.write_text("hunter2")
    settings = Settings(prometheus_username="helios", prometheus_password_file=password_file)
    source = PrometheusSource.from_settings(recording_server.url, settings)
    end = RECORDED_SAMPLE_TIME

    source.fetch("up", end - MINUTE, end, MINUTE)

    (request,) = recording_server.requests
    assert request.headers["Authorization"] == "Basic " + base64.b64encode(b"helios:hunter2").decode()
    assert source.timeout == settings.query_timeout


def test_unreadable_credentials_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-token"
    with pytest.raises(ConfigError, match="no-such-token"):
        PrometheusSource("http://127.0.0.1:9090", bearer_token_file=missing)
    with pytest.raises(ConfigError, match="no-such-token"):
        PrometheusSource("http://127.0.0.1:9090", username="u", password_file=missing)
    with pytest.raises(ConfigError, match="no-such-token"):
        PrometheusSource("https://127.0.0.1:9090", ca_file=missing)


@pytest.mark.parametrize("url", ["127.0.0.1:9090", "ftp://host", "http://user:pw@host:9090"])
def test_invalid_url_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError):
        PrometheusSource(url)


def test_now_uses_the_injected_clock() -> None:
    moment = datetime(2024, 1, 1, tzinfo=UTC)
    assert PrometheusSource("http://127.0.0.1:9090", clock=lambda: moment).now() == moment
    assert PrometheusSource("http://127.0.0.1:9090").now().tzinfo is not None
