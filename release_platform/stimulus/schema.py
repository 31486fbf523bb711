"""Pandera model of the per-session ``cell_metrics`` table and the responsiveness check.

One row per ROI per imaging plane: ids first, then the metric columns of the stimuli the session showed
(which columns exist depends on the session, so the model names the id columns and constrains metric
columns by pattern: every metric is a float, p-values lie in [0, 1], correlations in [-1, 1], preferred
directions in [0, 360), areas and distances are non-negative, modulation flags are 0 or 1).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

__all__ = ["CellMetricsTable", "ID_COLUMNS", "check_responsive_fraction", "ResponsiveFraction", "RESPONSE_P_COLUMNS"]

ID_COLUMNS = ("ophys_experiment_id", "cell_roi_id", "cell_specimen_id", "valid_roi")
RESPONSE_P_COLUMNS = ("p_dg", "p_sg", "p_ns")
_METRIC = r"^(?!ophys_experiment_id$|cell_roi_id$|cell_specimen_id$|valid_roi$).+$"


class CellMetricsTable(pa.DataFrameModel):
    """Stimulus-response metrics of every ROI of a session's imaging planes."""

    ophys_experiment_id: Series[pd.Int64Dtype] = pa.Field(ge=0, description="Imaging plane of the ROI.")
    cell_roi_id: Series[pd.Int64Dtype] = pa.Field(ge=0, description="LIMS cell ROI id.")
    cell_specimen_id: Series[pd.Int64Dtype] = pa.Field(nullable=True, description="Cell matched across planes; null if unmatched.")
    valid_roi: Series[bool] = pa.Field(description="Valid in LIMS and not excluded or flagged by processing.")
    metrics: Series[float] = pa.Field(alias=_METRIC, regex=True, required=False, nullable=True, description="Metric columns (NaN where undefined).")
    p_values: Series[float] = pa.Field(alias=r"^(p_.+|ptest_.+|rf_chi2_lsn)$", regex=True, required=False, nullable=True, in_range={"min_value": 0.0, "max_value": 1.0})
    correlations: Series[float] = pa.Field(alias=r"^(reliability_.+|rf_overlap_index_lsn)$", regex=True, required=False, nullable=True,
                                           in_range={"min_value": -1.0, "max_value": 1.0})
    directions: Series[float] = pa.Field(alias=r"^pref_(dir_dg|ori_sg)$", regex=True, required=False, nullable=True, ge=0.0, lt=360.0)
    sizes: Series[float] = pa.Field(alias=r"^(rf_area_.+|rf_distance_lsn)$", regex=True, required=False, nullable=True, ge=0.0)
    flags: Series[float] = pa.Field(alias=r"^mod_(sp|vis)$", regex=True, required=False, nullable=True, isin=[0.0, 1.0])

    @pa.dataframe_check(name="roi_unique_per_plane")
    def _unique(cls, df: pd.DataFrame) -> Series[bool]:
        return ~df.duplicated(["ophys_experiment_id", "cell_roi_id"], keep=False)

    class Config:
        name = "cell_metrics"
        strict = False
        coerce = False


@dataclasses.dataclass(frozen=True)
class ResponsiveFraction:
    """``check_responsive_fraction`` result: id, passed, message and the numbers behind it."""

    id: str
    passed: bool
    message: str
    fraction: float
    n_cells: int


def check_responsive_fraction(metrics: pd.DataFrame, low: float = 0.05, high: float = 0.95, alpha: float = 0.05) -> ResponsiveFraction:
    """Fraction of valid ROIs responsive (ANOVA ``p < alpha``) to any grating or scene stimulus shown, which
    should lie within ``[low, high]``: outside it, the traces or the stimulus alignment are suspect. A session
    where no ROI has such a p-value passes with a "not measurable" message (nothing to judge)."""
    cols = [c for c in RESPONSE_P_COLUMNS if c in metrics.columns]
    rows = metrics[metrics["valid_roi"]] if "valid_roi" in metrics.columns else metrics
    p = rows[cols].to_numpy(dtype=float) if cols else np.zeros((len(rows), 0))
    measured = np.isfinite(p).any(axis=1)
    n = int(measured.sum())
    if n == 0:
        return ResponsiveFraction("stimulus.responsive_fraction", True, "not measurable: no ROI has a grating or scene p-value "
                                  "(no such stimulus, or no condition shown twice)", float("nan"), 0)
    frac = float((np.nan_to_num(p[measured], nan=1.0) < alpha).any(axis=1).mean())
    ok = low <= frac <= high
    msg = f"{frac:.1%} of {n} ROIs respond (p < {alpha}) to gratings or scenes" + ("" if ok else f", outside {low:.0%}-{high:.0%}")
    return ResponsiveFraction("stimulus.responsive_fraction", ok, msg, frac, n)
