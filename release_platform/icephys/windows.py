"""Window statistics over many sweeps at once.

The samples of every requested window (one per sweep, ``[lo, hi)`` in that sweep's samples) are copied
into one NaN-padded matrix, one slice per sweep (the sweeps themselves are never concatenated), so a
statistic over all sweeps is one NumPy reduction and nothing loops over samples. Samples past a sweep's
recorded end (truncation) or NaN are ignored.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["FlatSweeps"]


class FlatSweeps:
    def __init__(self, arrays: Sequence[np.ndarray]):
        self.arrays = list(arrays)
        self.lengths = np.array([len(a) for a in self.arrays], dtype=np.int64)

    def _gather(self, lo, hi) -> np.ndarray:
        lo = np.clip(np.asarray(lo, dtype=np.int64), 0, self.lengths)
        hi = np.clip(np.asarray(hi, dtype=np.int64), lo, self.lengths)
        width = int((hi - lo).max()) if len(lo) else 0
        out = np.full((len(self.arrays), max(width, 1)), np.nan)
        for row, (a, b) in enumerate(zip(lo.tolist(), hi.tolist())):
            out[row, : b - a] = self.arrays[row][a:b]
        return out

    @staticmethod
    def _mean(g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = np.isfinite(g).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.nansum(g, axis=1) / np.maximum(n, 1), n

    def mean(self, lo, hi) -> np.ndarray:
        """Per sweep mean over ``[lo, hi)`` (NaN for an empty window)."""
        mean, n = self._mean(self._gather(lo, hi))
        return np.where(n > 0, mean, np.nan)

    def std(self, lo, hi) -> np.ndarray:
        """Per sweep standard deviation (RMS about the mean) over ``[lo, hi)`` (NaN with fewer than 2 samples)."""
        return self.mean_std(lo, hi)[1]

    def mean_std(self, lo, hi) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`mean` and :meth:`std` of the same windows from one copy of their samples."""
        g = self._gather(lo, hi)
        mean, n = self._mean(g)
        with np.errstate(invalid="ignore", divide="ignore"):
            var = np.nansum((g - mean[:, None]) ** 2, axis=1) / np.maximum(n, 1)
            return np.where(n > 0, mean, np.nan), np.where(n > 1, np.sqrt(var), np.nan)
