"""``compat: allensdk``: every name AllenSDK's Visual Behavior readers use is in the written files, with the right type,
shape and values, read back with plain PyNWB in a fresh process from the namespaces cached in the file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from release_platform.errors import InputError
from release_platform.inputs import resolve_session
from release_platform.lims import LimsClient
from release_platform.nwb import allen_compat as A
from release_platform.nwb import behavior as B
from release_platform.nwb import ophys as O
from release_platform.nwb.inspection import inspect_nwb
from release_platform.nwb.protocol import NwbWriteError
from release_platform_tests.nwb.test_ophys_nwb import BLOCKING, process_plane

# Runs in a fresh interpreter that never imports release_platform: the types must come from the file's cache.
READER = r'''
import json, sys
import numpy as np
from pynwb import NWBHDF5IO

def ndt(obj):
    return getattr(obj, "neurodata_type", type(obj).__name__)

def read(path):
  out = {}
  with NWBHDF5IO(path, "r", load_namespaces=True) as io:
      f = io.read()
      out["identifier"] = f.identifier
      out["namespaces"] = sorted(io.manager.namespace_catalog.namespaces)
      s = f.subject
      out["subject"] = {"type": ndt(s), "driver_line": None if s.driver_line is None else list(s.driver_line),
                        "reporter_line": s.reporter_line, "cre_line": s.cre_line, "age_in_days": int(s.age_in_days),
                        "age": s.age, "genotype": s.genotype, "subject_id": s.subject_id, "sex": s.sex}
      meta = f.lab_meta_data["metadata"]
      out["metadata"] = {"type": ndt(meta), **{k: (v.item() if hasattr(v, "item") else v) for k, v in meta.fields.items()}}
      tp = f.lab_meta_data["task_parameters"]
      out["task_parameters"] = {"type": ndt(tp), **{k: (np.asarray(v).tolist() if hasattr(v, "__len__") and not isinstance(v, str)
                                                        else (v.item() if hasattr(v, "item") else v)) for k, v in tp.fields.items()}}
      st = f.processing["stimulus"]["timestamps"]
      out["stimulus_timestamps"] = [len(st.timestamps[:]), float(st.timestamps[1] - st.timestamps[0])]
      run = f.processing["running"]
      out["running"] = {n: [len(run[n].timestamps[:]), np.asarray(run[n].data[:]).tolist()[:5]] for n in ("speed", "speed_unfiltered", "dx")}
      out["running"]["running_speed"] = np.asarray(run["running_speed"].data[:5]).tolist()
      out["acquisition"] = {n: len(f.acquisition[n].data[:]) for n in ("v_sig", "v_in")}
      out["presentations"] = {k: list(v.colnames) for k, v in f.intervals.items() if k.endswith("_presentations")}
      out["trials"] = len(f.trials)
      if "ophys" in f.processing:
          op = f.processing["ophys"]
          def series(container, name="traces"):
              x = op[container][name]
              return {"type": ndt(x), "shape": list(x.data.shape), "roi_ids": x.rois.table.id[:].tolist(),
                      "has_timestamps": x.timestamps is not None}
          out["ophys"] = {c: series(c) for c in ("dff", "corrected_fluorescence", "demixed_trace", "neuropil_trace")}
          out["ophys"]["dff_timestamps"] = len(op["dff"]["traces"].timestamps[:])
          out["ophys"]["same_as_ours"] = {
              c: bool(np.array_equal(op[c]["traces"].data[:], ours, equal_nan=True))
              for c, ours in (("dff", op["dff"]["dff"].data[:]),
                              ("corrected_fluorescence", op["fluorescence"]["neuropil_corrected"].data[:]),
                              ("demixed_trace", op["fluorescence"]["demixed"].data[:]),
                              ("neuropil_trace", op["fluorescence"]["neuropil"].data[:]))}
          table = op["image_segmentation"]["cell_specimen_table"]
          cf = op["corrected_fluorescence"]
          out["ophys"]["r_equal"] = bool(np.array_equal(cf["r"].data[:], table["r"].data[:], equal_nan=True))
          out["ophys"]["RMSE_equal"] = bool(np.array_equal(cf["RMSE"].data[:], table["RMSE"].data[:], equal_nan=True))
          ev = op["event_detection"]
          out["ophys"]["event_detection"] = {"type": ndt(ev), "data": np.asarray(ev.data[:]).tolist(), "lambdas": ev.lambdas[:].tolist(),
                                             "noise_stds": ev.noise_stds[:].tolist(), "roi_ids": ev.rois.to_dataframe().index.tolist(),
                                             "n_samples": ev.num_samples}
          images = op["images"]
          out["images"] = {n: list(np.asarray(images[n].data).shape) for n in images.images}
          seg = np.asarray(images["segmentation_mask_image"].data)
          masks = table["image_mask"].data[:]
          out["images"]["segmentation_matches_masks"] = bool(np.array_equal(seg > 0, masks.any(axis=0)))
          out["invalid_times"] = None if f.invalid_times is None else f.invalid_times.to_dataframe()[["start_time", "stop_time"]].values.tolist()
  return out

print(json.dumps({p: read(p) for p in sys.argv[1:]}))
'''


def read_fresh(*paths) -> dict:
    """What plain PyNWB reads from each file (one fresh interpreter for all)."""
    result = subprocess.run([sys.executable, "-c", READER, *map(str, paths)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def write_events(path: Path, roi_ids, n_frames: int, seed: int = 7):
    """A synthetic events record (known values) in the events HDF5 layout."""
    rng = np.random.default_rng(seed)
    events = np.where(rng.random((len(roi_ids), n_frames)) < 0.02, rng.random((len(roi_ids), n_frames)), 0.0)
    record = dict(events=events, lambdas=rng.random(len(roi_ids)), noise_stds=rng.random(len(roi_ids)))
    with h5py.File(path, "w") as fh:
        for k, v in record.items():
            fh[k] = v
        fh["roi_names"] = np.array([str(i) for i in roi_ids], dtype="S")
    return record


@pytest.fixture(scope="module")
def compat(seeded_demo, tmp_path_factory):
    root = tmp_path_factory.mktemp("allen_compat")
    client = LimsClient(f"sqlite:///{seeded_demo / 'lims.sqlite'}")
    bsession = resolve_session(client, "behavior_session", 3002)
    binputs = B.BehaviorNwbInputs.from_session(bsession, output_dir=root / "b", compat="allensdk")
    bout = B.write_behavior_nwb(binputs)
    session = resolve_session(client, "ophys_session", 1001)
    plane = session.planes[0]
    records = process_plane(plane, root / "traces")
    # events for every other ROI, in reverse order: the writer maps them to their table rows
    ids = [r.id for r in plane.rois][::-2]
    events = write_events(root / "events.h5", ids, plane.movie_shape[0])
    oinputs = O.OphysNwbInputs.from_session(
        session, plane, output_dir=root / "o", behavior_session=bsession, compat="allensdk", outputs=records,
        allen={"task_session_type": bsession.session_type, "events_path": str(root / "events.h5"), "ophys_container_id": 77,
               "invalid_times": [{"start_time": 1.0, "stop_time": 2.5, "tags": ["motion"]}]})
    oout = O.write_behavior_ophys_nwb(oinputs)
    client.dispose()
    fresh = read_fresh(bout.output_path, oout.output_path)
    return dict(fresh=fresh, root=root, binputs=binputs, bout=bout, oinputs=oinputs, oout=oout, events=events, event_ids=ids, plane=plane,
                records=records, bsession=bsession)


def test_compat_files_pass_the_dandi_inspector(compat):
    for out in (compat["bout"], compat["oout"]):
        report = inspect_nwb(out.output_path, config="dandi")
        assert report.at(*BLOCKING) == []
        kept = [m for m in report.messages if m["check_function_name"] == "check_regular_timestamps"]
        assert kept and all("AllenSDK reads them" in m["message"] for m in kept)


def test_behavior_file_carries_every_name_allensdk_reads(compat):
    got = compat["fresh"][compat["bout"].output_path]
    inputs = compat["binputs"]
    assert got["identifier"] == "3002" and "ndx-release-platform" in got["namespaces"]
    sub = got["subject"]
    assert sub["type"] == "BehaviorSubject"
    assert sub["driver_line"] == list(inputs.subject.driver_line) and sub["reporter_line"] == ", ".join(inputs.subject.reporter_line)
    assert sub["genotype"] == inputs.subject.full_genotype and sub["age"] == f"P{sub['age_in_days']}D"
    assert sub["cre_line"] == A.cre_line_of(inputs.subject.driver_line, inputs.subject.full_genotype)
    meta = got["metadata"]
    assert meta["type"] == "BehaviorMetadata" and meta["behavior_session_id"] == 3002
    assert meta["session_type"] == inputs.session_type and meta["stimulus_frame_rate"] == 60.0
    assert meta["equipment_name"] == (inputs.equipment_name or "") and meta["project_code"] == (inputs.project_code or "")
    tp = got["task_parameters"]
    assert tp["type"] == "BehaviorTaskParameters"
    assert tp["response_window_sec"] == [0.15, 0.75] and tp["session_type"] == inputs.session_type
    # the demo's flashes: 250 ms on, 500 ms grey
    assert tp["stimulus_duration_sec"] == pytest.approx(0.25) and tp["blank_duration_sec"] == pytest.approx([0.5, 0.5])
    n_frames, dt = got["stimulus_timestamps"]
    assert n_frames == tp["n_stimulus_frames"] and dt == pytest.approx(1 / 60)
    run = got["running"]
    assert run["speed"][1] == run["speed_unfiltered"][1] == run["running_speed"]
    assert run["speed"][0] == run["dx"][0] == got["acquisition"]["v_sig"] == got["acquisition"]["v_in"]
    assert np.allclose(run["dx"][1][1:], np.asarray(run["speed"][1][1:]) / 60)
    assert all("image_name" in cols and "omitted" in cols for cols in got["presentations"].values())
    assert got["trials"] > 0


def test_ophys_file_carries_every_name_allensdk_reads(compat):
    got = compat["fresh"][compat["oout"].output_path]
    plane, inputs = compat["plane"], compat["oinputs"]
    n_rois, n_frames = len(plane.rois), plane.movie_shape[0]
    assert got["identifier"] == str(plane.ophys_experiment_id)
    meta = got["metadata"]
    assert meta["type"] == "OphysBehaviorMetadata"
    assert (meta["ophys_experiment_id"], meta["ophys_session_id"], meta["ophys_container_id"]) == (plane.ophys_experiment_id, 1001, 77)
    assert meta["behavior_session_id"] == 3002 and meta["session_type"] == inputs.session_type
    assert (meta["field_of_view_height"], meta["field_of_view_width"]) == tuple(plane.movie_shape[1:])
    assert meta["imaging_depth"] == (plane.imaging_depth_um if plane.imaging_depth_um is not None else -1)
    assert meta["targeted_structure"] == inputs.targeted_structure
    assert got["task_parameters"]["session_type"] == compat["bsession"].session_type
    ophys = got["ophys"]
    for name in ("dff", "corrected_fluorescence", "demixed_trace", "neuropil_trace"):
        assert ophys[name]["type"] == "RoiResponseSeries" and ophys[name]["shape"] == [n_frames, n_rois]
        assert ophys[name]["roi_ids"] == [r.id for r in inputs.rois]
        assert ophys["same_as_ours"][name]
    assert ophys["dff"]["has_timestamps"] and ophys["dff_timestamps"] == n_frames
    assert ophys["r_equal"] and ophys["RMSE_equal"]
    ev = ophys["event_detection"]
    assert ev["type"] == "OphysEventDetection" and ev["roi_ids"] == compat["event_ids"] and ev["n_samples"] == n_frames
    assert np.array_equal(np.asarray(ev["data"]), compat["events"]["events"].T)
    assert np.allclose(ev["lambdas"], compat["events"]["lambdas"]) and np.allclose(ev["noise_stds"], compat["events"]["noise_stds"])
    images = got["images"]
    assert images["average_image"] == images["max_projection"] == images["segmentation_mask_image"] == list(plane.movie_shape[1:])
    assert images["segmentation_matches_masks"]
    assert got["invalid_times"] == [[1.0, 2.5]]
    assert got["trials"] > 0 and got["acquisition"]["v_sig"] == got["running"]["speed"][0]


def test_events_naming_unknown_rois_or_frames_fail_with_the_file_named(compat, tmp_path):
    plane = compat["plane"]
    write_events(tmp_path / "bad.h5", [999999], plane.movie_shape[0])
    inputs = compat["oinputs"].model_copy(update={"output_dir": str(tmp_path),
                                                  "allen": A.AllenOptions(events_path=str(tmp_path / "bad.h5"))})
    with pytest.raises(NwbWriteError, match="not in the ROI table"):
        O.write_behavior_ophys_nwb(inputs)
    write_events(tmp_path / "short.h5", [r.id for r in plane.rois], plane.movie_shape[0] - 1)
    with pytest.raises(NwbWriteError, match="frames but the plane has"):
        O.write_behavior_ophys_nwb(inputs.model_copy(update={"allen": A.AllenOptions(events_path=str(tmp_path / "short.h5"))}))
    with h5py.File(tmp_path / "partial.h5", "w") as fh:
        fh["events"] = np.zeros((1, 3))
    with pytest.raises(InputError, match=r"partial.h5: dataset 'roi_names' is missing"):
        A.load_events(tmp_path / "partial.h5", entity="plane 1")
    assert not (tmp_path / O.behavior_ophys_nwb_path(tmp_path, plane.ophys_experiment_id).name).exists()


def test_off_by_default_and_the_platform_layout_unchanged(compat, tmp_path):
    """Without the mode: the platform identifier and subject, none of the additions; with it: everything ours stays."""
    plain = B.write_behavior_nwb(compat["binputs"].model_copy(update={"compat": "none", "output_dir": str(tmp_path)}))
    with h5py.File(plain.output_path, "r") as fh, h5py.File(compat["bout"].output_path, "r") as fc:
        assert "metadata" not in fh["general"] and "stimulus" not in fh["processing"] and "v_sig" not in fh["acquisition"]
        assert fh["general/subject"].attrs["neurodata_type"] == "Subject"
        assert plain.identifier != "3002" and "ndx-release-platform" in fh["specifications"]

        def names(f):
            out = set()
            f.visit(out.add)
            return {n for n in out if not n.startswith("specifications")}

        assert names(fh) <= names(fc)


def test_task_parameters_from_tables_and_overrides():
    import pandas as pd

    pres = pd.DataFrame({"start_time": [0.0, 0.75, 1.5, 2.25], "stop_time": [0.25, 1.0, 1.75, 2.5],
                         "omitted": [False, True, False, False]})
    rewards = pd.DataFrame({"timestamps": [1.0, 2.0, 3.0], "volume": [0.007, 0.007, 0.005], "auto_rewarded": [False, False, True]})
    p = A.task_parameters(session_type="OPHYS_1_images_B", presentations=pres, rewards=rewards, n_stimulus_frames=300,
                          overrides={"response_window_sec": [0.1, 0.7]})
    assert p["stimulus_duration_sec"] == pytest.approx(0.25) and p["omitted_flash_fraction"] == pytest.approx(0.25)
    # shown flashes start at 0, 1.5, 2.25: gaps 1.25 (around the omitted one) and 0.5 -> median 0.875 s, in whole
    # 60 Hz monitor frames (52.5 rounds to 52)
    assert p["blank_duration_sec"] == pytest.approx([52 / 60, 52 / 60])
    assert p["reward_volume"] == pytest.approx(0.007) and p["auto_reward_volume"] == pytest.approx(0.005)
    assert p["stimulus_name"] == "images_B" and p["stimulus"] == "images" and p["response_window_sec"] == [0.1, 0.7]
    assert A.cre_line_of(["Slc17a7-IRES2-Cre", "Camk2a-tTA"]) == "Slc17a7-IRES2-Cre"
    assert A.cre_line_of([], "Vip-IRES-Cre/wt;Ai148(TIT2L-GC6f-ICL-tTA2)/wt") == "Vip-IRES-Cre"


def _project_frames(behavior_nwb: str, ophys_nwb: str, oeid: int) -> dict:
    import pandas as pd

    from release_platform.metadata import file_id

    b, e = file_id("behavior_nwb", 3002), file_id("behavior_ophys_nwb", oeid)
    return {
        "behavior_session_table": pd.DataFrame({"behavior_session_id": pd.array([3002], dtype="Int64"), "mouse_id": ["m1"],
                                                "file_id": pd.array([b], dtype="Int64"), "file_path": [behavior_nwb]}),
        "ophys_session_table": pd.DataFrame({"ophys_session_id": pd.array([1001], dtype="Int64"), "mouse_id": ["m1"]}),
        "ophys_experiment_table": pd.DataFrame({"ophys_experiment_id": pd.array([oeid], dtype="Int64"),
                                                "ophys_session_id": pd.array([1001], dtype="Int64"), "mouse_id": ["m1"],
                                                "file_id": pd.array([e], dtype="Int64"), "file_path": [ophys_nwb]}),
        "ophys_cells_table": pd.DataFrame({"cell_roi_id": pd.array([1], dtype="Int64"), "ophys_experiment_id": pd.array([oeid], dtype="Int64")}),
        "cell_metrics": pd.DataFrame({"cell_roi_id": pd.array([1], dtype="Int64")}),
    }


def test_visual_behavior_ophys_release_has_the_shape_allensdk_requires(compat, tmp_path):
    from release_platform.release.build import make_release
    from release_platform.release.projects import ALLENSDK_VERSION

    oeid = compat["plane"].ophys_experiment_id
    frames = _project_frames(compat["bout"].output_path, compat["oout"].output_path, oeid)
    roots = [compat["root"]]
    result = make_release(tmp_path / "rel", "visual-behavior-ophys", "1.0.0", frames=frames, source_roots=roots)
    manifest = json.loads(result.manifest_path.read_text())
    assert result.manifest_path == tmp_path / "rel/visual-behavior-ophys/manifests/visual-behavior-ophys_manifest_v1.0.0.json"
    assert set(manifest["metadata_files"]) == {"behavior_session_table", "ophys_session_table", "ophys_experiment_table",
                                               "ophys_cells_table"}  # cell_metrics goes to generic releases only
    assert [p for p in manifest["data_pipeline"] if p["name"] == "AllenSDK"][0]["version"] == ALLENSDK_VERSION
    project = tmp_path / "rel/visual-behavior-ophys"
    assert (project / f"behavior_ophys_experiments/{oeid}/behavior_ophys_experiment_{oeid}.nwb").is_file()
    assert (project / "behavior_sessions/3002/behavior_session_3002.nwb").is_file()
    assert sorted(p.name for p in (project / "project_metadata").iterdir()) == [
        "behavior_session_table.csv", "ophys_cells_table.csv", "ophys_experiment_table.csv", "ophys_session_table.csv"]

    generic = make_release(tmp_path / "gen", "my-project", "1.0.0", frames=frames, source_roots=roots)
    assert "cell_metrics" in generic.manifest["metadata_files"]
    assert [p["name"] for p in generic.manifest["data_pipeline"]] == ["release_platform"]


def test_visual_behavior_ophys_release_refuses_what_allensdk_cannot_open(compat, tmp_path):
    from release_platform.release.build import make_release

    oeid = compat["plane"].ophys_experiment_id
    plain = B.write_behavior_nwb(compat["binputs"].model_copy(update={"compat": "none", "output_dir": str(tmp_path / "plain")}))
    frames = _project_frames(plain.output_path, compat["oout"].output_path, oeid)
    roots = [compat["root"], tmp_path / "plain"]
    with pytest.raises(InputError, match=r"behavior_session_3002\.nwb\) was not written with compat: allensdk"):
        make_release(tmp_path / "rel", "visual-behavior-ophys", "1.0.0", frames=frames, source_roots=roots)
    with pytest.raises(InputError, match=r"manifest versions 1\.0\.0 <= X < 2\.0\.0"):
        make_release(tmp_path / "rel", "visual-behavior-ophys", "2.0.0", frames=frames, source_roots=roots)
    with pytest.raises(InputError, match=r"missing: \['ophys_cells_table'\]"):
        make_release(tmp_path / "rel", "visual-behavior-ophys", "1.0.0",
                     frames={k: v for k, v in frames.items() if k != "ophys_cells_table"}, source_roots=roots)
    assert not (tmp_path / "rel").exists()


def test_visual_behavior_neuropixels_names_its_tables_as_its_cache_does():
    import pandas as pd

    from release_platform.release import projects

    frames = {t: pd.DataFrame() for t in ("behavior_session_table", "ecephys_session_table", "probes", "channels", "units",
                                          "ophys_session_table")}
    shaped = projects.shape_tables("visual-behavior-neuropixels", frames)
    assert sorted(projects.released_table_name("visual-behavior-neuropixels", t) for t in shaped) == [
        "behavior_sessions", "channels", "ecephys_sessions", "probes", "units"]
    assert projects.released_table_name("my-project", "behavior_session_table") == "behavior_session_table"
    assert projects.data_pipeline("my-project") is None
    projects.check_release_version("visual-behavior-neuropixels", "0.5.0")
    with pytest.raises(InputError, match="missing"):
        projects.shape_tables("visual-behavior-neuropixels", {"units": pd.DataFrame()})
