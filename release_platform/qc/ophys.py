"""Checks of processed ophys traces, per imaging plane of a session."""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np

from release_platform.ophys.qc import nonfinite_valid_rows, summarize_ratios
from release_platform.qc.registry import CheckResult, Importance, register

__all__ = ["MAX_UNCONVERGED_FRACTION", "PlaneRatios", "PlaneDff", "check_neuropil_r_distribution", "check_dff_finite"]

NEUROPIL_R = "ophys.neuropil_r_distribution"
DFF_FINITE = "ophys.dff_finite_for_valid_rois"
MAX_UNCONVERGED_FRACTION = 0.10


@dataclasses.dataclass(frozen=True)
class PlaneRatios:
    """One plane's neuropil contamination ratios ``r`` and fit status per ROI; ``entity`` names the plane."""

    entity: str
    r: np.ndarray
    status: np.ndarray


@dataclasses.dataclass(frozen=True)
class PlaneDff:
    """One plane's dF/F (ROIs x frames) with its ROI ids, the ids of the valid ROIs and the file it came from."""

    entity: str
    file: str
    dff: np.ndarray
    roi_ids: Sequence[str]
    valid_roi_ids: Sequence[str]


@register(NEUROPIL_R, Importance.BEST_PRACTICE_SUGGESTION,
          f"Warn when more than {MAX_UNCONVERGED_FRACTION:.0%} of a plane's ROIs have an unconverged r.")
def check_neuropil_r_distribution(planes: Mapping[str, PlaneRatios], max_fraction: float = MAX_UNCONVERGED_FRACTION) -> CheckResult:
    """Fails (a warning) when a plane's fraction of ROIs with an unconverged neuropil ratio exceeds ``max_fraction``."""
    per_plane = {pid: {k: round(v, 4) if isinstance(v, float) else v for k, v in summarize_ratios(p.r, p.status).__dict__.items()}
                 for pid, p in planes.items()}  # rounded: these are shown to people
    worst = max(p["unconverged_fraction"] for p in per_plane.values())
    over = {pid: p for pid, p in per_plane.items() if p["unconverged_fraction"] > max_fraction}
    message = "\n".join(
        f"{planes[pid].entity}: {p['n_unconverged']} of {p['n_fit']} ROIs have an "
        f"unconverged neuropil ratio r ({p['unconverged_fraction']:.0%} > {max_fraction:.0%})"
        for pid, p in over.items()
    ) or None
    return CheckResult(NEUROPIL_R, Importance.BEST_PRACTICE_SUGGESTION, not over, message,
                       {"worst_unconverged_fraction": worst, "planes": per_plane})


@register(DFF_FINITE, Importance.CRITICAL,
          "Every valid ROI (valid in LIMS, not excluded or flagged upstream) has finite dF/F at every frame.")
def check_dff_finite(planes: Mapping[str, PlaneDff]) -> CheckResult:
    """Fails when a valid ROI of any plane has a NaN or infinite dF/F value."""
    bad: dict[str, list[str]] = {}
    checked = 0
    for pid, plane in planes.items():
        ids = [str(i) for i in plane.roi_ids]
        valid = np.isin(ids, list(plane.valid_roi_ids))
        checked += int(valid.sum())
        rows = nonfinite_valid_rows(plane.dff, valid)
        if rows.size:
            bad[pid] = [ids[i] for i in rows]
    message = "\n".join(
        f"{planes[pid].entity}: {planes[pid].file}: dF/F is NaN or infinite for "
        f"{len(ids)} valid ROI(s): {', '.join(ids[:10])}{' ...' if len(ids) > 10 else ''}"
        for pid, ids in bad.items()
    ) or None
    return CheckResult(DFF_FINITE, Importance.CRITICAL, not bad, message, {"valid_rois_checked": checked, "rois_with_nonfinite_dff": bad})
