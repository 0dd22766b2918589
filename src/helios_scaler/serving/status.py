"""Errors → gRPC status codes: the one table, applied at the serving boundary by one decorator.

The error hierarchy (:mod:`helios_scaler.errors`) knows nothing of gRPC.  What a client is
told is decided here, by the most specific class in :data:`STATUS`.  A ScaledObject that
cannot be served yet (:class:`~helios_scaler.errors.NotReady`) is reported by what stops
it: a rejected query is INVALID_ARGUMENT (fix the ScaledObject), an unreachable or empty
source UNAVAILABLE (KEDA applies its ``fallback``).

Nothing else reaches a client as UNKNOWN: an exception that is not a
:class:`~helios_scaler.errors.HeliosError` is a bug, logged with its traceback and reported
as INTERNAL.  Every message is cut to :data:`MAX_DETAILS_BYTES`, so an error about a huge
value is still delivered (a gRPC client refuses status details past its metadata limit
and reports RESOURCE_EXHAUSTED instead).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final, NoReturn, TypeVar

import grpc

from helios_scaler.errors import (
    ConfigError,
    HeliosError,
    InputDataError,
    InvalidMetadata,
    ModelError,
    MultipleSeries,
    NoData,
    NotReady,
    QueryError,
    SourceError,
    SourceNotAllowed,
    SourceUnavailable,
    TooManySeries,
)

logger = logging.getLogger(__name__)

#: Every error class → the status code a client sees (the most specific class wins).
STATUS: Final[dict[type[HeliosError], grpc.StatusCode]] = {
    HeliosError: grpc.StatusCode.INTERNAL,
    ConfigError: grpc.StatusCode.FAILED_PRECONDITION,
    InvalidMetadata: grpc.StatusCode.INVALID_ARGUMENT,
    SourceNotAllowed: grpc.StatusCode.PERMISSION_DENIED,
    SourceError: grpc.StatusCode.UNAVAILABLE,
    SourceUnavailable: grpc.StatusCode.UNAVAILABLE,
    QueryError: grpc.StatusCode.INVALID_ARGUMENT,
    NoData: grpc.StatusCode.UNAVAILABLE,
    MultipleSeries: grpc.StatusCode.INVALID_ARGUMENT,
    NotReady: grpc.StatusCode.UNAVAILABLE,
    TooManySeries: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ModelError: grpc.StatusCode.INTERNAL,
    InputDataError: grpc.StatusCode.INVALID_ARGUMENT,
}

#: Codes that waiting for data can clear: the series is not ready yet (first fetch or forecast pending)
#: or its source is unreachable.  Every other code (a wrong ScaledObject, an address not allowed, a full
#: quota, a bug) stays until someone acts.
TRANSIENT: Final = frozenset({grpc.StatusCode.UNAVAILABLE})

#: Largest status message sent (UTF-8 bytes).  gRPC percent-encodes it into a trailer, at most three times
#: longer, which must stay under the clients' 8 KiB metadata limit.
MAX_DETAILS_BYTES: Final = 2048


def status_code(exc: HeliosError) -> grpc.StatusCode:
    """The status code of ``exc``: its most specific class in :data:`STATUS`."""
    if isinstance(exc, NotReady) and isinstance(exc.cause, SourceError):
        return status_code(exc.cause)
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return grpc.StatusCode.INTERNAL


def is_transient(exc: HeliosError) -> bool:
    """Waiting for new data may clear ``exc`` (its code is in :data:`TRANSIENT`)."""
    return status_code(exc) in TRANSIENT


def bounded(message: str, limit: int = MAX_DETAILS_BYTES) -> str:
    """``message`` as valid UTF-8 of at most ``limit`` bytes, cut with a note of its full length."""
    data = message.encode("utf-8", "backslashreplace")
    if len(data) <= limit:
        return data.decode("utf-8")
    note = f"… (cut: {len(message)} characters in all)"
    return data[: limit - len(note.encode())].decode("utf-8", "ignore") + note


def grpc_status(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """Map any exception to the gRPC status code and message a client sees."""
    if isinstance(exc, HeliosError):
        return status_code(exc), bounded(str(exc))
    return grpc.StatusCode.INTERNAL, bounded(f"internal error: {type(exc).__name__}: {exc}")


async def abort(context: grpc.aio.ServicerContext, exc: BaseException, method: str = "an RPC") -> NoReturn:
    """End the RPC with the status of ``exc``; log it with its traceback unless it is a :class:`HeliosError`."""
    if not isinstance(exc, HeliosError):
        logger.error("%s failed with an unexpected error", method, exc_info=exc)
    code, message = grpc_status(exc)
    await context.abort(code, message)
    raise AssertionError("context.abort always raises")


Handler = TypeVar("Handler", bound=Callable[..., Awaitable[Any]])
StreamHandler = TypeVar("StreamHandler", bound=Callable[..., AsyncIterator[Any]])


def unary(handler: Handler) -> Handler:
    """A unary handler whose exception ends the RPC with the status from :data:`STATUS` (INTERNAL for a
    non-:class:`HeliosError`: never gRPC's UNKNOWN)."""

    @functools.wraps(handler)
    async def wrapped(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await handler(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await abort(context, exc, handler.__name__)

    return wrapped  # type: ignore[return-value]


def stream(handler: StreamHandler) -> StreamHandler:
    """A server-streaming handler whose exception ends the stream with its status (as :func:`unary`)."""

    @functools.wraps(handler)
    async def wrapped(self: Any, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            async for message in handler(self, request, context):
                yield message
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await abort(context, exc, handler.__name__)

    return wrapped  # type: ignore[return-value]
