"""The observatory_analysis module: its JSON contract, outputs and malformed input."""

from __future__ import annotations

import json
import subprocess
import sys

import h5py
import numpy as np
import pandas as pd
import pytest

from data_fixtures.stimulus import AnalysisDesign, analysis_session
from release_platform.modules import observatory_analysis
from release_platform.modules._harness import main_for
from release_platform.ophys.io import write_traces
from release_platform.stimulus.session import read_analysis_maps

N = 40


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Files as the pipeline writes them for a 40-ROI session with gratings, a movie and sparse noise."""
    root = tmp_path_factory.mktemp("observatory")
    design = AnalysisDesign(blocks=("spontaneous", "drifting_gratings", "natural_movie_one", "locally_sparse_noise", "spontaneous"),
                            dg_repeats=4, nm_repeats=4, movie_frames=150, lsn_frames=3000, lsn_shape=(8, 14), spontaneous_s=30)
    s = analysis_session(N, seed=21, design=design)
    ids = [str(7000 + i) for i in range(N)]
    write_traces(root / "neuropil_correction.h5", s.corrected, ids, dataset="FC")
    write_traces(root / "dff.h5", s.dff, ids, dataset="data")
    s.table.to_csv(root / "stimulus_table.csv", index=False)
    pd.DataFrame({"speed": s.speed}).to_csv(root / "running.csv", index=False)
    np.save(root / "lsn_template.npy", s.lsn_template)
    inputs = {
        "corrected_fluorescence_file": str(root / "neuropil_correction.h5"),
        "dff_file": str(root / "dff.h5"),
        "stimulus_table_file": str(root / "stimulus_table.csv"),
        "running_speed_file": str(root / "running.csv"),
        "lsn_template_file": str(root / "lsn_template.npy"),
        "frame_rate_hz": 30.0,
        "n_shuffles": 200,
        "seed": 3,
        "output_file": str(root / "out" / "analysis.h5"),
    }
    return root, s, ids, inputs


def _run(inputs, tmp_path, capsys):
    in_json, out_json = tmp_path / "in.json", tmp_path / "out.json"
    in_json.write_text(json.dumps(inputs) if isinstance(inputs, dict) else inputs)
    code = main_for(observatory_analysis.Inputs, observatory_analysis.run, "observatory",
                    argv=["--input_json", str(in_json), "--output_json", str(out_json)])
    err = capsys.readouterr().err
    return code, (json.loads(out_json.read_text()) if out_json.exists() else None), err


def test_module_writes_metrics_and_arrays(files, tmp_path, capsys):
    root, s, ids, inputs = files
    code, out, err = _run(inputs, tmp_path, capsys)
    assert code == 0, err
    metrics = pd.read_parquet(out["metrics_file"])
    assert out["metrics_file"] == str(root / "out" / "analysis_metrics.parquet")
    assert list(metrics["roi_id"]) == ids
    assert {"pref_dir_dg", "osi_dg", "reliability_nm1", "peak_frame_nm1", "rf_center_on_x_lsn", "rf_chi2_lsn",
            "mod_vis"} <= set(metrics.columns)
    assert "pref_ori_sg" not in metrics.columns  # only the stimuli present
    assert out["mean_running_speed"] == pytest.approx(float(np.mean(s.speed)))
    assert out["stimuli"] == ["drifting_gratings", "natural_movie_one", "locally_sparse_noise"]
    strong = s.truth.tuned & (s.truth.peak_rate_hz > 8) & (s.truth.null_ratio < 0.5)
    assert np.mean(metrics["pref_dir_dg"].to_numpy()[strong] == s.truth.pref_direction_deg[strong]) >= 0.8
    with h5py.File(out["output_file"], "r") as fh:
        assert fh["drifting_gratings/response"].shape == (8, 5, N, 3)
        assert fh["drifting_gratings/mean_sweep_response"].shape[1] == N
        assert fh["locally_sparse_noise/mean_on"].shape == (N, 8, 14)
        assert fh["natural_movie_one/response"].shape[:2] == (4, N)
        assert fh["running/vis/binned_cells"].shape[0] == N
    assert not list(root.rglob("*.inprogress"))

    # What the QC figures read back: condition axes in the order of the response's dimensions, the RF maps, and
    # a tuning peak at the true preferred direction for the strongly tuned cells.
    maps = read_analysis_maps(out["output_file"])
    dg_maps = maps["gratings"]["drifting_gratings"]
    assert [(k, len(v)) for k, v in dg_maps["axes"].items()] == [("orientation", 8), ("temporal_frequency", 5)]
    assert maps["roi_ids"] == ids and maps["sparse_noise"]["locally_sparse_noise"]["mean_on"].shape == (N, 8, 14)
    mean = dg_maps["response"][..., 0]  # direction x TF x cells
    peak_dir = dg_maps["axes"]["orientation"][np.nanargmax(np.nanmax(mean, axis=1), axis=0)]
    assert np.mean(peak_dir[strong] == s.truth.pref_direction_deg[strong]) >= 0.8


def test_module_subset_of_stimuli_and_command_line(files, tmp_path):
    root, _, _, inputs = files
    subset = {**inputs, "stimuli": ["drifting_gratings"], "output_file": str(tmp_path / "dg.h5")}
    subset.pop("lsn_template_file")
    (tmp_path / "in.json").write_text(json.dumps(subset))
    proc = subprocess.run([sys.executable, "-m", "release_platform.modules.observatory_analysis", "--input_json",
                           str(tmp_path / "in.json"), "--output_json", str(tmp_path / "out.json")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    out = json.loads((tmp_path / "out.json").read_text())
    cols = set(pd.read_parquet(out["metrics_file"]).columns)
    assert "osi_dg" in cols and "rf_chi2_lsn" not in cols and "reliability_nm1" not in cols


def test_malformed_json_lists_every_bad_field(files, tmp_path, capsys):
    _, _, _, inputs = files
    bad = {k: v for k, v in inputs.items() if k not in ("dff_file", "output_file")}
    bad.update({"frame_rate_hz": -3, "n_shuffles": "many", "stimuli": ["gratings"], "colour": "blue"})
    code, out, err = _run(bad, tmp_path, capsys)
    assert code == 2 and out is None
    for field in ("dff_file", "output_file", "frame_rate_hz", "n_shuffles", "stimuli", "colour"):
        assert f"{field}:" in err, (field, err)
    assert err.count("\n") == 1  # one message
    code, _, err = _run("{not json", tmp_path, capsys)
    assert code == 2 and "input JSON is unreadable" in err


def test_bad_files_name_the_file(files, tmp_path, capsys):
    root, _, _, inputs = files
    code, _, err = _run({**inputs, "stimuli": ["static_gratings"]}, tmp_path, capsys)
    assert code == 1 and "['static_gratings'] requested but not in the stimulus table" in err and "stimulus_table.csv" in err
    short = tmp_path / "running.csv"
    pd.DataFrame({"speed": [1.0, 2.0]}).to_csv(short, index=False)
    code, _, err = _run({**inputs, "running_speed_file": str(short)}, tmp_path, capsys)
    assert code == 1 and f"{short}: running speed has 2 values but the traces have" in err
    other = tmp_path / "dff_other.h5"
    with h5py.File(inputs["dff_file"], "r") as fh:
        data = fh["data"][()]
    write_traces(other, data, [str(i) for i in range(N)], dataset="data")
    code, _, err = _run({**inputs, "dff_file": str(other)}, tmp_path, capsys)
    assert code == 1 and "ROI ids differ" in err
    code, _, err = _run({**inputs, "lsn_template_file": None}, tmp_path, capsys)
    assert code == 1 and "needs the sparse-noise template" in err
    assert not (tmp_path / "analysis.h5").exists()
