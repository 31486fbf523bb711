"""Run AllenSDK 2.16.2's stimulus analysis classes on arrays written by ``benchmarks/stimulus.py``.

Runs in the separate AllenSDK interpreter (never imports release_platform)::

    /work/venvs/allensdk/bin/python benchmarks/_allensdk_stimulus_driver.py <work dir>

``<work dir>`` holds ``fc.npy`` and ``dff.npy`` (cells x frames), ``speed.npy`` (cm/s per frame), ``table.csv`` (the
session's stimulus table: ``stimulus_name``, ``start_frame``, ``end_frame``, ``orientation``,
``temporal_frequency``, ``spatial_frequency``, ``phase``, ``frame``), ``lsn_template.npy`` and ``params.json``
(``frame_rate_hz``, ``rf_cells``: how many of the cells the receptive-field analysis runs on, ``stimuli``).
A stand-in data set exposes the getters the classes call (traces, running speed, per-stimulus tables with
AllenSDK's ``start``/``end`` columns, the LSN template, cell ids). Writes ``allensdk.npz`` (per stimulus: trial
starts, mean sweep responses, trial p-values, condition responses) and ``<stimulus>_peak.csv`` (AllenSDK's
``peak`` tables) and ``timings.json`` (seconds per stimulus class, and for the RF analysis).
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd


class ArrayDataSet:
    """The getters AllenSDK's DriftingGratings, StaticGratings, NaturalScenes and LocallySparseNoise call."""

    def __init__(self, work: Path, cells: np.ndarray):
        params = json.loads((work / "params.json").read_text())
        self.fc = np.load(work / "fc.npy")[cells]
        self.dff = np.load(work / "dff.npy")[cells]
        self.speed = np.load(work / "speed.npy")
        self.rate = float(params["frame_rate_hz"])
        self.timestamps = np.arange(self.fc.shape[1]) / self.rate
        table = pd.read_csv(work / "table.csv")
        self.table = table.rename(columns={"start_frame": "start", "end_frame": "end"})
        self.template = np.load(work / "lsn_template.npy")
        self.ids = np.asarray(cells, dtype=int)
        self.number_of_cells = len(cells)

    def get_corrected_fluorescence_traces(self):
        return self.timestamps, self.fc

    def get_dff_traces(self, cell_specimen_ids=None):
        return self.timestamps, self.dff

    def get_running_speed(self):
        return self.speed, self.timestamps

    def get_stimulus_table(self, name):
        rows = self.table[self.table["stimulus_name"] == name].drop(columns=["stimulus_name"]).reset_index(drop=True)
        if name != "spontaneous":
            rows = rows.drop(columns=[c for c in ("start_time", "stop_time") if c in rows.columns])
        if name in ("natural_scenes", "locally_sparse_noise"):
            rows["frame"] = rows["frame"].fillna(-1).astype(int)  # image / template indices, -1 blank
        return rows

    def get_stimulus_template(self, name):
        return self.template

    def get_locally_sparse_noise_stimulus_template(self, stimulus, mask_off_screen=True):
        return self.template, np.ones(self.template.shape[1:], dtype=bool)

    def get_cell_specimen_ids(self):
        return self.ids

    def get_roi_ids(self):
        return self.ids

    def get_metadata(self):
        return {"ophys_experiment_id": 0}


def _cells(frame: pd.DataFrame, n: int) -> np.ndarray:
    return frame[[str(i) for i in range(n)]].to_numpy(dtype=float)


def main(work: Path) -> int:
    from allensdk.brain_observatory.drifting_gratings import DriftingGratings
    from allensdk.brain_observatory.locally_sparse_noise import LocallySparseNoise
    from allensdk.brain_observatory.natural_scenes import NaturalScenes
    from allensdk.brain_observatory.static_gratings import StaticGratings

    params = json.loads((work / "params.json").read_text())
    n = int(np.load(work / "fc.npy", mmap_mode="r").shape[0])
    ds = ArrayDataSet(work, np.arange(n))
    out: dict[str, np.ndarray] = {}
    timings: dict[str, float] = {}
    classes = {"drifting_gratings": DriftingGratings, "static_gratings": StaticGratings,
               "natural_scenes": NaturalScenes, "locally_sparse_noise": LocallySparseNoise}
    for name, cls in classes.items():
        if name not in params["stimuli"]:
            continue
        t0 = time.perf_counter()
        analysis = cls(ds)
        msr, pval = analysis.mean_sweep_response, analysis.pval
        if name == "locally_sparse_noise":
            response = analysis.mean_response
        else:
            response = analysis.response
            analysis.peak.to_csv(work / f"{name}_peak.csv", index=False)
        timings[name] = time.perf_counter() - t0
        out[f"{name}/start"] = analysis.stim_table["start"].to_numpy(dtype=int)
        out[f"{name}/msr"] = _cells(msr, n)
        out[f"{name}/pval"] = _cells(pval, n)
        out[f"{name}/response"] = np.asarray(response, dtype=float)
        print(f"allensdk {name}: {timings[name]:.1f} s on {n} cells", flush=True)
    rf_cells = int(params.get("rf_cells", 0))
    if rf_cells and "locally_sparse_noise" in params["stimuli"]:
        rf_ds = ArrayDataSet(work, np.arange(rf_cells))
        t0 = time.perf_counter()
        lsn = LocallySparseNoise(rf_ds)
        peak = lsn.peak  # receptive-field analysis (10,000 shuffles per cell), Gaussian fits, chi-square test
        timings["receptive_fields"] = time.perf_counter() - t0
        peak.to_csv(work / "locally_sparse_noise_peak.csv", index=False)
        print(f"allensdk receptive fields: {timings['receptive_fields']:.1f} s on {rf_cells} cells", flush=True)
    np.savez(work / "allensdk.npz", **out)
    (work / "timings.json").write_text(json.dumps({"cells": n, "rf_cells": rf_cells, "seconds": timings}))
    return 0


if __name__ == "__main__":
    warnings.simplefilter("ignore")
    raise SystemExit(main(Path(sys.argv[1])))
