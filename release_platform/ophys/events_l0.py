"""L0 event detection on dF/F traces (the ``l0`` event detector).

What it computes, per ROI (the semantics of the Allen ``event_detection`` stage of ophys_etl):

1. Noise: ``noise_std`` = robust standard deviation of the dF/F after subtracting a running median of
   ``noise_median_filter_s`` (1 s; edges padded with the edge value): residuals at or above 1.5 |min residual|
   are dropped (positive transients), the 1.4826 x MAD standard deviation s1 is taken, residuals with
   |r| >= 2.5 s1 are dropped and the 1.4826 x MAD of the rest is the noise.
2. Detrending: the running median over ``trace_median_filter_s`` (3.2 s), clipped from above at
   2.5 ``noise_std``, is subtracted from the trace.
3. Calcium model: AR(1), ``c_t = gamma c_{t-1}`` between events, with ``gamma = exp(-1 / (decay_time_s *
   frame_rate_hz))``. The decay time comes from the specimen's full genotype (:data:`DECAY_TIME_BY_GENOTYPE`),
   else from the indicator named in the genotype (:data:`DECAY_TIME_BY_INDICATOR`), else ``decay_time_s``,
   else :data:`DEFAULT_DECAY_TIME_S`; an explicit ``decay_time_s`` wins over the indicator table but, as in
   ophys_etl, not over a known full genotype.
4. L0 deconvolution (Jewell & Witten 2018, "Exact spike train inference via l0 optimization"): the exact
   minimiser of ``0.5 sum_t (y_t - c_t)^2 + lambda * #{t : c_t != gamma c_{t-1}}`` by dynamic programming over
   the last change point (:func:`l0_deconvolve`). An event's magnitude is the jump ``c_t - gamma c_{t-1}`` at
   the change point; only positive jumps are events.
5. Penalty per ROI: the bracketing search of ophys_etl (:func:`penalty_search`): the smallest penalty on a
   grid refined from 0.1 to 1e-4 at which the smallest event is at least ``noise_multiplier x noise_std``
   (2.0 at ~31 Hz, 2.6 at ~11 Hz; other frame rates need an explicit ``noise_multiplier``).

Solver
------
For a segment of n frames starting after change point tau the best fit is ``c = a gamma^k`` with
``a = sum_k y_{tau+1+k} gamma^k / sum_k gamma^{2k}``, so the optimal cost up to frame s is
``F(s) = min_tau F(tau) + lambda + D(tau, s)``. Once ``gamma^K`` is below ``tolerance`` a candidate's cost
differs from ``Q(s) = 0.5 sum y^2`` by a constant, so only the best of those "saturated" candidates is
kept and the exact recursion runs over a window of K = log(tolerance) / log(gamma) candidates
(K = 199 for GCaMP6f at 31 Hz): O(T K) per ROI at most. The compiled solver (numba, one ROI at a time)
also prunes candidates that can never be optimal again (PELT pruning, exact: Jewell & Witten 2018,
section 3), which leaves a few tens of candidates per frame on typical traces; the numpy solver runs the
unpruned window vectorised over all ROIs and is the reference it is tested against (same events). The constrained
variant of FastLZeroSpikeInference (non-negative jumps and a calcium floor) is not imposed; negative
jumps are dropped from the events, as ophys_etl drops them from its ``pos_spike_mag``.
"""

from __future__ import annotations

import math
import re
from typing import Any, Generator, Mapping

import bottleneck as bn
import numba
import numpy as np

from release_platform.errors import InputError
from release_platform.ophys.events import EventResult, register_event_detector

NAME = "l0"

#: Characteristic (1/e) decay time of the indicator in seconds by full genotype (Allen measurements,
#: as tabulated by ophys_etl's event detection).
DECAY_TIME_BY_GENOTYPE: dict[str, float] = {
    "Slc17a7-IRES2-Cre/wt;Camk2a-tTA/wt;Ai93(TITL-GCaMP6f)/wt": 0.347,
    "Rbp4-Cre_KL100/wt;Camk2a-tTA/wt;Ai93(TITL-GCaMP6f)/Ai93(TITL-GCaMP6f)": 0.495,
    "Sst-IRES-Cre/wt;Ai148(TIT2L-GC6f-ICL-tTA2)/wt": 0.464,
    "Emx1-IRES-Cre/wt;Camk2a-tTA/wt;Ai93(TITL-GCaMP6f)/wt": 0.317,
    "Rorb-IRES2-Cre/wt;Camk2a-tTA/wt;Ai93(TITL-GCaMP6f)/Ai93(TITL-GCaMP6f)": 0.463,
    "Cux2-CreERT2/wt;Camk2a-tTA/wt;Ai93(TITL-GCaMP6f)/Ai93(TITL-GCaMP6f)": 0.375,
    "Rbp4-Cre_KL100/wt;Camk2a-tTA/wt;Ai93(TITL-GCaMP6f)/wt": 0.404,
    "Pvalb-IRES-Cre/wt;Ai162(TIT2L-GC6s-ICL-tTA2)/wt": 0.715,
    "Cux2-CreERT2/Cux2-CreERT2;Camk2a-tTA/wt;Ai93(TITL-GCaMP6f)/Ai93(TITL-GCaMP6f)": 0.375,
    "Vip-IRES-Cre/wt;Ai148(TIT2L-GC6f-ICL-tTA2)/wt": 0.52,
    "Ntsr1-Cre_GN220/wt;Ai148(TIT2L-GC6f-ICL-tTA2)/wt": 0.378,
    "Rorb-IRES2-Cre/wt;Camk2a-tTA/wt;Ai93(TITL-GCaMP6f)/wt": 0.346,
    "Nr5a1-Cre/wt;Camk2a-tTA/wt;Ai93(TITL-GCaMP6f)/Ai93(TITL-GCaMP6f)": 0.491,
    "Fezf2-CreER/wt;Ai148(TIT2L-GC6f-ICL-tTA2)/wt": 0.433,
    "Cux2-CreERT2/wt;Camk2a-tTA/wt;Ai93(TITL-GCaMP6f)/wt": 0.317,
    "Nr5a1-Cre/wt;Camk2a-tTA/wt;Ai93(TITL-GCaMP6f)/wt": 0.349,
    "Tlx3-Cre_PL56/wt;Ai148(TIT2L-GC6f-ICL-tTA2)/wt": 0.376,
    "Scnn1a-Tg3-Cre/wt;Camk2a-tTA/wt;Ai93(TITL-GCaMP6f)/wt": 0.349,
    "Scnn1a-Tg3-Cre/wt;Camk2a-tTA/wt;Ai93(TITL-GCaMP6f)/Ai93(TITL-GCaMP6f)": 0.462,
    "Emx1-IRES-Cre/wt;Camk2a-tTA/wt;Ai93(TITL-GCaMP6f)-hyg/wt": 0.309,
    "Emx1-IRES-Cre/wt;Camk2a-tTA/wt;Ai93(TITL-GCaMP6f)/Ai93(TITL-GCaMP6f)": 0.365,
    "Slc17a7-IRES2-Cre/wt;Camk2a-tTA/wt;Ai94(TITL-GCaMP6s)/wt": 0.738,
}

#: Decay time (s) by indicator, for genotypes outside the table: the median of the table's genotypes
#: carrying that indicator (GCaMP6f, GCaMP6s), otherwise the value ophys_etl uses for it.
DECAY_TIME_BY_INDICATOR: dict[str, float] = {
    "GCaMP6f": 0.376,
    "GCaMP6s": 0.727,
    "GCaMP7f": 0.715,
    "GCaMP7s": 0.715,
    "jGCaMP8m": 0.4,
    "jGCaMP8s": 0.7,
}
#: Used when neither the genotype nor the indicator is known (GCaMP6f, the platform's usual indicator).
DEFAULT_DECAY_TIME_S = DECAY_TIME_BY_INDICATOR["GCaMP6f"]

#: Reporter-name patterns -> indicator (``Ai93(TITL-GCaMP6f)``, ``Ai148(TIT2L-GC6f-...)``, ``...jGCaMP8s...``).
_INDICATOR_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"jGCaMP8s", "jGCaMP8s"),
    (r"jGCaMP8m", "jGCaMP8m"),
    (r"GCaMP7s|GC7s", "GCaMP7s"),
    (r"GCaMP7f|GC7f", "GCaMP7f"),
    (r"GCaMP6s|GC6s", "GCaMP6s"),
    (r"GCaMP6f|GC6f", "GCaMP6f"),
)

#: Noise multiplier by nominal frame rate (ophys_etl: found empirically; 11 Hz vs 31 Hz).
NOISE_MULTIPLIER_BY_RATE: dict[float, float] = {11.0: 2.6, 31.0: 2.0}

NOISE_MEDIAN_FILTER_S = 1.0
TRACE_MEDIAN_FILTER_S = 3.2
#: Relative weight gamma^K below which a candidate segment start counts as saturated (see the module docstring).
SATURATION_TOLERANCE = 1e-8
#: The penalty grid of the search: first step, smallest step.
PENALTY_STEP = 0.1
PENALTY_STEP_MIN = 1e-4
#: A search that needs more solver runs than this for one ROI is a bug or pathological input.
MAX_SEARCH_EVALUATIONS = 2000

_GAUSSIAN_MAD = 1.4826


# ----------------------------------------------------------------------------------------------
# parameters


def indicator_from_genotype(full_genotype: str | None) -> str | None:
    """The calcium indicator named in a genotype string (``GCaMP6f``, ``GCaMP6s``, ...), None if none is."""
    if not full_genotype:
        return None
    for pattern, name in _INDICATOR_PATTERNS:
        if re.search(pattern, full_genotype):
            return name
    return None


def resolve_decay_time(full_genotype: str | None = None, decay_time_s: float | None = None,
                       indicator: str | None = None) -> tuple[float, str]:
    """(decay time in s, where it came from): genotype table > explicit value > indicator table > default."""
    if full_genotype and full_genotype in DECAY_TIME_BY_GENOTYPE:
        return DECAY_TIME_BY_GENOTYPE[full_genotype], "genotype"
    if decay_time_s is not None:
        value = float(decay_time_s)
        if not math.isfinite(value) or value <= 0:
            raise InputError(f"decay_time_s must be positive and finite, got {decay_time_s!r}")
        return value, "parameter"
    name = indicator or indicator_from_genotype(full_genotype)
    if name is not None:
        if name not in DECAY_TIME_BY_INDICATOR:
            known = ", ".join(sorted(DECAY_TIME_BY_INDICATOR))
            raise InputError(f"no decay time for indicator {name!r}; known: {known} (or give decay_time_s)")
        return DECAY_TIME_BY_INDICATOR[name], f"indicator {name}"
    return DEFAULT_DECAY_TIME_S, "default"


def gamma_from_decay(decay_time_s: float, frame_rate_hz: float) -> float:
    """AR(1) attenuation per frame, ``exp(-1 / (decay_time_s * frame_rate_hz))``."""
    return float(np.exp(-1.0 / (decay_time_s * frame_rate_hz)))


def default_noise_multiplier(frame_rate_hz: float) -> float:
    """2.0 for frame rates that round to 31 Hz, 2.6 for ~11 Hz; other rates need an explicit value."""
    for nominal, value in NOISE_MULTIPLIER_BY_RATE.items():
        if round(frame_rate_hz / nominal) == 1:
            return value
    raise InputError(
        f"no default noise_multiplier for a frame rate of {frame_rate_hz} Hz (defaults exist near 11 Hz and "
        "31 Hz); give noise_multiplier explicitly"
    )


# ----------------------------------------------------------------------------------------------
# noise and detrending


def _median_filter_nearest(x: np.ndarray, size: int) -> np.ndarray:
    """Running median of each row over ``size`` frames, edges padded with the edge value (scipy
    ``median_filter(mode="nearest")`` alignment, also for even sizes)."""
    if size <= 1:
        return x.copy()
    left = size // 2
    padded = np.pad(x, ((0, 0), (left, size - 1 - left)), mode="edge")
    return bn.move_median(padded, size, axis=1)[:, size - 1:]


def _mad_std(values: np.ndarray) -> float:
    if values.size == 0:
        return float("nan")
    return float(_GAUSSIAN_MAD * np.median(np.abs(values - np.median(values))))


def noise_and_detrend(dff: np.ndarray, noise_filter_frames: int, trace_filter_frames: int
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(detrended traces, noise std) of N x T finite traces (steps 1 and 2 of the module docstring)."""
    x = np.asarray(dff, dtype=np.float64)
    residual = x - _median_filter_nearest(x, noise_filter_frames)
    sigmas = np.empty(x.shape[0])
    for i, row in enumerate(residual):
        kept = row[row < 1.5 * abs(row.min())]
        first = _mad_std(kept)
        sigmas[i] = _mad_std(kept[np.abs(kept) < 2.5 * first])
    trend = np.minimum(_median_filter_nearest(x, trace_filter_frames), 2.5 * sigmas[:, None])
    return x - trend, sigmas


# ----------------------------------------------------------------------------------------------
# the exact L0 solver


def saturation_window(gamma: float, n_frames: int, tolerance: float = SATURATION_TOLERANCE) -> int:
    """Number of candidate segment starts kept exactly (the rest are saturated); at most ``n_frames``."""
    if gamma <= 0:
        return 1
    if gamma >= 1:
        return max(int(n_frames), 1)
    return int(min(max(math.ceil(math.log(tolerance) / math.log(gamma)), 1), max(n_frames, 1)))


SOLVERS = ("compiled", "numpy")


def l0_deconvolve(traces: np.ndarray, gamma: float, penalty: Any,
                  tolerance: float = SATURATION_TOLERANCE, *, solver: str = "compiled") -> np.ndarray:
    """Event magnitudes (N x T) of the L0-penalised AR(1) fit of each row of ``traces``.

    ``penalty`` is a scalar or one value per row. Event ``t`` carries ``c_t - gamma c_{t-1}`` where a new
    segment starts at ``t > 0`` and that jump is positive; everything else is 0.

    ``solver``: ``"compiled"`` (default) runs the pruned recursion of :func:`_l0_row` one row at a time;
    ``"numpy"`` runs the unpruned recursion vectorised over the rows (the reference the compiled solver is
    tested against; both give the same events).
    """
    y = np.atleast_2d(np.asarray(traces, dtype=np.float64))
    n, t_total = y.shape
    if not 0 < gamma <= 1:
        raise InputError(f"gamma must be in (0, 1], got {gamma}")
    if solver not in SOLVERS:
        raise InputError(f"unknown L0 solver {solver!r}; known: {', '.join(SOLVERS)}")
    lam = np.broadcast_to(np.asarray(penalty, dtype=np.float64), (n,)).copy()
    if not (np.isfinite(lam).all() and np.isfinite(y).all()):
        raise InputError("L0 deconvolution needs finite traces and penalties (rows with NaN are not processed)")
    events = np.zeros((n, t_total))
    if n == 0 or t_total == 0:
        return events
    k = saturation_window(gamma, t_total, tolerance)
    if solver == "compiled":
        powers, half_winv = _window_weights(gamma, k)
        saturates = gamma < 1 and k < t_total
        # a folded candidate's cost differs from its exact cost by at most 1.5 (1 + g) / (1 - g) g^K max|y|^2
        # (the y it no longer accumulates and the saturated weight); a pruning decision compares two such
        # costs, so the margin gets twice that, times a safety factor of about 2.7
        drift = 8.0 * (1 + gamma) / (1 - gamma) * powers[k] if saturates else 0.0
        y = np.ascontiguousarray(y)
        for row in range(n):
            _l0_row(y[row], float(gamma), float(lam[row]), k, powers, half_winv, 1.0 - gamma * gamma,
                    drift, events[row])
        return events
    return _l0_deconvolve_numpy(y, gamma, lam, k, events)


def _window_weights(gamma: float, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(gamma^m, 1 / (2 sum_{j<=m} gamma^{2j})) for lags m = 0..k, computed with the same floating-point
    operations as the numpy solver (powers by repeated multiplication), so both solvers agree bit for bit."""
    powers = np.empty(k + 1)
    powers[0] = 1.0
    for m in range(1, k + 1):
        powers[m] = powers[m - 1] * gamma
    if gamma < 1:
        g2 = gamma * gamma
        half_winv = (0.5 * (1 - g2)) / (1.0 - g2 * (powers * powers))
    else:
        half_winv = 0.5 / np.maximum(np.arange(1, k + 2), 1)
    return powers, half_winv


@numba.njit(cache=True, nogil=True)
def _l0_row(y, gamma, lam, k, powers, half_winv, winv_inf, drift, events):
    """Exact L0 recursion of one row with PELT pruning (Jewell & Witten 2018, section 3); writes ``events``.

    Candidates (last change point tau) are kept in chronological order with ``base`` = F(tau) - Q(tau) +
    lambda and ``acc`` = sum_j y_{tau+1+j} gamma^j; the value of a candidate at frame s is ``base - acc^2
    half_winv[s - tau - 1]`` and F(s) = Q(s) + the smallest value. Pruning: splitting a segment never
    raises its cost, so a candidate whose value exceeds the smallest by more than lambda can never be the
    best again (the candidate s beats it at every later frame); it is dropped. The margin is widened by
    the drift of folded (saturated) candidates, ``drift`` max|y|^2, and by rounding, so every candidate
    that the unpruned recursion could still choose is kept: both give the same change points and the
    kept candidates' values are computed with the same operations, in the same order, as the numpy solver
    (ties go to the same ring-buffer slot).
    """
    t_total = y.shape[0]
    ymax = 0.0
    for s in range(t_total):
        if abs(y[s]) > ymax:
            ymax = abs(y[s])
    margin = lam + drift * ymax * ymax
    cand_tau = np.empty(k + 1, dtype=np.int64)
    cand_base = np.empty(k + 1)
    cand_acc = np.empty(k + 1)
    cand_val = np.empty(k + 1)
    n_cand = 0
    sat_val = np.inf
    sat_tau = -1
    sat_acc = 0.0
    back = np.empty(t_total, dtype=np.int64)
    amp = np.empty(t_total)
    half_winv_inf = 0.5 * winv_inf
    f_prev = -lam
    q = 0.0
    threshold = np.inf   # candidates whose value at the previous frame exceeded this are pruned
    for s in range(t_total):
        first = 0
        if n_cand > 0 and cand_tau[0] == s - 1 - k:   # the oldest candidate leaves the window: fold it
            if cand_val[0] <= threshold:
                val = cand_base[0] - half_winv_inf * (cand_acc[0] * cand_acc[0])
                if val < sat_val:
                    sat_val = val
                    sat_tau = cand_tau[0]
                    sat_acc = cand_acc[0]
            first = 1
        cand_tau[n_cand] = s - 1
        cand_base[n_cand] = f_prev - q + lam
        cand_acc[n_cand] = 0.0
        cand_val[n_cand] = -np.inf
        n_cand += 1
        ys = y[s]
        best = np.inf
        best_i = -1
        kept = 0
        for i in range(first, n_cand):   # prune, update and compact in one pass
            if cand_val[i] > threshold:
                continue
            tau = cand_tau[i]
            lag = s - 1 - tau
            acc = cand_acc[i] + ys * powers[lag]
            val = cand_base[i] - (acc * acc) * half_winv[lag]
            cand_tau[kept] = tau
            cand_base[kept] = cand_base[i]
            cand_acc[kept] = acc
            cand_val[kept] = val
            if val < best:
                best = val
                best_i = kept
            elif val == best and (tau + 1) % k < (cand_tau[best_i] + 1) % k:
                best_i = kept   # an exact tie goes to the lower ring-buffer slot, as in the numpy solver
            kept += 1
        n_cand = kept
        q += 0.5 * ys * ys
        if sat_val < best:
            best = sat_val
            back[s] = sat_tau
            amp[s] = sat_acc * winv_inf
        else:
            back[s] = cand_tau[best_i]
            amp[s] = cand_acc[best_i] * (2.0 * half_winv[s - 1 - cand_tau[best_i]])
        f_prev = q + best
        threshold = best + margin + 1e-9 * (1.0 + abs(best) + q)
    end = t_total - 1
    while end >= 0:
        tau = back[end]
        if tau < 0:
            break
        jump = amp[end] - amp[tau] * gamma ** np.float64(tau - back[tau])
        events[tau + 1] = jump if jump > 0.0 else 0.0
        end = tau


def _l0_deconvolve_numpy(y: np.ndarray, gamma: float, lam: np.ndarray, k: int, events: np.ndarray) -> np.ndarray:
    """The unpruned recursion vectorised over rows (see :func:`l0_deconvolve`)."""
    n, t_total = y.shape
    g2 = gamma * gamma
    # a segment of L + 1 frames has sum_j gamma^{2j} = (1 - g2^{L+1}) / (1 - g2); saturated: 1 / (1 - g2)
    winv_inf = 1 - g2
    base = np.full((n, k), np.inf)        # F(tau) - Q(tau) + lambda per candidate slot (ring buffer)
    acc = np.zeros((n, k))                # sum_j y_{tau+1+j} gamma^j per candidate slot
    tmp = np.empty((n, k))
    gring = np.zeros(k)                   # gamma^lag of each slot
    slot_tau = np.full(k, -2, dtype=np.int64)
    sat_val = np.full(n, np.inf)          # best saturated candidate: value, change point, its a
    sat_tau = np.full(n, -1, dtype=np.int64)
    sat_acc = np.zeros(n)
    back = np.empty((n, t_total), dtype=np.int32)   # change point before the segment ending at s
    amp = np.empty((n, t_total))                    # a of that segment
    rows = np.arange(n)
    f_prev = -lam                          # F(-1) = -lambda: the first segment is free
    q = np.zeros(n)
    for s in range(t_total):
        slot = s % k
        if slot_tau[slot] >= -1:           # the candidate leaving the window becomes saturated
            val = base[:, slot] - (0.5 * winv_inf) * acc[:, slot] ** 2
            better = val < sat_val
            if better.any():
                sat_val[better] = val[better]
                sat_tau[better] = slot_tau[slot]
                sat_acc[better] = acc[better, slot]
        base[:, slot] = f_prev - q + lam
        acc[:, slot] = 0.0
        slot_tau[slot] = s - 1
        gring[slot] = 1.0
        ys = y[:, s]
        np.multiply(ys[:, None], gring, out=tmp)
        acc += tmp
        if gamma < 1:
            half_winv = (0.5 * winv_inf) / (1.0 - g2 * (gring * gring))
        else:
            half_winv = 0.5 / np.maximum(s - slot_tau, 1)
        np.multiply(acc, acc, out=tmp)
        tmp *= half_winv
        np.subtract(base, tmp, out=tmp)
        j = tmp.argmin(axis=1)
        best = tmp[rows, j]
        use_sat = sat_val < best
        q += 0.5 * ys * ys
        amp[:, s] = acc[rows, j] * (2.0 * half_winv[j])
        back[:, s] = slot_tau[j]
        if use_sat.any():
            best[use_sat] = sat_val[use_sat]
            back[use_sat, s] = sat_tau[use_sat]
            amp[use_sat, s] = sat_acc[use_sat] * winv_inf
        f_prev = q + best
        gring *= gamma
    # backtrack all rows together: segment (tau, end]; its start tau + 1 is an event when tau >= 0
    end = np.full(n, t_total - 1, dtype=np.int64)
    active = np.ones(n, dtype=bool)
    while active.any():
        r = rows[active]
        e = end[r]
        tau = back[r, e].astype(np.int64)
        has_prev = tau >= 0
        r2, e2, tau2 = r[has_prev], e[has_prev], tau[has_prev]
        prev_len = tau2 - back[r2, tau2]
        jump = amp[r2, e2] - amp[r2, tau2] * gamma ** prev_len.astype(np.float64)
        events[r2, tau2 + 1] = np.maximum(jump, 0.0)
        end[r] = tau
        active[r[~has_prev]] = False
    return events


# ----------------------------------------------------------------------------------------------
# penalty search


SearchStep = Generator[float, tuple[int, float, np.ndarray], tuple[np.ndarray, float]]


def _count_and_min(events: np.ndarray) -> tuple[int, float]:
    positive = events[events > 0]
    return int(positive.size), (float(positive.min()) if positive.size else 0.0)


def penalty_search(min_size: float, *, step: float = PENALTY_STEP, step_min: float = PENALTY_STEP_MIN) -> SearchStep:
    """The penalty search of one ROI as a coroutine: yields a penalty to try, receives (number of events,
    smallest event, events) for it, and returns (events, penalty) of the chosen penalty.

    The penalty rises on a grid of ``step`` until the smallest event reaches ``min_size`` (or no event is
    left), then the bracket is refined tenfold, alternating direction, down to ``step_min``, where the
    penalty is raised one step at a time to the first value whose smallest event reaches ``min_size``
    (keeping the last solution with events if the next has none): ophys_etl's bracketing search.
    """
    base, bisect = 0.0, False
    at_min = lambda: step <= step_min * (1 + 1e-9)  # noqa: E731
    while True:
        penalty = base + step
        if penalty < step:
            penalty = step
            base += step
        count, smallest, events = yield penalty
        if count == 0 and bisect:
            base -= 5 * step
            bisect = False
            continue
        if at_min():
            if smallest > min_size and bisect:
                base -= 5 * step
                bisect = False
                continue
            last: tuple[np.ndarray, float] | None = None
            while count > 0 and smallest < min_size:
                last = (events, penalty)
                penalty += step
                count, smallest, events = yield penalty
            if count == 0 and last is not None:
                return last
            return events, penalty
        if count == 0:
            base += 0.5 * step - step / 10
            step /= 10
            bisect = True
            continue
        if smallest < min_size:
            base = penalty
            bisect = False
            continue
        if smallest > min_size:
            if bisect:
                base -= 5 * step
            else:
                base += 0.5 * step - step / 10
                step /= 10
            bisect = not bisect
            continue
        return events, penalty


def detect_l0_events(traces: np.ndarray, gamma: float, min_sizes: np.ndarray,
                     *, tolerance: float = SATURATION_TOLERANCE,
                     solver: str = "compiled") -> tuple[np.ndarray, np.ndarray, int]:
    """(events N x T, chosen penalties N, solver rounds) for detrended traces: every ROI's penalty search
    runs as a coroutine and each round solves all ROIs still searching in one :func:`l0_deconvolve` call."""
    y = np.atleast_2d(np.asarray(traces, dtype=np.float64))
    n = y.shape[0]
    events = np.zeros_like(y)
    lambdas = np.full(n, np.nan)
    searches = {i: penalty_search(float(min_sizes[i])) for i in range(n)}
    pending = {i: next(search) for i, search in searches.items()}
    evaluations = 0
    rounds = 0
    while pending:
        rounds += 1
        evaluations += 1
        if evaluations > MAX_SEARCH_EVALUATIONS:
            raise RuntimeError(f"the L0 penalty search did not converge for rows {sorted(pending)[:10]}")
        ids = np.fromiter(pending, dtype=np.int64)
        solved = l0_deconvolve(y[ids], gamma, np.array([pending[i] for i in ids]), tolerance, solver=solver)
        for row, i in enumerate(ids):
            count, smallest = _count_and_min(solved[row])
            try:
                pending[int(i)] = searches[int(i)].send((count, smallest, solved[row]))
            except StopIteration as stop:
                chosen, penalty = stop.value
                events[i] = chosen
                lambdas[i] = penalty
                del pending[int(i)]
    return events, lambdas, rounds


# ----------------------------------------------------------------------------------------------
# the registered detector


class L0EventDetector:
    """``l0``: noise-scaled L0 deconvolution with an AR(1) indicator model (module docstring)."""

    name = NAME

    def detect(self, dff: np.ndarray, frame_rate_hz: float, *, sigma_dff: np.ndarray | None = None,
               full_genotype: str | None = None, indicator: str | None = None, decay_time_s: float | None = None,
               noise_multiplier: float | None = None, noise_median_filter_s: float = NOISE_MEDIAN_FILTER_S,
               trace_median_filter_s: float = TRACE_MEDIAN_FILTER_S,
               tolerance: float = SATURATION_TOLERANCE) -> EventResult:
        """``sigma_dff`` is not used: the noise is estimated from the dF/F as described above.
        Rows with a NaN are not processed (NaN events, lambda and noise)."""
        x = np.asarray(dff, dtype=np.float64)
        n, t_total = x.shape
        decay, source = resolve_decay_time(full_genotype, decay_time_s, indicator)
        gamma = gamma_from_decay(decay, frame_rate_hz)
        multiplier = default_noise_multiplier(frame_rate_hz) if noise_multiplier is None else float(noise_multiplier)
        if not math.isfinite(multiplier) or multiplier <= 0:
            raise InputError(f"noise_multiplier must be positive, got {noise_multiplier!r}")
        noise_frames = int(noise_median_filter_s * frame_rate_hz)
        trace_frames = int(trace_median_filter_s * frame_rate_hz)
        if t_total < 3:
            raise InputError(f"event detection needs at least 3 frames, got {t_total}")
        events = np.full((n, t_total), np.nan)
        lambdas = np.full(n, np.nan)
        noise = np.full(n, np.nan)
        ok = np.isfinite(x).all(axis=1)
        rounds = 0
        if ok.any():
            detrended, sigmas = noise_and_detrend(x[ok], noise_frames, trace_frames)
            good = np.isfinite(sigmas) & (sigmas > 0)
            idx = np.flatnonzero(ok)
            noise[idx] = sigmas
            if good.any():
                found, chosen, rounds = detect_l0_events(detrended[good], gamma, multiplier * sigmas[good],
                                                         tolerance=tolerance)
                events[idx[good]] = found
                lambdas[idx[good]] = chosen
        parameters: dict[str, Any] = {
            "decay_time_s": decay, "decay_time_source": source, "gamma": gamma,
            "full_genotype": full_genotype or "", "noise_multiplier": multiplier,
            "noise_median_filter_s": float(noise_median_filter_s), "trace_median_filter_s": float(trace_median_filter_s),
            "saturation_window_frames": saturation_window(gamma, t_total, tolerance), "solver_rounds": rounds,
        }
        return EventResult(events=events, noise_std=noise, parameters=parameters, lambdas=lambdas)


def parameters_for_session(full_genotype: str | None, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Detector keyword arguments for a session: its genotype plus explicit overrides (None values dropped)."""
    params: dict[str, Any] = {"full_genotype": full_genotype or None}
    params.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return params


register_event_detector(L0EventDetector(), replace=True)
