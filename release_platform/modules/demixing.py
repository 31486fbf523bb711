"""Demixing stage: demix the raw traces of overlapping ROIs and run the post-demixing QC.

Input JSON (AllenSDK ``run_demixing`` field names)::

    {"movie_h5": "/path/movie.h5",             # dataset "data", T x H x W
     "traces_h5": "/path/roi_traces.h5",       # "data" N x T, "roi_names"
     "roi_masks": [{"id": 1, "x": ..., "y": ..., "width": ..., "height": ..., "mask": [[...]],
                    "valid": true, "exclusion_labels": []}, ...],
     "output_file": "/path/demixed_traces.h5",
     "exclude_labels": ["union", "duplicate", "motion_border", ...],   # optional (AllenSDK defaults)
     "include_zero_baseline": true, "block_frames": null}                # optional

Every trace row must have exactly one mask record and vice versa (InputError otherwise). ROIs with
an excluded label, an empty mask or an all-NaN raw trace are not demixed; they, and the ROIs flagged
by the negative/zero-baseline QC, are NaN rows in ``output_file`` (``data`` N x T in the row order of
``traces_h5``, ``roi_names``). The ``valid`` field is not used (as in AllenSDK).

Output JSON: ``output_file``, ``negative_transient_roi_ids``, ``negative_baseline_roi_ids`` (AllenSDK
meaning: negative-baseline ROIs with their two-hop overlap neighbourhood, plus zero-baseline ROIs),
``negative_baseline_core_roi_ids``, ``zero_baseline_roi_ids``, ``excluded_roi_ids``,
``dropped_frame_count`` (frames where an overlap group could not be solved; NaN there),
``lstsq_solve_count``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import pydantic

from release_platform.modules._harness import main_for
from release_platform.modules.trace_extraction import RoiModel
from release_platform.ophys.demixing import DEFAULT_EXCLUDE_LABELS
from release_platform.ophys.pipeline import demix_plane


class Inputs(pydantic.BaseModel):
    movie_h5: Path
    traces_h5: Path
    roi_masks: list[RoiModel]
    output_file: Path
    exclude_labels: list[str] = pydantic.Field(default_factory=lambda: list(DEFAULT_EXCLUDE_LABELS))
    include_zero_baseline: bool = True
    block_frames: Optional[int] = pydantic.Field(None, ge=1)


def run(inputs: Inputs) -> dict:
    plane = demix_plane(
        inputs.movie_h5, inputs.traces_h5, [m.model_dump() for m in inputs.roi_masks], inputs.output_file,
        exclude_labels=inputs.exclude_labels, include_zero_baseline=inputs.include_zero_baseline,
        block_frames=inputs.block_frames,
    )
    return {
        "output_file": plane.demixed_traces,
        "negative_transient_roi_ids": plane.negative_transient_roi_ids,
        "negative_baseline_roi_ids": plane.negative_baseline_roi_ids,
        "negative_baseline_core_roi_ids": plane.negative_baseline_core_roi_ids,
        "zero_baseline_roi_ids": plane.zero_baseline_roi_ids,
        "excluded_roi_ids": plane.excluded_roi_ids,
        "dropped_frame_count": plane.dropped_frame_count,
        "lstsq_solve_count": plane.lstsq_solve_count,
    }


if __name__ == "__main__":
    raise SystemExit(main_for(Inputs, run, "Demix overlapping ROI traces and run the demixing QC."))
