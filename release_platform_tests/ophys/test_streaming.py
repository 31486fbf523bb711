"""One read of the movie: the run-sum kernel, the read-ahead thread and demixing from the sums gathered while
extracting, each checked against a direct computation on the same frames."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sparse

from release_platform.errors import InputError
from release_platform.ophys import io
from release_platform.ophys.demixing import OverlapSums, demix_traces
from release_platform.ophys.extraction import extract_traces
from release_platform.ophys.io import open_movie
from release_platform.ophys.pipeline import demix_plane, extract_plane
from release_platform.ophys.streaming import MaskRuns, iter_mask_sums
from release_platform_tests.ophys.conftest import make_session, write_movie
from release_platform_tests.ophys.test_demixing import OVERLAPPING_CENTERS


def random_masks(rng, k: int, shape: tuple[int, int], density: float) -> sparse.csr_matrix:
    dense = rng.random((k, shape[0] * shape[1])) < density
    dense[0] = False  # an empty mask
    dense[1, :] = True  # a mask over the whole frame
    return sparse.csr_matrix(dense.astype(np.float64))


@pytest.mark.parametrize("dtype", [np.uint16, np.int16, np.uint8, np.float32])
def test_mask_sums_equal_the_direct_sums_for_every_block_size(tmp_path, dtype):
    rng = np.random.default_rng(7)
    shape = (13, 17)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    low, high = (int(info.min), int(info.max)) if info else (-1e3, 1e3)
    movie = rng.uniform(low, high, size=(23, *shape)).astype(dtype)
    masks = random_masks(rng, 9, shape, 0.3)
    expected = masks @ movie.reshape(23, -1).astype(np.float64).T
    path = write_movie(tmp_path / "movie.h5", movie, chunks=(4, *shape))
    with open_movie(path) as h5movie:
        for block in (1, 5, 23, 40):
            got = np.concatenate([s for _, _, s in iter_mask_sums(h5movie, masks, block_frames=block)], axis=1)
            assert np.array_equal(got, expected)
    got = np.concatenate([s for _, _, s in iter_mask_sums(movie, masks, block_frames=6)], axis=1)
    assert np.array_equal(got, expected)


def test_runs_cover_exactly_the_mask_pixels():
    rng = np.random.default_rng(3)
    shape = (11, 7)
    masks = random_masks(rng, 6, shape, 0.5)
    runs = MaskRuns.from_masks(masks, shape)
    r0, _, c0, _ = runs.box
    for i in range(6):
        covered = np.zeros(shape, dtype=bool)
        for j in range(runs.run_ptr[i], runs.run_ptr[i + 1]):
            covered[r0 + runs.run_r0[j] : r0 + runs.run_r1[j], c0 + runs.run_col[j]] = True
        assert np.array_equal(covered.ravel(), masks[i].toarray().ravel() > 0)


def test_weighted_masks_are_refused_and_read_errors_name_the_frames(tmp_path):
    movie = np.ones((4, 3, 3), np.uint16)
    with pytest.raises(ValueError, match="binary"):
        next(iter_mask_sums(movie, sparse.csr_matrix(np.full((1, 9), 2.0))))

    class Broken:
        shape, dtype = (4, 3, 3), np.dtype(np.uint16)

        def __getitem__(self, key):
            raise OSError("bad sector")

    with pytest.raises(InputError, match="frames 0-1 cannot be read"):
        list(iter_mask_sums(Broken(), sparse.csr_matrix(np.ones((1, 9))), block_frames=2))


def test_demixing_from_the_extraction_pass_equals_demixing_from_the_movie(tmp_path):
    rng = np.random.default_rng(11)
    session = make_session(rng, n_frames=120, centers=OVERLAPPING_CENTERS + [(36, 36), (36, 40)], radius=5)
    path = write_movie(tmp_path / "movie.h5", session.movie, chunks=(16, 48, 48))
    with open_movie(path) as movie:
        extracted = extract_traces(movie, session.records, block_frames=7, overlaps=True)
        from_movie = demix_traces(extracted.roi_traces, movie, extracted.roi_masks, block_frames=9)
    assert extracted.overlap_sums.pairs.shape[0] > 0
    from_sums = demix_traces(extracted.roi_traces, None, extracted.roi_masks, overlap_sums=extracted.overlap_sums)
    assert np.array_equal(from_sums.demixed, from_movie.demixed, equal_nan=True)
    assert [list(g) for g in from_sums.groups] == [list(g) for g in from_movie.groups]
    # a subset of the ROIs: the pairs are renumbered
    rows = np.array([3, 2, 6, 5])
    subset = demix_traces(extracted.roi_traces[rows], None, extracted.roi_masks[rows],
                          overlap_sums=extracted.overlap_sums.select(rows))
    with open_movie(path) as movie:
        direct = demix_traces(extracted.roi_traces[rows], movie, extracted.roi_masks[rows])
    assert np.array_equal(subset.demixed, direct.demixed, equal_nan=True)
    # sums that lack an overlapping pair are refused
    with pytest.raises(InputError, match="lack the overlapping ROI pair"):
        demix_traces(extracted.roi_traces, None, extracted.roi_masks,
                     overlap_sums=OverlapSums(extracted.overlap_sums.pairs[:1], extracted.overlap_sums.sums[:1]))


def test_pipeline_demixes_from_the_overlap_file_like_from_the_movie(tmp_path):
    rng = np.random.default_rng(5)
    session = make_session(rng, n_frames=90, centers=OVERLAPPING_CENTERS, radius=5)
    movie = write_movie(tmp_path / "movie.h5", session.movie)
    records = list(session.records)
    records[1] = {**records[1], "exclusion_labels": ["duplicate"]}  # not demixed: its pairs are left out
    extracted = extract_plane(movie, records, {"x0": 0, "x1": 0, "y0": 0, "y1": 0}, tmp_path / "extract")
    assert extracted.overlap_sums.name == io.OVERLAP_SUMS_FILE
    pairs, sums = io.read_overlap_sums(extracted.overlap_sums)
    assert sums.shape == (len(pairs), 90) and {("1000", "1001"), ("1002", "1003"), ("1000", "1000")} <= set(pairs)
    a = demix_plane(movie, extracted.roi_traces, records, tmp_path / "a" / io.DEMIXED_TRACES_FILE,
                    overlap_sums=extracted.overlap_sums)
    b = demix_plane(movie, extracted.roi_traces, records, tmp_path / "b" / io.DEMIXED_TRACES_FILE)
    assert np.array_equal(io.read_traces(a.demixed_traces).traces, io.read_traces(b.demixed_traces).traces, equal_nan=True)
    assert a.excluded_roi_ids == b.excluded_roi_ids and a.negative_baseline_roi_ids == b.negative_baseline_roi_ids
