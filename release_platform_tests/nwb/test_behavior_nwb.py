"""Behavior-session NWB writer and readers on the demo sessions and synthetic change-detection sessions."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from data_fixtures.behavior import BehaviorParams, generate_behavior_session
from release_platform.errors import InputError
from release_platform.inputs import Subject, resolve_session
from release_platform.lims import LimsClient
from release_platform.nwb import behavior as B
from release_platform.nwb import readers as R
from release_platform.nwb.inspection import inspect_nwb
from release_platform.nwb.protocol import NwbWriteError, read_provenance
from release_platform_tests.nwb.raw_tables import assert_matches_raw_csv, assert_sync_timed

BLOCKING = ("ERROR", "PYNWB_VALIDATION", "CRITICAL", "BEST_PRACTICE_VIOLATION")
SUBJECT = Subject(subject_id="512345", sex="M", species="Mus musculus", date_of_birth=dt.datetime(2021, 1, 1),
                  full_genotype="Vip-IRES-Cre/wt;Ai148/wt", driver_line=["Vip-IRES-Cre"], reporter_line=["Ai148"])


@pytest.fixture(scope="module")
def demo(seeded_demo, tmp_path_factory):
    root = tmp_path_factory.mktemp("behavior_nwb")
    client = LimsClient(f"sqlite:///{seeded_demo / 'lims.sqlite'}")
    out = {}
    for sid in (3001, 3002):
        inputs = B.BehaviorNwbInputs.from_session(resolve_session(client, "behavior_session", sid), output_dir=root / str(sid))
        out[sid] = (inputs, B.write_behavior_nwb(inputs))
    client.dispose()
    return out


def _inputs(spec, out_dir, **overrides) -> B.BehaviorNwbInputs:
    raw = dict(behavior_session_id=spec.behavior_session_id, output_dir=os.fspath(out_dir),
               session_start_time=dt.datetime(2021, 4, 1, 9, 0), session_type=spec.session_type, subject=SUBJECT,
               trials_path=os.fspath(spec.trials_path), licks_path=os.fspath(spec.licks_path),
               rewards_path=os.fspath(spec.rewards_path), running_speed_path=os.fspath(spec.running_speed_path),
               stimulus_presentations_path=os.fspath(spec.stimulus_presentations_path))
    raw.update(overrides)
    return B.BehaviorNwbInputs.model_validate(raw)


def test_demo_files_pass_the_dandi_inspector(demo):
    for sid, (inputs, out) in demo.items():
        assert Path(out.output_path).name == f"behavior_session_{sid}.nwb"
        report = inspect_nwb(out.output_path, config="dandi")
        assert report.at(*BLOCKING) == []
        assert report.counts["CRITICAL"] == report.counts["BEST_PRACTICE_VIOLATION"] == 0


def test_every_table_reads_back_equal(demo):
    for sid, (inputs, out) in demo.items():
        tables = B.load_behavior_tables(inputs)
        trials = R.read_trials(out.output_path)
        pd.testing.assert_frame_equal(trials, tables.trials)
        assert trials.index.name == "trials_id" and trials["go"].dtype == bool
        pd.testing.assert_frame_equal(R.read_stimulus_presentations(out.output_path), tables.stimulus_presentations)
        pd.testing.assert_frame_equal(R.read_licks(out.output_path), tables.licks)
        pd.testing.assert_frame_equal(R.read_rewards(out.output_path), tables.rewards)
        pd.testing.assert_frame_equal(R.read_running_speed(out.output_path), tables.running, rtol=0, atol=1e-9)
        raw = pd.read_csv(inputs.trials_path)
        assert len(trials) == len(raw) and list(trials.index) == raw["trials_id"].tolist()
        with h5py.File(out.output_path, "r") as f:
            assert list(f["intervals"]) == ["images_A_presentations", "trials"]
            assert f["processing/running/running_speed/data"].attrs["unit"] == "cm/s"
            assert f["processing/rewards/volume/data"].attrs["unit"] == "mL"


def test_readers_return_the_raw_inputs(demo):
    """The readers against the raw CSV files the session was written from (not the writer's own loaders)."""
    for sid, (inputs, out) in demo.items():
        assert_matches_raw_csv(R.read_trials(out.output_path), inputs.trials_path, index="trials_id")
        assert_matches_raw_csv(R.read_licks(out.output_path), inputs.licks_path)
        assert_matches_raw_csv(R.read_rewards(out.output_path), inputs.rewards_path)
        assert_matches_raw_csv(R.read_running_speed(out.output_path), inputs.running_speed_path, atol=1e-9)
        presentations = R.read_stimulus_presentations(out.output_path)
        assert inputs.sync_path, "the demo behavior sessions have a rig sync file"
        # with a sync file the times come from it (frame indices + monitor delay); every other column is the CSV's
        assert_matches_raw_csv(presentations, inputs.stimulus_presentations_path, skip=("start_time", "stop_time", "duration"))
        assert_sync_timed(presentations, inputs.sync_path)
        assert list(presentations.index) == list(range(len(presentations)))


def test_session_metadata_subject_and_provenance(demo):
    inputs, out = demo[3001]
    meta = R.read_session_metadata(out.output_path)
    assert meta["behavior_session_id"] == 3001 and meta["session_id"] == "3001"
    assert meta["session_type"] == "TRAINING_3_images_A_10uL_reward" and meta["equipment_name"] == "BEH.D-Box1"
    days = (inputs.session_start_time.replace(tzinfo=None) - inputs.subject.date_of_birth).days
    assert meta["subject"]["age"] == f"P{days}D" and meta["subject"]["sex"] == "F"
    assert "Ai93" in meta["subject"]["description"] and meta["subject"]["species"] == "Mus musculus"
    prov = read_provenance(out.output_path)
    assert prov["writer"].endswith("write_behavior_nwb") and set(prov["inputs"]) == {
        "trials", "licks", "rewards", "running_speed", "stimulus_presentations", "sync"}
    assert prov["parameters"]["compression"] == "release"


def test_two_writes_give_identical_dataset_contents(demo, tmp_path):
    inputs, out = demo[3002]
    again = B.write_behavior_nwb(inputs.model_copy(update={"output_dir": os.fspath(tmp_path)}))
    assert again.identifier == out.identifier

    def datasets(path):
        found = {}
        with h5py.File(path, "r") as f:
            f.visititems(lambda n, o: found.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) and h5py.check_dtype(ref=o.dtype) is None else None)
        return found

    a, b = datasets(out.output_path), datasets(again.output_path)
    assert a.keys() == b.keys()
    for k in a:
        va, vb = np.asarray(a[k]), np.asarray(b[k])
        assert np.array_equal(va, vb, equal_nan=va.dtype.kind == "f"), k


def test_passive_session_without_licks_or_rewards(tmp_path):
    spec = generate_behavior_session(tmp_path / "data", behavior_session_id=9101, session_type="OPHYS_2_images_A_passive",
                                     params=BehaviorParams(duration_s=60.0), seed=4)
    out = B.write_behavior_nwb(_inputs(spec, tmp_path / "out"))
    assert R.read_licks(out.output_path).empty and R.read_rewards(out.output_path).empty
    assert len(R.read_trials(out.output_path)) == len(pd.read_csv(spec.trials_path))
    assert inspect_nwb(out.output_path).at(*BLOCKING) == []
    with h5py.File(out.output_path, "r") as f:
        assert "licking" not in f["processing"] and "rewards" not in f["processing"]


def test_corrupt_or_missing_input_leaves_only_the_error_file(tmp_path):
    spec = generate_behavior_session(tmp_path / "data", behavior_session_id=9102, session_type="TRAINING_2_gratings_flashed",
                                     params=BehaviorParams(duration_s=60.0), seed=5)
    out_dir = tmp_path / "out"
    bad = tmp_path / "licks.csv"
    bad.write_bytes(b"\xff\xfe\x00garbage\x00\n\x81\x82")
    with pytest.raises(NwbWriteError) as exc:
        B.write_behavior_nwb(_inputs(spec, out_dir, licks_path=os.fspath(bad)))
    assert "behavior_session 9102" in str(exc.value) and os.fspath(bad) in str(exc.value)
    assert sorted(p.name for p in out_dir.iterdir()) == ["behavior_session_9102.nwb.error"]
    with pytest.raises(NwbWriteError, match="trials table is missing"):
        B.write_behavior_nwb(_inputs(spec, out_dir, trials_path=os.fspath(tmp_path / "nope.csv")))
    assert sorted(p.name for p in out_dir.iterdir()) == ["behavior_session_9102.nwb.error"]
    # a previous good file survives a failed re-run
    good = B.write_behavior_nwb(_inputs(spec, out_dir))
    before = Path(good.output_path).read_bytes()
    trials = pd.read_csv(spec.trials_path)
    trials.loc[3, "stop_time"] = trials.loc[3, "start_time"] - 1
    swapped = tmp_path / "trials.csv"
    trials.to_csv(swapped, index=False)
    with pytest.raises(NwbWriteError, match="1 trials rows stop before they start"):
        B.write_behavior_nwb(_inputs(spec, out_dir, trials_path=os.fspath(swapped)))
    assert Path(good.output_path).read_bytes() == before


def test_gratings_sessions_name_their_stimulus(tmp_path):
    assert B.stimulus_name_for_session_type("OPHYS_4_images_B") == "images_B"
    assert B.stimulus_name_for_session_type("TRAINING_1_gratings") == "gratings"
    assert B.stimulus_name_for_session_type("") == "change_detection"
    spec = generate_behavior_session(tmp_path / "data", behavior_session_id=9103, session_type="TRAINING_1_gratings",
                                     params=BehaviorParams(duration_s=60.0), seed=6)
    out = B.write_behavior_nwb(_inputs(spec, tmp_path / "out", running_speed_path=None))
    with h5py.File(out.output_path, "r") as f:
        assert "gratings_presentations" in f["intervals"] and "running" not in f.get("processing", {})
    assert R.read_running_speed(out.output_path).empty


def test_inputs_from_session_need_a_subject_with_an_age(seeded_demo):
    client = LimsClient(f"sqlite:///{seeded_demo / 'lims.sqlite'}")
    session = resolve_session(client, "behavior_session", 3001)
    client.dispose()
    with pytest.raises(InputError, match="behavior_session 3001: session has no subject"):
        B.BehaviorNwbInputs.from_session(session.model_copy(update={"subject": None}), output_dir="/tmp/x")
    late = session.subject.model_copy(update={"date_of_birth": dt.datetime(2030, 1, 1)})
    inputs = B.BehaviorNwbInputs.from_session(session.model_copy(update={"subject": late}), output_dir="/tmp/x")
    with pytest.raises(InputError, match="cannot give the subject's age"):
        B.build_behavior_nwbfile(inputs)
