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

import numpy as np
import pydantic

from release_platform.modules._harness import main_for
from release_platform.modules.trace_extraction import RoiModel
from release_platform.ophys.demixing import DEFAULT_EXCLUDE_LABELS, demix_qc, demix_traces
from release_platform.ophys.extraction import parse_roi_records, roi_mask_matrix
from release_platform.ophys.io import check_roi_ids_match, movie_shape, open_movie, read_traces, write_traces


class Inputs(pydantic.BaseModel):
    movie_h5: Path
    traces_h5: Path
    roi_masks: list[RoiModel]
    output_file: Path
    exclude_labels: list[str] = pydantic.Field(default_factory=lambda: list(DEFAULT_EXCLUDE_LABELS))
    include_zero_baseline: bool = True
    block_frames: Optional[int] = pydantic.Field(None, ge=1)


def run(inputs: Inputs) -> dict:
    traces = read_traces(inputs.traces_h5)
    with open_movie(inputs.movie_h5) as movie:
        _, height, width = movie_shape(movie, path=inputs.movie_h5)
        records = parse_roi_records([m.model_dump() for m in inputs.roi_masks], (height, width))
        check_roi_ids_match(
            traces.roi_ids, [r.id for r in records],
            expected_label=f"traces file {inputs.traces_h5}", found_label="roi_masks", path=inputs.traces_h5,
        )
        by_id = {r.id: r for r in records}
        ordered = [by_id[i] for i in traces.roi_ids]
        excluded_labels = set(inputs.exclude_labels)
        keep = np.array([not (excluded_labels & set(r.exclusion_labels)) for r in ordered], dtype=bool)
        masks = roi_mask_matrix(ordered, (height, width))
        rows = np.flatnonzero(keep)
        result = demix_traces(
            traces.traces[rows], movie, masks[rows], block_frames=inputs.block_frames, path=inputs.movie_h5
        )
    qc = demix_qc(result.demixed, masks[rows], include_zero_baseline=inputs.include_zero_baseline)
    demixed = result.demixed.copy()
    demixed[qc.flagged] = np.nan
    output = np.full(traces.traces.shape, np.nan)
    output[rows] = demixed
    write_traces(inputs.output_file, output, traces.roi_ids)
    ids = np.array(traces.roi_ids, dtype=object)
    kept_ids = ids[rows]
    return {
        "output_file": inputs.output_file,
        "negative_transient_roi_ids": kept_ids[qc.negative_transient].tolist(),
        "negative_baseline_roi_ids": kept_ids[qc.flagged].tolist(),
        "negative_baseline_core_roi_ids": kept_ids[qc.negative_baseline].tolist(),
        "zero_baseline_roi_ids": kept_ids[qc.zero_baseline].tolist(),
        "excluded_roi_ids": ids[~keep].tolist() + kept_ids[result.invalid_rows].tolist(),
        "dropped_frame_count": result.dropped_frame_count,
        "lstsq_solve_count": result.lstsq_solves,
    }


if __name__ == "__main__":
    raise SystemExit(main_for(Inputs, run, "Demix overlapping ROI traces and run the demixing QC."))
