"""Every table built from hand-made LIMS rows, on SQLite and PostgreSQL: each derivation rule, mesoscope plane
groups, habituation sessions with and without omissions, repeated session types, a session in no container,
failed planes, ecephys probes/channels/units, and per-session builds that agree with the whole-release build."""

from __future__ import annotations

import warnings

import pandas as pd
import pytest

from release_platform.errors import InputError
from release_platform.lims import LimsClient
from release_platform.metadata import MetadataWarning, Targets, build_tables, gather, gather_for, validate_tables
from release_platform_tests.metadata import LimsWorld, day
from release_platform_tests.pg import fresh_database

GRATINGS, TRAIN_A = "TRAINING_1_gratings", "TRAINING_4_images_A_training"
HAB = "OPHYS_0_images_A_habituation"


def _stim(path, omitted):
    frame = pd.DataFrame({"start_time": [0.0, 0.75, 1.5], "stop_time": [0.25, 1.0, 1.75]})
    if omitted is not None:
        frame["omitted"] = omitted
    frame.to_csv(path, index=False)
    return path


def populate(client: LimsClient, tmp) -> None:
    w = LimsWorld(client)
    w.donor("m1")
    w.donor("m2", sex="M", driver=("Sst-IRES-Cre",), reporter=("Ai148(TIT2L-GC6f-ICL-tTA2)",))
    w.donor("m3", driver=("Vip-IRES-Cre",), reporter=("Ai32(RCL-ChR2(H134R)_EYFP)",))
    # m1: training, three habituation sessions (omissions: yes / no / unknown), three ophys sessions.
    w.behavior(1, "m1", GRATINGS, day(0))
    w.behavior(2, "m1", TRAIN_A, day(1))
    w.behavior(3, "m1", HAB, day(2), stimulus_presentations=_stim(tmp / "s3.csv", [False, True, False]))
    w.behavior(4, "m1", HAB, day(3), stimulus_presentations=_stim(tmp / "s4.csv", [False, False, False]))
    w.behavior(5, "m1", HAB, day(4), stimulus_presentations=_stim(tmp / "s5.csv", None))
    w.ophys(101, "m1", "OPHYS_1_images_A", day(5), [(1011, 175, "VISp", None, "passed", [(11, True, 9001), (12, False, None), (13, True, None)])])
    w.behavior(6, "m1", "OPHYS_1_images_A", day(5) - pd.Timedelta(minutes=5), ophys_session_id=101)
    w.ophys(102, "m1", "OPHYS_1_images_A", day(6), [(1012, 181, "VISp", None, "passed", [(14, True, 9001)])])
    w.behavior(7, "m1", "OPHYS_1_images_A", day(6), ophys_session_id=102)
    w.ophys(103, "m1", "OPHYS_4_images_B", day(7), [(1013, 190, "VISp", None)])
    w.behavior(8, "m1", "OPHYS_4_images_B", day(7), ophys_session_id=103)
    w.container(900, [("OphysExperiment", 1011), ("OphysExperiment", 1012), ("BehaviorSession", 1)])
    # m2: a mesoscope session with two plane groups, a failed plane, no behavior session, container via the session.
    w.ophys(201, "m2", "OPHYS_1_images_A", day(0), [
        (2011, 150, "VISp", 0, "passed", [(21, True, None)]), (2012, 150, "VISl", 0), (2013, 250, "VISp", 1),
        (2014, 250, "VISl", 1), (2015, 300, "VISl", 2, "failed", [(25, True, None)]),
    ], project="VisualBehaviorMultiscope", rig="MESO.1")
    w.container(901, [("OphysSession", 201)], project="VisualBehaviorMultiscope")
    # m3: training on images G, then an ecephys session linked to a behavior session.
    w.behavior(29, "m3", "TRAINING_5_images_G_handoff_ready", day(0))
    w.ecephys(301, "m3", "EPHYS_1_images_G_3uL_reward", day(1), [
        dict(id=3011, name="probeA", channels=[(30110, 0, "VISp", True), (30111, 1, "CA1", True), (30112, 2, None, False)],
             units=[(30001, 30110, {"firing_rate": 4.5, "snr": 3.1, "presence_ratio": 0.99}), (30002, 30111, {"firing_rate": 0.5})],
             lfp=tmp / "lfp.nwb"),
        dict(id=3012, name="probeB", channels=[(30120, 0, "LP", True)], units=[]),
    ])
    w.behavior(30, "m3", "EPHYS_1_images_G_3uL_reward", day(1), ecephys_session_id=301, rig="BEH.X")


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def world(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("world")
    if request.param == "sqlite":
        client = LimsClient(f"sqlite:///{tmp / 'lims.sqlite'}")
        client.upgrade()
        populate(client, tmp)
        yield client
        client.dispose()
    else:
        with fresh_database("rp_meta") as url:
            client = LimsClient(url)
            client.upgrade()
            populate(client, tmp)
            yield client
            client.dispose()


@pytest.fixture(scope="module")
def release(world):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", MetadataWarning)
        rows = gather(world, behavior_session_ids=[1, 2, 3, 4, 5, 6, 7, 8, 29, 30], ophys_session_ids=[101, 102, 103, 201],
                      ecephys_session_ids=[301])
        built = build_tables(rows)
    return built.tables, [str(w.message) for w in caught]


def by_id(frame, col):
    return frame.set_index(col)


def test_every_table_validates_with_its_references(release):
    tables, _ = release
    reports = validate_tables(tables, require_parents=True)
    assert all(r.passed for r in reports.values()), [r.summary() for r in reports.values() if not r.passed]
    for name, frame in tables.items():
        from release_platform.metadata import columns_of
        assert list(frame.columns) == columns_of(name)


def test_behavior_session_rules(release):
    tables, notes = release
    b = by_id(tables["behavior_session_table"], "behavior_session_id")
    assert b.loc[1, "image_set"] == "gratings" and pd.isna(b.loc[1, "prior_exposures_to_image_set"])
    assert b.loc[1, "experience_level"] == "Training" and pd.isna(b.loc[1, "session_number"])
    assert b.loc[3, "session_number"] == 0 and b.loc[3, "experience_level"] == "Familiar"
    # Habituation: session 3 had omitted flashes (file), 4 had none (file), 5 unknown (no column) -> none + warning.
    assert b.loc[[1, 2, 3, 4, 5, 6, 7, 8], "prior_exposures_to_omissions"].tolist() == [0, 0, 0, 1, 1, 1, 2, 3]
    assert any("[5]" in n and "omitted" in n for n in notes)
    # Image set A: 2 (training A), 3, 4, 5 (habituation), 6, 7 (OPHYS_1 twice).
    assert b.loc[[2, 3, 4, 5, 6, 7], "prior_exposures_to_image_set"].tolist() == [0, 1, 2, 3, 4, 5]
    assert b.loc[8, "prior_exposures_to_image_set"] == 0 and b.loc[8, "experience_level"] == "Novel 1"
    # Repeated session types.
    assert b.loc[[3, 4, 5], "prior_exposures_to_session_type"].tolist() == [0, 1, 2]
    assert b.loc[[6, 7], "prior_exposures_to_session_type"].tolist() == [0, 1]
    # Linked behavior sessions take the ophys rig but keep their own date.
    assert b.loc[6, "equipment_name"] == "CAM2P.4" and b.loc[1, "equipment_name"] == "BEH.D-Box1"
    assert b.loc[6, "date_of_acquisition"] == pd.Timestamp(day(5) - pd.Timedelta(minutes=5), tz="UTC")
    # Containers: direct (1), through the ophys session's planes (6, 7), none (2, 8).
    assert b.loc[1, "ophys_container_id"] == [900] and b.loc[6, "ophys_container_id"] == [900] and b.loc[8, "ophys_container_id"] == []
    assert b.loc[6, "ophys_experiment_id"] == [1011] and b.loc[1, "ophys_experiment_id"] == []
    assert b.loc[6, "imaging_plane_group_count"] == 0 and pd.isna(b.loc[1, "imaging_plane_group_count"])
    assert b.loc[6, "num_targeted_structures"] == 1 and b.loc[6, "num_depths_per_area"] == 1
    assert b.loc[1, "cre_line"] == "Slc17a7-IRES2-Cre" and b.loc[1, "indicator"] == "GCaMP6f" and b.loc[1, "sex"] == "F"
    assert b.loc[1, "driver_line"] == ["Camk2a-tTA", "Slc17a7-IRES2-Cre"] and b.loc[1, "age_in_days"] == 184
    assert b.loc[30, "ecephys_session_id"] == 301 and b.loc[30, "equipment_name"] == "NP.1"
    assert b["file_id"].isna().all()  # no file links given
    assert str(b["age_in_days"].dtype) == "Int64" and str(b["date_of_acquisition"].dtype) == "datetime64[ns, UTC]"


def test_ophys_session_rules_mesoscope_and_no_container(release):
    tables, _ = release
    s = by_id(tables["ophys_session_table"], "ophys_session_id")
    assert s.loc[101, "behavior_session_id"] == 6 and pd.isna(s.loc[201, "behavior_session_id"])
    assert s.loc[201, "imaging_plane_group_count"] == 2 and s.loc[101, "imaging_plane_group_count"] == 0
    assert (s.loc[201, "num_targeted_structures"], s.loc[201, "num_depths_per_area"]) == (2, 4)
    assert s.loc[201, "ophys_experiment_id"] == [2011, 2012, 2013, 2014]  # failed plane 2015 left out
    assert s.loc[201, "ophys_container_id"] == [901] and s.loc[103, "ophys_container_id"] == []
    assert s.loc[[101, 102], "prior_exposures_to_session_type"].tolist() == [0, 1]
    assert s.loc[102, "prior_exposures_to_omissions"] == 2 and s.loc[102, "experience_level"] == "Familiar"
    assert s.loc[201, "prior_exposures_to_session_type"] == 0 and s.loc[201, "mouse_id"] == "m2"
    assert s.loc[201, "cre_line"] == "Sst-IRES-Cre" and s.loc[201, "indicator"] == "GCaMP6f"
    assert s.loc[101, "date_of_acquisition"] == pd.Timestamp(day(5), tz="UTC")  # the ophys session's own date


def test_experiment_rules(release):
    tables, _ = release
    e = by_id(tables["ophys_experiment_table"], "ophys_experiment_id")
    assert 2015 not in e.index
    assert e.loc[1011, "ophys_container_id"] == 900 and pd.isna(e.loc[1013, "ophys_container_id"])
    assert e.loc[1011, "targeted_imaging_depth"] == 178  # trunc(mean(175, 181)) over container 900
    assert e.loc[1013, "targeted_imaging_depth"] == 190  # no container: its own depth
    assert e.loc[2011, "targeted_imaging_depth"] == 200  # container 901 holds the session: mean of its 4 planes
    assert e.loc[[2011, 2013], "imaging_plane_group"].tolist() == [0, 1] and pd.isna(e.loc[1011, "imaging_plane_group"])
    assert e.loc[2012, "targeted_structure"] == "VISl" and e.loc[2012, "imaging_depth"] == 150
    assert e.loc[1013, "image_set"] == "images_B" and not e["passive"].any()
    # image_set means the same in every table.
    s = by_id(tables["ophys_session_table"], "ophys_session_id")
    assert (e["image_set"] == e["ophys_session_id"].map(s["image_set"])).all()
    assert e.loc[1011, "behavior_session_id"] == 6 and e.loc[1011, "prior_exposures_to_image_set"] == 4


def test_cells_are_valid_rois_of_live_planes(release):
    tables, _ = release
    c = tables["ophys_cells_table"]
    assert c["cell_roi_id"].tolist() == [11, 13, 14, 21]
    assert c.set_index("cell_roi_id").loc[11, "cell_specimen_id"] == 9001 and pd.isna(c.set_index("cell_roi_id").loc[13, "cell_specimen_id"])


def test_ecephys_tables(release):
    tables, _ = release
    s = tables["ecephys_session_table"].iloc[0]
    assert s["behavior_session_id"] == 30 and s["session_number"] == 1 and s["image_set"] == "images_G"
    assert s["prior_exposures_to_image_set"] == 1 and s["experience_level"] == "Familiar"
    assert (s["probe_count"], s["channel_count"], s["unit_count"]) == (2, 4, 2)
    assert s["structure_acronyms"] == ["CA1", "LP", "VISp"] and s["cre_line"] == "Vip-IRES-Cre" and pd.isna(s["reporter_line"]) is False
    p = by_id(tables["probes"], "ecephys_probe_id")
    assert p.loc[3011, "has_lfp_data"] and not p.loc[3012, "has_lfp_data"] and p.loc[3011, "unit_count"] == 2
    ch = by_id(tables["channels"], "ecephys_channel_id")
    assert ch.loc[30110, "unit_count"] == 1 and pd.isna(ch.loc[30112, "structure_acronym"]) and ch.loc[30120, "ecephys_session_id"] == 301
    u = by_id(tables["units"], "unit_id")
    assert u.loc[30001, "firing_rate"] == 4.5 and u.loc[30001, "structure_acronym"] == "VISp" and pd.isna(u.loc[30002, "snr"])
    assert u.loc[30002, "ecephys_probe_id"] == 3011


@pytest.mark.parametrize("kind, ids", [("behavior_session", [3, 6, 8]), ("ophys_session", [102, 201]), ("ecephys_session", [301])])
def test_per_session_builds_match_the_release_build(world, release, kind, ids):
    tables, _ = release
    for sid in ids:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MetadataWarning)
            rows, targets = gather_for(world, kind, [sid])
            built = build_tables(rows, targets).tables
        for name, frame in built.items():
            if frame.empty:
                continue
            whole = tables[name]
            key = frame.columns[0]
            expected = whole[whole[key].isin(frame[key])].reset_index(drop=True)
            pd.testing.assert_frame_equal(frame.reset_index(drop=True), expected)


def test_ambiguous_behavior_link_is_an_error(lims):
    w = LimsWorld(lims)
    w.donor("m9")
    w.ophys(501, "m9", "OPHYS_1_images_A", day(0), [(5011, 175, "VISp", None)])
    w.behavior(51, "m9", "OPHYS_1_images_A", day(0), ophys_session_id=501)
    w.behavior(52, "m9", "OPHYS_1_images_A", day(0), ophys_session_id=501)
    rows, targets = gather_for(lims, "ophys_session", [501], read_omissions=False)
    with pytest.raises(InputError, match=r"ophys_session 501 <- behavior_sessions \[51, 52\]"):
        build_tables(rows, targets)
    rows, targets = gather_for(lims, "behavior_session", [51], read_omissions=False)
    with pytest.raises(InputError, match="ambiguous LIMS link"):
        build_tables(rows, targets)


def test_targets_only_selects_one_kind():
    t = Targets.only("ophys_session", [5])
    assert t.ophys_session_ids == {5} and t.behavior_session_ids == set() and t.ecephys_session_ids == set()


def test_probes_carry_deterministic_lfp_file_ids(world, tmp_path):
    from release_platform.metadata import FileLinks, directory_resolver, file_id
    from release_platform_tests.metadata import touch

    touch(tmp_path / "ecephys_session_301.nwb")
    lfp = touch(tmp_path / "lfp_probe_3011.nwb")
    links = FileLinks(paths={"ecephys_nwb": directory_resolver(tmp_path, "ecephys_nwb", [301]),
                             "ecephys_lfp_nwb": directory_resolver(tmp_path, "ecephys_lfp_nwb", [3011, 3012])})
    rows, targets = gather_for(world, "ecephys_session", [301])
    built = build_tables(rows, targets, files=links, on_missing_file="error")  # probeB has no LFP: not missing
    p = by_id(built.tables["probes"], "ecephys_probe_id")
    assert p.loc[3011, "file_id"] == file_id("ecephys_lfp_nwb", 3011) and p.loc[3011, "file_path"] == str(lfp)
    assert pd.isna(p.loc[3012, "file_id"]) and pd.isna(p.loc[3012, "file_path"]) and built.missing_files == []
    again = build_tables(*gather_for(world, "ecephys_session", [301]), files=links).tables["probes"]
    pd.testing.assert_series_equal(again["file_id"], built.tables["probes"]["file_id"])
