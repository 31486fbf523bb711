"""dF/F stage: dF/F, sigma_dF/F and small-baseline frame counts from corrected traces.

Input JSON (ophys_etl ``dff`` field names)::

    {"input_file": "/path/neuropil_correction.h5",   # dataset input_dataset (FC) N x T, roi_names
     "output_file": "/path/dff.h5",
     "movie_frame_rate_hz": 30.0,                     # required, > 0
     "method": "allen_inactive",                      # or allen_legacy, maximin
     "long_baseline_filter_s": 600, "short_filter_s": 3.333,   # seconds (allen_inactive, maximin)
     "median_kernel_long": 5401, "median_kernel_short": 101, "noise_kernel_length": 31,  # frames (allen_legacy)
     "input_dataset": "FC", "roi_field": "roi_names", "output_dataset": "data",
     "sigma_dataset": "sigma_dff", "baseline_frames_dataset": "num_small_baseline_frames"}

Parameters left out take the method's defaults; a parameter the method does not take is an error.
Writes ``output_file`` atomically (``data`` N x T, ``roi_names``, ``sigma_dff``,
``num_small_baseline_frames``). Output JSON: ``output_file``, ``method``, ``parameters`` (window
lengths in frames), ``invalid_roi_ids`` (rows that are all NaN).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import pydantic

from release_platform.modules._harness import main_for
from release_platform.ophys import io
from release_platform.ophys.dff import DEFAULT_METHOD
from release_platform.ophys.pipeline import dff_plane


_METHOD_PARAMETERS = (
    "long_baseline_filter_s", "short_filter_s", "median_kernel_long", "median_kernel_short", "noise_kernel_length",
)


class Inputs(pydantic.BaseModel):
    input_file: Path
    output_file: Path
    movie_frame_rate_hz: float = pydantic.Field(gt=0, allow_inf_nan=False)
    method: str = DEFAULT_METHOD
    long_baseline_filter_s: Optional[float] = None
    short_filter_s: Optional[float] = None
    median_kernel_long: Optional[int] = None
    median_kernel_short: Optional[int] = None
    noise_kernel_length: Optional[int] = None
    input_dataset: str = io.NEUROPIL_CORRECTED_DATASET
    roi_field: str = io.ROI_NAMES_DATASET
    output_dataset: str = io.TRACE_DATASET
    sigma_dataset: str = io.SIGMA_DFF_DATASET
    baseline_frames_dataset: str = io.SMALL_BASELINE_FRAMES_DATASET


def run(inputs: Inputs) -> dict:
    plane = dff_plane(
        inputs.input_file, inputs.output_file, inputs.movie_frame_rate_hz, method=inputs.method,
        parameters={name: getattr(inputs, name) for name in _METHOD_PARAMETERS if getattr(inputs, name) is not None},
        input_dataset=inputs.input_dataset, roi_field=inputs.roi_field, output_dataset=inputs.output_dataset,
        sigma_dataset=inputs.sigma_dataset, baseline_frames_dataset=inputs.baseline_frames_dataset,
    )
    return {
        "output_file": plane.dff,
        "method": plane.method,
        "parameters": plane.parameters,
        "invalid_roi_ids": plane.invalid_roi_ids,
    }


if __name__ == "__main__":
    raise SystemExit(main_for(Inputs, run, "Compute dF/F traces from neuropil-corrected fluorescence."))
