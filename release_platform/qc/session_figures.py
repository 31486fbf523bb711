"""The QC figures of one session, read from what the pipeline wrote, through the platform's readers.

* :func:`ophys_plane_figures`: one imaging plane's behavior-ophys NWB file (ROIs, projections, every trace set,
  motion offsets; :mod:`release_platform.nwb.readers`), its dF/F file for sigma (:mod:`release_platform.ophys.io`)
  and, when present, its stimulus analysis file (tuning curves, receptive fields);
* :func:`behavior_figures`: a behavior (or behavior-ophys) NWB file's licks, rewards, running and trials;
* :func:`ecephys_figures`: an ecephys session NWB file (units, electrodes, stimulus onsets) and its probes' LFP files;
* :func:`icephys_figures`: a patch-clamp cell's NWB file (:mod:`release_platform.icephys.reader`) and its sweep table.

Each returns the :class:`~release_platform.qc.figures.Picture` list it wrote under ``out_dir``; traces are read
only for the ROIs drawn, and ROI brightness is averaged in frame blocks, so memory does not grow with recording length.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Mapping, Optional

import numpy as np
import pandas as pd

from release_platform.qc import figures
from release_platform.qc.figures import Picture

__all__ = ["ophys_plane_figures", "behavior_figures", "ecephys_figures", "icephys_figures", "roi_flags",
           "TRACE_SETS", "N_TRACED", "LFP_SNIPPET_S"]

#: Trace sets drawn for each chosen ROI, in order (the NWB file's names).
TRACE_SETS = ("roi", "neuropil", "demixed", "neuropil_corrected", "dff")
N_TRACED = 5  # brightest and most-flagged ROIs drawn each
N_CELLS = 4  # tuning curves / receptive fields / units drawn
LFP_SNIPPET_S = 2.0
BLOCK_FRAMES = 4096
TRIAL_OUTCOMES = ("hit", "miss", "false_alarm", "correct_reject", "aborted", "auto_rewarded")


def roi_flags(table: pd.DataFrame) -> np.ndarray:
    """Flags per ROI of a cell specimen table: not valid, one per exclusion label, and a non-finite r."""
    flags = (~table["valid_roi"].astype(bool)).astype(np.int64).to_numpy()
    if "exclusion_labels" in table:
        flags = flags + table["exclusion_labels"].map(lambda v: len(v) if isinstance(v, (list, tuple, np.ndarray)) else 0).to_numpy()
    if "r" in table:
        flags = flags + (~np.isfinite(table["r"].to_numpy(dtype=np.float64))).astype(np.int64)
    return flags


def _mean_per_column(dataset, block: int = BLOCK_FRAMES) -> np.ndarray:
    """Mean over time of each column of a T x N dataset, read in frame blocks (NaN-aware)."""
    n_frames, n = dataset.shape
    total, count = np.zeros(n), np.zeros(n)
    for start in range(0, n_frames, block):
        chunk = np.asarray(dataset[start : start + block], dtype=np.float64)
        ok = np.isfinite(chunk)
        total += np.where(ok, chunk, 0.0).sum(axis=0)
        count += ok.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _columns(dataset, rows: list[int]) -> np.ndarray:
    """The given ROI columns of a T x N dataset as ROIs x T (h5py wants increasing indices)."""
    if not rows:
        return np.zeros((0, dataset.shape[0]))
    order = np.argsort(rows)
    sorted_rows = [rows[i] for i in order]
    data = np.asarray(dataset[:, sorted_rows], dtype=np.float64).T
    out = np.empty_like(data)
    out[order] = data
    return out


def ophys_plane_figures(nwb_path: str | os.PathLike, out_dir: str | os.PathLike, *, dff_path: Optional[str | os.PathLike] = None,
                        analysis_path: Optional[str | os.PathLike] = None, label: str = "") -> list[Picture]:
    """ROI contours, traces of the brightest and most-flagged ROIs, r / sigma(dF/F) histograms, motion offsets and,
    with ``analysis_path``, tuning curves and receptive fields of one imaging plane."""
    from release_platform.nwb import readers
    from release_platform.ophys.io import SIGMA_DFF_DATASET, read_vector

    out_dir = Path(out_dir)
    title = label or Path(nwb_path).stem
    table = readers.read_roi_table(nwb_path)
    rois = readers.read_rois(nwb_path)
    projections = readers.read_projections(nwb_path)
    average = projections.get("average_projection", next(iter(projections.values())) if projections else None)
    if average is None:
        raise ValueError(f"{nwb_path}: no projection image to draw the ROIs on")
    pictures = [figures.roi_contours(average, [(r.x, r.y, np.asarray(r.mask, dtype=bool)) for r in rois],
                                     [r.valid for r in rois], out_dir / "roi_contours.png", title=title)]

    flags = roi_flags(table)
    with readers.open_nwb_traces(nwb_path, "roi") as raw:
        brightness = _mean_per_column(raw.data)
        by_id = {rid: i for i, rid in enumerate(raw.roi_ids)}
    order = [by_id[str(i)] for i in table.index]  # NWB series columns follow the ROI table; map anyway
    valid = table["valid_roi"].to_numpy(dtype=bool)
    bright, flagged = figures.brightest_and_flagged(brightness[order], flags, valid, N_TRACED)
    chosen = bright + flagged
    labels = ["brightest"] * len(bright) + [f"{int(flags[i])} flag(s)" for i in flagged]
    traces, timestamps = {}, None
    for name in TRACE_SETS:
        with readers.open_nwb_traces(nwb_path, name) as series:
            col = {rid: i for i, rid in enumerate(series.roi_ids)}
            traces[name] = _columns(series.data, [col[str(table.index[i])] for i in chosen])
            timestamps = series.timestamps if timestamps is None else timestamps
    pictures.append(figures.roi_traces(timestamps, traces, [str(table.index[i]) for i in chosen], labels,
                                       out_dir / "roi_traces.png", title=f"{title}: traces"))

    r = table["r"].to_numpy(dtype=np.float64) if "r" in table else np.full(len(table), np.nan)
    sigma = read_vector(dff_path, SIGMA_DFF_DATASET) if dff_path is not None else np.full(0, np.nan)
    pictures.append(figures.ratio_and_noise_histograms(r, sigma, out_dir / "ratio_and_noise_histograms.png", title=title))

    motion = readers.read_motion_offsets(nwb_path)
    times = timestamps[: len(motion)] if len(motion) <= len(timestamps) else motion["frame_index"].to_numpy(dtype=float)
    pictures.append(figures.motion_offsets(times, motion["x"].to_numpy(), motion["y"].to_numpy(), out_dir / "motion_offsets.png",
                                           title=f"{title}: motion offsets"))
    if analysis_path is not None and Path(analysis_path).exists():
        pictures += _stimulus_figures(analysis_path, out_dir, title)
    return pictures


def _stimulus_figures(analysis_path, out_dir: Path, title: str) -> list[Picture]:
    from release_platform.stimulus.session import read_analysis_maps

    maps = read_analysis_maps(analysis_path)
    ids = maps["roi_ids"]
    out = []
    grating = next((g for name, g in sorted(maps["gratings"].items()) if "orientation" in g["axes"]), None)
    if grating is not None and ids:
        axes, response = grating["axes"], grating["response"]
        names = list(axes)
        o = names.index("orientation")
        mean = np.moveaxis(response[..., 0], o, 0)  # orientation x other conditions... x N
        sem = np.moveaxis(response[..., 1], o, 0)
        n_dir = mean.shape[0]
        flat, flat_sem = mean.reshape(n_dir, -1, mean.shape[-1]), sem.reshape(n_dir, -1, sem.shape[-1])
        with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # cells without any finite response: NaN, ranked last
            peak = np.nanmax(flat, axis=(0, 1))
            selectivity = (peak - np.nanmean(flat, axis=(0, 1))) / np.abs(peak)
        cells = [int(i) for i in np.argsort(-np.nan_to_num(selectivity, nan=-np.inf))[:N_CELLS]]
        best_other = [int(np.nanargmax(np.nan_to_num(flat[:, :, c], nan=-np.inf).max(axis=0))) for c in cells]
        curves = np.array([flat[:, k, c] for c, k in zip(cells, best_other)])
        errors = np.array([flat_sem[:, k, c] for c, k in zip(cells, best_other)])
        out.append(figures.tuning_curves(axes["orientation"], curves, [ids[c] for c in cells], out_dir / "tuning_curves.png",
                                         sem=errors, title=f"{title}: tuning curves of the most selective cells"))
    noise = next(iter(v for _, v in sorted(maps["sparse_noise"].items())), None)
    if noise is not None and ids:
        on, off = noise["mean_on"], noise["mean_off"]
        strength = np.nanmax(np.abs(np.concatenate([on.reshape(len(on), -1), off.reshape(len(off), -1)], axis=1)), axis=1)
        cells = [int(i) for i in np.argsort(-np.nan_to_num(strength, nan=-np.inf))[:N_CELLS]]
        out.append(figures.receptive_fields(on[cells], off[cells], [ids[c] for c in cells], out_dir / "receptive_fields.png",
                                            title=f"{title}: receptive fields"))
    return out


def behavior_figures(nwb_path: str | os.PathLike, out_dir: str | os.PathLike, *, label: str = "") -> list[Picture]:
    """Licks, rewards and running over the session, and trial outcome counts."""
    from release_platform.nwb import readers

    out_dir = Path(out_dir)
    title = label or Path(nwb_path).stem
    licks, rewards, running = readers.read_licks(nwb_path), readers.read_rewards(nwb_path), readers.read_running_speed(nwb_path)
    trials = readers.read_trials(nwb_path)
    outcomes = {k: int(pd.Series(trials[k]).fillna(False).astype(bool).sum()) for k in TRIAL_OUTCOMES if k in trials}
    return [
        figures.behavior_timeline(licks["timestamps"].to_numpy(), rewards["timestamps"].to_numpy(), running["timestamps"].to_numpy(),
                                  running["speed"].to_numpy(), out_dir / "behavior_timeline.png", title=f"{title}: licks, rewards, running"),
        figures.trial_outcomes(outcomes, out_dir / "trial_outcomes.png", title=f"{title}: {len(trials)} trials"),
    ]


def ecephys_figures(session_nwb: str | os.PathLike, out_dir: str | os.PathLike, *, lfp_paths: Mapping[str, str] = {},
                    label: str = "") -> list[Picture]:
    """Per probe: firing rate vs depth by quality, a raster of its most active good units around stimulus onsets,
    their mean waveforms; and a short LFP snippet of every probe file in ``lfp_paths`` (probe id -> path)."""
    from release_platform.nwb import readers

    out_dir = Path(out_dir)
    title = label or Path(session_nwb).stem
    units = readers.read_units(session_nwb)
    electrodes = readers.read_electrodes(session_nwb)
    depth_of = electrodes["probe_vertical_position"] if "probe_vertical_position" in electrodes else pd.Series(dtype=float)
    presentations = readers.read_stimulus_presentations(session_nwb)
    onsets = np.sort(presentations["start_time"].to_numpy(dtype=np.float64))[:100] if "start_time" in presentations else np.zeros(0)
    pictures = []
    for probe_id in sorted(units["probe_id"].unique()) if "probe_id" in units else []:
        pu = units[units["probe_id"] == probe_id]
        depth = depth_of.reindex(pu["peak_channel_id"].to_numpy()).to_numpy(dtype=np.float64)
        quality = pu["quality"].astype(str).to_numpy()
        rate = pu["firing_rate"].to_numpy(dtype=np.float64) if "firing_rate" in pu else np.array([len(s) for s in pu["spike_times"]], float)
        pictures.append(figures.firing_rate_vs_depth(depth, rate, quality, out_dir / f"probe_{probe_id}_firing_rate_vs_depth.png",
                                                     title=f"{title}: probe {probe_id}"))
        counts = np.array([len(s) for s in pu["spike_times"]])
        good = np.flatnonzero(quality == "good")
        pool = good if good.size else np.arange(len(pu))
        top = [int(i) for i in pool[np.argsort(-counts[pool])][:N_CELLS]]
        unit_ids = [str(pu.index[i]) for i in top]
        pictures.append(figures.spike_raster([pu["spike_times"].iloc[i] for i in top], unit_ids, onsets,
                                             out_dir / f"probe_{probe_id}_spike_raster.png", title=f"{title}: probe {probe_id}"))
        if "waveform_mean" in pu:
            waves = []
            for i in top:
                wf = np.asarray(pu["waveform_mean"].iloc[i], dtype=np.float64)  # samples x channels
                ptp = np.nan_to_num(np.nanmax(wf, axis=0) - np.nanmin(wf, axis=0), nan=-1.0)
                waves.append(wf[:, int(np.argmax(ptp))])
            pictures.append(figures.mean_waveforms(waves, unit_ids, None, out_dir / f"probe_{probe_id}_mean_waveforms.png",
                                                   title=f"{title}: probe {probe_id}"))
    for probe_id, path in sorted(lfp_paths.items()):
        with readers.open_lfp(path) as lfp:
            t_all = lfp.timestamps
            n = int(np.searchsorted(np.asarray(t_all[: min(len(t_all), 1_000_000)]), t_all[0] + LFP_SNIPPET_S))
            n = max(n, 2)
            volts = lfp.volts(slice(0, n))
            times = np.asarray(t_all[:n], dtype=np.float64)
            pictures.append(figures.lfp_snippet(times, volts, [str(c) for c in lfp.electrode_ids], out_dir / f"probe_{probe_id}_lfp.png",
                                                title=f"{title}: probe {probe_id} LFP"))
    return pictures


def icephys_figures(nwb_path: str | os.PathLike, sweep_table: pd.DataFrame, out_dir: str | os.PathLike, *, label: str = "") -> list[Picture]:
    """Current-clamp sweeps per stimulus type (at most 8 each) and the f-I curve of the long squares."""
    from release_platform.icephys.reader import read_cell

    out_dir = Path(out_dir)
    title = label or Path(nwb_path).stem
    recording = read_cell(nwb_path)
    by_type: dict[str, list] = {}
    for sweep in recording.sweeps:
        if sweep.clamp_mode != "current":
            continue
        group = by_type.setdefault(sweep.stimulus_type or sweep.stimulus_name, [])
        if len(group) < 8:
            group.append((sweep.starting_time_s + np.arange(len(sweep.response)) / sweep.rate_hz, sweep.response))
    long_sq = sweep_table[(sweep_table["stimulus_type"] == "Long Square") & (sweep_table["clamp_mode"] == "current")
                          & sweep_table["stimulus_duration"].gt(0)]
    rate = long_sq["spike_count"].to_numpy(dtype=np.float64) / long_sq["stimulus_duration"].to_numpy(dtype=np.float64)
    return [
        figures.sweeps_by_stimulus_type(by_type, out_dir / "sweeps_by_stimulus_type.png", title=f"{title}: current-clamp sweeps"),
        figures.fi_curve(long_sq["stimulus_amplitude"].to_numpy(dtype=np.float64), rate, out_dir / "fi_curve.png",
                         title=f"{title}: f-I curve"),
    ]
