"""Stimulus timing from a sync file: monitor frame times, monitor delay and presentation times.

The method is the AllenSDK one (``OphysTimeAligner`` / ``calculate_monitor_delay``):

1. **Frame times**: the falling edges of the stimulus vsync line, one per monitor frame the stimulus
   software flipped. A tail of edges separated from the rest by a gap of more than ``100 x`` the median
   interval (an extra acquisition after the session) is dropped.
2. **Photodiode events**: a sync square on the monitor changes from black to white (or back) every
   ``cycle`` frames (60, i.e. once a second at 60 Hz); a photodiode over it drives the photodiode line, so
   every edge of that line is a transition seen on the screen. Start/stop marker flashes are stripped:
   the first valid event is the first with its next two intervals within ``1.0 +- 0.05`` s, the last
   valid one the last with its previous two intervals so; an event less than 0.5 s before the next one
   (an anomaly) is removed.
3. **Monitor delay**: the mean, over photodiode events, of the event time minus the vsync time of the
   transition frame it shows (the latest of every ``cycle``-th frame at or before it). It must lie in
   ``[0, max_delay]`` (0.07 s by default, AllenSDK's ``MAX_MONITOR_DELAY``); otherwise the sync file is
   rejected. Display time of frame ``k`` = vsync time of ``k`` + delay.
4. **Presentations**: a stimulus table's ``start_frame`` / ``end_frame`` (frame indices of the stimulus
   log; ``end_frame`` = the frame after the last one shown) become ``start_time`` = display time of
   ``start_frame`` and ``stop_time`` = display time of ``end_frame`` (``duration`` follows). An
   ``end_frame`` one past the last recorded frame ends one median frame interval after that frame.

Pure numpy; the file is read by :class:`release_platform.sync.dataset.SyncDataset`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import numpy as np
import pandas as pd

from release_platform.errors import InputError
from release_platform.sync.dataset import SyncDataset

__all__ = [
    "VSYNC_LINES",
    "PHOTODIODE_LINES",
    "EYE_CAMERA_LINES",
    "StimulusTiming",
    "trim_discontiguous",
    "photodiode_events",
    "monitor_delay",
    "stimulus_timing",
    "presentation_times",
    "camera_frame_times",
    "presentations_from_sync",
]

#: Candidate line labels, in AllenSDK's order of preference.
VSYNC_LINES = ("stim_vsync", "vsync_stim", "frames")
PHOTODIODE_LINES = ("stim_photodiode", "photodiode")
EYE_CAMERA_LINES = ("eye_frame_received", "cam2_exposure", "eyetracking", "eye_cam_exposing", "eye_tracking")

PHOTODIODE_CYCLE = 60
PHOTODIODE_INTERVAL_S = 1.0
PHOTODIODE_TOLERANCE_S = 0.05
PHOTODIODE_ANOMALY_S = 0.5
MAX_MONITOR_DELAY_S = 0.07


def trim_discontiguous(times: np.ndarray, threshold: float = 100.0) -> np.ndarray:
    """``times`` up to the first gap longer than ``threshold`` x the median interval (the tail dropped)."""
    times = np.asarray(times, dtype=np.float64)
    if len(times) < 3:
        return times
    intervals = np.diff(times)
    limit = np.median(intervals) * threshold
    gaps = np.flatnonzero(intervals > limit)
    if not len(gaps):
        return times
    return times[: gaps[0] + 1]


def _first_run(ok: np.ndarray, n: int) -> int | None:
    """First index ``i`` with ``ok[i:i+n]`` all true."""
    if len(ok) < n:
        return None
    runs = np.convolve(ok.astype(np.int64), np.ones(n, dtype=np.int64), mode="valid")
    hits = np.flatnonzero(runs == n)
    return int(hits[0]) if len(hits) else None


def photodiode_events(
    edges: np.ndarray,
    *,
    interval_s: float = PHOTODIODE_INTERVAL_S,
    tolerance_s: float = PHOTODIODE_TOLERANCE_S,
    anomaly_s: float = PHOTODIODE_ANOMALY_S,
) -> np.ndarray:
    """The regular photodiode transitions among all edges of the photodiode line (see the module doc).

    Raises ``ValueError`` when no run of regular events exists.
    """
    edges = np.asarray(edges, dtype=np.float64)
    if not len(edges):
        raise ValueError("no photodiode events")
    lo, hi = interval_s - tolerance_s, interval_s + tolerance_s
    diffs = np.diff(edges)
    regular = (diffs >= lo) & (diffs <= hi)
    # event i is a valid first event when intervals i and i+1 (to the next two events) are regular
    first = _first_run(regular, 2)
    # event j is a valid last event when intervals j-1 and j-2 are regular
    last_rev = _first_run(regular[::-1], 2)
    if first is None or last_rev is None:
        raise ValueError(f"no run of photodiode events {interval_s:g} s apart (+- {tolerance_s:g} s)")
    last = len(edges) - 1 - last_rev
    events = edges[first : last + 1]
    anomalies = np.flatnonzero(np.diff(events) < anomaly_s)
    return np.delete(events, anomalies)


def monitor_delay(
    frame_times: np.ndarray,
    events: np.ndarray,
    *,
    cycle: int = PHOTODIODE_CYCLE,
    max_delay_s: float = MAX_MONITOR_DELAY_S,
) -> tuple[float, np.ndarray]:
    """Mean delay (s) from each transition frame's vsync to its photodiode event, and every delay.

    Raises ``ValueError`` when the mean lies outside ``[0, max_delay_s]``.
    """
    transitions = np.asarray(frame_times, dtype=np.float64)[::cycle]
    events = np.asarray(events, dtype=np.float64)
    idx = np.searchsorted(transitions, events, side="right") - 1
    keep = idx >= 0
    if not keep.any():
        raise ValueError("no photodiode event follows a transition frame")
    delays = events[keep] - transitions[idx[keep]]
    delay = float(np.mean(delays))
    if not 0.0 <= delay <= max_delay_s:
        raise ValueError(f"monitor delay {delay * 1000:.2f} ms is outside the expected range 0-{max_delay_s * 1000:g} ms")
    return delay, delays


@dataclasses.dataclass(frozen=True)
class StimulusTiming:
    """Monitor frame timing of one session (seconds on the sync clock)."""

    frame_times: np.ndarray  # vsync time of every stimulus frame
    monitor_delay_s: float
    sample_freq_hz: float
    delay_std_s: float = 0.0

    @property
    def display_times(self) -> np.ndarray:
        """When each frame appeared on the screen: vsync time + monitor delay."""
        return self.frame_times + self.monitor_delay_s

    @property
    def frame_interval_s(self) -> float:
        return float(np.median(np.diff(self.frame_times))) if len(self.frame_times) > 1 else 0.0


def stimulus_timing(
    sync: SyncDataset | str | os.PathLike,
    *,
    entity: str | None = None,
    cycle: int = PHOTODIODE_CYCLE,
    vsync_lines: Sequence[str] = VSYNC_LINES,
    photodiode_lines: Sequence[str] = PHOTODIODE_LINES,
    max_delay_s: float = MAX_MONITOR_DELAY_S,
) -> StimulusTiming:
    """Frame times and monitor delay of a sync file (see the module docstring); one InputError on bad input."""
    ds = sync if isinstance(sync, SyncDataset) else SyncDataset(sync, entity=entity)
    lines = ds.require_lines({"vsync": tuple(vsync_lines), "photodiode": tuple(photodiode_lines)})
    frames = trim_discontiguous(ds.falling_edges(lines["vsync"]))
    if len(frames) < 2:
        raise InputError(f"sync line {lines['vsync']!r} has {len(frames)} falling edges; need the stimulus frames",
                         entity=ds.entity, path=ds.path)
    try:
        events = photodiode_events(ds.edges(lines["photodiode"], "all"))
        delay, delays = monitor_delay(frames, events, cycle=cycle, max_delay_s=max_delay_s)
    except ValueError as exc:
        raise InputError(f"cannot measure the monitor delay from line {lines['photodiode']!r}: {exc}",
                         entity=ds.entity, path=ds.path) from None
    return StimulusTiming(frame_times=frames, monitor_delay_s=delay, sample_freq_hz=ds.sample_freq,
                          delay_std_s=float(np.std(delays)))


def presentation_times(
    table: pd.DataFrame,
    timing: StimulusTiming,
    *,
    entity: str | None = None,
    path: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """A copy of ``table`` with ``start_time``/``stop_time`` (and ``duration``) from its frame indices."""
    missing = [c for c in ("start_frame", "end_frame") if c not in table.columns]
    if missing:
        raise InputError(f"stimulus table lacks the frame columns {missing} needed to time it from sync",
                         entity=entity, path=path)
    display = timing.display_times
    n = len(display)
    try:
        start = pd.to_numeric(table["start_frame"], errors="raise").to_numpy()
        end = pd.to_numeric(table["end_frame"], errors="raise").to_numpy()
    except (ValueError, TypeError):
        raise InputError("stimulus table frame columns are not numeric", entity=entity, path=path) from None
    if not (np.isfinite(start).all() and np.isfinite(end).all()):
        raise InputError("stimulus table has missing frame indices", entity=entity, path=path)
    start, end = start.astype(np.int64), end.astype(np.int64)
    bad = (start < 0) | (start >= n) | (end < start) | (end > n)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"{int(bad.sum())} stimulus presentations have frame indices outside the {n} frames of the sync file "
            f"(first: row {row}, frames {start[row]}-{end[row]})", entity=entity, path=path,
        )
    extended = np.r_[display, display[-1] + timing.frame_interval_s]
    out = table.copy()
    out["start_time"] = extended[start]
    out["stop_time"] = extended[end]
    if "duration" in out.columns:
        out["duration"] = out["stop_time"] - out["start_time"]
    return out


def camera_frame_times(
    sync: SyncDataset | str | os.PathLike,
    *,
    entity: str | None = None,
    lines: Sequence[str] = EYE_CAMERA_LINES,
) -> np.ndarray:
    """Frame times (s) of a camera: rising edges of its line, a discontiguous tail dropped (AllenSDK's
    ``get_synchronized_frame_times``)."""
    ds = sync if isinstance(sync, SyncDataset) else SyncDataset(sync, entity=entity)
    label = ds.require_lines({"camera": tuple(lines)})["camera"]
    return trim_discontiguous(ds.rising_edges(label))


def presentations_from_sync(
    table: pd.DataFrame,
    sync_path: str | os.PathLike,
    *,
    entity: str | None = None,
    table_path: str | os.PathLike | None = None,
) -> tuple[pd.DataFrame, StimulusTiming]:
    """``table`` timed from the sync file (:func:`stimulus_timing` then :func:`presentation_times`)."""
    timing = stimulus_timing(sync_path, entity=entity)
    return presentation_times(table, timing, entity=entity, path=table_path), timing
