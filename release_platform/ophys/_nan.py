"""NaN utilities shared by the ophys estimators."""

from __future__ import annotations

import numpy as np


def fill_nan_linear(traces: np.ndarray) -> np.ndarray:
    """Copy of N x T ``traces`` with non-finite frames linearly interpolated per row.

    Frames before the first / after the last finite frame take that frame's value; rows with no
    finite frame stay all NaN.
    """
    out = np.array(np.atleast_2d(traces), dtype=np.float64, copy=True)
    frames = np.arange(out.shape[1])
    for i in np.flatnonzero(~np.isfinite(out).all(axis=1)):
        good = np.isfinite(out[i])
        if good.any():
            out[i, ~good] = np.interp(frames[~good], frames[good], out[i, good])
        else:
            out[i] = np.nan
    return out
