"""The compiled kernels of :mod:`release_platform.ophys.streaming` (imported on first use: numba is heavy).

Both kernels compute ``out[i, k]`` = the sum of frame ``block[k]`` over the vertical runs of mask ``i``,
with exact integer arithmetic, where the runs refer to the box of ``block`` whose top-left pixel is
``block[:, row0, col0]`` (the box is the whole block when both are 0; a block of whole frames mapped from
the movie file is swept in place, without copying the box out), by a sweep down the rows of a group of :data:`GROUP` frames at once (see
:mod:`release_platform.ophys.streaming` for the event layout). :func:`sweep_sums` runs on the calling
thread; :func:`sweep_sums_parallel` splits the block's frames over numba's worker threads.
"""

import numba
import numpy as np


GROUP = 4
"""Frames per sweep (``streaming.SWEEP_FRAMES``); a compile-time constant, so the per-event loop is unrolled."""


@numba.njit(nogil=True, cache=True, inline="always")
def _sweep_frames(block, row0, col0, t0, nf, ev_ptr, ev_col, ev_mask, out, colsum, acc):  # pragma: no cover - numba
    """Frames ``t0 .. t0 + nf - 1`` of ``block`` (``nf`` at most :data:`GROUP`) into ``out[:, t0:t0 + nf]``.

    The box swept is rows ``row0 ..`` and columns ``col0 ..`` of each frame, its height given by the
    events (``ev_ptr`` has ``2 (height + 1) + 1`` entries) and its width by ``colsum``. ``colsum`` (GROUP x width) holds, per frame of the group, the column sums of the rows swept so far;
    ``acc`` (n_masks x GROUP) the per-mask totals. At row ``r`` (before adding it) the events
    ``ev_ptr[2r] .. ev_ptr[2r + 1] - 1`` add ``colsum[:, ev_col[e]]`` to mask ``ev_mask[e]`` (runs ending
    at r) and ``ev_ptr[2r + 1] .. ev_ptr[2r + 2] - 1`` subtract it (runs starting at r). Integer
    overflow wraps (two's complement), so with int32 ``colsum`` and ``acc`` every total is exact modulo
    2**32: exact whenever the true sum lies in the int32 range. Inlined where it is called, so a call
    with ``nf = GROUP`` has constant trip counts (unrolled).
    """
    height = (ev_ptr.size - 1) // 2 - 1
    width = colsum.shape[1]
    n_masks = acc.shape[0]
    colsum[:, :] = 0
    acc[:, :] = 0
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
                # a slice, not row[col0 + c]: an offset index may be negative to numba, and its
                # wraparound check stops the loop from vectorizing (5x slower)
                row = block[t0 + f, row0 + r, col0 : col0 + width]
                line = colsum[f]
                for c in range(width):
                    line[c] += row[c]
    for i in range(n_masks):
        for f in range(nf):
            out[i, t0 + f] = acc[i, f]


@numba.njit(nogil=True, cache=True)
def _sweep(block, row0, col0, t0, t1, ev_ptr, ev_col, ev_mask, out, colsum, acc):  # pragma: no cover - compiled by numba
    """Frames ``t0 .. t1 - 1`` of ``block`` (at most :data:`GROUP`): a whole group with the constant
    :data:`GROUP` (unrolled), the shorter last group of a block with its own length."""
    if t1 - t0 == GROUP:
        _sweep_frames(block, row0, col0, t0, GROUP, ev_ptr, ev_col, ev_mask, out, colsum, acc)
    else:
        _sweep_frames(block, row0, col0, t0, t1 - t0, ev_ptr, ev_col, ev_mask, out, colsum, acc)


@numba.njit(nogil=True, cache=True)
def sweep_sums(block, row0, col0, ev_ptr, ev_col, ev_mask, out, colsum, acc):  # pragma: no cover - compiled by numba
    """``out[i, k]`` = sum of frame ``block[k]`` over the runs of mask i, :data:`GROUP` frames per sweep.

    The runs refer to the box at rows ``row0 ..``, columns ``col0 ..`` of each frame (see :func:`_sweep_frames`).

    ``colsum`` (GROUP x width) and ``acc`` (n_masks x GROUP) are scratch, both int32 (totals exact
    modulo 2**32) or both int64.
    """
    n_frames = block.shape[0]
    for t0 in range(0, n_frames, GROUP):
        _sweep(block, row0, col0, t0, min(n_frames, t0 + GROUP), ev_ptr, ev_col, ev_mask, out, colsum, acc)


@numba.njit(nogil=True, cache=True, parallel=True)
def sweep_sums_parallel(block, row0, col0, ev_ptr, ev_col, ev_mask, out, colsum, acc):  # pragma: no cover - compiled by numba
    """As :func:`sweep_sums`, the block's sweeps shared out over ``colsum.shape[0]`` workers.

    ``colsum`` (workers x GROUP x width) and ``acc`` (workers x n_masks x GROUP) are per-worker scratch.
    """
    n_workers = colsum.shape[0]
    n_frames = block.shape[0]
    n_groups = (n_frames + GROUP - 1) // GROUP
    for w in numba.prange(n_workers):
        g0 = (n_groups * w) // n_workers
        g1 = (n_groups * (w + 1)) // n_workers
        for g in range(g0, g1):
            t0 = g * GROUP
            _sweep(block, row0, col0, t0, min(n_frames, t0 + GROUP), ev_ptr, ev_col, ev_mask, out, colsum[w], acc[w])


@numba.njit(nogil=True, cache=True)
def vertical_runs(indptr, indices, width):  # pragma: no cover - compiled by numba
    """The vertical runs of the masks of a CSR matrix over row-major pixels (indices sorted within each mask).

    Returns ``(box, run_r0, run_r1, run_col, run_ptr)``: the masks' bounding box ``(row0, row1, col0, col1)``
    and, for mask ``i``, the runs ``run_ptr[i] .. run_ptr[i + 1] - 1``, run ``j`` covering rows
    ``run_r0[j] .. run_r1[j] - 1`` of box column ``run_col[j]``, in the order of their first pixel.
    """
    n_masks = indptr.size - 1
    nnz = indices.size
    row0, row1, col0, col1 = 1 << 62, 0, width, 0
    for k in range(nnz):
        r = indices[k] // width
        c = indices[k] - r * width
        row0 = min(row0, r)
        row1 = max(row1, r + 1)
        col0 = min(col0, c)
        col1 = max(col1, c + 1)
    box_width = max(0, col1 - col0)
    seen = np.full(box_width, -1, np.int64)  # the last mask with a pixel in this column
    last_row = np.zeros(box_width, np.int64)  # that pixel's row
    open_run = np.zeros(box_width, np.int64)  # the run it ends
    run_r0 = np.empty(nnz, np.int64)
    run_r1 = np.empty(nnz, np.int64)
    run_col = np.empty(nnz, np.int64)
    run_ptr = np.zeros(n_masks + 1, np.int64)
    n = 0
    for i in range(n_masks):
        for k in range(indptr[i], indptr[i + 1]):
            r = indices[k] // width
            c = indices[k] - r * width - col0
            r -= row0
            if seen[c] == i and last_row[c] == r - 1:
                run_r1[open_run[c]] = r + 1
            else:
                run_r0[n] = r
                run_r1[n] = r + 1
                run_col[n] = c
                open_run[c] = n
                n += 1
            seen[c] = i
            last_row[c] = r
        run_ptr[i + 1] = n
    return (row0, row1, col0, col1), run_r0[:n].copy(), run_r1[:n].copy(), run_col[:n].copy(), run_ptr
