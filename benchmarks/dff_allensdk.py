"""dF/F alone: our estimators vs AllenSDK 2.16.2 ``compute_dff_windowed_median`` on the same traces.

Usage::

    python benchmarks/dff_allensdk.py --frames 18000 60000 --rois 16 --sdk-rois 2 \\
        --allensdk-python /path/to/allensdk-env/bin/python

Synthetic traces (GCaMP-like transients on a drifting baseline with Gaussian noise, 30 Hz) are
written to a temporary ``.npy`` file; AllenSDK runs on the first ``--sdk-rois`` of them in a separate
interpreter (it is not installed by this project, and is slow: its time is reported per ROI). Ours runs
``allen_legacy`` (kernels 5401 / 101 / 31 frames) and ``allen_inactive`` (600 s window, or half the
traces if shorter) on all ROIs, with the compiled kernels and, for comparison in the same process,
with the bottleneck / scipy reference engine. Printed per ROI: wall time and CPU time (all threads of
the process; on a shared machine the CPU ratio is the steadier one), speed ratios, whether both engines
agree bit for bit, the maximum absolute difference to AllenSDK, and the load average.
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
t0, c0 = time.perf_counter(), time.process_time()
out = sdk_dff.compute_dff_windowed_median(traces, median_kernel_long=cfg["long"], median_kernel_short=cfg["short"])
seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
np.save(cfg["out"], out)
json.dump({"seconds": seconds, "cpu": cpu}, open(cfg["timing"], "w"))
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


def best_of(repeats: int, function) -> tuple[float, float, object]:
    """Best wall time, best CPU time (all threads of the process) and the result of ``repeats`` runs."""
    best, best_cpu, result = float("inf"), float("inf"), None
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        result = function()
        best, best_cpu = min(best, time.perf_counter() - t0), min(best_cpu, time.process_time() - c0)
    return best, best_cpu, result


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    if not np.array_equal(np.isfinite(a), np.isfinite(b)):
        return float("inf")
    both = np.isfinite(a)
    return float(np.abs(a[both] - b[both]).max()) if both.any() else 0.0


def run_sdk(python: str, workdir: Path, traces_path: Path, rois: int) -> tuple[float, float, np.ndarray] | None:
    cfg = {"traces": str(traces_path), "rois": rois, "long": 5401, "short": 101,
           "out": str(workdir / "sdk_dff.npy"), "timing": str(workdir / "sdk_timing.json")}
    (workdir / "cfg.json").write_text(json.dumps(cfg))
    (workdir / "runner.py").write_text(SDK_RUNNER)
    done = subprocess.run([python, str(workdir / "runner.py"), str(workdir / "cfg.json")], capture_output=True, text=True)
    if done.returncode != 0:
        print(f"AllenSDK run failed ({python}):\n{done.stderr[-2000:]}")
        return None
    timing = json.loads(Path(cfg["timing"]).read_text())
    return timing["seconds"], timing["cpu"], np.load(cfg["out"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[18000, 60000])
    parser.add_argument("--rois", type=int, default=16)
    parser.add_argument("--sdk-rois", type=int, default=2, help="ROIs AllenSDK runs (time reported per ROI)")
    parser.add_argument("--repeats", type=int, default=3, help="our timings: best of this many runs")
    parser.add_argument("--allensdk-python", help="python interpreter with AllenSDK installed")
    args = parser.parse_args()

    dff_module.load_kernels()  # numba: load or compile the kernels first

    for n_frames in args.frames:
        traces = synthetic_traces(args.rois, n_frames)
        long_s = min(600.0, n_frames / FRAME_RATE_HZ / 2)  # allen_inactive window: 600 s or half the traces
        print(f"\n{args.rois} ROIs x {n_frames} frames (load average {os.getloadavg()[0]:.1f}); "
              f"ms per ROI, best of {args.repeats}, wall / CPU (all threads)")
        runs = {"allen_legacy": {"method": "allen_legacy"},
                f"allen_inactive ({long_s:.0f} s)": {"long_baseline_filter_s": long_s}}
        ours: dict[tuple[str, str], tuple[float, float, object]] = {}
        for name, kwargs in runs.items():
            for engine in ("compiled", "bottleneck"):
                dff_module.MEDIAN_ENGINE = engine
                try:
                    ours[name, engine] = best_of(args.repeats, lambda: compute_dff(traces, FRAME_RATE_HZ, **kwargs))
                finally:
                    dff_module.MEDIAN_ENGINE = "compiled"
            (wall, cpu, result), (b_wall, b_cpu, reference) = ours[name, "compiled"], ours[name, "bottleneck"]
            identical = all(np.array_equal(getattr(result, f), getattr(reference, f), equal_nan=True)
                            for f in ("dff", "sigma_dff", "num_small_baseline_frames", "invalid_rows"))
            print(f"  {name:22s} compiled {wall * 1e3 / args.rois:7.2f} / {cpu * 1e3 / args.rois:7.2f}   bottleneck "
                  f"{b_wall * 1e3 / args.rois:7.2f} / {b_cpu * 1e3 / args.rois:7.2f}   speed-up {b_wall / wall:4.2f}x / "
                  f"{b_cpu / cpu:4.2f}x   identical to bottleneck: {identical}")
        if args.allensdk_python:
            with tempfile.TemporaryDirectory(prefix="dff_bench_") as tmp:
                workdir = Path(tmp)
                np.save(workdir / "traces.npy", traces)
                sdk = run_sdk(args.allensdk_python, workdir, workdir / "traces.npy", args.sdk_rois)
            if sdk is not None:
                seconds, cpu_seconds, sdk_dff = sdk
                sdk_wall, sdk_cpu = seconds * 1e3 / args.sdk_rois, cpu_seconds * 1e3 / args.sdk_rois
                print(f"  AllenSDK compute_dff_windowed_median ({args.sdk_rois} ROIs) {sdk_wall:9.1f} / {sdk_cpu:9.1f}; "
                      f"max|diff| to allen_legacy {max_abs_diff(ours['allen_legacy', 'compiled'][2].dff[: args.sdk_rois], sdk_dff):.2e}")
                for (name, engine), (wall, cpu, _) in ours.items():
                    print(f"    AllenSDK / {name} {engine:10s}: wall {sdk_wall / (wall * 1e3 / args.rois):6.1f}x  "
                          f"CPU {sdk_cpu / (cpu * 1e3 / args.rois):6.1f}x")
        print(f"  load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
