"""Fixtures that start real servers on loopback: Prometheus with backfilled traces, tiny stubs."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from prom import PrometheusFixture, RecordingServer, SilentServer, free_port, missing_binaries, run_prometheus

logger = logging.getLogger(__name__)


@pytest.fixture(scope="session")
def prometheus() -> Iterator[PrometheusFixture]:
    """A real Prometheus (Debian's 2.42 in CI) with the real traces of ``prom.py`` backfilled.

    Fails (never skips) when the binaries are missing: CI must run these tests.
    """
    missing = missing_binaries()
    if missing:
        pytest.fail(
            f"{' and '.join(missing)} not found on PATH: run `make prometheus` to install "
            "Debian's prometheus package (the integration tests need a real Prometheus)",
            pytrace=False,
        )
    with run_prometheus() as running:
        logger.info("Prometheus at %s ready in %.1fs", running.url, running.startup_seconds)
        yield running


@pytest.fixture
def dead_port() -> int:
    """A loopback port nothing listens on (connections are refused)."""
    return free_port()


@pytest.fixture
def silent_server() -> Iterator[SilentServer]:
    """A loopback server that accepts connections and never answers."""
    server = SilentServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def recording_server() -> Iterator[RecordingServer]:
    """A loopback HTTP server that records request headers and answers with one series."""
    server = RecordingServer()
    try:
        yield server
    finally:
        server.close()
