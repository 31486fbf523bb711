"""Demixing of overlapping ROI traces and the post-demixing quality control.

Algorithm (AllenSDK ``demix_time_dep_masks``, vectorized)
---------------------------------------------------------
For ROI masks M_i (binary, npix_i pixels), raw traces r_i(t) (mean fluorescence over the mask) and
a movie frame f_t, the frame is modelled as f_t(p) = sum_j x_j(t) W_j(p, t) with weighted masks
W_j(p, t) = M_j(p) f_t(p) npix_j / w_j(t), w_j(t) = r_j(t) npix_j. Integrating over mask i gives
the linear system A(t) x(t) = w(t) with

    A_ij(t) = O_ij(t) npix_j / w_j(t),   O_ij(t) = sum of f_t over the pixels of M_i and M_j.

A is block diagonal over the connected components of the mask-overlap graph, so only connected
overlap groups (two or more ROIs) are solved, one small g x g system per group and frame. A compiled
kernel builds each system from the pair sums and factors it once (LU with partial pivoting), giving
the solution and a guaranteed lower bound of its reciprocal 1-norm condition number (exact where the
bound is small). ``O_ij`` needs only the pixel sums over pairwise mask intersections, streamed from the
movie in blocks. ROIs that overlap nothing are passed through bit-identical to their raw trace (for
them the solution is x_i = r_i).

A system whose reciprocal condition number is at most ``LAPACK_RCOND`` (1e-9, far above the singular
threshold) is solved again by LAPACK (:func:`numpy.linalg.solve`, with ``numpy.linalg.inv`` for its
exact reciprocal condition number); it is singular when LU fails or that number is at most g * machine
epsilon, and then falls back to least squares (``scipy.linalg.lstsq``), as does a solution with
non-finite values. So which systems are singular is decided by LAPACK exactly as in the plain
formulation; well-conditioned systems differ from LAPACK's solution by rounding only (of the order of
the condition number times machine epsilon, relative to the group's solution). A group-frame that
cannot be solved (some w_j == 0 or non-finite, or no finite solution) is NaN for the ROIs of that
group and counted in ``dropped_frames``; it is never 0.

Units: demixed traces are in the units of the raw traces (mean fluorescence per mask pixel).

Quality control (AllenSDK ``run_demixing``)
-------------------------------------------
* negative transient: a run of >= 10 frames below ``rolling_mean - 3 rolling_std`` over a causal
  500-frame window (front-padded with the mean of the first 500 frames). Reported only.
* negative baseline: mean + std over time < 0. Such an ROI, every ROI overlapping it and every ROI
  overlapping those (two hops; a mask covering the whole frame is ignored) are flagged.
* zero baseline: mean - std < 0 (mean < std). Flagged too (can be switched off).
Flagged ROIs get NaN traces in the demixing output. Means and standard deviations ignore NaN frames.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterator

import bottleneck as bn
import numpy as np
import scipy.linalg as linalg
import scipy.sparse as sparse
from scipy.sparse.csgraph import connected_components

from release_platform.errors import InputError
from release_platform.ophys.io import movie_shape
from release_platform.ophys.streaming import iter_mask_sums

#: Exclusion labels whose ROIs are not demixed (AllenSDK ``run_demixing`` defaults).
DEFAULT_EXCLUDE_LABELS: tuple[str, ...] = (
    "union",
    "duplicate",
    "motion_border",
    "decrosstalk_ghost",
    "decrosstalk_invalid_raw",
    "decrosstalk_invalid_raw_active",
    "decrosstalk_invalid_unmixed",
    "decrosstalk_invalid_unmixed_active",
)

NEGATIVE_TRANSIENT_WINDOW = 500
NEGATIVE_TRANSIENT_LENGTH = 10
NEGATIVE_TRANSIENT_STD_DEVS = 3.0


def as_mask_matrix(masks: Any, frame_shape: tuple[int, int] | None = None) -> sparse.csr_matrix:
    """N x (H*W) binary CSR matrix from a sparse matrix or an N x H x W boolean array."""
    if sparse.issparse(masks):
        matrix = sparse.csr_matrix(masks, dtype=np.float64, copy=True)
    else:
        array = np.asarray(masks)
        if array.ndim != 3:
            raise InputError(f"masks must be N x H x W or a sparse N x (H*W) matrix, got shape {array.shape}")
        flat = array.reshape(array.shape[0], array.shape[1] * array.shape[2]).astype(bool)
        matrix = sparse.csr_matrix(flat, dtype=np.float64)
        if frame_shape is not None and tuple(array.shape[1:]) != tuple(frame_shape):
            raise InputError(f"masks are {array.shape[1:]} but movie frames are {tuple(frame_shape)}")
    matrix.eliminate_zeros()
    matrix.data[:] = 1.0
    matrix.sort_indices()
    return matrix


def overlap_groups(masks: Any) -> list[np.ndarray]:
    """Connected components (>= 2 ROIs) of the graph "masks share at least one pixel", sorted indices.

    ``masks``: N x (H*W) sparse matrix or N x H x W boolean array.
    """
    masks = as_mask_matrix(masks)
    n = masks.shape[0]
    if n == 0:
        return []
    co = sparse.csr_matrix(masks @ masks.T)
    co.setdiag(0)
    co.eliminate_zeros()
    n_comp, labels = connected_components(co, directed=False)
    counts = np.bincount(labels, minlength=n_comp)
    return [np.flatnonzero(labels == c) for c in np.flatnonzero(counts >= 2)]


@dataclass
class DemixResult:
    """Demixed traces and bookkeeping.

    ``demixed``: N x T (input units); ``dropped_frames``: T booleans, True where at least one overlap
    group could not be solved (its ROIs are NaN at that frame); ``roi_dropped_frames``: per ROI, the
    number of frames set to NaN by demixing; ``lstsq_solves``: group-frames solved by least squares;
    ``invalid_rows``: ROIs not demixed (empty mask or no finite raw value) whose rows are NaN;
    ``groups``: the overlap groups (ROI row indices) that were solved.
    """

    demixed: np.ndarray
    dropped_frames: np.ndarray
    roi_dropped_frames: np.ndarray
    lstsq_solves: int
    invalid_rows: np.ndarray
    groups: list[np.ndarray] = field(default_factory=list)

    @property
    def dropped_frame_count(self) -> int:
        return int(self.dropped_frames.sum())


#: Systems whose reciprocal condition number (from the compiled LU) is at most this are solved again by
#: LAPACK, which then decides "singular" exactly as before; above it the compiled solution is used (its
#: relative difference to LAPACK's is of the order of the condition number times machine epsilon).
LAPACK_RCOND = 1e-9


def _solve_stack(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, int]:
    """Solve a stack of systems a[k] x = b[k] (finite); singular members fall back to least squares.

    Each member is factored once by a compiled LU with partial pivoting that also gives its reciprocal
    1-norm condition number (a guaranteed lower bound from the factors, or the exact value where that
    bound is not above ``LAPACK_RCOND``). Well-conditioned members (``rcond > LAPACK_RCOND``) take that
    solution; the others (ill-conditioned, or an exactly zero pivot) go through :func:`_solve_stack_lapack`,
    which decides which of them are singular (and solved by least squares).
    Returns (x, number of least-squares solves).
    """
    if a.shape[0] == 0:
        return np.zeros(b.shape), 0
    a = np.ascontiguousarray(a, dtype=np.float64)
    b = np.ascontiguousarray(b, dtype=np.float64)
    x = np.empty(b.shape)
    rcond = np.empty(a.shape[0])
    _solver()(a, b, LAPACK_RCOND, x, rcond)
    recheck = np.flatnonzero(~(rcond > LAPACK_RCOND))
    if recheck.size == 0:
        return x, 0
    x[recheck], n_lstsq = _solve_stack_lapack(a[recheck], b[recheck])
    return x, n_lstsq


def _solve_stack_lapack(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, int]:
    """Solve a stack of systems a[k] x = b[k] by LAPACK; singular members fall back to least squares.

    A member counts as singular when LU fails or its reciprocal 1-norm condition number is below
    g * machine epsilon (the matrix is numerically rank deficient: LU would return an arbitrary
    solution); those are solved with ``scipy.linalg.lstsq`` (minimum-norm least squares). The stack is
    bisected on LinAlgError so only the failing members are solved one by one. Returns (x, number of
    least-squares solves).
    """
    if a.shape[0] == 0:
        return np.zeros(b.shape), 0
    try:
        x = np.linalg.solve(a, b[..., None])[..., 0]
        inverse = np.linalg.inv(a)
    except np.linalg.LinAlgError:
        if a.shape[0] == 1:
            return _lstsq_one(a[0], b[0])[None, :], 1
        half = a.shape[0] // 2
        x1, n1 = _solve_stack_lapack(a[:half], b[:half])
        x2, n2 = _solve_stack_lapack(a[half:], b[half:])
        return np.concatenate([x1, x2]), n1 + n2
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        rcond = 1.0 / (np.abs(a).sum(axis=1).max(axis=1) * np.abs(inverse).sum(axis=1).max(axis=1))
    singular = ~(rcond > a.shape[1] * np.finfo(np.float64).eps)
    for k in np.flatnonzero(singular):
        x[k] = _lstsq_one(a[k], b[k])
    return x, int(singular.sum())


def _solver() -> Any:
    """The compiled small-system solver (numba is imported, and the solver loaded or compiled, on first use)."""
    from release_platform.ophys._demix_kernel import solve_small_systems

    return solve_small_systems


def _group_solver() -> Any:
    """The compiled builder and solver of the overlap groups' systems (imported on first use)."""
    from release_platform.ophys._demix_kernel import solve_overlap_groups

    return solve_overlap_groups


def load_solver() -> None:
    """Import numba and load (or compile) the demixing solvers now: a once-per-process cost (compiled code is
    cached on disk) that benchmarks keep out of their timings. Both layouts of the pair sums are loaded:
    contiguous (read from the movie) and a block of columns of the gathered sums."""
    _solve_stack(np.eye(2)[None], np.ones((1, 2)))
    members, group_ptr, pair_rows = np.array([[0, 1]], dtype=np.int64), np.array([0, 3]), np.arange(3)
    pos_ab, pos_ba = np.array([0, 1, 3]), np.array([0, 2, 3])
    for sums in (np.full((3, 2), 2.0), np.full((3, 4), 2.0)[:, :2]):
        x, rcond, ok = np.empty((1, 2, 2)), np.empty((1, 2)), np.empty((1, 2), dtype=bool)
        _group_solver()(sums, np.ones((2, 2)), 0, np.ones(2), members, group_ptr, pair_rows, pos_ab, pos_ba,
                        LAPACK_RCOND, x, rcond, ok)


def _lstsq_one(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return np.full(b.shape, np.nan)
    try:
        return linalg.lstsq(a, b)[0]
    except (linalg.LinAlgError, ValueError):
        return np.full(b.shape, np.nan)


@dataclass
class OverlapSums:
    """Per-frame pixel sums over the pairwise intersections of ROI masks, gathered while extracting.

    ``pairs`` P x 2 (``a <= b``, row indices into the masks): every pair of masks sharing a pixel,
    and ``(a, a)`` for every mask in such a pair; ``sums`` P x T: the sum of each frame over the pixels
    of both masks of the pair (over mask ``a`` for ``(a, a)``), in movie units. These are all the
    movie data demixing needs (``O_ij(t)`` in the module docstring).
    """

    pairs: np.ndarray
    sums: np.ndarray

    def rows(self) -> dict[tuple[int, int], int]:
        """Row of each pair in ``sums``."""
        return {(int(a), int(b)): k for k, (a, b) in enumerate(self.pairs)}

    def select(self, rows: Any) -> "OverlapSums":
        """The pairs among the masks ``rows`` (row indices), renumbered 0..len(rows)-1 in that order."""
        position = {int(r): i for i, r in enumerate(np.asarray(rows).ravel())}
        keep, pairs = [], []
        for k, (a, b) in enumerate(self.pairs):
            if int(a) in position and int(b) in position:
                i, j = position[int(a)], position[int(b)]
                keep.append(k)
                pairs.append((min(i, j), max(i, j)))
        return OverlapSums(np.asarray(pairs, dtype=np.int64).reshape(-1, 2), self.sums[keep])


def overlap_pairs(masks: Any) -> tuple[np.ndarray, sparse.csr_matrix]:
    """The pairs of :class:`OverlapSums` for ``masks`` and their P x (H*W) intersection indicator matrix."""
    matrix = as_mask_matrix(masks)
    co = sparse.triu(matrix @ matrix.T, k=1).tocoo()
    keep = co.data > 0
    off = np.column_stack([co.row[keep], co.col[keep]]).astype(np.int64)
    members = np.unique(off)
    pairs = np.concatenate([off, np.column_stack([members, members])]) if off.size else np.zeros((0, 2), np.int64)
    pairs = pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]
    rows = [matrix[a] if a == b else matrix[a].multiply(matrix[b]).tocsr() for a, b in pairs]
    inter = sparse.vstack(rows, format="csr") if rows else sparse.csr_matrix((0, matrix.shape[1]))
    inter.eliminate_zeros()
    return pairs, inter


@dataclass
class _Batch:
    """All overlap groups of one size g, with scatter indices for their intersection sums."""

    size: int
    members: np.ndarray  # G x g ROI row indices
    pair_rows: np.ndarray  # rows of the pair sums
    pos_ab: np.ndarray  # flat position a*g+b in the g x g matrix
    pos_ba: np.ndarray
    group_ptr: np.ndarray  # the pairs of group k are entries group_ptr[k] .. group_ptr[k + 1] - 1


def _batches(masks: sparse.csr_matrix, groups: list[np.ndarray], pair_row: dict[tuple[int, int], int]) -> list[_Batch]:
    """Per group size, the groups and where each of their overlapping pairs' sums sit (``pair_row``)."""
    by_size: dict[int, list[tuple[np.ndarray, list[int], list[int], list[int]]]] = {}
    for members in groups:
        sub = masks[members]
        co = sparse.triu(sub @ sub.T).tocoo()
        keep = co.data > 0
        a_idx, b_idx = co.row[keep], co.col[keep]
        rows = [pair_row[(int(members[a]), int(members[b]))] for a, b in zip(a_idx, b_idx)]
        by_size.setdefault(members.size, []).append((members, rows, list(a_idx), list(b_idx)))
    batches = []
    for size, entries in sorted(by_size.items()):
        members = np.stack([e[0] for e in entries])
        pair_rows = np.concatenate([np.asarray(e[1], dtype=np.int64) for e in entries])
        a = np.concatenate([np.asarray(e[2], dtype=np.int64) for e in entries])
        b = np.concatenate([np.asarray(e[3], dtype=np.int64) for e in entries])
        group_ptr = np.concatenate([[0], np.cumsum([len(e[1]) for e in entries])]).astype(np.int64)
        batches.append(_Batch(size, members, pair_rows, a * size + b, b * size + a, group_ptr))
    return batches


def _group_systems(
    batch: _Batch, sums: np.ndarray, raw: np.ndarray, npix: np.ndarray, t0: int, select: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The systems (A, w) of the (group, frame) entries ``select`` (G x B booleans) of ``batch``.

    The same operations as the compiled builder, so the same matrices bit for bit: ``w_j = raw_j npix_j``,
    ``A_ij = O_ij (npix_j / w_j)``. Returns A (K x g x g) and w (K x g) in the order of ``np.nonzero(select)``.
    """
    g = batch.size
    group, frame = np.nonzero(select)
    overlap = np.zeros((group.size, g * g))
    for gi in np.unique(group):
        entries = np.flatnonzero(group == gi)
        pairs = np.arange(batch.group_ptr[gi], batch.group_ptr[gi + 1])
        values = sums[batch.pair_rows[pairs][:, None], frame[entries][None, :]]  # pairs x entries
        overlap[entries[None, :], batch.pos_ab[pairs][:, None]] = values
        overlap[entries[None, :], batch.pos_ba[pairs][:, None]] = values
    rows = batch.members[group]  # K x g
    w = raw[rows, (t0 + frame)[:, None]] * npix[rows]
    with np.errstate(divide="ignore", invalid="ignore"):
        a = overlap.reshape(-1, g, g) * (npix[rows] / w)[:, None, :]
    return a, w


#: Frames per solve when the pair sums are already in memory (bounds the temporaries).
SOLVE_BLOCK_FRAMES = 4096


def demix_traces(
    raw_traces: np.ndarray,
    movie: Any,
    masks: Any,
    *,
    overlap_sums: OverlapSums | None = None,
    block_frames: int | None = None,
    entity: str | None = None,
    path: str | os.PathLike | None = None,
) -> DemixResult:
    """Demix the raw traces of possibly overlapping ROIs.

    Parameters
    ----------
    raw_traces
        N x T raw ROI traces (mean fluorescence over each mask), rows in the order of ``masks``.
    movie
        T x H x W h5py dataset (or array), the movie the traces were extracted from; streamed in blocks
        of frames (only the overlapping masks' pixels are used). Not read, and may be None, when
        ``overlap_sums`` is given.
    masks
        N x (H*W) sparse matrix or N x H x W boolean array of ROI masks.
    overlap_sums
        The pairwise intersection sums gathered during extraction (:class:`OverlapSums`, pair indices
        into ``masks``); they must cover every overlapping pair of the ROIs demixed. The result is
        identical to the one computed from the movie.
    block_frames
        Frames per read; default: as many as fit 64 MiB of movie data (aligned to the h5 chunking).

    Returns
    -------
    DemixResult
        See its docstring. ROIs with an empty mask or an all-NaN raw trace are not demixed (NaN rows,
        ``invalid_rows``) and are left out of the overlap groups.
    """
    raw = np.asarray(raw_traces, dtype=np.float64)
    if raw.ndim != 2:
        raise InputError(f"raw traces must be N x T, got shape {raw.shape}", entity=entity, path=path)
    if overlap_sums is None:
        n_frames, height, width = movie_shape(movie, entity=entity, path=path)
        mask_matrix = as_mask_matrix(masks, (height, width))
        if mask_matrix.shape[1] != height * width:
            raise InputError(
                f"masks cover {mask_matrix.shape[1]} pixels, movie frames have {height * width}", entity=entity, path=path
            )
    else:
        n_frames = int(overlap_sums.sums.shape[1])
        mask_matrix = as_mask_matrix(masks)
    if mask_matrix.shape[0] != raw.shape[0]:
        raise InputError(f"{mask_matrix.shape[0]} masks for {raw.shape[0]} traces", entity=entity, path=path)
    if raw.shape[1] != n_frames:
        source = "the movie has" if overlap_sums is None else "the overlap sums have"
        raise InputError(f"traces have {raw.shape[1]} frames, {source} {n_frames}", entity=entity, path=path)
    n_rois = raw.shape[0]
    npix = np.diff(mask_matrix.indptr).astype(np.float64)
    invalid = (npix == 0) | ~np.isfinite(raw).any(axis=1)
    demixed = raw.copy()
    demixed[invalid] = np.nan
    active = np.flatnonzero(~invalid)
    groups_local = overlap_groups(mask_matrix[active])
    groups = [active[g] for g in groups_local]
    dropped = np.zeros(n_frames, dtype=bool)
    roi_dropped = np.zeros(n_rois, dtype=np.int64)
    lstsq_solves = 0

    def solve(t0: int, t1: int, sums: np.ndarray, batches: list[_Batch]) -> None:
        nonlocal lstsq_solves
        n_t = t1 - t0
        for batch in batches:
            g, members = batch.size, batch.members
            n_groups = members.shape[0]
            x = np.full((n_groups, n_t, g), np.nan)
            rcond = np.zeros((n_groups, n_t))
            ok = np.zeros((n_groups, n_t), dtype=bool)
            _group_solver()(
                sums, raw, t0, npix, members, batch.group_ptr, batch.pair_rows, batch.pos_ab, batch.pos_ba, LAPACK_RCOND,
                x, rcond, ok,
            )
            # ill-conditioned or exactly singular systems: LAPACK decides and solves, as for a stack
            recheck = ok & ~(rcond > LAPACK_RCOND)
            if recheck.any():
                a, w = _group_systems(batch, sums, raw, npix, t0, recheck)
                x[recheck], n_lstsq = _solve_stack_lapack(a, w)
                lstsq_solves += n_lstsq
            bad = ok & ~np.isfinite(x).all(axis=2)
            if bad.any():
                a, w = _group_systems(batch, sums, raw, npix, t0, bad)
                x[bad] = np.stack([_lstsq_one(a[k], w[k]) for k in range(a.shape[0])])
                lstsq_solves += int(bad.sum())
            failed = ~np.isfinite(x).all(axis=2)  # G x B
            x[failed] = np.nan
            demixed[members, t0:t1] = x.transpose(0, 2, 1)
            if failed.any():
                dropped[t0:t1] |= failed.any(axis=0)
                np.add.at(roi_dropped, members.ravel(), np.repeat(failed.sum(axis=1), g))

    if groups:
        if overlap_sums is None:
            grouped = np.sort(np.concatenate(groups))
            local_pairs, intersections = overlap_pairs(mask_matrix[grouped])
            pair_row = {(int(grouped[a]), int(grouped[b])): k for k, (a, b) in enumerate(local_pairs)}
            batches = _batches(mask_matrix, groups, pair_row)
            for t0, t1, sums in iter_mask_sums(
                movie, intersections, block_frames=block_frames, entity=entity, path=path
            ):
                solve(t0, t1, sums, batches)
        else:
            pair_row = overlap_sums.rows()
            try:
                batches = _batches(mask_matrix, groups, pair_row)
            except KeyError as exc:
                raise InputError(f"the overlap sums lack the overlapping ROI pair {exc.args[0]}", entity=entity, path=path) from None
            for t0 in range(0, n_frames, SOLVE_BLOCK_FRAMES):
                t1 = min(n_frames, t0 + SOLVE_BLOCK_FRAMES)
                solve(t0, t1, overlap_sums.sums[:, t0:t1], batches)
    return DemixResult(
        demixed=demixed,
        dropped_frames=dropped,
        roi_dropped_frames=roi_dropped,
        lstsq_solves=lstsq_solves,
        invalid_rows=invalid,
        groups=groups,
    )


# ----------------------------------------------------------------------------------------------
# quality control


def negative_transient_rows(
    traces: np.ndarray,
    *,
    window: int = NEGATIVE_TRANSIENT_WINDOW,
    length: int = NEGATIVE_TRANSIENT_LENGTH,
    std_devs: float = NEGATIVE_TRANSIENT_STD_DEVS,
) -> np.ndarray:
    """Per row: True if the trace has >= ``length`` consecutive frames below mean - k*std.

    Mean and std (ddof 0) are over the causal window of ``window`` frames ending at each frame; the
    trace is front-padded with ``window - 1`` copies of the mean of its first ``window`` frames
    (AllenSDK ``find_negative_transients_threshold``). NaN frames are ignored in the window
    statistics and never count as "below". All-NaN rows give False.
    """
    x = np.atleast_2d(np.asarray(traces, dtype=np.float64))
    n, t = x.shape
    if n == 0 or t == 0:
        return np.zeros(n, dtype=bool)
    finite_any = np.isfinite(x).any(axis=1)
    with np.errstate(invalid="ignore"), _quiet_nan_warnings():
        head = np.nanmean(x[:, :window], axis=1)
    padded = np.concatenate([np.repeat(head[:, None], window - 1, axis=1), x], axis=1)
    mean = bn.move_mean(padded, window, min_count=1, axis=1)[:, window - 1 :]
    std = bn.move_std(padded, window, min_count=1, axis=1, ddof=0)[:, window - 1 :]
    with np.errstate(invalid="ignore"):
        below = (x < mean - std_devs * std).astype(np.float64)
    if t < length:
        return np.zeros(n, dtype=bool)
    runs = bn.move_sum(below, length, axis=1)[:, length - 1 :]
    return finite_any & (runs >= length).any(axis=1)


@contextlib.contextmanager
def _quiet_nan_warnings() -> Iterator[None]:
    """Silence "mean of empty slice" warnings: all-NaN rows are handled explicitly."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def _mean_std(traces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.atleast_2d(np.asarray(traces, dtype=np.float64))
    with _quiet_nan_warnings():
        return np.nanmean(x, axis=1), np.nanstd(x, axis=1)


def negative_baseline_rows(traces: np.ndarray) -> np.ndarray:
    """Per row: mean + std over time < 0 (NaN frames ignored; all-NaN rows False)."""
    mean, std = _mean_std(traces)
    with np.errstate(invalid="ignore"):
        return mean + std < 0


def zero_baseline_rows(traces: np.ndarray) -> np.ndarray:
    """Per row: mean - std over time < 0, i.e. mean < std (NaN frames ignored; all-NaN rows False)."""
    mean, std = _mean_std(traces)
    with np.errstate(invalid="ignore"):
        return mean - std < 0


def overlap_neighbourhood(masks: Any, seeds: np.ndarray, *, hops: int = 2) -> np.ndarray:
    """Boolean N: the seed ROIs plus every ROI within ``hops`` overlap steps of a seed.

    ``seeds`` is a boolean N vector or ROI row indices. A mask covering every pixel of the frame (a
    background mask) does not connect ROIs (AllenSDK ignores it when collecting neighbours).
    """
    matrix = as_mask_matrix(masks)
    n = matrix.shape[0]
    seeds = np.asarray(seeds)
    selected = np.zeros(n, dtype=bool)
    if seeds.dtype == bool:
        if seeds.shape != (n,):
            raise ValueError(f"seeds has shape {seeds.shape}, expected ({n},)")
        selected |= seeds
    else:
        selected[seeds.astype(np.int64)] = True
    npix = np.diff(matrix.indptr)
    connector = np.flatnonzero((npix > 0) & (npix < matrix.shape[1]))
    if connector.size == 0:
        return selected
    sub = matrix[connector]
    adjacency = sparse.csr_matrix(sub @ sub.T)  # diagonal > 0: a step keeps the current ROIs
    reach = selected[connector].astype(np.float64)
    for _ in range(int(hops)):
        reach = (np.asarray(adjacency @ reach).ravel() > 0).astype(np.float64)
    selected[connector[reach > 0]] = True
    return selected


@dataclass
class DemixQC:
    """QC outcome as ROI row indices (into the demixed traces).

    ``negative_transient``: rows with a negative transient (reported only);
    ``negative_baseline``: rows with mean + std < 0; ``zero_baseline``: rows with mean < std;
    ``flagged``: rows to be set to NaN = negative-baseline rows with their overlap neighbourhood,
    plus zero-baseline rows when enabled.
    """

    negative_transient: np.ndarray
    negative_baseline: np.ndarray
    zero_baseline: np.ndarray
    flagged: np.ndarray


def demix_qc(
    demixed: np.ndarray,
    masks: Any,
    *,
    include_zero_baseline: bool = True,
    neighbourhood_hops: int = 2,
    transient_window: int = NEGATIVE_TRANSIENT_WINDOW,
    transient_length: int = NEGATIVE_TRANSIENT_LENGTH,
    transient_std_devs: float = NEGATIVE_TRANSIENT_STD_DEVS,
) -> DemixQC:
    """The post-demixing QC of AllenSDK ``run_demixing`` as data (see module docstring)."""
    demixed = np.atleast_2d(np.asarray(demixed, dtype=np.float64))
    transient = negative_transient_rows(
        demixed, window=transient_window, length=transient_length, std_devs=transient_std_devs
    )
    negative = negative_baseline_rows(demixed)
    zero = zero_baseline_rows(demixed)
    flagged = overlap_neighbourhood(masks, negative, hops=neighbourhood_hops) if negative.any() else negative.copy()
    if include_zero_baseline:
        flagged |= zero
    return DemixQC(
        negative_transient=np.flatnonzero(transient),
        negative_baseline=np.flatnonzero(negative),
        zero_baseline=np.flatnonzero(zero),
        flagged=np.flatnonzero(flagged),
    )
