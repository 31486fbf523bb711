"""Synthetic eye tracking: per-frame ellipse fits of pupil, eye and corneal reflection, with known blinks.

One row per eye-camera frame (the camera times come from the session's sync file, see
:mod:`data_fixtures.sync`), columns ``<field>_<param>`` for ``cr``, ``eye``, ``pupil`` x ``center_x,
center_y, width, height, phi`` (pixels / radians; width and height are half-axes, as in the DLC ellipse
fits AllenSDK reads).

Model: the pupil is a circle of radius ``r(t) = pupil_radius_px (1 + a1 sin(2 pi t / 37 s + p1) + a2
sin(2 pi t / 7 s + p2))`` seen at an angle ``theta(t)`` (10-25 degrees): width = r, height = r cos(theta)
(true area pi r^2). Fits carry multiplicative noise ``fit_noise``. Blinks (``blink_rate_hz``, 4-9 frames
each): the eyelid closes (eye height down to 10-45 %); in the middle frames the pupil and the corneal
reflection are not found (NaN), at the edges the pupil is half covered. Truth (HDF5): ``pupil_area``
(pi r^2 per frame), ``blink`` (bool per frame).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from data_fixtures.spec import rng_for, write_csv, write_h5_arrays
from data_fixtures.sync import write_sync_file

__all__ = ["EyeParams", "write_eye_tracking_file", "write_rig_files"]


@dataclasses.dataclass(frozen=True)
class EyeParams:
    pupil_radius_px: float = 20.0
    dilation_amplitudes: tuple[float, float] = (0.2, 0.05)
    eye_half_axes_px: tuple[float, float] = (150.0, 100.0)
    cr_half_axes_px: tuple[float, float] = (6.0, 5.0)
    fit_noise: float = 0.0005
    eye_noise: float = 0.01
    blink_rate_hz: float = 1.0 / 15.0
    blink_frames: tuple[int, int] = (4, 9)


def write_eye_tracking_file(out_dir: str | Path, camera_times: np.ndarray, *, seed: int,
                            params: EyeParams = EyeParams(), name: str = "eye_tracking_ellipses.csv") -> tuple[Path, Path]:
    """Write the ellipse fits CSV and ``eye_tracking_truth.h5``; returns both paths."""
    p = params
    rng = rng_for(seed, 43, 1)
    t = np.asarray(camera_times, dtype=np.float64)
    n = len(t)
    a1, a2 = p.dilation_amplitudes
    ph = rng.uniform(0, 2 * np.pi, 2)
    r = p.pupil_radius_px * (1 + a1 * np.sin(2 * np.pi * t / 37.0 + ph[0]) + a2 * np.sin(2 * np.pi * t / 7.0 + ph[1]))
    theta = np.deg2rad(17.5 + 7.5 * np.sin(2 * np.pi * t / 23.0 + ph[0]))
    noise = lambda s: 1 + rng.normal(0.0, s, n)  # noqa: E731
    cx = 320 + 3 * np.sin(2 * np.pi * t / 11.0) + rng.normal(0, 0.3, n)
    cy = 240 + 2 * np.cos(2 * np.pi * t / 13.0) + rng.normal(0, 0.3, n)
    fits = {
        "cr_center_x": cx - 8 + rng.normal(0, 0.2, n), "cr_center_y": cy - 5 + rng.normal(0, 0.2, n),
        "cr_width": p.cr_half_axes_px[0] * noise(0.02), "cr_height": p.cr_half_axes_px[1] * noise(0.02),
        "cr_phi": rng.normal(0.0, 0.05, n),
        "eye_center_x": 320 + rng.normal(0, 0.5, n), "eye_center_y": 240 + rng.normal(0, 0.5, n),
        "eye_width": p.eye_half_axes_px[0] * noise(p.eye_noise), "eye_height": p.eye_half_axes_px[1] * noise(p.eye_noise),
        "eye_phi": rng.normal(0.05, 0.01, n),
        "pupil_center_x": cx, "pupil_center_y": cy,
        "pupil_width": r * noise(p.fit_noise), "pupil_height": r * np.cos(theta) * noise(p.fit_noise),
        "pupil_phi": rng.normal(0.1, 0.02, n),
    }
    blink = np.zeros(n, dtype=bool)
    n_blinks = max(3, int(round((t[-1] - t[0]) * p.blink_rate_hz))) if n else 0
    starts = np.sort(rng.choice(np.arange(20, max(n - 30, 21)), size=min(n_blinks, max(n - 50, 0) // 40), replace=False)) if n > 100 else []
    for s in starts:
        length = int(rng.integers(p.blink_frames[0], p.blink_frames[1] + 1))
        if blink[max(s - 10, 0) : s + length + 10].any():
            continue
        idx = np.arange(s, s + length)
        blink[idx] = True
        fits["eye_height"][idx] *= rng.uniform(0.10, 0.45, length)
        middle = idx[1:-1]
        for col in ("pupil_center_x", "pupil_center_y", "pupil_width", "pupil_height", "pupil_phi",
                    "cr_center_x", "cr_center_y", "cr_width", "cr_height", "cr_phi"):
            fits[col][middle] = np.nan
        for edge in (idx[0], idx[-1]):
            fits["pupil_height"][edge] *= 0.5
    frame = pd.DataFrame(fits)
    out_dir = Path(out_dir)
    path = write_csv(frame, out_dir / name)
    truth = write_h5_arrays(out_dir / "eye_tracking_truth.h5",
                            {"pupil_area": np.pi * r * r, "blink": blink, "timestamps": t},
                            attrs={"n_blinks": int(np.sum(np.diff(np.r_[0, blink.astype(int)]) == 1))})
    return path, truth


def write_rig_files(session_dir: str | Path, *, duration_s: float, seed: int,
                    eye_tracking: bool = True) -> tuple[Path, Path | None]:
    """A session's sync file and (optionally) its eye ellipse fits timed by the sync eye camera line."""
    sync = write_sync_file(session_dir, duration_s=duration_s, seed=seed)
    if not eye_tracking:
        return sync.sync_path, None
    with h5py.File(sync.truth_path, "r") as f:
        camera_times = f["camera_times"][()]
    eye_path, _ = write_eye_tracking_file(session_dir, camera_times, seed=seed)
    return sync.sync_path, eye_path
