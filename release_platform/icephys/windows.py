"""Window statistics over many sweeps at once.

The sweeps are concatenated once (:class:`FlatSweeps`); the samples of every requested window (one per
sweep, ``[lo, hi)`` in that sweep's samples) are gathered into one matrix with a mask, so a statistic over
all sweeps is one NumPy reduction and nothing loops over samples. Samples past a sweep's recorded end
(truncation) or NaN are ignored.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["FlatSweeps"]


class FlatSweeps:
    def __init__(self, arrays: Sequence[np.ndarray]):
        self.lengths = np.array([len(a) for a in arrays], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)
        self.flat = np.concatenate([np.asarray(a, dtype=np.float64) for a in arrays]) if len(arrays) else np.empty(0)

    def _gather(self, lo, hi) -> np.ndarray:
        lo = np.clip(np.asarray(lo, dtype=np.int64), 0, self.lengths)
        hi = np.clip(np.asarray(hi, dtype=np.int64), lo, self.lengths)
        width = int((hi - lo).max()) if len(lo) else 0
        cols = np.arange(max(width, 1))
        inside = cols[None, :] < (hi - lo)[:, None]
        idx = np.where(inside, self.offsets[:, None] + lo[:, None] + cols[None, :], 0)
        values = self.flat[idx] if len(self.flat) else np.zeros(idx.shape)
        return np.where(inside, values, np.nan)

    def mean(self, lo, hi) -> np.ndarray:
        """Per sweep mean over ``[lo, hi)`` (NaN for an empty window)."""
        g = self._gather(lo, hi)
        n = np.isfinite(g).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 0, np.nansum(g, axis=1) / np.maximum(n, 1), np.nan)

    def std(self, lo, hi) -> np.ndarray:
        """Per sweep standard deviation (RMS about the mean) over ``[lo, hi)`` (NaN with fewer than 2 samples)."""
        g = self._gather(lo, hi)
        n = np.isfinite(g).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.nansum(g, axis=1) / np.maximum(n, 1)
            var = np.nansum((g - mean[:, None]) ** 2, axis=1) / np.maximum(n, 1)
            return np.where(n > 1, np.sqrt(var), np.nan)
