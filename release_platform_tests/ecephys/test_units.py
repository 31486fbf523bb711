"""Units from sorter outputs, on small hand-built arrays with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from release_platform.ecephys import units as U
from release_platform.errors import InputError


def _templates():
    """Two whitened templates (3 samples x 2 channels) and an inverse whitening matrix with known products."""
    templates = np.array(
        [
            [[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0]],  # template 0: channel 0 only
            [[0.0, 0.0], [0.0, 2.0], [0.0, 0.0]],  # template 1: channel 1 only
        ],
        dtype=np.float32,
    )
    winv = np.array([[2.0, 0.0], [1.0, 3.0]])
    return templates, winv


def test_unwhiten_and_template_amplitude_follow_the_formula():
    templates, winv = _templates()
    un = U.unwhiten_templates(templates, winv)
    # template 0 rows: [0,0], [2,0], [-2,0] -> ptp per channel (4, 0) -> 4
    # template 1 rows: [0,0], [2,6], [0,0] -> ptp per channel (2, 6) -> 6
    np.testing.assert_allclose(un[0], [[0, 0], [2, 0], [-2, 0]])
    np.testing.assert_allclose(un[1], [[0, 0], [2, 6], [0, 0]])
    np.testing.assert_allclose(U.template_amplitudes(templates, winv), [4.0, 6.0])


def test_spike_amplitudes_in_volts():
    templates, winv = _templates()
    amps = U.spike_amplitudes_volts(np.array([1.0, 0.5, 2.0]), np.array([0, 1, 1]), U.template_amplitudes(templates, winv))
    np.testing.assert_allclose(amps, np.array([4.0 * 1.0, 6.0 * 0.5, 6.0 * 2.0]) * 0.195e-6)
    np.testing.assert_allclose(
        U.spike_amplitudes_volts(np.array([1.0]), np.array([0]), np.array([4.0]), amplitude_scale_factor=1e-6), [4e-6]
    )


def test_spike_times_seconds_from_samples_or_seconds():
    np.testing.assert_allclose(U.spike_times_seconds(np.array([0, 30000, 45000], dtype=np.int64), 30000.0), [0.0, 1.0, 1.5])
    np.testing.assert_allclose(U.spike_times_seconds(np.array([[0.25], [0.5]]), 30000.0), [0.25, 0.5])
    with pytest.raises(InputError, match="sampling rate"):
        U.spike_times_seconds(np.array([1], dtype=np.int64), 0.0)


def test_group_spikes_groups_sorts_and_reports_unknown_clusters():
    # unit 100 <- cluster 3, unit 200 <- cluster 1, unit 300 <- cluster 7 (no spikes); cluster 5 is an orphan
    clusters = np.array([3, 1, 5, 3, 1, 5, 5, 3])
    times = np.array([0.9, 0.5, 0.1, 0.2, -0.1, 0.3, 0.4, 0.5])
    amps = np.arange(8, dtype=float)
    g = U.group_spikes([100, 200, 300], [3, 1, 7], clusters, times, {"amp": amps})
    assert g.unknown_clusters == {5: 3}
    assert g.n_unknown_spikes == 3
    assert g.n_dropped_negative == 1
    np.testing.assert_array_equal(g.unit_ids, [100, 200, 300])
    np.testing.assert_array_equal(g.ends, [3, 4, 4])
    np.testing.assert_allclose(g.spike_times_of(100), [0.2, 0.5, 0.9])
    np.testing.assert_allclose(g.values_of("amp", 100), [3.0, 7.0, 0.0])  # reordered in step with the times
    np.testing.assert_allclose(g.spike_times_of(200), [0.5])
    np.testing.assert_allclose(g.values_of("amp", 200), [1.0])
    assert g.spike_times_of(300).size == 0
    split = g.split()
    assert list(split) == [100, 200, 300]
    np.testing.assert_allclose(split[100], [0.2, 0.5, 0.9])
    # every spike is accounted for: kept + orphan + negative
    assert g.counts.sum() + g.n_unknown_spikes + g.n_dropped_negative == len(clusters)


def test_group_spikes_is_stable_for_equal_times_and_handles_no_units():
    g = U.group_spikes([1], [0], np.zeros(3, int), np.array([0.5, 0.5, 0.1]), {"v": np.array([1.0, 2.0, 3.0])})
    np.testing.assert_allclose(g.values_of("v", 1), [3.0, 1.0, 2.0])
    empty = U.group_spikes([], [], np.array([4, 4]), np.array([0.1, 0.2]))
    assert empty.unknown_clusters == {4: 2}
    assert empty.spike_times.size == 0


def test_group_spikes_rejects_clusters_claimed_twice_and_length_mismatch():
    with pytest.raises(InputError, match="more than one unit"):
        U.group_spikes([1, 2], [0, 0], np.zeros(2, int), np.zeros(2))
    with pytest.raises(InputError, match="spike times"):
        U.group_spikes([1], [0], np.zeros(3, int), np.zeros(2))


def test_group_spikes_matches_a_naive_loop_on_random_data():
    rng = np.random.default_rng(0)
    n = 5000
    clusters = rng.integers(0, 12, n)
    times = rng.uniform(-0.01, 10.0, n)
    amps = rng.normal(size=n)
    unit_ids = np.arange(500, 510)
    unit_clusters = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 11])  # clusters 9 and 10 are orphans
    g = U.group_spikes(unit_ids, unit_clusters, clusters, times, {"a": amps})
    for uid, c in zip(unit_ids, unit_clusters):
        sel = (clusters == c) & (times >= 0)
        order = np.argsort(times[sel], kind="stable")
        np.testing.assert_array_equal(g.spike_times_of(uid), times[sel][order])
        np.testing.assert_array_equal(g.values_of("a", uid), amps[sel][order])
    assert g.unknown_clusters == {9: int((clusters == 9).sum()), 10: int((clusters == 10).sum())}


def test_mean_waveforms_by_cluster_and_scale():
    mw = np.arange(4 * 3 * 2, dtype=np.float32).reshape(4, 3, 2)
    out = U.unit_mean_waveforms(mw, [2, 0], scale=2.0)
    np.testing.assert_allclose(out, mw[[2, 0]] / 2.0)
    with pytest.raises(InputError, match="clusters"):
        U.unit_mean_waveforms(mw, [4])


def test_load_sorting_checks_shapes_and_names_files(tmp_path):
    templates, winv = _templates()
    files = {
        "spike_times.npy": np.array([[0], [30000], [60000]], dtype=np.uint64),
        "spike_clusters.npy": np.array([0, 1, 0], dtype=np.int32),
        "spike_templates.npy": np.array([[0], [1], [0]], dtype=np.uint32),
        "amplitudes.npy": np.array([[1.0], [1.0], [2.0]]),
        "templates.npy": templates,
        "whitening_mat_inv.npy": winv,
    }
    for name, arr in files.items():
        np.save(tmp_path / name, arr)
    s = U.load_sorting(tmp_path, entity="probe X")
    assert s.mean_waveforms is None
    g = U.units_from_sorting(s, [10, 11], [0, 1], sampling_rate_hz=30000.0)
    np.testing.assert_allclose(g.spike_times_of(10), [0.0, 2.0])
    np.testing.assert_allclose(g.values_of("spike_amplitudes", 10), [4 * 0.195e-6, 8 * 0.195e-6])
    np.testing.assert_allclose(g.values_of("spike_amplitudes", 11), [6 * 0.195e-6])

    np.save(tmp_path / "amplitudes.npy", np.ones(2))
    with pytest.raises(InputError, match="amplitudes has 2 entries") as exc:
        U.load_sorting(tmp_path, entity="probe X")
    assert "probe X" in str(exc.value)
    (tmp_path / "templates.npy").write_bytes(b"not an npy file")
    with pytest.raises(InputError, match="templates.npy"):
        U.load_sorting(tmp_path)
    (tmp_path / "templates.npy").unlink()
    with pytest.raises(InputError, match="missing"):
        U.load_sorting(tmp_path)


def test_time_sorted_input_takes_the_same_answer_as_unsorted_input():
    rng = np.random.default_rng(1)
    n = 4000
    times = np.sort(rng.uniform(0.0, 100.0, n))
    times[10:20] = times[10]  # ties keep their file order
    clusters = rng.integers(0, 6, n)
    amps = rng.normal(size=n)
    sorted_g = U.group_spikes(np.arange(6) + 10, np.arange(6), clusters, times, {"a": amps})
    perm = rng.permutation(n)
    shuffled_g = U.group_spikes(np.arange(6) + 10, np.arange(6), clusters[perm], times[perm], {"a": amps[perm]})
    np.testing.assert_array_equal(sorted_g.spike_times, shuffled_g.spike_times)
    np.testing.assert_array_equal(sorted_g.ends, shuffled_g.ends)
    for uid in range(10, 16):
        sel = clusters == uid - 10
        np.testing.assert_array_equal(sorted_g.values_of("a", uid), amps[sel])


def _grouping_with_everything():
    clusters = np.array([3, 1, 5, 3, 1, 5, 5, 3])
    times = np.array([0.9, 0.5, 0.1, 0.2, -0.1, 0.3, 0.4, 0.5])
    return U.group_spikes([100, 200, 300], [3, 1, 7], clusters, times, {"spike_amplitudes": np.arange(8, dtype=float)})


def _assert_same_grouping(a, b):
    for name in ("unit_ids", "spike_times", "ends"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype, name
        np.testing.assert_array_equal(x, y)
    assert a.values.keys() == b.values.keys()
    for k in a.values:
        assert a.values[k].dtype == b.values[k].dtype
        np.testing.assert_array_equal(a.values[k], b.values[k])
    assert a.unknown_clusters == b.unknown_clusters
    assert a.n_dropped_negative == b.n_dropped_negative


def test_grouping_file_round_trips_everything(tmp_path):
    g = _grouping_with_everything()
    assert g.unknown_clusters and g.n_dropped_negative  # the file must keep both
    path = U.write_grouping(tmp_path / "sub" / "units.h5", g)
    assert path.exists() and not list(path.parent.glob("*inprogress*"))
    _assert_same_grouping(U.read_grouping(path), g)

    empty = U.group_spikes([], [], np.zeros(0, int), np.zeros(0))
    _assert_same_grouping(U.read_grouping(U.write_grouping(tmp_path / "empty.h5", empty)), empty)
    no_spikes = U.group_spikes([4, 5], [0, 1], np.zeros(0, int), np.zeros(0), {"spike_amplitudes": np.zeros(0)})
    _assert_same_grouping(U.read_grouping(U.write_grouping(tmp_path / "none.h5", no_spikes)), no_spikes)


def test_grouping_file_write_is_atomic(tmp_path):
    path = U.write_grouping(tmp_path / "units.h5", _grouping_with_everything())
    before = path.read_bytes()
    bad = _grouping_with_everything()
    bad = U.SpikeGrouping(bad.unit_ids, bad.spike_times, bad.ends, {"spike_amplitudes": object()}, {}, 0)
    with pytest.raises(TypeError, match="Object dtype .* has no native HDF5 equivalent"):
        U.write_grouping(path, bad)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["units.h5"]


def test_reading_a_bad_grouping_file_names_it(tmp_path):
    import h5py

    with pytest.raises(InputError, match="missing") as exc:
        U.read_grouping(tmp_path / "absent.h5", entity="probe X")
    assert "absent.h5" in str(exc.value) and "probe X" in str(exc.value)

    (tmp_path / "junk.h5").write_bytes(b"not hdf5 at all")
    with pytest.raises(InputError, match="corrupt") as exc:
        U.read_grouping(tmp_path / "junk.h5")
    assert "junk.h5" in str(exc.value)

    with h5py.File(tmp_path / "other.h5", "w") as fh:
        fh.create_dataset("unit_ids", data=[1])
    with pytest.raises(InputError, match="not a grouped-units file") as exc:
        U.read_grouping(tmp_path / "other.h5")
    assert "other.h5" in str(exc.value)

    path = U.write_grouping(tmp_path / "units.h5", _grouping_with_everything())
    with h5py.File(path, "a") as fh:
        del fh["spike_times_index"]
        fh["spike_times_index"] = np.array([3, 4, 99])
    with pytest.raises(InputError, match="not a valid index") as exc:
        U.read_grouping(path)
    assert "units.h5" in str(exc.value)

    with h5py.File(path, "a") as fh:
        del fh["spike_amplitudes"]
    with pytest.raises(InputError, match="lacks datasets.*spike_amplitudes"):
        U.read_grouping(path)
