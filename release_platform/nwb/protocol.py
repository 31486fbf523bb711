"""The NWB write protocol every writer (ecephys, ophys, ...) shares.

:func:`write_nwb` takes a ``build`` callable that returns an in-memory ``pynwb.NWBFile`` and:

1. removes the ``<name>.error`` report of an earlier failure (never the previous good ``<name>``, never another
   writer's temporary file);
2. builds the file, applies the chunking/compression configuration (:mod:`release_platform.nwb.config`)
   and, by default, replaces hdmf's random object ids by ids derived from the file identifier and each
   object's location, so the same inputs give the same bytes;
3. estimates the file's size (:func:`estimate_nwb_bytes`) and refuses, in one line (needed, free, directory), when
   the destination has less free space;
4. writes a temporary name unique to this writer (``<name>.<pid>-<random>.inprogress``,
   :mod:`release_platform.atomic`) — in a child process unless the disk has room to spare (several times the
   estimate, and the uncompressed size, plus a reserve: :func:`release_platform.atomic.should_isolate`), because
   HDF5 crashes the process (SIGSEGV) after a write fails with ENOSPC; a crash of the child is reported, never
   inherited;
5. validates it: PyNWB schema validation, then a round trip: the file is read back and every dataset
   written is compared with what was written (in-memory arrays exactly, NaN = NaN; streamed data block
   by block against its source, re-read through the iterator, so nothing big sits in memory);
6. renames it to ``<name>``.

On any failure the temporary file is removed and ``<name>.error`` holds the message (with ``keep_failed_files``,
or ``RELEASE_PLATFORM_KEEP_FAILED_FILES=1``, the partial file itself is kept as ``<name>.error``), and one
:class:`NwbWriteError` is raised naming the entity and the file (:class:`NwbDiskFullError` when the disk is full).
``<name>`` itself is untouched, so a previous good file survives a failed re-run.

Determinism: writers take identifiers from :func:`deterministic_identifier` (uuid5 of entity ids) and
fixed timestamps (e.g. ``file_create_date`` = session start), and put :func:`provenance_record` (package
version, git revision when available, parameters, SHA-256 of every input file by file name) as JSON into
``NWBFile.source_script``; two writes of the same inputs with the same code give identical dataset
contents.

:class:`H5DatasetIterator` streams an HDF5 dataset into an NWB dataset buffer by buffer (hdmf
``GenericDataChunkIterator``), for LFP and movies that must never sit whole in memory.

Size: about 690 lines, one module because the protocol's steps (space estimate, temporary name, write,
validation, read-back, rename, error report) share the temporary-file state and its clean-up paths.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import os
import uuid
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import h5py
import numpy as np
from hdmf.container import AbstractContainer
from hdmf.data_utils import AbstractDataChunkIterator, DataIO, GenericDataChunkIterator

from release_platform import atomic
from release_platform.atomic import ERROR_SUFFIX, TEMP_SUFFIX, DiskFullError, sha256_file, temp_path
from release_platform.errors import InputError
from release_platform.nwb.config import BackendConfiguration, DatasetIOConfiguration, apply_backend_configuration, iter_datasets
from release_platform.nwb.inspection import validate_open_nwb
from release_platform.nwb.provenance import git_revision, input_digests, provenance_json, provenance_record, read_provenance

__all__ = [
    "INPROGRESS_SUFFIX",
    "ERROR_SUFFIX",
    "NAMESPACE",
    "NwbWriteError",
    "NwbDiskFullError",
    "estimate_nwb_bytes",
    "keep_failed_files_default",
    "WriteResult",
    "H5DatasetIterator",
    "deterministic_identifier",
    "deterministic_uuid",
    "sha256_file",
    "input_digests",
    "git_revision",
    "provenance_record",
    "provenance_json",
    "read_provenance",
    "write_nwb",
    "compare_written",
    "regular_rate",
]

log = logging.getLogger(__name__)

INPROGRESS_SUFFIX = TEMP_SUFFIX
#: Namespace of every identifier this platform derives (uuid5 of the platform's name).
NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "release_platform")


class NwbWriteError(InputError):
    """Writing or validating an NWB file failed. Names the entity and the NWB file; the cause is chained.

    A subclass of :class:`InputError` so every entry point reports it as one clear message.
    """

    def __init__(self, problem: str, *, entity: str | None = None, path: str | os.PathLike | None = None,
                 error_path: str | os.PathLike | None = None):
        super().__init__(problem, entity=entity, path=path)
        self.error_path = None if error_path is None else os.fspath(error_path)


@dataclasses.dataclass(frozen=True)
class WriteResult:
    """What :func:`write_nwb` did: the final path, datasets compared, settings used per location."""

    path: Path
    entity: str
    identifier: str
    n_datasets_checked: int
    n_bytes: int
    locations: dict[str, DatasetIOConfiguration]


# ---------------------------------------------------------------------------------------------------------
# Identifiers and provenance
# ---------------------------------------------------------------------------------------------------------


def deterministic_uuid(*parts: Any) -> uuid.UUID:
    """uuid5 in the platform namespace of the parts joined by ``/``."""
    return uuid.uuid5(NAMESPACE, "/".join(str(p) for p in parts))


def deterministic_identifier(kind: str, *ids: Any) -> str:
    """A stable NWB identifier for an entity, e.g. ``deterministic_identifier("ecephys_session", 1001)``."""
    return str(deterministic_uuid(kind, *ids))


def regular_rate(timestamps: Any, *, tolerance_decimals: int = 9, block_rows: int = 1 << 22) -> Optional[tuple[float, float]]:
    """``(starting_time, rate)`` when the timestamps are regular, else ``None``.

    Regular = every consecutive difference is the same after rounding to ``tolerance_decimals`` (NWB
    Inspector's ``check_regular_timestamps`` rule), so a writer can store ``starting_time`` and ``rate``
    instead of the timestamps. ``timestamps`` may be an array or an h5py dataset; it is read in blocks.
    The rate is ``(n - 1) / (last - first)``.
    """
    n = int(timestamps.shape[0]) if hasattr(timestamps, "shape") else len(timestamps)
    if n < 3:
        return None
    ref = None
    prev_last = None
    for start in range(0, n, block_rows):
        block = np.asarray(timestamps[start : min(start + block_rows, n)], dtype=np.float64)
        if prev_last is not None:
            block = np.concatenate([[prev_last], block])
        if not np.all(np.isfinite(block)):
            return None
        diffs = np.unique(np.round(np.diff(block), tolerance_decimals))
        if len(diffs) != 1 or (ref is not None and diffs[0] != ref):
            return None
        ref = diffs[0]
        prev_last = block[-1]
    first, last = float(timestamps[0]), float(timestamps[n - 1])
    if ref is None or ref <= 0 or last <= first:
        return None
    return first, (n - 1) / (last - first)


# ---------------------------------------------------------------------------------------------------------
# Streaming from HDF5
# ---------------------------------------------------------------------------------------------------------


class H5DatasetIterator(GenericDataChunkIterator):
    """Stream one HDF5 dataset (optionally a column subset) buffer by buffer into an NWB dataset.

    ``columns`` selects along axis 1 (e.g. the LFP channels to keep). Memory is bounded by ``buffer_gb``
    (or ``buffer_shape``). The iterator can re-read any block (``read``) after writing, which the round-trip
    check uses. Opening a missing or corrupt file raises :class:`InputError` naming it.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        dataset: str,
        *,
        columns: Optional[np.ndarray] = None,
        entity: Optional[str] = None,
        **kwargs: Any,
    ):
        self.path = Path(path)
        self.dataset_name = dataset
        self.entity = entity
        self._file: Optional[h5py.File] = None
        self._columns = None if columns is None else np.asarray(columns, dtype=np.intp)
        ds = self._open()
        if self._columns is not None:
            if ds.ndim != 2:
                raise InputError(f"dataset {dataset!r} has shape {ds.shape}; a column selection needs 2 dimensions",
                                 entity=entity, path=self.path)
            if len(self._columns) and (self._columns.min() < 0 or self._columns.max() >= ds.shape[1]):
                raise InputError(f"column selection outside the {ds.shape[1]} columns of {dataset!r}", entity=entity, path=self.path)
        super().__init__(**kwargs)

    def _open(self) -> h5py.Dataset:
        if self._file is None or not self._file.id.valid:
            if not self.path.exists():
                raise InputError("HDF5 input file is missing", entity=self.entity, path=self.path)
            try:
                self._file = h5py.File(self.path, "r")
            except (OSError, ValueError) as exc:
                raise InputError(f"cannot open HDF5 file (corrupt or truncated?): {exc}", entity=self.entity, path=self.path) from None
            if self.dataset_name not in self._file or not isinstance(self._file[self.dataset_name], h5py.Dataset):
                self._file.close()
                raise InputError(f"HDF5 file has no dataset {self.dataset_name!r}", entity=self.entity, path=self.path)
        return self._file[self.dataset_name]

    def _get_data(self, selection: tuple[slice, ...]) -> np.ndarray:
        ds = self._open()
        try:
            if self._columns is None:
                return ds[selection]
            rows = selection[0]
            cols = self._columns[selection[1]] if len(selection) > 1 else self._columns
            if len(cols) and np.all(np.diff(cols) == 1):
                return ds[rows, int(cols[0]) : int(cols[-1]) + 1]
            block = ds[rows]
            return block[:, cols]
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read dataset {self.dataset_name!r} (corrupt?): {exc}", entity=self.entity, path=self.path) from None

    def _get_maxshape(self) -> tuple[int, ...]:
        ds = self._open()
        shape = tuple(int(s) for s in ds.shape)
        if self._columns is not None:
            shape = (shape[0], len(self._columns))
        return shape

    def _get_dtype(self) -> np.dtype:
        return self._open().dtype

    def read(self, selection: tuple[slice, ...]) -> np.ndarray:
        """Re-read a block of the (selected) source, e.g. to compare with what was written."""
        return self._get_data(selection)

    def close(self) -> None:
        if self._file is not None:
            with contextlib.suppress(Exception):
                self._file.close()
            self._file = None

    def _to_dict(self) -> dict:  # pragma: no cover - hdmf asks only for parallel writes
        raise TypeError("H5DatasetIterator cannot be serialized: parallel NWB writes are not supported")


# ---------------------------------------------------------------------------------------------------------
# Round-trip comparison
# ---------------------------------------------------------------------------------------------------------

_BLOCK_BYTES = 64 << 20


def _unwrap(value: Any) -> Any:
    while isinstance(value, DataIO):
        value = value.data
    return value


def _normalize(value: Any) -> Any:
    """A comparable form: numpy array (strings decoded; containers by object id; datetimes as ISO strings)."""
    if isinstance(value, (h5py.Dataset,)) or (hasattr(value, "shape") and hasattr(value, "__getitem__") and not isinstance(value, np.ndarray)):
        value = value[()] if value.shape == () else value[:]
    if isinstance(value, (list, tuple)) or (isinstance(value, np.ndarray) and value.dtype == object):
        flat = list(value) if not isinstance(value, np.ndarray) else value.tolist()

        def conv(x):
            if isinstance(x, AbstractContainer):
                return x.object_id
            if isinstance(x, bytes):
                return x.decode()
            if isinstance(x, (dt.datetime, dt.date)):
                return x.isoformat()
            if isinstance(x, (list, tuple)):
                return tuple(conv(y) for y in x)
            return x

        converted = [conv(x) for x in flat]
        try:
            return np.asarray(converted)
        except ValueError:
            return np.asarray(converted, dtype=object)
    if isinstance(value, np.ndarray) and value.dtype.kind == "S":
        return np.char.decode(value, "utf-8")
    return np.asarray(value)


def _equal(a: np.ndarray, b: np.ndarray) -> bool:
    if a.shape != b.shape:
        return False
    if a.dtype.kind in "fc" or b.dtype.kind in "fc":
        try:
            return bool(np.array_equal(a, b, equal_nan=True))
        except TypeError:
            return bool(np.array_equal(a, b))
    if a.dtype.kind == "V" or b.dtype.kind == "V":  # compound rows
        return a.tolist() == b.tolist()
    return bool(np.array_equal(a, b))


def _compare_blockwise(read_block: Callable[[tuple[slice, ...]], np.ndarray], written: h5py.Dataset | Any,
                       shape: tuple[int, ...], itemsize: int) -> Optional[str]:
    if tuple(written.shape) != tuple(shape):
        return f"shape {tuple(written.shape)} written, {tuple(shape)} expected"
    if not len(shape) or shape[0] == 0:
        return None
    row_bytes = max(itemsize * int(np.prod(shape[1:], dtype=np.int64)), 1)
    step = max(1, _BLOCK_BYTES // row_bytes)
    for start in range(0, shape[0], step):
        sel = (slice(start, min(start + step, shape[0])),) + tuple(slice(0, s) for s in shape[1:])
        if not _equal(np.asarray(read_block(sel)), np.asarray(written[sel])):
            return f"values differ in rows {start}..{min(start + step, shape[0]) - 1}"
    return None


def _is_reference_rows(value: Any) -> bool:
    """Rows of a ``TimeSeriesReferenceVectorData`` as written: (idx_start, count, TimeSeries) tuples."""
    return (isinstance(value, (list, tuple)) and len(value) > 0 and isinstance(value[0], tuple) and len(value[0]) == 3
            and hasattr(value[0][2], "object_id"))


def _reference_rows(value: Any) -> list[tuple[int, int, str]]:
    rows = []
    for row in value:
        start, count, target = (row.idx_start, row.count, row.timeseries) if hasattr(row, "idx_start") else tuple(row)
        rows.append((int(start), int(count), getattr(target, "object_id", None)))
    return rows


def compare_written(nwbfile, read_nwbfile) -> tuple[int, list[str]]:
    """Compare every array-like dataset of an in-memory NWBFile with the file read back.

    Objects are matched by object id. Returns ``(n_datasets_compared, problems)``. Streamed data that
    cannot be re-read (a one-shot ``DataChunkIterator``) is reported as a problem, so every writer streams
    through a re-readable iterator such as :class:`H5DatasetIterator`.
    """
    problems: list[str] = []
    n = 0
    read_objects = read_nwbfile.objects
    for location, owner, field, value in iter_datasets(nwbfile):
        counterpart = read_objects.get(owner.object_id)
        if counterpart is None:
            problems.append(f"{location}: object {type(owner).__name__} {owner.name!r} is missing from the file")
            continue
        written = counterpart.data if field is None else counterpart.fields.get(field)
        if written is None:
            problems.append(f"{location}: dataset is missing from the file")
            continue
        written = _unwrap(written)
        value = _unwrap(value)
        n += 1
        if _is_reference_rows(value):  # (idx_start, count, TimeSeries) rows: compare the numbers and the targets
            problem = None if _reference_rows(value) == _reference_rows(written) else "time series references differ"
        elif isinstance(value, GenericDataChunkIterator):
            problem = _compare_blockwise(value._get_data, written, tuple(value.maxshape), np.dtype(value.dtype).itemsize)
        elif isinstance(value, AbstractDataChunkIterator):
            problem = "streamed through a one-shot iterator: cannot be compared after writing"
        elif isinstance(value, np.ndarray) and value.dtype.kind in "biuf" and value.nbytes > _BLOCK_BYTES:
            problem = _compare_blockwise(lambda sel, v=value: v[sel], written, value.shape, value.dtype.itemsize)
        else:
            a, b = _normalize(value), _normalize(written)
            problem = None if _equal(a, b) else (
                f"shape {b.shape} written, {a.shape} expected" if a.shape != b.shape else "values differ"
            )
        if problem:
            problems.append(f"{location}: {problem}")
    return n, problems


# ---------------------------------------------------------------------------------------------------------
# Deterministic object ids
# ---------------------------------------------------------------------------------------------------------


def _set_deterministic_object_ids(nwbfile, seed: str) -> None:
    """Replace hdmf's random uuid4 object ids by uuid5(seed, location) so identical inputs give identical files."""
    from release_platform.nwb.config import object_location

    children = nwbfile.all_children()
    seen: dict[str, int] = {}
    for obj in children:
        if not hasattr(obj, "_AbstractContainer__object_id"):
            return  # hdmf changed its internals: keep random ids rather than guess
        loc = "" if obj is nwbfile else object_location(obj, nwbfile)
        k = f"{loc}#{type(obj).__name__}"
        seen[k] = seen.get(k, 0) + 1
        obj._AbstractContainer__object_id = str(deterministic_uuid(seed, k, seen[k]))
    nwbfile.all_children()  # rebuild the object-id index


# ---------------------------------------------------------------------------------------------------------
# The protocol
# ---------------------------------------------------------------------------------------------------------


def _close_iterators(nwbfile) -> None:
    if nwbfile is None:
        return
    for _, _, _, value in iter_datasets(nwbfile):
        value = _unwrap(value)
        if isinstance(value, AbstractDataChunkIterator) and hasattr(value, "close"):
            with contextlib.suppress(Exception):
                value.close()


def _describe(exc: BaseException) -> str:
    """One line for an error (HDF5's messages carry newlines)."""
    if isinstance(exc, InputError):
        text = f"{exc.path}: {exc.problem}" if exc.path else exc.problem
    elif isinstance(exc, atomic.ChildWriterFailed):
        text = str(exc)  # already "<type>: <message>" from the writer process
    else:
        text = f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())


#: Added to every size estimate: the cached NWB schema and HDF5 metadata.
OVERHEAD_BYTES = 2 << 20
#: Leading bytes of a dataset compressed for the size estimate (zlib level 1 on 1 MB costs ~15 ms per dataset on a
#: busy core; 64 KB gives the same ratio on homogeneous data).
_SAMPLE_BYTES = 64 << 10
#: Datasets smaller than this count at their raw size in the size estimate (sampling them costs more than it tells).
_SAMPLED_MIN_BYTES = 1 << 20


def keep_failed_files_default() -> bool:
    """``RELEASE_PLATFORM_KEEP_FAILED_FILES`` (``1``, ``true``, ``yes``): keep a failed write's partial file."""
    return os.environ.get("RELEASE_PLATFORM_KEEP_FAILED_FILES", "").strip().lower() in ("1", "true", "yes", "on")


def _raw_nbytes(value: Any) -> int:
    if isinstance(value, AbstractDataChunkIterator):
        shape = getattr(value, "maxshape", None)
        if not shape or any(s is None for s in shape):
            return 0
        return int(np.prod(shape, dtype=np.int64)) * np.dtype(value.dtype).itemsize
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        dtype = np.dtype(value.dtype)
        return int(np.prod(value.shape, dtype=np.int64)) * (dtype.itemsize if dtype.kind != "O" else 16)
    if isinstance(value, (list, tuple)):
        if len(value) > 100_000:
            return 8 * len(value)
        try:
            arr = np.asarray(value)
        except (ValueError, TypeError):
            return 16 * len(value)
        return int(arr.nbytes) if arr.dtype.kind != "O" else 16 * arr.size
    return 0


def _sample(value: Any) -> Optional[bytes]:
    """Up to 64 KB of a dataset's leading bytes (read from the source for a streamed dataset)."""
    try:
        if isinstance(value, GenericDataChunkIterator):
            # the leading rows of the first chunk that hold the sample (its first bytes in C order), not the whole chunk
            shape = [min(int(c), int(s)) for c, s in zip(value.chunk_shape, value.maxshape)]
            row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * max(np.dtype(value.dtype).itemsize, 1)
            shape[0] = max(1, min(shape[0], -(-_SAMPLE_BYTES // max(row_bytes, 1))))
            block = np.asarray(value._get_data(tuple(slice(0, n) for n in shape)))
        elif isinstance(value, np.ndarray):
            block = value
        else:
            return None
        if block.dtype.kind not in "biuf":
            return None
        flat = block.reshape(-1)
        return flat[: max(1, _SAMPLE_BYTES // max(flat.itemsize, 1))].tobytes()
    except Exception:  # noqa: BLE001 - an estimate only: fall back to the raw size
        return None


def estimate_nwb_bytes(nwbfile, locations: Mapping[str, DatasetIOConfiguration]) -> int:
    """An estimate of the written size of ``nwbfile``: every dataset's raw size, scaled for a compressed dataset of
    1 MB or more by the zlib (level 1) ratio of a leading sample of it, plus the schema and metadata overhead, plus
    5%."""
    return _size_bounds(nwbfile, locations)[0]


def _size_bounds(nwbfile, locations: Mapping[str, DatasetIOConfiguration]) -> tuple[int, int]:
    """``(estimate, worst case)`` of the written size: :func:`estimate_nwb_bytes`, and the same without any
    compression (a dataset whose leading sample compresses well may compress worse further on)."""
    import zlib

    total = worst = 0
    for location, _, _, value in iter_datasets(nwbfile):
        value = _unwrap(value)
        raw = _raw_nbytes(value)
        worst += raw
        cfg = locations.get(location)
        if raw >= _SAMPLED_MIN_BYTES and cfg is not None and cfg.compression != "none":
            sample = _sample(value)
            if sample:
                raw = int(raw * min(1.0, max(0.02, len(zlib.compress(sample, 1)) / len(sample))))
        total += raw
    return int((total + OVERHEAD_BYTES) * 1.05), int((worst + OVERHEAD_BYTES) * 1.05)


#: Schema validators of this process's namespaces, built once per namespace (building one costs ~0.4 s).
_VALIDATORS: dict[str, Any] = {}


def _process_catalog() -> Any:
    """The namespace catalog of PyNWB's global type map (not a copy: read only here)."""
    import pynwb

    return pynwb.get_type_map(copy=False).namespace_catalog


def _process_manager() -> Any:
    """A new build manager (one per file: it holds that file's builders) on PyNWB's global type map.

    ``pynwb.get_manager()`` deep-copies the type map for every file (~55 ms) and the copy rebuilds every object
    mapper the file needs (~50 ms); on the global map the mappers are built once per process. Nothing here adds
    namespaces to the map: files caching a namespace this process does not know are read with their own copy.
    """
    import pynwb
    from hdmf.build import BuildManager

    return BuildManager(pynwb.get_type_map(copy=False))


def _prepare_mappers(nwbfile) -> None:
    """Build, in this process, the object mappers ``nwbfile`` needs, before it is written in a child process: the
    child inherits them, and the next file of this process finds them built."""
    import pynwb

    type_map = pynwb.get_type_map(copy=False)
    for obj in nwbfile.all_children():
        try:
            type_map.get_map(obj)
        except Exception:  # noqa: BLE001 - a type the map cannot place fails where it is written, with its message
            continue


def _validator(name: str) -> Any:
    from hdmf.validate import ValidatorMap

    if name not in _VALIDATORS:
        _VALIDATORS[name] = ValidatorMap(_process_catalog().get_namespace(name))
    return _VALIDATORS[name]


def warm_process_caches() -> None:
    """Build this process's schema validators (:func:`_validator`) for the namespaces a file written from PyNWB's
    global type map is validated against: the catalog's namespaces no other one includes, without
    hdmf-experimental (:func:`_process_namespaces` chooses the same for such a file). A process that calls this
    once, e.g. a fork server before it forks step processes, passes the validators on; nothing is read or opened."""
    catalog = _process_catalog()
    names = list(catalog.namespaces)
    included = {
        entry["namespace"]
        for name in names
        for entry in catalog.get_namespace(name)["schema"]
        if entry.get("namespace") and entry["namespace"] != name
    }
    for name in names:
        if name not in included and name != "hdmf-experimental":
            _validator(name)


def _process_namespaces(path: Path) -> Optional[list[str]]:
    """The namespaces to validate ``path`` against when every namespace it caches is this process's own (the
    file was written here from the global type map): the cached ones no other cached one includes, without
    hdmf-experimental (as :func:`pynwb.validate` chooses them). None when the file caches none or another."""
    with h5py.File(path, "r") as handle:
        group = handle.get("specifications")
        cached = sorted(group.keys()) if isinstance(group, h5py.Group) else []
    catalog = _process_catalog()
    if not cached or any(name not in catalog.namespaces for name in cached):
        return None
    included = {
        entry["namespace"]
        for name in cached
        for entry in catalog.get_namespace(name)["schema"]
        if entry.get("namespace") and entry["namespace"] != name
    }
    return [name for name in cached if name not in included and name != "hdmf-experimental"]


def _write_and_check(nwbfile, tmp: Path, *, validate: bool, round_trip: bool) -> int:
    """Write ``nwbfile`` to ``tmp`` and check it (PyNWB validation, round trip); the number of datasets compared.

    The file is read back through this process's type map (its namespaces are the ones it was written with),
    and validated with validators built once per process, so neither the cached specifications nor the
    validators are rebuilt for every file; a file caching a namespace this process does not know is read and
    validated the general way (:func:`pynwb.validate` against its cached namespaces).
    """
    from pynwb import NWBHDF5IO

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(chunk|DataChunkIterator).*")
        warnings.filterwarnings("ignore", message=".*does not end in '.nwb'.*")
        with NWBHDF5IO(os.fspath(tmp), "w", manager=_process_manager()) as io:
            io.write(nwbfile)
    n_checked = 0
    if validate or round_trip:
        namespaces = _process_namespaces(tmp)
        read_kwargs = {} if namespaces is None else {"manager": _process_manager(), "load_namespaces": False}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with NWBHDF5IO(os.fspath(tmp), "r", **read_kwargs) as rio:
                if validate:
                    if namespaces is None:
                        problems = validate_open_nwb(rio)
                    else:
                        builder = rio.read_builder()
                        problems = [str(e) for name in namespaces for e in _validator(name).validate(builder)]
                    if problems:
                        raise RuntimeError(f"PyNWB validation found {len(problems)} problem(s): " + "; ".join(problems[:5]))
                if round_trip:
                    n_checked, problems = compare_written(nwbfile, rio.read())
                    if problems:
                        raise RuntimeError(
                            f"round-trip check found {len(problems)} dataset(s) that differ from what was written: "
                            + "; ".join(problems[:5])
                        )
    return n_checked


class NwbDiskFullError(NwbWriteError, DiskFullError):
    """Not enough disk space for an NWB file, or the disk filled while it was written."""


def write_nwb(
    path: str | os.PathLike,
    build: Callable[[], Any],
    *,
    entity: str,
    config: BackendConfiguration | None = None,
    validate: bool = True,
    round_trip: bool = True,
    deterministic_ids: bool = True,
    keep_failed_files: Optional[bool] = None,
    isolate: Optional[bool] = None,
) -> WriteResult:
    """Build, write, validate and atomically publish one NWB file (see the module docstring).

    ``keep_failed_files`` (default: ``RELEASE_PLATFORM_KEEP_FAILED_FILES``) keeps a failed write's partial file as
    ``<name>.error``; otherwise ``<name>.error`` holds only the message. ``isolate`` writes in a child process
    (default: ``RELEASE_PLATFORM_WRITER_PROCESS`` = ``always`` / ``never`` / ``auto``; auto = unless the disk has
    room to spare: ``atomic.ISOLATE_FACTOR`` times the size estimate, and the uncompressed size, plus
    ``atomic.ISOLATE_RESERVE_BYTES`` free, :func:`release_platform.atomic.should_isolate`).
    """
    final = Path(path)
    tmp = temp_path(final)
    err = final.with_name(final.name + ERROR_SUFFIX)
    keep = keep_failed_files_default() if keep_failed_files is None else keep_failed_files
    config = config or BackendConfiguration()
    config.check_available()  # a missing codec fails before any file is touched
    final.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        err.unlink()  # the report of an earlier failure of this file

    nwbfile = None
    estimate = None
    try:
        nwbfile = build()
        if deterministic_ids:
            _set_deterministic_object_ids(nwbfile, nwbfile.identifier)
        locations = apply_backend_configuration(nwbfile, config)
        estimate, worst = _size_bounds(nwbfile, locations)
        free = atomic.check_free_space(final, estimate, entity=entity, what=final.name)
        if atomic.should_isolate(estimate, free, isolate, worst_bytes=worst):
            _prepare_mappers(nwbfile)
            n_checked = atomic.run_in_child(
                lambda: _write_and_check(nwbfile, tmp, validate=validate, round_trip=round_trip), what=final.name)
        else:
            n_checked = _write_and_check(nwbfile, tmp, validate=validate, round_trip=round_trip)
        _close_iterators(nwbfile)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    except BaseException as exc:
        _close_iterators(nwbfile)
        error = _failure(exc, final=final, tmp=tmp, err=err, entity=entity, keep=keep, estimate=estimate)
        if error is exc:
            raise
        raise error from exc
    return WriteResult(
        path=final,
        entity=entity,
        identifier=str(nwbfile.identifier),
        n_datasets_checked=n_checked,
        n_bytes=final.stat().st_size,
        locations=locations,
    )


def _failure(exc: BaseException, *, final: Path, tmp: Path, err: Path, entity: str, keep: bool,
             estimate: Optional[int]) -> BaseException:
    """Clean up after a failed write (this writer's temporary file only) and return the one error to raise."""
    if isinstance(exc, DiskFullError) and not tmp.exists():  # refused before writing: nothing to clean
        return NwbDiskFullError(exc.problem, entity=entity, path=final)
    disk_full = atomic.is_disk_full(exc)
    if isinstance(exc, atomic.ChildWriterFailed) and exc.signal_name and not disk_full:
        # HDF5 crashes after ENOSPC: a crashed writer with (nearly) no space left ran out of disk
        disk_full = atomic.disk_nearly_full(final.parent)
    kept = False
    if tmp.exists():
        if keep:
            with contextlib.suppress(OSError):
                os.replace(tmp, err)
                kept = True
        if not kept:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    if not isinstance(exc, Exception):
        return exc  # KeyboardInterrupt, SystemExit: re-raised as they are, temp file gone
    if disk_full:
        free = atomic.measured_free_text(final.parent)
        what = f"the partial file is kept as {err.name}" if kept else "the partial file was removed"
        need = f"; about {atomic.format_bytes(estimate)} needed" if estimate else ""
        return NwbDiskFullError(f"disk full while writing {final.name} (No space left on device; {free} free in "
                                f"{final.parent}{need}); {what}", entity=entity, path=final, error_path=err if kept else None)
    problem = _describe(exc)
    if not kept:
        with contextlib.suppress(OSError):
            err.write_text(f"{entity}: {final}: {problem}\n")
    return NwbWriteError(f"writing NWB failed ({problem}); see {err.name}", entity=entity, path=final, error_path=err)
