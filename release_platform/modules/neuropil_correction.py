"""Neuropil correction stage: contamination ratio r per ROI and corrected traces FC = F_M - r F_N.

Input JSON (AllenSDK ``run_neuropil_correction`` field names)::

    {"roi_trace_file": "/path/demixed_traces.h5",        # "data" N x T, "roi_names"
     "neuropil_trace_file": "/path/neuropil_traces.h5",  # "data" N x T, "roi_names"
     "storage_directory": "/path/out",
     "method": "fit", "fixed_r": 0.7, "r_max": 5.0}      # optional

Both files must hold the same ROI ids in the same order (InputError otherwise). Writes
``neuropil_correction.h5`` atomically: ``FC`` (N x T), ``r``, ``RMSE``, ``r_fit`` (before fallbacks),
``fallback_used`` (bool), ``status`` (bytes: fit, fixed, unconverged, negative_baseline, skipped),
``roi_names`` and the group ``r_vals/<row>`` (every r evaluated by the grid search). Skipped ROIs have
r = RMSE = NaN and a NaN FC row. Output JSON: ``neuropil_correction_trace_file``, ``fallback_r``,
``unconverged_roi_ids``, ``negative_baseline_roi_ids``, ``skipped_roi_ids``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import h5py
import numpy as np
import pydantic

from release_platform.atomic import atomic_write
from release_platform.errors import InputError
from release_platform.modules._harness import main_for
from release_platform.ophys.io import check_roi_ids_match, encode_roi_ids, read_traces
from release_platform.ophys.neuropil import (
    DEFAULT_FIXED_R,
    DEFAULT_R_MAX,
    STATUS_NEGATIVE_BASELINE,
    STATUS_SKIPPED,
    STATUS_UNCONVERGED,
    correct_neuropil,
)


class Inputs(pydantic.BaseModel):
    roi_trace_file: Path
    neuropil_trace_file: Path
    storage_directory: Path
    method: Literal["fit", "fixed"] = "fit"
    fixed_r: float = pydantic.Field(DEFAULT_FIXED_R, ge=0)
    r_max: float = pydantic.Field(DEFAULT_R_MAX, gt=1)

    def output_paths(self) -> list[Path]:
        return [self.storage_directory / "neuropil_correction.h5"]


def run(inputs: Inputs) -> dict:
    roi = read_traces(inputs.roi_trace_file)
    neuropil = read_traces(inputs.neuropil_trace_file)
    check_roi_ids_match(
        roi.roi_ids, neuropil.roi_ids,
        expected_label=f"ROI traces {roi.path}", found_label=f"neuropil traces {neuropil.path}",
        path=neuropil.path, same_order=True,
    )
    if roi.traces.shape != neuropil.traces.shape:
        raise InputError(
            f"ROI traces have shape {roi.traces.shape}, neuropil traces {neuropil.traces.shape}", path=neuropil.path
        )
    result = correct_neuropil(
        roi.traces, neuropil.traces, method=inputs.method, fixed_r=inputs.fixed_r, r_max=inputs.r_max,
        path=inputs.roi_trace_file,
    )
    out = inputs.output_paths()[0]

    def write(tmp):
        with h5py.File(tmp, "w") as handle:
            handle.create_dataset("FC", data=result.corrected, compression="gzip")
            handle.create_dataset("r", data=result.r)
            handle.create_dataset("RMSE", data=result.rmse)
            handle.create_dataset("r_fit", data=result.r_fit)
            handle.create_dataset("fallback_used", data=result.fallback_used)
            handle.create_dataset("status", data=np.array([s.encode() for s in result.status], dtype=np.bytes_))
            handle.create_dataset("roi_names", data=encode_roi_ids(roi.roi_ids))
            group = handle.create_group("r_vals")
            for row, fit in enumerate(result.fits):
                if fit is not None:
                    group.create_dataset(str(row), data=fit.r_vals)

    expected = np.asarray(result.corrected).nbytes + 6 * np.asarray(result.r).nbytes + sum(np.asarray(f.r_vals).nbytes for f in result.fits if f is not None)
    atomic_write(out, write, expected_bytes=expected + (1 << 16))
    ids = np.array(roi.roi_ids, dtype=object)
    return {
        "neuropil_correction_trace_file": out,
        "fallback_r": result.fallback_r,
        "unconverged_roi_ids": ids[result.rows_with(STATUS_UNCONVERGED)].tolist(),
        "negative_baseline_roi_ids": ids[result.rows_with(STATUS_NEGATIVE_BASELINE)].tolist(),
        "skipped_roi_ids": ids[result.rows_with(STATUS_SKIPPED)].tolist(),
    }


if __name__ == "__main__":
    raise SystemExit(main_for(Inputs, run, "Estimate neuropil contamination ratios and correct ROI traces."))
