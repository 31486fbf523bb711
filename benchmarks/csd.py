"""Current source density benchmark: speed, memory and agreement with AllenSDK on a synthetic Neuropixels probe.

Usage::

    python benchmarks/csd.py                                   # 384-channel probe, 120 s LFP, 150 flashes
    python benchmarks/csd.py --quick                           # 60 s LFP, 50 flashes
    python benchmarks/csd.py --allensdk-python /work/venvs/allensdk/bin/python --allensdk-trials 20

The probe comes from :mod:`data_fixtures.ecephys` (384 channels in 4 staggered columns, every second channel in the
LFP, int16 at 2500 Hz, flashes evoking a known sink and source). Printed, side by side in the same process:

1. ``current_source_density`` streaming the windows around the onsets from the file, against the same computation
   on the LFP loaded whole first (the reference), as time ratio and peak traced memory (``tracemalloc``) ratio;
2. the recovered sink depth against the truth;
3. with ``--allensdk-python``, AllenSDK 2.16.2's own functions (``extract_trial_windows``, ``accumulate_lfp_data``,
   ``filter_lfp_channels``, ``interp_channel_locs``, ``compute_csd``) on the first ``--allensdk-trials`` flashes
   in that interpreter (``_allensdk_csd_driver.py``): time ratio (per trial), memory ratio, sink depth, and the
   correlation of the two CSDs on common virtual electrodes (AllenSDK's sign flipped; no smoothing on ours).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data_fixtures import ecephys as fixture  # noqa: E402
from release_platform.ecephys import csd  # noqa: E402


def _probe(root: Path, lfp_s: float, n_flashes: int):
    params = fixture.EcephysParams.realistic(duration_s=lfp_s + 5.0, lfp_duration_s=lfp_s, n_units=2, n_orphan_clusters=0,
                                             n_flashes=n_flashes, flash_period_s=(lfp_s - 2.0) / n_flashes)
    spec = fixture.generate_ecephys_session(root, ecephys_session_id=1, probe_ids=(11,), channel_id_start=1000,
                                            unit_id_start=2000, params=params, seed=1)
    probe = spec.probes[0]
    channels = csd.CsdChannels.from_records(fixture.lfp_channel_records(probe))
    onsets, _ = csd.stimulus_onsets(pd.read_csv(spec.stimulus_table_path), csd.CsdParams())
    return params, probe, channels, onsets


def _measure(fn):
    tracemalloc.start()
    t0 = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return out, seconds, peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--allensdk-python")
    ap.add_argument("--allensdk-trials", type=int, default=20)
    args = ap.parse_args()
    lfp_s, n_flashes = (60.0, 50) if args.quick else (120.0, 150)
    with tempfile.TemporaryDirectory(prefix="csd_bench_") as tmp:
        tmp = Path(tmp)
        params, probe, channels, onsets = _probe(tmp / "data", lfp_s, n_flashes)
        truth = fixture.csd_truth(params)
        lfp = csd.LfpSource(path=probe.lfp_path, rate=params.lfp_sampling_rate_hz, timestamps=None,
                            conversion=params.amplitude_scale_factor)
        mb = probe.lfp_path.stat().st_size / 1e6
        print(f"LFP {lfp_s:g} s x {len(channels.ids)} channels ({mb:.1f} MB int16), {len(onsets)} flashes")

        ours, t_ours, m_ours = _measure(lambda: csd.current_source_density(lfp, channels, onsets))

        def whole():
            with h5py.File(probe.lfp_path, "r") as f:
                data = f["data"][()]
            with h5py.File(tmp / "whole.h5", "w") as g:  # the reference: the LFP in memory, then the same computation
                g.create_dataset("data", data=data)
            return csd.current_source_density(csd.LfpSource(path=tmp / "whole.h5", rate=lfp.rate, timestamps=None,
                                                            conversion=lfp.conversion), channels, onsets,
                                              csd.CsdParams(block_mb=2.0 * data.size * 8 / 1e6))
        ref, t_ref, m_ref = _measure(whole)
        print(f"streamed: {t_ours:.2f} s, peak {m_ours / 1e6:.1f} MB | LFP loaded whole: {t_ref:.2f} s, peak {m_ref / 1e6:.1f} MB"
              f" | time ratio {t_ours / t_ref:.2f}, memory ratio {m_ours / m_ref:.3f}; same CSD: {np.allclose(ours.csd, ref.csd)}")
        t_sink, z_sink = ours.sink()
        print(f"sink: {z_sink:.1f} um at {t_sink * 1000:.0f} ms (truth {truth['sink_vertical_um']:.1f} um; error "
              f"{abs(z_sink - truth['sink_vertical_um']):.1f} um, channel row spacing {params.channel_spacing_um:g} um)")

        if args.allensdk_python:
            n = min(args.allensdk_trials, len(onsets))
            mine, t_mine, m_mine = _measure(lambda: csd.current_source_density(
                lfp, channels, onsets[:n], csd.CsdParams(smoothing_sigma_um=0.0)))
            job = dict(lfp=str(probe.lfp_path), onsets=onsets[:n].tolist(), rate=lfp.rate, pre=0.1, post=0.25,
                       good=(mine.channel_status == "used").tolist(), x=channels.horizontal_um.tolist(),
                       y=channels.vertical_um.tolist(), volts_per_bit=lfp.conversion, filter_cuts=[5.0, 150.0],
                       filter_order=5, spacing_um=mine.spacing_um)
            (tmp / "job.json").write_text(json.dumps(job))
            subprocess.run([args.allensdk_python, str(Path(__file__).with_name("_allensdk_csd_driver.py")), str(tmp)], check=True)
            ref = np.load(tmp / "allensdk.npz")
            theirs = -ref["csd"].T  # AllenSDK: channels x time, +d2phi/dz2
            k = min(theirs.shape[0], mine.csd.shape[0])
            common = np.intersect1d(np.round(ref["depths_um"], 6), np.round(mine.depths_um, 6))
            a = theirs[:k, np.searchsorted(np.round(ref["depths_um"], 6), common)]
            b = mine.csd[:k, np.searchsorted(np.round(mine.depths_um, 6), common)]
            inner = slice(2, -2)  # edges: AllenSDK fills 0 outside the channels' hull
            r = np.corrcoef(a[:, inner].ravel(), b[:, inner].ravel())[0, 1]
            za = ref["depths_um"][np.unravel_index(np.argmin(theirs), theirs.shape)[1]]
            print(f"AllenSDK ({n} trials): {float(ref['seconds']):.2f} s, peak {float(ref['peak_bytes']) / 1e6:.1f} MB | ours "
                  f"{t_mine:.2f} s, peak {m_mine / 1e6:.1f} MB | time ratio {t_mine / float(ref['seconds']):.3f}, memory ratio "
                  f"{m_mine / float(ref['peak_bytes']):.3f}")
            print(f"AllenSDK sink {za:.1f} um, ours {mine.sink()[1]:.1f} um; correlation of the CSDs (inner electrodes) {r:.4f}")


if __name__ == "__main__":
    main()
