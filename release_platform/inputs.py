"""Resolve and validate a session's raw inputs (pure: paths, h5py, pandas; no Dagster, no SQL).

The Dagster input assets fetch a session's LIMS records through the LIMS client and pass them here.
Each ``validate_*`` function checks that every file exists and opens, that shapes agree with what LIMS
says and with each other, that ROI ids are unique, and that values are usable (a sample of movie frames
finite; every sorter array finite, ordered and consistent, see :func:`check_sorter_arrays`), then returns a
small, picklable description of the session that downstream assets consume. Any problem raises one :class:`InputError` naming the
session, the file and the problem.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

import pydantic

if TYPE_CHECKING:  # numpy, pandas and h5py are imported by the functions that use them
    import numpy as np
    import pandas as pd

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
    #: The LIMS rows this session's release metadata is built from (a
    #: :class:`release_platform.metadata.LimsRows`: its mouse's whole history, planes, containers, probes, ...),
    #: fetched by the input asset so the metadata assets need not ask LIMS again. Left out of JSON summaries.
    release_rows: Any = pydantic.Field(default=None, exclude=True, repr=False)

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
        import numpy as np

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


class BehaviorSessionInputs(SessionBase):
    n_trials: int
    n_stimulus_presentations: int


class OphysSessionInputs(SessionBase):
    planes: list[OphysPlane]
    #: The behavior session recorded with this ophys session (validated), None when LIMS links none.
    behavior_session: Optional[BehaviorSessionInputs] = None


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
    #: The probe's LIMS record (``LimsClient.ecephys_probes``: channels, units, well-known files), so later
    #: steps need not ask LIMS again. Left out of JSON summaries.
    lims_record: dict[str, Any] = pydantic.Field(default_factory=dict, exclude=True, repr=False)


class EcephysSessionInputs(SessionBase):
    probes: list[EcephysProbeInputs]
    #: The behavior session recorded with this ecephys session (validated), None when LIMS links none; its trials,
    #: licks, rewards and change-detection stimulus go into the ecephys session's NWB file.
    behavior_session: Optional[BehaviorSessionInputs] = None


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
    import pandas as pd

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
    import h5py

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


def _first(indices: np.ndarray, n: int = 5) -> str:
    """``[a, b, c, ...]``: the first ``n`` of ``indices`` for an error message."""
    head = ", ".join(str(int(i)) for i in indices[:n])
    return f"[{head}{', ...' if len(indices) > n else ''}]"


# -- ophys -----------------------------------------------------------------------------------------------
#: The movie check reads this many evenly spaced blocks of consecutive frames (first and last block included).
MOVIE_SAMPLE_BLOCKS = 16
MOVIE_SAMPLE_BLOCK_FRAMES = 8


def movie_sample_starts(n_frames: int, blocks: int = MOVIE_SAMPLE_BLOCKS, block_frames: int = MOVIE_SAMPLE_BLOCK_FRAMES) -> np.ndarray:
    """First frame of each sampled block: ``blocks`` evenly spaced starts covering the first and last frames."""
    import numpy as np

    if n_frames <= 0:
        return np.zeros(0, dtype=np.int64)
    last = max(n_frames - block_frames, 0)
    return np.unique(np.linspace(0, last, num=max(1, blocks)).round().astype(np.int64))


def check_movie_sample(entity: str, path: Path, dataset: str = "data", *, blocks: int = MOVIE_SAMPLE_BLOCKS,
                       block_frames: int = MOVIE_SAMPLE_BLOCK_FRAMES) -> int:
    """Read evenly spaced blocks of frames and refuse a movie with NaN or infinite pixels in any of them.

    Integer movies cannot hold non-finite values and are not read. Returns the number of frames checked.
    """
    import h5py
    import numpy as np

    try:
        with h5py.File(path, "r") as fh:
            ds = fh[dataset]
            if not np.issubdtype(ds.dtype, np.inexact):
                return 0
            n_frames = int(ds.shape[0])
            checked = 0
            for start in movie_sample_starts(n_frames, blocks, block_frames):
                stop = min(int(start) + block_frames, n_frames)
                block = ds[int(start):stop]
                checked += stop - int(start)
                finite = np.isfinite(block)
                if not finite.all():
                    bad_frames = int(start) + np.flatnonzero(~finite.reshape(finite.shape[0], -1).all(axis=1))
                    raise InputError(
                        f"movie has NaN or infinite pixels: {int((~finite).sum())} non-finite values in frame(s) "
                        f"{_first(bad_frames)} of {n_frames} (found in a sample of evenly spaced frame blocks)",
                        entity=entity, path=path,
                    )
            return checked
    except InputError:
        raise
    except (OSError, KeyError, ValueError) as exc:
        raise InputError(f"cannot read movie frames (corrupt or truncated?): {exc}", entity=entity, path=path) from None


def validate_ophys_session(
    record: Mapping[str, Any],
    experiments: Sequence[Mapping[str, Any]],
    rois_by_experiment: Mapping[int, Sequence[Mapping[str, Any]]],
    behavior_session: Optional[BehaviorSessionInputs] = None,
) -> OphysSessionInputs:
    """Check an ophys session: stimulus table, timestamps, every plane's movie and ROIs; ``behavior_session`` is
    the linked behavior session, already validated."""
    base = _session_base(record)
    entity = f"ophys_session {base['session_id']}"
    if not experiments:
        raise InputError("no imaging planes (ophys_experiments) registered in LIMS", entity=entity)
    stim = require_file(entity, base["files"], "StimulusTable")
    read_csv_table(entity, stim, ["start_time", "stop_time", "stimulus_name"])
    planes = []
    for exp in experiments:
        planes.append(_validate_plane(entity, exp, rois_by_experiment.get(int(exp["id"]), ())))
    return OphysSessionInputs(**base, planes=planes, behavior_session=behavior_session)


def _validate_plane(entity: str, exp: Mapping[str, Any], rois: Sequence[Mapping[str, Any]]) -> OphysPlane:
    import numpy as np

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
    check_movie_sample(plane_entity, movie, "data")
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
    import numpy as np

    if not path.exists():
        raise InputError("sorter output file is missing", entity=entity, path=path)
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"unreadable .npy file: {exc}", entity=entity, path=path) from None


#: Per-spike arrays are checked in blocks of this many values, so memory does not grow with the recording.
SPIKE_CHECK_BLOCK = 1 << 22
#: The sorter's list of clusters (Kilosort/phy), when present in the sorting directory.
CLUSTER_TABLES = ("cluster_group.tsv", "cluster_info.tsv", "cluster_KSLabel.tsv")


def _blocks(arr: np.ndarray, block: Optional[int] = None):
    """``(start, values)`` per block of a per-spike array (``n`` or ``n x 1``), as a flat array."""
    import numpy as np

    n, block = arr.shape[0], block or SPIKE_CHECK_BLOCK
    for start in range(0, n, block):
        yield start, np.asarray(arr[start:start + block]).reshape(-1)


def _sorter_cluster_table(entity: str, sorting: Path) -> tuple[Optional[Path], Optional[np.ndarray]]:
    import numpy as np
    import pandas as pd

    for name in CLUSTER_TABLES:
        path = sorting / name
        if path.exists():
            try:
                table = pd.read_csv(path, sep="\t")
            except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
                raise InputError(f"unreadable cluster table: {exc}", entity=entity, path=path) from None
            column = "cluster_id" if "cluster_id" in table.columns else "id" if "id" in table.columns else None
            if column is None:
                raise InputError("cluster table has no cluster_id column", entity=entity, path=path)
            ids = pd.to_numeric(table[column], errors="coerce").to_numpy(dtype=np.float64)
            if not np.isfinite(ids).all() or (ids != np.round(ids)).any():
                raise InputError("cluster table has cluster ids that are not integers", entity=entity, path=path)
            return path, ids.astype(np.int64)
    return None, None


def check_sorter_arrays(entity: str, sorting: Path, arrays: Mapping[str, np.ndarray],
                        unit_cluster_ids: Sequence[Any] = ()) -> dict[int, int]:
    """Check the values of one probe's sorter outputs (shapes are checked by the caller).

    * ``spike_times.npy``: numeric, finite, never decreasing (sorter order);
    * ``amplitudes.npy``: numeric, finite, ``>= 0``;
    * ``spike_clusters.npy``: integers ``>= 0``, each listed in the sorter's cluster table when there is one;
    * ``spike_templates.npy``: integers indexing ``templates.npy``; ``templates.npy`` and
      ``whitening_mat_inv.npy`` finite;
    * every cluster a LIMS unit claims is one of the sorter's clusters and has at least one spike.

    Per-spike arrays are read in blocks. Raises one :class:`InputError` naming the file and the problem;
    returns the spike count per cluster id (clusters with spikes).
    """
    import numpy as np

    def fail(name: str, problem: str):
        raise InputError(f"{name} {problem}", entity=entity, path=sorting / name)

    for name in ("spike_times.npy", "amplitudes.npy", "spike_clusters.npy", "spike_templates.npy",
                 "templates.npy", "whitening_mat_inv.npy"):
        if not (np.issubdtype(arrays[name].dtype, np.integer) or np.issubdtype(arrays[name].dtype, np.floating)):
            fail(name, f"has dtype {arrays[name].dtype}, expected numbers")
    for name in ("spike_clusters.npy", "spike_templates.npy"):
        if not np.issubdtype(arrays[name].dtype, np.integer):
            fail(name, f"has dtype {arrays[name].dtype}, expected integer ids")

    times = arrays["spike_times.npy"]
    previous = None
    for start, t in _blocks(times):
        if np.issubdtype(t.dtype, np.floating):
            bad = np.flatnonzero(~np.isfinite(t))
            if bad.size:
                total = sum(int((~np.isfinite(b)).sum()) for _, b in _blocks(times))
                fail("spike_times.npy", f"has {total} NaN or infinite spike times (first at spike {start + int(bad[0])})")
        joined = t if previous is None else np.concatenate([previous, t])
        offset = start if previous is None else start - 1
        down = np.flatnonzero(joined[1:] < joined[:-1])  # (not np.diff: Kilosort writes unsigned samples)
        if down.size:
            first = offset + int(down[0]) + 1
            fail("spike_times.npy", f"is not in time order: spike {first} is earlier than spike {first - 1}")
        if t.size:
            previous = t[-1:]

    for start, a in _blocks(arrays["amplitudes.npy"]):
        if np.issubdtype(a.dtype, np.floating):
            bad = np.flatnonzero(~np.isfinite(a))
            if bad.size:
                total = sum(int((~np.isfinite(b)).sum()) for _, b in _blocks(arrays["amplitudes.npy"]))
                fail("amplitudes.npy", f"has {total} NaN or infinite amplitudes (first at spike {start + int(bad[0])})")
        neg = np.flatnonzero(a < 0)
        if neg.size:
            total = sum(int((b < 0).sum()) for _, b in _blocks(arrays["amplitudes.npy"]))
            fail("amplitudes.npy", f"has {total} negative amplitudes (first at spike {start + int(neg[0])})")

    templates = arrays["templates.npy"]
    for name in ("templates.npy", "whitening_mat_inv.npy"):
        values = np.asarray(arrays[name])
        if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
            fail(name, f"has {int((~np.isfinite(values)).sum())} NaN or infinite values")
    n_templates = templates.shape[0] if templates.ndim == 3 else 0
    for start, k in _blocks(arrays["spike_templates.npy"]):
        if k.size and (k.min() < 0 or k.max() >= n_templates):
            first = start + int(np.flatnonzero((k < 0) | (k >= n_templates))[0])
            fail("spike_templates.npy", f"refers to a template that does not exist (spike {first}: template "
                                        f"{int(k[first - start])}; templates.npy has {n_templates})")

    counts: dict[int, int] = {}
    for start, c in _blocks(arrays["spike_clusters.npy"]):
        if c.size and c.min() < 0:
            fail("spike_clusters.npy", f"has negative cluster ids (first at spike {start + int(np.flatnonzero(c < 0)[0])})")
        if not c.size:
            continue
        if int(c.max()) < 1 << 20:
            n = np.bincount(c.astype(np.int64, copy=False))
            ids = np.flatnonzero(n)
            n = n[ids]
        else:
            ids, n = np.unique(c, return_counts=True)
        for i, k in zip(ids.tolist(), n.tolist()):
            counts[int(i)] = counts.get(int(i), 0) + int(k)
    table_path, table_ids = _sorter_cluster_table(entity, sorting)
    if table_ids is not None:
        unlisted = sorted(set(counts) - set(table_ids.tolist()))
        if unlisted:
            fail("spike_clusters.npy", f"has spikes of clusters {_first(np.array(unlisted))} that {table_path.name} "
                                       f"does not list")
    known = set(counts) | (set() if table_ids is None else set(table_ids.tolist()))
    claimed = sorted({int(c) for c in unit_cluster_ids if c is not None})
    unknown = [c for c in claimed if c not in known]
    if unknown:
        fail("spike_clusters.npy", f"has no cluster {_first(np.array(unknown))} that LIMS units claim "
                                   f"(unknown to the sorter)")
    silent = [c for c in claimed if counts.get(c, 0) == 0]
    if silent:
        fail("spike_clusters.npy", f"has no spikes of clusters {_first(np.array(silent))} that LIMS units claim "
                                   f"(a unit needs at least one spike)")
    return counts


def validate_ecephys_session(record: Mapping[str, Any], probes: Sequence[Mapping[str, Any]],
                             behavior_session: Optional[BehaviorSessionInputs] = None) -> EcephysSessionInputs:
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
        check_sorter_arrays(probe_entity, sorting, arrays, [u.get("cluster_id") for u in probe.get("units") or []])
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
                lims_record=dict(probe),
            )
        )
    return EcephysSessionInputs(**base, probes=out, behavior_session=behavior_session)


# -- icephys -------------------------------------------------------------------------------------------------
def validate_icephys_cell(record: Mapping[str, Any]) -> IcephysCellInputs:
    import h5py

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

    The result carries everything later steps need from LIMS (an ophys or ecephys session its linked behavior
    session, an ecephys session its probes' records with channels and units), so no later step queries LIMS again.
    The input assets and the ``session_inputs`` module both call this.
    """
    record = client.session(kind, session_id)
    if kind == "ophys_session":
        experiments = client.ophys_experiments(session_id)
        rois = {int(e["id"]): client.roi_masks(int(e["id"])) for e in experiments}
        behavior_id = client.linked_behavior_session("ophys_session", session_id)
        behavior = resolve_session(client, "behavior_session", behavior_id) if behavior_id is not None else None
        return validate_ophys_session(record, experiments, rois, behavior)
    if kind == "behavior_session":
        return validate_behavior_session(record)
    if kind == "ecephys_session":
        behavior_id = client.linked_behavior_session("ecephys_session", session_id)
        behavior = resolve_session(client, "behavior_session", behavior_id) if behavior_id is not None else None
        return validate_ecephys_session(record, client.ecephys_probes(session_id), behavior)
    return validate_icephys_cell(record)
