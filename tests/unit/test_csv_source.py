"""``read_history_csv``, ``infer_step`` and ``CsvSource``: what backtest reads from a file."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from traces import trace_path

from helios_scaler.errors import InputDataError, NoData
from helios_scaler.features.schema import DS, DS_DTYPE, Y
from helios_scaler.source.csv import CsvSource, infer_step, read_history_csv


def nab_elb() -> Path:
    """The real NAB file; missing fails, never skips."""
    return trace_path("nab/data/realAWSCloudwatch/elb_request_count_8c0756.csv")


def write(tmp_path: Path, text: str, name: str = "history.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def at(hour: int, minute: int) -> datetime:
    return datetime(2014, 4, 10, hour, minute, tzinfo=UTC)


@pytest.mark.parametrize(
    "stamps",
    [
        ["2014-04-10 00:04:00", "2014-04-10 00:09:00", "2014-04-10 00:14:00"],
        ["2014-04-10T00:04:00Z", "2014-04-10T00:09:00Z", "2014-04-10T00:14:00Z"],
        # naive times are UTC; an explicit offset is converted
        ["2014-04-10T00:04:00", "2014-04-10T02:09:00+02:00", "2014-04-10 00:14:00+00:00"],
        [str(int(at(0, 4).timestamp())), str(int(at(0, 9).timestamp())), f"{at(0, 14).timestamp():.1f}"],
    ],
    ids=["iso-space", "iso-t-z", "naive-and-offsets", "unix-seconds"],
)
def test_reads_a_good_file(tmp_path: Path, stamps: list[str]) -> None:
    rows = "\n".join(f"{stamp},{value}" for stamp, value in zip(stamps, ["94.0", "56", "1.5e2"], strict=True))
    frame = read_history_csv(write(tmp_path, f"timestamp,value\n{rows}\n"))
    assert frame.columns == [DS, Y]
    assert frame.schema[DS] == DS_DTYPE
    assert frame[DS].to_list() == [at(0, 4), at(0, 9), at(0, 14)]
    assert frame[Y].to_list() == [94.0, 56.0, 150.0]


def test_header_names_do_not_matter(tmp_path: Path) -> None:
    frame = read_history_csv(write(tmp_path, "period,count,extra\n2014-04-10 00:04:00,3,x\n"))
    assert frame[Y].to_list() == [3.0]


GOOD = "timestamp,value\n2014-04-10 00:04:00,1\n2014-04-10 00:09:00,2\n2014-04-10 00:14:00,3\n"


@pytest.mark.parametrize(
    ("last_row", "line_5_mentions"),
    [
        ("2014-04-10 00:19:00,lots", ["value 'lots' is not a number"]),
        ("yesterday,4", ["timestamp 'yesterday'", "ISO 8601"]),
        ("", ["timestamp", "is not ISO 8601"]),
        ("2014-04-10 00:09:00,4", ["2014-04-10 00:09:00", "appears twice", "first on line 3"]),
        # the same instant written differently is still a duplicate
        ("2014-04-10T00:14:00Z,4", ["2014-04-10T00:14:00Z", "appears twice", "first on line 4"]),
        ("2014-04-10 00:11:00,4", ["2014-04-10 00:11:00", "earlier than the line before"]),
    ],
    ids=["non-numeric", "bad-timestamp", "empty-timestamp", "duplicate", "duplicate-other-format", "out-of-order"],
)
def test_bad_row_names_the_file_line_and_value(tmp_path: Path, last_row: str, line_5_mentions: list[str]) -> None:
    # header is line 1, so the fourth data row is line 5
    text = GOOD + (last_row if last_row else ",4") + "\n"
    path = write(tmp_path, text)
    with pytest.raises(InputDataError) as caught:
        read_history_csv(path)
    message = str(caught.value)
    assert message.startswith(f"{path}, line 5: ")
    for fragment in line_5_mentions:
        assert fragment in message


@pytest.mark.parametrize("stamp", ["inf", "1e20", "-1e300"])
def test_out_of_range_unix_timestamp_is_an_input_error(tmp_path: Path, stamp: str) -> None:
    # BUG (reported): float(text) parses, then datetime.fromtimestamp raises OverflowError, which
    # is neither caught in _parse_timestamp nor by the CLI (a traceback instead of exit 2).
    path = write(tmp_path, f"{GOOD}{stamp},4\n")
    with pytest.raises(InputDataError, match=r"line 5: timestamp"):
        read_history_csv(path)


def test_missing_value_is_read_as_nan(tmp_path: Path) -> None:
    # An empty value is a gap for the cleaning step, not an error.
    frame = read_history_csv(write(tmp_path, GOOD + "2014-04-10 00:19:00,\n"))
    assert frame.height == 4
    assert frame[Y].is_nan().to_list() == [False, False, False, True]


def test_empty_file(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    with pytest.raises(InputDataError, match="cannot read as CSV"):
        read_history_csv(path)


def test_header_only(tmp_path: Path) -> None:
    path = write(tmp_path, "timestamp,value\n")
    with pytest.raises(InputDataError, match="no data rows"):
        read_history_csv(path)


def test_one_column(tmp_path: Path) -> None:
    path = write(tmp_path, "timestamp\n2014-04-10 00:04:00\n")
    with pytest.raises(InputDataError, match=r"expected two columns \(timestamp, value\), found 1"):
        read_history_csv(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputDataError, match="cannot read as CSV"):
        read_history_csv(tmp_path / "absent.csv")


def test_infer_step_on_a_real_nab_file_with_gaps() -> None:
    frame = read_history_csv(nab_elb())
    gaps = frame[DS].diff().drop_nulls()
    assert (gaps > timedelta(minutes=5)).any()  # the file has gaps...
    assert infer_step(frame) == timedelta(minutes=5)  # ...and the most common spacing is 5 min
    assert frame.height == 4032


def test_infer_step_needs_two_rows(tmp_path: Path) -> None:
    frame = read_history_csv(write(tmp_path, "timestamp,value\n2014-04-10 00:04:00,1\n"))
    with pytest.raises(InputDataError, match="at least two rows"):
        infer_step(frame)


def test_infer_step_takes_the_most_common_gap(tmp_path: Path) -> None:
    rows = ["2014-04-10 00:00:00", "2014-04-10 00:01:00", "2014-04-10 00:03:00", "2014-04-10 00:05:00"]
    frame = read_history_csv(write(tmp_path, "t,v\n" + "".join(f"{row},1\n" for row in rows)))
    assert infer_step(frame) == timedelta(minutes=2)


def test_csv_source_fetch_is_inclusive_and_ignores_query_and_step(tmp_path: Path) -> None:
    source = CsvSource(write(tmp_path, GOOD))
    assert source.name == "csv"
    assert source.now() == at(0, 14)
    got = source.fetch("anything", at(0, 9), at(0, 14), timedelta(hours=1))
    assert got[DS].to_list() == [at(0, 9), at(0, 14)]
    assert got[Y].to_list() == [2.0, 3.0]
    everything = source.fetch("q", at(0, 0), at(1, 0), timedelta(minutes=5))
    assert everything.equals(source.frame)
    between = source.fetch("q", at(0, 5), at(0, 13), timedelta(minutes=5))
    assert between[Y].to_list() == [2.0]


def test_csv_source_fetch_outside_the_file_is_no_data(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    source = CsvSource(path)
    with pytest.raises(NoData, match=str(path)):
        source.fetch("q", at(1, 0), at(2, 0), timedelta(minutes=5))
    with pytest.raises(NoData):
        source.fetch("q", at(0, 5), at(0, 8), timedelta(minutes=5))


def test_csv_source_validates_on_construction(tmp_path: Path) -> None:
    with pytest.raises(InputDataError, match="line 3"):
        CsvSource(write(tmp_path, "timestamp,value\n2014-04-10 00:04:00,1\n2014-04-10 00:09:00,x\n"))


def test_reads_the_whole_real_file_like_polars_does() -> None:
    path = nab_elb()
    frame = read_history_csv(path)
    reference = pl.read_csv(path, schema={"timestamp": pl.String, "value": pl.Float64})
    assert frame[Y].to_list() == reference["value"].to_list()
    assert frame[DS][0] == datetime(2014, 4, 10, 0, 4, tzinfo=UTC)


def test_duplicates_last_keeps_the_last_row_of_each_repeated_timestamp(tmp_path: Path) -> None:
    """A daylight-saving export repeats 03:00; with duplicates="last" the repeat replaces the
    first row with that timestamp (not merely the previous row)."""
    path = write(
        tmp_path, "t,v\n2014-04-10 02:00:00,1\n2014-04-10 03:00:00,2\n2014-04-10 03:00:00,3\n2014-04-10 04:00:00,4\n"
    )
    with pytest.raises(
        InputDataError, match=r"line 4: timestamp 2014-04-10 03:00:00 appears twice \(first on line 3\)"
    ):
        read_history_csv(path)
    frame = read_history_csv(path, duplicates="last")
    assert frame[Y].to_list() == [1.0, 3.0, 4.0]
    assert frame[DS].to_list() == [at(2, 0), at(3, 0), at(4, 0)]
