"""load_settings (file < env < cli, one ConfigError line per bad value) and Go-style durations."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from helios_scaler.config import FIELDS, Settings, load_settings
from helios_scaler.durations import ACCEPTED, format_duration, parse_duration
from helios_scaler.errors import ConfigError


@pytest.fixture
def config_file(tmp_path: Path):
    def write(text: str) -> Path:
        path = tmp_path / "helios.yaml"
        path.write_text(text)
        return path

    return write


def test_defaults_without_any_source() -> None:
    assert load_settings(None, env={}, cli={}) == Settings()


def test_precedence_file_then_env_then_cli(config_file) -> None:
    path = config_file("grpc_port: 7000\nhttp_port: 7100\nlog_level: warning\n")
    env = {"HELIOS_GRPC_PORT": "7001", "HELIOS_HTTP_PORT": "7101"}
    cli = {"grpc_port": 7002, "http_port": None}

    only_file = load_settings(path, env={}, cli={})
    assert (only_file.grpc_port, only_file.http_port, only_file.log_level) == (7000, 7100, "WARNING")

    file_env = load_settings(path, env=env, cli={})
    assert (file_env.grpc_port, file_env.http_port, file_env.log_level) == (7001, 7101, "WARNING")

    # A CLI value of None (flag not given) does not override the environment.
    all_three = load_settings(path, env=env, cli=cli)
    assert (all_three.grpc_port, all_three.http_port, all_three.log_level) == (7002, 7101, "WARNING")


def test_env_helios_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "HELIOS_PROMETHEUS_URL": "http://prometheus.monitoring:9090/",
        "HELIOS_LOG_LEVEL": "debug",
        "HELIOS_MAX_SERIES": "25",
        "HELIOS_PROMETHEUS_CA_FILE": "/etc/helios/ca.pem",
        "HELIOS_PROMETHEUS_USERNAME": "scaler",
        "PROMETHEUS_URL": "http://ignored:9090",  # no prefix
        "HELIOS_NOT_A_SETTING": "x",  # not a setting: ignored
        "helios_grpc_port": "1",  # the prefix is upper case
    }
    settings = load_settings(None, env=env)
    assert settings.prometheus_url == "http://prometheus.monitoring:9090"
    assert settings.log_level == "DEBUG"
    assert settings.max_series == 25
    assert settings.prometheus_ca_file == Path("/etc/helios/ca.pem")
    assert settings.prometheus_username == "scaler"
    assert settings.grpc_port == 6000

    # env=None reads the process environment.
    monkeypatch.setenv("HELIOS_TRAINING_WORKERS", "3")
    assert load_settings().training_workers == 3


def test_durations_from_each_source(config_file) -> None:
    path = config_file("refresh_interval: 45s\nretrain_interval: 2h\n")
    settings = load_settings(path, env={"HELIOS_QUERY_TIMEOUT": "1m30s"}, cli={"stale_after": "10m"})
    assert settings.refresh_interval == timedelta(seconds=45)
    assert settings.retrain_interval == timedelta(hours=2)
    assert settings.query_timeout == timedelta(seconds=90)
    assert settings.stale_after == timedelta(minutes=10)


def test_allowed_server_addresses_comma_list() -> None:
    settings = load_settings(
        None, env={"HELIOS_ALLOWED_SERVER_ADDRESSES": " http://a:9090/, https://b.example:443 ,, "}
    )
    assert settings.allowed_server_addresses == ("http://a:9090", "https://b.example:443")


def test_allowed_server_addresses_yaml_list(config_file) -> None:
    path = config_file("allowed_server_addresses:\n  - http://a:9090/\n  - http://b:9090\n")
    assert load_settings(path, env={}).allowed_server_addresses == ("http://a:9090", "http://b:9090")


def test_file_keys_may_use_dashes(config_file) -> None:
    assert load_settings(config_file("grpc-port: 7000\n"), env={}).grpc_port == 7000


def test_empty_file_gives_defaults(config_file) -> None:
    assert load_settings(config_file(""), env={}) == Settings()


BAD = [
    ("grpc_port", "abc"),
    ("grpc_port", "70000"),
    ("http_port", "-1"),
    ("training_workers", "0"),
    ("max_series", "0"),
    ("log_level", "verbose"),
    ("log_format", "xml"),
    ("prometheus_url", "prometheus:9090"),
    ("query_timeout", "10"),
    ("refresh_interval", "soon"),
    ("refresh_interval", "0s"),
    ("stale_after", "0s"),
    ("query_timeout", "0s"),
    ("allowed_server_addresses", "http://ok:9090,prometheus:9090"),
]


@pytest.mark.parametrize(("name", "raw"), BAD, ids=[f"{n}={r}" for n, r in BAD])
def test_bad_env_value_names_the_setting(name: str, raw: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(None, env={f"HELIOS_{name.upper()}": raw})
    message = str(info.value)
    assert f"setting {name}:" in message
    assert repr(raw) in message
    assert "\n" not in message


@pytest.mark.parametrize(("name", "raw"), BAD[:4], ids=[f"{n}={r}" for n, r in BAD[:4]])
def test_bad_cli_value_names_the_setting(name: str, raw: str) -> None:
    with pytest.raises(ConfigError, match=f"setting {name}:"):
        load_settings(None, env={}, cli={name: raw})


@pytest.mark.parametrize(
    "text",
    ["grpc_port: null", "grpc_port: 6000.5", "grpc_port: true", "max_series: 2.7", "query_timeout: null"],
)
def test_yaml_scalar_of_the_wrong_type_is_rejected(config_file, text: str) -> None:
    # A YAML float/bool for a port or a count must not be truncated to an int
    # (6000.5 → 6000, true → 1, 2.7 → 2), and null must not be stored as None in a
    # setting that is not optional: each is a bad value.
    name = text.split(":")[0]
    with pytest.raises(ConfigError, match=f"setting {name}:"):
        load_settings(config_file(text + "\n"), env={})


def test_unknown_file_key_lists_known_settings(config_file) -> None:
    path = config_file("grpc_prot: 7000\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    message = str(info.value)
    assert "unknown setting 'grpc_prot'" in message
    assert str(path) in message
    assert "known: " + ", ".join(sorted(FIELDS)) in message


@pytest.mark.parametrize("text", ["- grpc_port\n- 7000\n", "42\n", "just a string\n"])
def test_non_mapping_yaml_is_rejected(config_file, text: str) -> None:
    with pytest.raises(ConfigError, match="expected a mapping of setting: value"):
        load_settings(config_file(text), env={})


def test_malformed_yaml_is_a_config_error(config_file) -> None:
    with pytest.raises(ConfigError, match="config file"):
        load_settings(config_file("grpc_port: [7000\n"), env={})


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=str(missing)):
        load_settings(missing, env={})


# --- durations ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("5m", timedelta(minutes=5)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1h0m0s", timedelta(hours=1)),
        ("1.5h", timedelta(minutes=90)),
        ("250ms", timedelta(milliseconds=250)),
        ("7d", timedelta(days=7)),
        ("2w", timedelta(days=14)),
        ("0s", timedelta(0)),
        ("  10m ", timedelta(minutes=10)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "   ", "5", "m5", "5x", "-5m", "5 m", "5M", "1h30", "1..5m", "h"])
def test_parse_duration_errors_say_what_is_accepted(text: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(text)
    assert ACCEPTED in str(info.value)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(0), "0s"),
        (timedelta(seconds=90), "1m30s"),
        (timedelta(hours=1), "1h"),
        (timedelta(days=7), "7d"),
        (timedelta(days=1, hours=2, minutes=3, seconds=4), "1d2h3m4s"),
        (timedelta(weeks=2), "14d"),
    ],
)
def test_format_duration(value: timedelta, text: str) -> None:
    assert format_duration(value) == text


@pytest.mark.parametrize("seconds", [0, 1, 59, 60, 61, 3599, 3600, 3661, 86399, 86400, 90061, 7_776_000])
def test_parse_format_round_trip(seconds: int) -> None:
    value = timedelta(seconds=seconds)
    assert parse_duration(format_duration(value)) == value


@pytest.mark.parametrize("text", ["0s", "5m", "1h30m", "7d", "1d2h3m4s", "10s"])
def test_format_parse_round_trip_of_canonical_text(text: str) -> None:
    assert format_duration(parse_duration(text)) == text
