"""Read behavior and behavior-ophys NWB files back into the platform's in-memory structures.

Plain h5py (no PyNWB object tree), so reading a table or one trace set is fast and loads only that. Every
reader turns a missing or corrupt file into one :class:`~release_platform.errors.InputError` naming it.

* traces: :func:`read_nwb_traces` -> :class:`release_platform.ophys.io.TraceFile` (N x T float64, ROI ids as
  strings, in the ROI table's order), the same structure :func:`release_platform.ophys.io.read_traces`
  returns for the pipeline's HDF5 trace files; ``open_nwb_traces`` for lazy slices of big files.
* ROIs: :func:`read_roi_table` (DataFrame indexed by ``cell_roi_id``) and :func:`read_rois`
  (:class:`release_platform.inputs.Roi` models, masks cropped back to their bounding boxes).
* tables: :func:`read_trials`, :func:`read_stimulus_presentations`, :func:`read_licks`,
  :func:`read_rewards`, :func:`read_running_speed`, :func:`read_motion_offsets`, in the canonical form of
  the ``load_*`` functions of :mod:`release_platform.nwb.behavior` and :mod:`release_platform.nwb.ophys`.
* :func:`read_projections`, :func:`read_ophys_timestamps`, :func:`read_session_metadata`,
  :func:`read_imaging_plane`.
* ecephys files: :func:`read_units` (ragged columns as one array per row), :func:`read_electrodes`,
  :func:`read_intervals`, and a probe file's LFP: :func:`open_lfp` (lazy) and :func:`read_lfp`.
* eye tracking (ophys and ecephys session files): :func:`read_eye_tracking`, the table
  :func:`release_platform.nwb.eye_tracking.eye_tracking_table` built.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import h5py
import numpy as np
import pandas as pd

from release_platform.staging import require_local
from release_platform.errors import InputError
from release_platform.inputs import Roi
from release_platform.ophys.io import TraceFile

__all__ = [
    "TRACE_SERIES",
    "open_nwb",
    "read_table",
    "read_trials",
    "read_stimulus_presentations",
    "read_licks",
    "read_rewards",
    "read_running_speed",
    "read_session_metadata",
    "read_roi_table",
    "read_rois",
    "read_nwb_traces",
    "open_nwb_traces",
    "read_projections",
    "read_motion_offsets",
    "read_ophys_timestamps",
    "read_imaging_plane",
    "read_units",
    "read_electrodes",
    "read_intervals",
    "LfpData",
    "open_lfp",
    "read_lfp",
    "read_eye_tracking",
]

#: Trace set name -> location of its RoiResponseSeries in a behavior-ophys file.
TRACE_SERIES = {
    "roi": "processing/ophys/fluorescence/roi",
    "neuropil": "processing/ophys/fluorescence/neuropil",
    "demixed": "processing/ophys/fluorescence/demixed",
    "neuropil_corrected": "processing/ophys/fluorescence/neuropil_corrected",
    "dff": "processing/ophys/dff/dff",
}
PLANE_SEGMENTATION = "processing/ophys/image_segmentation/cell_specimen_table"


def _register_plugin_filters() -> None:
    """Files of the ``internal`` tier use Blosc; importing hdf5plugin (when installed) lets h5py read them."""
    try:
        import hdf5plugin  # noqa: F401
    except ImportError:
        pass


@contextlib.contextmanager
def open_nwb(path: str | os.PathLike) -> Iterator[h5py.File]:
    _register_plugin_filters()
    path = require_local(path, what="NWB file")  # never read over the network by accident
    if not path.exists():
        raise InputError("NWB file is missing", path=path)
    try:
        fh = h5py.File(path, "r")
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot open NWB file (corrupt or truncated?): {exc}", path=path) from None
    try:
        yield fh
    finally:
        fh.close()


def _decode(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind == "O" and values.size and isinstance(values.flat[0], bytes):
        return np.array([v.decode() for v in values.flat], dtype=object).reshape(values.shape)
    if values.dtype.kind == "S":
        return np.char.decode(values, "utf-8").astype(object)
    return values


def _str_column(values: np.ndarray) -> list:
    return [np.nan if v == "" else v for v in values]


def _group(fh: h5py.File, key: str, path: Any) -> h5py.Group:
    if key not in fh:
        raise InputError(f"no {key!r} in the file", path=path)
    return fh[key]


def _table(group: h5py.Group, index_name: str, skip: Sequence[str] = ()) -> pd.DataFrame:
    ids = group["id"][()]
    colnames = [c.decode() if isinstance(c, bytes) else str(c) for c in group.attrs.get("colnames", [])]
    colnames = [c for c in colnames if c not in skip]
    out: dict[str, Any] = {}
    for name in colnames:
        ds = group[name]
        if h5py.check_dtype(ref=ds.dtype) is not None:
            continue
        if f"{name}_index" in group:
            ends = group[f"{name}_index"][()].astype(np.int64)
            flat = _decode(ds[()])
            starts = np.concatenate([[0], ends[:-1]]) if len(ends) else ends
            out[name] = [list(flat[a:b]) for a, b in zip(starts, ends)]
            continue
        values = _decode(ds[()])
        if values.ndim > 1:
            out[name] = list(values)
        elif values.dtype == object:
            out[name] = _str_column(values)
        else:
            out[name] = values
    return pd.DataFrame(out, index=pd.Index(np.asarray(ids, dtype=np.int64), name=index_name))


def read_table(path: str | os.PathLike, key: str, index_name: str = "id") -> pd.DataFrame:
    """Any DynamicTable of the file (e.g. ``intervals/trials``) as a DataFrame indexed by its ids."""
    with open_nwb(path) as fh:
        return _table(_group(fh, key, path), index_name)


def read_trials(path: str | os.PathLike) -> pd.DataFrame:
    """The trials table indexed by ``trials_id`` (empty frame when the file has none)."""
    with open_nwb(path) as fh:
        if "intervals/trials" not in fh:
            return pd.DataFrame(index=pd.Index([], name="trials_id", dtype=np.int64))
        return _table(fh["intervals/trials"], "trials_id")


def read_stimulus_presentations(path: str | os.PathLike, stimulus_name: Optional[str] = None) -> pd.DataFrame:
    """Every ``*_presentations`` table stacked (or one stimulus), indexed by ``stimulus_presentations_id``
    in the source table's order; columns a stimulus does not have are NaN for its rows."""
    with open_nwb(path) as fh:
        if "intervals" not in fh:
            return pd.DataFrame(index=pd.Index([], name="stimulus_presentations_id", dtype=np.int64))
        names = sorted(k for k in fh["intervals"] if k.endswith("_presentations"))
        if stimulus_name is not None:
            names = [n for n in names if n == f"{stimulus_name}_presentations"]
            if not names:
                raise InputError(f"no presentations table for stimulus {stimulus_name!r}", path=path)
        frames = [_table(fh["intervals"][n], "stimulus_presentations_id") for n in names]
    if not frames:
        return pd.DataFrame(index=pd.Index([], name="stimulus_presentations_id", dtype=np.int64))
    columns: list[str] = []
    for f in frames:
        columns += [c for c in f.columns if c not in columns]
    # A column a stimulus does not have (all missing there) is NaN for its rows, as in the source table.
    frame = pd.concat(frames, axis=0, sort=False)
    return frame[columns].sort_index()


def _series_times(group: h5py.Group, n: int) -> np.ndarray:
    if "timestamps" in group:
        return np.asarray(group["timestamps"][()], dtype=np.float64)
    st = group["starting_time"]
    return float(st[()]) + np.arange(n, dtype=np.float64) / float(st.attrs["rate"])


def read_licks(path: str | os.PathLike) -> pd.DataFrame:
    with open_nwb(path) as fh:
        if "processing/licking/licks" not in fh:
            return pd.DataFrame({"timestamps": np.zeros(0), "frame": np.zeros(0, np.int64)})
        g = fh["processing/licking/licks"]
        data = g["data"][()]
        return pd.DataFrame({"timestamps": _series_times(g, len(data)), "frame": data.astype(np.int64)})


def read_rewards(path: str | os.PathLike) -> pd.DataFrame:
    with open_nwb(path) as fh:
        if "processing/rewards/volume" not in fh:
            return pd.DataFrame({"timestamps": np.zeros(0), "volume": np.zeros(0), "auto_rewarded": np.zeros(0, bool)})
        vol = fh["processing/rewards/volume"]
        auto = fh["processing/rewards/autorewarded/data"][()]
        data = vol["data"][()]
        return pd.DataFrame({"timestamps": _series_times(vol, len(data)), "volume": data.astype(np.float64),
                             "auto_rewarded": auto.astype(bool)})


def read_running_speed(path: str | os.PathLike) -> pd.DataFrame:
    """``timestamps`` (s), ``speed`` (cm/s); empty when the file has no running speed."""
    with open_nwb(path) as fh:
        if "processing/running/running_speed" not in fh:
            return pd.DataFrame({"timestamps": np.zeros(0), "speed": np.zeros(0)})
        g = fh["processing/running/running_speed"]
        data = g["data"][()]
        return pd.DataFrame({"timestamps": _series_times(g, len(data)), "speed": data.astype(np.float64)})


def _text(fh: h5py.File, key: str) -> Optional[str]:
    if key not in fh:
        return None
    v = fh[key][()]
    if isinstance(v, np.ndarray):
        v = v.flat[0] if v.size else ""
    return v.decode() if isinstance(v, bytes) else str(v)


def _attr_text(obj: Any, name: str) -> str:
    v = obj.attrs.get(name, "")
    return v.decode() if isinstance(v, bytes) else str(v)


def read_session_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The LIMS facts (``notes`` JSON), ``session_id``, ``identifier``, ``session_start_time`` and the subject."""
    with open_nwb(path) as fh:
        notes = _text(fh, "general/notes")
        out: dict[str, Any] = json.loads(notes) if notes else {}
        out["session_id"] = _text(fh, "general/session_id")
        out["identifier"] = _text(fh, "identifier")
        out["session_start_time"] = _text(fh, "session_start_time")
        out["institution"] = _text(fh, "general/institution")
        subject = {}
        if "general/subject" in fh:
            for key in fh["general/subject"]:
                subject[key] = _text(fh, f"general/subject/{key}")
        out["subject"] = subject
    return out


# ---------------------------------------------------------------------------------------------------------
# Ophys
# ---------------------------------------------------------------------------------------------------------


def read_roi_table(path: str | os.PathLike, *, image_masks: bool = False) -> pd.DataFrame:
    """The cell specimen table (PlaneSegmentation) indexed by ``cell_roi_id``; full-frame ``image_mask``
    only when asked (it is the big column)."""
    with open_nwb(path) as fh:
        group = _group(fh, PLANE_SEGMENTATION, path)
        return _table(group, "cell_roi_id", skip=() if image_masks else ("image_mask",))


def read_rois(path: str | os.PathLike) -> list[Roi]:
    """The ROIs as :class:`~release_platform.inputs.Roi` (cropped masks, validity, exclusion labels)."""
    table = read_roi_table(path, image_masks=True)
    rois = []
    for roi_id, row in table.iterrows():
        y, x, h, w = int(row["y"]), int(row["x"]), int(row["height"]), int(row["width"])
        mask = np.asarray(row["image_mask"], dtype=bool)[y : y + h, x : x + w]
        csid = int(row["cell_specimen_id"])
        rois.append(Roi(id=int(roi_id), cell_specimen_id=None if csid < 0 else csid, x=x, y=y, width=w, height=h,
                        mask=mask.tolist(), valid=bool(row["valid_roi"]),
                        exclusion_labels=[str(v) for v in row["exclusion_labels"]]))
    return rois


@dataclasses.dataclass
class NwbTraces:
    """Lazy view of one trace set: ``data`` is the T x N h5py dataset (time first, as NWB stores it)."""

    data: h5py.Dataset
    roi_ids: list[str]
    timestamps: np.ndarray
    unit: str
    description: str

    def traces(self, rois: slice | Sequence[int] = slice(None), frames: slice = slice(None)) -> np.ndarray:
        """N x T float64 for the selected ROI columns and frames."""
        return np.asarray(self.data[frames, rois], dtype=np.float64).T


def _roi_ids_of_series(fh: h5py.File, g: h5py.Group) -> list[str]:
    rows = g["rois"][()]
    ids = fh[f"{PLANE_SEGMENTATION}/id"][()]
    return [str(int(i)) for i in np.asarray(ids)[rows]]


@contextlib.contextmanager
def open_nwb_traces(path: str | os.PathLike, name: str = "dff") -> Iterator[NwbTraces]:
    """One trace set (``roi``, ``neuropil``, ``demixed``, ``neuropil_corrected``, ``dff``) for lazy reads."""
    if name not in TRACE_SERIES:
        raise InputError(f"unknown trace set {name!r}; expected one of {sorted(TRACE_SERIES)}", path=path)
    with open_nwb(path) as fh:
        g = _group(fh, TRACE_SERIES[name], path)
        data = g["data"]
        yield NwbTraces(data=data, roi_ids=_roi_ids_of_series(fh, g), timestamps=_series_times(g, data.shape[0]),
                        unit=str(data.attrs.get("unit", "")), description=_attr_text(g, "description"))


def read_nwb_traces(path: str | os.PathLike, name: str = "dff") -> TraceFile:
    """One trace set as a :class:`~release_platform.ophys.io.TraceFile` (N x T float64 and ROI ids)."""
    with open_nwb_traces(path, name) as t:
        return TraceFile(traces=t.traces(), roi_ids=t.roi_ids, path=Path(path))


def read_ophys_timestamps(path: str | os.PathLike) -> np.ndarray:
    """The imaging frame times (s) shared by every trace set."""
    with open_nwb(path) as fh:
        g = _group(fh, TRACE_SERIES["dff"], path)
        return _series_times(g, g["data"].shape[0])


def read_projections(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """``max_projection`` and ``average_projection`` (H x W, dtype as written)."""
    with open_nwb(path) as fh:
        g = _group(fh, "processing/ophys/images", path)
        return {k: g[k][()] for k in g if isinstance(g[k], h5py.Dataset)}


def read_motion_offsets(path: str | os.PathLike) -> pd.DataFrame:
    """``frame_index``, ``x``, ``y`` (pixels) of the rigid motion correction (empty when not written)."""
    with open_nwb(path) as fh:
        if "processing/ophys/ophys_motion_correction_x" not in fh:
            return pd.DataFrame({"frame_index": np.zeros(0, np.int64), "x": np.zeros(0, np.int64), "y": np.zeros(0, np.int64)})
        x = fh["processing/ophys/ophys_motion_correction_x/data"][()]
        y = fh["processing/ophys/ophys_motion_correction_y/data"][()]
    return pd.DataFrame({"frame_index": np.arange(len(x), dtype=np.int64), "x": x, "y": y})


def _link_target(group: h5py.Group, key: str) -> str:
    link = group.get(key, getlink=True)
    return link.path if isinstance(link, h5py.SoftLink) else group[key].name


def read_imaging_plane(path: str | os.PathLike) -> dict[str, Any]:
    """The imaging plane's facts: location, indicator, imaging rate, wavelengths, description, device."""
    with open_nwb(path) as fh:
        g = _group(fh, "general/optophysiology", path)
        names = list(g)
        if len(names) != 1:
            raise InputError(f"expected one imaging plane, found {names}", path=path)
        p = g[names[0]]
        ch = p[[k for k in p if isinstance(p[k], h5py.Group)][0]]
        return {
            "name": names[0],
            "location": _text(fh, f"{p.name}/location"),
            "indicator": _text(fh, f"{p.name}/indicator"),
            "imaging_rate": float(p["imaging_rate"][()]),
            "excitation_lambda": float(p["excitation_lambda"][()]),
            "emission_lambda": float(ch["emission_lambda"][()]),
            "description": _text(fh, f"{p.name}/description"),
            "device": _link_target(p, "device").rsplit("/", 1)[-1],
            "grid_spacing": p["grid_spacing"][()].tolist() if "grid_spacing" in p else None,
        }


# ---------------------------------------------------------------------------------------------------------
# Ecephys session and LFP files
# ---------------------------------------------------------------------------------------------------------


def _ecephys_table(group: h5py.Group, columns: Optional[Sequence[str]] = None) -> pd.DataFrame:
    ids = group["id"][()]
    colnames = [c.decode() if isinstance(c, bytes) else str(c) for c in group.attrs.get("colnames", [])]
    out: dict[str, Any] = {}
    for name in colnames:
        if columns is not None and name not in columns:
            continue
        ds = group[name]
        if ds.dtype.kind == "O" and h5py.check_dtype(ref=ds.dtype) is not None:
            continue  # object references (e.g. electrode group): use group_name / probe_id instead
        if f"{name}_index" in group:
            ends = group[f"{name}_index"][()].astype(np.int64)
            flat = _decode(ds[()])
            out[name] = np.split(flat, ends[:-1]) if len(ends) else []
        else:
            values = _decode(ds[()])
            out[name] = list(values) if values.ndim > 1 else values
    return pd.DataFrame(out, index=pd.Index(ids, name="id"))


def read_units(path: str | os.PathLike, columns: Optional[Sequence[str]] = None) -> pd.DataFrame:
    """The units table of a session file: one row per unit (index = unit id); ragged columns
    (``spike_times``, ``spike_amplitudes``, ``electrodes``) as one array per row; ``waveform_mean`` as one
    samples x channels array per row."""
    with open_nwb(path) as fh:
        if "units" not in fh:
            return pd.DataFrame(index=pd.Index([], name="id"))
        return _ecephys_table(fh["units"], columns)


def read_electrodes(path: str | os.PathLike) -> pd.DataFrame:
    """The electrodes table (index = channel id), without the object-reference ``group`` column."""
    with open_nwb(path) as fh:
        return _ecephys_table(fh["general/extracellular_ephys/electrodes"])


def read_intervals(path: str | os.PathLike, name: str) -> pd.DataFrame:
    """A ``TimeIntervals`` table under ``intervals/<name>`` (or a processing-module path such as
    ``processing/optotagging/optogenetic_stimulation``)."""
    with open_nwb(path) as fh:
        key = name if "/" in name else f"intervals/{name}"
        if key not in fh:
            raise InputError(f"no table {key!r} in the file", path=path)
        return _ecephys_table(fh[key])


@dataclasses.dataclass
class LfpData:
    """LFP read back from a probe file: raw ``data`` (samples x channels), ``conversion`` (V per unit of
    data), ``timestamps`` (s) and ``electrode_ids`` (channel ids of the columns)."""

    data: Any
    conversion: float
    timestamps: Any
    electrode_ids: np.ndarray

    def volts(self, rows: slice = slice(None)) -> np.ndarray:
        return np.asarray(self.data[rows], dtype=np.float64) * self.conversion


@contextlib.contextmanager
def open_lfp(path: str | os.PathLike) -> Iterator[LfpData]:
    """The LFP of a probe file with ``data`` and ``timestamps`` as lazy h5py datasets (read slices)."""
    with open_nwb(path) as fh:
        acq = fh["acquisition"]
        lfp_names = [k for k in acq if k.endswith("_lfp")]
        if len(lfp_names) != 1:
            raise InputError(f"expected one LFP container in acquisition, found {lfp_names}", path=path)
        container = acq[lfp_names[0]]
        series_names = list(container)
        if len(series_names) != 1:
            raise InputError(f"expected one ElectricalSeries in {lfp_names[0]}, found {series_names}", path=path)
        es = container[series_names[0]]
        data = es["data"]
        if "timestamps" in es:
            timestamps = es["timestamps"]
        else:
            start = float(es["starting_time"][()])
            rate = float(es["starting_time"].attrs["rate"])
            timestamps = start + np.arange(data.shape[0]) / rate
        rows = es["electrodes"][()]
        table_ids = fh["general/extracellular_ephys/electrodes/id"][()]
        yield LfpData(data=data, conversion=float(data.attrs.get("conversion", 1.0)), timestamps=timestamps,
                      electrode_ids=np.asarray(table_ids)[rows])


def read_lfp(path: str | os.PathLike) -> LfpData:
    """The LFP of a probe file loaded into memory (for tests and small files; use :func:`open_lfp` otherwise)."""
    with open_lfp(path) as lfp:
        return LfpData(data=lfp.data[()], conversion=lfp.conversion, timestamps=np.asarray(lfp.timestamps[()]),
                       electrode_ids=lfp.electrode_ids)


def read_eye_tracking(path: str | os.PathLike) -> Optional[pd.DataFrame]:
    """The eye tracking table (``timestamps``, areas, ``likely_blink``, the ellipse fits; index ``frame``), or
    ``None`` when the file has none (layout: :mod:`release_platform.nwb.eye_tracking`)."""
    from release_platform.nwb.eye_tracking import CENTERS, GAZE_COLUMNS, MODULE, OTHER_SERIES, PUPIL_SERIES

    with open_nwb(path) as fh:
        base = f"processing/{MODULE}"
        if base not in fh:
            return None
        first = fh[f"{base}/pupil_tracking/pupil_area"]
        out: dict[str, Any] = {"timestamps": _series_times(first, len(first["data"]))}
        for name in PUPIL_SERIES:
            out[name] = fh[f"{base}/pupil_tracking/{name}/data"][()]
        for name, field in CENTERS.items():
            xy = fh[f"{base}/ellipse_centers/{name}/data"][()]
            out[f"{field}_center_x"], out[f"{field}_center_y"] = xy[:, 0], xy[:, 1]
        for name in OTHER_SERIES:
            out[name] = fh[f"{base}/eye_and_corneal_reflection/{name}/data"][()]
        out["likely_blink"] = out["likely_blink"].astype(bool)
        if f"{base}/gaze_on_monitor" in fh:
            g = fh[f"{base}/gaze_on_monitor"]
            cm, deg = g["screen_coordinates/data"][()], g["screen_coordinates_spherical/data"][()]
            for i, name in enumerate(GAZE_COLUMNS):
                out[name] = (cm if i < 2 else deg)[:, i % 2]
        return pd.DataFrame(out, index=pd.RangeIndex(len(out["timestamps"]), name="frame"))
