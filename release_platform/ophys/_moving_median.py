"""Compiled running medians, order statistics and robust noise statistics of
:mod:`release_platform.ophys.dff` (imported on first use: numba is heavy).

A running median is a selection, so any correct algorithm returns the same values; where a window
holds an even number of samples (NaN-aware windows) the two middle values are combined as
``(lower + upper) / 2``, which is bit-identical to bottleneck's ``move_median`` and ``nanmedian``.

Each row is padded (zeros or numpy's "symmetric" reflection) for the longest window requested and
rank-transformed once (LSD radix sort of the IEEE bit patterns: O(T), no comparisons); every window
then slides over the ranks: the window is a set of ranks in a two-level bitset (one bit per rank,
one summary bit per 64-rank word) and the median (or any order statistic) rank moves incrementally,
a present rank at a time, found with trailing/leading-zero counts: constant work per frame for
long windows, a few word scans for short ones. Shorter windows reuse the ranks of the longest one's
padded row (its centre is their padded row); a window that leaves frames out (NaN, active frames)
slides over the same ranks with those frames masked.

Noise statistics take medians by selection: two pivots read off a sorted sample of 1,024 values
bracket the median, one pass gathers the values between them, quickselect finishes (all values if
the sample misled). The legacy estimator and the inactive-frame baseline run whole rows per call.
"""

import numba
import numpy as np
from numba.cpython.unsafe.numbers import leading_zeros, trailing_zeros

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


# ------------------------------------------------------------------------------------ rank windows


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


_DIGIT_BITS = 11
_N_DIGITS = 6  # 6 x 11 bits >= 64
_DIGIT_MASK = np.uint64((1 << _DIGIT_BITS) - 1)


@numba.njit(nogil=True, cache=True)
def _rank_row(p, rank, sorted_values, keys, keys2, idx, idx2, counts):  # pragma: no cover - compiled by numba
    """Give the finite samples of ``p`` the distinct ranks 0 .. n-1 in value order (ties in any order),
    NaN samples rank -1; ``sorted_values[r]`` is the value of rank r. Returns n.

    LSD radix sort of the IEEE bit patterns mapped to unsigned integers of the same order
    (negative: all bits flipped; positive: sign bit set), 11 bits per pass, passes whose digit is the
    same for every sample skipped. ``keys``/``keys2``/``idx``/``idx2`` (p.size) and ``counts``
    (6 x 2048 int64) are scratch.
    """
    bits = p.view(np.uint64)
    sign = np.uint64(1) << np.uint64(63)
    n = 0
    for j in range(p.size):
        v = p[j]
        if v == v:
            b = bits[j]
            keys[n] = ~b if b & sign else b | sign
            idx[n] = j
            n += 1
        else:
            rank[j] = -1
    counts[:, :] = 0
    for i in range(n):
        key = keys[i]
        for d in range(_N_DIGITS):
            counts[d, np.int64((key >> np.uint64(d * _DIGIT_BITS)) & _DIGIT_MASK)] += 1
    for d in range(_N_DIGITS):
        trivial = False
        for b in range(1 << _DIGIT_BITS):
            if counts[d, b] != 0:
                trivial = counts[d, b] == n
                break
        if trivial:
            continue
        total = 0
        for b in range(1 << _DIGIT_BITS):
            c = counts[d, b]
            counts[d, b] = total
            total += c
        shift = np.uint64(d * _DIGIT_BITS)
        for i in range(n):
            key = keys[i]
            b = np.int64((key >> shift) & _DIGIT_MASK)
            to = counts[d, b]
            counts[d, b] = to + 1
            keys2[to] = key
            idx2[to] = idx[i]
        keys, keys2 = keys2, keys
        idx, idx2 = idx2, idx
    for r in range(n):
        j = idx[r]
        rank[j] = r
        sorted_values[r] = p[j]
    return n


@numba.njit(nogil=True, cache=True)
def _median_ranks(rank, n, sorted_values, w, min_count, order, bits, summary, out):  # pragma: no cover - compiled by numba
    """``out[k]`` = median of the finite samples of window ``k`` (``w`` samples from ``k``) of a row
    given as ranks (see :func:`_rank_row`; -1 = NaN); NaN if fewer than ``min_count`` samples. With
    ``order`` >= 0 (windows without NaN only: ``min_count`` = ``w``) the ``order``-th smallest value instead.
    ``bits`` ((n + 63) // 64 words) and ``summary`` ((words + 63) // 64) are scratch."""
    length = rank.size
    n_out = length - w + 1
    bits[:] = 0
    summary[:] = 0
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
            target = (c - 1) >> 1 if order < 0 else order
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
            if c & 1 or order >= 0:
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
def _scratch(length):  # pragma: no cover - compiled by numba
    """Scratch arrays of :func:`_filters_row` for padded rows of up to ``length`` samples."""
    n_words = max((length + 63) >> 6, 1)
    return (
        np.empty(length),  # padded row
        np.empty(length, dtype=np.int32),  # ranks
        np.empty(length),  # values by rank
        np.empty(length, dtype=np.uint64),  # sort keys
        np.empty(length, dtype=np.uint64),
        np.empty(length, dtype=np.int32),  # sort indices
        np.empty(length, dtype=np.int32),
        np.empty((_N_DIGITS, 1 << _DIGIT_BITS), dtype=np.int64),  # digit counts
        np.empty(n_words, dtype=np.uint64),  # rank bitset
        np.empty(max((n_words + 63) >> 6, 1), dtype=np.uint64),  # its summary
    )


@numba.njit(nogil=True, cache=True)
def _filters_row(row, windows, reflect, min_counts, orders, scratch, out):  # pragma: no cover - compiled by numba
    """``out[f]`` = running median of ``row`` over ``windows[f]``, see :func:`median_filters_rows`."""
    padded, rank, sorted_values, keys, keys2, idx, idx2, counts, bits, summary = scratch
    longest = 1
    for f in range(windows.size):
        longest = max(longest, windows[f])
    pad = longest // 2
    length = row.size + 2 * pad
    _pad_row(row, pad, reflect, padded[:length])
    n = _rank_row(padded[:length], rank[:length], sorted_values, keys, keys2, idx, idx2, counts)
    words = max((n + 63) >> 6, 1)
    for f in range(windows.size):
        start = pad - windows[f] // 2
        _median_ranks(rank[start : length - start], n, sorted_values, windows[f], min_counts[f], orders[f],
                      bits[:words], summary[: max((words + 63) >> 6, 1)], out[f])


@numba.njit(nogil=True, cache=True)
def median_filters_rows(x, windows, reflect, min_counts, orders, out, first, stop):  # pragma: no cover - compiled by numba
    """``out[f, i]`` = centred running median of row ``x[i]`` over ``windows[f]`` (odd) frames, the row
    padded with ``windows[f] // 2`` zeros (or reflected samples with ``reflect``) at each end; windows
    with fewer than ``min_counts[f]`` finite samples give NaN; ``orders[f]`` >= 0 asks for that order
    statistic instead of the median (windows without NaN). Rows ``first`` .. ``stop - 1`` only."""
    n_rows, t = x.shape
    longest = 1
    for f in range(windows.size):
        longest = max(longest, windows[f])
    scratch = _scratch(t + 2 * (longest // 2))
    filtered = np.empty((windows.size, t))
    for i in range(first, stop):
        _filters_row(x[i], windows, reflect, min_counts, orders, scratch, filtered)
        for f in range(windows.size):
            out[f, i] = filtered[f]


# ------------------------------------------------------------------------------------ noise statistics


@numba.njit(nogil=True, cache=True)
def _select_in_place(a, n, k):  # pragma: no cover - compiled by numba
    """Reorder ``a[:n]`` (no NaN) so that ``a[k]`` is its k-th smallest value, ``a[:k] <= a[k] <= a[k + 1:n]``
    (quickselect, median-of-three pivots, Hoare partition)."""
    lo = 0
    hi = n - 1
    while hi > lo:
        mid = (lo + hi) >> 1
        if a[mid] < a[lo]:
            a[mid], a[lo] = a[lo], a[mid]
        if a[hi] < a[lo]:
            a[hi], a[lo] = a[lo], a[hi]
        if a[hi] < a[mid]:
            a[hi], a[mid] = a[mid], a[hi]
        pivot = a[mid]
        i = lo
        j = hi
        while i <= j:
            while a[i] < pivot:
                i += 1
            while a[j] > pivot:
                j -= 1
            if i <= j:
                a[i], a[j] = a[j], a[i]
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            break


_SAMPLE = 1024  # sample size of the two-pivot median below
_SAMPLE_MARGIN = 64  # sample ranks each side of the median rank (about 4 standard deviations)


@numba.njit(nogil=True, cache=True)
def _pivots(sample, s):  # pragma: no cover - compiled by numba
    """Two values bracketing the median of a sample ``sample[:s]`` (sorted here); (-inf, inf) for
    samples too small to trust."""
    if s < _SAMPLE // 2:
        return -np.inf, np.inf
    ordered = np.sort(sample[:s])
    middle = s >> 1
    return ordered[max(middle - _SAMPLE_MARGIN, 0)], ordered[min(middle + _SAMPLE_MARGIN, s - 1)]


@numba.njit(nogil=True, cache=True)
def _gathered_median(work, m, count, below, largest_below):  # pragma: no cover - compiled by numba
    """Median of ``count`` values of which ``below`` lie under the gathered ``work[:m]`` (the largest of
    them ``largest_below``) and the rest above; for an even count ``(lower + upper) / 2`` as bottleneck's
    ``nanmedian``. Reorders ``work[:m]``; the median rank must lie among the gathered values."""
    k = count >> 1
    kk = k - below
    _select_in_place(work, m, kk)
    upper = work[kk]
    if count & 1:
        return upper
    if kk == 0:
        return (largest_below + upper) / 2.0
    lower = work[0]
    for i in range(1, kk):
        if work[i] > lower:
            lower = work[i]
    return (lower + upper) / 2.0


@numba.njit(nogil=True, cache=True)
def _median_of(a, n, work, sample):  # pragma: no cover - compiled by numba
    """Median of ``a[:n]`` (no NaN; NaN if n == 0); ``a`` is left unchanged; ``work`` (n) and ``sample``
    (``_SAMPLE``) are scratch.

    Large inputs: two pivots bracketing the median are read off a sorted sample, one pass gathers the
    values between them (and counts and takes the largest of those below), and the selection runs on
    the gathered values only; if the sample misled (the median is not between the pivots) the
    selection runs on all values.
    """
    if n == 0:
        return np.nan
    low, high = -np.inf, np.inf
    if n >= 8 * _SAMPLE:
        step = n // _SAMPLE
        for q in range(_SAMPLE):
            sample[q] = a[q * step + (q * 7) % step]
        low, high = _pivots(sample, _SAMPLE)
    below = 0
    largest_below = -np.inf
    m = 0
    for i in range(n):  # written without unpredictable branches
        v = a[i]
        is_below = v < low
        below += 1 if is_below else 0
        candidate = v if is_below else -np.inf
        if candidate > largest_below:
            largest_below = candidate
        work[m] = v
        m += 1 if (v >= low and v <= high) else 0
    if not below <= (n >> 1) < below + m:  # the sample misled
        for i in range(n):
            work[i] = a[i]
        m = n
        below = 0
    return _gathered_median(work, m, n, below, largest_below)


@numba.njit(nogil=True, cache=True)
def _median_deviation(a, n, centre, work, sample):  # pragma: no cover - compiled by numba
    """Median of ``|a[:n] - centre|`` (no NaN in ``a``) as :func:`_median_of`, the deviations computed on
    the fly; NaN deviations (infinite values about an infinite centre) are ignored as by ``nanmedian``."""
    low, high = -np.inf, np.inf
    if n >= 8 * _SAMPLE:
        step = n // _SAMPLE
        s = 0
        for q in range(_SAMPLE):
            d = abs(a[q * step + (q * 7) % step] - centre)
            if d == d:
                sample[s] = d
                s += 1
        low, high = _pivots(sample, s)
    count = 0
    below = 0
    largest_below = -np.inf
    m = 0
    for i in range(n):
        d = abs(a[i] - centre)
        if d == d:
            count += 1
            is_below = d < low
            below += 1 if is_below else 0
            candidate = d if is_below else -np.inf
            if candidate > largest_below:
                largest_below = candidate
            work[m] = d
            m += 1 if (d >= low and d <= high) else 0
    if count == 0:
        return np.nan
    if not below <= (count >> 1) < below + m:  # the sample misled
        m = 0
        for i in range(n):
            d = abs(a[i] - centre)
            if d == d:
                work[m] = d
                m += 1
        below = 0
    return _gathered_median(work, m, count, below, largest_below)


@numba.njit(nogil=True, cache=True)
def _robust_std(a, n, work, sample, scale):  # pragma: no cover - compiled by numba
    """``scale`` x median absolute deviation of ``a[:n]`` (no NaN); ``a`` is left unchanged."""
    return scale * _median_deviation(a, n, _median_of(a, n, work, sample), work, sample)


@numba.njit(nogil=True, cache=True)
def _noise_std_row(row, filtered, peak_scale, outlier_scale, mad_scale, kept, scratch, work, sample, out):  # pragma: no cover - compiled by numba
    """``out[0]`` = robust noise standard deviation of ``row`` given its running median ``filtered``
    (see :func:`noise_std_rows`); ``kept``, ``scratch``, ``work`` (row.size) and ``sample`` are scratch."""
    t = row.size
    minimum = np.inf
    finite = 0
    for j in range(t):
        r = row[j] - filtered[j]
        scratch[j] = r
        if r == r:
            finite += 1
            if r < minimum:
                minimum = r
    if finite == 0:
        out[0] = np.nan
        return
    limit = peak_scale * abs(minimum)
    n = 0
    for j in range(t):
        r = scratch[j]
        if r < limit:
            kept[n] = r
            n += 1
    s1 = _robust_std(kept, n, work, sample, mad_scale)
    limit = outlier_scale * s1
    m = 0
    for j in range(n):
        if abs(kept[j]) < limit:
            kept[m] = kept[j]
            m += 1
    out[0] = _robust_std(kept, m, work, sample, mad_scale)


@numba.njit(nogil=True, cache=True)
def noise_std_rows(x, filtered, peak_scale, outlier_scale, mad_scale, out, first, stop):  # pragma: no cover - compiled by numba
    """Robust noise standard deviation of each row of ``x`` given its running median ``filtered``.

    residual = x - filtered (NaN frames ignored); keep residuals < peak_scale |min residual|;
    s1 = mad_scale MAD; keep those with |residual| < outlier_scale s1; out = mad_scale MAD of them.
    Rows ``first`` .. ``stop - 1`` only.
    """
    n_rows, t = x.shape
    kept = np.empty(t)
    scratch = np.empty(t)
    work = np.empty(t)
    sample = np.empty(_SAMPLE)
    for i in range(first, stop):
        _noise_std_row(x[i], filtered[i], peak_scale, outlier_scale, mad_scale, kept, scratch, work, sample, out[i:i + 1])


# ------------------------------------------------------------------------------------ legacy dF/F


@numba.njit(nogil=True, cache=True, inline="always")
def _np_maximum(a, b):  # pragma: no cover - compiled by numba
    """``np.maximum`` of two floats (NaN propagates)."""
    return a if (a >= b or a != a) else b


@numba.njit(nogil=True, cache=True, inline="always")
def _np_minimum(a, b):  # pragma: no cover - compiled by numba
    """``np.minimum`` of two floats (NaN propagates)."""
    return a if (a <= b or a != a) else b


@numba.njit(nogil=True, cache=True, error_model="numpy")
def legacy_dff_rows(x, long_k, short_k, noise_k, peak_scale, outlier_scale, mad_scale,
                    dff, sigma_dff, small, first, stop):  # pragma: no cover - compiled by numba
    """AllenSDK ``compute_dff_windowed_median`` for rows ``first`` .. ``stop - 1`` of ``x`` (finite rows),
    every operation as in the numpy formulation of :func:`release_platform.ophys.dff.allen_legacy`
    (zero padding; kernels odd): sigma_F = noise_std(F, noise_k); B = median(F, long_k);
    D = (F - B) / max(B, sigma_F); small = #(B <= sigma_F); sigma_D = noise_std(D, noise_k);
    dff = D - min(median(D, short_k), outlier_scale sigma_D). One row at a time in cache-sized scratch."""
    n_rows, t = x.shape
    first_windows = np.array([noise_k, long_k], dtype=np.int64)
    first_counts = np.array([1, long_k], dtype=np.int64)
    second_windows = np.array([noise_k, short_k], dtype=np.int64)
    second_counts = np.array([1, short_k], dtype=np.int64)
    medians = np.array([-1, -1], dtype=np.int64)
    longest = max(noise_k, max(long_k, short_k))
    scratch = _scratch(t + 2 * (longest // 2))
    filtered = np.empty((2, t))
    d = np.empty((1, t))
    kept = np.empty(t)
    deviation = np.empty(t)
    work = np.empty(t)
    sample = np.empty(_SAMPLE)
    sigma = np.empty(1)
    for i in range(first, stop):
        row = x[i]
        _filters_row(row, first_windows, False, first_counts, medians, scratch, filtered)
        _noise_std_row(row, filtered[0], peak_scale, outlier_scale, mad_scale, kept, deviation, work, sample, sigma)
        sigma_f = sigma[0]
        count = 0
        for j in range(t):
            b = filtered[1, j]
            d[0, j] = (row[j] - b) / _np_maximum(b, sigma_f)
            if b <= sigma_f:
                count += 1
        small[i] = count
        _filters_row(d[0], second_windows, False, second_counts, medians, scratch, filtered)
        _noise_std_row(d[0], filtered[0], peak_scale, outlier_scale, mad_scale, kept, deviation, work, sample, sigma)
        sigma_dff[i] = sigma[0]
        limit = outlier_scale * sigma[0]
        for j in range(t):
            dff[i, j] = d[0, j] - _np_minimum(filtered[1, j], limit)


# ------------------------------------------------------------------------------------ inactive-frame baseline


@numba.njit(nogil=True, cache=True, error_model="numpy")
def inactive_baseline_rows(x, short_k, long_k, order, threshold_sigma, peak_scale, outlier_scale, mad_scale,
                           sigma_f, baseline, first, stop):  # pragma: no cover - compiled by numba
    """The noise and the (unfilled) inactive-frame baseline of :func:`release_platform.ophys.dff.allen_inactive`
    for rows ``first`` .. ``stop - 1`` of ``x`` (rows without NaN or infinite values), reflect padding:
    sigma_F = noise_std(F, short_k); low = order statistic ``order`` of F over ``long_k``; frames with
    F > low + threshold_sigma sigma_F are active; ``baseline`` = median of the inactive frames over
    ``long_k`` (NaN where a window has none). Each row is rank-transformed once: the inactive median
    slides over the same ranks with the active frames left out."""
    n_rows, t = x.shape
    pad = max(short_k, long_k) // 2
    length = t + 2 * pad
    scratch = _scratch(length)
    padded, rank, sorted_values, keys, keys2, idx, idx2, counts, bits, summary = scratch
    masked = np.empty(length, dtype=np.int32)
    filtered = np.empty(t)
    low = np.empty(t)
    kept = np.empty(t)
    residual = np.empty(t)
    work = np.empty(t)
    sample = np.empty(_SAMPLE)
    sigma = np.empty(1)
    period = 2 * t
    for i in range(first, stop):
        row = x[i]
        _pad_row(row, pad, True, padded[:length])
        n = _rank_row(padded[:length], rank[:length], sorted_values, keys, keys2, idx, idx2, counts)
        words = max((n + 63) >> 6, 1)
        row_bits = bits[:words]
        row_summary = summary[: max((words + 63) >> 6, 1)]
        start = pad - short_k // 2
        _median_ranks(rank[start : length - start], n, sorted_values, short_k, 1, -1, row_bits, row_summary, filtered)
        _noise_std_row(row, filtered, peak_scale, outlier_scale, mad_scale, kept, residual, work, sample, sigma)
        sigma_f[i] = sigma[0]
        start = pad - long_k // 2
        _median_ranks(rank[start : length - start], n, sorted_values, long_k, long_k, order, row_bits, row_summary, low)
        margin = threshold_sigma * sigma[0]
        for j in range(length):
            source = j - pad
            if source < 0 or source >= t:
                source = source % period
                if source >= t:
                    source = period - 1 - source
            masked[j] = -1 if row[source] > low[source] + margin else rank[j]
        _median_ranks(masked[start : length - start], n, sorted_values, long_k, 1, -1, row_bits, row_summary, baseline[i])


@numba.njit(nogil=True, cache=True, error_model="numpy")
def scaled_noise_rows(x, baseline, sigma_f, short_k, reflect, peak_scale, outlier_scale, mad_scale,
                      dff, sigma_dff, small, first, stop):  # pragma: no cover - compiled by numba
    """For rows ``first`` .. ``stop - 1``: D = (F - B) / max(B, sigma_F) (``np.maximum``: NaN propagates),
    ``small`` = #(B <= sigma_F), ``sigma_dff`` = noise_std(D, short_k) with NaN-aware windows padded by
    reflection (``reflect``) or zeros, as the numpy formulation in :mod:`release_platform.ophys.dff`."""
    n_rows, t = x.shape
    scratch = _scratch(t + 2 * (short_k // 2))
    windows = np.array([short_k], dtype=np.int64)
    min_counts = np.array([1], dtype=np.int64)
    medians = np.array([-1], dtype=np.int64)
    filtered = np.empty((1, t))
    kept = np.empty(t)
    residual = np.empty(t)
    work = np.empty(t)
    sample = np.empty(_SAMPLE)
    sigma = np.empty(1)
    for i in range(first, stop):
        s = sigma_f[i]
        count = 0
        for j in range(t):
            b = baseline[i, j]
            dff[i, j] = (x[i, j] - b) / _np_maximum(b, s)
            if b <= s:
                count += 1
        small[i] = count
        _filters_row(dff[i], windows, reflect, min_counts, medians, scratch, filtered)
        _noise_std_row(dff[i], filtered[0], peak_scale, outlier_scale, mad_scale, kept, residual, work, sample, sigma)
        sigma_dff[i] = sigma[0]
