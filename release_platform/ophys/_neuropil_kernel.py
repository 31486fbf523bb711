"""Compiled engine of :mod:`release_platform.ophys.neuropil` (imported on first use: numba is heavy).

Every kernel repeats the floating-point operations of the reference engine in the same order, so the
two engines give bit-identical results (no fused multiply-add: numba does not contract ``a * b + c``):

* :func:`fold_sums` smooths the folds of one ROI at a time: the 2 x folds right-hand sides (F_M and
  F_N of each fold) run side by side through the elimination of LAPACK ``dgtsv`` (what scipy's
  ``solve_banded((1, 1), ...)`` calls; no row interchange occurs, the matrix being diagonally
  dominant; factors from :func:`tridiagonal_factor`, once per fold length) and its back
  substitution; the residuals M^-1 y - y are summed as numpy's ``einsum`` sums a contiguous row
  (:func:`_dot_order`: two lanes, 8 values a step, as numpy's x86-64 baseline build does) and the
  fold means as numpy's ``mean`` (:func:`pairwise_sum`). Rows with non-finite frames are
  interpolated first (:func:`fill_row`, the values of ``np.interp``) into a per-thread row buffer:
  no N x T temporaries. Threads take disjoint ROIs (the kernels release the GIL).
* :func:`grid_search` runs the coarse-to-fine search of ``grid_search_r`` for all ROIs: numpy's
  ``arange`` values (start + i * delta with delta = (start + step) - start), the error expression
  evaluated left to right, the fold errors added in order and divided by the fold count, the first
  minimum.
* :func:`bad_counts` counts the non-finite frames per row; :func:`corrected_rows` writes
  F_M - r F_N and each row's ``np.nanmean``.

A numpy build that sums in another order (e.g. an ``einsum`` compiled for wider vectors) would change
the reference's last bits, not these kernels': the engine-equality tests would show it.
"""

import numba
import numpy as np


@numba.njit(nogil=True, cache=True, error_model="numpy")
def tridiagonal_factor(lower, diagonal, upper):  # pragma: no cover - compiled by numba
    """Elimination factors and pivots of LAPACK ``dgtsv`` without row interchanges (none occur for a
    diagonally dominant matrix): ``factor[i] = lower[i] / pivot[i]``, ``pivot[i + 1] = diagonal[i + 1]
    - factor[i] * upper[i]``."""
    n = diagonal.size
    pivot = diagonal.copy()
    factor = np.empty(max(n - 1, 0))
    for i in range(n - 1):
        factor[i] = lower[i] / pivot[i]
        pivot[i + 1] = pivot[i + 1] - factor[i] * upper[i]
    return factor, pivot


@numba.njit(nogil=True, cache=True, inline="always")
def _dot_order(x, c1, c2, n):  # pragma: no cover - compiled by numba
    """Sum over i < n of x[i, c1] * x[i, c2] in the order of numpy's contiguous ``einsum`` reduction
    (two lanes, 8 values per step taken as pairs (6, 7), (4, 5), (2, 3), (0, 1), a zero-padded pair
    for the tail, then lane 0 + lane 1 added to the zeroed output); no fused multiply-add."""
    lane0 = 0.0
    lane1 = 0.0
    whole = n - n % 8
    for i in range(0, whole, 8):
        for j in (6, 4, 2, 0):
            lane0 = x[i + j, c1] * x[i + j, c2] + lane0
            lane1 = x[i + j + 1, c1] * x[i + j + 1, c2] + lane1
    for i in range(whole, n, 2):
        lane0 = x[i, c1] * x[i, c2] + lane0
        if i + 1 < n:
            lane1 = x[i + 1, c1] * x[i + 1, c2] + lane1
        else:
            lane1 = 0.0 * 0.0 + lane1
    return 0.0 + (lane0 + lane1)


@numba.njit(nogil=True, cache=True, error_model="numpy")
def fold_sums(fm, fn, rows, fill, folds, t_fold, factor, pivot, upper, aa, ab, bb, mean_fm, first, stop):  # pragma: no cover
    """Sums a.a, a.b, b.b and the fold means of F_M (rows ``first`` .. ``stop`` - 1 of the N x folds
    outputs) of ROI k = row ``rows[k]`` of ``fm``/``fn``, interpolated by :func:`fill_row` first where
    ``fill[k]``; ``factor``, ``pivot``, ``upper`` from :func:`tridiagonal_factor` of the fold matrix.
    The means are numpy's (pairwise sum divided by the fold length)."""
    chains = 2 * folds
    x = np.empty((t_fold, chains))
    acc = np.empty(chains)
    cross = np.empty(folds)
    last = t_fold - 1
    filled_m = np.empty(fm.shape[1])
    filled_n = np.empty(fm.shape[1])
    for k in range(first, stop):
        m = fm[rows[k]]
        n = fn[rows[k]]
        if fill[k]:
            fill_row(m, n, filled_m, filled_n)
            m = filled_m
            n = filled_n
        for f in range(folds):
            mean_fm[k, f] = (0.0 + pairwise_sum(m, f * t_fold, t_fold, False)) / t_fold
        # forward elimination (chain f: fold f of F_M; chain folds + f: fold f of F_N)
        for f in range(folds):
            x[0, f] = m[f * t_fold]
            x[0, folds + f] = n[f * t_fold]
        for i in range(1, t_fold):
            g = factor[i - 1]
            for f in range(folds):
                x[i, f] = m[f * t_fold + i] - g * x[i - 1, f]
            for f in range(folds):
                x[i, folds + f] = n[f * t_fold + i] - g * x[i - 1, folds + f]
        # back substitution
        p = pivot[last]
        for c in range(chains):
            x[last, c] = x[last, c] / p
        for i in range(last - 1, -1, -1):
            p = pivot[i]
            u = upper[i]
            for c in range(chains):
                x[i, c] = (x[i, c] - u * x[i + 1, c]) / p
        # residuals, and their sums in numpy's einsum order (see _dot_order)
        for i in range(t_fold):
            for f in range(folds):
                x[i, f] = x[i, f] - m[f * t_fold + i]
            for f in range(folds):
                x[i, folds + f] = x[i, folds + f] - n[f * t_fold + i]
        for c in range(chains):
            acc[c] = _dot_order(x, c, c, t_fold)
        for f in range(folds):
            cross[f] = _dot_order(x, f, folds + f, t_fold)
        for f in range(folds):
            aa[k, f] = acc[f]
            bb[k, f] = acc[folds + f]
            ab[k, f] = cross[f]


@numba.njit(cache=True, error_model="numpy")
def _arange(start, stop, step):  # pragma: no cover - compiled by numba
    """``np.arange(start, stop, step)`` for floats, value for value (numpy's length and fill rule)."""
    span = (stop - start) / step
    if span == 0.0 and stop - start != 0.0:
        length = 0 if np.signbit(span) else 1
    elif np.isnan(span):
        length = 0
    else:
        length = int(np.ceil(span)) if span > 0 else 0
    out = np.empty(length)
    if length > 0:
        out[0] = start
    if length > 1:
        out[1] = start + step
        delta = out[1] - out[0]
        for i in range(2, length):
            out[i] = start + i * delta
    return out


@numba.njit(cache=True, error_model="numpy")
def _error(aa, ab, bb, mean, k, folds, t_fold, r):  # pragma: no cover - compiled by numba
    """``FoldStatistics.error`` of ROI k at one r (same operations and order)."""
    total = 0.0
    for f in range(folds):
        squared = aa[k, f] - 2.0 * r * ab[k, f] + r * r * bb[k, f]
        if squared < 0.0:
            squared = 0.0
        total += np.abs(np.sqrt(squared / t_fold) / mean[k, f])
    return total / folds


@numba.njit(cache=True, error_model="numpy")
def grid_search(aa, ab, bb, mean, t_fold, lo0, hi0, dr, dr_factor, iterations, r_max, cap_tolerance):  # pragma: no cover
    """The coarse-to-fine search of ``grid_search_r`` for every ROI of the N x folds statistics.

    Returns r, error (inf when none is finite), at_cap (N each), and the evaluated r and errors of
    ROI k at ``offsets[k]`` .. ``offsets[k + 1]`` - 1 of two flat arrays.
    """
    n, folds = aa.shape
    best = np.full(n, np.nan)
    best_error = np.full(n, np.inf)
    at_cap = np.zeros(n, dtype=np.bool_)
    offsets = np.zeros(n + 1, dtype=np.int64)
    r_vals = np.empty(64 * max(n, 1))
    err_vals = np.empty(64 * max(n, 1))
    used = 0
    cap = r_max + cap_tolerance
    for k in range(n):
        lo, hi, step = lo0, hi0, dr
        counted = 0
        while counted < iterations:
            grid = _arange(lo, hi, step)
            kept = 0
            for i in range(grid.size):
                if grid[i] <= cap:
                    grid[kept] = grid[i]
                    kept += 1
            if kept == 0:
                at_cap[k] = True
                break
            if used + kept > r_vals.size:
                grown = max(2 * r_vals.size, used + kept)
                r_new = np.empty(grown)
                e_new = np.empty(grown)
                r_new[:used] = r_vals[:used]
                e_new[:used] = err_vals[:used]
                r_vals, err_vals = r_new, e_new
            i_min = 0
            for i in range(kept):
                err = _error(aa, ab, bb, mean, k, folds, t_fold, grid[i])
                if not np.isfinite(err):
                    err = np.inf
                r_vals[used + i] = grid[i]
                err_vals[used + i] = err
                if err < err_vals[used + i_min]:
                    i_min = i
            min_err = err_vals[used + i_min]
            used += kept
            if min_err < best_error[k]:
                best_error[k] = min_err
                best[k] = grid[i_min]
            if i_min == kept - 1:
                if grid[kept - 1] >= r_max - cap_tolerance or kept < grid.size or not np.isfinite(min_err):
                    at_cap[k] = np.isfinite(min_err)
                    break
                width = grid[kept - 1] - grid[0] if kept > 1 else step
                if grid[kept - 1] == lo and grid[kept - 1] + width == hi:
                    width = 2.0 * width
                lo, hi = grid[kept - 1], grid[kept - 1] + width
            else:
                lo, hi = grid[max(i_min - 1, 0)], grid[min(i_min + 1, kept - 1)]
                step *= dr_factor
                counted += 1
        if np.isfinite(best[k]) and best[k] < 0:
            best[k] = 0.0
        offsets[k + 1] = used
    return best, best_error, at_cap, offsets, r_vals[:used], err_vals[:used]


@numba.njit(nogil=True, cache=True, error_model="numpy")
def bad_counts(fm, fn, out, first, stop):  # pragma: no cover - compiled by numba
    """out[i] = number of frames of row i where ``fm`` or ``fn`` is not finite (rows ``first`` .. ``stop`` - 1)."""
    for i in range(first, stop):
        count = 0
        for t in range(fm.shape[1]):
            if not (np.isfinite(fm[i, t]) and np.isfinite(fn[i, t])):
                count += 1
        out[i] = count


@numba.njit(nogil=True, cache=True, error_model="numpy")
def corrected_rows(fm, fn, r, out, means, first, stop):  # pragma: no cover - compiled by numba
    """out[i] = fm[i] - r[i] * fn[i] (numpy's rounding: product, then difference) and means[i] =
    ``np.nanmean(out[i])`` (pairwise sum with NaN as 0, divided by the count of the others) for rows
    ``first`` .. ``stop`` - 1."""
    n = fm.shape[1]
    for i in range(first, stop):
        ri = r[i]
        row = out[i]
        count = 0
        for t in range(n):
            value = fm[i, t] - ri * fn[i, t]
            row[t] = value
            if not np.isnan(value):
                count += 1
        means[i] = (0.0 + pairwise_sum(row, 0, n, True)) / count


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _pairwise_leaf(a, start, n, nan_as_zero):  # pragma: no cover - compiled by numba
    """numpy's pairwise sum of at most 128 values: sequential below 8, else 8 accumulators."""
    if n < 8:
        res = 0.0
        for i in range(start, start + n):
            res += _value(a[i], nan_as_zero)
        return res
    r0 = _value(a[start], nan_as_zero)
    r1 = _value(a[start + 1], nan_as_zero)
    r2 = _value(a[start + 2], nan_as_zero)
    r3 = _value(a[start + 3], nan_as_zero)
    r4 = _value(a[start + 4], nan_as_zero)
    r5 = _value(a[start + 5], nan_as_zero)
    r6 = _value(a[start + 6], nan_as_zero)
    r7 = _value(a[start + 7], nan_as_zero)
    whole = n - n % 8
    for i in range(start + 8, start + whole, 8):
        r0 += _value(a[i], nan_as_zero)
        r1 += _value(a[i + 1], nan_as_zero)
        r2 += _value(a[i + 2], nan_as_zero)
        r3 += _value(a[i + 3], nan_as_zero)
        r4 += _value(a[i + 4], nan_as_zero)
        r5 += _value(a[i + 5], nan_as_zero)
        r6 += _value(a[i + 6], nan_as_zero)
        r7 += _value(a[i + 7], nan_as_zero)
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    for i in range(start + whole, start + n):
        res += _value(a[i], nan_as_zero)
    return res


@numba.njit(nogil=True, cache=True, error_model="numpy")
def pairwise_sum(a, start, n, nan_as_zero):  # pragma: no cover - compiled by numba
    """Sum of a[start:start + n] in the order of numpy's pairwise summation (``np.add.reduce`` of a
    contiguous float64 row): blocks of at most 128 values (:func:`_pairwise_leaf`), larger ranges split
    in two at half the length rounded down to a multiple of 8, the halves' sums added; NaN counts as 0
    with ``nan_as_zero``. The recursion runs on explicit stacks (numba's cache and recursion do not mix)."""
    if n <= 128:
        return _pairwise_leaf(a, start, n, nan_as_zero)
    depth = 64
    starts = np.empty(depth, dtype=np.int64)
    lengths = np.empty(depth, dtype=np.int64)
    stages = np.empty(depth, dtype=np.int64)
    sums = np.empty(depth)
    top = 0
    values = 0
    starts[0], lengths[0], stages[0] = start, n, 0
    while top >= 0:
        length = lengths[top]
        if length <= 128:
            sums[values] = _pairwise_leaf(a, starts[top], length, nan_as_zero)
            values += 1
            top -= 1
            continue
        half = length // 2
        half -= half % 8
        if stages[top] == 0:
            stages[top] = 1
            top += 1
            starts[top], lengths[top], stages[top] = starts[top - 1], half, 0
        elif stages[top] == 1:
            stages[top] = 2
            top += 1
            starts[top], lengths[top], stages[top] = starts[top - 1] + half, length - half, 0
        else:
            values -= 1
            sums[values - 1] = sums[values - 1] + sums[values]
            top -= 1
    return sums[0]


@numba.njit(nogil=True, cache=True, inline="always")
def _value(x, nan_as_zero):  # pragma: no cover - compiled by numba
    return 0.0 if nan_as_zero and np.isnan(x) else x


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _interpolate_run(values, out, before, after, first, stop):  # pragma: no cover - compiled by numba
    """out[first:stop] from the good frames ``before`` and ``after`` (-1 / n: none) as ``np.interp``
    computes them (slope from the left point; from the right one if that gives NaN)."""
    if before < 0:
        for t in range(first, stop):
            out[t] = values[after]
        return
    if after >= values.size:
        for t in range(first, stop):
            out[t] = values[before]
        return
    left = values[before]
    right = values[after]
    slope = (right - left) / (float(after) - float(before))
    for t in range(first, stop):
        value = slope * (float(t) - float(before)) + left
        if np.isnan(value):
            value = slope * (float(t) - float(after)) + right
            if np.isnan(value) and left == right:
                value = left
        out[t] = value


@numba.njit(nogil=True, cache=True, error_model="numpy")
def fill_row(m, v, mo, vo):  # pragma: no cover - compiled by numba
    """``m`` and ``v`` into ``mo`` and ``vo`` with the frames where either is not finite linearly
    interpolated from the frames where both are (``fill_nan_linear`` of the rows with those frames set
    to NaN: np.interp's values, the end values held); all NaN without a good frame."""
    n = m.size
    previous = -1  # last good frame
    t = 0
    while t < n:
        if np.isfinite(m[t]) and np.isfinite(v[t]):
            mo[t] = m[t]
            vo[t] = v[t]
            previous = t
            t += 1
            continue
        run_end = t + 1
        while run_end < n and not (np.isfinite(m[run_end]) and np.isfinite(v[run_end])):
            run_end += 1
        if previous < 0 and run_end >= n:  # no good frame at all
            for s in range(n):
                mo[s] = np.nan
                vo[s] = np.nan
            return
        _interpolate_run(m, mo, previous, run_end, t, run_end)
        _interpolate_run(v, vo, previous, run_end, t, run_end)
        t = run_end


@numba.njit(nogil=True, cache=True, error_model="numpy")
def fill_rows(fm, fn, picked, fm_out, fn_out, first, stop):  # pragma: no cover - compiled by numba
    """:func:`fill_row` of rows ``picked[k]`` of ``fm``, ``fn`` into row k of the outputs, k = ``first`` .. ``stop`` - 1."""
    for k in range(first, stop):
        fill_row(fm[picked[k]], fn[picked[k]], fm_out[k], fn_out[k])


