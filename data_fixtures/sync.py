"""Synthetic rig sync files (Allen ``sync`` HDF5 format) with a known monitor delay and frame jitter.

Model (times in s on the session clock, which is the sync clock; sample 0 = time 0):

* stimulus frame ``k`` (60 Hz) flips at the vsync falling edge ``v_k = k / 60 + |N(0, jitter_s)|``, on the
  DAQ sample grid (``sample_freq_hz``, 100 kHz); the vsync line stays low for ``vsync_low_s``;
* frame ``k`` appears on the screen at ``d_k = v_k + monitor_delay_s`` (the synthetic truth). The
  stimulus tables written next to the sync file keep the nominal ``k / 60`` times (the times of the
  stimulus log, without the delay), so with sync the presentation times move by the delay plus jitter;
* the photodiode line toggles at ``d_k + N(0, photodiode_noise_s)`` for every ``photodiode_cycle``-th
  frame (a sync square flipping once a second), followed by a few closely spaced marker toggles at the
  end of the session (which the reader must ignore);
* the eye camera line (``eye_frame_received``) rises at each camera frame ``c_i = eye_start_s + i /
  eye_rate_hz`` (low again after 1 ms).

``data`` rows are written only where a line changes (``[sample counter, line bits]``, uint32); ``meta`` is
the Python-literal dict the acquisition software stores (``line_labels``, ``ni_daq.sample_freq``,
``ni_daq.counter_bits`` = 32). The truth (``display_times``, ``vsync_times``, ``camera_times``,
``monitor_delay_s``) goes to a separate HDF5 file.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from data_fixtures.spec import rng_for, write_h5_arrays
from release_platform.storage import atomic_path

__all__ = ["SyncParams", "SyncFiles", "write_sync_file", "LINE_LABELS"]

LINE_LABELS = ("stim_vsync", "stim_photodiode", "eye_frame_received", "stim_running", "", "", "", "")


@dataclasses.dataclass(frozen=True)
class SyncParams:
    sample_freq_hz: float = 100_000.0
    frame_rate_hz: float = 60.0
    monitor_delay_s: float = 0.021390
    jitter_s: float = 0.0002
    vsync_low_s: float = 0.002
    photodiode_cycle: int = 60
    photodiode_noise_s: float = 0.00002
    eye_rate_hz: float = 60.0
    eye_start_s: float = 0.01
    #: labels of the lines; bits 0, 1, 2 carry the vsync, photodiode and eye camera signals whatever their labels
    line_labels: tuple[str, ...] = LINE_LABELS


@dataclasses.dataclass(frozen=True)
class SyncFiles:
    sync_path: Path
    truth_path: Path
    n_frames: int
    n_camera_frames: int
    monitor_delay_s: float


def _line_events(samples: np.ndarray, states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(samples, kind="stable")
    return samples[order], states[order]


def write_sync_file(
    out_dir: str | Path,
    *,
    duration_s: float,
    seed: int,
    params: SyncParams = SyncParams(),
    name: str = "sync.h5",
) -> SyncFiles:
    """Write ``<out_dir>/<name>`` and ``<out_dir>/sync_truth.h5`` for a session of ``duration_s``."""
    import h5py

    p = params
    fs = p.sample_freq_hz
    rng = rng_for(seed, 41, 1)
    n_frames = int(np.floor(duration_s * p.frame_rate_hz)) + 2
    k = np.arange(n_frames)
    vsync = np.round((k / p.frame_rate_hz + np.abs(rng.normal(0.0, p.jitter_s, n_frames))) * fs).astype(np.int64)
    vsync = np.maximum.accumulate(np.maximum(vsync, 1))  # sample 0 holds the initial line states
    low = int(round(p.vsync_low_s * fs))
    display = vsync / fs + p.monitor_delay_s

    transitions = display[:: p.photodiode_cycle] + rng.normal(0.0, p.photodiode_noise_s, len(display[:: p.photodiode_cycle]))
    pd_times = np.r_[transitions, transitions[-1] + np.array([0.2, 0.3, 0.45])]
    pd_samples = np.round(pd_times * fs).astype(np.int64)

    n_cam = int(np.floor((duration_s - p.eye_start_s - 0.002) * p.eye_rate_hz)) + 1
    cam = np.round((p.eye_start_s + np.arange(n_cam) / p.eye_rate_hz) * fs).astype(np.int64)

    labels = list(p.line_labels)
    lines = {
        0: (np.r_[vsync, vsync + low], np.r_[np.zeros(n_frames), np.ones(n_frames)], 1),
        1: (pd_samples, (np.arange(len(pd_samples)) + 1) % 2, 0),
        2: (np.r_[cam, cam + 100], np.r_[np.ones(n_cam), np.zeros(n_cam)], 0),
    }
    all_samples = np.unique(np.concatenate([[0]] + [v[0] for v in lines.values()]))
    bits = np.zeros(len(all_samples), dtype=np.uint32)
    if "stim_running" in labels:
        bits |= np.uint32(1 << labels.index("stim_running"))
    for bit, (samples, states, initial) in lines.items():
        samples, states = _line_events(samples, np.asarray(states, dtype=np.int64))
        pos = np.searchsorted(samples, all_samples, side="right") - 1
        state = np.where(pos >= 0, states[np.maximum(pos, 0)], initial).astype(np.uint32)
        bits |= state << np.uint32(bit)
    keep = np.r_[True, bits[1:] != bits[:-1]]
    data = np.stack([all_samples[keep].astype(np.uint32), bits[keep]], axis=1)
    meta = {
        "ni_daq": {"device": "Dev1", "counter_output_freq": fs, "sample_freq": fs, "counter_bits": 32, "event_bits": 32},
        "start_time": "2026-01-01 00:00:00", "stop_time": "2026-01-01 01:00:00",
        "line_labels": labels, "timeouts": [], "version": {"dataset": 1.04, "sync": 2.2},
        "total_samples": int(all_samples[-1]),
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / name
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w", track_order=True) as f:
            f.create_dataset("data", data=data, track_times=False)
            f.create_dataset("meta", data=repr(meta), track_times=False)
    truth = write_h5_arrays(
        out_dir / "sync_truth.h5",
        {"display_times": display, "vsync_times": vsync / fs, "camera_times": cam / fs},
        attrs={"monitor_delay_s": p.monitor_delay_s, "sample_freq_hz": fs, "jitter_s": p.jitter_s},
    )
    return SyncFiles(sync_path=path, truth_path=truth, n_frames=n_frames, n_camera_frames=n_cam,
                     monitor_delay_s=p.monitor_delay_s)
