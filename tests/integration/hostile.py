"""Hostile HTTP servers on loopback: what a broken, slow or malicious "Prometheus" may answer.

``with hostile_server("drip") as server: ...`` starts a real HTTP server on ``127.0.0.1`` (a
free port) that answers every ``/api/v1/query_range`` request the way its mode says, records
each request in ``server.hits`` and is torn down (threads released) on exit.  The modes
(see :data:`MODES`), with their keyword options (any mode also takes ``tls=True``: HTTPS with a
certificate for 127.0.0.1 from a throw-away CA whose file is ``server.ca_file``); setting
``server.mode`` while it runs switches it (``server.mode = "ok"``: the fault ends):

``ok``               a valid answer: one series, ``value`` at every asked step (``labels``)
``by_query``         each request's PromQL text names the mode to use (``fetch("drip", ...)``)
``drip``             a valid answer whose body comes one byte every ``interval`` seconds (0.5)
``slow_headers``     the status line, then the headers one byte every ``interval`` seconds
``silent``           reads the request, never answers
``huge``             a valid-looking answer of ``megabytes`` MB (64); ``chunked=True`` omits
                     Content-Length (the body ends when the connection closes)
``gzip_bomb``        a small gzip body that inflates to ``megabytes`` MB (64) of valid-looking JSON
``redirect``         302 to ``server.target``, a second (``ok``) server that records its hits
``future``           a valid answer whose last sample is stamped ``stamp`` (1e12, year ~33,658); a
                     ``stamp`` of ``"hour"`` means an hour after the asked end
``too_many_points``  one series with one sample more than the asked range has steps
``many_series``      ``count`` series (1000), each valid
``garbage``          200 with an HTML page
``secret``           ``status`` (500) with a body ``"INTERNAL-SECRET: "`` + 10 KB
``malformed``        200 with the JSON of :data:`MALFORMED` [``variant``]
``answer``           ``status`` (200) with ``body`` (bytes, or an object sent as JSON)
"""

from __future__ import annotations

import functools
import http.server
import io
import json
import math
import shutil
import ssl
import tempfile
import threading
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

#: The body of the ``secret`` mode.
SECRET_BODY = "INTERNAL-SECRET: " + "s3cr3t-" * (10_240 // 7)

Params = dict[str, str]


def _asked(params: Params) -> tuple[int, int, int]:
    """``(start, end, step)`` of a range query's parameters (whole seconds)."""
    return (
        int(float(params.get("start", "0"))),
        int(float(params.get("end", "0"))),
        max(1, int(float(params.get("step", "60")))),
    )


def matrix(result: list[Any]) -> dict[str, Any]:
    """A successful range-query answer holding ``result``."""
    return {"status": "success", "data": {"resultType": "matrix", "result": result}}


def series(params: Params, *, labels: dict[str, str] | None = None, value: str = "1") -> dict[str, Any]:
    """One valid series with ``value`` at every step of the asked range."""
    start, end, step = _asked(params)
    return {"metric": labels or {"__name__": "hostile"}, "values": [[t, value] for t in range(start, end + 1, step)]}


def _first(params: Params) -> int:
    return _asked(params)[0]


#: Answers that are JSON but not Prometheus' API, by name: each builds the answer from the request.
MALFORMED: dict[str, Callable[[Params], Any]] = {
    "not_an_object": lambda p: ["status", "success"],
    "status_error": lambda p: {"status": "error", "errorType": "internal", "error": "boom"},
    "status_missing": lambda p: {"data": {"resultType": "matrix", "result": []}},
    "data_missing": lambda p: {"status": "success"},
    "data_a_list": lambda p: {"status": "success", "data": []},
    "result_type_vector": lambda p: {"status": "success", "data": {"resultType": "vector", "result": []}},
    "result_a_string": lambda p: {"status": "success", "data": {"resultType": "matrix", "result": "none"}},
    "entry_a_string": lambda p: matrix(["up"]),
    "metric_a_list": lambda p: matrix([{"metric": ["a"], "values": []}]),
    "label_value_a_list": lambda p: matrix([{"metric": {"job": ["a", "b"]}, "values": []}]),
    "values_an_int": lambda p: matrix([{"metric": {}, "values": 7}]),
    "sample_not_a_pair": lambda p: matrix([{"metric": {}, "values": [[_first(p)]]}]),
    "time_a_string": lambda p: matrix([{"metric": {}, "values": [[str(_first(p)), "1"]]}]),
    "time_inf": lambda p: matrix([{"metric": {}, "values": [[math.inf, "1"]]}]),
    "time_nan": lambda p: matrix([{"metric": {}, "values": [[math.nan, "1"]]}]),
    "time_1e300": lambda p: matrix([{"metric": {}, "values": [[1e300, "1"]]}]),
    "time_huge_int": lambda p: matrix([{"metric": {}, "values": [[10**400, "1"]]}]),
    "value_a_number": lambda p: matrix([{"metric": {}, "values": [[_first(p), 1.5]]}]),
    "value_not_numeric": lambda p: matrix([{"metric": {}, "values": [[_first(p), "lots"]]}]),
    "value_null": lambda p: matrix([{"metric": {}, "values": [[_first(p), None]]}]),
}

#: Every mode :func:`hostile_server` knows.
MODES = (
    "ok",
    "by_query",
    "drip",
    "slow_headers",
    "silent",
    "huge",
    "gzip_bomb",
    "redirect",
    "future",
    "too_many_points",
    "many_series",
    "garbage",
    "secret",
    "malformed",
    "answer",
)


@dataclass(frozen=True)
class Hit:
    """One request a hostile server received."""

    path: str
    params: Params
    headers: dict[str, str]


@dataclass
class Hostile:
    """A running hostile server: its base URL, what it received and, for ``redirect``, its target."""

    url: str
    mode: str
    hits: list[Hit] = field(default_factory=list)
    target: Hostile | None = None
    #: With ``tls=True``: the CA file that verifies the server's certificate.
    ca_file: Path | None = None

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    stopping: threading.Event

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients hanging up mid-answer is the point of these servers: stay quiet."""


@functools.lru_cache(maxsize=4)
def _gzip_bomb(megabytes: int) -> bytes:
    """A gzip body inflating to ``megabytes`` MB of one valid-looking series with a huge label."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    out = io.BytesIO()
    out.write(compressor.compress(b'{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"pad":"'))
    block = b"a" * (1 << 20)
    for _ in range(megabytes):
        out.write(compressor.compress(block))
    out.write(compressor.compress(b'"},"values":[]}]}}'))
    out.write(compressor.flush())
    return out.getvalue()


@contextmanager
def hostile_server(mode: str, **options: Any) -> Iterator[Hostile]:
    """Run a hostile server in ``mode`` (see the module docstring) for the ``with`` block."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; known: {', '.join(MODES)}")
    if mode == "malformed" and options.get("variant") not in MALFORMED:
        raise ValueError(f"malformed needs variant=, one of: {', '.join(MALFORMED)}")
    if mode == "redirect":
        with hostile_server("ok") as target, _serve(mode, options, target) as server:
            yield server
        return
    with _serve(mode, options, None) as server:
        yield server


@contextmanager
def _serve(mode: str, options: dict[str, Any], target: Hostile | None) -> Iterator[Hostile]:
    hostile = Hostile(url="", mode=mode, target=target)
    interval = float(options.get("interval", 0.5))

    class Handler(http.server.BaseHTTPRequestHandler):
        server: _Server

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            params = {key: values[-1] for key, values in parse_qs(parts.query).items()}
            hostile.hits.append(Hit(parts.path, params, dict(self.headers.items())))
            current = hostile.mode  # tests may switch it while the server runs (a fault that ends)
            chosen = params.get("query", "ok") if current == "by_query" else current
            getattr(self, f"_{chosen}", self._ok)(params)

        def _send(self, status: int, body: bytes, content_type: str = "application/json", **headers: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers.items():
                self.send_header(name.replace("_", "-"), value)
            self.end_headers()
            self.wfile.write(body)

        def _json(self, payload: Any, status: int = 200) -> None:
            self._send(status, json.dumps(payload).encode())

        def _wait(self, seconds: float) -> bool:
            """Sleep unless the server is closing (then True)."""
            return self.server.stopping.wait(seconds)

        def _ok(self, params: Params) -> None:
            labels = options.get("labels")
            self._json(matrix([series(params, labels=labels, value=str(options.get("value", "1")))]))

        def _drip(self, params: Params) -> None:
            body = json.dumps(matrix([series(params)])).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.flush()
            for index in range(len(body)):
                if self._wait(interval):
                    return
                self.wfile.write(body[index : index + 1])
                self.wfile.flush()

        def _slow_headers(self, params: Params) -> None:
            head = b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nX-Padding: " + b"p" * 1000 + b"\r\n\r\n"
            self.wfile.write(head[:17])
            self.wfile.flush()
            for index in range(17, len(head)):
                if self._wait(interval):
                    return
                self.wfile.write(head[index : index + 1])
                self.wfile.flush()

        def _silent(self, params: Params) -> None:
            self._wait(3600)

        def _huge(self, params: Params) -> None:
            size = int(options.get("megabytes", 64)) * (1 << 20)
            prefix = b'{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"pad":"'
            suffix = b'"},"values":[[%d,"1"]]}]}}' % _first(params)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            if not options.get("chunked", False):
                self.send_header("Content-Length", str(len(prefix) + size + len(suffix)))
            self.end_headers()
            self.wfile.write(prefix)
            block = b"a" * (1 << 16)
            for _ in range(size // len(block)):
                if self.server.stopping.is_set():
                    return
                self.wfile.write(block)
            self.wfile.write(suffix)

        def _gzip_bomb(self, params: Params) -> None:
            self._send(200, _gzip_bomb(int(options.get("megabytes", 64))), Content_Encoding="gzip")

        def _redirect(self, params: Params) -> None:
            assert target is not None
            self._send(302, b"", Location=f"{target.url}/steal/api/v1/query_range?{urlsplit(self.path).query}")

        def _future(self, params: Params) -> None:
            end = _asked(params)[1]
            stamp = options.get("stamp", 1e12)
            answer = series(params)
            answer["values"][-1] = [end + 3600 if stamp == "hour" else stamp, "1"]
            self._json(matrix([answer]))

        def _too_many_points(self, params: Params) -> None:
            answer = series(params)
            answer["values"].append(answer["values"][-1])
            self._json(matrix([answer]))

        def _many_series(self, params: Params) -> None:
            count = int(options.get("count", 1000))
            self._json(matrix([series(params, labels={"__name__": "many", "i": str(i)}) for i in range(count)]))

        def _garbage(self, params: Params) -> None:
            page = b"<!DOCTYPE html>\n<html><head><title>Login</title></head><body>" + b"<p>x</p>" * 2000
            self._send(200, page + b"</body></html>", content_type="text/html")

        def _secret(self, params: Params) -> None:
            self._send(int(options.get("status", 500)), SECRET_BODY.encode(), content_type="text/plain")

        def _malformed(self, params: Params) -> None:
            self._json(MALFORMED[options.get("variant", "entry_a_string")](params))

        def _answer(self, params: Params) -> None:
            body = options.get("body", b"")
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self._send(int(options.get("status", 200)), data)

    server = _Server(("127.0.0.1", 0), Handler)
    server.stopping = threading.Event()
    scheme = "http"
    if options.get("tls", False):
        scheme, hostile.ca_file = "https", _serve_tls(server)
    hostile.url = f"{scheme}://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name=f"hostile-{mode}", daemon=True)
    thread.start()
    try:
        yield hostile
    finally:
        server.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        if hostile.ca_file is not None:
            shutil.rmtree(hostile.ca_file.parent, ignore_errors=True)


def _serve_tls(server: _Server) -> Path:
    """Wrap ``server`` in TLS with a certificate for 127.0.0.1 from a throw-away CA; that CA's file."""
    import trustme

    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    ca_file = Path(tempfile.mkdtemp(prefix="hostile-ca-")) / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return ca_file
