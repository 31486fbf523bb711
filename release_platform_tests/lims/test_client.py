"""LimsClient on SQLite and on PostgreSQL (a fresh database per test, dropped afterwards)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import sqlalchemy as sa

from data_fixtures.seed import Donor, register_container, register_donor
from release_platform.errors import InputError
from release_platform.lims import LimsClient, LimsUnavailableError
from release_platform.lims import migrations

DOB = dt.datetime(2026, 1, 2)


def _ophys_session(lims: LimsClient, session_id: int, experiment_ids=(), *, state="uploaded") -> None:
    _, specimen = register_donor(lims, Donor("mouse-1", "F", DOB, ("Slc17a7-IRES2-Cre",), ("Ai93(TITL-GCaMP6f)",)))
    lims.insert(
        "ophys_sessions",
        [{"id": session_id, "name": f"s{session_id}", "stimulus_name": "OPHYS_1_images_A", "date_of_acquisition": DOB,
          "specimen_id": specimen, "workflow_state": state}],
    )
    for eid in experiment_ids:
        lims.insert("ophys_experiments", [{"id": eid, "ophys_session_id": session_id, "frame_rate_hz": 30.0,
                                           "targeted_structure_id": lims.lookup_id("structures", "acronym", "VISp"),
                                           "imaging_depth_id": lims.lookup_id("imaging_depths", "depth", 175)}])


def test_upgrade_is_versioned_and_idempotent(lims_url):
    client = LimsClient(lims_url)
    if client.sqlite_path is not None:  # a missing embedded LIMS is an error until upgrade creates it
        with pytest.raises(LimsUnavailableError, match="no LIMS database at .*release-platform lims upgrade"):
            client.schema_version()
        with pytest.raises(LimsUnavailableError, match="no LIMS database"):
            client.upgrade(create=False)
        assert not client.sqlite_path.exists()
        client.sqlite_path.touch()  # an empty SQLite file: schema version 0
    assert client.schema_version() == 0
    assert client.upgrade() == [m.version for m in migrations.MIGRATIONS]
    assert client.upgrade() == []
    assert client.schema_version() == migrations.LATEST_VERSION
    tables = set(sa.inspect(client.engine).get_table_names())
    for name in ("donors", "genotypes", "specimens", "projects", "equipment", "structures", "imaging_depths",
                 "behavior_sessions", "ophys_sessions", "ophys_experiments", "experiment_containers",
                 "experiment_container_memberships", "ophys_cell_segmentation_runs", "cell_rois",
                 "roi_exclusion_labels", "ecephys_sessions", "ecephys_probes", "ecephys_channels", "ecephys_units",
                 "icephys_cells", "well_known_files", "well_known_file_types"):
        assert name in tables
    client.dispose()


def test_upgrade_resumes_from_a_partial_schema(lims_url):
    client = LimsClient(lims_url)
    assert migrations.upgrade(client.engine, target=1) == [1]
    assert client.schema_version() == 1
    assert client.upgrade() == [m.version for m in migrations.MIGRATIONS if m.version > 1]
    assert client.exists("well_known_file_types", name="MotionCorrectedImageStack")
    client.dispose()


def test_new_sessions_pages_by_id_and_skips_failed(lims):
    for sid in (11, 12, 13, 14, 15):
        _ophys_session(lims, sid, state="failed" if sid == 13 else "uploaded")
    assert lims.new_sessions("ophys_session", after_id=0, limit=2) == [11, 12]
    assert lims.new_sessions("ophys_session", after_id=12, limit=2) == [14, 15]
    assert lims.new_sessions("ophys_session", after_id=15, limit=2) == []
    assert lims.new_sessions("behavior_session", after_id=0) == []


def test_session_record_joins_subject_and_unknown_id_is_clear(lims):
    _ophys_session(lims, 21, experiment_ids=(2101, 2102))
    record = lims.session("ophys_session", "21")
    assert record["subject"]["subject_id"] == "mouse-1"
    assert record["subject"]["sex"] == "F"
    assert record["subject"]["driver_line"] == ["Slc17a7-IRES2-Cre"]
    assert record["subject"]["reporter_line"] == ["Ai93(TITL-GCaMP6f)"]
    planes = lims.ophys_experiments(21)
    assert [p["id"] for p in planes] == [2101, 2102]
    assert planes[0]["targeted_structure"] == "VISp" and planes[0]["imaging_depth_um"] == 175
    with pytest.raises(InputError, match=r"ophys_session 999: unknown ophys_session id"):
        lims.session("ophys_session", 999)
    with pytest.raises(InputError, match="malformed ophys_session id 'abc'"):
        lims.session("ophys_session", "abc")
    with pytest.raises(InputError, match="unknown session kind"):
        lims.new_sessions("nope", 0)


def test_bound_parameters_make_hostile_strings_plain_data(lims):
    hostile = "x'); DROP TABLE donors; --"
    pid = lims.lookup_id("projects", "code", hostile)
    assert lims.lookup_id("projects", "code", hostile) == pid
    assert lims.exists("donors") is False  # the table is still there and empty
    with pytest.raises(InputError):
        lims.session("ophys_session", "1; DROP TABLE ophys_sessions")


def test_roi_masks_round_trip_with_labels_and_current_run(lims):
    _ophys_session(lims, 31, experiment_ids=(3101,))
    mask = np.array([[0, 1, 1], [1, 1, 0]], dtype=bool)
    lims.add_rois(3101, [{"id": 900, "x": 4, "y": 5, "width": 3, "height": 2, "mask": mask, "valid": True}])
    ids = lims.add_rois(
        3101,
        [
            {"id": 901, "x": 1, "y": 2, "width": 3, "height": 2, "mask": mask, "valid": True},
            {"id": 902, "x": 0, "y": 0, "width": 3, "height": 2, "mask": mask, "valid": False,
             "exclusion_labels": ["motion_border", "a_new_label"]},
        ],
    )
    assert ids == [901, 902]
    rois = lims.roi_masks(3101)
    assert [r["id"] for r in rois] == [901, 902]  # only the current segmentation run
    np.testing.assert_array_equal(rois[0]["mask"], mask)
    assert rois[1]["exclusion_labels"] == ["a_new_label", "motion_border"]
    assert rois[1]["valid"] is False
    with pytest.raises(InputError, match="mask shape"):
        lims.add_rois(3101, [{"x": 0, "y": 0, "width": 2, "height": 2, "mask": mask, "valid": True}])
    # explicit ids keep the id sequence usable afterwards (PostgreSQL setval)
    assert lims.add_rois(3101, [{"x": 0, "y": 0, "width": 3, "height": 2, "mask": mask, "valid": True}]) == [903]


def test_register_file_is_an_idempotent_upsert(lims, tmp_path):
    _ophys_session(lims, 41, experiment_ids=(4101,))
    first = lims.register_file("OphysExperiment", 4101, "MotionCorrectedImageStack", tmp_path / "a" / "movie.h5")
    again = lims.register_file("OphysExperiment", 4101, "MotionCorrectedImageStack", tmp_path / "a" / "movie.h5")
    moved = lims.register_file("OphysExperiment", 4101, "MotionCorrectedImageStack", tmp_path / "b" / "movie.h5")
    assert first == again == moved
    assert lims.well_known_file("OphysExperiment", 4101, "MotionCorrectedImageStack") == tmp_path / "b" / "movie.h5"
    lims.register_file("OphysExperiment", 4101, "BrandNewType", tmp_path / "x.h5")
    assert set(lims.well_known_files("OphysExperiment", 4101)) == {"MotionCorrectedImageStack", "BrandNewType"}
    with pytest.raises(InputError, match=r"OphysExperiment 4101: no well-known file of type 'OphysDffTraceFile'"):
        lims.well_known_file("OphysExperiment", 4101, "OphysDffTraceFile")
    with pytest.raises(InputError, match="unknown attachable type"):
        lims.register_file("Nope", 1, "X", tmp_path / "x")


def test_container_sessions_resolve_experiments_to_sessions(lims):
    _ophys_session(lims, 51, experiment_ids=(5101, 5102))
    _ophys_session(lims, 52, experiment_ids=(5201,))
    _, specimen = register_donor(lims, Donor("mouse-2", "M", DOB))
    donor = lims.lookup_id("donors", "external_donor_name", "mouse-2")
    lims.insert("behavior_sessions", [{"id": 61, "stimulus_name": "TRAINING_1_gratings", "date_of_acquisition": DOB, "donor_id": donor}])
    register_container(lims, 7, "c7", "VisualBehavior", [("OphysExperiment", 5101), ("OphysExperiment", 5102), ("BehaviorSession", 61)])
    register_container(lims, 8, "c8", "VisualBehavior", [("OphysSession", 52)])
    assert lims.container_sessions(7) == {"ophys_session": ["51"], "behavior_session": ["61"]}
    assert lims.container_sessions("8") == {"ophys_session": ["52"]}
    with pytest.raises(InputError, match="experiment_container 9: unknown experiment container"):
        lims.container_sessions(9)


def test_outage_raises_a_clear_error(tmp_path):
    client = LimsClient("postgresql+psycopg2://nobody:secret@127.0.0.1:1/lims")
    with pytest.raises(LimsUnavailableError, match=r"LIMS at postgresql\+psycopg2://nobody:\*\*\*@127.0.0.1:1/lims is unavailable"):
        client.new_sessions("ophys_session", 0)
    (tmp_path / "empty.sqlite").touch()
    empty = LimsClient(f"sqlite:///{tmp_path / 'empty.sqlite'}")
    with pytest.raises(LimsUnavailableError, match="has no schema.*release-platform lims upgrade"):
        empty.new_sessions("ophys_session", 0)
    missing = LimsClient(f"sqlite:///{tmp_path / 'missing' / 'lims.sqlite'}")
    with pytest.raises(LimsUnavailableError, match="no LIMS database at .*missing/lims.sqlite.*release-platform lims upgrade"):
        missing.new_sessions("ophys_session", 0)
    assert not (tmp_path / "missing").exists()  # never created by a query


def test_linked_behavior_session(lims):
    _ophys_session(lims, 81)
    _ophys_session(lims, 82)
    donor = lims.lookup_id("donors", "external_donor_name", "mouse-1")
    row = {"stimulus_name": "OPHYS_1_images_A", "date_of_acquisition": DOB, "donor_id": donor}
    lims.insert("behavior_sessions", [{**row, "id": 91, "ophys_session_id": 81}])
    assert lims.linked_behavior_session("ophys_session", 81) == 91
    assert lims.linked_behavior_session("ophys_session", 82) is None
    lims.insert("behavior_sessions", [{**row, "id": 92, "ophys_session_id": 81}])
    with pytest.raises(InputError, match=r"ophys_session 81: linked to several behavior sessions \[91, 92\]"):
        lims.linked_behavior_session("ophys_session", 81)
