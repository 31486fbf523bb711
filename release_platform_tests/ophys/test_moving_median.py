"""Compiled running medians and noise statistics equal the bottleneck reference bit for bit."""

from __future__ import annotations

import warnings

import bottleneck as bn
import numpy as np
import pytest

from release_platform.ophys import dff as dff_module
from release_platform.ophys.dff import compute_dff, median_filter_rows, median_filters_rows, noise_std_rows


def bottleneck_median(x: np.ndarray, kernel: int, mode: str, nan_aware: bool) -> np.ndarray:
    """The reference: bn.move_median on explicitly padded rows (numpy "constant" / "symmetric")."""
    half = kernel // 2
    padded = np.pad(x, ((0, 0), (half, half)), mode="constant" if mode == "constant" else "symmetric")
    return bn.move_median(padded, kernel, axis=1, min_count=1 if nan_aware else kernel)[:, kernel - 1 :]


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal values, NaN where NaN; zeros compare equal whatever their sign (ties of 0.0 and -0.0)."""
    return a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=True))


def random_rows(rng: np.random.Generator, case: int, n_rows: int, n_frames: int) -> np.ndarray:
    x = rng.normal(size=(n_rows, n_frames))
    if case % 3 == 0:
        x = np.round(2 * x)  # integer-valued floats: many ties
    if case % 5 == 0:
        x[:, ::7] = 0.0  # ties with the zero padding, both signs of zero
        x[:, 1::11] = -0.0
    if case % 4 == 0:
        x[rng.random(x.shape) < 0.3] = np.nan  # scattered NaN
    if case % 6 == 0 and n_frames > 10:
        x[0, 2 : n_frames // 2] = np.nan  # a NaN run longer than short windows
    if case % 7 == 0:
        x[-1] = np.nan  # an all-NaN row
    if case % 9 == 0:
        x[0, :3] = np.inf
        x[0, -2:] = -np.inf
    return x


@pytest.mark.parametrize("mode", ["constant", "reflect"])
def test_running_medians_equal_bottleneck_on_random_rows(rng, mode):
    mismatches = []
    for case in range(120):
        n_frames = int(rng.integers(1, 260))
        kernels = [int(rng.integers(0, 200)) * 2 + 1 for _ in range(3)]  # also longer than the rows
        x = random_rows(rng, case, 3, n_frames)
        filters = ((kernels[0], True), (kernels[1], False), (kernels[2], case % 2 == 0))
        ours = median_filters_rows(x, filters, mode=mode, engine="compiled")
        for (kernel, nan_aware), got in zip(filters, ours):
            if not same_bits(got, bottleneck_median(x, kernel, mode, nan_aware)):
                mismatches.append((case, n_frames, kernel, nan_aware))
    assert mismatches == []


@pytest.mark.parametrize("kernel", [1, 3, 31, 101, 5401])
def test_running_median_of_long_traces_equals_bottleneck(rng, kernel):
    x = 300 + 10 * rng.standard_normal((2, 12000))
    x[0, 4000:4100] += 500
    x[1, 100:400] = np.nan
    for mode in ("constant", "reflect"):
        for nan_aware in (False, True):
            got = median_filter_rows(x, kernel, mode=mode, nan_aware=nan_aware, engine="compiled")
            ref = x.copy() if kernel == 1 else bottleneck_median(x, kernel, mode, nan_aware)
            assert same_bits(got, ref), (mode, nan_aware)


def test_even_counts_take_the_mean_of_the_two_middle_values_as_bottleneck():
    # windows holding an even number of finite samples: (lower + upper) / 2, values chosen so that
    # other formulas (e.g. lower + (upper - lower) / 2) round differently
    lower, upper = -0.00013210486329130188, 0.001257302210933933
    assert (lower + upper) / 2 != lower + (upper - lower) / 2
    x = np.array([[lower, upper, np.nan, lower, np.nan, upper, 1e308, 1.7e308]])
    for kernel in (3, 5):
        got = median_filter_rows(x, kernel, mode="reflect", nan_aware=True, engine="compiled")
        assert same_bits(got, bottleneck_median(x, kernel, "reflect", True))
    assert median_filter_rows(x, 3, mode="reflect", nan_aware=True, engine="compiled")[0, 1] == (lower + upper) / 2


def test_noise_std_equals_the_bottleneck_reference(rng):
    mismatches = []
    for case in range(60):
        n_frames = int(rng.integers(5, 400))
        x = 100 + random_rows(rng, case, 4, n_frames) * rng.uniform(0.5, 20)
        if case % 8 == 0:
            x[1] = 100.0  # flat row: no residual left after the peak cut
        kernel = int(rng.integers(1, 40)) * 2 + 1
        for mode in ("constant", "reflect"):
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore", RuntimeWarning)
                ref = noise_std_rows(x, kernel, mode=mode, engine="bottleneck")
            got = noise_std_rows(x, kernel, mode=mode, engine="compiled")
            if not same_bits(got, ref):
                mismatches.append((case, n_frames, kernel, mode))
    assert mismatches == []


def test_noise_std_of_even_and_odd_counts(rng):
    # selections on even and odd numbers of kept residuals, with ties
    for n_frames in (40, 41, 1000, 1001):
        x = np.round(rng.normal(50, 3, (3, n_frames)))
        ref = noise_std_rows(x, 7, mode="constant", engine="bottleneck")
        assert same_bits(noise_std_rows(x, 7, mode="constant", engine="compiled"), ref)


@pytest.mark.parametrize("method, kwargs", [
    ("allen_legacy", {"median_kernel_long": 1201}),
    ("allen_inactive", {"long_baseline_filter_s": 30.0}),
    ("maximin", {}),
])
def test_estimators_are_identical_with_both_engines(rng, monkeypatch, method, kwargs):
    traces = rng.gamma(4.0, 40.0, size=(5, 3000))
    traces[1, 500:900] += 400
    traces[2, ::50] = np.nan
    traces[3] = np.nan
    traces[4] = np.round(traces[4] / 10)
    compiled = compute_dff(traces, 30.0, method=method, **kwargs)
    monkeypatch.setattr(dff_module, "MEDIAN_ENGINE", "bottleneck")
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        reference = compute_dff(traces, 30.0, method=method, **kwargs)
    assert same_bits(compiled.dff, reference.dff)
    assert same_bits(compiled.sigma_dff, reference.sigma_dff)
    assert list(compiled.num_small_baseline_frames) == list(reference.num_small_baseline_frames)
    assert list(compiled.invalid_rows) == list(reference.invalid_rows)


def test_unknown_engine_or_mode_is_refused():
    with pytest.raises(ValueError, match="unknown median engine"):
        median_filter_rows(np.zeros((1, 5)), 3, mode="constant", engine="fast")
    with pytest.raises(ValueError, match="unknown padding mode"):
        median_filter_rows(np.zeros((1, 5)), 3, mode="wrap")


def test_noise_std_of_long_rows_equals_the_bottleneck_reference(rng):
    # long rows take the sampled two-pivot selection
    x = 200 + 8 * rng.standard_normal((4, 30000))
    x[0, 1000:1300] += 400  # transients
    x[1] = np.round(x[1] / 4)  # many ties
    x[2, ::3] = np.nan
    x[3, 5:] = np.sort(x[3, 5:])  # a ramp: monotone residual ranks
    for kernel in (31, 101):
        for mode in ("constant", "reflect"):
            ref = noise_std_rows(x, kernel, mode=mode, engine="bottleneck")
            assert same_bits(noise_std_rows(x, kernel, mode=mode, engine="compiled"), ref), (kernel, mode)


@pytest.mark.parametrize("n", [8192, 8193, 20000, 20001])
def test_median_selection_when_the_sample_misleads(n):
    from release_platform.ophys._moving_median import _SAMPLE, _median_of

    step = n // _SAMPLE
    a = np.zeros(n)
    sampled = np.arange(_SAMPLE) * step + (np.arange(_SAMPLE) * 7) % step
    a[sampled] = 1e6 + np.arange(_SAMPLE)  # every sampled value far above the median
    a[::5] = -1.0
    for values in (a, -a, np.arange(n, dtype=float)[::-1].copy()):
        got = _median_of(values, n, np.empty(n), np.empty(_SAMPLE))
        assert got == bn.nanmedian(values)
    ties = np.repeat([1.0, 2.0], n // 2 + 1)[:n]
    assert _median_of(ties, n, np.empty(n), np.empty(_SAMPLE)) == bn.nanmedian(ties)


def test_median_selection_equals_bottleneck_on_random_even_and_odd_inputs(rng):
    from release_platform.ophys._moving_median import _SAMPLE, _median_of

    mismatches = 0
    for case in range(300):
        n = int(rng.integers(1, 12000)) if case % 2 else int(rng.integers(4096, 12000)) * 2
        values = rng.standard_normal(n) * 10.0 ** rng.integers(-3, 3)
        if case % 5 == 0:
            values[rng.random(n) < 0.2] = np.inf
        got = _median_of(values, n, np.empty(n), np.empty(_SAMPLE))
        mismatches += got != bn.nanmedian(values)
    assert mismatches == 0


def test_running_median_of_rows_longer_than_one_top_bitset_word(rng):
    # more than 64**3 ranks: searches cross several words at every level of the bitset
    x = rng.standard_normal((1, 300_000))
    x[0, ::1000] = 50.0  # far-away ranks entering short windows
    x[0, 1000:2000] = np.nan
    for kernel, nan_aware in ((3, True), (101, False), (1001, True)):
        got = median_filter_rows(x, kernel, mode="constant", nan_aware=nan_aware, engine="compiled")
        assert same_bits(got, bottleneck_median(x, kernel, "constant", nan_aware)), kernel



@pytest.mark.parametrize("values", [
    [np.inf, np.inf, np.inf, 1.0, 2.0],
    [-np.inf, -np.inf, 3.0, -np.inf, 1.0, 2.0],
    [np.inf, -np.inf, 0.5, 0.25],
    [1.0, 2.0, 4.0, 8.0],
])
def test_robust_std_ignores_nan_deviations_as_nanmedian(values):
    from release_platform.ophys._moving_median import _SAMPLE, _robust_std

    a = np.array(values)
    with np.errstate(invalid="ignore"):
        expected = 1.4826 * bn.nanmedian(np.abs(a - bn.nanmedian(a)))
    got = _robust_std(a, a.size, np.empty(a.size), np.empty(_SAMPLE), 1.4826)
    assert same_bits(np.array([got]), np.array([expected]))


@pytest.mark.parametrize("n_frames, kwargs", [
    (6000, {}),  # default kernels 5401 / 101 / 31
    (300, {"median_kernel_long": 151, "median_kernel_short": 21, "noise_kernel_length": 11}),
    (40, {"median_kernel_long": 101, "median_kernel_short": 41, "noise_kernel_length": 7,
          "allow_kernel_longer_than_trace": True}),
])
def test_fused_legacy_kernel_equals_the_numpy_formulation(rng, monkeypatch, n_frames, kwargs):
    traces = rng.gamma(3.0, 50.0, size=(7, n_frames))
    traces[1] = 0.0  # flat zero row: 0 / 0
    traces[2] = 80.0  # flat row: no residual left, NaN noise
    traces[3, 5] = np.nan  # legacy rule: the whole row is NaN
    traces[4] = np.round(traces[4] / 25)  # ties
    traces[5] -= 200.0  # negative baselines: max(B, sigma) picks sigma
    compiled = compute_dff(traces, 30.0, method="allen_legacy", **kwargs)
    monkeypatch.setattr(dff_module, "MEDIAN_ENGINE", "bottleneck")
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        reference = compute_dff(traces, 30.0, method="allen_legacy", **kwargs)
    assert same_bits(compiled.dff, reference.dff)
    assert same_bits(compiled.sigma_dff, reference.sigma_dff)
    assert list(compiled.num_small_baseline_frames) == list(reference.num_small_baseline_frames)
    assert list(compiled.invalid_rows) == list(reference.invalid_rows)


@pytest.mark.parametrize("percentile", [10.0, 0.01, 33.3, 50.0, 99.99])
def test_percentile_filter_equals_scipy(rng, percentile):
    import scipy.ndimage as ndi

    from release_platform.ophys.dff import percentile_filter_rows

    x = rng.normal(size=(3, 900))
    x[1] = np.round(x[1] * 3)  # ties
    x[2, 100:200] = np.inf
    for kernel in (1, 3, 31, 601, 899):
        got = percentile_filter_rows(x, percentile, kernel, engine="compiled")
        ref = np.array([ndi.percentile_filter(row, percentile, size=kernel, mode="reflect") for row in x])
        assert same_bits(got, ref), kernel
        assert same_bits(percentile_filter_rows(x, percentile, kernel, engine="bottleneck"), ref)


def test_load_kernels_runs_both_compiled_estimators():
    from release_platform.ophys.dff import load_kernels

    load_kernels()  # raises if a kernel fails to compile or the tiny inputs are rejected


@pytest.mark.parametrize("kwargs", [
    {"long_baseline_filter_s": 10.0},  # 301 frames: the 600-frame active block empties whole windows
    {"long_baseline_filter_s": 10.0, "inactive_percentile": 33.0, "active_threshold_sigma": 1.0},
    {"long_baseline_filter_s": 10.0, "inactive_percentile": 0.0},  # masking off
    {"long_baseline_filter_s": 60.0, "short_filter_s": 1.0},
])
def test_fused_inactive_kernel_equals_the_numpy_formulation(rng, monkeypatch, kwargs):
    traces = 100 + 5 * rng.standard_normal((6, 4000))
    traces[0, 1000:1600] += 300  # active for longer than the baseline window
    traces[1, ::40] += 80  # short transients
    traces[2, 7] = np.inf  # not finite: the general path
    traces[3, 100:130] = np.nan  # isolated NaN run: the general path
    traces[4] = np.round(traces[4])  # ties
    compiled = compute_dff(traces, 30.0, **kwargs)
    monkeypatch.setattr(dff_module, "MEDIAN_ENGINE", "bottleneck")
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        reference = compute_dff(traces, 30.0, **kwargs)
    assert same_bits(compiled.dff, reference.dff)
    assert same_bits(compiled.sigma_dff, reference.sigma_dff)
    assert list(compiled.num_small_baseline_frames) == list(reference.num_small_baseline_frames)
