"""Read history from Prometheus' range-query API.

:class:`PrometheusSource` is the production :class:`~helios_scaler.source.base.Source`.  It
calls ``/api/v1/query_range`` on a ``requests.Session`` it configures itself (TLS, no hidden
retries, no redirects), reads each answer streamed and size-capped, checks its structure
explicitly and translates every failure, once, into :mod:`helios_scaler.errors`:

* the server cannot be reached, gives no complete answer within ``timeout``, redirects,
  fails (5xx, bad credentials) or answers with something that is not Prometheus' API (not
  JSON, wrong shape, samples outside the asked range, too many samples, an answer larger
  than ``max_answer_bytes``) → :class:`~helios_scaler.errors.SourceUnavailable`;
* Prometheus rejects the PromQL (HTTP 400 ``bad_data``, 422 ``execution``) →
  :class:`~helios_scaler.errors.QueryError` carrying Prometheus' own error text;
* an empty result → :class:`~helios_scaler.errors.NoData`;
* more than one series → :class:`~helios_scaler.errors.MultipleSeries`.

Text taken from an answer (error fields, non-JSON bodies, label values) reaches a message
only as a short excerpt with non-printable characters replaced (:func:`answer_excerpt`).

Prometheus refuses range queries of more than 11,000 points per series, so long windows
are fetched in chunks that tile ``[start, end]`` without overlapping.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import threading
import time
from array import array
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self
from urllib.parse import urljoin, urlsplit, urlunsplit

import numpy as np
import polars as pl
import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util.retry import Retry

from helios_scaler.errors import ConfigError, MultipleSeries, NoData, QueryError, SourceUnavailable
from helios_scaler.features.schema import DS, DS_DTYPE, Y_DTYPE, Y, empty_series

if TYPE_CHECKING:
    from helios_scaler.config import Settings

logger = logging.getLogger(__name__)

#: Prometheus rejects a range query whose ``(end - start) / step`` exceeds this.
MAX_POINTS_PER_QUERY = 11_000

#: The default of :attr:`PrometheusSource.max_answer_bytes` (and of the ``max_answer_bytes`` setting).
DEFAULT_MAX_ANSWER_BYTES: Final = 32 * 1024 * 1024

#: Connections kept per source: concurrent fetches each get their own, so a slow or failing one
#: never waits for another (more than this are opened and closed instead of pooled, never blocked).
POOL_CONNECTIONS: Final = 16

#: Distinct series of an answer kept (their labels) for the :class:`MultipleSeries` message; beyond
#: this they are only counted.
MAX_SERIES_KEPT: Final = 100

#: Characters of answer text (an error field, a body) an error message repeats.
ANSWER_EXCERPT_CHARS: Final = 200

#: How many label sets a :class:`MultipleSeries` message shows.
_SHOWN_SERIES = 3

#: Characters of one label value a :class:`MultipleSeries` message shows.
_LABEL_VALUE_CHARS = 60

#: Bytes read per step of a streamed answer (the deadline is checked between steps).
_READ_BYTES = 64 * 1024

#: Most bytes of an error answer (non-200) read: enough for Prometheus' error JSON.
_ERROR_BODY_BYTES = 64 * 1024

#: How often the watchdog looks again for a connection whose socket is still being created.
_WATCHDOG_POLL_S = 0.05

_SECONDS_PER_YEAR = 365.2425 * 86_400


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


def answer_excerpt(text: str, limit: int = ANSWER_EXCERPT_CHARS) -> str:
    """At most ``limit`` characters of untrusted ``text``, safe to put in a message or a log line.

    Surrounding whitespace is dropped, line breaks and tabs become spaces, other non-printable
    characters become U+FFFD; a cut text ends with ``…``.
    """
    stripped = text.strip()
    head = "".join(char if char.isprintable() else " " if char.isspace() else "\ufffd" for char in stripped[:limit])
    return head + "…" if len(stripped) > limit else head


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


_NOT_WARNED: Final = object()


class _SecretFile:
    """A credential kept in a file, re-read when the file changes (a rotated token or password).

    The file is read at construction (:class:`ConfigError` naming it if that fails).  Each
    :meth:`get` compares the file's identity (inode, size, modification time) with the one read
    last — one ``stat``, no read — and re-reads it when it changed.  A changed file that cannot
    be read or is empty keeps the previous secret, with one warning per such change.
    """

    def __init__(self, path: Path, what: str) -> None:
        self.path = path
        self.what = what
        self._lock = threading.Lock()
        self._stamp = self._stat()
        self._value = _read_secret(path, what)
        self._warned: object = _NOT_WARNED

    def _stat(self) -> tuple[int, int, int, int] | None:
        try:
            stat = os.stat(self.path)
        except OSError:
            return None
        return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns

    def get(self) -> str:
        """The current secret (re-read first if the file changed since the last read)."""
        stamp = self._stat()
        with self._lock:
            if stamp == self._stamp and stamp is not None:
                return self._value
            try:
                value = _read_secret(self.path, self.what)
            except ConfigError as exc:
                if self._warned != stamp:
                    self._warned = stamp
                    logger.warning("%s; keeping the previous %s", exc, self.what)
                return self._value
            if value != self._value:
                logger.info("re-read the Prometheus %s file %r", self.what, str(self.path))
            self._value, self._stamp, self._warned = value, stamp, _NOT_WARNED
            return self._value


# --- one total deadline per fetch ------------------------------------------------------------

_active = threading.local()


class _Deadline:
    """The total time one :meth:`PrometheusSource.fetch` may take, enforced on its sockets.

    ``requests``' read timeout bounds each ``recv``, not the answer: a server dripping a byte
    every second never trips it.  Between reads the fetch checks :meth:`remaining`; a watchdog
    (a :class:`threading.Timer`) shuts down, at the deadline, the socket of the connection
    this fetch is connecting or waiting for headers on (tracked by :func:`_watching`) and the
    socket of the answer it is reading, so a blocked ``recv`` returns at once.  Connections
    are tracked only while this thread uses them, so a pooled connection another fetch
    picks up is never touched.
    """

    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds
        self.expired = False
        self._lock = threading.Lock()
        self._connections: list[HTTPConnection] = []
        self._responses: list[urllib3.BaseHTTPResponse] = []
        self._timer: threading.Timer | None = None
        self._done = False

    def remaining(self) -> float:
        """Seconds left (negative once passed)."""
        return self.at - time.monotonic()

    def passed(self) -> bool:
        """Whether the deadline has passed (the watchdog fired or the clock says so)."""
        return self.expired or self.remaining() <= 0

    def __enter__(self) -> Self:
        _active.deadline = self
        self._arm(max(self.remaining(), 0.0))
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        _active.deadline = None
        with self._lock:
            self._done = True
            self._connections.clear()
            self._responses.clear()
            timer = self._timer
        if timer is not None:
            timer.cancel()

    def _arm(self, delay: float) -> None:
        timer = threading.Timer(delay, self._expire)
        timer.name = "helios-fetch-deadline"
        timer.daemon = True
        self._timer = timer
        timer.start()

    @contextmanager
    def watching(self, connection: HTTPConnection) -> Iterator[None]:
        """Track ``connection`` while this thread connects or waits for an answer's headers."""
        with self._lock:
            if self.expired:
                raise TimeoutError("the fetch's deadline has passed")
            self._connections.append(connection)
        try:
            yield
        finally:
            with self._lock:
                if connection in self._connections:
                    self._connections.remove(connection)

    def watch_answer(self, response: urllib3.BaseHTTPResponse) -> None:
        """Track an answer whose body is being read (untracked at :meth:`__exit__`)."""
        with self._lock:
            self._responses.append(response)
            expired = self.expired
        if expired:
            _shutdown_answer(response)

    def _expire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.expired = True
            connecting = False
            for connection in self._connections:
                sock = connection.sock
                if sock is None:
                    connecting = True  # bounded by the connect timeout; look again shortly
                    continue
                with suppress(OSError):
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)
            for response in self._responses:
                _shutdown_answer(response)
            if connecting:
                self._arm(_WATCHDOG_POLL_S)


def _shutdown_answer(response: urllib3.BaseHTTPResponse) -> None:
    """Make a blocked read of ``response`` return (no-op once it went back to the pool)."""
    with suppress(ValueError, RuntimeError, OSError):
        response.shutdown()


@contextmanager
def _watching(connection: HTTPConnection) -> Iterator[None]:
    """:meth:`_Deadline.watching` for the current thread's fetch, if one is running."""
    deadline: _Deadline | None = getattr(_active, "deadline", None)
    if deadline is None:
        yield
        return
    with deadline.watching(connection):
        yield


class _Watched:
    """Mixed into urllib3's connections: the running fetch's watchdog can interrupt connecting (the TLS
    handshake included) and waiting for the answer."""

    def connect(self) -> None:
        with _watching(self):  # type: ignore[arg-type]
            super().connect()  # type: ignore[misc]

    def getresponse(self) -> urllib3.HTTPResponse:
        with _watching(self):  # type: ignore[arg-type]
            return super().getresponse()  # type: ignore[misc,no-any-return]


class _WatchedHTTPConnection(_Watched, HTTPConnection):  # type: ignore[misc]
    """An HTTP connection the running fetch's watchdog can interrupt."""


class _WatchedHTTPSConnection(_Watched, HTTPSConnection):  # type: ignore[misc]
    """:class:`_WatchedHTTPConnection` for TLS."""


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class _Adapter(HTTPAdapter):
    """``requests``' adapter with connections the fetch deadline's watchdog can interrupt."""

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any) -> None:
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


# --- reading and checking an answer ----------------------------------------------------------


class _NotPrometheus(Exception):
    """An answer that is not Prometheus' API; the message says what, briefly."""


def _json_type(value: object) -> str:
    """A JSON value's kind, for messages: ``an object``, ``a list``, ``a string``, …"""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "null" if value is None else type(value).__name__


def _shown(value: object) -> str:
    """A JSON scalar shown briefly (its repr, cut), a container by its kind only."""
    if isinstance(value, str | int | float | bool) or value is None:
        return answer_excerpt(repr(value), 60)
    return _json_type(value)


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


def _format_time(stamp: float) -> str:
    """A sample time for a message: ISO 8601 when representable, else the number and its year."""
    try:
        return datetime.fromtimestamp(stamp, UTC).isoformat()
    except (OverflowError, ValueError, OSError):
        pass
    try:
        year = 1970 + float(stamp) / _SECONDS_PER_YEAR
    except OverflowError:
        return answer_excerpt(repr(stamp), 40)
    if not math.isfinite(year):
        return repr(float(stamp))
    return (
        f"unix time {float(stamp):.6g} (year ~{math.floor(year):,})" if year < 1e9 else f"unix time {float(stamp):.6g}"
    )


@dataclass
class _Series:
    """One series of one answer: its label set and its samples."""

    key: tuple[tuple[str, str], ...]
    micros: array[int]
    ys: array[float]


def _parse_matrix(body: bytearray, start_s: int, end_s: int, step_s: int) -> list[_Series]:
    """Check that ``body`` is Prometheus' answer to a range query over ``[start_s, end_s]``.

    Every shape the API never produces raises :class:`_NotPrometheus`: a non-object, a
    ``status`` other than ``success``, no ``data``, a ``resultType`` other than ``matrix``,
    result items that are not ``{"metric": {str: str}, "values": [[time, "value"], ...]}``,
    a sample time that is not a finite number inside the asked range, more samples for one
    series than the range has steps.  ``body`` is emptied once parsed (it may be large).
    """
    try:
        answer = json.loads(body)
    except (ValueError, RecursionError) as exc:
        text = bytes(body[: ANSWER_EXCERPT_CHARS * 4]).decode("utf-8", "replace")
        raise _NotPrometheus(f"not JSON: {answer_excerpt(text)!r}") from exc
    finally:
        body.clear()
    if not isinstance(answer, dict):
        raise _NotPrometheus(f"the answer is {_json_type(answer)}, not an object")
    status = answer.get("status")
    if status != "success":
        error = answer.get("error")
        detail = f" (error: {answer_excerpt(str(error))})" if error else ""
        raise _NotPrometheus(f'status is {_shown(status)}, not "success"{detail}')
    data = answer.get("data")
    if not isinstance(data, dict):
        raise _NotPrometheus("no data object" if data is None else f"data is {_json_type(data)}, not an object")
    result_type = data.get("resultType")
    if result_type != "matrix":
        raise _NotPrometheus(f'resultType is {_shown(result_type)}, not "matrix"')
    result = data.get("result")
    if not isinstance(result, list):
        raise _NotPrometheus(f"data.result is {_json_type(result)}, not a list")
    points = (end_s - start_s) // step_s + 1
    return [_parse_series(index, item, start_s, end_s, points) for index, item in enumerate(result)]


def _parse_series(index: int, item: object, start_s: int, end_s: int, points: int) -> _Series:
    """One result item → :class:`_Series` (see :func:`_parse_matrix` for what is refused)."""
    where = f"result[{index}]"
    if not isinstance(item, dict):
        raise _NotPrometheus(f"{where} is {_json_type(item)}, not an object")
    metric = item.get("metric", {})
    if not isinstance(metric, dict):
        raise _NotPrometheus(f"{where}.metric is {_json_type(metric)}, not an object")
    for name, value in metric.items():
        if not isinstance(value, str):
            raise _NotPrometheus(f"label {answer_excerpt(name, 60)!r} of {where} is {_json_type(value)}, not a string")
    values = item.get("values", [])
    if not isinstance(values, list):
        raise _NotPrometheus(f"{where}.values is {_json_type(values)}, not a list")
    if len(values) > points:
        raise _NotPrometheus(f"{where} has {len(values)} samples where the asked range has {points} steps")
    micros: array[int] = array("q")
    ys: array[float] = array("d")
    for position, sample in enumerate(values):
        if not isinstance(sample, list) or len(sample) != 2:
            raise _NotPrometheus(f'sample {position} of {where} is {_shown(sample)}, not [time, "value"]')
        stamp, value = sample
        if isinstance(stamp, bool) or not isinstance(stamp, int | float):
            raise _NotPrometheus(f"sample {position} of {where} has a time that is {_json_type(stamp)}")
        if not start_s <= stamp <= end_s:  # also refuses NaN and ±Inf
            raise _NotPrometheus(
                f"sample {position} of {where} is stamped {_format_time(stamp)}, outside the asked range "
                f"{_iso(start_s)} to {_iso(end_s)}"
            )
        if not isinstance(value, str):
            raise _NotPrometheus(f"sample {position} of {where} has a value that is {_json_type(value)}, not a string")
        try:
            ys.append(float(value))  # parses "NaN", "+Inf", "-Inf"
        except ValueError:
            raise _NotPrometheus(
                f"sample {position} of {where} has the value {answer_excerpt(value, 40)!r}, not a number"
            ) from None
        micros.append(round(stamp * 1_000_000))
    return _Series(tuple(sorted(metric.items())), micros, ys)


def _error_fields(body: bytearray) -> tuple[str, str]:
    """``(errorType, error)`` of an error answer, or ``("", body text)`` if it is not Prometheus' JSON."""
    try:
        answer = json.loads(body)
    except (ValueError, RecursionError):
        answer = None
    if isinstance(answer, dict) and "error" in answer:
        return str(answer.get("errorType") or ""), str(answer.get("error") or "")
    return "", bytes(body[: ANSWER_EXCERPT_CHARS * 4]).decode("utf-8", "replace")


def _reason(exc: BaseException) -> str:
    """The innermost useful text of a requests error (urllib3's MaxRetryError wraps the cause)."""
    inner = exc.args[0] if exc.args else exc
    return answer_excerpt(str(getattr(inner, "reason", None) or inner))


def _origin(base: str, location: str | None) -> str | None:
    """``scheme://host:port`` of a redirect's target (nothing of its path or query), or None."""
    if not location:
        return None
    try:
        parts = urlsplit(urljoin(base + "/", location))
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:
        return None
    if not parts.scheme or not parts.hostname:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return answer_excerpt(f"{parts.scheme}://{host}:{port}", 100)


def _label_set(metric: Mapping[str, str]) -> str:
    """A series' labels the way PromQL writes them: ``name{a="1", b="2"}`` (long values cut)."""
    name = answer_excerpt(metric.get("__name__", ""), _LABEL_VALUE_CHARS)
    labels = ", ".join(
        f'{answer_excerpt(key, _LABEL_VALUE_CHARS)}="{answer_excerpt(value, _LABEL_VALUE_CHARS)}"'
        for key, value in sorted(metric.items())
        if key != "__name__"
    )
    return answer_excerpt(f"{name}{{{labels}}}")


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

    Credentials (a bearer token file, or a username with a password file, and a client
    certificate) are sent to this source's URL only; the token and password files are read
    here — one that cannot be read raises :class:`~helios_scaler.errors.ConfigError` naming
    it — and re-read when they change (see :class:`_SecretFile`).

    ``timeout`` bounds one :meth:`fetch` as a whole — connecting, waiting, reading every
    byte of every chunk — both on the client (a watchdog interrupts a server that drips its
    answer) and as Prometheus' own ``timeout`` query parameter.  ``max_answer_bytes`` bounds
    one answer's body (after decompression); larger answers are refused, not parsed.
    Redirects are not followed and failed requests are not retried (the caller fetches again
    on its next refresh).  Concurrent fetches each get their own pooled connection.
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
        max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
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
        if max_answer_bytes < 1:
            raise ConfigError(f"max_answer_bytes must be at least 1, got {max_answer_bytes}")
        if bearer_token_file is not None and (username is not None or password_file is not None):
            raise ConfigError("Prometheus credentials: set a bearer token file or basic auth, not both")
        if password_file is not None and username is None:
            raise ConfigError(f"Prometheus password file {str(password_file)!r} is set without a username")
        if key_file is not None and cert_file is None:
            raise ConfigError(f"Prometheus client key file {str(key_file)!r} is set without a certificate")

        #: The normalized base URL; stable for logs, metrics and series keys.
        self.name = self.url
        self.timeout = timeout
        self.max_answer_bytes = max_answer_bytes
        self._clock = clock or (lambda: datetime.now(UTC))

        self._token = None if bearer_token_file is None else _SecretFile(bearer_token_file, "bearer token")
        self._username = username
        self._password = None if password_file is None else _SecretFile(password_file, "password")

        # TLS settings go with each request: requests lets REQUESTS_CA_BUNDLE override a session's.
        self._verify: bool | str = True if ca_file is None else _check_readable(ca_file, "CA")
        self._cert: str | tuple[str, str] | None = None
        if cert_file is not None:
            cert = _check_readable(cert_file, "client certificate")
            self._cert = cert if key_file is None else (cert, _check_readable(key_file, "client key"))
        session = requests.Session()  # redirects: every request passes allow_redirects=False
        # No retries: a retried read would multiply the deadline, and a retried 5xx only delays
        # the error; the trainer fetches again on its next refresh anyway.
        adapter = _Adapter(
            pool_connections=2,
            pool_maxsize=POOL_CONNECTIONS,
            pool_block=False,
            max_retries=Retry(total=0, read=False, redirect=False),
        )
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        self._session = session
        self._has_credentials = self._token is not None or username is not None or cert_file is not None

    @classmethod
    def from_settings(cls, url: str, settings: Settings, *, credentials: bool = True) -> Self:
        """A source for ``url`` with the TLS CA, timeout and answer limit of ``settings``.

        With ``credentials`` (the default) it also gets the bearer token, basic auth and client
        certificate of ``settings``; :class:`~helios_scaler.source.registry.SourceResolver`
        passes ``credentials=False`` for every address but ``prometheus_url``.
        """
        return cls(
            url,
            bearer_token_file=settings.prometheus_bearer_token_file if credentials else None,
            username=settings.prometheus_username if credentials else None,
            password_file=settings.prometheus_password_file if credentials else None,
            ca_file=settings.prometheus_ca_file,
            cert_file=settings.prometheus_cert_file if credentials else None,
            key_file=settings.prometheus_key_file if credentials else None,
            timeout=settings.query_timeout,
            max_answer_bytes=settings.max_answer_bytes,
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
        ``MultipleSeries`` (all naming the query and the URL).  Once an answer holds more
        than one series the remaining chunks are not fetched.
        """
        if start.tzinfo is None or end.tzinfo is None:
            raise ValueError("start and end must be timezone-aware")
        step_s = step.total_seconds()
        if step_s < 1 or step_s != int(step_s):
            raise ValueError(f"step must be a positive whole number of seconds, got {step}")
        start_s, end_s = math.ceil(start.timestamp()), math.floor(end.timestamp())
        if start_s > end_s:
            raise ValueError(f"start {start.isoformat()} is after end {end.isoformat()}")

        chunks = list(_chunks(start_s, end_s, int(step_s)))
        keys: dict[tuple[tuple[str, str], ...], None] = {}  # the first MAX_SERIES_KEPT label sets seen
        uncounted = 0  # series seen beyond those
        micros: array[int] = array("q")
        ys: array[float] = array("d")
        fetched = 0
        with _Deadline(self.timeout.total_seconds()) as deadline:
            for chunk_start, chunk_end in chunks:
                for series in self._query_range(query, chunk_start, chunk_end, int(step_s), deadline):
                    if series.key not in keys:
                        if len(keys) < MAX_SERIES_KEPT:
                            keys[series.key] = None
                        else:
                            uncounted += 1
                    if len(keys) == 1 and not uncounted:
                        micros.extend(series.micros)
                        ys.extend(series.ys)
                fetched += 1
                if len(keys) + uncounted > 1:
                    break

        if not keys:
            raise NoData(f"query {query!r} on {self.url} returned no samples between {_iso(start_s)} and {_iso(end_s)}")
        count = len(keys) + uncounted
        if count > 1:
            shown = "; ".join(_label_set(dict(key)) for key in list(keys)[:_SHOWN_SERIES])
            more = f" and {count - _SHOWN_SERIES} more" if count > _SHOWN_SERIES else ""
            least = "" if fetched == len(chunks) else "at least "
            raise MultipleSeries(
                f"query {query!r} on {self.url} returned {least}{count} series ({shown}{more}); "
                "the scaler needs exactly one: aggregate with sum(...) (or avg/max) "
                "or use a narrower label selector"
            )
        return self._to_frame(micros, ys)

    def _credentials(self) -> tuple[dict[str, str], tuple[str, str] | None]:
        """This source's request headers and basic auth, with the secrets as the files hold them now."""
        headers = {} if self._token is None else {"Authorization": f"Bearer {self._token.get()}"}
        auth = None
        if self._username is not None:
            auth = (self._username, "" if self._password is None else self._password.get())
        return headers, auth

    def _query_range(self, query: str, start_s: int, end_s: int, step_s: int, deadline: _Deadline) -> list[_Series]:
        """One ``/api/v1/query_range`` call, checked, its failures translated to Helios errors."""
        where = f"query {query!r} on {self.url}"
        body = self._exchange(where, query, start_s, end_s, step_s, deadline)
        try:
            return _parse_matrix(body, start_s, end_s, step_s)
        except _NotPrometheus as exc:
            raise SourceUnavailable(f"{where}: the answer is not Prometheus' API: {exc}") from None

    def _exchange(
        self, where: str, query: str, start_s: int, end_s: int, step_s: int, deadline: _Deadline
    ) -> bytearray:
        """The body of a 200 answer, read within the deadline and ``max_answer_bytes``.

        Any other answer, a transport failure or the deadline passing raises.
        """
        seconds = f"{self.timeout.total_seconds():g}s"
        remaining = deadline.remaining()
        if deadline.passed():
            raise SourceUnavailable(f"{where}: no complete answer within {seconds}")
        logger.debug("query_range %s start=%d end=%d step=%ds on %s", query, start_s, end_s, step_s, self.url)
        headers, auth = self._credentials()
        params = {
            "query": query,
            "start": str(start_s),
            "end": str(end_s),
            "step": str(step_s),
            "timeout": f"{max(remaining, 0.001):.3f}",  # Prometheus' own evaluation timeout
        }
        response: requests.Response | None = None
        try:
            response = self._session.get(
                f"{self.url}/api/v1/query_range",
                params=params,
                headers=headers,
                auth=auth,
                verify=self._verify,
                cert=self._cert,
                timeout=(remaining, remaining),
                stream=True,
                allow_redirects=False,
            )
            deadline.watch_answer(response.raw)
            status = response.status_code
            if status == 200:
                body = self._read(response, deadline, where, self.max_answer_bytes, refuse=True)
            elif 300 <= status < 400:
                target = _origin(self.url, response.headers.get("Location"))
                raise SourceUnavailable(
                    f"{where}: "
                    + (f"redirected to {target}" if target else f"HTTP {status} redirect without a usable Location")
                    + " — redirects are not followed (they could leave the allowlist)"
                )
            else:
                error_type, error = _error_fields(self._read(response, deadline, where, _ERROR_BODY_BYTES))
                error = answer_excerpt(error) or answer_excerpt(response.reason or "")
                if status in (400, 422):
                    raise QueryError(f"{where} was rejected: {error}")
                raise SourceUnavailable(
                    f"{where} failed: HTTP {status} {answer_excerpt(error_type, 40) or 'error'}: {error}"
                )
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            if deadline.passed() or isinstance(exc, requests.Timeout):
                complete = "" if response is None else "complete "
                raise SourceUnavailable(f"{where}: no {complete}answer within {seconds}") from exc
            raise SourceUnavailable(f"{where}: cannot reach Prometheus: {_reason(exc)}") from exc
        finally:
            if response is not None:
                response.close()
        if deadline.expired:  # a connection-close delimited body simply ends when shut down
            raise SourceUnavailable(f"{where}: no complete answer within {seconds}")
        return body

    def _read(
        self, response: requests.Response, deadline: _Deadline, where: str, limit: int, *, refuse: bool = False
    ) -> bytearray:
        """At most ``limit`` bytes of the (decompressed) body, the deadline checked between reads.

        With ``refuse`` a longer body is :class:`SourceUnavailable`; otherwise it is cut.
        """
        too_large = (
            f"{where}: the answer is larger than max_answer_bytes ({limit} bytes) and refused "
            "(raise max_answer_bytes, or ask for fewer series or a coarser step)"
        )
        declared = response.headers.get("Content-Length", "")
        encoded = response.headers.get("Content-Encoding", "identity").strip().lower() not in ("", "identity")
        if refuse and not encoded and declared.isdigit() and int(declared) > limit:
            raise SourceUnavailable(too_large)
        body = bytearray()
        for piece in response.iter_content(chunk_size=_READ_BYTES):
            if deadline.passed():
                raise SourceUnavailable(f"{where}: no complete answer within {self.timeout.total_seconds():g}s")
            body += piece
            if len(body) > limit:
                if refuse:
                    raise SourceUnavailable(too_large)
                del body[limit:]
                break
        return body

    def _to_frame(self, micros: array[int], ys: array[float]) -> pl.DataFrame:
        """Sample times (µs since the epoch) and values → a sorted ``ds``/``y`` frame (NaN/±Inf kept)."""
        if not micros:
            return empty_series()
        return (
            pl.DataFrame(
                {
                    DS: pl.Series(np.frombuffer(micros, dtype=np.int64), dtype=pl.Int64),
                    Y: pl.Series(np.frombuffer(ys, dtype=np.float64), dtype=Y_DTYPE),
                }
            )
            .with_columns(pl.col(DS).cast(pl.Datetime("us")).dt.replace_time_zone("UTC").cast(DS_DTYPE))
            .sort(DS)
        )
