"""dF/F estimators: legacy equality, ophys_etl equality, known-baseline recovery, NaN and bad input."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from release_platform.errors import InputError
from release_platform.ophys.dff import (
    compute_dff,
    dff_estimators,
    frames_from_seconds,
    register_dff_estimator,
)

from .conftest import cell_fluorescence

RATE = 30.0


# ---------------------------------------------------------------- plain reference implementations


def windowed_median(x: np.ndarray, k: int, pad: str) -> np.ndarray:
    """Median of the k samples centred on each frame; ``pad`` = "zeros" or "mirror" (d c b a | a b)."""
    half = k // 2
    if pad == "zeros":
        padded = np.concatenate([np.zeros(half), x, np.zeros(half)])
    else:
        padded = np.concatenate([x[:half][::-1], x, x[::-1][:half]])
    return np.array([np.median(padded[i : i + k]) for i in range(x.size)])


def robust_std(x: np.ndarray) -> float:
    return 1.4826 * np.median(np.abs(x - np.median(x)))


def noise_std(x: np.ndarray, k: int, pad: str) -> float:
    if np.isnan(x).any():
        return np.nan
    x = x - windowed_median(x, k, pad)
    x = x[x < 1.5 * abs(x.min())]
    s = robust_std(x)
    return robust_std(x[np.abs(x) < 2.5 * s])


def legacy_reference(traces: np.ndarray, long: int, short: int, noise: int):
    """AllenSDK 2.16.2 ``compute_dff_windowed_median`` written out per trace and per frame."""
    out, sigmas, small = [], [], []
    for f in traces:
        sigma_f = noise_std(f, noise, "zeros")
        if np.isnan(sigma_f):
            out.append(np.full(f.size, np.nan)), sigmas.append(np.nan), small.append(0)
            continue
        baseline = windowed_median(f, long, "zeros")
        d = (f - baseline) / np.maximum(baseline, sigma_f)
        small.append(int(np.sum(baseline <= sigma_f)))
        sigma_d = noise_std(d, noise, "zeros")
        sigmas.append(sigma_d)
        out.append(d - np.minimum(windowed_median(d, short, "zeros"), 2.5 * sigma_d))
    return np.array(out), np.array(sigmas), np.array(small)


def inactive_reference(f: np.ndarray, long: int, short: int):
    """ophys_etl ``compute_dff_trace`` (inactive percentile 10) written out per frame."""
    sigma_f = noise_std(f, short, "mirror")
    half = long // 2
    padded = np.concatenate([f[:half][::-1], f, f[::-1][:half]])
    rank = int(long * 10 / 100)
    low = np.array([np.sort(padded[i : i + long])[rank] for i in range(f.size)])
    inactive = np.where(f > low + 3 * sigma_f, np.nan, f)
    padded = np.concatenate([inactive[:half][::-1], inactive, inactive[::-1][:half]])
    windows = [padded[i : i + long] for i in range(f.size)]
    baseline = np.array([np.nanmedian(w) if np.isfinite(w).any() else np.nan for w in windows])
    bad = np.isnan(baseline)
    baseline[bad] = np.interp(np.flatnonzero(bad), np.flatnonzero(~bad), baseline[~bad])
    dff = (f - baseline) / np.maximum(baseline, sigma_f)
    return dff, noise_std(dff, short, "mirror"), int(np.sum(baseline <= sigma_f))


# ---------------------------------------------------------------- tests


@pytest.mark.parametrize(
    "rate, seconds, frames",
    [(30.0, 3.3, 99), (30.0, 600, 18001), (11.1, 10, 111), (11.1, 1001, 11111), (30.0, 3.333, 101)],
)
def test_windows_in_seconds_become_odd_frame_counts(rate, seconds, frames):
    assert frames_from_seconds(seconds, rate) == frames


def test_registry_lists_the_estimators_and_rejects_duplicates():
    assert {"allen_inactive", "allen_legacy", "maximin"} <= set(dff_estimators())
    with pytest.raises(ValueError, match="already registered"):
        register_dff_estimator("maximin")(lambda traces, frame_rate_hz: None)


def test_allen_legacy_equals_the_reference_with_default_kernels(rng):
    traces = 500 + 20 * rng.standard_normal((2, 5500))
    traces[0, 1000:1040] += 300  # a transient
    traces[1] = np.nan
    result = compute_dff(traces, RATE, method="allen_legacy")
    dff, sigma, small = legacy_reference(traces, 5401, 101, 31)
    np.testing.assert_allclose(result.dff, dff, rtol=0, atol=1e-9)
    np.testing.assert_allclose(result.sigma_dff, sigma, rtol=0, atol=1e-12)
    assert list(result.num_small_baseline_frames) == list(small)
    assert list(result.invalid_rows) == [False, True]


def test_allen_legacy_equals_the_reference_on_random_traces(rng):
    traces = rng.gamma(3.0, 50.0, size=(6, 400))
    traces[2, 17] = np.nan  # legacy rule: any NaN -> the whole row is NaN
    traces[4] = 0.0  # flat zero trace: 0/0, as in AllenSDK
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the flat row has no residual left: NaN noise
        dff, sigma, small = legacy_reference(traces, 151, 21, 11)
    result = compute_dff(traces, RATE, method="allen_legacy", median_kernel_long=151, median_kernel_short=21, noise_kernel_length=11)
    np.testing.assert_allclose(result.dff, dff, rtol=0, atol=1e-9)
    np.testing.assert_allclose(result.sigma_dff, sigma, rtol=0, atol=1e-12)
    assert list(result.num_small_baseline_frames) == list(small)
    assert list(np.flatnonzero(result.invalid_rows)) == [2, 4]


def test_allen_legacy_traces_shorter_than_the_kernel(rng):
    traces = rng.gamma(4.0, 30.0, size=(3, 60))
    with pytest.raises(InputError, match="median_kernel_long=101 frames is not shorter than the traces"):
        compute_dff(traces, RATE, method="allen_legacy", median_kernel_long=101, median_kernel_short=11, noise_kernel_length=7)
    result = compute_dff(
        traces, RATE, method="allen_legacy", median_kernel_long=101, median_kernel_short=61, noise_kernel_length=7,
        allow_kernel_longer_than_trace=True,
    )
    dff, sigma, small = legacy_reference(traces, 101, 61, 7)
    np.testing.assert_allclose(result.dff, dff, rtol=0, atol=1e-9)
    np.testing.assert_allclose(result.sigma_dff, sigma, rtol=0, atol=1e-12)
    assert list(result.num_small_baseline_frames) == list(small)


@pytest.mark.parametrize(
    "parameters, message",
    [
        ({"median_kernel_long": 5400}, "median_kernel_long=5400 frames is invalid: a median kernel must be positive and odd"),
        ({"median_kernel_short": 100}, "median_kernel_short=100 frames is invalid"),
        ({"noise_kernel_length": 0}, "noise_kernel_length=0 frames is invalid"),
        ({"median_kernel_long": 51.0}, "must be an integer number of frames"),
    ],
)
def test_allen_legacy_rejects_bad_kernels(parameters, message):
    with pytest.raises(InputError, match=message):
        compute_dff(np.ones((1, 6000)), RATE, method="allen_legacy", **parameters)


def test_allen_inactive_equals_the_ophys_etl_reference(rng):
    cells, _, _ = cell_fluorescence(rng, 3, 900, rate_hz=2.0)
    traces = cells + 5 * rng.standard_normal(cells.shape)
    result = compute_dff(traces, RATE, long_baseline_filter_s=10.0, short_filter_s=0.7)
    assert result.parameters["long_filter_frames"] == 301 and result.parameters["short_filter_frames"] == 21
    for i in range(3):
        dff, sigma, small = inactive_reference(traces[i], 301, 21)
        np.testing.assert_allclose(result.dff[i], dff, rtol=0, atol=1e-9)
        assert result.sigma_dff[i] == pytest.approx(sigma, abs=1e-12)
        assert result.num_small_baseline_frames[i] == small


@pytest.mark.parametrize("method, kwargs, tolerance", [
    ("allen_inactive", {"long_baseline_filter_s": 60.0, "short_filter_s": 1.0}, 0.01),
    ("maximin", {"long_baseline_filter_s": 30.0, "short_filter_s": 1.0}, 0.02),
])
def test_recovers_the_dff_of_a_cell_with_known_baseline(rng, method, kwargs, tolerance):
    """F = F0 (1 + true dF/F) + 1% noise: the median |error| of dF/F is within ``tolerance``."""
    cells, f0, true_dff = cell_fluorescence(rng, 4, 6000, rate_hz=0.5, baseline=(300.0, 600.0))
    noise = 0.01 * f0[:, None] * rng.standard_normal(cells.shape)
    result = compute_dff(cells + noise, RATE, method=method, **kwargs)
    error = np.abs(result.dff - true_dff)
    assert np.median(error, axis=1).max() <= tolerance
    # the median alone is near 0 for a mostly inactive cell (an all-zero output would pass it): the RMS error
    # must also be a small fraction of the RMS of the true dF/F (an all-zero output scores exactly 1; the 1 %
    # noise alone gives about 0.1)
    rms_ratio = np.sqrt(np.mean(error ** 2, axis=1)) / np.sqrt(np.mean(true_dff ** 2, axis=1))
    assert rms_ratio.max() <= 0.2, np.round(rms_ratio, 3)  # measured 0.106-0.125 for both estimators
    peaks = true_dff.max(axis=1)
    assert np.all(np.abs(result.dff.max(axis=1) - peaks) <= 0.1 * peaks + 0.05)
    np.testing.assert_allclose(result.sigma_dff, 0.01, rtol=0.2)
    assert (result.num_small_baseline_frames == 0).all()


@pytest.mark.parametrize("method", ["allen_inactive", "maximin", "allen_legacy"])
def test_all_nan_rows_stay_nan_and_are_reported(rng, method):
    traces = rng.gamma(5.0, 60.0, size=(3, 700))
    traces[1] = np.nan
    kwargs = {"median_kernel_long": 301, "median_kernel_short": 31} if method == "allen_legacy" else {"long_baseline_filter_s": 10.0}
    result = compute_dff(traces, RATE, method=method, **kwargs)
    assert list(result.invalid_rows) == [False, True, False]
    assert np.isnan(result.dff[1]).all() and np.isnan(result.sigma_dff[1]) and result.num_small_baseline_frames[1] == 0
    assert np.isfinite(result.dff[[0, 2]]).all() and np.isfinite(result.sigma_dff[[0, 2]]).all()


@pytest.mark.parametrize("method", ["allen_inactive", "maximin"])
def test_isolated_nan_frames_stay_nan(rng, method):
    traces = rng.gamma(5.0, 60.0, size=(2, 700))
    traces[0, [5, 300, 301, 699]] = np.nan
    result = compute_dff(traces, RATE, method=method, long_baseline_filter_s=10.0)
    assert list(np.flatnonzero(np.isnan(result.dff[0]))) == [5, 300, 301, 699]
    assert np.isfinite(result.dff[1]).all() and np.isfinite(result.sigma_dff).all()
    assert not result.invalid_rows.any()


@pytest.mark.parametrize("rate", [None, 0, -30.0, float("nan"), "fast"])
def test_missing_or_bad_frame_rate_is_an_input_error(rate):
    with pytest.raises(InputError, match="frame rate"):
        compute_dff(np.ones((1, 100)), rate)


def test_other_bad_input_is_an_input_error():
    traces = np.ones((2, 1000))
    with pytest.raises(InputError, match="unknown dF/F method 'magic'; available: allen_inactive"):
        compute_dff(traces, RATE, method="magic")
    with pytest.raises(InputError, match="does not take median_kernel_long"):
        compute_dff(traces, RATE, method="allen_inactive", median_kernel_long=5401)
    with pytest.raises(InputError, match=r"long_baseline_filter_s \(600.0 s at 30.0 Hz\)=18001 frames is not shorter"):
        compute_dff(traces, RATE)
    with pytest.raises(InputError, match="short_filter_s=-1 must be a positive number of seconds"):
        compute_dff(traces, RATE, long_baseline_filter_s=10, short_filter_s=-1)
    with pytest.raises(InputError, match="traces must be numeric"):
        compute_dff(np.array([["a", "b"]]), RATE)
