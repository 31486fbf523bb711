"""Shared machinery of the observatory analysis, vectorized over cells and trials.

Conventions: traces are ``N x T`` (cells x frames); per-trial values are ``K x N`` (trials x cells);
condition codes are integers per trial (``-1``: trial not in any group). Every statistic is NaN-aware: a
NaN value (a trial whose window holds a NaN frame for that cell) is left out of that cell's statistics
only, so one cell's bad frames never change another cell's metrics.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import sparse, stats

__all__ = [
    "Windows",
    "SweepResponses",
    "sweep_responses",
    "GroupStats",
    "group_stats",
    "anova_p",
    "preferred",
    "reliability",
    "run_modulation",
    "mean_sweep_traces",
    "window_traces",
]

RUNNING_THRESHOLD_CM_S = 1.0


@dataclasses.dataclass(frozen=True)
class Windows:
    """Sweep windows in frames: baseline ``inter`` frames before onset, ``sweep`` + ``extra`` response frames.

    The trace window of a trial is ``[start - inter, start + sweep + inter)``; the mean sweep response
    averages ``[start, start + sweep + extra)``.
    """

    sweep: int
    inter: int
    extra: int

    @property
    def length(self) -> int:
        return self.sweep + 2 * self.inter

    @classmethod
    def from_seconds(cls, sweep_s: float, inter_s: float, extra_s: float, frame_rate_hz: float) -> "Windows":
        r = lambda s: int(round(s * frame_rate_hz))  # noqa: E731
        return cls(sweep=max(r(sweep_s), 1), inter=max(r(inter_s), 1), extra=max(r(extra_s), 0))


@dataclasses.dataclass(frozen=True)
class SweepResponses:
    """Per-trial responses of every cell (``K x N``) for the trials whose window lies inside the recording.

    ``trial_index``: rows of the stimulus block kept (``K``); ``baseline``: mean corrected fluorescence
    over the pre-stimulus window; ``mean_response``: mean percent dF/F over the response window
    (``100 * (F / baseline - 1)``); ``p_value``: one-way ANOVA of the baseline part against the response
    part ``[inter, inter + sweep + extra)`` of the window (AllenSDK ``do_p_value``); ``dx``: mean running
    speed over the response window (cm/s, NaN without running speed).
    """

    trial_index: np.ndarray
    starts: np.ndarray
    windows: Windows
    baseline: np.ndarray
    mean_response: np.ndarray
    p_value: np.ndarray
    dx: np.ndarray
    n_dropped_out_of_range: int


def _prefix(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Prefix sums of NaN-zeroed values, their squares and the finite count (``N x (T + 1)`` each)."""
    finite = np.isfinite(x)
    xz = np.where(finite, x, 0.0)
    zero = np.zeros((x.shape[0], 1))
    cs = np.concatenate([zero, np.cumsum(xz, axis=1)], axis=1)
    cs2 = np.concatenate([zero, np.cumsum(xz * xz, axis=1)], axis=1)
    cn = np.concatenate([np.zeros((x.shape[0], 1), dtype=np.int64), np.cumsum(finite, axis=1)], axis=1)
    return cs, cs2, cn


def _window_sums(prefix, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sum, sum of squares and finite count of ``x[:, a:b]`` for every trial (``K x N`` each), from
    :func:`_prefix`, so a NaN frame only marks the windows that hold it."""
    cs, cs2, cn = prefix
    return (cs[:, b] - cs[:, a]).T, (cs2[:, b] - cs2[:, a]).T, (cn[:, b] - cn[:, a]).T


def sweep_responses(
    corrected: np.ndarray,
    starts: np.ndarray,
    windows: Windows,
    speed: np.ndarray | None = None,
) -> SweepResponses:
    """Mean sweep responses, their ANOVA p-values and running speed for trials starting at ``starts``.

    Trials whose trace window ``[start - inter, start + sweep + inter)`` falls outside the recording are
    dropped (counted in ``n_dropped_out_of_range``). A trial with any NaN frame of a cell in its window is
    NaN for that cell.
    """
    fc = np.asarray(corrected, dtype=float)
    n, t = fc.shape
    starts = np.asarray(starts, dtype=np.int64)
    keep = (starts - windows.inter >= 0) & (starts + windows.sweep + windows.inter <= t)
    idx = np.flatnonzero(keep)
    s = starts[keep]
    # prefix sums over the frames this block spans only, so a session costs one pass over its frames
    lo = int(s.min() - windows.inter) if len(s) else 0
    hi = int(s.max() + windows.sweep + windows.inter) if len(s) else 0
    part = fc[:, lo:hi]
    with np.errstate(invalid="ignore"):
        offset = np.nanmedian(part, axis=1, keepdims=True) if part.size else np.zeros((n, 1))
    offset = np.where(np.isfinite(offset), offset, 0.0)
    centred = part - offset
    s_abs, s = s, s - lo
    base_a, base_b = s - windows.inter, s
    resp_a, resp_b = s, s + windows.sweep + windows.extra
    full_a, full_b = s - windows.inter, s + windows.sweep + windows.inter
    prefix = _prefix(centred)
    bsum, bsq, bn = _window_sums(prefix, base_a, base_b)
    rsum, rsq, rn = _window_sums(prefix, resp_a, resp_b)
    _, _, fn = _window_sums(prefix, full_a, full_b)
    # ANOVA: baseline part [0, inter) vs response part [inter, inter + sweep + extra) of the window (AllenSDK)
    with np.errstate(invalid="ignore", divide="ignore"):
        b_mean = bsum / windows.inter
        baseline = b_mean + offset.T
        resp_mean = rsum / (windows.sweep + windows.extra) + offset.T
        mean_response = 100.0 * (resp_mean / baseline - 1.0)
        n1, n2 = windows.inter, windows.sweep + windows.extra
        m2 = rsum / n2
        ssw = (bsq - n1 * b_mean**2) + (rsq - n2 * m2**2)
        grand = (bsum + rsum) / (n1 + n2)
        ssb = n1 * (b_mean - grand) ** 2 + n2 * (m2 - grand) ** 2
        f = ssb / (ssw / (n1 + n2 - 2))
        p = stats.f.sf(f, 1, n1 + n2 - 2)
    complete = (fn == windows.length) & (bn == windows.inter) & (rn == windows.sweep + windows.extra)
    mean_response = np.where(complete, mean_response, np.nan)
    baseline = np.where(complete, baseline, np.nan)
    p = np.where(complete & np.isfinite(p), p, np.where(complete, 1.0, np.nan))
    if speed is None:
        dx = np.full(len(s), np.nan)
    else:
        sp = np.asarray(speed, dtype=float)[None, lo:hi]
        ssum, _, sn = _window_sums(_prefix(sp), resp_a, resp_b)
        with np.errstate(invalid="ignore", divide="ignore"):
            dx = np.where(sn[:, 0] > 0, ssum[:, 0] / sn[:, 0], np.nan)
    return SweepResponses(
        trial_index=idx, starts=s_abs, windows=windows, baseline=baseline, mean_response=mean_response,
        p_value=p, dx=dx, n_dropped_out_of_range=int((~keep).sum()),
    )


def window_traces(traces: np.ndarray, starts: np.ndarray, a: int, b: int) -> np.ndarray:
    """``traces[:, start + a : start + b]`` for every start: ``K x N x (b - a)`` (a view-free gather)."""
    idx = np.asarray(starts, dtype=np.int64)[:, None] + np.arange(a, b)[None, :]
    return np.transpose(traces[:, idx], (1, 0, 2))


@dataclasses.dataclass(frozen=True)
class GroupStats:
    """Per-group statistics of per-trial values, ``G x N`` each: count of finite trials, mean, SEM."""

    count: np.ndarray
    mean: np.ndarray
    sem: np.ndarray


def _onehot(codes: np.ndarray, n_groups: int) -> sparse.csr_matrix:
    codes = np.asarray(codes, dtype=np.int64)
    rows = np.flatnonzero(codes >= 0)
    return sparse.csr_matrix((np.ones(len(rows)), (codes[rows], rows)), shape=(n_groups, len(codes)))


def group_stats(values: np.ndarray, codes: np.ndarray, n_groups: int) -> GroupStats:
    """Count, mean and SEM (``std(ddof=1) / sqrt(count)``) of ``values`` (``K x N``) per group code."""
    v = np.asarray(values, dtype=float)
    finite = np.isfinite(v)
    oh = _onehot(codes, n_groups)
    count = np.asarray(oh @ finite.astype(float))
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.asarray(oh @ np.where(finite, v, 0.0)) / count
        g = np.asarray(codes, dtype=np.int64)
        resid = np.where(finite & (g[:, None] >= 0), v - mean[np.maximum(g, 0)], 0.0)
        ss = np.asarray(oh @ (resid * resid))
        sem = np.sqrt(ss / (count - 1)) / np.sqrt(count)
    mean = np.where(count > 0, mean, np.nan)
    sem = np.where(count > 1, sem, np.nan)
    return GroupStats(count=count, mean=mean, sem=sem)


def anova_p(values: np.ndarray, codes: np.ndarray, n_groups: int) -> np.ndarray:
    """One-way ANOVA p-value per cell over the groups of ``codes`` (groups with no finite trial left out)."""
    v = np.asarray(values, dtype=float)
    gs = group_stats(v, codes, n_groups)
    finite = np.isfinite(v) & (np.asarray(codes)[:, None] >= 0)
    n = finite.sum(axis=0)
    k = (gs.count > 0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        grand = np.nansum(gs.mean * gs.count, axis=0) / n
        ssb = np.nansum(gs.count * (gs.mean - grand) ** 2, axis=0)
        g = np.asarray(codes, dtype=np.int64)
        resid = np.where(finite, v - gs.mean[np.maximum(g, 0)], 0.0)
        ssw = (resid * resid).sum(axis=0)
        f = (ssb / (k - 1)) / (ssw / (n - k))
        p = stats.f.sf(f, k - 1, n - k)
    return np.where((k >= 2) & (n > k), p, np.nan)


def preferred(mean: np.ndarray, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Index of the largest group mean per cell among ``allowed`` groups (ties: first), and its value.

    Cells with no finite mean get index ``-1`` and value NaN.
    """
    m = np.array(mean, dtype=float)
    if allowed is not None:
        m[~np.asarray(allowed, dtype=bool)] = np.nan
    filled = np.where(np.isfinite(m), m, -np.inf)
    idx = np.argmax(filled, axis=0)
    ok = np.isfinite(m).any(axis=0)
    val = np.where(ok, filled[idx, np.arange(m.shape[1])], np.nan)
    return np.where(ok, idx, -1), val


def _pairwise_mean_corr(x: np.ndarray) -> np.ndarray:
    """Mean upper-triangle Pearson correlation between trials for each cell; ``x`` is ``cells x trials x L``.

    Trials with a NaN frame or no variance are left out of that cell's pairs; fewer than two usable
    trials give NaN.
    """
    x = np.asarray(x, dtype=float)
    xc = x - x.mean(axis=2, keepdims=True)
    norm = np.sqrt((xc * xc).sum(axis=2, keepdims=True))
    with np.errstate(invalid="ignore", divide="ignore"):
        z = xc / norm
    good = np.isfinite(z).all(axis=2) & (norm[..., 0] > 0)
    z = np.where(good[..., None], z, 0.0)
    c = np.einsum("ckl,cjl->ckj", z, z)
    m = good.sum(axis=1)
    total = c.sum(axis=(1, 2)) - np.einsum("ckk->c", c)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = total / (m * (m - 1))
    return np.where(m >= 2, out, np.nan)


def reliability(
    traces: np.ndarray, starts: np.ndarray, trial_codes: np.ndarray, pref: np.ndarray, a: int, b: int
) -> np.ndarray:
    """Mean pairwise Pearson correlation of single-trial traces ``[start + a, start + b)`` at each cell's
    preferred condition (``pref``: group code per cell, -1 = none).

    The percent dF/F of a sweep is an affine transform of the corrected fluorescence within a trial, so
    the correlation is computed on the trace itself. Loops over distinct preferred conditions, never
    over cells or trials.
    """
    out = np.full(traces.shape[0], np.nan)
    codes = np.asarray(trial_codes)
    for g in np.unique(pref[pref >= 0]):
        cells = np.flatnonzero(pref == g)
        tr = np.flatnonzero(codes == g)
        if len(tr) < 2:
            continue
        w = window_traces(traces[cells], starts[tr], a, b)  # trials x cells x L
        out[cells] = _pairwise_mean_corr(np.transpose(w, (1, 0, 2)))
    return out


def mean_sweep_traces(
    traces: np.ndarray, baseline: np.ndarray, starts: np.ndarray, trial_codes: np.ndarray, pref: np.ndarray,
    windows: Windows,
) -> np.ndarray:
    """Mean percent-dF/F sweep trace (``N x window length``) over each cell's preferred-condition trials."""
    out = np.full((traces.shape[0], windows.length), np.nan)
    codes = np.asarray(trial_codes)
    for g in np.unique(pref[pref >= 0]):
        cells = np.flatnonzero(pref == g)
        tr = np.flatnonzero(codes == g)
        if not len(tr):
            continue
        w = window_traces(traces[cells], starts[tr], -windows.inter, windows.sweep + windows.inter)
        pct = 100.0 * (w / baseline[tr][:, cells, None] - 1.0)
        with np.errstate(invalid="ignore"):
            out[cells] = np.nanmean(pct, axis=0) if np.isfinite(pct).any() else np.nan
    return out


def run_modulation(
    values: np.ndarray, dx: np.ndarray, trial_codes: np.ndarray, pref: np.ndarray, min_trials: int
) -> tuple[np.ndarray, np.ndarray]:
    """Running modulation at each cell's preferred condition: ``(run_mod, p_run_mod)``.

    Trials split by mean running speed (``dx >= 1 cm/s`` running); each group needs more than
    ``min_trials`` finite trials, else NaN. ``p`` is Welch's t-test; ``run_mod = (m_run - m_stat) /
    |m_run|`` if ``m_run > m_stat`` else ``-(m_stat - m_run) / |m_stat|``.
    """
    v = np.asarray(values, dtype=float)
    at_pref = (np.asarray(trial_codes)[:, None] == pref[None, :]) & np.isfinite(v)
    running = (np.asarray(dx) >= RUNNING_THRESHOLD_CM_S)[:, None]
    stat = ~running & np.isfinite(np.asarray(dx))[:, None]

    def moments(mask):
        n = mask.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            m = np.where(mask, v, 0.0).sum(axis=0) / n
            var = np.where(mask, (v - m) ** 2, 0.0).sum(axis=0) / (n - 1)
        return n, m, var

    nr, mr, vr = moments(at_pref & running)
    ns, ms, vs = moments(at_pref & stat)
    ok = (nr > min_trials) & (ns > min_trials)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = stats.ttest_ind_from_stats(mr, np.sqrt(vr), nr, ms, np.sqrt(vs), ns, equal_var=False).pvalue
        mod = np.where(mr > ms, (mr - ms) / np.abs(mr), -(ms - mr) / np.abs(ms))
    return np.where(ok, mod, np.nan), np.where(ok, p, np.nan)
