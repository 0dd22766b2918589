"""Hostile trigger metadata never gets an untyped answer: a property test over the real servicer.

Metadata maps are drawn from the documented keys (and their ``FromEnv`` forms, KEDA's own keys
and random keys) with hostile values: huge, negative and subnormal numbers, Unicode digits,
NaN/Inf spellings, very long strings, empty and blank values, brackets, control characters,
next to valid-looking ones.  Each map goes through GetMetricSpec, GetMetrics and IsActive of the
real app over a real loopback gRPC socket (one app for all examples; its default Prometheus is
an unused loopback port: handlers never do I/O, and the trainer's fetches just fail).  Every
answer must be OK or a typed error's code (never UNKNOWN, INTERNAL or a deadline), with
details of at most 2 KiB, within 3 s.

Examples per test come from ``HELIOS_FUZZ_EXAMPLES`` (default 300, derandomized so CI is
reproducible).  The dedicated run (10,000 maps x 3 RPCs over the socket plus 10,000 each of the
parse-only properties, about 2.5 minutes):

    HELIOS_FUZZ_EXAMPLES=10000 HELIOS_FUZZ_RANDOM=1 .venv/bin/pytest -q -p no:cacheprovider \\
        tests/unit/test_metadata_fuzz.py

``HELIOS_FUZZ_RANDOM=1`` draws fresh random examples instead of the fixed sequence.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scaler_app import ref, running_app, scaler_settings

from helios_scaler._proto import externalscaler_pb2 as pb
from helios_scaler._proto import externalscaler_pb2_grpc as pb_grpc
from helios_scaler.durations import MAX_DURATION, parse_duration
from helios_scaler.errors import InvalidMetadata
from helios_scaler.serving.status import MAX_DETAILS_BYTES
from helios_scaler.source.registry import SourceResolver
from helios_scaler.trigger import _PARSERS, KEDA_KEYS, ScalerMetadata

# Hypothesis warns while printing a failing example of a 100 kB string; as an error it would hide the failure.
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr:hypothesis.errors.HypothesisWarning")

EXAMPLES = int(os.environ.get("HELIOS_FUZZ_EXAMPLES", "300"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not os.environ.get("HELIOS_FUZZ_RANDOM"),
    database=None,  # nothing written into the working tree
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)

#: Typed answers a hostile map may get; UNKNOWN, INTERNAL and DEADLINE_EXCEEDED are all failures.
TYPED = frozenset(
    {
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.FAILED_PRECONDITION,
    }
)
CALL_SECONDS = 3.0

KEYS = sorted(_PARSERS)
ALLOWED = "http://127.0.0.1:19090"

VALID: dict[str, list[str]] = {
    "query": ["worldcup98", 'sum(rate(http_requests_total{job="api"}[1m]))', "up"],
    "serverAddress": ["", ALLOWED, ALLOWED + "/", "http://[::1]:9090", "https://prom.example:443/prometheus"],
    "threshold": ["10", "0.5", "1e-6", "1e15", "+2.5E3", "100"],
    "activationThreshold": ["0", "5", "1e15", "0.25"],
    "leadTime": ["0s", "5m", "90s", "6h", "1h30m", "250ms"],
    "historyTimeWindow": ["1h", "7d", "12h", "34d", "90d"],
    "queryStep": ["10s", "1m", "5m", "1h", "30s"],
    "model": ["auto", "ets", "MSTL", "lightgbm", "seasonal_naive"],
    "quantile": ["auto", "0.9", "0.5", "0.999", "1e-9"],
    "calendar": ["worldcup98", "a,b", "launches"],
    "mode": ["forecast", "shadow", " Shadow "],
}

UNITS = st.sampled_from(["", "ms", "s", "m", "h", "d", "w", "x", "M"])
UNICODE_DIGITS = st.text(st.characters(categories=["Nd"], exclude_characters="0123456789"), min_size=1, max_size=6)
CONTROL = st.text(st.characters(categories=["Cc", "Cf", "Zl", "Zp", "Zs"]), min_size=1, max_size=20)


def long_text(low: int, high: int) -> st.SearchStrategy[str]:
    return st.builds(lambda char, n: char * n, st.characters(exclude_categories=["Cs"]), st.integers(low, high))


NUMBERS: st.SearchStrategy[str] = st.one_of(
    # huge, tiny (subnormal) and negative numbers
    st.integers(10**15, 10**400).map(str),
    st.sampled_from(["1e308", "1.8e308", "1e999", "9" * 5000, "1e-320", "5e-324", "9e-7", "-0", "1e15", "1e-6"]),
    st.integers(max_value=-1).map(str),
    # any float spelling, NaN and Inf among them, and what float() takes but ASCII decimals are not
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["nan", "NaN", "-nan", "inf", "-inf", "+Infinity", "infinity", "1_000", "0x10", "1e", ".", "-"]),
    UNICODE_DIGITS,
    st.builds(lambda digits, tail: digits + "." + tail, UNICODE_DIGITS, UNICODE_DIGITS),
)
DURATIONS: st.SearchStrategy[str] = st.one_of(
    # huge (past timedelta's range), negative, fractional, Unicode digits, many parts, no unit
    st.builds(lambda n, u: f"{n}{u}", st.integers(10**5, 10**40), UNITS),
    st.sampled_from(["9" * 400 + "d", "1" + "0" * 400 + "s", "99999999999d", "401d", "58w", "1e9d", "0" * 16382]),
    st.builds(lambda n, u: f"-{n}{u}", st.integers(0, 10**6), UNITS),
    st.builds(lambda x, u: f"{x!r}{u}", st.floats(0, 1e30), UNITS),
    st.builds(lambda d, u: d + u, UNICODE_DIGITS, UNITS),
    st.builds(lambda n, part: part * n, st.integers(2, 5000), st.sampled_from(["1h", "400d", "0s", "1.5m"])),
)
URLS: st.SearchStrategy[str] = st.one_of(
    st.sampled_from(
        [
            "http://[::1",
            "http://[zz]/",
            "http://[::1]]:9090",
            "http://]::1[",
            "https://[",
            "http://[::1]:99999",
            "http://[::1]:-1",
            "http://prom:\uff19\uff10",
            "http://prom:0",
            "http://u:p@prom",
            "http://",
            "http:///x",
            "//prom:9090",
            "http://[v1.fe80::a+en1]",
            "http://[fe80::1%25eth0]",
            ALLOWED + "?x=1",
            ALLOWED + "#frag",
        ]
    ),
    st.builds(lambda a, b: f"http://[{a}]{b}", st.text(max_size=12), st.text(max_size=12)),
    st.builds(lambda a, b: f"http://{a}:{b}", st.text(max_size=12), st.text(max_size=8)),
    st.builds(lambda host, tail: f"https://{host}{tail}", st.text(max_size=30), st.text(max_size=30)),
    st.builds(lambda n: "http://" + "a" * n, st.integers(2030, 2060)),
)
GENERIC: st.SearchStrategy[str] = st.one_of(
    # very long strings: around the 16 KiB query limit, and far past it
    long_text(16 * 1024 - 2, 16 * 1024 + 2),
    long_text(20_000, 200_000),
    # empty and blank
    st.sampled_from(["", " ", "\t\n", "\u3000", "\u00a0"]),
    # brackets
    st.sampled_from(["[", "]", "{}", "(", "sum(", "[[[[", "]]]]", "{{", "a,b,,", ","]),
    # control characters, alone and around valid values
    CONTROL,
    st.builds(lambda c, v: c + v + c, CONTROL, st.sampled_from(["10", "5m", "auto", ALLOWED])),
    # anything
    st.text(max_size=50),
)
HOSTILE: st.SearchStrategy[str] = st.one_of(NUMBERS, DURATIONS, URLS, GENERIC)

#: Per key: the hostile values of its own type (half the time), or any.
TYPED_HOSTILE: dict[str, st.SearchStrategy[str]] = {
    **{key: NUMBERS for key in ("threshold", "activationThreshold", "quantile")},
    **{key: DURATIONS for key in ("leadTime", "historyTimeWindow", "queryStep")},
    "serverAddress": URLS,
}


def hostile_for(key: str) -> st.SearchStrategy[str]:
    return TYPED_HOSTILE[key] | HOSTILE if key in TYPED_HOSTILE else HOSTILE


KEY_STRATEGY: st.SearchStrategy[str] = st.one_of(
    st.sampled_from(KEYS),
    st.sampled_from([key + "FromEnv" for key in KEYS]),
    st.sampled_from(sorted(KEDA_KEYS)),
    st.text(max_size=30),
    long_text(200, 20_000),
    st.sampled_from(["FromEnv", "leadtime", "treshold", "Query", ""]),
)


def compose(valid: dict[str, str], hostile: dict[str, str], extra: dict[str, str], drop: list[str]) -> dict[str, str]:
    return {key: value for key, value in {**valid, **extra, **hostile}.items() if key not in drop}


#: A valid-looking map (some keys at valid values) with one to three keys hostile, now and then random extra
#: keys or a required key dropped: each map reaches past the first key parsed, and every key's parser is hit.
METADATA: st.SearchStrategy[dict[str, str]] = st.builds(
    compose,
    st.fixed_dictionaries(
        {key: st.sampled_from(VALID[key]) for key in ("query", "threshold")},
        optional={key: st.sampled_from(VALID[key]) for key in KEYS if key not in ("query", "threshold")},
    ),
    st.lists(st.sampled_from(KEYS), min_size=1, max_size=3, unique=True).flatmap(
        lambda keys: st.fixed_dictionaries({key: hostile_for(key) for key in keys})
    )
    | st.dictionaries(st.sampled_from([key + "FromEnv" for key in KEYS]), HOSTILE, max_size=1),
    st.just({}) | st.just({}) | st.just({}) | st.dictionaries(KEY_STRATEGY, HOSTILE, max_size=2),
    st.just([]) | st.just([]) | st.just([]) | st.lists(st.sampled_from(["query", "threshold"]), max_size=1),
)


def unused_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def check(call: Callable[[], object], what: str, metadata: dict[str, str]) -> grpc.StatusCode:
    """One RPC: a typed answer with bounded details, in time."""
    started = time.monotonic()
    code: grpc.StatusCode = grpc.StatusCode.OK
    details = ""
    try:
        call()
    except grpc.RpcError as exc:
        code, details = exc.code(), exc.details() or ""
    elapsed = time.monotonic() - started
    shown = {key[:40]: value[:80] for key, value in metadata.items()}
    assert code in TYPED, f"{what} answered {code}: {details[:500]!r} for {shown!r}"
    # A client refuses a status whose details pass its metadata limit, and reports RESOURCE_EXHAUSTED itself.
    assert "metadata size" not in details, f"{what}: the client refused the status ({details!r}) for {shown!r}"
    assert len(details.encode()) <= MAX_DETAILS_BYTES, f"{what}: {len(details.encode())} bytes of details"
    assert elapsed < CALL_SECONDS, f"{what} took {elapsed:.1f}s for {shown!r}"
    return code


async def test_hostile_metadata_gets_typed_answers_over_grpc() -> None:
    prometheus = f"http://127.0.0.1:{unused_loopback_port()}"
    config = scaler_settings(
        prometheus_url=prometheus,
        allowed_server_addresses=(ALLOWED,),
        max_series=50,  # hostile maps fill the quota: RESOURCE_EXHAUSTED is exercised too
        refresh_interval=timedelta(seconds=30),
    )
    async with running_app(config, SourceResolver.from_settings(config)) as app:
        target = f"127.0.0.1:{app.grpc_port}"
        seen: Counter[grpc.StatusCode] = Counter()

        def fuzz() -> None:
            with grpc.insecure_channel(target) as channel:
                stub = pb_grpc.ExternalScalerStub(channel)

                @FUZZ
                @given(metadata=METADATA, metric_name=st.sampled_from(["", "helios-x"]) | st.text(max_size=300))
                def one_map(metadata: dict[str, str], metric_name: str) -> None:
                    request = ref(metadata, name="web", namespace="fuzz")
                    metrics = pb.GetMetricsRequest(scaledObjectRef=request, metricName=metric_name)
                    seen[
                        check(lambda: stub.GetMetricSpec(request, timeout=CALL_SECONDS), "GetMetricSpec", metadata)
                    ] += 1
                    seen[check(lambda: stub.GetMetrics(metrics, timeout=CALL_SECONDS), "GetMetrics", metadata)] += 1
                    seen[check(lambda: stub.IsActive(request, timeout=CALL_SECONDS), "IsActive", metadata)] += 1

                one_map()

        await asyncio.to_thread(fuzz)
        assert sum(seen.values()) >= 3 * EXAMPLES
        # Not vacuous: valid maps get through, bad ones are refused, and registered ones wait for data.
        wanted = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAVAILABLE}
        assert wanted <= set(seen), seen


@FUZZ
@given(metadata=METADATA)
def test_parse_raises_only_invalid_metadata(metadata: dict[str, str]) -> None:
    """The same maps without the socket: parsing succeeds or raises InvalidMetadata, with a short message."""
    try:
        meta = ScalerMetadata.parse(metadata)
    except InvalidMetadata as exc:
        assert len(str(exc)) < 1000
        return
    assert 1e-6 <= meta.threshold <= 1e15
    assert len(meta.query) <= 16 * 1024


@FUZZ
@given(text=HOSTILE | st.builds(lambda n, u: f"{n}{u}", st.floats(0, 1e12).map(repr), UNITS))
def test_parse_duration_raises_only_value_error(text: str) -> None:
    try:
        parsed = parse_duration(text)
    except ValueError as exc:
        assert len(str(exc)) < 1500  # the text's first 100 characters, escaped
        return
    assert timedelta(0) <= parsed <= MAX_DURATION


@pytest.mark.parametrize("text", ["401d", "99999999999d", "1" + "0" * 400 + "s", "58w", "400d1ms"])
def test_durations_past_the_maximum_are_value_errors(text: str) -> None:
    with pytest.raises(ValueError, match="longer than 400d"):
        parse_duration(text)
    assert parse_duration("400d") == MAX_DURATION


@pytest.mark.parametrize("text", ["\uff15m", "\u0661\u0662s", "1\u0660s", "\U0001d7d3h"])
def test_unicode_digits_are_not_durations(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)
