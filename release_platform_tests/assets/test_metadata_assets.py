"""Metadata assets in process: per-session partitions write and validate their rows; a bad row fails the
blocking check and stops downstream; release-level tables assemble every materialized partition."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pandas as pd
import pytest

from release_platform.assets import metadata as am
from release_platform.assets.inputs import INPUT_ASSETS
from release_platform.assets.resources import StorageResource
from release_platform.lims import LimsClient
from release_platform.lims.resource import LimsResource
from release_platform.metadata import file_id
from release_platform.metadata.io import read_parquet
from release_platform_tests.metadata import LimsWorld, day, touch


@pytest.fixture
def env(tmp_path):
    url = f"sqlite:///{tmp_path / 'lims.sqlite'}"
    client = LimsClient(url)
    client.upgrade()
    w = LimsWorld(client)
    w.donor("m1")
    w.behavior(1, "m1", "TRAINING_1_gratings", day(0))
    w.ophys(101, "m1", "OPHYS_1_images_A", day(1), [(1011, 175, "VISp", 0, "passed", [(1, True, 9)]), (1012, 275, "VISp", 1)],
            project="VisualBehaviorMultiscope", rig="MESO.1")
    w.behavior(2, "m1", "OPHYS_1_images_A", day(1), ophys_session_id=101)
    w.container(900, [("OphysSession", 101)])
    w.ecephys(301, "m1", "EPHYS_1_images_G", day(2), [
        dict(id=3011, name="probeA", channels=[(30110, 0, "VISp", True), (30111, 1, None, False)], units=[(1, 30110, {"firing_rate": 2.0})],
             lfp=tmp_path / "raw_lfp_3011.h5"),
        dict(id=3012, name="probeB", channels=[(30120, 0, "LP", True)], units=[])])  # no LFP
    root = tmp_path / "storage"
    touch(root / "behavior_session_nwb" / "1" / "behavior_session_1.nwb")
    touch(root / "behavior_ophys_nwb" / "101" / "behavior_ophys_experiment_1011.nwb")
    touch(root / "behavior_ophys_nwb" / "101" / "behavior_ophys_experiment_1012.nwb")
    touch(root / "ecephys_session_nwb" / "301" / "ecephys_session_301.nwb")
    touch(root / "ecephys_probe_lfp_nwb" / "301" / "lfp_probe_3011.nwb")
    resources = {"lims": LimsResource(url=url), "storage": StorageResource(root=str(root))}
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("behavior_session", ["1", "2"])
        instance.add_dynamic_partitions("ophys_session", ["101"])
        instance.add_dynamic_partitions("ecephys_session", ["301"])
        yield {"world": w, "client": client, "root": root, "resources": resources, "instance": instance}
    client.dispose()


def _checks_for(*asset_names):
    return [c for c in am.METADATA_CHECKS if any(k.asset_key.path[-1] in asset_names for k in c.check_keys)]


def _materialize_session(env, names, partition_key, **kw):
    assets = [a for a in am.SESSION_METADATA_ASSETS if a.key.path[-1] in names]
    return dg.materialize([*assets, *_checks_for(*names)], partition_key=partition_key, resources=env["resources"],
                          instance=env["instance"], **kw)


def _evaluations(result):
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_per_session_assets_materialize_and_pass_their_checks(env):
    ophys = ["ophys_session_metadata", "ophys_experiment_metadata", "ophys_cells_metadata"]
    result = _materialize_session(env, ophys, "101")
    assert result.success
    evals = _evaluations(result)
    assert {f"{n}_schema" for n in ophys} <= set(evals) and all(e.passed for e in evals.values())
    root = env["root"]
    exps = read_parquet("ophys_experiment_table", root / "ophys_experiment_metadata" / "101" / "ophys_experiment_table.parquet")
    assert exps["ophys_experiment_id"].tolist() == [1011, 1012]
    assert exps["file_id"].tolist() == [file_id("behavior_ophys_nwb", 1011), file_id("behavior_ophys_nwb", 1012)]
    assert exps["imaging_plane_group"].tolist() == [0, 1] and exps["targeted_imaging_depth"].tolist() == [225, 225]
    for pk in ("1", "2"):
        assert _materialize_session(env, ["behavior_session_metadata"], pk).success
    behavior = read_parquet("behavior_session_table", root / "behavior_session_metadata" / "1" / "behavior_session_table.parquet")
    assert behavior["file_id"].tolist() == [file_id("behavior_nwb", 1)]
    result = _materialize_session(env, ["ecephys_session_metadata"], "301")
    assert result.success and _evaluations(result)["ecephys_session_metadata_schema"].passed
    units = read_parquet("units", root / "ecephys_session_metadata" / "301" / "units.parquet")
    assert units["ecephys_session_id"].tolist() == [301]
    probes = read_parquet("probes", root / "ecephys_session_metadata" / "301" / "probes.parquet")
    assert probes["file_id"].tolist()[0] == file_id("ecephys_lfp_nwb", 3011) and pd.isna(probes["file_id"].iloc[1])
    assert probes["file_path"].tolist()[0] == str(root / "ecephys_probe_lfp_nwb" / "301" / "lfp_probe_3011.nwb")


def test_missing_nwb_follows_run_config(env):
    (env["root"] / "behavior_session_nwb" / "1" / "behavior_session_1.nwb").unlink()
    failed = _materialize_session(env, ["behavior_session_metadata"], "1", raise_on_error=False)
    assert not failed.success  # default "error"
    failure = [e for e in failed.all_events if e.event_type_value == "STEP_FAILURE"][0]
    assert "behavior_session_1.nwb" in failure.event_specific_data.error.message
    config = {"ops": {"behavior_session_metadata": {"config": {"on_missing_file": "warn"}}}}
    result = _materialize_session(env, ["behavior_session_metadata"], "1", run_config=config)
    assert result.success  # "warn": the row keeps a null file_id
    mat = result.asset_materializations_for_node("behavior_session_metadata")[0]
    assert mat.metadata["missing_files"].data[0]["behavior_session_id"] == 1


def test_missing_probe_lfp_follows_run_config(env):
    (env["root"] / "ecephys_probe_lfp_nwb" / "301" / "lfp_probe_3011.nwb").unlink()
    warn = {"ops": {"ecephys_session_metadata": {"config": {"on_missing_file": "warn"}}}}
    result = _materialize_session(env, ["ecephys_session_metadata"], "301", run_config=warn)
    assert result.success and _evaluations(result)["ecephys_session_metadata_schema"].passed  # "warn": null file_id
    mat = result.asset_materializations_for_node("ecephys_session_metadata")[0]
    assert [m["ecephys_probe_id"] for m in mat.metadata["missing_files"].data] == [3011]  # probeB has no LFP: not missing
    probes = read_parquet("probes", env["root"] / "ecephys_session_metadata" / "301" / "probes.parquet")
    assert probes["file_id"].isna().all()
    config = {"ops": {"ecephys_session_metadata": {"config": {"on_missing_file": "error"}}}}
    failed = _materialize_session(env, ["ecephys_session_metadata"], "301", run_config=config, raise_on_error=False)
    assert not failed.success
    message = [e for e in failed.all_events if e.event_type_value == "STEP_FAILURE"][0].event_specific_data.error.message
    assert "ecephys_probe 3011" in message and "lfp_probe_3011.nwb" in message
    config = {"ops": {"ecephys_session_metadata": {"config": {"on_missing_file": "skip"}}}}
    skipped = _materialize_session(env, ["ecephys_session_metadata"], "301", run_config=config)
    assert skipped.success and _evaluations(skipped)["ecephys_session_metadata_schema"].passed
    probes = read_parquet("probes", env["root"] / "ecephys_session_metadata" / "301" / "probes.parquet")
    units = read_parquet("units", env["root"] / "ecephys_session_metadata" / "301" / "units.parquet")
    assert probes["ecephys_probe_id"].tolist() == [3012] and units.empty


def test_bad_row_fails_the_blocking_check_and_stops_downstream(env):
    w = env["world"]
    w.donor("late", dob=dt.datetime(2027, 1, 1))  # born after the session: negative age
    w.behavior(7, "late", "TRAINING_1_gratings", day(0))
    env["instance"].add_dynamic_partitions("behavior_session", ["7"])
    touch(env["root"] / "behavior_session_nwb" / "7" / "behavior_session_7.nwb")
    ran = []

    @dg.asset(partitions_def=am.PARTITIONS_BY_KIND["behavior_session"], deps=[am.behavior_session_metadata])
    def downstream_of_metadata():
        ran.append(True)

    assets = [am.behavior_session_metadata, downstream_of_metadata, *_checks_for("behavior_session_metadata")]
    result = dg.materialize(assets, partition_key="7", resources=env["resources"], instance=env["instance"], raise_on_error=False)
    check = _evaluations(result)["behavior_session_metadata_schema"]
    assert not check.passed
    failures = check.metadata["failures"].data
    assert failures[0]["column"] == "age_in_days" and failures[0]["row_ids"] == [7] and failures[0]["failure_values"][0] < 0
    assert "age_in_days" in check.metadata["failed_columns"].data
    assert ran == [] and not result.success


def test_unknown_session_fails_with_one_message(env):
    env["instance"].add_dynamic_partitions("behavior_session", ["999"])
    result = _materialize_session(env, ["behavior_session_metadata"], "999", raise_on_error=False)
    assert not result.success
    failure = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"][0]
    assert "behavior_session 999: unknown behavior_session id: not in LIMS" in failure.event_specific_data.error.message


def _release(env, tables, **kw):
    names = {am.RELEASE_ASSETS[t][0] for t in tables}
    return dg.materialize([*am.METADATA_ASSETS, *am.METADATA_CHECKS], selection=[dg.AssetKey(n) for n in names],
                          resources=env["resources"], instance=env["instance"], **kw)


def test_release_tables_assemble_partitions_and_check_references(env):
    assert _materialize_session(env, ["ophys_session_metadata", "ophys_experiment_metadata", "ophys_cells_metadata"], "101").success
    assert _materialize_session(env, ["behavior_session_metadata"], "1").success
    # Behavior session 2 (the ophys session's) is not materialized yet: the ophys session's reference dangles.
    result = _release(env, ["behavior_session_table", "ophys_session_table"], raise_on_error=False)
    evals = _evaluations(result)
    assert evals["behavior_session_table_valid"].passed and not evals["ophys_session_table_valid"].passed
    failure = evals["ophys_session_table_valid"].metadata["failures"].data[0]
    assert failure["check"].startswith("references_behavior_session_table") and failure["row_ids"] == [101]

    assert _materialize_session(env, ["behavior_session_metadata"], "2").success
    assert _materialize_session(env, ["ecephys_session_metadata"], "301").success
    result = _release(env, list(am.RELEASE_ASSETS))
    evals = _evaluations(result)
    assert result.success and all(e.passed for e in evals.values()), {k: e.description for k, e in evals.items() if not e.passed}
    assert "file_ids_unique_across_tables" in evals
    root = env["root"]
    behavior = pd.read_csv(root / "behavior_session_table" / "behavior_session_table.csv")
    assert behavior["behavior_session_id"].tolist() == [1, 2]
    assert read_parquet("ophys_cells_table", root / "ophys_cells_table" / "ophys_cells_table.parquet")["cell_roi_id"].tolist() == [1]
    assert (root / "ecephys_units_table" / "units.csv").is_file()


def test_definitions_resolve_with_the_rest_of_the_code_location():
    defs = dg.Definitions(assets=[*INPUT_ASSETS, *am.METADATA_ASSETS], asset_checks=am.METADATA_CHECKS,
                          resources={"lims": LimsResource(), "storage": StorageResource()})
    defs.resolve_all_job_defs()
    graph = defs.resolve_asset_graph()
    assert dg.AssetKey("ophys_session_inputs") in graph.get(dg.AssetKey("ophys_experiment_metadata")).parent_keys
    assert {dg.AssetKey("ecephys_session_nwb"), dg.AssetKey("ecephys_probe_lfp_nwb")} <= graph.get(
        dg.AssetKey("ecephys_session_metadata")).parent_keys
    assert len(am.METADATA_CHECKS) == 5 + 8 + 1
