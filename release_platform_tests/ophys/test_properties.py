"""Property tests of the ophys numeric kernels (dF/F estimators, the demixing solve) on random shapes and values,
NaN, infinities and empty inputs included."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from release_platform.errors import InputError
from release_platform.ophys import demixing
from release_platform.ophys.dff import compute_dff, dff_estimators

SETTINGS = settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
RATE = 30.0
PARAMETERS = {
    "allen_inactive": {"long_baseline_filter_s": 1.0, "short_filter_s": 0.2},
    "allen_legacy": {"median_kernel_long": 31, "median_kernel_short": 5},
    "maximin": {"long_baseline_filter_s": 1.0, "short_filter_s": 0.2},
}
assert set(PARAMETERS) == set(dff_estimators())


@st.composite
def fluorescence(draw, *, special: bool = True):
    """N x T traces (N 0-4, T 40-160): per-row baselines of 1-5000 with 0.1-20 % Gaussian noise and random
    transients, with some NaN/inf cells or whole NaN rows when ``special``. (A noise-free row has no noise
    scale to divide by; such rows are not generated.)"""
    n = draw(st.integers(0, 4))
    t = draw(st.integers(40, 160))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    f0 = draw(hnp.arrays(np.float64, (n, 1), elements=st.floats(1.0, 5000.0)))
    noise = draw(st.floats(0.001, 0.2))
    transients = np.where(rng.random((n, t)) < 0.05, rng.exponential(0.5, (n, t)), 0.0)
    traces = f0 * (1.0 + transients + noise * rng.standard_normal((n, t)))
    if special and n:
        kind = draw(st.sampled_from(["none", "nan_cells", "inf_cells", "nan_row"]))
        row = draw(st.integers(0, n - 1))
        cells = draw(st.lists(st.integers(0, t - 1), min_size=1, max_size=5))
        if kind == "nan_cells":
            traces[row, cells] = np.nan
        elif kind == "inf_cells":
            traces[row, cells] = draw(st.sampled_from([np.inf, -np.inf]))
        elif kind == "nan_row":
            traces[row] = np.nan
    return traces


def _dff(traces, method):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return compute_dff(traces, RATE, method=method, **PARAMETERS[method])


@pytest.mark.parametrize("method", sorted(PARAMETERS))
@SETTINGS
@given(traces=fluorescence())
def test_dff_shapes_and_invalid_rows(method, traces):
    result = _dff(traces, method)
    n, t = traces.shape
    assert result.dff.shape == (n, t) and result.sigma_dff.shape == (n,)
    assert result.invalid_rows.shape == (n,) and result.num_small_baseline_frames.shape == (n,)
    # a row is reported invalid exactly when its output is all NaN; a row without any finite input is invalid
    assert np.array_equal(result.invalid_rows, np.isnan(result.dff).all(axis=1) if t else np.ones(n, bool))
    assert not (~np.isfinite(traces).any(axis=1) & ~result.invalid_rows).any()
    # rows of all-finite, positive input give finite dF/F
    clean = np.isfinite(traces).all(axis=1)
    assert np.isfinite(result.dff[clean]).all() and not result.invalid_rows[clean].any()


@pytest.mark.parametrize("method", sorted(PARAMETERS))
@SETTINGS
@given(traces=fluorescence(), scale=st.sampled_from([0.25, 0.5, 2.0, 8.0]))
def test_dff_is_dimensionless_and_rows_are_independent(method, traces, scale):
    """Scaling F by a power of two (exact in floating point) leaves dF/F unchanged; each row's dF/F depends
    only on that row."""
    result = _dff(traces, method)
    scaled = _dff(traces * scale, method)
    np.testing.assert_allclose(scaled.dff, result.dff, rtol=1e-9, atol=1e-12, equal_nan=True)
    np.testing.assert_allclose(scaled.sigma_dff, result.sigma_dff, rtol=1e-9, atol=1e-12, equal_nan=True)
    for i in range(traces.shape[0]):
        alone = _dff(traces[i:i + 1], method)
        np.testing.assert_array_equal(alone.dff[0], result.dff[i])


@pytest.mark.parametrize("method", sorted(PARAMETERS))
def test_dff_of_traces_without_frames_is_an_input_error(method):
    with pytest.raises(InputError, match="traces have no frames"):
        _dff(np.zeros((2, 0)), method)


# -- demixing ------------------------------------------------------------------------------------------------
@st.composite
def systems(draw):
    """A stack of K g x g systems (K 0-6, g 1-4) with a known solution; some members singular, some non-finite."""
    k = draw(st.integers(0, 6))
    g = draw(st.integers(1, 4))
    a = draw(hnp.arrays(np.float64, (k, g, g), elements=st.floats(-1.0, 1.0)))
    a += np.eye(g) * (g + 1.0)  # diagonally dominant: well conditioned
    x = draw(hnp.arrays(np.float64, (k, g), elements=st.floats(-100.0, 100.0)))
    kinds = draw(st.lists(st.sampled_from(["regular", "singular", "nan"]), min_size=k, max_size=k))
    for i, kind in enumerate(kinds):
        if kind == "singular" and g > 1:
            a[i, -1] = a[i, 0]  # two equal rows
        elif kind == "nan":
            a[i, 0, 0] = np.nan
    b = np.einsum("kij,kj->ki", a, x)
    return a, b, x, kinds


@SETTINGS
@given(system=systems())
def test_demixing_solve_recovers_solutions_and_never_raises(system):
    a, b, x, kinds = system
    solved, n_lstsq = demixing._solve_stack(a, b)
    assert solved.shape == b.shape and 0 <= n_lstsq <= len(kinds)
    for i, kind in enumerate(kinds):
        if kind == "nan":
            assert np.isnan(solved[i]).all()
        elif kind == "singular" and a.shape[1] > 1:
            # minimum-norm least squares: the residual is orthogonal to the column space (normal equations)
            residual = a[i] @ solved[i] - b[i]
            np.testing.assert_allclose(a[i].T @ residual, 0.0, atol=1e-6 * (1 + np.abs(b[i]).max()))
        else:
            np.testing.assert_allclose(solved[i], x[i], rtol=1e-8, atol=1e-8)


@st.composite
def plane(draw):
    """A small movie (T 1-12 frames of 6 x 6), N 1-4 rectangular masks (may overlap) and their raw traces."""
    t = draw(st.integers(1, 12))
    n = draw(st.integers(1, 4))
    movie = draw(hnp.arrays(np.float64, (t, 6, 6), elements=st.floats(1.0, 1000.0)))
    masks = np.zeros((n, 6, 6), dtype=bool)
    for i in range(n):
        y, x = draw(st.integers(0, 4)), draw(st.integers(0, 4))
        h, w = draw(st.integers(1, 6 - y)), draw(st.integers(1, 6 - x))
        masks[i, y:y + h, x:x + w] = True
    raw = np.stack([movie[:, m].mean(axis=1) for m in masks])
    return movie, masks, raw


@SETTINGS
@given(case=plane(), scale=st.sampled_from([0.5, 4.0]), nan_row=st.booleans())
def test_demixing_is_linear_in_scale_order_free_and_leaves_lone_rois_alone(case, scale, nan_row):
    movie, masks, raw = case
    if nan_row:
        raw = raw.copy()
        raw[0] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = demixing.demix_traces(raw, movie, masks)
        scaled = demixing.demix_traces(raw * scale, movie * scale, masks)
        order = np.arange(len(masks))[::-1]
        reversed_ = demixing.demix_traces(raw[order], movie, masks[order])
    assert result.demixed.shape == raw.shape
    np.testing.assert_allclose(scaled.demixed, result.demixed * scale, rtol=1e-7, atol=1e-9, equal_nan=True)
    np.testing.assert_allclose(reversed_.demixed[order], result.demixed, rtol=1e-7, atol=1e-9, equal_nan=True)
    # ROIs that overlap no other (valid) ROI keep their raw trace; an all-NaN row stays NaN and is reported
    flat = masks.reshape(len(masks), -1).astype(int)
    valid = ~np.isnan(raw).all(axis=1)
    shared = (flat @ flat[valid].T).astype(bool)
    for i in range(len(masks)):
        if not valid[i]:
            assert result.invalid_rows[i] and np.isnan(result.demixed[i]).all()
        elif shared[i].sum() == 1:
            np.testing.assert_array_equal(result.demixed[i], raw[i])
