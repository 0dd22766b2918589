"""Where fitted models are kept between runs: the model repository seam.

The trainer saves a :class:`Checkpoint` after every successful fit and, when it starts
tracking a series, asks the repository for one before fitting from nothing.  Today's
repository, :class:`NoRepository`, keeps nothing (every start is a cold start); a
repository on disk (warm restarts) plugs in here without touching the loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import polars as pl

from helios_scaler.models.selection import FittedSeries
from helios_scaler.trigger import SeriesKey


@dataclass(frozen=True)
class Checkpoint:
    """A fitted series as it stood after a fit: enough to serve again without refitting."""

    key: SeriesKey
    fitted: FittedSeries
    #: The history the model has seen (its tail, on the series' grid).
    history: pl.DataFrame
    trained_at: datetime


class ModelRepository(Protocol):
    def load(self, key: SeriesKey) -> Checkpoint | None:
        """The newest checkpoint of ``key``, or None (never raises for a missing or unusable one)."""
        ...

    def save(self, checkpoint: Checkpoint) -> None:
        """Keep ``checkpoint`` as the newest of its series."""
        ...

    def discard(self, key: SeriesKey) -> None:
        """Forget ``key`` (nobody asks for the series any more)."""
        ...


class NoRepository:
    """Keeps nothing: every series starts from its history."""

    def load(self, key: SeriesKey) -> Checkpoint | None:
        return None

    def save(self, checkpoint: Checkpoint) -> None:
        return None

    def discard(self, key: SeriesKey) -> None:
        return None
