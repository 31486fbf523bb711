"""Runs AllenSDK 2.16.2's current-source-density functions on an LFP HDF5 file (run with the AllenSDK venv).

Usage: python _allensdk_csd_driver.py <work dir>; reads ``<work>/job.json`` (lfp path, onsets, window, channel
positions, good-channel mask, filter parameters) and writes ``<work>/allensdk.npz`` with the CSD, virtual positions,
elapsed seconds and peak traced memory. The whole LFP is loaded, as AllenSDK's module does.
"""

import json
import sys
import time
import tracemalloc
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from allensdk.brain_observatory.ecephys.current_source_density._current_source_density import (
    accumulate_lfp_data, compute_csd, extract_trial_windows)
from allensdk.brain_observatory.ecephys.current_source_density._filter_utils import filter_lfp_channels
from allensdk.brain_observatory.ecephys.current_source_density._interpolation_utils import interp_channel_locs

work = Path(sys.argv[1])
job = json.loads((work / "job.json").read_text())
tracemalloc.start()
t0 = time.perf_counter()
with h5py.File(job["lfp"], "r") as f:
    lfp = f["data"][()]
    timestamps = f["timestamps"][()]
table = pd.DataFrame({"Start": job["onsets"], "stimulus_name": "flashes", "stimulus_index": 0})
windows, relative = extract_trial_windows(table, "flashes", 1.0 / job["rate"], job["pre"], job["post"], stimulus_index=0)
good = np.asarray(job["good"], dtype=bool)
acc = accumulate_lfp_data(timestamps, lfp, np.flatnonzero(good), windows, volts_per_bit=job["volts_per_bit"])
filtered = filter_lfp_channels(acc, job["rate"], job["filter_cuts"], job["filter_order"])
actual = np.stack([np.asarray(job["x"])[good], np.asarray(job["y"])[good]], axis=1)
interp_y = np.arange(actual[:, 1].min(), actual[:, 1].max() + 1e-9, job["spacing_um"])
interp = np.stack([np.full(len(interp_y), actual[:, 0].mean()), interp_y], axis=1)
interp_lfp, spacing = interp_channel_locs(filtered, actual, interp)
mean = np.nanmean(interp_lfp, axis=0)
csd, _ = compute_csd(mean, spacing)
elapsed = time.perf_counter() - t0
peak = tracemalloc.get_traced_memory()[1]
np.savez(work / "allensdk.npz", csd=csd, depths_um=interp_y, relative=relative, seconds=elapsed, peak_bytes=peak)
