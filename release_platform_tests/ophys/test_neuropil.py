"""Neuropil correction: r recovery, equality with the legacy fit, fallbacks, NaN handling."""

from __future__ import annotations

import platform

import numpy as np
import pytest
from scipy.linalg import solve_banded

from release_platform.errors import InputError
from release_platform.ophys._nan import fill_nan_linear
from release_platform.ophys.neuropil import (
    NEUROPIL_ENGINES,
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
    FoldStatistics,
    fold_statistics,
    grid_search_all,
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


# ------------------------------------------------------------------------ compiled vs reference engine

#: The compiled fold sums follow the summation order of numpy's x86-64 baseline ``einsum`` (two
#: lanes, no fused multiply-add); elsewhere (e.g. aarch64, where numpy fuses) the engines agree to
#: rounding only.
BIT_IDENTICAL = platform.machine().lower() in ("x86_64", "amd64")


def same(x, y) -> bool:
    if BIT_IDENTICAL:
        return np.array_equal(x, y, equal_nan=True)
    return np.shape(x) == np.shape(y) and np.allclose(x, y, rtol=1e-9, atol=0.0, equal_nan=True)


def assert_same_fits(a, b):
    assert len(a) == len(b)
    for fa, fb in zip(a, b):
        if fa is None or fb is None:
            assert fa is None and fb is None
            continue
        assert same([fa.r, fa.error], [fb.r, fb.error])
        assert same(fa.r_vals, fb.r_vals) and same(fa.err_vals, fb.err_vals)
        assert fa.at_cap == fb.at_cap


def assert_same_results(a, b):
    for name in ("corrected", "r", "r_fit", "rmse"):
        assert same(getattr(a, name), getattr(b, name)), name
    assert list(a.status) == list(b.status) and list(a.fallback_used) == list(b.fallback_used)
    assert same(a.fallback_r, b.fallback_r)
    assert_same_fits(a.fits, b.fits)


@pytest.mark.parametrize("n_frames", [8, 9, 10, 11, 13, 15, 17, 23, 31, 64, 801, 4099])
def test_fold_statistics_of_the_engines_are_bit_identical(rng, n_frames):
    """Every remainder of the fold length modulo 8 (the einsum reduction takes 8 values a step)."""
    n = 5
    fm = rng.normal(300.0, 30.0, (n, n_frames)) + 50.0 * np.sin(np.arange(n_frames) / 7.0)
    fn = rng.normal(200.0, 20.0, (n, n_frames))
    for folds, lam in ((4, 0.05), (3, 0.05), (4, 2.5), (1, 0.05)):
        if n_frames // folds < 2:
            continue
        ref = fold_statistics(fm, fn, folds=folds, lam=lam, engine="reference")
        new = fold_statistics(fm, fn, folds=folds, lam=lam, engine="compiled")
        for name in ("aa", "ab", "bb", "mean_fm"):
            assert same(getattr(ref, name), getattr(new, name)), (name, folds, lam)
        assert ref.fold_length == new.fold_length
    if n_frames >= 801:  # the data are sensitive to the summation order: another order changes bits
        t_f = n_frames // 4
        ab = np.zeros((3, t_f))
        ab[0, 1:] = ab[2, :-1] = -0.05
        ab[1] = 1.1
        ab[1, 0] = ab[1, -1] = 1.05
        segments = fm[:, : 4 * t_f].reshape(-1, t_f).T
        residual = (solve_banded((1, 1), ab, segments) - segments).T
        assert not np.array_equal(np.sum(residual * residual, axis=1), ref.aa.ravel())


def test_engines_are_bit_identical_on_a_realistic_session(rng):
    n, n_frames = 40, 6001
    truth = rng.uniform(0.1, 1.4, size=n)
    fm, fn = contaminated(rng, n, n_frames, truth)
    fm[3] = np.nan  # a demixing NaN row
    fm[5, [0, 17, 2000, n_frames - 1]] = np.nan  # dropped frames (also at the ends)
    fn[7, 100:130] = np.inf
    fn[9, : n_frames // 5] = np.nan  # too many NaN frames: skipped
    fm[11] *= 0.01  # negative baseline with the fitted r
    fm[13, 50:60] = np.nan  # overlapping runs in the two traces
    fn[13, 55:70] = np.nan
    fn[15, -5:] = -np.inf
    fm[17, :3] = np.nan
    fm[19, 4000:4100] = np.inf
    for kwargs in ({}, {"r_max": np.inf}, {"r_max": 1.2}, {"method": "fixed"}, {"folds": 3, "lam": 0.2}):
        results = [correct_neuropil(fm, fn, engine=engine, **kwargs) for engine in NEUROPIL_ENGINES]
        assert_same_results(*results)
    result = results[0]
    assert STATUS_SKIPPED in result.status and STATUS_NEGATIVE_BASELINE in result.status


@pytest.mark.parametrize("n_frames", [8, 9, 50])
def test_engines_agree_on_one_roi_short_traces_and_nan_rows(rng, n_frames):
    fm, fn = contaminated(rng, 3, n_frames, np.array([0.3, 0.6, 0.9]))
    one = [correct_neuropil(fm[:1], fn[:1], engine=engine) for engine in NEUROPIL_ENGINES]
    assert_same_results(*one)
    fm[1] = np.nan
    fn[2, 1] = np.nan
    rows = [correct_neuropil(fm, fn, engine=engine, max_nan_fraction=0.2) for engine in NEUROPIL_ENGINES]
    assert_same_results(*rows)
    assert rows[0].status[1] == STATUS_SKIPPED
    all_nan = [correct_neuropil(np.full((2, n_frames), np.nan), fn[:2], engine=engine) for engine in NEUROPIL_ENGINES]
    assert_same_results(*all_nan)
    assert (all_nan[0].status == STATUS_SKIPPED).all()
    empty = [correct_neuropil(np.zeros((0, n_frames)), np.zeros((0, n_frames)), engine=engine) for engine in NEUROPIL_ENGINES]
    assert_same_results(*empty)


def test_grid_search_engines_are_bit_identical_on_edge_cases(rng):
    n, folds = 64, 4
    ab = rng.normal(0.0, 1.0, (n, folds))
    bb = rng.uniform(0.1, 10.0, (n, folds))
    aa = (ab / np.sqrt(bb)) ** 2 + rng.uniform(0.0, 1.0, (n, folds))  # positive definite quadratic
    mean = rng.uniform(-2.0, 300.0, (n, folds))
    aa[0, 1] = np.nan
    bb[1] = 0.0
    ab[2], aa[2] = 0.0, 0.0  # error 0 everywhere: ties
    mean[3] = 0.0  # infinite errors
    ab[4] = 40.0 * bb[4]  # minimum far above the cap
    ab[5] = -3.0 * bb[5]  # minimum below 0
    stats = FoldStatistics(aa, ab, bb, mean, 100)
    for kwargs in ({}, {"r_max": np.inf}, {"r_max": 1.05}, {"r_range": (0.3, 0.35), "dr": 0.1},
                   {"r_range": (1.0, 0.0)}, {"dr": -0.1}, {"iterations": 5, "dr_factor": 0.3},
                   {"r_range": (-1.0, 1.0), "dr": 0.07}):
        if kwargs.get("r_max") == np.inf:
            kwargs["iterations"] = 3
            stats_used = FoldStatistics(aa[5:], ab[5:], bb[5:], mean[5:], 100)  # no minimum at infinity
        else:
            stats_used = stats
        assert_same_fits(*(grid_search_all(stats_used, engine=engine, **kwargs) for engine in NEUROPIL_ENGINES))


def test_compiled_arange_equals_numpy(rng):
    from release_platform.ophys._neuropil_kernel import _arange

    cases = [(0.0, 2.0, 0.1), (0.49, 0.51, 0.001), (1.9, 3.8, 0.1), (0.3, 0.3, 0.1), (1.0, 0.0, 0.1), (0.0, 1.0, -0.1),
             (0.4, 0.5, 0.1), (0.3, 0.4, 0.1)]
    for lo, width, points in zip(rng.uniform(-3.0, 3.0, 300), rng.uniform(0.0, 3.0, 300), rng.integers(1, 40, 300)):
        cases.append((lo, lo + width, width / points * rng.uniform(0.9, 1.1)))
    for case in cases:
        assert np.array_equal(_arange(*case), np.arange(*case)), case


def test_grid_search_ends_when_the_cap_cuts_the_grid_or_a_one_point_pass_repeats():
    """Both searches used to run forever: a cap between grid points (the extension re-evaluates the
    last point below the cap) and a one-point extension pass (arange(0.4, 0.5, 0.1) has one point)."""
    one = lambda ab: FoldStatistics(np.full((1, 4), 100.0), np.full((1, 4), ab), np.ones((1, 4)), np.ones((1, 4)), 100)
    for engine in NEUROPIL_ENGINES:
        (fit,) = grid_search_all(one(3.0), r_max=1.05, engine=engine)  # minimum at r = 3
        assert fit.at_cap and fit.r == pytest.approx(1.0) and fit.r_vals.max() <= 1.05
        (fit,) = grid_search_all(one(0.72), r_range=(0.3, 0.35), dr=0.1, engine=engine)
        assert not fit.at_cap and fit.r == pytest.approx(0.72)


@pytest.mark.parametrize("n_frames", [1, 2, 7, 1000])
def test_compiled_fill_equals_fill_nan_linear(rng, n_frames):
    from release_platform.ophys._neuropil_kernel import fill_rows

    n = 12
    fm = rng.normal(300.0, 20.0, (n, n_frames)) * 10.0 ** rng.integers(-3, 4, (n, 1))
    fn = rng.normal(200.0, 10.0, (n, n_frames))
    for row in range(1, n):
        picks = rng.choice(n_frames, rng.integers(1, n_frames + 1), replace=False)
        target = fm if row % 2 else fn
        target[row, picks] = rng.choice([np.nan, np.inf, -np.inf], picks.size)
    fm[2, : n_frames // 2] = np.nan
    fn[3, -(n_frames // 2) :] = np.nan
    fm[4] = np.nan  # no good frame
    bad = ~(np.isfinite(fm) & np.isfinite(fn))
    rows = np.arange(n)
    out_m, out_n = np.empty((n, n_frames)), np.empty((n, n_frames))
    fill_rows(fm, fn, rows, out_m, out_n, 0, n)
    assert np.array_equal(out_m, fill_nan_linear(np.where(bad, np.nan, fm)), equal_nan=True)
    assert np.array_equal(out_n, fill_nan_linear(np.where(bad, np.nan, fn)), equal_nan=True)


def test_compiled_pairwise_sum_equals_numpy(rng):
    from release_platform.ophys._neuropil_kernel import pairwise_sum

    for n in [0, 1, 7, 8, 9, 127, 128, 129, 255, 256, 1000, 4500, 4501, 15003, 60000]:
        x = rng.normal(300.0, 50.0, n + 5) * 10.0 ** rng.integers(-5, 6)
        assert pairwise_sum(x, 3, n, False) == np.add.reduce(x[3 : 3 + n])
        x[rng.choice(n + 5, (n + 5) // 10, replace=False)] = np.nan
        zeroed = np.where(np.isnan(x), 0.0, x)
        assert pairwise_sum(x, 2, n, True) == np.add.reduce(zeroed[2 : 2 + n])
        sequential = 0.0
        for value in zeroed[2 : 2 + n]:  # another order gives other bits: the test can fail
            sequential += value
        if n >= 1000:
            assert sequential != np.add.reduce(zeroed[2 : 2 + n])


def test_unknown_engine_is_refused(rng):
    fm, fn = contaminated(rng, 2, 100, np.array([0.5, 0.5]))
    with pytest.raises(ValueError, match="unknown neuropil engine"):
        correct_neuropil(fm, fn, engine="fast")
