"""One read of the movie: the run-sum kernel, the read-ahead thread and demixing from the sums gathered while
extracting, each checked against a direct computation on the same frames."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import scipy.sparse as sparse

from release_platform.errors import InputError
from release_platform.ophys import io
from release_platform.ophys.demixing import OverlapSums, demix_traces
from release_platform.ophys.extraction import extract_traces
from release_platform.ophys.io import open_movie
from release_platform.ophys.pipeline import demix_plane, extract_plane
from release_platform.ophys import streaming
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


def edge_case_masks(shape: tuple[int, int]) -> sparse.csr_matrix:
    """Masks at the frame edges and corners, single pixels, an empty mask, overlapping discs, gappy columns."""
    height, width = shape
    rows, cols = np.mgrid[:height, :width]
    masks = [
        np.zeros(shape, bool),  # empty
        rows == 0, rows == height - 1, cols == 0, cols == width - 1,  # the four edges
        (rows == 0) & (cols == 0), (rows == height - 1) & (cols == width - 1),  # single corner pixels
        (rows == height // 2) & (cols == width // 3),  # a single inner pixel
        np.ones(shape, bool),  # the whole frame
        (rows - 5) ** 2 + (cols - 6) ** 2 <= 16, (rows - 7) ** 2 + (cols - 9) ** 2 <= 16,  # overlapping discs
        ((rows % 3) == 0) & ((cols % 2) == 1),  # many one-pixel runs per column
        (rows >= height - 4) & (cols < 5),  # a block in the bottom-left corner
    ]
    dense = np.stack(masks).reshape(len(masks), -1)
    return sparse.csr_matrix(dense.astype(np.float64))


@pytest.mark.parametrize("dtype", [np.uint16, np.int16])
@pytest.mark.parametrize("threads", [1, 2])
def test_integer_kernel_is_bit_identical_to_the_sparse_float64_product(tmp_path, dtype, threads):
    rng = np.random.default_rng(29)
    shape, n_frames = (19, 23), 45
    info = np.iinfo(dtype)
    movie = rng.integers(int(info.min), int(info.max), size=(n_frames, *shape), endpoint=True).astype(dtype)
    movie[3] = info.max  # extreme frames: the column sums reach their largest magnitude
    movie[4] = info.min
    masks = sparse.vstack([edge_case_masks(shape), random_masks(rng, 6, shape, 0.4)], format="csr")
    expected = masks @ movie.reshape(n_frames, -1).astype(np.float64).T
    path = write_movie(tmp_path / "movie.h5", movie, chunks=(5, *shape))
    with open_movie(path) as h5movie:
        # blocks shorter than, equal to and not a multiple of the sweep group; one block for the whole movie
        for block in (1, 7, streaming.SWEEP_FRAMES, streaming.SWEEP_FRAMES + 1, 3 * streaming.SWEEP_FRAMES - 1, 60):
            got = np.concatenate(
                [s for _, _, s in iter_mask_sums(h5movie, masks, block_frames=block, kernel_threads=threads)], axis=1
            )
            assert got.dtype == np.float64 and np.array_equal(got, expected), block


def test_integer_kernels_agree_with_wide_column_sums_and_each_other():
    """The serial and parallel kernels, with int32 and int64 column sums, give the same exact sums."""
    from release_platform.ophys._run_sums import sweep_sums, sweep_sums_parallel

    rng = np.random.default_rng(31)
    shape, n_frames, group = (16, 21), 37, streaming.SWEEP_FRAMES
    movie = rng.integers(0, 2**16, size=(n_frames, *shape)).astype(np.uint16)
    masks = sparse.vstack([edge_case_masks(shape), random_masks(rng, 5, shape, 0.5)], format="csr")
    expected = masks @ movie.reshape(n_frames, -1).astype(np.float64).T
    runs = MaskRuns.from_masks(masks, shape)
    r0, r1, c0, c1 = runs.box
    block = np.ascontiguousarray(movie[:, r0:r1, c0:c1])
    events = runs.events()
    assert expected.max() < 2**31  # int32 scratch is allowed
    for sum_dtype in (np.int32, np.int64):
        out = np.full(expected.shape, np.nan)
        sweep_sums(block, 0, 0, *events, out, np.zeros((group, c1 - c0), sum_dtype), np.zeros((runs.n_masks, group), sum_dtype))
        assert np.array_equal(out, expected)
        for workers in (1, 2, 3):
            out = np.full(expected.shape, np.nan)
            sweep_sums_parallel(block, 0, 0, *events, out, np.zeros((workers, group, c1 - c0), sum_dtype),
                                np.zeros((workers, runs.n_masks, group), sum_dtype))
            assert np.array_equal(out, expected)


def test_wrapping_int32_column_sums_still_give_exact_mask_sums():
    """A box tall enough for the int32 column sums to overflow: masks whose sums fit int32 stay exact."""
    from release_platform.ophys._run_sums import GROUP, sweep_sums

    assert GROUP == streaming.SWEEP_FRAMES
    height, n_frames = 70_000, GROUP + 3  # 70,000 x 65,535 > 2**32: the column sums wrap more than once
    movie = np.full((n_frames, height, 2), 65535, dtype=np.uint16)
    movie[:, ::7, 1] = 12345
    dense = np.zeros((4, height * 2), bool)
    dense[0, [(height - 1) * 2, (height - 3) * 2 + 1]] = True  # two pixels on the last rows
    dense[1, 2 * np.arange(height - 200, height - 100) + 1] = True  # a run low in the second column
    dense[2, [0, (height // 2) * 2, (height - 1) * 2 + 1]] = True  # top, middle and bottom pixels
    dense[3, 2 * np.arange(5000, 45000)] = True  # 40,000 pixels: its sum needs int64
    masks = sparse.csr_matrix(dense.astype(np.float64))
    expected = masks @ movie.reshape(n_frames, -1).astype(np.float64).T
    runs = MaskRuns.from_masks(masks, (height, 2))
    r0, r1, c0, c1 = runs.box
    block = np.ascontiguousarray(movie[:, r0:r1, c0:c1])
    out = np.full((4, n_frames), np.nan)
    sweep_sums(block, 0, 0, *runs.events(), out, np.zeros((GROUP, c1 - c0), np.int32), np.zeros((4, GROUP), np.int32))
    assert np.array_equal(out[:3], expected[:3])
    assert not np.array_equal(out[3], expected[3])  # beyond int32: the wrapped total is wrong ...
    got = np.concatenate([s for _, _, s in iter_mask_sums(movie, masks, block_frames=5)], axis=1)
    assert np.array_equal(got, expected)  # ... so iter_mask_sums takes int64 for these masks
    got = np.concatenate([s for _, _, s in iter_mask_sums(movie, masks[:3], block_frames=5)], axis=1)
    assert np.array_equal(got, expected[:3])


def test_events_replay_the_runs():
    """Adding the column sums at each run's end row and subtracting them at its start row gives the run sums."""
    rng = np.random.default_rng(37)
    shape = (9, 8)
    masks = sparse.vstack([edge_case_masks(shape), random_masks(rng, 4, shape, 0.5)], format="csr")
    runs = MaskRuns.from_masks(masks, shape)
    ev_ptr, ev_col, ev_mask = runs.events()
    r0, r1, c0, c1 = runs.box
    height = r1 - r0
    assert ev_ptr.size == 2 * (height + 1) + 1 and ev_ptr[-1] == ev_col.size == ev_mask.size
    frame = rng.integers(0, 100, size=shape)[r0:r1, c0:c1]
    column_sums = np.vstack([np.zeros((1, c1 - c0), np.int64), np.cumsum(frame, axis=0)])
    got = np.zeros(runs.n_masks, np.int64)
    for r in range(height + 1):
        for e in range(ev_ptr[2 * r], ev_ptr[2 * r + 1]):
            got[ev_mask[e]] += column_sums[r, ev_col[e]]
        for e in range(ev_ptr[2 * r + 1], ev_ptr[2 * r + 2]):
            assert r > 0  # subtractions of the zero column sum at row 0 are left out
            got[ev_mask[e]] -= column_sums[r, ev_col[e]]
    full = np.zeros(shape, np.int64)
    full[r0:r1, c0:c1] = frame
    assert np.array_equal(got, masks @ full.ravel())


def test_kernel_threads_come_from_the_argument_or_the_environment(monkeypatch):
    movie = np.arange(40 * 4 * 5, dtype=np.uint16).reshape(40, 4, 5)
    masks = sparse.csr_matrix(np.eye(20)[:6])
    expected = masks @ movie.reshape(40, -1).astype(np.float64).T
    monkeypatch.setenv(streaming.KERNEL_THREADS_ENV, "2")
    assert streaming._kernel_threads(None) == 2
    got = np.concatenate([s for _, _, s in iter_mask_sums(movie, masks, block_frames=40)], axis=1)
    assert np.array_equal(got, expected)
    monkeypatch.setenv(streaming.KERNEL_THREADS_ENV, "two")
    with pytest.raises(InputError, match="RELEASE_PLATFORM_KERNEL_THREADS must be a whole number"):
        next(iter_mask_sums(movie, masks))
    monkeypatch.delenv(streaming.KERNEL_THREADS_ENV)
    assert streaming._kernel_threads(None) == 1
    with pytest.raises(InputError, match="kernel_threads must be >= 1"):
        next(iter_mask_sums(movie, masks, kernel_threads=0))


def test_block_reader_starts_reading_at_once_and_closes_early():
    import threading

    movie = np.arange(50 * 6 * 7, dtype=np.uint16).reshape(50, 6, 7)

    class Counting:
        shape, dtype = movie.shape, movie.dtype

        def __init__(self):
            self.reads = []
            self.first = threading.Event()

        def __getitem__(self, key):
            self.reads.append(key[0].start)
            self.first.set()
            return movie[key]

    source = Counting()
    reader = streaming.BlockReader(source, (1, 5, 2, 7), 8)
    assert source.first.wait(10)  # the first block is read before anyone asks for it
    blocks = [(t0, t1, block.copy()) for t0, t1, block in reader]
    assert [(t0, t1) for t0, t1, _ in blocks] == [(t, min(50, t + 8)) for t in range(0, 50, 8)]
    for t0, t1, block in blocks:
        assert np.array_equal(block, movie[t0:t1, 1:5, 2:7])
    assert sorted(source.reads) == list(range(0, 50, 8))
    # a reader left after one block stops: no more than the two buffers' blocks are read
    source = Counting()
    with streaming.BlockReader(source, (0, 6, 0, 7), 4) as reader:
        next(iter(reader))
    assert len(source.reads) <= 3


def _three_masks_movie():
    """A 30 x 15 x 18 uint16 movie, three masks inside different boxes, and their exact per-frame sums."""
    rng = np.random.default_rng(43)
    shape = (15, 18)
    movie = rng.integers(0, 2**16, size=(30, *shape)).astype(np.uint16)
    dense = np.zeros((3, *shape), bool)
    dense[0, 4:9, 5:7] = True
    dense[1, 6, 3:12] = True
    dense[2, 10:12, 11] = True
    masks = sparse.csr_matrix(dense.reshape(3, -1).astype(np.float64))
    return movie, masks, masks @ movie.reshape(30, -1).astype(np.float64).T


def test_mask_sums_through_a_reader_of_a_larger_box(tmp_path):
    movie, masks, expected = _three_masks_movie()
    for box in [(0, 15, 0, 18), (2, 13, 3, 14), (4, 12, 3, 12)]:
        reader = streaming.BlockReader(movie, box, 7)
        got = np.concatenate([s for _, _, s in iter_mask_sums(movie, masks, reader=reader)], axis=1)
        assert np.array_equal(got, expected), box
    with pytest.raises(ValueError, match="do not lie inside the box"):
        next(iter_mask_sums(movie, masks, reader=streaming.BlockReader(movie, (5, 15, 0, 18), 7)))


def test_extraction_reads_early_and_reports_read_errors():
    movie = np.ones((6, 20, 20), np.uint16)

    class Broken:
        shape, dtype = movie.shape, movie.dtype

        def __getitem__(self, key):
            raise OSError("bad sector")

    records = [{"id": 1, "x": 8, "y": 8, "width": 2, "height": 2, "mask": [[1, 1], [1, 1]], "valid": True}]
    with pytest.raises(InputError, match="frames 0-2 cannot be read"):
        extract_traces(Broken(), records, block_frames=3)
    result = extract_traces(movie, records, block_frames=4)
    assert np.array_equal(result.roi_traces, np.ones((1, 6)))


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


# ------------------------------------------------------------------ movies swept in their file mapping


def write_layout(path, movie: np.ndarray, layout: str, **kwargs) -> str:
    """``movie`` as an h5 file in one of the storage layouts of :data:`MAPPED_LAYOUTS` / :data:`READ_LAYOUTS`."""
    n_frames, height, width = movie.shape
    options = {
        "contiguous": {},
        "chunked": {"chunks": (5, height, width)},  # 45 frames: nine whole chunks
        "partial-chunk": {"chunks": (7, height, width)},  # the last chunk holds 3 of its 7 frames
        "one-frame-chunks": {"chunks": (1, height, width)},
        "userblock": {},
        "userblock-chunked": {"chunks": (4, height, width)},
        "row-chunks": {"chunks": (4, height // 2 + 1, width)},  # chunks smaller than a frame
        "compressed": {"chunks": (5, height, width), "compression": "gzip", "compression_opts": 1},
        "big-endian": {"dtype": movie.dtype.newbyteorder(">")},
    }[layout]
    userblock = 512 if layout.startswith("userblock") else 0
    with h5py.File(path, "w", userblock_size=userblock) as handle:
        handle.create_dataset("data", data=movie, **options, **kwargs)
    return str(path)


MAPPED_LAYOUTS = ["contiguous", "chunked", "partial-chunk", "one-frame-chunks", "userblock", "userblock-chunked"]
READ_LAYOUTS = ["row-chunks", "compressed", "big-endian"]


@pytest.mark.parametrize("layout", MAPPED_LAYOUTS + READ_LAYOUTS)
@pytest.mark.parametrize("dtype", [np.uint16, np.int16])
@pytest.mark.parametrize("threads", [1, 2])
def test_mapped_and_read_movies_give_the_same_exact_sums(tmp_path, layout, dtype, threads):
    rng = np.random.default_rng(47)
    shape, n_frames = (19, 23), 45
    info = np.iinfo(dtype)
    movie = rng.integers(int(info.min), int(info.max), size=(n_frames, *shape), endpoint=True).astype(dtype)
    movie[3], movie[4] = info.max, info.min
    masks = sparse.vstack([edge_case_masks(shape), random_masks(rng, 6, shape, 0.4)], format="csr")
    expected = masks @ movie.reshape(n_frames, -1).astype(np.float64).T
    path = write_layout(tmp_path / "movie.h5", movie, layout)
    with open_movie(path) as h5movie:
        with streaming.open_blocks(h5movie, (0, 1, 0, 1), 4) as blocks:
            assert isinstance(blocks, streaming.MappedBlocks) == (layout in MAPPED_LAYOUTS)
        for movie_mmap in (True, False):
            for block in (1, 7, streaming.SWEEP_FRAMES, streaming.SWEEP_FRAMES + 1, 3 * streaming.SWEEP_FRAMES - 1, 60):
                got = np.concatenate([
                    s for _, _, s in iter_mask_sums(
                        h5movie, masks, block_frames=block, kernel_threads=threads, movie_mmap=movie_mmap
                    )
                ], axis=1)
                assert np.array_equal(got, expected), (movie_mmap, block)


@pytest.mark.parametrize("layout", ["contiguous", "partial-chunk", "userblock-chunked"])
def test_mapped_blocks_of_any_box_equal_the_read_blocks(tmp_path, layout):
    movie, masks, expected = _three_masks_movie()
    path = write_layout(tmp_path / "movie.h5", movie, layout)
    with open_movie(path) as h5movie:
        for box in [(0, 15, 0, 18), (2, 13, 3, 14), (4, 12, 3, 12)]:
            for step in (1, 7, 30):
                mapped = streaming.open_blocks(h5movie, box, step, movie_mmap=True)
                assert isinstance(mapped, streaming.MappedBlocks) and mapped.origin == (box[0], box[2])
                with streaming.open_blocks(h5movie, box, step, movie_mmap=False) as reader:
                    assert isinstance(reader, streaming.BlockReader)
                    read = [(t0, t1, block.copy()) for t0, t1, block in reader]
                spans = []
                for (t0, t1, frames), (u0, u1, block) in zip(mapped, read):
                    assert (t0, t1) == (u0, u1) and not frames.flags.writeable
                    assert np.array_equal(frames[:, box[0] : box[1], box[2] : box[3]], block)
                    spans.append((t0, t1))
                assert spans == [(t0, t1) for t0, t1, _ in read]
                got = np.concatenate([
                    s for _, _, s in iter_mask_sums(
                        h5movie, masks, reader=streaming.open_blocks(h5movie, box, step, movie_mmap=True)
                    )
                ], axis=1)
                assert np.array_equal(got, expected), (box, step)


def test_a_wrong_chunk_offset_changes_the_sums(tmp_path, monkeypatch):
    """The sums check the mapped offsets: extents off by the userblock, one frame or one pixel give other sums."""
    rng = np.random.default_rng(53)
    shape = (12, 10)
    movie = rng.integers(0, 2**16, size=(20, *shape)).astype(np.uint16)
    masks = random_masks(rng, 5, shape, 0.3)
    expected = masks @ movie.reshape(20, -1).astype(np.float64).T
    path = write_layout(tmp_path / "movie.h5", movie, "userblock-chunked")
    extents = streaming.mapped_extents
    frame_bytes = shape[0] * shape[1] * 2
    with open_movie(path) as h5movie:
        assert extents(h5movie)[0][2] > 512  # offsets count from the start of the file, userblock included
        for shift in (-512, -frame_bytes, -2):
            monkeypatch.setattr(
                streaming, "mapped_extents", lambda *a, **k: [(t0, t1, o + shift) for t0, t1, o in extents(*a, **k)]
            )
            got = np.concatenate([s for _, _, s in iter_mask_sums(h5movie, masks, block_frames=6)], axis=1)
            assert not np.array_equal(got, expected)
        monkeypatch.setattr(streaming, "mapped_extents", extents)
        got = np.concatenate([s for _, _, s in iter_mask_sums(h5movie, masks, block_frames=6)], axis=1)
        assert np.array_equal(got, expected)


def test_adjacent_chunks_form_one_extent(tmp_path):
    movie = np.arange(10 * 4 * 3, dtype=np.uint16).reshape(10, 4, 3)
    with open_movie(write_layout(tmp_path / "a.h5", movie, "one-frame-chunks")) as h5movie:
        (t0, t1, offset), = streaming.mapped_extents(h5movie)  # written in order: one run of the file
        assert (t0, t1) == (0, 10) and offset == h5movie.id.get_chunk_info(0).byte_offset
    with open_movie(write_layout(tmp_path / "b.h5", movie, "contiguous")) as h5movie:
        assert streaming.mapped_extents(h5movie) == [(0, 10, h5movie.id.get_offset())]
    with h5py.File(tmp_path / "c.h5", "w") as handle:  # chunks written last to first: stored in reverse order
        data = handle.create_dataset("data", shape=movie.shape, dtype=movie.dtype, chunks=(2, 4, 3))
        for t0 in range(8, -1, -2):
            data[t0 : t0 + 2] = movie[t0 : t0 + 2]
    masks = sparse.csr_matrix(np.eye(12)[[0, 5, 11]])
    expected = masks @ movie.reshape(10, -1).astype(np.float64).T
    with open_movie(tmp_path / "c.h5") as h5movie:
        extents = streaming.mapped_extents(h5movie)
        assert [e[:2] for e in extents] == [(t, t + 2) for t in range(0, 10, 2)]
        assert all(a[2] > b[2] for a, b in zip(extents, extents[1:]))
        for block in (2, 3, 10):
            got = np.concatenate([s for _, _, s in iter_mask_sums(h5movie, masks, block_frames=block)], axis=1)
            assert np.array_equal(got, expected), block


@pytest.mark.parametrize("layout", ["chunked", "contiguous"])
def test_unwritten_chunks_hold_the_fill_value_and_are_read(tmp_path, layout):
    rng = np.random.default_rng(59)
    shape = (9, 8)
    movie = rng.integers(0, 2**16, size=(23, *shape)).astype(np.uint16)
    masks = random_masks(rng, 4, shape, 0.5)
    with h5py.File(tmp_path / "movie.h5", "w") as handle:
        chunks = (5, *shape) if layout == "chunked" else None
        data = handle.create_dataset("data", shape=movie.shape, dtype=movie.dtype, chunks=chunks, fillvalue=7)
        if layout == "chunked":
            data[0:5] = movie[0:5]  # chunks 1 and 3 are never written
            data[10:15] = movie[10:15]
            data[20:23] = movie[20:23]
            movie[5:10] = movie[15:20] = 7
        else:
            movie[:] = 7  # never written: no storage at all
    expected = masks @ movie.reshape(23, -1).astype(np.float64).T
    with open_movie(tmp_path / "movie.h5") as h5movie:
        assert streaming.mapped_extents(h5movie) is None
        with streaming.open_blocks(h5movie, (0, 9, 0, 8), 4, movie_mmap=True) as blocks:
            assert isinstance(blocks, streaming.BlockReader)
        got = np.concatenate([s for _, _, s in iter_mask_sums(h5movie, masks, block_frames=4, movie_mmap=True)], axis=1)
    assert np.array_equal(got, expected)


@pytest.mark.parametrize("layout", ["contiguous", "partial-chunk"])
def test_a_truncated_movie_file_is_refused_before_mapping(tmp_path, layout):
    import os

    shape = (16, 16)
    movie = np.ones((30, *shape), np.uint16)
    path = write_layout(tmp_path / "movie.h5", movie, layout)
    masks = sparse.csr_matrix(np.ones((1, 256)))
    with open_movie(path) as h5movie:
        offset = [o for t0, t1, o in streaming.mapped_extents(h5movie) if t0 <= 25 < t1][0]
        t0 = [t0 for t0, t1, o in streaming.mapped_extents(h5movie) if t0 <= 25 < t1][0]
        os.truncate(path, offset + (25 - t0) * 512 + 100)  # the file now ends inside frame 25
        with pytest.raises(InputError, match=r"movie frames 25-29 cannot be read: they lie past the end of the file") as err:
            next(iter_mask_sums(h5movie, masks, movie_mmap=True))
        assert str(path) in str(err.value)
        with pytest.raises(InputError, match=r"frames 25-29 cannot be read"):
            extract_traces(h5movie, [{"id": 1, "x": 4, "y": 4, "width": 2, "height": 2, "mask": [[1, 1], [1, 1]],
                                      "valid": True}], movie_mmap=True, path=path)


def test_a_file_cut_short_while_mapped_gives_an_input_error_not_a_crash(tmp_path):
    import os

    shape = (64, 64)
    movie = np.ones((40, *shape), np.uint16)
    path = write_layout(tmp_path / "movie.h5", movie, "contiguous")
    with open_movie(path) as h5movie:
        (_, _, offset), = streaming.mapped_extents(h5movie)
        blocks = streaming.open_blocks(h5movie, (0, 64, 0, 64), 4)
        assert isinstance(blocks, streaming.MappedBlocks)
        for future in list(blocks._pending.values()):
            future.result()  # the first two blocks are in
        os.truncate(path, offset + 30 * 64 * 64 * 2 + 100)  # frames 30 and later are gone
        seen = []
        with pytest.raises(InputError, match=r"movie frames (28-31|32-35) cannot be read"):
            for t0, t1, frames in blocks:
                seen.append(t1)
                assert frames[: max(0, 30 - t0)].sum() == (min(t1, 30) - t0) * 64 * 64
        assert seen and max(seen) <= 32


@pytest.mark.parametrize("layout", ["contiguous", "compressed"])
def test_a_file_cut_short_while_read_gives_an_input_error_not_zeros(tmp_path, layout):
    """HDF5 reads the bytes past the end of a file as zeros: a movie truncated while the reader works through it
    is refused at the first block read after the cut, and no block of zeros is passed on as frames."""
    import os

    movie = np.ones((40, 64, 64), np.uint16)
    path = write_layout(tmp_path / "movie.h5", movie, layout)
    with open_movie(path) as h5movie:
        blocks = streaming.open_blocks(h5movie, (0, 64, 0, 64), 4, movie_mmap=False)
        assert isinstance(blocks, streaming.BlockReader)
        for future in list(blocks._pending.values()):
            future.result()  # the first two blocks are in
        os.truncate(path, os.path.getsize(path) // 2)
        seen = []
        # uncompressed: the bytes would read as zeros; compressed: the zeros fail to decompress
        reason = "the file shrank from \\d+ to \\d+ bytes" if layout == "contiguous" else "filter returned failure"
        with pytest.raises(InputError, match=rf"movie frames 8-11 cannot be read.*{reason}") as err:
            for t0, t1, frames in blocks:
                seen.append(t0)
                assert frames.min() == 1  # every frame passed on is a real one
        assert seen == [0, 4] and str(path) in str(err.value)


def test_the_mapping_switch_comes_from_the_argument_or_the_environment(tmp_path, monkeypatch):
    path = write_layout(tmp_path / "movie.h5", np.ones((6, 4, 4), np.uint16), "contiguous")
    with open_movie(path) as h5movie:
        monkeypatch.setenv(streaming.MOVIE_MMAP_ENV, "0")
        with streaming.open_blocks(h5movie, (0, 4, 0, 4), 2) as blocks:
            assert isinstance(blocks, streaming.BlockReader)
        with streaming.open_blocks(h5movie, (0, 4, 0, 4), 2, movie_mmap=True) as blocks:
            assert isinstance(blocks, streaming.MappedBlocks)
        monkeypatch.setenv(streaming.MOVIE_MMAP_ENV, "1")
        with streaming.open_blocks(h5movie, (0, 4, 0, 4), 2) as blocks:
            assert isinstance(blocks, streaming.MappedBlocks)
        with streaming.open_blocks(h5movie, (0, 4, 0, 4), 2, movie_mmap=False) as blocks:
            assert isinstance(blocks, streaming.BlockReader)
        monkeypatch.setenv(streaming.MOVIE_MMAP_ENV, "maybe")
        with pytest.raises(InputError, match="RELEASE_PLATFORM_MOVIE_MMAP must be 0 or 1"):
            streaming.open_blocks(h5movie, (0, 4, 0, 4), 2)
    monkeypatch.delenv(streaming.MOVIE_MMAP_ENV)
    # arrays, and files opened with another driver than sec2, are always read
    with streaming.open_blocks(np.ones((6, 4, 4), np.uint16), (0, 4, 0, 4), 2, movie_mmap=True) as blocks:
        assert isinstance(blocks, streaming.BlockReader)
    with open(path, "rb") as raw, h5py.File(raw, "r") as handle:
        assert handle.driver == "fileobj" and streaming.mapped_extents(handle["data"]) is None
    with h5py.File(path, "r", driver="core") as handle:
        assert streaming.mapped_extents(handle["data"]) is None
        sums = np.concatenate([s for _, _, s in iter_mask_sums(handle["data"], sparse.csr_matrix(np.ones((1, 16))))], axis=1)
        assert np.array_equal(sums, np.full((1, 6), 16.0))


def test_mapped_blocks_are_faulted_in_ahead_and_unmapped_once_swept(tmp_path, monkeypatch):
    """Each block is faulted in (WILLNEED + POPULATE_READ) before it is yielded and unmapped (DONTNEED) after,
    so the pages the process maps stay at about three blocks, whatever the movie length."""
    import mmap as mmap_module

    movie = np.arange(50 * 32 * 64, dtype=np.uint16).reshape(50, 32, 64)  # 4 KiB frames: a block is whole pages
    path = write_layout(tmp_path / "movie.h5", movie, "contiguous")
    calls = []
    madvise = streaming._madvise
    monkeypatch.setattr(streaming, "_madvise", lambda address, length, advice: (
        calls.append((advice, address, length)), madvise(address, length, advice))[1])
    with open_movie(path) as h5movie:
        (_, _, offset), = streaming.mapped_extents(h5movie)
        blocks = streaming.open_blocks(h5movie, (0, 32, 0, 64), 8)
        base = blocks._bytes.ctypes.data
        mapped = set()
        for t0, t1, frames in blocks:
            assert np.array_equal(frames, movie[t0:t1])
            for advice, address, length in list(calls):
                first = (address - base - offset + 4095) // 4096  # frames (pages) of the range
                pages = set(range(max(0, first), (address - base - offset + length) // 4096))
                if advice == streaming.MADV_POPULATE_READ:
                    mapped |= pages
                elif advice == mmap_module.MADV_DONTNEED:
                    mapped -= pages
            calls.clear()
            assert set(range(t0, t1)) <= mapped  # the block being swept is in
            assert len(mapped) <= 3 * 8  # at most three blocks mapped
        assert not blocks._map.closed  # the last block is still referenced ...
        del frames
        blocks.close()
        assert blocks._map.closed  # ... and once it is not, the file is unmapped
        masks = sparse.csr_matrix(np.eye(32 * 64)[[0, 77, 2047]])
        opened = []
        open_blocks = streaming.open_blocks
        monkeypatch.setattr(streaming, "open_blocks", lambda *a, **k: opened.append(open_blocks(*a, **k)) or opened[-1])
        list(iter_mask_sums(h5movie, masks, block_frames=8))
        assert isinstance(opened[0], streaming.MappedBlocks) and opened[0]._map.closed  # no view outlives the pass


def test_mapped_blocks_are_touched_in_where_the_kernel_cannot_populate(tmp_path, monkeypatch):
    monkeypatch.setattr(streaming, "MADV_POPULATE_READ", 10_000)  # an advice the kernel refuses (EINVAL)
    rng = np.random.default_rng(61)
    movie = rng.integers(0, 2**16, size=(30, 12, 9)).astype(np.uint16)
    masks = random_masks(rng, 4, (12, 9), 0.4)
    expected = masks @ movie.reshape(30, -1).astype(np.float64).T
    with open_movie(write_layout(tmp_path / "movie.h5", movie, "chunked")) as h5movie:
        blocks = streaming.open_blocks(h5movie, (0, 12, 0, 9), 4)
        got = np.concatenate([s for _, _, s in iter_mask_sums(h5movie, masks, reader=blocks)], axis=1)
        assert isinstance(blocks, streaming.MappedBlocks) and not blocks._populate
    assert np.array_equal(got, expected)
