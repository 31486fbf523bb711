"""Speed of the ``l0`` event detector on full-length traces: the compiled solver against the numpy solver.

Synthetic dF/F: ``--rois`` ROIs x ``--frames`` frames at 31 Hz (default 18,000 frames, ~10 min), spikes at
0.3 Hz through the GCaMP6f AR(1) kernel (decay 0.347 s) plus noise of 0.06. Runs the whole detection
(noise, detrending, penalty search, solver) with the compiled solver (the default) and, in the same process on
the same ROIs, with the numpy solver (the unpruned recursion vectorised over ROIs); prints seconds per ROI, the
ratio, the solver rounds, the largest difference between the two results (they must agree), hit and
false-positive rates against the known spikes (+-2 frames) and the load average (the machine may be shared: only
the in-process ratio is meaningful). ``--reference-rois`` limits the numpy run to the first ROIs (it is slow).

    .venv/bin/python -m benchmarks.events_l0 --rois 20 --frames 18000
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from data_fixtures.events import ar1_traces, match_rates
from release_platform.ophys import events_l0
from release_platform.ophys.events import detect_events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rois", type=int, default=20)
    parser.add_argument("--frames", type=int, default=18000)
    parser.add_argument("--reference-rois", type=int, default=None, help="ROIs for the numpy solver (default: all)")
    args = parser.parse_args()
    reference_rois = min(args.rois, args.reference_rois or args.rois)
    dff, spikes = ar1_traces(args.rois, args.frames)
    events_l0.l0_deconvolve(dff[:1, :100], 0.9, 0.1)   # load (or compile) the compiled solver outside the timing
    print(f"load average before: {os.getloadavg()}")

    started = time.perf_counter()
    result = detect_events(dff, 31.0, "l0", decay_time_s=0.347)
    full = (time.perf_counter() - started) / args.rois
    hit, fp = match_rates(result.events, spikes)
    print(f"l0 (compiled): {args.rois} ROIs x {args.frames} frames: {full * args.rois:.1f} s, {full:.3f} s per ROI, "
          f"{result.parameters['solver_rounds']} solver rounds, window {result.parameters['saturation_window_frames']} "
          f"frames; hit rate {hit:.3f}, false-positive rate {fp:.3f} (+-2 frames)")

    # the penalty search alone, both solvers on the same detrended traces
    gamma = events_l0.gamma_from_decay(0.347, 31.0)
    detrended, sigmas = events_l0.noise_and_detrend(dff[:reference_rois], 31, 99)
    timings, found = {}, {}
    for solver in ("compiled", "numpy"):
        started = time.perf_counter()
        found[solver] = events_l0.detect_l0_events(detrended, gamma, 2.0 * sigmas, solver=solver)
        timings[solver] = (time.perf_counter() - started) / reference_rois
    same_events = np.array_equal(found["compiled"][0] > 0, found["numpy"][0] > 0)
    difference = float(np.abs(found["compiled"][0] - found["numpy"][0]).max())
    same_penalties = np.array_equal(found["compiled"][1], found["numpy"][1])
    print(f"penalty search + solver on {reference_rois} ROIs: numpy {timings['numpy']:.3f} s per ROI, compiled "
          f"{timings['compiled']:.3f} s per ROI: {timings['numpy'] / timings['compiled']:.1f}x faster; same events "
          f"{same_events}, same penalties {same_penalties}, max abs difference {difference:.2e}")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
