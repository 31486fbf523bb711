"""The sources the ophys NWB writer reads: what the pipeline produced for a plane (:class:`PlaneOutputs`, a
typed record), its trace files streamed as NWB datasets (:class:`TraceIterator`), timestamps, projections,
motion offsets, per-ROI vectors and stimulus metrics, each checked against the plane's ROI table. The
pipeline's HDF5 files are read only through :mod:`release_platform.ophys.io` (which owns their layouts).
Split from :mod:`release_platform.nwb.ophys` (the writer) to keep each file readable."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np
import pandas as pd
import pydantic
from hdmf.data_utils import GenericDataChunkIterator

from release_platform.errors import InputError
from release_platform.nwb.behavior import BehaviorTables, load_licks, load_rewards, load_stimulus_presentations, load_trials
from release_platform.nwb.common import load_running_speed, load_table
from release_platform.ophys import io as ophys_io
from release_platform.ophys.io import open_h5, require_dataset

if TYPE_CHECKING:
    from release_platform.nwb.ophys import OphysNwbInputs

TRACE_SETS: dict[str, tuple[str, str]] = {
    "roi": (ophys_io.TRACE_DATASET, "Mean fluorescence over each ROI mask per frame (a.u.), before demixing and neuropil correction"),
    "neuropil": (ophys_io.TRACE_DATASET, "Mean fluorescence over each ROI's neuropil annulus per frame (a.u.)"),
    "demixed": (ophys_io.TRACE_DATASET, "ROI fluorescence with the signal of overlapping ROIs demixed frame by frame (a.u.)"),
    "neuropil_corrected": (ophys_io.NEUROPIL_CORRECTED_DATASET, "Neuropil-corrected fluorescence FC = F_demixed - r * "
                                                                "F_neuropil (a.u.); r per ROI in the cell_specimen_table column r"),
    "dff": (ophys_io.TRACE_DATASET, "dF/F"),
}


class PlaneOutputs(pydantic.BaseModel):
    """What the ophys pipeline produced for one plane, as its NWB file needs it: the five trace files (layouts in
    :mod:`release_platform.ophys.io`) and the pipeline's verdicts on ROIs (ids as strings).

    ``extraction_labels``: exclusion labels from trace extraction per ROI; ``demix_excluded_roi_ids`` and
    ``negative_baseline_roi_ids``: ROIs demixing could not use; ``dff_invalid_roi_ids``: ROIs without finite dF/F;
    ``dff_valid_roi_ids``: the usable ROIs (None: not listed); ``dff_method`` / ``dff_parameters``: the estimator.
    """

    model_config = pydantic.ConfigDict(extra="forbid")

    roi_traces: str
    neuropil_traces: str
    demixed_traces: str
    neuropil_corrected_traces: str
    dff_traces: str
    extraction_labels: dict[str, list[str]] = {}
    demix_excluded_roi_ids: list[str] = []
    negative_baseline_roi_ids: list[str] = []
    dff_invalid_roi_ids: list[str] = []
    dff_valid_roi_ids: Optional[list[str]] = None
    dff_method: str = "unknown"
    dff_parameters: dict[str, Any] = {}

    @pydantic.field_validator("demix_excluded_roi_ids", "negative_baseline_roi_ids", "dff_invalid_roi_ids",
                              "dff_valid_roi_ids", mode="before")
    @classmethod
    def _ids_as_text(cls, value):
        return None if value is None else [str(i) for i in value]

    @pydantic.field_validator("extraction_labels", mode="before")
    @classmethod
    def _label_keys_as_text(cls, value):
        return {str(k): list(v) for k, v in (value or {}).items()}

# ---------------------------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------------------------


class TraceIterator(GenericDataChunkIterator):
    """Stream an N x T trace dataset into an NWB T x N dataset, buffer by buffer.

    ``rows`` (optional) picks and orders the source rows (ROIs), so the columns of the written series
    follow the ROI table. Re-readable (``_get_data``), which the write protocol's round-trip check uses.
    """

    def __init__(self, path: str | os.PathLike, dataset: str, *, rows: Optional[np.ndarray] = None,
                 entity: Optional[str] = None, **kwargs: Any):
        self.path = Path(path)
        self.dataset_name = dataset
        self.entity = entity
        self._file = None  # the open h5py.File (ophys.io.open_trace_dataset)
        ds = self._open()
        if ds.ndim != 2:
            raise InputError(f"dataset {dataset!r} has shape {ds.shape}, expected ROIs x frames", entity=entity, path=self.path)
        self._rows = None if rows is None else np.asarray(rows, dtype=np.intp)
        if self._rows is not None and np.array_equal(self._rows, np.arange(ds.shape[0])):
            self._rows = None
        super().__init__(**kwargs)

    def _open(self):
        if self._file is None or not self._file.id.valid:
            self._file = ophys_io.open_trace_dataset(self.path, dataset=self.dataset_name, entity=self.entity).file
        return self._file[self.dataset_name]

    def _get_data(self, selection: tuple[slice, ...]) -> np.ndarray:
        ds = self._open()
        frames = selection[0]
        rois = selection[1] if len(selection) > 1 else slice(None)
        if self._rows is None:
            block = ophys_io.read_trace_block(ds, (rois, frames), entity=self.entity)
        else:
            block = ophys_io.read_trace_block(ds, (slice(None), frames), entity=self.entity)[self._rows[rois]]
        return np.ascontiguousarray(block.T)

    def _get_maxshape(self) -> tuple[int, int]:
        n, t = self._open().shape
        return (int(t), int(n) if self._rows is None else len(self._rows))

    def _get_dtype(self) -> np.dtype:
        return self._open().dtype

    def close(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except Exception:  # pragma: no cover
                pass
            self._file = None

    def _to_dict(self) -> dict:  # pragma: no cover - hdmf asks only for parallel writes
        raise TypeError("TraceIterator cannot be serialized: parallel NWB writes are not supported")


def load_ophys_timestamps(path: str | os.PathLike, *, entity: str) -> np.ndarray:
    """``ophys_timestamps`` (s, one per imaging frame) of the session's timestamps file."""
    with open_h5(path, entity=entity) as fh:
        ds = require_dataset(fh, "ophys_timestamps", ndim=1, entity=entity)
        try:
            ts = np.asarray(ds[()], dtype=np.float64)
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read 'ophys_timestamps' (corrupt?): {exc}", entity=entity, path=path) from None
    if not np.isfinite(ts).all() or (len(ts) > 1 and not np.all(np.diff(ts) > 0)):
        raise InputError("ophys_timestamps are not finite and strictly increasing", entity=entity, path=path)
    return ts


def load_projection(path: str | os.PathLike, *, entity: str, shape: tuple[int, int]) -> np.ndarray:
    """A projection image (``data``, H x W) checked against the movie's frame shape."""
    with open_h5(path, entity=entity) as fh:
        ds = require_dataset(fh, "data", ndim=2, entity=entity)
        try:
            image = ds[()]
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read projection 'data' (corrupt?): {exc}", entity=entity, path=path) from None
    if image.shape != tuple(shape):
        raise InputError(f"projection has shape {image.shape} but the movie frames are {tuple(shape)}", entity=entity, path=path)
    return image


def load_motion_offsets(path: str | os.PathLike, *, entity: str, n_frames: int) -> pd.DataFrame:
    """``frame_index, x, y`` (integer pixels), one row per frame, ordered by frame."""
    frame = load_table(path, entity=entity, what="motion offsets table", required=("frame_index", "x", "y"))
    frame = frame.sort_values("frame_index", kind="stable").reset_index(drop=True)
    if len(frame) != n_frames or not np.array_equal(frame["frame_index"].to_numpy(), np.arange(n_frames)):
        raise InputError(f"motion offsets have {len(frame)} rows but the movie has {n_frames} frames (one row per frame expected)",
                         entity=entity, path=path)
    if frame[["x", "y"]].isna().any().any():
        raise InputError("motion offsets have missing values", entity=entity, path=path)
    return frame[["frame_index", "x", "y"]]


@dataclasses.dataclass
class _TraceSource:
    path: Path
    dataset: str
    rows: np.ndarray  # source row of each table ROI
    shape: tuple[int, int]  # N x T in the source


def _trace_source(path: str, dataset: str, table_ids: list[str], n_frames: int, *, entity: str, what: str) -> _TraceSource:
    layout = ophys_io.read_trace_layout(path, dataset=dataset, entity=entity)
    ids, shape = layout.roi_ids, layout.shape
    in_file, in_table = set(ids), set(table_ids)
    missing = [i for i in table_ids if i not in in_file]
    extra = [i for i in ids if i not in in_table]
    if missing or extra:
        parts = ([f"ROIs of the plane missing from the file: {missing[:10]}"] if missing else []) + (
            [f"ROIs in the file that the plane does not have: {extra[:10]}"] if extra else [])
        raise InputError(f"{what}: ROI ids disagree with the plane's ROI table; " + "; ".join(parts), entity=entity, path=path)
    if shape[1] != n_frames:
        raise InputError(f"{what}: {shape[1]} frames but the session has {n_frames} ophys timestamps", entity=entity, path=path)
    where = {v: k for k, v in enumerate(ids)}
    return _TraceSource(Path(path), dataset, np.array([where[i] for i in table_ids], dtype=np.intp), shape)


def _roi_vectors(path: str, names: Sequence[str], rows: np.ndarray, *, entity: str) -> dict[str, np.ndarray]:
    out = {}
    for name, values in ophys_io.read_roi_vectors(path, names, entity=entity).items():
        if len(values) <= int(rows.max(initial=0)):
            raise InputError(f"{name!r} has {len(values)} values for {len(rows)} ROIs", entity=entity, path=path)
        out[name] = values[rows]
    return out


def _stimulus_metrics(path: str, table_ids: Sequence[str], *, entity: str) -> dict[str, np.ndarray]:
    """Metric columns of the observatory analysis in ROI-table order (NaN for an ROI it did not analyse)."""
    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise InputError(f"cell metrics are unreadable: {exc}", entity=entity, path=path) from None
    if "roi_id" not in frame.columns:
        raise InputError("cell metrics lack column 'roi_id'", entity=entity, path=path)
    frame = frame.set_index(frame["roi_id"].astype(str)).drop(columns="roi_id").reindex(list(table_ids))
    return {str(c): frame[c].to_numpy(dtype=np.float64) for c in frame.columns}


@dataclasses.dataclass
class _PlaneSources:
    timestamps: np.ndarray
    traces: dict[str, _TraceSource]
    per_roi: dict[str, np.ndarray]
    max_projection: np.ndarray
    average_projection: np.ndarray
    motion: Optional[pd.DataFrame]
    stimulus: Optional[pd.DataFrame]
    running: Optional[pd.DataFrame]
    behavior: Optional[BehaviorTables]


def _load_sources(inputs: OphysNwbInputs) -> _PlaneSources:
    entity = inputs.entity
    n_frames_movie, height, width = inputs.movie_shape
    timestamps = load_ophys_timestamps(inputs.ophys_timestamps_path, entity=entity)
    if len(timestamps) != n_frames_movie:
        raise InputError(f"{len(timestamps)} ophys timestamps but the movie has {n_frames_movie} frames", entity=entity,
                         path=inputs.ophys_timestamps_path)
    for roi in inputs.rois:
        if roi.x < 0 or roi.y < 0 or roi.x + roi.width > width or roi.y + roi.height > height:
            raise InputError(f"ROI {roi.id} bounding box lies outside the {height}x{width} frame", entity=entity)
    table_ids = [str(r.id) for r in inputs.rois]
    traces = {
        name: _trace_source(getattr(inputs.traces, name), dataset, table_ids, len(timestamps), entity=entity, what=f"{name} traces")
        for name, (dataset, _) in TRACE_SETS.items()
    }
    per_roi = _roi_vectors(inputs.traces.neuropil_corrected, ("r", "RMSE", "status"), traces["neuropil_corrected"].rows, entity=entity)
    per_roi.update(_roi_vectors(inputs.traces.dff, ("sigma_dff", "num_small_baseline_frames"), traces["dff"].rows, entity=entity))
    if inputs.cell_metrics_path:
        per_roi["stimulus_metrics"] = _stimulus_metrics(inputs.cell_metrics_path, table_ids, entity=entity)
    behavior = None
    if inputs.behavior is not None:
        bentity = f"{entity}: linked behavior_session {inputs.behavior.behavior_session_id}"
        behavior = BehaviorTables(
            trials=load_trials(inputs.behavior.trials_path, entity=bentity),
            licks=load_licks(inputs.behavior.licks_path, entity=bentity),
            rewards=load_rewards(inputs.behavior.rewards_path, entity=bentity),
            running=None,
            stimulus_presentations=None,
        )
    return _PlaneSources(
        timestamps=timestamps,
        traces=traces,
        per_roi=per_roi,
        max_projection=load_projection(inputs.max_projection_path, entity=entity, shape=(height, width)),
        average_projection=load_projection(inputs.average_projection_path, entity=entity, shape=(height, width)),
        motion=None if not inputs.motion_offsets_path else load_motion_offsets(inputs.motion_offsets_path, entity=entity,
                                                                                n_frames=len(timestamps)),
        stimulus=None if not inputs.stimulus_table_path else load_stimulus_presentations(inputs.stimulus_table_path, entity=entity),
        running=None if not inputs.running_speed_path else load_running_speed(inputs.running_speed_path, entity=entity),
        behavior=behavior,
    )


# ---------------------------------------------------------------------------------------------------------
# Building the file
# ---------------------------------------------------------------------------------------------------------
