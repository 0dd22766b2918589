"""Tenants are namespaces: per-namespace quotas of series and ScaledObjects, namespaces bound to the
Prometheus they may read, O(1) registration and a bounded metadata cache."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import polars as pl
import pytest

from helios_scaler.app import quotas
from helios_scaler.config import Settings, load_settings
from helios_scaler.demand import PARSE_CACHE_CHARS, Quotas, Subscriptions
from helios_scaler.errors import ConfigError, SourceNotAllowed, TooManySeries
from helios_scaler.features.schema import empty_series
from helios_scaler.serving.status import status_code
from helios_scaler.source.registry import SourceResolver
from helios_scaler.trigger import ScalerMetadata

REFRESH = timedelta(seconds=30)


class NamedSource:
    """A Source that only has a name (registration never fetches)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def fetch(self, query: str, start: datetime, end: datetime, step: timedelta) -> pl.DataFrame:
        return empty_series()

    def now(self) -> datetime:
        return datetime(2026, 1, 1, tzinfo=UTC)

    def close(self) -> None:
        """Nothing to release."""


DEFAULT = NamedSource("http://prometheus:9090")
TEAM_A = NamedSource("http://prom-a:9090")
RESOLVER = SourceResolver(DEFAULT, {TEAM_A.name: TEAM_A})  # type: ignore[arg-type,dict-item]


def meta(query: str, **extra: str) -> ScalerMetadata:
    return ScalerMetadata.parse({"query": query, "threshold": "10", **extra})


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_one_namespace_cannot_take_every_series() -> None:
    """A namespace at its series quota is refused (RESOURCE_EXHAUSTED naming it and the setting); another
    namespace still registers, and a ScaledObject of the full namespace on a series it already has too."""
    subs = Subscriptions(RESOLVER, Quotas(max_series=10, series_per_namespace=3), REFRESH)
    for i in range(3):
        subs.register("noisy", f"so{i}", meta(f"q{i}"))
    with pytest.raises(TooManySeries) as info:
        subs.register("noisy", "so3", meta("q3"))
    assert "'noisy'" in str(info.value) and "max_series_per_namespace" in str(info.value) and "3" in str(info.value)
    assert status_code(info.value) == grpc.StatusCode.RESOURCE_EXHAUSTED
    subs.register("noisy", "again", meta("q0"))  # a series it already tracks: no new slot
    subs.register("quiet", "web", meta("q3"))
    assert len(subs.keys()) == 4


def test_the_server_limit_names_the_namespace_refused() -> None:
    subs = Subscriptions(RESOLVER, Quotas(max_series=2), REFRESH)
    subs.register("a", "one", meta("q1"))
    subs.register("b", "two", meta("q2"))
    with pytest.raises(TooManySeries, match=r"maximum of 2 series \(setting max_series\).*namespace 'c'"):
        subs.register("c", "three", meta("q3"))


def test_scaledobject_quota_per_namespace() -> None:
    subs = Subscriptions(RESOLVER, Quotas(scaledobjects_per_namespace=2), REFRESH)
    subs.register("ns", "one", meta("q"))
    subs.register("ns", "two", meta("q"))
    subs.register("ns", "two", meta("q", threshold="20"))  # the same ScaledObject changed: not a new one
    with pytest.raises(TooManySeries, match=r"'ns'.*maximum of 2 ScaledObject.*max_scaledobjects_per_namespace"):
        subs.register("ns", "three", meta("q"))
    subs.register("other", "three", meta("q"))


def test_expiry_frees_the_quota() -> None:
    clock = Clock()
    subs = Subscriptions(RESOLVER, Quotas(max_series=1, series_per_namespace=1), REFRESH, clock=clock)
    subs.register("ns", "old", meta("q1"))
    with pytest.raises(TooManySeries):
        subs.register("ns", "new", meta("q2"))
    clock.now += timedelta(minutes=11).total_seconds()
    assert [sub.name for sub in subs.expire()] == ["old"]
    assert subs.keys() == set()
    subs.register("ns", "new", meta("q2"))
    assert len(subs.keys()) == 1


def test_a_changed_scaledobject_releases_its_old_series() -> None:
    subs = Subscriptions(RESOLVER, Quotas(max_series=1), REFRESH)
    subs.register("ns", "web", meta("q1"))
    subs.register("ns", "web", meta("q1", threshold="20"))
    assert len(subs.keys()) == 1
    subs.register("ns", "other", meta("q1"))
    assert len(subs.keys()) == 1


def test_registering_many_names_keeps_counts_exact() -> None:
    """20,000 ScaledObjects on 100 series: the counts the quotas read stay equal to a full recount."""
    subs = Subscriptions(RESOLVER, Quotas(max_series=1000), REFRESH)
    for i in range(20_000):
        subs.register(f"ns{i % 7}", f"so{i}", meta(f"q{i % 100}"))
    assert subs.keys() == {sub.key for sub in subs.all()}
    assert len(subs.keys()) == 100


def test_a_namespace_bound_to_its_prometheus() -> None:
    bound = Quotas(namespace_sources={"team-a": frozenset({TEAM_A.name})})
    subs = Subscriptions(RESOLVER, bound, REFRESH)
    subs.register("team-a", "web", meta("q", serverAddress=TEAM_A.name))
    with pytest.raises(SourceNotAllowed) as info:
        subs.register("team-a", "web2", meta("q"))  # the default Prometheus is not among team-a's
    assert "'team-a'" in str(info.value) and "namespace_server_addresses" in str(info.value)
    assert status_code(info.value) == grpc.StatusCode.PERMISSION_DENIED
    subs.register("team-b", "web", meta("q"))  # not listed: any allowed address
    subs.register("team-b", "web2", meta("q", serverAddress=TEAM_A.name))


def test_namespace_server_addresses_setting(tmp_path: Path) -> None:
    from_env = load_settings(
        env={"HELIOS_NAMESPACE_SERVER_ADDRESSES": "team-a=http://prom-a:9090/, team-a=http://prometheus:9090"}
    )
    assert from_env.namespace_server_addresses == (
        ("team-a", "http://prom-a:9090"),
        ("team-a", "http://prometheus:9090"),
    )
    config = tmp_path / "config.yaml"
    config.write_text("namespace_server_addresses:\n  team-a: [http://prom-a:9090]\n  team-b: http://prometheus:9090\n")
    from_file = load_settings(config_file=config, env={})
    assert from_file.namespace_server_addresses == (
        ("team-a", "http://prom-a:9090"),
        ("team-b", "http://prometheus:9090"),
    )
    with pytest.raises(ConfigError, match=r"namespace_server_addresses.*not namespace=URL"):
        load_settings(env={"HELIOS_NAMESPACE_SERVER_ADDRESSES": "http://prom-a:9090"})
    with pytest.raises(ConfigError, match="max_series_per_namespace"):
        load_settings(env={"HELIOS_MAX_SERIES_PER_NAMESPACE": "-1"})


def test_a_namespace_bound_to_an_address_not_allowed_is_a_config_error() -> None:
    settings = dataclasses.replace(Settings(), namespace_server_addresses=(("team-a", "http://elsewhere:9090"),))
    with pytest.raises(ConfigError, match=r"team-a=http://elsewhere:9090.*allowed: http://prom-a:9090"):
        quotas(settings, RESOLVER)
    ok = dataclasses.replace(settings, namespace_server_addresses=(("team-a", "HTTP://PROM-A:9090/"),))
    assert quotas(ok, RESOLVER).namespace_sources == {"team-a": frozenset({TEAM_A.name})}


def test_the_metadata_cache_is_bounded() -> None:
    """One huge query with a changing threshold (a new map each time) must not grow the cache without end."""
    subs = Subscriptions(RESOLVER, 10, REFRESH)
    query = "sum(rate(x[5m])) + " * 800 + "1"  # ~15 kB, near the longest query accepted
    maps = PARSE_CACHE_CHARS // len(query) + 100
    for i in range(maps):
        subs.parse({"query": query, "threshold": str(i + 1)})
    cached = sum(len(k) + len(v) for entry in subs._parsed for k, v in entry)
    assert cached <= PARSE_CACHE_CHARS
    assert len(subs._parsed) < maps
