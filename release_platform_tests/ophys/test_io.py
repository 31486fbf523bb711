"""Trace-file I/O: round trip, atomic writes, and clear errors for bad files."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from release_platform.errors import InputError
from release_platform.ophys.io import check_roi_ids_match, open_movie, read_traces, read_vector, write_traces


def test_round_trip_with_byte_string_ids(tmp_path):
    traces = np.arange(12.0).reshape(3, 4)
    traces[1, 2] = np.nan
    path = write_traces(tmp_path / "t.h5", traces, [7, "8", b"9"], extra={"r": np.array([0.1, 0.2, 0.3])})
    with h5py.File(path, "r") as handle:
        assert handle["roi_names"].dtype.kind == "S" and list(handle["roi_names"][()]) == [b"7", b"8", b"9"]
    loaded = read_traces(path)
    np.testing.assert_array_equal(loaded.traces, traces)
    assert loaded.roi_ids == ["7", "8", "9"]
    np.testing.assert_array_equal(read_vector(path, "r", length=3), [0.1, 0.2, 0.3])
    assert not (tmp_path / "t.h5.inprogress").exists()


def test_failed_write_leaves_the_previous_file(tmp_path):
    path = write_traces(tmp_path / "t.h5", np.ones((2, 3)), [1, 2])
    with pytest.raises(TypeError):
        write_traces(path, np.zeros((2, 3)), [1, 2], extra={"bad": np.array([object()])})
    assert read_traces(path).traces.sum() == 6
    assert not (tmp_path / "t.h5.inprogress").exists()


def write_raw(path, **datasets):
    with h5py.File(path, "w") as handle:
        for name, value in datasets.items():
            handle[name] = value
    return path


@pytest.mark.parametrize(
    "datasets, message",
    [
        ({"roi_names": np.array([b"1"])}, "dataset 'data' is missing (datasets present: roi_names)"),
        ({"data": np.ones(4), "roi_names": np.array([b"1"])}, "dataset 'data' has shape (4,), expected 2 dimensions"),
        ({"data": np.ones((2, 4)), "roi_names": np.array([b"1"])}, "'roi_names' holds 1 ROI ids but 'data' has 2 rows"),
        ({"data": np.ones((2, 4)), "roi_names": np.array([b"1", b"1"])}, "duplicate ROI ids: 1"),
        ({"data": np.array([[b"a"]]), "roi_names": np.array([b"1"])}, "non-numeric dtype"),
    ],
)
def test_bad_trace_files_raise_input_error_naming_the_file(tmp_path, datasets, message):
    path = write_raw(tmp_path / "bad.h5", **datasets)
    with pytest.raises(InputError) as info:
        read_traces(path, entity="ophys_experiment 5")
    assert str(info.value).startswith(f"ophys_experiment 5: {path}: ")
    assert message in str(info.value)


def test_missing_corrupt_and_non_movie_files(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        read_traces(tmp_path / "absent.h5")
    corrupt = tmp_path / "corrupt.h5"
    corrupt.write_bytes(b"not an hdf5 file at all")
    with pytest.raises(InputError, match="not a readable HDF5 file"):
        read_traces(corrupt)
    flat = write_raw(tmp_path / "flat.h5", data=np.ones((3, 4)))
    with pytest.raises(InputError, match=r"dataset 'data' has shape \(3, 4\), expected 3 dimensions"):
        with open_movie(flat):
            pass


def test_roi_id_mismatch_messages():
    check_roi_ids_match(["1", "2"], ["2", "1"], expected_label="traces", found_label="masks")
    with pytest.raises(InputError, match="in traces but not in masks: 2; in masks but not in traces: 3"):
        check_roi_ids_match(["1", "2"], ["1", "3"], expected_label="traces", found_label="masks")
    with pytest.raises(InputError, match="different order"):
        check_roi_ids_match(["1", "2"], ["2", "1"], expected_label="a", found_label="b", same_order=True)
