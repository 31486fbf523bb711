"""What the synthetic-session generators return, and the small file-writing helpers they share.

Every generator in :mod:`data_fixtures` writes its files under an output directory and returns one of the
frozen dataclasses below, which name every file it wrote and the facts the LIMS seeding needs (ids,
shapes, rates, ROI masks, channels, units). Ground truth for tests lives in the ``truth_path`` files.

Conventions: times in seconds, rates in Hz, positions in pixels (ophys) or micrometres (ecephys),
fluorescence in arbitrary units (a.u.), voltages and currents in SI units unless a name says otherwise.

Determinism: the same arguments and ``seed`` give byte-identical files. Random streams are derived with
:func:`rng_for` from the seed plus fixed integer keys, HDF5 files are written without object timestamps
(``track_times=False``) and JSON/CSV are written with a fixed formatting.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from release_platform.storage import atomic_path

__all__ = [
    "RoiSpec",
    "OphysPlaneFiles",
    "OphysSessionFiles",
    "BehaviorSessionFiles",
    "ProbeFiles",
    "EcephysSessionFiles",
    "IcephysCellFiles",
    "corrupt_file",
    "rng_for",
]


# ----------------------------------------------------------------------------------------------------
# Returned specifications
# ----------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RoiSpec:
    """One segmented ROI in the LIMS ``cell_rois`` format.

    ``mask`` is a boolean ``height x width`` array (cropped to its bounding box) placed at row ``y``,
    column ``x`` of the frame (pixels). ``valid`` is False exactly when ``exclusion_labels`` is not empty
    (e.g. ``("motion_border",)`` for an ROI reaching into the motion border).
    """

    id: int
    x: int
    y: int
    width: int
    height: int
    mask: np.ndarray = dataclasses.field(compare=False, repr=False)
    valid: bool = True
    exclusion_labels: tuple[str, ...] = ()

    def full_mask(self, frame_height: int, frame_width: int) -> np.ndarray:
        """The mask pasted into a ``frame_height x frame_width`` boolean frame."""
        full = np.zeros((frame_height, frame_width), dtype=bool)
        full[self.y : self.y + self.height, self.x : self.x + self.width] = self.mask
        return full

    def to_lims_record(self) -> dict[str, Any]:
        """The ROI as a plain dict (``mask`` as nested lists of bool), the shape LIMS and the input JSONs use."""
        return {
            "id": int(self.id),
            "x": int(self.x),
            "y": int(self.y),
            "width": int(self.width),
            "height": int(self.height),
            "mask": self.mask.astype(bool).tolist(),
            "valid": bool(self.valid),
            "exclusion_labels": list(self.exclusion_labels),
        }


@dataclasses.dataclass(frozen=True)
class OphysPlaneFiles:
    """One imaging plane (LIMS ``ophys_experiment``) of a synthetic ophys session.

    Files:

    * ``movie_path``: HDF5, dataset ``data`` ``T x H x W`` uint16 (a.u.), motion-corrected movie, chunked
      by whole frames.
    * ``max_projection_path``: HDF5, dataset ``data`` ``H x W`` uint16, the maximum over time of the movie.
    * ``average_projection_path``: HDF5, dataset ``data`` ``H x W`` float32, the mean over time.
    * ``motion_offsets_path``: CSV with columns ``frame_index, x, y`` (integer pixel offsets found by the
      simulated rigid registration; positive x = right, positive y = down).
    * ``truth_path``: HDF5 ground truth for the plane; see :mod:`data_fixtures.ophys` for its layout.

    ``motion_border`` is ``{"x0", "x1", "y0", "y1"}``: pixels excluded at the left, right, top and bottom
    edges. ``plane_group`` is the mesoscope imaging-plane group (``None`` for a single-plane rig).
    """

    ophys_experiment_id: int
    targeted_structure: str
    imaging_depth_um: int
    frame_rate_hz: float
    movie_path: Path
    movie_shape: tuple[int, int, int]
    motion_border: dict
    rois: tuple[RoiSpec, ...]
    max_projection_path: Path
    average_projection_path: Path
    motion_offsets_path: Path
    truth_path: Path
    plane_group: int | None = None
    pixel_size_um: float = 0.78


@dataclasses.dataclass(frozen=True)
class OphysSessionFiles:
    """A synthetic ophys session (LIMS ``ophys_session``) with one or more planes.

    * ``stimulus_table_path``: CSV, one row per presentation (see :mod:`data_fixtures.stimulus`).
    * ``running_speed_path``: CSV with columns ``timestamps`` (s) and ``speed`` (cm/s), 60 Hz.
    * ``timestamps_path``: HDF5 with ``ophys_timestamps`` (s, one per imaging frame, shared by all
      planes) and ``stimulus_timestamps`` (s, one per stimulus-monitor frame).
    * ``truth_path``: JSON, per-cell tuning truth for every plane.
    * ``sync_path`` / ``eye_tracking_path`` (optional): the rig sync HDF5 (:mod:`data_fixtures.sync`) and the
      per-frame eye ellipse fits (:mod:`data_fixtures.eye_tracking`), timed by the sync file's eye camera line.
    """

    ophys_session_id: int
    session_type: str
    frame_rate_hz: float
    planes: tuple[OphysPlaneFiles, ...]
    stimulus_table_path: Path
    running_speed_path: Path
    timestamps_path: Path
    truth_path: Path
    sync_path: Path | None = None
    eye_tracking_path: Path | None = None


@dataclasses.dataclass(frozen=True)
class BehaviorSessionFiles:
    """A synthetic Visual Behavior change-detection session (all CSV except the JSON truth).

    * ``trials_path``: one row per trial (see :mod:`data_fixtures.behavior` for the columns).
    * ``licks_path``: ``timestamps`` (s), ``frame`` (60 Hz stimulus frame index).
    * ``rewards_path``: ``timestamps`` (s), ``volume`` (mL), ``auto_rewarded`` (bool).
    * ``running_speed_path``: ``timestamps`` (s), ``speed`` (cm/s) at 60 Hz.
    * ``stimulus_presentations_path``: one row per flash.
    * ``sync_path`` (optional): the rig sync HDF5 (:mod:`data_fixtures.sync`); with it the presentation
      times come from the vsync/photodiode lines and the ``start_frame``/``end_frame`` columns.
    """

    behavior_session_id: int
    session_type: str
    trials_path: Path
    licks_path: Path
    rewards_path: Path
    running_speed_path: Path
    stimulus_presentations_path: Path
    truth_path: Path
    duration_s: float = 0.0
    sync_path: Path | None = None


@dataclasses.dataclass(frozen=True)
class ProbeFiles:
    """One Neuropixels probe of a synthetic ecephys session.

    ``sorting_dir`` holds Kilosort-style outputs: ``spike_times.npy`` (int64 samples at
    ``sampling_rate_hz``, sample 0 = session time 0), ``spike_clusters.npy`` (int32),
    ``spike_templates.npy`` (int32), ``amplitudes.npy`` (float64, raw template scaling),
    ``templates.npy`` (float32, ``n_templates x 82 x n_channels``, whitened), ``whitening_mat.npy`` and
    ``whitening_mat_inv.npy`` (float64, ``n_channels x n_channels``), ``mean_waveforms.npy`` (float32,
    ``n_clusters x 82 x n_channels``, volts, row = cluster id), ``channel_map.npy``,
    ``channel_positions.npy`` (µm) and ``cluster_group.tsv`` (``cluster_id``, ``group`` in good/mua/noise).

    ``lfp_path`` (or ``None``): HDF5 with ``data`` (samples x LFP channels, int16, ``conversion`` attribute
    in V/bit), ``timestamps`` (s), ``channels`` (probe-local channel indices) and ``channel_ids``.

    ``channels`` and ``units`` are LIMS-style records (see :mod:`data_fixtures.ecephys`).
    """

    probe_id: int
    name: str
    sorting_dir: Path
    lfp_path: Path | None
    sampling_rate_hz: float
    lfp_sampling_rate_hz: float
    channels: tuple[dict, ...]
    units: tuple[dict, ...]
    truth_path: Path
    amplitude_scale_factor: float = 0.195e-6


@dataclasses.dataclass(frozen=True)
class EcephysSessionFiles:
    """A synthetic Neuropixels session: probes plus session-level CSV tables and JSON truth.

    * ``stimulus_table_path``: CSV, visual stimulus presentations (see :mod:`data_fixtures.stimulus`).
    * ``optotagging_table_path``: CSV with ``start_time, stop_time, condition, level, duration,
      stimulus_name``.
    * ``running_speed_path``: CSV ``timestamps`` (s), ``speed`` (cm/s) at 60 Hz.
    * ``running_wheel_path``: CSV ``timestamps`` (s), ``dx`` (rad), ``vsig``, ``vin`` (V): the raw wheel signals.
    * ``sync_path`` / ``eye_tracking_path`` (optional): rig sync HDF5 and eye ellipse fits, as for ophys.
    """

    ecephys_session_id: int
    session_type: str
    probes: tuple[ProbeFiles, ...]
    stimulus_table_path: Path
    optotagging_table_path: Path
    running_speed_path: Path
    truth_path: Path
    duration_s: float = 0.0
    running_wheel_path: Path | None = None
    sync_path: Path | None = None
    eye_tracking_path: Path | None = None


@dataclasses.dataclass(frozen=True)
class IcephysCellFiles:
    """A synthetic patch-clamp cell: an icephys NWB file written with pynwb plus JSON truth."""

    cell_specimen_id: int
    nwb_path: Path
    truth_path: Path
    sweep_numbers: tuple[int, ...] = ()


# ----------------------------------------------------------------------------------------------------
# Shared helpers for the generators
# ----------------------------------------------------------------------------------------------------


def rng_for(seed: int, *keys: int) -> np.random.Generator:
    """A random generator for one named stream: the same ``seed`` and ``keys`` always give the same draws."""
    if int(seed) < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    return np.random.default_rng([int(seed), *[int(k) for k in keys]])


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    """Write a table atomically as CSV (no index, ``\\n`` line ends, full float precision)."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, lineterminator="\n")
    return Path(path)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def _finite_json(value: Any) -> Any:
    """Replace NaN/inf floats by ``None`` so the JSON is strict."""
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_json(v) for v in value]
    return value


def write_json(obj: Any, path: Path) -> Path:
    """Write ``obj`` atomically as sorted, indented, strict JSON (NaN -> null)."""
    text = json.dumps(_finite_json(json.loads(json.dumps(obj, default=_json_default))), indent=1, sort_keys=True)
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n")
    return Path(path)


def write_h5_arrays(path: Path, arrays: dict[str, Any], attrs: dict[str, Any] | None = None) -> Path:
    """Write small arrays as one HDF5 dataset each (no timestamps), atomically."""
    import h5py

    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            for name, value in arrays.items():
                f.create_dataset(name, data=value, track_times=False)
            for key, value in (attrs or {}).items():
                f.attrs[key] = value
    return Path(path)


def corrupt_file(path: str | os.PathLike, *, keep_fraction: float = 0.5) -> Path:
    """Truncate a file in place to ``keep_fraction`` of its size, for bad-input tests.

    A truncated HDF5 file (NWB included) no longer opens: its superblock records a larger end of file.
    The file always loses at least one byte. Returns the path.
    """
    if not 0.0 <= keep_fraction < 1.0:
        raise ValueError(f"keep_fraction must be in [0, 1), got {keep_fraction}")
    path = Path(path)
    size = path.stat().st_size
    keep = min(int(size * keep_fraction), max(size - 1, 0))
    with open(path, "r+b") as fh:
        fh.truncate(keep)
    return path


def paths_of(files: Any) -> list[Path]:
    """Every file path named by a returned spec (recursively), for hashing and cleanup in tests."""
    found: list[Path] = []

    def visit(value: Any) -> None:
        if isinstance(value, Path):
            if value.is_dir():
                found.extend(sorted(p for p in value.rglob("*") if p.is_file()))
            else:
                found.append(value)
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            for field in dataclasses.fields(value):
                visit(getattr(value, field.name))
        elif isinstance(value, (list, tuple)):
            for item in value:
                visit(item)

    visit(files)
    unique: dict[Path, None] = {}
    for p in found:
        unique.setdefault(p, None)
    return list(unique)


def iter_blocks(total: int, block: int) -> Iterable[tuple[int, int]]:
    """``(start, stop)`` pairs covering ``range(total)`` in steps of ``block``."""
    if block < 1:
        raise ValueError(f"block size must be >= 1, got {block}")
    for start in range(0, total, block):
        yield start, min(start + block, total)
