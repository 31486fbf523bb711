"""The ophys stage modules run through ``main_for``: good input and malformed input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from release_platform.modules import demixing, dff, neuropil_correction, trace_extraction
from release_platform.modules._harness import main_for

SHAPE = (32, 40)
N_FRAMES = 120


def disk(center, radius):
    rows, cols = np.mgrid[: SHAPE[0], : SHAPE[1]]
    return (rows - center[0]) ** 2 + (cols - center[1]) ** 2 <= radius**2


def record(roi_id, full, labels=()):
    rows, cols = np.nonzero(full)
    y0, x0 = int(rows.min()), int(cols.min())
    crop = full[y0 : rows.max() + 1, x0 : cols.max() + 1]
    return {"id": roi_id, "x": x0, "y": y0, "width": crop.shape[1], "height": crop.shape[0],
            "mask": crop.tolist(), "valid": True, "exclusion_labels": list(labels)}


@pytest.fixture
def session(tmp_path):
    """A 32 x 40 x 120 uint16 movie with 4 ROIs (one overlapping pair, one touching the border)."""
    rng = np.random.default_rng(7)
    masks = [disk((10, 10), 3), disk((10, 15), 3), disk((22, 28), 3), disk((16, 2), 2)]
    neuropil = 200 + 20 * rng.standard_normal(N_FRAMES)
    movie = np.broadcast_to(neuropil[:, None, None], (N_FRAMES, *SHAPE)).copy()
    for i, m in enumerate(masks):
        movie[:, m] += (300 + 100 * (i + 1) * (rng.random(N_FRAMES) < 0.1))[:, None]
    movie = rng.poisson(movie).astype(np.uint16)
    path = tmp_path / "movie.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("data", data=movie, chunks=(16, *SHAPE))
    rois = [record(1001 + i, m) for i, m in enumerate(masks)]
    return {"movie": movie, "movie_path": path, "rois": rois, "masks": masks, "dir": tmp_path}


def run_module(module, inputs: dict, tmp_path, capsys, name="stage"):
    in_json, out_json = tmp_path / f"{name}_in.json", tmp_path / f"{name}_out.json"
    in_json.write_text(json.dumps(inputs, default=str))
    code = main_for(module.Inputs, module.run, name, argv=["--input_json", str(in_json), "--output_json", str(out_json)])
    err = capsys.readouterr().err
    output = json.loads(out_json.read_text()) if out_json.exists() else None
    return code, output, err


def extraction_inputs(session, **overrides):
    inputs = {
        "motion_corrected_stack": str(session["movie_path"]),
        "motion_border": {"x0": 3, "x1": 0, "y0": 0, "y1": 0},
        "storage_directory": str(session["dir"] / "extraction"),
        "rois": session["rois"],
    }
    inputs.update(overrides)
    return inputs


def test_trace_extraction_module(session, tmp_path, capsys):
    code, out, err = run_module(trace_extraction, extraction_inputs(session), tmp_path, capsys)
    assert code == 0, err
    assert out["exclusion_labels"] == [{"roi_id": "1004", "exclusion_label_name": "motion_border"}]
    assert out["exclusion_labels_by_roi"]["1001"] == []
    with h5py.File(out["roi_trace_file"], "r") as handle:
        data, names = handle["data"][()], handle["roi_names"][()]
    assert list(names) == [b"1001", b"1002", b"1003", b"1004"]
    expected = session["movie"][:, session["masks"][0]].astype(float).mean(axis=1)
    np.testing.assert_allclose(data[0], expected, rtol=1e-12)
    assert np.isnan(data[3]).all()
    with h5py.File(out["neuropil_trace_file"], "r") as handle:
        assert handle["data"].shape == (4, N_FRAMES)
    masks = json.loads(open(out["neuropil_mask_file"]).read())["neuropils"]
    assert [m["id"] for m in masks] == ["1001", "1002", "1003", "1004"]


@pytest.mark.parametrize(
    "overrides, code, message",
    [
        ({"rois": None}, 2, "rois: Input should be a valid list"),
        ({"motion_border": {"x0": 1, "x1": 1, "y0": 1}}, 2, "motion_border.y1: Field required"),
        ({"motion_corrected_stack": "/nonexistent/movie.h5"}, 1, "/nonexistent/movie.h5: file not found"),
    ],
)
def test_trace_extraction_module_bad_input(session, tmp_path, capsys, overrides, code, message):
    got, out, err = run_module(trace_extraction, extraction_inputs(session, **overrides), tmp_path, capsys)
    assert got == code and out is None
    assert message in err and "Traceback" not in err


def test_trace_extraction_module_bad_mask_and_corrupt_movie(session, tmp_path, capsys):
    rois = [dict(session["rois"][0], width=99)]
    code, _, err = run_module(trace_extraction, extraction_inputs(session, rois=rois), tmp_path, capsys)
    assert code == 1 and "ROI 1001: mask has shape" in err
    corrupt = tmp_path / "corrupt.h5"
    corrupt.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 64)
    code, _, err = run_module(trace_extraction, extraction_inputs(session, motion_corrected_stack=str(corrupt)), tmp_path, capsys)
    assert code == 1 and f"{corrupt}: not a readable HDF5 file" in err
    assert not (session["dir"] / "extraction" / "roi_traces.h5").exists()


def extract(session, tmp_path, capsys):
    code, out, err = run_module(trace_extraction, extraction_inputs(session), tmp_path, capsys, name="extract")
    assert code == 0, err
    return out


def demixing_inputs(session, traces_h5, **overrides):
    rois = [dict(r) for r in session["rois"]]
    rois[3]["exclusion_labels"] = ["motion_border"]
    inputs = {"movie_h5": str(session["movie_path"]), "traces_h5": traces_h5, "roi_masks": rois,
              "output_file": str(session["dir"] / "demix" / "demixed_traces.h5")}
    inputs.update(overrides)
    return inputs


def test_demixing_module(session, tmp_path, capsys):
    extracted = extract(session, tmp_path, capsys)
    code, out, err = run_module(demixing, demixing_inputs(session, extracted["roi_trace_file"]), tmp_path, capsys)
    assert code == 0, err
    assert out["dropped_frame_count"] == 0 and out["excluded_roi_ids"] == ["1004"]
    assert out["negative_baseline_roi_ids"] == [] and isinstance(out["negative_transient_roi_ids"], list)
    with h5py.File(out["output_file"], "r") as handle:
        data, names = handle["data"][()], handle["roi_names"][()]
    with h5py.File(extracted["roi_trace_file"], "r") as handle:
        raw = handle["data"][()]
    assert data.shape == (4, N_FRAMES) and list(names) == [b"1001", b"1002", b"1003", b"1004"]
    assert np.array_equal(data[2], raw[2])  # isolated ROI passes through
    assert not np.array_equal(data[0], raw[0]) and np.isfinite(data[:3]).all()
    assert np.isnan(data[3]).all()


def test_demixing_module_bad_input(session, tmp_path, capsys):
    extracted = extract(session, tmp_path, capsys)
    traces_h5 = extracted["roi_trace_file"]
    rois = demixing_inputs(session, traces_h5)["roi_masks"]
    # ROI ids disagree between the traces file and the masks
    bad_ids = [dict(r) for r in rois]
    bad_ids[1]["id"] = 9999
    code, out, err = run_module(demixing, demixing_inputs(session, traces_h5, roi_masks=bad_ids), tmp_path, capsys)
    assert code == 1 and out is None
    assert "ROI ids disagree: in traces file" in err and "1002" in err and "9999" in err
    # a traces file without roi_names
    no_names = tmp_path / "no_names.h5"
    with h5py.File(no_names, "w") as handle:
        handle["data"] = np.zeros((4, N_FRAMES))
    code, _, err = run_module(demixing, demixing_inputs(session, str(no_names)), tmp_path, capsys)
    assert code == 1 and f"{no_names}: dataset 'roi_names' is missing" in err
    assert not (session["dir"] / "demix" / "demixed_traces.h5").exists()
    # a zero-pixel mask: the ROI is flagged and NaN, the run succeeds
    empty = [dict(r) for r in rois]
    empty[0]["mask"] = np.zeros((empty[0]["height"], empty[0]["width"]), bool).tolist()
    code, out, err = run_module(demixing, demixing_inputs(session, traces_h5, roi_masks=empty), tmp_path, capsys)
    assert code == 0, err
    assert out["excluded_roi_ids"] == ["1004", "1001"]
    # malformed JSON field
    code, _, err = run_module(demixing, demixing_inputs(session, traces_h5, output_file=None), tmp_path, capsys)
    assert code == 2 and "output_file" in err


def write_trace_file(path, data, ids, dataset="data"):
    with h5py.File(path, "w") as handle:
        handle[dataset] = data
        handle["roi_names"] = np.array([str(i).encode() for i in ids])
    return str(path)


def test_neuropil_correction_module(tmp_path, capsys):
    rng = np.random.default_rng(3)
    neuropil = 300 + 30 * rng.standard_normal((6, 2000))
    cells = 400 + 40 * (rng.random((6, 2000)) < 0.02)
    r_true = np.array([0.2, 0.4, 0.5, 0.6, 0.8, 0.7])
    roi = cells + r_true[:, None] * neuropil + rng.standard_normal((6, 2000))
    roi[5] = np.nan
    ids = [11, 12, 13, 14, 15, 16]
    inputs = {"roi_trace_file": write_trace_file(tmp_path / "demixed.h5", roi, ids),
              "neuropil_trace_file": write_trace_file(tmp_path / "np.h5", neuropil, ids),
              "storage_directory": str(tmp_path / "npc")}
    code, out, err = run_module(neuropil_correction, inputs, tmp_path, capsys)
    assert code == 0, err
    assert out["skipped_roi_ids"] == ["16"] and out["unconverged_roi_ids"] == []
    with h5py.File(out["neuropil_correction_trace_file"], "r") as handle:
        r, rmse, fc = handle["r"][()], handle["RMSE"][()], handle["FC"][()]
        assert list(handle["roi_names"][()]) == [b"11", b"12", b"13", b"14", b"15", b"16"]
        assert handle["status"][()][5] == b"skipped" and "0" in handle["r_vals"]
    np.testing.assert_allclose(r[:5], r_true[:5], atol=0.05)
    assert np.isnan(r[5]) and np.isnan(rmse[5]) and np.isnan(fc[5]).all()
    np.testing.assert_allclose(fc[:5], roi[:5] - r[:5, None] * neuropil[:5])
    # ROI ids in a different order
    inputs["neuropil_trace_file"] = write_trace_file(tmp_path / "np2.h5", neuropil, ids[::-1])
    code, out, err = run_module(neuropil_correction, inputs, tmp_path, capsys)
    assert code == 1 and "are in a different order" in err
    # a missing field
    del inputs["storage_directory"]
    code, out, err = run_module(neuropil_correction, inputs, tmp_path, capsys)
    assert code == 2 and "storage_directory: Field required" in err


def test_dff_module(tmp_path, capsys):
    rng = np.random.default_rng(5)
    fc = 500 + 10 * rng.standard_normal((3, 900))
    fc[1] = np.nan
    input_file = write_trace_file(tmp_path / "npc.h5", fc, [21, 22, 23], dataset="FC")
    inputs = {"input_file": input_file, "output_file": str(tmp_path / "dff.h5"), "movie_frame_rate_hz": 30.0,
              "long_baseline_filter_s": 10, "short_filter_s": 1.0}
    code, out, err = run_module(dff, inputs, tmp_path, capsys)
    assert code == 0, err
    assert out["invalid_roi_ids"] == ["22"] and out["parameters"]["long_filter_frames"] == 301
    with h5py.File(out["output_file"], "r") as handle:
        assert handle["data"].shape == (3, 900) and list(handle["roi_names"][()]) == [b"21", b"22", b"23"]
        sigma, small = handle["sigma_dff"][()], handle["num_small_baseline_frames"][()]
    assert np.isnan(sigma[1]) and sigma[0] == pytest.approx(0.02, rel=0.2) and list(small) == [0, 0, 0]
    legacy = {"input_file": input_file, "output_file": str(tmp_path / "dff_legacy.h5"), "movie_frame_rate_hz": 30.0,
              "method": "allen_legacy", "median_kernel_long": 301, "median_kernel_short": 31}
    code, out, err = run_module(dff, legacy, tmp_path, capsys)
    assert code == 0, err
    assert out["method"] == "allen_legacy" and out["invalid_roi_ids"] == ["22"]
    assert out["parameters"]["median_kernel_long"] == 301 and out["parameters"]["median_kernel_short"] == 31
    with h5py.File(out["output_file"], "r") as handle:
        legacy_dff = handle["data"][()]
    # a flat trace around F0 = 500 with 10 a.u. noise: dF/F is centred on 0 with a noise sigma of 10/500
    assert np.nanmedian(legacy_dff[[0, 2]]) == pytest.approx(0.0, abs=0.005)
    assert np.std(legacy_dff[[0, 2]]) == pytest.approx(0.02, rel=0.2)


@pytest.mark.parametrize(
    "overrides, code, message",
    [
        ({"movie_frame_rate_hz": None}, 2, "movie_frame_rate_hz: Input should be a valid number"),
        ({"movie_frame_rate_hz": 0}, 2, "movie_frame_rate_hz: Input should be greater than 0"),
        ({"method": "allen_legacy", "median_kernel_long": 300, "long_baseline_filter_s": None}, 1, "median_kernel_long=300 frames is invalid: a median kernel must be positive and odd"),
        ({"method": "maximin", "median_kernel_long": 301}, 1, "does not take median_kernel_long"),
        ({"input_dataset": "data"}, 1, "dataset 'data' is missing"),
        ({"long_baseline_filter_s": None}, 1, "18001 frames is not shorter than the traces (900 frames)"),
    ],
)
def test_dff_module_bad_input(tmp_path, capsys, overrides, code, message):
    input_file = write_trace_file(tmp_path / "npc.h5", np.ones((2, 900)), [1, 2], dataset="FC")
    inputs = {"input_file": input_file, "output_file": str(tmp_path / "dff.h5"), "movie_frame_rate_hz": 30.0,
              "long_baseline_filter_s": 10}
    inputs.update(overrides)
    got, out, err = run_module(dff, inputs, tmp_path, capsys)
    assert got == code and out is None
    assert message in err and "Traceback" not in err
    if code == 1:
        assert input_file in err
    assert not (tmp_path / "dff.h5").exists()


def test_dff_module_missing_frame_rate(tmp_path, capsys):
    input_file = write_trace_file(tmp_path / "npc.h5", np.ones((2, 900)), [1, 2], dataset="FC")
    code, _, err = run_module(dff, {"input_file": input_file, "output_file": str(tmp_path / "o.h5")}, tmp_path, capsys)
    assert code == 2 and "movie_frame_rate_hz: Field required" in err


def test_dff_module_runs_as_a_script(tmp_path):
    input_file = write_trace_file(tmp_path / "npc.h5", 400 + np.arange(1800.0).reshape(2, 900) % 7, [1, 2], dataset="FC")
    in_json, out_json = tmp_path / "in.json", tmp_path / "out.json"
    in_json.write_text(json.dumps({"input_file": input_file, "output_file": str(tmp_path / "dff.h5"),
                                   "movie_frame_rate_hz": 30.0, "long_baseline_filter_s": 10}))
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-m", "release_platform.modules.dff", "--input_json", str(in_json), "--output_json", str(out_json)],
        cwd=root, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(out_json.read_text())["output_file"] == str(tmp_path / "dff.h5")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"input_file": input_file, "output_file": str(tmp_path / "x.h5")}))
    done = subprocess.run(
        [sys.executable, "-m", "release_platform.modules.dff", "--input_json", str(bad), "--output_json", str(out_json)],
        cwd=root, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2 and "movie_frame_rate_hz: Field required" in done.stderr
