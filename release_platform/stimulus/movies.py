"""Natural movies: per-repeat dF/F responses, peak frame and reliability over the repeats present."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from release_platform.stimulus import core

__all__ = ["MovieResult", "natural_movie"]


@dataclasses.dataclass
class MovieResult:
    """``response``: repeats x N x frames of dF/F; ``metrics``: ``peak_frame_<s>``, ``reliability_<s>``."""

    stimulus: str
    suffix: str
    repeat_starts: np.ndarray
    response: np.ndarray
    metrics: dict[str, np.ndarray]
    messages: list[str] = dataclasses.field(default_factory=list)


def natural_movie(dff: np.ndarray, block: pd.DataFrame, stimulus: str, suffix: str) -> MovieResult:
    """Repeat starts are the rows with ``frame == 0``; the repeat length is the shortest distance between
    starts (or, for one repeat, the block's extent). ``peak_frame_<suffix>`` is the imaging frame (from the
    repeat onset) of the largest mean response; ``reliability_<suffix>`` is the mean pairwise Pearson
    correlation between every pair of repeats present (AllenSDK uses only the first 10).
    """
    n, t = dff.shape
    frame = block["frame"].to_numpy(dtype=float)
    starts = block["start_frame"].to_numpy()[frame == 0]
    metrics = {f"peak_frame_{suffix}": np.full(n, np.nan), f"reliability_{suffix}": np.full(n, np.nan)}
    if len(starts) == 0:
        return MovieResult(stimulus, suffix, starts, np.zeros((0, n, 0)), metrics, [f"{stimulus}: no repeat starts (frame == 0)"])
    if len(starts) > 1:
        length = int(np.min(np.diff(starts)))
    else:
        length = int(block["end_frame"].max() - starts[0])
    keep = starts + length <= t
    starts = starts[keep]
    msgs = [] if keep.all() else [f"{stimulus}: {int((~keep).sum())} repeat(s) run past the recording and are left out"]
    if len(starts) == 0 or length < 2:
        return MovieResult(stimulus, suffix, starts, np.zeros((0, n, 0)), metrics, msgs + [f"{stimulus}: no complete repeat"])
    resp = core.window_traces(np.asarray(dff, dtype=float), starts, 0, length)  # R x N x L
    with np.errstate(invalid="ignore"):
        mean = np.nanmean(resp, axis=0) if np.isfinite(resp).any() else np.full((n, length), np.nan)
    has = np.isfinite(mean).any(axis=1)
    peak = np.argmax(np.where(np.isfinite(mean), mean, -np.inf), axis=1)
    metrics[f"peak_frame_{suffix}"] = np.where(has, peak, np.nan)
    metrics[f"reliability_{suffix}"] = core._pairwise_mean_corr(np.transpose(resp, (1, 0, 2)))
    return MovieResult(stimulus, suffix, starts, resp, metrics, msgs)
