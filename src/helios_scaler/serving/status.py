"""Errors → gRPC status codes: the one table, applied at the serving boundary by one decorator.

The error hierarchy (:mod:`helios_scaler.errors`) knows nothing of gRPC.  What a client is
told is decided here, by the most specific class in :data:`STATUS`.  A ScaledObject that
cannot be served yet (:class:`~helios_scaler.errors.NotReady`) is reported by what stops
it: a rejected query is INVALID_ARGUMENT (fix the ScaledObject), an unreachable or empty
source UNAVAILABLE (KEDA applies its ``fallback``).
"""

from __future__ import annotations

import functools
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

#: Codes that mean "the ScaledObject itself is wrong": retrying the same request cannot help.
CLIENT_ERRORS: Final = frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED})


def status_code(exc: HeliosError) -> grpc.StatusCode:
    """The status code of ``exc``: its most specific class in :data:`STATUS`."""
    if isinstance(exc, NotReady) and isinstance(exc.cause, SourceError):
        return status_code(exc.cause)
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return grpc.StatusCode.INTERNAL


def grpc_status(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """Map any exception to the gRPC status code and message a client sees."""
    if isinstance(exc, HeliosError):
        return status_code(exc), str(exc)
    return grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}"


async def abort(context: grpc.aio.ServicerContext, exc: HeliosError) -> NoReturn:
    """End the RPC with the status of ``exc``."""
    code, message = grpc_status(exc)
    await context.abort(code, message)
    raise AssertionError("context.abort always raises")


Handler = TypeVar("Handler", bound=Callable[..., Awaitable[Any]])
StreamHandler = TypeVar("StreamHandler", bound=Callable[..., AsyncIterator[Any]])


def unary(handler: Handler) -> Handler:
    """A unary handler whose :class:`HeliosError` ends the RPC with the status from :data:`STATUS`."""

    @functools.wraps(handler)
    async def wrapped(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await handler(self, request, context)
        except HeliosError as exc:
            await abort(context, exc)

    return wrapped  # type: ignore[return-value]


def stream(handler: StreamHandler) -> StreamHandler:
    """A server-streaming handler whose :class:`HeliosError` ends the stream with its status."""

    @functools.wraps(handler)
    async def wrapped(self: Any, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            async for message in handler(self, request, context):
                yield message
        except HeliosError as exc:
            await abort(context, exc)

    return wrapped  # type: ignore[return-value]
