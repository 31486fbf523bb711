"""Spike detection, per-spike features and per-cell electrophysiology features.

Spikes (all current-clamp sweeps of a cell at once: positions index a virtual concatenation of the sweeps,
each followed by one very low separator sample, which is never built; each candidate's window of raw V is
copied once into one matrix, and every later step works on index arithmetic over that matrix, with no
per-sample loop; dV/dt is only computed in those windows, filtered along the matrix rows, and kept there):

* a spike is a local maximum of V at or above ``min_peak_mv``, at least ``min_height_mv`` above both
  its prominence base and its threshold, whose rise reaches ``dv_cutoff`` V/s (the largest dV/dt within ``max_rise_ms`` before
  the peak, after the previous spike's peak, is its *upstroke*);
* its threshold is one past the last sample before the upstroke where dV/dt is at most ``thresh_frac``
  of the upstroke (ipfx's refined threshold). The spike time is the threshold time;
* downstroke: the most negative dV/dt after the peak, before the next threshold (within ``max_fall_ms``);
  trough: the lowest V in the same window; width: full width at half the threshold-to-peak height, with
  linear interpolation between samples.

dV/dt is the forward difference in V/s of a zero-phase 4-pole Bessel low-pass of V (``filter_khz``,
20 kHz or 0.4 x the sampling rate if lower; ``None`` for the raw difference), as ipfx does: without it the
derivative's noise (7 V/s for 0.1 mV at 50 kHz) rivals 5 % of the upstroke. The filter moves the first
fast-rising sample one sample earlier, so at 50 kHz the threshold is the last sample before the fast
rise (ipfx's convention). Voltages (threshold, peak, trough, width) are read from the raw trace.

Cell features from long squares (sweeps that passed QC): ``vrest_mv`` (mean pre-stimulus baseline),
``rheobase_pa`` (smallest amplitude with a spike during the stimulus), ``input_resistance_mohm`` (slope
of the steady-state deflection, mean of the last 100 ms of the stimulus less the baseline, against the
amplitude over the subthreshold hyperpolarizing sweeps), ``tau_ms`` (mean over those sweeps of an
exponential fit from stimulus onset to the peak deflection), ``sag`` (of the most hyperpolarizing sweep:
(peak - steady) / (peak - baseline), peak from a 1 ms moving average), ``fi_slope_hz_per_pa`` (least-squares
slope of the rate over the stimulus against the amplitude, sweeps at or above rheobase),
``first_spike_latency_s`` at rheobase, the rheobase sweep's first-spike threshold, peak, upstroke,
downstroke and width, and on the *hero* sweep (the smallest amplitude 39-61 pA above rheobase, else the
sweep with most spikes) ``adaptation_index`` (mean of (ISI[n+1] - ISI[n]) / (ISI[n+1] + ISI[n])),
``mean_isi_s`` and ``hero_rate_hz``.

From short squares, the smallest amplitude that evokes a spike (``short_square_threshold_pa``); from the
ramp, the current injected at the first spike's threshold (``ramp_rheobase_pa``).
"""

from __future__ import annotations

import functools
from typing import Any, Optional, Sequence

import bottleneck as bn
import numpy as np
import pandas as pd
import pydantic
from scipy import signal

__all__ = ["SpikeParams", "detect_spikes", "fit_exponential_tau", "long_square_features", "short_square_features", "ramp_features",
           "SPIKE_COLUMNS"]

SPIKE_COLUMNS = [
    "sweep_number", "threshold_index", "threshold_t", "threshold_v", "peak_index", "peak_t", "peak_v",
    "upstroke", "downstroke", "trough_v", "width_ms",
]
_LOW = -1e4


class SpikeParams(pydantic.BaseModel):
    dv_cutoff: float = 20.0  # V/s
    thresh_frac: float = 0.05
    min_peak_mv: float = -30.0
    min_height_mv: float = 2.0
    max_rise_ms: float = 2.0
    max_fall_ms: float = 5.0
    filter_khz: Optional[float] = 20.0  # low-pass for dV/dt (capped at 0.4 x sampling rate); None: raw


@functools.lru_cache(maxsize=16)
def _bessel_sos(cutoff_hz: float, fs: float) -> np.ndarray:
    return signal.bessel(4, cutoff_hz, fs=fs, output="sos", norm="phase")


def _local_maxima(v: np.ndarray, min_peak: float, *, first_sample: bool) -> np.ndarray:
    """Samples at or above ``min_peak`` higher than the one before and not lower than the one after; beyond
    the sweep's ends lies the separator (below any voltage); ``first_sample=False``: the first sample of
    the whole concatenation, which has no sample before it, is never one."""
    high = np.flatnonzero(v >= min_peak)
    if not len(high):
        return high
    n = len(v)
    before = np.where(high > 0, v[np.maximum(high - 1, 0)], _LOW)
    after = np.where(high < n - 1, v[np.minimum(high + 1, n - 1)], _LOW)
    ok = (v[high] > before) & (v[high] >= after)
    if not first_sample:
        ok &= high > 0
    return high[ok]


def _prominences(v: np.ndarray, peaks: np.ndarray, wlen: int, *, separator_before: bool) -> np.ndarray:
    """scipy's prominences within ``wlen`` as in the concatenation: a window reaching past the sweep's end
    (or its start, when a sweep precedes it) meets the separator, which is then the base on that side."""
    reach = wlen // 2
    crosses = (peaks + reach > len(v) - 1) | ((peaks - reach < 0) if separator_before else False)
    out = np.empty(len(peaks))
    if (~crosses).any():
        out[~crosses] = signal.peak_prominences(v, peaks[~crosses], wlen=wlen)[0]
    if crosses.any():
        padded = np.concatenate([[_LOW], v, [_LOW]]) if separator_before else np.concatenate([v, [_LOW]])
        out[crosses] = signal.peak_prominences(padded, peaks[crosses] + int(separator_before), wlen=wlen)[0]
    return out


def _windows(v: np.ndarray, peaks: np.ndarray, cols: np.ndarray, out: np.ndarray) -> None:
    """V at ``peaks + cols`` into ``out`` (one row per peak): rows of a strided view of the sweep
    (contiguous copies); windows crossing the sweep's edge repeat its first/last sample."""
    n, width = len(v), len(cols)
    lo = peaks + cols[0]
    inside = (lo >= 0) & (peaks + cols[-1] <= n - 1)
    if n >= width:
        out[...] = np.lib.stride_tricks.sliding_window_view(v, width)[np.clip(lo, 0, n - width)]
    else:
        inside = np.zeros(len(peaks), dtype=bool)
    if not inside.all():
        out[~inside] = v[np.clip(peaks[~inside][:, None] + cols, 0, n - 1)]


def _sosfiltfilt_rows(sos: np.ndarray, ext: np.ndarray, edge: int) -> np.ndarray:
    """``scipy.signal.sosfiltfilt(sos, x, axis=1)`` (odd padding, default length) of the rows ``x`` that
    sit in ``ext[:, edge:-edge]``: the padding is written around them in place instead of into a new
    array; the same arithmetic as scipy's, step for step."""
    x = ext[:, edge:-edge]
    ext[:, :edge] = 2 * x[:, :1] - x[:, edge:0:-1]
    ext[:, -edge:] = 2 * x[:, -1:] - x[:, -2 : -(edge + 2) : -1]
    zi = signal.sosfilt_zi(sos).reshape(len(sos), 1, 2)
    y, _ = signal.sosfilt(sos, ext, axis=1, zi=zi * ext[:, :1])
    y, _ = signal.sosfilt(sos, y[:, ::-1], axis=1, zi=zi * y[:, -1:])
    return y[:, ::-1][:, edge:-edge]


def detect_spikes(
    voltages: Sequence[np.ndarray], rate_hz: float, sweep_numbers: Sequence[int], params: SpikeParams = SpikeParams()
) -> pd.DataFrame:
    """Spikes of every sweep (mV arrays at ``rate_hz``) as one table (columns :data:`SPIKE_COLUMNS`);
    indices and times are relative to each sweep's first sample."""
    if not len(voltages):
        return pd.DataFrame({c: pd.Series(dtype=float) for c in SPIKE_COLUMNS})
    fs = float(rate_hz)
    rise = max(int(round(params.max_rise_ms * 1e-3 * fs)), 2)
    fall = max(int(round(params.max_fall_ms * 1e-3 * fs)), 2)
    # positions are indices into a virtual concatenation of the sweeps, each followed by one separator
    # sample below any voltage; the sweeps themselves are never copied into it
    lengths = np.array([len(v) for v in voltages], dtype=np.int64)
    row_start = np.concatenate([[0], np.cumsum(lengths + 1)[:-1]]).astype(np.int64)
    row_end = row_start + lengths  # exclusive
    total = int(row_end[-1]) + 1

    # dV/dt only around the candidates: each one's window (plus a margin for the filter's transients) is
    # gathered into one matrix, low-passed along its rows and differenced; it stays in that matrix (row: the
    # candidate, column: the offset from its peak), so no trace-length dV/dt is ever made
    cutoff_hz = None if params.filter_khz is None else min(params.filter_khz * 1e3, 0.4 * fs)
    pad = 0 if cutoff_hz is None else max(32, 8 * int(np.ceil(fs / cutoff_hz)))
    cols = np.arange(-rise - 1 - pad, fall + 2 + pad)
    width = len(cols)

    # candidate peaks: local maxima at or above min_peak_mv, prominent by min_height_mv within their spike window
    found, sweeps = [], []
    for i, v in enumerate(voltages):
        v = np.asarray(v, dtype=np.float64)
        if not len(v):
            continue
        if np.isnan(v.min()):  # a reduction finds NaN without a mask of the whole sweep
            v = np.where(np.isnan(v), _LOW, v)
        p = _local_maxima(v, params.min_peak_mv, first_sample=i > 0)
        if len(p):
            p = p[_prominences(v, p, 2 * (rise + fall) + 1, separator_before=i > 0) >= params.min_height_mv]
        if len(p):
            sweeps.append((v, p))
            found.append(p + row_start[i])
    peaks = np.concatenate(found) if found else np.empty(0, dtype=np.int64)
    row = np.searchsorted(row_start, peaks, side="right") - 1
    # the windows go straight into the middle of the filter's padded input (scipy's default odd padding)
    sos = None if cutoff_hz is None else _bessel_sos(cutoff_hz, fs).copy()
    margin = 0 if sos is None else 3 * (2 * len(sos) + 1 - min(int((sos[:, 2] == 0).sum()), int((sos[:, 5] == 0).sum())))
    ext = np.empty((len(peaks), width + 2 * margin))
    raw = ext[:, margin : margin + width]
    at_row = 0
    for v, p in sweeps:
        _windows(v, p, cols, raw[at_row : at_row + len(p)])
        at_row += len(p)
    edge = (peaks + cols[0] < row_start[row]) | (peaks + cols[-1] >= row_end[row])
    local = raw
    if sos is not None and len(peaks):
        local = _sosfiltfilt_rows(sos, ext, margin)
    # dv (difference of the filtered window, V/s) with ``rise`` unused columns in front, so that windows
    # reaching back before a spike's first column stay rectangular slices (those samples are masked)
    dv_ext = np.zeros((len(peaks), rise + width - 1))
    dv = dv_ext[:, rise:]
    np.subtract(local[:, 1:], local[:, :-1], out=dv)
    dv *= fs * 1e-3
    if edge.any():  # a forward difference needs its next sample inside the sweep: 0 at the sweep's end
        past = (peaks[edge][:, None] + cols[None, :-1]) >= row_end[row][edge][:, None] - 1
        rows = np.flatnonzero(edge)
        block = dv[rows]
        block[past] = 0.0
        dv[rows] = block
    c0 = -int(cols[0])  # the peak's column in raw and dv; a window of offsets [a, b) is the slice [c0 + a, c0 + b)
    cand = np.arange(len(peaks))  # each surviving spike's row in raw and dv

    def bounds(peaks, row):
        prev = np.concatenate([[-1], peaks[:-1]])[: len(peaks)]  # no candidate: nothing before it either
        return np.maximum.reduce([peaks - rise, row_start[row], prev + 1])

    lo = bounds(peaks, row)
    win = peaks[:, None] - rise + np.arange(rise)
    ok = win >= lo[:, None]
    vals = np.where(ok, dv[:, c0 - rise : c0], -np.inf)
    r = np.arange(len(peaks))
    up_idx = win[r, vals.argmax(axis=1)] if len(peaks) else np.empty(0, int)
    upstroke = vals.max(axis=1) if len(peaks) else np.empty(0)
    keep = upstroke >= params.dv_cutoff
    peaks, row, lo, up_idx, upstroke, cand = peaks[keep], row[keep], lo[keep], up_idx[keep], upstroke[keep], cand[keep]
    r = np.arange(len(peaks))

    back = up_idx[:, None] - rise + 1 + np.arange(rise)
    back_dv = np.lib.stride_tricks.sliding_window_view(dv_ext, rise, axis=1)[cand, up_idx - peaks - rise + 1 - cols[0] + rise]
    below = (back >= lo[:, None]) & (back_dv <= params.thresh_frac * upstroke[:, None])
    has = below.any(axis=1)
    last = rise - 1 - below[:, ::-1].argmax(axis=1) if len(peaks) else np.empty(0, int)
    thr = np.where(has, back[r, last] + 1, lo)

    def at(idx: np.ndarray) -> np.ndarray:
        """V at one sample per spike, within its window."""
        return raw[cand, idx - peaks + c0]

    tall = raw[cand, c0] - at(thr) >= params.min_height_mv  # ipfx's minimum threshold-to-peak height
    peaks, row, lo, up_idx, upstroke, thr, cand = peaks[tall], row[tall], lo[tall], up_idx[tall], upstroke[tall], thr[tall], cand[tall]
    r = np.arange(len(peaks))

    nxt = np.concatenate([thr[1:], [total]])[: len(peaks)]
    same_row_next = np.concatenate([row[1:] == row[:-1], [False]])[: len(peaks)]
    hi = np.minimum.reduce([peaks + fall, row_end[row], np.where(same_row_next, nxt, total)])
    inside = np.arange(fall)[None, :] < (hi - peaks)[:, None]  # offsets [0, fall) from the peak before hi
    v_fwd = raw[cand, c0 : c0 + fall]
    downstroke = np.minimum.reduce(dv[cand, c0 : c0 + fall], axis=1, where=inside, initial=np.inf)
    trough = np.minimum.reduce(v_fwd, axis=1, where=inside, initial=np.inf)

    thr_v, peak_v = at(thr), raw[cand, c0]
    half = thr_v + 0.5 * (peak_v - thr_v)
    # rising crossing: last sample below half before the peak (within the rise window)
    rw = peaks[:, None] - rise + np.arange(rise + 1)
    rbelow = (rw >= thr[:, None]) & (raw[cand, c0 - rise : c0 + 1] < half[:, None])
    k = rw[r, rise - rbelow[:, ::-1].argmax(axis=1)] if len(peaks) else np.empty(0, int)
    t_rise = k + (half - at(k)) / (at(k + 1) - at(k))
    t_rise = np.where(rbelow.any(axis=1), t_rise, np.nan)
    fbelow = inside & (v_fwd < half[:, None])
    k2 = peaks + fbelow.argmax(axis=1) if len(peaks) else np.empty(0, int)
    t_fall = (k2 - 1) + (at(k2 - 1) - half) / (at(k2 - 1) - at(k2))
    t_fall = np.where(fbelow.any(axis=1), t_fall, np.nan)

    base = row_start[row]
    numbers = np.asarray(sweep_numbers)[row]
    return pd.DataFrame(
        {
            "sweep_number": numbers.astype(np.int64),
            "threshold_index": (thr - base).astype(np.int64),
            "threshold_t": (thr - base) / fs,
            "threshold_v": thr_v,
            "peak_index": (peaks - base).astype(np.int64),
            "peak_t": (peaks - base) / fs,
            "peak_v": peak_v,
            "upstroke": upstroke,
            "downstroke": downstroke,
            "trough_v": trough,
            "width_ms": (t_fall - t_rise) / fs * 1e3,
        },
        columns=SPIKE_COLUMNS,
    )


def _sse(tb: np.ndarray, Yb: np.ndarray, Mb: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """Residual sum of squares of the best ``a + b exp(-t / tau)`` per sweep (rows) and tau (columns)."""
    if taus.strides[0] == 0:  # the same taus for every sweep: one exponential per tau
        E = np.exp(-tb[None, None, :] / taus[:1, :, None]) * Mb[:, None, :]
    else:
        E = np.exp(-tb[None, None, :] / taus[:, :, None]) * Mb[:, None, :]
    n = Mb.sum(axis=1)[:, None]
    se, see = E.sum(axis=2), (E * E).sum(axis=2)
    sy = (Mb * Yb).sum(axis=1)[:, None]
    syy = (Mb * Yb * Yb).sum(axis=1)[:, None]
    sey = (E * Yb[:, None, :]).sum(axis=2)
    det = n * see - se * se
    with np.errstate(divide="ignore", invalid="ignore"):
        a = (see * sy - se * sey) / det
        b = (n * sey - se * sy) / det
        out = syy - a * sy - b * sey
    return np.where(np.isfinite(out), out, np.inf)


def fit_exponential_tau(segments: Sequence[np.ndarray], rate_hz: float, *, max_points: int = 2000) -> np.ndarray:
    """Time constant (s) of ``a + b exp(-t / tau)`` fitted to each segment (least squares, all segments
    together by variable projection over a refined log grid of tau). Segments are averaged in blocks of
    equal length first, which leaves an exponential's time constant unchanged. NaN when the best tau
    lies at the edge of the searchable range (shorter than a sample or longer than 100 segments)."""
    if not len(segments):
        return np.empty(0)
    longest = max(len(s) for s in segments)
    block = max(1, int(np.ceil(longest / max_points)))
    nb = int(np.ceil(longest / block))
    Y = np.full((len(segments), nb * block), np.nan)
    for i, s in enumerate(segments):
        Y[i, : len(s)] = s
    Yr = Y.reshape(len(segments), nb, block)
    counts = np.isfinite(Yr).sum(axis=2)
    Mb = (counts == block).astype(float)  # only complete blocks
    Yb = np.where(Mb > 0, np.nansum(Yr, axis=2) / np.maximum(counts, 1), 0.0)
    tb = (np.arange(nb) * block + (block - 1) / 2.0) / rate_hz
    lo, hi = 1.0 / rate_hz, 100.0 * longest / rate_hz
    grid = np.exp(np.linspace(np.log(lo), np.log(hi), 96))
    taus = np.broadcast_to(grid, (len(segments), len(grid)))
    step = np.log(grid[1] / grid[0])
    best = taus[np.arange(len(segments)), _sse(tb, Yb, Mb, taus).argmin(axis=1)]
    at_edge = (best <= grid[0]) | (best >= grid[-1])
    for _ in range(4):
        local = best[:, None] * np.exp(np.linspace(-step, step, 21))[None, :]
        best = local[np.arange(len(segments)), _sse(tb, Yb, Mb, local).argmin(axis=1)]
        step /= 10.0
    return np.where(at_edge | (Mb.sum(axis=1) < 4), np.nan, best)


def _fit_line(x: np.ndarray, y: np.ndarray) -> Optional[float]:
    if len(x) < 2 or np.ptp(x) == 0:
        return None
    return float(np.polyfit(x, y, 1)[0])


def long_square_features(
    voltages: Sequence[np.ndarray],
    rate_hz: float,
    sweep_numbers: Sequence[int],
    amplitudes_pa: Sequence[float],
    stim_windows: Sequence[tuple[int, int]],
    spikes: pd.DataFrame,
) -> dict[str, Any]:
    """Cell features from long-square sweeps (see the module docstring); ``stim_windows`` are sample
    ``[start, end)`` pairs; ``spikes`` as :func:`detect_spikes` returns for these sweeps."""
    fs = float(rate_hz)
    n = len(voltages)
    out: dict[str, Any] = {"n_long_square_sweeps": n}
    keys = [
        "vrest_mv", "rheobase_pa", "rheobase_sweep_number", "input_resistance_mohm", "tau_ms", "sag",
        "fi_slope_hz_per_pa", "first_spike_latency_s", "threshold_v_mv", "peak_v_mv", "upstroke_v_per_s",
        "downstroke_v_per_s", "width_ms", "hero_sweep_number", "adaptation_index", "mean_isi_s", "hero_rate_hz",
    ]
    out.update({k: None for k in keys})
    if n == 0:
        return out
    amps = np.asarray(amplitudes_pa, dtype=float)
    numbers = np.asarray(sweep_numbers)
    on = np.array([w[0] for w in stim_windows])
    off = np.array([w[1] for w in stim_windows])
    w100 = int(round(0.1 * fs))
    baseline = np.array([np.nanmean(v[max(0, a - w100) : a]) if a > 0 else np.nan for v, a in zip(voltages, on)])
    steady = np.array([np.nanmean(v[max(a, b - w100) : b]) for v, a, b in zip(voltages, on, off)])
    keep = (spikes["threshold_index"].to_numpy() >= 0) & np.isin(spikes["sweep_number"].to_numpy(), numbers)
    col = {c: spikes[c].to_numpy()[keep] for c in ("sweep_number", "threshold_index", "threshold_v", "peak_v", "upstroke",
                                                     "downstroke", "width_ms")}
    counts = np.zeros(n, dtype=int)
    first_t = np.full(n, np.nan)
    order = np.argsort(numbers, kind="stable")
    if len(col["sweep_number"]):
        si = order[np.searchsorted(numbers[order], col["sweep_number"])]
        ti = col["threshold_index"]
        inside = (ti >= on[si]) & (ti < off[si])
        counts = np.bincount(si[inside], minlength=n)
        first_idx = np.full(n, np.iinfo(np.int64).max)
        np.minimum.at(first_idx, si[inside], ti[inside])
        has_first = counts > 0
        first_t[has_first] = (first_idx[has_first] - on[has_first]) / fs
    durations = (off - on) / fs
    rates = counts / durations
    out["vrest_mv"] = float(np.nanmean(baseline)) if np.isfinite(baseline).any() else None

    sub = np.flatnonzero((counts == 0) & (amps < 0))
    if len(sub):
        deflection = steady[sub] - baseline[sub]
        slope = _fit_line(amps[sub], deflection)
        if slope is None:
            slope = float(np.mean(deflection / amps[sub]))
        out["input_resistance_mohm"] = slope * 1e3
        ends = []
        segs = []
        for i in sub:
            v = voltages[i][on[i] : off[i]]
            smooth = bn.move_mean(v, window=max(int(round(0.001 * fs)), 1), min_count=1)
            ends.append(int(np.nanargmin(smooth)) + 1)
            segs.append(v[: ends[-1]])
        taus = fit_exponential_tau(segs, fs)
        if np.isfinite(taus).any():
            out["tau_ms"] = float(np.nanmean(taus) * 1e3)
        k = sub[np.argmin(amps[sub])]
        v = voltages[k][on[k] : off[k]]
        smooth = bn.move_mean(v, window=max(int(round(0.001 * fs)), 1), min_count=1)
        peak = float(np.nanmin(smooth))
        if peak != baseline[k]:
            out["sag"] = float((peak - steady[k]) / (peak - baseline[k]))

    spiking = np.flatnonzero(counts > 0)
    if len(spiking):
        rb = spiking[np.argmin(amps[spiking])]
        out["rheobase_pa"] = float(amps[rb])
        out["rheobase_sweep_number"] = int(numbers[rb])
        out["first_spike_latency_s"] = float(first_t[rb])
        candidates = np.flatnonzero((col["sweep_number"] == numbers[rb]) & (col["threshold_index"] >= on[rb]))
        j = candidates[np.argmin(col["threshold_index"][candidates])]
        out.update(
            threshold_v_mv=float(col["threshold_v"][j]), peak_v_mv=float(col["peak_v"][j]),
            upstroke_v_per_s=float(col["upstroke"][j]), downstroke_v_per_s=float(col["downstroke"][j]),
            width_ms=float(col["width_ms"][j]) if np.isfinite(col["width_ms"][j]) else None,
        )
        above = np.flatnonzero(amps >= amps[rb])
        out["fi_slope_hz_per_pa"] = _fit_line(amps[above], rates[above])
        hero_candidates = np.flatnonzero((amps >= amps[rb] + 39) & (amps <= amps[rb] + 61) & (counts > 0))
        hero = hero_candidates[np.argmin(amps[hero_candidates])] if len(hero_candidates) else spiking[np.argmax(counts[spiking])]
        out["hero_sweep_number"] = int(numbers[hero])
        out["hero_rate_hz"] = float(rates[hero])
        t = np.sort(col["threshold_index"][col["sweep_number"] == numbers[hero]])
        t = t[(t >= on[hero]) & (t < off[hero])] / fs
        isi = np.diff(t)
        if len(isi) >= 1:
            out["mean_isi_s"] = float(isi.mean())
        if len(isi) >= 2:
            out["adaptation_index"] = float(np.mean(np.diff(isi) / (isi[1:] + isi[:-1])))
    return out


def short_square_features(amplitudes_pa: Sequence[float], sweep_numbers: Sequence[int], spike_counts: Sequence[int]) -> dict[str, Any]:
    """Threshold current from short squares (sweeps that passed QC): ``short_square_threshold_pa``, the
    smallest depolarizing amplitude that evoked a spike, with its sweep, and
    ``short_square_max_subthreshold_pa``, the largest amplitude below it that did not (the threshold of
    the cell's charging lies between the two)."""
    amps = np.asarray(amplitudes_pa, dtype=float)
    numbers = np.asarray(sweep_numbers)
    counts = np.asarray(spike_counts, dtype=int)
    out: dict[str, Any] = {"n_short_square_sweeps": int(len(amps)), "short_square_threshold_pa": None,
                           "short_square_threshold_sweep_number": None, "short_square_max_subthreshold_pa": None}
    spiking = np.flatnonzero((counts > 0) & (amps > 0))
    if len(spiking):
        k = spiking[np.argmin(amps[spiking])]
        out["short_square_threshold_pa"] = float(amps[k])
        out["short_square_threshold_sweep_number"] = int(numbers[k])
        below = np.flatnonzero((counts == 0) & (amps > 0) & (amps < amps[k]))
        if len(below):
            out["short_square_max_subthreshold_pa"] = float(amps[below].max())
    return out


def ramp_features(
    stimuli: Sequence[np.ndarray],
    rate_hz: float,
    sweep_numbers: Sequence[int],
    stim_starts: Sequence[int],
    spikes: pd.DataFrame,
) -> dict[str, Any]:
    """Ramp rheobase (sweeps that passed QC, pA stimuli relative to their first sample): on the first ramp
    sweep with a spike after the ramp's start, ``ramp_rheobase_pa`` is the injected current at its first
    spike's threshold sample and ``ramp_first_spike_latency_s`` the time from the ramp's start."""
    out: dict[str, Any] = {"n_ramp_sweeps": int(len(stimuli)), "ramp_sweep_number": None, "ramp_rheobase_pa": None,
                           "ramp_first_spike_latency_s": None}
    numbers = spikes["sweep_number"].to_numpy()
    thresholds = spikes["threshold_index"].to_numpy()
    for stimulus, number, start in sorted(zip(stimuli, sweep_numbers, stim_starts), key=lambda x: x[1]):
        mine = thresholds[(numbers == number) & (thresholds >= start)]
        if len(mine) and len(stimulus):
            first = int(mine.min())
            out.update(ramp_sweep_number=int(number), ramp_rheobase_pa=float(stimulus[first] - stimulus[0]),
                       ramp_first_spike_latency_s=(first - int(start)) / float(rate_hz))
            break
    return out
