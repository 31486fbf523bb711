"""Resolve and validate a session's raw inputs (pure: paths, h5py, pandas; no Dagster, no SQL).

The Dagster input assets fetch a session's LIMS records through the LIMS client and pass them here.
Each ``validate_*`` function checks that every file exists and opens, that shapes agree with what LIMS
says and with each other, and that ROI ids are unique, then returns a small, picklable description of
the session that downstream assets consume. Any problem raises one :class:`InputError` naming the
session, the file and the problem.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import h5py
import numpy as np
import pandas as pd
import pydantic

from release_platform.errors import InputError


class Subject(pydantic.BaseModel):
    subject_id: str
    sex: str
    species: str
    date_of_birth: Optional[dt.datetime] = None
    full_genotype: str = ""
    driver_line: list[str] = []
    reporter_line: list[str] = []


class SessionBase(pydantic.BaseModel):
    kind: str
    session_id: int
    name: str = ""
    session_type: str = ""
    date_of_acquisition: Optional[dt.datetime] = None
    project_code: Optional[str] = None
    equipment_name: Optional[str] = None
    subject: Optional[Subject] = None
    files: dict[str, str] = {}

    @property
    def entity(self) -> str:
        return f"{self.kind} {self.session_id}"


class Roi(pydantic.BaseModel):
    id: int
    cell_specimen_id: Optional[int] = None
    x: int
    y: int
    width: int
    height: int
    mask: list[list[bool]]
    valid: bool
    exclusion_labels: list[str] = []

    def mask_array(self) -> np.ndarray:
        return np.asarray(self.mask, dtype=bool).reshape(self.height, self.width)


class OphysPlane(pydantic.BaseModel):
    ophys_experiment_id: int
    movie_path: str
    movie_shape: tuple[int, int, int]
    frame_rate_hz: float
    motion_border: dict[str, int]
    targeted_structure: Optional[str] = None
    imaging_depth_um: Optional[int] = None
    plane_group: Optional[int] = None
    files: dict[str, str] = {}
    rois: list[Roi]


class OphysSessionInputs(SessionBase):
    planes: list[OphysPlane]


class BehaviorSessionInputs(SessionBase):
    n_trials: int
    n_stimulus_presentations: int


class EcephysProbeInputs(pydantic.BaseModel):
    probe_id: int
    name: str
    sampling_rate_hz: float
    lfp_sampling_rate_hz: Optional[float] = None
    sorting_dir: str
    lfp_path: Optional[str] = None
    lfp_problem: Optional[str] = None
    n_channels: int
    n_units: int
    n_spikes: int


class EcephysSessionInputs(SessionBase):
    probes: list[EcephysProbeInputs]


class IcephysCellInputs(SessionBase):
    nwb_path: str
    n_sweeps: int


# -- shared checks ------------------------------------------------------------------------------------------
def _session_base(record: Mapping[str, Any]) -> dict[str, Any]:
    subj = record.get("subject") or None
    return dict(
        kind=record["kind"],
        session_id=int(record["id"]),
        name=record.get("name") or "",
        session_type=record.get("stimulus_name") or "",
        date_of_acquisition=record.get("date_of_acquisition"),
        project_code=record.get("project_code"),
        equipment_name=record.get("equipment_name"),
        subject=Subject(**{k: subj[k] for k in Subject.model_fields if k in subj}) if subj else None,
        files={k: os.fspath(v) for k, v in (record.get("well_known_files") or {}).items()},
    )


def require_file(entity: str, files: Mapping[str, Any], type_name: str) -> Path:
    """The registered file of ``type_name``; it must be registered and exist."""
    if type_name not in files:
        raise InputError(f"no {type_name} file registered in LIMS", entity=entity)
    path = Path(files[type_name])
    if not path.exists():
        raise InputError(f"{type_name} file is missing", entity=entity, path=path)
    return path


def read_csv_table(entity: str, path: Path, required: Sequence[str]) -> pd.DataFrame:
    """Read a CSV table, naming the file when it is unreadable or lacks a required column."""
    try:
        frame = pd.read_csv(path)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise InputError(f"unreadable CSV table: {exc}", entity=entity, path=path) from None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise InputError(f"CSV table lacks required columns {missing}", entity=entity, path=path)
    return frame


def h5_dataset_shape(entity: str, path: Path, dataset: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of an HDF5 dataset, naming the file when it is corrupt or lacks the dataset."""
    try:
        with h5py.File(path, "r") as fh:
            if dataset not in fh:
                raise InputError(f"HDF5 file has no dataset {dataset!r}", entity=entity, path=path)
            ds = fh[dataset]
            if not isinstance(ds, h5py.Dataset):
                raise InputError(f"{dataset!r} is not an HDF5 dataset", entity=entity, path=path)
            return tuple(int(n) for n in ds.shape), ds.dtype
    except InputError:
        raise
    except (OSError, KeyError, ValueError) as exc:
        raise InputError(f"cannot open HDF5 file (corrupt or truncated?): {exc}", entity=entity, path=path) from None


# -- ophys -----------------------------------------------------------------------------------------------
def validate_ophys_session(
    record: Mapping[str, Any],
    experiments: Sequence[Mapping[str, Any]],
    rois_by_experiment: Mapping[int, Sequence[Mapping[str, Any]]],
) -> OphysSessionInputs:
    """Check an ophys session: stimulus table, timestamps, every plane's movie and ROIs."""
    base = _session_base(record)
    entity = f"ophys_session {base['session_id']}"
    if not experiments:
        raise InputError("no imaging planes (ophys_experiments) registered in LIMS", entity=entity)
    stim = require_file(entity, base["files"], "StimulusTable")
    read_csv_table(entity, stim, ["start_time", "stop_time", "stimulus_name"])
    planes = []
    for exp in experiments:
        planes.append(_validate_plane(entity, exp, rois_by_experiment.get(int(exp["id"]), ())))
    return OphysSessionInputs(**base, planes=planes)


def _validate_plane(entity: str, exp: Mapping[str, Any], rois: Sequence[Mapping[str, Any]]) -> OphysPlane:
    exp_id = int(exp["id"])
    plane_entity = f"{entity} (ophys_experiment {exp_id})"
    files = {k: os.fspath(v) for k, v in (exp.get("well_known_files") or {}).items()}
    movie = require_file(plane_entity, files, "MotionCorrectedImageStack")
    shape, dtype = h5_dataset_shape(plane_entity, movie, "data")
    if len(shape) != 3:
        raise InputError(f"movie dataset 'data' has shape {shape}, expected frames x height x width", entity=plane_entity, path=movie)
    if not np.issubdtype(dtype, np.number):
        raise InputError(f"movie dataset 'data' has non-numeric dtype {dtype}", entity=plane_entity, path=movie)
    n_frames, height, width = shape
    if n_frames < 1:
        raise InputError("movie has no frames", entity=plane_entity, path=movie)
    for key, expected, actual in (
        ("movie_height", exp.get("movie_height"), height),
        ("movie_width", exp.get("movie_width"), width),
        ("movie_frame_count", exp.get("movie_frame_count"), n_frames),
    ):
        if expected is not None and int(expected) != actual:
            raise InputError(f"movie has {key.split('_', 1)[1]} {actual} but LIMS says {expected}", entity=plane_entity, path=movie)
    rate = exp.get("frame_rate_hz")
    if rate is None or not np.isfinite(rate) or rate <= 0:
        raise InputError(f"frame rate {rate!r} is missing or not positive in LIMS", entity=plane_entity)
    border = dict(exp.get("motion_border") or {"x0": 0, "x1": 0, "y0": 0, "y1": 0})
    if sorted(border) != ["x0", "x1", "y0", "y1"] or any(int(v) < 0 for v in border.values()):
        raise InputError(f"motion border {border} must have non-negative x0, x1, y0, y1", entity=plane_entity)
    if border["x0"] + border["x1"] >= width or border["y0"] + border["y1"] >= height:
        raise InputError(f"motion border {border} leaves no pixels of a {height}x{width} frame", entity=plane_entity)
    if not rois:
        raise InputError("no ROIs in the current segmentation run", entity=plane_entity)
    ids = [int(r["id"]) for r in rois]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise InputError(f"ROI ids are not unique: {dupes}", entity=plane_entity)
    checked = []
    for r in rois:
        mask = np.asarray(r["mask"], dtype=bool)
        if mask.shape != (int(r["height"]), int(r["width"])):
            raise InputError(f"ROI {r['id']} mask shape {mask.shape} disagrees with its height x width", entity=plane_entity)
        if r["x"] < 0 or r["y"] < 0 or r["x"] + r["width"] > width or r["y"] + r["height"] > height:
            raise InputError(f"ROI {r['id']} bounding box lies outside the {height}x{width} frame", entity=plane_entity)
        checked.append(Roi(**{**{k: r[k] for k in ("id", "x", "y", "width", "height", "valid")},
                              "cell_specimen_id": r.get("cell_specimen_id"),
                              "mask": mask.tolist(), "exclusion_labels": list(r.get("exclusion_labels") or [])}))
    return OphysPlane(
        ophys_experiment_id=exp_id,
        movie_path=os.fspath(movie),
        movie_shape=shape,
        frame_rate_hz=float(rate),
        motion_border={k: int(v) for k, v in border.items()},
        targeted_structure=exp.get("targeted_structure"),
        imaging_depth_um=exp.get("imaging_depth_um"),
        plane_group=exp.get("plane_group"),
        files=files,
        rois=checked,
    )


# -- behavior ---------------------------------------------------------------------------------------------
def validate_behavior_session(record: Mapping[str, Any]) -> BehaviorSessionInputs:
    base = _session_base(record)
    entity = f"behavior_session {base['session_id']}"
    trials = read_csv_table(entity, require_file(entity, base["files"], "BehaviorTrials"), ["start_time", "stop_time"])
    read_csv_table(entity, require_file(entity, base["files"], "BehaviorLicks"), ["timestamps"])
    read_csv_table(entity, require_file(entity, base["files"], "BehaviorRewards"), ["timestamps"])
    read_csv_table(entity, require_file(entity, base["files"], "RunningSpeed"), ["timestamps", "speed"])
    stim = read_csv_table(entity, require_file(entity, base["files"], "StimulusPresentations"), ["start_time", "stop_time"])
    bad = trials["stop_time"] < trials["start_time"]
    if bad.any():
        raise InputError(f"{int(bad.sum())} trials stop before they start", entity=entity, path=base["files"]["BehaviorTrials"])
    return BehaviorSessionInputs(**base, n_trials=len(trials), n_stimulus_presentations=len(stim))


# -- ecephys ------------------------------------------------------------------------------------------------
SORTING_FILES = ("spike_times.npy", "spike_clusters.npy", "spike_templates.npy", "amplitudes.npy", "templates.npy", "whitening_mat_inv.npy")


def _load_npy(entity: str, path: Path) -> np.ndarray:
    if not path.exists():
        raise InputError("sorter output file is missing", entity=entity, path=path)
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"unreadable .npy file: {exc}", entity=entity, path=path) from None


def validate_ecephys_session(record: Mapping[str, Any], probes: Sequence[Mapping[str, Any]]) -> EcephysSessionInputs:
    base = _session_base(record)
    entity = f"ecephys_session {base['session_id']}"
    require_file(entity, base["files"], "StimulusTable")
    if not probes:
        raise InputError("no probes registered in LIMS", entity=entity)
    out = []
    for probe in probes:
        probe_entity = f"{entity} ({probe['name']})"
        pfiles = probe.get("well_known_files") or {}
        sorting = require_file(probe_entity, pfiles, "EcephysSortingDirectory")
        arrays = {name: _load_npy(probe_entity, sorting / name) for name in SORTING_FILES}
        n_spikes = arrays["spike_times.npy"].shape[0]
        for name in ("spike_clusters.npy", "spike_templates.npy", "amplitudes.npy"):
            if arrays[name].shape[0] != n_spikes:
                raise InputError(f"{name} has {arrays[name].shape[0]} entries but spike_times.npy has {n_spikes}", entity=probe_entity, path=sorting / name)
        if not probe.get("channels"):
            raise InputError("no channels registered in LIMS", entity=probe_entity)
        lfp_path, lfp_problem = None, None
        if "EcephysLfp" in pfiles:
            lfp_path = os.fspath(pfiles["EcephysLfp"])
            try:
                h5_dataset_shape(probe_entity, Path(lfp_path), "data")
            except InputError as exc:
                lfp_problem = str(exc)
        out.append(
            EcephysProbeInputs(
                probe_id=int(probe["id"]),
                name=probe["name"],
                sampling_rate_hz=float(probe["sampling_rate_hz"]),
                lfp_sampling_rate_hz=probe.get("lfp_sampling_rate_hz"),
                sorting_dir=os.fspath(sorting),
                lfp_path=lfp_path,
                lfp_problem=lfp_problem,
                n_channels=len(probe["channels"]),
                n_units=len(probe.get("units") or []),
                n_spikes=int(n_spikes),
            )
        )
    return EcephysSessionInputs(**base, probes=out)


# -- icephys -------------------------------------------------------------------------------------------------
def validate_icephys_cell(record: Mapping[str, Any]) -> IcephysCellInputs:
    base = _session_base(record)
    entity = f"icephys_cell {base['session_id']}"
    nwb = require_file(entity, base["files"], "IcephysNwb")
    try:
        with h5py.File(nwb, "r") as fh:
            if "nwb_version" not in fh.attrs:
                raise InputError("not an NWB file (no nwb_version attribute)", entity=entity, path=nwb)
            n_sweeps = len(fh["acquisition"]) if "acquisition" in fh else 0
    except InputError:
        raise
    except (OSError, KeyError, ValueError) as exc:
        raise InputError(f"cannot open NWB file (corrupt or truncated?): {exc}", entity=entity, path=nwb) from None
    if n_sweeps == 0:
        raise InputError("NWB file has no acquired sweeps", entity=entity, path=nwb)
    return IcephysCellInputs(**base, nwb_path=os.fspath(nwb), n_sweeps=n_sweeps)


# -- one entry point ------------------------------------------------------------------------------------------
def resolve_session(client, kind: str, session_id: int | str) -> SessionBase:
    """Fetch a session's LIMS records through ``client`` (a LimsClient) and validate its files.

    The input assets and the ``session_inputs`` module both call this.
    """
    record = client.session(kind, session_id)
    if kind == "ophys_session":
        experiments = client.ophys_experiments(session_id)
        rois = {int(e["id"]): client.roi_masks(int(e["id"])) for e in experiments}
        return validate_ophys_session(record, experiments, rois)
    if kind == "behavior_session":
        return validate_behavior_session(record)
    if kind == "ecephys_session":
        return validate_ecephys_session(record, client.ecephys_probes(session_id))
    return validate_icephys_cell(record)
