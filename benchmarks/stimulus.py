"""Observatory analysis benchmark: a full synthetic session against per-cell, per-trial reference loops.

Usage::

    python benchmarks/stimulus.py                         # 300 cells, every stimulus, 10,000 RF shuffles
    python benchmarks/stimulus.py --cells 100 --shuffles 1000 --lsn-frames 4000

The session (``data_fixtures.stimulus.analysis_session``): spontaneous, drifting gratings (8 directions x 5
TFs, 8 repeats), natural movie one (10 repeats), static gratings (8 repeats), natural scenes (10 repeats),
locally sparse noise (16 x 28, ``--lsn-frames`` frames), spontaneous; 30 Hz. Our analysis runs whole
(every stimulus, running tuning with 200 shuffles, RF shuffle test with ``--shuffles``). The reference is a
direct port of the AllenSDK loops (one trial and one cell at a time: the percent dF/F window, its mean and
``scipy.stats.f_oneway``; pandas condition means; the 8-direction OSI/DSI index arithmetic; the per-cell
receptive-field shuffle loop computing a response-triggered average per shuffle), run in the same process
on a subset of cells (and, for the RF loop, of shuffles) and scaled linearly to the full session; the output
says so. Printed: per-stage times, speed ratios, and the largest relative differences where the definitions
agree (mean sweep responses, trial p-values, condition means, OSI, DSI, preferred direction).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_fixtures.stimulus import AnalysisDesign, analysis_session  # noqa: E402
from release_platform.stimulus import analyze_session, core  # noqa: E402
from release_platform.stimulus.table import stimulus_block, validate_stimulus_table  # noqa: E402


def ref_sweep_response(fc, starts, sweep, inter, extra):
    """AllenSDK ``get_sweep_response`` + ``get_mean_sweep_response``: one trial, one cell at a time."""
    msr = np.empty((len(starts), fc.shape[0]))
    pval = np.empty_like(msr)
    for i, s in enumerate(starts):
        for c in range(fc.shape[0]):
            temp = fc[c, s - inter : s + sweep + inter]
            temp = 100.0 * (temp / np.mean(temp[:inter]) - 1.0)
            msr[i, c] = temp[inter : inter + sweep + extra].mean()
            pval[i, c] = stats.f_oneway(temp[:inter], temp[inter:]).pvalue
    return msr, pval


def ref_dg_indices(msr, ori, tf):
    """AllenSDK drifting-grating response table and index arithmetic (8 directions, index offsets)."""
    frame = pd.DataFrame(msr)
    frame["ori"], frame["tf"] = ori, tf
    oris, tfs = np.sort(np.unique(ori[np.isfinite(ori)])), np.sort(np.unique(tf[np.isfinite(tf) & (tf > 0)]))
    resp = np.full((len(oris), len(tfs), msr.shape[1]), np.nan)
    for i, o in enumerate(oris):
        for j, t in enumerate(tfs):
            resp[i, j] = frame[(frame.ori == o) & (frame.tf == t)].drop(columns=["ori", "tf"]).mean().to_numpy()
    osi, dsi, pref = [], [], []
    for c in range(msr.shape[1]):
        r = resp[:, :, c]
        pi, pj = np.unravel_index(np.argmax(r), r.shape)
        p = r[pi, pj]
        orth = 0.5 * (r[(pi + 2) % 8, pj] + r[(pi - 2) % 8, pj])
        null = r[(pi + 4) % 8, pj]
        osi.append((p - orth) / (p + orth))
        dsi.append((p - null) / (p + null))
        pref.append(oris[pi])
    return resp, np.array(osi), np.array(dsi), np.array(pref)


def ref_rf_shuffles(events, design, n_shuffles, rng):
    """AllenSDK-style per-cell shuffle loop: a response-triggered average per shuffle."""
    obs = events @ design
    ge = np.zeros(design.shape[1])
    for _ in range(n_shuffles):
        ge += rng.permutation(events) @ design >= obs
    return ge / n_shuffles


def rel_diff(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    ok = np.isfinite(a) & np.isfinite(b)
    return float(np.max(np.abs(a[ok] - b[ok]) / np.maximum(np.abs(b[ok]), 1e-12))) if ok.any() else float("nan")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=300)
    ap.add_argument("--shuffles", type=int, default=10_000)
    ap.add_argument("--lsn-frames", type=int, default=8880)
    ap.add_argument("--ref-cells", type=int, default=10, help="cells the reference loops run on (scaled to --cells)")
    ap.add_argument("--ref-shuffles", type=int, default=20, help="RF shuffles the reference loop runs (scaled)")
    args = ap.parse_args(argv)
    design = AnalysisDesign(lsn_frames=args.lsn_frames)
    t0 = time.perf_counter()
    s = analysis_session(args.cells, seed=5, design=design)
    print(f"session: {args.cells} cells x {s.corrected.shape[1]} frames ({s.corrected.shape[1] / 30 / 60:.1f} min at 30 Hz), "
          f"generated in {time.perf_counter() - t0:.1f} s")

    t0 = time.perf_counter()
    a = analyze_session(s.corrected, s.dff, np.arange(args.cells), s.table, 30.0, speed=s.speed, lsn_template=s.lsn_template,
                        n_shuffles=args.shuffles, seed=1)
    ours = time.perf_counter() - t0
    print(f"ours: whole session (every stimulus, running tuning, {args.shuffles} RF shuffles): {ours:.1f} s")

    # reference on a subset of cells, scaled
    table = validate_stimulus_table(s.table)
    sub = np.arange(min(args.ref_cells, args.cells))
    scale = args.cells / len(sub)
    ref_total = 0.0
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in ("drifting_gratings", "static_gratings", "natural_scenes", "locally_sparse_noise"):
            block = stimulus_block(table, name)
            sw = a.results[name].sweeps
            w = sw.windows
            starts = sw.starts
            t0 = time.perf_counter()
            msr, pval = ref_sweep_response(s.corrected[sub], starts, w.sweep, w.inter, w.extra)
            t_ref = (time.perf_counter() - t0) * scale
            ref_total += t_ref
            rows.append((f"{name} sweep responses", t_ref, rel_diff(sw.mean_response[:, sub], msr), rel_diff(sw.p_value[:, sub], pval)))
            if name == "drifting_gratings":
                kept = block.iloc[sw.trial_index]
                t0 = time.perf_counter()
                resp, osi, dsi, pref = ref_dg_indices(msr, kept.orientation.to_numpy(float), kept.temporal_frequency.to_numpy(float))
                ref_total += (time.perf_counter() - t0) * scale
                m = a.metrics.iloc[sub]
                ours_resp = a.results[name].response[..., 0][:, :, sub]
                print(f"  drifting gratings, {len(sub)} cells: condition means rel diff {rel_diff(ours_resp, resp):.2e}, "
                      f"OSI {rel_diff(m.osi_dg, osi):.2e}, DSI {rel_diff(m.dsi_dg, dsi):.2e}, "
                      f"preferred direction equal {np.mean(m.pref_dir_dg.to_numpy() == pref):.0%}")
        lsn = a.results["locally_sparse_noise"]
        frames = stimulus_block(table, "locally_sparse_noise")["frame"].to_numpy(int)
        design_m = np.concatenate([(s.lsn_template[frames] == 255).reshape(len(frames), -1),
                                   (s.lsn_template[frames] == 0).reshape(len(frames), -1)], axis=1).astype(float)
        t0 = time.perf_counter()
        ref_rf_shuffles(lsn.events[:, 0].astype(float), design_m, args.ref_shuffles, np.random.default_rng(0))
        t_rf = (time.perf_counter() - t0) * (args.shuffles / args.ref_shuffles) * args.cells
        ref_total += t_rf
        rows.append(("receptive-field shuffles", t_rf, float("nan"), float("nan")))
    print(f"reference loops (run on {len(sub)} cells and {args.ref_shuffles} RF shuffles of 1 cell, scaled linearly):")
    print(f"  {'stage':32s} {'reference s':>12s} {'msr rel diff':>13s} {'p rel diff':>11s}")
    for name, t_ref, d1, d2 in rows:
        print(f"  {name:32s} {t_ref:12.1f} {d1:13.2e} {d2:11.2e}")
    print(f"session: reference {ref_total:.0f} s vs ours {ours:.1f} s -> {ref_total / ours:.0f}x faster")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
