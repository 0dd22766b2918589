"""Read history from Prometheus' range-query API.

:class:`PrometheusSource` is the production :class:`~helios_scaler.source.base.Source`.  It
uses prometheus-api-client's :meth:`PrometheusConnect.custom_query_range` on a
``requests.Session`` it configures itself (TLS, no hidden retries) and translates every
failure, once, into :mod:`helios_scaler.errors`:

* the server cannot be reached, does not answer within ``timeout`` or fails (5xx, bad
  credentials, not a Prometheus API) → :class:`~helios_scaler.errors.SourceUnavailable`;
* Prometheus rejects the PromQL (HTTP 400 ``bad_data``, 422 ``execution``) →
  :class:`~helios_scaler.errors.QueryError` carrying Prometheus' own error text;
* an empty result → :class:`~helios_scaler.errors.NoData`;
* more than one series → :class:`~helios_scaler.errors.MultipleSeries`.

Prometheus refuses range queries of more than 11,000 points per series, so long windows
are fetched in chunks that tile ``[start, end]`` without overlapping.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import urlsplit, urlunsplit

import polars as pl
import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.util.retry import Retry

from helios_scaler.errors import ConfigError, MultipleSeries, NoData, QueryError, SourceUnavailable
from helios_scaler.features.schema import DS, DS_DTYPE, Y_DTYPE, Y, empty_series

if TYPE_CHECKING:
    from helios_scaler.config import Settings

logger = logging.getLogger(__name__)

#: Prometheus rejects a range query whose ``(end - start) / step`` exceeds this.
MAX_POINTS_PER_QUERY = 11_000

#: How many label sets a :class:`MultipleSeries` message shows.
_SHOWN_SERIES = 3


def normalize_url(url: str) -> str:
    """The canonical form of a base URL: scheme and host lower-cased, no trailing slash.

    Pure string work, never raises: used both for configured URLs and for untrusted
    ``serverAddress`` values that are only compared against the allowlist.
    """
    text = url.strip()
    parts = urlsplit(text)
    if not parts.scheme or not parts.netloc:
        return text.rstrip("/")
    userinfo, at, hostport = parts.netloc.rpartition("@")
    netloc = f"{userinfo}{at}{hostport.lower()}"
    return urlunsplit((parts.scheme.lower(), netloc, parts.path.rstrip("/"), parts.query, parts.fragment))


def _read_secret(path: Path, what: str) -> str:
    """The stripped content of a credentials file; ConfigError naming the file otherwise."""
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the Prometheus {what} file {str(path)!r}: {exc}") from exc
    if not secret:
        raise ConfigError(f"the Prometheus {what} file {str(path)!r} is empty")
    return secret


def _check_readable(path: Path, what: str) -> str:
    """``str(path)`` if the file can be opened for reading; ConfigError naming it otherwise."""
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise ConfigError(f"cannot read the Prometheus {what} file {str(path)!r}: {exc}") from exc
    return str(path)


class _HTTPStatusError(Exception):
    """Raised by the session's response hook for any non-200 answer (carries the body)."""

    def __init__(self, status: int, error_type: str, error: str) -> None:
        super().__init__(f"HTTP {status} {error_type}: {error}")
        self.status = status
        self.error_type = error_type
        self.error = error


def _raise_for_status(response: requests.Response, *args: Any, **kwargs: Any) -> None:
    """A ``requests`` response hook: turn a non-200 answer into :class:`_HTTPStatusError`.

    prometheus-api-client folds the body of an error into an opaque exception message; the
    hook keeps Prometheus' own ``errorType``/``error`` fields instead.
    """
    if response.status_code == 200 or response.is_redirect:  # requests follows redirects itself
        return
    error_type, error = "", response.text.strip()[:500]
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        error_type = str(body.get("errorType", ""))
        error = str(body.get("error", error))
    raise _HTTPStatusError(response.status_code, error_type, error or response.reason or "")


def _reason(exc: requests.RequestException) -> str:
    """The innermost useful text of a requests error (urllib3's MaxRetryError wraps the cause)."""
    inner = exc.args[0] if exc.args else exc
    return str(getattr(inner, "reason", None) or inner)


def _label_set(metric: Mapping[str, str]) -> str:
    """A series' labels the way PromQL writes them: ``name{a="1", b="2"}``."""
    name = metric.get("__name__", "")
    labels = ", ".join(f'{key}="{value}"' for key, value in sorted(metric.items()) if key != "__name__")
    return f"{name}{{{labels}}}"


def _chunks(start_s: int, end_s: int, step_s: int) -> Iterator[tuple[int, int]]:
    """Tile ``[start_s, end_s]`` (whole seconds) into ranges of at most 11,000 points each.

    Each range is inclusive at both ends; the next one starts one step after the previous
    one's last evaluation time, so no point is fetched twice and the step grid is kept.
    """
    span = (MAX_POINTS_PER_QUERY - 1) * step_s
    for chunk_start in range(start_s, end_s + 1, span + step_s):
        yield chunk_start, min(chunk_start + span, end_s)


class PrometheusSource:
    """History from one Prometheus server (see the module docstring for the error mapping).

    Credentials are read once, here: a token or password file that cannot be read raises
    :class:`~helios_scaler.errors.ConfigError` naming the file.  ``timeout`` bounds one
    :meth:`fetch` as a whole (all its chunks), both on the client and as Prometheus'
    own ``timeout`` query parameter; failed requests are not retried here (the caller
    fetches again on its next refresh).
    """

    def __init__(
        self,
        url: str,
        *,
        bearer_token_file: Path | None = None,
        username: str | None = None,
        password_file: Path | None = None,
        ca_file: Path | None = None,
        cert_file: Path | None = None,
        key_file: Path | None = None,
        timeout: timedelta = timedelta(seconds=10),
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.url = normalize_url(url)
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"Prometheus URL {url!r} is not valid: expected http(s)://host[:port][/path]")
        if parts.username is not None or parts.password is not None:
            raise ConfigError(
                f"Prometheus URL for host {parts.hostname!r} embeds credentials; "
                "use username and password_file (or bearer_token_file) instead"
            )
        if timeout <= timedelta(0):
            raise ConfigError(f"Prometheus query timeout must be positive, got {timeout}")
        if bearer_token_file is not None and (username is not None or password_file is not None):
            raise ConfigError("Prometheus credentials: set a bearer token file or basic auth, not both")
        if password_file is not None and username is None:
            raise ConfigError(f"Prometheus password file {str(password_file)!r} is set without a username")
        if key_file is not None and cert_file is None:
            raise ConfigError(f"Prometheus client key file {str(key_file)!r} is set without a certificate")

        #: The normalized base URL; stable for logs, metrics and series keys.
        self.name = self.url
        self.timeout = timeout
        self._clock = clock or (lambda: datetime.now(UTC))

        headers: dict[str, str] = {}
        if bearer_token_file is not None:
            headers["Authorization"] = f"Bearer {_read_secret(bearer_token_file, 'bearer token')}"
        auth: tuple[str, str] | None = None
        if username is not None:
            password = "" if password_file is None else _read_secret(password_file, "password")
            auth = (username, password)

        session = requests.Session()
        if ca_file is not None:
            session.verify = _check_readable(ca_file, "CA")
        if cert_file is not None:
            cert = _check_readable(cert_file, "client certificate")
            session.cert = cert if key_file is None else (cert, _check_readable(key_file, "client key"))
        session.hooks["response"].append(_raise_for_status)
        # No retries: a retried read timeout would multiply the deadline, and a retried 5xx
        # only delays the error; the trainer fetches again on its next refresh anyway.
        self._client = PrometheusConnect(
            url=self.url,
            headers=headers or None,
            auth=auth,
            session=session,
            retry=Retry(total=0, read=False),
        )
        self._session = session
        self._has_credentials = bool(headers) or auth is not None

    @classmethod
    def from_settings(cls, url: str, settings: Settings) -> Self:
        """A source for ``url`` with the credentials, TLS files and timeout of ``settings``."""
        return cls(
            url,
            bearer_token_file=settings.prometheus_bearer_token_file,
            username=settings.prometheus_username,
            password_file=settings.prometheus_password_file,
            ca_file=settings.prometheus_ca_file,
            cert_file=settings.prometheus_cert_file,
            key_file=settings.prometheus_key_file,
            timeout=settings.query_timeout,
        )

    def __repr__(self) -> str:
        return f"PrometheusSource({self.url!r}, credentials={self._has_credentials})"

    def now(self) -> datetime:
        """The current time (the injected clock, by default the wall clock), tz-aware UTC."""
        return self._clock()

    def close(self) -> None:
        """Release the HTTP connection pool."""
        self._session.close()

    def fetch(self, query: str, start: datetime, end: datetime, step: timedelta) -> pl.DataFrame:
        """Return the one series ``query`` yields at ``start, start + step, ... <= end``.

        ``start`` is rounded up and ``end`` down to whole seconds; ``step`` must be a whole
        number of seconds.  Raises ``SourceUnavailable``, ``QueryError``, ``NoData`` or
        ``MultipleSeries`` (all naming the query and the URL).
        """
        if start.tzinfo is None or end.tzinfo is None:
            raise ValueError("start and end must be timezone-aware")
        step_s = step.total_seconds()
        if step_s < 1 or step_s != int(step_s):
            raise ValueError(f"step must be a positive whole number of seconds, got {step}")
        start_s, end_s = math.ceil(start.timestamp()), math.floor(end.timestamp())
        if start_s > end_s:
            raise ValueError(f"start {start.isoformat()} is after end {end.isoformat()}")

        deadline = time.monotonic() + self.timeout.total_seconds()
        series: dict[tuple[tuple[str, str], ...], list[Sequence[Any]]] = {}
        for chunk_start, chunk_end in _chunks(start_s, end_s, int(step_s)):
            for item in self._query_range(query, chunk_start, chunk_end, int(step_s), deadline):
                key = tuple(sorted(item.get("metric", {}).items()))
                series.setdefault(key, []).extend(item.get("values", []))

        if not series:
            raise NoData(
                f"query {query!r} on {self.url} returned no samples between "
                f"{datetime.fromtimestamp(start_s, UTC).isoformat()} and "
                f"{datetime.fromtimestamp(end_s, UTC).isoformat()}"
            )
        if len(series) > 1:
            shown = "; ".join(_label_set(dict(key)) for key in list(series)[:_SHOWN_SERIES])
            more = f" and {len(series) - _SHOWN_SERIES} more" if len(series) > _SHOWN_SERIES else ""
            raise MultipleSeries(
                f"query {query!r} on {self.url} returned {len(series)} series ({shown}{more}); "
                "the scaler needs exactly one: aggregate with sum(...) (or avg/max) "
                "or use a narrower label selector"
            )
        (values,) = series.values()
        return self._to_frame(query, values)

    def _query_range(self, query: str, start_s: int, end_s: int, step_s: int, deadline: float) -> list[dict[str, Any]]:
        """One ``/api/v1/query_range`` call, its failures translated to Helios errors."""
        remaining = deadline - time.monotonic()
        where = f"query {query!r} on {self.url}"
        if remaining <= 0:
            raise SourceUnavailable(f"{where}: timed out after {self.timeout.total_seconds():g}s")
        logger.debug("query_range %s start=%d end=%d step=%ds on %s", query, start_s, end_s, step_s, self.url)
        try:
            result = self._client.custom_query_range(
                query,
                start_time=datetime.fromtimestamp(start_s, UTC),
                end_time=datetime.fromtimestamp(end_s, UTC),
                step=str(step_s),
                params={"timeout": f"{max(remaining, 0.001):.3f}"},  # Prometheus' own evaluation timeout
                timeout=remaining,
            )
        except _HTTPStatusError as exc:
            if exc.status in (400, 422):
                raise QueryError(f"{where} was rejected: {exc.error}") from exc
            raise SourceUnavailable(
                f"{where} failed: HTTP {exc.status} {exc.error_type or 'error'}: {exc.error}"
            ) from exc
        except requests.Timeout as exc:
            raise SourceUnavailable(
                f"{where}: no answer within {self.timeout.total_seconds():g}s ({type(exc).__name__})"
            ) from exc
        except requests.RequestException as exc:
            raise SourceUnavailable(f"{where}: cannot reach Prometheus: {_reason(exc)}") from exc
        except PrometheusApiClientException as exc:  # only if the hook was bypassed
            raise SourceUnavailable(f"{where} failed: {exc}") from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise SourceUnavailable(f"{where}: the answer is not Prometheus' API ({exc!r})") from exc
        if not isinstance(result, list):
            raise SourceUnavailable(f"{where}: expected a matrix result, got {type(result).__name__}")
        return result

    def _to_frame(self, query: str, values: list[Sequence[Any]]) -> pl.DataFrame:
        """``[[unix_seconds, "value"], ...]`` → a sorted ``ds``/``y`` frame (NaN/±Inf kept)."""
        if not values:
            return empty_series()
        try:
            micros = [round(float(ts) * 1_000_000) for ts, _ in values]
            ys = [float(value) for _, value in values]  # float() parses "NaN", "+Inf", "-Inf"
        except (TypeError, ValueError) as exc:
            raise SourceUnavailable(f"query {query!r} on {self.url}: malformed sample in the answer ({exc})") from exc
        return (
            pl.DataFrame({DS: pl.Series(micros, dtype=pl.Int64), Y: pl.Series(ys, dtype=Y_DTYPE)})
            .with_columns(pl.col(DS).cast(pl.Datetime("us")).dt.replace_time_zone("UTC").cast(DS_DTYPE))
            .sort(DS)
        )
