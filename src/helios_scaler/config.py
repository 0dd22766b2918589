"""Server settings: one frozen, typed object, parsed once.

Every setting has the same name in three places, lowest precedence first:
the YAML config file (``prometheus_url: ...``), the environment
(``HELIOS_PROMETHEUS_URL=...``) and the command line (``--prometheus-url ...``).
A bad value raises :class:`~helios_scaler.errors.ConfigError` with one clear line.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

from helios_scaler.durations import parse_duration
from helios_scaler.errors import ConfigError

ENV_PREFIX = "HELIOS_"


@dataclass(frozen=True)
class Settings:
    """Everything the server is configured with.  Field help texts feed ``--help``."""

    grpc_port: int = field(default=6000, metadata={"help": "gRPC port of the ExternalScaler service"})
    http_port: int = field(default=8080, metadata={"help": "HTTP port of /metrics, /healthz, /readyz"})
    bind_address: str = field(default="0.0.0.0", metadata={"help": "address both ports listen on"})
    prometheus_url: str | None = field(
        default=None,
        metadata={"help": "default Prometheus base URL, used when a trigger has no serverAddress"},
    )
    allowed_server_addresses: tuple[str, ...] = field(
        default=(),
        metadata={"help": "other Prometheus URLs a trigger's serverAddress may name (comma-separated)"},
    )
    prometheus_bearer_token_file: Path | None = field(
        default=None, metadata={"help": "file holding a bearer token sent to Prometheus"}
    )
    prometheus_username: str | None = field(default=None, metadata={"help": "basic-auth user for Prometheus"})
    prometheus_password_file: Path | None = field(
        default=None, metadata={"help": "file holding the basic-auth password for Prometheus"}
    )
    prometheus_ca_file: Path | None = field(
        default=None, metadata={"help": "CA bundle to verify Prometheus' TLS certificate"}
    )
    prometheus_cert_file: Path | None = field(
        default=None, metadata={"help": "client certificate for mutual TLS to Prometheus"}
    )
    prometheus_key_file: Path | None = field(default=None, metadata={"help": "client key for mutual TLS to Prometheus"})
    query_timeout: timedelta = field(
        default=timedelta(seconds=10), metadata={"help": "timeout of one Prometheus range query"}
    )
    refresh_interval: timedelta = field(
        default=timedelta(seconds=30),
        metadata={"help": "how often new points are fetched and forecasts refreshed with the fitted model"},
    )
    retrain_interval: timedelta = field(
        default=timedelta(days=1),
        metadata={
            "help": "how often every series' models are re-selected and refitted "
            "(between retrains every refresh carries the fitted model's state forward)"
        },
    )
    stale_after: timedelta = field(
        default=timedelta(minutes=5),
        metadata={"help": "a series whose newest data is older than this is stale (health turns NOT_SERVING)"},
    )
    calendar_dir: Path | None = field(
        default=None,
        metadata={
            "help": "directory of known-event calendars (.csv or .yaml files, each named by its file name; "
            "a trigger's calendar metadata names those it uses); re-read when a file changes"
        },
    )
    state_dir: Path | None = field(
        default=None,
        metadata={
            "help": "directory where fitted models and history tails are checkpointed, so that a restarted "
            "server serves at once (warm restart); must be writable by the scaler only; none: cold starts"
        },
    )
    training_workers: int = field(default=1, metadata={"help": "processes that fit models in the background"})
    max_series: int = field(default=1000, metadata={"help": "most distinct series the server tracks"})
    max_series_per_namespace: int = field(
        default=250,
        metadata={"help": "most distinct series one namespace's ScaledObjects may make the server track (0: no limit)"},
    )
    max_scaledobjects_per_namespace: int = field(
        default=1000, metadata={"help": "most ScaledObject triggers one namespace may register (0: no limit)"}
    )
    namespace_server_addresses: tuple[tuple[str, str], ...] = field(
        default=(),
        metadata={
            "help": "namespace=URL pairs (comma-separated): a namespace listed may read only from its URLs "
            "(each the prometheus_url or in allowed_server_addresses); namespaces not listed: any allowed address"
        },
    )
    max_fetches_per_source: int = field(
        default=2, metadata={"help": "range queries in flight at once per Prometheus (a slow one cannot starve others)"}
    )
    max_answer_bytes: int = field(
        default=32 * 1024 * 1024,
        metadata={
            "help": "largest answer (bytes, after decompression) read from Prometheus for one range query; "
            "a larger one is refused as SourceUnavailable (parsing peaks at about 10x this in memory)"
        },
    )
    log_level: str = field(default="INFO", metadata={"help": "DEBUG, INFO, WARNING or ERROR"})
    log_format: str = field(default="json", metadata={"help": "json (one object per line) or text"})
    shutdown_grace: timedelta = field(
        default=timedelta(seconds=5), metadata={"help": "how long in-flight RPCs get on SIGTERM"}
    )


FIELDS = {f.name: f for f in dataclasses.fields(Settings)}


def _base_url(text: str) -> str:
    """A Prometheus base URL without its trailing slash; ValueError unless http(s)."""
    url = text.rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"{url!r} must start with http:// or https://")
    return url


def _namespace_pairs(raw: Any) -> tuple[tuple[str, str], ...]:
    """``ns=url,ns=url`` (or a YAML mapping of namespace to a URL or a list of URLs) → sorted pairs."""
    if isinstance(raw, Mapping):
        items = [f"{ns}={url}" for ns, urls in raw.items() for url in ([urls] if isinstance(urls, str) else urls)]
    else:
        items = raw.split(",") if isinstance(raw, str) else [str(item) for item in raw]
    pairs = []
    for item in (str(each).strip() for each in items):
        if not item:
            continue
        namespace, equals, url = item.partition("=")
        if not equals or not namespace.strip():
            raise ValueError(f"{item!r} is not namespace=URL")
        pairs.append((namespace.strip(), _base_url(url.strip())))
    return tuple(sorted(set(pairs)))


def _convert(name: str, raw: Any) -> Any:
    """Convert one raw value (YAML scalar or string) to the field's type."""
    default = FIELDS[name].default
    kind = FIELDS[name].type
    try:
        if name == "allowed_server_addresses":
            items = raw.split(",") if isinstance(raw, str) else list(raw)
            return tuple(_base_url(str(item).strip()) for item in items if str(item).strip())
        if name == "namespace_server_addresses":
            return _namespace_pairs(raw)
        if raw is None:
            if default is None:
                return None
            raise ValueError("a value is required")
        if isinstance(default, int):
            if isinstance(raw, bool | float) or not str(raw).strip().lstrip("-").isdigit():
                raise ValueError("expected a whole number")
            value = int(raw)
            if name.endswith("_port") and not 0 <= value <= 65535:
                raise ValueError("ports are 0-65535")
            if name in ("training_workers", "max_series", "max_fetches_per_source") and value < 1:
                raise ValueError("must be at least 1")
            if name in ("max_series_per_namespace", "max_scaledobjects_per_namespace") and value < 0:
                raise ValueError("must be 0 (no limit) or more")
            return value
        if isinstance(default, timedelta):
            duration = parse_duration(str(raw))
            if duration <= timedelta(0):
                raise ValueError("must be longer than 0s")
            return duration
        if "Path" in str(kind):
            return Path(str(raw))
        text = str(raw)
        if name == "log_level" and text.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError("accepted: DEBUG, INFO, WARNING, ERROR")
        if name == "log_format" and text not in ("json", "text"):
            raise ValueError("accepted: json, text")
        if name == "prometheus_url":
            text = _base_url(text)
        return text.upper() if name == "log_level" else text
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"setting {name}: {raw!r} is not valid ({exc})") from exc


def load_settings(
    config_file: Path | None = None,
    env: Mapping[str, str] | None = None,
    cli: Mapping[str, Any] | None = None,
) -> Settings:
    """Merge file < environment < command line into one validated :class:`Settings`."""
    merged: dict[str, Any] = {}
    if config_file is not None:
        try:
            loaded = yaml.safe_load(config_file.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"config file {config_file}: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {config_file}: expected a mapping of setting: value")
        for key, value in loaded.items():
            name = str(key).replace("-", "_")
            if name not in FIELDS:
                raise ConfigError(
                    f"config file {config_file}: unknown setting {key!r}; known: {', '.join(sorted(FIELDS))}"
                )
            merged[name] = value
    for key, value in (os.environ if env is None else env).items():
        if key.startswith(ENV_PREFIX) and key[len(ENV_PREFIX) :].lower() in FIELDS:
            merged[key[len(ENV_PREFIX) :].lower()] = value
    for key, value in (cli or {}).items():
        if value is not None:
            merged[key] = value
    return Settings(**{name: _convert(name, value) for name, value in merged.items()})
