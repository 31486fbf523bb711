"""dF/F estimators, selected by name from a registry.

Every estimator takes N x T traces (neuropil-corrected fluorescence, a.u.) and the frame rate in Hz
and returns a :class:`DffResult`: dF/F (dimensionless, N x T), sigma_dF/F (robust noise standard
deviation of each dF/F row) and the number of frames per ROI whose baseline is not larger than the
noise of F ("small baseline" frames, where dF/F is divided by the noise instead of the baseline).

Windows are given in seconds and converted at the session frame rate to odd frame counts:
``frames = round(rate * seconds)``, plus one if even (ophys_etl ``DffJobSchema``). The legacy
estimator keeps its kernels in frames, as AllenSDK did.

Estimators
----------
``allen_inactive`` (default; ophys_etl ``compute_dff_trace``)
    sigma_F = noise_std(F, short window); frames with F > P10(F, long window) + 3 sigma_F are
    "active"; the baseline B is the median of the inactive frames over the long window (600 s;
    windows with no inactive frame are linearly interpolated); dF/F = (F - B) / max(B, sigma_F);
    sigma_dF/F = noise_std(dF/F, short window). Filters use reflect padding.
``allen_legacy`` (AllenSDK 2.16.2 ``compute_dff_windowed_median``)
    Zero-padded ("constant") median filters with kernels in frames: long 5401, short 101, noise 31.
    B = median(F, long); D = (F - B) / max(B, sigma_F); sigma_D = noise_std(D); result =
    D - min(median(D, short), 2.5 sigma_D). Reproduced numerically; a row with any NaN is all NaN.
``maximin`` (Suite2p-style baseline)
    B = max_filter(min_filter(gaussian(F, sigma), window), window) with window 60 s and sigma
    1/3 s; dF/F = (F - B) / max(B, sigma_F).

NaN handling: an all-NaN row gives an all-NaN dF/F row, sigma NaN, 0 small-baseline frames and is
listed in ``DffResult.invalid_rows``. ``allen_inactive`` and ``maximin`` keep isolated NaN frames NaN
in the output and ignore them in the statistics; ``allen_legacy`` keeps the legacy rule (any NaN in
a row makes the whole row NaN, also listed as invalid).

``noise_std(x, k)``: residual = x - median_filter(x, k); drop residuals >= 1.5 |min(residual)|;
s1 = robust_std (1.4826 MAD); keep |residual| < 2.5 s1; return robust_std of those.
"""

from __future__ import annotations

import inspect
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import bottleneck as bn
import numpy as np
import scipy.ndimage as ndi

from release_platform.errors import InputError
from release_platform.ophys._nan import fill_nan_linear

GAUSSIAN_MAD_STD_SCALE = 1.4826
POSITIVE_PEAK_SCALE = 1.5
OUTLIER_STD_SCALE = 2.5

DEFAULT_METHOD = "allen_inactive"


# ----------------------------------------------------------------------------------------------
# result, protocol, registry


@dataclass(frozen=True)
class DffResult:
    """Output of a dF/F estimator.

    ``dff`` N x T (dimensionless), ``sigma_dff`` N, ``num_small_baseline_frames`` N (int),
    ``invalid_rows`` N booleans (rows whose output is all NaN because the input had no usable
    values), ``method`` and the resolved ``parameters`` (window lengths in frames included).
    """

    dff: np.ndarray
    sigma_dff: np.ndarray
    num_small_baseline_frames: np.ndarray
    invalid_rows: np.ndarray
    method: str
    parameters: dict[str, Any] = field(default_factory=dict)


class DffEstimator(Protocol):
    """A dF/F estimator: ``estimator(traces N x T, frame_rate_hz, **parameters) -> DffResult``.

    ``traces`` arrive as a float64 2-D array and ``frame_rate_hz`` as a positive finite float (both
    checked by :func:`compute_dff`); parameters are keyword-only with documented defaults.
    """

    def __call__(self, traces: np.ndarray, frame_rate_hz: float, **parameters: Any) -> DffResult: ...


_ESTIMATORS: dict[str, DffEstimator] = {}


def register_dff_estimator(name: str) -> Callable[[DffEstimator], DffEstimator]:
    """Decorator adding an estimator to the registry under ``name`` (names are unique)."""

    def decorate(function: DffEstimator) -> DffEstimator:
        if name in _ESTIMATORS:
            raise ValueError(f"a dF/F estimator named {name!r} is already registered")
        _ESTIMATORS[name] = function
        return function

    return decorate


def dff_estimators() -> tuple[str, ...]:
    """Names of the registered estimators."""
    return tuple(sorted(_ESTIMATORS))


def get_dff_estimator(name: str) -> DffEstimator:
    try:
        return _ESTIMATORS[name]
    except KeyError:
        raise InputError(f"unknown dF/F method {name!r}; available: {', '.join(dff_estimators())}") from None


def check_frame_rate(frame_rate_hz: Any) -> float:
    """The frame rate as a float; missing, non-numeric, non-finite or <= 0 -> InputError."""
    if frame_rate_hz is None:
        raise InputError("the movie frame rate is missing (movie_frame_rate_hz)")
    try:
        rate = float(frame_rate_hz)
    except (TypeError, ValueError):
        raise InputError(f"the movie frame rate {frame_rate_hz!r} is not a number") from None
    if not math.isfinite(rate) or rate <= 0:
        raise InputError(f"the movie frame rate must be positive and finite, got {frame_rate_hz!r}")
    return rate


def frames_from_seconds(seconds: Any, frame_rate_hz: float, *, name: str = "window") -> int:
    """Window length in frames: round(rate * seconds), made odd by adding 1 (ophys_etl rule)."""
    try:
        value = float(seconds)
    except (TypeError, ValueError):
        raise InputError(f"{name}={seconds!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise InputError(f"{name}={seconds!r} must be a positive number of seconds")
    frames = int(np.round(frame_rate_hz * value))
    return frames if frames % 2 else frames + 1


def longest_window_s(frame_rate_hz: float, n_frames: int) -> float:
    """The longest window in seconds whose odd frame count is still shorter than ``n_frames``.

    For recordings shorter than an estimator's default baseline window (e.g. a 600 s window on a
    20 s test session): callers that choose to clip say so in their output.
    """
    if n_frames < 3:
        raise InputError(f"traces of {n_frames} frames are too short for a baseline window")
    frames = n_frames - 1 if (n_frames - 1) % 2 else n_frames - 2
    return frames / float(frame_rate_hz)


def fit_long_window(method: str, frame_rate_hz: float, n_frames: int, requested_s: float | None = None) -> tuple[float | None, bool]:
    """The baseline window (s) to use for ``method`` on ``n_frames`` frames, and whether it was clipped.

    ``requested_s`` defaults to the estimator's own ``long_baseline_filter_s`` default; methods without
    that parameter (``allen_legacy``, kernels in frames) return ``(requested_s, False)``. A window not
    shorter than the traces is clipped to :func:`longest_window_s`.
    """
    estimator = get_dff_estimator(method)
    param = inspect.signature(estimator).parameters.get("long_baseline_filter_s")
    if param is None:
        return requested_s, False
    seconds = param.default if requested_s is None else requested_s
    if frames_from_seconds(seconds, frame_rate_hz, name="long_baseline_filter_s") < n_frames:
        return float(seconds), False
    return longest_window_s(frame_rate_hz, n_frames), True


def check_kernel(length: Any, n_frames: int, *, name: str, allow_longer: bool = False) -> int:
    """A filter length in frames: a positive odd integer, shorter than the trace unless allowed."""
    if isinstance(length, (bool, np.bool_)) or not isinstance(length, (int, np.integer)):
        raise InputError(f"{name}={length!r} must be an integer number of frames")
    length = int(length)
    if length <= 0 or length % 2 == 0:
        raise InputError(f"{name}={length} frames is invalid: a median kernel must be positive and odd")
    if not allow_longer and length >= n_frames:
        raise InputError(f"{name}={length} frames is not shorter than the traces ({n_frames} frames)")
    return length


def compute_dff(
    traces: np.ndarray, frame_rate_hz: Any, method: str = DEFAULT_METHOD, **parameters: Any
) -> DffResult:
    """dF/F of N x T ``traces`` (a 1-D trace is one row) with the estimator ``method``.

    Unknown methods, parameters the method does not take, a bad frame rate, a non-numeric or
    non-2-D input and impossible windows raise InputError.
    """
    estimator = get_dff_estimator(method)
    rate = check_frame_rate(frame_rate_hz)
    array = np.asarray(traces)
    if array.dtype.kind not in "biuf":
        raise InputError(f"traces must be numeric, got dtype {array.dtype}")
    array = np.atleast_2d(np.asarray(array, dtype=np.float64))  # no copy: estimators never write to it
    if array.ndim != 2:
        raise InputError(f"traces must be N x T, got shape {array.shape}")
    if array.shape[1] < 1:
        raise InputError("traces have no frames")
    accepted = {
        p.name for p in inspect.signature(estimator).parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY
    }
    unknown = sorted(set(parameters) - accepted)
    if unknown:
        raise InputError(
            f"dF/F method {method!r} does not take {', '.join(unknown)}; it takes {', '.join(sorted(accepted))}"
        )
    return estimator(array, rate, **parameters)


# ----------------------------------------------------------------------------------------------
# vectorized building blocks (rows = ROIs, axis 1 = frames)


#: engine of the running medians, order statistics and noise statistics (:func:`median_filter_rows`,
#: :func:`percentile_filter_rows`, :func:`noise_std_rows`, the legacy estimator): "compiled" (numba
#: kernels of :mod:`release_platform.ophys._moving_median`, one thread per CPU over the rows) or
#: "bottleneck" (the reference they equal bit for bit: ``bn.move_median`` on padded rows,
#: ``bn.nanmedian``, scipy's ``percentile_filter``)
MEDIAN_ENGINES = ("compiled", "bottleneck")
MEDIAN_ENGINE = "compiled"


def _engine(engine: str | None) -> str:
    chosen = MEDIAN_ENGINE if engine is None else engine
    if chosen not in MEDIAN_ENGINES:
        raise ValueError(f"unknown median engine {chosen!r}; available: {', '.join(MEDIAN_ENGINES)}")
    return chosen


def _kernels():
    """The compiled kernels (numba is imported, and the kernels loaded from its cache or compiled, on first use)."""
    from release_platform.ophys import _moving_median

    return _moving_median


def load_kernels() -> None:
    """Import numba and load (or compile) the compiled dF/F kernels now: a once-per-process cost (compiled
    code is cached on disk) that benchmarks keep out of their timings."""
    row = np.linspace(1.0, 2.0, 8)[None, :]
    for method, kwargs in (("allen_legacy", {"median_kernel_long": 5, "median_kernel_short": 3, "noise_kernel_length": 3}),
                           ("allen_inactive", {"long_baseline_filter_s": 5 / 30, "short_filter_s": 3 / 30})):
        compute_dff(row, 30.0, method=method, **kwargs)


#: rows per thread below which a compiled kernel runs on the calling thread only
_MIN_ROWS_PER_THREAD = 2


def _by_row_chunks(kernel: Callable[..., None], n_rows: int, *args: Any) -> None:
    """Run ``kernel(*args, first, stop)`` over rows 0 .. n_rows - 1, split into one contiguous chunk per
    available CPU (the kernels release the GIL and write disjoint rows of their outputs)."""
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


def median_filter_rows(
    traces: np.ndarray, kernel: int, *, mode: str, nan_aware: bool = False, engine: str | None = None
) -> np.ndarray:
    """Centred running median of each row over ``kernel`` (odd) frames.

    ``mode="constant"`` pads with zeros (scipy ``median_filter(mode="constant")``), ``"reflect"``
    mirrors the edges (scipy ``mode="reflect"``, d c b a | a b c d). With ``nan_aware`` NaN samples are
    ignored (median of the finite samples of the window; NaN if none), otherwise a window holding a
    NaN gives NaN. ``engine`` (default :data:`MEDIAN_ENGINE`) only changes the speed, never a bit of
    the result.
    """
    return median_filters_rows(traces, ((kernel, nan_aware),), mode=mode, engine=engine)[0]


def median_filters_rows(
    traces: np.ndarray, filters: tuple[tuple[int, bool], ...], *, mode: str, engine: str | None = None
) -> list[np.ndarray]:
    """:func:`median_filter_rows` for several ``(kernel, nan_aware)`` filters of the same rows at once
    (the compiled engine rank-transforms each row once for all of them)."""
    x = np.atleast_2d(traces)
    if mode not in ("constant", "reflect"):
        raise ValueError(f"unknown padding mode {mode!r}")
    results: list[np.ndarray | None] = [None] * len(filters)
    pending = []
    for f, (kernel, nan_aware) in enumerate(filters):
        if kernel == 1:
            results[f] = x.astype(np.float64, copy=True)
        else:
            pending.append((f, int(kernel), 1 if nan_aware else int(kernel)))
    if pending and _engine(engine) == "compiled":
        rows = np.ascontiguousarray(x, dtype=np.float64)
        out = np.empty((len(pending),) + rows.shape)
        if rows.size:
            windows = np.array([p[1] for p in pending], dtype=np.int64)
            min_counts = np.array([p[2] for p in pending], dtype=np.int64)
            _by_row_chunks(_kernels().median_filters_rows, rows.shape[0], rows, windows, mode == "reflect", min_counts,
                           np.full(len(pending), -1, dtype=np.int64), out)
        for (f, _, _), filtered in zip(pending, out):
            results[f] = filtered
    else:
        pad = "constant" if mode == "constant" else "symmetric"
        for f, kernel, min_count in pending:
            half = kernel // 2
            padded = np.pad(x, ((0, 0), (half, half)), mode=pad)
            results[f] = bn.move_median(padded, kernel, axis=1, min_count=min_count)[:, kernel - 1 :]
    return results  # type: ignore[return-value]


def percentile_filter_rows(traces: np.ndarray, percentile: float, kernel: int, *, engine: str | None = None) -> np.ndarray:
    """scipy ``percentile_filter(row, percentile, size=kernel, mode="reflect")`` of each row (finite rows,
    0 < percentile < 100): the order statistic of rank ``int(kernel * percentile / 100)`` of each
    reflect-padded window. ``engine`` only changes the speed, never a bit of the result."""
    x = np.atleast_2d(traces)
    if _engine(engine) == "bottleneck":  # the reference: scipy's 1-D rank filter, one call per row
        return np.array([ndi.percentile_filter(row, percentile, size=kernel, mode="reflect") for row in x]).reshape(x.shape)
    rows = np.ascontiguousarray(x, dtype=np.float64)
    out = np.empty((1,) + rows.shape)
    if rows.size:
        order = int(float(kernel) * percentile / 100.0)
        one = np.array([kernel], dtype=np.int64)
        _by_row_chunks(_kernels().median_filters_rows, rows.shape[0], rows, one, True, one,
                       np.array([order], dtype=np.int64), out)
    return out[0]


def robust_std_rows(values: np.ndarray) -> np.ndarray:
    """1.4826 x median absolute deviation of each row, ignoring NaN (all-NaN row -> NaN)."""
    x = np.atleast_2d(values)
    centre = bn.nanmedian(x, axis=1)
    return GAUSSIAN_MAD_STD_SCALE * bn.nanmedian(np.abs(x - centre[:, None]), axis=1)


def noise_std_rows(traces: np.ndarray, kernel: int, *, mode: str, engine: str | None = None) -> np.ndarray:
    """Robust noise standard deviation of each row (see module docstring); NaN frames are ignored."""
    x = np.atleast_2d(traces)
    return _noise_std_given(x, median_filter_rows(x, kernel, mode=mode, nan_aware=True, engine=engine), engine)


def _noise_std_given(x: np.ndarray, filtered: np.ndarray, engine: str | None = None) -> np.ndarray:
    """:func:`noise_std_rows` of ``x`` given its NaN-aware running median ``filtered``."""
    if _engine(engine) == "compiled":
        rows = np.ascontiguousarray(x, dtype=np.float64)
        out = np.full(rows.shape[0], np.nan)
        if rows.shape[1]:
            _by_row_chunks(_kernels().noise_std_rows, rows.shape[0], rows, np.ascontiguousarray(filtered, dtype=np.float64),
                           POSITIVE_PEAK_SCALE, OUTLIER_STD_SCALE, GAUSSIAN_MAD_STD_SCALE, out)
        return out
    residual = x - filtered
    with np.errstate(invalid="ignore"):
        minimum = np.abs(bn.nanmin(residual, axis=1)) if residual.shape[1] else np.full(x.shape[0], np.nan)
        kept = np.where(residual < POSITIVE_PEAK_SCALE * minimum[:, None], residual, np.nan)
        first = robust_std_rows(kept)
        kept = np.where(np.abs(kept) < OUTLIER_STD_SCALE * first[:, None], kept, np.nan)
    return robust_std_rows(kept)


def _finish(
    traces: np.ndarray,
    rows: np.ndarray,
    dff_rows: np.ndarray,
    sigma_rows: np.ndarray,
    small_rows: np.ndarray,
    method: str,
    parameters: dict[str, Any],
) -> DffResult:
    n, t = traces.shape
    if rows.size == n:  # every row computed: the estimator's own (new) arrays are the result
        dff = np.asarray(dff_rows, dtype=np.float64)
        sigma = np.array(sigma_rows, dtype=np.float64)
        small = np.array(small_rows, dtype=np.int64)
    else:
        dff = np.full((n, t), np.nan)
        sigma = np.full(n, np.nan)
        small = np.zeros(n, dtype=np.int64)
        dff[rows] = dff_rows
        sigma[rows] = sigma_rows
        small[rows] = small_rows
    invalid = ~np.isfinite(dff).any(axis=1)
    sigma[invalid] = np.nan
    small[invalid] = 0
    return DffResult(dff, sigma, small, invalid, method, parameters)


def _scaled(traces: np.ndarray, baseline: np.ndarray, sigma_f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(F - B) / max(B, sigma_F) and the small-baseline count (B <= sigma_F) per row."""
    with np.errstate(divide="ignore", invalid="ignore"):
        dff = (traces - baseline) / np.maximum(baseline, sigma_f[:, None])
        small = np.sum(baseline <= sigma_f[:, None], axis=1)
    return dff, small


# ----------------------------------------------------------------------------------------------
# estimators


@register_dff_estimator("allen_inactive")
def allen_inactive(
    traces: np.ndarray,
    frame_rate_hz: float,
    *,
    long_baseline_filter_s: float = 600.0,
    short_filter_s: float = 3.333,
    inactive_percentile: float = 10.0,
    active_threshold_sigma: float = 3.0,
) -> DffResult:
    """Inactive-frame median baseline (ophys_etl); windows in seconds, see module docstring.

    ``inactive_percentile`` outside (0, 100) switches off the activity masking (plain running
    median baseline). Both windows must be shorter than the traces (InputError otherwise).
    """
    n_frames = traces.shape[1]
    long_frames = frames_from_seconds(long_baseline_filter_s, frame_rate_hz, name="long_baseline_filter_s")
    short_frames = frames_from_seconds(short_filter_s, frame_rate_hz, name="short_filter_s")
    check_kernel(long_frames, n_frames, name=f"long_baseline_filter_s ({long_baseline_filter_s} s at {frame_rate_hz} Hz)")
    check_kernel(short_frames, n_frames, name=f"short_filter_s ({short_filter_s} s at {frame_rate_hz} Hz)")
    parameters = {
        "long_baseline_filter_s": float(long_baseline_filter_s),
        "short_filter_s": float(short_filter_s),
        "long_filter_frames": long_frames,
        "short_filter_frames": short_frames,
        "inactive_percentile": float(inactive_percentile),
        "active_threshold_sigma": float(active_threshold_sigma),
    }
    rows = np.flatnonzero(np.isfinite(traces).any(axis=1))
    x = traces[rows]
    sigma_f = np.empty(x.shape[0])
    baseline = np.empty(x.shape)
    masking = 0 < inactive_percentile < 100
    # rows without NaN / inf: one compiled pass per row (one rank transform for all three windows)
    fused = np.isfinite(x).all(axis=1) if masking and _engine(None) == "compiled" else np.zeros(x.shape[0], dtype=bool)
    if fused.any():
        part = np.ascontiguousarray(x[fused])
        sigma_part = np.empty(part.shape[0])
        baseline_part = np.empty(part.shape)
        order = int(float(long_frames) * inactive_percentile / 100.0)  # scipy percentile_filter's rank
        _by_row_chunks(_kernels().inactive_baseline_rows, part.shape[0], part, short_frames, long_frames, order,
                       float(active_threshold_sigma), POSITIVE_PEAK_SCALE, OUTLIER_STD_SCALE, GAUSSIAN_MAD_STD_SCALE,
                       sigma_part, baseline_part)
        sigma_f[fused], baseline[fused] = sigma_part, baseline_part
    if not fused.all():
        rest = x[~fused]
        sigma_rest = noise_std_rows(rest, short_frames, mode="reflect")
        if masking:
            low = percentile_filter_rows(fill_nan_linear(rest), inactive_percentile, long_frames)
            with np.errstate(invalid="ignore"):
                active = rest > low + active_threshold_sigma * sigma_rest[:, None]
            inactive = np.where(active, np.nan, rest)
        else:
            inactive = rest
        sigma_f[~fused] = sigma_rest
        baseline[~fused] = median_filter_rows(inactive, long_frames, mode="reflect", nan_aware=True)
    baseline = fill_nan_linear(baseline)
    if _engine(None) == "compiled" and x.size:  # dF/F, small-baseline counts and its noise: one pass per row
        dff = np.empty(x.shape)
        sigma_dff = np.empty(x.shape[0])
        small = np.zeros(x.shape[0], dtype=np.int64)
        _by_row_chunks(_kernels().scaled_noise_rows, x.shape[0], np.ascontiguousarray(x), baseline, sigma_f,
                       short_frames, True, POSITIVE_PEAK_SCALE, OUTLIER_STD_SCALE, GAUSSIAN_MAD_STD_SCALE,
                       dff, sigma_dff, small)
        return _finish(traces, rows, dff, sigma_dff, small, "allen_inactive", parameters)
    dff, small = _scaled(x, baseline, sigma_f)
    sigma_dff = noise_std_rows(dff, short_frames, mode="reflect")
    return _finish(traces, rows, dff, sigma_dff, small, "allen_inactive", parameters)


@register_dff_estimator("allen_legacy")
def allen_legacy(
    traces: np.ndarray,
    frame_rate_hz: float,
    *,
    median_kernel_long: int = 5401,
    median_kernel_short: int = 101,
    noise_kernel_length: int = 31,
    allow_kernel_longer_than_trace: bool = False,
) -> DffResult:
    """AllenSDK 2.16.2 ``compute_dff_windowed_median``; kernels in frames (odd, positive).

    As in AllenSDK every kernel must be shorter than the traces; ``allow_kernel_longer_than_trace``
    lifts that check and applies the same zero-padded formulas to short traces (the windows then
    always reach into the padding). The frame rate is validated but does not enter the computation.
    """
    n_frames = traces.shape[1]
    long_k = check_kernel(median_kernel_long, n_frames, name="median_kernel_long", allow_longer=allow_kernel_longer_than_trace)
    short_k = check_kernel(median_kernel_short, n_frames, name="median_kernel_short", allow_longer=allow_kernel_longer_than_trace)
    noise_k = check_kernel(noise_kernel_length, n_frames, name="noise_kernel_length", allow_longer=allow_kernel_longer_than_trace)
    parameters = {
        "median_kernel_long": long_k,
        "median_kernel_short": short_k,
        "noise_kernel_length": noise_k,
        "allow_kernel_longer_than_trace": bool(allow_kernel_longer_than_trace),
    }
    rows = np.flatnonzero(np.isfinite(traces).all(axis=1))
    x = np.ascontiguousarray(traces) if rows.size == traces.shape[0] else traces[rows]
    if _engine(None) == "compiled":  # the same operations, fused per row in one compiled pass
        dff = np.empty(x.shape)
        sigma_dff = np.empty(x.shape[0])
        small = np.zeros(x.shape[0], dtype=np.int64)
        if x.size:
            _by_row_chunks(_kernels().legacy_dff_rows, x.shape[0], x, long_k, short_k, noise_k, POSITIVE_PEAK_SCALE,
                           OUTLIER_STD_SCALE, GAUSSIAN_MAD_STD_SCALE, dff, sigma_dff, small)
        return _finish(traces, rows, dff, sigma_dff, small, "allen_legacy", parameters)
    noise_median, baseline = median_filters_rows(x, ((noise_k, True), (long_k, False)), mode="constant")
    sigma_f = _noise_std_given(x, noise_median)
    dff, small = _scaled(x, baseline, sigma_f)
    noise_median, short = median_filters_rows(dff, ((noise_k, True), (short_k, False)), mode="constant")
    sigma_dff = _noise_std_given(dff, noise_median)
    with np.errstate(invalid="ignore"):
        short = np.minimum(short, OUTLIER_STD_SCALE * sigma_dff[:, None])
        dff = dff - short
    return _finish(traces, rows, dff, sigma_dff, small, "allen_legacy", parameters)


@register_dff_estimator("maximin")
def maximin(
    traces: np.ndarray,
    frame_rate_hz: float,
    *,
    long_baseline_filter_s: float = 60.0,
    short_filter_s: float = 3.333,
    smoothing_sigma_s: float = 1.0 / 3.0,
) -> DffResult:
    """Suite2p-style maximin baseline: gaussian smoothing, then a running minimum and a running
    maximum over ``long_baseline_filter_s``; the noise window ``short_filter_s`` must be shorter
    than the traces. ``smoothing_sigma_s`` = 0 disables the smoothing."""
    n_frames = traces.shape[1]
    window = frames_from_seconds(long_baseline_filter_s, frame_rate_hz, name="long_baseline_filter_s")
    short_frames = frames_from_seconds(short_filter_s, frame_rate_hz, name="short_filter_s")
    check_kernel(short_frames, n_frames, name=f"short_filter_s ({short_filter_s} s at {frame_rate_hz} Hz)")
    try:
        sigma_frames = float(smoothing_sigma_s) * frame_rate_hz
    except (TypeError, ValueError):
        raise InputError(f"smoothing_sigma_s={smoothing_sigma_s!r} is not a number") from None
    if not math.isfinite(sigma_frames) or sigma_frames < 0:
        raise InputError(f"smoothing_sigma_s={smoothing_sigma_s!r} must be >= 0")
    parameters = {
        "long_baseline_filter_s": float(long_baseline_filter_s),
        "short_filter_s": float(short_filter_s),
        "smoothing_sigma_s": float(smoothing_sigma_s),
        "baseline_window_frames": window,
        "short_filter_frames": short_frames,
        "smoothing_sigma_frames": sigma_frames,
    }
    rows = np.flatnonzero(np.isfinite(traces).any(axis=1))
    x = traces[rows]
    filled = fill_nan_linear(x)
    smooth = ndi.gaussian_filter1d(filled, sigma_frames, axis=1, mode="reflect") if sigma_frames > 0 else filled
    baseline = ndi.maximum_filter1d(ndi.minimum_filter1d(smooth, window, axis=1, mode="reflect"), window, axis=1, mode="reflect")
    sigma_f = noise_std_rows(x, short_frames, mode="reflect")
    dff, small = _scaled(x, baseline, sigma_f)
    sigma_dff = noise_std_rows(dff, short_frames, mode="reflect")
    return _finish(traces, rows, dff, sigma_dff, small, "maximin", parameters)
