"""Locally sparse noise: ON/OFF mean-response maps and receptive fields.

Receptive fields follow AllenSDK ``receptive_field_analysis`` in outline, vectorized over cells:

1. Events: dF/F smoothed over 5 samples; per trial an early rise ``x`` (over ``delta`` = 0.1 s) and a late
   rise ``y`` (the largest ``delta`` rise starting 2-4 frames (at 30 Hz) later, in a 0.33 s window after
   onset); a robust 2-D noise model per cell (median centre, covariance of the points within 3 robust
   standard deviations); an event is a trial with Mahalanobis distance above 4, ``y > 0.05`` and ``y > x``
   (a rise evoked by this trial, not carried over from the previous one).
2. Per pixel and polarity, the number of events on trials where the pixel was ON (255) / OFF (0). The
   shuffle test permutes events over trials; one permutation gives the null for every event count at once
   (its first ``m`` trials are a uniform ``m``-subset), so shuffles are shared by cells in batches and the
   cost does not grow with the number of cells. Multiple comparisons are corrected inside the test
   (max-T over every pixel of both polarities, :func:`shuffle_test`), so each cell's family-wise error is
   ``alpha`` at any number of shuffles. AllenSDK takes ``p`` = the fraction of shuffles at least as large
   and names an FDR correction, but its ``multipletests`` call uses the default (Holm-Sidak), which with
   p-values resolved to ``1 / n_shuffles`` passes only pixels no shuffle reached.
3. Connected components of significant pixels (8-connectivity); the largest ON and OFF component each get
   a 2-D Gaussian fit (least squares on the event-triggered excess of that component) giving centre and
   area (the 1-sigma ellipse, square degrees); ``rf_distance_lsn`` between the ON and OFF centres,
   ``rf_overlap_index_lsn`` = intersection / union of the two 1-sigma ellipses.
4. ``rf_chi2_lsn``: per pixel, a chi-square test (1 dof) of event rate on trials that stimulated the pixel or
   a neighbour (3 x 3 disc) against the other trials; the smallest p, Bonferroni-corrected over pixels.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pandas as pd
from scipy import ndimage, optimize, sparse, stats

from release_platform.errors import InputError
from release_platform.stimulus import core

__all__ = ["LsnResult", "locally_sparse_noise", "detect_events", "shuffle_test", "DEFAULT_SHUFFLES"]

DEFAULT_SHUFFLES = 10_000
ON, OFF, GREY = 255, 0, 127
LSN_METRICS = ("rf_chi2_lsn", "rf_area_on_lsn", "rf_center_on_x_lsn", "rf_center_on_y_lsn", "rf_area_off_lsn",
               "rf_center_off_x_lsn", "rf_center_off_y_lsn", "rf_distance_lsn", "rf_overlap_index_lsn")


@dataclasses.dataclass
class LsnResult:
    """Maps are ``N x rows x cols``; ``p_on``/``p_off`` shuffle p-values; ``rf_on``/``rf_off`` the
    event-triggered excess masked to the chosen component (NaN elsewhere)."""

    stimulus: str
    sweeps: core.SweepResponses
    mean_on: np.ndarray
    mean_off: np.ndarray
    events: np.ndarray
    p_on: np.ndarray
    p_off: np.ndarray
    rf_on: np.ndarray
    rf_off: np.ndarray
    metrics: dict[str, np.ndarray]
    pixel_deg: float
    messages: list[str] = dataclasses.field(default_factory=list)


def detect_events(dff: np.ndarray, starts: np.ndarray, frame_rate_hz: float) -> np.ndarray:
    """Boolean ``K x N``: whether each trial evoked a calcium event in each cell (see the module doc)."""
    scale = frame_rate_hz / 30.0
    delta = max(int(round(3 * scale)), 1)
    shifts = [max(int(round(s * scale)), 1) for s in (2, 3, 4)]
    smooth = ndimage.uniform_filter1d(np.nan_to_num(np.asarray(dff, dtype=float)), 5, axis=1, mode="nearest")
    t = smooth.shape[1]
    o = np.asarray(starts, dtype=np.int64) + 1  # first frame after onset (consecutive trials, AllenSDK offset)
    last = o + max(shifts) + delta
    ok = (o >= 0) & (last < t)
    o = np.where(ok, o, 0)
    at = lambda k: smooth[:, np.minimum(o + k, t - 1)].T  # noqa: E731  K x N
    x = at(delta) - at(0)
    y = np.max(np.stack([at(s + delta) - at(s) for s in shifts]), axis=0)
    mx, my = np.median(x, axis=0), np.median(y, axis=0)
    sx = 1.4826 * np.median(np.abs(x - mx), axis=0) + 1e-12
    sy = 1.4826 * np.median(np.abs(y - my), axis=0) + 1e-12
    core_pts = (np.abs(x - mx) < 3 * sx) & (np.abs(y - my) < 3 * sy)
    cnt = np.maximum(core_pts.sum(axis=0), 2)
    dx, dy = np.where(core_pts, x - mx, 0.0), np.where(core_pts, y - my, 0.0)
    cxx, cyy, cxy = (dx * dx).sum(0) / (cnt - 1), (dy * dy).sum(0) / (cnt - 1), (dx * dy).sum(0) / (cnt - 1)
    det = np.maximum(cxx * cyy - cxy**2, 1e-24)
    ex, ey = x - mx, y - my
    d2 = (cyy * ex * ex - 2 * cxy * ex * ey + cxx * ey * ey) / det
    return (np.sqrt(d2) > 4.0) & (y > 0.05) & (y > x) & ok[:, None]


def shuffle_test(design: np.ndarray, events: np.ndarray, n_shuffles: int, seed: int, batch: int = 8) -> np.ndarray:
    """Family-wise shuffle p-values ``N x P`` for the count of events on the trials where each pixel
    (column of the ``K x P`` boolean ``design``) was set.

    Each count is standardized by its permutation mean and standard deviation (hypergeometric); a
    shuffle permutes the events over trials and records the largest standardized count over all pixels;
    ``p = (1 + #shuffles whose maximum reaches the observed value) / (1 + n_shuffles)`` (Westfall-Young
    max-T: corrected for every pixel of both polarities at once, valid at any number of shuffles).
    One permutation serves every event count (its first ``m`` trials are a uniform ``m``-subset), so the
    shuffles are shared by all cells in batches.
    """
    d = np.asarray(design, dtype=np.uint8)
    e = np.asarray(events, dtype=bool)
    k, p = d.shape
    n = e.shape[1]
    m = e.sum(axis=0)
    out = np.full((n, p), np.nan)
    levels = np.unique(m[m > 0])
    if not len(levels) or n_shuffles < 1:
        return out
    kp = d.sum(axis=0).astype(float)
    q = kp / k
    with np.errstate(invalid="ignore", divide="ignore"):
        def moments(mm):  # permutation (hypergeometric) mean and 1 / sd of a pixel's count, for m events
            mm = np.asarray(mm, dtype=float)[..., None]
            var = mm * q * (1 - q) * (k - mm) / max(k - 1, 1)
            return mm * q, np.where(var > 0, 1.0 / np.sqrt(var), 0.0), var > 0

    mean_c, inv_c, ok_c = moments(m)
    obs = np.where(ok_c, ((e.T.astype(float) @ d.astype(float)) - mean_c) * inv_c, -np.inf)  # BLAS, exact for counts
    mean_l, inv_l, ok_l = moments(levels)  # levels x P
    mean_l, inv_l = mean_l.astype(np.float32), np.where(ok_l, inv_l, np.nan).astype(np.float32)
    rng = np.random.default_rng(seed)
    maxnull = np.empty((n_shuffles, len(levels)))
    csr = sparse.csr_matrix(d)
    per_trial = np.diff(csr.indptr)
    edges = np.asarray(levels, dtype=np.int64)
    n_lv = len(edges)
    done = 0
    while done < n_shuffles:
        s = min(batch, n_shuffles - done)
        rank = rng.random((s, k)).argsort(axis=1)  # each trial's position in a uniform permutation
        level = np.searchsorted(edges, rank, side="right")  # first level whose prefix holds the trial
        sh, tr = np.nonzero(level < n_lv)
        base = (sh * n_lv + level[sh, tr]) * p  # only trials inside the largest prefix contribute
        reps = per_trial[tr]
        starts = csr.indptr[tr]
        offs = np.arange(reps.sum()) - np.repeat(np.cumsum(reps) - reps, reps)
        flat = np.repeat(base, reps) + csr.indices[np.repeat(starts, reps) + offs]
        counts = np.bincount(flat, minlength=s * n_lv * p).reshape(s, n_lv, p)
        null = np.cumsum(counts, axis=1, dtype=np.float32)  # s x levels x P: set-pixel counts among the first m trials
        z = (null - mean_l) * inv_l  # NaN where a pixel's count cannot vary
        maxnull[done : done + s] = np.fmax.reduce(z, axis=2)
        done += s
    maxnull.sort(axis=0)
    for j in range(len(levels)):
        cells = np.flatnonzero(m == levels[j])
        ge = n_shuffles - np.searchsorted(maxnull[:, j], obs[cells], side="left")
        out[cells] = (1.0 + ge) / (1.0 + n_shuffles)
    return out


def _gauss2d(coords, amp, x0, y0, sx, sy, base):
    x, y = coords
    return base + amp * np.exp(-((x - x0) ** 2) / (2 * sx**2) - ((y - y0) ** 2) / (2 * sy**2))


def _fit_component(excess: np.ndarray, mask: np.ndarray) -> tuple[float, float, float, float]:
    """Gaussian fit to ``excess`` over the component plus a one-pixel margin (Levenberg-Marquardt from the
    component's weighted moments); returns x0, y0, sx, sy in pixels. A fit that leaves the region or
    degenerates falls back to the moments."""
    region = ndimage.binary_dilation(mask, iterations=1)
    yy, xx = np.nonzero(region)
    z = np.nan_to_num(excess[yy, xx])
    w = np.clip(np.where(mask[yy, xx], z, 0.0), 0, None)
    if w.sum() <= 0:
        w = mask[yy, xx].astype(float)
    x0, y0 = (w * xx).sum() / w.sum(), (w * yy).sum() / w.sum()
    sx = float(np.sqrt(max((w * (xx - x0) ** 2).sum() / w.sum(), 0.25)))
    sy = float(np.sqrt(max((w * (yy - y0) ** 2).sum() / w.sum(), 0.25)))
    moments = (float(x0), float(y0), sx, sy)
    if len(z) < 7:
        return moments
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optimize.OptimizeWarning)
            popt, _ = optimize.curve_fit(_gauss2d, (xx.astype(float), yy.astype(float)), z,
                                         p0=(max(z.max(), 1e-6), x0, y0, sx, sy, 0.0), maxfev=400)
    except (RuntimeError, ValueError):
        return moments
    fx, fy, fsx, fsy = float(popt[1]), float(popt[2]), abs(float(popt[3])), abs(float(popt[4]))
    extent = max(xx.max() - xx.min(), yy.max() - yy.min()) + 1
    inside = xx.min() - 0.5 <= fx <= xx.max() + 0.5 and yy.min() - 0.5 <= fy <= yy.max() + 0.5
    if not (inside and 0.2 <= fsx <= extent and 0.2 <= fsy <= extent and popt[0] > 0):
        return moments
    return fx, fy, fsx, fsy


def _ellipse_overlap(a, b, shape, up: int = 10) -> float:
    rows, cols = shape
    yy, xx = np.mgrid[0 : rows * up, 0 : cols * up]
    xx, yy = (xx + 0.5) / up - 0.5, (yy + 0.5) / up - 0.5
    ea = ((xx - a[0]) / a[2]) ** 2 + ((yy - a[1]) / a[3]) ** 2 <= 1
    eb = ((xx - b[0]) / b[2]) ** 2 + ((yy - b[1]) / b[3]) ** 2 <= 1
    union = (ea | eb).sum()
    return float((ea & eb).sum() / union) if union else np.nan


def locally_sparse_noise(
    corrected: np.ndarray,
    dff: np.ndarray,
    block: pd.DataFrame,
    template: np.ndarray,
    frame_rate_hz: float,
    *,
    stimulus: str = "locally_sparse_noise",
    n_shuffles: int = DEFAULT_SHUFFLES,
    seed: int = 1,
    alpha: float = 0.05,
    pixel_deg: float | None = None,
    speed: np.ndarray | None = None,
) -> LsnResult:
    """ON/OFF mean-response maps, receptive fields and the ``*_lsn`` metrics (centres in degrees from the
    grid's top-left corner, x along columns, y along rows; pixel size ``pixel_deg``, by default
    ``4.65 * 28 / cols`` so the 16 x 28 grid has 4.65 deg pixels and the 8 x 14 grid 9.3 deg)."""
    tpl = np.asarray(template)
    if tpl.ndim != 3:
        raise InputError(f"LSN template must be frames x rows x cols, got shape {tpl.shape}")
    nf, rows, cols = tpl.shape
    frame = block["frame"].to_numpy(dtype=float)
    bad = ~np.isfinite(frame) | (frame < 0) | (frame >= nf) | (frame != np.round(frame))
    if bad.any():
        raise InputError(f"{stimulus}: 'frame' of rows {np.flatnonzero(bad)[:10].tolist()} is not a template frame (0..{nf - 1})")
    pixel_deg = float(pixel_deg) if pixel_deg else 4.65 * 28.0 / cols
    n = corrected.shape[0]
    length = block["end_frame"].to_numpy() - block["start_frame"].to_numpy()
    sweep = int(max(np.median(length), 1)) if len(length) else 1
    w = core.Windows(sweep=sweep, inter=4 * sweep, extra=sweep)
    sw = core.sweep_responses(corrected, block["start_frame"].to_numpy(), w, speed)
    frames = frame.astype(np.int64)
    on = (tpl[frames] == ON).reshape(len(frames), -1)
    off = (tpl[frames] == OFF).reshape(len(frames), -1)
    on_k, off_k = on[sw.trial_index].astype(float), off[sw.trial_index].astype(float)
    v = sw.mean_response
    fin = np.isfinite(v)
    vz = np.where(fin, v, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_on = ((on_k.T @ vz) / (on_k.T @ fin)).T.reshape(n, rows, cols)
        mean_off = ((off_k.T @ vz) / (off_k.T @ fin)).T.reshape(n, rows, cols)
    starts = block["start_frame"].to_numpy()
    events = detect_events(dff, starts, frame_rate_hz)
    design = np.concatenate([on, off], axis=1)
    p = shuffle_test(design, events, n_shuffles, seed)
    p_on, p_off = p[:, : rows * cols], p[:, rows * cols :]
    sig = p < alpha
    sig_on, sig_off = sig[:, : rows * cols].reshape(n, rows, cols), sig[:, rows * cols :].reshape(n, rows, cols)
    m = events.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = m / len(starts)
        excess_on = ((events.T.astype(float) @ on) / on.sum(axis=0) - rate[:, None]).reshape(n, rows, cols)
        excess_off = ((events.T.astype(float) @ off) / off.sum(axis=0) - rate[:, None]).reshape(n, rows, cols)
    metrics = {k: np.full(n, np.nan) for k in LSN_METRICS}
    rf_on = np.full((n, rows, cols), np.nan)
    rf_off = np.full((n, rows, cols), np.nan)
    fits: dict[str, dict[int, tuple]] = {"on": {}, "off": {}}
    structure = np.ones((3, 3), dtype=bool)
    for pol, sigmap, excess, rf in (("on", sig_on, excess_on, rf_on), ("off", sig_off, excess_off, rf_off)):
        for c in np.flatnonzero(sigmap.any(axis=(1, 2))):  # only cells with a significant pixel
            labels, k = ndimage.label(sigmap[c], structure=structure)
            sizes = ndimage.sum_labels(np.ones_like(labels), labels, index=np.arange(1, k + 1))
            mass = ndimage.sum_labels(np.nan_to_num(excess[c]), labels, index=np.arange(1, k + 1))
            best = 1 + int(np.lexsort((-mass, -sizes))[0])
            comp = labels == best
            rf[c][comp] = excess[c][comp]
            x0, y0, sx, sy = _fit_component(excess[c], comp)
            fits[pol][c] = (x0, y0, sx, sy)
            metrics[f"rf_center_{pol}_x_lsn"][c] = (x0 + 0.5) * pixel_deg
            metrics[f"rf_center_{pol}_y_lsn"][c] = (y0 + 0.5) * pixel_deg
            metrics[f"rf_area_{pol}_lsn"][c] = np.pi * sx * sy * pixel_deg**2
    for c in set(fits["on"]) & set(fits["off"]):
        a, b = fits["on"][c], fits["off"][c]
        metrics["rf_distance_lsn"][c] = np.hypot(a[0] - b[0], a[1] - b[1]) * pixel_deg
        metrics["rf_overlap_index_lsn"][c] = _ellipse_overlap(a, b, (rows, cols))
    # chi-square: trials stimulating the pixel or a neighbour vs the others
    stim = (on | off).reshape(len(frames), rows, cols)
    disc = ndimage.maximum_filter(stim, size=(1, 3, 3)).reshape(len(frames), -1).astype(float)
    e = events.astype(float)
    a_ = e.T @ disc  # events on stimulated trials, N x P
    n_stim = disc.sum(axis=0)[None, :]
    k_tr = float(len(frames))
    with np.errstate(invalid="ignore", divide="ignore"):
        exp_a = m[:, None] * n_stim / k_tr
        tot = np.stack([a_, m[:, None] - a_, n_stim - a_, k_tr - n_stim - m[:, None] + a_])
        exp = np.stack([exp_a, m[:, None] - exp_a, n_stim - exp_a, k_tr - n_stim - m[:, None] + exp_a])
        chi2 = np.nansum((tot - exp) ** 2 / exp, axis=0)
        pc = stats.chi2.sf(chi2, 1)
    pmin = np.nanmin(np.where(np.isfinite(pc), pc, np.nan), axis=1) if pc.size else np.full(n, np.nan)
    metrics["rf_chi2_lsn"] = np.where(m > 0, np.minimum(pmin * rows * cols, 1.0), np.nan)
    return LsnResult(stimulus, sw, mean_on, mean_off, events, p_on.reshape(n, rows, cols), p_off.reshape(n, rows, cols),
                     rf_on, rf_off, metrics, pixel_deg)
