"""dF/F alone: our estimators vs AllenSDK 2.16.2 ``compute_dff_windowed_median`` on the same traces.

Usage::

    python benchmarks/dff_allensdk.py --frames 18000 60000 --rois 16 --sdk-rois 2 \\
        --allensdk-python /path/to/allensdk-env/bin/python

Synthetic traces (GCaMP-like transients on a drifting baseline with Gaussian noise, 30 Hz) are
written to a temporary ``.npy`` file; AllenSDK runs on the first ``--sdk-rois`` of them in a separate
interpreter (it is not installed by this project, and is slow: its time is reported per ROI). Ours runs
``allen_legacy`` (kernels 5401 / 101 / 31 frames) and ``allen_inactive`` (600 s window, or half the traces if shorter) on all ROIs,
with the compiled running medians and, for comparison in the same process, with the bottleneck
reference engine. Printed: ms per ROI, speed ratios, maximum absolute differences and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from release_platform.ophys import dff as dff_module  # noqa: E402
from release_platform.ophys.dff import compute_dff  # noqa: E402

FRAME_RATE_HZ = 30.0

SDK_RUNNER = r'''
import json, sys, time
import numpy as np
from allensdk.brain_observatory import dff as sdk_dff
cfg = json.load(open(sys.argv[1]))
traces = np.load(cfg["traces"])[: cfg["rois"]]
t0 = time.perf_counter()
out = sdk_dff.compute_dff_windowed_median(traces, median_kernel_long=cfg["long"], median_kernel_short=cfg["short"])
seconds = time.perf_counter() - t0
np.save(cfg["out"], out)
json.dump({"seconds": seconds}, open(cfg["timing"], "w"))
'''


def synthetic_traces(n_rois: int, n_frames: int, seed: int = 0) -> np.ndarray:
    """Neuropil-corrected-like fluorescence: baseline 150-400 a.u. with slow drift, transients, noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_frames) / FRAME_RATE_HZ
    base = rng.uniform(150, 400, (n_rois, 1)) * (1 + 0.1 * np.sin(2 * np.pi * t / rng.uniform(200, 900, (n_rois, 1))))
    spikes = (rng.random((n_rois, n_frames)) < 0.003) * rng.uniform(0.5, 3.0, (n_rois, n_frames))
    kernel = np.exp(-np.arange(int(3 * FRAME_RATE_HZ)) / (0.7 * FRAME_RATE_HZ))
    transients = np.array([np.convolve(s, kernel)[:n_frames] for s in spikes])
    return base * (1 + transients) + rng.normal(0, 8, (n_rois, n_frames))


def best_of(repeats: int, function) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - t0)
    return best, result


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    if not np.array_equal(np.isfinite(a), np.isfinite(b)):
        return float("inf")
    both = np.isfinite(a)
    return float(np.abs(a[both] - b[both]).max()) if both.any() else 0.0


def run_sdk(python: str, workdir: Path, traces_path: Path, rois: int) -> tuple[float, np.ndarray] | None:
    cfg = {"traces": str(traces_path), "rois": rois, "long": 5401, "short": 101,
           "out": str(workdir / "sdk_dff.npy"), "timing": str(workdir / "sdk_timing.json")}
    (workdir / "cfg.json").write_text(json.dumps(cfg))
    (workdir / "runner.py").write_text(SDK_RUNNER)
    done = subprocess.run([python, str(workdir / "runner.py"), str(workdir / "cfg.json")], capture_output=True, text=True)
    if done.returncode != 0:
        print(f"AllenSDK run failed ({python}):\n{done.stderr[-2000:]}")
        return None
    return json.loads(Path(cfg["timing"]).read_text())["seconds"], np.load(cfg["out"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[18000, 60000])
    parser.add_argument("--rois", type=int, default=16)
    parser.add_argument("--sdk-rois", type=int, default=2, help="ROIs AllenSDK runs (time reported per ROI)")
    parser.add_argument("--repeats", type=int, default=3, help="our timings: best of this many runs")
    parser.add_argument("--allensdk-python", help="python interpreter with AllenSDK installed")
    args = parser.parse_args()

    warm = synthetic_traces(2, 6000)
    compute_dff(warm, FRAME_RATE_HZ, method="allen_legacy")  # numba: load or compile the kernels first
    compute_dff(warm, FRAME_RATE_HZ, long_baseline_filter_s=60.0)

    for n_frames in args.frames:
        traces = synthetic_traces(args.rois, n_frames)
        per_roi = 1e3 / args.rois
        long_s = min(600.0, n_frames / FRAME_RATE_HZ / 2)  # allen_inactive window: 600 s or half the traces
        print(f"\n{args.rois} ROIs x {n_frames} frames (load average {os.getloadavg()[0]:.1f})")
        results = {}
        for engine in ("compiled", "bottleneck"):
            dff_module.MEDIAN_ENGINE = engine
            try:
                t_leg, leg = best_of(args.repeats, lambda: compute_dff(traces, FRAME_RATE_HZ, method="allen_legacy"))
                t_ina, ina = best_of(args.repeats, lambda: compute_dff(traces, FRAME_RATE_HZ, long_baseline_filter_s=long_s))
            finally:
                dff_module.MEDIAN_ENGINE = "compiled"
            results[engine] = (t_leg, leg, t_ina, ina)
        (t_leg, leg, t_ina, ina), (b_leg, bleg, b_ina, bina) = results["compiled"], results["bottleneck"]
        identical = all(np.array_equal(getattr(a, f), getattr(b, f), equal_nan=True)
                        for a, b in ((leg, bleg), (ina, bina)) for f in ("dff", "sigma_dff", "num_small_baseline_frames"))
        print(f"  allen_legacy   compiled {t_leg * per_roi:7.2f} ms/ROI  bottleneck {b_leg * per_roi:7.2f} ms/ROI  "
              f"speed-up {b_leg / t_leg:5.2f}x")
        print(f"  allen_inactive ({long_s:.0f} s) compiled {t_ina * per_roi:7.2f} ms/ROI  bottleneck {b_ina * per_roi:7.2f} ms/ROI  "
              f"speed-up {b_ina / t_ina:5.2f}x")
        print(f"  compiled == bottleneck bit for bit (dff, sigma, small-baseline counts): {identical}")
        if args.allensdk_python:
            with tempfile.TemporaryDirectory(prefix="dff_bench_") as tmp:
                workdir = Path(tmp)
                np.save(workdir / "traces.npy", traces)
                sdk = run_sdk(args.allensdk_python, workdir, workdir / "traces.npy", args.sdk_rois)
            if sdk is not None:
                seconds, sdk_dff = sdk
                sdk_ms = seconds * 1e3 / args.sdk_rois
                print(f"  AllenSDK compute_dff_windowed_median {sdk_ms:9.1f} ms/ROI ({args.sdk_rois} ROIs); "
                      f"ratio to allen_legacy compiled {sdk_ms / (t_leg * per_roi):6.1f}x, bottleneck "
                      f"{sdk_ms / (b_leg * per_roi):6.1f}x; allen_inactive compiled {sdk_ms / (t_ina * per_roi):6.1f}x; "
                      f"max|diff| {max_abs_diff(leg.dff[: args.sdk_rois], sdk_dff):.2e}")
        print(f"  load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
