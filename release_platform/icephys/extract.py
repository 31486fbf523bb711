"""One call from an icephys NWB file to cell QC, sweep QC/descriptors, spikes and cell features."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from release_platform.errors import InputError
from release_platform.icephys.features import SpikeParams, detect_spikes, long_square_features, ramp_features, short_square_features
from release_platform.icephys.qc import CellQcCriteria, SweepQcCriteria, cell_qc, sweep_qc
from release_platform.icephys.reader import CellRecording, read_cell

__all__ = ["CellExtraction", "extract_cell", "SWEEP_TABLE_COLUMNS"]

SWEEP_TABLE_COLUMNS = [
    "sweep_number", "stimulus_name", "stimulus_type", "clamp_mode", "stimulus_units", "sampling_rate", "starting_time",
    "n_samples", "truncated", "stimulus_start_time", "stimulus_amplitude", "stimulus_duration", "stimulus_interval",
    "pre_noise_rms_mv", "post_noise_rms_mv", "slow_vm_mv", "slow_noise_rms_mv", "pre_vm_mv", "post_vm_mv", "vm_delta_mv",
    "bridge_balance_mohm", "leak_pa", "spike_count", "passed", "fail_reasons",
]


@dataclasses.dataclass
class CellExtraction:
    path: str
    layout: str
    experiment_data: dict[str, Any]
    sweep_data: dict[int, dict[str, Any]]
    cell_features: dict[str, Any]
    spikes: pd.DataFrame

    def sweep_table(self) -> pd.DataFrame:
        """One row per sweep (columns :data:`SWEEP_TABLE_COLUMNS`; ``fail_reasons`` joined with ``; ``)."""
        rows = []
        for number in sorted(self.sweep_data):
            rec = dict(self.sweep_data[number])
            rec["fail_reasons"] = "; ".join(rec["fail_reasons"])
            rows.append({c: rec.get(c) for c in SWEEP_TABLE_COLUMNS})
        frame = pd.DataFrame(rows, columns=SWEEP_TABLE_COLUMNS)
        for col in ("sweep_number", "n_samples", "spike_count"):
            frame[col] = frame[col].astype("int64")
        for col in ("truncated", "passed"):
            frame[col] = frame[col].astype(bool)
        floats = [c for c in SWEEP_TABLE_COLUMNS if c not in ("sweep_number", "n_samples", "spike_count", "truncated", "passed",
                                                                  "stimulus_name", "stimulus_type", "clamp_mode", "stimulus_units",
                                                                  "fail_reasons")]
        for col in floats:
            frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
        return frame

    def output_json(self) -> dict[str, Any]:
        sweeps = {}
        for number, rec in self.sweep_data.items():
            r = {k: v for k, v in rec.items() if k not in ("stimulus_start_index", "stimulus_end_index", "recording_end_index")}
            r["ephys_sweep_tags"] = list(rec["fail_reasons"])
            sweeps[str(number)] = r
        return {"experiment_data": self.experiment_data, "sweep_data": sweeps, "cell_features": self.cell_features}


def extract_cell(
    path: str | os.PathLike | CellRecording,
    *,
    stimulus_names: Optional[Mapping[str, Sequence[str]]] = None,
    manual_seal_gohm: Optional[float] = None,
    manual_initial_access_resistance_mohm: Optional[float] = None,
    manual_initial_input_mohm: Optional[float] = None,
    cell_criteria: CellQcCriteria = CellQcCriteria(),
    sweep_criteria: SweepQcCriteria = SweepQcCriteria(),
    spike_params: SpikeParams = SpikeParams(),
    entity: Optional[str] = None,
) -> CellExtraction:
    """Read a cell and compute everything; bad input raises one :class:`InputError` naming the file."""
    try:
        recording = path if isinstance(path, CellRecording) else read_cell(path, stimulus_names)
        return _extract(recording, manual_seal_gohm, manual_initial_access_resistance_mohm, manual_initial_input_mohm,
                        cell_criteria, sweep_criteria, spike_params)
    except InputError as exc:
        raise exc.with_entity(entity) if entity else exc from None


def _extract(recording: CellRecording, seal, access, rin, cell_criteria, sweep_criteria, spike_params) -> CellExtraction:
    cc = [s for s in recording.sweeps if s.clamp_mode == "current"]
    if not cc:
        raise InputError("no current-clamp sweep: the sampling rate cannot be taken from one", path=recording.path)
    rate = cc[0].rate_hz
    experiment = cell_qc(recording, manual_seal_gohm=seal, manual_initial_access_resistance_mohm=access,
                         manual_initial_input_mohm=rin, criteria=cell_criteria)
    experiment["sampling_rate"] = rate
    experiment["recording_date"] = recording.session_start_time
    experiment["layout"] = recording.layout
    sweeps = sweep_qc(recording, sweep_criteria)

    # spikes on every recorded current-clamp sweep at the cell's rate
    analysable = [s for s in cc if s.rate_hz == rate and sweeps[s.sweep_number]["recording_end_index"] >= 0]
    voltages = [s.response[: sweeps[s.sweep_number]["recording_end_index"] + 1] for s in analysable]
    spikes = detect_spikes(voltages, rate, [s.sweep_number for s in analysable], spike_params)
    counts = spikes.groupby("sweep_number").size() if len(spikes) else pd.Series(dtype=int)
    for number, rec in sweeps.items():
        rec["spike_count"] = int(counts.get(number, 0))

    ls = [s for s in analysable if s.stimulus_type == "Long Square" and sweeps[s.sweep_number]["passed"]
          and sweeps[s.sweep_number]["stimulus_start_index"] is not None]
    ls_spikes = spikes[spikes["sweep_number"].isin([s.sweep_number for s in ls])]
    features = long_square_features(
        [s.response for s in ls],
        rate,
        [s.sweep_number for s in ls],
        [sweeps[s.sweep_number]["stimulus_amplitude"] for s in ls],
        [(sweeps[s.sweep_number]["stimulus_start_index"], sweeps[s.sweep_number]["stimulus_end_index"] + 1) for s in ls],
        ls_spikes,
    )
    ss = [s for s in analysable if s.stimulus_type == "Short Square" and sweeps[s.sweep_number]["passed"]]
    features.update(short_square_features([sweeps[s.sweep_number]["stimulus_amplitude"] for s in ss], [s.sweep_number for s in ss],
                                          [sweeps[s.sweep_number]["spike_count"] for s in ss]))
    ramps = [s for s in analysable if s.stimulus_type == "Ramp" and sweeps[s.sweep_number]["passed"]
             and sweeps[s.sweep_number]["stimulus_start_index"] is not None]
    features.update(ramp_features([s.stimulus for s in ramps], rate, [s.sweep_number for s in ramps],
                                  [sweeps[s.sweep_number]["stimulus_start_index"] for s in ramps],
                                  spikes[spikes["sweep_number"].isin([s.sweep_number for s in ramps])]))
    features["n_spikes"] = int(len(spikes))
    features["n_sweeps_passed"] = int(sum(1 for r in sweeps.values() if r["passed"]))
    features["n_sweeps"] = len(sweeps)
    return CellExtraction(
        path=recording.path, layout=recording.layout, experiment_data=experiment, sweep_data=sweeps,
        cell_features={k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in features.items()},
        spikes=spikes,
    )
