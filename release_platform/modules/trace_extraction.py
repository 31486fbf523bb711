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

from pathlib import Path
from typing import Optional, Union

import pydantic

from release_platform.modules._harness import main_for
from release_platform.ophys import io
from release_platform.ophys.extraction import DEFAULT_INNER_RADIUS_PX, DEFAULT_OUTER_RADIUS_PX
from release_platform.ophys.pipeline import extract_plane


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
        return [self.storage_directory / n for n in (io.ROI_TRACES_FILE, io.NEUROPIL_TRACES_FILE, io.NEUROPIL_MASKS_FILE)]


def run(inputs: Inputs) -> dict:
    plane = extract_plane(
        inputs.motion_corrected_stack,
        [roi.model_dump() for roi in inputs.rois],
        inputs.motion_border.model_dump(),
        inputs.storage_directory,
        inner_radius_px=inputs.inner_radius_px,
        outer_radius_px=inputs.outer_radius_px,
        block_frames=inputs.block_frames,
    )
    return {
        "roi_trace_file": plane.roi_traces,
        "neuropil_trace_file": plane.neuropil_traces,
        "neuropil_mask_file": plane.neuropil_masks,
        "exclusion_labels": plane.exclusion_records,
        "exclusion_labels_by_roi": plane.exclusion_labels,
    }


if __name__ == "__main__":
    raise SystemExit(main_for(Inputs, run, "Extract ROI and neuropil traces from a motion-corrected movie."))
