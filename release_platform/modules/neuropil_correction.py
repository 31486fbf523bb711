"""Neuropil correction stage: contamination ratio r per ROI and corrected traces FC = F_M - r F_N.

Input JSON (AllenSDK ``run_neuropil_correction`` field names)::

    {"roi_trace_file": "/path/demixed_traces.h5",        # "data" N x T, "roi_names"
     "neuropil_trace_file": "/path/neuropil_traces.h5",  # "data" N x T, "roi_names"
     "storage_directory": "/path/out",
     "method": "fit", "fixed_r": 0.7, "r_max": 5.0}      # optional

Both files must hold the same ROI ids in the same order (InputError otherwise). Writes
``neuropil_correction.h5`` atomically: ``FC`` (N x T), ``r``, ``RMSE``, ``r_fit`` (before fallbacks),
``fallback_used`` (bool), ``status`` (bytes: fit, fixed, unconverged, negative_baseline, skipped),
``roi_names`` and the group ``r_vals/<row>`` (every r evaluated by the grid search). Skipped ROIs have
r = RMSE = NaN and a NaN FC row. Output JSON: ``neuropil_correction_trace_file``, ``fallback_r``,
``unconverged_roi_ids``, ``negative_baseline_roi_ids``, ``skipped_roi_ids``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pydantic

from release_platform.modules._harness import main_for
from release_platform.ophys import io
from release_platform.ophys.neuropil import DEFAULT_FIXED_R, DEFAULT_R_MAX
from release_platform.ophys.pipeline import correct_plane


class Inputs(pydantic.BaseModel):
    roi_trace_file: Path
    neuropil_trace_file: Path
    storage_directory: Path
    method: Literal["fit", "fixed"] = "fit"
    fixed_r: float = pydantic.Field(DEFAULT_FIXED_R, ge=0)
    r_max: float = pydantic.Field(DEFAULT_R_MAX, gt=1)

    def output_paths(self) -> list[Path]:
        return [self.storage_directory / io.NEUROPIL_CORRECTED_FILE]


def run(inputs: Inputs) -> dict:
    plane = correct_plane(
        inputs.roi_trace_file, inputs.neuropil_trace_file, inputs.storage_directory,
        method=inputs.method, fixed_r=inputs.fixed_r, r_max=inputs.r_max,
    )
    return {
        "neuropil_correction_trace_file": plane.neuropil_corrected,
        "fallback_r": plane.fallback_r,
        "unconverged_roi_ids": plane.unconverged_roi_ids,
        "negative_baseline_roi_ids": plane.negative_baseline_roi_ids,
        "skipped_roi_ids": plane.skipped_roi_ids,
    }


if __name__ == "__main__":
    raise SystemExit(main_for(Inputs, run, "Estimate neuropil contamination ratios and correct ROI traces."))
