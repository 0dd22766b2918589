"""PrometheusSource against hostile servers on loopback: slow, huge, redirecting, lying, leaking."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from hostile import MALFORMED, SECRET_BODY, hostile_server

from helios_scaler.config import Settings
from helios_scaler.errors import MultipleSeries, QueryError, SourceUnavailable
from helios_scaler.features.schema import Y
from helios_scaler.source.prometheus import ANSWER_EXCERPT_CHARS, PrometheusSource
from helios_scaler.source.registry import SourceResolver

pytestmark = pytest.mark.integration

MINUTE = timedelta(minutes=1)
END = datetime(2024, 1, 1, 12, tzinfo=UTC)
START = END - 10 * MINUTE
#: Longest message an error built from an answer may be: our own text plus one excerpt.
MESSAGE_BUDGET = 2 * ANSWER_EXCERPT_CHARS + 200


def fetch(source: PrometheusSource, query: str = "up") -> pl.DataFrame:
    return source.fetch(query, START, END, MINUTE)


@pytest.fixture
def ok_url() -> Iterator[str]:
    with hostile_server("ok") as server:
        yield server.url


# --- one total deadline ----------------------------------------------------------------------


def test_a_dripping_body_is_cut_at_the_total_deadline() -> None:
    with hostile_server("drip", interval=0.5) as server:
        source = PrometheusSource(server.url, timeout=timedelta(seconds=1))
        started = time.monotonic()
        with pytest.raises(SourceUnavailable, match=r"no complete answer within 1s") as caught:
            fetch(source)
        elapsed = time.monotonic() - started
    assert 0.9 < elapsed < 2.0
    assert server.url in str(caught.value)
    assert len(server.hits) == 1


def test_dripping_headers_are_cut_at_the_total_deadline() -> None:
    with hostile_server("slow_headers", interval=0.3) as server:
        source = PrometheusSource(server.url, timeout=timedelta(seconds=1))
        started = time.monotonic()
        with pytest.raises(SourceUnavailable, match=r"no (complete )?answer within 1s"):
            fetch(source)
        assert 0.9 < time.monotonic() - started < 2.0


def test_a_dripping_tls_answer_is_cut_at_the_total_deadline() -> None:
    with hostile_server("by_query", interval=0.5, tls=True) as server:
        assert server.ca_file is not None
        source = PrometheusSource(server.url, ca_file=server.ca_file, timeout=timedelta(seconds=1))
        assert fetch(source, "ok").height == 11
        started = time.monotonic()
        with pytest.raises(SourceUnavailable, match=r"no complete answer within 1s"):
            fetch(source, "drip")
        assert 0.9 < time.monotonic() - started < 2.0


def test_the_source_still_works_after_a_cut_answer() -> None:
    with hostile_server("by_query", interval=0.5) as server:
        source = PrometheusSource(server.url, timeout=timedelta(seconds=0.6))
        with pytest.raises(SourceUnavailable, match="no complete answer"):
            fetch(source, "drip")
        assert fetch(source, "ok").height == 11


def test_a_hanging_fetch_does_not_block_others_on_the_same_source() -> None:
    with hostile_server("by_query", interval=0.5) as server:
        source = PrometheusSource(server.url, timeout=timedelta(seconds=1.5))
        failures: list[BaseException] = []

        def hang() -> None:
            try:
                fetch(source, "drip")
            except SourceUnavailable as exc:
                failures.append(exc)

        hanging = [threading.Thread(target=hang) for _ in range(4)]
        for thread in hanging:
            thread.start()
        time.sleep(0.2)  # the four are now waiting on their dripping answers
        started = time.monotonic()
        frames = [fetch(source, "ok") for _ in range(5)]
        fast = time.monotonic() - started
        for thread in hanging:
            thread.join(timeout=3)
    assert fast < 0.5
    assert all(frame.height == 11 for frame in frames)
    assert len(failures) == 4


# --- bounded memory --------------------------------------------------------------------------


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "streamed"])
def test_a_huge_answer_is_refused_by_size(chunked: bool) -> None:
    with hostile_server("huge", megabytes=64, chunked=chunked) as server:
        source = PrometheusSource(server.url, max_answer_bytes=1 << 20, timeout=timedelta(seconds=10))
        started = time.monotonic()
        with pytest.raises(SourceUnavailable) as caught:
            fetch(source)
        assert time.monotonic() - started < 1.5
    message = str(caught.value)
    assert "max_answer_bytes" in message
    assert str(1 << 20) in message
    assert "aaaa" not in message


def test_a_gzip_bomb_is_refused_by_its_inflated_size() -> None:
    with hostile_server("gzip_bomb", megabytes=64) as server:
        source = PrometheusSource(server.url, max_answer_bytes=1 << 20)
        started = time.monotonic()
        with pytest.raises(SourceUnavailable, match="max_answer_bytes"):
            fetch(source)
        assert time.monotonic() - started < 1.5


def test_max_answer_bytes_comes_from_the_settings(ok_url: str) -> None:
    settings = Settings(max_answer_bytes=100)
    source = PrometheusSource.from_settings(ok_url, settings)
    assert source.max_answer_bytes == 100
    with pytest.raises(SourceUnavailable, match=r"larger than max_answer_bytes \(100 bytes\)"):
        fetch(source)


@pytest.mark.parametrize(
    ("stamp", "shown"),
    [(1e12, "unix time 1e+12 (year ~33,658)"), ("hour", "2024-01-01T13:00:00+00:00")],
    ids=["year-33658", "an-hour-ahead"],
)
def test_a_sample_outside_the_asked_range_is_refused(stamp: object, shown: str) -> None:
    with hostile_server("future", stamp=stamp) as server, pytest.raises(SourceUnavailable) as caught:
        fetch(PrometheusSource(server.url))
    message = str(caught.value)
    assert "the answer is not Prometheus' API" in message
    assert shown in message
    assert "2024-01-01T11:50:00+00:00 to 2024-01-01T12:00:00+00:00" in message


def test_more_samples_than_the_range_has_steps_is_refused() -> None:
    with hostile_server("too_many_points") as server, pytest.raises(SourceUnavailable) as caught:
        fetch(PrometheusSource(server.url))
    assert "12 samples where the asked range has 11 steps" in str(caught.value)


def test_a_thousand_series_are_counted_and_three_shown() -> None:
    with hostile_server("many_series", count=1000) as server, pytest.raises(MultipleSeries) as caught:
        fetch(PrometheusSource(server.url))
    message = str(caught.value)
    assert "returned 1000 series" in message
    assert 'many{i="0"}' in message
    assert "and 997 more" in message
    assert len(message) < 600


def test_multiple_series_stop_the_fetch_after_the_first_chunk() -> None:
    with hostile_server("many_series", count=2) as server:
        with pytest.raises(MultipleSeries, match="returned at least 2 series"):
            PrometheusSource(server.url).fetch("up", END - timedelta(days=10), END, MINUTE)  # two chunks
        assert len(server.hits) == 1


# --- redirects -------------------------------------------------------------------------------


def test_a_redirect_is_not_followed() -> None:
    with hostile_server("redirect") as server:
        assert server.target is not None
        with pytest.raises(SourceUnavailable) as caught:
            fetch(PrometheusSource(server.url))
        assert server.target.hits == []
    message = str(caught.value)
    assert f"redirected to http://127.0.0.1:{server.target.port} — redirects are not followed" in message
    assert "allowlist" in message
    assert "/steal" not in message


def test_a_redirect_with_credentials_does_not_send_them_on(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t0ken")
    with hostile_server("redirect") as server:
        assert server.target is not None
        with pytest.raises(SourceUnavailable, match="redirected"):
            fetch(PrometheusSource(server.url, bearer_token_file=token))
        assert server.target.hits == []


# --- bad answers are typed errors with short excerpts ----------------------------------------


@pytest.mark.parametrize(("status", "error"), [(500, SourceUnavailable), (400, QueryError), (503, SourceUnavailable)])
def test_a_secret_error_body_shows_only_an_excerpt(status: int, error: type[Exception]) -> None:
    with hostile_server("secret", status=status) as server, pytest.raises(error) as caught:
        fetch(PrometheusSource(server.url))
    message = str(caught.value)
    assert "INTERNAL-SECRET" in message
    assert message.endswith("…")
    assert len(message) < MESSAGE_BUDGET
    assert message.count("s3cr3t") < ANSWER_EXCERPT_CHARS / 7
    assert len(SECRET_BODY) > 10_000


def test_a_long_prometheus_error_field_is_cut() -> None:
    body = {"status": "error", "errorType": "bad_data", "error": "parse error: " + "x\x00\n" * 5000}
    with hostile_server("answer", status=400, body=body) as server, pytest.raises(QueryError) as caught:
        fetch(PrometheusSource(server.url))
    message = str(caught.value)
    assert "parse error: x\ufffd x" in message
    assert "\x00" not in message
    assert "\n" not in message
    assert len(message) < MESSAGE_BUDGET


def test_an_html_page_is_not_prometheus() -> None:
    with hostile_server("garbage") as server, pytest.raises(SourceUnavailable) as caught:
        fetch(PrometheusSource(server.url))
    message = str(caught.value)
    assert "the answer is not Prometheus' API: not JSON: '<!DOCTYPE html> <html>" in message
    assert len(message) < MESSAGE_BUDGET


EXPECTED = {
    "not_an_object": "the answer is a list, not an object",
    "status_error": "status is 'error', not \"success\" (error: boom)",
    "status_missing": 'status is None, not "success"',
    "data_missing": "no data object",
    "data_a_list": "data is a list, not an object",
    "result_type_vector": "resultType is 'vector', not \"matrix\"",
    "result_a_string": "data.result is a string, not a list",
    "entry_a_string": "result[0] is a string, not an object",
    "metric_a_list": "result[0].metric is a list, not an object",
    "label_value_a_list": "label 'job' of result[0] is a list, not a string",
    "values_an_int": "result[0].values is a number, not a list",
    "sample_not_a_pair": 'sample 0 of result[0] is a list, not [time, "value"]',
    "time_a_string": "sample 0 of result[0] has a time that is a string",
    "time_inf": "sample 0 of result[0] is stamped inf, outside the asked range",
    "time_nan": "sample 0 of result[0] is stamped nan, outside the asked range",
    "time_1e300": "sample 0 of result[0] is stamped unix time 1e+300, outside the asked range",
    "time_huge_int": "sample 0 of result[0] is stamped 1000000000",
    "value_a_number": "sample 0 of result[0] has a value that is a number, not a string",
    "value_not_numeric": "sample 0 of result[0] has the value 'lots', not a number",
    "value_null": "sample 0 of result[0] has a value that is null, not a string",
}


def test_every_malformed_variant_has_an_expectation() -> None:
    assert EXPECTED.keys() == MALFORMED.keys()


@pytest.mark.parametrize("variant", list(MALFORMED))
def test_a_malformed_answer_is_a_typed_error(variant: str) -> None:
    with hostile_server("malformed", variant=variant) as server, pytest.raises(SourceUnavailable) as caught:
        fetch(PrometheusSource(server.url))
    message = str(caught.value)
    assert f"query 'up' on {server.url}: the answer is not Prometheus' API: " in message
    assert EXPECTED[variant] in message
    assert len(message) < MESSAGE_BUDGET


# --- credentials are bound to their address --------------------------------------------------


def test_credentials_go_to_the_default_prometheus_only(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t0ken")
    with hostile_server("ok") as default, hostile_server("ok") as other:
        settings = Settings(
            prometheus_url=default.url, allowed_server_addresses=(other.url,), prometheus_bearer_token_file=token
        )
        resolver = SourceResolver.from_settings(settings)
        try:
            for address in (None, other.url):
                resolver.resolve(address).fetch("up", START, END, MINUTE)
        finally:
            resolver.close()
    assert default.hits[0].headers["Authorization"] == "Bearer t0ken"
    assert "Authorization" not in other.hits[0].headers


def test_a_rotated_token_is_read_again_and_an_emptied_one_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    token = tmp_path / "token"
    token.write_text("first")
    with hostile_server("ok") as server:
        source = PrometheusSource(server.url, bearer_token_file=token)
        fetch(source)
        token.write_text("second-token")
        fetch(source)
        token.write_text("")
        with caplog.at_level(logging.WARNING, logger="helios_scaler.source.prometheus"):
            fetch(source)
            fetch(source)
    sent = [hit.headers["Authorization"] for hit in server.hits]
    assert sent == ["Bearer first", "Bearer second-token", "Bearer second-token", "Bearer second-token"]
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "is empty" in warnings[0].getMessage()
    assert "second-token" not in warnings[0].getMessage()


def test_a_rotated_password_is_read_again(tmp_path: Path) -> None:
    password = tmp_path / "password"
    password.write_text("old")
    with hostile_server("ok") as server:
        source = PrometheusSource(server.url, username="helios", password_file=password)
        fetch(source)
        password.write_text("new-password")
        frame = fetch(source)
    first, second = (hit.headers["Authorization"] for hit in server.hits)
    assert first != second
    assert frame[Y].to_list() == [1.0] * 11
