"""Sync files: line edges, frame times, monitor delay and presentation times against the synthetic truth."""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest

from data_fixtures.sync import SyncParams, write_sync_file
from release_platform.errors import InputError
from release_platform.sync import (
    SyncDataset,
    camera_frame_times,
    photodiode_events,
    presentation_times,
    stimulus_timing,
)


def _truth(files):
    with h5py.File(files.truth_path, "r") as f:
        return {k: f[k][()] for k in f}


@pytest.fixture(scope="module")
def sync60(tmp_path_factory):
    return write_sync_file(tmp_path_factory.mktemp("sync"), duration_s=60.0, seed=5)


def test_lines_and_edges_in_samples_and_seconds(sync60):
    ds = SyncDataset(sync60.sync_path, entity="ecephys_session 1")
    truth = _truth(sync60)
    assert ds.sample_freq == 100_000.0 and ds.line_labels[:3] == ["stim_vsync", "stim_photodiode", "eye_frame_received"]
    falling = ds.falling_edges("stim_vsync", units="samples")
    assert falling.dtype.kind == "i"
    np.testing.assert_array_equal(falling, np.round(truth["vsync_times"] * 1e5).astype(np.int64))
    np.testing.assert_allclose(ds.falling_edges("stim_vsync"), truth["vsync_times"], rtol=0, atol=1e-12)
    rising = ds.rising_edges("stim_vsync", units="samples")
    np.testing.assert_array_equal(rising - falling, 200)  # the vsync line is low for 2 ms
    np.testing.assert_allclose(camera_frame_times(ds), truth["camera_times"], rtol=0, atol=1e-12)
    assert len(ds.edges("stim_photodiode", "all")) == len(truth["display_times"][::60]) + 3


@pytest.mark.parametrize("delay", [0.021390, 0.036130])
def test_monitor_delay_and_onsets_recovered(tmp_path, delay):
    files = write_sync_file(tmp_path, duration_s=40.0, seed=11, params=SyncParams(monitor_delay_s=delay, jitter_s=0.0004))
    truth = _truth(files)
    timing = stimulus_timing(files.sync_path)
    assert abs(timing.monitor_delay_s - delay) < 1e-3
    assert abs(timing.monitor_delay_s - delay) < 1e-5  # in fact within one sample (photodiode noise 20 us)
    np.testing.assert_array_equal(timing.frame_times, truth["vsync_times"])
    frames = np.arange(0, len(truth["display_times"]) - 20, 45)
    table = pd.DataFrame({"start_frame": frames, "end_frame": frames + 15, "start_time": frames / 60.0,
                          "stop_time": (frames + 15) / 60.0, "duration": 0.25, "image_name": "im000"})
    timed = presentation_times(table, timing)
    sample = 1.0 / timing.sample_freq_hz
    np.testing.assert_allclose(timed["start_time"], truth["display_times"][frames], rtol=0, atol=sample)
    np.testing.assert_allclose(timed["stop_time"], truth["display_times"][frames + 15], rtol=0, atol=sample)
    np.testing.assert_allclose(timed["duration"], timed["stop_time"] - timed["start_time"])
    assert (timed["image_name"] == "im000").all() and table["start_time"].iloc[1] == frames[1] / 60.0  # input untouched


def test_photodiode_markers_and_anomalies_are_dropped():
    regular = 5.0 + np.arange(10) * 1.0
    edges = np.r_[0.1, 0.2, 0.35, regular[:4], regular[4] - 0.9 + 0.5, regular[4:], regular[-1] + np.array([0.2, 0.3])]
    np.testing.assert_allclose(photodiode_events(np.sort(edges)), regular)
    with pytest.raises(ValueError, match="no run of photodiode events"):
        photodiode_events(np.arange(10) * 0.3)


def test_sync_without_the_expected_lines_is_one_error_naming_session_file_and_labels(tmp_path):
    files = write_sync_file(tmp_path, duration_s=10.0, seed=1,
                            params=SyncParams(line_labels=("vsync_2p", "stim_photodiode", "cam1", "", "", "", "", "")))
    with pytest.raises(InputError) as err:
        stimulus_timing(files.sync_path, entity="behavior_session 77")
    msg = str(err.value)
    assert msg.startswith(f"behavior_session 77: {files.sync_path}: sync file lacks the expected line labels")
    assert "vsync (one of stim_vsync, vsync_stim, frames)" in msg and "photodiode" not in msg.split("labels:")[1].split(";")[0]
    with pytest.raises(InputError, match="camera \\(one of eye_frame_received"):
        camera_frame_times(files.sync_path, entity="ophys_session 3")


def test_bad_sync_files_are_input_errors(tmp_path, sync60):
    with pytest.raises(InputError, match="sync file is missing"):
        SyncDataset(tmp_path / "nope.h5", entity="s")
    bad = tmp_path / "bad.h5"
    with h5py.File(bad, "w") as f:
        f["data"] = np.zeros((3, 2), np.uint32)
        f["meta"] = "{'line_labels': ['a'], 'ni_daq': {}}"
    with pytest.raises(InputError, match="sample_freq"):
        SyncDataset(bad)
    with h5py.File(bad, "w") as f:
        f["data"] = np.zeros((3, 2), np.uint32)
        f["meta"] = "__import__('os').system('false')"
    with pytest.raises(InputError, match="not a readable dict"):
        SyncDataset(bad)
    timing = stimulus_timing(sync60.sync_path)
    table = pd.DataFrame({"start_frame": [0, len(timing.frame_times) + 5], "end_frame": [3, len(timing.frame_times) + 9]})
    with pytest.raises(InputError, match="outside the .* frames of the sync file"):
        presentation_times(table, timing, entity="s", path="t.csv")
    with pytest.raises(InputError, match="lacks the frame columns"):
        presentation_times(pd.DataFrame({"start_time": [0.0]}), timing)


def test_counter_rollover_of_narrow_counters(tmp_path):
    path = tmp_path / "roll.h5"
    counter = np.array([0, 4_000_000_000, 100, 200], dtype=np.uint32)
    bits = np.array([1, 0, 1, 0], dtype=np.uint32)
    with h5py.File(path, "w") as f:
        f["data"] = np.stack([counter, bits], axis=1)
        f["meta"] = repr({"line_labels": ["x"], "ni_daq": {"sample_freq": 1000.0, "counter_bits": 16}})
    ds = SyncDataset(path)
    np.testing.assert_array_equal(ds.falling_edges("x", units="samples"), [4_000_000_000, 200 + 2**32])
    np.testing.assert_array_equal(ds.rising_edges("x", units="samples"), [100 + 2**32])
