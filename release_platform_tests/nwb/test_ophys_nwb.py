"""Behavior-ophys NWB writer and readers on the demo sessions (processed by the same stage modules the assets run)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from data_fixtures.spec import corrupt_file
from release_platform.errors import InputError
from release_platform.inputs import Roi, resolve_session
from release_platform.lims import LimsClient
from release_platform.modules import demixing, dff, neuropil_correction, trace_extraction
from release_platform.modules import write_ophys_nwb as module
from release_platform.nwb import behavior as B
from release_platform.nwb import ophys as O
from release_platform.nwb import readers as R
from release_platform.nwb.config import CodecUnavailableError, codec_available
from release_platform.nwb.inspection import inspect_nwb
from release_platform.nwb.protocol import NwbWriteError, read_provenance
from release_platform.ophys.dff import fit_long_window
from release_platform.ophys.io import read_traces, read_vector, write_traces
from release_platform_tests.nwb.raw_tables import assert_matches_raw_csv

BLOCKING = ("ERROR", "PYNWB_VALIDATION", "CRITICAL", "BEST_PRACTICE_VIOLATION")


def _roi_records(plane, labels=None):
    return [
        {"id": r.id, "x": r.x, "y": r.y, "width": r.width, "height": r.height, "mask": r.mask, "valid": r.valid,
         "exclusion_labels": sorted(set(r.exclusion_labels) | set((labels or {}).get(str(r.id), [])))}
        for r in plane.rois
    ]


def process_plane(plane, out: Path) -> O.PlaneOutputs:
    """The trace stages of one plane, as the ophys assets run them; what they produced (PlaneOutputs)."""
    out.mkdir(parents=True, exist_ok=True)
    ext = trace_extraction.run(trace_extraction.Inputs(motion_corrected_stack=plane.movie_path, motion_border=plane.motion_border,
                                                       storage_directory=out, rois=_roi_records(plane)))
    labels = {str(k): list(v) for k, v in ext["exclusion_labels_by_roi"].items()}
    dem = demixing.run(demixing.Inputs(movie_h5=plane.movie_path, traces_h5=ext["roi_trace_file"],
                                       roi_masks=_roi_records(plane, labels), output_file=out / "demixed_traces.h5"))
    npc = neuropil_correction.run(neuropil_correction.Inputs(roi_trace_file=dem["output_file"],
                                                             neuropil_trace_file=ext["neuropil_trace_file"], storage_directory=out))
    window_s, _ = fit_long_window("allen_inactive", plane.frame_rate_hz, plane.movie_shape[0], None)
    d = dff.run(dff.Inputs(input_file=npc["neuropil_correction_trace_file"], output_file=out / "dff.h5",
                           movie_frame_rate_hz=plane.frame_rate_hz, long_baseline_filter_s=window_s))
    unusable = {str(i) for i in dem["excluded_roi_ids"]} | {str(i) for i in dem["negative_baseline_roi_ids"]}
    return O.PlaneOutputs(
        roi_traces=str(ext["roi_trace_file"]), neuropil_traces=str(ext["neuropil_trace_file"]),
        demixed_traces=str(dem["output_file"]), neuropil_corrected_traces=str(npc["neuropil_correction_trace_file"]),
        dff_traces=str(d["output_file"]), extraction_labels=labels,
        demix_excluded_roi_ids=dem["excluded_roi_ids"], negative_baseline_roi_ids=dem["negative_baseline_roi_ids"],
        dff_invalid_roi_ids=d["invalid_roi_ids"], dff_method=d["method"], dff_parameters=d["parameters"],
        dff_valid_roi_ids=[str(r.id) for r in plane.rois if r.valid and str(r.id) not in unusable],
    )


@pytest.fixture(scope="module")
def demo(seeded_demo, tmp_path_factory):
    """Inputs of every demo plane (1101 with linked behavior 3002; mesoscope 1201, 1202) and the written files."""
    root = tmp_path_factory.mktemp("ophys_nwb")
    client = LimsClient(f"sqlite:///{seeded_demo / 'lims.sqlite'}")
    planes = {}
    for sid in (1001, 1002):
        session = resolve_session(client, "ophys_session", sid)
        bid = client.linked_behavior_session("ophys_session", sid)
        behavior = resolve_session(client, "behavior_session", bid) if bid else None
        for plane in session.planes:
            records = process_plane(plane, root / "traces" / str(plane.ophys_experiment_id))
            inputs = O.OphysNwbInputs.from_session(session, plane, output_dir=root / "nwb" / str(sid), behavior_session=behavior, outputs=records)
            planes[plane.ophys_experiment_id] = (inputs, O.write_behavior_ophys_nwb(inputs), records)
    client.dispose()
    return planes


def _datasets(path):
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) and
                     h5py.check_dtype(ref=obj.dtype) is None else None)
    return out


def _same_datasets(a, b):
    da, db = _datasets(a), _datasets(b)
    assert da.keys() == db.keys()
    for k in da:
        va, vb = np.asarray(da[k]), np.asarray(db[k])
        assert va.shape == vb.shape and np.array_equal(va, vb, equal_nan=va.dtype.kind == "f"), k


def test_files_are_named_per_plane_and_pass_the_dandi_inspector(demo):
    assert sorted(demo) == [1101, 1201, 1202]
    for pid, (inputs, out, _) in demo.items():
        assert Path(out.output_path).name == f"behavior_ophys_experiment_{pid}.nwb"
        assert not list(Path(out.output_path).parent.glob("*.inprogress")) and not list(Path(out.output_path).parent.glob("*.error"))
        report = inspect_nwb(out.output_path, config="dandi")
        assert report.at(*BLOCKING) == [], report.at(*BLOCKING)
        assert report.counts["CRITICAL"] == report.counts["BEST_PRACTICE_VIOLATION"] == 0


def test_every_trace_set_reads_back_equal_to_the_pipeline_files(demo):
    for pid, (inputs, out, _) in demo.items():
        for name, (dataset, _) in O.TRACE_SETS.items():
            src = read_traces(getattr(inputs.traces, name), dataset=dataset)
            got = R.read_nwb_traces(out.output_path, name)
            assert got.roi_ids == src.roi_ids == [str(r.id) for r in inputs.rois]
            np.testing.assert_array_equal(got.traces, src.traces)  # NaN rows included
        with h5py.File(inputs.ophys_timestamps_path, "r") as f:
            np.testing.assert_allclose(R.read_ophys_timestamps(out.output_path), f["ophys_timestamps"][()], rtol=0, atol=1e-9)
        with R.open_nwb_traces(out.output_path, "dff") as lazy:
            assert lazy.data.shape == (inputs.movie_shape[0], len(inputs.rois))  # time first
            np.testing.assert_array_equal(lazy.traces(rois=[1], frames=slice(10, 20)),
                                          read_traces(inputs.traces.dff).traces[1:2, 10:20])
            assert inputs.dff_method in lazy.description and "long_filter_frames" in lazy.description


def test_roi_table_and_per_roi_columns(demo):
    inputs, out, records = demo[1101]
    assert R.read_rois(out.output_path) == inputs.rois
    table = R.read_roi_table(out.output_path)
    assert list(table.index) == [r.id for r in inputs.rois]
    for col, dataset, path in (("r", "r", inputs.traces.neuropil_corrected), ("RMSE", "RMSE", inputs.traces.neuropil_corrected),
                               ("sigma_dff", "sigma_dff", inputs.traces.dff)):
        np.testing.assert_array_equal(table[col].to_numpy(), read_vector(path, dataset))
    with h5py.File(inputs.traces.neuropil_corrected, "r") as f:
        assert list(table["neuropil_correction_status"]) == [s.decode() for s in f["status"][()]]
    valid = set(records.dff_valid_roi_ids)
    assert [str(i) for i in table.index[table["valid_roi"]]] == [str(r.id) for r in inputs.rois if str(r.id) in valid]
    # an ROI excluded by the pipeline carries a label saying why
    for roi in inputs.rois:
        assert roi.valid or roi.exclusion_labels
    masks = R.read_roi_table(out.output_path, image_masks=True)["image_mask"]
    assert np.asarray(masks.iloc[0]).shape == inputs.movie_shape[1:]
    with h5py.File(out.output_path, "r") as f:  # r / RMSE are columns, not series with fake timestamps
        assert "r" not in f["processing/ophys/fluorescence"] and "RMSE" not in f["processing/ophys/fluorescence"]


def test_images_motion_stimulus_running_and_metadata(demo):
    inputs, out, _ = demo[1101]
    images = R.read_projections(out.output_path)
    for key, path in (("max_projection", inputs.max_projection_path), ("average_projection", inputs.average_projection_path)):
        with h5py.File(path, "r") as f:
            np.testing.assert_array_equal(images[key], f["data"][()])
            assert images[key].dtype == f["data"].dtype
    # the readers against the raw source tables, read with pandas alone
    offsets = R.read_motion_offsets(out.output_path)
    assert_matches_raw_csv(offsets, inputs.motion_offsets_path)
    assert list(offsets["frame_index"]) == list(range(inputs.movie_shape[0]))
    stim = pd.read_csv(inputs.stimulus_table_path)
    assert_matches_raw_csv(R.read_stimulus_presentations(out.output_path), inputs.stimulus_table_path)
    with h5py.File(out.output_path, "r") as f:
        assert sorted(k for k in f["intervals"] if k.endswith("_presentations")) == sorted(
            f"{n}_presentations" for n in stim["stimulus_name"].unique())
        assert "orientation" not in f["intervals/natural_scenes_presentations"]  # all-missing for that stimulus
    assert_matches_raw_csv(R.read_running_speed(out.output_path), inputs.running_speed_path, atol=1e-9)
    plane = R.read_imaging_plane(out.output_path)
    assert plane["location"] == "VISp" and plane["indicator"] == "GCaMP6f" and plane["device"] == "CAM2P.4"
    assert plane["imaging_rate"] == inputs.frame_rate_hz and plane["excitation_lambda"] == 910.0 and plane["emission_lambda"] == 520.0
    meta = R.read_session_metadata(out.output_path)
    assert meta["ophys_experiment_id"] == 1101 and meta["ophys_session_id"] == 1001 and meta["behavior_session_id"] == 3002
    assert meta["session_id"] == "1001" and meta["institution"] == "Allen Institute"
    assert meta["subject"]["subject_id"] == inputs.subject.subject_id and meta["subject"]["sex"] == "F"
    assert meta["subject"]["age"] == f"P{(inputs.session_start_time.replace(tzinfo=None) - inputs.subject.date_of_birth).days}D"
    assert meta["subject"]["genotype"] == inputs.subject.full_genotype and meta["subject"]["species"] == "Mus musculus"
    prov = read_provenance(out.output_path)
    assert prov["parameters"]["dff"] == {"method": inputs.dff_method, "parameters": json.loads(json.dumps(inputs.dff_parameters))}
    assert {"dff_traces", "roi_traces", "ophys_timestamps", "trials"} <= set(prov["inputs"])
    assert all(len(v["sha256"]) == 64 for v in prov["inputs"].values())
    assert prov["version"] and "git_revision" in prov


def test_linked_behavior_content_only_when_linked(demo):
    inputs, out, _ = demo[1101]
    beh = inputs.behavior
    assert beh is not None and beh.behavior_session_id == 3002
    pd.testing.assert_frame_equal(R.read_trials(out.output_path), B.load_trials(beh.trials_path, entity="t"))
    pd.testing.assert_frame_equal(R.read_licks(out.output_path), B.load_licks(beh.licks_path, entity="t"))
    pd.testing.assert_frame_equal(R.read_rewards(out.output_path), B.load_rewards(beh.rewards_path, entity="t"))
    for pid in (1201, 1202):
        inputs, out, _ = demo[pid]
        assert inputs.behavior is None and R.read_trials(out.output_path).empty and R.read_licks(out.output_path).empty
        assert R.read_session_metadata(out.output_path)["imaging_plane_group"] == 0
        assert R.read_imaging_plane(out.output_path)["device"] == "MESO.1"


def test_two_writes_give_identical_dataset_contents(demo, tmp_path):
    inputs, out, _ = demo[1201]
    again = O.write_behavior_ophys_nwb(inputs.model_copy(update={"output_dir": os.fspath(tmp_path)}))
    assert again.identifier == out.identifier
    _same_datasets(out.output_path, again.output_path)


def test_streamed_and_in_memory_traces_give_the_same_file(demo, tmp_path):
    inputs, out, _ = demo[1202]
    nwb = O.build_behavior_ophys_nwbfile(inputs)
    series = nwb.processing["ophys"]["dff"].roi_response_series["dff"]
    assert isinstance(series.data, O.TraceIterator)
    for name in ("roi", "neuropil", "demixed", "neuropil_corrected"):
        assert isinstance(nwb.processing["ophys"]["fluorescence"].roi_response_series[name].data, O.TraceIterator)
        nwb.processing["ophys"]["fluorescence"].roi_response_series[name].data.close()
    series.data.close()
    in_memory = O.write_behavior_ophys_nwb(inputs.model_copy(update={"output_dir": os.fspath(tmp_path), "stream_traces": False}))
    _same_datasets(out.output_path, in_memory.output_path)


def _copy_traces(inputs, tmp_path) -> O.OphysNwbInputs:
    files = {}
    for name in O.TRACE_SETS:
        dst = tmp_path / "traces" / f"{name}.h5"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(getattr(inputs.traces, name), dst)
        files[name] = os.fspath(dst)
    return inputs.model_copy(update={"traces": O.TraceFiles(**files), "output_dir": os.fspath(tmp_path / "out")})


def test_a_plane_whose_rois_are_all_usable(demo, tmp_path):
    inputs, _, _ = demo[1202]
    clean = inputs.model_copy(update={"output_dir": os.fspath(tmp_path),
                                      "rois": [r.model_copy(update={"valid": True, "exclusion_labels": []}) for r in inputs.rois]})
    out = O.write_behavior_ophys_nwb(clean)
    assert R.read_rois(out.output_path) == clean.rois
    assert R.read_roi_table(out.output_path)["exclusion_labels"].map(len).sum() == 0


def test_trace_rows_in_another_order_are_reordered_to_the_roi_table(demo, tmp_path):
    inputs, _, _ = demo[1201]
    moved = _copy_traces(inputs, tmp_path)
    src = read_traces(inputs.traces.dff)
    order = np.arange(len(src.roi_ids))[::-1]
    with h5py.File(inputs.traces.dff, "r") as f:
        extra = {k: f[k][()][order] for k in ("sigma_dff", "num_small_baseline_frames")}
    write_traces(moved.traces.dff, src.traces[order], [src.roi_ids[i] for i in order], extra=extra)
    out = O.write_behavior_ophys_nwb(moved)
    got = R.read_nwb_traces(out.output_path, "dff")
    assert got.roi_ids == src.roi_ids
    np.testing.assert_array_equal(got.traces, src.traces)
    np.testing.assert_array_equal(R.read_roi_table(out.output_path)["sigma_dff"].to_numpy(), read_vector(inputs.traces.dff, "sigma_dff"))


def test_corrupt_trace_file_leaves_only_the_error_file(demo, tmp_path):
    inputs, _, _ = demo[1101]
    moved = _copy_traces(inputs, tmp_path)
    corrupt_file(moved.traces.demixed)
    with pytest.raises(NwbWriteError) as exc:
        O.write_behavior_ophys_nwb(moved)
    message = str(exc.value)
    assert "ophys_session 1001 (ophys_experiment 1101)" in message and moved.traces.demixed in message
    assert "corrupt" in message
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["behavior_ophys_experiment_1101.nwb.error"]


def test_a_previous_good_file_survives_a_failed_rewrite(demo, tmp_path):
    inputs, _, _ = demo[1202]
    moved = _copy_traces(inputs, tmp_path)
    good = O.write_behavior_ophys_nwb(moved)
    before = Path(good.output_path).read_bytes()
    src = read_traces(moved.traces.neuropil)
    write_traces(moved.traces.neuropil, src.traces[:, :-5], src.roi_ids)  # frames lost
    with pytest.raises(NwbWriteError, match=r"neuropil traces: \d+ frames but the session has \d+ ophys timestamps"):
        O.write_behavior_ophys_nwb(moved)
    assert Path(good.output_path).read_bytes() == before
    assert Path(good.output_path + ".error").exists()


def test_roi_ids_that_disagree_are_named(demo, tmp_path):
    inputs, _, _ = demo[1202]
    moved = _copy_traces(inputs, tmp_path)
    src = read_traces(moved.traces.roi)
    write_traces(moved.traces.roi, src.traces, src.roi_ids[:-1] + ["999"])
    with pytest.raises(NwbWriteError, match=rf"roi traces: ROI ids disagree.*{src.roi_ids[-1]}.*999"):
        O.write_behavior_ophys_nwb(moved)


def test_irregular_frame_times_are_stored_once_and_shared(demo, tmp_path):
    inputs, _, _ = demo[1202]
    with h5py.File(inputs.ophys_timestamps_path, "r") as f:
        ts = f["ophys_timestamps"][()]
    ts = ts + np.where(np.arange(len(ts)) % 7 == 3, 1e-4, 0.0)
    path = tmp_path / "timestamps.h5"
    with h5py.File(path, "w") as f:
        f["ophys_timestamps"] = ts
    out = O.write_behavior_ophys_nwb(inputs.model_copy(update={"ophys_timestamps_path": os.fspath(path),
                                                              "output_dir": os.fspath(tmp_path / "out")}))
    np.testing.assert_array_equal(R.read_ophys_timestamps(out.output_path), ts)
    with h5py.File(out.output_path, "r") as f:
        owners = [k for k in ("roi", "neuropil", "demixed", "neuropil_corrected")
                  if isinstance(f["processing/ophys/fluorescence"][k].get("timestamps", getlink=True), h5py.HardLink)]
        assert owners == ["roi"]  # one copy, the others link to it
        assert f["processing/ophys/dff/dff/timestamps"].shape == ts.shape
    assert inspect_nwb(out.output_path).at(*BLOCKING) == []


def test_fast_tier_uses_lzf_and_the_internal_tier_needs_hdf5plugin(demo, tmp_path):
    inputs, out, _ = demo[1202]
    fast = O.write_behavior_ophys_nwb(inputs.model_copy(update={"output_dir": os.fspath(tmp_path), "compression": "fast"}))
    with h5py.File(fast.output_path, "r") as f, h5py.File(out.output_path, "r") as g:
        assert f["processing/ophys/dff/dff/data"].compression == "lzf"
        assert g["processing/ophys/dff/dff/data"].compression == "gzip" and g["processing/ophys/dff/dff/data"].shuffle
        np.testing.assert_array_equal(f["processing/ophys/dff/dff/data"][()], g["processing/ophys/dff/dff/data"][()])
    internal = inputs.model_copy(update={"output_dir": os.fspath(tmp_path / "x"), "compression": "internal"})
    if not codec_available("blosc_zstd"):
        with pytest.raises(CodecUnavailableError, match="hdf5plugin"):
            O.write_behavior_ophys_nwb(internal)
        assert not (tmp_path / "x").exists() or not list((tmp_path / "x").iterdir())
    else:
        written = O.write_behavior_ophys_nwb(internal)
        np.testing.assert_array_equal(R.read_nwb_traces(written.output_path, "dff").traces, read_traces(inputs.traces.dff).traces)


def test_pipeline_verdicts_are_merged_into_the_roi_table():
    class Plane:
        rois = [Roi(id=i, x=0, y=0, width=1, height=1, mask=[[True]], valid=i != 3, exclusion_labels=["union"] if i == 3 else [])
                for i in range(1, 6)]

    outputs = O.PlaneOutputs(roi_traces="r", neuropil_traces="n", demixed_traces="d", neuropil_corrected_traces="c",
                             dff_traces="f", extraction_labels={2: ["motion_border"]}, demix_excluded_roi_ids=[2],
                             negative_baseline_roi_ids=["4"], dff_valid_roi_ids=["1", 5], dff_invalid_roi_ids=["4"])
    rois = O.plane_rois(Plane, outputs)
    assert [(r.id, r.valid, r.exclusion_labels) for r in rois] == [
        (1, True, []), (2, False, ["demix_excluded", "motion_border"]), (3, False, ["union"]),
        (4, False, ["dff_invalid", "negative_baseline"]), (5, True, [])]
    assert O.indicator_for(["Ai148(TIT2L-GC6f-ICL-tTA2)"]) == "GCaMP6f" and O.indicator_for(["Ai94"]) == "GCaMP6s"


def test_module_writes_output_json_with_inspector_summary(demo, tmp_path):
    inputs, _, _ = demo[1202]
    raw = json.loads(inputs.model_dump_json())
    raw["output_dir"] = os.fspath(tmp_path / "out")
    (tmp_path / "in.json").write_text(json.dumps(raw))
    args = ["--input_json", os.fspath(tmp_path / "in.json"), "--output_json", os.fspath(tmp_path / "out.json")]
    assert module.main_for(module.Inputs, module.run, "test", args) == 0
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["output_path"] == os.fspath(tmp_path / "out" / "behavior_ophys_experiment_1202.nwb")
    assert out["inspector"]["passed"] is True and out["inspector"]["config"] == "dandi"
    assert out["inspector"]["counts"]["CRITICAL"] == 0 and out["inspector"]["counts"]["BEST_PRACTICE_VIOLATION"] == 0
    raw["movie_path"] = "x"  # unknown key
    (tmp_path / "bad.json").write_text(json.dumps(raw))
    assert module.main_for(module.Inputs, module.run, "test", ["--input_json", os.fspath(tmp_path / "bad.json"),
                                                              "--output_json", os.fspath(tmp_path / "o2.json")]) == 2
    raw.pop("movie_path")
    raw["max_projection_path"] = os.fspath(tmp_path / "missing.h5")
    (tmp_path / "missing.json").write_text(json.dumps(raw))
    assert module.main_for(module.Inputs, module.run, "test", ["--input_json", os.fspath(tmp_path / "missing.json"),
                                                              "--output_json", os.fspath(tmp_path / "o3.json")]) == 1
    assert not (tmp_path / "o3.json").exists()


def test_inputs_name_what_lims_lacks(seeded_demo):
    client = LimsClient(f"sqlite:///{seeded_demo / 'lims.sqlite'}")
    session = resolve_session(client, "ophys_session", 1001)
    client.dispose()
    plane = session.planes[0]
    outputs = O.PlaneOutputs(**{k: "x" for k in ("roi_traces", "neuropil_traces", "demixed_traces", "neuropil_corrected_traces", "dff_traces")})
    no_ts = session.model_copy(update={"files": {k: v for k, v in session.files.items() if k != "OphysTimestamps"}})
    with pytest.raises(InputError, match=r"ophys_session 1001 \(ophys_experiment 1101\): no OphysTimestamps file registered"):
        O.OphysNwbInputs.from_session(no_ts, plane, output_dir="/tmp/x", outputs=outputs)
