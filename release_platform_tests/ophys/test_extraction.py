"""Trace extraction: ROI/neuropil means, neuropil annulus, motion border, exclusion labels."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi

from release_platform.errors import InputError
from release_platform.ophys.extraction import (
    LABEL_EMPTY_NEUROPIL,
    LABEL_EMPTY_ROI,
    LABEL_MOTION_BORDER,
    MotionBorder,
    extract_traces,
    parse_roi_records,
)
from release_platform.ophys.io import open_movie

from .conftest import disk, make_session, roi_record, write_movie


def reference_neuropil(masks: np.ndarray, index: int, border: MotionBorder, outer: int = 13) -> np.ndarray:
    """ophys_etl definition: 13 dilations with a 3x3 element, minus every ROI, inside the border."""
    dilated = ndi.binary_dilation(masks[index], structure=np.ones((3, 3)), iterations=outer)
    return dilated & ~masks.any(axis=0) & border.usable_mask(masks.shape[1:])


def test_traces_equal_mask_means_of_the_movie(rng, tmp_path):
    session = make_session(rng, n_frames=60)
    path = write_movie(tmp_path / "movie.h5", session.movie, chunks=(8, 48, 48))
    border = MotionBorder(2, 3, 1, 4)
    with open_movie(path) as movie:
        result = extract_traces(movie, session.records, {"x0": 2, "x1": 3, "y0": 1, "y1": 4}, block_frames=7)
    frames = session.movie.astype(np.float64)
    for i in range(len(session.records)):
        expected_roi = frames[:, session.masks[i]].mean(axis=1)
        np.testing.assert_allclose(result.roi_traces[i], expected_roi, rtol=1e-12, atol=0)
        annulus = reference_neuropil(session.masks, i, border)
        assert annulus.sum() == result.neuropil_masks[i].nnz
        np.testing.assert_allclose(result.neuropil_traces[i], frames[:, annulus].mean(axis=1), rtol=1e-12, atol=0)
    assert result.exclusion_records() == []
    assert result.roi_ids == session.roi_ids


def test_noiseless_traces_recover_the_simulated_fluorescence(rng):
    session = make_session(rng, n_frames=40, shot_noise=False)
    result = extract_traces(session.movie, session.records)
    expected = session.cells + session.r[:, None] * session.neuropil[None, :]
    # the movie is rounded to integers: the mean over the mask is within 0.5 a.u. of the truth
    assert np.abs(result.roi_traces - expected).max() <= 0.5
    assert np.abs(result.neuropil_traces - session.neuropil[None, :]).max() <= 0.5


def test_block_size_and_storage_do_not_change_the_result(rng, tmp_path):
    session = make_session(rng, n_frames=30)
    in_memory = extract_traces(session.movie, session.records)
    path = write_movie(tmp_path / "movie.h5", session.movie)
    with open_movie(path) as movie:
        streamed = extract_traces(movie, session.records, block_frames=1)
    np.testing.assert_array_equal(in_memory.roi_traces, streamed.roi_traces)
    np.testing.assert_array_equal(in_memory.neuropil_traces, streamed.neuropil_traces)


def test_motion_border_semantics_and_labels():
    shape = (30, 40)
    movie = np.full((5, *shape), 100, dtype=np.uint16)
    inside = np.zeros(shape, bool)
    inside[10:14, 3:6] = True  # first usable column is ceil(x0) = 3
    touching = np.zeros(shape, bool)
    touching[20:23, 2:5] = True  # column 2 is inside the 3-pixel left border
    right = np.zeros(shape, bool)
    right[5:8, 34:37] = True  # last usable column is floor(40 - 4) - 1 = 35 -> 36 touches
    records = [roi_record(1, inside), roi_record(2, touching), roi_record(3, right)]
    result = extract_traces(movie, records, {"x0": 2.5, "x1": 4, "y0": 0, "y1": 0})
    assert result.exclusion_labels == {"1": [], "2": [LABEL_MOTION_BORDER], "3": [LABEL_MOTION_BORDER]}
    assert np.isfinite(result.roi_traces[0]).all() and np.isfinite(result.neuropil_traces[0]).all()
    assert np.isnan(result.roi_traces[1:]).all() and np.isnan(result.neuropil_traces[1:]).all()
    # neuropil pixels never lie in the motion border
    cols = result.neuropil_masks[0].indices % shape[1]
    assert cols.min() >= 3 and cols.max() <= 35
    assert {"roi_id": "2", "exclusion_label_name": LABEL_MOTION_BORDER} in result.exclusion_records()


def test_empty_roi_and_empty_neuropil_are_labelled_and_nan():
    shape = (20, 20)
    movie = np.arange(4 * 400, dtype=np.uint16).reshape(4, *shape)
    filled = np.zeros(shape, bool)
    filled[5:15, 5:15] = True  # the whole usable area: no room for neuropil
    empty = {"id": 7, "x": 0, "y": 0, "width": 2, "height": 2, "mask": [[False, False], [False, False]]}
    result = extract_traces(movie, [roi_record(6, filled), empty], {"x0": 5, "x1": 5, "y0": 5, "y1": 5})
    assert result.exclusion_labels["6"] == [LABEL_EMPTY_NEUROPIL]
    assert result.exclusion_labels["7"] == [LABEL_EMPTY_ROI, LABEL_EMPTY_NEUROPIL]
    assert np.isnan(result.roi_traces).all() and np.isnan(result.neuropil_traces).all()


def test_neuropil_annulus_radii_and_roi_exclusion():
    shape = (60, 60)
    a = disk(shape, (30, 30), 4)
    b = disk(shape, (30, 40), 3)  # a neighbour inside a's annulus
    records = [roi_record(1, a), roi_record(2, b)]
    movie = np.ones((2, *shape), dtype=np.uint16)
    result = extract_traces(movie, records, inner_radius_px=2, outer_radius_px=6)
    ring = np.zeros(shape[0] * shape[1], bool)
    ring[result.neuropil_masks[0].indices] = True
    ring = ring.reshape(shape)
    distance = ndi.distance_transform_cdt(~a, metric="chessboard")
    expected = (distance > 2) & (distance <= 6) & ~a & ~b
    np.testing.assert_array_equal(ring, expected)
    assert not (ring & b).any()


@pytest.mark.parametrize(
    "record, message",
    [
        ({"id": 5, "x": 0, "y": 0, "width": 3, "height": 2, "mask": [[1, 1], [1, 1]]}, "ROI 5: mask has shape (2, 2)"),
        ({"id": 5, "x": 19, "y": 0, "width": 2, "height": 1, "mask": [[1, 1]]}, "ROI 5: mask box"),
        ({"id": 5, "x": 0, "y": 0, "width": 1, "height": 1}, "ROI 5: field 'mask' is missing"),
        ({"id": 5, "x": 0.5, "y": 0, "width": 1, "height": 1, "mask": [[1]]}, "ROI 5: x=0.5 is not an integer"),
        ({"id": 5, "x": 0, "y": 0, "width": 1, "height": 1, "mask": [[2]]}, "booleans or 0/1"),
    ],
)
def test_malformed_roi_records_raise_input_error(record, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_roi_records([record], (20, 20), entity="ophys_experiment 9", path="rois.json")


def test_duplicate_ids_and_bad_border_raise_input_error():
    mask = {"x": 0, "y": 0, "width": 1, "height": 1, "mask": [[True]]}
    with pytest.raises(InputError, match="duplicate ROI ids: 3"):
        parse_roi_records([{"id": 3, **mask}, {"id": "3", **mask}], (4, 4))
    with pytest.raises(InputError, match="motion_border x1=-1"):
        extract_traces(np.zeros((2, 4, 4), np.uint16), [{"id": 1, **mask}], {"x0": 0, "x1": -1, "y0": 0, "y1": 0})
    with pytest.raises(InputError, match="expected a non-empty T x H x W"):
        extract_traces(np.zeros((4, 4), np.uint16), [{"id": 1, **mask}])


@pytest.mark.parametrize("inner, outer", [(0, 13), (2, 6), (0, 1), (3, 4)])
def test_neuropil_annuli_equal_the_chessboard_distance_definition(inner, outer):
    """Random ROI shapes, some touching the frame edges or inside the motion border, against the distance transform."""
    from release_platform.ophys.extraction import neuropil_mask_matrix

    rng = np.random.default_rng(41 + outer)
    shape = (48, 52)
    masks = []
    for center in [(0, 0), (47, 51), (24, 26), (5, 40), (30, 3), (26, 29), (44, 20)]:
        blob = disk(shape, center, int(rng.integers(1, 6))) & (rng.random(shape) < 0.8)
        blob[center] = True
        masks.append(blob)
    masks = np.stack(masks)
    records = parse_roi_records([roi_record(i + 1, m) for i, m in enumerate(masks)], shape)
    border = MotionBorder.from_mapping({"x0": 3, "x1": 2, "y0": 1, "y1": 4})
    got = neuropil_mask_matrix(records, shape, border, inner_radius_px=inner, outer_radius_px=outer)
    blocked = masks.any(axis=0) | ~border.usable_mask(shape)
    for i, mask in enumerate(masks):
        distance = ndi.distance_transform_cdt(~mask, metric="chessboard")
        expected = (distance > inner) & (distance <= outer) & ~blocked
        assert np.array_equal(got[i].toarray().reshape(shape), expected), i


@pytest.mark.parametrize("chunks", [None, (8, 48, 48), (8, 16, 48)])
def test_mapped_and_read_movies_give_identical_traces(rng, tmp_path, monkeypatch, chunks):
    """Uncompressed movies are swept in their file mapping (chunks of whole frames or none), others read: same traces."""
    from release_platform.ophys import streaming

    session = make_session(rng, n_frames=50)
    path = write_movie(tmp_path / "movie.h5", session.movie, chunks=chunks)
    opened = []
    original = streaming.open_blocks
    monkeypatch.setattr("release_platform.ophys.extraction.open_blocks",
                        lambda *a, **k: opened.append(original(*a, **k)) or opened[-1])
    with open_movie(path) as movie:
        mapped = extract_traces(movie, session.records, block_frames=7, overlaps=True)
        read = extract_traces(movie, session.records, block_frames=7, overlaps=True, movie_mmap=False)
    assert isinstance(opened[0], streaming.MappedBlocks) == (chunks != (8, 16, 48))
    assert isinstance(opened[1], streaming.BlockReader)
    np.testing.assert_array_equal(mapped.roi_traces, read.roi_traces)
    np.testing.assert_array_equal(mapped.neuropil_traces, read.neuropil_traces)
    np.testing.assert_array_equal(mapped.overlap_sums.sums, read.overlap_sums.sums)
