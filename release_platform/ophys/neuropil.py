"""Neuropil contamination ratio r and neuropil-corrected traces.

Model: F_M(t) = F_C(t) + r F_N(t) with F_M the (demixed) ROI trace, F_N the neuropil trace and F_C
the cell fluorescence; the corrected trace is F_C = F_M - r F_N (units of the input traces).

Smoothness criterion (AllenSDK ``r_neuropil.estimate_contamination_ratios``)
----------------------------------------------------------------------------
The traces are cut into ``folds`` (4) contiguous blocks of T_f = floor(T / folds) frames (the
remaining frames are ignored). For a candidate r, each fold is smoothed with
M = I + lambda D^T D (D the first-difference operator divided by dt, lambda = 0.05) and the fold error
is |sqrt(mean((M^-1 y - y)^2)) / mean(F_M)| with y = F_M - r F_N; error(r) is the mean over folds.
Because M^-1 y - y is linear in y, it equals a - r b with a = (M^-1 - I) F_M and b = (M^-1 - I) F_N,
so each fold costs two tridiagonal solves in total (done for all ROIs at once) and error(r) is a
closed form for every r. The grid search is the legacy one: r in arange(0, 2, 0.1); if the minimum
is on the last grid point the range is extended (pass not counted; a one-point pass that would
repeat itself is extended by twice its width, where the legacy loops forever), otherwise it is
narrowed to the neighbours of the minimum with the step times 0.1; 3 counted passes. Unlike the
legacy, the search never evaluates r above ``r_max`` (an explicit cap); a minimum at the cap, or on
the last grid point below it when the cap cut the grid, is "unconverged".

Engines (:data:`NEUROPIL_ENGINES`): "compiled" (default) and "reference" give bit-identical results;
the compiled one reproduces the reference's floating-point operations in numba kernels (see
:mod:`release_platform.ophys._neuropil_kernel`).

Fallbacks (ophys_etl, AllenSDK#1790)
------------------------------------
* unconverged: fitted r > 1 (or at the cap) -> r = mean of the fitted r values in (0, 1] over the
  session if at least 5 ROIs have one, else 0.7;
* negative baseline: mean(F_C) <= 0 with the chosen r -> r = 0 and F_C = F_M (AllenSDK);
* skipped: an ROI whose ROI or neuropil trace has no usable values (more than ``max_nan_fraction``
  of its frames are NaN) gets r = NaN, RMSE = NaN and a NaN corrected row. Isolated NaN frames (e.g.
  frames dropped by demixing) are linearly interpolated for the fit only and stay NaN in F_C.
RMSE is the error(r) of the final r for every fitted ROI (ophys_etl recomputes it after the fallback).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from scipy.linalg import solve_banded

from release_platform.errors import InputError
from release_platform.ophys._nan import fill_nan_linear

DEFAULT_LAMBDA = 0.05
DEFAULT_FOLDS = 4
DEFAULT_ITERATIONS = 3
DEFAULT_R_RANGE = (0.0, 2.0)
DEFAULT_DR = 0.1
DEFAULT_DR_FACTOR = 0.1
#: Explicit upper cap of the r search (the legacy search range could grow without bound).
DEFAULT_R_MAX = 5.0
#: Fitted r above this is "unconverged" and replaced by the session fallback.
UNCONVERGED_R = 1.0
#: Fallback r when fewer than MIN_ROIS_FOR_SESSION_MEAN ROIs have a fitted r in (0, 1].
DEFAULT_FALLBACK_R = 0.7
MIN_ROIS_FOR_SESSION_MEAN = 5
#: Fixed-coefficient method default.
DEFAULT_FIXED_R = 0.7
DEFAULT_MAX_NAN_FRACTION = 0.1

STATUS_FIT = "fit"
STATUS_FIXED = "fixed"
STATUS_UNCONVERGED = "unconverged"
STATUS_NEGATIVE_BASELINE = "negative_baseline"
STATUS_SKIPPED = "skipped"

_CAP_TOLERANCE = 1e-9
#: Values per batch of tridiagonal right-hand sides (bounds the memory of fold_statistics: 32 MB).
_BATCH_VALUES = 4_000_000

#: engine of :func:`correct_neuropil`, :func:`fold_statistics` and :func:`grid_search_all`: "compiled"
#: (numba kernels of :mod:`release_platform.ophys._neuropil_kernel`: each ROI's folds smoothed and
#: reduced to their sums in one pass, one thread per CPU over the ROIs, the grid search over all ROIs,
#: the corrected traces and their means in one pass) or "reference" (scipy ``solve_banded`` on batches
#: of folds, ``einsum`` sums, the grid search a ROI at a time, numpy for the rest). The compiled
#: kernels repeat the reference's floating-point operations in the same order: the results are
#: bit-identical.
NEUROPIL_ENGINES = ("compiled", "reference")
NEUROPIL_ENGINE = "compiled"


def _engine(engine: str | None) -> str:
    chosen = NEUROPIL_ENGINE if engine is None else engine
    if chosen not in NEUROPIL_ENGINES:
        raise ValueError(f"unknown neuropil engine {chosen!r}; available: {', '.join(NEUROPIL_ENGINES)}")
    return chosen


def _kernels():
    """The compiled kernels (numba is imported, and the kernels loaded from its cache or compiled, on first use)."""
    from release_platform.ophys import _neuropil_kernel

    return _neuropil_kernel


def load_kernels() -> None:
    """Import numba and load (or compile) the compiled neuropil kernels now: a once-per-process cost
    (compiled code is cached on disk) that benchmarks keep out of their timings."""
    t = np.arange(16.0)
    correct_neuropil(np.vstack([10.0 + np.sin(t), 10.0 + np.cos(t)]), np.vstack([np.cos(t), np.sin(t)]), engine="compiled")


#: ROIs per thread below which the compiled fold sums run on the calling thread only
_MIN_ROWS_PER_THREAD = 8


def _by_row_chunks(kernel, n_rows: int, *args) -> None:
    """Run ``kernel(*args, first, stop)`` over rows 0 .. n_rows - 1, one contiguous chunk per available
    CPU (the kernel releases the GIL and writes disjoint rows of its outputs)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - platforms without affinity masks
        cpus = os.cpu_count() or 1
    n_threads = max(1, min(cpus, n_rows // _MIN_ROWS_PER_THREAD))
    if n_threads == 1:
        kernel(*args, 0, n_rows)
        return
    bounds = np.linspace(0, n_rows, n_threads + 1).astype(int)
    with ThreadPoolExecutor(max_workers=n_threads) as pool:
        for done in [pool.submit(kernel, *args, int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]:
            done.result()


def smoothing_matrix_banded(n_frames: int, lam: float = DEFAULT_LAMBDA, dt: float = 1.0) -> np.ndarray:
    """M = I + lam * D^T D (D: first differences / dt) in ``solve_banded((1, 1), ...)`` layout."""
    scale = lam / (dt * dt)
    diagonal = np.full(n_frames, 1.0 + 2.0 * scale)
    if n_frames >= 1:
        diagonal[0] = diagonal[-1] = 1.0 + scale
    if n_frames == 1:
        diagonal[0] = 1.0
    ab = np.zeros((3, n_frames))
    ab[0, 1:] = -scale
    ab[1] = diagonal
    ab[2, :-1] = -scale
    return ab


@dataclass
class FoldStatistics:
    """Sufficient statistics of the smoothness error per ROI and fold.

    With a = (M^-1 - I) F_M and b = (M^-1 - I) F_N on one fold: ``aa`` = a.a, ``ab`` = a.b,
    ``bb`` = b.b (N x folds), ``mean_fm`` = mean of F_M on the fold (N x folds), ``fold_length`` T_f.
    """

    aa: np.ndarray
    ab: np.ndarray
    bb: np.ndarray
    mean_fm: np.ndarray
    fold_length: int

    def error(self, r: np.ndarray | float, rows: np.ndarray | slice = slice(None)) -> np.ndarray:
        """error(r) for the ROIs ``rows``: shape (n_rows, len(r)) (legacy ``estimate_error``)."""
        r = np.atleast_1d(np.asarray(r, dtype=np.float64))
        aa, ab, bb, mean = (v[rows][..., None] for v in (self.aa, self.ab, self.bb, self.mean_fm))
        squared = aa - 2.0 * r * ab + r * r * bb  # n x folds x len(r)
        with np.errstate(divide="ignore", invalid="ignore"):
            per_fold = np.abs(np.sqrt(np.maximum(squared, 0.0) / self.fold_length) / mean)
        return per_fold.mean(axis=-2)

    def error_per_row(self, r: np.ndarray) -> np.ndarray:
        """error(r_i) for every ROI i with its own ratio ``r`` (length N)."""
        r = np.asarray(r, dtype=np.float64)[:, None]
        squared = self.aa - 2.0 * r * self.ab + r * r * self.bb
        with np.errstate(divide="ignore", invalid="ignore"):
            per_fold = np.abs(np.sqrt(np.maximum(squared, 0.0) / self.fold_length) / self.mean_fm)
        return per_fold.mean(axis=1)


def fold_statistics(
    roi_traces: np.ndarray,
    neuropil_traces: np.ndarray,
    *,
    lam: float = DEFAULT_LAMBDA,
    folds: int = DEFAULT_FOLDS,
    dt: float = 1.0,
    engine: str | None = None,
) -> FoldStatistics:
    """Compute :class:`FoldStatistics` for finite N x T traces (tridiagonal solves, all ROIs batched).

    ``engine`` (default :data:`NEUROPIL_ENGINE`): see :data:`NEUROPIL_ENGINES`.
    """
    fm = np.atleast_2d(np.asarray(roi_traces, dtype=np.float64))
    fn = np.atleast_2d(np.asarray(neuropil_traces, dtype=np.float64))
    if _engine(engine) == "reference":
        return _fold_statistics_reference(fm, fn, lam=lam, folds=folds, dt=dt)
    rows = np.arange(fm.shape[0])
    return _fold_statistics_rows(fm, fn, rows, np.zeros(rows.size, dtype=bool), lam=lam, folds=folds, dt=dt)


def _fold_length(t: int, folds: int) -> int:
    t_fold = t // folds if folds >= 1 else 0
    if folds < 1 or t_fold < 2:
        raise InputError(f"traces of {t} frames are too short for {folds} folds of at least 2 frames")
    return t_fold


def _fold_statistics_reference(fm: np.ndarray, fn: np.ndarray, *, lam: float, folds: int, dt: float) -> FoldStatistics:
    """Reference engine: ``solve_banded`` on batches of T_f x (2 k folds) right-hand sides, ``einsum`` sums."""
    n, t = fm.shape
    t_fold = _fold_length(t, folds)
    ab_matrix = smoothing_matrix_banded(t_fold, lam, dt)
    out = {k: np.zeros((n, folds)) for k in ("aa", "ab", "bb")}
    usable = folds * t_fold
    mean_fm = fm[:, :usable].reshape(n, folds, t_fold).mean(axis=2)
    chunk = max(1, _BATCH_VALUES // (2 * folds * t_fold))
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        k = stop - start
        segments = np.concatenate(
            [fm[start:stop, :usable].reshape(k * folds, t_fold), fn[start:stop, :usable].reshape(k * folds, t_fold)]
        ).T  # T_f x (2 k folds)
        residual = solve_banded((1, 1), ab_matrix, segments, check_finite=False) - segments
        a = residual[:, : k * folds].T.reshape(k, folds, t_fold)
        b = residual[:, k * folds :].T.reshape(k, folds, t_fold)
        out["aa"][start:stop] = np.einsum("kft,kft->kf", a, a)
        out["ab"][start:stop] = np.einsum("kft,kft->kf", a, b)
        out["bb"][start:stop] = np.einsum("kft,kft->kf", b, b)
    return FoldStatistics(out["aa"], out["ab"], out["bb"], mean_fm, t_fold)


def _fold_statistics_rows(
    fm: np.ndarray, fn: np.ndarray, rows: np.ndarray, fill: np.ndarray, *, lam: float, folds: int, dt: float
) -> FoldStatistics:
    """Compiled engine: statistics of ROI k = row ``rows[k]`` of ``fm``/``fn``, the rows with ``fill[k]``
    linearly interpolated over their non-finite frames first (as :func:`filled_rows`), without copying
    any row. Bit-identical to the reference engine on the filled rows."""
    t = fm.shape[1]
    t_fold = _fold_length(t, folds)
    banded = smoothing_matrix_banded(t_fold, lam, dt)
    kernels = _kernels()
    factor, pivot = kernels.tridiagonal_factor(banded[2, :-1], banded[1], banded[0, 1:])
    n = rows.size
    aa, ab, bb, mean_fm = (np.zeros((n, folds)) for _ in range(4))
    if n:
        _by_row_chunks(
            kernels.fold_sums, n, np.ascontiguousarray(fm), np.ascontiguousarray(fn), rows.astype(np.int64),
            fill.astype(np.bool_), folds, t_fold, factor, pivot, np.ascontiguousarray(banded[0, 1:]), aa, ab, bb, mean_fm,
        )
    return FoldStatistics(aa, ab, bb, mean_fm, t_fold)


@dataclass
class RatioFit:
    """Result of the grid search for one ROI: ``r``, its ``error``, all evaluated (r, error) pairs, and
    ``at_cap`` when the minimum sat on ``r_max``."""

    r: float
    error: float
    r_vals: np.ndarray
    err_vals: np.ndarray
    at_cap: bool


def grid_search_r(
    stats: FoldStatistics,
    row: int,
    *,
    r_range: tuple[float, float] = DEFAULT_R_RANGE,
    dr: float = DEFAULT_DR,
    dr_factor: float = DEFAULT_DR_FACTOR,
    iterations: int = DEFAULT_ITERATIONS,
    r_max: float = DEFAULT_R_MAX,
) -> RatioFit:
    """The legacy coarse-to-fine grid search (see module docstring) for ROI ``row``, capped at ``r_max``."""
    lo, hi = float(r_range[0]), float(r_range[1])
    step = float(dr)
    best_r, best_err = np.nan, np.inf
    all_r: list[np.ndarray] = []
    all_err: list[np.ndarray] = []
    at_cap = False
    counted = 0
    while counted < iterations:
        grid = np.arange(lo, hi, step)
        rs = grid[grid <= r_max + _CAP_TOLERANCE]
        cut = rs.size < grid.size  # the cap cut the grid: extending it would evaluate rs[-1] again
        if rs.size == 0:
            at_cap = True
            break
        errs = stats.error(rs, np.array([row]))[0]
        errs = np.where(np.isfinite(errs), errs, np.inf)
        all_r.append(rs)
        all_err.append(errs)
        i_min = int(np.argmin(errs))
        if errs[i_min] < best_err:
            best_err, best_r = float(errs[i_min]), float(rs[i_min])
        if i_min == rs.size - 1:
            if rs[-1] >= r_max - _CAP_TOLERANCE or cut or not np.isfinite(errs[i_min]):
                at_cap = bool(np.isfinite(errs[i_min]))
                break
            width = rs[-1] - rs[0] if rs.size > 1 else step
            if float(rs[-1]) == lo and float(rs[-1] + width) == hi:  # the same one-point pass again: widen it
                width = 2.0 * width
            lo, hi = float(rs[-1]), float(rs[-1] + width)
        else:
            lo, hi = float(rs[max(i_min - 1, 0)]), float(rs[min(i_min + 1, rs.size - 1)])
            step *= dr_factor
            counted += 1
    if np.isfinite(best_r) and best_r < 0:
        best_r = 0.0
    return RatioFit(
        r=best_r,
        error=best_err if np.isfinite(best_err) else np.nan,
        r_vals=np.concatenate(all_r) if all_r else np.zeros(0),
        err_vals=np.concatenate(all_err) if all_err else np.zeros(0),
        at_cap=at_cap,
    )


def grid_search_all(
    stats: FoldStatistics,
    *,
    r_range: tuple[float, float] = DEFAULT_R_RANGE,
    dr: float = DEFAULT_DR,
    dr_factor: float = DEFAULT_DR_FACTOR,
    iterations: int = DEFAULT_ITERATIONS,
    r_max: float = DEFAULT_R_MAX,
    engine: str | None = None,
) -> list[RatioFit]:
    """:func:`grid_search_r` for every ROI of ``stats``; the compiled engine evaluates the same grid
    points with the same operations (equal fits for equal statistics)."""
    n = stats.aa.shape[0]
    if _engine(engine) == "reference":
        return [
            grid_search_r(stats, i, r_range=r_range, dr=dr, dr_factor=dr_factor, iterations=iterations, r_max=r_max)
            for i in range(n)
        ]
    best, best_error, at_cap, offsets, r_vals, err_vals = _kernels().grid_search(
        stats.aa, stats.ab, stats.bb, stats.mean_fm, stats.fold_length, float(r_range[0]), float(r_range[1]),
        float(dr), float(dr_factor), int(iterations), float(r_max), _CAP_TOLERANCE,
    )
    return [
        RatioFit(
            r=float(best[i]),
            error=float(best_error[i]) if np.isfinite(best_error[i]) else np.nan,
            r_vals=r_vals[offsets[i] : offsets[i + 1]].copy(),
            err_vals=err_vals[offsets[i] : offsets[i + 1]].copy(),
            at_cap=bool(at_cap[i]),
        )
        for i in range(n)
    ]


def estimate_contamination_ratios(
    roi_traces: np.ndarray,
    neuropil_traces: np.ndarray,
    *,
    lam: float = DEFAULT_LAMBDA,
    folds: int = DEFAULT_FOLDS,
    iterations: int = DEFAULT_ITERATIONS,
    r_range: tuple[float, float] = DEFAULT_R_RANGE,
    dr: float = DEFAULT_DR,
    dr_factor: float = DEFAULT_DR_FACTOR,
    r_max: float = DEFAULT_R_MAX,
    dt: float = 1.0,
    engine: str | None = None,
) -> tuple[list[RatioFit], FoldStatistics]:
    """Fit r per ROI by the smoothness criterion for finite N x T traces (no fallbacks applied)."""
    stats = fold_statistics(roi_traces, neuropil_traces, lam=lam, folds=folds, dt=dt, engine=engine)
    fits = grid_search_all(
        stats, r_range=r_range, dr=dr, dr_factor=dr_factor, iterations=iterations, r_max=r_max, engine=engine
    )
    return fits, stats


#: ROIs per block when computing the mean corrected traces (bounds the temporaries).
_MEAN_BLOCK_ROWS = 16


def filled_rows(values: np.ndarray, bad: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``values[rows]`` with the frames ``bad`` (N x T booleans) linearly interpolated per row.

    Equals ``fill_nan_linear(np.where(bad, np.nan, values)[rows])`` when every non-finite value of
    ``values`` is in ``bad``; only the rows with a bad frame are interpolated (the others are copied).
    """
    out = values[rows]
    with_bad = np.flatnonzero(bad[rows].any(axis=1))
    if with_bad.size:
        picked = rows[with_bad]
        out[with_bad] = fill_nan_linear(np.where(bad[picked], np.nan, values[picked]))
    return out


def corrected_means(fm: np.ndarray, fn: np.ndarray, r: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``np.nanmean(fm[rows] - r[rows, None] * fn[rows], axis=1)``, computed a block of rows at a time."""
    out = np.empty(rows.size)
    with np.errstate(invalid="ignore"):
        for start in range(0, rows.size, _MEAN_BLOCK_ROWS):
            block = rows[start : start + _MEAN_BLOCK_ROWS]
            out[start : start + block.size] = np.nanmean(fm[block] - r[block, None] * fn[block], axis=1)
    return out


@dataclass
class NeuropilResult:
    """Neuropil correction of N ROIs.

    ``corrected`` (FC, N x T), ``r`` (final ratio), ``r_fit`` (ratio from the fit before fallbacks;
    NaN for the fixed method or skipped ROIs), ``rmse`` (error(r) of the final r; NaN when skipped),
    ``status`` (per ROI: fit, fixed, unconverged, negative_baseline, skipped), ``fallback_used``
    (status is unconverged or negative_baseline), ``fallback_r`` (the r given to unconverged ROIs),
    ``fits`` (per-ROI grid-search record or None).
    """

    corrected: np.ndarray
    r: np.ndarray
    r_fit: np.ndarray
    rmse: np.ndarray
    status: np.ndarray
    fallback_used: np.ndarray
    fallback_r: float
    fits: list[RatioFit | None] = field(default_factory=list)

    def rows_with(self, status: str) -> np.ndarray:
        return np.flatnonzero(self.status == status)


def session_fallback_r(
    r_fit: np.ndarray, *, min_rois: int = MIN_ROIS_FOR_SESSION_MEAN, default: float = DEFAULT_FALLBACK_R
) -> float:
    """Mean of the fitted r in (0, 1] if at least ``min_rois`` such values exist, else ``default``."""
    r_fit = np.asarray(r_fit, dtype=np.float64)
    good = r_fit[np.isfinite(r_fit) & (r_fit > 0) & (r_fit <= UNCONVERGED_R)]
    return float(good.mean()) if good.size >= min_rois else float(default)


def correct_neuropil(
    roi_traces: np.ndarray,
    neuropil_traces: np.ndarray,
    *,
    method: str = "fit",
    fixed_r: float = DEFAULT_FIXED_R,
    lam: float = DEFAULT_LAMBDA,
    folds: int = DEFAULT_FOLDS,
    iterations: int = DEFAULT_ITERATIONS,
    r_range: tuple[float, float] = DEFAULT_R_RANGE,
    dr: float = DEFAULT_DR,
    dr_factor: float = DEFAULT_DR_FACTOR,
    r_max: float = DEFAULT_R_MAX,
    min_rois_for_mean: int = MIN_ROIS_FOR_SESSION_MEAN,
    default_fallback_r: float = DEFAULT_FALLBACK_R,
    max_nan_fraction: float = DEFAULT_MAX_NAN_FRACTION,
    entity: str | None = None,
    path: str | os.PathLike | None = None,
    engine: str | None = None,
) -> NeuropilResult:
    """Estimate r per ROI (``method="fit"``) or use ``fixed_r`` (``method="fixed"``) and correct.

    Parameters
    ----------
    roi_traces, neuropil_traces
        N x T traces in the same ROI order and units.
    method
        ``"fit"``: smoothness criterion with the fallbacks of the module docstring; ``"fixed"``: r =
        ``fixed_r`` for every ROI (negative-baseline and skipped rules still apply).
    r_max
        Upper cap of the r search; must be larger than 1.
    max_nan_fraction
        ROIs with a larger fraction of NaN frames (in either trace) are skipped.
    engine
        Default :data:`NEUROPIL_ENGINE`; see :data:`NEUROPIL_ENGINES`.
    """
    fm = np.asarray(roi_traces, dtype=np.float64)
    fn = np.asarray(neuropil_traces, dtype=np.float64)
    if fm.ndim != 2 or fm.shape != fn.shape:
        raise InputError(f"ROI traces {fm.shape} and neuropil traces {fn.shape} must be N x T of equal shape", entity=entity, path=path)
    if method not in ("fit", "fixed"):
        raise InputError(f"unknown neuropil method {method!r}; use 'fit' or 'fixed'", entity=entity, path=path)
    if not (r_max > UNCONVERGED_R):
        raise InputError(f"r_max must be larger than {UNCONVERGED_R}, got {r_max}", entity=entity, path=path)
    if method == "fixed" and not (np.isfinite(fixed_r) and fixed_r >= 0):
        raise InputError(f"fixed_r must be finite and >= 0, got {fixed_r}", entity=entity, path=path)
    compiled = _engine(engine) == "compiled"
    n, t = fm.shape
    if compiled:
        fm, fn = np.ascontiguousarray(fm), np.ascontiguousarray(fn)
        kernels = _kernels()
        bad_count = np.zeros(n, dtype=np.int64)
        _by_row_chunks(kernels.bad_counts, n, fm, fn, bad_count)
    else:
        bad_frames = ~(np.isfinite(fm) & np.isfinite(fn))
        bad_count = np.count_nonzero(bad_frames, axis=1)
    nan_fraction = bad_count / t if t else np.ones(n)
    skipped = (nan_fraction > max_nan_fraction) | (bad_count == t)
    usable = np.flatnonzero(~skipped)

    r = np.full(n, np.nan)
    r_fit = np.full(n, np.nan)
    rmse = np.full(n, np.nan)
    status = np.full(n, STATUS_SKIPPED, dtype=object)
    fits: list[RatioFit | None] = [None] * n
    fallback_r = float(fixed_r) if method == "fixed" else float(default_fallback_r)
    corrected = None

    if usable.size:
        if compiled:
            stats = _fold_statistics_rows(fm, fn, usable, bad_count[usable] > 0, lam=lam, folds=folds, dt=1.0)
        else:
            fm_fill = filled_rows(fm, bad_frames, usable)
            fn_fill = filled_rows(fn, bad_frames, usable)
            stats = _fold_statistics_reference(fm_fill, fn_fill, lam=lam, folds=folds, dt=1.0)
        if method == "fit":
            found = grid_search_all(
                stats, r_range=r_range, dr=dr, dr_factor=dr_factor, iterations=iterations, r_max=r_max, engine=engine
            )
            unconverged = np.zeros(usable.size, dtype=bool)
            for k, (row, fit) in enumerate(zip(usable, found)):
                fits[row] = fit
                r_fit[row] = fit.r
                unconverged[k] = fit.at_cap or not np.isfinite(fit.r) or fit.r > UNCONVERGED_R
            fallback_r = session_fallback_r(r_fit[usable[~unconverged]], min_rois=min_rois_for_mean, default=default_fallback_r)
            r[usable] = np.where(unconverged, fallback_r, r_fit[usable])
            status[usable] = np.where(unconverged, STATUS_UNCONVERGED, STATUS_FIT)
        else:
            r[usable] = fixed_r
            status[usable] = STATUS_FIXED
        if compiled:  # the corrected rows and their means (the values of corrected_means) in one pass
            corrected, means = np.empty((n, t)), np.empty(n)
            _by_row_chunks(kernels.corrected_rows, n, fm, fn, r, corrected, means)
            mean_fc = means[usable]
        else:
            mean_fc = corrected_means(fm, fn, r, usable)
        negative = ~(mean_fc > 0)
        r[usable[negative]] = 0.0
        status[usable[negative]] = STATUS_NEGATIVE_BASELINE
        rmse[usable] = stats.error_per_row(r[usable])

    if corrected is None:
        with np.errstate(invalid="ignore"):  # r = NaN (skipped) times an infinite frame
            corrected = np.multiply(r[:, None], fn)  # fm - r fn, one full-size array
            np.subtract(fm, corrected, out=corrected)
    negative_rows = status == STATUS_NEGATIVE_BASELINE
    corrected[negative_rows] = fm[negative_rows]
    corrected[skipped] = np.nan
    status = status.astype(str)
    fallback_used = np.isin(status, (STATUS_UNCONVERGED, STATUS_NEGATIVE_BASELINE))
    return NeuropilResult(
        corrected=corrected, r=r, r_fit=r_fit, rmse=rmse, status=status,
        fallback_used=fallback_used, fallback_r=fallback_r, fits=fits,
    )
