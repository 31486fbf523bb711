"""Backfill per experiment container: the backfill objects target exactly the container's partitions, the
CLI rejects an unknown container with exit status 2, and the Dagster daemon of a running ``dagster dev``
executes the backfills over exactly those partitions and no other; then, with the behavior sensor started, a
session registered in LIMS afterwards is materialized by the sensor and no session processed before is run again."""

from __future__ import annotations

import datetime as dt
import re
import time
from collections import defaultdict

import dagster as dg
import pytest
from dagster._core.execution.backfill import BulkActionStatus

from data_fixtures import behavior as behavior_fixture
from data_fixtures.seed import DEMO_DONORS, PROJECT_VB, Donor, register_behavior_session, register_container, register_donor
from release_platform.assets.backfill import launch_experiment_backfill
from release_platform.assets.partitions import PARTITIONS_BY_KIND
from release_platform.definitions import defs
from release_platform.lims import LimsClient
from release_platform_tests.e2e.conftest import describe, graphql, platform_env, run_cli

DOB = dt.datetime(2026, 1, 1)
BACKFILL_WAIT_S = 600
BACKFILL_LINE = re.compile(r"^backfill (\S+): 1 (\w+) partitions: (\S+)$", re.M)
SENSOR_RUN_WAIT_S = 420
NEW_SESSION = 3003
START_SENSOR = """
mutation($selector: SensorSelector!) { startSensor(sensorSelector: $selector) {
  __typename ... on Sensor { id sensorState { status } } ... on PythonError { message } } }
"""
STOP_SENSOR = """
mutation($id: String) { stopSensor(id: $id) { __typename } }
"""


def _session_assets(asset_graph, kind: str) -> set[dg.AssetKey]:
    """The assets a backfill of ``kind`` partitions must target: every asset partitioned by that kind."""
    pdef = PARTITIONS_BY_KIND[kind]
    keys = {k for k in asset_graph.materializable_asset_keys if asset_graph.get(k).partitions_def == pdef}
    assert dg.AssetKey(f"{kind}_inputs") in keys
    return keys


def _targets(backfill) -> set[tuple[str, str]]:
    """(asset, partition key) pairs a backfill targets."""
    subset = backfill.asset_backfill_data.target_subset
    assert not subset.non_partitioned_asset_keys
    return {(ak.asset_key.to_user_string(), ak.partition_key) for ak in subset.iterate_asset_partitions()}


def _add_minimal_sessions(lims: LimsClient) -> None:
    """Just the rows container resolution needs: ophys sessions with planes, behavior sessions, containers."""
    _, specimen = register_donor(lims, Donor("m1", "F", DOB))
    donor = lims.lookup_id("donors", "external_donor_name", "m1")
    lims.insert("ophys_sessions", [
        {"id": i, "name": f"s{i}", "stimulus_name": "OPHYS_1_images_A", "date_of_acquisition": DOB, "specimen_id": specimen}
        for i in (1001, 1002)
    ])
    lims.insert("ophys_experiments", [{"id": 1101, "ophys_session_id": 1001}, {"id": 1201, "ophys_session_id": 1002},
                                      {"id": 1202, "ophys_session_id": 1002}])
    lims.insert("behavior_sessions", [
        {"id": i, "stimulus_name": "TRAINING_1_gratings", "date_of_acquisition": DOB, "donor_id": donor}
        for i in (3001, 3002, 3003, 3101, 3102, 3103, 3104, 3105)
    ])
    register_container(lims, 901, "c901", "VisualBehavior", [("OphysExperiment", 1101), ("BehaviorSession", 3001),
                                                              ("BehaviorSession", 3002)])
    register_container(lims, 902, "c902", "VisualBehaviorMultiscope", [("OphysExperiment", 1201), ("OphysExperiment", 1202)])
    register_container(lims, 903, "c903", "VisualBehavior", [("BehaviorSession", i) for i in (3101, 3102, 3103, 3104, 3105)])


def test_launch_experiment_backfill_targets_exactly_the_container(lims):
    _add_minimal_sessions(lims)
    asset_graph = defs.resolve_asset_graph()
    with dg.instance_for_test() as instance:
        launched = launch_experiment_backfill(instance, asset_graph, lims, 901, batch_size=1)

        assert sorted((b.kind, b.partition_keys) for b in launched) == [
            ("behavior_session", ("3001",)), ("behavior_session", ("3002",)), ("ophys_session", ("1001",))
        ]
        stored = {b.backfill_id: instance.get_backfill(b.backfill_id) for b in launched}
        assert set(stored) == {b.backfill_id for b in instance.get_backfills()}, "a backfill outside the launched ones"
        for b in launched:
            backfill = stored[b.backfill_id]
            assert backfill.is_asset_backfill and backfill.status == BulkActionStatus.REQUESTED
            expected = {(k.to_user_string(), key) for k in _session_assets(asset_graph, b.kind) for key in b.partition_keys}
            assert _targets(backfill) == expected
            assert backfill.tags["release_platform/experiment_container"] == "901"
            assert backfill.tags["release_platform/kind"] == b.kind
        # Only the container's sessions became partitions: not 1002 (container 902) nor 3003 (no container).
        assert instance.get_dynamic_partitions("ophys_session") == ["1001"]
        assert sorted(instance.get_dynamic_partitions("behavior_session")) == ["3001", "3002"]

        # Batches: five sessions, at most two per backfill -> 2 + 2 + 1, covering each key exactly once.
        batched = launch_experiment_backfill(instance, asset_graph, lims, 903, batch_size=2)
        assert [len(b.partition_keys) for b in batched] == [2, 2, 1]
        keys = [k for b in batched for k in b.partition_keys]
        assert sorted(keys) == ["3101", "3102", "3103", "3104", "3105"]
        for b in batched:
            assert {key for _, key in _targets(instance.get_backfill(b.backfill_id))} == set(b.partition_keys)

        # A two-plane container is one ophys session: one partition, not one per plane.
        (meso,) = launch_experiment_backfill(instance, asset_graph, lims, 902, batch_size=1)
        assert (meso.kind, meso.partition_keys) == ("ophys_session", ("1002",))


def test_unknown_container_is_a_clear_error_with_exit_status_2(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = platform_env(home)
    result = run_cli(env, "backfill", "--experiment", "901", timeout=120)  # no LIMS yet: refused, not created
    assert result.returncode == 2 and "no LIMS database" in result.stderr and "lims upgrade" in result.stderr, describe(result)
    assert not (home / "lims.sqlite").exists()
    assert run_cli(env, "lims", "upgrade", timeout=120).returncode == 0
    result = run_cli(env, "backfill", "--experiment", "999", timeout=120)
    assert result.returncode == 2, describe(result)
    assert "backfill" not in result.stdout, describe(result)
    last = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ""
    assert last.startswith("error: ") and "experiment_container 999" in last and "unknown experiment container" in last, describe(result)
    assert "Traceback" not in result.stderr, describe(result)
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        assert instance.get_backfills() == []


@pytest.mark.slow
def test_daemon_executes_the_container_backfills_over_exactly_its_partitions(platform):
    with platform.instance() as instance:
        assert instance.get_runs() == [] and instance.get_backfills() == []

    result = run_cli(platform.env, "backfill", "--experiment", "901", "--batch-size", "1", "--wait", str(BACKFILL_WAIT_S),
                     timeout=BACKFILL_WAIT_S + 60)
    assert result.returncode == 0, f"{describe(result)}\n--- dagster dev log (tail)\n{platform.log_tail()}"
    announced = {m.group(1): (m.group(2), m.group(3)) for m in BACKFILL_LINE.finditer(result.stdout)}
    assert sorted(announced.values()) == [("behavior_session", "3001"), ("behavior_session", "3002"), ("ophys_session", "1001")], describe(result)

    expected_pairs = {("ophys_session", "1001"), ("behavior_session", "3001"), ("behavior_session", "3002")}
    asset_graph = defs.resolve_asset_graph()
    with platform.instance() as instance:
        backfills = {b.backfill_id: b for b in instance.get_backfills()}
        assert set(backfills) == set(announced), "backfills besides the announced ones"
        for backfill_id, (kind, key) in announced.items():
            backfill = backfills[backfill_id]
            assert backfill.status == BulkActionStatus.COMPLETED_SUCCESS, f"{backfill_id}: {backfill.status}"
            assert _targets(backfill) == {(k.to_user_string(), key) for k in _session_assets(asset_graph, kind)}
            assert backfill.tags["release_platform/experiment_container"] == "901"

        # Every run belongs to one of these backfills, succeeded, and carries exactly its backfill's key.
        runs = instance.get_runs()
        assert runs, "the daemon launched no run"
        runs_by_backfill = defaultdict(set)
        for run in runs:
            backfill_id = run.tags.get("dagster/backfill")
            assert backfill_id in announced, f"run {run.run_id} is not from the experiment backfills: {run.tags}"
            assert run.status == dg.DagsterRunStatus.SUCCESS, f"run {run.run_id}: {run.status}"
            kind, key = announced[backfill_id]
            assert run.tags.get("dagster/partition") == key, f"run {run.run_id} of backfill {backfill_id}: {run.tags}"
            assert run.asset_selection and run.asset_selection <= _session_assets(asset_graph, kind)
            runs_by_backfill[backfill_id].add(key)
        assert {announced[b] for b in runs_by_backfill} == expected_pairs

        # Materialized: exactly the container's partitions (not 1002, nor any other session).
        for kind in PARTITIONS_BY_KIND:
            expected = {key for k, key in expected_pairs if k == kind}
            assert instance.get_materialized_partitions(dg.AssetKey(f"{kind}_inputs")) == expected, kind
        assert instance.get_dynamic_partitions("ophys_session") == ["1001"]
        assert sorted(instance.get_dynamic_partitions("behavior_session")) == ["3001", "3002"]

    _sensor_runs_only_the_session_registered_later(platform, expected_pairs)


def _sensor_runs_only_the_session_registered_later(platform, processed: set[tuple[str, str]]) -> None:
    """Register a behavior session in LIMS after the backfills, start the behavior sensor (the platform runs with
    sensors off so that nothing else launches runs): it materializes the new session and requests no run for the
    behavior sessions already materialized."""
    client = LimsClient(platform.lims_url)
    try:
        spec = behavior_fixture.generate_behavior_session(
            platform.home / "raw", behavior_session_id=NEW_SESSION, session_type="TRAINING_3_images_A_10uL_reward", seed=NEW_SESSION)
        donor = client.lookup_id("donors", "external_donor_name", DEMO_DONORS["slc"].external_donor_name, create=False)
        register_behavior_session(client, spec, donor_id=donor, project=PROJECT_VB, equipment="BEH.D-Box1",
                                  date_of_acquisition=dt.datetime(2026, 9, 2, 9, 30))
    finally:
        client.dispose()
    selector = {"repositoryLocationName": "release_platform.definitions", "repositoryName": "__repository__",
                "sensorName": "behavior_session_sensor"}
    with platform.instance() as instance:
        before = {r.run_id for r in instance.get_runs()}
    started = graphql(platform.url, START_SENSOR, {"selector": selector})["startSensor"]
    assert started["__typename"] == "Sensor", started
    try:
        deadline = time.monotonic() + SENSOR_RUN_WAIT_S
        new_runs = []
        while time.monotonic() < deadline:
            with platform.instance() as instance:
                new_runs = [r for r in instance.get_runs() if r.run_id not in before]
                if new_runs and all(r.status in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE,
                                                 dg.DagsterRunStatus.CANCELED) for r in new_runs):
                    break
            time.sleep(3)
        else:
            raise AssertionError(f"the sensor's run did not finish in {SENSOR_RUN_WAIT_S} s: {new_runs}\n{platform.log_tail()}")
    finally:
        graphql(platform.url, STOP_SENSOR, {"id": started["id"]})
    assert [(r.tags.get("dagster/partition"), r.tags.get("dagster/sensor_name"), r.status) for r in new_runs] == [
        (str(NEW_SESSION), "behavior_session_sensor", dg.DagsterRunStatus.SUCCESS)], new_runs
    with platform.instance() as instance:
        assert instance.get_materialized_partitions(dg.AssetKey("behavior_session_inputs")) == {
            key for kind, key in processed if kind == "behavior_session"} | {str(NEW_SESSION)}
        assert str(NEW_SESSION) in instance.get_materialized_partitions(dg.AssetKey("behavior_session_qc_report"))
