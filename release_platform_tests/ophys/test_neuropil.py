"""Neuropil correction: r recovery, equality with the legacy fit, fallbacks, NaN handling."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import solve_banded

from release_platform.errors import InputError
from release_platform.ophys._nan import fill_nan_linear
from release_platform.ophys.neuropil import (
    STATUS_FIT,
    STATUS_FIXED,
    STATUS_NEGATIVE_BASELINE,
    STATUS_SKIPPED,
    STATUS_UNCONVERGED,
    _MEAN_BLOCK_ROWS,
    correct_neuropil,
    corrected_means,
    estimate_contamination_ratios,
    filled_rows,
    fold_statistics,
    session_fallback_r,
)

from .conftest import cell_fluorescence, neuropil_signal


def legacy_error(fm: np.ndarray, fn: np.ndarray, r: float, lam=0.05, folds=4) -> float:
    """Direct fold-by-fold error of AllenSDK ``NeuropilSubtract.estimate_error``."""
    t_f = fm.size // folds
    ab = np.zeros((3, t_f))
    ab[0, 1:] = -lam
    ab[2, :-1] = -lam
    ab[1] = 1 + 2 * lam
    ab[1, 0] = ab[1, -1] = 1 + lam
    errors = []
    for f in range(folds):
        m, n = fm[f * t_f : (f + 1) * t_f], fn[f * t_f : (f + 1) * t_f]
        fc = solve_banded((1, 1), ab, m - r * n)
        errors.append(abs(np.sqrt(np.mean((fc - (m - r * n)) ** 2)) / np.mean(m)))
    return float(np.mean(errors))


def legacy_fit(fm: np.ndarray, fn: np.ndarray, r_range=(0.0, 2.0), iterations=3, dr=0.1, dr_factor=0.1) -> float:
    """AllenSDK ``NeuropilSubtract.fit`` (uncapped), loops and all."""
    best_err, best_r = None, None
    lo, hi, step, it = r_range[0], r_range[1], dr, 0
    while it < iterations:
        rs = np.arange(lo, hi, step)
        errs = [legacy_error(fm, fn, r) for r in rs]
        i = int(np.argmin(errs))
        if best_err is None or errs[i] < best_err:
            best_err, best_r = errs[i], rs[i]
        if i == len(errs) - 1:
            lo, hi = rs[-1], rs[-1] + (rs[-1] - rs[0])
        else:
            lo, hi = rs[max(i - 1, 0)], rs[min(i + 1, len(rs) - 1)]
            step *= dr_factor
            it += 1
    return max(float(best_r), 0.0)


def contaminated(rng, n: int, n_frames: int, r: np.ndarray, roi_noise=2.0, neuropil_noise=0.5):
    cells, _, _ = cell_fluorescence(rng, n, n_frames)
    neuropil = np.stack([neuropil_signal(rng, n_frames) for _ in range(n)])
    fm = cells + r[:, None] * neuropil + roi_noise * rng.standard_normal((n, n_frames))
    fn = neuropil + neuropil_noise * rng.standard_normal((n, n_frames))
    return fm, fn


def test_recovers_r_within_0_1_for_at_least_90_percent_of_rois(rng, capsys):
    n = 30
    truth = rng.uniform(0.1, 1.0, size=n)
    fm, fn = contaminated(rng, n, 3000, truth)
    result = correct_neuropil(fm, fn)
    within = np.abs(result.r - truth) <= 0.1
    with capsys.disabled():
        print(f"\nneuropil r: {within.mean():.0%} within 0.1, max |error| {np.abs(result.r - truth).max():.3f}")
    assert within.mean() >= 0.9
    assert (result.status == STATUS_FIT).all() and not result.fallback_used.any()
    np.testing.assert_allclose(result.corrected, fm - result.r[:, None] * fn)


def test_closed_form_error_and_grid_search_equal_the_legacy_fit(rng):
    truth = np.array([0.05, 0.45, 0.93, 1.6])
    fm, fn = contaminated(rng, 4, 801, truth)  # 801 frames: one frame left over by the folds
    stats = fold_statistics(fm, fn)
    for i in range(4):
        rs = np.array([0.0, 0.37, 1.2, 2.9])
        expected = [legacy_error(fm[i], fn[i], r) for r in rs]
        np.testing.assert_allclose(stats.error(rs, np.array([i]))[0], expected, rtol=1e-9)
    fits, _ = estimate_contamination_ratios(fm, fn, r_max=np.inf)
    for i, fit in enumerate(fits):
        assert fit.r == pytest.approx(legacy_fit(fm[i], fn[i]), abs=1e-12)
        assert fit.error == pytest.approx(legacy_error(fm[i], fn[i], fit.r), rel=1e-9)
        assert len(fit.r_vals) == len(fit.err_vals) >= 60


def test_unconverged_rois_get_the_session_mean_or_0_7(rng):
    truth = np.array([0.3, 0.4, 0.5, 0.6, 0.7, 1.8])
    fm, fn = contaminated(rng, 6, 2000, truth)
    result = correct_neuropil(fm, fn)
    assert list(result.status) == [STATUS_FIT] * 5 + [STATUS_UNCONVERGED]
    assert result.r_fit[5] > 1
    assert result.fallback_r == pytest.approx(result.r_fit[:5].mean())
    assert result.r[5] == pytest.approx(result.fallback_r)
    assert list(result.fallback_used) == [False] * 5 + [True]
    np.testing.assert_allclose(result.corrected[5], fm[5] - result.fallback_r * fn[5])
    # fewer than 5 ROIs with r in (0, 1]: fixed fallback 0.7
    few = correct_neuropil(fm[3:], fn[3:])
    assert few.fallback_r == 0.7 and few.r[-1] == 0.7
    assert session_fallback_r(np.array([0.2, np.nan, 1.5, 0.0, 0.4, 0.5, 0.6, 0.8])) == pytest.approx(0.5)


def test_search_is_capped(rng):
    fm, fn = contaminated(rng, 1, 2000, np.array([3.5]))
    capped = correct_neuropil(fm, fn, r_max=2.5)
    assert capped.fits[0].at_cap and capped.fits[0].r_vals.max() <= 2.5 + 1e-9
    assert capped.status[0] == STATUS_UNCONVERGED and capped.r[0] == 0.7
    free = correct_neuropil(fm, fn, r_max=10.0)
    assert not free.fits[0].at_cap and abs(free.r_fit[0] - 3.5) < 0.2
    with pytest.raises(InputError, match="r_max must be larger than 1"):
        correct_neuropil(fm, fn, r_max=0.9)


def test_nan_rows_are_skipped_and_isolated_nan_frames_are_kept(rng):
    truth = np.full(3, 0.6)
    fm, fn = contaminated(rng, 3, 2000, truth)
    fm[0] = np.nan  # e.g. a demixing NaN row
    fm[1, [100, 900, 1500]] = np.nan  # dropped frames
    fn[2, :400] = np.nan  # 20% of the frames: too many
    result = correct_neuropil(fm, fn)
    assert list(result.status) == [STATUS_SKIPPED, STATUS_FIT, STATUS_SKIPPED]
    assert np.isnan(result.r[[0, 2]]).all() and np.isnan(result.rmse[[0, 2]]).all()
    assert np.isnan(result.corrected[[0, 2]]).all()
    assert abs(result.r[1] - 0.6) <= 0.1
    assert np.isnan(result.corrected[1, [100, 900, 1500]]).all()
    assert np.isfinite(result.corrected[1]).sum() == 2000 - 3


def test_negative_baseline_falls_back_to_r_zero(rng):
    cells, _, _ = cell_fluorescence(rng, 1, 2000, baseline=(20.0, 21.0))
    neuropil = neuropil_signal(rng, 2000, mean=300.0)
    fm = cells + 0.5 * neuropil[None]
    fn = neuropil[None] + 0.1 * rng.standard_normal((1, 2000))
    result = correct_neuropil(fm, fn, method="fixed", fixed_r=1.0)  # 1.0 * 300 > mean(F_M)
    assert result.status[0] == STATUS_NEGATIVE_BASELINE and result.r[0] == 0.0
    np.testing.assert_array_equal(result.corrected[0], fm[0])


def test_fixed_coefficient_and_input_errors(rng):
    fm, fn = contaminated(rng, 3, 400, np.array([0.2, 0.5, 0.9]))
    result = correct_neuropil(fm, fn, method="fixed")
    assert (result.status == STATUS_FIXED).all() and (result.r == 0.7).all() and np.isnan(result.r_fit).all()
    np.testing.assert_allclose(result.corrected, fm - 0.7 * fn)
    assert np.isfinite(result.rmse).all()
    with pytest.raises(InputError, match="must be N x T of equal shape"):
        correct_neuropil(fm, fn[:2])
    with pytest.raises(InputError, match="unknown neuropil method"):
        correct_neuropil(fm, fn, method="magic")
    with pytest.raises(InputError, match="too short for 4 folds"):
        correct_neuropil(fm[:, :7], fn[:, :7])


@pytest.mark.parametrize("n_frames", [7, 1000, 4099])
def test_filled_rows_and_corrected_means_equal_the_whole_array_formulation(rng, n_frames):
    n = 3 * _MEAN_BLOCK_ROWS + 5
    fm = rng.normal(300.0, 20.0, (n, n_frames))
    fn = rng.normal(200.0, 10.0, (n, n_frames))
    fm[2, 1] = np.nan
    fm[4, -1] = np.inf
    fn[4, 0] = np.nan
    fn[9, : n_frames // 2] = np.nan
    fm[n - 1, 3:5] = np.nan
    bad = ~(np.isfinite(fm) & np.isfinite(fn))
    rows = np.array([r for r in range(n) if r != 6])
    for values in (fm, fn):
        expected = fill_nan_linear(np.where(bad, np.nan, values)[rows])
        assert np.array_equal(filled_rows(values, bad, rows), expected)
    r = rng.uniform(0.0, 1.5, n)
    with np.errstate(invalid="ignore"):
        expected = np.nanmean(fm[rows] - r[rows, None] * fn[rows], axis=1)
    assert np.array_equal(corrected_means(fm, fn, r, rows), expected, equal_nan=True)
