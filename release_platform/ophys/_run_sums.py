"""The compiled kernel of :mod:`release_platform.ophys.streaming` (imported on first use: numba is heavy)."""

import numba


@numba.njit(nogil=True, cache=True)
def run_sums(block, r0, r1, col, ptr, out, prefix):  # pragma: no cover - compiled by numba
    """``out[i, k]`` = sum of frame ``block[k]`` over the vertical runs ``ptr[i] .. ptr[i + 1] - 1`` of mask i.

    Run j covers rows ``r0[j] .. r1[j] - 1`` of column ``col[j]``. ``prefix`` ((h + 1) x w, integer) is
    scratch for one frame's column-wise prefix sums, ``prefix[r, c] = sum(frame[:r, c])``.
    """
    n_frames, height, width = block.shape
    n_masks = ptr.size - 1
    for k in range(n_frames):
        frame = block[k]
        for c in range(width):
            prefix[0, c] = 0
        for r in range(height):
            for c in range(width):
                prefix[r + 1, c] = prefix[r, c] + frame[r, c]
        for i in range(n_masks):
            acc = 0
            for j in range(ptr[i], ptr[i + 1]):
                acc += prefix[r1[j], col[j]] - prefix[r0[j], col[j]]
            out[i, k] = acc
