"""The per-plane pipeline end to end on a synthetic movie with known cells, neuropil and ratio r."""

from __future__ import annotations

import numpy as np
import pytest

from release_platform.errors import InputError
from release_platform.ophys import io
from release_platform.ophys.pipeline import correct_plane, demix_plane, dff_plane, extract_plane
from release_platform_tests.ophys.conftest import make_session, write_movie

R = 0.7


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    rng = np.random.default_rng(20240917)
    session = make_session(rng, n_frames=300, r=np.full(4, R), shot_noise=False)
    root = tmp_path_factory.mktemp("plane")
    movie = write_movie(root / "movie.h5", session.movie)
    border = {"x0": 0, "x1": 0, "y0": 0, "y1": 0}
    extracted = extract_plane(movie, session.records, border, root / "extract")
    demixed = demix_plane(movie, extracted.roi_traces, session.records, root / "demix" / io.DEMIXED_TRACES_FILE)
    corrected = correct_plane(demixed.demixed_traces, extracted.neuropil_traces, root / "correct", method="fixed", fixed_r=R)
    dff = dff_plane(corrected.neuropil_corrected, root / "dff" / io.DFF_FILE, session.frame_rate_hz,
                    parameters={"long_baseline_filter_s": 5.0})
    return session, extracted, demixed, corrected, dff


def test_stages_write_the_documented_files_and_typed_results(chain):
    session, extracted, demixed, corrected, dff = chain
    assert extracted.roi_traces.name == io.ROI_TRACES_FILE and extracted.neuropil_masks.exists()
    assert extracted.exclusion_labels == {i: [] for i in session.roi_ids}
    assert demixed.excluded_roi_ids == [] and demixed.negative_baseline_roi_ids == [] and demixed.dropped_frame_count == 0
    assert corrected.neuropil_corrected.name == io.NEUROPIL_CORRECTED_FILE
    assert corrected.unconverged_roi_ids == [] and corrected.skipped_roi_ids == []
    assert dff.method == "allen_inactive" and dff.invalid_roi_ids == []


def test_neuropil_corrected_traces_recover_the_cells(chain):
    """Noise-free movie: FC = F_M - r F_N equals the cell fluorescence within the movie's integer rounding."""
    session, _, _, corrected, _ = chain
    fc = io.read_neuropil_corrected(corrected.neuropil_corrected)
    assert fc.roi_ids == session.roi_ids
    np.testing.assert_allclose(fc.r, R)
    assert (fc.status == "fixed").all() and np.isfinite(fc.rmse).all()
    np.testing.assert_allclose(fc.traces, session.cells, atol=1.0)


def test_dff_file_holds_finite_dff_with_noise_and_baseline_vectors(chain):
    session, _, _, corrected, dff = chain
    traces = io.read_dff(dff.dff)
    assert traces.roi_ids == session.roi_ids and traces.traces.shape == session.cells.shape
    assert np.isfinite(traces.traces).all()
    sigma = io.read_vector(dff.dff, io.SIGMA_DFF_DATASET, length=len(session.roi_ids))
    assert (sigma > 0).all()


def test_reordered_neuropil_file_is_one_input_error_naming_it(chain, tmp_path):
    _, extracted, demixed, _, _ = chain
    neuropil = io.read_traces(extracted.neuropil_traces)
    swapped = io.write_traces(tmp_path / "neuropil.h5", neuropil.traces[::-1], neuropil.roi_ids[::-1])
    with pytest.raises(InputError, match="different order") as info:
        correct_plane(demixed.demixed_traces, swapped, tmp_path / "out")
    assert str(swapped) in str(info.value)
    assert not (tmp_path / "out" / io.NEUROPIL_CORRECTED_FILE).exists()
