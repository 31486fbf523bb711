"""HDF5 input/output for ophys: trace files and block-wise reading of motion-corrected movies.

Conventions
-----------
* The per-plane pipeline files, each read and written only here:

  ===========================  =============================================================
  ``roi_traces.h5``            ``data`` (N x T ROI-mask means), ``roi_names``
  ``neuropil_traces.h5``       ``data`` (N x T annulus means), ``roi_names``
  ``neuropil_masks.json``      ``{"neuropils": [LIMS-format mask records]}``
  ``roi_overlap_sums.h5``      ``data`` (P x T pixel sums over pairwise ROI mask intersections),
                               ``roi_a``, ``roi_b`` (P ROI ids each): gathered by extraction for demixing
  ``demixed_traces.h5``        ``data`` (N x T, NaN rows for excluded / flagged ROIs), ``roi_names``
  ``neuropil_correction.h5``   ``FC`` (N x T neuropil-corrected), ``r``, ``RMSE``, ``r_fit``,
                               ``fallback_used``, ``status`` (bytes), ``roi_names``, group ``r_vals/<row>``
  ``dff.h5``                   ``data`` (N x T dF/F), ``roi_names``, ``sigma_dff``, ``num_small_baseline_frames``
  ``events.h5``                ``events`` (N x T event magnitudes, dF/F units), ``lambdas`` (N), ``noise_stds`` (N),
                               ``roi_names`` (the N ROIs processed); attributes ``method``, ``parameters`` (JSON).
                               The datasets AllenSDK's ``EventDetectionFile`` reads (``OphysEventTraceFile``).
  ===========================  =============================================================
* A *trace file* holds one 2-D float dataset (``data`` by default; ``FC`` for neuropil-corrected
  traces) of shape N x T (ROIs x frames) and ``roi_names``: the N ROI ids as byte strings, in row
  order. Extra per-ROI vectors (``r``, ``RMSE``, ``sigma_dff``, ...) may sit beside them.
* ROI ids are handled as strings everywhere (LIMS ids are integers; ``b"1001"`` and ``1001`` both
  become ``"1001"``), so ids from JSON records and from h5 files compare equal.
* A *movie* is an HDF5 dataset (``data``) of shape T x H x W (frames x rows x columns), usually uint16.
  It is never loaded whole: :func:`iter_sparse_frame_sums` reads blocks of frames, restricted to the
  bounding box of the pixels that are actually used, and reduces each block with a sparse matrix
  product, so peak memory depends on the block size, not on the movie length.

Every reader turns a missing file, a corrupt file, a missing dataset or a wrong shape into an
:class:`~release_platform.errors.InputError` naming the file; every writer is atomic
(:func:`~release_platform.atomic.atomic_write`).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import h5py
import numpy as np
import scipy.sparse as sparse

from release_platform.staging import require_local
from release_platform.errors import InputError
from release_platform.atomic import atomic_path, atomic_write

TRACE_DATASET = "data"
ROI_NAMES_DATASET = "roi_names"
MOVIE_DATASET = "data"

#: File names of the per-plane pipeline files (see the module docstring for their layouts).
ROI_TRACES_FILE = "roi_traces.h5"
NEUROPIL_TRACES_FILE = "neuropil_traces.h5"
NEUROPIL_MASKS_FILE = "neuropil_masks.json"
OVERLAP_SUMS_FILE = "roi_overlap_sums.h5"
DEMIXED_TRACES_FILE = "demixed_traces.h5"
NEUROPIL_CORRECTED_FILE = "neuropil_correction.h5"
DFF_FILE = "dff.h5"
EVENTS_FILE = "events.h5"
#: The trace dataset of the neuropil-corrected file and the per-ROI vectors of the dF/F file.
NEUROPIL_CORRECTED_DATASET = "FC"
SIGMA_DFF_DATASET = "sigma_dff"
SMALL_BASELINE_FRAMES_DATASET = "num_small_baseline_frames"

#: Default memory budget for one block of movie frames as read from the file (bytes).
DEFAULT_BLOCK_BYTES = 64 * 1024**2


# ----------------------------------------------------------------------------------------------
# generic h5 access


def _open_file(path: str | os.PathLike, entity: str | None) -> h5py.File:
    path = require_local(path, entity=entity)  # HDF5 is read from local disk only: a remote URL is refused
    if not path.exists():
        raise InputError("file not found", entity=entity, path=path)
    if not path.is_file():
        raise InputError("not a regular file", entity=entity, path=path)
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise InputError(f"not a readable HDF5 file ({exc})", entity=entity, path=path) from None


@contextlib.contextmanager
def open_h5(path: str | os.PathLike, *, entity: str | None = None) -> Iterator[h5py.File]:
    """Open an HDF5 file read-only; a missing or unreadable file becomes an InputError (and a remote one is refused:
    HDF5 is read from local disk only)."""
    handle = _open_file(path, entity)
    try:
        yield handle
    finally:
        handle.close()


def require_dataset(
    handle: h5py.File,
    name: str,
    *,
    ndim: int | None = None,
    numeric: bool = True,
    entity: str | None = None,
) -> h5py.Dataset:
    """The dataset ``name`` of an open file, checked for presence, rank and numeric dtype."""
    path = handle.filename
    if name not in handle:
        present = ", ".join(sorted(handle.keys())) or "none"
        raise InputError(f"dataset {name!r} is missing (datasets present: {present})", entity=entity, path=path)
    obj = handle[name]
    if not isinstance(obj, h5py.Dataset):
        raise InputError(f"{name!r} is a group, expected a dataset", entity=entity, path=path)
    if ndim is not None and obj.ndim != ndim:
        raise InputError(f"dataset {name!r} has shape {obj.shape}, expected {ndim} dimensions", entity=entity, path=path)
    if numeric and obj.dtype.kind not in "biuf":
        raise InputError(f"dataset {name!r} has non-numeric dtype {obj.dtype}", entity=entity, path=path)
    return obj


def _read(dataset: h5py.Dataset, *, entity: str | None) -> np.ndarray:
    try:
        return dataset[()]
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"dataset {dataset.name!r} cannot be read ({exc})", entity=entity, path=dataset.file.filename) from None


def decode_roi_ids(raw: Any, *, entity: str | None = None, path: str | os.PathLike | None = None) -> list[str]:
    """ROI ids as strings from bytes, str or integer values (h5 ``roi_names``, JSON ``id``)."""
    values = np.asarray(raw, dtype=object).ravel()
    ids: list[str] = []
    for value in values:
        if isinstance(value, (bytes, np.bytes_)):
            try:
                text = bytes(value).decode("utf-8")
            except UnicodeDecodeError:
                raise InputError(f"ROI name {value!r} is not UTF-8", entity=entity, path=path) from None
        elif isinstance(value, (bool, np.bool_)):
            raise InputError(f"ROI name {value!r} is a boolean, expected an id", entity=entity, path=path)
        elif isinstance(value, (int, np.integer)):
            text = str(int(value))
        elif isinstance(value, (str, np.str_)):
            text = str(value)
        else:
            raise InputError(f"ROI name {value!r} has unsupported type {type(value).__name__}", entity=entity, path=path)
        text = text.strip()
        if not text:
            raise InputError("an ROI name is empty", entity=entity, path=path)
        ids.append(text)
    duplicates = sorted({i for i in ids if ids.count(i) > 1}) if len(set(ids)) != len(ids) else []
    if duplicates:
        raise InputError(f"duplicate ROI ids: {', '.join(duplicates[:10])}", entity=entity, path=path)
    return ids


def encode_roi_ids(roi_ids: Sequence[Any]) -> np.ndarray:
    """ROI ids as a fixed-length byte-string array (the ``roi_names`` layout of AllenSDK files)."""
    texts = decode_roi_ids(list(roi_ids))
    return np.array([t.encode("utf-8") for t in texts], dtype=np.bytes_)


@dataclass(frozen=True)
class TraceFile:
    """Traces read from an h5 file: ``traces`` N x T float64, ``roi_ids`` (N strings), ``path``."""

    traces: np.ndarray
    roi_ids: list[str]
    path: Path


def read_traces(
    path: str | os.PathLike,
    *,
    dataset: str = TRACE_DATASET,
    roi_field: str = ROI_NAMES_DATASET,
    entity: str | None = None,
) -> TraceFile:
    """Read an N x T trace dataset and its ROI ids, validating shapes.

    Raises InputError when the file is missing or corrupt, a dataset is missing, ``dataset`` is not
    2-D numeric, or ``roi_field`` does not hold exactly N distinct ids.
    """
    path = Path(path)
    with open_h5(path, entity=entity) as handle:
        data_ds = require_dataset(handle, dataset, ndim=2, entity=entity)
        names_ds = require_dataset(handle, roi_field, numeric=False, entity=entity)
        if names_ds.ndim != 1:
            raise InputError(f"dataset {roi_field!r} has shape {names_ds.shape}, expected 1-D", entity=entity, path=path)
        traces = np.asarray(_read(data_ds, entity=entity), dtype=np.float64)
        ids = decode_roi_ids(_read(names_ds, entity=entity), entity=entity, path=path)
    if len(ids) != traces.shape[0]:
        raise InputError(
            f"{roi_field!r} holds {len(ids)} ROI ids but {dataset!r} has {traces.shape[0]} rows",
            entity=entity,
            path=path,
        )
    return TraceFile(traces=traces, roi_ids=ids, path=path)


def read_vector(
    path: str | os.PathLike, dataset: str, *, length: int | None = None, entity: str | None = None
) -> np.ndarray:
    """Read a 1-D numeric dataset (e.g. ``r``, ``RMSE``), optionally checking its length."""
    with open_h5(path, entity=entity) as handle:
        values = np.asarray(_read(require_dataset(handle, dataset, ndim=1, entity=entity), entity=entity))
    if length is not None and values.shape[0] != length:
        raise InputError(f"dataset {dataset!r} has {values.shape[0]} values, expected {length}", entity=entity, path=path)
    return values


def write_traces(
    path: str | os.PathLike,
    traces: np.ndarray,
    roi_ids: Sequence[Any],
    *,
    dataset: str = TRACE_DATASET,
    roi_field: str = ROI_NAMES_DATASET,
    extra: Mapping[str, np.ndarray] | None = None,
    compression: str | None = "gzip",
    entity: str | None = None,
) -> Path:
    """Atomically write ``traces`` (N x T float64), ``roi_field`` (ids as byte strings) and ``extra``.

    The file is written under a temporary name unique to this writer, re-opened to verify the shapes, then
    renamed onto ``path``; on any failure no file appears under ``path`` and an older one is left untouched.
    Not enough free space for the raw arrays fails first, in one line; a disk that fills anyway gives one
    :class:`~release_platform.atomic.DiskFullError` naming the file (see :func:`release_platform.atomic.atomic_write`).
    """
    path = Path(path)
    traces = np.asarray(traces, dtype=np.float64)
    if traces.ndim != 2:
        raise ValueError(f"traces must be 2-D (N x T), got shape {traces.shape}")
    names = encode_roi_ids(roi_ids)
    if names.shape[0] != traces.shape[0]:
        raise ValueError(f"{names.shape[0]} ROI ids for {traces.shape[0]} trace rows")
    extra = {name: np.asarray(values) for name, values in (extra or {}).items()}

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as handle:
            kwargs: dict[str, Any] = {}
            if compression and traces.size:
                kwargs = {"compression": compression, "chunks": (1, max(1, min(traces.shape[1], 1 << 16)))}
            handle.create_dataset(dataset, data=traces, **kwargs)
            handle.create_dataset(roi_field, data=names)
            for name, values in extra.items():
                handle.create_dataset(name, data=values)
        with h5py.File(tmp, "r") as handle:
            if handle[dataset].shape != traces.shape or handle[roi_field].shape != names.shape:
                raise OSError(f"{tmp}: verification after writing failed")

    expected = traces.nbytes + names.nbytes + sum(v.nbytes for v in extra.values()) + (1 << 16)
    atomic_write(path, write, expected_bytes=expected, entity=entity, digest=True)  # an NWB input: digest recorded
    return path


def check_roi_ids_match(
    expected: Sequence[str],
    found: Sequence[str],
    *,
    expected_label: str,
    found_label: str,
    entity: str | None = None,
    path: str | os.PathLike | None = None,
    same_order: bool = False,
) -> None:
    """Raise InputError unless both id lists hold the same ids (and, if asked, in the same order)."""
    exp, got = [str(i) for i in expected], [str(i) for i in found]
    missing = [i for i in exp if i not in set(got)]
    unexpected = [i for i in got if i not in set(exp)]
    if missing or unexpected or len(exp) != len(got):
        parts = []
        if missing:
            parts.append(f"in {expected_label} but not in {found_label}: {', '.join(missing[:10])}")
        if unexpected:
            parts.append(f"in {found_label} but not in {expected_label}: {', '.join(unexpected[:10])}")
        if not parts:
            parts.append(f"{expected_label} has {len(exp)} ids, {found_label} has {len(got)}")
        raise InputError("ROI ids disagree: " + "; ".join(parts), entity=entity, path=path)
    if same_order and exp != got:
        raise InputError(f"ROI ids of {expected_label} and {found_label} are in a different order", entity=entity, path=path)


# ----------------------------------------------------------------------------------------------
# the per-plane pipeline files


def write_neuropil_masks(path: str | os.PathLike, records: Sequence[Mapping[str, Any]]) -> Path:
    """Atomically write ``neuropil_masks.json`` (``{"neuropils": records}``)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({"neuropils": list(records)}))
    return path


def write_overlap_sums(path: str | os.PathLike, pairs: Sequence[tuple[Any, Any]], sums: np.ndarray) -> Path:
    """Atomically write ``roi_overlap_sums.h5``: ``data`` (P x T float64) and the ROI id pairs ``roi_a``, ``roi_b``."""
    path = Path(path)
    sums = np.asarray(sums, dtype=np.float64)
    first = np.array([str(a).encode("utf-8") for a, _ in pairs], dtype=np.bytes_)
    second = np.array([str(b).encode("utf-8") for _, b in pairs], dtype=np.bytes_)
    if sums.ndim != 2 or sums.shape[0] != first.shape[0]:
        raise ValueError(f"{first.shape[0]} ROI pairs for sums of shape {sums.shape}")

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as handle:
            handle.create_dataset(TRACE_DATASET, data=sums)
            handle.create_dataset("roi_a", data=first, shape=first.shape, dtype=first.dtype if first.size else "S1")
            handle.create_dataset("roi_b", data=second, shape=second.shape, dtype=second.dtype if second.size else "S1")

    atomic_write(path, write, expected_bytes=sums.nbytes + first.nbytes + second.nbytes + (1 << 16))
    return path


def read_overlap_sums(path: str | os.PathLike, *, entity: str | None = None) -> tuple[list[tuple[str, str]], np.ndarray]:
    """``(pairs of ROI ids, sums P x T)`` from ``roi_overlap_sums.h5``."""
    with open_h5(path, entity=entity) as handle:
        sums = np.asarray(_read(require_dataset(handle, TRACE_DATASET, ndim=2, entity=entity), entity=entity), dtype=np.float64)
        first = _read(require_dataset(handle, "roi_a", ndim=1, numeric=False, entity=entity), entity=entity)
        second = _read(require_dataset(handle, "roi_b", ndim=1, numeric=False, entity=entity), entity=entity)
    if not (len(first) == len(second) == sums.shape[0]):
        raise InputError(f"{len(first)} and {len(second)} ROI ids for {sums.shape[0]} rows of sums", entity=entity, path=path)
    pairs = [(a.decode("utf-8").strip(), b.decode("utf-8").strip()) for a, b in zip(first, second)]
    return pairs, sums


@dataclass(frozen=True)
class NeuropilCorrectedFile:
    """``neuropil_correction.h5``: ``traces`` (FC, N x T) with ``roi_ids``, and per-ROI ``r``, ``rmse``, ``status``."""

    traces: np.ndarray
    roi_ids: list[str]
    r: np.ndarray
    rmse: np.ndarray
    status: np.ndarray
    path: Path


def write_neuropil_corrected(
    path: str | os.PathLike,
    *,
    corrected: np.ndarray,
    roi_ids: Sequence[Any],
    r: np.ndarray,
    rmse: np.ndarray,
    r_fit: np.ndarray,
    fallback_used: np.ndarray,
    status: Sequence[str],
    r_vals: Sequence[np.ndarray | None],
) -> Path:
    """Atomically write ``neuropil_correction.h5`` (layout in the module docstring); ``r_vals[row]`` None
    leaves that row out of the ``r_vals`` group."""
    path = Path(path)

    def write(tmp):
        with h5py.File(tmp, "w") as handle:
            handle.create_dataset(NEUROPIL_CORRECTED_DATASET, data=corrected, compression="gzip")
            handle.create_dataset("r", data=r)
            handle.create_dataset("RMSE", data=rmse)
            handle.create_dataset("r_fit", data=r_fit)
            handle.create_dataset("fallback_used", data=fallback_used)
            handle.create_dataset("status", data=np.array([s.encode() for s in status], dtype=np.bytes_))
            handle.create_dataset(ROI_NAMES_DATASET, data=encode_roi_ids(roi_ids))
            group = handle.create_group("r_vals")
            for row, values in enumerate(r_vals):
                if values is not None:
                    group.create_dataset(str(row), data=values)

    expected = (np.asarray(corrected).nbytes + 6 * np.asarray(r).nbytes
                + sum(np.asarray(v).nbytes for v in r_vals if v is not None))
    atomic_write(path, write, expected_bytes=expected + (1 << 16), digest=True)  # an NWB input: digest recorded
    return path


def read_neuropil_corrected(path: str | os.PathLike, *, entity: str | None = None) -> NeuropilCorrectedFile:
    """Read ``neuropil_correction.h5``: FC traces, ROI ids, and ``r``, ``RMSE``, ``status`` checked to have N values."""
    traces = read_traces(path, dataset=NEUROPIL_CORRECTED_DATASET, entity=entity)
    n = len(traces.roi_ids)
    r = read_vector(path, "r", length=n, entity=entity)
    rmse = read_vector(path, "RMSE", length=n, entity=entity)
    with open_h5(path, entity=entity) as handle:
        status_ds = require_dataset(handle, "status", ndim=1, numeric=False, entity=entity)
        status = np.asarray(_read(status_ds, entity=entity)).astype(str)
    if status.shape[0] != n:
        raise InputError(f"dataset 'status' has {status.shape[0]} values, expected {n}", entity=entity, path=path)
    return NeuropilCorrectedFile(traces=traces.traces, roi_ids=traces.roi_ids, r=r, rmse=rmse, status=status,
                                 path=Path(path))


def read_ratio_status(path: str | os.PathLike, *, entity: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``r`` and ``status`` (as str) of ``neuropil_correction.h5`` without reading the traces."""
    r = read_vector(path, "r", entity=entity)
    with open_h5(path, entity=entity) as handle:
        status = np.asarray(_read(require_dataset(handle, "status", ndim=1, numeric=False, entity=entity), entity=entity)).astype(str)
    if status.shape[0] != r.shape[0]:
        raise InputError(f"dataset 'status' has {status.shape[0]} values, 'r' has {r.shape[0]}", entity=entity, path=path)
    return r, status


def write_dff(
    path: str | os.PathLike,
    dff: np.ndarray,
    roi_ids: Sequence[Any],
    *,
    sigma_dff: np.ndarray,
    num_small_baseline_frames: np.ndarray,
    dataset: str = TRACE_DATASET,
    roi_field: str = ROI_NAMES_DATASET,
    sigma_dataset: str = SIGMA_DFF_DATASET,
    baseline_frames_dataset: str = SMALL_BASELINE_FRAMES_DATASET,
) -> Path:
    """Atomically write ``dff.h5`` (dataset names overridable, as the dF/F module's JSON allows)."""
    return write_traces(path, dff, roi_ids, dataset=dataset, roi_field=roi_field,
                        extra={sigma_dataset: sigma_dff, baseline_frames_dataset: num_small_baseline_frames})


def read_dff(path: str | os.PathLike, *, entity: str | None = None) -> TraceFile:
    """The dF/F traces of ``dff.h5`` (``data``, ``roi_names``)."""
    return read_traces(path, entity=entity)


@dataclass(frozen=True)
class TraceLayout:
    """A trace file's header without its traces: ``roi_ids`` (row order) and the N x T ``shape`` of ``dataset``."""

    path: Path
    dataset: str
    roi_ids: list[str]
    shape: tuple[int, int]


def read_trace_layout(path: str | os.PathLike, *, dataset: str = TRACE_DATASET, entity: str | None = None) -> TraceLayout:
    """ROI ids and the N x T shape of a trace file's ``dataset`` (the traces themselves are not read)."""
    path = Path(path)
    with open_h5(path, entity=entity) as handle:
        shape = tuple(int(n) for n in require_dataset(handle, dataset, ndim=2, entity=entity).shape)
        ids = decode_roi_ids(_read(require_dataset(handle, ROI_NAMES_DATASET, numeric=False, entity=entity), entity=entity),
                             entity=entity, path=path)
    if len(ids) != shape[0]:
        raise InputError(f"{ROI_NAMES_DATASET!r} holds {len(ids)} ids but {dataset!r} has {shape[0]} rows", entity=entity, path=path)
    return TraceLayout(path, dataset, ids, shape)


def open_trace_dataset(path: str | os.PathLike, *, dataset: str = TRACE_DATASET, entity: str | None = None) -> h5py.Dataset:
    """A trace file's N x T ``dataset``, open for block reads (streaming into NWB); the caller closes ``.file``."""
    handle = _open_file(Path(path), entity)
    try:
        return require_dataset(handle, dataset, ndim=2, entity=entity)
    except InputError:
        handle.close()
        raise


def read_trace_block(ds: h5py.Dataset, selection: Any, *, entity: str | None = None) -> np.ndarray:
    """``ds[selection]`` of an open trace dataset; a read error names the file."""
    try:
        return ds[selection]
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read dataset {ds.name.lstrip('/')!r} (corrupt?): {exc}", entity=entity,
                         path=ds.file.filename) from None


def read_roi_vectors(path: str | os.PathLike, names: Sequence[str], *, text: Sequence[str] = ("status",),
                     entity: str | None = None) -> dict[str, np.ndarray]:
    """1-D per-ROI datasets stored beside a file's traces, as stored (``r``, ``RMSE``, ``status`` of
    ``neuropil_correction.h5``; ``sigma_dff``, ``num_small_baseline_frames`` of ``dff.h5``); the names in
    ``text`` may hold strings, the others must be numeric."""
    with open_h5(path, entity=entity) as handle:
        return {name: _read(require_dataset(handle, name, ndim=1, numeric=name not in text, entity=entity), entity=entity)
                for name in names}


@dataclass(frozen=True)
class EventsFile:
    """``events.h5``: ``events`` N x T, ``lambdas`` N, ``noise_stds`` N, ``roi_ids``, ``method``, ``parameters``."""

    events: np.ndarray
    lambdas: np.ndarray
    noise_stds: np.ndarray
    roi_ids: list[str]
    method: str
    parameters: dict[str, Any]
    path: Path


def write_events_file(
    path: str | os.PathLike,
    *,
    events: np.ndarray,
    lambdas: np.ndarray,
    noise_stds: np.ndarray,
    roi_ids: Sequence[Any],
    method: str,
    parameters: Mapping[str, Any] | None = None,
    entity: str | None = None,
) -> Path:
    """Atomically write ``events.h5`` (layout in the module docstring); ``parameters`` must be JSON-serialisable."""
    events = np.asarray(events, dtype=np.float64)
    n = events.shape[0] if events.ndim == 2 else -1
    lambdas = np.asarray(lambdas, dtype=np.float64)
    noise_stds = np.asarray(noise_stds, dtype=np.float64)
    if events.ndim != 2 or lambdas.shape != (n,) or noise_stds.shape != (n,):
        raise ValueError(f"events must be N x T with N lambdas and noise_stds, got {events.shape}, "
                         f"{lambdas.shape}, {noise_stds.shape}")
    names = encode_roi_ids(roi_ids)
    if names.shape[0] != n:
        raise ValueError(f"{names.shape[0]} ROI ids for {n} event rows")
    attrs = {"method": method, "parameters": json.dumps(dict(parameters or {}), sort_keys=True, default=float)}
    path = Path(path)

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as handle:
            kwargs: dict[str, Any] = {}
            if events.size:
                kwargs = {"compression": "gzip", "chunks": (1, max(1, min(events.shape[1], 1 << 16)))}
            handle.create_dataset("events", data=events, **kwargs)
            handle.create_dataset("lambdas", data=lambdas)
            handle.create_dataset("noise_stds", data=noise_stds)
            handle.create_dataset(ROI_NAMES_DATASET, data=names)
            handle.attrs.update(attrs)
        with h5py.File(tmp, "r") as handle:
            if handle["events"].shape != events.shape or handle[ROI_NAMES_DATASET].shape != names.shape:
                raise OSError(f"{tmp}: verification after writing failed")

    atomic_write(path, write, expected_bytes=events.nbytes + 3 * lambdas.nbytes + names.nbytes + (1 << 16), entity=entity)
    return path


def read_events_file(path: str | os.PathLike, *, entity: str | None = None) -> EventsFile:
    """Read ``events.h5``, checking that ``lambdas`` and ``noise_stds`` have one value per ROI."""
    traces = read_traces(path, dataset="events", entity=entity)
    n = len(traces.roi_ids)
    lambdas = read_vector(path, "lambdas", length=n, entity=entity).astype(np.float64)
    noise = read_vector(path, "noise_stds", length=n, entity=entity).astype(np.float64)
    with open_h5(path, entity=entity) as handle:
        method = handle.attrs.get("method", "")
        raw = handle.attrs.get("parameters", "{}")
    method = method.decode() if isinstance(method, bytes) else str(method)
    try:
        parameters = json.loads(raw.decode() if isinstance(raw, bytes) else str(raw))
    except ValueError:
        raise InputError("attribute 'parameters' is not valid JSON", entity=entity, path=path) from None
    return EventsFile(events=traces.traces, lambdas=lambdas, noise_stds=noise, roi_ids=traces.roi_ids,
                      method=method, parameters=parameters, path=Path(path))


# ----------------------------------------------------------------------------------------------
# movies


@contextlib.contextmanager
def open_movie(
    path: str | os.PathLike, *, dataset: str = MOVIE_DATASET, entity: str | None = None
) -> Iterator[h5py.Dataset]:
    """Open a motion-corrected movie (T x H x W dataset) for block-wise reading."""
    with open_h5(path, entity=entity) as handle:
        movie = require_dataset(handle, dataset, ndim=3, entity=entity)
        if min(movie.shape) < 1:
            raise InputError(f"movie dataset {dataset!r} is empty (shape {movie.shape})", entity=entity, path=path)
        yield movie


def movie_shape(movie: Any, *, entity: str | None = None, path: str | os.PathLike | None = None) -> tuple[int, int, int]:
    """(T, H, W) of an h5py dataset or array, checked to be a non-empty numeric T x H x W stack."""
    shape = tuple(int(s) for s in getattr(movie, "shape", ()))
    if len(shape) != 3 or min(shape) < 1:
        raise InputError(f"movie has shape {shape}, expected a non-empty T x H x W stack", entity=entity, path=path)
    kind = np.dtype(movie.dtype).kind
    if kind not in "biuf":
        raise InputError(f"movie has non-numeric dtype {movie.dtype}", entity=entity, path=path)
    return shape  # type: ignore[return-value]


def choose_block_frames(
    movie: Any, pixels_per_frame: int, *, block_frames: int | None = None, budget_bytes: int = DEFAULT_BLOCK_BYTES
) -> int:
    """Frames per block: ``block_frames`` if given, else as many as fit ``budget_bytes`` in the movie dtype.

    For a chunked h5 dataset the automatic choice is a multiple of the chunk length along time, so
    each compressed chunk is decoded once.
    """
    if block_frames is not None:
        if int(block_frames) < 1:
            raise InputError(f"block_frames must be >= 1, got {block_frames}")
        return int(block_frames)
    per_frame = max(1, pixels_per_frame) * np.dtype(movie.dtype).itemsize
    frames = max(1, budget_bytes // per_frame)
    chunks = getattr(movie, "chunks", None)
    if chunks:
        step = int(chunks[0])
        frames = max(step, (frames // step) * step)
    return int(frames)


def check_mask_pixels(
    masks: Any, frame_shape: tuple[int, int], *, entity: str | None = None, path: str | os.PathLike | None = None
) -> None:
    """InputError unless the K x P mask matrix covers the H x W pixels of a frame (P = H * W)."""
    height, width = frame_shape
    if masks.shape[1] != height * width:
        raise InputError(
            f"masks cover {masks.shape[1]} pixels but movie frames have {height} x {width} = {height * width}",
            entity=entity,
            path=path,
        )


def iter_sparse_frame_sums(
    movie: Any,
    weights: sparse.spmatrix | sparse.sparray,
    *,
    block_frames: int | None = None,
    budget_bytes: int = DEFAULT_BLOCK_BYTES,
    entity: str | None = None,
    path: str | os.PathLike | None = None,
) -> Iterator[tuple[int, int, np.ndarray]]:
    """Stream ``weights @ frame`` for every frame of ``movie``, block by block.

    ``weights`` is a K x (H*W) sparse matrix over row-major flattened pixels. Yields
    ``(t0, t1, sums)`` with ``sums`` of shape K x (t1 - t0), float64. Only the bounding box of the
    pixels that carry a weight is read from the movie, ``block_frames`` frames at a time (default:
    :func:`choose_block_frames`), so memory does not depend on the movie length. With integer
    movies and integer weights the sums are exact (float64 holds integers up to 2**53).
    """
    n_frames, height, width = movie_shape(movie, entity=entity, path=path)
    weights = sparse.csr_matrix(weights, dtype=np.float64)
    check_mask_pixels(weights, (height, width), entity=entity, path=path)
    n_rows = weights.shape[0]
    if weights.nnz == 0:
        step = choose_block_frames(movie, 1, block_frames=block_frames, budget_bytes=budget_bytes)
        for t0 in range(0, n_frames, step):
            t1 = min(n_frames, t0 + step)
            yield t0, t1, np.zeros((n_rows, t1 - t0))
        return
    rows, cols = np.divmod(weights.indices, width)
    r0, r1, c0, c1 = int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1
    box_w = c1 - c0
    box_pixels = (r1 - r0) * box_w
    # weights over the pixels of the bounding box (row-major inside the box)
    sub = sparse.csr_matrix(
        (weights.data, (rows - r0) * box_w + (cols - c0), weights.indptr), shape=(n_rows, box_pixels)
    )
    step = choose_block_frames(movie, box_pixels, block_frames=block_frames, budget_bytes=budget_bytes)
    is_h5 = isinstance(movie, h5py.Dataset)
    buffer = np.empty((min(step, n_frames), r1 - r0, box_w), dtype=movie.dtype)
    for t0 in range(0, n_frames, step):
        t1 = min(n_frames, t0 + step)
        n = t1 - t0
        block = buffer[:n]
        try:
            if is_h5:
                movie.read_direct(block, source_sel=np.s_[t0:t1, r0:r1, c0:c1])
            else:
                block[...] = movie[t0:t1, r0:r1, c0:c1]
        except (OSError, ValueError) as exc:
            raise InputError(f"movie frames {t0}-{t1 - 1} cannot be read ({exc})", entity=entity, path=path) from None
        flat = block.reshape(n, box_pixels)
        sums = np.empty((n_rows, n))
        # One CSR mat-vec per frame on the contiguous frame row: the row stays in cache and no
        # transposed copy of the block is made.
        for k in range(n):
            sums[:, k] = sub @ flat[k]
        yield t0, t1, sums

