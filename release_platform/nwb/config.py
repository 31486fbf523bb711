"""Chunking and compression of NWB datasets: one pydantic configuration keyed by dataset location.

A location is the dataset's path inside the file without the leading slash, e.g. ``units/spike_times``,
``acquisition/probe_1_lfp/probe_1_lfp_data/data`` or ``general/extracellular_ephys/electrodes/x``.
:class:`BackendConfiguration` maps locations (exact, or ``fnmatch`` patterns such as ``units/*``) to a
:class:`DatasetIOConfiguration`; a location no key matches gets ``default``. An exact key wins over
patterns; among patterns the longest (most specific) wins.

Two tiers:

* ``release`` (default): gzip level 4 with the shuffle filter. Every HDF5 reader (MATLAB, h5py without
  plugins, the DANDI web viewers) can read it.
* ``internal``: Blosc with the zstd codec (byte shuffle inside Blosc), several times faster to write and
  smaller; needs the ``hdf5plugin`` package to write and to read. When it is not installed, asking for
  the tier raises :class:`CodecUnavailableError` at once, before any file is touched.

:func:`apply_backend_configuration` wraps every numeric dataset of an in-memory ``NWBFile`` in an hdmf
``H5DataIO`` with the settings for its location; data already wrapped in a ``DataIO`` by the caller is
left alone, and so are strings, references and scalars.
"""

from __future__ import annotations

import fnmatch
import importlib
from typing import Any, Iterator, Literal, Optional

import numpy as np
import pydantic
from hdmf.backends.hdf5 import H5DataIO
from hdmf.container import AbstractContainer, Container, Data
from hdmf.data_utils import AbstractDataChunkIterator, DataIO, GenericDataChunkIterator

from release_platform.errors import InputError

__all__ = [
    "Codec",
    "CodecUnavailableError",
    "DatasetIOConfiguration",
    "BackendConfiguration",
    "codec_available",
    "apply_backend_configuration",
    "iter_datasets",
    "object_location",
]

Codec = Literal["gzip", "lzf", "blosc_zstd", "none"]

BLOSC_FILTER_ID = 32001


class CodecUnavailableError(InputError):
    """The configured codec needs a package (hdf5plugin) that is not installed."""


def codec_available(codec: str) -> bool:
    """Whether ``codec`` can be written here (gzip, lzf and none always; blosc_zstd needs hdf5plugin)."""
    if codec != "blosc_zstd":
        return True
    try:
        importlib.import_module("hdf5plugin")
    except ImportError:
        return False
    return True


class DatasetIOConfiguration(pydantic.BaseModel):
    """How one dataset is stored.

    ``chunk_shape``: HDF5 chunk shape (clipped to the data shape); ``None`` lets h5py choose for in-memory
    arrays and takes the iterator's own chunk shape for streamed data. ``compression_level``: gzip 0-9,
    Blosc clevel 0-9; ``None`` = the codec's default.
    """

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    compression: Codec = "gzip"
    compression_level: Optional[int] = pydantic.Field(default=4, ge=0, le=9)
    shuffle: bool = True
    chunk_shape: Optional[tuple[pydantic.PositiveInt, ...]] = None

    def check_available(self) -> None:
        if not codec_available(self.compression):
            raise CodecUnavailableError(
                f"compression {self.compression!r} needs the hdf5plugin package, which is not installed here; "
                "install hdf5plugin or use the 'release' tier (gzip)"
            )

    def h5_kwargs(self, shape: tuple[int, ...] | None = None) -> dict[str, Any]:
        """Keyword arguments for ``H5DataIO`` (compression, shuffle, chunks)."""
        self.check_available()
        kwargs: dict[str, Any] = {}
        if self.compression == "gzip":
            kwargs.update(compression="gzip", compression_opts=4 if self.compression_level is None else self.compression_level,
                          shuffle=self.shuffle)
        elif self.compression == "lzf":
            kwargs.update(compression="lzf", shuffle=self.shuffle)
        elif self.compression == "blosc_zstd":
            import hdf5plugin

            blosc = hdf5plugin.Blosc(
                cname="zstd",
                clevel=5 if self.compression_level is None else self.compression_level,
                shuffle=hdf5plugin.Blosc.SHUFFLE if self.shuffle else hdf5plugin.Blosc.NOSHUFFLE,
            )
            kwargs.update(compression=blosc["compression"] if isinstance(blosc, dict) else blosc.filter_id,
                          compression_opts=tuple(blosc["compression_opts"] if isinstance(blosc, dict) else blosc.filter_options),
                          allow_plugin_filters=True)
        if self.chunk_shape is not None and shape is not None and len(shape):
            if len(self.chunk_shape) != len(shape):
                raise InputError(f"chunk shape {self.chunk_shape} has {len(self.chunk_shape)} dimensions but the data has {len(shape)}")
            kwargs["chunks"] = tuple(int(min(c, max(int(s), 1))) for c, s in zip(self.chunk_shape, shape))
        return kwargs


_GZIP4 = DatasetIOConfiguration()
_BLOSC_ZSTD = DatasetIOConfiguration(compression="blosc_zstd", compression_level=5, shuffle=True)


class BackendConfiguration(pydantic.BaseModel):
    """Per-location dataset storage for one NWB file (see the module docstring)."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    tier: Literal["release", "internal", "custom"] = "release"
    default: DatasetIOConfiguration = _GZIP4
    datasets: dict[str, DatasetIOConfiguration] = {}

    @classmethod
    def for_tier(cls, tier: Literal["release", "internal"] = "release", **datasets: DatasetIOConfiguration) -> "BackendConfiguration":
        """The tier's default codec everywhere (``datasets`` may override locations)."""
        if tier == "release":
            out = cls(tier="release", default=_GZIP4, datasets=datasets)
        elif tier == "internal":
            out = cls(tier="internal", default=_BLOSC_ZSTD, datasets=datasets)
        else:
            raise InputError(f"unknown compression tier {tier!r}; expected 'release' or 'internal'")
        out.check_available()
        return out

    def check_available(self) -> None:
        """Raise :class:`CodecUnavailableError` if any configured codec cannot be written here."""
        for cfg in (self.default, *self.datasets.values()):
            cfg.check_available()

    def for_location(self, location: str) -> DatasetIOConfiguration:
        if location in self.datasets:
            return self.datasets[location]
        hits = [k for k in self.datasets if fnmatch.fnmatchcase(location, k)]
        if hits:
            return self.datasets[max(hits, key=len)]
        return self.default


# ---------------------------------------------------------------------------------------------------------
# Locations of the datasets of an in-memory NWBFile
# ---------------------------------------------------------------------------------------------------------

_DICT_GROUPS = (
    ("acquisition", "acquisition"),
    ("processing", "processing"),
    ("analysis", "analysis"),
    ("stimulus", "stimulus/presentation"),
    ("stimulus_template", "stimulus/templates"),
    ("intervals", "intervals"),
    ("devices", "general/devices"),
    ("electrode_groups", "general/extracellular_ephys"),
    ("lab_meta_data", "general"),
    ("scratch", "scratch"),
)
_SINGLE_GROUPS = (
    ("units", "units"),
    ("electrodes", "general/extracellular_ephys/electrodes"),
    ("subject", "general/subject"),
    ("trials", "intervals/trials"),
    ("epochs", "intervals/epochs"),
    ("invalid_times", "intervals/invalid_times"),
)


def _top_level_location(nwbfile, top: AbstractContainer) -> str:
    for attr, loc in _SINGLE_GROUPS:
        if getattr(nwbfile, attr, None) is top:
            return loc
    for attr, prefix in _DICT_GROUPS:
        group = getattr(nwbfile, attr, None)
        if group is not None and hasattr(group, "get") and group.get(top.name) is top:
            return f"{prefix}/{top.name}"
    return top.name


def object_location(obj: AbstractContainer, nwbfile) -> str:
    """The in-file path (no leading slash) of an object of an in-memory ``NWBFile``."""
    parts = []
    cur = obj
    while cur.parent is not None and cur.parent is not nwbfile:
        parts.append(cur.name)
        cur = cur.parent
    if cur.parent is None and cur is not obj and cur is not nwbfile:
        return "/".join(reversed(parts + [cur.name]))
    if cur is nwbfile:
        return ""
    return "/".join([_top_level_location(nwbfile, cur)] + list(reversed(parts)))


def _is_array_like(value: Any) -> bool:
    if isinstance(value, AbstractContainer):  # a link to another object's dataset (checked with that object)
        return False
    if isinstance(value, (DataIO, AbstractDataChunkIterator, np.ndarray)):
        return True
    if isinstance(value, (list, tuple)) and len(value) and not isinstance(value[0], AbstractContainer):
        return True
    return hasattr(value, "shape") and hasattr(value, "dtype") and not isinstance(value, (str, bytes, np.generic))


def iter_datasets(nwbfile) -> Iterator[tuple[str, AbstractContainer, Optional[str], Any]]:
    """Yield ``(location, owner, field, value)`` for every array-like dataset of an in-memory NWBFile.

    ``field`` is ``None`` when the owner is a ``Data`` object (its ``data``), else the field name of the
    owning container (``data``, ``timestamps`` ...). Objects are visited in location order.
    """
    items = []
    for obj in nwbfile.all_children():
        if obj is nwbfile:
            loc = ""
        else:
            loc = object_location(obj, nwbfile)
        if isinstance(obj, Data):
            if _is_array_like(obj.data):
                items.append((loc, obj, None, obj.data))
        elif isinstance(obj, Container):
            for name, value in obj.fields.items():
                if _is_array_like(value):
                    items.append((f"{loc}/{name}" if loc else name, obj, name, value))
    items.sort(key=lambda it: it[0])
    yield from items


def _numeric_kind(value: Any) -> bool:
    if isinstance(value, GenericDataChunkIterator) or isinstance(value, AbstractDataChunkIterator):
        dtype = np.dtype(value.dtype)
    elif isinstance(value, np.ndarray) or (hasattr(value, "dtype") and hasattr(value, "shape")):
        dtype = np.dtype(value.dtype)
        if value.ndim == 0 or value.size == 0:
            return False
    elif isinstance(value, (list, tuple)):
        first = value[0]
        while isinstance(first, (list, tuple, np.ndarray)) and len(first):
            first = first[0]
        if isinstance(first, (bool, np.bool_)):
            dtype = np.dtype(bool)
        elif isinstance(first, (int, float, np.integer, np.floating)):
            dtype = np.asarray(first).dtype
        else:
            return False
    else:
        return False
    return dtype.kind in "biuf"


def _shape_of(value: Any) -> tuple[int, ...] | None:
    if isinstance(value, AbstractDataChunkIterator):
        return tuple(int(s) for s in value.maxshape) if value.maxshape is not None else None
    if hasattr(value, "shape"):
        return tuple(int(s) for s in value.shape)
    if isinstance(value, (list, tuple)):
        return np.shape(value) if len(value) < 100_000 else (len(value),)
    return None


def apply_backend_configuration(nwbfile, config: BackendConfiguration | None = None) -> dict[str, DatasetIOConfiguration]:
    """Wrap each numeric dataset of ``nwbfile`` in ``H5DataIO`` per ``config``; return location -> settings used."""
    config = config or BackendConfiguration()
    config.check_available()
    used: dict[str, DatasetIOConfiguration] = {}
    for location, owner, field, value in list(iter_datasets(nwbfile)):
        if isinstance(value, DataIO) or not _numeric_kind(value):
            continue
        cfg = config.for_location(location)
        if cfg.compression == "none" and cfg.chunk_shape is None:
            continue
        shape = _shape_of(value)
        kwargs = cfg.h5_kwargs(shape)
        if cfg.compression == "none":
            kwargs.pop("shuffle", None)
        if isinstance(value, GenericDataChunkIterator) and "chunks" not in kwargs:
            kwargs["chunks"] = tuple(int(c) for c in value.chunk_shape)
        if field is None:
            owner.set_data_io(H5DataIO, kwargs)
        else:
            owner.set_data_io(field, H5DataIO, kwargs)
        used[location] = cfg
    return used
