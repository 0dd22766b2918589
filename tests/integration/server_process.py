"""Run ``helios-scaler serve`` as a real process in a test: start, wait, inspect, kill; a stand-in Prometheus."""

from __future__ import annotations

import contextlib
import http.server
import json
import math
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from prom import free_port
from prometheus_client.parser import text_string_to_metric_families

BIN = Path(sys.executable).parent
#: The shutdown grace the servers here run with; the process must be gone within it plus this margin.
GRACE_S = 2.0


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    grpc_port: int
    http_port: int
    log: Path

    def logs(self) -> list[str]:
        return self.log.read_text().splitlines()

    def metric(self, name: str) -> float | None:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/metrics", timeout=5) as response:
            text = response.read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name:
                    return float(sample.value)
        return None


@contextlib.contextmanager
def serve(tmp_path: Path, *options: str, grpc_port: int | None = None, wait: bool = True) -> Iterator[Server]:
    """``helios-scaler serve`` on loopback, JSON logs to a file; killed at the end if still running."""
    grpc_port = grpc_port or free_port()
    http_port = free_port()
    log = tmp_path / f"server-{grpc_port}-{http_port}.log"
    command = [
        str(BIN / "helios-scaler"),
        "serve",
        "--bind-address",
        "127.0.0.1",
        "--grpc-port",
        str(grpc_port),
        "--http-port",
        str(http_port),
        "--log-format",
        "json",
        "--shutdown-grace",
        f"{GRACE_S:g}s",
        *options,
    ]
    with log.open("wb") as stderr, subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr) as process:
        server = Server(process, grpc_port, http_port, log)
        try:
            if wait:
                _wait_healthy(server)
            yield server
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()


def _wait_healthy(server: Server, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert server.process.poll() is None, "\n".join(server.logs())
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{server.http_port}/healthz", timeout=1):
                return
        except (urllib.error.URLError, OSError):
            assert time.monotonic() < deadline, "the server did not start:\n" + "\n".join(server.logs())
            time.sleep(0.1)


class MatrixServer:
    """A loopback Prometheus stand-in: every range query gets one series on the asked grid."""

    def __init__(self) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                params = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                start, end, step = (int(float(params[key][0])) for key in ("start", "end", "step"))
                values = [[t, f"{100 + 50 * math.sin(t / 600):.3f}"] for t in range(start, end + 1, step)]
                result = [{"metric": {}, "values": values}]
                body = json.dumps({"status": "success", "data": {"resultType": "matrix", "result": result}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
