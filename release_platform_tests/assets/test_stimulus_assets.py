"""The stimulus analysis assets on a synthetic ophys session processed from its movie."""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
from contextlib import redirect_stdout

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from data_fixtures.ophys import OphysParams, generate_ophys_session
from data_fixtures.seed import Donor, register_donor, register_ophys_session
from data_fixtures.stimulus import StimulusDesign, TuningParams
from release_platform.lims import LimsClient
from release_platform.release.commands import add_release_commands
from release_platform.release.manifest import load_manifest
from release_platform.release.verify import verify_release
from release_platform.stimulus.schema import CellMetricsTable

SESSION = "2301"
PLANE = "2401"
VERSION = "0.1.0"
SELECTION = ["ophys_session_inputs", "roi_traces", "neuropil_traces", "demixed_traces", "neuropil_corrected_traces",
             "dff_traces", "ophys_events", "stimulus_responses", "cell_metrics", "behavior_ophys_nwb"]


@pytest.fixture(scope="module")
def processed(tmp_path_factory):
    """One 200 s plane (24 ROIs, strongly tuned) showing mostly static gratings, from the movie through cell_metrics
    and the plane's NWB file."""
    root = tmp_path_factory.mktemp("stimulus_assets")
    mp = pytest.MonkeyPatch()
    mp.setenv("RELEASE_PLATFORM_LIMS_URL", f"sqlite:///{root / 'lims.sqlite'}")
    mp.setenv("RELEASE_PLATFORM_STORAGE", str(root / "storage"))
    client = LimsClient()
    client.upgrade()
    _, specimen = register_donor(client, Donor("m-stim", "M", dt.datetime(2026, 1, 1), ("Slc17a7-IRES2-Cre",), ("Ai93(TITL-GCaMP6f)",)))
    params = OphysParams(n_frames=6000, n_rois=24, stimulus=StimulusDesign(stimuli=("spontaneous", "static_gratings"), weights=(0.1, 0.9)),
                         tuning=TuningParams(evoked_gain_range=(6.0, 10.0)))
    spec = generate_ophys_session(root / "raw", ophys_session_id=int(SESSION), ophys_experiment_ids=(int(PLANE),), params=params, seed=5)
    register_ophys_session(client, spec, specimen_id=specimen, project="VisualCoding", equipment="CAM2P.4",
                           date_of_acquisition=dt.datetime(2026, 9, 1))
    from release_platform.definitions import defs

    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("ophys_session", [SESSION])
        job = defs.resolve_job_def("ophys_session_job")
        result = job.execute_in_process(partition_key=SESSION, instance=instance,
                                        asset_selection=[dg.AssetKey(k) for k in SELECTION],
                                        run_config={"ops": {"stimulus_responses": {"config": {"n_shuffles": 200}}}})
        release = defs.resolve_job_def("release_metadata_job").execute_in_process(
            instance=instance, asset_selection=[dg.AssetKey("cell_metrics_table")])
        instance.add_dynamic_partitions("release_version", [VERSION])
        shipped = defs.resolve_job_def("release_job").execute_in_process(
            partition_key=VERSION, instance=instance, run_config={"ops": {"release_manifest": {"config": {"project": "demo"}}}})
        yield result, spec, root / "storage", release, shipped
    client.dispose()
    mp.undo()


def test_assets_and_checks_materialize(processed):
    result, _, storage, *_ = processed
    assert result.success
    keys = {e.asset_key.to_user_string() for e in result.all_events if e.event_type_value == "ASSET_MATERIALIZATION"}
    assert {"stimulus_responses", "cell_metrics"} <= keys
    checks = {c.check_name: c for c in (e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION")}
    assert checks["cell_metrics_schema"].passed
    assert checks["responsive_fraction"].passed, checks["responsive_fraction"].description
    assert (storage / f"stimulus_responses/{SESSION}/{PLANE}/analysis.h5").is_file()
    assert not list(storage.rglob("*.inprogress"))


def test_cell_metrics_rows_recover_the_tuning(processed):
    _, spec, storage, *_ = processed
    table = pd.read_parquet(storage / f"cell_metrics/{SESSION}/cell_metrics.parquet")
    CellMetricsTable.validate(table)
    assert len(table) == 24 and set(table["ophys_experiment_id"]) == {int(PLANE)}
    truth = {c["id"]: c for c in json.loads(spec.truth_path.read_text())["planes"][0]["cells"]}
    rows = table[table["valid_roi"] & table["p_sg"].lt(0.05)]
    tuned = rows[[truth[int(i)]["tuned"] for i in rows["cell_roi_id"]]]
    assert len(tuned) >= 5
    # responsive tuned cells' preferred static-grating orientation is the true one (measured: 12 of 12)
    true_ori = np.array([truth[int(i)]["pref_orientation_sg_deg"] for i in tuned["cell_roi_id"]])
    assert np.mean(tuned["pref_ori_sg"].to_numpy() == true_ori) >= 0.9, (tuned["pref_ori_sg"].to_numpy(), true_ori)


def test_nwb_roi_table_carries_the_metrics(processed):
    result, _, storage, *_ = processed
    from release_platform.nwb.readers import read_roi_table

    checks = {c.check_name: c.passed for c in (e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION")}
    nwb_checks = {k: v for k, v in checks.items() if "nwb" in k}
    assert nwb_checks and all(nwb_checks.values()), nwb_checks  # PyNWB validation and NWB Inspector pass
    table = pd.read_parquet(storage / f"cell_metrics/{SESSION}/cell_metrics.parquet").set_index("cell_roi_id")
    rois = read_roi_table(next((storage / "behavior_ophys_nwb").rglob(f"behavior_ophys_experiment_{PLANE}.nwb")))
    for col in ("p_sg", "pref_ori_sg", "osi_sg", "reliability_sg"):
        np.testing.assert_array_equal(rois[col].to_numpy(dtype=float), table.loc[rois.index.astype(int), col].to_numpy(dtype=float))


def test_release_cell_metrics_table(processed):
    _, _, storage, release, _ = processed
    assert release.success
    checks = {c.check_name: c.passed for c in (e.event_specific_data for e in release.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION")}
    assert checks == {"cell_metrics_table_valid": True}
    table = pd.read_csv(storage / "cell_metrics_table/cell_metrics.csv")
    session = pd.read_parquet(storage / f"cell_metrics/{SESSION}/cell_metrics.parquet")
    assert len(table) == len(session) == 24
    assert list(table.columns[:4]) == ["ophys_experiment_id", "cell_roi_id", "cell_specimen_id", "valid_roi"]
    merged = table.merge(session, on="cell_roi_id", suffixes=("", "_session"))
    np.testing.assert_allclose(merged["p_sg"], merged["p_sg_session"])


def _csv_equal(released: pd.DataFrame, table: pd.DataFrame) -> None:
    assert list(released.columns) == list(table.columns)
    for col in table.columns:
        a, b = released[col], table[col]
        if pd.api.types.is_numeric_dtype(b) and not pd.api.types.is_bool_dtype(b):
            np.testing.assert_allclose(a.to_numpy(dtype=float), b.to_numpy(dtype=float), rtol=1e-12, equal_nan=True, err_msg=col)
        else:
            assert a.astype(str).tolist() == b.astype(str).tolist(), col


def test_release_ships_cell_metrics_and_verifies(processed, tmp_path):
    """The release version (asset and command) carries cell_metrics as project_metadata/cell_metrics.csv, listed in
    the manifest with its digest, equal to the release table; verify passes, and a changed byte fails it."""
    _, _, storage, _, shipped = processed
    assert shipped.success
    checks = {c.check_name: c for c in (e.event_specific_data for e in shipped.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION")}
    assert checks["release_manifest_verified"].passed, checks["release_manifest_verified"].description
    project = storage / "release_manifest" / VERSION / "demo"
    manifest = load_manifest(project / f"manifests/demo_manifest_v{VERSION}.json")
    assert "cell_metrics" in manifest["metadata_files"]
    assert manifest["metadata_files"]["cell_metrics"]["url"].endswith("project_metadata/cell_metrics.csv")
    table = pd.read_parquet(storage / "cell_metrics_table/cell_metrics.parquet")
    _csv_equal(pd.read_csv(project / "project_metadata/cell_metrics.csv"), table)
    assert verify_release(project.parent).ok

    parser = argparse.ArgumentParser()
    add_release_commands(parser.add_subparsers(dest="command"))
    dest = tmp_path / "public"
    args = parser.parse_args(["release", "--project", "demo", "--version", VERSION, "--layout", "allen", "--dest", str(dest),
                              "--storage-root", str(storage)])
    with redirect_stdout(io.StringIO()):
        assert args.func(args) == 0
    report = verify_release(dest)
    assert report.ok, report.describe()
    released = dest / "demo/project_metadata/cell_metrics.csv"
    _csv_equal(pd.read_csv(released), table)
    data = bytearray(released.read_bytes())
    data[-2] = ord("7") if data[-2] != ord("7") else ord("8")
    released.write_bytes(bytes(data))
    assert not verify_release(dest).ok
