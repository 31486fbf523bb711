"""Vectorized window statistics over many sweeps at once.

Sweeps of one protocol share a length, so they are stacked into 2-D arrays (rows = sweeps, NaN past a
truncated recording) grouped by length; means and standard deviations over per-row sample windows
``[lo, hi)`` come from cumulative sums of row-centred values, so no statistic loops over samples.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

__all__ = ["stack_by_length", "RowWindows"]


def stack_by_length(arrays: Sequence[np.ndarray], lengths: Sequence[int] | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(row indices, 2-D array)`` per distinct length; shorter arrays (``lengths`` given) are
    NaN-padded to their group's length."""
    lengths = [len(a) for a in arrays] if lengths is None else list(lengths)
    by_len: dict[int, list[int]] = {}
    for i, n in enumerate(lengths):
        by_len.setdefault(int(n), []).append(i)
    for n, rows in sorted(by_len.items()):
        block = np.full((len(rows), n), np.nan)
        for r, i in enumerate(rows):
            a = np.asarray(arrays[i], dtype=np.float64)[:n]
            block[r, : len(a)] = a
        yield np.asarray(rows, dtype=np.int64), block


class RowWindows:
    """Per-row window means/standard deviations of a 2-D block (cumulative sums, centred per row)."""

    def __init__(self, block: np.ndarray):
        finite = np.isfinite(block)
        first = np.where(finite.any(axis=1), np.nanmean(np.where(finite, block, np.nan)[:, : min(block.shape[1], 64)], axis=1), 0.0)
        first = np.nan_to_num(first)
        centred = np.where(finite, block - first[:, None], 0.0)
        zeros = np.zeros((block.shape[0], 1))
        self._offset = first
        self._s1 = np.concatenate([zeros, np.cumsum(centred, axis=1)], axis=1)
        self._s2 = np.concatenate([zeros, np.cumsum(centred * centred, axis=1)], axis=1)
        self._n = np.concatenate([zeros, np.cumsum(finite, axis=1)], axis=1)

    def _sums(self, lo, hi):
        rows = np.arange(self._s1.shape[0])
        lo = np.clip(np.asarray(lo, dtype=np.int64), 0, self._s1.shape[1] - 1)
        hi = np.clip(np.asarray(hi, dtype=np.int64), 0, self._s1.shape[1] - 1)
        n = self._n[rows, hi] - self._n[rows, lo]
        return n, self._s1[rows, hi] - self._s1[rows, lo], self._s2[rows, hi] - self._s2[rows, lo]

    def mean(self, lo, hi) -> np.ndarray:
        n, s1, _ = self._sums(lo, hi)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 0, s1 / n + self._offset, np.nan)

    def std(self, lo, hi) -> np.ndarray:
        n, s1, s2 = self._sums(lo, hi)
        with np.errstate(invalid="ignore", divide="ignore"):
            var = s2 / n - (s1 / n) ** 2
            return np.where(n > 1, np.sqrt(np.clip(var, 0.0, None)), np.nan)
