"""Where the tests' real data lives: ``shared/`` beside the clone (CI checks it out there).

``HELIOS_TRACES`` points at another traces directory (the benchmarks read it too).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
TRACES = Path(os.environ.get("HELIOS_TRACES", SHARED / "traces"))


def trace_path(*parts: str) -> Path:
    """A file under the traces directory; fails the test clearly (never skips) when it is missing."""
    path = TRACES.joinpath(*parts)
    if not path.is_file():
        pytest.fail(
            f"trace file {path} not found: the tests read real data from {TRACES} "
            "(see its README.md); restore the shared traces directory",
            pytrace=False,
        )
    return path
