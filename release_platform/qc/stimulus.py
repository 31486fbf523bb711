"""Checks of the observatory stimulus analysis (cell metrics)."""

from __future__ import annotations

import pandas as pd

from release_platform.qc.registry import CheckResult, Importance, register
from release_platform.stimulus.schema import check_responsive_fraction as _responsive_fraction

__all__ = ["check_responsive_fraction"]

RESPONSIVE_FRACTION = "stimulus.responsive_fraction"


@register(RESPONSIVE_FRACTION, Importance.BEST_PRACTICE_SUGGESTION,
          "Warn when the fraction of valid ROIs responsive to gratings or scenes (p < 0.05) is outside 5-95%.")
def check_responsive_fraction(metrics: pd.DataFrame) -> CheckResult:
    """Fails (a warning) when the responsive fraction of the session's valid ROIs is outside 5-95%."""
    r = _responsive_fraction(metrics)
    return CheckResult(RESPONSIVE_FRACTION, Importance.BEST_PRACTICE_SUGGESTION, r.passed, r.message,
                       {"fraction": r.fraction, "cells": r.n_cells, "check_id": r.id})
