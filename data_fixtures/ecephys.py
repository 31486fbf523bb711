"""Synthetic Neuropixels (ecephys) sessions: Kilosort-style sorter outputs, LFP, tables and truth.

Per probe:

* Channels: ``n_channels`` sites in rows ``channel_spacing_um`` apart (vertical position 20 µm at the
  tip row), alternating over the columns ``horizontal_positions_um``; ``reference_channels`` (local
  indices) have ``valid_data = False`` and carry no signal. CCF coordinates (µm) lie on a straight
  track from a tip deep in the brain towards the surface; ``structure_acronym`` by depth band (thalamus,
  DG, CA1, then the probe's visual area).
* Clusters: ``n_units`` units plus ``n_orphan_clusters`` noise clusters. Every cluster has one template
  (``spike_templates == spike_clusters``). The orphan clusters appear in ``spike_clusters`` and in
  ``cluster_group.tsv`` (``noise``) but map to no unit; their ids are in the truth
  (``orphan_cluster_ids``) so downstream code can prove it reports them.
* Amplitudes: with ``Winv`` = ``whitening_mat_inv`` and a whitened template ``T``, the template amplitude
  is ``ptp_time(T @ Winv)`` maximised over channels (= the model scale ``template_scale``); the spike
  amplitude in volts is ``template_amplitude[spike_template] * amplitudes * amplitude_scale_factor``
  (0.195e-6 V/bit). The truth stores both per-template values and the per-spike volts.
* Spikes: an inhomogeneous Poisson process per unit (baseline rate log-normal, stimulus tuning from
  :class:`data_fixtures.stimulus.Tuning` for ``fraction_visual`` of the units, running modulation,
  optotagging responses for ``fraction_opto_tagged``), a refractory dead time, optional contaminating
  spikes (uniform in time, and a ``contamination_doublet_fraction`` of them 0.3-1.4 ms after one of
  the unit's spikes, so that even short sessions have ISI violations) and an amplitude detection threshold (which makes the
  amplitude cutoff). Spike times are integer samples at ``sampling_rate_hz``, sample 0 = time 0 s.
* Unit metrics: ``firing_rate`` (spikes / duration), ``isi_violations`` (false-positive rate estimate
  ``n_viol * D / (2 N^2 * 1.5 ms)``) and ``presence_ratio`` (fraction of 100 bins with a spike) are
  computed from the written spikes; ``amplitude_cutoff`` is the model fraction of the amplitude
  distribution below the detection threshold; ``snr`` = amplitude / noise rms; ``isolation_distance``
  and ``d_prime`` are drawn (plausible values, not computed from features).
* LFP (optional): every ``lfp_channel_stride``-th channel at ``lfp_sampling_rate_hz``: a sum of
  oscillators (1/f amplitudes, a theta and a gamma band, depth profiles with phase reversals) plus
  white noise, int16 at ``amplitude_scale_factor`` V/bit. :func:`lfp_segment` computes any sample range
  directly and the writer streams blocks of ``lfp_block_samples`` through it, so the file equals a
  direct computation.
* Flashes and a laminar evoked potential: ``n_flashes`` full-field flashes (``stimulus_name`` ``flashes``,
  ``color`` -1/+1 alternating) every ``flash_period_s`` from ``flash_start_s`` open the stimulus table (the
  Visual Coding blocks follow). Each flash adds to the LFP, at every valid channel, the potential of one current
  sink and one source ``phi(z, t) = A k(t - onset) [G(z; z_source) - G(z; z_sink)]`` with ``G`` a Gaussian of
  width ``csd_width_um`` over the vertical position, ``A = flash_lfp_amplitude_uv`` and ``k`` an alpha function
  (latency ``flash_latency_s``, time constant ``flash_tau_s``, peak 1). ``-d^2 phi / dz^2`` is most negative at
  ``z_sink``, the truth the current source density must recover (:func:`csd_truth`).
* A linked behavior session: ``behavior_block_s`` > 0 leaves that much time after the flashes for a
  change-detection block (:func:`behavior_block`; generate the behavior session with ``start_offset_s`` and
  ``duration_s`` from it); the Visual Coding blocks follow it.
* Raw wheel signals (:func:`running_wheel_signals`) behind the running speed: ``running_wheel.csv``.

Probe truth (HDF5): ``unit_ids``, ``unit_cluster_ids``, ``orphan_cluster_ids``, ``cluster_ids``,
``template_amplitude`` (per template, computed from the stored float32 templates), ``template_scale``
(model value), ``unit_amplitude_uv`` (model mean peak-to-peak, µV), ``unit_mean_amplitude_v`` (mean of
the written spikes' amplitudes), ``spike_amplitudes_v`` (per spike, file order), ``cluster_spike_counts``,
``baseline_rate_hz``, ``visual``, ``opto_tagged``, ``contamination_rate_hz``, ``amplitude_cutoff``,
``peak_channel_local_index``, ``unit_position_um`` (x, y). Session truth (JSON): per probe the unit
records with tuning, orphan cluster ids and file counts; the optotagging design.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from scipy import stats

from data_fixtures.eye_tracking import write_rig_files
from data_fixtures.spec import (
    EcephysSessionFiles,
    ProbeFiles,
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
    frame_window,
    running_speed,
    visual_stimulus_table,
)
from release_platform.storage import atomic_path

__all__ = [
    "EcephysParams", "running_wheel_signals", "RUNNING_RADIUS_CM", "generate_ecephys_session", "lfp_segment", "lfp_channel_indices", "probe_geometry", "flash_onsets",
    "csd_truth", "behavior_block", "lfp_channel_records",
]

_PROBE_AREAS = ("VISam", "VISpm", "VISp", "VISl", "VISal", "VISrl")
_K_PROBE, _K_LFP_MODEL, _K_LFP_NOISE, _K_SESSION = 31, 32, 33, 34
_ISI_THRESHOLD_S = 0.0015


@dataclasses.dataclass(frozen=True)
class EcephysParams:
    """Parameters of a synthetic Neuropixels session (tiny defaults; see :meth:`realistic`).

    Times in s, rates in Hz, positions in µm, amplitudes in µV unless named otherwise. ``n_units`` and
    ``n_orphan_clusters`` are per probe. ``template_scale_range``: peak-to-peak of an unwhitened template
    (bits per unit of Kilosort amplitude). ``whitening_length_um`` / ``whitening_diag_range``: the
    inverse whitening matrix is ``diag(s) exp(-distance / length) diag(s)``. ``lfp_duration_s``:
    length of the LFP (None = whole session); ``write_lfp=False`` skips it. ``optotagging_fraction``:
    the tail of the session used for optotagging (10 ms pulses and 1 s raised cosines at
    ``optotagging_levels``, one every ``optotagging_period_s`` plus up to 0.5 s jitter).
    """

    duration_s: float = 60.0
    sampling_rate_hz: float = 30000.0
    lfp_sampling_rate_hz: float = 2500.0
    amplitude_scale_factor: float = 0.195e-6
    n_channels: int = 32
    channel_spacing_um: float = 20.0
    horizontal_positions_um: tuple[float, ...] = (16.0, 48.0)
    reference_channels: tuple[int, ...] = (7, 23)
    n_units: int = 8
    n_orphan_clusters: int = 1
    orphan_rate_hz: float = 2.0
    firing_rate_median_hz: float = 4.0
    firing_rate_log_sd: float = 1.0
    firing_rate_range_hz: tuple[float, float] = (0.2, 60.0)
    refractory_s: float = 0.002
    fraction_contaminated: float = 0.3
    contamination_range: tuple[float, float] = (0.01, 0.1)
    contamination_doublet_fraction: float = 0.1
    fraction_visual: float = 0.6
    tuning: TuningParams = TuningParams()
    max_rate_hz: float = 100.0
    fraction_opto_tagged: float = 0.25
    opto_pulse_spike_probability: float = 0.8
    opto_latency_range_s: tuple[float, float] = (0.002, 0.006)
    opto_ramp_peak_rate_hz: float = 30.0
    amplitude_median_uv: float = 120.0
    amplitude_log_sd: float = 0.4
    amplitude_cv: float = 0.15
    amplitude_cutoff_range: tuple[float, float] = (0.0, 0.1)
    noise_rms_uv_range: tuple[float, float] = (8.0, 15.0)
    template_samples: int = 82
    trough_sample: int = 30
    template_scale_range: tuple[float, float] = (5.0, 15.0)
    spatial_sigma_um: float = 25.0
    whitening_length_um: float = 30.0
    whitening_diag_range: tuple[float, float] = (0.5, 1.5)
    write_lfp: bool = True
    lfp_duration_s: float | None = 5.0
    lfp_channel_stride: int = 2
    lfp_block_samples: int = 25_000
    lfp_noise_granule_samples: int = 2_500
    lfp_n_oscillators: int = 24
    lfp_amplitude_uv: float = 100.0
    lfp_noise_uv: float = 10.0
    session_type: str = "brain_observatory_1.1"
    stimulus: StimulusDesign = StimulusDesign(
        stimuli=("spontaneous", "drifting_gratings", "natural_scenes"), weights=(0.2, 0.5, 0.3)
    )
    optotagging_fraction: float = 0.25
    optotagging_levels: tuple[float, ...] = (1.0, 1.6, 2.2)
    optotagging_period_s: float = 2.0
    running: RunningParams = RunningParams()
    n_flashes: int = 8
    flash_start_s: float = 0.5
    flash_period_s: float = 0.5
    flash_duration_s: float = 0.25
    flash_lfp_amplitude_uv: float = 300.0
    flash_latency_s: float = 0.04
    flash_tau_s: float = 0.015
    csd_sink_fraction: float = 0.65
    csd_source_fraction: float = 0.3
    csd_width_um: float = 40.0
    behavior_block_s: float = 0.0
    wheel_supply_v: float = 5.0

    @classmethod
    def realistic(cls, **overrides) -> "EcephysParams":
        """384 channels (4 staggered columns, reference channel 191), 120 units/probe, 60 min, 60 s of LFP."""
        base = dict(
            duration_s=3600.0,
            n_channels=384,
            horizontal_positions_um=(43.0, 11.0, 59.0, 27.0),
            reference_channels=(191,),
            n_units=120,
            n_orphan_clusters=5,
            lfp_duration_s=60.0,
            lfp_n_oscillators=48,
        )
        base.update(overrides)
        return cls(**base)


# ----------------------------------------------------------------------------------------------------
# Geometry
# ----------------------------------------------------------------------------------------------------


def probe_geometry(params: EcephysParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vertical positions (µm), horizontal positions (µm) and validity of the probe's channels."""
    n_col = len(params.horizontal_positions_um)
    idx = np.arange(params.n_channels)
    vertical = 20.0 + (idx // n_col) * params.channel_spacing_um
    horizontal = np.asarray(params.horizontal_positions_um, dtype=float)[idx % n_col]
    valid = ~np.isin(idx, np.asarray(params.reference_channels, dtype=int))
    return vertical, horizontal, valid


def lfp_channel_indices(params: EcephysParams) -> np.ndarray:
    """Probe-local indices of the channels kept in the LFP (every ``lfp_channel_stride``-th)."""
    return np.arange(0, params.n_channels, max(int(params.lfp_channel_stride), 1))


def flash_onsets(params: EcephysParams) -> np.ndarray:
    """Onsets (s) of the flashes that open the stimulus table (on the 60 Hz monitor grid)."""
    t = params.flash_start_s + params.flash_period_s * np.arange(max(int(params.n_flashes), 0))
    return np.round(t * MONITOR_RATE_HZ) / MONITOR_RATE_HZ


def lfp_channel_records(probe: ProbeFiles) -> list[dict]:
    """The channel records of a generated probe's LFP columns, in column order (from the LFP file's ``channels``)."""
    with h5py.File(probe.lfp_path, "r") as f:
        numbers = f["channels"][()]
    by_number = {c["local_index"]: c for c in probe.channels}
    return [by_number[int(n)] for n in numbers]


def behavior_block(params: EcephysParams) -> tuple[float, float]:
    """Start and end (s) of the change-detection block reserved for a linked behavior session: after the flashes."""
    onsets = flash_onsets(params)
    start = float(onsets[-1]) + params.flash_period_s if len(onsets) else 0.0
    return start, start + float(params.behavior_block_s)


def csd_truth(params: EcephysParams) -> dict[str, float]:
    """Vertical positions (µm from the tip) of the flash-evoked current sink and source."""
    z = probe_geometry(params)[0][lfp_channel_indices(params)]
    lo, hi = float(z.min()), float(z.max())
    return {"sink_vertical_um": lo + params.csd_sink_fraction * (hi - lo),
            "source_vertical_um": lo + params.csd_source_fraction * (hi - lo)}


def _flash_potential_uv(params: EcephysParams, t: np.ndarray) -> np.ndarray:
    """The flash-evoked potential (µV) of the LFP channels at times ``t`` (samples x LFP channels)."""
    onsets = flash_onsets(params)
    if not len(onsets) or params.flash_lfp_amplitude_uv == 0:
        return np.zeros((len(t), len(lfp_channel_indices(params))))
    vertical, _, valid = probe_geometry(params)
    chans = lfp_channel_indices(params)
    z = vertical[chans]
    truth = csd_truth(params)
    w = params.csd_width_um
    profile = (np.exp(-0.5 * ((z - truth["source_vertical_um"]) / w) ** 2)
               - np.exp(-0.5 * ((z - truth["sink_vertical_um"]) / w) ** 2)) * valid[chans]
    kernel = np.zeros(len(t))
    for onset in onsets:
        s = (t - onset - params.flash_latency_s) / params.flash_tau_s
        live = (s > 0) & (s < 40)
        kernel[live] += s[live] * np.exp(1.0 - s[live])
    return params.flash_lfp_amplitude_uv * kernel[:, None] * profile[None, :]


def _lfp_model(params: EcephysParams, seed: int, probe_index: int) -> tuple[np.ndarray, np.ndarray]:
    """Oscillator frequencies (Hz) and the ``2 n_osc x n_lfp_channels`` sine/cosine coefficient matrix (µV)."""
    rng = rng_for(seed, _K_LFP_MODEL, probe_index)
    vertical, _, valid = probe_geometry(params)
    chans = lfp_channel_indices(params)
    z = vertical[chans]
    n_osc = max(int(params.lfp_n_oscillators), 2)
    freqs = np.exp(rng.uniform(math.log(1.0), math.log(100.0), n_osc))
    freqs[0] = rng.uniform(6.0, 8.0)  # theta
    freqs[1] = rng.uniform(40.0, 60.0)  # gamma
    amps = params.lfp_amplitude_uv / np.sqrt(freqs) / math.sqrt(n_osc) * 2.0
    amps[0] *= 3.0
    amps[1] *= 1.5
    wavelength = rng.uniform(300.0, 3000.0, n_osc)
    offset = rng.uniform(0.0, 2 * math.pi, n_osc)
    phase0 = rng.uniform(0.0, 2 * math.pi, n_osc)
    phase_grad = rng.uniform(-0.002, 0.002, n_osc)  # rad per µm
    profile = amps[:, None] * np.cos(2 * math.pi * z[None, :] / wavelength[:, None] + offset[:, None])
    phase = phase0[:, None] + phase_grad[:, None] * z[None, :]
    coeff = np.concatenate([profile * np.cos(phase), profile * np.sin(phase)], axis=0)
    coeff[:, ~valid[chans]] = 0.0
    return freqs, coeff


def lfp_segment(params: EcephysParams, *, seed: int, probe_index: int, start: int, stop: int) -> np.ndarray:
    """LFP samples ``[start, stop)`` (``stop - start`` x LFP channels, int16 bits) computed directly.

    Deterministic for any split of the range: oscillators are functions of time and the white noise is
    drawn per fixed granule of ``lfp_noise_granule_samples`` samples.
    """
    if stop < start or start < 0:
        raise ValueError(f"invalid LFP sample range [{start}, {stop})")
    freqs, coeff = _lfp_model(params, seed, probe_index)
    n_ch = coeff.shape[1]
    t = np.arange(start, stop, dtype=np.float64) / params.lfp_sampling_rate_hz
    arg = 2 * math.pi * t[:, None] * freqs[None, :]
    signal_uv = np.concatenate([np.sin(arg), np.cos(arg)], axis=1) @ coeff + _flash_potential_uv(params, t)
    granule = max(int(params.lfp_noise_granule_samples), 1)
    if stop > start and params.lfp_noise_uv > 0:
        valid = probe_geometry(params)[2][lfp_channel_indices(params)]
        g0, g1 = start // granule, (stop - 1) // granule
        noise = np.concatenate(
            [rng_for(seed, _K_LFP_NOISE, probe_index, g).standard_normal((granule, n_ch)) for g in range(g0, g1 + 1)]
        )
        noise = noise[start - g0 * granule : stop - g0 * granule] * params.lfp_noise_uv
        signal_uv += noise * valid[None, :]
    bits = np.rint(signal_uv * 1e-6 / params.amplitude_scale_factor)
    return np.clip(bits, -32768, 32767).astype(np.int16)


def _structure_bands(name: str) -> list[tuple[float, str]]:
    index = ord(name[-1]) - ord("A") if name.startswith("probe") and len(name) == 6 else 0
    area = _PROBE_AREAS[index % len(_PROBE_AREAS)]
    thalamus = "LGd" if area == "VISp" else "LP"
    return [(0.2, thalamus), (0.3, "DG"), (0.45, "CA1"), (1.01, area)]


# ----------------------------------------------------------------------------------------------------
# Spike generation
# ----------------------------------------------------------------------------------------------------


def _thin(rng: np.random.Generator, t0: float, t1: float, rate_max: float, rate_fn) -> np.ndarray:
    """Inhomogeneous Poisson spikes on ``[t0, t1)`` by thinning a ``rate_max`` process."""
    if rate_max <= 0 or t1 <= t0:
        return np.empty(0)
    n = rng.poisson(rate_max * (t1 - t0))
    cand = np.sort(rng.uniform(t0, t1, n))
    keep = rng.random(n) * rate_max < rate_fn(cand)
    return cand[keep]


def _enforce_refractory(times: np.ndarray, dead: float) -> np.ndarray:
    """Drop spikes closer than ``dead`` to the previous kept spike."""
    if len(times) < 2 or dead <= 0:
        return times
    keep = [times[0]]
    last = times[0]
    for t in times[1:]:
        if t - last >= dead:
            keep.append(t)
            last = t
    return np.asarray(keep)


def _isi_violations(times: np.ndarray, duration: float) -> float:
    n = len(times)
    if n < 2:
        return 0.0
    n_viol = int(np.sum(np.diff(times) < _ISI_THRESHOLD_S))
    return float(n_viol * duration / (2.0 * n * n * _ISI_THRESHOLD_S))


def _presence_ratio(times: np.ndarray, duration: float, bins: int = 100) -> float:
    hist, _ = np.histogram(times, bins=bins, range=(0.0, duration))
    return float(np.mean(hist > 0))


def _optotagging_table(p: EcephysParams, rng: np.random.Generator) -> pd.DataFrame:
    start = p.duration_s * (1.0 - p.optotagging_fraction) + 1.0
    conditions = [("10 ms pulse", "pulse", 0.01), ("1 second raised cosine", "raised_cosine", 1.0)]
    combos = [(c, lvl) for c in conditions for lvl in p.optotagging_levels]
    rows = []
    t = start
    while True:
        for i in rng.permutation(len(combos)):
            (cond, name, dur), level = combos[i]
            if t + dur > p.duration_s - 0.5:
                return pd.DataFrame(rows, columns=["start_time", "stop_time", "condition", "level", "duration", "stimulus_name"])
            rows.append((round(t, 6), round(t + dur, 6), cond, float(level), dur, name))
            t += p.optotagging_period_s + rng.uniform(0.0, 0.5)


def _write_npy(path: Path, array: np.ndarray) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array, allow_pickle=False)
    return path


def _write_text(path: Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


def _generate_probe(
    p: EcephysParams,
    *,
    seed: int,
    probe_index: int,
    probe_id: int,
    name: str,
    channel_ids: np.ndarray,
    unit_ids: np.ndarray,
    probe_dir: Path,
    table: pd.DataFrame,
    opto: pd.DataFrame,
    run_ts: np.ndarray,
    speed: np.ndarray,
) -> tuple[ProbeFiles, dict]:
    rng = rng_for(seed, _K_PROBE, probe_index)
    fs = p.sampling_rate_hz
    duration = p.duration_s
    vertical, horizontal, valid = probe_geometry(p)
    n_ch = p.n_channels

    # channels and CCF track
    tip = np.array([rng.uniform(7500, 9500), rng.uniform(3200, 3800), rng.uniform(6500, 9000)])
    direction = np.array([rng.uniform(-0.2, 0.2), -1.0, rng.uniform(0.1, 0.4)])
    direction /= np.linalg.norm(direction)
    ccf = np.rint(tip[None, :] + vertical[:, None] * direction[None, :]).astype(np.int64)
    bands = _structure_bands(name)
    frac = (vertical - vertical.min()) / max(vertical.max() - vertical.min(), 1e-9)
    acronyms = [next(a for lim, a in bands if f < lim) for f in frac]
    channels = tuple(
        {
            "id": int(channel_ids[c]),
            "probe_id": int(probe_id),
            "local_index": int(c),
            "probe_channel_number": int(c),
            "probe_vertical_position": float(vertical[c]),
            "probe_horizontal_position": float(horizontal[c]),
            "anterior_posterior_ccf_coordinate": int(ccf[c, 0]),
            "dorsal_ventral_ccf_coordinate": int(ccf[c, 1]),
            "left_right_ccf_coordinate": int(ccf[c, 2]),
            "structure_acronym": acronyms[c],
            "valid_data": bool(valid[c]),
        }
        for c in range(n_ch)
    )

    # whitening
    pos = np.stack([horizontal, vertical], axis=1)
    dist = np.linalg.norm(pos[:, None, :] - pos[None, :, :], axis=2)
    s = rng.uniform(*p.whitening_diag_range, n_ch)
    w_inv = s[:, None] * np.exp(-dist / p.whitening_length_um) * s[None, :]
    w = np.linalg.inv(w_inv)

    # clusters: units plus orphan noise clusters at random cluster ids
    n_clusters = p.n_units + p.n_orphan_clusters
    orphan_ids = np.sort(rng.choice(n_clusters, size=p.n_orphan_clusters, replace=False))
    unit_cluster_ids = np.setdiff1d(np.arange(n_clusters), orphan_ids)
    is_unit = np.isin(np.arange(n_clusters), unit_cluster_ids)
    valid_idx = np.flatnonzero(valid)
    peak_local = rng.choice(valid_idx, size=n_clusters, replace=n_clusters > len(valid_idx))
    columns = np.sort(np.asarray(p.horizontal_positions_um, dtype=float))
    col_gap = np.min(np.diff(columns)) if len(columns) > 1 else p.channel_spacing_um
    jitter = 0.2 * min(p.channel_spacing_um, col_gap)
    unit_pos = pos[peak_local] + rng.uniform(-jitter, jitter, (n_clusters, 2))
    samples = np.arange(p.template_samples, dtype=float)
    templates32 = np.zeros((n_clusters, p.template_samples, n_ch), dtype=np.float32)
    unwhitened = np.zeros((n_clusters, p.template_samples, n_ch))
    scale = rng.uniform(*p.template_scale_range, n_clusters)
    for c in range(n_clusters):
        if is_unit[c]:
            width = rng.uniform(3.0, 6.0)
            lag = rng.uniform(9.0, 15.0)
            trough = np.exp(-0.5 * ((samples - p.trough_sample) / width) ** 2)
            repolarization = np.exp(-0.5 * ((samples - p.trough_sample - lag) / (1.8 * width)) ** 2)
            shape = -trough + 0.35 * repolarization
            d2 = np.sum((pos - unit_pos[c]) ** 2, axis=1)
            gain = np.exp(-d2 / (2 * p.spatial_sigma_um**2))
        else:  # a noise cluster: a sharp single-channel artefact
            shape = np.where(np.abs(samples - p.trough_sample) < 2, -1.0, 0.0) + 0.05 * rng.standard_normal(p.template_samples)
            gain = np.zeros(n_ch)
            gain[peak_local[c]] = 1.0
        gain[~valid] = 0.0
        unit_shape = shape[:, None] * gain[None, :]
        unit_shape /= np.ptp(unit_shape, axis=0).max()
        unwhitened[c] = unit_shape * scale[c]
        templates32[c] = (unwhitened[c] @ w).astype(np.float32)
    template_amplitude = np.ptp(templates32.astype(np.float64) @ w_inv, axis=1).max(axis=1)
    peak_from_templates = np.argmax(np.ptp(unwhitened, axis=1), axis=1)

    # firing model
    base_rate = np.clip(
        np.exp(rng.normal(math.log(p.firing_rate_median_hz), p.firing_rate_log_sd, n_clusters)), *p.firing_rate_range_hz
    )
    base_rate[~is_unit] = p.orphan_rate_hz
    tuning = Tuning.draw(rng, base_rate, p.tuning)
    visual = (rng.random(n_clusters) < p.fraction_visual) & is_unit
    tuning = dataclasses.replace(
        tuning, tuned=tuning.tuned & visual, running_modulation=np.where(is_unit, tuning.running_modulation, 0.0)
    )
    opto_tagged = (rng.random(n_clusters) < p.fraction_opto_tagged) & is_unit
    contaminated = (rng.random(n_clusters) < p.fraction_contaminated) & is_unit
    contamination = np.where(contaminated, rng.uniform(*p.contamination_range, n_clusters), 0.0)
    amp_uv = np.exp(rng.normal(math.log(p.amplitude_median_uv), p.amplitude_log_sd, n_clusters))
    amp_uv[~is_unit] = p.amplitude_median_uv * 0.5
    cutoff = np.where(is_unit, rng.uniform(*p.amplitude_cutoff_range, n_clusters), 0.0)
    noise_rms = rng.uniform(*p.noise_rms_uv_range, n_clusters)

    row_start = table["start_time"].to_numpy(float)
    row_stop = table["stop_time"].to_numpy(float)
    drive = tuning.drive(table) if len(table) else np.zeros((n_clusters, 0))

    def running_at(t: np.ndarray) -> np.ndarray:
        if len(run_ts) == 0:
            return np.zeros(len(t))
        return np.interp(t, run_ts, speed) > p.running.running_threshold_cm_s

    opto_start = opto["start_time"].to_numpy(float)
    opto_stop = opto["stop_time"].to_numpy(float)
    opto_level = opto["level"].to_numpy(float)
    opto_name = opto["stimulus_name"].to_numpy()
    max_level = max(p.optotagging_levels) if p.optotagging_levels else 1.0

    spike_lists: list[np.ndarray] = []
    amp_lists: list[np.ndarray] = []
    for c in range(n_clusters):
        crng = rng_for(seed, _K_PROBE, probe_index, 1000 + c)

        def rate_fn(t: np.ndarray, c: int = c) -> np.ndarray:
            row = np.searchsorted(row_start, t, side="right") - 1
            inside = (row >= 0) & (t < row_stop[np.maximum(row, 0)])
            d = np.zeros(len(t))
            if drive.shape[1]:
                d[inside] = drive[c, row[inside]]
            r = tuning.rate(d, running_at(t), cell=c)
            return np.minimum(r, p.max_rate_hz)

        bound = min(base_rate[c] * tuning.evoked_gain[c] * (1.0 + max(tuning.running_modulation[c], 0.0)), p.max_rate_hz)
        times = _thin(crng, 0.0, duration, bound, rate_fn)
        if opto_tagged[c]:
            extra = []
            for a, b, lvl, kind in zip(opto_start, opto_stop, opto_level, opto_name):
                if kind == "pulse":
                    if crng.random() < p.opto_pulse_spike_probability * lvl / max_level:
                        extra.append(np.array([a + crng.uniform(*p.opto_latency_range_s)]))
                else:
                    peak = p.opto_ramp_peak_rate_hz * lvl / max_level
                    def ramp(t: np.ndarray, a: float = a, b: float = b, peak: float = peak) -> np.ndarray:
                        return peak * 0.5 * (1 - np.cos(2 * np.pi * (t - a) / (b - a)))

                    extra.append(_thin(crng, a, b, peak, ramp))
            if extra:
                times = np.sort(np.concatenate([times, *extra]))
        times = _enforce_refractory(times, p.refractory_s)
        if contamination[c] > 0:
            n_cont = int(crng.poisson(contamination[c] * base_rate[c] * duration))
            n_doublet = int(crng.binomial(n_cont, p.contamination_doublet_fraction)) if len(times) else 0
            doublets = times[crng.integers(0, max(len(times), 1), n_doublet)] + crng.uniform(0.0003, 0.0014, n_doublet)
            uniform = crng.uniform(0.0, duration, n_cont - n_doublet)
            times = np.sort(np.concatenate([times, doublets, uniform]))
        mean_raw = amp_uv[c] * 1e-6 / (p.amplitude_scale_factor * template_amplitude[c])
        raw = mean_raw * (1.0 + p.amplitude_cv * crng.standard_normal(len(times)))
        if cutoff[c] > 0:
            threshold = mean_raw * (1.0 + p.amplitude_cv * stats.norm.ppf(cutoff[c]))
            keep = raw >= threshold
            times, raw = times[keep], raw[keep]
        samples_idx = np.rint(times * fs).astype(np.int64)
        ok = (samples_idx >= 0) & (samples_idx < int(round(duration * fs)))
        spike_lists.append(samples_idx[ok])
        amp_lists.append(raw[ok])

    clusters_per_spike = np.concatenate([np.full(len(s_), c, dtype=np.int32) for c, s_ in enumerate(spike_lists)])
    all_samples = np.concatenate(spike_lists)
    all_amps = np.concatenate(amp_lists)
    order = np.lexsort((clusters_per_spike, all_samples))
    spike_times = all_samples[order].astype(np.int64)
    spike_clusters = clusters_per_spike[order]
    amplitudes = all_amps[order].astype(np.float64)
    spike_amp_v = template_amplitude[spike_clusters] * amplitudes * p.amplitude_scale_factor

    mean_waveforms = np.zeros((n_clusters, p.template_samples, n_ch), dtype=np.float32)
    counts = np.bincount(spike_clusters, minlength=n_clusters)
    for c in range(n_clusters):
        if counts[c]:
            volts = unwhitened[c] / scale[c] * template_amplitude[c] * amp_lists[c].mean() * p.amplitude_scale_factor
            mean_waveforms[c] = volts.astype(np.float32)

    # unit records
    units = []
    unit_truth = []
    for local, c in enumerate(unit_cluster_ids):
        t_s = spike_lists[c] / fs
        uid = int(unit_ids[local])
        peak = int(peak_from_templates[c])
        rec = {
            "id": uid,
            "probe_id": int(probe_id),
            "cluster_id": int(c),
            "peak_channel_id": int(channel_ids[peak]),
            "local_index": int(local),
            "firing_rate": float(len(t_s) / duration),
            "isi_violations": _isi_violations(t_s, duration),
            "presence_ratio": _presence_ratio(t_s, duration),
            "amplitude_cutoff": float(cutoff[c]),
            "snr": float(amp_uv[c] / noise_rms[c]),
            "isolation_distance": float(np.exp(rng.normal(math.log(50.0), 0.4))),
            "d_prime": float(rng.uniform(2.0, 8.0)),
            "amplitude": float(amp_uv[c]),
            "quality": "good",
        }
        units.append(rec)
        unit_truth.append(
            {
                "id": uid,
                "cluster_id": int(c),
                "peak_channel_local_index": peak,
                "visual": bool(visual[c]),
                "opto_tagged": bool(opto_tagged[c]),
                "contamination_rate_hz": float(contamination[c] * base_rate[c]),
                "n_spikes": int(counts[c]),
            }
        )
    tuning_records = tuning.records(np.arange(n_clusters))
    for rec in unit_truth:
        rec["tuning"] = tuning_records[rec["cluster_id"]]

    # Kilosort-style files
    sort_dir = probe_dir / "sorting"
    sort_dir.mkdir(parents=True, exist_ok=True)
    _write_npy(sort_dir / "spike_times.npy", spike_times)
    _write_npy(sort_dir / "spike_clusters.npy", spike_clusters.astype(np.int32))
    _write_npy(sort_dir / "spike_templates.npy", spike_clusters.astype(np.int32))
    _write_npy(sort_dir / "amplitudes.npy", amplitudes)
    _write_npy(sort_dir / "templates.npy", templates32)
    _write_npy(sort_dir / "whitening_mat.npy", w)
    _write_npy(sort_dir / "whitening_mat_inv.npy", w_inv)
    _write_npy(sort_dir / "mean_waveforms.npy", mean_waveforms)
    _write_npy(sort_dir / "channel_map.npy", np.arange(n_ch, dtype=np.int32))
    _write_npy(sort_dir / "channel_positions.npy", pos)
    groups = ["good" if is_unit[c] else "noise" for c in range(n_clusters)]
    _write_text(sort_dir / "cluster_group.tsv", "cluster_id\tgroup\n" + "".join(f"{c}\t{g}\n" for c, g in enumerate(groups)))
    _write_text(
        sort_dir / "params.py",
        f"dat_path = 'continuous.dat'\nn_channels_dat = {n_ch}\ndtype = 'int16'\noffset = 0\n"
        f"sample_rate = {fs!r}\nhp_filtered = True\n",
    )

    # LFP, streamed
    lfp_path = None
    if p.write_lfp:
        lfp_path = probe_dir / f"probe_{probe_id}_lfp.h5"
        lfp_len = duration if p.lfp_duration_s is None else min(p.lfp_duration_s, duration)
        n_lfp = int(math.floor(lfp_len * p.lfp_sampling_rate_hz + 1e-9))
        chans = lfp_channel_indices(p)
        with contextlib.ExitStack() as stack:
            tmp = stack.enter_context(atomic_path(lfp_path))
            f = stack.enter_context(h5py.File(tmp, "w"))
            chunk_rows = max(1, min(n_lfp, 4096))
            data = f.create_dataset(
                "data",
                shape=(n_lfp, len(chans)),
                dtype=np.int16,
                chunks=(chunk_rows, len(chans)) if n_lfp else None,
                track_times=False,
            )
            ts = f.create_dataset(
                "timestamps", shape=(n_lfp,), dtype=np.float64, chunks=(chunk_rows,) if n_lfp else None, track_times=False
            )
            for a, b in iter_blocks(n_lfp, p.lfp_block_samples):
                data[a:b] = lfp_segment(p, seed=seed, probe_index=probe_index, start=a, stop=b)
                ts[a:b] = np.arange(a, b) / p.lfp_sampling_rate_hz
            data.attrs["conversion"] = p.amplitude_scale_factor
            data.attrs["unit"] = "volts"
            f.create_dataset("channels", data=chans.astype(np.int64), track_times=False)
            f.create_dataset("channel_ids", data=channel_ids[chans].astype(np.int64), track_times=False)
            f.attrs["sampling_rate_hz"] = p.lfp_sampling_rate_hz
            f.attrs["probe_id"] = int(probe_id)

    truth_path = write_h5_arrays(
        probe_dir / "truth.h5",
        {
            "cluster_ids": np.arange(n_clusters, dtype=np.int64),
            "unit_ids": np.asarray(unit_ids, dtype=np.int64),
            "unit_cluster_ids": unit_cluster_ids.astype(np.int64),
            "orphan_cluster_ids": orphan_ids.astype(np.int64),
            "template_amplitude": template_amplitude,
            "template_scale": scale,
            "unit_amplitude_uv": amp_uv,
            "unit_mean_amplitude_v": np.array(
                [spike_amp_v[spike_clusters == c].mean() if counts[c] else np.nan for c in range(n_clusters)]
            ),
            "spike_amplitudes_v": spike_amp_v,
            "cluster_spike_counts": counts.astype(np.int64),
            "baseline_rate_hz": base_rate,
            "visual": visual,
            "opto_tagged": opto_tagged,
            "contamination_rate_hz": contamination * base_rate,
            "amplitude_cutoff": cutoff,
            "peak_channel_local_index": peak_from_templates.astype(np.int64),
            "unit_position_um": unit_pos,
        },
        attrs={"probe_id": int(probe_id), "sampling_rate_hz": fs, "amplitude_scale_factor": p.amplitude_scale_factor},
    )
    probe = ProbeFiles(
        probe_id=int(probe_id),
        name=name,
        sorting_dir=sort_dir,
        lfp_path=lfp_path,
        sampling_rate_hz=float(fs),
        lfp_sampling_rate_hz=float(p.lfp_sampling_rate_hz),
        channels=channels,
        units=tuple(units),
        truth_path=truth_path,
        amplitude_scale_factor=float(p.amplitude_scale_factor),
    )
    summary = {
        "probe_id": int(probe_id),
        "name": name,
        "orphan_cluster_ids": orphan_ids.tolist(),
        "n_spikes": int(len(spike_times)),
        "units": unit_truth,
    }
    return probe, summary


#: Radius (cm) at which the mouse runs on the wheel: 2/3 of the 6.5 inch wheel's radius (as AllenSDK).
RUNNING_RADIUS_CM = 0.5 * (2.0 * 6.5 * 2.54 / 3.0)


def running_wheel_signals(timestamps: np.ndarray, speed_cm_s: np.ndarray, supply_v: float,
                          rng: np.random.Generator) -> pd.DataFrame:
    """The raw wheel signals behind a running-speed trace: per frame the rotation ``dx`` (radians) since the
    previous frame (``speed * dt / RUNNING_RADIUS_CM``; 0 on the first frame), the encoder's signal voltage
    ``vsig`` (V; the wheel angle as a fraction of a turn times the supply voltage) and the supply voltage ``vin``
    (V, with 1 mV noise)."""
    ts = np.asarray(timestamps, dtype=float)
    dt = np.diff(ts, prepend=ts[0] if len(ts) else 0.0)
    dx = np.asarray(speed_cm_s, dtype=float) * dt / RUNNING_RADIUS_CM
    vin = supply_v + 0.001 * rng.standard_normal(len(ts))
    angle = np.mod(np.cumsum(dx), 2 * math.pi)
    return pd.DataFrame({"timestamps": ts, "dx": dx, "vsig": angle / (2 * math.pi) * vin, "vin": vin})


def _stimulus_table(p: EcephysParams, stim_duration: float, rng: np.random.Generator) -> pd.DataFrame:
    """Flashes (``color`` -1/+1), the change-detection block of a linked behavior session (``behavior_block_s``,
    left empty here: its presentations are the behavior session's), then the Visual Coding blocks."""
    onsets = flash_onsets(p)
    design = dataclasses.replace(p.stimulus, lead_in_s=max(p.stimulus.lead_in_s, behavior_block(p)[1]))
    table = visual_stimulus_table(stim_duration, design=design, rng=rng, acquisition_rate_hz=MONITOR_RATE_HZ)
    if not len(onsets):
        return table
    stops = np.round((onsets + p.flash_duration_s) * MONITOR_RATE_HZ) / MONITOR_RATE_HZ
    start_frame, end_frame = frame_window(onsets, stops, MONITOR_RATE_HZ)
    n = len(onsets)
    flashes = {"start_time": onsets, "stop_time": stops, "stimulus_name": np.full(n, "flashes", dtype=object),
               "start_frame": start_frame, "end_frame": end_frame}
    columns = {c: np.concatenate([np.asarray(flashes[c]) if c in flashes else np.full(n, np.nan), table[c].to_numpy()])
               for c in table.columns}
    columns["color"] = np.concatenate([np.where(np.arange(n) % 2 == 0, -1.0, 1.0), np.full(len(table), np.nan)])
    return pd.DataFrame(columns)


def generate_ecephys_session(
    out_dir: str | Path,
    *,
    ecephys_session_id: int,
    probe_ids: tuple[int, ...] | list[int],
    channel_id_start: int,
    unit_id_start: int,
    params: EcephysParams = EcephysParams(),
    seed: int = 0,
    probe_names: tuple[str, ...] | None = None,
) -> EcephysSessionFiles:
    """Write a synthetic Neuropixels session under ``out_dir/ecephys_session_<id>/``.

    Channel ids are ``channel_id_start, channel_id_start + 1, ...`` and unit ids ``unit_id_start, ...``,
    consecutive across probes in ``probe_ids`` order. Probes are named ``probeA, probeB, ...`` unless
    ``probe_names`` is given.
    """
    p = params
    probe_ids = tuple(int(i) for i in probe_ids)
    if not probe_ids or len(set(probe_ids)) != len(probe_ids):
        raise ValueError(f"probe_ids must be a non-empty list of unique ids, got {probe_ids}")
    names = tuple(probe_names) if probe_names is not None else tuple(f"probe{chr(ord('A') + i)}" for i in range(len(probe_ids)))
    if len(names) != len(probe_ids):
        raise ValueError("probe_names must have one name per probe id")
    if p.n_units < 1 or p.n_channels < 2:
        raise ValueError("need at least one unit and two channels per probe")
    session_dir = Path(out_dir) / f"ecephys_session_{int(ecephys_session_id)}"
    session_dir.mkdir(parents=True, exist_ok=True)

    stim_duration = p.duration_s * (1.0 - p.optotagging_fraction)
    table = _stimulus_table(p, stim_duration, rng_for(seed, _K_SESSION, 1))
    opto = _optotagging_table(p, rng_for(seed, _K_SESSION, 2))
    run_ts, speed = running_speed(p.duration_s, p.running, rng_for(seed, _K_SESSION, 3))
    stim_path = write_csv(table, session_dir / "stimulus_table.csv")
    opto_path = write_csv(opto, session_dir / "optotagging_table.csv")
    run_path = write_csv(pd.DataFrame({"timestamps": run_ts, "speed": speed}), session_dir / "running_speed.csv")
    wheel_path = write_csv(running_wheel_signals(run_ts, speed, p.wheel_supply_v, rng_for(seed, _K_SESSION, 4)),
                           session_dir / "running_wheel.csv")

    probes = []
    summaries = []
    next_channel, next_unit = int(channel_id_start), int(unit_id_start)
    for index, (probe_id, name) in enumerate(zip(probe_ids, names)):
        channel_ids = next_channel + np.arange(p.n_channels, dtype=np.int64)
        unit_ids = next_unit + np.arange(p.n_units, dtype=np.int64)
        next_channel += p.n_channels
        next_unit += p.n_units
        probe_dir = session_dir / f"{name}_{probe_id}"
        probe_dir.mkdir(parents=True, exist_ok=True)
        probe, summary = _generate_probe(
            p,
            seed=seed,
            probe_index=index,
            probe_id=probe_id,
            name=name,
            channel_ids=channel_ids,
            unit_ids=unit_ids,
            probe_dir=probe_dir,
            table=table,
            opto=opto,
            run_ts=run_ts,
            speed=speed,
        )
        probes.append(probe)
        summaries.append(summary)
    truth = {
        "ecephys_session_id": int(ecephys_session_id),
        "session_type": p.session_type,
        "seed": int(seed),
        "duration_s": float(p.duration_s),
        "stimulus_end_s": float(stim_duration),
        "optotagging": {"levels": list(p.optotagging_levels), "n_trials": int(len(opto))},
        "running_threshold_cm_s": p.running.running_threshold_cm_s,
        "flashes": {"onsets_s": flash_onsets(p).tolist(), **csd_truth(p)},
        "behavior_block_s": list(behavior_block(p)),
        "probes": summaries,
    }
    truth_path = write_json(truth, session_dir / "truth.json")
    sync_path, eye_path = write_rig_files(session_dir, duration_s=p.duration_s, seed=seed)
    return EcephysSessionFiles(
        ecephys_session_id=int(ecephys_session_id),
        session_type=p.session_type,
        probes=tuple(probes),
        stimulus_table_path=stim_path,
        optotagging_table_path=opto_path,
        running_speed_path=run_path,
        running_wheel_path=wheel_path,
        truth_path=truth_path,
        duration_s=float(p.duration_s),
        sync_path=sync_path,
        eye_tracking_path=eye_path,
    )
