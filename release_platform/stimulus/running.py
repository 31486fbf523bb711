"""Running-speed tuning of dF/F in spontaneous and visual epochs (AllenSDK ``get_speed_tuning``).

Frames are sorted by speed; bin 0 holds every frame below 1 cm/s, the next bins ``binsize`` frames each
(frames left over after the last full bin are dropped). Modulation is tested against shuffles of the
dF/F time order (``n_shuffles``, seeded): a cell is modulated when the variance across bins of its
binned mean dF/F exceeds the 99.9th percentile of the shuffled variances. ``ptest`` is the two-sample
KS test of the preferred bin's frames against every other frame. Shuffles are drawn in batches for all
cells at once.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
from scipy import stats

from release_platform.stimulus.table import SPONTANEOUS

__all__ = ["SpeedTuning", "speed_tuning", "epoch_masks", "speed_per_frame"]

BINSIZE_FRAMES = 800
DEFAULT_SPEED_SHUFFLES = 200


@dataclasses.dataclass
class SpeedTuning:
    """``binned_dx``: bins x 2 (mean, SEM of speed); ``binned_cells``: N x bins x 2; ``metrics``:
    ``speed_max_<e>``, ``speed_min_<e>``, ``ptest_<e>``, ``mod_<e>`` (1.0 / 0.0, NaN if undefined)."""

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
                 max_batch_values: int = 20_000_000) -> SpeedTuning:
    n = dff.shape[0]
    names = [f"speed_max_{epoch}", f"speed_min_{epoch}", f"ptest_{epoch}", f"mod_{epoch}"]
    frames = np.flatnonzero(mask)
    sp = np.asarray(speed, dtype=float)[frames]
    x = np.asarray(dff, dtype=float)[:, frames]
    order = np.argsort(sp, kind="stable")
    sp, x = sp[order], x[:, order]
    n_still = int((sp < 1.0).sum())
    n_bins = 1 + (len(sp) - n_still) // binsize
    used = n_still + (n_bins - 1) * binsize
    sp, x = sp[:used], x[:, :used]
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
    null = np.empty((n_shuffles, n))
    done = 0
    batch = max(1, max_batch_values // max(n * used, 1))
    x32 = np.ascontiguousarray(x, dtype=np.float32)  # the null needs no more precision; halves the memory traffic
    while done < n_shuffles:
        s = min(batch, n_shuffles - done)
        perms = rng.random((s, used)).argsort(axis=1)
        null[done : done + s] = np.var(binned(x32[:, perms].transpose(1, 0, 2)), axis=2)
        done += s
    thr = np.percentile(null, 99.9, axis=0) if n_shuffles else np.full(n, np.inf)
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
    good = np.isfinite(x).all(axis=1)
    metrics = {
        names[0]: np.where(good, mx[best], np.nan), names[1]: np.where(good, mx[worst], np.nan),
        names[2]: np.where(good, ptest, np.nan), names[3]: np.where(good, (var > thr).astype(float), np.nan),
    }
    return SpeedTuning(epoch, binned_dx, binned_cells, metrics)


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
