"""One session's observatory analysis: every stimulus present, running tuning, one metrics table.

:func:`analyze_session` takes arrays (a notebook or the standalone module passes what they read);
:func:`write_analysis` writes the HDF5 of response arrays and sweep tables atomically.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from typing import Any, Sequence

import h5py
import numpy as np
import pandas as pd

from release_platform.errors import InputError
from release_platform.storage import atomic_path
from release_platform.stimulus import gratings, lsn, movies, running
from release_platform.stimulus.table import (
    DRIFTING_GRATINGS, LSN_STIMULI, NATURAL_MOVIES, NATURAL_SCENES, STATIC_GRATINGS, select_stimuli, stimulus_block,
    validate_stimulus_table,
)

__all__ = ["SessionAnalysis", "analyze_session", "write_analysis", "read_analysis_maps", "metric_columns"]

METRICS_BY_STIMULUS = {
    DRIFTING_GRATINGS: ("pref_dir_dg", "pref_tf_dg", "osi_dg", "dsi_dg", "g_osi_dg", "g_dsi_dg", "p_dg", "peak_dff_dg",
                        "reliability_dg", "tfdi_dg", "run_mod_dg", "p_run_mod_dg"),
    STATIC_GRATINGS: ("pref_ori_sg", "pref_sf_sg", "pref_phase_sg", "osi_sg", "g_osi_sg", "p_sg", "peak_dff_sg",
                      "time_to_peak_sg", "reliability_sg", "sfdi_sg", "run_mod_sg", "p_run_mod_sg"),
    NATURAL_SCENES: ("pref_image_ns", "p_ns", "peak_dff_ns", "image_sel_ns", "time_to_peak_ns", "reliability_ns",
                     "run_mod_ns", "p_run_mod_ns"),
    **{name: (f"peak_frame_{s}", f"reliability_{s}") for name, s in NATURAL_MOVIES.items()},
    **{name: lsn.LSN_METRICS for name in LSN_STIMULI},
}
RUNNING_METRICS = tuple(f"{m}_{e}" for e in ("sp", "vis") for m in ("speed_max", "speed_min", "ptest", "mod", "p_mod"))


def metric_columns(stimuli: Sequence[str], with_running: bool) -> list[str]:
    """Metric column names, in order, for the analysed stimuli (and running tuning)."""
    cols: list[str] = []
    for s in stimuli:
        cols += [c for c in METRICS_BY_STIMULUS[s] if c not in cols]
    return cols + (list(RUNNING_METRICS) if with_running else [])


@dataclasses.dataclass
class SessionAnalysis:
    """``metrics``: one row per ROI (``roi_id`` then the metric columns); ``results``: per stimulus;
    ``speed_tuning``: per epoch; ``messages``: what was left out and why."""

    metrics: pd.DataFrame
    results: dict[str, Any]
    speed_tuning: dict[str, running.SpeedTuning]
    mean_running_speed: float
    frame_rate_hz: float
    messages: list[str]


def _check_arrays(corrected, dff, roi_ids, speed, frame_rate_hz, entity):
    corrected = np.asarray(corrected, dtype=float)
    dff = np.asarray(dff, dtype=float)
    problems = []
    if corrected.ndim != 2:
        problems.append(f"corrected fluorescence has shape {corrected.shape}, expected ROIs x frames")
    if dff.shape != corrected.shape:
        problems.append(f"dF/F has shape {dff.shape} but corrected fluorescence {corrected.shape}")
    if corrected.ndim == 2 and len(roi_ids) != corrected.shape[0]:
        problems.append(f"{len(roi_ids)} ROI ids for {corrected.shape[0]} traces")
    if speed is not None and corrected.ndim == 2 and np.asarray(speed).shape != (corrected.shape[1],):
        problems.append(f"running speed has shape {np.asarray(speed).shape}, expected ({corrected.shape[1]},) (one per frame)")
    if not (np.isfinite(frame_rate_hz) and frame_rate_hz > 0):
        problems.append(f"frame rate {frame_rate_hz!r} must be positive")
    if problems:
        raise InputError("; ".join(problems), entity=entity)
    return corrected, dff


def analyze_session(
    corrected: np.ndarray,
    dff: np.ndarray,
    roi_ids: Sequence[Any],
    stimulus_table: pd.DataFrame,
    frame_rate_hz: float,
    *,
    speed: np.ndarray | None = None,
    lsn_template: np.ndarray | None = None,
    stimuli: list[str] | None = None,
    n_shuffles: int = lsn.DEFAULT_SHUFFLES,
    speed_shuffles: int = running.DEFAULT_SPEED_SHUFFLES,
    seed: int = 1,
    with_correlations: bool = True,
    entity: str | None = None,
) -> SessionAnalysis:
    """Analyse every stimulus present (or ``stimuli``). Raises one :class:`InputError` for bad input: shape
    mismatches, a table row outside the recording or without frames, a requested stimulus that is absent,
    a sparse-noise stimulus without a template. NaN frames in a trace are not an error: the trials they
    touch are left out for that ROI and the analysis says how many frames were NaN."""
    corrected, dff = _check_arrays(corrected, dff, roi_ids, speed, frame_rate_hz, entity)
    n, t = corrected.shape
    table = validate_stimulus_table(stimulus_table, n_frames=t, entity=entity)
    chosen = select_stimuli(table, stimuli, entity=entity)
    lsn_chosen = [s for s in chosen if s in LSN_STIMULI]
    if lsn_chosen and lsn_template is None:
        raise InputError(f"stimulus {lsn_chosen} needs the sparse-noise template (lsn_template_file), none given", entity=entity)
    if len(lsn_chosen) > 1:
        raise InputError(f"one sparse-noise template for {lsn_chosen}; choose one of them with 'stimuli'", entity=entity)
    messages = []
    bad_rows = (~np.isfinite(corrected)).all(axis=1) | (~np.isfinite(dff)).all(axis=1)
    partial = (~np.isfinite(corrected)).sum()
    if partial:
        messages.append(f"{int(partial)} NaN frame value(s) in corrected fluorescence ({int(bad_rows.sum())} ROI(s) entirely NaN); "
                        "trials touching them are left out for those ROIs")
    sp = None if speed is None else np.asarray(speed, dtype=float)
    results: dict[str, Any] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for name in chosen:
            block = stimulus_block(table, name)
            if name == DRIFTING_GRATINGS:
                results[name] = gratings.drifting_gratings(corrected, block, frame_rate_hz, sp, with_correlations=with_correlations)
            elif name == STATIC_GRATINGS:
                results[name] = gratings.static_gratings(corrected, block, frame_rate_hz, sp)
            elif name == NATURAL_SCENES:
                results[name] = gratings.natural_scenes(corrected, block, frame_rate_hz, sp)
            elif name in NATURAL_MOVIES:
                results[name] = movies.natural_movie(dff, block, name, NATURAL_MOVIES[name])
            else:
                results[name] = lsn.locally_sparse_noise(corrected, dff, block, lsn_template, frame_rate_hz, stimulus=name,
                                                         n_shuffles=n_shuffles, seed=seed, speed=sp)
            messages += getattr(results[name], "messages", [])
            sweeps = getattr(results[name], "sweeps", None)
            if sweeps is not None and sweeps.n_dropped_out_of_range:
                messages.append(f"{name}: {sweeps.n_dropped_out_of_range} presentation(s) too close to the recording "
                                "edges for their baseline/response window were left out")
        tuning: dict[str, running.SpeedTuning] = {}
        if sp is not None:
            for epoch, mask in running.epoch_masks(table, t, sp).items():
                tuning[epoch] = running.speed_tuning(dff, sp, mask, epoch, n_shuffles=speed_shuffles, seed=seed)
    cols = metric_columns(chosen, with_running=sp is not None)
    data: dict[str, np.ndarray] = {}
    for r in results.values():
        data.update(r.metrics)
    for st in tuning.values():
        data.update(st.metrics)
    frame = pd.DataFrame({"roi_id": list(roi_ids)})
    for c in cols:
        v = np.asarray(data.get(c, np.full(n, np.nan)), dtype=float)
        frame[c] = np.where(bad_rows, np.nan, v)
    mean_speed = float(np.nanmean(sp)) if sp is not None and np.isfinite(sp).any() else float("nan")
    return SessionAnalysis(frame, results, tuning, mean_speed, float(frame_rate_hz), messages)


def _write_table(group: h5py.Group, name: str, table: pd.DataFrame) -> None:
    g = group.create_group(name)
    for c in table.columns:
        v = table[c].to_numpy()
        if v.dtype == object:
            v = v.astype(str).astype("S")
        g.create_dataset(str(c), data=v)


def write_analysis(path: str | os.PathLike, analysis: SessionAnalysis, stimulus_table: pd.DataFrame) -> None:
    """Write ``path`` (HDF5) atomically: per stimulus its sweep table (``stim_table``: block rows kept),
    ``mean_sweep_response`` and ``sweep_p_values`` (trials x ROIs), ``dx``, ``response`` (conditions... x
    ROIs x [mean, SEM, significant trials]), ``blank_response``, correlations (drifting gratings); per movie
    ``response`` (repeats x ROIs x frames); sparse noise ON/OFF maps, p-values, events and receptive
    fields; ``running/<epoch>`` binned speed and responses; ``roi_ids``."""
    table = validate_stimulus_table(stimulus_table)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as fh:
            fh.attrs["frame_rate_hz"] = analysis.frame_rate_hz
            fh.attrs["mean_running_speed"] = analysis.mean_running_speed
            fh.create_dataset("roi_ids", data=np.asarray(analysis.metrics["roi_id"].astype(str)).astype("S"))
            for name, r in analysis.results.items():
                g = fh.create_group(name)
                block = stimulus_block(table, name)
                if isinstance(r, movies.MovieResult):
                    g.create_dataset("repeat_starts", data=r.repeat_starts)
                    g.create_dataset("response", data=r.response, compression="gzip")
                    continue
                sw = r.sweeps
                kept = block.iloc[sw.trial_index][["table_row", "start_frame", "end_frame", "orientation", "temporal_frequency",
                                                   "spatial_frequency", "phase", "frame"]]
                _write_table(g, "stim_table", kept.reset_index(drop=True))
                g.create_dataset("mean_sweep_response", data=sw.mean_response, compression="gzip")
                g.create_dataset("sweep_p_values", data=sw.p_value, compression="gzip")
                g.create_dataset("dx", data=sw.dx)
                g.attrs.update({"sweep_frames": sw.windows.sweep, "inter_frames": sw.windows.inter, "extra_frames": sw.windows.extra})
                if isinstance(r, gratings.GratingsResult):
                    g.create_dataset("response", data=r.response, compression="gzip")
                    g.create_dataset("blank_response", data=r.blank_response)
                    for axis, values in r.grid.axes.items():
                        g.create_dataset(f"axis_{axis}", data=values)
                    g.attrs["axes"] = [str(a) for a in r.grid.axes]  # the order of response's leading dimensions
                    for k, v in r.arrays.items():
                        g.create_dataset(k, data=v, compression="gzip")
                else:
                    for k in ("mean_on", "mean_off", "p_on", "p_off", "rf_on", "rf_off"):
                        g.create_dataset(k, data=getattr(r, k), compression="gzip")
                    g.create_dataset("events", data=r.events, compression="gzip")
                    g.attrs["pixel_deg"] = r.pixel_deg
            for epoch, st in analysis.speed_tuning.items():
                g = fh.create_group(f"running/{epoch}")
                g.create_dataset("binned_dx", data=st.binned_dx)
                g.create_dataset("binned_cells", data=st.binned_cells)
        with h5py.File(tmp, "r") as fh:  # verify before the rename
            missing = [n for n in analysis.results if n not in fh]
            if missing:
                raise OSError(f"analysis file lacks groups {missing}")


def read_analysis_maps(path: str | os.PathLike) -> dict:
    """What the QC figures draw from a file of :func:`write_analysis`: ``roi_ids``; per grating stimulus
    (``gratings[name]``) its condition ``axes`` (name -> values, in the order of ``response``'s leading
    dimensions) and ``response`` (``conditions... x N x 3``); per sparse-noise stimulus (``sparse_noise[name]``)
    ``mean_on`` and ``mean_off`` (``N x rows x cols``). A missing or unreadable file is one InputError naming it."""
    from release_platform.ophys.io import open_h5

    out: dict = {"gratings": {}, "sparse_noise": {}}
    with open_h5(path) as fh:
        out["roi_ids"] = [v.decode() if isinstance(v, bytes) else str(v) for v in fh["roi_ids"][()]] if "roi_ids" in fh else []
        for name, g in fh.items():
            if not isinstance(g, h5py.Group):
                continue
            if "mean_on" in g and "mean_off" in g:
                out["sparse_noise"][name] = {"mean_on": g["mean_on"][()], "mean_off": g["mean_off"][()]}
            elif "response" in g and "blank_response" in g:
                axes = {k[len("axis_"):]: g[k][()] for k in g if k.startswith("axis_")}
                response = g["response"][()]
                order = [a.decode() if isinstance(a, bytes) else str(a) for a in g.attrs.get("axes", [])]
                if sorted(order) == sorted(axes):
                    ordered = {a: axes[a] for a in order}
                else:  # files written before the order was recorded: match the dimensions by length
                    ordered = _axes_in_response_order(axes, response.shape[:-2])
                out["gratings"][name] = {"axes": ordered, "response": response}
    return out


def _axes_in_response_order(axes: dict, shape: tuple) -> dict:
    remaining = dict(axes)
    ordered = {}
    for n in shape:
        match = [k for k, v in remaining.items() if len(v) == n]
        if not match:
            return axes
        ordered[match[0]] = remaining.pop(match[0])
    return ordered
