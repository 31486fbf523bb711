"""Observatory analysis stage: stimulus-response metrics per ROI from traces and the stimulus table.

Input JSON::

    {"corrected_fluorescence_file": "/path/neuropil_correction.h5",  # FC (N x T), roi_names
     "dff_file": "/path/dff.h5",                                      # data (N x T), roi_names (same ROIs, same order)
     "stimulus_table_file": "/path/stimulus_table.csv",                # stimulus_name, start_frame, end_frame,
                                                                        # orientation, temporal_frequency,
                                                                        # spatial_frequency, phase, frame
     "running_speed_file": "/path/running.csv",                        # optional: column speed (cm/s), one per frame
     "lsn_template_file": "/path/lsn_template.npy",                    # optional: frames x rows x cols (0/127/255)
     "frame_rate_hz": 30.0,
     "stimuli": ["drifting_gratings"],                                  # optional subset (default: all present)
     "n_shuffles": 10000, "seed": 1,                                    # sparse-noise shuffle test
     "output_file": "/path/analysis.h5"}

Writes ``output_file`` (HDF5: per-stimulus response arrays, sweep tables, receptive-field maps, see
:func:`release_platform.stimulus.write_analysis`) and ``<output_file stem>_metrics.parquet`` (one row per
ROI: ``roi_id`` and the metrics of the stimuli analysed, NaN where undefined), both atomically. Output
JSON: ``output_file``, ``metrics_file``, ``mean_running_speed`` (cm/s, null without running speed),
``stimuli``, ``n_rois``, ``messages``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import pydantic

from release_platform.modules._harness import main_for
from release_platform.stimulus.files import analyze_plane_files
from release_platform.stimulus.lsn import DEFAULT_SHUFFLES
from release_platform.stimulus.table import KNOWN_STIMULI


class Inputs(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    corrected_fluorescence_file: Path
    dff_file: Path
    stimulus_table_file: Path
    running_speed_file: Optional[Path] = None
    lsn_template_file: Optional[Path] = None
    frame_rate_hz: float = pydantic.Field(gt=0, allow_inf_nan=False)
    stimuli: Optional[list[str]] = None
    n_shuffles: int = pydantic.Field(DEFAULT_SHUFFLES, ge=1)
    seed: int = 1
    output_file: Path

    @pydantic.field_validator("stimuli")
    @classmethod
    def _known(cls, value: Optional[list[str]]) -> Optional[list[str]]:
        if value is not None:
            unknown = [s for s in value if s not in KNOWN_STIMULI]
            if unknown:
                raise ValueError(f"unknown stimulus name(s) {unknown}; known: {list(KNOWN_STIMULI)}")
            if not value:
                raise ValueError("must name at least one stimulus (leave it out to analyse all)")
        return value


def run(inputs: Inputs) -> dict:
    return analyze_plane_files(
        inputs.corrected_fluorescence_file, inputs.dff_file, inputs.stimulus_table_file, inputs.frame_rate_hz,
        inputs.output_file, running_speed_file=inputs.running_speed_file, lsn_template_file=inputs.lsn_template_file,
        stimuli=inputs.stimuli, n_shuffles=inputs.n_shuffles, seed=inputs.seed,
    )


if __name__ == "__main__":
    raise SystemExit(main_for(Inputs, run, "Stimulus-response metrics per ROI (drifting/static gratings, scenes, movies, sparse noise)."))
