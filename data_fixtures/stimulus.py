"""Shared stimulus helpers: Visual Coding stimulus tables, a tuning model, running speed.

Stimulus table (CSV, one row per presentation, sorted by ``start_time``), columns:

=====================  ===========================================================================
``start_time``         onset (s), on the 60 Hz stimulus-monitor frame grid
``stop_time``          offset (s); grey follows drifting gratings for ``dg_off_s``
``stimulus_name``      ``drifting_gratings``, ``static_gratings``, ``natural_scenes``, ``spontaneous``
``start_frame``        first acquisition frame with timestamp >= ``start_time`` (imaging frames for
                       ophys, stimulus-monitor frames for ecephys)
``end_frame``          one past the last acquisition frame with timestamp < ``stop_time``
``orientation``        degrees (direction of drift for drifting gratings); NaN for blanks/others
``temporal_frequency`` Hz (drifting gratings); NaN otherwise
``spatial_frequency``  cycles/degree (gratings); NaN otherwise
``phase``              fraction of a cycle (static gratings); NaN otherwise
``frame``              natural-scene image index 0..117, -1 for a blank; NaN for other stimuli
=====================  ===========================================================================

The session is split into one contiguous segment per stimulus, with lengths proportional to
:attr:`StimulusDesign.weights`; each segment is filled with as many presentations as fit (conditions
shuffled within each repeat), so a short synthetic session simply has fewer repeats. A stimulus whose
segment cannot hold one presentation is left out.

Tuning model (:class:`Tuning`): for each cell a stimulus *drive* in [0, 1] per presentation: von Mises
direction tuning (with a null-direction lobe that sets the direction selectivity) times log-Gaussian
temporal-frequency tuning for drifting gratings; von Mises orientation times log-Gaussian spatial
frequency times a mild phase modulation for static gratings; one preferred image (drive 1) and weaker
responses to the others for natural scenes; 0 for blanks, grey and spontaneous activity. A firing rate
is ``baseline_rate_hz * (1 + (evoked_gain - 1) * drive) * (1 + running_modulation * running)``.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
from scipy import signal

__all__ = [
    "STIMULUS_COLUMNS",
    "MONITOR_RATE_HZ",
    "DG_DIRECTIONS_DEG",
    "DG_TEMPORAL_FREQUENCIES_HZ",
    "DG_SPATIAL_FREQUENCY_CPD",
    "SG_ORIENTATIONS_DEG",
    "SG_SPATIAL_FREQUENCIES_CPD",
    "SG_PHASES",
    "N_NATURAL_SCENES",
    "StimulusDesign",
    "TuningParams",
    "Tuning",
    "RunningParams",
    "visual_stimulus_table",
    "frame_window",
    "rows_per_frame",
    "running_speed",
    "gcamp_kernel_filters",
    "AnalysisDesign",
    "CellParams",
    "CellTruth",
    "AnalysisSession",
    "analysis_session",
    "lsn_template",
]

STIMULUS_COLUMNS = (
    "start_time",
    "stop_time",
    "stimulus_name",
    "start_frame",
    "end_frame",
    "orientation",
    "temporal_frequency",
    "spatial_frequency",
    "phase",
    "frame",
)
MONITOR_RATE_HZ = 60.0
DG_DIRECTIONS_DEG = tuple(float(d) for d in range(0, 360, 45))
DG_TEMPORAL_FREQUENCIES_HZ = (1.0, 2.0, 4.0, 8.0, 15.0)
DG_SPATIAL_FREQUENCY_CPD = 0.04
SG_ORIENTATIONS_DEG = tuple(float(d) for d in range(0, 180, 30))
SG_SPATIAL_FREQUENCIES_CPD = (0.02, 0.04, 0.08, 0.16, 0.32)
SG_PHASES = (0.0, 0.25, 0.5, 0.75)
N_NATURAL_SCENES = 118
KNOWN_STIMULI = ("drifting_gratings", "static_gratings", "natural_scenes", "spontaneous")


@dataclasses.dataclass(frozen=True)
class StimulusDesign:
    """Timing of the Visual Coding stimuli (seconds) and how the session time is shared among them.

    ``stimuli`` and ``weights`` are parallel: segment ``i`` gets ``weights[i] / sum(weights)`` of the
    time after ``lead_in_s``. Blanks are added per repeat of the full condition set.
    """

    stimuli: tuple[str, ...] = KNOWN_STIMULI
    weights: tuple[float, ...] = (0.4, 0.2, 0.2, 0.2)
    lead_in_s: float = 0.0
    dg_on_s: float = 2.0
    dg_off_s: float = 1.0
    dg_blanks_per_repeat: int = 1
    sg_duration_s: float = 0.25
    sg_blanks_per_repeat: int = 1
    ns_duration_s: float = 0.25
    ns_blanks_per_repeat: int = 1

    def __post_init__(self) -> None:
        if len(self.stimuli) != len(self.weights):
            raise ValueError("StimulusDesign.stimuli and .weights must have the same length")
        unknown = [s for s in self.stimuli if s not in KNOWN_STIMULI]
        if unknown:
            raise ValueError(f"unknown stimuli {unknown}; known: {KNOWN_STIMULI}")
        if any(w < 0 for w in self.weights) or sum(self.weights) <= 0:
            raise ValueError("StimulusDesign.weights must be non-negative with a positive sum")
        durations = (self.dg_on_s, self.sg_duration_s, self.ns_duration_s)
        if min(durations) <= 0 or self.dg_off_s < 0:
            raise ValueError("StimulusDesign presentation durations must be positive (and dg_off_s >= 0)")
        if min(self.dg_blanks_per_repeat, self.sg_blanks_per_repeat, self.ns_blanks_per_repeat) < 0:
            raise ValueError("StimulusDesign blanks per repeat must be >= 0")


def _snap(t: float) -> float:
    """Round a time to the 60 Hz monitor-frame grid."""
    return round(t * MONITOR_RATE_HZ) / MONITOR_RATE_HZ


def frame_window(start_s: np.ndarray, stop_s: np.ndarray, rate_hz: float) -> tuple[np.ndarray, np.ndarray]:
    """Acquisition frames ``[start_frame, end_frame)`` whose timestamps ``i / rate_hz`` fall in ``[start, stop)``."""
    start = np.ceil(np.asarray(start_s, dtype=float) * rate_hz - 1e-6).astype(np.int64)
    stop = np.ceil(np.asarray(stop_s, dtype=float) * rate_hz - 1e-6).astype(np.int64)
    return np.maximum(start, 0), np.maximum(stop, 0)


def visual_stimulus_table(
    duration_s: float,
    *,
    design: StimulusDesign,
    rng: np.random.Generator,
    acquisition_rate_hz: float,
) -> pd.DataFrame:
    """Build a Visual Coding stimulus table filling ``[lead_in_s, duration_s)``; see the module docstring."""
    nan = math.nan
    rows: list[tuple] = []
    t = _snap(design.lead_in_s)
    usable = max(duration_s - t, 0.0)
    total_w = float(sum(design.weights))
    for name, weight in zip(design.stimuli, design.weights):
        seg_start = t
        seg_end = min(_snap(seg_start + usable * weight / total_w), duration_s)
        t = seg_end
        if name == "spontaneous":
            if seg_end > seg_start:
                rows.append((seg_start, seg_end, name, nan, nan, nan, nan, nan))
            continue
        if name == "drifting_gratings":
            conds = [
                (d, tf, DG_SPATIAL_FREQUENCY_CPD, nan, nan) for d in DG_DIRECTIONS_DEG for tf in DG_TEMPORAL_FREQUENCIES_HZ
            ]
            conds += [(nan, nan, nan, nan, nan)] * design.dg_blanks_per_repeat
            on, period = design.dg_on_s, design.dg_on_s + design.dg_off_s
        elif name == "static_gratings":
            conds = [
                (o, nan, sf, ph, nan) for o in SG_ORIENTATIONS_DEG for sf in SG_SPATIAL_FREQUENCIES_CPD for ph in SG_PHASES
            ]
            conds += [(nan, nan, nan, nan, nan)] * design.sg_blanks_per_repeat
            on = period = design.sg_duration_s
        else:  # natural_scenes
            conds = [(nan, nan, nan, nan, float(i)) for i in range(N_NATURAL_SCENES)]
            conds += [(nan, nan, nan, nan, -1.0)] * design.ns_blanks_per_repeat
            on = period = design.ns_duration_s
        onset = seg_start
        done = False
        while not done:
            for idx in rng.permutation(len(conds)):
                if _snap(onset + on) > seg_end + 1e-9:
                    done = True
                    break
                rows.append((_snap(onset), _snap(onset + on), name, *conds[idx]))
                onset = _snap(onset + period)
    table = pd.DataFrame(
        rows,
        columns=[c for c in STIMULUS_COLUMNS if c not in ("start_frame", "end_frame")],
    )
    start_frame, end_frame = frame_window(table["start_time"].to_numpy(), table["stop_time"].to_numpy(), acquisition_rate_hz)
    table.insert(3, "start_frame", start_frame)
    table.insert(4, "end_frame", end_frame)
    return table[list(STIMULUS_COLUMNS)].reset_index(drop=True)


def rows_per_frame(table: pd.DataFrame, n_frames: int) -> np.ndarray:
    """For each acquisition frame the index of the table row it shows (``-1``: grey or outside rows)."""
    out = np.full(n_frames, -1, dtype=np.int64)
    for i, (a, b) in enumerate(zip(table["start_frame"].to_numpy(), table["end_frame"].to_numpy())):
        out[min(a, n_frames) : min(b, n_frames)] = i
    return out


# ----------------------------------------------------------------------------------------------------
# Tuning model
# ----------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TuningParams:
    """Distribution of per-cell tuning (ranges are drawn uniformly).

    ``null_ratio_range``: drive in the null direction relative to the preferred one (0 = fully
    direction selective). ``*_sigma_octaves``: width of the log-Gaussian frequency tuning.
    ``nonpreferred_image_max``: the largest drive of a non-preferred natural image.
    ``evoked_gain_range``: firing-rate multiple at the preferred stimulus (2-5x baseline).
    """

    fraction_tuned: float = 0.8
    direction_kappa_range: tuple[float, float] = (1.0, 4.0)
    null_ratio_range: tuple[float, float] = (0.0, 0.8)
    tf_sigma_octaves: tuple[float, float] = (0.7, 1.5)
    orientation_kappa_range: tuple[float, float] = (1.0, 4.0)
    sf_sigma_octaves: tuple[float, float] = (0.7, 1.5)
    phase_modulation: float = 0.2
    nonpreferred_image_max: float = 0.4
    evoked_gain_range: tuple[float, float] = (2.0, 5.0)
    fraction_running_modulated: float = 0.3
    running_modulation_range: tuple[float, float] = (-0.5, 1.0)
    rf_azimuth_range_deg: tuple[float, float] = (-40.0, 40.0)
    rf_elevation_range_deg: tuple[float, float] = (-30.0, 30.0)


def _von_mises(angle_deg: np.ndarray, pref_deg: np.ndarray, kappa: np.ndarray, period: float = 360.0) -> np.ndarray:
    delta = np.deg2rad(np.asarray(angle_deg) - np.asarray(pref_deg)) * (360.0 / period)
    return np.exp(np.asarray(kappa) * (np.cos(delta) - 1.0))


def _log_gauss(x: np.ndarray, pref: np.ndarray, sigma_oct: np.ndarray) -> np.ndarray:
    return np.exp(-(np.log2(np.asarray(x) / np.asarray(pref)) ** 2) / (2.0 * np.asarray(sigma_oct) ** 2))


@dataclasses.dataclass(frozen=True)
class Tuning:
    """Per-cell tuning arrays (length ``n`` each; ``image_drive`` is ``n x 118``)."""

    tuned: np.ndarray
    baseline_rate_hz: np.ndarray
    evoked_gain: np.ndarray
    pref_direction_deg: np.ndarray
    direction_kappa: np.ndarray
    null_ratio: np.ndarray
    pref_tf_hz: np.ndarray
    tf_sigma_octaves: np.ndarray
    pref_orientation_sg_deg: np.ndarray
    orientation_kappa: np.ndarray
    pref_sf_cpd: np.ndarray
    sf_sigma_octaves: np.ndarray
    pref_phase: np.ndarray
    phase_modulation: float
    pref_image: np.ndarray
    image_drive: np.ndarray
    running_modulation: np.ndarray
    rf_center_azimuth_deg: np.ndarray
    rf_center_elevation_deg: np.ndarray

    @classmethod
    def draw(cls, rng: np.random.Generator, baseline_rate_hz: np.ndarray, params: TuningParams) -> "Tuning":
        """Draw tuning for ``len(baseline_rate_hz)`` cells."""
        n = len(baseline_rate_hz)
        u = lambda lo_hi: rng.uniform(lo_hi[0], lo_hi[1], n)  # noqa: E731
        tuned = rng.random(n) < params.fraction_tuned
        image_drive = rng.random((n, N_NATURAL_SCENES)) ** 3 * params.nonpreferred_image_max
        pref_image = rng.integers(0, N_NATURAL_SCENES, n)
        image_drive[np.arange(n), pref_image] = 1.0
        run_mod = np.where(rng.random(n) < params.fraction_running_modulated, u(params.running_modulation_range), 0.0)
        return cls(
            tuned=tuned,
            baseline_rate_hz=np.asarray(baseline_rate_hz, dtype=float),
            evoked_gain=u(params.evoked_gain_range),
            pref_direction_deg=rng.choice(np.array(DG_DIRECTIONS_DEG), n),
            direction_kappa=u(params.direction_kappa_range),
            null_ratio=u(params.null_ratio_range),
            pref_tf_hz=rng.choice(np.array(DG_TEMPORAL_FREQUENCIES_HZ), n),
            tf_sigma_octaves=u(params.tf_sigma_octaves),
            pref_orientation_sg_deg=rng.choice(np.array(SG_ORIENTATIONS_DEG), n),
            orientation_kappa=u(params.orientation_kappa_range),
            pref_sf_cpd=rng.choice(np.array(SG_SPATIAL_FREQUENCIES_CPD), n),
            sf_sigma_octaves=u(params.sf_sigma_octaves),
            pref_phase=rng.choice(np.array(SG_PHASES), n),
            phase_modulation=float(params.phase_modulation),
            pref_image=pref_image,
            image_drive=image_drive,
            running_modulation=run_mod,
            rf_center_azimuth_deg=u(params.rf_azimuth_range_deg),
            rf_center_elevation_deg=u(params.rf_elevation_range_deg),
        )

    def direction_drive(self, direction_deg: np.ndarray) -> np.ndarray:
        """Direction tuning ``n x len(direction_deg)``, 1 at the preferred direction."""
        d = np.asarray(direction_deg, dtype=float)[None, :]
        p, k, r = self.pref_direction_deg[:, None], self.direction_kappa[:, None], self.null_ratio[:, None]
        raw = _von_mises(d, p, k) + r * _von_mises(d, p + 180.0, k)
        return raw / (1.0 + r * np.exp(-2.0 * k))

    def drive(self, table: pd.DataFrame) -> np.ndarray:
        """Drive in [0, 1] of every cell for every table row, ``n_cells x n_rows`` (0 for untuned cells)."""
        n, m = len(self.tuned), len(table)
        out = np.zeros((n, m))
        name = table["stimulus_name"].to_numpy()
        ori = table["orientation"].to_numpy(dtype=float)
        tf = table["temporal_frequency"].to_numpy(dtype=float)
        sf = table["spatial_frequency"].to_numpy(dtype=float)
        ph = table["phase"].to_numpy(dtype=float)
        fr = table["frame"].to_numpy(dtype=float)
        dg = (name == "drifting_gratings") & np.isfinite(ori)
        if dg.any():
            tf_drive = _log_gauss(tf[dg][None, :], self.pref_tf_hz[:, None], self.tf_sigma_octaves[:, None])
            out[:, dg] = self.direction_drive(ori[dg]) * tf_drive
        sg = (name == "static_gratings") & np.isfinite(ori)
        if sg.any():
            o = _von_mises(
                ori[sg][None, :], self.pref_orientation_sg_deg[:, None], self.orientation_kappa[:, None], period=180.0
            )
            s = _log_gauss(sf[sg][None, :], self.pref_sf_cpd[:, None], self.sf_sigma_octaves[:, None])
            cos_phase = np.cos(2 * np.pi * (ph[sg][None, :] - self.pref_phase[:, None]))
            phase = (1.0 + self.phase_modulation * cos_phase) / (1.0 + self.phase_modulation)
            out[:, sg] = o * s * phase
        ns = (name == "natural_scenes") & (fr >= 0)
        if ns.any():
            out[:, ns] = self.image_drive[:, fr[ns].astype(np.int64)]
        out[~self.tuned, :] = 0.0
        return out

    def model_indices(self) -> tuple[np.ndarray, np.ndarray]:
        """OSI and DSI of the drive at the preferred TF on the 8-direction grid (NaN for untuned cells).

        ``osi = (pref - orth) / (pref + orth)`` with ``orth`` the mean at +-90 deg, ``dsi = (pref - null) /
        (pref + null)`` with ``null`` at +180 deg: the definitions of the observatory analysis, applied to
        the evoked rate (``drive``), not to dF/F.
        """
        d = self.direction_drive(np.array(DG_DIRECTIONS_DEG))
        p = (self.pref_direction_deg // 45).astype(int)
        rows = np.arange(len(p))
        pref = d[rows, p]
        orth = 0.5 * (d[rows, (p + 2) % 8] + d[rows, (p - 2) % 8])
        null = d[rows, (p + 4) % 8]
        osi = np.where(self.tuned, (pref - orth) / (pref + orth), np.nan)
        dsi = np.where(self.tuned, (pref - null) / (pref + null), np.nan)
        return osi, dsi

    def rate(self, drive: np.ndarray, running: np.ndarray, cell: int | None = None) -> np.ndarray:
        """Firing rate (Hz) from the drive and a running indicator (``t``, 0/1).

        With ``cell=None``: ``drive`` is ``n_cells x t`` and the result too. With a cell index: ``drive``
        is that cell's ``t`` values and the result is ``t`` rates.
        """
        run = np.asarray(running, dtype=float)
        if cell is not None:
            base = self.baseline_rate_hz[cell] * (1.0 + (self.evoked_gain[cell] - 1.0) * np.asarray(drive))
            return np.maximum(base * (1.0 + self.running_modulation[cell] * run), 0.0)
        base = self.baseline_rate_hz[:, None] * (1.0 + (self.evoked_gain[:, None] - 1.0) * drive)
        return np.maximum(base * (1.0 + self.running_modulation[:, None] * run[None, :]), 0.0)

    def records(self, ids: np.ndarray) -> list[dict]:
        """Per-cell truth as JSON-ready dicts keyed by ``ids``."""
        osi, dsi = self.model_indices()
        out = []
        for i, cid in enumerate(ids):
            out.append(
                {
                    "id": int(cid),
                    "tuned": bool(self.tuned[i]),
                    "baseline_rate_hz": float(self.baseline_rate_hz[i]),
                    "evoked_gain": float(self.evoked_gain[i]),
                    "pref_direction_deg": float(self.pref_direction_deg[i]),
                    "direction_kappa": float(self.direction_kappa[i]),
                    "null_ratio": float(self.null_ratio[i]),
                    "osi_model": float(osi[i]),
                    "dsi_model": float(dsi[i]),
                    "pref_tf_hz": float(self.pref_tf_hz[i]),
                    "tf_sigma_octaves": float(self.tf_sigma_octaves[i]),
                    "pref_orientation_sg_deg": float(self.pref_orientation_sg_deg[i]),
                    "orientation_kappa": float(self.orientation_kappa[i]),
                    "pref_sf_cpd": float(self.pref_sf_cpd[i]),
                    "sf_sigma_octaves": float(self.sf_sigma_octaves[i]),
                    "pref_phase": float(self.pref_phase[i]),
                    "pref_image": int(self.pref_image[i]),
                    "image_drive": [round(float(v), 6) for v in self.image_drive[i]],
                    "running_modulation": float(self.running_modulation[i]),
                    "rf_center_azimuth_deg": float(self.rf_center_azimuth_deg[i]),
                    "rf_center_elevation_deg": float(self.rf_center_elevation_deg[i]),
                }
            )
        return out


# ----------------------------------------------------------------------------------------------------
# Running speed and indicator kinetics
# ----------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RunningParams:
    """Wheel running: alternating running and stationary bouts (exponential lengths, seconds).

    ``running_fraction`` is the expected fraction of time running; bout speeds are drawn from
    ``bout_speed_range_cm_s`` with slow fluctuations of ``fluctuation_cm_s``; the trace is smoothed with
    a ``smoothing_s`` exponential and clipped to ``[0, max_speed_cm_s]``.
    """

    rate_hz: float = 60.0
    running_fraction: float = 0.4
    mean_run_bout_s: float = 20.0
    bout_speed_range_cm_s: tuple[float, float] = (10.0, 40.0)
    fluctuation_cm_s: float = 5.0
    stationary_noise_cm_s: float = 0.3
    smoothing_s: float = 0.3
    max_speed_cm_s: float = 60.0
    running_threshold_cm_s: float = 1.0


def running_speed(duration_s: float, params: RunningParams, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Timestamps (s, ``params.rate_hz``) and running speed (cm/s) over ``[0, duration_s)``."""
    n = int(math.floor(duration_s * params.rate_hz + 1e-9))
    ts = np.arange(n) / params.rate_hz
    target = np.zeros(n)
    f = min(max(params.running_fraction, 0.0), 1.0)
    if f > 0 and n:
        mean_stat = params.mean_run_bout_s * (1.0 - f) / f if f < 1 else 0.0
        t = 0.0
        running = bool(rng.random() < f)
        while t < duration_s:
            length = rng.exponential(params.mean_run_bout_s if running else max(mean_stat, 1e-3))
            if running:
                a, b = int(t * params.rate_hz), int(min(t + length, duration_s) * params.rate_hz)
                target[a:b] = rng.uniform(*params.bout_speed_range_cm_s)
            t += length
            running = not running if f < 1 else True
    alpha = math.exp(-1.0 / (params.rate_hz * 2.0))
    unit_variance = 1.0 / math.sqrt((1 - alpha) / (1 + alpha))
    wiggle = signal.lfilter([1.0 - alpha], [1.0, -alpha], rng.standard_normal(n)) * params.fluctuation_cm_s * unit_variance
    speed = np.where(target > 0, target + wiggle, np.abs(rng.standard_normal(n)) * params.stationary_noise_cm_s)
    beta = math.exp(-1.0 / (params.rate_hz * params.smoothing_s))
    speed = signal.lfilter([1.0 - beta], [1.0, -beta], speed)
    return ts, np.clip(speed, 0.0, params.max_speed_cm_s)


def gcamp_kernel_filters(rise_s: np.ndarray, decay_s: np.ndarray, rate_hz: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-cell IIR factors of the sampled double-exponential indicator kernel.

    The response to one action potential at frame ``n0`` is
    ``h[n] = (d**(n-n0) - r**(n-n0)) / peak`` for ``n >= n0`` with ``d = exp(-1 / (rate * decay))`` and
    ``r = exp(-1 / (rate * rise))``; ``peak`` is the continuous-time maximum, so the peak response is 1.
    Returns ``(d, r, 1 / peak)``.
    """
    rise = np.asarray(rise_s, dtype=float)
    decay = np.asarray(decay_s, dtype=float)
    t_peak = np.log(decay / rise) * rise * decay / (decay - rise)
    peak = np.exp(-t_peak / decay) - np.exp(-t_peak / rise)
    return np.exp(-1.0 / (rate_hz * decay)), np.exp(-1.0 / (rate_hz * rise)), 1.0 / peak


# ----------------------------------------------------------------------------------------------------
# Analysis sessions: every Visual Coding stimulus with free geometry, traces from known tuning
# ----------------------------------------------------------------------------------------------------

NATURAL_MOVIE_NAMES = ("natural_movie_one", "natural_movie_two", "natural_movie_three")
LSN_NAME = "locally_sparse_noise"


@dataclasses.dataclass(frozen=True)
class AnalysisDesign:
    """Geometry, repeats and block order of a synthetic session for the observatory analysis.

    Any geometry works (e.g. 12 directions and 3 temporal frequencies). ``blocks`` is the order of the
    stimulus blocks; a name may repeat (``spontaneous`` before and after). Natural movies show
    ``movie_frames`` frames at ``movie_rate_hz``, one table row per movie frame, ``nm_repeats`` times.
    Sparse noise shows ``lsn_frames`` template frames of ``lsn_frame_s`` on a ``lsn_shape`` grid; each
    pixel is ON (255) or OFF (0) with probability ``lsn_spot_probability`` each, else grey (127).
    """

    blocks: tuple[str, ...] = ("spontaneous", "drifting_gratings", "natural_movie_one", "static_gratings",
                               "natural_scenes", LSN_NAME, "spontaneous")
    directions_deg: tuple[float, ...] = DG_DIRECTIONS_DEG
    temporal_frequencies_hz: tuple[float, ...] = DG_TEMPORAL_FREQUENCIES_HZ
    dg_repeats: int = 8
    sg_orientations_deg: tuple[float, ...] = SG_ORIENTATIONS_DEG
    sg_spatial_frequencies_cpd: tuple[float, ...] = SG_SPATIAL_FREQUENCIES_CPD
    sg_phases: tuple[float, ...] = SG_PHASES
    sg_repeats: int = 8
    n_images: int = N_NATURAL_SCENES
    ns_repeats: int = 10
    movie_frames: int = 300
    movie_rate_hz: float = 30.0
    nm_repeats: int = 10
    lsn_shape: tuple[int, int] = (16, 28)
    lsn_frames: int = 2000
    lsn_frame_s: float = 0.25
    lsn_spot_probability: float = 0.02
    spontaneous_s: float = 60.0
    dg_on_s: float = 2.0
    dg_off_s: float = 1.0
    flash_s: float = 0.25


@dataclasses.dataclass(frozen=True)
class CellParams:
    """Per-cell tuning and trace model of an analysis session (ranges drawn uniformly).

    Rates: ``baseline_rate_hz`` plus ``peak_rate_hz * drive`` (drive in [0, 1]), times ``1 + running_modulation``
    while running. Spikes are Poisson per frame; dF/F is ``spike_dff`` per spike through a double-exponential
    indicator kernel (``rise_s``, ``decay_s``) plus white noise ``noise_dff``; corrected fluorescence is
    ``f0 * (1 + dF/F)``. Untuned cells have drive 0 everywhere (and no running modulation).
    """

    fraction_tuned: float = 0.8
    baseline_rate_hz: tuple[float, float] = (0.2, 0.5)
    peak_rate_hz: tuple[float, float] = (4.0, 20.0)
    direction_kappa: tuple[float, float] = (1.0, 4.0)
    null_ratio: tuple[float, float] = (0.0, 0.8)
    tf_sigma_octaves: tuple[float, float] = (0.5, 1.0)
    orientation_kappa: tuple[float, float] = (1.0, 4.0)
    sf_sigma_octaves: tuple[float, float] = (0.5, 1.0)
    phase_modulation: float = 0.2
    nonpreferred_image_max: float = 0.4
    movie_bumps: int = 3
    movie_bump_s: float = 0.15
    rf_sigma_px: tuple[float, float] = (0.7, 1.1)
    fraction_running_modulated: float = 0.3
    running_modulation: tuple[float, float] = (-0.5, 1.0)
    spike_dff: float = 0.2
    rise_s: float = 0.05
    decay_s: float = 0.4
    noise_dff: float = 0.03
    f0: tuple[float, float] = (200.0, 800.0)


@dataclasses.dataclass(frozen=True)
class CellTruth:
    """Ground truth per cell (arrays of length ``n``; LSN centres are grid (row, col) pixels)."""

    tuned: np.ndarray
    peak_rate_hz: np.ndarray
    pref_direction_deg: np.ndarray
    direction_kappa: np.ndarray
    null_ratio: np.ndarray
    pref_tf_hz: np.ndarray
    tf_sigma_octaves: np.ndarray
    pref_orientation_deg: np.ndarray
    orientation_kappa: np.ndarray
    pref_sf_cpd: np.ndarray
    sf_sigma_octaves: np.ndarray
    pref_phase: np.ndarray
    pref_image: np.ndarray
    image_drive: np.ndarray
    movie_profile: dict
    on_center: np.ndarray
    off_center: np.ndarray
    rf_sigma_px: np.ndarray
    running_modulation: np.ndarray

    def direction_tuning(self, directions_deg: np.ndarray) -> np.ndarray:
        """Direction drive ``n x len(directions)`` (1 at the preferred direction)."""
        d = np.asarray(directions_deg, dtype=float)[None, :]
        p, k, r = self.pref_direction_deg[:, None], self.direction_kappa[:, None], self.null_ratio[:, None]
        raw = _von_mises(d, p, k) + r * _von_mises(d, p + 180.0, k)
        return raw / (1.0 + r * np.exp(-2.0 * k))

    def model_osi_dsi(self) -> tuple[np.ndarray, np.ndarray]:
        """OSI and DSI of the evoked rate (orthogonal = mean at +-90 deg, null at +180 deg)."""
        pref = self._at(self.pref_direction_deg)
        orth = 0.5 * (self._at(self.pref_direction_deg + 90) + self._at(self.pref_direction_deg - 90))
        null = self._at(self.pref_direction_deg + 180)
        return (pref - orth) / (pref + orth), (pref - null) / (pref + null)

    def _at(self, angle_deg: np.ndarray) -> np.ndarray:
        p, k, r = self.pref_direction_deg, self.direction_kappa, self.null_ratio
        raw = _von_mises(angle_deg, p, k) + r * _von_mises(angle_deg, p + 180.0, k)
        return raw / (1.0 + r * np.exp(-2.0 * k))


@dataclasses.dataclass(frozen=True)
class AnalysisSession:
    """A synthetic session ready for the observatory analysis (traces are ``n x T`` at ``frame_rate_hz``)."""

    table: pd.DataFrame
    lsn_template: np.ndarray
    corrected: np.ndarray
    dff: np.ndarray
    speed: np.ndarray
    frame_rate_hz: float
    truth: CellTruth
    design: AnalysisDesign


def _draw_cells(n: int, design: AnalysisDesign, p: CellParams, rng: np.random.Generator) -> tuple[CellTruth, np.ndarray, np.ndarray]:
    u = lambda lo_hi: rng.uniform(lo_hi[0], lo_hi[1], n)  # noqa: E731
    tuned = rng.random(n) < p.fraction_tuned
    image_drive = rng.random((n, design.n_images)) ** 3 * p.nonpreferred_image_max
    pref_image = rng.integers(0, design.n_images, n)
    image_drive[np.arange(n), pref_image] = 1.0
    rows, cols = design.lsn_shape
    on_center = np.stack([rng.integers(1, max(rows - 1, 2), n), rng.integers(1, max(cols - 1, 2), n)], axis=1)
    shift = rng.integers(-3, 4, (n, 2))
    off_center = np.clip(on_center + shift, [1, 1], [max(rows - 2, 1), max(cols - 2, 1)])
    profiles = {}
    n_movie = design.movie_frames
    t = np.arange(n_movie) / design.movie_rate_hz
    for name in NATURAL_MOVIE_NAMES:
        prof = np.zeros((n, n_movie))
        for b in range(p.movie_bumps):
            centre = rng.uniform(0, t[-1] if n_movie else 0, n)
            height = np.ones(n) if b == 0 else rng.uniform(0.2, 0.5, n)
            prof = np.maximum(prof, height[:, None] * np.exp(-((t[None, :] - centre[:, None]) ** 2) / (2 * p.movie_bump_s**2)))
        profiles[name] = prof
    run_mod = np.where(tuned & (rng.random(n) < p.fraction_running_modulated), u(p.running_modulation), 0.0)
    truth = CellTruth(
        tuned=tuned,
        peak_rate_hz=u(p.peak_rate_hz),
        pref_direction_deg=rng.choice(np.array(design.directions_deg, dtype=float), n),
        direction_kappa=u(p.direction_kappa),
        null_ratio=u(p.null_ratio),
        pref_tf_hz=rng.choice(np.array(design.temporal_frequencies_hz, dtype=float), n),
        tf_sigma_octaves=u(p.tf_sigma_octaves),
        pref_orientation_deg=rng.choice(np.array(design.sg_orientations_deg, dtype=float), n),
        orientation_kappa=u(p.orientation_kappa),
        pref_sf_cpd=rng.choice(np.array(design.sg_spatial_frequencies_cpd, dtype=float), n),
        sf_sigma_octaves=u(p.sf_sigma_octaves),
        pref_phase=rng.choice(np.array(design.sg_phases, dtype=float), n),
        pref_image=pref_image,
        image_drive=image_drive,
        movie_profile=profiles,
        on_center=on_center,
        off_center=off_center,
        rf_sigma_px=u(p.rf_sigma_px),
        running_modulation=run_mod,
    )
    return truth, u(p.baseline_rate_hz), u(p.f0)


def _analysis_table(design: AnalysisDesign, rng: np.random.Generator, rate_hz: float) -> pd.DataFrame:
    nan = math.nan
    rows: list[tuple] = []
    t = 0.0
    for name in design.blocks:
        if name == "spontaneous":
            rows.append((t, t + design.spontaneous_s, name, nan, nan, nan, nan, nan))
            t += design.spontaneous_s
            continue
        if name == "drifting_gratings":
            conds = [(d, tf, DG_SPATIAL_FREQUENCY_CPD, nan, nan) for d in design.directions_deg for tf in design.temporal_frequencies_hz]
            conds.append((nan, nan, nan, nan, nan))
            on, period, reps = design.dg_on_s, design.dg_on_s + design.dg_off_s, design.dg_repeats
        elif name == "static_gratings":
            conds = [(o, nan, sf, ph, nan) for o in design.sg_orientations_deg for sf in design.sg_spatial_frequencies_cpd
                     for ph in design.sg_phases]
            conds.append((nan, nan, nan, nan, nan))
            on = period = design.flash_s
            reps = design.sg_repeats
        elif name == "natural_scenes":
            conds = [(nan, nan, nan, nan, float(i)) for i in range(design.n_images)] + [(nan, nan, nan, nan, -1.0)]
            on = period = design.flash_s
            reps = design.ns_repeats
        elif name in NATURAL_MOVIE_NAMES:
            dt = 1.0 / design.movie_rate_hz
            for _ in range(design.nm_repeats):
                for f in range(design.movie_frames):
                    rows.append((t, t + dt, name, nan, nan, nan, nan, float(f)))
                    t += dt
            continue
        elif name == LSN_NAME:
            for f in range(design.lsn_frames):
                rows.append((t, t + design.lsn_frame_s, name, nan, nan, nan, nan, float(f)))
                t += design.lsn_frame_s
            continue
        else:
            raise ValueError(f"unknown block {name!r}")
        for _ in range(reps):
            for idx in rng.permutation(len(conds)):
                rows.append((t, t + on, name, *conds[idx]))
                t += period
    table = pd.DataFrame(rows, columns=[c for c in STIMULUS_COLUMNS if c not in ("start_frame", "end_frame")])
    start, end = frame_window(table["start_time"].to_numpy(), table["stop_time"].to_numpy(), rate_hz)
    table.insert(3, "start_frame", start)
    table.insert(4, "end_frame", np.maximum(end, start + 1))
    return table[list(STIMULUS_COLUMNS)]


def lsn_template(design: AnalysisDesign, rng: np.random.Generator) -> np.ndarray:
    """Sparse-noise template ``frames x rows x cols`` (uint8: 255 ON, 0 OFF, 127 grey)."""
    u = rng.random((design.lsn_frames, *design.lsn_shape))
    q = design.lsn_spot_probability
    return np.where(u < q, 255, np.where(u < 2 * q, 0, 127)).astype(np.uint8)


def _row_drive(table: pd.DataFrame, truth: CellTruth, template: np.ndarray, design: AnalysisDesign, p: CellParams) -> np.ndarray:
    n, m = len(truth.tuned), len(table)
    out = np.zeros((n, m))
    name = table["stimulus_name"].to_numpy()
    ori = table["orientation"].to_numpy(dtype=float)
    tf = table["temporal_frequency"].to_numpy(dtype=float)
    sf = table["spatial_frequency"].to_numpy(dtype=float)
    ph = table["phase"].to_numpy(dtype=float)
    fr = table["frame"].to_numpy(dtype=float)
    dg = (name == "drifting_gratings") & np.isfinite(ori)
    if dg.any():
        tfd = _log_gauss(tf[dg][None, :], truth.pref_tf_hz[:, None], truth.tf_sigma_octaves[:, None])
        out[:, dg] = truth.direction_tuning(ori[dg]) * tfd
    sg = (name == "static_gratings") & np.isfinite(ori)
    if sg.any():
        o = _von_mises(ori[sg][None, :], truth.pref_orientation_deg[:, None], truth.orientation_kappa[:, None], period=180.0)
        s = _log_gauss(sf[sg][None, :], truth.pref_sf_cpd[:, None], truth.sf_sigma_octaves[:, None])
        cph = np.cos(2 * np.pi * (ph[sg][None, :] - truth.pref_phase[:, None]))
        out[:, sg] = o * s * (1.0 + p.phase_modulation * cph) / (1.0 + p.phase_modulation)
    ns = (name == "natural_scenes") & (fr >= 0)
    if ns.any():
        out[:, ns] = truth.image_drive[:, fr[ns].astype(np.int64)]
    for movie in NATURAL_MOVIE_NAMES:
        sel = name == movie
        if sel.any():
            out[:, sel] = truth.movie_profile[movie][:, fr[sel].astype(np.int64)]
    sel = name == LSN_NAME
    if sel.any():
        rows, cols = design.lsn_shape
        yy, xx = np.mgrid[0:rows, 0:cols]

        def rf(center):
            d2 = (yy[None] - center[:, 0, None, None]) ** 2 + (xx[None] - center[:, 1, None, None]) ** 2
            return np.exp(-d2 / (2 * truth.rf_sigma_px[:, None, None] ** 2)).reshape(n, -1)

        frames = template[fr[sel].astype(np.int64)].reshape(int(sel.sum()), -1)
        drive = rf(truth.on_center) @ (frames == 255).T + rf(truth.off_center) @ (frames == 0).T
        out[:, sel] = np.minimum(drive, 1.0)
    out[~truth.tuned, :] = 0.0
    return out


def analysis_session(
    n_cells: int,
    *,
    seed: int = 0,
    design: AnalysisDesign = AnalysisDesign(),
    cells: CellParams = CellParams(),
    frame_rate_hz: float = 30.0,
    nan_frames: int = 0,
) -> AnalysisSession:
    """Generate a session for the observatory analysis from known tuning (deterministic for a seed).

    ``nan_frames`` NaN values are put at random (cell, frame) positions of the corrected fluorescence and
    dF/F, as a flagged frame would leave them.
    """
    root = np.random.SeedSequence([seed, 7217])
    r_cells, r_table, r_tpl, r_run, r_spk, r_noise, r_nan = (np.random.default_rng(s) for s in root.spawn(7))
    truth, base_rate, f0 = _draw_cells(n_cells, design, cells, r_cells)
    table = _analysis_table(design, r_table, frame_rate_hz)
    template = lsn_template(design, r_tpl)
    n_frames = int(table["end_frame"].max()) + int(round(2 * frame_rate_hz))
    _, speed = running_speed(n_frames / frame_rate_hz, RunningParams(rate_hz=frame_rate_hz), r_run)
    speed = np.resize(speed, n_frames)
    running = speed > 1.0
    drive_rows = _row_drive(table, truth, template, design, cells)
    row_of = rows_per_frame(table, n_frames)
    drive = np.where(row_of[None, :] >= 0, drive_rows[:, np.maximum(row_of, 0)], 0.0)
    rate = (base_rate[:, None] + truth.peak_rate_hz[:, None] * drive) * (1.0 + truth.running_modulation[:, None] * running[None, :])
    spikes = r_spk.poisson(np.maximum(rate, 0.0) / frame_rate_hz).astype(float)
    d, r, norm = gcamp_kernel_filters(np.array([cells.rise_s]), np.array([cells.decay_s]), frame_rate_hz)
    calcium = (signal.lfilter([1.0], [1.0, -d[0]], spikes, axis=1) - signal.lfilter([1.0], [1.0, -r[0]], spikes, axis=1)) * norm[0]
    dff = cells.spike_dff * calcium + r_noise.normal(0.0, cells.noise_dff, calcium.shape)
    corrected = f0[:, None] * (1.0 + dff)
    if nan_frames:
        i = r_nan.integers(0, n_cells, nan_frames)
        j = r_nan.integers(0, n_frames, nan_frames)
        corrected[i, j] = np.nan
        dff[i, j] = np.nan
    return AnalysisSession(table=table, lsn_template=template, corrected=corrected, dff=dff, speed=speed,
                           frame_rate_hz=frame_rate_hz, truth=truth, design=design)
