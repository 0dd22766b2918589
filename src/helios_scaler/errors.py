"""The one exception hierarchy of helios-scaler.

Every error the scaler raises on purpose derives from :class:`HeliosError`.  The
hierarchy knows nothing of gRPC: :mod:`helios_scaler.serving.status` holds the one table
that maps each class to the status code a client sees, applied at the serving boundary.
Third-party exceptions are translated into these classes where they arise (sources,
models), so serving never inspects them.
"""

from __future__ import annotations

from typing import Final

#: Characters of a client-supplied value an error message echoes; the rest is counted, not repeated,
#: so a huge value cannot make the message (a gRPC trailer) too large to deliver.
EXCERPT_CHARS: Final = 100


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """``repr(text)`` if that is at most about ``limit`` characters, else the ``repr`` of its longest start that
    is, followed by its length: ``'xxx'… (20000 characters)``."""
    head = text[:limit]
    while len(repr(head)) > limit + 2:  # escapes (\x00, \U0010ffff) make a repr up to 10 times longer
        head = head[:-1]
    if head == text:
        return repr(text)
    return f"{head!r}… ({len(text)} characters)"


class HeliosError(Exception):
    """Base class of every error helios-scaler raises on purpose."""


class ConfigError(HeliosError):
    """A server setting (CLI flag, config file key, HELIOS_* variable) is invalid."""


class InvalidMetadata(HeliosError):
    """A ScaledObject's trigger metadata is malformed, missing or out of range.

    The message always names the key, the value and what is accepted; a key or value longer than
    :data:`EXCERPT_CHARS` is shown by its start and its length (:func:`excerpt`).  The attributes
    keep them whole.
    """

    def __init__(self, key: str, value: str | None, accepted: str, *, unknown: bool = False) -> None:
        self.key = key
        self.value = value
        self.accepted = accepted
        shown = excerpt(value) if value is not None else None
        if unknown:
            message = f"metadata key {excerpt(key)} (value {shown}) is not a known key; {accepted}"
        elif shown is None:
            message = f"metadata key {excerpt(key)} is required; accepted: {accepted}"
        else:
            message = f"metadata key {excerpt(key)}: {shown} is not valid; accepted: {accepted}"
        super().__init__(message)


class SourceNotAllowed(HeliosError):
    """A ScaledObject names a ``serverAddress`` that is not on the server's allowlist."""


class SourceError(HeliosError):
    """Base class of errors reading history from a source."""


class SourceUnavailable(SourceError):
    """The source could not be reached or did not answer in time."""


class QueryError(SourceError):
    """The source rejected the query (bad PromQL, unknown replay series)."""


class NoData(SourceError):
    """The query is valid but returned no samples in the requested range."""


class MultipleSeries(SourceError):
    """The query returned more than one series; the scaler needs exactly one."""


class NotReady(HeliosError):
    """Neither a forecast nor a fresh observation exists yet for a ScaledObject.

    ``cause`` is the series' latest error, if any (a rejected query, an unreachable source): it
    decides what the client is told, so a PromQL syntax error is reported as the invalid
    argument it is, not as an outage.
    """

    def __init__(self, message: str, cause: HeliosError | None = None) -> None:
        super().__init__(message)
        self.cause = cause


class TooManySeries(HeliosError):
    """The server already tracks its configured maximum number of series."""


class ModelError(HeliosError):
    """A model could not be fitted or could not forecast."""


class InputDataError(HeliosError):
    """Input history (a CSV, a trace) is malformed; the message names the row."""
