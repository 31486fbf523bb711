"""Direct ports of the AllenSDK / ophys_etl ophys algorithms, used as the speed and accuracy reference.

Each function follows the control flow of the original (per-frame and per-ROI Python loops, the
same scipy calls, the same order of operations) so the benchmark measures what the legacy code does
on the same data in the same process. Written from the published algorithm descriptions; they are
reference code for :mod:`benchmarks.ophys`, not part of the product.

* :func:`calculate_traces` — ophys_etl ``trace_extraction``: per block of 1000 frames, per mask,
  sum over the mask pixels of the cropped sub-frame, divided by the mask area.
* :func:`neuropil_masks` — 13 binary dilations (3 x 3) per ROI over the full frame, minus all ROIs,
  clipped to the motion border.
* :func:`demix_time_dep_masks` — AllenSDK ``demixer``: per frame, sparse diagonal weighting, dense
  N x N overlap matrix, LAPACK solve (least squares on failure); skipped frames stay 0.
* :func:`estimate_contamination_ratios` — AllenSDK ``r_neuropil``: per ROI, per candidate r, per
  fold a banded solve; coarse-to-fine grid; plus the ophys_etl r > 1 fallback.
* :func:`compute_dff_windowed_median` — AllenSDK 2.16.2 legacy dF/F (scipy ``median_filter``,
  zero padding), one trace at a time.
* :func:`compute_dff_trace` — ophys_etl inactive-frame dF/F with its per-frame ``np.nanmedian`` loop.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg as linalg
import scipy.ndimage as ndi
import scipy.sparse as sparse
from scipy.linalg import solve_banded


# ------------------------------------------------------------------------------- trace extraction


def calculate_traces(stack, masks: list[tuple[int, int, np.ndarray]], block_size: int = 1000) -> np.ndarray:
    """``masks``: (x, y, cropped bool mask) per mask; empty masks give NaN rows."""
    n_frames = stack.shape[0]
    traces = np.zeros((len(masks), n_frames))
    areas = [m.sum() for _, _, m in masks]
    for i, area in enumerate(areas):
        if area == 0:
            traces[i] = np.nan
    for start in range(0, n_frames, block_size):
        frames = stack[start : start + block_size]
        for i, (x, y, mask) in enumerate(masks):
            if areas[i] == 0:
                continue
            sub = frames[:, y : y + mask.shape[0], x : x + mask.shape[1]]
            traces[i, start : start + block_size] = sub[:, mask].sum(axis=1) / areas[i]
    return traces


def neuropil_masks(full_masks: np.ndarray, border: tuple[float, float, float, float], iterations: int = 13):
    """Cropped neuropil masks (x, y, mask) of every ROI; ``border`` = (x0, x1, y0, y1)."""
    n, height, width = full_masks.shape
    union = full_masks.any(axis=0)
    left, right = int(np.ceil(border[0])), int(np.floor(width - border[1])) - 1
    top, bottom = int(np.ceil(border[2])), int(np.floor(height - border[3])) - 1
    out = []
    for i in range(n):
        dilated = ndi.binary_dilation(full_masks[i], structure=np.ones((3, 3)), iterations=iterations)
        ring = dilated > union
        ring[:, :left] = False
        ring[:, right + 1 :] = False
        ring[:top] = False
        ring[bottom + 1 :] = False
        rows, cols = np.nonzero(ring)
        if rows.size == 0:
            out.append((0, 0, np.zeros((0, 0), bool)))
            continue
        y0, x0 = rows.min(), cols.min()
        out.append((int(x0), int(y0), ring[y0 : rows.max() + 1, x0 : cols.max() + 1]))
    return out


# ------------------------------------------------------------------------------- demixing


def _demix_point(frame: np.ndarray, traces: np.ndarray, flat_masks, npix: np.ndarray):
    weighted_trace = traces * npix
    if (weighted_trace == 0).any():
        return None
    norm = sparse.diags(npix / weighted_trace, offsets=0)
    source = sparse.diags(frame, offsets=0)
    weighted_masks = norm.dot(flat_masks.dot(source))
    overlap = flat_masks.dot(weighted_masks.T).toarray()
    try:
        x = linalg.solve(overlap, weighted_trace)
    except linalg.LinAlgError:
        x = linalg.lstsq(overlap, weighted_trace)[0]
    return x


def demix_time_dep_masks(raw_traces: np.ndarray, stack, masks: np.ndarray, max_block_size: int = 1000, n_frames=None):
    """Per-frame demixing over all N ROIs; returns (demixed N x T, dropped-frame flags).

    ``n_frames`` limits the run to the first frames (the benchmark scales the time per frame).
    """
    n, t_total = raw_traces.shape
    t_run = t_total if n_frames is None else min(t_total, n_frames)
    pixels = masks.shape[1] * masks.shape[2]
    npix = masks.reshape(n, pixels).sum(axis=1)
    flat = sparse.csr_matrix(masks.reshape(n, pixels))
    out = np.zeros((n, t_run))
    dropped = []
    block = None
    for t in range(t_run):
        k = t % max_block_size
        if k == 0:
            size = min(t_run - t, max_block_size)
            block = np.asarray(stack[t : t + size]).reshape(size, pixels)
        x = _demix_point(block[k].astype(np.float64), raw_traces[:, t], flat, npix)
        if x is None:
            dropped.append(True)
        else:
            out[:, t] = x
            dropped.append(False)
    return out, dropped


# ------------------------------------------------------------------------------- neuropil


def _banded_smoother(t: int, lam: float = 0.05, dt: float = 1.0) -> np.ndarray:
    ls = (-sparse.eye(t - 1, t, format="csr") + sparse.eye(t - 1, t, 1, format="csr")) / dt
    m = (sparse.eye(t) + lam * ls.T.dot(ls)).todia()
    upper, lower = max(m.offsets), -min(m.offsets)
    ab = np.zeros((upper + lower + 1, t))
    for offset, diagonal in zip(m.offsets, m.data):
        ab[upper - offset] = diagonal
    return ab


class NeuropilSubtract:
    def __init__(self, lam: float = 0.05, folds: int = 4):
        self.lam, self.folds = lam, folds

    def set_f(self, fm: np.ndarray, fn: np.ndarray) -> None:
        self.t_fold = fm.size // self.folds
        self.ab = _banded_smoother(self.t_fold, self.lam)
        self.fm = [fm[i * self.t_fold : (i + 1) * self.t_fold] for i in range(self.folds)]
        self.fn = [fn[i * self.t_fold : (i + 1) * self.t_fold] for i in range(self.folds)]

    def estimate_error(self, r: float) -> float:
        errors = np.zeros(self.folds)
        for i in range(self.folds):
            y = self.fm[i] - r * self.fn[i]
            fc = solve_banded((1, 1), self.ab, y)
            errors[i] = abs(np.sqrt(np.mean(np.square(fc - y))) / np.mean(self.fm[i]))
        return float(np.mean(errors))

    def fit(self, r_range=(0.0, 2.0), iterations: int = 3, dr: float = 0.1, dr_factor: float = 0.1):
        best_err, best_r = None, None
        lo, hi, step, it = r_range[0], r_range[1], dr, 0
        while it < iterations:
            rs = np.arange(lo, hi, step)
            errs = [self.estimate_error(r) for r in rs]
            i = int(np.argmin(errs))
            if best_err is None or errs[i] < best_err:
                best_err, best_r = errs[i], rs[i]
            if i == len(errs) - 1:
                lo, hi = rs[-1], rs[-1] + (rs[-1] - rs[0])
            else:
                lo, hi = rs[max(i - 1, 0)], rs[min(i + 1, len(rs) - 1)]
                step *= dr_factor
                it += 1
        self.r, self.error = float(best_r), float(best_err)


def estimate_contamination_ratios(roi_traces: np.ndarray, neuropil_traces: np.ndarray):
    """Per-ROI legacy fit, legacy acceptance rule, then the ophys_etl r > 1 fallback.

    Returns (r, rmse, fc) with NaN-containing ROIs skipped (r = 0, FC = raw trace).
    """
    n = roi_traces.shape[0]
    r = np.zeros(n)
    rmse = np.full(n, -1.0)
    fc = roi_traces.copy()
    fitted = np.zeros(n, bool)
    for i in range(n):
        fm, fn = roi_traces[i], neuropil_traces[i]
        if np.isnan(fm).any() or np.isnan(fn).any():
            continue
        sub = NeuropilSubtract()
        sub.set_f(fm, fn)
        sub.fit()
        candidate = max(sub.r, 0.0)
        corrected = fm - candidate * fn
        if np.mean(corrected) > 0:
            r[i], rmse[i], fc[i], fitted[i] = candidate, sub.error, corrected, True
    good = r[fitted & (r > 0) & (r <= 1)]
    fallback = float(good.mean()) if good.size >= 5 else 0.7
    for i in np.flatnonzero(fitted & (r > 1)):
        r[i] = fallback
        fc[i] = roi_traces[i] - fallback * neuropil_traces[i]
    for i in np.flatnonzero(fitted):
        sub = NeuropilSubtract()
        sub.set_f(roi_traces[i], neuropil_traces[i])
        rmse[i] = sub.estimate_error(r[i])
    return r, rmse, fc


# ------------------------------------------------------------------------------- dF/F


def _robust_std(x: np.ndarray) -> float:
    return 1.4826 * np.median(np.abs(x - np.median(x)))


def noise_std(x: np.ndarray, kernel: int = 31, mode: str = "constant") -> float:
    if np.any(np.isnan(x)):
        return np.nan
    x = x - ndi.median_filter(x, kernel, mode=mode)
    x = x[x < 1.5 * np.abs(x.min())]
    s = _robust_std(x)
    return _robust_std(x[np.abs(x) < 2.5 * s])


def compute_dff_windowed_median(traces: np.ndarray, median_kernel_long: int = 5401, median_kernel_short: int = 101,
                                noise_kernel_length: int = 31):
    """Returns (dff, sigma_dff list, small-baseline counts list)."""
    dff_traces = np.array(traces, dtype=np.float64, copy=True)
    sigmas, small = [], []
    for dff in dff_traces:
        sigma_f = noise_std(dff, noise_kernel_length)
        baseline = ndi.median_filter(dff, median_kernel_long, mode="constant")
        dff -= baseline
        dff /= np.maximum(baseline, sigma_f)
        small.append(int(np.sum(baseline <= sigma_f)))
        sigma_dff = noise_std(dff, noise_kernel_length)
        sigmas.append(sigma_dff)
        short = np.minimum(ndi.median_filter(dff, median_kernel_short, mode="constant"), 2.5 * sigma_dff)
        dff -= short
    return dff_traces, sigmas, small


def _nanmedian_filter(x: np.ndarray, length: int) -> np.ndarray:
    half = length // 2
    padded = np.concatenate((np.flip(x[:half]), x, np.flip(x[-half:])))
    out = np.zeros_like(x)
    for i in range(x.size):
        out[i] = np.nanmedian(padded[i : i + length])
    if np.isnan(out).any():
        bad = np.isnan(out)
        out[bad] = np.interp(np.flatnonzero(bad), np.flatnonzero(~bad), out[~bad])
    return out


def compute_dff_trace(f: np.ndarray, long_length: int, short_length: int, inactive_percentile: int = 10):
    """ophys_etl inactive-frame dF/F of one trace: (dff, sigma_dff, small-baseline count)."""
    if np.isnan(f).all():
        return f, np.nan, 0
    sigma_f = noise_std(f, short_length, mode="reflect")
    low = ndi.percentile_filter(f, size=long_length, percentile=inactive_percentile)
    inactive = f.copy()
    inactive[f > low + 3 * sigma_f] = np.nan
    baseline = _nanmedian_filter(inactive, long_length)
    dff = (f - baseline) / np.maximum(baseline, sigma_f)
    return dff, noise_std(dff, short_length, mode="reflect"), int(np.sum(baseline <= sigma_f))
