"""The compiled solver of :mod:`release_platform.ophys.demixing` (imported on first use: numba is heavy)."""

import numba
import numpy as np


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _factor_solve(lu, b, min_rcond, rhs, perm, column_sums):  # pragma: no cover - compiled by numba
    """Factor ``lu`` (g x g, overwritten) and solve ``lu x = b`` (x in ``rhs[:, g]``); return a reciprocal
    condition number.

    Gaussian elimination with partial pivoting (the first row of largest magnitude in the column is
    the pivot, as LAPACK ``getrf``). The reciprocal 1-norm condition number ``1 / (|a|_1 |a^-1|_1)`` is
    first bounded from below with the comparison matrices of the factors, ``|T^-1| <= M(T)^-1``
    elementwise for triangular T (M(T): |diagonal|, minus |off-diagonal|), so
    ``|a^-1|_1 <= |M(L)^-1|_1 |M(U)^-1|_1``, each a single triangular solve. If that lower bound is above
    ``min_rcond`` it is returned; otherwise the inverse is formed from the factorization and the exact
    value returned: the inverse and the solution are obtained together by substituting the right-hand
    sides ``[P | P b]`` (P the row permutation) through L and U row by row (``rhs[:, :g]`` then holds
    the inverse). Returns 0 when a pivot is exactly zero (``rhs`` is then unspecified), NaN when undefined.
    """
    g = b.size
    for c in range(g):
        column_sums[c] = 0.0
    for i in range(g):
        perm[i] = i
        for c in range(g):
            column_sums[c] += abs(lu[i, c])
    a_norm = 0.0
    for c in range(g):
        if column_sums[c] > a_norm:
            a_norm = column_sums[c]
    for j in range(g):
        p = j
        largest = abs(lu[j, j])
        for i in range(j + 1, g):
            if abs(lu[i, j]) > largest:
                largest = abs(lu[i, j])
                p = i
        if lu[p, j] == 0.0:
            return 0.0
        if p != j:
            for c in range(g):
                swap = lu[j, c]
                lu[j, c] = lu[p, c]
                lu[p, c] = swap
            swap_index = perm[j]
            perm[j] = perm[p]
            perm[p] = swap_index
        pivot = lu[j, j]
        for i in range(j + 1, g):
            factor = lu[i, j] / pivot
            lu[i, j] = factor
            for c in range(j + 1, g):
                lu[i, c] -= factor * lu[j, c]
    # lower bound: |M(L)^-1|_1 is the largest z of M(L)^T z = e (z = the column sums of M(L)^-1 >= 0)
    bound_l = 0.0
    for j in range(g - 1, -1, -1):
        acc = 1.0
        for i in range(j + 1, g):
            acc += abs(lu[i, j]) * column_sums[i]
        column_sums[j] = acc
        if acc > bound_l:
            bound_l = acc
    bound_u = 0.0
    for j in range(g):
        acc = 1.0
        for i in range(j):
            acc += abs(lu[i, j]) * column_sums[i]
        acc /= abs(lu[j, j])
        column_sums[j] = acc
        if acc > bound_u:
            bound_u = acc
    rcond_lower = 1.0 / (a_norm * bound_l * bound_u)
    if rcond_lower > min_rcond:
        for i in range(g):
            rhs[i, g] = b[perm[i]]
        for i in range(1, g):
            acc = rhs[i, g]
            for m in range(i):
                acc -= lu[i, m] * rhs[m, g]
            rhs[i, g] = acc
        for i in range(g - 1, -1, -1):
            acc = rhs[i, g]
            for m in range(i + 1, g):
                acc -= lu[i, m] * rhs[m, g]
            rhs[i, g] = acc / lu[i, i]
        return rcond_lower
    for i in range(g):
        for c in range(g):
            rhs[i, c] = 0.0
        rhs[i, perm[i]] = 1.0
        rhs[i, g] = b[perm[i]]
    for i in range(1, g):  # L (unit lower triangular)
        for m in range(i):
            factor = lu[i, m]
            for c in range(g + 1):
                rhs[i, c] -= factor * rhs[m, c]
    for i in range(g - 1, -1, -1):  # U
        for m in range(i + 1, g):
            factor = lu[i, m]
            for c in range(g + 1):
                rhs[i, c] -= factor * rhs[m, c]
        pivot = lu[i, i]
        for c in range(g + 1):
            rhs[i, c] /= pivot
    for c in range(g):
        column_sums[c] = 0.0
    for i in range(g):
        for c in range(g):
            column_sums[c] += abs(rhs[i, c])
    inv_norm = 0.0
    for c in range(g):
        if column_sums[c] != column_sums[c]:  # NaN: the condition number is undefined
            return np.nan
        if column_sums[c] > inv_norm:
            inv_norm = column_sums[c]
    return 1.0 / (a_norm * inv_norm)


@numba.njit(nogil=True, cache=True, error_model="numpy")
def solve_small_systems(a, b, min_rcond, x, rcond):  # pragma: no cover - compiled by numba
    """Solve the stack ``a[k] x[k] = b[k]`` (``a`` K x g x g, ``b`` K x g) by :func:`_factor_solve`.

    Outputs ``x`` (K x g; unspecified where ``rcond[k]`` is 0) and ``rcond`` (K; exact where it is at
    most ``min_rcond``, otherwise a lower bound above it).
    """
    n_sys, g = b.shape
    lu = np.empty((g, g))
    rhs = np.empty((g, g + 1))
    perm = np.empty(g, dtype=np.int64)
    column_sums = np.empty(g)
    for k in range(n_sys):
        for i in range(g):
            for c in range(g):
                lu[i, c] = a[k, i, c]
        rcond[k] = _factor_solve(lu, b[k], min_rcond, rhs, perm, column_sums)
        for i in range(g):
            x[k, i] = rhs[i, g]


@numba.njit(nogil=True, cache=True, error_model="numpy")
def solve_overlap_groups(
    sums, raw, t0, npix, members, group_ptr, pair_rows, pos_ab, pos_ba, min_rcond, x, rcond, ok
):  # pragma: no cover - compiled by numba
    """Build and solve the demixing systems of G overlap groups of g ROIs over a block of frames.

    ``sums`` P x B pair sums of the block; ``raw`` N x T raw traces (the block starts at frame ``t0``);
    ``npix`` N mask sizes; ``members`` G x g ROI rows; the pairs of group i are entries
    ``group_ptr[i] .. group_ptr[i + 1] - 1`` of ``pair_rows`` (row in ``sums``), ``pos_ab`` and
    ``pos_ba`` (flat positions in the g x g matrix). For group i and frame t of the block the system is
    ``A x = w`` with ``w_j = raw[j] npix_j`` and ``A_ij = O_ij (npix_j / w_j)``, evaluated as in the
    numpy formulation (same operations, same order, so bit for bit the same matrix). Outputs (G x B):
    ``ok`` (every w_j finite and nonzero and A finite), ``rcond`` (of :func:`_factor_solve` with
    ``min_rcond``, where ok)
    and ``x`` (G x B x g, the solution where ok and rcond > 0; left untouched elsewhere).
    """
    n_groups, g = members.shape
    n_t = sums.shape[1]
    lu = np.empty((g, g))
    rhs = np.empty((g, g + 1))
    perm = np.empty(g, dtype=np.int64)
    column_sums = np.empty(g)
    overlap = np.empty(g * g)
    w = np.empty(g)
    scale = np.empty(g)
    for gi in range(n_groups):
        for t in range(n_t):
            for q in range(g * g):
                overlap[q] = 0.0
            for e in range(group_ptr[gi], group_ptr[gi + 1]):
                value = sums[pair_rows[e], t]
                overlap[pos_ab[e]] = value
                overlap[pos_ba[e]] = value
            good = True
            for j in range(g):
                row = members[gi, j]
                w[j] = raw[row, t0 + t] * npix[row]
                if not (np.isfinite(w[j]) and w[j] != 0.0):
                    good = False
                scale[j] = npix[row] / w[j]
            if good:
                for i in range(g):
                    for j in range(g):
                        value = overlap[i * g + j] * scale[j]
                        lu[i, j] = value
                        if not np.isfinite(value):
                            good = False
            ok[gi, t] = good
            if not good:
                continue
            rcond[gi, t] = _factor_solve(lu, w, min_rcond, rhs, perm, column_sums)
            if rcond[gi, t] != 0.0:
                for j in range(g):
                    x[gi, t, j] = rhs[j, g]
