"""Running-speed tuning of dF/F in spontaneous and visual epochs (AllenSDK ``get_speed_tuning``).

Frames are sorted by speed; bin 0 holds every frame below 1 cm/s, the next bins ``binsize`` frames each
(frames left over after the last full bin are dropped). The statistic is the variance across bins of a
cell's binned mean dF/F.

Null model (departure from AllenSDK): AllenSDK shuffles the dF/F frame order, which destroys the calcium
autocorrelation (transients last seconds, running bouts tens of seconds) while the observed statistic keeps
it, so the shuffled variances are far too small and almost every cell is flagged modulated in the visual
epoch. Here each shuffle circularly shifts the cell's dF/F relative to the speed by a random offset of at least
``min_shift`` frames (uniform over ``[min_shift, T - min_shift]`` in the epoch's own frame sequence), which
keeps both autocorrelations and breaks only their alignment. ``p_mod_<e>`` is the shuffle p-value
``(1 + #{null >= observed}) / (1 + n_shuffles)`` (calibrated on untuned cells), ``mod_<e>`` keeps AllenSDK's
rule, observed variance above the 99.9th percentile of the null. ``ptest`` is the two-sample KS test of the
preferred bin's frames against every other frame. Every shift of every cell comes from FFT cross-correlations of
the traces with the bins' frame indicators (:func:`shifted_bin_variance`), on blocks of cells.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
from scipy import sparse, stats

from release_platform.stimulus.table import SPONTANEOUS

__all__ = ["SpeedTuning", "speed_tuning", "epoch_masks", "speed_per_frame", "shifted_bin_variance"]

BINSIZE_FRAMES = 800
DEFAULT_SPEED_SHUFFLES = 200
#: default smallest circular shift (frames): one speed bin, ~27 s at 30 Hz, past the calcium and running-bout
#: autocorrelation; capped at a quarter of the epoch for short epochs
MIN_SHIFT_FRAMES = BINSIZE_FRAMES


@dataclasses.dataclass
class SpeedTuning:
    """``binned_dx``: bins x 2 (mean, SEM of speed); ``binned_cells``: N x bins x 2; ``metrics``:
    ``speed_max_<e>``, ``speed_min_<e>``, ``ptest_<e>``, ``mod_<e>`` (1.0 / 0.0, NaN if undefined),
    ``p_mod_<e>`` (circular-shift p-value of the modulation)."""

    epoch: str
    binned_dx: np.ndarray
    binned_cells: np.ndarray
    metrics: dict[str, np.ndarray]


def epoch_masks(table: pd.DataFrame, n_frames: int, speed: np.ndarray) -> dict[str, np.ndarray]:
    """Frames of the spontaneous epoch (the last, and second-to-last if present, ``spontaneous`` blocks)
    and of the visual epoch (every other frame with a finite speed)."""
    spont = np.zeros(n_frames, dtype=bool)
    rows = table[table["stimulus_name"] == SPONTANEOUS].sort_values("start_frame")
    for _, r in rows.tail(2).iterrows():
        spont[int(r["start_frame"]) : int(r["end_frame"])] = True
    finite = np.isfinite(np.asarray(speed, dtype=float)[:n_frames])
    return {"sp": spont & finite, "vis": ~spont & finite}


def speed_tuning(dff: np.ndarray, speed: np.ndarray, mask: np.ndarray, epoch: str, *,
                 n_shuffles: int = DEFAULT_SPEED_SHUFFLES, seed: int = 0, binsize: int = BINSIZE_FRAMES,
                 min_shift: int = MIN_SHIFT_FRAMES, max_batch_values: int = 20_000_000) -> SpeedTuning:
    """Binned tuning and the circular-shift modulation test of every cell in one epoch (``mask`` over frames)."""
    n = dff.shape[0]
    names = [f"speed_max_{epoch}", f"speed_min_{epoch}", f"ptest_{epoch}", f"mod_{epoch}", f"p_mod_{epoch}"]
    frames = np.flatnonzero(mask)
    n_time = len(frames)
    sp = np.asarray(speed, dtype=float)[frames]
    x_time = np.asarray(dff, dtype=float)[:, frames]  # the epoch's frames in time order
    order = np.argsort(sp, kind="stable")
    n_still = int((sp < 1.0).sum())
    n_bins = 1 + (len(sp) - n_still) // binsize
    used = n_still + (n_bins - 1) * binsize
    pos = order[:used]  # time positions of the binned frames, in speed order
    sp, x = sp[pos], x_time[:, pos]
    empty = SpeedTuning(epoch, np.full((n_bins, 2), np.nan), np.full((n, n_bins, 2), np.nan), {k: np.full(n, np.nan) for k in names})
    if n_bins < 2 or n_still < 2 or not np.isfinite(x).all(axis=1).any():
        return empty
    bounds = np.concatenate([[0], n_still + binsize * np.arange(n_bins - 1)]).astype(np.int64)
    sizes = np.diff(np.concatenate([bounds, [used]]))

    def binned(v):  # v: ... x used -> ... x bins (mean)
        return np.add.reduceat(v, bounds, axis=-1) / sizes

    def sem(v, m):
        ss = np.add.reduceat((v - np.repeat(m, sizes, axis=-1)) ** 2, bounds, axis=-1)
        return np.sqrt(ss / np.maximum(sizes - 1, 1)) / np.sqrt(sizes)

    mx = binned(sp)
    mc = binned(x)
    binned_dx = np.stack([mx, sem(sp, mx)], axis=-1)
    binned_cells = np.stack([mc, sem(x, mc)], axis=-1)
    var = np.var(mc, axis=1)
    rng = np.random.default_rng(seed)
    lo = int(min(max(min_shift, 1), n_time // 4))
    shifts = rng.integers(lo, n_time - lo + 1, size=n_shuffles)
    null = shifted_bin_variance(x_time, pos, sizes, shifts, max_batch_values=max_batch_values)
    thr = np.percentile(null, 99.9, axis=0) if n_shuffles else np.full(n, np.inf)
    p_mod = (1.0 + np.sum(null >= var[None, :] * (1 - 1e-6), axis=0)) / (1.0 + n_shuffles)
    filled = np.where(np.isfinite(mc), mc, -np.inf)
    best = np.argmax(filled, axis=1)
    worst = np.argmin(np.where(np.isfinite(mc), mc, np.inf), axis=1)
    ptest = np.full(n, np.nan)
    bin_of = np.repeat(np.arange(n_bins), sizes)
    for b in np.unique(best):
        cells = np.flatnonzero(best == b)
        inside = bin_of == b
        if inside.all() or not inside.any():
            continue
        ptest[cells] = stats.ks_2samp(x[cells][:, inside], x[cells][:, ~inside], axis=1).pvalue
    good = np.isfinite(x_time).all(axis=1)  # a NaN anywhere in the epoch would enter the shifted null
    metrics = {
        names[0]: np.where(good, mx[best], np.nan), names[1]: np.where(good, mx[worst], np.nan),
        names[2]: np.where(good, ptest, np.nan), names[3]: np.where(good, (var > thr).astype(float), np.nan),
        names[4]: np.where(good, p_mod, np.nan),
    }
    return SpeedTuning(epoch, binned_dx, binned_cells, metrics)


def shifted_bin_variance(x_time: np.ndarray, pos: np.ndarray, sizes: np.ndarray, shifts: np.ndarray, *,
                         method: str = "auto", max_batch_values: int = 20_000_000) -> np.ndarray:
    """Variance across bins of the binned mean of ``x_time`` circularly shifted by each of ``shifts`` frames.

    ``x_time``: N x T in time order; ``pos`` the binned time positions in bin order, ``sizes[b]`` frames per bin.
    For a shift ``k`` the bin sum is ``sum_t x[(t - k) mod T] * I_b[t]``. ``method="fft"``: a circular
    cross-correlation of the trace with the bin's indicator, every shift of a bin from one FFT product
    (``irfft(conj(rfft(x)) * rfft(I_b))``) on blocks of cells, cost ~ bins x N x T log T; ``"sparse"``: per batch
    of shifts one sparse one-hot (shift, bin) x frame matrix times the traces, cost ~ shifts x N x T;
    ``"auto"``: FFT when the bins are fewer than a fifth of the shifts (measured break-even). Returns
    len(shifts) x N.
    """
    n, t = x_time.shape
    shifts = np.asarray(shifts, dtype=np.int64) % max(t, 1)
    out = np.empty((len(shifts), n))
    if not len(shifts) or not n:
        return out
    if method == "auto":
        method = "fft" if 5 * len(sizes) < len(shifts) else "sparse"
    if method == "sparse":
        label = np.repeat(np.arange(len(sizes)), sizes)
        xt = np.ascontiguousarray(x_time.T)  # T x N: each bin sum reads whole rows
        batch = max(1, max_batch_values // (4 * max(len(pos), 1)))  # one-hot entries per batch: a quarter of the budget
        for a in range(0, len(shifts), batch):
            ks = shifts[a : a + batch]
            rows = (np.arange(len(ks))[:, None] * len(sizes) + label[None, :]).ravel()
            cols = ((pos[None, :] - ks[:, None]) % t).ravel()
            onehot = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(ks) * len(sizes), t))
            sums = (onehot @ xt).reshape(len(ks), len(sizes), n) / sizes[None, :, None]
            out[a : a + batch] = np.var(sums, axis=1)
        return out
    if method != "fft":
        raise ValueError(f"method must be 'auto', 'fft' or 'sparse', not {method!r}")
    bin_of_time = np.full(t, -1)
    bin_of_time[pos] = np.repeat(np.arange(len(sizes)), sizes)
    indicators = np.zeros((len(sizes), t))
    indicators[bin_of_time[bin_of_time >= 0], np.flatnonzero(bin_of_time >= 0)] = 1.0
    ind_hat = np.fft.rfft(indicators, axis=1)
    chunk = max(1, max_batch_values // max(t, 1))
    for a in range(0, n, chunk):
        xf = np.conj(np.fft.rfft(x_time[a : a + chunk], axis=1))
        means = np.empty((xf.shape[0], len(sizes), len(shifts)))
        for b in range(len(sizes)):
            means[:, b] = np.fft.irfft(xf * ind_hat[b], n=t, axis=1)[:, shifts] / sizes[b]
        out[:, a : a + chunk] = np.var(means, axis=1).T
    return out


def speed_per_frame(timestamps_s: np.ndarray, speed_cm_s: np.ndarray, n_frames: int, frame_rate_hz: float) -> np.ndarray:
    """Running speed at each imaging frame ``i / frame_rate_hz`` (linear interpolation of the encoder
    samples; NaN outside the sampled span)."""
    ts = np.asarray(timestamps_s, dtype=float)
    sp = np.asarray(speed_cm_s, dtype=float)
    ok = np.isfinite(ts) & np.isfinite(sp)
    t = np.arange(n_frames) / float(frame_rate_hz)
    if ok.sum() < 2:
        return np.full(n_frames, np.nan)
    return np.interp(t, ts[ok], sp[ok], left=np.nan, right=np.nan)
