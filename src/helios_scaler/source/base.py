"""The Source protocol: where history comes from."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Protocol

import polars as pl


class Source(Protocol):
    """A read-only history source.

    ``fetch`` returns a frame with exactly the columns ``ds`` (``Datetime('us','UTC')``)
    and ``y`` (``Float64``), sorted by ``ds``, covering ``[start, end]`` at ``step``
    resolution as the backend delivers it (possibly with gaps, NaN or Inf: cleaning is
    the feature pipeline's job).  Errors are translated to :mod:`helios_scaler.errors`
    classes: ``SourceUnavailable``, ``QueryError``, ``NoData``, ``MultipleSeries``.
    ``fetch`` blocks; callers run it in an executor, never on the event loop.
    """

    #: A stable name for logs, metrics and series keys (the base URL, or ``replay``).
    name: str

    def fetch(self, query: str, start: datetime, end: datetime, step: timedelta) -> pl.DataFrame:
        """Return the samples of ``query`` between ``start`` and ``end`` inclusive."""
        ...

    def now(self) -> datetime:
        """The source's current time (wall clock, or the replay clock), tz-aware UTC."""
        ...

    def close(self) -> None:
        """Release what the source holds (connections); called once, at shutdown."""
        ...
