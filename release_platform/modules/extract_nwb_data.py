"""IVSCC sweep extraction: cell QC, sweep QC and stimulus descriptors, and cell features from an icephys NWB 2 file.

Input JSON (AllenSDK ``extract_nwb_data`` field names)::

    {"input_nwb": "/path/cell.nwb",                        # icephys tables or SweepTable layout
     "ephys_raw_stimulus_names": {"Long Square": ["C1LSCOARSE"], "Test": ["EXTP"], ...},   # prefixes
     "manual_seal_gohm": 1.5,                               # optional fallbacks
     "manual_initial_access_resistance_mohm": 12.0,
     "manual_initial_input_mohm": 180.0,
     "output_json": "/path/out.json",                       # optional; --output_json wins
     "cell_qc_criteria": {...}, "sweep_qc_criteria": {...}, "spike_detection": {...}}   # optional overrides

``ephys_raw_stimulus_names`` left out uses the default map
(:data:`release_platform.icephys.reader.DEFAULT_STIMULUS_NAMES`). Output JSON::

    {"experiment_data": {"blowout_mv", "electrode_0_pa", "seal_gohm", "input_resistance_mohm",
                         "initial_access_resistance_mohm", "input_access_resistance_ratio", "sampling_rate",
                         "recording_date", "layout", "cell_tags", "passed", "fail_reasons"},
     "sweep_data": {"<sweep number>": {"sweep_number", "stimulus_name", "stimulus_type", "clamp_mode",
                    "stimulus_units", "sampling_rate", "pre_noise_rms_mv", "post_noise_rms_mv", "slow_vm_mv",
                    "slow_noise_rms_mv", "pre_vm_mv", "post_vm_mv", "vm_delta_mv", "stimulus_start_time",
                    "stimulus_amplitude", "stimulus_duration", "stimulus_interval", "bridge_balance_mohm",
                    "leak_pa", "truncated", "spike_count", "passed", "fail_reasons", "ephys_sweep_tags"}},
     "cell_features": {"rheobase_pa", "input_resistance_mohm", "tau_ms", "sag", "fi_slope_hz_per_pa", ...}}

Sweep tags hold only that sweep's problems; the cell's tags stay in ``experiment_data.cell_tags``.
A missing or corrupt file exits with status 1 and one message naming it.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

import pydantic

from release_platform.errors import InputError
from release_platform.icephys.extract import extract_cell
from release_platform.icephys.features import SpikeParams
from release_platform.icephys.qc import CellQcCriteria, SweepQcCriteria
from release_platform.icephys.reader import DEFAULT_STIMULUS_NAMES
from release_platform.modules._harness import load_inputs, write_output_json


class Inputs(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    input_nwb: Path
    input_h5: Optional[Path] = None  # MIES lab notebook (accepted for compatibility; NWB 2 files carry the values)
    ephys_raw_stimulus_names: dict[str, list[str]] = pydantic.Field(default_factory=lambda: dict(DEFAULT_STIMULUS_NAMES))
    manual_seal_gohm: Optional[float] = pydantic.Field(default=None, gt=0, allow_inf_nan=False)
    manual_initial_access_resistance_mohm: Optional[float] = pydantic.Field(default=None, gt=0, allow_inf_nan=False)
    manual_initial_input_mohm: Optional[float] = pydantic.Field(default=None, gt=0, allow_inf_nan=False)
    output_json: Optional[Path] = None
    cell_qc_criteria: CellQcCriteria = CellQcCriteria()
    sweep_qc_criteria: SweepQcCriteria = SweepQcCriteria()
    spike_detection: SpikeParams = SpikeParams()

    @pydantic.field_validator("ephys_raw_stimulus_names")
    @classmethod
    def _non_empty(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for name, prefixes in value.items():
            if not prefixes or any(not p for p in prefixes):
                raise ValueError(f"stimulus type {name!r} needs at least one non-empty raw name or prefix")
        return value


def run(inputs: Inputs) -> dict:
    result = extract_cell(
        inputs.input_nwb,
        stimulus_names=inputs.ephys_raw_stimulus_names,
        manual_seal_gohm=inputs.manual_seal_gohm,
        manual_initial_access_resistance_mohm=inputs.manual_initial_access_resistance_mohm,
        manual_initial_input_mohm=inputs.manual_initial_input_mohm,
        cell_criteria=inputs.cell_qc_criteria,
        sweep_criteria=inputs.sweep_qc_criteria,
        spike_params=inputs.spike_detection,
    )
    return result.output_json()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Extract cell QC, sweep QC and features from an icephys NWB file.")
    parser.add_argument("--input_json", required=True)
    parser.add_argument("--output_json", default=None, help="defaults to the input's output_json")
    parser.add_argument("--log_level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s:%(levelname)s:%(message)s")
    try:
        inputs = load_inputs(Inputs, args.input_json)
        output = args.output_json or inputs.output_json
        if output is None:
            raise InputError("no output path: give --output_json or output_json in the input", path=args.input_json)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        result = run(inputs)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    write_output_json(output, {"input_json": os.fspath(args.input_json), **result})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
