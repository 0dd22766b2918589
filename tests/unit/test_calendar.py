"""events.calendar: calendar files parsed, every bad row named, times held in UTC."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from traces import SHARED

from helios_scaler.demand import Subscriptions
from helios_scaler.errors import InputDataError, InvalidMetadata
from helios_scaler.events.calendar import CalendarSet, load_calendar, parse_calendar
from helios_scaler.source.registry import SourceResolver
from helios_scaler.trigger import ScalerMetadata

HEADER = "start,end,name,kind\n"


def csv(text: str) -> str:
    return HEADER + text


def test_the_real_worldcup98_calendar() -> None:
    calendar = load_calendar(SHARED / "events" / "worldcup98_kickoffs.csv")
    assert calendar.name == "worldcup98_kickoffs"
    assert len(calendar.events) == 56
    assert calendar.kinds == {"match"}
    first = calendar.events[0]
    assert (first.start, first.name) == (datetime(1998, 6, 10, 15, 30, tzinfo=UTC), "group match")
    assert all(a.start <= b.start for a, b in zip(calendar.events, calendar.events[1:], strict=False))


def test_offsets_are_converted_to_utc_across_a_dst_change() -> None:
    """Europe/Paris on the night clocks went back (2026-10-25): two different local offsets, one UTC line."""
    calendar = parse_calendar(
        "c",
        csv(
            "2026-10-25T02:30:00+02:00,2026-10-25T02:45:00+02:00,before,launch\n"
            "2026-10-25T02:30:00+01:00,2026-10-25T02:45:00+01:00,after,launch\n"
        ),
        "csv",
    )
    assert [event.start for event in calendar.events] == [
        datetime(2026, 10, 25, 0, 30, tzinfo=UTC),
        datetime(2026, 10, 25, 1, 30, tzinfo=UTC),
    ]
    assert all(event.start.tzinfo is UTC for event in calendar.events)


def test_a_time_without_an_offset_is_refused_naming_the_row() -> None:
    with pytest.raises(InputDataError) as info:
        parse_calendar(
            "c",
            csv("2026-06-10T15:30:00Z,2026-06-10T17:00:00Z,a,m\n2026-06-11T15:30:00,2026-06-11T17:00:00Z,b,m\n"),
            "csv",
            "cal.csv",
        )
    message = str(info.value)
    assert "cal.csv, line 3" in message
    assert "start '2026-06-11T15:30:00'" in message
    assert "UTC offset or Z" in message


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ("2026-06-10T17:00:00Z,2026-06-10T15:00:00Z,a,m", "end 2026-06-10T15:00:00+00:00 is not after start"),
        ("2026-06-10T15:00:00Z,,a,m", "column 'end' is empty"),
        ("2026-06-10T15:00:00Z,2026-06-10T16:00:00Z,,m", "column 'name' is empty"),
        ("2026-06-10T15:00:00Z,2026-06-10T16:00:00Z,a,Big Match", "kind 'big match' is not valid"),
        ("2026-06-10T15:00:00Z,2026-09-10T16:00:00Z,a,m", "longer than the 31 days"),
        ("tomorrow,2026-06-10T16:00:00Z,a,m", "start 'tomorrow' is not valid"),
    ],
)
def test_bad_rows_are_named(row: str, expected: str) -> None:
    with pytest.raises(InputDataError, match="line 2") as info:
        parse_calendar("c", csv(row + "\n"), "csv")
    assert expected in str(info.value)


def test_a_bad_header_says_what_is_accepted() -> None:
    with pytest.raises(InputDataError, match="header begin,end,name is not valid; accepted: start,end,name"):
        parse_calendar("c", "begin,end,name\n", "csv")


def test_an_optional_prior_uplift_column() -> None:
    calendar = parse_calendar(
        "c",
        "start,end,name,kind,uplift\n2026-06-10T15:00:00Z,2026-06-10T16:00:00Z,launch,launch,2.5\n"
        "2026-06-11T15:00:00Z,2026-06-11T16:00:00Z,patch,launch,\n",
        "csv",
    )
    assert [event.uplift for event in calendar.events] == [2.5, None]
    for bad in ("0", "-1", "lots", "1000"):
        with pytest.raises(InputDataError, match=f"line 2: uplift '{bad}' is not valid; accepted: a multiplier > 0"):
            parse_calendar("c", f"start,end,name,uplift\n2026-06-10T15:00:00Z,2026-06-10T16:00:00Z,a,{bad}\n", "csv")


def test_kind_defaults_to_event() -> None:
    calendar = parse_calendar("c", "start,end,name\n2026-06-10T15:00:00Z,2026-06-10T16:00:00Z,launch day\n", "csv")
    assert calendar.events[0].kind == "event"


def test_yaml_list_or_events_mapping() -> None:
    text = """
events:
  - {start: "2026-06-10T15:00:00Z", end: "2026-06-10T17:00:00Z", name: final, kind: match}
  - start: 2026-06-09T15:00:00+02:00
    end: 2026-06-09T16:00:00+02:00
    name: launch
"""
    calendar = parse_calendar("c", text, "yaml")
    assert [(e.name, e.kind, e.start.hour) for e in calendar.events] == [
        ("launch", "event", 13),
        ("final", "match", 15),
    ]
    with pytest.raises(InputDataError, match="event 1: key 'begin' is not known"):
        parse_calendar("c", "- {begin: x, end: y, name: z}\n", "yaml")
    with pytest.raises(InputDataError, match="expected a list of events"):
        parse_calendar("c", "hello: world\n", "yaml")


def test_an_out_of_range_time_is_a_named_error_not_a_crash() -> None:
    with pytest.raises(InputDataError, match="line 2: start '0001-01-01T00:00:00\\+01:00' is not valid"):
        parse_calendar("c", csv("0001-01-01T00:00:00+01:00,2026-06-10T16:00:00Z,a,m\n"), "csv")


def test_a_directory_is_re_read_when_a_file_changes_and_a_bad_edit_keeps_the_last_good(tmp_path: Path) -> None:
    path = tmp_path / "launches.csv"
    path.write_text(csv("2026-06-10T15:00:00Z,2026-06-10T17:00:00Z,a,launch\n"))
    (tmp_path / "notes.txt").write_text("ignored")
    calendars = CalendarSet(tmp_path)
    assert calendars.names == ("launches",)
    first = calendars.get("launches")
    assert first is not None and len(first.events) == 1
    path.write_text(
        csv("2026-06-10T15:00:00Z,2026-06-10T17:00:00Z,a,launch\n2026-06-12T15:00:00Z,2026-06-12T17:00:00Z,b,launch\n")
    )
    os.utime(path, (1, 1))
    calendars.refresh()
    again = calendars.get("launches")
    assert again is not None and len(again.events) == 2
    path.write_text(csv("not a time,2026-06-10T17:00:00Z,a,launch\n"))
    calendars.refresh()
    kept = calendars.get("launches")
    assert kept is not None and len(kept.events) == 2
    assert "line 2" in calendars.errors["launches"]


def test_a_trigger_naming_a_broken_calendar_is_told_why(tmp_path: Path) -> None:
    (tmp_path / "launches.csv").write_text(csv("2026-06-10T15:00:00Z,2026-06-10T17:00:00Z,a,launch\n"))
    (tmp_path / "sales.csv").write_text(csv("next friday,2026-06-10T17:00:00Z,a,sale\n"))
    subscriptions = Subscriptions(SourceResolver(None, {}), 10, timedelta(seconds=30), calendars=CalendarSet(tmp_path))
    meta = ScalerMetadata.parse({"query": "up", "threshold": "1", "calendar": "launches,sales"})
    with pytest.raises(InvalidMetadata) as info:
        subscriptions.register("ns", "web", meta)
    assert info.value.key == "calendar" and info.value.value == "sales"  # only the missing one
    assert "launches" in info.value.accepted
    assert "not loaded" in info.value.accepted and "start 'next friday' is not valid" in info.value.accepted
