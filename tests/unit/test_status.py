"""serving.status: the one error → gRPC status table."""

from __future__ import annotations

import grpc
import pytest

from helios_scaler import errors
from helios_scaler.serving.status import STATUS, grpc_status, status_code


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
