"""Event uplift: how much a known event lifts demand above its pre-event level, by step from its start.

A history-only model cannot see a football match coming: the surge at kick-off is not in the
series' own past at that hour.  The calendar does know it, and every kind of event (every
``match``, every ``launch``) tends to move load alike.  So, per kind, this module learns the
*uplift curve* — demand divided by the level just before the event, at each step from a little
before the start to the end of the longest event of that kind — as the median over the events
of that kind that have already *finished*, and turns it into multiplicative factors to apply on
top of a base forecast.

Why it is shaped this way:

- **Relative, not absolute.**  Each event's curve is divided by its own reference level (the mean
  of a window ending a little before the start), so events on quiet and busy days are comparable
  and the factor carries to a base forecast at any level.
- **Median, then a short rolling median.**  One odd event (an outage, a final) must not move the
  curve; a 5-point centred rolling median then removes single-step noise without smearing the
  kick-off edge the way a mean would.
- **Only finished events.**  An event is learnt from only once its whole curve window lies before
  ``as_of`` (on the origins convention, a forecast made at ``as_of`` knows the rows before it), so
  a backtest never learns from the future.
- **Ratios of the curve, not the curve.**  A forecast at origin ``o`` already sees row ``o - 1``; if
  that row is inside an event, the base forecast starts from the uplifted level.  The factor for
  target row ``t`` is therefore ``U(t) / U(o - 1)``: ahead of an event it brings in the surge,
  inside one it only carries the curve's change from here on.

The module sits low in the house: numpy, polars and the calendar's :class:`Event`, no models,
no training, no I/O.  Timestamps are timezone-aware; everything is placed on the step grid in UTC,
so an event given as ``17:30+02:00`` lands on the same step as ``15:30Z``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

import numpy as np
import polars as pl

from helios_scaler.errors import InputDataError
from helios_scaler.events.calendar import Event
from helios_scaler.features.schema import DS, HOLE, BoolArray, FloatArray, IntArray, Y

#: The curve starts this long before an event's start (the pre-event ramp is part of the curve).
DEFAULT_PRE: Final = timedelta(minutes=10)
#: Length of the window, ending where the curve starts, whose mean is an event's reference level.
DEFAULT_REFERENCE: Final = timedelta(minutes=30)
#: Points of the centred rolling median applied to each kind's curve.
SMOOTHING_POINTS: Final = 5
#: Smallest curve value used as a denominator in :func:`factors`.
MIN_DENOMINATOR: Final = 1e-3


@dataclass(frozen=True, eq=False)
class UpliftCurves:
    """Per event kind, demand relative to the pre-event level, by step from the event's start.

    ``curves[kind][i]`` is the factor at offset ``i - pre_steps`` steps from the step of the
    event's start, so index ``pre_steps`` is the start step itself and the last index is offset
    ``post_steps(kind)``.  Only kinds with at least one usable finished event have a curve;
    ``events_used`` has the same keys.  The arrays are read-only.
    """

    step: timedelta
    #: The curve starts this many steps before the start step.
    pre_steps: int
    #: kind -> factor at offsets ``-pre_steps .. len - 1 - pre_steps`` from the start step.
    curves: Mapping[str, FloatArray]
    #: kind -> how many finished events the curve is the median of.
    events_used: Mapping[str, int]

    def post_steps(self, kind: str) -> int:
        """Last offset (in steps from the start step) that ``kind``'s curve covers."""
        return len(self.curves[kind]) - 1 - self.pre_steps

    def offsets(self, kind: str) -> IntArray:
        """The offset, in steps from the start step, of each point of ``kind``'s curve."""
        return np.arange(-self.pre_steps, self.post_steps(kind) + 1, dtype=np.int64)


def _step_us(step: timedelta) -> int:
    step_us = step // timedelta(microseconds=1)
    if step_us <= 0:
        raise ValueError(f"step must be positive, got {step}")
    return step_us


def _require_aware(name: str, moment: datetime) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} {moment.isoformat()} has no UTC offset; times must be timezone-aware")


def step_index(ds0: datetime, moment: datetime, step: timedelta) -> int:
    """The grid row nearest ``moment`` on the grid whose row 0 is at ``ds0``.

    ``round((moment - ds0) / step)`` in exact integer microseconds; a time exactly half-way
    between two steps goes to the later one.  Offsets (``+02:00``) do not matter: aware datetimes
    subtract as instants.
    """
    step_us = _step_us(step)
    delta_us = (moment - ds0) // timedelta(microseconds=1)
    return (2 * delta_us + step_us) // (2 * step_us)


def _steps_ceil(span: timedelta, step: timedelta) -> int:
    """``ceil(span / step)`` in exact integer microseconds."""
    return -(-(span // timedelta(microseconds=1)) // _step_us(step))


def _rolling_median(curve: FloatArray, points: int = SMOOTHING_POINTS) -> FloatArray:
    """Centred rolling median of ``points`` points, fewer at the ends (min_periods 1)."""
    half = points // 2
    padded = np.concatenate([np.full(half, np.nan), curve, np.full(half, np.nan)])
    windows = np.lib.stride_tricks.sliding_window_view(padded, points)
    return np.asarray(np.nanmedian(windows, axis=1), dtype=np.float64)


def _check_grid(ds_us: IntArray, step_us: int) -> None:
    if len(ds_us) > 1:
        gaps = np.diff(ds_us)
        bad = np.flatnonzero(gaps != step_us)
        if len(bad):
            row = int(bad[0]) + 1
            raise InputDataError(
                f"uplift needs a regular grid of step {timedelta(microseconds=step_us)}: row {row} is "
                f"{timedelta(microseconds=int(gaps[bad[0]]))} after the row before it; align the frame first"
            )


def _post_steps_by_kind(events: Sequence[Event], step: timedelta) -> dict[str, int]:
    longest: dict[str, timedelta] = {}
    for event in events:
        longest[event.kind] = max(longest.get(event.kind, timedelta(0)), event.end - event.start)
    return {kind: max(0, _steps_ceil(span, step)) for kind, span in longest.items()}


def learn_uplift(
    frame: pl.DataFrame,
    events: Sequence[Event],
    step: timedelta,
    as_of: datetime,
    pre: timedelta = DEFAULT_PRE,
    reference: timedelta = DEFAULT_REFERENCE,
) -> UpliftCurves:
    """Learn each event kind's uplift curve from the events of ``events`` finished by ``as_of``.

    ``frame`` is a regular ``step`` grid with ``ds`` (aware UTC) and ``y``, optionally ``hole``.
    An event's start step is the row nearest its start (:func:`step_index`).  With
    ``pre_steps = max(1, ceil(pre / step))``, ``ref_steps = max(1, ceil(reference / step))`` and,
    per kind, ``post_steps = ceil(longest (end - start) among that kind's events / step)``:

    - the event's curve window is rows ``start - pre_steps .. start + post_steps`` and its
      reference window the ``ref_steps`` rows just before the curve window;
    - it is used only if its curve window has ended by ``as_of`` (the last window row is before
      ``as_of``: ``start + (post_steps + 1) * step <= as_of``), both windows lie inside the frame,
      touch no ``hole`` row and hold only finite ``y``, and the reference level (mean ``y`` of the
      reference window) is positive;
    - its curve is ``y`` over the curve window divided by the reference level.

    A kind's curve is the element-wise median of its used events' curves, then a centred rolling
    median of 5 points (fewer at the ends).  Kinds with no usable event get no curve.

    Raises :class:`~helios_scaler.errors.InputDataError` if the frame lacks ``ds``/``y`` or is not
    a regular ``step`` grid, and ValueError for a non-positive ``step``, ``pre`` or ``reference``
    shorter than zero, or a naive ``as_of``.
    """
    step_us = _step_us(step)
    _require_aware("as_of", as_of)
    if pre < timedelta(0) or reference < timedelta(0):
        raise ValueError(f"pre and reference must not be negative, got {pre} and {reference}")
    pre_steps = max(1, _steps_ceil(pre, step))
    ref_steps = max(1, _steps_ceil(reference, step))
    missing = [column for column in (DS, Y) if column not in frame.columns]
    if missing:
        raise InputDataError(f"uplift needs columns {DS!r} and {Y!r}; the frame lacks {missing[0]!r}")
    empty = UpliftCurves(step, pre_steps, {}, {})
    if frame.is_empty():
        return empty
    ds_us = np.asarray(frame[DS].dt.epoch("us").to_numpy(), dtype=np.int64)
    _check_grid(ds_us, step_us)
    ds0 = frame[DS][0]
    if not isinstance(ds0, datetime) or ds0.tzinfo is None:
        raise InputDataError(f"uplift needs a timezone-aware {DS!r} column, got {frame[DS].dtype}")
    y = frame[Y].to_numpy().astype(np.float64, copy=False)
    hole = (
        np.asarray(frame[HOLE].fill_null(False).to_numpy(), dtype=np.bool_)
        if HOLE in frame.columns
        else np.zeros(len(y), dtype=np.bool_)
    )
    # Prefix sums: "does [a, b) touch a hole / a non-finite y" in O(1) per event.
    bad = hole | ~np.isfinite(y)
    bad_before = np.concatenate([[0], np.cumsum(bad, dtype=np.int64)])

    per_kind: dict[str, list[FloatArray]] = {}
    for kind, post_steps in _post_steps_by_kind(events, step).items():
        for event in events:
            if event.kind != kind or event.start + (post_steps + 1) * step > as_of:
                continue
            start = step_index(ds0, event.start, step)
            first, last = start - pre_steps - ref_steps, start + post_steps  # rows first..last, inclusive
            if first < 0 or last >= len(y) or bad_before[last + 1] - bad_before[first] > 0:
                continue
            level = float(y[first : start - pre_steps].mean())
            if level <= 0:
                continue
            per_kind.setdefault(kind, []).append(y[start - pre_steps : last + 1] / level)

    curves: dict[str, FloatArray] = {}
    used: dict[str, int] = {}
    for kind, rows in per_kind.items():
        curve = _rolling_median(np.asarray(np.median(np.vstack(rows), axis=0), dtype=np.float64))
        curve.setflags(write=False)
        curves[kind] = curve
        used[kind] = len(rows)
    # A kind no finished event has taught yet: the calendar's prior multiplier (median over its events), if any,
    # flat from the start to the kind's longest event.
    for kind, post_steps in _post_steps_by_kind(events, step).items():
        priors = [event.uplift for event in events if event.kind == kind and event.uplift is not None]
        if kind not in curves and priors:
            curve = np.concatenate([np.ones(pre_steps), np.full(post_steps + 1, float(np.median(priors)))])
            curve.setflags(write=False)
            curves[kind] = curve
            used[kind] = 0
    return UpliftCurves(step, pre_steps, dict(curves), dict(used))


def _uplift_at(
    curves: UpliftCurves, events: Sequence[Event], ds0: datetime, origins: IntArray, h: int
) -> tuple[FloatArray, BoolArray]:
    """``U`` at rows ``o - 1 .. o - 1 + h`` of each origin (shape ``(len(origins), h + 1)``), and
    whether each of those rows lies in the curve window of an event of a kind with a curve.

    ``U`` is built densely only over the rows both the origins ask for and some event window covers,
    one event at a time (an event-sized slice each), then gathered for every origin at once.
    """
    _require_aware("ds0", ds0)
    if h < 1:
        raise ValueError(f"h must be at least 1, got {h}")
    origins = np.asarray(origins, dtype=np.int64)
    rows = origins[:, None] - 1 + np.arange(h + 1, dtype=np.int64)[None, :]
    uplift = np.ones(rows.shape, dtype=np.float64)
    covered = np.zeros(rows.shape, dtype=np.bool_)
    windows = [
        (step_index(ds0, event.start, curves.step) - curves.pre_steps, curves.curves[event.kind])
        for event in events
        if event.kind in curves.curves
    ]
    if not windows or len(origins) == 0:
        return uplift, covered
    lo = max(int(rows.min()), min(first for first, _ in windows))
    hi = min(int(rows.max()), max(first + len(curve) - 1 for first, curve in windows))
    if lo > hi:
        return uplift, covered
    dense = np.full(hi - lo + 1, np.nan)
    for first, curve in windows:
        a, b = max(first, lo), min(first + len(curve) - 1, hi)  # rows a..b of this window, inclusive
        if a > b:
            continue
        part = curve[a - first : b - first + 1]
        dense[a - lo : b - lo + 1] = np.fmax(dense[a - lo : b - lo + 1], part)  # fmax: NaN (no event yet) loses
    inside = (rows >= lo) & (rows <= hi)
    gathered = dense[np.clip(rows - lo, 0, hi - lo)]
    covered = inside & ~np.isnan(gathered)
    uplift[covered] = gathered[covered]
    return uplift, covered


def factors(curves: UpliftCurves, events: Sequence[Event], ds0: datetime, origins: IntArray, h: int) -> FloatArray:
    """Multiplicative factors to apply to a base forecast, shape ``(len(origins), h)``.

    For origin ``o`` (its newest observation is row ``o - 1``, at ``ds0 + (o - 1) * step``) and
    ``k = 1..h`` (target row ``o - 1 + k``): ``U(o - 1 + k) / max(U(o - 1), 1e-3)``.  ``U(x)`` is
    the curve of the event's kind at offset ``x - start`` (``start``: the event's start step,
    counted from row 0 at ``ds0``) for an event whose curve window covers ``x``; the largest such
    value where windows overlap; 1 outside every window.  Events of kinds without a curve are
    ignored.  Events after the end of the data (known in advance from the calendar) apply as
    well: nothing limits origins or targets to the frame.
    """
    return _factors(_uplift_at(curves, events, ds0, origins, h)[0])


def _factors(uplift: FloatArray) -> FloatArray:
    """``U`` at rows ``o - 1 .. o - 1 + h`` → the factors ``U(o - 1 + k) / U(o - 1)``."""
    return np.asarray(uplift[:, 1:] / np.maximum(uplift[:, :1], MIN_DENOMINATOR), dtype=np.float64)


def in_event_window(
    curves: UpliftCurves, events: Sequence[Event], ds0: datetime, origins: IntArray, h: int
) -> BoolArray:
    """Per origin, whether an event window (of a kind with a curve) touches rows ``o - 1 .. o - 1 + h``.

    Every origin whose :func:`factors` row is not all ones is flagged; an origin inside a flat
    stretch of an event (factors of exactly one) is flagged as well, since it is still inside the
    event (e.g. to score forecasts in and out of events apart).
    """
    return _near(_uplift_at(curves, events, ds0, origins, h)[1])


def _near(covered: BoolArray) -> BoolArray:
    """Rows ``o - 1 .. o - 1 + h`` in an event window → whether the origin is near an event."""
    return np.asarray(covered.any(axis=1), dtype=np.bool_)


def factors_as_learnt(
    frame: pl.DataFrame, events: Sequence[Event], step: timedelta, origins: IntArray, h: int
) -> tuple[FloatArray, BoolArray]:
    """:func:`factors` and :func:`in_event_window` with the curves each origin could have known.

    Origin ``o`` knows rows ``< o``: its curves are learnt from the events finished by the time of
    row ``o - 1`` — so an event teaches the next one the moment it ends, between retrains too.
    Origins are grouped by the events finished by their time and the curves learnt once per group;
    a group's curves are those of its earliest origin (never later knowledge).
    """
    ds0 = frame[DS][0]
    post = _post_steps_by_kind(events, step)
    step_us, micro = _step_us(step), timedelta(microseconds=1)
    # When each event is over, and the time of each origin's newest row, in microseconds from row 0.
    finished_at = np.array(
        sorted((event.start - ds0) // micro + (post[event.kind] + 1) * step_us for event in events), dtype=np.int64
    )
    times = (origins.astype(np.int64) - 1) * step_us
    groups = np.searchsorted(finished_at, times, side="right")
    result = np.ones((len(origins), h))
    near = np.zeros(len(origins), dtype=bool)
    for group in np.unique(groups):
        members = np.flatnonzero(groups == group)
        curves = learn_uplift(frame, events, step, ds0 + int(times[members[0]]) * micro)
        if not curves.curves:
            continue
        uplift, covered = _uplift_at(curves, events, ds0, origins[members], h)  # once for both
        result[members] = _factors(uplift)
        near[members] = _near(covered)
    return result, near
