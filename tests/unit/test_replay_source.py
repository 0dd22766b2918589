"""ReplaySource: the bundled WorldCup98 trace replayed on an injected clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from importlib import resources

import polars as pl
import pytest

from helios_scaler.errors import NoData, QueryError
from helios_scaler.features.schema import DS, Y, empty_series
from helios_scaler.source.replay import SERIES, ReplaySource, load_trace

MINUTE = timedelta(minutes=1)
WEEK = timedelta(days=7)
#: Deliberately not minute-aligned: the replay pins trace time to the minute below.
T0 = datetime(2024, 5, 1, 12, 0, 30, tzinfo=UTC)
ANCHOR = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
N = 14 * 24 * 60


class Clock:
    """A settable clock."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def trace() -> list[float]:
    return load_trace()[Y].to_list()


def test_load_trace_is_the_bundled_14_day_slice() -> None:
    frame = load_trace()
    assert frame.schema == empty_series().schema
    assert frame.height == N
    assert frame[DS][0] == datetime(1998, 6, 10, tzinfo=UTC)
    assert frame[DS][-1] == datetime(1998, 6, 23, 23, 59, tzinfo=UTC)
    assert frame[DS].diff().drop_nulls().unique().to_list() == [MINUTE]
    # First and last rows of the source CSV's slice.
    assert (frame[Y][0], frame[Y][-1]) == (13601.0, 23052.0)
    # A strong daily pattern: the same minute one day later correlates strongly.
    assert pl.DataFrame({"a": frame[Y][:-1440], "b": frame[Y][1440:]}).select(pl.corr("a", "b")).item() > 0.5


def test_licences_and_readme_are_bundled_next_to_the_data() -> None:
    data = resources.files("helios_scaler.source").joinpath("data")
    assert "Copyright" in data.joinpath("WorldCup.html").read_text(encoding="latin-1")
    assert data.joinpath("LICENSE.worldcup98-dataset").read_text().startswith("MIT License")
    readme = data.joinpath("README.md").read_text()
    assert "82460213f0d5a86fa57b6d4b0b5f260e606e713b" in readme


def test_history_ending_now_is_the_trace_shifted_into_the_present(clock: Clock, trace: list[float]) -> None:
    source = ReplaySource(clock=clock)
    frame = source.fetch(SERIES, ANCHOR - WEEK, ANCHOR, MINUTE)

    assert frame.schema == empty_series().schema
    assert frame.height == 7 * 24 * 60 + 1
    assert frame[DS][0] == ANCHOR - WEEK
    assert frame[DS][-1] == ANCHOR
    # Trace time slice_start + history is pinned to now: the first week, then the first sample of day 8.
    assert frame[Y].to_list() == trace[: 7 * 24 * 60 + 1]


def test_fetch_never_returns_future_points(clock: Clock) -> None:
    source = ReplaySource(clock=clock)
    frame = source.fetch(SERIES, T0 - timedelta(hours=1), T0 + timedelta(hours=1), MINUTE)
    assert frame[DS].max() <= T0  # type: ignore[operator]
    assert frame[DS][-1] == T0  # the grid starts at start (11:00:30): its last point ≤ now is now itself
    assert frame.height == 61


def test_no_data_before_the_replay_starts(clock: Clock) -> None:
    source = ReplaySource(clock=clock, history=timedelta(days=1))
    with pytest.raises(NoData, match="replay starts at"):
        source.fetch(SERIES, ANCHOR - timedelta(days=3), ANCHOR - timedelta(days=2), MINUTE)
    frame = source.fetch(SERIES, ANCHOR - timedelta(days=3), ANCHOR, MINUTE)
    assert frame[DS][0] == ANCHOR - timedelta(days=1)


def test_the_replay_advances_with_the_clock(clock: Clock, trace: list[float]) -> None:
    source = ReplaySource(clock=clock)
    clock.now = T0 + timedelta(minutes=30)

    frame = source.fetch(SERIES, ANCHOR, clock.now, MINUTE)

    assert frame[DS].to_list() == [ANCHOR + i * MINUTE for i in range(31)]
    assert frame[Y].to_list() == trace[7 * 1440 : 7 * 1440 + 31]
    assert source.now() == clock.now


def test_speed_fast_forwards_the_trace(clock: Clock, trace: list[float]) -> None:
    source = ReplaySource(clock=clock, speed=60.0)
    clock.now = ANCHOR + timedelta(minutes=2)

    frame = source.fetch(SERIES, ANCHOR, clock.now, timedelta(seconds=1))

    assert frame.height == 121
    # Each clock second shows the next trace minute.
    assert frame[Y].to_list() == trace[7 * 1440 : 7 * 1440 + 121]


def test_wraps_around_to_the_slice_start_with_monotonic_timestamps(clock: Clock, trace: list[float]) -> None:
    source = ReplaySource(clock=clock)
    clock.now = ANCHOR + WEEK + timedelta(minutes=5)  # 5 minutes past the trace's end

    frame = source.fetch(SERIES, ANCHOR + WEEK - timedelta(minutes=3), clock.now, MINUTE)

    assert frame[DS].is_sorted()
    assert frame[DS].is_unique().all()
    assert frame[DS][-1] == clock.now
    assert frame[Y].to_list() == trace[-3:] + trace[:6]


def test_step_other_than_a_minute_takes_the_sample_at_each_step_time(clock: Clock, trace: list[float]) -> None:
    source = ReplaySource(clock=clock)
    start = ANCHOR - timedelta(hours=2)

    five = source.fetch(SERIES, start, ANCHOR, timedelta(minutes=5))
    assert five[DS].to_list() == [start + i * timedelta(minutes=5) for i in range(25)]
    first = 7 * 1440 - 120
    assert five[Y].to_list() == trace[first : 7 * 1440 + 1 : 5]

    # Off-grid evaluation times see the latest sample at or before them.
    half = source.fetch(SERIES, start + timedelta(seconds=30), start + timedelta(minutes=3), timedelta(seconds=30))
    assert half[Y].to_list() == [
        trace[first],
        trace[first + 1],
        trace[first + 1],
        trace[first + 2],
        trace[first + 2],
        trace[first + 3],
    ]


def test_unknown_query_is_a_query_error_listing_known_series(clock: Clock) -> None:
    source = ReplaySource(clock=clock)
    with pytest.raises(QueryError, match="worldcup98") as caught:
        source.fetch("sum(rate(http_requests_total[1m]))", T0 - MINUTE, T0, MINUTE)
    assert "sum(rate(http_requests_total[1m]))" in str(caught.value)


def test_name_and_default_clock() -> None:
    source = ReplaySource()
    assert source.name == "replay"
    assert abs(source.now() - datetime.now(UTC)) < timedelta(seconds=5)
    frame = source.fetch(SERIES, source.now() - timedelta(hours=1), source.now(), MINUTE)
    assert frame.height in (60, 61)


@pytest.mark.parametrize(
    ("speed", "history"), [(0.0, WEEK), (-1.0, WEEK), (1.0, timedelta(0)), (1.0, timedelta(days=15))]
)
def test_invalid_speed_or_history_is_refused(speed: float, history: timedelta) -> None:
    with pytest.raises(ValueError):
        ReplaySource(speed=speed, history=history)
