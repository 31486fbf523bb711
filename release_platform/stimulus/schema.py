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

__all__ = ["CellMetricsTable", "ID_COLUMNS", "check_responsive_fraction", "ResponsiveFraction", "RESPONSE_P_COLUMNS", "metric_description"]

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


_DESCRIPTIONS = {
    "pref_dir_dg": "preferred drifting-grating direction (degrees)",
    "pref_tf_dg": "preferred drifting-grating temporal frequency (Hz)",
    "osi_dg": "orientation selectivity index at the preferred TF, (pref - orth) / (pref + orth)",
    "dsi_dg": "direction selectivity index at the preferred TF, (pref - null) / (pref + null)",
    "g_osi_dg": "global orientation selectivity (circular variance, 2 theta) at the preferred TF",
    "g_dsi_dg": "global direction selectivity (circular variance, theta) at the preferred TF",
    "p_dg": "one-way ANOVA p-value over drifting-grating conditions and blank",
    "peak_dff_dg": "mean response at the preferred drifting grating (percent dF/F)",
    "reliability_dg": "mean pairwise trial correlation at the preferred drifting grating",
    "tfdi_dg": "temporal-frequency discrimination index at the preferred direction",
    "run_mod_dg": "running modulation at the preferred drifting grating",
    "p_run_mod_dg": "Welch t-test p-value of running vs stationary trials at the preferred drifting grating",
    "pref_ori_sg": "preferred static-grating orientation (degrees)",
    "pref_sf_sg": "preferred static-grating spatial frequency (cycles/degree)",
    "pref_phase_sg": "preferred static-grating phase (fraction of a cycle)",
    "osi_sg": "static-grating orientation selectivity index",
    "g_osi_sg": "global static-grating orientation selectivity",
    "p_sg": "one-way ANOVA p-value over static-grating conditions and blank",
    "peak_dff_sg": "mean response at the preferred static grating (percent dF/F)",
    "time_to_peak_sg": "time from onset to the peak of the mean response at the preferred static grating (s)",
    "reliability_sg": "mean pairwise trial correlation at the preferred static grating",
    "sfdi_sg": "spatial-frequency discrimination index at the preferred orientation and phase",
    "run_mod_sg": "running modulation at the preferred static grating",
    "p_run_mod_sg": "Welch t-test p-value of running vs stationary trials at the preferred static grating",
    "pref_image_ns": "preferred natural scene (image index)",
    "p_ns": "one-way ANOVA p-value over natural scenes and blank",
    "peak_dff_ns": "mean response to the preferred natural scene (percent dF/F)",
    "image_sel_ns": "natural-scene image selectivity",
    "time_to_peak_ns": "time from onset to the peak of the mean response to the preferred scene (s)",
    "reliability_ns": "mean pairwise trial correlation at the preferred natural scene",
    "run_mod_ns": "running modulation at the preferred natural scene",
    "p_run_mod_ns": "Welch t-test p-value of running vs stationary trials at the preferred natural scene",
    "rf_chi2_lsn": "sparse-noise chi-square p-value (smallest over pixels, Bonferroni-corrected)",
    "rf_area_on_lsn": "area of the ON subunit (1-sigma ellipse of the Gaussian fit, square degrees)",
    "rf_center_on_x_lsn": "ON subunit centre, azimuth from the grid's left edge (degrees)",
    "rf_center_on_y_lsn": "ON subunit centre, elevation from the grid's top edge (degrees)",
    "rf_area_off_lsn": "area of the OFF subunit (1-sigma ellipse of the Gaussian fit, square degrees)",
    "rf_center_off_x_lsn": "OFF subunit centre, azimuth from the grid's left edge (degrees)",
    "rf_center_off_y_lsn": "OFF subunit centre, elevation from the grid's top edge (degrees)",
    "rf_distance_lsn": "distance between the ON and OFF subunit centres (degrees)",
    "rf_overlap_index_lsn": "overlap (intersection / union) of the ON and OFF subunit ellipses",
}


def metric_description(name: str) -> str:
    """One-line description of a metric column (for NWB columns and documentation)."""
    if name in _DESCRIPTIONS:
        return _DESCRIPTIONS[name]
    for prefix, text in (("peak_frame_nm", "imaging frame (from repeat onset) of the peak mean response to natural movie "),
                         ("reliability_nm", "mean pairwise repeat correlation of the response to natural movie "),
                         ("speed_max_", "mean speed of the running bin with the largest response, epoch "),
                         ("speed_min_", "mean speed of the running bin with the smallest response, epoch "),
                         ("ptest_", "KS-test p-value of the preferred running bin against the others, epoch "),
                         ("p_mod_", "circular-shift shuffle p-value of the running-speed modulation, epoch "),
                         ("mod_", "running-speed modulated (1) or not (0) against circular-shift shuffles, epoch ")):
        if name.startswith(prefix):
            return text + name[len(prefix):]
    return f"stimulus metric {name}"
