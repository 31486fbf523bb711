"""Demixing: recovery on overlapping ROIs, equivalence with the per-frame algorithm, QC."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg as linalg

from release_platform.errors import InputError
from release_platform.ophys.demixing import (
    LAPACK_RCOND,
    _group_solver,
    _solve_stack,
    _solver,
    demix_qc,
    demix_traces,
    load_solver,
    negative_transient_rows,
    overlap_groups,
    overlap_neighbourhood,
)
from release_platform.ophys.io import open_movie

from .conftest import disk, make_session, write_movie


def per_frame_reference(raw: np.ndarray, movie: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """The AllenSDK per-frame solve over all N ROIs with dense matrices; skipped frames are NaN."""
    n, t = raw.shape
    flat = masks.reshape(n, -1).astype(float)
    npix = flat.sum(axis=1)
    out = np.full((n, t), np.nan)
    for k in range(t):
        frame = movie[k].ravel().astype(float)
        w = raw[:, k] * npix
        if (w == 0).any():
            continue
        weighted = flat * frame[None, :] * (npix / w)[:, None]
        overlap = flat @ weighted.T
        try:
            out[:, k] = linalg.solve(overlap, w)
        except linalg.LinAlgError:
            out[:, k] = linalg.lstsq(overlap, w)[0]
    return out


def mask_means(movie: np.ndarray, masks: np.ndarray) -> np.ndarray:
    return np.stack([movie[:, m].astype(float).mean(axis=1) for m in masks])


OVERLAPPING_CENTERS = [(14, 12), (14, 19), (34, 12), (34, 18), (12, 36)]  # two pairs + one isolated


def test_demixing_improves_correlation_with_true_cells(rng, tmp_path, capsys):
    session = make_session(rng, n_frames=240, centers=OVERLAPPING_CENTERS, radius=5, r=np.zeros(5))
    raw = mask_means(session.movie, session.masks)
    path = write_movie(tmp_path / "movie.h5", session.movie, chunks=(16, 48, 48))
    with open_movie(path) as movie:
        result = demix_traces(raw, movie, session.masks, block_frames=50)
    assert sorted(map(list, result.groups)) == [[0, 1], [2, 3]]
    corr_raw = [np.corrcoef(raw[i], session.cells[i])[0, 1] for i in range(4)]
    corr_demixed = [np.corrcoef(result.demixed[i], session.cells[i])[0, 1] for i in range(4)]
    with capsys.disabled():
        print("\noverlapping ROIs: corr(raw, truth) =", np.round(corr_raw, 4), "corr(demixed, truth) =", np.round(corr_demixed, 4))
    for before, after in zip(corr_raw, corr_demixed):
        assert after > before + 0.005
    # the isolated ROI passes through bit-identical
    assert np.array_equal(result.demixed[4], raw[4])
    assert result.dropped_frame_count == 0 and result.lstsq_solves == 0


def test_matches_the_per_frame_algorithm(rng):
    session = make_session(rng, n_frames=25, centers=OVERLAPPING_CENTERS + [(36, 36), (36, 40)], radius=4)
    raw = mask_means(session.movie, session.masks)
    expected = per_frame_reference(raw, session.movie, session.masks)
    result = demix_traces(raw, session.movie, session.masks, block_frames=4)
    np.testing.assert_allclose(result.demixed, expected, rtol=1e-9, atol=1e-9)


def test_unsolvable_frames_are_nan_and_counted_never_zero(rng):
    session = make_session(rng, n_frames=20, centers=OVERLAPPING_CENTERS, radius=5)
    raw = mask_means(session.movie, session.masks)
    raw[0, 3] = 0.0  # w = 0 -> the frame of group (0, 1) cannot be solved
    raw[2, 7] = np.nan  # a NaN raw value -> group (2, 3) cannot be solved at frame 7
    raw[4, 9] = 0.0  # isolated ROI: passes through unchanged
    result = demix_traces(raw, session.movie, session.masks)
    assert np.isnan(result.demixed[[0, 1], 3]).all() and np.isnan(result.demixed[[2, 3], 7]).all()
    assert np.isfinite(result.demixed[[2, 3], 3]).all()
    assert result.demixed[4, 9] == 0.0
    assert result.dropped_frame_count == 2
    assert list(np.flatnonzero(result.dropped_frames)) == [3, 7]
    assert list(result.roi_dropped_frames) == [1, 1, 1, 1, 0]


def test_singular_system_falls_back_to_least_squares(rng):
    shape = (20, 20)
    mask = disk(shape, (10, 10), 4)
    masks = np.stack([mask, mask])  # identical masks: A has two equal rows
    movie = rng.poisson(300, size=(6, *shape)).astype(np.uint16)
    raw = mask_means(movie, masks)
    result = demix_traces(raw, movie, masks)
    assert result.lstsq_solves == 6 and result.dropped_frame_count == 0
    # the minimum-norm solution splits the shared signal equally (plain LU would return an arbitrary
    # solution of the rank-deficient system for some frames, with only an ill-conditioning warning)
    np.testing.assert_allclose(result.demixed[0], raw[0] / 2, rtol=1e-9)
    np.testing.assert_allclose(result.demixed[1], raw[1] / 2, rtol=1e-9)


def test_invalid_rows_and_input_errors(rng):
    session = make_session(rng, n_frames=10, centers=OVERLAPPING_CENTERS, radius=5)
    raw = mask_means(session.movie, session.masks)
    masks = session.masks.copy()
    masks[4] = False  # zero-pixel mask
    raw[1] = np.nan  # all-NaN trace: ROI 0 is no longer in a group
    result = demix_traces(raw, session.movie, masks)
    assert list(np.flatnonzero(result.invalid_rows)) == [1, 4]
    assert np.isnan(result.demixed[[1, 4]]).all()
    assert np.array_equal(result.demixed[0], raw[0])
    with pytest.raises(InputError, match="5 masks for 4 traces"):
        demix_traces(raw[:4], session.movie, masks)
    with pytest.raises(InputError, match="traces have 9 frames, the movie has 10"):
        demix_traces(raw[:, :9], session.movie, masks)
    with pytest.raises(InputError, match=r"masks are \(10, 10\)"):
        demix_traces(raw, session.movie, masks[:, :10, :10])


def previous_solve_one(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, bool]:
    """One system as the previous (LAPACK) stack solver treated it: (x, solved by least squares).

    LU via ``numpy.linalg.solve``; singular when LU fails or 1 / (|a|_1 |inv(a)|_1) <= g eps, then
    ``scipy.linalg.lstsq``; a non-finite solution is solved by least squares too.
    """
    lstsq = False
    try:
        x = np.linalg.solve(a, b)
        inverse = np.linalg.inv(a)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            rcond = 1.0 / (np.abs(a).sum(axis=0).max() * np.abs(inverse).sum(axis=0).max())
        singular = not rcond > a.shape[0] * np.finfo(np.float64).eps
    except np.linalg.LinAlgError:
        singular = True
    if singular:
        x, lstsq = linalg.lstsq(a, b)[0], True
    return x, lstsq


def previous_group_demixing(raw: np.ndarray, movie: np.ndarray, masks: np.ndarray, groups) -> tuple[np.ndarray, int]:
    """The previous solve, system by system: per group and frame A_ij = O_ij (npix_j / w_j), w = raw npix.

    Unsolvable group-frames (w_j zero or non-finite, A non-finite, no finite solution) are NaN.
    Returns (demixed, least-squares solves).
    """
    flat = masks.reshape(masks.shape[0], -1).astype(np.float64)
    npix = flat.sum(axis=1)
    out = raw.astype(np.float64).copy()
    n_lstsq = 0
    for members in groups:
        sub = flat[members]
        for t in range(raw.shape[1]):
            overlap = (sub * movie[t].ravel().astype(np.float64)) @ sub.T
            w = raw[members, t] * npix[members]
            with np.errstate(divide="ignore", invalid="ignore"):
                a = overlap * (npix[members] / w)[None, :]
            if not (np.isfinite(w).all() and (w != 0).all() and np.isfinite(a).all()):
                out[members, t] = np.nan
                continue
            x, lstsq = previous_solve_one(a, w)
            n_lstsq += lstsq
            if not np.isfinite(x).all():
                x = linalg.lstsq(a, w)[0]
                n_lstsq += 1
            out[members, t] = x if np.isfinite(x).all() else np.nan
    return out, n_lstsq


def random_systems(rng: np.random.Generator, n: int, g: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Demixing-like systems (identity plus overlaps) with exactly singular, ill-conditioned and
    near-threshold members; returns (a, b, kind) with kind 0 regular, 1 singular, 2 ill-conditioned."""
    a = np.eye(g) + rng.uniform(0.0, 0.3, (n, g, g)) * (rng.uniform(size=(n, g, g)) < 0.5)
    b = rng.uniform(100.0, 1000.0, (n, g))
    kind = np.zeros(n, dtype=int)
    for k in range(n):
        choice = k % 8
        if choice == 1:  # duplicate row (identical masks)
            a[k, 1] = a[k, 0]
            kind[k] = 1
        elif choice == 2:  # a zero row
            a[k, g - 1] = 0.0
            kind[k] = 1
        elif choice == 3:  # rank deficient by a linear combination
            a[k, 0] = 0.5 * a[k, 1] + 0.25 * a[k, g - 1]
            kind[k] = 1
        elif choice == 4:  # ill-conditioned near the singular threshold, either side of it
            a[k, 1] = a[k, 0] * (1.0 + 10.0 ** rng.uniform(-16.5, -12.0))
            kind[k] = 2
        elif choice == 5:  # ill-conditioned but clearly solvable
            a[k, 1] = a[k, 0] * (1.0 + 10.0 ** rng.uniform(-11.0, -6.0))
            kind[k] = 2
    return a, b, kind


def lapack_rcond(a: np.ndarray) -> float:
    try:
        inverse = np.linalg.inv(a)
    except np.linalg.LinAlgError:
        return 0.0
    return float(1.0 / (np.abs(a).sum(axis=0).max() * np.abs(inverse).sum(axis=0).max()))


@pytest.mark.parametrize("g", [2, 3, 4, 7, 12, 30])
def test_stack_solver_matches_the_previous_lapack_solver(rng, g):
    a, b, kind = random_systems(rng, 400, g)
    expected = np.empty_like(b)
    expected_lstsq = np.zeros(a.shape[0], dtype=bool)
    for k in range(a.shape[0]):
        expected[k], expected_lstsq[k] = previous_solve_one(a[k], b[k])
    x, n_lstsq = _solve_stack(a, b)
    # the same members are declared singular (least squares): the count and their solutions agree
    assert n_lstsq == expected_lstsq.sum()
    assert expected_lstsq[kind == 1].all() and not expected_lstsq[kind == 0].any()
    assert np.isfinite(x).all() and np.isfinite(expected).all()
    np.testing.assert_array_equal(x[expected_lstsq], expected[expected_lstsq])
    # well-conditioned members: the compiled LU agrees to rounding
    np.testing.assert_allclose(x[kind == 0], expected[kind == 0], rtol=1e-9, atol=0)
    # every member: within 1e-6 relative; below the LAPACK band bit-identical (LAPACK computes them)
    np.testing.assert_allclose(x, expected, rtol=1e-6, atol=0)
    below = (kind == 2) & np.array([lapack_rcond(m) < LAPACK_RCOND / 10 for m in a])
    assert below.any()
    np.testing.assert_array_equal(x[below], expected[below])


def test_condition_bound_is_a_lower_bound_and_the_exact_value_matches_lapack(rng):
    for g in (2, 3, 6, 11, 30):
        a, b, kind = random_systems(rng, 200, g)
        usable = np.array([lapack_rcond(m) for m in a])
        keep = usable > 1e-8  # clearly invertible: both LU give the same rcond to rounding
        a, b, reference = a[keep], b[keep], usable[keep]
        x_bound, bound = np.empty_like(b), np.empty(len(a))
        _solver()(a, b, 0.0, x_bound, bound)  # min_rcond 0: the lower bound is returned
        x_exact, exact = np.empty_like(b), np.empty(len(a))
        _solver()(a, b, np.inf, x_exact, exact)  # min_rcond inf: the exact value is returned
        np.testing.assert_allclose(exact, reference, rtol=1e-6)
        assert (bound <= exact * (1 + 1e-12)).all() and (bound > 0).all()
        # the solution does not depend on the path
        np.testing.assert_array_equal(x_bound, x_exact)


def test_load_solver_loads_both_layouts_of_the_pair_sums():
    load_solver()
    layouts = {signature[0].layout for signature in _group_solver().signatures}
    assert {"C", "A"} <= layouts
    assert _solver().signatures


def test_group_demixing_equals_the_previous_solver(rng):
    """Groups of 2, 3 and 4 ROIs, a group with identical masks (singular every frame), a group of nearly
    identical masks (ill-conditioned), zero and NaN raw values: decisions and counts are identical, values
    equal to rounding."""
    shape = (48, 64)
    masks = [
        disk(shape, (10, 8), 4), disk(shape, (10, 14), 4),  # pair
        disk(shape, (10, 30), 4), disk(shape, (10, 36), 4), disk(shape, (10, 42), 4),  # chain of 3
        disk(shape, (28, 8), 4), disk(shape, (28, 14), 4), disk(shape, (34, 11), 4), disk(shape, (22, 11), 4),  # 4
        disk(shape, (30, 40), 5), disk(shape, (30, 40), 5),  # identical masks
        disk(shape, (40, 56), 6),  # nearly identical: one extra pixel
        disk(shape, (24, 56), 3),  # isolated
    ]
    almost = disk(shape, (40, 56), 6)
    almost[40, 63] = True
    masks.insert(12, almost)
    masks = np.stack(masks)
    n_frames = 300
    movie = rng.poisson(400, size=(n_frames, *shape)).astype(np.uint16)
    raw = mask_means(movie, masks)
    raw[0, 5] = 0.0
    raw[3, 17] = np.nan
    raw[6, 40:43] = np.nan
    raw[9, 100] = 0.0
    raw[11, 200] = np.inf
    groups = overlap_groups(masks)
    assert sorted(len(g) for g in groups) == [2, 2, 2, 3, 4]
    expected, expected_lstsq = previous_group_demixing(raw, movie, masks, groups)
    result = demix_traces(raw, movie, masks, block_frames=64)
    assert result.lstsq_solves == expected_lstsq
    assert expected_lstsq >= n_frames - 1  # the identical masks: every solvable frame
    np.testing.assert_array_equal(np.isnan(result.demixed), np.isnan(expected))
    # normwise per group and frame (a demixed value near 0 is a cancellation: relative to the group's solution)
    for members in groups:
        error = np.nanmax(np.abs(result.demixed[members] - expected[members]), axis=0, initial=0.0)
        scale = np.nanmax(np.abs(expected[members]), axis=0, initial=0.0)
        assert (error <= 1e-9 * scale).all()
    isolated = [13]  # the isolated ROI passes through
    np.testing.assert_array_equal(result.demixed[isolated], raw[isolated])
    assert list(np.flatnonzero(result.dropped_frames)) == [5, 17, 40, 41, 42, 100, 200]
    # the singular group's frames are the previous least-squares solutions, bit for bit
    np.testing.assert_array_equal(result.demixed[[9, 10]], expected[[9, 10]])


def legacy_negative_transient(trace: np.ndarray, window=500, length=10, std_devs=3.0) -> bool:
    """Plain loop version of AllenSDK ``find_negative_transients_threshold``."""
    padded = np.concatenate([np.full(window - 1, trace[:window].mean()), trace])
    below = []
    for t in range(trace.size):
        seg = padded[t : t + window]
        below.append(trace[t] < seg.mean() - std_devs * seg.std())
    run = 0
    for b in below:
        run = run + 1 if b else 0
        if run >= length:
            return True
    return False


def test_negative_transients_match_the_legacy_definition(rng):
    traces = 100 + rng.standard_normal((6, 900))
    traces[1, 600:615] -= 20  # 15-frame dip: a transient
    traces[2, 600:605] -= 20  # 5 frames: too short
    traces[3, 100:112] -= 20  # inside the padded start
    traces[4, 890:900] -= 20  # exactly 10 frames at the end
    got = negative_transient_rows(traces)
    expected = [legacy_negative_transient(t) for t in traces]
    assert list(got) == expected
    assert got[1] and not got[2] and got[4]


def test_qc_flags_negative_baselines_with_two_hop_neighbours_and_zero_baselines():
    shape = (30, 60)
    centers = [(15, 5), (15, 12), (15, 19), (15, 26), (15, 45)]  # chain 0-1-2-3, isolated 4
    masks = np.stack([disk(shape, c, 4) for c in centers])
    assert [list(g) for g in overlap_groups(masks)] == [[0, 1, 2, 3]]
    t = np.arange(400)
    traces = np.stack([
        -50 + np.sin(t / 10.0),  # negative baseline
        200 + np.sin(t / 7.0),
        200 + np.sin(t / 5.0),
        200 + np.sin(t / 3.0),
        1 + 5 * np.sin(t / 4.0),  # mean < std: zero baseline
    ])
    qc = demix_qc(traces, masks)
    assert list(qc.negative_baseline) == [0]
    assert list(qc.zero_baseline) == [0, 4]
    assert list(qc.flagged) == [0, 1, 2, 4]  # ROI 3 is three hops away
    qc_no_zero = demix_qc(traces, masks, include_zero_baseline=False)
    assert list(qc_no_zero.flagged) == [0, 1, 2]
    background = np.ones((1, *shape), bool)  # a full-frame mask does not connect ROIs
    with_background = np.concatenate([masks, background])
    assert list(np.flatnonzero(overlap_neighbourhood(with_background, np.array([4]), hops=2))) == [4]
