"""The synthetic-session generators: determinism, declared shapes, and ground truth that holds exactly."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tracemalloc
import warnings
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from data_fixtures import (
    BehaviorParams,
    EcephysParams,
    IcephysParams,
    OphysParams,
    corrupt_file,
    generate_behavior_session,
    generate_ecephys_session,
    generate_icephys_cell,
    generate_ophys_session,
    lfp_segment,
    paths_of,
)
from data_fixtures.stimulus import N_NATURAL_SCENES, STIMULUS_COLUMNS

TINY_OPHYS = OphysParams(n_frames=300, block_frames=128)


def _digests(spec, root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths_of(spec)}


def _ophys(root: Path, **kw):
    kw.setdefault("params", TINY_OPHYS)
    kw.setdefault("seed", 0)
    return generate_ophys_session(root, ophys_session_id=101, ophys_experiment_ids=[1001], **kw)


def _ecephys(root: Path, seed: int = 0):
    return generate_ecephys_session(
        root,
        ecephys_session_id=301,
        probe_ids=[3001, 3002],
        channel_id_start=50_000,
        unit_id_start=70_000,
        params=EcephysParams(duration_s=40.0, lfp_duration_s=2.0, lfp_block_samples=1000),
        seed=seed,
    )


@pytest.fixture(scope="module")
def ophys_twice(tmp_path_factory):
    a, b = tmp_path_factory.mktemp("ophys_a"), tmp_path_factory.mktemp("ophys_b")
    return (_ophys(a), a), (_ophys(b), b)


@pytest.fixture(scope="module")
def ophys_noise_free(tmp_path_factory):
    root = tmp_path_factory.mktemp("ophys_exact")
    return _ophys(root, params=dataclasses.replace(TINY_OPHYS, noise_scale=0.0))


@pytest.fixture(scope="module")
def ecephys_twice(tmp_path_factory):
    a, b = tmp_path_factory.mktemp("ecephys_a"), tmp_path_factory.mktemp("ecephys_b")
    return (_ecephys(a), a), (_ecephys(b), b)


@pytest.fixture(scope="module")
def icephys_twice(tmp_path_factory):
    a, b = tmp_path_factory.mktemp("icephys_a"), tmp_path_factory.mktemp("icephys_b")
    return tuple((generate_icephys_cell(d, cell_specimen_id=401, seed=0), d) for d in (a, b))


# ----------------------------------------------------------------------------------------------------
# Determinism
# ----------------------------------------------------------------------------------------------------


def test_ophys_same_seed_same_bytes(ophys_twice):
    (spec_a, root_a), (spec_b, root_b) = ophys_twice
    digests_a, digests_b = _digests(spec_a, root_a), _digests(spec_b, root_b)
    assert len(digests_a) == 11  # movie, projections x2, offsets, plane truth, table, running, timestamps, truth, sync, eye fits
    assert digests_a == digests_b


def test_ecephys_same_seed_same_bytes(ecephys_twice):
    (spec_a, root_a), (spec_b, root_b) = ecephys_twice
    digests_a = _digests(spec_a, root_a)
    assert any(name.endswith("spike_times.npy") for name in digests_a)
    assert any(name.endswith("_lfp.h5") for name in digests_a)
    assert digests_a == _digests(spec_b, root_b)


def test_icephys_same_seed_same_bytes(icephys_twice):
    (spec_a, root_a), (spec_b, root_b) = icephys_twice
    assert _digests(spec_a, root_a) == _digests(spec_b, root_b)


def test_behavior_same_seed_same_bytes(tmp_path):
    specs = [
        generate_behavior_session(tmp_path / name, behavior_session_id=201, session_type="OPHYS_1_images_A", seed=3)
        for name in ("a", "b")
    ]
    assert _digests(specs[0], tmp_path / "a") == _digests(specs[1], tmp_path / "b")


def test_different_seed_gives_a_different_movie(ophys_twice, tmp_path):
    (spec_a, _), _ = ophys_twice
    other = _ophys(tmp_path, seed=1)
    with h5py.File(spec_a.planes[0].movie_path) as fa, h5py.File(other.planes[0].movie_path) as fb:
        assert fa["data"].shape == fb["data"].shape
        assert not np.array_equal(fa["data"][:50], fb["data"][:50])


def test_movie_does_not_depend_on_block_size(ophys_twice, tmp_path):
    (spec_a, _), _ = ophys_twice
    other = _ophys(tmp_path, params=dataclasses.replace(TINY_OPHYS, block_frames=37))
    pa, pb = spec_a.planes[0], other.planes[0]
    with h5py.File(pa.movie_path) as fa, h5py.File(pb.movie_path) as fb:
        assert np.array_equal(fa["data"][()], fb["data"][()])
    with h5py.File(pa.truth_path) as ta, h5py.File(pb.truth_path) as tb:
        for name in ("spikes", "expected_roi_traces", "dff_true"):
            np.testing.assert_array_equal(ta[name][()], tb[name][()])


# ----------------------------------------------------------------------------------------------------
# Ophys: declared shapes and exact truth
# ----------------------------------------------------------------------------------------------------


def test_ophys_files_have_the_declared_shapes(ophys_twice):
    (spec, _), _ = ophys_twice
    p = TINY_OPHYS
    plane = spec.planes[0]
    t, h, w = plane.movie_shape
    assert (t, h, w) == (p.n_frames, p.height, p.width)
    assert plane.plane_group is None and plane.targeted_structure == "VISp"
    with h5py.File(plane.movie_path) as f:
        data = f["data"]
        assert data.shape == (t, h, w) and data.dtype == np.uint16
        assert data.chunks[1:] == (h, w)
    with h5py.File(plane.max_projection_path) as f:
        assert f["data"].shape == (h, w) and f["data"].dtype == np.uint16
    with h5py.File(plane.average_projection_path) as f:
        assert f["data"].shape == (h, w) and f["data"].dtype == np.float32
    n = len(plane.rois)
    assert n == p.n_rois
    with h5py.File(plane.truth_path) as f:
        names = ("spikes", "cell_traces", "dff_true", "expected_roi_traces", "expected_neuropil_traces", "expected_demixed_traces")
        for name in names:
            assert f[name].shape == (n, t), name
        np.testing.assert_array_equal(f["roi_ids"][()], [roi.id for roi in plane.rois])
        assert f["spikes"][()].sum() > 0
        np.testing.assert_allclose(f["cell_traces"][()], f["F0"][()][:, None] * (1 + f["dff_true"][()]))
        r = f["r"][()]
        assert (r > 1).sum() == p.n_unconverged and np.all(r >= p.r_range[0])
    for roi in plane.rois:
        assert roi.mask.dtype == bool and roi.mask.shape == (roi.height, roi.width) and roi.mask.any()
        assert roi.valid == (roi.exclusion_labels == ())
    border_rois = [roi for roi in plane.rois if "motion_border" in roi.exclusion_labels]
    assert len(border_rois) == p.n_motion_border_rois
    b = plane.motion_border
    inside = np.zeros((h, w), bool)
    inside[b["y0"] : h - b["y1"], b["x0"] : w - b["x1"]] = True
    for roi in plane.rois:
        touches = bool((roi.full_mask(h, w) & ~inside).any())
        assert touches == (roi in border_rois)
    offsets = pd.read_csv(plane.motion_offsets_path)
    assert list(offsets.columns) == ["frame_index", "x", "y"] and len(offsets) == t
    assert offsets["x"].between(-b["x0"], b["x1"]).all() and offsets["y"].between(-b["y0"], b["y1"]).all()
    with h5py.File(spec.timestamps_path) as f:
        np.testing.assert_allclose(np.diff(f["ophys_timestamps"][()]), 1 / p.frame_rate_hz)
        assert len(f["ophys_timestamps"]) == t and len(f["stimulus_timestamps"]) == int(t / p.frame_rate_hz * 60)
    running = pd.read_csv(spec.running_speed_path)
    assert list(running.columns) == ["timestamps", "speed"] and running["speed"].between(0, 60).all()
    truth = json.loads(spec.truth_path.read_text())
    cells = truth["planes"][0]["cells"]
    assert [c["id"] for c in cells] == [roi.id for roi in plane.rois]
    assert all(0 <= c["pref_image"] < N_NATURAL_SCENES for c in cells)


def test_stimulus_table_is_consistent(ophys_twice):
    (spec, _), _ = ophys_twice
    table = pd.read_csv(spec.stimulus_table_path)
    assert tuple(table.columns) == STIMULUS_COLUMNS
    assert set(table["stimulus_name"]) == {"drifting_gratings", "static_gratings", "natural_scenes", "spontaneous"}
    assert (table["stop_time"] > table["start_time"]).all()
    assert (table["start_time"].to_numpy()[1:] >= table["stop_time"].to_numpy()[:-1] - 1e-9).all()
    fps = spec.frame_rate_hz
    assert (table["start_frame"] / fps >= table["start_time"] - 1e-9).all()
    assert ((table["start_frame"] - 1) / fps < table["start_time"]).all()
    dg = table[table["stimulus_name"] == "drifting_gratings"].dropna(subset=["orientation"])
    assert set(dg["orientation"]) <= set(range(0, 360, 45)) and set(dg["temporal_frequency"]) <= {1, 2, 4, 8, 15}
    assert np.allclose(dg["stop_time"] - dg["start_time"], 2.0)
    ns = table[table["stimulus_name"] == "natural_scenes"]
    assert ns["frame"].between(-1, N_NATURAL_SCENES - 1).all()
    assert np.allclose(ns["stop_time"] - ns["start_time"], 0.25)


def test_noise_free_movie_mean_over_each_mask_equals_expected_roi_traces(ophys_noise_free):
    plane = ophys_noise_free.planes[0]
    _, h, w = plane.movie_shape
    with h5py.File(plane.movie_path) as f, h5py.File(plane.truth_path) as t:
        movie = f["data"][()].astype(np.float64)
        expected = t["expected_roi_traces"][()]
        demixed = t["expected_demixed_traces"][()]
        pairs = t["overlap_pairs"][()]
        level = t.attrs["neuropil_level"]
        background = level * np.tensordot(t["neuropil_timecourses"][()].T, t["neuropil_spatial"][()].astype(np.float64), axes=1)
    in_pair = set(pairs.ravel().tolist())
    union = np.zeros((h, w), bool)
    for k, roi in enumerate(plane.rois):
        mask = roi.full_mask(h, w)
        union |= mask
        measured = movie[:, mask].mean(axis=1)
        # each pixel is rounded to an integer (and pixels of one ROI have similar values, so their
        # rounding errors are correlated): the mean over a mask is off by at most 0.5
        assert np.max(np.abs(measured - expected[k])) <= 0.5 + 1e-3
        if roi.id not in in_pair:
            np.testing.assert_allclose(demixed[k], expected[k], rtol=1e-12)
    # outside every ROI the movie is the neuropil background B
    assert np.max(np.abs(movie[:, ~union] - background[:, ~union])) <= 0.5 + 1e-3


def test_overlap_pairs_really_overlap(ophys_noise_free):
    plane = ophys_noise_free.planes[0]
    _, h, w = plane.movie_shape
    masks = {roi.id: roi.full_mask(h, w) for roi in plane.rois}
    with h5py.File(plane.truth_path) as t:
        pairs = t["overlap_pairs"][()]
        pixels = t["overlap_pixels"][()]
    assert len(pairs) >= TINY_OPHYS.n_overlap_pairs
    for (a, b), n in zip(pairs, pixels):
        shared = int((masks[a] & masks[b]).sum())
        assert shared == n > 0
        assert shared < min(masks[a].sum(), masks[b].sum())  # overlapping, not duplicates
    listed = {tuple(sorted(p)) for p in pairs.tolist()}
    ids = sorted(masks)
    for i, a in enumerate(ids):
        for b in ids[i + 1 :]:
            assert ((masks[a] & masks[b]).any()) == ((a, b) in listed)


def test_mesoscope_session_has_plane_groups(tmp_path):
    params = OphysParams.mesoscope(n_frames=60, height=48, width=48, n_rois=6, n_overlap_pairs=1)
    spec = generate_ophys_session(
        tmp_path, ophys_session_id=102, ophys_experiment_ids=[11, 12, 13, 14], params=params, seed=2, roi_id_start=500
    )
    assert spec.frame_rate_hz == 11.0
    assert [p.plane_group for p in spec.planes] == [0, 0, 1, 1]
    assert [p.targeted_structure for p in spec.planes] == ["VISp", "VISp", "VISl", "VISl"]
    ids = [roi.id for p in spec.planes for roi in p.rois]
    assert ids == list(range(500, 500 + 24))
    with pytest.raises(ValueError, match="mesoscope"):
        generate_ophys_session(tmp_path, ophys_session_id=103, ophys_experiment_ids=[15], params=params)


def test_ophys_memory_does_not_grow_with_the_number_of_frames(tmp_path):
    peaks = []
    for frames in (300, 1200):
        params = dataclasses.replace(TINY_OPHYS, n_frames=frames, block_frames=150)
        tracemalloc.start()
        try:
            generate_ophys_session(tmp_path / str(frames), ophys_session_id=104, ophys_experiment_ids=[1], params=params)
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    assert peaks[1] < 1.3 * peaks[0], peaks


# ----------------------------------------------------------------------------------------------------
# Ecephys
# ----------------------------------------------------------------------------------------------------


def test_kilosort_arrays_are_consistent(ecephys_twice):
    (spec, _), _ = ecephys_twice
    params = EcephysParams()
    unit_ids = [u["id"] for probe in spec.probes for u in probe.units]
    assert unit_ids == list(range(70_000, 70_000 + len(unit_ids)))
    channel_ids = [c["id"] for probe in spec.probes for c in probe.channels]
    assert channel_ids == list(range(50_000, 50_000 + len(channel_ids)))
    any_violations = False
    for probe in spec.probes:
        d = probe.sorting_dir
        times = np.load(d / "spike_times.npy")
        clusters = np.load(d / "spike_clusters.npy")
        templates_idx = np.load(d / "spike_templates.npy")
        amplitudes = np.load(d / "amplitudes.npy")
        templates = np.load(d / "templates.npy")
        w_inv = np.load(d / "whitening_mat_inv.npy")
        assert times.dtype == np.int64 and len(times) == len(clusters) == len(templates_idx) == len(amplitudes) > 0
        assert np.all(np.diff(times) >= 0) and times[0] >= 0 and times[-1] < spec.duration_s * probe.sampling_rate_hz
        assert templates.shape == (len(np.unique(clusters)), params.template_samples, params.n_channels)
        assert w_inv.shape == (params.n_channels, params.n_channels)
        assert np.load(d / "mean_waveforms.npy").shape == templates.shape
        with h5py.File(probe.truth_path) as t:
            orphans = set(t["orphan_cluster_ids"][()].tolist())
            truth_amp = t["spike_amplitudes_v"][()]
            template_amp = t["template_amplitude"][()]
            scale = t["template_scale"][()]
        unit_clusters = {u["cluster_id"] for u in probe.units}
        assert orphans and not (orphans & unit_clusters)
        assert set(np.unique(clusters).tolist()) <= unit_clusters | orphans
        assert orphans <= set(np.unique(clusters).tolist())
        groups = pd.read_csv(d / "cluster_group.tsv", sep="\t")
        assert set(groups.loc[groups["group"] == "noise", "cluster_id"]) == orphans
        # amplitude (V) = ptp over time, max over channels, of template x inverse whitening x raw x scale
        unwhitened_ptp = np.ptp(templates.astype(np.float64) @ w_inv, axis=1).max(axis=1)
        np.testing.assert_allclose(unwhitened_ptp, template_amp, rtol=1e-12)
        np.testing.assert_allclose(template_amp, scale, rtol=1e-5)
        volts = unwhitened_ptp[templates_idx] * amplitudes * probe.amplitude_scale_factor
        np.testing.assert_allclose(volts, truth_amp, rtol=1e-12)
        assert 10e-6 < np.median(truth_amp) < 1e-3
        channels = {c["id"]: c for c in probe.channels}
        assert sum(not c["valid_data"] for c in probe.channels) == len(params.reference_channels)
        for unit in probe.units:
            assert channels[unit["peak_channel_id"]]["valid_data"]
            n = int((clusters == unit["cluster_id"]).sum())
            assert unit["firing_rate"] == pytest.approx(n / spec.duration_s)
            assert 0 <= unit["presence_ratio"] <= 1 and unit["quality"] == "good"
            any_violations |= unit["isi_violations"] > 0
    assert any_violations
    opto = pd.read_csv(spec.optotagging_table_path)
    assert list(opto.columns) == ["start_time", "stop_time", "condition", "level", "duration", "stimulus_name"]
    assert set(opto["duration"]) == {0.01, 1.0}
    assert opto["start_time"].min() >= pd.read_csv(spec.stimulus_table_path)["stop_time"].max()


def test_lfp_read_block_wise_equals_direct_generation(ecephys_twice):
    (spec, _), _ = ecephys_twice
    params = EcephysParams(duration_s=40.0, lfp_duration_s=2.0, lfp_block_samples=1000)
    for index, probe in enumerate(spec.probes):
        with h5py.File(probe.lfp_path) as f:
            data = f["data"]
            n, n_ch = data.shape
            assert data.dtype == np.int16 and n == int(2.0 * probe.lfp_sampling_rate_hz)
            assert n_ch == len(range(0, params.n_channels, params.lfp_channel_stride))
            read = np.concatenate([data[a : a + 777] for a in range(0, n, 777)])
            np.testing.assert_allclose(f["timestamps"][()], np.arange(n) / probe.lfp_sampling_rate_hz)
            assert data.attrs["conversion"] == pytest.approx(0.195e-6)
        direct = lfp_segment(params, seed=0, probe_index=index, start=0, stop=n)
        np.testing.assert_array_equal(read, direct)
        split = np.concatenate(
            [lfp_segment(params, seed=0, probe_index=index, start=a, stop=min(a + 1234, n)) for a in range(0, n, 1234)]
        )
        np.testing.assert_array_equal(split, direct)
        assert np.abs(direct).max() > 100


# ----------------------------------------------------------------------------------------------------
# Icephys
# ----------------------------------------------------------------------------------------------------


def test_icephys_nwb_has_the_sweeps_and_recoverable_properties(icephys_twice):
    from pynwb import NWBHDF5IO

    (spec, _), _ = icephys_twice
    truth = json.loads(spec.truth_path.read_text())
    params = IcephysParams()
    fs = params.sampling_rate_hz
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with NWBHDF5IO(str(spec.nwb_path), "r") as io:
            nwb = io.read()
            responses = sorted(nwb.acquisition.values(), key=lambda s: s.sweep_number)
            stimuli = {s.sweep_number: s for s in nwb.stimulus.values()}
            numbers = [s.sweep_number for s in responses]
            assert numbers == [s["sweep_number"] for s in truth["sweeps"]] == list(spec.sweep_numbers)
            assert len(nwb.intracellular_recordings) == len(responses)
            kinds = {s["sweep_number"]: s for s in truth["sweeps"]}
            for resp in responses:
                sweep = kinds[resp.sweep_number]
                assert resp.stimulus_description == sweep["stimulus_name"] == stimuli[resp.sweep_number].stimulus_description
                expected = "CurrentClampSeries" if sweep["clamp_mode"] == "current" else "VoltageClampSeries"
                assert type(resp).__name__ == expected
            names = {s["stimulus_type"] for s in truth["sweeps"]}
            assert names == {"Test", "Long Square", "Short Square", "Ramp"}
            # input resistance from the most hyperpolarizing long square: steady-state dV / I
            hyper = min((s for s in truth["sweeps"] if s["kind"] == "long_square"), key=lambda s: s["amplitude"])
            v = responses[hyper["sweep_number"]].data[:].astype(np.float64)
            i = stimuli[hyper["sweep_number"]].data[:].astype(np.float64)
            a, b = int(hyper["stimulus_start_s"] * fs), int(hyper["stimulus_end_s"] * fs)
            delta_v = v[b - int(0.1 * fs) : b].mean() - v[: a].mean()
            r_in = delta_v / i[a:b].mean() / 1e6
            assert r_in == pytest.approx(truth["input_resistance_mohm"], rel=0.05)
            # access resistance from the break-in peak current, seal from the cell-attached steady state
            breakin = next(s for s in truth["sweeps"] if s["kind"] == "break_in")
            cur = responses[breakin["sweep_number"]].data[:].astype(np.float64)
            on = int(breakin["stimulus_start_s"] * fs)
            base = cur[: on].mean()
            assert 0.010 / (cur[on] - base) / 1e6 == pytest.approx(truth["access_resistance_mohm"], rel=0.05)
            attached = next(s for s in truth["sweeps"] if s["kind"] == "cell_attached")
            cur = responses[attached["sweep_number"]].data[:].astype(np.float64)
            on, off = int(attached["stimulus_start_s"] * fs), int(attached["stimulus_end_s"] * fs)
            seal = 0.010 / (cur[off - int(0.001 * fs) : off].mean() - cur[on - int(0.001 * fs) : on].mean()) / 1e9
            assert seal == pytest.approx(truth["seal_resistance_gohm"], rel=0.25)
            # spike counts: upward crossings of 0 mV
            for resp in responses:
                sweep = kinds[resp.sweep_number]
                if sweep["clamp_mode"] == "current":
                    volts = resp.data[:]
                    crossings = int(np.sum((volts[1:] >= 0) & (volts[:-1] < 0)))
                    assert crossings == sweep["spike_count"]
    spiking = [s["amplitude"] for s in truth["sweeps"] if s["kind"] == "long_square" and s["spike_count"]]
    assert min(spiking) >= truth["rheobase_pa"] and truth["rheobase_pa"] == pytest.approx(150.0)
    assert truth["threshold_mv"] == -40.0


# ----------------------------------------------------------------------------------------------------
# Behavior
# ----------------------------------------------------------------------------------------------------


def test_behavior_trials_and_omissions_are_sensible(tmp_path):
    spec = generate_behavior_session(
        tmp_path, behavior_session_id=202, session_type="OPHYS_1_images_A", params=BehaviorParams(duration_s=600.0)
    )
    trials = pd.read_csv(spec.trials_path)
    pres = pd.read_csv(spec.stimulus_presentations_path)
    licks = pd.read_csv(spec.licks_path)
    rewards = pd.read_csv(spec.rewards_path)
    truth = json.loads(spec.truth_path.read_text())
    assert 50 <= len(trials) <= 120 and truth["n_trials"] == len(trials)
    go, catch, aborted = trials["go"], trials["catch"], trials["aborted"]
    assert ((go.astype(int) + catch.astype(int) + aborted.astype(int)) == 1).all()
    assert (trials.loc[go, "hit"] ^ trials.loc[go, "miss"]).all()
    assert (trials.loc[catch, "false_alarm"] ^ trials.loc[catch, "correct_reject"]).all()
    assert not trials.loc[aborted, ["hit", "miss", "false_alarm", "correct_reject"]].any().any()
    assert (trials.loc[go, "initial_image_name"] != trials.loc[go, "change_image_name"]).all()
    assert (trials.loc[catch, "initial_image_name"] == trials.loc[catch, "change_image_name"]).all()
    assert trials.loc[trials["hit"], "response_latency"].between(0.15, 0.75).all()
    assert np.allclose(trials["stop_time"].to_numpy()[:-1], trials["start_time"].to_numpy()[1:])
    assert len(rewards) == trials["hit"].sum() and not rewards["auto_rewarded"].any()
    assert np.all(np.diff(licks["timestamps"]) > 0)
    fraction = pres["omitted"].mean()
    assert 0.02 <= fraction <= 0.09 and fraction == pytest.approx(truth["omitted_fraction"])
    assert not (pres["omitted"] & pres["is_change"]).any()
    assert (pres.loc[pres["omitted"], "image_name"] == "omitted").all()
    assert (pres.loc[pres["is_change"], "flashes_since_change"] == 0).all()
    changes = pres.loc[pres["is_change"], "start_time"].to_numpy()
    np.testing.assert_allclose(changes, trials.loc[go, "change_time"].to_numpy())
    running = pd.read_csv(spec.running_speed_path)
    assert len(running) == int(600 * 60) and list(running.columns) == ["timestamps", "speed"]


def test_behavior_session_type_rules(tmp_path):
    passive = generate_behavior_session(tmp_path, behavior_session_id=203, session_type="OPHYS_2_images_A_passive")
    assert pd.read_csv(passive.licks_path).empty and pd.read_csv(passive.rewards_path).empty
    static = generate_behavior_session(tmp_path, behavior_session_id=204, session_type="TRAINING_1_gratings")
    pres = pd.read_csv(static.stimulus_presentations_path)
    assert not pres["omitted"].any() and (pres["duration"] > 0.25).all()
    assert set(pres["image_name"]) <= {"gratings_0", "gratings_90", "gratings_180", "gratings_270"}
    auto = generate_behavior_session(tmp_path, behavior_session_id=205, session_type="TRAINING_0_gratings_autorewards_15min")
    trials = pd.read_csv(auto.trials_path)
    assert pd.read_csv(auto.rewards_path)["auto_rewarded"].sum() == trials["go"].sum()
    with pytest.raises(ValueError, match="unknown behavior session_type"):
        generate_behavior_session(tmp_path, behavior_session_id=206, session_type="OPHYS_9_nothing")


# ----------------------------------------------------------------------------------------------------
# Bad input helper
# ----------------------------------------------------------------------------------------------------


def test_corrupt_file_makes_an_hdf5_file_unreadable(ophys_noise_free, tmp_path):
    source = ophys_noise_free.planes[0].truth_path
    copy = tmp_path / "truth.h5"
    copy.write_bytes(source.read_bytes())
    with h5py.File(copy):
        pass
    corrupt_file(copy)
    assert copy.stat().st_size < source.stat().st_size
    with pytest.raises(OSError):
        h5py.File(copy, "r")
