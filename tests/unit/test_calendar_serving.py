"""Known-event calendars end to end: metadata names them, the server checks them, the forecast rises
before a kick-off (the demo's replay of WorldCup98 and its real 1998 calendar, over real gRPC)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import grpc
import numpy as np
import pytest
from scaler_app import ref, running_app, scaler_settings, scaler_stub

from helios_scaler._proto import externalscaler_pb2 as pb
from helios_scaler.app import App
from helios_scaler.events.calendar import CalendarSet
from helios_scaler.features.pipeline import align_to_grid
from helios_scaler.models.selection import select_and_fit
from helios_scaler.policy import decide
from helios_scaler.source.registry import SourceResolver
from helios_scaler.source.replay import ReplaySource, load_trace
from helios_scaler.store import SeriesState
from helios_scaler.trigger import ScalerMetadata, Target

KICK_OFF = datetime(1998, 6, 17, 15, 30, tzinfo=UTC)
BASE = {"query": "worldcup98", "threshold": "1000", "leadTime": "10m"}
MINUTE = timedelta(minutes=1)


async def forecast_state(app: App, metadata: dict[str, str], name: str, timeout: float = 90) -> SeriesState:
    meta = ScalerMetadata.parse(metadata)
    sub = app.subscriptions.get("shop", name, meta.metric_name())
    assert sub is not None
    deadline = asyncio.get_running_loop().time() + timeout
    while (state := app.store.snapshot.get(sub.key)) is None or not state.has_forecast:
        assert asyncio.get_running_loop().time() < deadline, f"no forecast within {timeout} s: {state}"
        await asyncio.sleep(0.2)
    return state


def test_the_replay_calendar_lands_on_the_replay_clock() -> None:
    now = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    history = KICK_OFF - load_trace()["ds"][0]
    replay = ReplaySource(clock=lambda: now, history=history)
    calendar = replay.calendar()
    # The replay shows the kick-off now, so one event of the calendar starts now (and every 14 days).
    starts = {event.start for event in calendar.events}
    assert now in starts and now + timedelta(days=14) in starts and now - timedelta(days=14) in starts
    # Events keep their kind and length.
    event = next(event for event in calendar.events if event.start == now)
    assert (event.kind, event.end - event.start) == ("match", timedelta(minutes=105))


async def test_the_calendar_raises_the_forecast_before_a_kick_off() -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    # The replay shows 1998-06-17 15:25 (five minutes before a kick-off) now, and stands still.
    replay = ReplaySource(clock=lambda: now, history=KICK_OFF - timedelta(minutes=5) - load_trace()["ds"][0])
    calendars = CalendarSet(None, [replay.calendar()])
    with_calendar = {**BASE, "calendar": "worldcup98"}
    async with (
        running_app(scaler_settings(), SourceResolver(replay, {}), calendars) as app,
        scaler_stub(app) as stub,
    ):
        await stub.GetMetricSpec(ref(BASE, name="plain"), timeout=3)
        await stub.GetMetricSpec(ref(with_calendar, name="events"), timeout=3)
        plain = await forecast_state(app, BASE, "plain")
        events = await forecast_state(app, with_calendar, "events")
        assert plain.last_value == events.last_value and events.last_value is not None
        assert plain.series_id != events.series_id  # two series in the metrics, not one label twice
        ahead = decide(events, ScalerMetadata.parse(with_calendar), datetime.now(UTC), app.settings.stale_after)
        assert ahead.forecast is not None
        # Matches finished in the week before taught the uplift: the window reaches 6 minutes past
        # kick-off, and the forecast rises above the load seen five minutes before it.
        assert ahead.forecast > 1.1 * events.last_value, (ahead, events.last_value)
        served = await stub.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=ref(with_calendar, name="events")))
        assert served.metricValues[0].metricValueFloat == pytest.approx(ahead.value, rel=1e-6)


def test_the_same_model_forecasts_higher_with_the_calendar_before_a_kick_off() -> None:
    now = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    replay = ReplaySource(clock=lambda: now, history=KICK_OFF - timedelta(minutes=5) - load_trace()["ds"][0])
    events = replay.calendar().events
    raw = replay.fetch("worldcup98", now - timedelta(days=7), now, MINUTE)
    frame, _ = align_to_grid(raw, MINUTE)
    target = Target(threshold=1000.0, step=MINUTE, startup=timedelta(minutes=10))
    fitted = select_and_fit(frame, MINUTE, 13, window=11, target=target, events=events)
    assert fitted.uplift is not None and fitted.uplift.events_used["match"] >= 10
    plain, _ = fitted.forecast(frame, [None], ())
    lifted, bands = fitted.forecast(frame, [None], events)
    # Before kick-off the factors grow step by step (U(target) / U(now)), and only near an event.
    ratio = lifted / plain
    assert ratio[0] < ratio[-1] and ratio[-1] > 1.1
    assert np.all(bands[None] >= lifted)  # the event margin only adds
    far = replay.fetch("worldcup98", now - timedelta(days=7), now - timedelta(hours=5), MINUTE)
    far_frame, _ = align_to_grid(far, MINUTE)  # 10:25 in 1998: no match within the window
    np.testing.assert_allclose(fitted.forecast(far_frame, [None], events)[0], fitted.forecast(far_frame, [None], ())[0])


async def test_an_unknown_calendar_is_invalid_argument_naming_the_known_ones() -> None:
    replay = ReplaySource()
    calendars = CalendarSet(None, [replay.calendar()])
    async with (
        running_app(scaler_settings(), SourceResolver(replay, {}), calendars) as app,
        scaler_stub(app) as stub,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetMetricSpec(ref({**BASE, "calendar": "olympics"}), timeout=3)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "'calendar'" in caught.value.details() and "'olympics'" in caught.value.details()
        assert "worldcup98" in caught.value.details()
        assert app.subscriptions.all() == []
