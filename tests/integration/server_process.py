"""Run ``helios-scaler serve`` as a real process in a test: start, wait, inspect, kill; a stand-in Prometheus."""

from __future__ import annotations

import contextlib
import subprocess
import sys
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
