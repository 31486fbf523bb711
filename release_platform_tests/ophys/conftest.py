"""Small synthetic ophys sessions with known ground truth.

Everything is made in memory (or in ``tmp_path`` h5 files) from a seeded generator:

* footprints: discs of known radius (pairs of discs overlap where asked);
* cell fluorescence F_C(t) = F0 (1 + dff_per_spike * (spikes * GCaMP kernel)), spikes Poisson, GCaMP
  kernel = difference of exponentials (rise 50 ms, decay 300 ms) normalised to a peak of 1;
* neuropil N(t): smooth drift plus fast fluctuations, the same in every pixel, mixed into ROI pixels
  with a known ratio r per ROI, so F_M = F_C + r N exactly in expectation;
* shot noise: Poisson counts on the expected pixel value.
"""

from __future__ import annotations

from dataclasses import dataclass

import h5py
import numpy as np
import pytest

FRAME_RATE_HZ = 30.0


def gcamp_kernel(frame_rate_hz: float, rise_s: float = 0.05, decay_s: float = 0.3) -> np.ndarray:
    """Difference-of-exponentials kernel with peak 1, long enough to decay below 1e-3."""
    t = np.arange(int(np.ceil(decay_s * frame_rate_hz * 8)) + 1) / frame_rate_hz
    kernel = np.exp(-t / decay_s) - np.exp(-t / rise_s)
    return kernel / kernel.max()


def cell_fluorescence(
    rng: np.random.Generator,
    n_cells: int,
    n_frames: int,
    *,
    frame_rate_hz: float = FRAME_RATE_HZ,
    rate_hz: float = 1.0,
    baseline: tuple[float, float] = (200.0, 600.0),
    dff_per_spike: float = 0.2,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(F_C n x T, F0 n, true dF/F n x T) from Poisson spikes convolved with the GCaMP kernel."""
    spikes = rng.poisson(rate_hz / frame_rate_hz, size=(n_cells, n_frames))
    kernel = gcamp_kernel(frame_rate_hz)
    calcium = np.stack([np.convolve(s, kernel)[:n_frames] for s in spikes]) if n_cells else np.zeros((0, n_frames))
    f0 = rng.uniform(*baseline, size=n_cells)
    true_dff = dff_per_spike * calcium
    return f0[:, None] * (1.0 + true_dff), f0, true_dff


def neuropil_signal(
    rng: np.random.Generator, n_frames: int, *, mean: float = 300.0, drift: float = 30.0, fast_std: float = 15.0
) -> np.ndarray:
    """Neuropil time course: mean + slow sinusoidal drift + white fast fluctuations (a.u.)."""
    t = np.arange(n_frames)
    slow = drift * np.sin(2 * np.pi * t / max(n_frames, 2) * rng.uniform(0.5, 2.0) + rng.uniform(0, 2 * np.pi))
    return mean + slow + fast_std * rng.standard_normal(n_frames)


def disk(shape: tuple[int, int], center: tuple[float, float], radius: float) -> np.ndarray:
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    return (rows - center[0]) ** 2 + (cols - center[1]) ** 2 <= radius**2


def roi_record(roi_id: int | str, mask_full: np.ndarray, **extra) -> dict:
    """LIMS-format record (cropped mask, x/y/width/height) of a full-frame boolean mask."""
    rows, cols = np.nonzero(mask_full)
    y0, x0 = int(rows.min()), int(cols.min())
    crop = mask_full[y0 : rows.max() + 1, x0 : cols.max() + 1]
    record = {
        "id": roi_id, "x": x0, "y": y0, "width": int(crop.shape[1]), "height": int(crop.shape[0]),
        "mask": crop.tolist(), "valid": True, "exclusion_labels": [],
    }
    record.update(extra)
    return record


@dataclass
class SyntheticSession:
    movie: np.ndarray  # T x H x W uint16
    masks: np.ndarray  # N x H x W bool
    records: list[dict]
    cells: np.ndarray  # N x T expected cell fluorescence per ROI pixel
    neuropil: np.ndarray  # T
    r: np.ndarray  # N
    frame_rate_hz: float

    @property
    def roi_ids(self) -> list[str]:
        return [str(rec["id"]) for rec in self.records]


def make_session(
    rng: np.random.Generator,
    *,
    shape: tuple[int, int] = (48, 48),
    n_frames: int = 200,
    centers: list[tuple[float, float]] | None = None,
    radius: float = 4.0,
    r: np.ndarray | None = None,
    neuropil_fast_std: float = 15.0,
    shot_noise: bool = True,
) -> SyntheticSession:
    """A movie whose pixel p at frame t is Poisson(sum_i M_i(p) F_C,i(t) + c(p) N(t)).

    c(p) = r_i inside ROI i (mean of the r of the ROIs covering p), 1 outside every ROI.
    """
    if centers is None:
        centers = [(12, 12), (12, 34), (34, 12), (34, 34)]
    n = len(centers)
    masks = np.stack([disk(shape, c, radius) for c in centers])
    cells, _, _ = cell_fluorescence(rng, n, n_frames)
    neuropil = neuropil_signal(rng, n_frames, fast_std=neuropil_fast_std)
    r = rng.uniform(0.3, 1.0, size=n) if r is None else np.asarray(r, dtype=float)
    cover = masks.sum(axis=0)
    contamination = np.where(cover > 0, np.tensordot(r, masks, axes=1) / np.maximum(cover, 1), 1.0)
    expected = np.einsum("nhw,nt->thw", masks.astype(float), cells) + contamination[None] * neuropil[:, None, None]
    movie = rng.poisson(expected) if shot_noise else np.rint(expected)
    movie = np.clip(movie, 0, np.iinfo(np.uint16).max).astype(np.uint16)
    records = [roi_record(1000 + i, masks[i]) for i in range(n)]
    return SyntheticSession(movie, masks, records, cells, neuropil, r, FRAME_RATE_HZ)


def write_movie(path, movie: np.ndarray, *, chunks: tuple[int, int, int] | None = None) -> str:
    with h5py.File(path, "w") as handle:
        handle.create_dataset("data", data=movie, chunks=chunks)
    return str(path)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20240917)
