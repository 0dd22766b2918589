"""PrometheusSource's defences, piece by piece: excerpts, answer checks, secrets, credential binding."""

from __future__ import annotations

import json
import logging
import math
import threading
from datetime import timedelta
from pathlib import Path

import pytest

from helios_scaler.config import Settings, load_settings
from helios_scaler.errors import ConfigError
from helios_scaler.source.prometheus import (
    ANSWER_EXCERPT_CHARS,
    DEFAULT_MAX_ANSWER_BYTES,
    PrometheusSource,
    _Deadline,
    _format_time,
    _NotPrometheus,
    _origin,
    _parse_matrix,
    _SecretFile,
    answer_excerpt,
)
from helios_scaler.source.registry import SourceResolver

# --- excerpts of untrusted text --------------------------------------------------------------


def test_a_short_text_is_kept() -> None:
    assert answer_excerpt("  TSDB not ready \n") == "TSDB not ready"


def test_a_long_text_is_cut_with_an_ellipsis() -> None:
    text = "INTERNAL-SECRET: " + "x" * 10_240
    shown = answer_excerpt(text)
    assert shown == text[:ANSWER_EXCERPT_CHARS] + "…"
    assert answer_excerpt("y" * ANSWER_EXCERPT_CHARS) == "y" * ANSWER_EXCERPT_CHARS


def test_non_printable_characters_are_replaced() -> None:
    assert answer_excerpt("a\nb\tc\x00d\x1b[31me\u202e") == "a b c\ufffdd\ufffd[31me\ufffd"


# --- sample times and redirect targets in messages -------------------------------------------


@pytest.mark.parametrize(
    ("stamp", "shown"),
    [
        (1_700_000_000, "2023-11-14T22:13:20+00:00"),
        (1_700_000_000.5, "2023-11-14T22:13:20.500000+00:00"),
        (1e12, "unix time 1e+12 (year ~33,658)"),
        (-1e12, "unix time -1e+12 (year ~-29,719)"),
        (1e300, "unix time 1e+300"),
        (math.inf, "inf"),
        (math.nan, "nan"),
    ],
)
def test_sample_times_are_formatted_for_people(stamp: float, shown: str) -> None:
    assert _format_time(stamp) == shown


def test_a_huge_integer_time_is_shown_cut() -> None:
    assert len(_format_time(10**400)) <= 41


@pytest.mark.parametrize(
    ("location", "origin"),
    [
        ("http://evil.example:8080/steal?token=x", "http://evil.example:8080"),
        ("https://user:pw@Evil.Example/a", "https://evil.example:443"),
        ("//other.example/x", "http://other.example:80"),
        ("/elsewhere?q=1", "http://prometheus:9090"),
        ("http://[::1]:9/x", "http://[::1]:9"),
        ("http://host:99999999/", None),
        ("", None),
        (None, None),
    ],
)
def test_a_redirect_target_is_shown_as_scheme_host_port_only(location: str | None, origin: str | None) -> None:
    assert _origin("http://prometheus:9090", location) == origin


# --- answer checks ---------------------------------------------------------------------------


def answer(values: list[object], metric: object = None) -> bytearray:
    item = {"values": values} if metric is None else {"metric": metric, "values": values}
    return bytearray(json.dumps({"status": "success", "data": {"resultType": "matrix", "result": [item]}}).encode())


def test_samples_at_both_ends_of_the_range_are_accepted_and_the_body_released() -> None:
    body = answer([[100, "1"], [160.0, "NaN"], [220, "+Inf"]], {"job": "a"})
    (series,) = _parse_matrix(body, 100, 220, 60)
    assert series.key == (("job", "a"),)
    assert list(series.micros) == [100_000_000, 160_000_000, 220_000_000]
    assert series.ys[0] == 1.0
    assert math.isnan(series.ys[1])
    assert series.ys[2] == math.inf
    assert body == bytearray()


@pytest.mark.parametrize("stamp", [99, 221, 99.999])
def test_a_sample_one_tick_outside_the_range_is_refused(stamp: float) -> None:
    with pytest.raises(_NotPrometheus, match="outside the asked range 1970-01-01T00:01:40"):
        _parse_matrix(answer([[stamp, "1"]]), 100, 220, 60)


def test_a_series_with_more_samples_than_steps_is_refused_before_its_samples_are_read() -> None:
    with pytest.raises(_NotPrometheus, match="4 samples where the asked range has 3 steps"):
        _parse_matrix(answer([[100, "1"], [160, "1"], [220, "1"], ["junk"]]), 100, 220, 60)


def test_deeply_nested_json_is_not_prometheus() -> None:
    with pytest.raises(_NotPrometheus, match="not JSON"):
        _parse_matrix(bytearray(b"[" * 100_000), 0, 60, 60)


def test_invalid_utf8_is_not_prometheus() -> None:
    with pytest.raises(_NotPrometheus, match="not JSON"):
        _parse_matrix(bytearray(b'{"status": "\xff\xfe"}'), 0, 60, 60)


def test_a_long_label_name_is_cut_in_the_message() -> None:
    with pytest.raises(_NotPrometheus) as caught:
        _parse_matrix(answer([], {"n" * 10_000: 1}), 0, 60, 60)
    assert len(str(caught.value)) < 150


# --- the deadline ----------------------------------------------------------------------------


def test_the_deadline_watchdog_is_gone_after_the_fetch() -> None:
    with _Deadline(30) as deadline:
        assert not deadline.passed()
        assert deadline.remaining() > 29
    watchdogs = [thread for thread in threading.enumerate() if thread.name == "helios-fetch-deadline"]
    for thread in watchdogs:
        thread.join(timeout=1)  # a cancelled Timer ends at once
    assert not any(thread.is_alive() for thread in watchdogs)
    assert not deadline.expired


def test_an_expired_deadline_refuses_to_start_a_connection() -> None:
    with _Deadline(0.01) as deadline:
        threading.Event().wait(0.1)
        assert deadline.expired
        with pytest.raises(TimeoutError), deadline.watching(object()):  # type: ignore[arg-type]
            pass


# --- secrets re-read when their file changes -------------------------------------------------


def test_a_secret_file_is_re_read_only_when_it_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "token"
    path.write_text("one\n")
    secret = _SecretFile(path, "bearer token")
    reads: list[Path] = []
    original = Path.read_text

    def counting(self: Path, *args: object, **kwargs: object) -> str:
        reads.append(self)
        return original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "read_text", counting)
    assert [secret.get() for _ in range(3)] == ["one"] * 3
    assert reads == []
    path.write_text("two-longer\n")
    assert secret.get() == "two-longer"
    assert len(reads) == 1


def test_an_unreadable_secret_file_keeps_the_old_secret_and_warns_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "password"
    path.write_text("old-secret")
    secret = _SecretFile(path, "password")
    path.unlink()
    with caplog.at_level(logging.WARNING, logger="helios_scaler.source.prometheus"):
        assert [secret.get() for _ in range(3)] == ["old-secret"] * 3
        path.write_text("new-secret")
        assert secret.get() == "new-secret"
        path.write_text("   \n")
        assert [secret.get() for _ in range(2)] == ["new-secret"] * 2
    messages = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(messages) == 2
    assert "cannot read the Prometheus password file" in messages[0]
    assert "is empty" in messages[1]
    assert not any("old-secret" in message or "new-secret" in message for message in messages)


# --- settings and credential binding ---------------------------------------------------------


def test_max_answer_bytes_is_a_setting_with_a_32_mib_default() -> None:
    assert Settings().max_answer_bytes == DEFAULT_MAX_ANSWER_BYTES == 32 * 1024 * 1024
    assert load_settings(env={"HELIOS_MAX_ANSWER_BYTES": "1048576"}).max_answer_bytes == 1 << 20
    assert PrometheusSource("http://p:9090").max_answer_bytes == DEFAULT_MAX_ANSWER_BYTES


@pytest.mark.parametrize("limit", [0, -1])
def test_max_answer_bytes_must_be_positive(limit: int) -> None:
    with pytest.raises(ConfigError, match="max_answer_bytes"):
        PrometheusSource("http://p:9090", max_answer_bytes=limit)


def test_from_settings_without_credentials_reads_no_secret_file(tmp_path: Path) -> None:
    settings = Settings(
        prometheus_bearer_token_file=tmp_path / "missing-token",
        prometheus_cert_file=tmp_path / "missing-cert",
        query_timeout=timedelta(seconds=4),
    )
    source = PrometheusSource.from_settings("http://thanos:10902", settings, credentials=False)
    assert repr(source) == "PrometheusSource('http://thanos:10902', credentials=False)"
    assert source.timeout == timedelta(seconds=4)
    with pytest.raises(ConfigError, match="missing-token"):
        PrometheusSource.from_settings("http://thanos:10902", settings)


def test_the_resolver_gives_credentials_to_the_default_only(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t0ken")
    settings = Settings(
        prometheus_url="http://prometheus:9090",
        allowed_server_addresses=("http://thanos:10902", "http://prometheus:9090/"),
        prometheus_bearer_token_file=token,
        max_answer_bytes=4096,
    )
    resolver = SourceResolver.from_settings(settings)
    default, thanos = resolver.resolve(None), resolver.resolve("http://thanos:10902")
    assert repr(default) == "PrometheusSource('http://prometheus:9090', credentials=True)"
    assert repr(thanos) == "PrometheusSource('http://thanos:10902', credentials=False)"
    assert resolver.resolve("http://prometheus:9090") is default
    assert isinstance(thanos, PrometheusSource)
    assert thanos.max_answer_bytes == 4096
    resolver.close()


def test_credentials_without_a_default_url_are_sent_nowhere_and_said_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    token = tmp_path / "token"
    token.write_text("t0ken")
    settings = Settings(allowed_server_addresses=("http://thanos:10902",), prometheus_bearer_token_file=token)
    with caplog.at_level(logging.WARNING, logger="helios_scaler.source.registry"):
        resolver = SourceResolver.from_settings(settings)
    assert "credentials=False" in repr(resolver.resolve("http://thanos:10902"))
    assert any("sent nowhere" in record.getMessage() for record in caplog.records)
