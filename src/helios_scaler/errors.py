"""The one exception hierarchy of helios-scaler.

Every error the scaler raises on purpose derives from :class:`HeliosError`.  Each class
names the gRPC status code it maps to; :func:`grpc_status` is the one place that
translation happens (serving never inspects third-party exceptions).
"""

from __future__ import annotations

import grpc


class HeliosError(Exception):
    """Base class of every error helios-scaler raises on purpose."""

    status: grpc.StatusCode = grpc.StatusCode.INTERNAL


class ConfigError(HeliosError):
    """A server setting (CLI flag, config file key, HELIOS_* variable) is invalid."""

    status = grpc.StatusCode.FAILED_PRECONDITION


class InvalidMetadata(HeliosError):
    """A ScaledObject's trigger metadata is malformed, missing or out of range.

    The message always names the key, the value and what is accepted.
    """

    status = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, key: str, value: str | None, accepted: str, *, unknown: bool = False) -> None:
        self.key = key
        self.value = value
        self.accepted = accepted
        if unknown:
            message = f"metadata key {key!r} (value {value!r}) is not a known key; {accepted}"
        elif value is None:
            message = f"metadata key {key!r} is required; accepted: {accepted}"
        else:
            message = f"metadata key {key!r}: {value!r} is not valid; accepted: {accepted}"
        super().__init__(message)


class SourceNotAllowed(HeliosError):
    """A ScaledObject names a ``serverAddress`` that is not on the server's allowlist."""

    status = grpc.StatusCode.PERMISSION_DENIED


class SourceError(HeliosError):
    """Base class of errors reading history from a source."""

    status = grpc.StatusCode.UNAVAILABLE


class SourceUnavailable(SourceError):
    """The source could not be reached or did not answer in time."""


class QueryError(SourceError):
    """The source rejected the query (bad PromQL, unknown replay series)."""

    status = grpc.StatusCode.INVALID_ARGUMENT


class NoData(SourceError):
    """The query is valid but returned no samples in the requested range."""

    status = grpc.StatusCode.UNAVAILABLE


class MultipleSeries(SourceError):
    """The query returned more than one series; the scaler needs exactly one."""

    status = grpc.StatusCode.INVALID_ARGUMENT


class NotReady(HeliosError):
    """Neither a forecast nor a fresh observation exists yet for a ScaledObject."""

    status = grpc.StatusCode.UNAVAILABLE


class TooManySeries(HeliosError):
    """The server already tracks its configured maximum number of series."""

    status = grpc.StatusCode.RESOURCE_EXHAUSTED


class ModelError(HeliosError):
    """A model could not be fitted or could not forecast."""


class InputDataError(HeliosError):
    """Input history (a CSV, a trace) is malformed; the message names the row."""

    status = grpc.StatusCode.INVALID_ARGUMENT


def grpc_status(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """Map any exception to the gRPC status code and message a client sees."""
    if isinstance(exc, HeliosError):
        return exc.status, str(exc)
    return grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}"
