"""Metadata assets in process: per-session partitions write and validate their rows from what their upstream
assets hand them (the input asset's LIMS rows, the NWB assets' files); a bad row fails the blocking check and
stops downstream; release-level tables assemble every materialized partition."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pandas as pd
import pytest

from release_platform.assets import metadata as am
from release_platform.assets.inputs import behavior_session_inputs
from release_platform.assets.resources import StorageResource
from release_platform.lims import LimsClient
from release_platform.lims.resource import LimsResource
from release_platform.metadata import file_id
from release_platform.metadata.io import read_parquet
from release_platform_tests.assets.metadata_upstream import ophys_mouse, upstream_of
from release_platform_tests.metadata import LimsWorld, day, touch


@pytest.fixture
def env(tmp_path):
    url = f"sqlite:///{tmp_path / 'lims.sqlite'}"
    client = LimsClient(url)
    client.upgrade()
    w = LimsWorld(client)
    ophys_mouse(w)
    w.ecephys(301, "m1", "EPHYS_1_images_G", day(2), [
        dict(id=3011, name="probeA", channels=[(30110, 0, "VISp", True), (30111, 1, None, False)], units=[(1, 30110, {"firing_rate": 2.0})],
             lfp=tmp_path / "raw_lfp_3011.h5"),
        dict(id=3012, name="probeB", channels=[(30120, 0, "LP", True)], units=[])])  # no LFP
    root = tmp_path / "storage"
    # What each NWB asset reports it wrote, per partition ({entity id: path}); behavior session 2's data ship
    # in its ophys session's files, so it has none.
    written = {
        "behavior_nwb": {"1": {1: root / "behavior_nwb" / "1" / "behavior_session_1.nwb"}, "2": {}},
        "behavior_ophys_nwb": {"101": {i: root / "behavior_ophys_nwb" / "101" / f"behavior_ophys_experiment_{i}.nwb"
                                       for i in (1011, 1012)}},
        "ecephys_session_nwb": {"301": {301: root / "ecephys_session_nwb" / "301" / "ecephys_session_301.nwb"}},
        "ecephys_probe_lfp_nwb": {"301": {3011: root / "ecephys_probe_lfp_nwb" / "301" / "lfp_probe_3011.nwb"}},
    }
    for per_partition in written.values():
        for paths in per_partition.values():
            for path in paths.values():
                touch(path)
    resources = {"lims": LimsResource(url=url), "storage": StorageResource(root=str(root))}
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("behavior_session", ["1", "2"])
        instance.add_dynamic_partitions("ophys_session", ["101"])
        instance.add_dynamic_partitions("ecephys_session", ["301"])
        yield {"world": w, "client": client, "root": root, "resources": resources, "instance": instance, "written": written}
    client.dispose()


def _upstream(env, names):
    return upstream_of(names, env["written"])


def _checks_for(*asset_names):
    return [c for c in am.METADATA_CHECKS if any(k.asset_key.path[-1] in asset_names for k in c.check_keys)]


def _materialize_session(env, names, partition_key, *, without=(), **kw):
    """Materialize the metadata assets ``names`` with their upstream stand-ins (except the assets in ``without``,
    which stay unmaterialized)."""
    assets = [*_upstream(env, names), *(a for a in am.SESSION_METADATA_ASSETS if a.key.path[-1] in names), *_checks_for(*names)]
    selection = [k for a in assets if isinstance(a, dg.AssetsDefinition) for k in a.keys if k.path[-1] not in without]
    return dg.materialize(assets, selection=selection, partition_key=partition_key, resources=env["resources"],
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
    (env["root"] / "behavior_nwb" / "1" / "behavior_session_1.nwb").unlink()  # reported, then gone
    failed = _materialize_session(env, ["behavior_session_metadata"], "1", raise_on_error=False)
    assert not failed.success  # default "error"
    failure = [e for e in failed.all_events if e.event_type_value == "STEP_FAILURE"][0]
    assert "behavior_session_1.nwb" in failure.event_specific_data.error.message
    config = {"ops": {"behavior_session_metadata": {"config": {"on_missing_file": "warn"}}}}
    result = _materialize_session(env, ["behavior_session_metadata"], "1", run_config=config)
    assert result.success  # "warn": the row keeps a null file_id
    mat = result.asset_materializations_for_node("behavior_session_metadata")[0]
    assert mat.metadata["missing_files"].data[0]["behavior_session_id"] == 1


def test_unmaterialized_nwb_partition_counts_as_missing(env):
    # The NWB asset never ran for this partition: its files count as missing (the file left under the storage
    # root is not searched for).
    names = ["ophys_experiment_metadata"]
    failed = _materialize_session(env, names, "101", without=["behavior_ophys_nwb"], raise_on_error=False)
    assert not failed.success
    message = [e for e in failed.all_events if e.event_type_value == "STEP_FAILURE"][0].event_specific_data.error.message
    assert "ophys_session 101" in message and "2 expected behavior_ophys_nwb file(s) missing" in message
    config = {"ops": {"ophys_experiment_metadata": {"config": {"on_missing_file": "warn"}}}}
    result = _materialize_session(env, names, "101", without=["behavior_ophys_nwb"], run_config=config)
    assert result.success
    exps = read_parquet("ophys_experiment_table", env["root"] / "ophys_experiment_metadata" / "101" / "ophys_experiment_table.parquet")
    assert exps["ophys_experiment_id"].tolist() == [1011, 1012] and exps["file_id"].isna().all()


def test_rows_come_from_the_input_asset_not_from_lims(env):
    # The metadata asset builds from the rows its input asset handed it: an earlier session of the same type that
    # LIMS gains afterwards shows up only once the input asset is materialized again.
    names = ["behavior_session_metadata"]
    upstream = _upstream(env, names)
    assets = [*upstream, am.behavior_session_metadata]
    path = env["root"] / "behavior_session_metadata" / "1" / "behavior_session_table.parquet"
    kw = dict(partition_key="1", resources=env["resources"], instance=env["instance"])
    assert dg.materialize(assets, **kw).success
    assert read_parquet("behavior_session_table", path)["prior_exposures_to_session_type"].tolist() == [0]
    env["world"].behavior(5, "m1", "TRAINING_1_gratings", day(-1))
    assert dg.materialize(assets, selection=[dg.AssetKey(n) for n in names], **kw).success
    assert read_parquet("behavior_session_table", path)["prior_exposures_to_session_type"].tolist() == [0]
    assert dg.materialize(assets, **kw).success  # the input asset again: it now carries session 5
    assert read_parquet("behavior_session_table", path)["prior_exposures_to_session_type"].tolist() == [1]


def test_bad_row_fails_the_blocking_check_and_stops_downstream(env):
    w = env["world"]
    w.donor("late", dob=dt.datetime(2027, 1, 1))  # born after the session: negative age
    w.behavior(7, "late", "TRAINING_1_gratings", day(0))
    env["instance"].add_dynamic_partitions("behavior_session", ["7"])
    env["written"]["behavior_nwb"]["7"] = {7: env["root"] / "behavior_nwb" / "7" / "behavior_session_7.nwb"}
    touch(env["written"]["behavior_nwb"]["7"][7])
    ran = []

    @dg.asset(partitions_def=am.PARTITIONS_BY_KIND["behavior_session"], deps=[am.behavior_session_metadata])
    def downstream_of_metadata():
        ran.append(True)

    assets = [*_upstream(env, ["behavior_session_metadata"]), am.behavior_session_metadata, downstream_of_metadata,
              *_checks_for("behavior_session_metadata")]
    result = dg.materialize(assets, partition_key="7", resources=env["resources"], instance=env["instance"], raise_on_error=False)
    check = _evaluations(result)["behavior_session_metadata_schema"]
    assert not check.passed
    failures = check.metadata["failures"].data
    assert failures[0]["column"] == "age_in_days" and failures[0]["row_ids"] == [7] and failures[0]["failure_values"][0] < 0
    assert "age_in_days" in check.metadata["failed_columns"].data
    assert ran == [] and not result.success


def test_unknown_session_fails_with_one_message(env):
    # The session's input asset (the real one) refuses the unknown id; the metadata asset does not run.
    env["instance"].add_dynamic_partitions("behavior_session", ["999"])
    names = ["behavior_session_metadata"]
    assets = [behavior_session_inputs, *_upstream(env, names)[1:], am.behavior_session_metadata]
    result = dg.materialize(assets, partition_key="999", resources=env["resources"], instance=env["instance"], raise_on_error=False)
    assert not result.success
    failure = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"][0]
    assert "behavior_session 999: unknown behavior_session id: not in LIMS" in failure.event_specific_data.error.message
    assert not result.asset_materializations_for_node("behavior_session_metadata")


def _release(env, tables, **kw):
    names = {am.RELEASE_ASSETS[t][0] for t in tables}
    upstream = _upstream(env, list(am.SESSION_ASSETS))
    return dg.materialize([*upstream, *am.METADATA_ASSETS, *am.METADATA_CHECKS], selection=[dg.AssetKey(n) for n in names],
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
    from release_platform.definitions import defs

    defs.resolve_all_job_defs()
    graph = defs.resolve_asset_graph()
    assert {dg.AssetKey("ophys_session_inputs"), dg.AssetKey("behavior_ophys_nwb")} <= graph.get(
        dg.AssetKey("ophys_experiment_metadata")).parent_keys
    assert {dg.AssetKey("ecephys_session_nwb"), dg.AssetKey("ecephys_probe_lfp_nwb")} <= graph.get(
        dg.AssetKey("ecephys_session_metadata")).parent_keys
    assert len(am.METADATA_CHECKS) == 5 + 8 + 1
