"""serving.status: the one error → gRPC status table."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from helios_scaler import errors
from helios_scaler.serving.status import (
    MAX_DETAILS_BYTES,
    STATUS,
    bounded,
    grpc_status,
    is_transient,
    status_code,
    stream,
    unary,
)


def every_error_class() -> list[type[errors.HeliosError]]:
    found: list[type[errors.HeliosError]] = []
    pending: list[type[errors.HeliosError]] = [errors.HeliosError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


@pytest.mark.parametrize("cls", every_error_class(), ids=lambda cls: cls.__name__)
def test_every_error_class_has_its_own_row(cls: type[errors.HeliosError]) -> None:
    """A new error class must say what clients see, not inherit it silently."""
    assert cls in STATUS


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.QueryError("parse error"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.MultipleSeries("2 series"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.SourceUnavailable("refused"), grpc.StatusCode.UNAVAILABLE),
        (errors.NoData("empty"), grpc.StatusCode.UNAVAILABLE),
        (errors.InvalidMetadata("leadTime", "x", "a duration"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.SourceNotAllowed("http://evil"), grpc.StatusCode.PERMISSION_DENIED),
        (errors.TooManySeries("1000"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errors.NotReady("no data"), grpc.StatusCode.UNAVAILABLE),
    ],
)
def test_codes(error: errors.HeliosError, code: grpc.StatusCode) -> None:
    assert status_code(error) is code
    assert grpc_status(error) == (code, str(error))


@pytest.mark.parametrize(
    ("cause", "code"),
    [
        (errors.QueryError("bad PromQL"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.MultipleSeries("2 series"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.SourceUnavailable("refused"), grpc.StatusCode.UNAVAILABLE),
        (errors.ModelError("training failed"), grpc.StatusCode.UNAVAILABLE),
        (None, grpc.StatusCode.UNAVAILABLE),
    ],
)
def test_not_ready_is_reported_by_what_stops_it(cause: errors.HeliosError | None, code: grpc.StatusCode) -> None:
    """A source error says why; anything else not ready is an outage KEDA's fallback covers."""
    assert status_code(errors.NotReady("not ready", cause)) is code


def test_anything_else_is_internal_and_named() -> None:
    assert grpc_status(KeyError("x")) == (grpc.StatusCode.INTERNAL, "internal error: KeyError: 'x'")


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (errors.NotReady("no data yet"), True),
        (errors.NotReady("stale", errors.SourceUnavailable("refused")), True),
        (errors.NotReady("no forecast", errors.ModelError("inf")), True),
        (errors.SourceUnavailable("refused"), True),
        # Waiting cannot clear these: a stream must end with them (it stayed open and silent before).
        (errors.TooManySeries("quota reached"), False),
        (errors.SourceNotAllowed("http://evil"), False),
        (errors.InvalidMetadata("leadTime", "x", "a duration"), False),
        (errors.NotReady("rejected", errors.QueryError("bad PromQL")), False),
        (errors.ModelError("bug"), False),
    ],
    ids=lambda each: type(each).__name__ if isinstance(each, Exception) else None,
)
def test_only_not_ready_and_unreachable_are_transient(error: errors.HeliosError, transient: bool) -> None:
    assert is_transient(error) is transient


def test_long_messages_are_cut_to_the_details_limit() -> None:
    code, message = grpc_status(errors.NotReady("x" * 100_000))
    assert code is grpc.StatusCode.UNAVAILABLE
    assert len(message.encode()) <= MAX_DETAILS_BYTES
    assert message.startswith("x" * 1000)
    assert message.endswith("… (cut: 100000 characters in all)")


def test_cutting_keeps_valid_utf8_and_short_messages_whole() -> None:
    message = bounded("é" * 5000)  # two bytes each: a cut can fall inside one
    assert len(message.encode()) <= MAX_DETAILS_BYTES
    assert message.endswith("(cut: 5000 characters in all)")
    assert bounded("short") == "short"
    assert bounded("\ud800") == "\\ud800"  # a lone surrogate cannot be sent: escaped


async def test_unexpected_exceptions_are_internal_not_unknown() -> None:
    """A bug is INTERNAL, named, bounded, logged: never gRPC's UNKNOWN."""

    class Context:
        aborted: tuple[grpc.StatusCode, str] | None = None

        async def abort(self, code: grpc.StatusCode, details: str) -> None:
            self.aborted = (code, details)
            raise grpc.aio.AbortError()

    class Servicer:
        @unary
        async def Unary(self, request: object, context: object) -> None:
            raise OverflowError("cannot convert float infinity to integer" + "!" * 10_000)

        @stream
        async def Stream(self, request: object, context: object) -> AsyncIterator[int]:
            yield 1
            raise ValueError("Invalid IPv6 URL")

    context = Context()
    with pytest.raises(grpc.aio.AbortError):
        await Servicer().Unary(None, context)
    assert context.aborted is not None
    code, details = context.aborted
    assert code is grpc.StatusCode.INTERNAL
    assert details.startswith("internal error: OverflowError: cannot convert float infinity to integer")
    assert len(details.encode()) <= MAX_DETAILS_BYTES
    received = []
    with pytest.raises(grpc.aio.AbortError):
        async for item in Servicer().Stream(None, context):
            received.append(item)
    assert received == [1]
    assert context.aborted == (grpc.StatusCode.INTERNAL, "internal error: ValueError: Invalid IPv6 URL")
