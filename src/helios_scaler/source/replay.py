"""The embedded demo source: a real trace replayed as if it were live.

The bundled trace is 14 days of WorldCup98 requests per minute (1998-06-10 → 06-24 UTC,
see ``data/README.md``).  :class:`ReplaySource` maps it onto the present: at construction,
trace time ``slice_start + history`` is pinned to the current clock time (floored to the
minute), so ``history`` worth of past is available at once; from then on the replay
advances with the clock, ``speed`` trace seconds per clock second.  When it runs off the
end of the trace it starts again at the beginning, while timestamps keep increasing.
"""

from __future__ import annotations

import functools
import gzip
import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from importlib import resources

import numpy as np
import polars as pl

from helios_scaler.errors import NoData, QueryError
from helios_scaler.events.calendar import Calendar, Event, parse_calendar
from helios_scaler.features.schema import DS, DS_DTYPE, Y_DTYPE, Y

logger = logging.getLogger(__name__)

#: The one series the replay source knows.
SERIES = "worldcup98"

#: Spacing of the bundled trace.
TRACE_STEP = timedelta(minutes=1)

_DATA_FILE = "worldcup98.csv.gz"
_CALENDAR_FILE = "worldcup98_kickoffs.csv"
_US_PER_STEP = int(TRACE_STEP / timedelta(microseconds=1))
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@functools.cache
def load_trace() -> pl.DataFrame:
    """The raw bundled WorldCup98 slice: ``ds`` (UTC, 1998) and ``y`` (requests/minute).

    20,160 rows, one per minute from 1998-06-10 00:00 to 1998-06-23 23:59 UTC, no gaps.
    The result is cached; polars frames are immutable, so sharing it is safe.
    """
    raw = resources.files("helios_scaler.source").joinpath("data", _DATA_FILE).read_bytes()
    frame = pl.read_csv(gzip.decompress(raw), schema={"period": pl.String, "count": pl.Int64}, has_header=True)
    return frame.select(
        pl.col("period").str.to_datetime("%Y-%m-%d %H:%M:%S", time_unit="us", time_zone="UTC").alias(DS),
        pl.col("count").cast(Y_DTYPE).alias(Y),
    ).sort(DS)


def _micros(moment: datetime) -> int:
    """Microseconds since the epoch of a tz-aware datetime (exact, no float rounding)."""
    if moment.tzinfo is None:
        raise ValueError(f"datetime {moment.isoformat()} must be timezone-aware")
    return (moment - _EPOCH) // timedelta(microseconds=1)


class ReplaySource:
    """Replays the bundled WorldCup98 trace as the live series ``worldcup98``.

    ``fetch`` follows Prometheus' range-query semantics: it evaluates at ``start``,
    ``start + step``, ... up to ``min(end, now())`` and returns, at each evaluation time,
    the latest trace sample at or before it (never a future point).  Evaluation times
    before the replay's first sample (``now - history`` at construction) have no value.
    """

    name = "replay"

    def __init__(
        self,
        clock: Callable[[], datetime] | None = None,
        speed: float = 1.0,
        history: timedelta = timedelta(days=7),
    ) -> None:
        self._values = load_trace()[Y].to_numpy()
        length = len(self._values) * TRACE_STEP
        if not speed > 0:
            raise ValueError(f"speed must be positive, got {speed}")
        if not timedelta(0) < history <= length:
            raise ValueError(f"history must be positive and at most the trace length {length}, got {history}")
        self._clock = clock or (lambda: datetime.now(UTC))
        self.speed = float(speed)
        self.history = history
        now = _micros(self.now())
        #: Clock time (µs since the epoch) that shows trace offset ``history``.
        self._anchor_us = now - now % _US_PER_STEP
        logger.info(
            "replaying %s at %gx: trace %s is %s",
            SERIES,
            self.speed,
            (load_trace()[DS][0] + history).isoformat(),
            datetime.fromtimestamp(self._anchor_us / 1e6, UTC).isoformat(),
        )

    def now(self) -> datetime:
        """The current time of the injected clock (by default the wall clock), tz-aware UTC."""
        return self._clock()

    def to_clock(self, trace_time: datetime) -> list[datetime]:
        """The clock times at which the replay shows ``trace_time``: once per pass over the trace, from the
        pass before the replay started to the next eight (the replay loops while the clock goes on)."""
        offset = (trace_time - load_trace()[DS][0]) / TRACE_STEP - self.history / TRACE_STEP
        length = len(self._values)
        return [
            datetime.fromtimestamp((self._anchor_us + (offset + k * length) * _US_PER_STEP / self.speed) / 1e6, UTC)
            for k in range(-1, 9)
        ]

    def calendar(self, name: str = SERIES) -> Calendar:
        """The bundled 1998 kick-off calendar moved onto the replay's clock (every pass of the loop), as
        the demo's known-event calendar: what a World Cup site's operators had in advance."""
        raw = resources.files("helios_scaler.source").joinpath("data", _CALENDAR_FILE).read_text()
        first, last = load_trace()[DS][0], load_trace()[DS][-1] + TRACE_STEP
        events: list[Event] = []
        for event in parse_calendar(name, raw, "csv", "bundled calendar").events:
            if not first <= event.start < last:
                continue
            duration = (event.end - event.start) / self.speed
            events.extend(replace(event, start=start, end=start + duration) for start in self.to_clock(event.start))
        return Calendar(name, tuple(sorted(events)))

    def close(self) -> None:
        """Nothing to release."""

    def fetch(self, query: str, start: datetime, end: datetime, step: timedelta) -> pl.DataFrame:
        """The replayed series at ``start, start + step, ... <= min(end, now())``.

        Raises :class:`QueryError` for any query other than ``worldcup98`` and
        :class:`NoData` when the range holds no replayed sample.
        """
        if query.strip() != SERIES:
            raise QueryError(f"replay source: unknown series {query!r}; known series: {SERIES}")
        if step <= timedelta(0):
            raise ValueError(f"step must be positive, got {step}")
        start_us, end_us, step_us = _micros(start), _micros(end), step // timedelta(microseconds=1)
        if start_us > end_us:
            raise ValueError(f"start {start.isoformat()} is after end {end.isoformat()}")
        last_us = min(end_us, _micros(self.now()))
        evaluations = np.arange(start_us, last_us + 1, step_us, dtype=np.int64)
        # Trace offset (in trace steps) shown at each evaluation time; negative = before the replay.
        offsets = np.floor(
            (self.history / TRACE_STEP) + (evaluations - self._anchor_us) * self.speed / _US_PER_STEP
        ).astype(np.int64)
        keep = offsets >= 0
        if not keep.any():
            raise NoData(
                f"replay source: no samples of {SERIES} between {start.isoformat()} and "
                f"{min(end, self.now()).isoformat()} (the replay starts at "
                f"{datetime.fromtimestamp(self._first_sample_us() / 1e6, UTC).isoformat()})"
            )
        return pl.DataFrame(
            {
                DS: pl.Series(evaluations[keep]).cast(pl.Datetime("us")).dt.replace_time_zone("UTC"),
                Y: pl.Series(self._values[offsets[keep] % len(self._values)], dtype=Y_DTYPE),
            },
            schema={DS: DS_DTYPE, Y: Y_DTYPE},
        )

    def _first_sample_us(self) -> int:
        """Clock time (µs since the epoch) of the replay's first sample."""
        return self._anchor_us - round(self.history / TRACE_STEP * _US_PER_STEP / self.speed)
