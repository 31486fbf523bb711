"""Event-detection stage: L0 events from dF/F traces (the Allen ``event_detection`` stage).

Input JSON (ophys_etl ``event_detection`` field names)::

    {"ophysdfftracefile": "/path/dff.h5",          # data N x T dF/F, roi_names
     "output_event_file": "/path/events.h5",
     "movie_frame_rate_hz": 31.0,                   # required, > 0
     "valid_roi_ids": [1001, 1002],                 # required: the ROIs to process (ids must be in the file)
     "full_genotype": "Slc17a7-IRES2-Cre/wt;Camk2a-tTA/wt;Ai93(TITL-GCaMP6f)/wt",  # decay time lookup
     "decay_time": 0.4,                             # s; used when the genotype is not in the lookup table
     "noise_multiplier": 2.0,                       # default 2.0 near 31 Hz, 2.6 near 11 Hz
     "noise_median_filter": 1.0, "trace_median_filter": 3.2,   # s
     "method": "l0"}

Writes ``output_event_file`` atomically (``events`` N x T, ``lambdas``, ``noise_stds``, ``roi_names`` for
the valid ROIs; attributes ``method`` and ``parameters``). Output JSON: ``output_event_file``, ``method``,
``parameters`` (decay time and its source, gamma, noise multiplier, ...), ``roi_ids``, ``event_counts``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import pydantic

from release_platform.modules._harness import main_for
from release_platform.ophys.events import events_plane
from release_platform.ophys.events_l0 import NOISE_MEDIAN_FILTER_S, TRACE_MEDIAN_FILTER_S


class Inputs(pydantic.BaseModel):
    ophysdfftracefile: Path
    output_event_file: Path
    movie_frame_rate_hz: float = pydantic.Field(gt=0, allow_inf_nan=False)
    valid_roi_ids: list[int]
    full_genotype: Optional[str] = None
    decay_time: Optional[float] = pydantic.Field(default=None, gt=0, allow_inf_nan=False)
    noise_multiplier: Optional[float] = pydantic.Field(default=None, gt=0, allow_inf_nan=False)
    noise_median_filter: float = pydantic.Field(default=NOISE_MEDIAN_FILTER_S, gt=0)
    trace_median_filter: float = pydantic.Field(default=TRACE_MEDIAN_FILTER_S, gt=0)
    method: str = "l0"


def run(inputs: Inputs) -> dict:
    parameters = {
        "full_genotype": inputs.full_genotype, "decay_time_s": inputs.decay_time,
        "noise_multiplier": inputs.noise_multiplier, "noise_median_filter_s": inputs.noise_median_filter,
        "trace_median_filter_s": inputs.trace_median_filter,
    }
    plane = events_plane(
        inputs.ophysdfftracefile, inputs.output_event_file, inputs.movie_frame_rate_hz, method=inputs.method,
        valid_roi_ids=inputs.valid_roi_ids, parameters={k: v for k, v in parameters.items() if v is not None},
    )
    return {
        "output_event_file": plane.events,
        "method": plane.method,
        "parameters": plane.parameters,
        "roi_ids": plane.roi_ids,
        "event_counts": plane.event_counts,
    }


if __name__ == "__main__":
    raise SystemExit(main_for(Inputs, run, "Detect calcium events in dF/F traces (L0 deconvolution)."))
