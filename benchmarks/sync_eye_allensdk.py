"""Sync timing, eye tracking and gaze mapping side by side with AllenSDK, on one synthetic session.

    .venv/bin/python benchmarks/sync_eye_allensdk.py [--allensdk /work/venvs/allensdk/bin/python] [--duration 600]

Writes a synthetic sync file and eye ellipse fits, computes frame times, monitor delay, eye-tracking areas,
likely blinks and gaze with :mod:`release_platform.sync`, :mod:`release_platform.behavior.eye_tracking` and
:mod:`release_platform.behavior.gaze`, then runs AllenSDK's functions (``sync_dataset.Dataset``,
``time_sync.calculate_monitor_delay``, ``eye_tracking_processing.process_eye_tracking_data``,
``gaze_mapping.GazeMapper``) on the same files in the AllenSDK interpreter, and prints the largest
differences, the errors against the synthetic truth and the time of each side (ratio ours / AllenSDK).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

ALLEN_SCRIPT = r"""
import json, sys, time, warnings
import numpy as np, pandas as pd
warnings.simplefilter("ignore")
from allensdk.brain_observatory.sync_dataset import Dataset
from allensdk.internal.brain_observatory.time_sync import calculate_monitor_delay
from allensdk.brain_observatory.behavior.eye_tracking_processing import process_eye_tracking_data
from allensdk.brain_observatory.gaze_mapping._gaze_mapper import GazeMapper
args = json.loads(sys.argv[1])
t0 = time.perf_counter()
ds = Dataset(args["sync"])
frames = ds.get_falling_edges("stim_vsync", units="seconds")
delay = calculate_monitor_delay(ds, frames, "stim_photodiode")
camera = ds.get_rising_edges("eye_frame_received", units="seconds")
t_sync = time.perf_counter() - t0
fits = pd.read_csv(args["eye"])
t0 = time.perf_counter()
table = process_eye_tracking_data(fits.copy(), pd.Series(camera))
t_eye = time.perf_counter() - t0
g = args["geometry"]
t0 = time.perf_counter()
mapper = GazeMapper(monitor_position=np.array(g["monitor_position_mm"]) / 10, monitor_rotations=np.radians(g["monitor_rotation_deg"]),
                    led_position=np.array(g["led_position"]) / 10, camera_position=np.array(g["camera_position_mm"]) / 10,
                    camera_rotations=np.radians(g["camera_rotation_deg"]), eye_radius=0.1682, cm_per_pixel=10.2 / 10000)
cm = mapper.pupil_position_on_monitor_in_cm(fits[["pupil_center_x", "pupil_center_y"]].values, fits[["cr_center_x", "cr_center_y"]].values)
deg = mapper.pupil_position_on_monitor_in_degrees(cm)
t_gaze = time.perf_counter() - t0
np.savez(args["out"], frames=frames, camera=camera, pupil_area=table["pupil_area"].to_numpy(float),
         eye_area=table["eye_area"].to_numpy(float), cr_area=table["cr_area"].to_numpy(float),
         likely_blink=table["likely_blink"].to_numpy(bool), cm=cm, deg=deg)
print(json.dumps({"delay": float(delay), "t_sync": t_sync, "t_eye": t_eye, "t_gaze": t_gaze}))
"""

GEOMETRY = {"camera_position_mm": [102.8, 74.7, 31.6], "camera_rotation_deg": [0.0, 0.0, 2.8], "led_position": [246.0, 92.3, 52.6],
            "monitor_position_mm": [118.6, 86.2, 31.6], "monitor_rotation_deg": [0.0, 0.0, 0.0]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--allensdk", default="/work/venvs/allensdk/bin/python")
    parser.add_argument("--duration", type=float, default=600.0)
    args = parser.parse_args(argv)

    from data_fixtures.eye_tracking import write_rig_files
    from release_platform.behavior.eye_tracking import align_camera_times, load_ellipse_fits, process_eye_tracking
    from release_platform.behavior.gaze import RigGeometry, gaze_on_monitor
    from release_platform.sync import SyncDataset, camera_frame_times, stimulus_timing

    root = Path(tempfile.mkdtemp(prefix="sync_eye_"))
    sync_path, eye_path = write_rig_files(root, duration_s=args.duration, seed=1)
    with h5py.File(root / "sync_truth.h5", "r") as f:
        true_delay, display = float(f.attrs["monitor_delay_s"]), f["display_times"][()]
    with h5py.File(root / "eye_tracking_truth.h5", "r") as f:
        true_area, true_blink = f["pupil_area"][()], f["blink"][()]

    t0 = time.perf_counter()
    ds = SyncDataset(sync_path)
    timing = stimulus_timing(ds)
    camera = camera_frame_times(ds)
    t_sync = time.perf_counter() - t0
    fits = load_ellipse_fits(eye_path)
    t0 = time.perf_counter()
    table = process_eye_tracking(fits, align_camera_times(len(fits), camera))
    t_eye = time.perf_counter() - t0
    t0 = time.perf_counter()
    cm, deg = gaze_on_monitor(fits[["pupil_center_x", "pupil_center_y"]].to_numpy(), fits[["cr_center_x", "cr_center_y"]].to_numpy(),
                              RigGeometry.model_validate(GEOMETRY))
    t_gaze = time.perf_counter() - t0

    out = root / "allen.npz"
    proc = subprocess.run([args.allensdk, "-c", ALLEN_SCRIPT, json.dumps({"sync": str(sync_path), "eye": str(eye_path), "out": str(out),
                                                                          "geometry": GEOMETRY})],
                          capture_output=True, text=True, check=False)
    if proc.returncode:
        print(proc.stderr[-3000:], file=sys.stderr)
        return 1
    allen = json.loads(proc.stdout.strip().splitlines()[-1])
    a = np.load(out)

    def maxdiff(x, y):
        both = np.isfinite(x) & np.isfinite(y)
        return float(np.max(np.abs(x[both] - y[both]))) if both.any() else 0.0

    ok = ~table["likely_blink"].to_numpy()
    print(f"session {args.duration:g} s: {len(timing.frame_times)} stimulus frames, {len(camera)} eye frames, "
          f"{int(true_blink.sum())} blink frames")
    print(f"monitor delay: ours {timing.monitor_delay_s * 1e3:.4f} ms, AllenSDK {allen['delay'] * 1e3:.4f} ms, truth {true_delay * 1e3:.4f} ms")
    print(f"frame times: max |ours - AllenSDK| {maxdiff(timing.frame_times, a['frames']):.3g} s; "
          f"display times max |error| vs truth {np.max(np.abs(timing.display_times - display)) * 1e6:.2f} us "
          f"(sync sample {1e6 / timing.sample_freq_hz:.0f} us)")
    print(f"camera times: max |ours - AllenSDK| {maxdiff(camera, a['camera']):.3g} s")
    for name in ("pupil_area", "eye_area", "cr_area"):
        print(f"{name}: max |ours - AllenSDK| {maxdiff(table[name].to_numpy(), a[name]):.3g} px^2")
    print(f"likely_blink: identical to AllenSDK on {np.mean(table['likely_blink'].to_numpy() == a['likely_blink']) * 100:.2f}% of frames; "
          f"{np.mean(table['likely_blink'].to_numpy()[true_blink]) * 100:.1f}% of true blink frames flagged, "
          f"{np.mean(table['likely_blink'].to_numpy()[~true_blink]) * 100:.2f}% of the other frames")
    print(f"pupil area vs truth (unflagged frames): max relative error {np.max(np.abs(table['pupil_area'].to_numpy()[ok] / true_area[ok] - 1)) * 100:.3f}%")
    print(f"gaze: max |ours - AllenSDK| {maxdiff(cm, a['cm']):.3g} cm, {maxdiff(deg, a['deg']):.3g} deg")
    for what, ours, theirs in (("sync", t_sync, allen["t_sync"]), ("eye", t_eye, allen["t_eye"]), ("gaze", t_gaze, allen["t_gaze"])):
        print(f"time {what}: ours {ours * 1e3:.1f} ms, AllenSDK {theirs * 1e3:.1f} ms, ratio {ours / theirs:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
