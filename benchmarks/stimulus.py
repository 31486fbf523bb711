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

With ``--allensdk-python /work/venvs/allensdk/bin/python`` (a separate interpreter with ``allensdk==2.16.2``,
never a project dependency) the same arrays are also written to a temporary directory and
``benchmarks/_allensdk_stimulus_driver.py`` runs AllenSDK's ``DriftingGratings``, ``StaticGratings``,
``NaturalScenes`` and ``LocallySparseNoise`` on them (``--allensdk-cells`` cells; the receptive-field analysis,
10,000 shuffles per cell, on ``--allensdk-rf-cells`` cells). Printed: per metric, the largest absolute and
relative difference against ours on those cells (or the fraction equal, for preferred conditions) with a note
where the definitions differ on purpose, and the session speed ratio with AllenSDK's per-cell times scaled
linearly to ``--cells`` (said in the output).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
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
            pval[i, c] = stats.f_oneway(temp[:inter], temp[inter : inter + sweep + extra]).pvalue
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


# ours -> (AllenSDK peak column, how to map AllenSDK's value, note on the definition)
_PEAK_COLUMNS = {
    "drifting_gratings": [
        ("pref_dir_dg", "ori_dg", "ori", ""), ("pref_tf_dg", "tf_dg", "tf", ""),
        ("osi_dg", "osi_dg", None, "orthogonal/null found by angle (same as AllenSDK's index offsets for 8 directions)"),
        ("dsi_dg", "dsi_dg", None, ""), ("peak_dff_dg", "peak_dff_dg", None, ""), ("p_dg", "ptest_dg", None, ""),
        ("reliability_dg", "reliability_dg", None, "same frames at 30 Hz (ours: the response window at any rate; AllenSDK hard-codes 30:90)"),
        ("tfdi_dg", "tf_index_dg", None, "same with 5 TFs (ours: n - n_levels with the TFs present; AllenSDK hard-codes 5)"),
        ("run_mod_dg", "run_modulation_dg", None, ""), ("p_run_mod_dg", "p_run_dg", None, "")],
    "static_gratings": [
        ("pref_ori_sg", "ori_sg", "ori", ""), ("pref_sf_sg", "sf_sg", "sf", ""), ("pref_phase_sg", "phase_sg", "phase", ""),
        ("osi_sg", "osi_sg", None, ""), ("peak_dff_sg", "peak_dff_sg", None, ""), ("p_sg", "ptest_sg", None, ""),
        ("time_to_peak_sg", "time_to_peak_sg", None, ""),
        ("reliability_sg", "reliability_sg", None, "same frames for 7-frame sweeps (ours: the response window; AllenSDK hard-codes 28:42)"),
        ("sfdi_sg", "sf_index_sg", None, ""), ("run_mod_sg", "run_modulation_sg", None, ""), ("p_run_mod_sg", "p_run_sg", None, "")],
    "natural_scenes": [
        ("pref_image_ns", "scene_ns", None, ""), ("p_ns", "ptest_ns", None, ""), ("peak_dff_ns", "peak_dff_ns", None, ""),
        ("image_sel_ns", "image_selectivity_ns", None, "same with 118 images (ours: fractions of the images shown; AllenSDK /118)"),
        ("time_to_peak_ns", "time_to_peak_ns", None, ""),
        ("reliability_ns", "reliability_ns", None, "same frames for 7-frame sweeps (AllenSDK hard-codes 28:42)"),
        ("run_mod_ns", "run_modulation_ns", None, ""), ("p_run_mod_ns", "p_run_ns", None, "")],
    "locally_sparse_noise": [
        (m, m, None, "events, shuffle test (max-T vs Holm-Sidak), fits and chi-square re-implemented (lsn.py docstring)")
        for m in ("rf_chi2_lsn", "rf_area_on_lsn", "rf_center_on_x_lsn", "rf_center_on_y_lsn", "rf_area_off_lsn",
                  "rf_center_off_x_lsn", "rf_center_off_y_lsn", "rf_distance_lsn", "rf_overlap_index_lsn")],
}
_CATEGORICAL = {"pref_dir_dg", "pref_tf_dg", "pref_ori_sg", "pref_sf_sg", "pref_phase_sg", "pref_image_ns"}
STIMULI = ("drifting_gratings", "static_gratings", "natural_scenes", "locally_sparse_noise")


def abs_rel(a, b):
    """Largest absolute and relative difference over the entries finite in both, and how many NaN patterns differ."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    ok = np.isfinite(a) & np.isfinite(b)
    nan_mismatch = int(np.sum(np.isfinite(a) != np.isfinite(b)))
    if not ok.any():
        return float("nan"), float("nan"), nan_mismatch
    d = np.abs(a[ok] - b[ok])
    return float(d.max()), float(np.max(d / np.maximum(np.abs(b[ok]), 1e-12))), nan_mismatch


def _grid_values(table: pd.DataFrame, name: str, column: str) -> np.ndarray:
    """The value list AllenSDK's peak indices point into (its stimulus table after ``fillna(0)``)."""
    vals = np.unique(stimulus_block(table, name)[column].fillna(0.0).to_numpy(float))
    return vals.astype(int) if name == "drifting_gratings" else vals


def run_allensdk(python: str, s, a, table: pd.DataFrame, cells: int, rf_cells: int, ours_seconds: float, n_total: int) -> None:
    """Run AllenSDK on the first ``cells`` cells in ``python`` and print the metric differences and speed ratio."""
    driver = Path(__file__).with_name("_allensdk_stimulus_driver.py")
    sub = np.arange(min(cells, n_total))
    with tempfile.TemporaryDirectory(prefix="allensdk_stimulus_") as tmp:
        work = Path(tmp)
        np.save(work / "fc.npy", s.corrected[sub])
        np.save(work / "dff.npy", s.dff[sub])
        np.save(work / "speed.npy", s.speed)
        np.save(work / "lsn_template.npy", s.lsn_template)
        s.table.to_csv(work / "table.csv", index=False)
        (work / "params.json").write_text(json.dumps({"frame_rate_hz": 30.0, "rf_cells": int(min(rf_cells, len(sub))),
                                                      "stimuli": list(STIMULI)}))
        print(f"\nAllenSDK ({python}): {len(sub)} cells, receptive fields on {min(rf_cells, len(sub))} ...", flush=True)
        proc = subprocess.run([python, str(driver), str(work)], capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stdout[-2000:], proc.stderr[-4000:])
            raise SystemExit(f"AllenSDK driver failed (exit {proc.returncode})")
        ref = dict(np.load(work / "allensdk.npz"))
        timing = json.loads((work / "timings.json").read_text())
        peaks = {name: pd.read_csv(work / f"{name}_peak.csv") for name in STIMULI if (work / f"{name}_peak.csv").is_file()}

    rows = []
    for name in STIMULI:
        sw = a.results[name].sweeps
        starts = np.asarray(sw.starts, dtype=int)
        rstart = ref[f"{name}/start"]
        common, oi, ri = np.intersect1d(starts, rstart, return_indices=True)
        note = "" if len(common) == len(rstart) else f"{len(rstart) - len(common)} AllenSDK trials lack a full window in ours"
        d = abs_rel(sw.mean_response[oi][:, sub], ref[f"{name}/msr"][ri])
        rows.append((f"{name}: mean sweep response", *d, note))
        d = abs_rel(sw.p_value[oi][:, sub], ref[f"{name}/pval"][ri])
        rows.append((f"{name}: trial p-value", *d, ""))
        if name == "drifting_gratings":
            resp = ref[f"{name}/response"]
            tfs = _grid_values(table, name, "temporal_frequency")
            r = resp[:, 1:, : len(sub), 0] if tfs[0] == 0 else resp[:, :, : len(sub), 0]
            ours = a.results[name].response[..., 0][:, :, sub]
            rows.append((f"{name}: condition means", *abs_rel(ours, r), ""))
        if name == "locally_sparse_noise":
            resp = ref[f"{name}/response"]  # rows x cols x cells+1 x (on, off)
            lsn = a.results[name]
            rows.append((f"{name}: ON mean-response map", *abs_rel(lsn.mean_on[sub], np.moveaxis(resp[:, :, : len(sub), 0], 2, 0)), ""))
            rows.append((f"{name}: OFF mean-response map", *abs_rel(lsn.mean_off[sub], np.moveaxis(resp[:, :, : len(sub), 1], 2, 0)), ""))
        peak = peaks.get(name)
        if peak is None:
            continue
        n_rows = len(peak)
        m = a.metrics.iloc[np.arange(n_rows)]
        for ours_col, sdk_col, mapping, why in _PEAK_COLUMNS[name]:
            theirs = peak[sdk_col].to_numpy(float)
            if mapping is not None:
                vals = _grid_values(table, name, {"ori": "orientation", "tf": "temporal_frequency", "sf": "spatial_frequency",
                                                  "phase": "phase"}[mapping])
                theirs = np.where(np.isfinite(theirs), vals[np.nan_to_num(theirs).astype(int)], np.nan)
            mine = m[ours_col].to_numpy(float)
            if ours_col in _CATEGORICAL:
                rows.append((f"{ours_col} (equal)", float(np.mean(mine == theirs)), float("nan"), 0, why))
            else:
                rows.append((ours_col, *abs_rel(mine, theirs), why))

    print(f"\n  {'metric':44s} {'max abs diff':>13s} {'max rel diff':>13s} {'NaN differ':>10s}  note")
    for label, da, dr, nan_diff, why in rows:
        if np.isnan(da) and not nan_diff and not why:
            why = "NaN in both for every compared cell (too few running or stationary trials)"
        if label.endswith("(equal)"):
            print(f"  {label:44s} {da:12.0%}  {'':13s} {'':>10s}  {why}")
        else:
            print(f"  {label:44s} {da:13.3g} {dr:13.3g} {nan_diff:10d}  {why}")

    sec = timing["seconds"]
    per_cell = sum(sec[n] for n in STIMULI if n in sec) / timing["cells"]
    rf_per_cell = sec.get("receptive_fields", 0.0) / max(timing["rf_cells"], 1)
    total = (per_cell + rf_per_cell) * n_total
    print(f"\nAllenSDK times (s): " + ", ".join(f"{k} {v:.1f}" for k, v in sec.items())
          + f" on {timing['cells']} cells (receptive fields on {timing['rf_cells']})")
    print(f"AllenSDK session estimate, scaled linearly to {n_total} cells: {per_cell * n_total:.0f} s stimulus classes + "
          f"{rf_per_cell * n_total:.0f} s receptive fields (10,000 shuffles) = {total:.0f} s")
    print(f"ours (whole session, measured): {ours_seconds:.1f} s -> {total / ours_seconds:.0f}x faster")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=300)
    ap.add_argument("--shuffles", type=int, default=10_000)
    ap.add_argument("--lsn-frames", type=int, default=8880)
    ap.add_argument("--ref-cells", type=int, default=10, help="cells the reference loops run on (scaled to --cells)")
    ap.add_argument("--ref-shuffles", type=int, default=20, help="RF shuffles the reference loop runs (scaled)")
    ap.add_argument("--allensdk-python", help="interpreter with allensdk==2.16.2: also compare with AllenSDK itself")
    ap.add_argument("--allensdk-cells", type=int, default=10, help="cells AllenSDK's stimulus classes run on (scaled)")
    ap.add_argument("--allensdk-rf-cells", type=int, default=2, help="cells AllenSDK's receptive-field analysis runs on (scaled)")
    ap.add_argument("--skip-port", action="store_true", help="skip the in-process reference loops")
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

    table = validate_stimulus_table(s.table)
    if args.allensdk_python:
        run_allensdk(args.allensdk_python, s, a, table, args.allensdk_cells, args.allensdk_rf_cells, ours, args.cells)
    if args.skip_port:
        return 0
    # reference on a subset of cells, scaled
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
