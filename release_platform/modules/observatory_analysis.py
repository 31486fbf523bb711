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

import numpy as np
import pandas as pd
import pydantic

from release_platform.errors import InputError
from release_platform.modules._harness import main_for
from release_platform.ophys.io import read_traces
from release_platform.storage import atomic_path
from release_platform.stimulus import analyze_session, read_stimulus_table, write_analysis
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


def _read_speed(path: Path, n_frames: int) -> np.ndarray:
    try:
        table = pd.read_csv(path)
    except FileNotFoundError:
        raise InputError("running speed file not found", path=path) from None
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise InputError(f"running speed file is unreadable: {exc}", path=path) from None
    if "speed" not in table.columns:
        raise InputError(f"running speed file lacks column 'speed' (has {list(table.columns)})", path=path)
    speed = pd.to_numeric(table["speed"], errors="coerce").to_numpy(dtype=float)
    if len(speed) != n_frames:
        raise InputError(f"running speed has {len(speed)} values but the traces have {n_frames} frames", path=path)
    return speed


def _read_template(path: Path) -> np.ndarray:
    try:
        tpl = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise InputError("sparse-noise template not found", path=path) from None
    except (OSError, ValueError) as exc:
        raise InputError(f"sparse-noise template is unreadable: {exc}", path=path) from None
    if tpl.ndim != 3:
        raise InputError(f"sparse-noise template has shape {tpl.shape}, expected frames x rows x cols", path=path)
    return tpl


def metrics_path(output_file: Path) -> Path:
    return output_file.with_name(f"{output_file.stem}_metrics.parquet")


def run(inputs: Inputs) -> dict:
    fc = read_traces(inputs.corrected_fluorescence_file, dataset="FC")
    dff = read_traces(inputs.dff_file, dataset="data")
    if fc.roi_ids != dff.roi_ids:
        raise InputError(f"ROI ids differ from those of {inputs.corrected_fluorescence_file} (same ROIs in the same order needed)",
                         path=inputs.dff_file)
    if fc.traces.shape != dff.traces.shape:
        raise InputError(f"dF/F has shape {dff.traces.shape} but corrected fluorescence {fc.traces.shape}", path=inputs.dff_file)
    table = read_stimulus_table(inputs.stimulus_table_file)
    speed = None if inputs.running_speed_file is None else _read_speed(inputs.running_speed_file, fc.traces.shape[1])
    template = None if inputs.lsn_template_file is None else _read_template(inputs.lsn_template_file)
    try:
        analysis = analyze_session(
            fc.traces, dff.traces, fc.roi_ids, table, inputs.frame_rate_hz, speed=speed, lsn_template=template,
            stimuli=inputs.stimuli, n_shuffles=inputs.n_shuffles, seed=inputs.seed,
        )
    except InputError as exc:
        if exc.path is None:
            raise InputError(exc.problem, entity=exc.entity, path=inputs.stimulus_table_file) from None
        raise
    write_analysis(inputs.output_file, analysis, table)
    target = metrics_path(inputs.output_file)
    with atomic_path(target) as tmp:
        analysis.metrics.to_parquet(tmp, index=False)
        check = pd.read_parquet(tmp)
        if len(check) != len(analysis.metrics):
            raise OSError(f"metrics file {tmp} holds {len(check)} rows, expected {len(analysis.metrics)}")
    return {
        "output_file": inputs.output_file,
        "metrics_file": target,
        "mean_running_speed": analysis.mean_running_speed,
        "stimuli": list(analysis.results),
        "n_rois": len(analysis.metrics),
        "messages": analysis.messages,
    }


if __name__ == "__main__":
    raise SystemExit(main_for(Inputs, run, "Stimulus-response metrics per ROI (drifting/static gratings, scenes, movies, sparse noise)."))
