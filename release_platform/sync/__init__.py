"""Rig sync files: the line reader and stimulus/camera timing derived from it (pure numpy/h5py)."""

from release_platform.sync.dataset import SyncDataset
from release_platform.sync.stimulus import (
    EYE_CAMERA_LINES,
    PHOTODIODE_LINES,
    VSYNC_LINES,
    StimulusTiming,
    camera_frame_times,
    monitor_delay,
    photodiode_events,
    presentation_times,
    presentations_from_sync,
    stimulus_timing,
    trim_discontiguous,
)

__all__ = [
    "SyncDataset",
    "StimulusTiming",
    "VSYNC_LINES",
    "PHOTODIODE_LINES",
    "EYE_CAMERA_LINES",
    "camera_frame_times",
    "monitor_delay",
    "photodiode_events",
    "presentation_times",
    "presentations_from_sync",
    "stimulus_timing",
    "trim_discontiguous",
]
