"""The gRPC server (ExternalScaler, health, reflection, one metrics interceptor) and the HTTP port."""

from __future__ import annotations

import errno
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from helios_scaler._proto import externalscaler_pb2 as pb
from helios_scaler._proto import externalscaler_pb2_grpc as pb_grpc
from helios_scaler.serving.keda import ExternalScalerService
from helios_scaler.telemetry import Telemetry

logger = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ExternalScaler"].full_name

#: grpc sets SO_REUSEPORT by default: a second server on the same port would start silently and take
#: a share of the connections.  Without it, binding a port in use fails.
SERVER_OPTIONS = (("grpc.so_reuseport", 0),)


class MetricsInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Counts every RPC by method and status code and times it, in one place."""

    def __init__(self, telemetry: Telemetry) -> None:
        self._telemetry = telemetry

    def _record(self, method: str, context: Any, started: float, failed: bool) -> None:
        code = context.code() if failed else None
        name = code.name if isinstance(code, grpc.StatusCode) else ("UNKNOWN" if failed else "OK")
        self._telemetry.rpc_requests.labels(method, name).inc()
        self._telemetry.rpc_duration.labels(method).observe(time.perf_counter() - started)

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], details: grpc.HandlerCallDetails
    ) -> Any:
        handler = await continuation(details)
        if handler is None:
            return None
        method = details.method.rsplit("/", 1)[-1]
        if handler.unary_unary is not None:
            inner = handler.unary_unary

            async def unary(request: Any, context: Any) -> Any:
                started = time.perf_counter()
                try:
                    response = await inner(request, context)
                except BaseException:
                    self._record(method, context, started, failed=True)
                    raise
                self._record(method, context, started, failed=False)
                return response

            return grpc.unary_unary_rpc_method_handler(
                unary,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            inner_stream = handler.unary_stream

            async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
                started = time.perf_counter()
                failed = False
                try:
                    async for item in inner_stream(request, context):
                        yield item
                except BaseException:
                    failed = True
                    raise
                finally:
                    self._record(method, context, started, failed)

            return grpc.unary_stream_rpc_method_handler(
                stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


class GrpcServer:
    """grpc.aio server hosting the scaler, the standard health service and reflection."""

    def __init__(self, service: ExternalScalerService, telemetry: Telemetry, address: str) -> None:
        self.service = service
        self.health = health_aio.HealthServicer()
        self.server = grpc.aio.server(interceptors=[MetricsInterceptor(telemetry)], options=SERVER_OPTIONS)
        pb_grpc.add_ExternalScalerServicer_to_server(service, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (
                SERVICE_NAME,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            self.server,
        )
        try:
            self.port = self.server.add_insecure_port(address)
        except RuntimeError as exc:  # grpc says only "Failed to bind"; find out why
            raise _bind_error(address) from exc
        if self.port == 0:
            raise _bind_error(address)

    async def start(self) -> None:
        await self.server.start()
        await self.set_serving(True)

    async def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", SERVICE_NAME):
            await self.health.set(name, status)

    async def stop(self, grace: float) -> None:
        """End streams with OK, refuse new RPCs, let in-flight ones finish within ``grace``."""
        self.service.stop_streams()
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)


def _bind_error(address: str) -> OSError:
    """An OSError naming ``address`` and, when a plain socket can tell, why it cannot be bound."""
    host, _, port = address.rpartition(":")
    try:
        infos = socket.getaddrinfo(host.strip("[]") or None, int(port), type=socket.SOCK_STREAM)
        family, kind, proto, _, sockaddr = infos[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as grpc does
            probe.bind(sockaddr)
    except OSError as exc:
        code = exc.errno or errno.EADDRNOTAVAIL
        reason = exc.strerror or str(exc)
        if code == errno.EADDRINUSE:
            reason += " (another process listens there: is a helios-scaler already running?)"
        return OSError(code, f"cannot bind the gRPC port at {address}: {reason}")
    except (ValueError, IndexError):
        pass
    return OSError(f"cannot bind the gRPC port at {address} (grpc refused it)")


class HttpServer:
    """``/metrics``, ``/healthz`` (the process is alive) and ``/readyz`` (data is fresh)."""

    def __init__(self, telemetry: Telemetry, ready: Callable[[], tuple[bool, str]], host: str, port: int) -> None:
        registry = telemetry.registry

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    self._send(200, b"ok\n")
                elif path == "/readyz":
                    ok, why = ready()
                    self._send(200 if ok else 503, (why + "\n").encode())
                else:
                    self._send(404, b"not found: try /metrics, /healthz or /readyz\n")

            def _send(self, code: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                logger.debug("http: " + format, *args)

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="helios-http", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
