"""The observatory analysis recovers the tuning the synthetic sessions were generated from.

"Strongly tuned" cells: tuned with a peak evoked rate above 8 Hz (and, for direction, a null-direction
lobe below half the preferred one, so the preferred direction is defined).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from data_fixtures.stimulus import AnalysisDesign, CellParams, analysis_session
from release_platform.errors import InputError
from release_platform.stimulus import analyze_session, core, lsn
from release_platform.stimulus.table import stimulus_block

STRONG_RATE_HZ = 8.0


def _strong(truth):
    return truth.tuned & (truth.peak_rate_hz > STRONG_RATE_HZ)


@pytest.fixture(scope="module")
def gratings():
    """300 cells (80% tuned, 60% of those running-modulated): gratings, scenes and a movie, 27 min at 30 Hz."""
    design = AnalysisDesign(blocks=("spontaneous", "drifting_gratings", "static_gratings", "natural_scenes",
                                    "natural_movie_one", "spontaneous"))
    s = analysis_session(300, seed=11, design=design, cells=CellParams(fraction_running_modulated=0.6))
    a = analyze_session(s.corrected, s.dff, np.arange(300), s.table, s.frame_rate_hz, speed=s.speed, speed_shuffles=50)
    return s, a


@pytest.fixture(scope="module")
def untuned():
    """600 untuned cells (drive 0 everywhere): the null for every p-value."""
    design = AnalysisDesign(blocks=("drifting_gratings", "static_gratings", "natural_scenes"), dg_repeats=3, sg_repeats=2,
                            ns_repeats=2)
    s = analysis_session(600, seed=12, design=design, cells=CellParams(fraction_tuned=0.0))
    a = analyze_session(s.corrected, s.dff, np.arange(600), s.table, s.frame_rate_hz, speed=s.speed, with_correlations=False)
    return s, a


@pytest.fixture(scope="module")
def sparse_noise():
    """150 cells, 6000 sparse-noise frames (25 min), 500 shuffles."""
    design = AnalysisDesign(blocks=("locally_sparse_noise",), lsn_frames=6000)
    s = analysis_session(150, seed=13, design=design)
    a = analyze_session(s.corrected, s.dff, np.arange(150), s.table, s.frame_rate_hz, lsn_template=s.lsn_template,
                        n_shuffles=500, seed=1)
    return s, a


def test_preferred_direction_and_temporal_frequency(gratings):
    s, a = gratings
    m, t = a.metrics, s.truth
    strong = _strong(t) & (t.null_ratio < 0.5)
    assert strong.sum() >= 80
    direction = np.mean(m["pref_dir_dg"].to_numpy()[strong] == t.pref_direction_deg[strong])
    tf = np.mean(m["pref_tf_dg"].to_numpy()[strong] == t.pref_tf_hz[strong])
    assert direction >= 0.9, direction  # measured 0.97
    assert tf >= 0.9, tf  # measured 1.0


def test_static_gratings_and_natural_scenes_preferences(gratings):
    s, a = gratings
    m, t = a.metrics, s.truth
    strong = _strong(t)
    ori = np.mean(m["pref_ori_sg"].to_numpy()[strong] == t.pref_orientation_deg[strong])
    sf = np.mean(m["pref_sf_sg"].to_numpy()[strong] == t.pref_sf_cpd[strong])
    image = np.mean(m["pref_image_ns"].to_numpy()[strong] == t.pref_image[strong])
    assert ori >= 0.9 and sf >= 0.9 and image >= 0.9, (ori, sf, image)


def test_osi_and_dsi_rank_with_true_sharpness(gratings):
    s, a = gratings
    m, t = a.metrics, s.truth
    strong = _strong(t)
    osi_true, dsi_true = t.model_osi_dsi()
    rho_osi = stats.spearmanr(m["osi_dg"].to_numpy()[strong], osi_true[strong]).statistic
    rho_dsi = stats.spearmanr(m["dsi_dg"].to_numpy()[strong], dsi_true[strong]).statistic
    assert rho_osi >= 0.7 and rho_dsi >= 0.7, (rho_osi, rho_dsi)
    assert (m["p_dg"][strong] < 0.05).mean() > 0.95  # strongly tuned cells respond


def test_reliability_and_time_to_peak(gratings):
    s, a = gratings
    m, t = a.metrics, s.truth
    strong = _strong(t)
    for stim in ("dg", "sg", "ns"):
        rel = m[f"reliability_{stim}"].to_numpy()
        assert np.nanmedian(rel[strong]) > 0.3 and abs(np.nanmedian(rel[~t.tuned])) < 0.1, stim
    for stim in ("sg", "ns"):  # a 0.25 s flash: the indicator peaks within half a second of onset
        ttp = m[f"time_to_peak_{stim}"].to_numpy()[strong]
        assert np.mean((ttp > 0) & (ttp <= 0.5)) >= 0.9, stim


def test_running_modulation_sign(gratings):
    s, a = gratings
    m, t = a.metrics, s.truth
    sel = _strong(t) & (np.abs(t.running_modulation) >= 0.5) & np.isfinite(m["run_mod_dg"].to_numpy())
    assert sel.sum() >= 15
    agree = np.mean(np.sign(m["run_mod_dg"].to_numpy()[sel]) == np.sign(t.running_modulation[sel]))
    assert agree >= 0.75, agree


def test_natural_movie_peak_frame_and_reliability(gratings):
    s, a = gratings
    m, t = a.metrics, s.truth
    strong = _strong(t)
    true_frame = np.argmax(t.movie_profile["natural_movie_one"], axis=1)  # 30 Hz movie on 30 Hz imaging
    lag_s = (m["peak_frame_nm1"].to_numpy() - true_frame) / s.frame_rate_hz
    within = (lag_s[strong] >= 0) & (lag_s[strong] <= 0.5)  # indicator rise and smoothing delay the peak
    assert within.mean() >= 0.9, within.mean()
    assert np.median(m["reliability_nm1"][strong]) > 0.4
    assert abs(np.median(m["reliability_nm1"][~t.tuned])) < 0.05
    assert a.results["natural_movie_one"].response.shape[0] == s.design.nm_repeats  # every repeat, not 10 by rule


def test_speed_tuning_bins(gratings):
    s, a = gratings
    vis = a.speed_tuning["vis"]
    speed = vis.binned_dx[:, 0]
    assert np.all(np.diff(speed) > 0)  # bins sorted by speed
    assert speed[0] < 1.0 and speed[1] >= 1.0
    assert a.mean_running_speed == pytest.approx(np.mean(s.speed))


def test_p_values_are_calibrated_on_untuned_cells(untuned):
    _, a = untuned
    for col in ("p_dg", "p_sg", "p_ns"):
        p = a.metrics[col].to_numpy()
        assert np.isfinite(p).sum() == 600
        frac = np.mean(p < 0.05)
        assert 0.02 <= frac <= 0.08, (col, frac)


def test_receptive_field_centres(sparse_noise):
    s, a = sparse_noise
    m, t = a.metrics, s.truth
    strong = _strong(t)
    pixel = a.results["locally_sparse_noise"].pixel_deg
    for pol, centre in (("on", t.on_center), ("off", t.off_center)):
        col = np.round(m[f"rf_center_{pol}_x_lsn"].to_numpy() / pixel - 0.5)
        row = np.round(m[f"rf_center_{pol}_y_lsn"].to_numpy() / pixel - 0.5)
        hit = (row == centre[:, 0]) & (col == centre[:, 1])
        assert hit[strong].mean() >= 0.9, (pol, hit[strong].mean())  # measured 0.98-0.99
    # the shuffle test controls the family-wise error: few untuned cells get a receptive field
    assert np.isfinite(m["rf_center_on_x_lsn"][~t.tuned]).mean() <= 0.1
    assert (m["rf_chi2_lsn"][strong] < 0.05).mean() >= 0.95
    true_distance = np.hypot(*(t.on_center - t.off_center).T) * pixel
    both = strong & np.isfinite(m["rf_distance_lsn"].to_numpy())
    assert np.median(np.abs(m["rf_distance_lsn"].to_numpy()[both] - true_distance[both])) < 0.5 * pixel


def test_twelve_directions_three_temporal_frequencies_at_15_hz():
    design = AnalysisDesign(blocks=("drifting_gratings",), directions_deg=tuple(float(d) for d in range(0, 360, 30)),
                            temporal_frequencies_hz=(1.0, 4.0, 15.0), dg_repeats=6)
    s = analysis_session(150, seed=14, design=design, frame_rate_hz=15.0)
    a = analyze_session(s.corrected, s.dff, np.arange(150), s.table, s.frame_rate_hz)
    r = a.results["drifting_gratings"]
    assert r.response.shape == (12, 3, 150, 3)
    assert r.sweeps.windows == core.Windows(sweep=30, inter=15, extra=0)  # 2 s and 1 s at 15 Hz
    t, m = s.truth, a.metrics
    strong = _strong(t) & (t.null_ratio < 0.5)
    assert np.mean(m["pref_dir_dg"].to_numpy()[strong] == t.pref_direction_deg[strong]) >= 0.9
    assert np.mean(m["pref_tf_dg"].to_numpy()[strong] == t.pref_tf_hz[strong]) >= 0.9


def test_sweep_responses_match_the_allensdk_definition():
    """Direct per-trial computation of the AllenSDK definitions: percent dF/F window, ANOVA, dx."""
    rng = np.random.default_rng(0)
    fc = 100 + rng.normal(0, 5, (4, 600))
    speed = rng.uniform(0, 5, 600)
    starts = np.array([40, 150, 300, 580])
    w = core.Windows(sweep=20, inter=10, extra=5)
    sw = core.sweep_responses(fc, starts, w, speed)
    assert list(sw.trial_index) == [0, 1, 2]  # the last window runs past the recording
    for k, s0 in enumerate(starts[:3]):
        win = fc[:, s0 - w.inter : s0 + w.sweep + w.inter]
        pct = 100 * (win / win[:, : w.inter].mean(axis=1, keepdims=True) - 1)
        np.testing.assert_allclose(sw.mean_response[k], pct[:, w.inter : w.inter + w.sweep + w.extra].mean(axis=1), rtol=1e-9)
        p = [stats.f_oneway(pct[c, : w.inter], pct[c, w.inter : w.inter + w.sweep + w.extra]).pvalue for c in range(4)]
        np.testing.assert_allclose(sw.p_value[k], p, rtol=1e-6)
        assert sw.dx[k] == pytest.approx(speed[s0 : s0 + w.sweep + w.extra].mean())


def test_group_statistics_match_scipy_and_pandas():
    rng = np.random.default_rng(1)
    v = rng.normal(0, 1, (60, 3))
    codes = rng.integers(-1, 4, 60)
    v[5, 1] = np.nan
    p = core.anova_p(v, codes, 4)
    gs = core.group_stats(v, codes, 4)
    for c in range(3):
        ok = (codes >= 0) & np.isfinite(v[:, c])
        groups = [v[ok & (codes == g), c] for g in range(4)]
        assert p[c] == pytest.approx(stats.f_oneway(*groups).pvalue, rel=1e-9)
        frame = pd.Series(v[ok, c]).groupby(codes[ok])
        np.testing.assert_allclose(gs.mean[:, c], frame.mean().to_numpy(), rtol=1e-12)
        np.testing.assert_allclose(gs.sem[:, c], frame.sem().to_numpy(), rtol=1e-12)


def test_nan_frames_leave_only_the_touched_trials_out():
    design = AnalysisDesign(blocks=("drifting_gratings",), dg_repeats=6)
    clean = analysis_session(60, seed=15, design=design)
    dirty = analysis_session(60, seed=15, design=design, nan_frames=300)
    dirty.corrected[7] = np.nan  # a flagged ROI
    dirty.dff[7] = np.nan
    a = analyze_session(dirty.corrected, dirty.dff, np.arange(60), dirty.table, 30.0)
    b = analyze_session(clean.corrected, clean.dff, np.arange(60), clean.table, 30.0)
    assert any("NaN frame value" in msg and "1 ROI(s) entirely NaN" in msg for msg in a.messages)
    assert a.metrics.drop(index=7)["pref_dir_dg"].notna().all()
    assert a.metrics.loc[7, ["pref_dir_dg", "osi_dg", "p_dg"]].isna().all()
    same = (a.metrics["pref_dir_dg"] == b.metrics["pref_dir_dg"]).drop(index=7).mean()
    assert same >= 0.9


def test_bad_input_gives_one_clear_message():
    design = AnalysisDesign(blocks=("drifting_gratings",), dg_repeats=1)
    s = analysis_session(5, seed=16, design=design)
    with pytest.raises(InputError, match=r"\['natural_movie_two'\] requested but not in the stimulus table \(present: \['drifting_gratings'\]\)"):
        analyze_session(s.corrected, s.dff, np.arange(5), s.table, 30.0, stimuli=["natural_movie_two"], entity="ophys_session 9")
    bad = s.table.copy()
    bad.loc[3, "start_frame"] = np.nan
    with pytest.raises(InputError, match=r"ophys_session 9: stimulus table: start_frame missing or not an integer in rows \[3\]"):
        analyze_session(s.corrected, s.dff, np.arange(5), bad, 30.0, entity="ophys_session 9")
    with pytest.raises(InputError, match="end_frame beyond the 100 recorded frames"):
        analyze_session(s.corrected[:, :100], s.dff[:, :100], np.arange(5), s.table, 30.0)
    with pytest.raises(InputError, match=r"dF/F has shape \(5, 10\) but corrected fluorescence"):
        analyze_session(s.corrected, s.dff[:, :10], np.arange(5), s.table, 30.0)
    lsn_table = pd.DataFrame({"stimulus_name": ["locally_sparse_noise"] * 3, "start_frame": [10, 20, 30],
                              "end_frame": [20, 30, 40], "frame": [0, 1, 2]})
    with pytest.raises(InputError, match="needs the sparse-noise template"):
        analyze_session(s.corrected, s.dff, np.arange(5), lsn_table, 30.0)
    with pytest.raises(InputError, match=r"'frame' of rows \[2\] is not a template frame \(0\.\.1\)"):
        lsn.locally_sparse_noise(s.corrected, s.dff, stimulus_block(lsn_table, "locally_sparse_noise"),
                                 np.full((2, 4, 4), 127, np.uint8), 30.0, n_shuffles=10)
