"""The ExternalScaler servicer (KEDA's side of helios-scaler): parse metadata, read the snapshot, answer.

Handlers never do I/O and never compute forecasts: they register the trigger (a dict
update), read the current immutable snapshot and apply the pure policy.  Every failure is a
typed error answered with its status (:mod:`helios_scaler.serving.status`); the policy
serves only finite values, which :func:`int64` clamps into KEDA's int fields.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import grpc

from helios_scaler._proto import externalscaler_pb2 as pb
from helios_scaler._proto import externalscaler_pb2_grpc as pb_grpc
from helios_scaler.demand import Subscription, Subscriptions
from helios_scaler.errors import HeliosError, ModelError
from helios_scaler.policy import Decision, decide, is_active
from helios_scaler.serving import status
from helios_scaler.store import ForecastStore
from helios_scaler.trigger import ScalerMetadata

logger = logging.getLogger(__name__)

#: KEDA's int fields are int64; a larger float value is still served in full by ``metricValueFloat``.
INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)


def int64(value: float) -> int:
    """``value`` rounded and clamped into int64; ModelError if it is not finite (the policy never serves one)."""
    if not math.isfinite(value):
        raise ModelError(f"refusing to serve {value!r}: not a finite number")
    return max(INT64_MIN, min(round(value), INT64_MAX))


class ExternalScalerService(pb_grpc.ExternalScalerServicer):  # type: ignore[misc]
    """KEDA's ExternalScaler: IsActive, StreamIsActive, GetMetricSpec, GetMetrics."""

    def __init__(
        self,
        store: ForecastStore,
        subscriptions: Subscriptions,
        stale_after: timedelta,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        stream_recheck: float = 5.0,
    ) -> None:
        self._store = store
        self._subs = subscriptions
        self._stale_after = stale_after
        self._clock = clock
        self._stream_recheck = stream_recheck
        self._stopping = asyncio.Event()

    def stop_streams(self) -> None:
        """End open StreamIsActive streams with status OK (KEDA reconnects after 2 s)."""
        self._stopping.set()

    def _subscribe(self, ref: pb.ScaledObjectRef) -> Subscription:
        meta = self._subs.parse(ref.scalerMetadata)
        return self._subs.register(ref.namespace, ref.name, meta)

    def _decide(self, sub: Subscription) -> Decision:
        return decide(self._store.snapshot.get(sub.key), sub.meta, self._clock(), self._stale_after)

    @status.unary
    async def GetMetricSpec(
        self, request: pb.ScaledObjectRef, context: grpc.aio.ServicerContext
    ) -> pb.GetMetricSpecResponse:
        sub = self._subscribe(request)
        threshold = sub.meta.threshold
        spec = pb.MetricSpec(metricName=sub.metric_name, targetSize=max(1, int64(threshold)), targetSizeFloat=threshold)
        return pb.GetMetricSpecResponse(metricSpecs=[spec])

    @status.unary
    async def GetMetrics(
        self, request: pb.GetMetricsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetMetricsResponse:
        sub = self._subscribe(request.scaledObjectRef)
        decision = self._decide(sub)
        name = request.metricName or sub.metric_name
        value = pb.MetricValue(metricName=name, metricValue=int64(decision.value), metricValueFloat=decision.value)
        return pb.GetMetricsResponse(metricValues=[value])

    @status.unary
    async def IsActive(self, request: pb.ScaledObjectRef, context: grpc.aio.ServicerContext) -> pb.IsActiveResponse:
        sub = self._subscribe(request)
        decision = self._decide(sub)
        return pb.IsActiveResponse(result=is_active(decision, sub.meta))

    @status.stream
    async def StreamIsActive(
        self, request: pb.ScaledObjectRef, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.IsActiveResponse]:
        """Send the activity now and whenever it changes; end with OK on shutdown.

        Bad metadata ends the stream at once (INVALID_ARGUMENT, raised by the first read).  While the
        series is not ready yet or its source is unreachable (:func:`status.is_transient`) the stream
        says nothing and waits for new data; any other error (a full quota, an address not allowed, a
        rejected query) ends it with its status, since waiting cannot clear it.
        """
        meta: ScalerMetadata = self._subs.parse(request.scalerMetadata)
        last: bool | None = None
        while not self._stopping.is_set():
            try:
                sub = self._subs.register(request.namespace, request.name, meta)
                active: bool | None = is_active(self._decide(sub), meta)
            except HeliosError as exc:
                if not status.is_transient(exc):
                    raise
                logger.debug("StreamIsActive for %s/%s waits: %s", request.namespace, request.name, exc)
                active = None  # not ready yet: say nothing, KEDA keeps its last state
            if active is not None and active != last:
                last = active
                yield pb.IsActiveResponse(result=active)
            version = self._store.snapshot.version
            waiter = asyncio.ensure_future(self._store.wait_for_change(version, self._stream_recheck))
            stopper = asyncio.ensure_future(self._stopping.wait())
            await asyncio.wait([waiter, stopper], return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            stopper.cancel()
        logger.debug("StreamIsActive for %s/%s ended by shutdown", request.namespace, request.name)
