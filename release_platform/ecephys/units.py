"""Units from spike-sorter (Kilosort) outputs: spike trains, spike amplitudes in volts, mean waveforms.

Pure numpy. Every function takes arrays (or paths, for :func:`load_sorting`) and is vectorized: spikes
are grouped to units with one ``searchsorted`` + one ``lexsort`` + one ``bincount``, never a Python loop
over spikes.

Conventions (Kilosort, as in the AllenSDK ``write_ecephys_nwb`` module):

* ``spike_times``: one entry per spike, integer samples at ``sampling_rate_hz`` (sample 0 = session time
  0) or, when floating point, already in seconds on the session clock.
* ``spike_clusters``: the probe-local cluster id of each spike; a unit record maps a cluster id to a
  (global) unit id. Spikes of clusters that no unit claims are dropped **and reported** with their counts.
* ``spike_templates``: the template index of each spike; ``amplitudes``: the raw template scaling of
  each spike; ``templates``: ``n_templates x n_samples x n_channels`` whitened templates;
  ``whitening_mat_inv``: ``n_channels x n_channels``.
* Spike amplitude (volts) = template amplitude of the spike's template x raw amplitude x
  ``amplitude_scale_factor`` (V/bit, default 0.195e-6), where the template amplitude is the maximum over
  channels of the peak-to-peak (max - min over time) of the un-whitened template
  ``templates[k] @ whitening_mat_inv``.
* Spike times are kept only where >= 0 (and finite), sorted within each unit, with amplitudes reordered
  in step.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Mapping, Optional

import h5py
import numpy as np

from release_platform.atomic import atomic_write
from release_platform.errors import InputError

__all__ = [
    "DEFAULT_AMPLITUDE_SCALE_FACTOR",
    "SORTING_FILE_NAMES",
    "SortingOutputs",
    "SpikeGrouping",
    "load_npy",
    "load_sorting",
    "spike_times_seconds",
    "unwhiten_templates",
    "template_amplitudes",
    "spike_amplitudes_volts",
    "group_spikes",
    "unit_mean_waveforms",
    "units_from_sorting",
    "GROUPING_FORMAT",
    "write_grouping",
    "read_grouping",
]

DEFAULT_AMPLITUDE_SCALE_FACTOR = 0.195e-6  # V/bit (Neuropixels 1.0 AP band)

#: Default file names inside a Kilosort output directory, keyed by the ``SortingOutputs`` field.
SORTING_FILE_NAMES = {
    "spike_times": "spike_times.npy",
    "spike_clusters": "spike_clusters.npy",
    "spike_templates": "spike_templates.npy",
    "amplitudes": "amplitudes.npy",
    "templates": "templates.npy",
    "whitening_mat_inv": "whitening_mat_inv.npy",
    "mean_waveforms": "mean_waveforms.npy",
}


# ---------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------


def load_npy(path: str | os.PathLike, *, entity: str | None = None, mmap: bool = True) -> np.ndarray:
    """Load a ``.npy`` file (memory-mapped by default), naming the file when missing or unreadable."""
    path = Path(path)
    if not path.exists():
        raise InputError("sorter output file is missing", entity=entity, path=path)
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"unreadable .npy file (corrupt or truncated?): {exc}", entity=entity, path=path) from None


@dataclasses.dataclass(frozen=True)
class SortingOutputs:
    """The Kilosort arrays of one probe (see the module docstring for their meaning)."""

    spike_times: np.ndarray
    spike_clusters: np.ndarray
    spike_templates: np.ndarray
    amplitudes: np.ndarray
    templates: np.ndarray
    whitening_mat_inv: np.ndarray
    mean_waveforms: Optional[np.ndarray] = None

    def __post_init__(self) -> None:
        check_sorting(self)


def check_sorting(s: SortingOutputs, *, entity: str | None = None, path: str | os.PathLike | None = None) -> None:
    """Check the shapes of sorter outputs agree; raise :class:`InputError` naming what disagrees."""
    n = s.spike_times.shape[0] if s.spike_times.ndim >= 1 else -1
    for name in ("spike_times", "spike_clusters", "spike_templates", "amplitudes"):
        arr = getattr(s, name)
        # Kilosort writes some of these as (n, 1) columns.
        if arr.ndim not in (1, 2) or (arr.ndim == 2 and arr.shape[1] != 1):
            raise InputError(f"{name} has shape {arr.shape}, expected one value per spike", entity=entity, path=path)
        if arr.shape[0] != n:
            raise InputError(f"{name} has {arr.shape[0]} entries but spike_times has {n}", entity=entity, path=path)
    if s.templates.ndim != 3:
        raise InputError(f"templates has shape {s.templates.shape}, expected templates x samples x channels", entity=entity, path=path)
    n_channels = s.templates.shape[2]
    if s.whitening_mat_inv.shape != (n_channels, n_channels):
        raise InputError(
            f"whitening_mat_inv has shape {s.whitening_mat_inv.shape}, expected {n_channels} x {n_channels} "
            f"(the templates' channel count)",
            entity=entity,
            path=path,
        )
    if n > 0:
        st = np.asarray(s.spike_templates).reshape(-1)
        lo, hi = int(st.min()), int(st.max())
        if lo < 0 or hi >= s.templates.shape[0]:
            raise InputError(
                f"spike_templates refers to template {lo if lo < 0 else hi} but templates has {s.templates.shape[0]}",
                entity=entity,
                path=path,
            )
    if s.mean_waveforms is not None and s.mean_waveforms.ndim != 3:
        raise InputError(
            f"mean_waveforms has shape {s.mean_waveforms.shape}, expected clusters x samples x channels", entity=entity, path=path
        )


def load_sorting(
    sorting_dir: str | os.PathLike | None = None,
    *,
    paths: Mapping[str, str | os.PathLike | None] | None = None,
    entity: str | None = None,
) -> SortingOutputs:
    """Load one probe's sorter outputs (memory-mapped).

    File locations are ``paths[field]`` when given, else ``sorting_dir / SORTING_FILE_NAMES[field]``.
    ``mean_waveforms`` is optional (``None`` when neither given nor present).
    """
    paths = dict(paths or {})
    resolved: dict[str, Path | None] = {}
    for field, default_name in SORTING_FILE_NAMES.items():
        p = paths.get(field)
        if p is None and sorting_dir is not None:
            p = Path(sorting_dir) / default_name
        resolved[field] = None if p is None else Path(p)
    missing = [f for f, p in resolved.items() if p is None and f != "mean_waveforms"]
    if missing:
        raise InputError(f"no path given for sorter outputs {missing} (and no sorting directory)", entity=entity)
    mw_path = resolved["mean_waveforms"]
    arrays = {f: load_npy(p, entity=entity) for f, p in resolved.items() if f != "mean_waveforms"}
    arrays["mean_waveforms"] = load_npy(mw_path, entity=entity) if mw_path is not None and (
        paths.get("mean_waveforms") is not None or mw_path.exists()
    ) else None
    try:
        return SortingOutputs(**arrays)
    except InputError as exc:
        raise InputError(exc.problem, entity=entity, path=sorting_dir) from None


# ---------------------------------------------------------------------------------------------------------
# Times and amplitudes
# ---------------------------------------------------------------------------------------------------------


def spike_times_seconds(spike_times: np.ndarray, sampling_rate_hz: float) -> np.ndarray:
    """Spike times in seconds: integer samples divided by the rate; floating-point input is already seconds."""
    st = np.asarray(spike_times).reshape(-1)
    if np.issubdtype(st.dtype, np.integer):
        if not np.isfinite(sampling_rate_hz) or sampling_rate_hz <= 0:
            raise InputError(f"sampling rate {sampling_rate_hz!r} Hz must be positive to convert samples to seconds")
        return st.astype(np.float64) / float(sampling_rate_hz)
    if np.issubdtype(st.dtype, np.floating):
        return st.astype(np.float64, copy=False)
    raise InputError(f"spike_times has non-numeric dtype {st.dtype}")


def unwhiten_templates(templates: np.ndarray, whitening_mat_inv: np.ndarray) -> np.ndarray:
    """``templates[k] @ whitening_mat_inv`` for every template k (float64, templates x samples x channels)."""
    return np.matmul(np.asarray(templates, dtype=np.float64), np.asarray(whitening_mat_inv, dtype=np.float64))


def template_amplitudes(templates: np.ndarray, whitening_mat_inv: np.ndarray) -> np.ndarray:
    """Per template: max over channels of (max - min over time) of the un-whitened template (whitened units)."""
    t = unwhiten_templates(templates, whitening_mat_inv)
    if t.shape[1] == 0:
        return np.zeros(t.shape[0])
    return np.ptp(t, axis=1).max(axis=1) if t.shape[2] else np.zeros(t.shape[0])


def spike_amplitudes_volts(
    raw_amplitudes: np.ndarray,
    spike_templates: np.ndarray,
    template_amps: np.ndarray,
    amplitude_scale_factor: float = DEFAULT_AMPLITUDE_SCALE_FACTOR,
) -> np.ndarray:
    """Spike amplitude (V) = ``template_amps[spike_template] * raw_amplitude * amplitude_scale_factor``."""
    idx = np.asarray(spike_templates).reshape(-1).astype(np.intp, copy=False)
    return np.asarray(template_amps, dtype=np.float64)[idx] * np.asarray(raw_amplitudes, dtype=np.float64).reshape(-1) * float(
        amplitude_scale_factor
    )


# ---------------------------------------------------------------------------------------------------------
# Grouping
# ---------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SpikeGrouping:
    """Spikes grouped to units, in the ragged layout NWB uses.

    ``spike_times`` (s) and every array in ``values`` are flat, ordered by unit (in the order of
    ``unit_ids``) and by time within a unit; ``ends[i]`` is one past the last spike of unit i (an NWB
    ``VectorIndex``). ``unknown_clusters`` maps each cluster id that no unit claims to the number of its
    spikes (dropped); ``n_dropped_negative`` counts spikes of known units dropped for a negative or
    non-finite time.
    """

    unit_ids: np.ndarray
    spike_times: np.ndarray
    ends: np.ndarray
    values: dict[str, np.ndarray]
    unknown_clusters: dict[int, int]
    n_dropped_negative: int = 0

    @property
    def starts(self) -> np.ndarray:
        return np.concatenate([[0], self.ends[:-1]]).astype(np.int64) if len(self.ends) else np.zeros(0, np.int64)

    @property
    def counts(self) -> np.ndarray:
        return np.diff(np.concatenate([[0], self.ends])).astype(np.int64)

    @property
    def n_unknown_spikes(self) -> int:
        return int(sum(self.unknown_clusters.values()))

    def spike_times_of(self, unit_id: int) -> np.ndarray:
        i = self._index(unit_id)
        return self.spike_times[self.starts[i] : self.ends[i]]

    def values_of(self, name: str, unit_id: int) -> np.ndarray:
        i = self._index(unit_id)
        return self.values[name][self.starts[i] : self.ends[i]]

    def split(self, name: str | None = None) -> dict[int, np.ndarray]:
        """``{unit_id: array}`` of spike times (or of the named value) per unit (views, no copies)."""
        flat = self.spike_times if name is None else self.values[name]
        return dict(zip((int(u) for u in self.unit_ids), np.split(flat, self.ends[:-1]) if len(self.ends) else []))

    def _index(self, unit_id: int) -> int:
        hits = np.flatnonzero(self.unit_ids == unit_id)
        if not len(hits):
            raise KeyError(f"unit {unit_id} is not in this grouping")
        return int(hits[0])


def group_spikes(
    unit_ids: np.ndarray,
    unit_cluster_ids: np.ndarray,
    spike_clusters: np.ndarray,
    spike_times_s: np.ndarray,
    values: Mapping[str, np.ndarray] | None = None,
    *,
    entity: str | None = None,
) -> SpikeGrouping:
    """Group spikes to units through their cluster ids.

    ``unit_ids[i]`` claims cluster ``unit_cluster_ids[i]``; every per-spike array in ``values`` (e.g.
    amplitudes) is reordered in step with the times. Units without spikes get empty trains. Two units
    claiming the same cluster is an :class:`InputError`.
    """
    unit_ids = np.asarray(unit_ids, dtype=np.int64).reshape(-1)
    ucl = np.asarray(unit_cluster_ids, dtype=np.int64).reshape(-1)
    if unit_ids.shape != ucl.shape:
        raise InputError(f"{len(unit_ids)} unit ids but {len(ucl)} unit cluster ids", entity=entity)
    if len(np.unique(unit_ids)) != len(unit_ids):
        raise InputError("unit ids are not unique", entity=entity)
    uniq, cnt = np.unique(ucl, return_counts=True)
    if (cnt > 1).any():
        raise InputError(f"clusters claimed by more than one unit: {uniq[cnt > 1].tolist()}", entity=entity)
    clusters = np.asarray(spike_clusters).reshape(-1).astype(np.int64, copy=False)
    times = np.asarray(spike_times_s, dtype=np.float64).reshape(-1)
    values = {k: np.asarray(v).reshape(-1) for k, v in (values or {}).items()}
    for k, v in values.items():
        if v.shape[0] != times.shape[0]:
            raise InputError(f"{k} has {v.shape[0]} entries but there are {times.shape[0]} spike times", entity=entity)
    if clusters.shape[0] != times.shape[0]:
        raise InputError(f"spike_clusters has {clusters.shape[0]} entries but there are {times.shape[0]} spike times", entity=entity)

    n_units = len(unit_ids)
    if n_units:
        order = np.argsort(ucl, kind="stable")
        sorted_cl = ucl[order]
        pos = np.minimum(np.searchsorted(sorted_cl, clusters), n_units - 1)
        known = sorted_cl[pos] == clusters
        unit_index = order[pos]
    else:
        known = np.zeros(clusters.shape[0], dtype=bool)
        unit_index = np.zeros(clusters.shape[0], dtype=np.intp)
    unknown_ids, unknown_counts = np.unique(clusters[~known], return_counts=True)
    valid_time = np.isfinite(times) & (times >= 0)
    keep = known & valid_time
    n_negative = int(np.count_nonzero(known & ~valid_time))

    ui = unit_index[keep]
    t = times[keep]
    if len(t) < 2 or bool(np.all(t[1:] >= t[:-1])):
        # Sorter output is usually time-ordered already: a stable sort on the (small) unit index keeps time
        # order within each unit, and numpy radix-sorts 16-bit keys in O(n).
        key = ui.astype(np.int16) if n_units <= np.iinfo(np.int16).max else ui
        perm = np.argsort(key, kind="stable")
    else:
        perm = np.lexsort((t, ui))  # by unit, then by time
    ends = np.cumsum(np.bincount(ui, minlength=n_units)).astype(np.int64)
    return SpikeGrouping(
        unit_ids=unit_ids,
        spike_times=t[perm],
        ends=ends,
        values={k: v[keep][perm] for k, v in values.items()},
        unknown_clusters={int(c): int(n) for c, n in zip(unknown_ids, unknown_counts)},
        n_dropped_negative=n_negative,
    )


def unit_mean_waveforms(
    mean_waveforms: np.ndarray, cluster_ids: np.ndarray, scale: float = 1.0, *, entity: str | None = None
) -> np.ndarray:
    """Mean waveforms of the given clusters (row = cluster id), divided by ``scale``: units x samples x channels.

    Floating-point input keeps its dtype (float32 waveforms stay float32)."""
    cluster_ids = np.asarray(cluster_ids, dtype=np.int64).reshape(-1)
    if len(cluster_ids) and (cluster_ids.min() < 0 or cluster_ids.max() >= mean_waveforms.shape[0]):
        bad = cluster_ids[(cluster_ids < 0) | (cluster_ids >= mean_waveforms.shape[0])]
        raise InputError(
            f"mean_waveforms has {mean_waveforms.shape[0]} rows but units refer to clusters {bad.tolist()}", entity=entity
        )
    if not np.isfinite(scale) or scale == 0:
        raise InputError(f"scale_mean_waveform_and_csd {scale!r} must be finite and non-zero", entity=entity)
    out = np.asarray(mean_waveforms[cluster_ids])
    dtype = out.dtype if out.dtype.kind == "f" else np.float64
    return out.astype(dtype, copy=False) / dtype.type(scale)


def units_from_sorting(
    sorting: SortingOutputs,
    unit_ids: np.ndarray,
    unit_cluster_ids: np.ndarray,
    *,
    sampling_rate_hz: float,
    amplitude_scale_factor: float = DEFAULT_AMPLITUDE_SCALE_FACTOR,
    entity: str | None = None,
) -> SpikeGrouping:
    """Spike trains and amplitudes (V, under ``values["spike_amplitudes"]``) per unit from sorter outputs."""
    times = spike_times_seconds(sorting.spike_times, sampling_rate_hz)
    amps = spike_amplitudes_volts(
        sorting.amplitudes,
        sorting.spike_templates,
        template_amplitudes(sorting.templates, sorting.whitening_mat_inv),
        amplitude_scale_factor,
    )
    return group_spikes(
        unit_ids, unit_cluster_ids, sorting.spike_clusters, times, {"spike_amplitudes": amps}, entity=entity
    )



# ---------------------------------------------------------------------------------------------------------
# Grouping files
# ---------------------------------------------------------------------------------------------------------

#: ``format`` attribute of a grouping file (bump the version when the layout changes).
GROUPING_FORMAT = "release_platform.SpikeGrouping/1"
_GROUPING_DATASETS = ("unit_ids", "spike_times", "spike_times_index", "unknown_cluster_ids", "unknown_cluster_counts")


def write_grouping(path: str | os.PathLike, grouping: SpikeGrouping) -> Path:
    """Write ``grouping`` to the HDF5 file ``path`` atomically (the file appears whole or not at all).

    Layout: ``unit_ids``, ``spike_times`` (s), ``spike_times_index`` (= ``ends``), one dataset per entry of
    ``values`` (e.g. ``spike_amplitudes``; names in the ``values`` attribute), ``unknown_cluster_ids`` and
    ``unknown_cluster_counts``; attributes ``format`` and ``n_dropped_negative``. Dtypes are kept, so
    :func:`read_grouping` gives back equal arrays. Returns ``path``.
    """
    path = Path(path)
    clash = sorted(set(grouping.values) & set(_GROUPING_DATASETS))
    if clash:
        raise ValueError(f"grouping value names {clash} clash with the file's own datasets")
    unknown_ids = np.array(sorted(grouping.unknown_clusters), dtype=np.int64)
    unknown_counts = np.array([grouping.unknown_clusters[int(c)] for c in unknown_ids], dtype=np.int64)

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w", track_order=True) as fh:
            fh.attrs["format"] = GROUPING_FORMAT
            fh.attrs["n_dropped_negative"] = int(grouping.n_dropped_negative)
            fh.attrs["values"] = np.array(list(grouping.values), dtype=h5py.string_dtype())
            fh.create_dataset("unit_ids", data=np.asarray(grouping.unit_ids))
            fh.create_dataset("spike_times", data=np.asarray(grouping.spike_times), compression="gzip")
            fh.create_dataset("spike_times_index", data=np.asarray(grouping.ends))
            for name, values in grouping.values.items():
                fh.create_dataset(name, data=np.asarray(values), compression="gzip")
            fh.create_dataset("unknown_cluster_ids", data=unknown_ids)
            fh.create_dataset("unknown_cluster_counts", data=unknown_counts)

    arrays = [grouping.unit_ids, grouping.spike_times, grouping.ends, unknown_ids, unknown_counts, *grouping.values.values()]
    atomic_write(path, write, expected_bytes=sum(np.asarray(a).nbytes for a in arrays) + (1 << 16))
    return path


def read_grouping(path: str | os.PathLike, *, entity: str | None = None) -> SpikeGrouping:
    """The :class:`SpikeGrouping` written by :func:`write_grouping`; an :class:`InputError` naming the file
    when it is missing, unreadable, of another format or inconsistent."""
    path = Path(path)
    if not path.exists():
        raise InputError("grouped-units file is missing", entity=entity, path=path)
    try:
        with h5py.File(path, "r") as fh:
            fmt = fh.attrs.get("format")
            fmt = fmt.decode() if isinstance(fmt, bytes) else fmt
            if fmt != GROUPING_FORMAT:
                raise InputError(f"not a grouped-units file (format {fmt!r}, expected {GROUPING_FORMAT!r})", entity=entity, path=path)
            names = [n.decode() if isinstance(n, bytes) else str(n) for n in fh.attrs.get("values", [])]
            missing = [n for n in (*_GROUPING_DATASETS, *names) if n not in fh]
            if missing:
                raise InputError(f"grouped-units file lacks datasets {missing}", entity=entity, path=path)
            arrays = {n: fh[n][()] for n in (*_GROUPING_DATASETS, *names)}
            n_negative = int(fh.attrs.get("n_dropped_negative", 0))
    except InputError:
        raise
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"cannot read grouped-units file (corrupt or truncated?): {exc}", entity=entity, path=path) from None
    unit_ids, times, ends = arrays["unit_ids"], arrays["spike_times"], arrays["spike_times_index"]
    if unit_ids.ndim != 1 or times.ndim != 1 or ends.shape != unit_ids.shape:
        raise InputError(f"grouped-units file has {ends.shape} index entries for {unit_ids.shape} units", entity=entity, path=path)
    if len(ends) and (bool(np.any(np.diff(ends) < 0)) or ends[0] < 0 or int(ends[-1]) != len(times)):
        raise InputError(f"spike_times_index is not a valid index into {len(times)} spike times", entity=entity, path=path)
    if not len(ends) and len(times):
        raise InputError(f"{len(times)} spike times but no units", entity=entity, path=path)
    for n in names:
        if arrays[n].shape != times.shape:
            raise InputError(f"{n} has {arrays[n].shape[0]} entries but there are {len(times)} spike times", entity=entity, path=path)
    if arrays["unknown_cluster_ids"].shape != arrays["unknown_cluster_counts"].shape:
        raise InputError("unknown_cluster_ids and unknown_cluster_counts differ in length", entity=entity, path=path)
    return SpikeGrouping(
        unit_ids=unit_ids,
        spike_times=times,
        ends=ends,
        values={n: arrays[n] for n in names},
        unknown_clusters={int(c): int(k) for c, k in zip(arrays["unknown_cluster_ids"], arrays["unknown_cluster_counts"])},
        n_dropped_negative=n_negative,
    )
