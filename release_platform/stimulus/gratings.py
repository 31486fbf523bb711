"""Drifting and static gratings, and the condition-grid machinery natural scenes share.

Definitions follow AllenSDK ``drifting_gratings.py`` / ``static_gratings.py`` (responses are percent
dF/F of corrected fluorescence against the pre-stimulus window), with the geometry read from the
stimulus table: any number of directions, temporal and spatial frequencies and phases. Orthogonal and
null directions are found by angle (the grid value nearest ``pref +- 90`` / ``pref + 180`` degrees), not
by a hard-coded index offset.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
from scipy import stats

from release_platform.stimulus import core

__all__ = [
    "ConditionGrid",
    "GratingsResult",
    "condition_grid",
    "drifting_gratings",
    "static_gratings",
    "selectivity_index",
    "global_selectivity",
    "frequency_discrimination_index",
    "correlations",
]

DG_WINDOWS_S = (2.0, 1.0, 0.0)  # sweep, inter, extra at any frame rate (60, 30, 0 frames at 30 Hz)
SIGNIFICANCE_ALPHA = 0.05


@dataclasses.dataclass(frozen=True)
class ConditionGrid:
    """Trials coded by condition: ``codes`` per trial (``-1``: not analysable), ``axes`` the sorted values
    per dimension (condition code = ravelled index over ``axes``), ``blank_code`` = ``n_conditions``."""

    axes: dict[str, np.ndarray]
    codes: np.ndarray

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(v) for v in self.axes.values())

    @property
    def n_conditions(self) -> int:
        return int(np.prod(self.shape)) if self.axes else 0

    @property
    def blank_code(self) -> int:
        return self.n_conditions


def condition_grid(block: pd.DataFrame, columns: list[str], blank: np.ndarray) -> ConditionGrid:
    """Code every row by the grid of the distinct finite values of ``columns`` (rows with ``blank`` True
    get the blank code; non-blank rows with a NaN value in a column get ``-1``)."""
    blank = np.asarray(blank, dtype=bool)
    axes, idx = {}, []
    ok = ~blank
    for c in columns:
        v = block[c].to_numpy(dtype=float)
        vals = np.unique(v[ok & np.isfinite(v)])
        axes[c] = vals
        i = np.searchsorted(vals, v)
        good = np.isfinite(v) & (i < len(vals))
        good &= vals[np.minimum(i, max(len(vals) - 1, 0))] == v if len(vals) else False
        ok &= good
        idx.append(np.where(good, i, 0))
    shape = tuple(len(v) for v in axes.values())
    codes = np.full(len(block), -1, dtype=np.int64)
    if all(shape) and ok.any():
        codes[ok] = np.ravel_multi_index(tuple(i[ok] for i in idx), shape)
    codes[blank] = int(np.prod(shape)) if shape else 0
    return ConditionGrid(axes=axes, codes=codes)


@dataclasses.dataclass
class GratingsResult:
    """One grating (or scene) stimulus: per-trial responses, condition statistics and per-cell metrics.

    ``response``: ``conditions... x N x 3`` (mean, SEM, count of trials with p below the Bonferroni
    threshold) with the blank as ``blank_response`` (``N x 3``); ``metrics``: column name -> ``N`` array.
    """

    stimulus: str
    grid: ConditionGrid
    sweeps: core.SweepResponses
    response: np.ndarray
    blank_response: np.ndarray
    pref_code: np.ndarray
    metrics: dict[str, np.ndarray]
    arrays: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    messages: list[str] = dataclasses.field(default_factory=list)


def _nearest_index(values_deg: np.ndarray, target_deg: np.ndarray, period: float) -> np.ndarray:
    d = np.abs(((values_deg[None, :] - target_deg[:, None]) + period / 2) % period - period / 2)
    return np.argmin(d, axis=1)


def selectivity_index(pref: np.ndarray, other: np.ndarray) -> np.ndarray:
    """``(pref - other) / (pref + other)``."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return (pref - other) / (pref + other)


def global_selectivity(tuning: np.ndarray, angles_deg: np.ndarray, harmonic: int) -> np.ndarray:
    """``|sum t e^{i h theta}| / sum t`` over angles, ``t`` = tuning (``angles x N``) rectified at 0."""
    t = np.maximum(np.nan_to_num(tuning, nan=0.0), 0.0)
    z = np.exp(1j * harmonic * np.deg2rad(angles_deg))[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.abs((t * z).sum(axis=0)) / t.sum(axis=0)


def frequency_discrimination_index(tuning: np.ndarray, values: np.ndarray, trial_mask: np.ndarray, n_levels: int) -> np.ndarray:
    """AllenSDK tf/sf index: ``ptp(tuning) / (ptp + 2 sqrt(SSE / (n - n_levels)))`` with SSE the squared
    deviations of the cell's trials in ``trial_mask`` (``K x N``) from their grand mean. ``n_levels`` is the
    number of frequencies in the table (AllenSDK hard-codes 5)."""
    ptp = np.nanmax(tuning, axis=0) - np.nanmin(tuning, axis=0)
    v = np.where(trial_mask & np.isfinite(values), values, np.nan)
    n = np.isfinite(v).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        m = np.nansum(v, axis=0) / n
        sse = np.nansum((v - m) ** 2, axis=0)
        out = ptp / (ptp + 2.0 * np.sqrt(sse / (n - n_levels)))
    return np.where(n > n_levels, out, np.nan)


def correlations(values: np.ndarray, codes: np.ndarray, n_conditions: int, cond_mean: np.ndarray) -> dict[str, np.ndarray]:
    """Signal correlation (``N x N`` over condition means), representational similarity (conditions x
    conditions over population vectors) and Spearman noise correlation per condition (``N x N x C``;
    trials with a NaN cell left out of that condition)."""
    n = values.shape[1]
    with np.errstate(invalid="ignore", divide="ignore"):
        signal = np.corrcoef(np.nan_to_num(cond_mean[:n_conditions]).T) if n_conditions > 1 else np.full((n, n), np.nan)
        rep = np.corrcoef(np.nan_to_num(cond_mean[:n_conditions])) if n > 1 else np.full((n_conditions,) * 2, np.nan)
    noise = np.full((n, n, n_conditions), np.nan)
    for c in range(n_conditions):
        v = values[codes == c]
        v = v[np.isfinite(v).all(axis=1)]
        if len(v) < 3:
            continue
        r = stats.rankdata(v, axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            noise[:, :, c] = np.corrcoef(r.T)
    return {"signal_corr": np.atleast_2d(signal), "rep_similarity": np.atleast_2d(rep), "noise_corr": noise}


def _condition_stats(sweeps: core.SweepResponses, codes: np.ndarray, n_conditions: int, n_tests: int):
    gs = core.group_stats(sweeps.mean_response, codes, n_conditions + 1)
    sig = np.asarray(sweeps.p_value < SIGNIFICANCE_ALPHA / max(n_tests, 1), dtype=float)
    sig_count = core.group_stats(np.where(np.isfinite(sweeps.mean_response), sig, np.nan), codes, n_conditions + 1)
    counts = np.nan_to_num(sig_count.mean) * sig_count.count
    resp = np.stack([gs.mean, gs.sem, counts], axis=-1)  # (C+1) x N x 3
    return gs, resp


def _pref_trials_ok(gs: core.GroupStats, pref: np.ndarray) -> np.ndarray:
    """Whether each cell has at least two finite trials at its preferred condition (AllenSDK intended this
    check in static gratings but compared the length of a boolean mask, so it never fired)."""
    cols = np.arange(gs.count.shape[1])
    return (pref >= 0) & (gs.count[np.maximum(pref, 0), cols] >= 2)


def drifting_gratings(
    corrected: np.ndarray,
    block: pd.DataFrame,
    frame_rate_hz: float,
    speed: np.ndarray | None = None,
    *,
    windows_s: tuple[float, float, float] = DG_WINDOWS_S,
    with_correlations: bool = True,
) -> GratingsResult:
    """Drifting-grating metrics: ``pref_dir_dg``, ``pref_tf_dg``, ``osi_dg``, ``dsi_dg``, ``g_osi_dg``,
    ``g_dsi_dg``, ``p_dg``, ``peak_dff_dg``, ``reliability_dg``, ``tfdi_dg``, ``run_mod_dg``,
    ``p_run_mod_dg``.

    Blank sweeps are rows with a NaN (or 0) orientation or temporal frequency. Responses at the preferred
    temporal frequency give OSI (orthogonal = mean of the directions nearest +-90 deg), DSI (null = nearest
    +180 deg), and the global indices; ``p_dg`` is the one-way ANOVA over every condition plus the blank.
    """
    ori = block["orientation"].to_numpy(dtype=float)
    tf = block["temporal_frequency"].to_numpy(dtype=float)
    blank = ~np.isfinite(ori) | ~np.isfinite(tf) | (tf == 0)
    grid = condition_grid(block, ["orientation", "temporal_frequency"], blank)
    w = core.Windows.from_seconds(*windows_s, frame_rate_hz)
    sw = core.sweep_responses(corrected, block["start_frame"].to_numpy(), w, speed)
    codes = grid.codes[sw.trial_index]
    n_dir, n_tf = grid.shape if grid.n_conditions else (0, 0)
    n = corrected.shape[0]
    gs, resp = _condition_stats(sw, codes, grid.n_conditions, grid.n_conditions)
    metrics = {k: np.full(n, np.nan) for k in (
        "pref_dir_dg", "pref_tf_dg", "osi_dg", "dsi_dg", "g_osi_dg", "g_dsi_dg", "p_dg", "peak_dff_dg",
        "reliability_dg", "tfdi_dg", "run_mod_dg", "p_run_mod_dg")}
    result = GratingsResult("drifting_gratings", grid, sw, resp[:-1].reshape(n_dir, n_tf, n, 3) if grid.n_conditions else resp[:0],
                            resp[-1], np.full(n, -1), metrics)
    if grid.n_conditions == 0:
        result.messages.append("drifting_gratings: no non-blank presentations")
        return result
    pref, peak = core.preferred(gs.mean[:-1])
    pref = np.where(_pref_trials_ok(gs, pref), pref, -1)
    ok = pref >= 0
    dirs, tfs = grid.axes["orientation"], grid.axes["temporal_frequency"]
    pi, pj = np.unravel_index(np.maximum(pref, 0), (n_dir, n_tf))
    mean = gs.mean[:-1].reshape(n_dir, n_tf, n)
    cols = np.arange(n)
    at_tf = mean[:, pj, cols]  # n_dir x N: direction tuning at the preferred TF
    pref_val = at_tf[pi, cols]
    orth = 0.5 * (at_tf[_nearest_index(dirs, dirs[pi] + 90, 360), cols] + at_tf[_nearest_index(dirs, dirs[pi] - 90, 360), cols])
    null = at_tf[_nearest_index(dirs, dirs[pi] + 180, 360), cols]
    at_dir = mean[pi, :, cols].T  # n_tf x N
    nonblank_at_dir = (np.asarray(codes)[:, None] >= 0) & (np.asarray(codes)[:, None] < grid.n_conditions) & (
        (np.clip(codes, 0, grid.n_conditions - 1) // n_tf)[:, None] == pi[None, :])
    run_mod, p_run = core.run_modulation(sw.mean_response, sw.dx, codes, pref, min_trials=2)
    rel = core.reliability(corrected, sw.starts, codes, pref, 0, w.sweep)
    vals = {
        "pref_dir_dg": dirs[pi], "pref_tf_dg": tfs[pj], "osi_dg": selectivity_index(pref_val, orth),
        "dsi_dg": selectivity_index(pref_val, null), "g_osi_dg": global_selectivity(at_tf, dirs, 2),
        "g_dsi_dg": global_selectivity(at_tf, dirs, 1),
        "peak_dff_dg": peak, "reliability_dg": rel,
        "tfdi_dg": frequency_discrimination_index(at_dir, sw.mean_response, nonblank_at_dir, n_tf),
        "run_mod_dg": run_mod, "p_run_mod_dg": p_run,
    }
    for k, v in vals.items():
        metrics[k] = np.where(ok, v, np.nan)
    metrics["p_dg"] = core.anova_p(sw.mean_response, codes, grid.n_conditions + 1)
    result.pref_code = pref
    if with_correlations:
        result.arrays.update({f"{k}_dg": v for k, v in correlations(sw.mean_response, codes, grid.n_conditions, gs.mean).items()})
    return result


def static_gratings(
    corrected: np.ndarray,
    block: pd.DataFrame,
    frame_rate_hz: float,
    speed: np.ndarray | None = None,
) -> GratingsResult:
    """Static-grating metrics: ``pref_ori_sg``, ``pref_sf_sg``, ``pref_phase_sg``, ``osi_sg``, ``g_osi_sg``,
    ``p_sg``, ``peak_dff_sg``, ``time_to_peak_sg``, ``reliability_sg``, ``sfdi_sg``, ``run_mod_sg``,
    ``p_run_mod_sg``.

    Sweep length = the median presentation length of the block (AllenSDK: of row 1), baseline 4 sweeps,
    response window 2 sweeps. Reliability uses the response window ``[inter, inter + sweep + extra)`` of
    the sweep (AllenSDK hard-codes frames 28:42, right only for 7-frame sweeps). Cells with fewer than two
    trials at their preferred condition get NaN (AllenSDK intended this check but compared the length of
    a boolean mask, so it never fired).
    """
    return _flashed(corrected, block, frame_rate_hz, speed, kind="sg")


def _flashed(corrected, block, frame_rate_hz, speed, *, kind: str) -> GratingsResult:
    length = block["end_frame"].to_numpy() - block["start_frame"].to_numpy()
    sweep = int(max(np.median(length), 1)) if len(length) else 1
    w = core.Windows(sweep=sweep, inter=4 * sweep, extra=sweep)
    n = corrected.shape[0]
    if kind == "sg":
        ori = block["orientation"].to_numpy(dtype=float)
        sf = block["spatial_frequency"].to_numpy(dtype=float)
        blank = ~np.isfinite(ori) | ~np.isfinite(sf) | (sf == 0)
        grid = condition_grid(block, ["orientation", "spatial_frequency", "phase"], blank)
        names = ("pref_ori_sg", "pref_sf_sg", "pref_phase_sg", "osi_sg", "g_osi_sg", "p_sg", "peak_dff_sg",
                 "time_to_peak_sg", "reliability_sg", "sfdi_sg", "run_mod_sg", "p_run_mod_sg")
        n_tests = grid.shape[0] * grid.shape[1] if grid.n_conditions else 1
    else:
        fr = block["frame"].to_numpy(dtype=float)
        blank = fr < 0
        grid = condition_grid(block, ["frame"], blank)
        names = ("pref_image_ns", "p_ns", "peak_dff_ns", "image_sel_ns", "time_to_peak_ns", "reliability_ns",
                 "run_mod_ns", "p_run_mod_ns")
        n_tests = grid.n_conditions
    stimulus = "static_gratings" if kind == "sg" else "natural_scenes"
    sw = core.sweep_responses(corrected, block["start_frame"].to_numpy(), w, speed)
    codes = grid.codes[sw.trial_index]
    gs, resp = _condition_stats(sw, codes, grid.n_conditions, n_tests)
    metrics = {k: np.full(n, np.nan) for k in names}
    result = GratingsResult(stimulus, grid, sw, resp[:-1].reshape(*grid.shape, n, 3) if grid.n_conditions else resp[:0],
                            resp[-1], np.full(n, -1), metrics)
    if grid.n_conditions == 0:
        result.messages.append(f"{stimulus}: no non-blank presentations")
        return result
    pref, peak = core.preferred(gs.mean[:-1])
    pref = np.where(_pref_trials_ok(gs, pref), pref, -1)
    ok = pref >= 0
    cols = np.arange(n)
    trace = core.mean_sweep_traces(corrected, sw.baseline, sw.starts, codes, pref, w)
    filled = np.where(np.isfinite(trace), trace, -np.inf)
    ttp = (np.argmax(filled, axis=1) - w.inter) / frame_rate_hz
    rel = core.reliability(corrected, sw.starts, codes, pref, 0, w.sweep + w.extra)
    run_mod, p_run = core.run_modulation(sw.mean_response, sw.dx, codes, pref, min_trials=4)
    vals = {f"peak_dff_{kind}": peak, f"time_to_peak_{kind}": ttp, f"reliability_{kind}": rel,
            f"run_mod_{kind}": run_mod, f"p_run_mod_{kind}": p_run}
    if kind == "sg":
        n_ori, n_sf, n_ph = grid.shape
        oi, si, hi = np.unravel_index(np.maximum(pref, 0), grid.shape)
        mean = gs.mean[:-1].reshape(n_ori, n_sf, n_ph, n)
        oris, sfs, phs = grid.axes["orientation"], grid.axes["spatial_frequency"], grid.axes["phase"]
        at_sf = mean[:, si, hi, cols]  # n_ori x N
        orth = at_sf[_nearest_index(oris, oris[oi] + 90, 180), cols]
        at_ori = mean[oi, :, hi, cols].T  # n_sf x N
        c = np.clip(codes, 0, grid.n_conditions - 1)
        c_ori, _, c_ph = np.unravel_index(c, grid.shape)
        at_pref_op = (codes[:, None] >= 0) & (codes[:, None] < grid.n_conditions) & (c_ori[:, None] == oi[None, :]) & (
            c_ph[:, None] == hi[None, :])
        vals.update({
            "pref_ori_sg": oris[oi], "pref_sf_sg": sfs[si], "pref_phase_sg": phs[hi],
            "osi_sg": selectivity_index(at_sf[oi, cols], orth), "g_osi_sg": global_selectivity(at_sf, oris, 2),
            "sfdi_sg": frequency_discrimination_index(at_ori, sw.mean_response, at_pref_op, n_sf),
        })
    else:
        images = grid.axes["frame"]
        img_mean = gs.mean[:-1]  # images x N
        lo, hi_ = np.nanmin(img_mean, axis=0), np.nanmax(img_mean, axis=0)
        thr = lo[None, :] + (hi_ - lo)[None, :] * (np.arange(1000) / 1000.0)[:, None]  # 1000 x N, AllenSDK grid
        frac = (img_mean[None, :, :] > thr[:, None, :]).sum(axis=1) / np.isfinite(img_mean).sum(axis=0)
        vals.update({"pref_image_ns": images[np.maximum(pref, 0)], "image_sel_ns": 1.0 - 2.0 * frac.mean(axis=0)})
    for k, v in vals.items():
        metrics[k] = np.where(ok, v, np.nan)
    metrics[f"p_{kind}"] = core.anova_p(sw.mean_response, codes, grid.n_conditions + 1)
    result.pref_code = pref
    return result


def natural_scenes(corrected: np.ndarray, block: pd.DataFrame, frame_rate_hz: float, speed: np.ndarray | None = None) -> GratingsResult:
    """Natural-scene metrics: ``pref_image_ns``, ``p_ns``, ``peak_dff_ns``, ``image_sel_ns``,
    ``time_to_peak_ns``, ``reliability_ns``, ``run_mod_ns``, ``p_run_mod_ns``.

    Images are the distinct ``frame`` values >= 0 in the table (any number), ``-1`` is the blank;
    ``image_sel_ns`` = 1 - 2 x the mean, over 1000 thresholds ``min + j (max - min) / 1000`` (j = 0..999,
    AllenSDK's grid) between the smallest and largest image response, of the fraction of images above the
    threshold (fractions of the images shown; AllenSDK divides by a hard-coded 118). Timing and checks as static gratings.
    """
    return _flashed(corrected, block, frame_rate_hz, speed, kind="ns")
