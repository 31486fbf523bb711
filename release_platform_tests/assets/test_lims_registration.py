"""LIMS write-back in one place, and input assets that carry what later steps need from LIMS."""

from __future__ import annotations

import pytest

from release_platform.assets.lims_registration import (
    PRODUCED_FILE_TYPES,
    mark_release_files_staged,
    register_produced_files,
)
from release_platform.inputs import resolve_session
from release_platform.lims.resource import LimsResource


@pytest.fixture
def lims(demo_lims):
    return LimsResource(url=demo_lims.url)


def test_registration_is_an_idempotent_upsert_per_entity_and_type(demo_lims, lims, tmp_path):
    plane = demo_lims.ophys_experiments(1001)[0]["id"]
    first = register_produced_files(lims, "dff_traces", {str(plane): tmp_path / "a" / "dff.h5"})
    again = register_produced_files(lims, "dff_traces", {plane: tmp_path / "a" / "dff.h5"})
    assert first == again
    moved = register_produced_files(lims, "dff_traces", {plane: tmp_path / "b" / "dff.h5"})
    assert moved == first
    assert demo_lims.well_known_files("OphysExperiment", plane)["OphysDffTraceFile"] == tmp_path / "b" / "dff.h5"
    assert set(PRODUCED_FILE_TYPES) >= {"demixed_traces", "neuropil_corrected_traces", "dff_traces"}
    with pytest.raises(KeyError):
        register_produced_files(lims, "not_an_asset", {plane: tmp_path / "x"})


def test_staging_advances_workflow_state_forward_only(demo_lims, lims):
    assert demo_lims.session("behavior_session", 3001)["workflow_state"] == "uploaded"
    assert mark_release_files_staged(lims, "behavior_session", 3001) == "passed"
    assert demo_lims.session("behavior_session", 3001)["workflow_state"] == "passed"
    assert mark_release_files_staged(lims, "behavior_session", 3001) is None  # already passed
    demo_lims.set_workflow_state("behavior_session", 3002, "published")
    assert mark_release_files_staged(lims, "behavior_session", 3002) is None
    assert demo_lims.session("behavior_session", 3002)["workflow_state"] == "published"


def test_input_records_carry_probes_and_linked_behavior_session(demo_lims):
    ecephys = resolve_session(demo_lims, "ecephys_session", 4001)
    records = demo_lims.ecephys_probes(4001)
    assert [p.lims_record for p in ecephys.probes] == records
    assert all(p.lims_record["channels"] and p.lims_record["units"] for p in ecephys.probes)
    assert "lims_record" not in ecephys.model_dump(mode="json")["probes"][0]
    linked_seen = 0
    for session_id in demo_lims.session_ids("ophys_session"):
        ophys = resolve_session(demo_lims, "ophys_session", session_id)
        linked = demo_lims.linked_behavior_session("ophys_session", session_id)
        if linked is None:
            assert ophys.behavior_session is None
        else:
            assert ophys.behavior_session.session_id == linked
            linked_seen += 1
            assert {"BehaviorTrials", "BehaviorLicks", "BehaviorRewards"} <= set(ophys.behavior_session.files)
    assert linked_seen >= 1


def test_ecephys_writer_inputs_come_from_the_carried_records(demo_lims, tmp_path):
    from types import SimpleNamespace

    from release_platform.assets.nwb_ecephys import _nwb_inputs
    from release_platform.assets.resources import StorageResource
    from release_platform.errors import InputError

    context, storage = SimpleNamespace(partition_key="4001"), StorageResource(root=str(tmp_path))
    session = resolve_session(demo_lims, "ecephys_session", 4001)
    inputs = _nwb_inputs(context, session, storage)
    assert [p.id for p in inputs.probes] == [p.probe_id for p in session.probes]
    stale = session.model_copy(update={"probes": [p.model_copy(update={"lims_record": {}}) for p in session.probes]})
    with pytest.raises(InputError, match="re-materialize ecephys_session_inputs"):
        _nwb_inputs(context, stale, storage)
