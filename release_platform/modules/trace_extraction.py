"""Trace extraction stage: ROI and neuropil traces from a motion-corrected movie.

Input JSON (ophys_etl ``trace_extraction`` field names)::

    {"motion_corrected_stack": "/path/movie.h5",      # dataset "data", T x H x W
     "motion_border": {"x0": 5, "x1": 5, "y0": 3, "y1": 3},
     "storage_directory": "/path/out",
     "rois": [{"id": 1, "x": 10, "y": 20, "width": 8, "height": 7, "mask": [[true, ...], ...],
               "valid": true, "exclusion_labels": []}, ...],
     "inner_radius_px": 0, "outer_radius_px": 13, "block_frames": null}   # optional

Writes ``roi_traces.h5`` and ``neuropil_traces.h5`` (``data`` N x T float64 in movie units,
``roi_names`` ids as byte strings) and ``neuropil_masks.json`` into ``storage_directory``, each
atomically. Output JSON: ``roi_trace_file``, ``neuropil_trace_file``, ``neuropil_mask_file``,
``exclusion_labels`` (``[{roi_id, exclusion_label_name}]``) and ``exclusion_labels_by_roi``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Union

import pydantic

from release_platform.modules._harness import main_for
from release_platform.ophys.extraction import DEFAULT_INNER_RADIUS_PX, DEFAULT_OUTER_RADIUS_PX, extract_traces
from release_platform.ophys.io import open_movie, write_traces
from release_platform.storage import atomic_path


class MotionBorderModel(pydantic.BaseModel):
    """Pixels lost to motion correction at the left (x0), right (x1), top (y0), bottom (y1) edges."""

    x0: float = pydantic.Field(ge=0)
    x1: float = pydantic.Field(ge=0)
    y0: float = pydantic.Field(ge=0)
    y1: float = pydantic.Field(ge=0)


class RoiModel(pydantic.BaseModel):
    """One LIMS ROI record; ``mask`` is height x width, placed at column x, row y."""

    model_config = pydantic.ConfigDict(extra="allow")

    id: Union[int, str]
    x: int
    y: int
    width: int = pydantic.Field(ge=0)
    height: int = pydantic.Field(ge=0)
    mask: list[list[bool]]
    valid: bool = True
    exclusion_labels: list[str] = pydantic.Field(default_factory=list)


class Inputs(pydantic.BaseModel):
    motion_corrected_stack: Path
    motion_border: MotionBorderModel
    storage_directory: Path
    rois: list[RoiModel]
    inner_radius_px: int = pydantic.Field(DEFAULT_INNER_RADIUS_PX, ge=0)
    outer_radius_px: int = pydantic.Field(DEFAULT_OUTER_RADIUS_PX, ge=1)
    block_frames: Optional[int] = pydantic.Field(None, ge=1)

    def output_paths(self) -> list[Path]:
        return [self.storage_directory / n for n in ("roi_traces.h5", "neuropil_traces.h5", "neuropil_masks.json")]


def run(inputs: Inputs) -> dict:
    stack = inputs.motion_corrected_stack
    with open_movie(stack) as movie:
        result = extract_traces(
            movie,
            [roi.model_dump() for roi in inputs.rois],
            inputs.motion_border.model_dump(),
            inner_radius_px=inputs.inner_radius_px,
            outer_radius_px=inputs.outer_radius_px,
            block_frames=inputs.block_frames,
            path=stack,
        )
    out_dir = inputs.storage_directory
    roi_file = write_traces(out_dir / "roi_traces.h5", result.roi_traces, result.roi_ids)
    neuropil_file = write_traces(out_dir / "neuropil_traces.h5", result.neuropil_traces, result.roi_ids)
    mask_file = out_dir / "neuropil_masks.json"
    with atomic_path(mask_file) as tmp:
        tmp.write_text(json.dumps({"neuropils": result.neuropil_mask_records()}))
    return {
        "roi_trace_file": roi_file,
        "neuropil_trace_file": neuropil_file,
        "neuropil_mask_file": mask_file,
        "exclusion_labels": result.exclusion_records(),
        "exclusion_labels_by_roi": result.exclusion_labels,
    }


if __name__ == "__main__":
    raise SystemExit(main_for(Inputs, run, "Extract ROI and neuropil traces from a motion-corrected movie."))
