"""Synthetic two-photon (ophys) sessions with exact ground truth.

Movie model, per plane (pixels ``p``, imaging frames ``t``, all fluorescence in a.u.)::

    V(p, t) = sum_k m_k(p) F_k(t) + R(p) B(p, t)            (noise-free value)
    movie   = uint16(rint(clip(V + sqrt(noise_scale * V) * z, 0, 65535)))   z ~ N(0, 1) per pixel

* ``m_k`` is the ROI mask of cell ``k`` (1 inside, overlaps allowed); every ROI is a cell.
* ``F_k(t) = F0_k (1 + dff_k(t))`` with ``dff_k = dff_per_ap_k * (spikes_k convolved with a
  double-exponential GCaMP kernel whose peak is 1)``; spikes are Poisson counts per frame with a rate
  set by the cell's tuning to the stimulus table and by running (:class:`data_fixtures.stimulus.Tuning`).
* ``B(p, t) = neuropil_level * sum_c S_c(p) G_c(t)``: a constant field plus Gaussian blobs ``S_c`` with
  positive time courses ``G_c`` (slow log-OU fluctuation times fast neuropil calcium events, times the
  photobleaching factor ``(1 - photobleaching_per_hour) ** (t / 3600 s)``). The spatial mean of
  ``sum_c S_c`` is 1.
* ``R(p)`` is the neuropil contamination ratio: ``r_k`` inside ROI ``k`` (the mean of the ``r`` of all
  ROIs covering ``p`` where ROIs overlap), 1 outside every ROI.

Plane truth file (HDF5, one dataset per name; ``N`` ROIs in ``roi_ids`` order, ``T`` frames):

* ``roi_ids`` (N, int64): the row order of every ``N x ...`` dataset; ``valid`` (N): False for ROIs with
  exclusion labels.
* ``r`` (N): true neuropil contamination ratio; ``F0`` (N, a.u.): baseline fluorescence;
  ``dff_per_ap`` (N): dF/F per action potential; ``rise_s``, ``decay_s`` (N, s): indicator kinetics;
  ``baseline_rate_hz`` (N, Hz): spontaneous firing rate.
* ``spikes`` (N x T, uint16): spike counts per frame.
* ``cell_traces`` (N x T): noise-free ``F_k``, the target of neuropil correction.
* ``dff_true`` (N x T): ``(F_k - F0_k) / F0_k``.
* ``expected_roi_traces`` (N x T): mean of the noise-free movie ``V`` over each ROI mask, i.e. what
  trace extraction returns when ``noise_scale = 0`` (up to uint16 rounding, at most 0.5).
* ``expected_neuropil_traces`` (N x T): mean of ``V`` (which is ``B`` there) over the reference
  neuropil mask: the ROI dilated ``neuropil_dilation_iterations`` times with a 3 x 3 element, minus the
  union of all ROIs, inside the motion border; NaN rows where that mask is empty.
* ``neuropil_in_mask_traces`` (N x T): mean of ``B`` over the ROI mask itself (the true ``F_N``).
* ``expected_demixed_traces`` (N x T): ``F_k + r_k * neuropil_in_mask``, the trace the ROI would have
  without overlapping neighbours (equal to ``expected_roi_traces`` for ROIs without overlap).
* ``overlap_pairs`` (K x 2): ROI id pairs whose masks share pixels; ``overlap_pixels`` (K).
* ``neuropil_spatial`` (C x H x W, float32): ``S_c``; ``neuropil_timecourses`` (C x T): ``G_c``;
  ``contamination_map`` (H x W): ``R(p)``.

Attributes: ``ophys_experiment_id``, ``frame_rate_hz``, ``noise_scale``, ``neuropil_level``,
``neuropil_dilation_iterations``, ``motion_border_x0/x1/y0/y1``.

The session truth (JSON) lists, per plane, every cell's tuning (:meth:`Tuning.records`) plus ``r``,
``F0`` and ``valid``.

Writing is block-wise (``block_frames`` frames at a time) for the movie and every ``N x T`` truth
array, so memory does not grow with the session length. Random draws for spikes and pixel noise come
from per-frame streams, so the files do not depend on ``block_frames``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from scipy import ndimage, sparse, signal

from data_fixtures.eye_tracking import write_rig_files
from data_fixtures.spec import (
    OphysPlaneFiles,
    OphysSessionFiles,
    RoiSpec,
    iter_blocks,
    rng_for,
    write_csv,
    write_h5_arrays,
    write_json,
)
from data_fixtures.stimulus import (
    MONITOR_RATE_HZ,
    RunningParams,
    StimulusDesign,
    Tuning,
    TuningParams,
    gcamp_kernel_filters,
    rows_per_frame,
    running_speed,
    visual_stimulus_table,
)
from release_platform.storage import atomic_path

__all__ = ["OphysParams", "generate_ophys_session"]

# stream keys for rng_for
_K_SESSION, _K_PLANE, _K_SPIKES, _K_NOISE, _K_MOTION = 11, 12, 13, 14, 15
_K_STIM, _K_RUN, _K_NEUROPIL = 1, 2, 3
_UINT16_MAX = 65535.0


@dataclasses.dataclass(frozen=True)
class OphysParams:
    """Parameters of a synthetic ophys session. Defaults are tiny (fast tests); see :meth:`realistic`.

    Geometry: ``height`` x ``width`` pixels of ``pixel_size_um`` µm; ``n_frames`` frames at
    ``frame_rate_hz``. ROIs: ``n_rois`` in total, of which ``2 * n_overlap_pairs`` form overlapping pairs
    and ``n_motion_border_rois`` reach into the motion border (labelled ``motion_border``, invalid);
    ellipses with semi-major axis in ``roi_radius_px`` and minor/major ratio in ``roi_aspect_range``.
    Cells: ``F0`` in ``f0_range`` (a.u.), baseline rate log-uniform in ``baseline_rate_range_hz``,
    ``dff_per_ap_range`` (fraction), kinetics ``rise_s`` and ``decay_range_s`` (s). Neuropil: ``r``
    ~ N(``r_mean``, ``r_sd``) clipped to ``r_range``, plus ``n_unconverged`` ROIs with ``r`` in
    ``unconverged_r_range`` (> 1); ``neuropil_level`` (a.u.), ``n_neuropil_components`` (constant field +
    blobs of width ``neuropil_blob_sigma_frac`` of the frame), slow fluctuation
    (``neuropil_slow_amplitude`` log-std, ``neuropil_slow_timescale_s``), fast events
    (``neuropil_event_rate_hz``, ``neuropil_event_amplitude`` relative), ``photobleaching_per_hour``.
    Noise: variance ``noise_scale * V`` (0 = noise-free). Motion border: each side drawn from
    ``motion_border_px``; simulated registration offsets stay within it. ``neuropil_dilation_iterations``
    defines the reference neuropil mask of ``expected_neuropil_traces``. Stimulus, tuning and running
    models: :mod:`data_fixtures.stimulus`; firing rates are capped at ``max_rate_hz``. ``multiplane``
    (set by :meth:`mesoscope`) allows several planes, assigned to ``targeted_structures`` in pairs
    (plane group = index // 2) at alternating ``imaging_depths_um``. ``block_frames``: frames generated
    and written per block; ``movie_chunk_frames`` (None = about 1 MiB chunks) and
    ``movie_compression`` (e.g. ``"gzip"``) set the movie's HDF5 layout.
    """

    height: int = 64
    width: int = 64
    n_frames: int = 600
    frame_rate_hz: float = 30.0
    pixel_size_um: float = 0.78
    n_rois: int = 12
    n_overlap_pairs: int = 2
    n_motion_border_rois: int = 1
    roi_radius_px: tuple[float, float] = (2.5, 4.0)
    roi_aspect_range: tuple[float, float] = (0.7, 1.0)
    max_pair_overlap_fraction: float = 0.6
    f0_range: tuple[float, float] = (100.0, 1000.0)
    baseline_rate_range_hz: tuple[float, float] = (0.1, 5.0)
    dff_per_ap_range: tuple[float, float] = (0.1, 0.2)
    rise_s: float = 0.05
    decay_range_s: tuple[float, float] = (0.15, 0.4)
    r_mean: float = 0.7
    r_sd: float = 0.15
    r_range: tuple[float, float] = (0.4, 1.0)
    n_unconverged: int = 1
    unconverged_r_range: tuple[float, float] = (1.05, 1.5)
    neuropil_level: float = 300.0
    n_neuropil_components: int = 4
    neuropil_blob_sigma_frac: tuple[float, float] = (0.3, 0.6)
    neuropil_slow_amplitude: float = 0.1
    neuropil_slow_timescale_s: float = 10.0
    neuropil_event_rate_hz: float = 2.0
    neuropil_event_amplitude: float = 0.05
    photobleaching_per_hour: float = 0.03
    noise_scale: float = 1.0
    motion_border_px: tuple[int, int] = (2, 4)
    neuropil_dilation_iterations: int = 13
    max_rate_hz: float = 30.0
    session_type: str = "three_session_A"
    stimulus: StimulusDesign = StimulusDesign()
    tuning: TuningParams = TuningParams()
    running: RunningParams = RunningParams()
    multiplane: bool = False
    targeted_structures: tuple[str, ...] = ("VISp", "VISl", "VISal", "VISam")
    imaging_depths_um: tuple[int, ...] = (175, 275)
    block_frames: int = 500
    movie_chunk_frames: int | None = None
    movie_compression: str | None = None

    @classmethod
    def realistic(cls, **overrides) -> "OphysParams":
        """512 x 512 px at 31 Hz, 18,600 frames (10 min), 220 ROIs of radius 5-10 px, 6 overlapping pairs."""
        base = dict(
            height=512,
            width=512,
            n_frames=18_600,
            frame_rate_hz=31.0,
            n_rois=220,
            n_overlap_pairs=6,
            n_motion_border_rois=4,
            roi_radius_px=(5.0, 10.0),
            n_unconverged=3,
            motion_border_px=(5, 15),
            neuropil_blob_sigma_frac=(0.15, 0.35),
            block_frames=32,
        )
        base.update(overrides)
        return cls(**base)

    @classmethod
    def mesoscope(cls, *, realistic: bool = False, **overrides) -> "OphysParams":
        """Mesoscope planes at 11 Hz, paired into imaging-plane groups (pass 2+ ``ophys_experiment_ids``).

        Tiny: 220 frames (20 s); ``realistic=True``: 512 x 512, 6,600 frames (10 min) per plane.
        """
        base = dict(frame_rate_hz=11.0, multiplane=True)
        if realistic:
            base.update(n_frames=6_600)
            base.update(overrides)
            return cls.realistic(**base)
        base.update(n_frames=220)
        base.update(overrides)
        return cls(**base)

    @property
    def duration_s(self) -> float:
        """Session length (s)."""
        return self.n_frames / self.frame_rate_hz


def _validate(params: OphysParams, experiment_ids: tuple[int, ...]) -> None:
    if not experiment_ids:
        raise ValueError("ophys_experiment_ids must name at least one plane")
    if len(set(experiment_ids)) != len(experiment_ids):
        raise ValueError(f"ophys_experiment_ids must be unique, got {experiment_ids}")
    if params.multiplane and len(experiment_ids) < 2:
        raise ValueError("a mesoscope session has 2 or more planes; pass 2+ ophys_experiment_ids")
    if not params.multiplane and len(experiment_ids) != 1:
        raise ValueError("a single-plane session has exactly one ophys_experiment_id (use OphysParams.mesoscope() for more)")
    if params.n_rois < 2 * params.n_overlap_pairs + params.n_motion_border_rois:
        raise ValueError("n_rois must be at least 2 * n_overlap_pairs + n_motion_border_rois")
    if params.n_frames < 1 or params.height < 8 or params.width < 8:
        raise ValueError("need n_frames >= 1 and a frame of at least 8 x 8 pixels")
    if params.noise_scale < 0:
        raise ValueError("noise_scale must be >= 0")


# ----------------------------------------------------------------------------------------------------
# ROI geometry
# ----------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Roi:
    y: int
    x: int
    mask: np.ndarray

    def paste(self, shape: tuple[int, int]) -> np.ndarray:
        full = np.zeros(shape, dtype=bool)
        full[self.y : self.y + self.mask.shape[0], self.x : self.x + self.mask.shape[1]] = self.mask
        return full


def _ellipse(cy: float, cx: float, a: float, b: float, theta: float, shape: tuple[int, int]) -> _Roi | None:
    h, w = shape
    reach = int(math.ceil(a)) + 1
    y0, y1 = max(int(math.floor(cy)) - reach, 0), min(int(math.ceil(cy)) + reach + 1, h)
    x0, x1 = max(int(math.floor(cx)) - reach, 0), min(int(math.ceil(cx)) + reach + 1, w)
    if y1 <= y0 or x1 <= x0:
        return None
    yy, xx = np.mgrid[y0:y1, x0:x1]
    dy, dx = yy - cy, xx - cx
    u = dx * math.cos(theta) + dy * math.sin(theta)
    v = -dx * math.sin(theta) + dy * math.cos(theta)
    inside = (u / a) ** 2 + (v / b) ** 2 <= 1.0
    if not inside.any():
        return None
    rows = np.flatnonzero(inside.any(axis=1))
    cols = np.flatnonzero(inside.any(axis=0))
    crop = inside[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    return _Roi(y=y0 + int(rows[0]), x=x0 + int(cols[0]), mask=crop.copy())


def _place_rois(rng: np.random.Generator, p: OphysParams, border: dict) -> tuple[list[_Roi], list[bool]]:
    """Place overlapping pairs, then separated singles, then motion-border ROIs. Returns ROIs and border flags."""
    shape = (p.height, p.width)
    interior = np.zeros(shape, dtype=bool)
    interior[border["y0"] : p.height - border["y1"], border["x0"] : p.width - border["x1"]] = True
    occupied = np.zeros(shape, dtype=bool)  # union of placed masks, grown by one pixel (a gap)
    rois: list[_Roi] = []
    on_border: list[bool] = []

    def draw_shape():
        a = rng.uniform(*p.roi_radius_px)
        return a, a * rng.uniform(*p.roi_aspect_range), rng.uniform(0.0, math.pi)

    def free(roi: _Roi, guard: np.ndarray) -> bool:
        return not (roi.paste(shape) & guard).any()

    def inside(roi: _Roi) -> bool:
        full = roi.paste(shape)
        return bool((full & ~interior).sum() == 0)

    def add(roi: _Roi, flag: bool) -> None:
        nonlocal occupied
        rois.append(roi)
        on_border.append(flag)
        occupied |= ndimage.binary_dilation(roi.paste(shape))

    def random_center(a: float) -> tuple[float, float]:
        return (
            rng.uniform(border["y0"] + a, p.height - border["y1"] - 1 - a),
            rng.uniform(border["x0"] + a, p.width - border["x1"] - 1 - a),
        )

    max_tries = 5000
    for _ in range(p.n_overlap_pairs):
        for _attempt in range(max_tries):
            a1, b1, t1 = draw_shape()
            cy, cx = random_center(a1)
            first = _ellipse(cy, cx, a1, b1, t1, shape)
            if first is None or not inside(first) or not free(first, occupied):
                continue
            placed = False
            for _b in range(50):
                a2, b2, t2 = draw_shape()
                dist = rng.uniform(0.5, 0.9) * (a1 + a2)
                phi = rng.uniform(0.0, 2 * math.pi)
                second = _ellipse(cy + dist * math.sin(phi), cx + dist * math.cos(phi), a2, b2, t2, shape)
                if second is None or not inside(second) or not free(second, occupied):
                    continue
                shared = (first.paste(shape) & second.paste(shape)).sum()
                smaller = min(first.mask.sum(), second.mask.sum())
                if shared == 0 or shared > p.max_pair_overlap_fraction * smaller:
                    continue
                add(first, False)
                add(second, False)
                placed = True
                break
            if placed:
                break
        else:
            raise ValueError(
                f"cannot place {p.n_overlap_pairs} overlapping ROI pairs in {p.height} x {p.width} px; "
                "reduce n_rois or roi_radius_px"
            )

    n_single = p.n_rois - 2 * p.n_overlap_pairs - p.n_motion_border_rois
    for _ in range(n_single):
        for _attempt in range(max_tries):
            a, b, t = draw_shape()
            roi = _ellipse(*random_center(a), a, b, t, shape)
            if roi is not None and inside(roi) and free(roi, occupied):
                add(roi, False)
                break
        else:
            raise ValueError(f"cannot place {p.n_rois} ROIs in {p.height} x {p.width} px; reduce n_rois or roi_radius_px")

    for i in range(p.n_motion_border_rois):
        for _attempt in range(max_tries):
            a, b, t = draw_shape()
            side = (i + _attempt) % 4
            cy, cx = random_center(a)
            if side == 0:
                cx = float(border["x0"])
            elif side == 1:
                cx = float(p.width - border["x1"] - 1)
            elif side == 2:
                cy = float(border["y0"])
            else:
                cy = float(p.height - border["y1"] - 1)
            roi = _ellipse(cy, cx, a, b, t, shape)
            if roi is not None and not inside(roi) and free(roi, occupied):
                add(roi, True)
                break
        else:
            raise ValueError(f"cannot place {p.n_motion_border_rois} motion-border ROIs; reduce n_rois or roi_radius_px")
    return rois, on_border


# ----------------------------------------------------------------------------------------------------
# Per-plane model
# ----------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Plane:
    experiment_id: int
    index: int
    border: dict
    rois: list[_Roi]
    roi_ids: np.ndarray
    valid: np.ndarray
    exclusion: list[tuple[str, ...]]
    r: np.ndarray
    f0: np.ndarray
    dff_per_ap: np.ndarray
    decay_s: np.ndarray
    tuning: Tuning
    kernel: tuple[np.ndarray, np.ndarray, np.ndarray]
    spatial: np.ndarray  # C x H x W float32, S_c
    timecourses: np.ndarray  # C x T float64, G_c (bleaching included)
    contamination: np.ndarray  # H x W float64, R(p)
    overlap: np.ndarray  # N x N, |k & j| / n_k
    mean_s_in_mask: np.ndarray  # N x C
    mean_rs_in_mask: np.ndarray  # N x C
    mean_s_in_annulus: np.ndarray  # N x C (NaN rows for empty annulus)
    overlap_pairs: np.ndarray
    overlap_pixels: np.ndarray


def _neuropil_timecourses(rng: np.random.Generator, p: OphysParams, n_comp: int) -> np.ndarray:
    """``G_c(t)`` (C x T): log-OU slow fluctuation x (1 + fast calcium events) x photobleaching."""
    t = np.arange(p.n_frames) / p.frame_rate_hz
    alpha = math.exp(-1.0 / (p.frame_rate_hz * p.neuropil_slow_timescale_s))
    gain = math.sqrt(1.0 - alpha * alpha)
    out = np.empty((n_comp, p.n_frames))
    d, r, norm = gcamp_kernel_filters(np.array([p.rise_s]), np.array([np.mean(p.decay_range_s)]), p.frame_rate_hz)
    for c in range(n_comp):
        z = rng.standard_normal(p.n_frames)
        z[0] /= gain  # start in the stationary distribution
        slow = signal.lfilter([gain], [1.0, -alpha], z) * p.neuropil_slow_amplitude
        events = rng.poisson(p.neuropil_event_rate_hz / p.frame_rate_hz, p.n_frames).astype(float)
        fast = (signal.lfilter([1.0], [1.0, -d[0]], events) - signal.lfilter([1.0], [1.0, -r[0]], events)) * norm[0]
        out[c] = np.exp(slow) * (1.0 + p.neuropil_event_amplitude * fast)
    bleach = (1.0 - p.photobleaching_per_hour) ** (t / 3600.0)
    return out * bleach[None, :]


def _build_plane(p: OphysParams, seed: int, index: int, experiment_id: int, roi_ids: np.ndarray) -> _Plane:
    rng = rng_for(seed, _K_PLANE, index)
    lo, hi = p.motion_border_px
    border = {k: int(rng.integers(lo, hi + 1)) for k in ("x0", "x1", "y0", "y1")}
    rois, on_border = _place_rois(rng, p, border)
    n = len(rois)
    shape = (p.height, p.width)

    f0 = rng.uniform(*p.f0_range, n)
    log_lo, log_hi = np.log(p.baseline_rate_range_hz)
    rates = np.exp(rng.uniform(log_lo, log_hi, n))
    dff_per_ap = rng.uniform(*p.dff_per_ap_range, n)
    decay = rng.uniform(*p.decay_range_s, n)
    r = np.clip(rng.normal(p.r_mean, p.r_sd, n), *p.r_range)
    if p.n_unconverged:
        picks = rng.choice(n, size=min(p.n_unconverged, n), replace=False)
        r[picks] = rng.uniform(*p.unconverged_r_range, len(picks))
    tuning = Tuning.draw(rng, rates, p.tuning)
    kernel = gcamp_kernel_filters(np.full(n, p.rise_s), decay, p.frame_rate_hz)

    # neuropil spatial components: a constant field plus Gaussian blobs, spatial mean of the sum = 1
    n_comp = max(int(p.n_neuropil_components), 1)
    yy, xx = np.mgrid[0 : p.height, 0 : p.width].astype(np.float64)
    spatial = np.empty((n_comp,) + shape)
    spatial[0] = 1.0
    for c in range(1, n_comp):
        sigma = rng.uniform(*p.neuropil_blob_sigma_frac) * min(shape)
        cy, cx = rng.uniform(0, p.height), rng.uniform(0, p.width)
        spatial[c] = rng.uniform(0.3, 1.0) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma * sigma))
    spatial /= spatial.sum(axis=0).mean()
    spatial = spatial.astype(np.float32)  # the movie uses float32; truth projections use the same values
    timecourses = _neuropil_timecourses(rng_for(seed, _K_NEUROPIL, index), p, n_comp)

    rows, cols = [], []
    for k, roi in enumerate(rois):
        yy_k, xx_k = np.nonzero(roi.mask)
        cols.append((yy_k + roi.y) * p.width + (xx_k + roi.x))
        rows.append(np.full(len(yy_k), k))
    flat_cols = np.concatenate(cols)
    masks = sparse.csr_matrix((np.ones(len(flat_cols)), (np.concatenate(rows), flat_cols)), shape=(n, p.height * p.width))
    npix = np.asarray(masks.sum(axis=1)).ravel()
    shared = (masks @ masks.T).toarray()
    overlap = shared / npix[:, None]
    sum_r = masks.T @ r
    count = np.asarray(masks.sum(axis=0)).ravel()
    contamination = np.where(count > 0, sum_r / np.maximum(count, 1), 1.0).reshape(shape)
    s_flat = spatial.reshape(n_comp, -1).astype(np.float64)
    mean_s = (masks @ s_flat.T) / npix[:, None]
    mean_rs = (masks @ (s_flat * contamination.ravel()[None, :]).T) / npix[:, None]

    union = np.asarray(masks.sum(axis=0)).ravel().reshape(shape) > 0
    interior = np.zeros(shape, dtype=bool)
    interior[border["y0"] : p.height - border["y1"], border["x0"] : p.width - border["x1"]] = True
    it = int(p.neuropil_dilation_iterations)
    mean_s_ann = np.full((n, n_comp), np.nan)
    for k, roi in enumerate(rois):
        y0, x0 = max(roi.y - it - 1, 0), max(roi.x - it - 1, 0)
        y1 = min(roi.y + roi.mask.shape[0] + it + 1, p.height)
        x1 = min(roi.x + roi.mask.shape[1] + it + 1, p.width)
        window = roi.paste(shape)[y0:y1, x0:x1]
        grown = ndimage.binary_dilation(window, structure=np.ones((3, 3), bool), iterations=it) if it > 0 else window
        ann = grown & ~union[y0:y1, x0:x1] & interior[y0:y1, x0:x1]
        if ann.any():
            mean_s_ann[k] = s_flat.reshape(n_comp, *shape)[:, y0:y1, x0:x1][:, ann].mean(axis=1)

    iu = np.argwhere(np.triu(shared, k=1) > 0)
    pairs = np.array([[roi_ids[i], roi_ids[j]] for i, j in iu], dtype=np.int64).reshape(-1, 2)
    pair_pixels = np.array([shared[i, j] for i, j in iu], dtype=np.int64)
    exclusion = [("motion_border",) if b else () for b in on_border]
    return _Plane(
        experiment_id=experiment_id,
        index=index,
        border=border,
        rois=rois,
        roi_ids=roi_ids,
        valid=np.array([not b for b in on_border]),
        exclusion=exclusion,
        r=r,
        f0=f0,
        dff_per_ap=dff_per_ap,
        decay_s=decay,
        tuning=tuning,
        kernel=kernel,
        spatial=spatial,
        timecourses=timecourses,
        contamination=contamination,
        overlap=overlap,
        mean_s_in_mask=mean_s,
        mean_rs_in_mask=mean_rs,
        mean_s_in_annulus=mean_s_ann,
        overlap_pairs=pairs,
        overlap_pixels=pair_pixels,
    )


def _movie_chunks(p: OphysParams) -> tuple[int, int, int]:
    frames = p.movie_chunk_frames or max(1, min(64, (1 << 20) // (p.height * p.width * 2)))
    return (min(frames, p.n_frames), p.height, p.width)


def _write_plane(
    plane: _Plane,
    p: OphysParams,
    seed: int,
    plane_dir: Path,
    frame_rows: np.ndarray,
    table: pd.DataFrame,
    running_per_frame: np.ndarray,
) -> tuple[Path, Path, Path, Path]:
    """Stream the movie and the N x T truth arrays block by block; then write the projections."""
    n, t_total = len(plane.rois), p.n_frames
    shape = (p.height, p.width)
    movie_path = plane_dir / "motion_corrected_movie.h5"
    truth_path = plane_dir / "truth.h5"
    max_path = plane_dir / "max_projection.h5"
    avg_path = plane_dir / "average_projection.h5"
    level = float(p.neuropil_level)
    contamination32 = plane.contamination.ravel()[None, :].astype(np.float32)
    weighted_spatial = (plane.spatial.reshape(len(plane.spatial), -1) * contamination32).astype(np.float32)
    d, r_fac, norm = plane.kernel
    state_a = np.zeros(n)
    state_b = np.zeros(n)
    max_proj = np.zeros(shape, dtype=np.uint16)
    sum_proj = np.zeros(shape, dtype=np.float64)
    trace_names = (
        "cell_traces",
        "dff_true",
        "expected_roi_traces",
        "expected_neuropil_traces",
        "neuropil_in_mask_traces",
        "expected_demixed_traces",
    )
    trace_chunks = (max(1, min(n, 128)), min(t_total, 256))
    with contextlib.ExitStack() as stack:
        movie_tmp = stack.enter_context(atomic_path(movie_path))
        truth_tmp = stack.enter_context(atomic_path(truth_path))
        movie_file = stack.enter_context(h5py.File(movie_tmp, "w", rdcc_nbytes=16 << 20))
        truth_file = stack.enter_context(h5py.File(truth_tmp, "w", rdcc_nbytes=16 << 20))
        movie = movie_file.create_dataset(
            "data",
            shape=(t_total,) + shape,
            dtype=np.uint16,
            chunks=_movie_chunks(p),
            compression=p.movie_compression,
            track_times=False,
        )
        movie.attrs["frame_rate_hz"] = p.frame_rate_hz
        spikes_ds = truth_file.create_dataset(
            "spikes", shape=(n, t_total), dtype=np.uint16, chunks=trace_chunks, track_times=False
        )
        traces = {
            name: truth_file.create_dataset(name, shape=(n, t_total), dtype=np.float64, chunks=trace_chunks, track_times=False)
            for name in trace_names
        }
        for t0, t1 in iter_blocks(t_total, p.block_frames):
            b = t1 - t0
            # spikes: rate from tuning (per stimulus row) and running, Poisson counts from per-frame streams
            rows = frame_rows[t0:t1]
            used = np.unique(rows[rows >= 0])
            drive = np.zeros((n, b))
            if len(used):
                row_drive = plane.tuning.drive(table.iloc[used])
                pos = np.searchsorted(used, rows)
                on = rows >= 0
                drive[:, on] = row_drive[:, pos[on]]
            rate = np.minimum(plane.tuning.rate(drive, running_per_frame[t0:t1]), p.max_rate_hz)
            spikes = np.empty((n, b), dtype=np.int64)
            for i in range(b):
                spikes[:, i] = rng_for(seed, _K_SPIKES, plane.index, t0 + i).poisson(rate[:, i] / p.frame_rate_hz)
            # indicator kinetics: two first-order recursions carried across blocks
            calcium = np.empty((n, b))
            for i in range(b):
                state_a = d * state_a + spikes[:, i]
                state_b = r_fac * state_b + spikes[:, i]
                calcium[:, i] = (state_a - state_b) * norm
            dff = plane.dff_per_ap[:, None] * calcium
            cells = plane.f0[:, None] * (1.0 + dff)
            g = plane.timecourses[:, t0:t1]
            # noise-free movie block (float32) and its exact float64 projections
            frames = (g.T.astype(np.float32) @ weighted_spatial).reshape(b, *shape) * np.float32(level)
            cells32 = cells.astype(np.float32)
            for k, roi in enumerate(plane.rois):
                h, w = roi.mask.shape
                frames[:, roi.y : roi.y + h, roi.x : roi.x + w] += cells32[k][:, None, None] * roi.mask[None, :, :]
            neuropil_in_mask = level * (plane.mean_s_in_mask @ g)
            expected_roi = plane.overlap @ cells + level * (plane.mean_rs_in_mask @ g)
            with np.errstate(invalid="ignore"):
                expected_np = level * (plane.mean_s_in_annulus @ g)
            demixed = cells + plane.r[:, None] * neuropil_in_mask
            if p.noise_scale > 0:
                scale = np.float32(p.noise_scale)
                for i in range(b):
                    z = rng_for(seed, _K_NOISE, plane.index, t0 + i).standard_normal(shape, dtype=np.float32)
                    frames[i] += np.sqrt(scale * np.maximum(frames[i], 0.0)) * z
            block = np.rint(np.clip(frames, 0.0, _UINT16_MAX)).astype(np.uint16)
            movie[t0:t1] = block
            np.maximum(max_proj, block.max(axis=0), out=max_proj)
            sum_proj += block.sum(axis=0, dtype=np.float64)
            spikes_ds[:, t0:t1] = spikes.astype(np.uint16)
            for name, value in zip(trace_names, (cells, dff, expected_roi, expected_np, neuropil_in_mask, demixed)):
                traces[name][:, t0:t1] = value
        for name, value in (
            ("roi_ids", plane.roi_ids),
            ("valid", plane.valid),
            ("r", plane.r),
            ("F0", plane.f0),
            ("dff_per_ap", plane.dff_per_ap),
            ("rise_s", np.full(n, p.rise_s)),
            ("decay_s", plane.decay_s),
            ("baseline_rate_hz", plane.tuning.baseline_rate_hz),
            ("overlap_pairs", plane.overlap_pairs),
            ("overlap_pixels", plane.overlap_pixels),
            ("neuropil_spatial", plane.spatial),
            ("neuropil_timecourses", plane.timecourses),
            ("contamination_map", plane.contamination),
        ):
            truth_file.create_dataset(name, data=value, track_times=False)
        attrs = {
            "ophys_experiment_id": plane.experiment_id,
            "frame_rate_hz": p.frame_rate_hz,
            "noise_scale": p.noise_scale,
            "neuropil_level": level,
            "neuropil_dilation_iterations": p.neuropil_dilation_iterations,
        }
        attrs.update({f"motion_border_{k}": v for k, v in plane.border.items()})
        for key, value in attrs.items():
            truth_file.attrs[key] = value
    write_h5_arrays(max_path, {"data": max_proj})
    write_h5_arrays(avg_path, {"data": (sum_proj / t_total).astype(np.float32)})
    return movie_path, truth_path, max_path, avg_path


def _motion_offsets(rng: np.random.Generator, p: OphysParams, border: dict) -> pd.DataFrame:
    """Integer rigid offsets (px) of a slow random walk, kept within the motion border."""
    alpha = math.exp(-1.0 / (p.frame_rate_hz * 2.0))
    cols = {}
    for axis, lo, hi in (("x", border["x0"], border["x1"]), ("y", border["y0"], border["y1"])):
        walk = signal.lfilter([1.0], [1.0, -alpha], rng.standard_normal(p.n_frames)) * 0.3
        cols[axis] = np.clip(np.rint(walk), -lo, hi).astype(np.int64)
    return pd.DataFrame({"frame_index": np.arange(p.n_frames), "x": cols["x"], "y": cols["y"]})


def generate_ophys_session(
    out_dir: str | Path,
    *,
    ophys_session_id: int,
    ophys_experiment_ids: tuple[int, ...] | list[int],
    params: OphysParams = OphysParams(),
    seed: int = 0,
    roi_id_start: int | None = None,
) -> OphysSessionFiles:
    """Write a synthetic ophys session under ``out_dir/ophys_session_<id>/`` and return its file spec.

    One plane per id in ``ophys_experiment_ids`` (exactly one unless ``params.multiplane``, see
    :meth:`OphysParams.mesoscope`). ROI ids are
    ``roi_id_start, roi_id_start + 1, ...`` across planes, or ``ophys_experiment_id * 10000 + k`` when
    ``roi_id_start`` is None. The same arguments always give byte-identical files.
    """
    exp_ids = tuple(int(e) for e in ophys_experiment_ids)
    _validate(params, exp_ids)
    p = params
    session_dir = Path(out_dir) / f"ophys_session_{int(ophys_session_id)}"
    session_dir.mkdir(parents=True, exist_ok=True)
    duration = p.duration_s
    ophys_ts = np.arange(p.n_frames) / p.frame_rate_hz
    stim_ts = np.arange(int(math.floor(duration * MONITOR_RATE_HZ + 1e-9))) / MONITOR_RATE_HZ

    table = visual_stimulus_table(
        duration, design=p.stimulus, rng=rng_for(seed, _K_SESSION, _K_STIM), acquisition_rate_hz=p.frame_rate_hz
    )
    frame_rows = rows_per_frame(table, p.n_frames)
    run_ts, speed = running_speed(duration, p.running, rng_for(seed, _K_SESSION, _K_RUN))
    speed_frames = np.interp(ophys_ts, run_ts, speed) if len(run_ts) else np.zeros(p.n_frames)
    running_per_frame = speed_frames > p.running.running_threshold_cm_s

    stim_path = write_csv(table, session_dir / "stimulus_table.csv")
    run_path = write_csv(pd.DataFrame({"timestamps": run_ts, "speed": speed}), session_dir / "running_speed.csv")
    ts_path = write_h5_arrays(session_dir / "timestamps.h5", {"ophys_timestamps": ophys_ts, "stimulus_timestamps": stim_ts})

    planes: list[OphysPlaneFiles] = []
    plane_truth: list[dict] = []
    next_roi_id = roi_id_start
    for index, exp_id in enumerate(exp_ids):
        if next_roi_id is None:
            ids = exp_id * 10000 + np.arange(p.n_rois, dtype=np.int64)
        else:
            ids = next_roi_id + np.arange(p.n_rois, dtype=np.int64)
            next_roi_id += p.n_rois
        plane = _build_plane(p, seed, index, exp_id, ids)
        plane_dir = session_dir / f"ophys_experiment_{exp_id}"
        plane_dir.mkdir(parents=True, exist_ok=True)
        movie_path, truth_path, max_path, avg_path = _write_plane(
            plane, p, seed, plane_dir, frame_rows, table, running_per_frame
        )
        offsets = _motion_offsets(rng_for(seed, _K_MOTION, index), p, plane.border)
        offsets_path = write_csv(offsets, plane_dir / "motion_offsets.csv")
        if p.multiplane:
            group = index // 2
            structure = p.targeted_structures[group % len(p.targeted_structures)]
            depth = p.imaging_depths_um[index % len(p.imaging_depths_um)]
        else:
            group, structure, depth = None, p.targeted_structures[0], p.imaging_depths_um[0]
        rois = tuple(
            RoiSpec(
                id=int(ids[k]),
                x=roi.x,
                y=roi.y,
                width=int(roi.mask.shape[1]),
                height=int(roi.mask.shape[0]),
                mask=roi.mask,
                valid=bool(plane.valid[k]),
                exclusion_labels=plane.exclusion[k],
            )
            for k, roi in enumerate(plane.rois)
        )
        planes.append(
            OphysPlaneFiles(
                ophys_experiment_id=exp_id,
                targeted_structure=structure,
                imaging_depth_um=int(depth),
                frame_rate_hz=float(p.frame_rate_hz),
                movie_path=movie_path,
                movie_shape=(p.n_frames, p.height, p.width),
                motion_border=dict(plane.border),
                rois=rois,
                max_projection_path=max_path,
                average_projection_path=avg_path,
                motion_offsets_path=offsets_path,
                truth_path=truth_path,
                plane_group=group,
                pixel_size_um=float(p.pixel_size_um),
            )
        )
        cells = plane.tuning.records(ids)
        for k, rec in enumerate(cells):
            rec.update(
                r=float(plane.r[k]), F0=float(plane.f0[k]), valid=bool(plane.valid[k]), dff_per_ap=float(plane.dff_per_ap[k])
            )
        plane_truth.append(
            {
                "ophys_experiment_id": exp_id,
                "targeted_structure": structure,
                "imaging_depth_um": int(depth),
                "plane_group": group,
                "motion_border": plane.border,
                "overlap_pairs": plane.overlap_pairs.tolist(),
                "cells": cells,
            }
        )
    truth = {
        "ophys_session_id": int(ophys_session_id),
        "session_type": p.session_type,
        "seed": int(seed),
        "frame_rate_hz": float(p.frame_rate_hz),
        "n_frames": int(p.n_frames),
        "duration_s": float(duration),
        "stimuli": list(table["stimulus_name"].unique()),
        "running_threshold_cm_s": p.running.running_threshold_cm_s,
        "fraction_frames_running": float(running_per_frame.mean()) if p.n_frames else 0.0,
        "noise_scale": p.noise_scale,
        "planes": plane_truth,
    }
    truth_path = write_json(truth, session_dir / "truth.json")
    sync_path, eye_path = write_rig_files(session_dir, duration_s=duration, seed=seed)
    return OphysSessionFiles(
        ophys_session_id=int(ophys_session_id),
        session_type=p.session_type,
        frame_rate_hz=float(p.frame_rate_hz),
        planes=tuple(planes),
        stimulus_table_path=stim_path,
        running_speed_path=run_path,
        timestamps_path=ts_path,
        truth_path=truth_path,
        sync_path=sync_path,
        eye_tracking_path=eye_path,
    )
