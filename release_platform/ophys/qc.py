"""Quality summaries of processed ophys traces, for checks and UI metadata (pure numpy)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RatioSummary:
    """Distribution of neuropil contamination ratios r of one plane."""

    n_rois: int
    n_fit: int
    n_unconverged: int
    unconverged_fraction: float
    r_median: float
    r_min: float
    r_max: float


def summarize_ratios(r: np.ndarray, status: np.ndarray) -> RatioSummary:
    """``status`` per ROI as written by neuropil correction (fit, fixed, unconverged, negative_baseline, skipped).

    The unconverged fraction counts ROIs whose fit needed the fallback, over the ROIs that were fit
    (skipped ROIs, e.g. excluded upstream, are not counted).
    """
    status = np.asarray(status).astype(str)
    considered = status != "skipped"
    unconverged = np.isin(status, ("unconverged", "negative_baseline"))
    finite = np.asarray(r, dtype=float)[considered & np.isfinite(r)]
    n = int(considered.sum())
    return RatioSummary(
        n_rois=len(status),
        n_fit=n,
        n_unconverged=int(unconverged.sum()),
        unconverged_fraction=float(unconverged.sum() / n) if n else 0.0,
        r_median=float(np.median(finite)) if finite.size else float("nan"),
        r_min=float(finite.min()) if finite.size else float("nan"),
        r_max=float(finite.max()) if finite.size else float("nan"),
    )


def nonfinite_valid_rows(dff: np.ndarray, valid: np.ndarray, dropped_frames: np.ndarray | None = None) -> np.ndarray:
    """Indices of rows marked valid whose dF/F has a non-finite value outside frames dropped by demixing."""
    dff = np.asarray(dff)
    frames = np.ones(dff.shape[1], dtype=bool) if dropped_frames is None else ~np.asarray(dropped_frames, dtype=bool)
    bad = ~np.isfinite(dff[:, frames]).all(axis=1)
    return np.flatnonzero(bad & np.asarray(valid, dtype=bool))
