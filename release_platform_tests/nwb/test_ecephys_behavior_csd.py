"""The demo's Neuropixels session 4001 with its behavior session 3003: one NWB file with the ecephys data, trials,
licks, rewards, raw wheel signals, change-detection presentations and templates; the current source density in each
probe's LFP file. Truth: the behavior session's CSVs, the templates generator and the laminar sink of the synthetic
LFP (data_fixtures.ecephys)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from pynwb import NWBHDF5IO

from data_fixtures import ecephys as fixture
from data_fixtures.templates import template_image
from release_platform.ecephys import csd
from release_platform.errors import InputError
from release_platform.inputs import resolve_session
from release_platform.lims import LimsClient
from release_platform.metadata import build_tables, gather_for
from release_platform.nwb import ecephys as E
from release_platform.nwb.ecephys_csd import read_current_source_density
from release_platform.nwb.inspection import inspect_nwb

SESSION, BEHAVIOR = 4001, 3003


@pytest.fixture(scope="module")
def written(seeded_demo, tmp_path_factory):
    root = tmp_path_factory.mktemp("ecephys_behavior")
    shutil.copyfile(seeded_demo / "lims.sqlite", root / "lims.sqlite")
    client = LimsClient(f"sqlite:///{root / 'lims.sqlite'}")
    try:
        session = resolve_session(client, "ecephys_session", SESSION)
        inputs = E.EcephysNwbInputs.from_session(session, [p.lims_record for p in session.probes],
                                                 output_path=root / "out" / f"ecephys_session_{SESSION}.nwb",
                                                 skip_probes=["probeB"])  # one probe keeps the test short
        outputs = E.write_ecephys_nwb(inputs)
        rows, targets = gather_for(client, "behavior_session", [BEHAVIOR])
        tables = build_tables(rows, targets, tables=["behavior_session_table"]).tables
    finally:
        client.dispose()
    return session, inputs, outputs, tables


def _files(session):
    return session.behavior_session.files


def test_the_input_carries_the_linked_behavior_session(written):
    session, inputs, _, _ = written
    assert session.behavior_session is not None and session.behavior_session.session_id == BEHAVIOR
    assert inputs.behavior.behavior_session_id == BEHAVIOR and inputs.behavior.stimulus_templates_path


def test_trials_licks_and_rewards_are_exact(written):
    session, _, outputs, _ = written
    files = _files(session)
    trials = pd.read_csv(files["BehaviorTrials"])
    licks = pd.read_csv(files["BehaviorLicks"])
    rewards = pd.read_csv(files["BehaviorRewards"])
    assert len(trials) and len(licks) and len(rewards)
    with NWBHDF5IO(outputs.nwb_path, "r", load_namespaces=True) as io:  # plain PyNWB
        nwb = io.read()
        got = nwb.trials.to_dataframe()
        np.testing.assert_array_equal(got.index.to_numpy(), trials["trials_id"].to_numpy())
        for col in ("start_time", "stop_time"):
            np.testing.assert_array_equal(got[col].to_numpy(), trials[col].to_numpy())
        for col in ("go", "catch", "aborted", "hit", "miss", "false_alarm", "correct_reject", "auto_rewarded"):
            np.testing.assert_array_equal(got[col].to_numpy(bool), trials[col].to_numpy(bool), err_msg=col)
        for col in ("change_time", "response_latency", "reward_time"):
            np.testing.assert_array_equal(got[col].to_numpy(float), trials[col].to_numpy(float), err_msg=col)
        assert list(got["change_image_name"].fillna("")) == list(trials["change_image_name"].fillna(""))
        lick_series = nwb.processing["licking"]["licks"]
        np.testing.assert_array_equal(lick_series.timestamps[()], licks["timestamps"].to_numpy())
        np.testing.assert_array_equal(lick_series.data[()], licks["frame"].to_numpy())
        volume = nwb.processing["rewards"]["volume"]
        np.testing.assert_array_equal(volume.timestamps[()], rewards["timestamps"].to_numpy())
        np.testing.assert_array_equal(volume.data[()], rewards["volume"].to_numpy())
        np.testing.assert_array_equal(nwb.processing["rewards"]["autorewarded"].data[()], rewards["auto_rewarded"].to_numpy(bool))
        # the ecephys content is still there, next to it
        assert len(nwb.units) > 0 and "flashes_presentations" in nwb.intervals
        assert json.loads(nwb.notes)["behavior_session_id"] == BEHAVIOR


def test_change_detection_presentations_templates_and_wheel_signals(written):
    session, inputs, outputs, _ = written
    files = _files(session)
    pres = pd.read_csv(files["StimulusPresentations"])
    wheel = pd.read_csv(session.files["RunningWheel"])
    with NWBHDF5IO(outputs.nwb_path, "r", load_namespaces=True) as io:
        nwb = io.read()
        table = nwb.intervals["images_G_presentations"].to_dataframe()
        np.testing.assert_array_equal(table.index.to_numpy(), np.arange(len(pres)))
        np.testing.assert_array_equal(table["start_time"].to_numpy(), pres["start_time"].to_numpy())
        assert list(table["image_name"]) == list(pres["image_name"])
        images = nwb.stimulus_template["images_G"]
        shown = set(pres["image_name"]) - {"omitted"}
        assert shown <= set(images.images)
        for name in images.images:
            np.testing.assert_array_equal(images.images[name].data[()], template_image(name, seed=BEHAVIOR))
        assert [im.name for im in images.order_of_images.data] == list(images.images)
        np.testing.assert_array_equal(nwb.acquisition["raw_running_wheel_rotation"].data[()], wheel["dx"].to_numpy())
        np.testing.assert_array_equal(nwb.acquisition["running_wheel_signal_voltage"].data[()], wheel["vsig"].to_numpy())
        np.testing.assert_array_equal(nwb.acquisition["running_wheel_supply_voltage"].data[()], wheel["vin"].to_numpy())
        rotation = nwb.processing["running"]["running_wheel_rotation"]
        speed = nwb.processing["running"]["running_speed"]
        # speed = rotation x running radius / frame interval (the generator's relation), frame 1 on
        dt = 1.0 / speed.rate
        np.testing.assert_allclose(rotation.data[1:] * fixture.RUNNING_RADIUS_CM / dt, speed.data[1:], rtol=1e-9, atol=1e-9)


def test_the_behavior_session_is_not_released_separately(written):
    *_, tables = written
    row = tables["behavior_session_table"].set_index("behavior_session_id").loc[BEHAVIOR]
    assert int(row["ecephys_session_id"]) == SESSION  # its data are in that session's file
    assert pd.isna(row["file_id"])


def test_csd_sink_depth_within_one_channel_spacing(written, seeded_demo):
    _, inputs, outputs, _ = written
    truth = json.loads((seeded_demo / "raw" / f"ecephys_session_{SESSION}" / "truth.json").read_text())["flashes"]
    spacing = fixture.EcephysParams().channel_spacing_um
    for probe, out in zip(E.selected_probes(inputs), outputs.probe_outputs):
        got = read_current_source_density(out.nwb_path)
        assert got is not None, out
        assert got["unit"] == "V/mm^2" and len(got["onsets"]) == len(truth["onsets_s"])
        t, z = np.unravel_index(np.argmin(got["csd"]), got["csd"].shape)
        assert abs(got["depths_um"][z] - truth["sink_vertical_um"]) <= spacing, probe.name
        z_src = int(np.argmax(got["csd"][t]))
        assert abs(got["depths_um"][z_src] - truth["source_vertical_um"]) <= 2 * spacing
        assert 0.03 < got["relative_times"][t] < 0.1  # the evoked response peaks 55 ms after the flash
        status = got["channels"]["status"]
        invalid = {c.id for c in probe.channels if not c.valid_data}
        assert set(status[status == "invalid"].index) == invalid & set(status.index)


def test_inspector_dandi_finds_nothing_blocking(written):
    """The session file with its behavior (LFP files with their CSD: test_ecephys_nwb's inspector test)."""
    _, _, outputs, _ = written
    bad = inspect_nwb(outputs.nwb_path, config="dandi").at("ERROR", "PYNWB_VALIDATION", "CRITICAL", "BEST_PRACTICE_VIOLATION")
    assert bad == [], bad


def test_all_channels_bad_is_a_documented_skip(written):
    _, inputs, _, _ = written
    probe = E.selected_probes(inputs)[0]
    dead = probe.model_copy(update={"channels": [c.model_copy(update={"valid_data": False}) for c in probe.channels]})
    report: list[str] = []
    nwb = E.build_lfp_nwbfile(inputs, dead, report=report)
    try:
        assert "current_source_density" not in nwb.processing
        assert len(report) == 1 and "every LFP channel inside the brain is bad" in report[0] and probe.name in report[0]
    finally:
        nwb.acquisition[f"probe_{probe.id}_lfp"].electrical_series[f"probe_{probe.id}_lfp_data"].data.close()


def test_missing_behavior_file_is_one_clear_error(written, tmp_path):
    _, inputs, _, _ = written
    broken = inputs.model_copy(update={"behavior": inputs.behavior.model_copy(update={"licks_path": str(tmp_path / "gone.csv")}),
                                       "output_path": str(tmp_path / "s.nwb")})
    with pytest.raises(InputError, match="gone.csv") as err:
        E.build_session_nwbfile(broken)
    assert f"behavior_session {BEHAVIOR}" in str(err.value)


# -- the CSD science module on its own --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_probe(tmp_path_factory):
    params = fixture.EcephysParams(n_units=2, n_orphan_clusters=0, duration_s=8.0)
    spec = fixture.generate_ecephys_session(tmp_path_factory.mktemp("csd"), ecephys_session_id=1, probe_ids=(11,),
                                            channel_id_start=100, unit_id_start=200, params=params, seed=5)
    probe = spec.probes[0]
    channels = csd.CsdChannels.from_records(fixture.lfp_channel_records(probe))
    onsets, _ = csd.stimulus_onsets(pd.read_csv(spec.stimulus_table_path), csd.CsdParams())
    return params, probe, channels, onsets


def test_csd_is_the_same_streamed_in_small_blocks_or_from_explicit_timestamps(small_probe):
    params, probe, channels, onsets = small_probe
    regular = csd.LfpSource(path=probe.lfp_path, rate=params.lfp_sampling_rate_hz, timestamps=None,
                            conversion=params.amplitude_scale_factor)
    stamped = csd.LfpSource(path=probe.lfp_path, rate=params.lfp_sampling_rate_hz, conversion=params.amplitude_scale_factor)
    a = csd.current_source_density(regular, channels, onsets)
    b = csd.current_source_density(stamped, channels, onsets, csd.CsdParams(block_mb=0.05))
    assert a.n_trials == len(onsets) == params.n_flashes
    np.testing.assert_allclose(b.csd, a.csd, rtol=1e-9, atol=1e-9 * np.abs(a.csd).max())
    assert abs(a.sink()[1] - fixture.csd_truth(params)["sink_vertical_um"]) <= params.channel_spacing_um


def test_csd_bad_inputs_are_clear_errors(small_probe):
    params, probe, channels, onsets = small_probe
    lfp = csd.LfpSource(path=probe.lfp_path, rate=params.lfp_sampling_rate_hz, conversion=params.amplitude_scale_factor,
                        entity="ecephys_session 1 (probeA)")
    dead = csd.CsdChannels(channels.ids, channels.vertical_um, channels.horizontal_um, np.zeros(len(channels.ids), bool),
                           channels.inside_brain)
    with pytest.raises(InputError, match="every LFP channel inside the brain is bad") as err:
        csd.current_source_density(lfp, dead, onsets)
    assert "probeA" in str(err.value) and probe.lfp_path.name in str(err.value)
    with pytest.raises(InputError, match="none of the 1 windows"):
        csd.current_source_density(lfp, channels, np.array([1000.0]))
    with pytest.raises(InputError, match="no usable presentations of stimulus 'gabors'"):
        csd.stimulus_onsets(pd.DataFrame({"start_time": [1.0], "stimulus_name": ["flashes"]}), csd.CsdParams(stimulus_name="gabors"))


def test_onsets_of_the_lowest_stimulus_index_by_default():
    table = pd.DataFrame({"Start": [3.0, 1.0, 2.0, 4.0], "stimulus_name": ["flashes"] * 3 + ["gabors"],
                          "stimulus_index": [5, 2, 2, 1]})
    np.testing.assert_array_equal(csd.stimulus_onsets(table, csd.CsdParams())[0], [1.0, 2.0])
    assert csd.stimulus_onsets(table, csd.CsdParams(stimulus_index=5)) == (np.array([3.0]), 5)
    np.testing.assert_array_equal(csd.stimulus_onsets(table, csd.CsdParams(num_trials=1))[0], [1.0])
