"""Current source density (CSD) of one probe from its LFP around stimulus onsets (pure: numpy, scipy, h5py).

The method follows the AllenSDK ecephys ``current_source_density`` module, with the differences noted:

1. **Trials**: the onsets (``start_time``) of the presentations of one stimulus (``stimulus_name``, default
   ``flashes``; ``stimulus_index`` picks one block, by default the lowest as in AllenSDK; ``num_trials`` keeps the
   first ones). The window is ``pre_stimulus_time_s`` before to ``post_stimulus_time_s`` after each onset on a grid
   of one LFP sample (``np.arange(-pre, post, 1 / rate)``); the LFP is linearly interpolated onto it from its own
   timestamps. A window that does not lie wholly inside the recording is skipped (and counted).
2. **Streaming**: only the samples of the windows are read from the LFP HDF5 file, in blocks of at most
   ``block_mb`` (as float64) that cover one or more neighbouring windows (at least one window per read); the LFP is never loaded whole and only the
   running sums over trials are kept (AllenSDK loads the whole LFP and keeps every trial).
3. **Re-referencing**: when some valid channels lie outside the brain, their median (at most
   ``max_out_of_brain_channels`` of them) is subtracted from every channel at every sample (AllenSDK's
   ``remove_lfp_noise``).
4. **Bad channels**: channels marked invalid (reference channels, ``valid_data`` false), outside the brain, or
   noisy (mean over trials of the standard deviation over the window above ``noisy_channel_threshold_uv``; AllenSDK:
   1500 bits = 292.5 µV at 0.195 µV/bit) are left out; the depth profile is interpolated over them.
5. **Filter**: Butterworth band-pass ``filter_cuts_hz`` (5-150 Hz) of order ``filter_order`` (5), forward and
   backward along time, as second-order sections (``scipy.signal.sosfiltfilt``; AllenSDK uses ``filtfilt`` on the
   (b, a) form, less stable at 5 Hz / 2500 Hz). The filter is linear, so filtering the trial mean equals the mean of
   the filtered trials, which AllenSDK computes.
6. **Depth profile**: the good channels at one vertical position (several columns) are averaged; the profile is
   interpolated (cubic spline; linear with three depths) onto virtual electrodes every ``virtual_spacing_um``
   (default: half the smallest row spacing, 10 µm on Neuropixels 1.0, as AllenSDK) between the deepest and the
   shallowest good channel (no extrapolation; AllenSDK interpolates a 2-D cubic over the whole shank and fills 0
   outside the channels).
7. **Smoothing**: a Gaussian over depth of ``smoothing_sigma_um`` (0: none; AllenSDK leaves smoothing to the reader).
8. **CSD** = ``-(phi[z + h] - 2 phi[z] + phi[z - h]) / h**2`` with ``h`` in mm and the profile edge-padded by one
   electrode, in V/mm²: current sinks are negative, sources positive. AllenSDK stores ``+d²phi/dz²`` (the opposite
   sign); multiply by -1 to compare.

Bad input raises one :class:`~release_platform.errors.InputError` naming the probe and the file: no presentations of
the stimulus, no window inside the recording, every channel inside the brain bad, fewer than three good depths.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Iterator, Optional, Sequence

import h5py
import numpy as np
import pandas as pd
import pydantic

from release_platform.errors import InputError

__all__ = [
    "CsdParams",
    "LfpSource",
    "CsdChannels",
    "CsdResult",
    "OUTSIDE_BRAIN_LABELS",
    "inside_brain",
    "stimulus_onsets",
    "trial_windows",
    "second_derivative_csd",
    "current_source_density",
]

#: Structure labels of channels outside the brain (a missing label counts as outside too).
OUTSIDE_BRAIN_LABELS = frozenset({"", "none", "out of brain", "outside brain", "oob"})


class CsdParams(pydantic.BaseModel):
    """Parameters of the CSD (defaults as in AllenSDK's CSD module where it has them)."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    stimulus_name: str = "flashes"
    stimulus_index: Optional[int] = None
    pre_stimulus_time_s: float = pydantic.Field(default=0.1, ge=0)
    post_stimulus_time_s: float = pydantic.Field(default=0.25, gt=0)
    num_trials: Optional[int] = pydantic.Field(default=None, ge=1)
    filter_cuts_hz: tuple[float, float] = (5.0, 150.0)
    filter_order: int = pydantic.Field(default=5, ge=1)
    noisy_channel_threshold_uv: float = pydantic.Field(default=292.5, gt=0)
    virtual_spacing_um: Optional[float] = pydantic.Field(default=None, gt=0)
    smoothing_sigma_um: float = pydantic.Field(default=20.0, ge=0)
    rereference: bool = True
    max_out_of_brain_channels: int = pydantic.Field(default=50, ge=1)
    surface_vertical_position_um: Optional[float] = None
    block_mb: float = pydantic.Field(default=32.0, gt=0)

    @pydantic.field_validator("filter_cuts_hz")
    @classmethod
    def _band(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 < v[0] < v[1]:
            raise ValueError(f"filter_cuts_hz must be 0 < low < high, got {v}")
        return v


@dataclasses.dataclass(frozen=True)
class LfpSource:
    """An LFP in an HDF5 file: ``data`` (samples x channels, numbers), times from the dataset named ``timestamps``
    (s, increasing; or an array of them) or, when it is None, ``starting_time + i / rate``; ``conversion`` volts per
    stored unit."""

    path: Path
    rate: float
    data: str = "data"
    timestamps: Optional[str | np.ndarray] = "timestamps"
    starting_time: float = 0.0
    conversion: float = 1.0
    entity: str = ""


@dataclasses.dataclass(frozen=True)
class CsdChannels:
    """The LFP's columns in file order: channel ids, positions (µm), validity and whether inside the brain."""

    ids: np.ndarray
    vertical_um: np.ndarray
    horizontal_um: np.ndarray
    valid: np.ndarray
    inside_brain: np.ndarray

    @classmethod
    def from_records(cls, records: Sequence, surface_vertical_position_um: Optional[float] = None) -> "CsdChannels":
        """From channel records in LFP column order (mappings or :class:`~release_platform.ecephys.probes.Channel`:
        ``id``, ``probe_vertical_position``, ``probe_horizontal_position``, ``valid_data``, ``structure_acronym``);
        inside the brain by :func:`inside_brain`."""
        def get(r, key, default=None):
            return r.get(key, default) if isinstance(r, dict) else getattr(r, key, default)

        vertical = np.array([get(r, "probe_vertical_position") for r in records], dtype=np.float64)
        return cls(
            ids=np.array([get(r, "id") for r in records], dtype=np.int64),
            vertical_um=vertical,
            horizontal_um=np.array([get(r, "probe_horizontal_position") for r in records], dtype=np.float64),
            valid=np.array([bool(get(r, "valid_data", True)) for r in records], dtype=bool),
            inside_brain=inside_brain([get(r, "structure_acronym") for r in records], vertical, surface_vertical_position_um),
        )

    def __post_init__(self) -> None:
        n = len(self.ids)
        for name in ("vertical_um", "horizontal_um", "valid", "inside_brain"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"CsdChannels.{name} has {len(getattr(self, name))} values for {n} channels")


@dataclasses.dataclass
class CsdResult:
    """``csd`` (times x virtual electrodes, V/mm²; sinks negative) at ``relative_times`` (s from onset) and
    ``depths_um`` (vertical position of the virtual electrodes, µm from the probe tip, increasing), with the
    smoothed trial-mean LFP it came from (V), the onsets used and every LFP channel's id, position and status."""

    csd: np.ndarray
    relative_times: np.ndarray
    depths_um: np.ndarray
    horizontal_um: float
    trial_mean_lfp: np.ndarray
    onsets: np.ndarray
    n_skipped_trials: int
    channel_status: np.ndarray
    spacing_um: float
    stimulus_name: str
    stimulus_index: Optional[int]
    channel_ids: np.ndarray
    channel_vertical_um: np.ndarray
    channel_horizontal_um: np.ndarray

    @property
    def n_trials(self) -> int:
        return int(len(self.onsets))

    def sink(self) -> tuple[float, float]:
        """(time s, depth µm) of the strongest sink (most negative CSD)."""
        t, z = np.unravel_index(int(np.argmin(self.csd)), self.csd.shape)
        return float(self.relative_times[t]), float(self.depths_um[z])


def inside_brain(structure_acronyms: Sequence[Optional[str]], vertical_um: np.ndarray,
                 surface_vertical_position_um: Optional[float] = None) -> np.ndarray:
    """Channels inside the brain: a structure label not in :data:`OUTSIDE_BRAIN_LABELS` and, when the surface is
    given, at or below it (vertical positions count up from the tip)."""
    labels = np.array([str(a).strip().lower() if a is not None else "" for a in structure_acronyms], dtype=object)
    inside = ~np.isin(labels, list(OUTSIDE_BRAIN_LABELS))
    if surface_vertical_position_um is not None:
        inside &= np.asarray(vertical_um, dtype=float) <= float(surface_vertical_position_um)
    return inside


def stimulus_onsets(table: pd.DataFrame, params: CsdParams, *, entity: str = "", path=None) -> tuple[np.ndarray, Optional[int]]:
    """Onsets (s, sorted) of the presentations of ``params.stimulus_name`` (and stimulus index); with the index used."""
    frame = table.rename(columns={"Start": "start_time"})
    if "start_time" not in frame.columns or "stimulus_name" not in frame.columns:
        raise InputError("stimulus table lacks start_time or stimulus_name", entity=entity, path=path)
    rows = frame[frame["stimulus_name"].astype(str) == params.stimulus_name]
    index = params.stimulus_index
    block = pd.to_numeric(rows["stimulus_index"], errors="coerce").to_numpy(dtype=float) if "stimulus_index" in rows.columns \
        else np.zeros(0)
    if np.isfinite(block).any():
        if index is None:
            index = int(np.nanmin(block))
        rows = rows[block == index]
    elif index is not None:
        raise InputError(f"stimulus_index {index} asked for but the stimulus table gives no stimulus_index",
                         entity=entity, path=path)
    onsets = np.sort(pd.to_numeric(rows["start_time"], errors="coerce").to_numpy(dtype=np.float64))
    if params.num_trials is not None:
        onsets = onsets[: params.num_trials]
    if not len(onsets) or not np.isfinite(onsets).all():
        raise InputError(f"no usable presentations of stimulus {params.stimulus_name!r} for the current source density",
                         entity=entity, path=path)
    return onsets, index


def _open_dataset(fh: h5py.File, name: str, lfp: LfpSource) -> h5py.Dataset:
    if name not in fh or not isinstance(fh[name], h5py.Dataset):
        raise InputError(f"LFP file has no dataset {name!r}", entity=lfp.entity, path=lfp.path)
    return fh[name]


def _locate(ts: h5py.Dataset, targets: np.ndarray, block: int) -> np.ndarray:
    """``searchsorted(ts, targets)`` over an increasing timestamp dataset read in blocks (targets sorted)."""
    n = ts.shape[0]
    out = np.full(len(targets), n, dtype=np.int64)
    done = 0
    for a in range(0, n, block):
        if done == len(targets):
            break
        chunk = np.asarray(ts[a : min(a + block, n)], dtype=np.float64)
        k = done + int(np.searchsorted(targets[done:], chunk[-1], side="right"))
        out[done:k] = a + np.searchsorted(chunk, targets[done:k])
        done = k
    return out


def trial_windows(lfp: LfpSource, onsets: np.ndarray, relative_times: np.ndarray,
                  block_mb: float = 32.0) -> Iterator[tuple[int, Optional[np.ndarray]]]:
    """For each onset (in order) its index and the LFP (V, ``len(relative_times)`` x channels) at
    ``onset + relative_times``, linearly interpolated; None when the window is not wholly inside the recording.

    Neighbouring windows are read together, at most ``block_mb`` (as float64) per read, at least one window.
    """
    onsets = np.asarray(onsets, dtype=np.float64)
    order = np.argsort(onsets, kind="stable")
    try:
        with h5py.File(lfp.path, "r") as fh:
            data = _open_dataset(fh, lfp.data, lfp)
            if data.ndim != 2 or not np.issubdtype(data.dtype, np.number):
                raise InputError(f"LFP dataset {lfp.data!r} has shape {data.shape} and dtype {data.dtype}; expected "
                                 "samples x channels numbers", entity=lfp.entity, path=lfp.path)
            n = int(data.shape[0])
            block_samples = max(int(block_mb * 1e6 // (8 * max(int(data.shape[1]), 1))), 1)
            ts_ds = lfp.timestamps if lfp.timestamps is None or isinstance(lfp.timestamps, np.ndarray) else \
                _open_dataset(fh, lfp.timestamps, lfp)
            if ts_ds is not None and ts_ds.shape[0] != n:
                raise InputError(f"{ts_ds.shape[0]} LFP timestamps for {n} samples", entity=lfp.entity, path=lfp.path)
            first = onsets[order] + relative_times[0]
            last = onsets[order] + relative_times[-1]
            if ts_ds is None:
                lo = np.floor((first - lfp.starting_time) * lfp.rate).astype(np.int64) - 1
                hi = np.ceil((last - lfp.starting_time) * lfp.rate).astype(np.int64) + 2
            else:
                lo = _locate(ts_ds, first, block_samples) - 1
                hi = _locate(ts_ds, last, block_samples) + 1
            lo, hi = np.clip(lo, 0, n), np.clip(hi, 0, n)
            i = 0
            while i < len(order):
                j = i + 1
                while j < len(order) and hi[j] - lo[i] <= block_samples:
                    j += 1
                a, b = int(lo[i]), int(max(hi[i:j].max(), lo[i]))
                block = np.asarray(data[a:b], dtype=np.float64) * lfp.conversion
                if ts_ds is None:
                    times = lfp.starting_time + np.arange(a, b, dtype=np.float64) / lfp.rate
                else:
                    times = np.asarray(ts_ds[a:b], dtype=np.float64)
                for k in range(i, j):
                    yield int(order[k]), _interpolate(times, block, onsets[order[k]] + relative_times)
                i = j
    except InputError:
        raise
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"cannot read the LFP (corrupt or truncated?): {exc}", entity=lfp.entity, path=lfp.path) from None


def _interpolate(times: np.ndarray, block: np.ndarray, wanted: np.ndarray) -> Optional[np.ndarray]:
    if len(times) < 2 or wanted[0] < times[0] or wanted[-1] > times[-1]:
        return None
    pos = np.interp(wanted, times, np.arange(len(times), dtype=np.float64))
    lo = np.minimum(np.floor(pos).astype(np.int64), len(times) - 2)
    frac = (pos - lo)[:, None]
    return block[lo] * (1.0 - frac) + block[lo + 1] * frac


def second_derivative_csd(profile: np.ndarray, spacing_mm: float) -> np.ndarray:
    """``-d²phi/dz²`` along axis 1 of ``profile`` (times x depths), edge-padded by one electrode, per mm²."""
    padded = np.pad(profile, ((0, 0), (1, 1)), mode="edge")
    return -(padded[:, 2:] - 2.0 * padded[:, 1:-1] + padded[:, :-2]) / spacing_mm**2


def _depth_profile(mean_lfp: np.ndarray, vertical: np.ndarray, good: np.ndarray, spacing_um: float):
    from scipy.interpolate import CubicSpline

    depths = np.unique(vertical[good])
    by_depth = np.stack([mean_lfp[:, good & (vertical == z)].mean(axis=1) for z in depths], axis=1)
    n_virtual = int(math.floor((depths[-1] - depths[0]) / spacing_um + 1e-9)) + 1
    virtual = depths[0] + spacing_um * np.arange(n_virtual)
    if len(depths) >= 4:
        profile = CubicSpline(depths, by_depth, axis=1)(virtual)
    else:
        profile = np.stack([np.interp(virtual, depths, row) for row in by_depth])
    return virtual, profile


def current_source_density(lfp: LfpSource, channels: CsdChannels, onsets: np.ndarray,
                           params: CsdParams = CsdParams(), *, stimulus_index: Optional[int] = None) -> CsdResult:
    """The CSD of one probe (see the module docstring); ``onsets`` from :func:`stimulus_onsets`."""
    from scipy import signal
    from scipy.ndimage import gaussian_filter1d

    entity = lfp.entity
    if not (lfp.rate > 0 and np.isfinite(lfp.rate)):
        raise InputError(f"LFP sampling rate {lfp.rate!r} is not positive", entity=entity, path=lfp.path)
    relative = np.arange(-params.pre_stimulus_time_s, params.post_stimulus_time_s, 1.0 / lfp.rate)
    n_ch = len(channels.ids)
    valid = np.asarray(channels.valid, dtype=bool)
    inside = np.asarray(channels.inside_brain, dtype=bool)
    vertical = np.asarray(channels.vertical_um, dtype=np.float64)
    outside_ref = np.flatnonzero(valid & ~inside)[: params.max_out_of_brain_channels] if params.rereference else np.zeros(0, int)

    total = np.zeros((len(relative), n_ch))
    std_sum = np.zeros(n_ch)
    used: list[float] = []
    skipped = 0
    for k, window in trial_windows(lfp, onsets, relative, params.block_mb):
        if window is None or window.shape[1] != n_ch:
            if window is not None:
                raise InputError(f"LFP has {window.shape[1]} channels but {n_ch} channel records", entity=entity, path=lfp.path)
            skipped += 1
            continue
        if len(outside_ref):
            window = window - np.median(window[:, outside_ref], axis=1, keepdims=True)
        total += window
        std_sum += window.std(axis=0)
        used.append(float(onsets[k]))
    if not used:
        raise InputError(f"none of the {len(onsets)} windows around {params.stimulus_name!r} onsets lies inside the LFP "
                         "recording", entity=entity, path=lfp.path)
    mean = total / len(used)
    noisy = std_sum / len(used) > params.noisy_channel_threshold_uv * 1e-6
    finite = np.isfinite(mean).all(axis=0)
    status = np.where(~valid, "invalid", np.where(~inside, "outside_brain", np.where(~finite, "not_finite",
                                                                                      np.where(noisy, "noisy", "used"))))
    good = status == "used"
    if not good.any():
        counts = {s: int((status == s).sum()) for s in np.unique(status)}
        raise InputError(f"cannot compute the current source density: every LFP channel inside the brain is bad "
                         f"({counts})", entity=entity, path=lfp.path)
    if len(np.unique(vertical[good])) < 3:
        raise InputError(f"cannot compute the current source density: good channels at only "
                         f"{len(np.unique(vertical[good]))} depths (need 3)", entity=entity, path=lfp.path)

    nyquist = lfp.rate / 2.0
    high = min(params.filter_cuts_hz[1], 0.99 * nyquist)
    sos = signal.butter(params.filter_order, [params.filter_cuts_hz[0] / nyquist, high / nyquist], btype="bandpass", output="sos")
    padlen = 3 * (2 * len(sos) + 1)
    if len(relative) <= padlen:
        raise InputError(f"the CSD window has {len(relative)} samples; the band-pass filter needs more than {padlen}",
                         entity=entity, path=lfp.path)
    filtered = np.zeros_like(mean)
    filtered[:, good] = signal.sosfiltfilt(sos, mean[:, good], axis=0)

    rows = np.unique(vertical)
    spacing = params.virtual_spacing_um or (float(np.min(np.diff(rows))) / 2.0 if len(rows) > 1 else 10.0)
    depths, profile = _depth_profile(filtered, vertical, good, spacing)
    if params.smoothing_sigma_um > 0:
        profile = gaussian_filter1d(profile, params.smoothing_sigma_um / spacing, axis=1, mode="nearest")
    csd = second_derivative_csd(profile, spacing / 1000.0)
    return CsdResult(
        csd=csd,
        relative_times=relative,
        depths_um=depths,
        horizontal_um=float(np.mean(np.asarray(channels.horizontal_um, dtype=float)[good])),
        trial_mean_lfp=profile,
        onsets=np.asarray(used),
        n_skipped_trials=skipped,
        channel_status=status.astype(str),
        spacing_um=float(spacing),
        stimulus_name=params.stimulus_name,
        stimulus_index=stimulus_index,
        channel_ids=np.asarray(channels.ids, dtype=np.int64),
        channel_vertical_um=vertical,
        channel_horizontal_um=np.asarray(channels.horizontal_um, dtype=np.float64),
    )
