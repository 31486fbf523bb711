"""The compiled kernels of :mod:`release_platform.ophys.streaming` (imported on first use: numba is heavy).

Both kernels compute ``out[i, k]`` = the sum of frame ``block[k]`` over the vertical runs of mask ``i``,
with exact integer arithmetic, by a sweep down the rows of a group of ``group`` frames at once (see
:mod:`release_platform.ophys.streaming` for the event layout). :func:`sweep_sums` runs on the calling
thread; :func:`sweep_sums_parallel` splits the block's frames over numba's worker threads.
"""

import numba


@numba.njit(nogil=True, cache=True)
def _sweep(block, t0, t1, ev_ptr, ev_col, ev_mask, out, colsum, acc):  # pragma: no cover - compiled by numba
    """Frames ``t0 .. t1 - 1`` of ``block`` (at most ``colsum.shape[0]`` of them) into ``out[:, t0:t1]``.

    ``colsum`` (group x width) holds, per frame of the group, the column sums of the rows swept so far;
    ``acc`` (n_masks x group, int64) the per-mask totals. At row ``r`` (before adding it) the events
    ``ev_ptr[2r] .. ev_ptr[2r + 1] - 1`` add ``colsum[:, ev_col[e]]`` to mask ``ev_mask[e]`` (runs ending
    at r) and ``ev_ptr[2r + 1] .. ev_ptr[2r + 2] - 1`` subtract it (runs starting at r).
    """
    height = block.shape[1]
    width = block.shape[2]
    n_masks = acc.shape[0]
    nf = t1 - t0
    for f in range(nf):
        for c in range(width):
            colsum[f, c] = 0
    for i in range(n_masks):
        for f in range(nf):
            acc[i, f] = 0
    for r in range(height + 1):
        for e in range(ev_ptr[2 * r], ev_ptr[2 * r + 1]):
            c = ev_col[e]
            i = ev_mask[e]
            for f in range(nf):
                acc[i, f] += colsum[f, c]
        for e in range(ev_ptr[2 * r + 1], ev_ptr[2 * r + 2]):
            c = ev_col[e]
            i = ev_mask[e]
            for f in range(nf):
                acc[i, f] -= colsum[f, c]
        if r < height:
            for f in range(nf):
                row = block[t0 + f, r]
                line = colsum[f]
                for c in range(width):
                    line[c] += row[c]
    for i in range(n_masks):
        for f in range(nf):
            out[i, t0 + f] = acc[i, f]


@numba.njit(nogil=True, cache=True)
def sweep_sums(block, ev_ptr, ev_col, ev_mask, out, colsum, acc):  # pragma: no cover - compiled by numba
    """``out[i, k]`` = sum of frame ``block[k]`` over the runs of mask i, ``colsum.shape[0]`` frames per sweep."""
    group = colsum.shape[0]
    n_frames = block.shape[0]
    for t0 in range(0, n_frames, group):
        _sweep(block, t0, min(n_frames, t0 + group), ev_ptr, ev_col, ev_mask, out, colsum, acc)


@numba.njit(nogil=True, cache=True, parallel=True)
def sweep_sums_parallel(block, ev_ptr, ev_col, ev_mask, out, colsum, acc):  # pragma: no cover - compiled by numba
    """As :func:`sweep_sums`, the block's sweeps shared out over ``colsum.shape[0]`` workers.

    ``colsum`` (workers x group x width) and ``acc`` (workers x n_masks x group) are per-worker scratch.
    """
    n_workers = colsum.shape[0]
    group = colsum.shape[1]
    n_frames = block.shape[0]
    n_groups = (n_frames + group - 1) // group
    for w in numba.prange(n_workers):
        g0 = (n_groups * w) // n_workers
        g1 = (n_groups * (w + 1)) // n_workers
        for g in range(g0, g1):
            t0 = g * group
            _sweep(block, t0, min(n_frames, t0 + group), ev_ptr, ev_col, ev_mask, out, colsum[w], acc[w])
