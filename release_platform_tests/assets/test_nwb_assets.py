"""The behavior-ophys and behavior NWB assets materialize in-process on the demo set and their checks pass."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

import dagster as dg
import h5py
import numpy as np
import pytest

from data_fixtures.spec import corrupt_file
from release_platform.assets.inputs import INPUT_ASSETS
from release_platform.assets.metadata import METADATA_ASSETS, METADATA_CHECKS
from release_platform.assets.nwb_ecephys import ECEPHYS_ASSETS
from release_platform.assets.nwb_ophys import (NWB_OPHYS_ASSETS, NWB_OPHYS_CHECKS, behavior_nwb_inspector, behavior_nwb_pynwb_valid,
                                               behavior_ophys_nwb)
from release_platform.assets.qc_report import behavior_session_qc_report, ophys_session_qc_report
from release_platform.assets.ophys import OPHYS_ASSETS, OPHYS_CHECKS, dff_finite_for_valid_rois, neuropil_r_distribution
from release_platform.assets.resources import StorageResource
from release_platform.assets.stimulus import stimulus_responses
from release_platform.lims import LimsClient
from release_platform.lims.resource import LimsResource
from release_platform.metadata import DataFiles
from release_platform.nwb import readers as R

NWB_CHECK_NAMES = {"behavior_ophys_nwb_pynwb_valid", "behavior_ophys_nwb_inspector", "behavior_nwb_pynwb_valid", "behavior_nwb_inspector"}


def _defs() -> dg.Definitions:
    jobs = [
        dg.define_asset_job("ophys_session_job", selection=dg.AssetSelection.groups("ophys_session")),
        dg.define_asset_job("behavior_session_job", selection=dg.AssetSelection.groups("behavior_session")),
        dg.define_asset_job("ophys_nwb_only", selection=dg.AssetSelection.assets(behavior_ophys_nwb)),
    ]
    return dg.Definitions(assets=[*INPUT_ASSETS, *OPHYS_ASSETS, stimulus_responses, *NWB_OPHYS_ASSETS, ophys_session_qc_report,
                                  behavior_session_qc_report], asset_checks=[*OPHYS_CHECKS, *NWB_OPHYS_CHECKS],
                          resources={"lims": LimsResource(), "storage": StorageResource()}, jobs=jobs)


def _checks(result) -> dict[str, bool]:
    return {c.check_name: c.passed for c in (e.event_specific_data for e in result.all_events
                                             if e.event_type_value == "ASSET_CHECK_EVALUATION")}


@pytest.fixture(scope="module")
def runs(seeded_demo, tmp_path_factory):
    """The demo sessions through their session jobs: ophys 1001 and 1002, behavior 3001 and 3002."""
    root = tmp_path_factory.mktemp("nwb_assets")
    shutil.copyfile(seeded_demo / "lims.sqlite", root / "lims.sqlite")
    mp = pytest.MonkeyPatch()
    mp.setenv("RELEASE_PLATFORM_HOME", str(root))
    mp.setenv("RELEASE_PLATFORM_LIMS_URL", f"sqlite:///{root / 'lims.sqlite'}")
    mp.setenv("RELEASE_PLATFORM_STORAGE", str(root / "storage"))
    defs = _defs()
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("ophys_session", ["1001", "1002"])
        instance.add_dynamic_partitions("behavior_session", ["3001", "3002"])
        results = {}
        for job, keys in (("ophys_session_job", ("1001", "1002")), ("behavior_session_job", ("3001", "3002"))):
            for key in keys:
                results[key] = defs.resolve_job_def(job).execute_in_process(partition_key=key, instance=instance, raise_on_error=False)
        yield defs, instance, results, root
    mp.undo()


def test_every_partition_materializes_and_its_nwb_checks_pass(runs):
    _, _, results, _ = runs
    for key, result in results.items():
        assert result.success, key
        checks = _checks(result)
        kind = "behavior_ophys_nwb" if key.startswith("100") else "behavior_nwb"
        assert {name: passed for name, passed in checks.items() if name in NWB_CHECK_NAMES} == {
            f"{kind}_pynwb_valid": True, f"{kind}_inspector": True}, key
        if kind == "behavior_ophys_nwb":  # (the non-blocking r check may warn on tiny planes)
            assert checks["dff_finite_for_valid_rois"] is True, checks
        else:
            assert "dff_finite_for_valid_rois" not in checks, checks


def test_files_sit_in_the_storage_layout_and_are_registered_in_lims(runs):
    _, _, results, root = runs
    storage = root / "storage"
    expected = {
        ("OphysExperiment", 1101, "BehaviorOphysNwb"): storage / "behavior_ophys_nwb/1001/behavior_ophys_experiment_1101.nwb",
        ("OphysExperiment", 1201, "BehaviorOphysNwb"): storage / "behavior_ophys_nwb/1002/behavior_ophys_experiment_1201.nwb",
        ("OphysExperiment", 1202, "BehaviorOphysNwb"): storage / "behavior_ophys_nwb/1002/behavior_ophys_experiment_1202.nwb",
        ("BehaviorSession", 3001, "BehaviorNwb"): storage / "behavior_nwb/3001/behavior_session_3001.nwb",
        ("BehaviorSession", 3002, "BehaviorNwb"): storage / "behavior_nwb/3002/behavior_session_3002.nwb",
    }
    client = LimsClient(f"sqlite:///{root / 'lims.sqlite'}")
    try:
        for (kind, entity_id, type_name), path in expected.items():
            assert path.is_file()
            assert client.well_known_file(kind, entity_id, type_name) == path
    finally:
        client.dispose()
    assert not list(storage.rglob("*.inprogress")) and not list(storage.rglob("*.error"))
    record = results["1001"].output_for_node("behavior_ophys_nwb")
    assert record == DataFiles("behavior_ophys_nwb", {1101: str(expected[("OphysExperiment", 1101, "BehaviorOphysNwb")])})
    mat = results["1001"].asset_materializations_for_node("behavior_ophys_nwb")[0]
    assert mat.metadata["behavior_session_id"].value == 3002
    assert not R.read_trials(expected[("OphysExperiment", 1101, "BehaviorOphysNwb")]).empty
    assert R.read_trials(expected[("OphysExperiment", 1201, "BehaviorOphysNwb")]).empty
    dff = results["1001"].output_for_node("dff_traces")["1101"]
    assert R.read_session_metadata(expected[("OphysExperiment", 1101, "BehaviorOphysNwb")])["ophys_experiment_id"] == 1101
    with R.open_nwb_traces(expected[("OphysExperiment", 1101, "BehaviorOphysNwb")], "dff") as traces:
        assert dff["method"] in traces.description
        assert all(f"{k}=" in traces.description for k in dff["parameters"])


def test_qc_reports_draw_every_plane_and_carry_thumbnails(runs):
    """The qc_report assets of the session jobs: per plane the ROI figure outlines every ROI of the NWB file, the
    page embeds every figure, and the materialization carries the thumbnails as Markdown with data URIs."""
    _, _, results, root = runs
    for key, planes in (("1001", ["1101"]), ("1002", ["1201", "1202"])):
        result = results[key]
        record = result.output_for_node("ophys_session_qc_report")
        meta = result.asset_materializations_for_node("ophys_session_qc_report")[0].metadata
        index = json.loads(Path(record["index"]).read_text())
        assert sorted(index["groups"]) == [f"ophys_experiment {p}" for p in planes]
        for plane in planes:
            names = [f["name"] for f in index["groups"][f"ophys_experiment {plane}"]]
            assert names[:4] == ["roi_contours", "roi_traces", "ratio_and_noise_histograms", "motion_offsets"]
            assert "tuning_curves" in names  # the demo planes saw drifting gratings
            n_rois = len(R.read_roi_table(root / f"storage/behavior_ophys_nwb/{key}/behavior_ophys_experiment_{plane}.nwb"))
            assert f"{n_rois} ROIs:" in index["groups"][f"ophys_experiment {plane}"][0]["caption"]
        n_figures = meta["figures"].value
        assert n_figures == sum(len(v) for v in index["groups"].values()) >= 4 * len(planes)
        assert meta["qc_figures"].value.count("](data:image/png;base64,") == n_figures
        assert Path(record["report"]).read_text().count('<img src="data:image/png;base64,') == n_figures
    behavior = results["3002"].asset_materializations_for_node("behavior_session_qc_report")[0].metadata
    assert behavior["figures"].value == 2 and behavior["qc_figures"].value.count("data:image/png;base64,") == 2


def test_inspector_check_reports_counts_of_the_blocking_levels(runs):
    """The gate runs NWB Inspector once per file on the checks that can block (suggestions are not inspected, PyNWB
    validation is its own check): its blocking messages are those of a full Inspector run on the file."""
    _, _, results, _ = runs
    for key in ("1002", "3001"):
        evaluation = next(e.event_specific_data for e in results[key].all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"
                          and e.event_specific_data.check_name.endswith("_inspector"))
        meta = {k: v.value for k, v in evaluation.metadata.items()}
        assert meta["blocking_messages"] == {}
        assert all(c["CRITICAL"] == 0 and c["BEST_PRACTICE_VIOLATION"] == 0 for c in meta["counts"].values())
        assert "best_practice_suggestions" not in meta  # not inspected by the gate
    # the blocking counts agree with NWB Inspector run in full, directly on the file
    from nwbinspector import inspect_nwbfile, load_config

    evaluation = next(e.event_specific_data for e in results["3001"].all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"
                      and e.event_specific_data.check_name == "behavior_nwb_inspector")
    (path, counts), = evaluation.metadata["counts"].value.items()
    from release_platform.nwb.allen_compat import note_required_timestamps
    from release_platform.nwb.inspection import _message_dict

    # the compat files keep explicit timestamps AllenSDK reads; only those regular-timestamp messages are re-graded
    direct = note_required_timestamps(path, [_message_dict(m) for m in inspect_nwbfile(nwbfile_path=path, config=load_config("dandi"))
                                             if m is not None])
    for level in ("ERROR", "CRITICAL", "BEST_PRACTICE_VIOLATION"):
        assert counts[level] == sum(m["importance"] == level for m in direct) == 0
    assert counts["PYNWB_VALIDATION"] == 0 and sum(m["importance"] == "BEST_PRACTICE_SUGGESTION" for m in direct) > 0


def test_a_corrupt_upstream_file_fails_the_partition_with_one_clear_message(runs):
    defs, instance, results, root = runs
    dff_file = results["1002"].output_for_node("dff_traces")["1202"]["file"]
    corrupt_file(dff_file)
    final = root / "storage/behavior_ophys_nwb/1002/behavior_ophys_experiment_1202.nwb"
    before = final.read_bytes()
    result = defs.resolve_job_def("ophys_nwb_only").execute_in_process(partition_key="1002", instance=instance, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.event_specific_data.error.message
    assert "ophys_session 1002 (ophys_experiment 1202)" in message and dff_file in message
    assert final.read_bytes() == before  # the previous good file is untouched
    assert (final.parent / (final.name + ".error")).exists()
    assert not [e for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]


def test_wires_with_the_rest_of_the_code_location():
    defs = dg.Definitions(assets=[*INPUT_ASSETS, *OPHYS_ASSETS, stimulus_responses, *NWB_OPHYS_ASSETS, *ECEPHYS_ASSETS, *METADATA_ASSETS],
                          asset_checks=[*OPHYS_CHECKS, *NWB_OPHYS_CHECKS, *METADATA_CHECKS],
                          resources={"lims": LimsResource(), "storage": StorageResource()})
    defs.resolve_all_job_defs()
    graph = defs.resolve_asset_graph()
    parents = graph.get(dg.AssetKey("behavior_ophys_nwb")).parent_keys
    assert {dg.AssetKey(k) for k in ("ophys_session_inputs", "roi_traces", "neuropil_traces", "demixed_traces",
                                     "neuropil_corrected_traces", "dff_traces", "stimulus_responses", "ophys_events")} == parents
    assert graph.get(dg.AssetKey("behavior_nwb")).parent_keys == {dg.AssetKey("behavior_session_inputs")}
    assert len(NWB_OPHYS_CHECKS) == 4


# -- every check fails on bad data (a check hard-coded to pass fails these) ----------------------------------
# The check definitions are invoked directly on the records their assets returned in the runs above, with one
# file tampered with (and put back afterwards).
@contextlib.contextmanager
def _tampered(path):
    """Yield ``path`` for tampering; put the original bytes back afterwards."""
    path = Path(path)
    backup = path.with_name(path.name + ".orig")
    shutil.copy2(path, backup)
    try:
        yield path
    finally:
        os.replace(backup, path)


def test_dff_check_fails_naming_plane_file_and_rois(runs):
    _, _, results, _ = runs
    records = results["1001"].output_for_node("dff_traces")
    record = records["1101"]
    assert dff_finite_for_valid_rois(dg.build_asset_check_context(), records).passed is True
    victims = record["valid_roi_ids"][:2]
    with _tampered(record["file"]) as path:
        with h5py.File(path, "a") as fh:
            names = [n.decode() if isinstance(n, bytes) else str(n) for n in fh["roi_names"][()]]
            for roi in victims:
                fh["data"][names.index(roi), 5] = np.nan
        evaluation = dff_finite_for_valid_rois(dg.build_asset_check_context(), records)
    assert evaluation.passed is False
    assert evaluation.metadata["rois_with_nonfinite_dff"].value == {"1101": victims}
    assert evaluation.description == (f"ophys_experiment 1101: {record['file']}: dF/F is NaN or infinite for 2 valid ROI(s): "
                                      f"{victims[0]}, {victims[1]}")


def test_neuropil_r_check_warns_when_fits_did_not_converge(runs):
    _, _, results, _ = runs
    records = results["1001"].output_for_node("neuropil_corrected_traces")
    assert neuropil_r_distribution(dg.build_asset_check_context(), records).passed is True
    with _tampered(records["1101"]["file"]) as path:
        with h5py.File(path, "a") as fh:
            status = fh["status"][()].astype(str)
            n_fit = int((status != "skipped").sum())
            fh["status"][...] = np.where(status == "skipped", status, "unconverged").astype(fh["status"].dtype)
        evaluation = neuropil_r_distribution(dg.build_asset_check_context(), records)
    assert evaluation.passed is False and evaluation.severity == dg.AssetCheckSeverity.WARN
    assert evaluation.metadata["worst_unconverged_fraction"].value == 1.0
    assert evaluation.description.startswith(f"ophys_experiment 1101: {n_fit} of {n_fit} ROIs have an unconverged")


def test_pynwb_and_inspector_checks_fail_on_a_broken_file(runs):
    """A file missing a required dataset fails PyNWB validation; a subject without an age is CRITICAL for the
    DANDI Inspector config."""
    _, _, results, _ = runs
    record = results["3001"].output_for_node("behavior_nwb")
    path = record.paths[3001]
    with _tampered(path):
        with h5py.File(path, "a") as fh:
            del fh["session_start_time"]
        valid = behavior_nwb_pynwb_valid(record)
    assert valid.passed is False and "session_start_time" in json.dumps(valid.metadata["problems"].value[path])
    assert valid.description.startswith(f"PyNWB validation failed for {path}: 1 problem(s); first: ")
    with _tampered(path):
        with h5py.File(path, "a") as fh:
            del fh["general/subject/age"]
        inspector = behavior_nwb_inspector(record)
        still_valid = behavior_nwb_pynwb_valid(record)
    assert inspector.passed is False and still_valid.passed is True
    assert [m["check_function_name"] for m in inspector.metadata["blocking_messages"].value[path]] == ["check_subject_age"]
    assert inspector.description.startswith(f"NWB Inspector failed for {path}") and "CRITICAL check_subject_age" in inspector.description
    assert behavior_nwb_pynwb_valid(record).passed is True and behavior_nwb_inspector(record).passed is True


def test_a_nan_movie_stops_at_the_input_and_leaves_the_traces_untouched(runs):
    """A float movie with one NaN pixel per frame fails ophys_session_inputs, naming session, plane and file;
    nothing downstream runs, so the good traces of the previous run stay as they were."""
    defs, instance, results, root = runs
    client = LimsClient(f"sqlite:///{root / 'lims.sqlite'}")
    source = client.well_known_file("OphysExperiment", 1101, "MotionCorrectedImageStack")
    nan_movie = root / "nan_movie.h5"
    with h5py.File(source, "r") as src, h5py.File(nan_movie, "w") as dst:
        data = src["data"][()].astype(np.float32)
        data[:, 3, 4] = np.nan
        dst.create_dataset("data", data=data, chunks=(64, *data.shape[1:]))
    traces = [results["1001"].output_for_node("extracted_traces", "roi_traces")["1101"]["file"], results["1001"].output_for_node("dff_traces")["1101"]["file"]]
    before = [Path(p).read_bytes() for p in traces]
    client.register_file("OphysExperiment", 1101, "MotionCorrectedImageStack", nan_movie)
    try:
        result = defs.resolve_job_def("ophys_session_job").execute_in_process(partition_key="1001", instance=instance,
                                                                              raise_on_error=False)
    finally:
        client.register_file("OphysExperiment", 1101, "MotionCorrectedImageStack", source)
        client.dispose()
    assert not result.success
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert [f.step_key for f in failures] == ["ophys_session_inputs"]
    message = failures[0].event_specific_data.error.message
    assert f"ophys_session 1001 (ophys_experiment 1101): {nan_movie}: movie has NaN or infinite pixels" in message
    assert not [e for e in result.all_events if e.event_type_value == "ASSET_MATERIALIZATION"]
    assert [Path(p).read_bytes() for p in traces] == before
