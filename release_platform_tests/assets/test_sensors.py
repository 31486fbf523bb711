"""Session sensors: new LIMS sessions become partitions exactly once; paging; outage; re-delivery."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pytest

from data_fixtures.seed import Donor, register_donor
from release_platform.assets.sensors import make_session_sensor
from release_platform.definitions import SESSION_JOBS
from release_platform.lims import LimsClient
from release_platform.lims.resource import LimsResource

DOB = dt.datetime(2026, 1, 1)


def _add_behavior_sessions(lims: LimsClient, ids) -> None:
    donor, _ = register_donor(lims, Donor("m1", "M", DOB))
    lims.insert("behavior_sessions", [
        {"id": i, "stimulus_name": "TRAINING_1_gratings", "date_of_acquisition": DOB, "donor_id": donor} for i in ids
    ])


def _tick(sensor, instance, lims_url, cursor):
    """Evaluate one tick and apply its partition additions, as the daemon does."""
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources={"lims": LimsResource(url=lims_url)}) as context:
        result = sensor(context)
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


def test_new_sessions_become_partitions_exactly_once_with_paging(lims, lims_url, instance):
    _add_behavior_sessions(lims, [3, 1, 2, 5, 4])
    sensor = make_session_sensor("behavior_session", SESSION_JOBS["behavior_session"], page_size=2)

    first = _tick(sensor, instance, lims_url, None)
    assert [r.partition_key for r in first.run_requests] == ["1", "2"]
    assert [r.run_key for r in first.run_requests] == ["behavior_session:1", "behavior_session:2"]
    assert first.cursor == "2"
    second = _tick(sensor, instance, lims_url, first.cursor)
    third = _tick(sensor, instance, lims_url, second.cursor)
    assert [r.partition_key for r in second.run_requests] == ["3", "4"]
    assert [r.partition_key for r in third.run_requests] == ["5"]
    idle = _tick(sensor, instance, lims_url, third.cursor)
    assert idle.run_requests == [] and not idle.dynamic_partitions_requests and idle.cursor == "5"
    assert sorted(instance.get_dynamic_partitions("behavior_session"), key=int) == ["1", "2", "3", "4", "5"]

    # Re-delivery (cursor lost): nothing is added, and the runs requested again carry the run keys of the first
    # requests, which Dagster never launches twice.
    again = _tick(sensor, instance, lims_url, None)
    assert not again.dynamic_partitions_requests
    assert {r.run_key for r in again.run_requests} <= {f"behavior_session:{k}" for k in "12345"}

    lims.insert(
        "behavior_sessions",
        [{"id": 9, "stimulus_name": "OPHYS_1_images_A", "date_of_acquisition": DOB,
          "donor_id": lims.lookup_id("donors", "external_donor_name", "m1")}],
    )
    later = _tick(sensor, instance, lims_url, idle.cursor)
    assert [r.partition_key for r in later.run_requests] == ["9"]


def test_outage_fails_the_tick_and_loses_nothing(lims, lims_url, instance):
    _add_behavior_sessions(lims, [1, 2])
    sensor = make_session_sensor("behavior_session", SESSION_JOBS["behavior_session"])
    down = "postgresql+psycopg2://lims@127.0.0.1:1/lims"
    with pytest.raises(Exception, match=r"behavior_session_sensor: LIMS at .* is unavailable.*cursor stays at 0"):
        _tick(sensor, instance, down, "0")
    assert instance.get_dynamic_partitions("behavior_session") == []
    recovered = _tick(sensor, instance, lims_url, "0")
    assert [r.partition_key for r in recovered.run_requests] == ["1", "2"]


def test_a_sensor_per_kind_is_defined():
    from release_platform.definitions import defs

    names = {s.name for s in defs.sensors}
    assert names == {"ophys_session_sensor", "behavior_session_sensor", "ecephys_session_sensor", "icephys_cell_sensor"}


def test_materialized_partitions_are_not_run_again(lims, lims_url, instance):
    """Sessions processed before the sensor ran (the demo, a backfill) get no run; a later session does; a partition
    added by hand but never materialized is run."""
    _add_behavior_sessions(lims, [3001, 3002, 3003])
    instance.add_dynamic_partitions("behavior_session", ["3001", "3002", "3003"])
    for key in ("3001", "3002"):
        instance.report_runless_asset_event(dg.AssetMaterialization("behavior_session_inputs", partition=key))
    sensor = make_session_sensor("behavior_session", SESSION_JOBS["behavior_session"])
    first = _tick(sensor, instance, lims_url, None)
    assert [r.partition_key for r in first.run_requests] == ["3003"] and not first.dynamic_partitions_requests
    assert first.cursor == "3003"
    _add_behavior_sessions_later(lims, [3004])
    later = _tick(sensor, instance, lims_url, first.cursor)
    assert [r.partition_key for r in later.run_requests] == ["3004"]
    assert instance.get_dynamic_partitions("behavior_session")[-1] == "3004"


def _add_behavior_sessions_later(lims: LimsClient, ids) -> None:
    donor = lims.lookup_id("donors", "external_donor_name", "m1")
    lims.insert("behavior_sessions", [
        {"id": i, "stimulus_name": "TRAINING_1_gratings", "date_of_acquisition": DOB, "donor_id": donor} for i in ids
    ])


def test_sensors_run_by_default_and_turn_off_by_environment(monkeypatch):
    from release_platform.assets import sensors

    monkeypatch.delenv(sensors.SENSORS_ENV, raising=False)
    assert sensors._default_status() == dg.DefaultSensorStatus.RUNNING
    for value in ("off", "OFF", "0", "false"):
        monkeypatch.setenv(sensors.SENSORS_ENV, value)
        assert sensors._default_status() == dg.DefaultSensorStatus.STOPPED
    monkeypatch.setenv(sensors.SENSORS_ENV, "on")
    assert sensors._default_status() == dg.DefaultSensorStatus.RUNNING
