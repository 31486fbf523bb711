"""The extract_nwb_data module: JSON contract, recovered values, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import pytest

from data_fixtures.icephys import IcephysDefects, IcephysParams, generate_icephys_cell
from release_platform.modules import extract_nwb_data

STIMULUS_NAMES = {
    "Long Square": ["C1LSCOARSE"],
    "Short Square": ["C1SSFINEST"],
    "Ramp": ["C1RP"],
    "Test": ["EXTP"],
}


@pytest.fixture(scope="module")
def cell(tmp_path_factory):
    root = tmp_path_factory.mktemp("extract_nwb_data")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        spec = generate_icephys_cell(root, cell_specimen_id=6001, params=IcephysParams(), seed=6001)
        no_seal = generate_icephys_cell(root, cell_specimen_id=6001, params=IcephysParams(), seed=6001,
                                        defects=IcephysDefects(omit=(1,)), file_name="no_seal.nwb")
    return spec, no_seal, json.loads(spec.truth_path.read_text())


def _input(tmp_path, **fields):
    path = tmp_path / "in.json"
    path.write_text(json.dumps({k: str(v) if hasattr(v, "__fspath__") else v for k, v in fields.items()}))
    return path


def test_output_json_has_the_allensdk_blocks_and_recovers_the_cell(cell, tmp_path):
    spec, _, truth = cell
    out = tmp_path / "out.json"
    code = extract_nwb_data.main(["--input_json", str(_input(tmp_path, input_nwb=spec.nwb_path, ephys_raw_stimulus_names=STIMULUS_NAMES)),
                                  "--output_json", str(out)])
    assert code == 0
    data = json.loads(out.read_text())
    assert set(data) == {"input_json", "experiment_data", "sweep_data", "cell_features"}
    e = data["experiment_data"]
    for key in ("blowout_mv", "electrode_0_pa", "seal_gohm", "input_resistance_mohm", "initial_access_resistance_mohm",
                "input_access_resistance_ratio", "sampling_rate", "recording_date", "cell_tags"):
        assert key in e
    assert e["initial_access_resistance_mohm"] == pytest.approx(truth["access_resistance_mohm"], rel=0.02)
    assert e["blowout_mv"] == pytest.approx(truth["blowout_mv"], rel=0.02)
    assert e["sampling_rate"] == truth["sampling_rate_hz"]
    assert sorted(data["sweep_data"], key=int) == [str(s["sweep_number"]) for s in truth["sweeps"]]
    for sweep in truth["sweeps"]:
        rec = data["sweep_data"][str(sweep["sweep_number"])]
        assert rec["stimulus_type"] == sweep["stimulus_type"] and rec["spike_count"] == sweep["spike_count"]
        assert rec["ephys_sweep_tags"] == [] and rec["passed"] is True
        for key in ("pre_noise_rms_mv", "post_noise_rms_mv", "slow_vm_mv", "slow_noise_rms_mv", "pre_vm_mv", "post_vm_mv",
                    "vm_delta_mv", "stimulus_start_time", "stimulus_amplitude", "stimulus_duration", "stimulus_interval",
                    "stimulus_units", "sampling_rate", "bridge_balance_mohm", "leak_pa"):
            assert key in rec
    f = data["cell_features"]
    assert f["input_resistance_mohm"] == pytest.approx(truth["input_resistance_mohm"], rel=0.05)
    assert f["tau_ms"] == pytest.approx(truth["tau_ms"], rel=0.05)
    assert f["rheobase_pa"] == pytest.approx(truth["rheobase_sweep_amplitude_pa"], abs=1e-3)


def test_manual_seal_fallback_when_the_cell_attached_sweep_is_missing(cell, tmp_path):
    _, no_seal, _ = cell
    out = tmp_path / "out.json"
    path = _input(tmp_path, input_nwb=no_seal.nwb_path, manual_seal_gohm=1.7, output_json=out)
    assert extract_nwb_data.main(["--input_json", str(path)]) == 0  # output path from the input JSON
    e = json.loads(out.read_text())["experiment_data"]
    assert e["seal_gohm"] == 1.7
    assert e["cell_tags"] == ["no cell-attached sweep (EXTPCllATT)", "Seal set using manual value"]


def test_unknown_stimulus_names_tag_sweeps_not_crash(cell, tmp_path):
    spec, _, truth = cell
    out = tmp_path / "out.json"
    names = {"Long Square": ["C1LSCOARSE"], "Test": ["EXTP"]}
    path = _input(tmp_path, input_nwb=spec.nwb_path, ephys_raw_stimulus_names=names)
    assert extract_nwb_data.main(["--input_json", str(path), "--output_json", str(out)]) == 0
    sweeps = json.loads(out.read_text())["sweep_data"]
    unknown = {str(s["sweep_number"]) for s in truth["sweeps"] if s["kind"] in ("short_square", "ramp")}
    for number, rec in sweeps.items():
        if number in unknown:
            assert rec["stimulus_type"] is None and rec["ephys_sweep_tags"] == [f"unknown stimulus name {rec['stimulus_name']!r}"]
        else:
            assert rec["ephys_sweep_tags"] == []


def test_corrupt_file_exits_1_with_one_message(cell, tmp_path, capsys):
    spec, _, _ = cell
    corrupt = tmp_path / "corrupt.nwb"
    corrupt.write_bytes(spec.nwb_path.read_bytes()[:4096])
    out = tmp_path / "out.json"
    assert extract_nwb_data.main(["--input_json", str(_input(tmp_path, input_nwb=corrupt)), "--output_json", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "corrupt.nwb" in err[0] and "cannot read icephys NWB file" in err[0]
    assert not out.exists()


@pytest.mark.parametrize(
    "fields, expected",
    [
        ({}, "input_nwb: Field required"),
        ({"input_nwb": "x.nwb", "manual_seal_gohm": -1}, "manual_seal_gohm: Input should be greater than 0"),
        ({"input_nwb": "x.nwb", "ephys_raw_stimulus_names": {"Long Square": []}}, "needs at least one non-empty raw name"),
        ({"input_nwb": "x.nwb", "sweep_qc_criteria": {"vm_delta_mv_max": "big"}}, "sweep_qc_criteria.vm_delta_mv_max"),
    ],
)
def test_malformed_input_exits_2(tmp_path, capsys, fields, expected):
    code = extract_nwb_data.main(["--input_json", str(_input(tmp_path, **fields)), "--output_json", str(tmp_path / "o.json")])
    assert code == 2
    assert expected in capsys.readouterr().err


def test_runs_as_a_module(cell, tmp_path):
    spec, _, truth = cell
    out = tmp_path / "out.json"
    proc = subprocess.run(
        [sys.executable, "-m", "release_platform.modules.extract_nwb_data", "--input_json",
         str(_input(tmp_path, input_nwb=spec.nwb_path)), "--output_json", str(out)],
        capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert data["cell_features"]["rheobase_sweep_number"] == min(
        (s for s in truth["sweeps"] if s["kind"] == "long_square" and s["spike_count"]), key=lambda s: s["amplitude"]
    )["sweep_number"]
