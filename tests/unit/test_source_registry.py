"""SourceResolver: the default source, the allowlist and what is refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import polars as pl
import pytest

from helios_scaler.config import Settings
from helios_scaler.errors import ConfigError, SourceNotAllowed
from helios_scaler.features.schema import empty_series
from helios_scaler.serving.status import status_code
from helios_scaler.source.prometheus import PrometheusSource
from helios_scaler.source.registry import SourceResolver


class FakeSource:
    """A Source that only has a name."""

    def __init__(self, name: str) -> None:
        self.name = name

    def fetch(self, query: str, start: datetime, end: datetime, step: timedelta) -> pl.DataFrame:
        return empty_series()

    def now(self) -> datetime:
        return datetime(2024, 1, 1, tzinfo=UTC)

    def close(self) -> None:
        """Nothing to release."""


DEFAULT = FakeSource("http://prometheus.monitoring:9090")
OTHER = FakeSource("http://other")


@pytest.fixture
def resolver() -> SourceResolver:
    return SourceResolver(DEFAULT, {"https://Thanos.Example.com:10902/": OTHER})


@pytest.mark.parametrize("address", [None, "", "   "])
def test_missing_address_resolves_to_the_default(resolver: SourceResolver, address: str | None) -> None:
    assert resolver.resolve(address) is DEFAULT


@pytest.mark.parametrize(
    "address",
    [
        "http://prometheus.monitoring:9090",
        "http://prometheus.monitoring:9090/",
        "HTTP://Prometheus.Monitoring:9090//",
    ],
)
def test_the_default_url_resolves_to_the_default(resolver: SourceResolver, address: str) -> None:
    assert resolver.resolve(address) is DEFAULT


@pytest.mark.parametrize(
    "address",
    [
        "https://thanos.example.com:10902",
        "https://THANOS.example.com:10902/",
        " https://thanos.example.com:10902 ",
    ],
)
def test_an_allowlisted_address_resolves_to_its_source(resolver: SourceResolver, address: str) -> None:
    assert resolver.resolve(address) is OTHER


@pytest.mark.parametrize(
    "address",
    [
        "http://evil.example.com:9090",
        "https://prometheus.monitoring:9090",  # other scheme
        "http://prometheus.monitoring:9091",  # other port
        "http://prometheus.monitoring:9090/api",  # other path
        "not a url",
    ],
)
def test_any_other_address_is_not_allowed(resolver: SourceResolver, address: str) -> None:
    with pytest.raises(SourceNotAllowed) as caught:
        resolver.resolve(address)
    message = str(caught.value)
    assert repr(address) in message
    assert "http://prometheus.monitoring:9090" in message
    assert "https://thanos.example.com:10902" in message
    assert status_code(caught.value) is grpc.StatusCode.PERMISSION_DENIED


def test_without_a_default_a_missing_address_says_what_to_do() -> None:
    resolver = SourceResolver(None, {"http://a:9090": OTHER})
    with pytest.raises(SourceNotAllowed) as caught:
        resolver.resolve(None)
    message = str(caught.value)
    assert "no default Prometheus is configured" in message
    assert "serverAddress" in message
    assert "--prometheus-url" in message
    assert resolver.resolve("http://a:9090/") is OTHER


def test_nothing_configured_refuses_everything() -> None:
    resolver = SourceResolver(None, {})
    assert resolver.allowed_addresses == ()
    with pytest.raises(SourceNotAllowed, match="allowed addresses: none"):
        resolver.resolve("http://anything:9090")


def test_from_settings_binds_credentials_to_the_default_url(tmp_path: Path) -> None:
    """The token goes to prometheus_url only: an allowlisted address gets no credentials (they could leak
    to whoever runs it); both share the timeout."""
    token = tmp_path / "token"
    token.write_text("t0ken")
    settings = Settings(
        prometheus_url="http://prometheus:9090",
        allowed_server_addresses=("http://thanos:10902", "http://PROMETHEUS:9090/", "http://thanos:10902/"),
        prometheus_bearer_token_file=token,
        query_timeout=timedelta(seconds=3),
    )
    resolver = SourceResolver.from_settings(settings)

    default = resolver.resolve(None)
    assert isinstance(default, PrometheusSource)
    assert default.name == "http://prometheus:9090"
    assert resolver.resolve("http://prometheus:9090/") is default  # allowlisting the default reuses it
    thanos = resolver.resolve("http://thanos:10902")
    assert isinstance(thanos, PrometheusSource)
    assert thanos.timeout == timedelta(seconds=3)
    assert "credentials=True" in repr(default)
    assert "credentials=False" in repr(thanos)
    assert resolver.allowed_addresses == ("http://prometheus:9090", "http://thanos:10902")


def test_from_settings_without_a_url_has_no_default() -> None:
    resolver = SourceResolver.from_settings(Settings(allowed_server_addresses=("http://thanos:10902",)))
    assert resolver.default is None
    assert isinstance(resolver.resolve("http://thanos:10902"), PrometheusSource)


def test_from_settings_with_an_unreadable_token_file_is_a_config_error(tmp_path: Path) -> None:
    settings = Settings(prometheus_url="http://prometheus:9090", prometheus_bearer_token_file=tmp_path / "nope")
    with pytest.raises(ConfigError, match="nope"):
        SourceResolver.from_settings(settings)
