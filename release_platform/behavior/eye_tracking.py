"""Eye tracking: per-frame ellipse fits of pupil, eye and corneal reflection -> areas and likely blinks.

Input (one row per eye-camera frame), the columns AllenSDK's ``load_eye_tracking_hdf`` gives: for each
of ``cr``, ``eye`` and ``pupil`` the ellipse ``<field>_center_x``, ``<field>_center_y`` (pixels),
``<field>_width``, ``<field>_height`` (pixels, **half**-axes, as the DeepLabCut ellipse fits give them)
and ``<field>_phi`` (radians). Read from a CSV with those columns, or from AllenSDK's DLC ellipse HDF5
(pandas keys ``cr``, ``eye``, ``pupil`` with ``center_x, center_y, width, height, phi``; needs PyTables).
Complex values (an artifact of the fitting) keep their real part, as AllenSDK does.

Camera timestamps come from the rig's sync file (the eye camera line, see
:func:`release_platform.sync.camera_frame_times`) or, for labs without sync, from a ``timestamps`` column.
As in AllenSDK (AllenSDK#1545), up to 15 trailing camera pulses more than fitted frames are trimmed; any
other mismatch — in particular an ellipse file shorter than the camera timestamps — is one error.

Outputs (AllenSDK's conventions, ``process_eye_tracking_data``):

* ``cr_area`` and ``eye_area`` = pi x width x height (ellipse of half-axes, px^2); ``pupil_area`` =
  pi x max(width, height)^2: the pupil is taken to be a circle seen obliquely, so its larger half-axis is
  its radius;
* ``likely_blink``: frames whose eye or pupil area is missing, or where either area's z-score (over the
  session, NaNs omitted, population std) exceeds ``z_threshold`` (3.0), dilated by ``dilation_frames``
  (2) frames on each side;
* ``*_area_raw`` keep every value; ``*_area`` and the eye/pupil width, height and phi are NaN on likely
  blinks.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from release_platform.errors import InputError

__all__ = [
    "ELLIPSE_FIELDS",
    "ELLIPSE_PARAMS",
    "FIT_COLUMNS",
    "MAX_EXTRA_CAMERA_PULSES",
    "load_ellipse_fits",
    "align_camera_times",
    "ellipse_area",
    "circular_area",
    "area_outliers",
    "likely_blinks",
    "process_eye_tracking",
]

ELLIPSE_FIELDS = ("cr", "eye", "pupil")
ELLIPSE_PARAMS = ("center_x", "center_y", "width", "height", "phi")
FIT_COLUMNS = tuple(f"{f}_{p}" for f in ELLIPSE_FIELDS for p in ELLIPSE_PARAMS)
MAX_EXTRA_CAMERA_PULSES = 15


def _real(values) -> np.ndarray:
    arr = np.asarray(values)
    if np.iscomplexobj(arr):
        arr = np.real(arr)
    if arr.dtype == object:
        arr = np.array([np.real(complex(v)) if isinstance(v, (complex, str)) else v for v in arr], dtype=object)
    return pd.to_numeric(pd.Series(arr), errors="coerce").to_numpy(np.float64)


def load_ellipse_fits(path: str | os.PathLike, *, entity: str | None = None) -> pd.DataFrame:
    """Per-frame ellipse fits (``FIT_COLUMNS`` plus ``timestamps`` when the file has it), index = frame."""
    path = Path(path)
    if not path.exists():
        raise InputError("eye tracking file is missing", entity=entity, path=path)
    try:
        if path.suffix.lower() in (".h5", ".hdf5"):
            parts = []
            for field in ELLIPSE_FIELDS:
                part = pd.read_hdf(path, key=field)
                parts.append(part.rename(columns={c: f"{field}_{c}" for c in part.columns}))
            frame = pd.concat(parts, axis=1).reset_index(drop=True)
        else:
            frame = pd.read_csv(path)
    except ImportError as exc:
        raise InputError(f"cannot read the DLC ellipse HDF5 (needs PyTables): {exc}", entity=entity, path=path) from None
    except (OSError, KeyError, ValueError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise InputError(f"unreadable eye tracking file: {exc}", entity=entity, path=path) from None
    missing = [c for c in FIT_COLUMNS if c not in frame.columns]
    if missing:
        raise InputError(f"eye tracking file lacks the ellipse columns {missing}", entity=entity, path=path)
    out = pd.DataFrame({c: _real(frame[c].to_numpy()) for c in FIT_COLUMNS})
    if "timestamps" in frame.columns:
        out.insert(0, "timestamps", pd.to_numeric(frame["timestamps"], errors="coerce").to_numpy(np.float64))
    out.index = pd.RangeIndex(len(out), name="frame")
    return out


def align_camera_times(n_frames: int, camera_times: np.ndarray, *, entity: str | None = None,
                       path: str | os.PathLike | None = None,
                       max_extra_pulses: int = MAX_EXTRA_CAMERA_PULSES) -> np.ndarray:
    """One timestamp per fitted frame: trailing extra camera pulses (at most ``max_extra_pulses``) are
    dropped; any other length mismatch is one InputError."""
    times = np.asarray(camera_times, dtype=np.float64)
    n_sync = len(times)
    if n_frames < n_sync <= n_frames + max_extra_pulses:
        times = times[:n_frames]
    elif n_sync != n_frames:
        shorter = "shorter than" if n_frames < n_sync else "longer than"
        raise InputError(
            f"eye tracking file has {n_frames} frames, {shorter} the {n_sync} eye camera timestamps "
            f"(at most {max_extra_pulses} trailing extra camera pulses are tolerated)", entity=entity, path=path,
        )
    if not np.isfinite(times).all() or (len(times) > 1 and not np.all(np.diff(times) > 0)):
        raise InputError("eye camera timestamps are missing or not increasing", entity=entity, path=path)
    return times


def ellipse_area(width, height) -> np.ndarray:
    """pi x a x b for half-axes ``a``, ``b`` (px^2)."""
    return np.pi * np.asarray(width, dtype=np.float64) * np.asarray(height, dtype=np.float64)


def circular_area(width, height) -> np.ndarray:
    """pi x max(a, b)^2: a circle seen obliquely has its radius as the larger half-axis (NaN stays NaN)."""
    w, h = np.asarray(width, dtype=np.float64), np.asarray(height, dtype=np.float64)
    r = np.where(np.isnan(w) | np.isnan(h), np.nan, np.fmax(w, h))
    return np.pi * r * r


def area_outliers(areas: np.ndarray, z_threshold: float) -> np.ndarray:
    """Frames where any column of ``areas`` (frames x columns) has |z| > ``z_threshold`` (NaNs omitted)."""
    areas = np.atleast_2d(np.asarray(areas, dtype=np.float64).T).T
    mean = np.nanmean(areas, axis=0)
    std = np.nanstd(areas, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.abs((areas - mean) / std)
    return np.nan_to_num(z, nan=0.0).max(axis=1) > z_threshold if len(areas) else np.zeros(0, bool)


def likely_blinks(eye_area: np.ndarray, pupil_area: np.ndarray, outliers: np.ndarray,
                  dilation_frames: int = 2) -> np.ndarray:
    """Missing eye/pupil area or an outlier, dilated by ``dilation_frames`` frames each side."""
    blinks = np.isnan(eye_area) | np.isnan(pupil_area) | np.asarray(outliers, bool)
    if dilation_frames > 0 and blinks.any():
        blinks = ndimage.binary_dilation(blinks, iterations=int(dilation_frames))
    return blinks


def process_eye_tracking(fits: pd.DataFrame, timestamps: np.ndarray, *, z_threshold: float = 3.0,
                         dilation_frames: int = 2) -> pd.DataFrame:
    """The eye tracking table: ``timestamps``, areas, ``likely_blink``, raw areas and the fits (see the
    module docstring). ``timestamps`` has one value per row of ``fits`` (see :func:`align_camera_times`)."""
    if len(timestamps) != len(fits):
        raise ValueError(f"{len(timestamps)} timestamps for {len(fits)} frames")
    cr_area = ellipse_area(fits["cr_width"], fits["cr_height"])
    eye_area = ellipse_area(fits["eye_width"], fits["eye_height"])
    pupil_area = circular_area(fits["pupil_width"], fits["pupil_height"])
    outliers = area_outliers(np.column_stack([eye_area, pupil_area]), z_threshold)
    blink = likely_blinks(eye_area, pupil_area, outliers, dilation_frames)
    out = pd.DataFrame(
        {
            "timestamps": np.asarray(timestamps, dtype=np.float64),
            "cr_area": np.where(blink, np.nan, cr_area),
            "eye_area": np.where(blink, np.nan, eye_area),
            "pupil_area": np.where(blink, np.nan, pupil_area),
            "likely_blink": blink,
            "pupil_area_raw": pupil_area,
            "cr_area_raw": cr_area,
            "eye_area_raw": eye_area,
        },
        index=pd.RangeIndex(len(fits), name="frame"),
    )
    for col in FIT_COLUMNS:
        values = fits[col].to_numpy(np.float64).copy()
        if col.split("_", 1)[0] in ("eye", "pupil") and col.rsplit("_", 1)[-1] in ("width", "height", "phi"):
            values[blink] = np.nan
        out[col] = values
    return out
