"""Neuropil correction benchmark: the compiled engine against the reference engine, same process.

Usage::

    python benchmarks/neuropil.py                                  # 220 ROIs x 18,000 and 60,000 frames
    python benchmarks/neuropil.py --frames 18000 --rounds 9 --rois 220

For each trace length, ``correct_neuropil`` (fit r per ROI by the cross-validated smoothness criterion, the
fallbacks and the corrected traces FC) runs on two synthetic sessions with engine="reference" (scipy
``solve_banded``, ``einsum``, a grid search per ROI) and engine="compiled" (numba kernels), alternating
the two for ``--rounds`` rounds after a warm-up; printed: median and best wall time of each, the ratio
of the medians, the median CPU time of all threads (what a loaded machine waits for), peak traced memory (``tracemalloc``; the numba kernels' scratch of a few hundred kB is not
traced), and the agreement of the two (r, r_fit, RMSE, FC: bit-identical or the max |difference|, and
the number of ROIs whose chosen r differs). The load average is printed before and after.

Sessions:

* ``realistic``: the model of ``benchmarks/ophys.py`` at trace level: GCaMP-like cells (Poisson spikes at
  0.5 Hz, F0 150..600), a neuropil with slow drift and fast fluctuations scaled by a per-ROI spatial
  factor, contamination r in 0.4..1.0, shot noise of ROIs of 60..300 pixels and neuropil rings of
  ~1,000 pixels, 5% invalid ROIs (NaN rows, as demixing leaves them), 20 frames dropped by demixing
  (NaN in every valid ROI) and one ROI with a NaN stretch beyond the skip threshold;
* ``random``: Gaussian traces without structure (r wanders over the grid, more extension passes).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from release_platform.ophys import neuropil  # noqa: E402

FRAME_RATE_HZ = 30.0


def realistic_session(rng: np.random.Generator, n_rois: int, frames: int) -> tuple[np.ndarray, np.ndarray]:
    t = np.arange(frames) / FRAME_RATE_HZ
    kernel_t = np.arange(int(0.3 * FRAME_RATE_HZ * 8) + 1) / FRAME_RATE_HZ
    kernel = np.exp(-kernel_t / 0.3) - np.exp(-kernel_t / 0.05)
    kernel /= kernel.max()
    spikes = rng.poisson(0.5 / FRAME_RATE_HZ, size=(n_rois, frames))
    calcium = np.stack([np.convolve(s, kernel)[:frames] for s in spikes])
    cells = rng.uniform(150, 600, n_rois)[:, None] * (1 + 0.2 * calcium)
    common = 250 + 25 * np.sin(2 * np.pi * t / 120) + 12 * rng.standard_normal(frames)
    local = common[None, :] * rng.uniform(0.9, 1.1, n_rois)[:, None]
    r_true = rng.uniform(0.4, 1.0, n_rois)
    roi_pixels = rng.integers(60, 300, n_rois)[:, None]
    ring_pixels = rng.integers(800, 1500, n_rois)[:, None]
    expected = cells + r_true[:, None] * local
    fm = expected + np.sqrt(expected / roi_pixels) * rng.standard_normal((n_rois, frames))
    fn = local + np.sqrt(local / ring_pixels) * rng.standard_normal((n_rois, frames))
    invalid = rng.choice(n_rois, max(1, n_rois // 20), replace=False)
    fm[invalid] = np.nan
    dropped = rng.choice(frames, min(20, frames // 10), replace=False)
    fm[:, dropped] = np.nan
    fn[rng.integers(n_rois), : frames // 5] = np.nan
    return fm, fn


def random_session(rng: np.random.Generator, n_rois: int, frames: int) -> tuple[np.ndarray, np.ndarray]:
    fm = rng.normal(400.0, 40.0, (n_rois, frames))
    fn = rng.normal(250.0, 25.0, (n_rois, frames))
    return fm, fn


def run(engine: str, fm: np.ndarray, fn: np.ndarray):
    """(wall seconds, CPU seconds of all threads, result) of one ``correct_neuropil``."""
    t0, c0 = time.perf_counter(), time.process_time()
    result = neuropil.correct_neuropil(fm, fn, engine=engine)
    return time.perf_counter() - t0, time.process_time() - c0, result


def peak_mb(engine: str, fm: np.ndarray, fn: np.ndarray) -> float:
    tracemalloc.start()
    neuropil.correct_neuropil(fm, fn, engine=engine)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 1e6


def agreement(a, b) -> str:
    parts = []
    for name in ("r", "r_fit", "rmse", "corrected"):
        x, y = getattr(a, name), getattr(b, name)
        if np.array_equal(x, y, equal_nan=True):
            parts.append(f"{name} identical")
        else:
            with np.errstate(invalid="ignore"):
                diff = np.nanmax(np.abs(x - y))
                rel = np.nanmax(np.abs(x - y) / np.abs(x))
            parts.append(f"{name} max|diff| {diff:.2e} (rel {rel:.1e})")
    changed = int(np.sum(~((a.r_fit == b.r_fit) | (np.isnan(a.r_fit) & np.isnan(b.r_fit)))))
    same_status = bool((a.status == b.status).all())
    parts.append(f"{changed} chosen r differ, status {'identical' if same_status else 'DIFFERENT'}")
    return "; ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rois", type=int, default=220)
    parser.add_argument("--frames", type=int, nargs="+", default=[18000, 60000])
    parser.add_argument("--rounds", type=int, default=7, help="alternating reference/compiled runs per session")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}; CPUs: {len(os.sched_getaffinity(0))}")
    t0 = time.perf_counter()
    neuropil.load_kernels()
    print(f"numba kernels loaded in {time.perf_counter() - t0:.2f} s (once per process, not timed below)")
    rng = np.random.default_rng(args.seed)
    print(f"{'session':>10} {'frames':>7} {'ROIs':>5} | {'reference s':>11} {'compiled s':>10} {'ratio':>6} | "
          f"{'ref MB':>7} {'comp MB':>7} | agreement")
    for frames in args.frames:
        for name, make in (("realistic", realistic_session), ("random", random_session)):
            fm, fn = make(rng, args.rois, frames)
            times = {"reference": [], "compiled": []}
            cpu = {"reference": [], "compiled": []}
            results = {}
            for engine in times:  # warm-up (page faults of the first large allocations, thread start)
                run(engine, fm, fn)
            for _ in range(args.rounds):
                for engine in times:
                    seconds, cpu_seconds, results[engine] = run(engine, fm, fn)
                    times[engine].append(seconds)
                    cpu[engine].append(cpu_seconds)
            ref, comp = np.median(times["reference"]), np.median(times["compiled"])
            ref_cpu, comp_cpu = np.median(cpu["reference"]), np.median(cpu["compiled"])
            print(f"{name:>10} {frames:>7} {args.rois:>5} | {ref:>11.3f} {comp:>10.3f} {ref / comp:>5.1f}x | "
                  f"{peak_mb('reference', fm, fn):>7.0f} {peak_mb('compiled', fm, fn):>7.0f} | "
                  f"{agreement(results['reference'], results['compiled'])}")
            print(f"{'':>10} {'':>7} {'':>5} | CPU (all threads) {ref_cpu:.3f} / {comp_cpu:.3f} s = {ref_cpu / comp_cpu:.1f}x; "
                  f"best wall {min(times['reference']):.3f} / {min(times['compiled']):.3f} s; "
                  f"fits: {int((results['compiled'].status == 'fit').sum())} fit, "
                  f"{int(results['compiled'].fallback_used.sum())} fallbacks, "
                  f"{int((results['compiled'].status == 'skipped').sum())} skipped")
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
