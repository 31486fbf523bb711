"""Run Allen's ipfx long-square analysis on arrays saved by ``benchmarks/icephys.py`` (run with the python of
a separate virtualenv that has ``ipfx``; never imported by the project). Prints one JSON line."""

import json
import logging
import sys
import time
import warnings

import numpy as np

warnings.simplefilter("ignore")
logging.disable(logging.WARNING)

from ipfx.feature_extractor import SpikeFeatureExtractor, SpikeTrainFeatureExtractor  # noqa: E402
from ipfx.stimulus_protocol_analysis import LongSquareAnalysis  # noqa: E402
from ipfx.sweep import Sweep, SweepSet  # noqa: E402


def main(npz_path, meta_path, repeat):
    meta = json.load(open(meta_path))
    with np.load(npz_path) as npz:  # into memory first: the timing below is the analysis, not the file
        arrays = {k: npz[k] for k in npz.files}
    sweeps = meta["sweeps"]
    start, end = sweeps[0]["start"], sweeps[0]["end"]

    def run():
        sweep_set = SweepSet([
            Sweep(t=np.arange(len(arrays[f"v_{s['sweep_number']}"])) / s["rate"], v=arrays[f"v_{s['sweep_number']}"],
                  i=arrays[f"i_{s['sweep_number']}"], clamp_mode="CurrentClamp", sampling_rate=s["rate"],
                  sweep_number=s["sweep_number"])
            for s in sweeps
        ])
        spx = SpikeFeatureExtractor(start=start, end=end)
        sptx = SpikeTrainFeatureExtractor(start=start, end=end)
        return LongSquareAnalysis(spx, sptx, subthresh_min_amp=-200.0).analyze(sweep_set)

    best = best_cpu = None
    for _ in range(int(repeat)):
        t, c = time.perf_counter(), time.process_time()
        features = run()
        elapsed, cpu = time.perf_counter() - t, time.process_time() - c
        best = elapsed if best is None else min(best, elapsed)
        best_cpu = cpu if best_cpu is None else min(best_cpu, cpu)
    rheo = features["rheobase_sweep"]
    spikes = features["spikes_set"][rheo.name]
    first = spikes.iloc[0]
    out = {
        "seconds": best,
        "cpu_seconds": best_cpu,
        "spike_count": int(sum(len(s) for s in features["spikes_set"])),
        "rheobase_i": float(features["rheobase_i"]),
        "input_resistance": float(features["input_resistance"]),
        "tau_ms": float(features["tau"]) * 1e3,
        "sag": float(features["sag"]),
        "fi_fit_slope": float(features["fi_fit_slope"]),
        "v_baseline": float(features["v_baseline"]),
        "threshold_v": float(first["threshold_v"]),
        "peak_v": float(first["peak_v"]),
        "width_ms": float(first["width"]) * 1e3,
        "upstroke": float(first["upstroke"]),
        "downstroke": float(first["downstroke"]),
        "adapt": float(features["hero_sweep"]["adapt"]),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main(*sys.argv[1:4])
