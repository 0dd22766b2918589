"""Model names → factories: the one table that says which models exist.

The names a trigger may write (``model`` metadata) are :data:`helios_scaler.trigger.MODELS`:
the trigger owns its vocabulary, and it sits below the models.  This table gives each of
those names (but ``auto``) its factory and refuses to import if the two ever disagree, so a
new model is added here and in ``MODELS`` or not at all.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Final

from helios_scaler.features.pipeline import season_length
from helios_scaler.models.base import Forecaster
from helios_scaler.models.gbm import LightGBM
from helios_scaler.models.statistical import ETS, MSTL, SeasonalNaive
from helios_scaler.trigger import AUTO, MODELS

#: A factory gets the series' step and the forecast horizon (in steps).
Factory = Callable[[timedelta, int], Forecaster]

FACTORIES: Final[dict[str, Factory]] = {
    "seasonal_naive": lambda step, horizon: SeasonalNaive(season_length(step)),
    "ets": lambda step, horizon: ETS(),
    "mstl": lambda step, horizon: MSTL(season_length(step), step),
    "lightgbm": lambda step, horizon: LightGBM(season_length(step), step, max_horizon=horizon),
}

if set(FACTORIES) != set(MODELS) - {AUTO}:  # pragma: no cover - a programming error, caught by every test run
    raise ImportError(f"model registry {sorted(FACTORIES)} disagrees with trigger.MODELS {sorted(MODELS)}")


def build(name: str, step: timedelta, horizon: int) -> Forecaster:
    """A new, unfitted model called ``name``."""
    return FACTORIES[name](step, horizon)
