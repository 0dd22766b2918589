"""ScalerMetadata.parse: metadata → a typed object, or an error naming key, value and what is accepted."""

from __future__ import annotations

import re
from datetime import timedelta

import grpc
import pytest

from helios_scaler.errors import InvalidMetadata
from helios_scaler.serving.status import status_code
from helios_scaler.trigger import MAX_POINTS, ScalerMetadata, SeriesKey

DEMO = {"query": "worldcup98", "threshold": "1000", "leadTime": "5m"}
BASE = {"query": "rate(http_requests_total[1m])", "threshold": "10"}


def parse(**extra: str) -> ScalerMetadata:
    return ScalerMetadata.parse({**BASE, **extra})


def test_defaults() -> None:
    meta = ScalerMetadata.parse(BASE)
    assert meta.query == "rate(http_requests_total[1m])"
    assert meta.threshold == 10.0
    assert meta.server_address is None
    assert meta.activation_threshold == 0.0
    assert meta.lead_time == timedelta(minutes=5)
    assert meta.history_time_window == timedelta(days=7)
    assert meta.query_step == timedelta(minutes=1)
    assert meta.model == "auto"
    assert meta.quantile is None  # auto: the point forecast times the series' own margin
    assert meta.calendars == ()
    assert meta.mode == "forecast"


def test_demo_map() -> None:
    meta = ScalerMetadata.parse(DEMO)
    assert meta == ScalerMetadata(query="worldcup98", threshold=1000.0, lead_time=timedelta(minutes=5))
    assert meta.history_points == 7 * 24 * 60


def test_every_key_parsed() -> None:
    meta = parse(
        serverAddress="https://prom.monitoring:9090/",
        activationThreshold="2.5",
        leadTime="1h30m",
        historyTimeWindow="14d",
        queryStep="2m",
        model=" MSTL ",
        quantile="0.99",
        mode="Shadow",
    )
    assert meta.server_address == "https://prom.monitoring:9090"
    assert meta.activation_threshold == 2.5
    assert meta.lead_time == timedelta(hours=1, minutes=30)
    assert meta.history_time_window == timedelta(days=14)
    assert meta.query_step == timedelta(minutes=2)
    assert meta.model == "mstl"
    assert meta.quantile == 0.99
    assert meta.mode == "shadow"


def test_blank_server_address_means_default() -> None:
    assert parse(serverAddress="  ").server_address is None


DURATION_UNITS = "units ms, s, m, h, d, w"

BAD_VALUES = [
    ("query", "", "a PromQL expression returning exactly one series"),
    ("query", "   ", "a PromQL expression returning exactly one series"),
    # "a number > 0" before the metadata fuzzing issue, which accepted 1e-320 (a subnormal threshold).
    ("threshold", "0", "a number >= 1e-6"),
    ("threshold", "-1", "a number >= 1e-6"),
    ("threshold", "ten", "a number >= 1e-6"),
    ("threshold", "nan", "a number >= 1e-6"),
    ("threshold", "inf", "a number >= 1e-6"),
    ("threshold", "", "a number >= 1e-6"),
    ("threshold", "1e19", "a number >= 1e-6 and <= 1e15"),  # would overflow KEDA's int64 targetSize
    ("threshold", "1e-320", "a number >= 1e-6"),  # subnormal: any load would be a huge replica count
    ("threshold", "9e-7", "a number >= 1e-6"),
    ("threshold", "\uff15", "ASCII digits"),  # fullwidth 5: float() takes it
    ("threshold", "1_000", "ASCII digits"),  # float() takes it too
    ("threshold", "1e999", "a number >= 1e-6"),  # float() makes it inf
    ("activationThreshold", "\u0661\u0662", "ASCII digits"),  # Arabic-Indic 12
    ("activationThreshold", "Infinity", "a number >= 0"),
    ("activationThreshold", "1e16", "a number >= 0 and <= 1e15"),
    ("activationThreshold", "-0.5", "a number >= 0"),
    ("activationThreshold", "none", "a number >= 0"),
    ("activationThreshold", "nan", "a number >= 0"),
    ("leadTime", "5", DURATION_UNITS),
    ("leadTime", "5x", DURATION_UNITS),
    ("leadTime", "-5m", DURATION_UNITS),
    ("leadTime", "", DURATION_UNITS),
    ("leadTime", "7h", "from 0s to 6h"),
    ("leadTime", "\uff15m", "ASCII digits"),
    ("leadTime", "99999999999d", "at most 400d"),  # overflowed timedelta: gRPC UNKNOWN before
    ("leadTime", "1" + "0" * 400 + "s", "at most 400d"),  # float() of it is inf
    ("historyTimeWindow", "401d", "at most 400d"),
    ("queryStep", "\u0661m", "ASCII digits"),
    ("historyTimeWindow", "30m", "from 1h to 90d"),
    ("historyTimeWindow", "91d", "from 1h to 90d"),
    ("historyTimeWindow", "1 week", DURATION_UNITS),
    ("queryStep", "5s", "from 10s to 1h"),
    ("queryStep", "2h", "from 10s to 1h"),
    ("queryStep", "1m30", DURATION_UNITS),
    ("queryStep", "10.5s", "of whole seconds"),  # Prometheus steps and series keys are whole seconds
    ("queryStep", "90500ms", "of whole seconds"),
    ("model", "arima", "one of auto, seasonal_naive, ets, mstl, lightgbm"),
    ("model", "", "one of auto, seasonal_naive, ets, mstl, lightgbm"),
    ("quantile", "0", "strictly between 0 and 1"),
    ("quantile", "1", "strictly between 0 and 1"),
    ("quantile", "1.5", "strictly between 0 and 1"),
    ("quantile", "-0.1", "strictly between 0 and 1"),
    ("quantile", "p90", "strictly between 0 and 1"),
    ("mode", "dry-run", "one of forecast, shadow"),
    ("mode", "", "one of forecast, shadow"),
    ("serverAddress", "prometheus:9090", "an http:// or https:// Prometheus base URL"),
    ("serverAddress", "ftp://prometheus", "an http:// or https:// Prometheus base URL"),
    # Bad IPv6 brackets and ports made urllib.parse raise ValueError (gRPC UNKNOWN) before.
    ("serverAddress", "http://[::1", "an IPv6 host in brackets"),
    ("serverAddress", "http://[zz]/", "an IPv6 host in brackets"),
    ("serverAddress", "http://::1]:9090", "an IPv6 host in brackets"),
    ("serverAddress", "http://prom:99999", "http(s)://host[:port][/path]"),
    ("serverAddress", "http://prom:0", "http(s)://host[:port][/path]"),
    ("serverAddress", "http://prom:\uff19\uff10", "http(s)://host[:port][/path]"),
    ("serverAddress", "http://prom:port", "http(s)://host[:port][/path]"),
    ("serverAddress", "http://", "http(s)://host[:port][/path]"),
    ("serverAddress", "http://user:secret@prom", "http(s)://host[:port][/path]"),
    ("serverAddress", "http://prom/?q=1", "http(s)://host[:port][/path]"),
    ("serverAddress", "http://prom\n.evil", "http(s)://host[:port][/path]"),
    ("serverAddress", "http://" + "a" * 2100, "at most 2048 characters"),
    ("query", "q" * (16 * 1024 + 1), "at most 16384 characters"),
]


def short_id(key: str, value: str) -> str:
    return f"{key}={value!r}" if len(value) <= 40 else f"{key}={value[:20]!r}...({len(value)} chars)"


@pytest.mark.parametrize(("key", "value", "accepted"), BAD_VALUES, ids=[short_id(k, v) for k, v, _ in BAD_VALUES])
def test_bad_value_names_key_value_and_accepted(key: str, value: str, accepted: str) -> None:
    with pytest.raises(InvalidMetadata) as info:
        ScalerMetadata.parse({**BASE, key: value})
    message = str(info.value)
    assert repr(key) in message
    assert (repr(value) if len(value) <= 100 else f"{value[:100]!r}… ({len(value)} characters)") in message
    assert accepted in message
    assert (info.value.key, info.value.value) == (key, value)
    assert status_code(info.value) is grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("missing", ["query", "threshold"])
def test_missing_required_key(missing: str) -> None:
    metadata = {k: v for k, v in DEMO.items() if k != missing}
    with pytest.raises(InvalidMetadata, match=f"'{missing}' is required") as info:
        ScalerMetadata.parse(metadata)
    assert info.value.key == missing
    assert info.value.value is None


def test_unknown_key_suggests_the_known_spelling() -> None:
    with pytest.raises(InvalidMetadata) as info:
        ScalerMetadata.parse({**DEMO, "leadtime": "10m"})
    message = str(info.value)
    assert info.value.key == "leadtime"
    assert "did you mean 'leadTime'?" in message
    assert "'10m'" in message
    assert "known keys:" in message and "historyTimeWindow" in message


def test_misspelt_key_suggests_the_closest() -> None:
    with pytest.raises(InvalidMetadata, match="did you mean 'threshold'"):
        ScalerMetadata.parse({"query": "q", "treshold": "5"})


def test_unrelated_unknown_key_lists_known_keys_without_a_guess() -> None:
    with pytest.raises(InvalidMetadata) as info:
        parse(zzzzzz="1")
    assert "did you mean" not in str(info.value)
    assert "known keys:" in str(info.value)


def test_from_env_keys_are_read_as_the_key() -> None:
    meta = ScalerMetadata.parse(
        {"queryFromEnv": "sum(rate(x[1m]))", "thresholdFromEnv": "50", "leadTimeFromEnv": "10m"}
    )
    assert meta.query == "sum(rate(x[1m]))"
    assert meta.threshold == 50.0
    assert meta.lead_time == timedelta(minutes=10)


def test_from_env_value_is_validated_under_the_key() -> None:
    with pytest.raises(InvalidMetadata) as info:
        ScalerMetadata.parse({**BASE, "quantileFromEnv": "2"})
    assert info.value.key == "quantile"
    assert "strictly between 0 and 1" in str(info.value)


def test_key_and_key_from_env_together_is_an_error() -> None:
    with pytest.raises(InvalidMetadata) as info:
        ScalerMetadata.parse({**BASE, "thresholdFromEnv": "20"})
    message = str(info.value)
    assert info.value.key == "thresholdFromEnv"
    assert "'20'" in message
    assert "'threshold'" in message and "'thresholdFromEnv'" in message and "not both" in message


def test_keda_keys_are_accepted_and_ignored() -> None:
    keda = {"scalerAddress": "helios.keda:6000", "enableTLS": "true", "unsafeSsl": "false", "caCert": "x"}
    assert ScalerMetadata.parse({**DEMO, **keda}) == ScalerMetadata.parse(DEMO)


def test_history_must_cover_four_lead_times() -> None:
    with pytest.raises(InvalidMetadata) as info:
        parse(leadTime="30m", historyTimeWindow="1h59m")
    assert info.value.key == "historyTimeWindow"
    assert "'1h59m'" in str(info.value)
    assert "at least 4 x leadTime" in str(info.value)
    # Exactly four lead times is enough.
    assert parse(leadTime="30m", historyTimeWindow="2h").history_time_window == timedelta(hours=2)


def test_history_points_bounded_by_max_points() -> None:
    at_limit = parse(historyTimeWindow=f"{MAX_POINTS}m")
    assert at_limit.history_points == MAX_POINTS
    with pytest.raises(InvalidMetadata) as info:
        parse(historyTimeWindow=f"{MAX_POINTS + 1}m")
    assert info.value.key == "historyTimeWindow"
    assert str(MAX_POINTS) in str(info.value)
    assert "raise queryStep" in str(info.value)
    # A coarser step brings the same window under the limit.
    assert parse(historyTimeWindow=f"{MAX_POINTS + 1}m", queryStep="2m").history_points < MAX_POINTS


def test_default_history_too_many_points_for_a_fine_step() -> None:
    # 7d at 10s is 60480 points: the error names the (defaulted) window the user must change.
    with pytest.raises(InvalidMetadata) as info:
        parse(queryStep="10s")
    assert (info.value.key, info.value.value) == ("historyTimeWindow", "7d")
    assert parse(queryStep="10s", historyTimeWindow="5d").history_points == 43200


METRIC_NAME = re.compile(r"^[a-z0-9-]+$")


@pytest.mark.parametrize(
    "query",
    ["worldcup98", 'sum(rate(http_requests_total{job="API"}[1m]))', "{}", "Ünïcode_Ω query " * 10],
)
def test_metric_name_is_lowercase_dns_safe(query: str) -> None:
    name = parse(query=query).metric_name()
    assert METRIC_NAME.match(name), name
    assert name.startswith("helios-")
    assert len(name) <= 63
    assert "--" not in name


def test_metric_name_is_stable() -> None:
    forward = ScalerMetadata.parse(dict(DEMO))
    backward = ScalerMetadata.parse(dict(reversed(list(DEMO.items()))))
    assert forward.metric_name() == forward.metric_name() == backward.metric_name()
    # Pinned: the HPA KEDA creates refers to this name, so it must not change across
    # processes (no hash()) or releases without a deliberate migration.  (Issue 8 made
    # `quantile: auto` the default, which changed it from helios-worldcup98-414029d9; an explicit
    # quantile keeps its old name, and GetMetrics answers under whatever name KEDA asks for.)
    assert forward.metric_name() == "helios-worldcup98-62f7d503"
    assert ScalerMetadata.parse({**DEMO, "quantile": "0.9"}).metric_name() == "helios-worldcup98-414029d9"


def test_quantile_auto_and_calendars() -> None:
    meta = ScalerMetadata.parse({**BASE, "quantile": "AUTO", "calendar": "worldcup98, launches,worldcup98"})
    assert meta.quantile is None
    assert meta.calendars == ("launches", "worldcup98")
    assert meta.series_key("s").calendars == ("launches", "worldcup98")
    assert meta.metric_name() != ScalerMetadata.parse({**BASE, "quantile": "auto"}).metric_name()
    with pytest.raises(InvalidMetadata, match="metadata key 'calendar': 'World Cup' is not valid"):
        ScalerMetadata.parse({**BASE, "calendar": "World Cup"})


@pytest.mark.parametrize(
    "change",
    [{"leadTime": "10m"}, {"quantile": "0.99"}, {"query": "worldcup98_other"}, {"mode": "shadow"}],
    ids=lambda change: next(iter(change)),
)
def test_metric_name_differs_when_the_served_value_can_differ(change: dict[str, str]) -> None:
    assert ScalerMetadata.parse({**DEMO, **change}).metric_name() != ScalerMetadata.parse(DEMO).metric_name()


def test_metric_name_ignores_thresholds() -> None:
    other = ScalerMetadata.parse({**DEMO, "threshold": "5", "activationThreshold": "3"})
    assert other.metric_name() == ScalerMetadata.parse(DEMO).metric_name()


def test_series_key_shared_by_triggers_differing_only_in_thresholds() -> None:
    a = ScalerMetadata.parse(DEMO)
    b = ScalerMetadata.parse({**DEMO, "threshold": "20", "activationThreshold": "7"})
    assert a.series_key("replay") == b.series_key("replay") == SeriesKey("replay", "worldcup98", 60, "auto")


@pytest.mark.parametrize("change", [{"query": "other"}, {"queryStep": "30s"}, {"model": "ets"}])
def test_series_key_differs_with_what_is_fetched_or_modelled(change: dict[str, str]) -> None:
    assert ScalerMetadata.parse({**DEMO, **change}).series_key("replay") != ScalerMetadata.parse(DEMO).series_key(
        "replay"
    )


def test_series_key_includes_the_source() -> None:
    meta = ScalerMetadata.parse(DEMO)
    assert meta.series_key("http://a:9090") != meta.series_key("http://b:9090")


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("threshold", "1e-6", 1e-6),
        ("threshold", " +2.5E3 ", 2500.0),
        ("threshold", "1.", 1.0),
        ("threshold", ".5", 0.5),
        ("activationThreshold", "1e15", 1e15),
        ("leadTime", "6h", timedelta(hours=6)),
        ("historyTimeWindow", "34d", timedelta(days=34)),  # 48960 one-minute points
        ("serverAddress", "http://[::1]:9090/", "http://[::1]:9090"),
        ("serverAddress", "https://[2001:db8::7]/prometheus", "https://[2001:db8::7]/prometheus"),
        ("serverAddress", "http://10.0.0.7:65535", "http://10.0.0.7:65535"),
        ("serverAddress", "https://prometheus-operated.monitoring.svc:9090/api/%7Euser", None),
        ("query", "q" * 16 * 1024, "q" * 16 * 1024),
    ],
    ids=lambda each: each if isinstance(each, str) and len(each) < 40 else None,
)
def test_values_at_the_limits_are_accepted(key: str, value: str, expected: object) -> None:
    field = {"serverAddress": "server_address", "historyTimeWindow": "history_time_window"}.get(key)
    meta = ScalerMetadata.parse({**BASE, key: value})
    got = getattr(meta, field or re.sub(r"(?<!^)([A-Z])", r"_\1", key).lower())
    assert got == (value if expected is None else expected)


def test_a_huge_unknown_key_and_value_are_excerpted() -> None:
    key, value = "k" * 5000, "v" * 100_000
    with pytest.raises(InvalidMetadata) as info:
        parse(**{key: value})
    message = str(info.value)
    assert len(message) < 1000
    assert f"{'k' * 100!r}… (5000 characters)" in message
    assert f"{'v' * 100!r}… (100000 characters)" in message
    assert "known keys:" in message and "did you mean" not in message
    assert (info.value.key, info.value.value) == (key, value)  # kept whole for the caller


def test_a_huge_invalid_value_is_excerpted() -> None:
    value = "\x00" * 50_000  # each shown as 4 characters by repr
    with pytest.raises(InvalidMetadata) as info:
        parse(leadTime=value)
    assert len(str(info.value)) < 1000
    assert "(50000 characters)" in str(info.value)


def test_key_and_key_from_env_with_huge_names_is_excerpted() -> None:
    base = "x" * 10_000
    with pytest.raises(InvalidMetadata) as info:
        ScalerMetadata.parse({**BASE, base: "1", base + "FromEnv": "2"})
    assert len(str(info.value)) < 1000
    assert "not both" in str(info.value)
