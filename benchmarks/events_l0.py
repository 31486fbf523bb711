"""Speed of the ``l0`` event detector on a full-length plane, against the same solver run one ROI at a time.

Synthetic dF/F: ``--rois`` ROIs x ``--frames`` frames at 31 Hz (default 18,000 frames, ~10 min), spikes at
0.3 Hz through the GCaMP6f AR(1) kernel (decay 0.347 s) plus noise of 0.06. Prints the wall time of the whole
detection (noise, detrending, penalty search, solver), seconds per ROI, the number of solver rounds, hit and
false-positive rates against the known spikes (+-2 frames), and the ratio against solving the ROIs one at a time
(``--reference-rois`` of them, extrapolated per ROI) in the same process.

    .venv/bin/python -m benchmarks.events_l0 --rois 100 --frames 18000
"""

from __future__ import annotations

import argparse
import time

from data_fixtures.events import ar1_traces, match_rates
from release_platform.ophys.events import detect_events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rois", type=int, default=100)
    parser.add_argument("--frames", type=int, default=18000)
    parser.add_argument("--reference-rois", type=int, default=3)
    args = parser.parse_args()
    dff, spikes = ar1_traces(args.rois, args.frames)
    started = time.perf_counter()
    result = detect_events(dff, 31.0, "l0", decay_time_s=0.347)
    batched = time.perf_counter() - started
    hit, fp = match_rates(result.events, spikes)
    print(f"l0: {args.rois} ROIs x {args.frames} frames: {batched:.1f} s, {batched / args.rois:.3f} s per ROI, "
          f"{result.parameters['solver_rounds']} solver rounds, window {result.parameters['saturation_window_frames']} frames")
    print(f"hit rate {hit:.3f}, false-positive rate {fp:.3f} (+-2 frames)")
    started = time.perf_counter()
    for row in range(args.reference_rois):
        detect_events(dff[row:row + 1], 31.0, "l0", decay_time_s=0.347)
    single = (time.perf_counter() - started) / args.reference_rois
    print(f"one ROI at a time: {single:.3f} s per ROI; batched is {single / (batched / args.rois):.1f}x faster per ROI")


if __name__ == "__main__":
    main()
