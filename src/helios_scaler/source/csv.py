"""History from a CSV file (``timestamp,value``), for ``helios-scaler backtest``.

The first column is the timestamp (ISO 8601 such as ``2014-04-10 00:04:00`` or
``2014-04-10T00:04:00Z``, or Unix seconds; naive times are read as UTC), the second the
value.  Non-numeric values, unparseable, duplicated or out-of-order timestamps are
errors that name the row; gaps are left to the feature pipeline, which fills them as
the live path does.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from helios_scaler.errors import InputDataError, NoData
from helios_scaler.features.schema import DS, DS_DTYPE, Y


def parse_iso_utc(text: str) -> datetime:
    """An ISO 8601 time (``Z`` allowed) in UTC; a naive time is read as UTC.  ValueError otherwise."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _parse_timestamp(text: str) -> datetime | None:
    text = text.strip()
    try:
        return datetime.fromtimestamp(float(text), UTC)
    except (OverflowError, OSError):
        return None  # a number, but not a representable Unix time
    except ValueError:
        pass
    try:
        return parse_iso_utc(text)
    except ValueError:
        return None


def read_history_csv(path: Path, duplicates: str = "error") -> pl.DataFrame:
    """Read and validate a ``timestamp,value`` CSV into a ``ds``/``y`` frame.

    ``duplicates="last"`` keeps the last row of a repeated timestamp instead of failing
    (daylight-saving exports repeat an hour's timestamps); the default refuses them.
    """
    if duplicates not in ("error", "last"):
        raise ValueError(f"duplicates must be 'error' or 'last', got {duplicates!r}")
    try:
        raw = pl.read_csv(path, infer_schema=False, has_header=True)
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise InputDataError(f"{path}: cannot read as CSV: {exc}") from exc
    if raw.width < 2:
        raise InputDataError(f"{path}: expected two columns (timestamp, value), found {raw.width}: {raw.columns}")
    stamps, values = raw.columns[0], raw.columns[1]
    times: list[datetime] = []
    numbers: list[float] = []
    previous: datetime | None = None
    seen: dict[datetime, tuple[int, int]] = {}  # timestamp -> (line, index in the output)
    for index, (stamp, value) in enumerate(zip(raw[stamps].to_list(), raw[values].to_list(), strict=True)):
        row = index + 2  # line number in the file, after the header
        moment = _parse_timestamp(stamp or "")
        if moment is None:
            raise InputDataError(
                f"{path}, line {row}: timestamp {stamp or ''!r} is not ISO 8601 (e.g. 2014-04-10 00:04:00) "
                "or Unix seconds"
            )
        try:
            number = float(value) if value is not None else float("nan")
        except ValueError:
            raise InputDataError(f"{path}, line {row}: value {value!r} is not a number") from None
        if moment in seen:
            if duplicates == "error":
                raise InputDataError(
                    f"{path}, line {row}: timestamp {stamp} appears twice (first on line {seen[moment][0]}); "
                    "pass --duplicates last to keep the last row of each repeated timestamp"
                )
            numbers[seen[moment][1]] = number
            continue
        if previous is not None and moment < previous:
            raise InputDataError(
                f"{path}, line {row}: timestamp {stamp} is earlier than the line before; sort the file by time"
            )
        seen[moment] = (row, len(times))
        previous = moment
        times.append(moment)
        numbers.append(number)
    if not times:
        raise InputDataError(f"{path}: no data rows")
    return pl.DataFrame({DS: times, Y: numbers}).with_columns(pl.col(DS).cast(DS_DTYPE))


def infer_step(frame: pl.DataFrame) -> timedelta:
    """The series' resolution: the most common gap between consecutive timestamps."""
    gaps = frame[DS].diff().drop_nulls()
    if gaps.is_empty():
        raise InputDataError("need at least two rows to infer the step")
    mode = gaps.mode().sort()[0]
    return timedelta(microseconds=int(mode.total_seconds() * 1_000_000))


class CsvSource:
    """A :class:`~helios_scaler.source.base.Source` over a validated CSV history."""

    name = "csv"

    def __init__(self, path: Path, duplicates: str = "error") -> None:
        self.path = path
        self.frame = read_history_csv(path, duplicates)

    def now(self) -> datetime:
        last: datetime = self.frame[DS][-1]
        return last

    def close(self) -> None:
        """Nothing to release."""

    def fetch(self, query: str, start: datetime, end: datetime, step: timedelta) -> pl.DataFrame:
        selected = self.frame.filter((pl.col(DS) >= start) & (pl.col(DS) <= end))
        if selected.is_empty():
            raise NoData(f"{self.path} has no rows between {start.isoformat()} and {end.isoformat()}")
        return selected
