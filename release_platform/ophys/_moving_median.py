"""Compiled running medians and robust noise statistics of :mod:`release_platform.ophys.dff`
(imported on first use: numba is heavy).

A running median is a selection, so any correct algorithm returns the same values; where a window
holds an even number of samples (NaN-aware windows) the two middle values are combined as
``(lower + upper) / 2``, which is bit-identical to bottleneck's ``move_median`` and ``nanmedian``.

Two window algorithms, chosen by window length:

* short windows keep the window's finite samples in a sorted buffer (binary search, one shift per
  inserted or removed sample: O(W) per frame with a very small constant);
* long windows rank-transform the padded row once (one sort, O(T log T)); the window is then a set
  of ranks held in a two-level bitset (one bit per rank, one summary bit per 64-rank word), and
  the median rank moves incrementally by at most a few present ranks per frame, found with
  trailing/leading-zero counts: O(1) per frame after the sort.
"""

import numba
import numpy as np
from numba.cpython.unsafe.numbers import leading_zeros, trailing_zeros

#: windows up to this many frames use the sorted buffer, longer ones the rank bitset
SORTED_BUFFER_MAX_WINDOW = 400

_ALL = np.uint64(0xFFFFFFFFFFFFFFFF)
_ONE = np.uint64(1)


# ------------------------------------------------------------------------------------------ padding


@numba.njit(nogil=True, cache=True)
def _pad_row(x, half, reflect, out):  # pragma: no cover - compiled by numba
    """``out`` = ``x`` padded by ``half`` samples each side: zeros, or numpy's "symmetric" reflection
    (d c b a | a b c d | d c b a | a b ..., periodic with period 2T for pads longer than the row)."""
    t = x.size
    period = 2 * t
    for j in range(out.size):
        i = j - half
        if 0 <= i < t:
            out[j] = x[i]
        elif reflect:
            m = i % period
            out[j] = x[m] if m < t else x[period - 1 - m]
        else:
            out[j] = 0.0


# ------------------------------------------------------------------------------ short windows: buffer


@numba.njit(nogil=True, cache=True, inline="always")
def _lower_bound(buf, n, v):  # pragma: no cover - compiled by numba
    """First index i < n with buf[i] >= v (n if none); buf[:n] sorted, no NaN."""
    if n == 0:
        return 0
    base = 0
    while n > 1:
        half = n >> 1
        if buf[base + half] < v:
            base += half
        n -= half
    return base + (1 if buf[base] < v else 0)


@numba.njit(nogil=True, cache=True)
def _median_sorted_buffer(p, w, min_count, buf, out):  # pragma: no cover - compiled by numba
    """``out[k]`` = median of the finite samples of ``p[k:k + w]`` (NaN if fewer than ``min_count``)."""
    n_out = p.size - w + 1
    c = 0
    for k in range(-w + 1, n_out):
        v = p[k + w - 1]  # enters
        u = p[k - 1] if k >= 1 else np.nan  # leaves
        if v == v and u == u:
            # replace u by v in place and move v to its sorted position: one pass over the values between
            i = _lower_bound(buf, c, u)
            if v > u:
                while i + 1 < c and buf[i + 1] < v:
                    buf[i] = buf[i + 1]
                    i += 1
            else:
                while i > 0 and buf[i - 1] > v:
                    buf[i] = buf[i - 1]
                    i -= 1
            buf[i] = v
        elif v == v:
            i = c
            while i > 0 and buf[i - 1] > v:
                buf[i] = buf[i - 1]
                i -= 1
            buf[i] = v
            c += 1
        elif u == u:
            i = _lower_bound(buf, c, u)
            c -= 1
            while i < c:
                buf[i] = buf[i + 1]
                i += 1
        if k < 0:
            continue
        if c < min_count or c == 0:
            out[k] = np.nan
        elif c & 1:
            out[k] = buf[c >> 1]
        else:
            out[k] = (buf[(c >> 1) - 1] + buf[c >> 1]) / 2.0


# ------------------------------------------------------------------------------- long windows: ranks


@numba.njit(nogil=True, cache=True, inline="always")
def _next_present(bits, summary, r, n):  # pragma: no cover - compiled by numba
    """Smallest present rank >= ``r`` (``n`` if none)."""
    if r >= n:
        return n
    w = r >> 6
    b = bits[w] & (_ALL << np.uint64(r & 63))
    if b != 0:
        return (w << 6) + np.int64(trailing_zeros(b))
    w += 1
    sw = w >> 6
    if sw >= summary.size:
        return n
    s = summary[sw] & (_ALL << np.uint64(w & 63))
    while s == 0:
        sw += 1
        if sw >= summary.size:
            return n
        s = summary[sw]
    w = (sw << 6) + np.int64(trailing_zeros(s))
    return (w << 6) + np.int64(trailing_zeros(bits[w]))


@numba.njit(nogil=True, cache=True, inline="always")
def _prev_present(bits, summary, r):  # pragma: no cover - compiled by numba
    """Largest present rank <= ``r`` (-1 if none)."""
    if r < 0:
        return -1
    w = r >> 6
    b = bits[w] & (_ALL >> np.uint64(63 - (r & 63)))
    if b != 0:
        return (w << 6) + 63 - np.int64(leading_zeros(b))
    w -= 1
    if w < 0:
        return -1
    sw = w >> 6
    s = summary[sw] & (_ALL >> np.uint64(63 - (w & 63)))
    while s == 0:
        sw -= 1
        if sw < 0:
            return -1
        s = summary[sw]
    w = (sw << 6) + 63 - np.int64(leading_zeros(s))
    return (w << 6) + 63 - np.int64(leading_zeros(bits[w]))


@numba.njit(nogil=True, cache=True, inline="always")
def _insert(bits, summary, r):  # pragma: no cover - compiled by numba
    w = r >> 6
    bits[w] |= _ONE << np.uint64(r & 63)
    summary[w >> 6] |= _ONE << np.uint64(w & 63)


@numba.njit(nogil=True, cache=True, inline="always")
def _remove(bits, summary, r):  # pragma: no cover - compiled by numba
    w = r >> 6
    bits[w] &= ~(_ONE << np.uint64(r & 63))
    if bits[w] == 0:
        summary[w >> 6] &= ~(_ONE << np.uint64(w & 63))


@numba.njit(nogil=True, cache=True)
def _median_ranks(p, w, min_count, rank, values, out):  # pragma: no cover - compiled by numba
    """Same result as :func:`_median_sorted_buffer`, by ranks (see module docstring).

    ``rank`` (int64, ``p.size``) and ``values`` (float64, ``p.size``) are scratch.
    """
    length = p.size
    n_out = length - w + 1
    n = 0
    for j in range(length):
        v = p[j]
        if v == v:
            values[n] = v
            rank[j] = n
            n += 1
        else:
            rank[j] = -1
    order = np.argsort(values[:n])
    # rank[j] currently holds the index of sample j among the finite samples; make it its rank
    position = np.empty(n, dtype=np.int64)
    for r in range(n):
        position[order[r]] = r
    sorted_values = values[:n][order]
    for j in range(length):
        if rank[j] >= 0:
            rank[j] = position[rank[j]]
    n_words = (n + 63) >> 6
    bits = np.zeros(max(n_words, 1), dtype=np.uint64)
    summary = np.zeros(max((n_words + 63) >> 6, 1), dtype=np.uint64)

    m = 0  # the lower median rank once balanced (any position while unbalanced)
    below = 0  # number of present ranks < m
    c = 0  # number of present ranks
    for j in range(w - 1):
        r = rank[j]
        if r >= 0:
            _insert(bits, summary, r)
            c += 1
            if r < m:
                below += 1
    for k in range(n_out):
        r = rank[k + w - 1]
        if r >= 0:
            _insert(bits, summary, r)
            c += 1
            if r < m:
                below += 1
        if c < min_count or c == 0:
            out[k] = np.nan
        else:
            target = (c - 1) >> 1
            if below > target:
                while below > target:
                    m = _prev_present(bits, summary, m - 1)
                    below -= 1
            else:
                if m >= n or (bits[m >> 6] >> np.uint64(m & 63)) & _ONE == 0:
                    m = _next_present(bits, summary, m, n)
                while below < target:
                    m = _next_present(bits, summary, m + 1, n)
                    below += 1
            if c & 1:
                out[k] = sorted_values[m]
            else:
                out[k] = (sorted_values[m] + sorted_values[_next_present(bits, summary, m + 1, n)]) / 2.0
        r = rank[k]
        if r >= 0:
            _remove(bits, summary, r)
            c -= 1
            if r < m:
                below -= 1


@numba.njit(nogil=True, cache=True)
def median_filter_rows(x, window, reflect, min_count, out):  # pragma: no cover - compiled by numba
    """``out[i]`` = centred running median of row ``x[i]`` over ``window`` (odd) frames, the row padded
    with ``window // 2`` zeros (or reflected samples with ``reflect``) at each end; windows with fewer
    than ``min_count`` finite samples give NaN."""
    n_rows, t = x.shape
    half = window // 2
    padded = np.empty(t + 2 * half)
    if window <= SORTED_BUFFER_MAX_WINDOW:
        buf = np.empty(window)
        for i in range(n_rows):
            _pad_row(x[i], half, reflect, padded)
            _median_sorted_buffer(padded, window, min_count, buf, out[i])
    else:
        rank = np.empty(padded.size, dtype=np.int64)
        values = np.empty(padded.size)
        for i in range(n_rows):
            _pad_row(x[i], half, reflect, padded)
            _median_ranks(padded, window, min_count, rank, values, out[i])


# ------------------------------------------------------------------------------------ noise statistics


@numba.njit(nogil=True, cache=True)
def _median_of(a, n):  # pragma: no cover - compiled by numba
    """Median of ``a[:n]`` (finite or infinite, no NaN; NaN if n == 0); reorders ``a[:n]``."""
    if n == 0:
        return np.nan
    k = n >> 1
    part = np.partition(a[:n], k)
    upper = part[k]
    if n & 1:
        return upper
    lower = part[0]
    for i in range(1, k):
        if part[i] > lower:
            lower = part[i]
    return (lower + upper) / 2.0


@numba.njit(nogil=True, cache=True)
def _robust_std(a, n, scratch, scale):  # pragma: no cover - compiled by numba
    """``scale`` x median absolute deviation of ``a[:n]``; ``a`` is left unchanged."""
    for i in range(n):
        scratch[i] = a[i]
    centre = _median_of(scratch, n)
    for i in range(n):
        scratch[i] = abs(a[i] - centre)
    return scale * _median_of(scratch, n)


@numba.njit(nogil=True, cache=True)
def noise_std_rows(x, filtered, peak_scale, outlier_scale, mad_scale, out):  # pragma: no cover - compiled by numba
    """Robust noise standard deviation of each row of ``x`` given its running median ``filtered``.

    residual = x - filtered (NaN frames ignored); keep residuals < peak_scale |min residual|;
    s1 = mad_scale MAD; keep those with |residual| < outlier_scale s1; out = mad_scale MAD of them.
    """
    n_rows, t = x.shape
    kept = np.empty(t)
    scratch = np.empty(t)
    for i in range(n_rows):
        minimum = np.inf
        finite = 0
        for j in range(t):
            r = x[i, j] - filtered[i, j]
            scratch[j] = r
            if r == r:
                finite += 1
                if r < minimum:
                    minimum = r
        if finite == 0:
            out[i] = np.nan
            continue
        limit = peak_scale * abs(minimum)
        n = 0
        for j in range(t):
            r = scratch[j]
            if r < limit:
                kept[n] = r
                n += 1
        first = _robust_std(kept, n, scratch, mad_scale)
        limit = outlier_scale * first
        m = 0
        for j in range(n):
            if abs(kept[j]) < limit:
                kept[m] = kept[j]
                m += 1
        out[i] = _robust_std(kept, m, scratch, mad_scale)
