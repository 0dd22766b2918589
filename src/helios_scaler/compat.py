"""Optional dependencies of the backtest report, behind one guard with an actionable error."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

INSTALL_HINT = "install the report extra: pip install 'helios-scaler[report]'"


def pyplot() -> Any:
    """matplotlib's pyplot on the non-interactive Agg backend."""
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError(f"the backtest plots need matplotlib; {INSTALL_HINT} (or pass --no-plots)") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def progress(items: Iterable[T], total: int | None = None, desc: str = "") -> Iterator[T]:
    """A tqdm progress bar on stderr when tqdm is installed and stderr is a terminal or CI log."""
    try:
        from tqdm import tqdm
    except ImportError:
        yield from items
        return
    yield from tqdm(items, total=total, desc=desc, file=sys.stderr, unit="retrain", mininterval=1.0)
