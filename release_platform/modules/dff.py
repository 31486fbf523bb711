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

import numpy as np
import pydantic

from release_platform.errors import InputError
from release_platform.modules._harness import main_for
from release_platform.ophys.dff import DEFAULT_METHOD, compute_dff
from release_platform.ophys.io import read_traces, write_traces

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
    input_dataset: str = "FC"
    roi_field: str = "roi_names"
    output_dataset: str = "data"
    sigma_dataset: str = "sigma_dff"
    baseline_frames_dataset: str = "num_small_baseline_frames"


def run(inputs: Inputs) -> dict:
    traces = read_traces(inputs.input_file, dataset=inputs.input_dataset, roi_field=inputs.roi_field)
    parameters = {name: getattr(inputs, name) for name in _METHOD_PARAMETERS if getattr(inputs, name) is not None}
    try:
        result = compute_dff(traces.traces, inputs.movie_frame_rate_hz, method=inputs.method, **parameters)
    except InputError as exc:
        if exc.path is None:  # name the traces file in the message
            raise InputError(exc.problem, entity=exc.entity, path=inputs.input_file) from None
        raise
    write_traces(
        inputs.output_file, result.dff, traces.roi_ids, dataset=inputs.output_dataset, roi_field=inputs.roi_field,
        extra={inputs.sigma_dataset: result.sigma_dff, inputs.baseline_frames_dataset: result.num_small_baseline_frames},
    )
    ids = np.array(traces.roi_ids, dtype=object)
    return {
        "output_file": inputs.output_file,
        "method": result.method,
        "parameters": result.parameters,
        "invalid_roi_ids": ids[result.invalid_rows].tolist(),
    }


if __name__ == "__main__":
    raise SystemExit(main_for(Inputs, run, "Compute dF/F traces from neuropil-corrected fluorescence."))
