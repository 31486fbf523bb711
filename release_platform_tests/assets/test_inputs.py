"""Input assets materialized in-process on the seeded demo; bad input fails only its partition."""

from __future__ import annotations

import shutil

import dagster as dg
import h5py
import numpy as np
import pytest

from data_fixtures.spec import corrupt_file
from release_platform.assets.inputs import INPUT_ASSETS
from release_platform.assets.resources import StorageResource
from release_platform.lims.resource import LimsResource


def _materialize(client, home, asset, key, instance):
    instance.add_dynamic_partitions(asset.partitions_def.name, [key])
    return dg.materialize(
        [asset],
        partition_key=key,
        instance=instance,
        resources={"lims": LimsResource(url=client.url), "storage": StorageResource(root=str(home / "storage"))},
        raise_on_error=False,
    )


def _failure_message(result) -> str:
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert len(failures) == 1
    return failures[0].event_specific_data.error.message


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


ASSET_BY_KIND = {a.partitions_def.name: a for a in INPUT_ASSETS}


@pytest.mark.parametrize("kind, key", [("ophys_session", "1001"), ("ophys_session", "1002"), ("behavior_session", "3002"),
                                       ("ecephys_session", "4001"), ("icephys_cell", "5001")])
def test_every_kind_resolves_and_validates(demo_lims, home, instance, kind, key):
    result = _materialize(demo_lims, home, ASSET_BY_KIND[kind], key, instance)
    assert result.success
    value = result.output_for_node(ASSET_BY_KIND[kind].op.name)
    assert value.session_id == int(key) and value.kind == kind
    if kind == "ophys_session":
        assert len(value.planes) == (2 if key == "1002" else 1)
        plane = value.planes[0]
        with h5py.File(plane.movie_path, "r") as fh:
            assert fh["data"].shape == tuple(plane.movie_shape)
        ids = [r.id for r in plane.rois]
        assert len(ids) == len(set(ids)) > 0
        assert value.subject.subject_id and value.subject.driver_line
    if kind == "ecephys_session":
        assert [p.name for p in value.probes] == ["probeA", "probeB"]
        assert all(p.n_spikes > 0 and p.lfp_problem is None for p in value.probes)


def test_unknown_session_fails_clearly(demo_lims, home, instance):
    result = _materialize(demo_lims, home, ASSET_BY_KIND["ophys_session"], "777", instance)
    assert not result.success
    assert "ophys_session 777: unknown ophys_session id: not in LIMS" in _failure_message(result)


def test_missing_movie_fails_only_its_partition(demo_lims, home, instance, tmp_path):
    demo_lims.register_file("OphysExperiment", 1101, "MotionCorrectedImageStack", tmp_path / "gone" / "movie.h5")
    bad = _materialize(demo_lims, home, ASSET_BY_KIND["ophys_session"], "1001", instance)
    assert not bad.success
    message = _failure_message(bad)
    assert "ophys_session 1001 (ophys_experiment 1101)" in message
    assert str(tmp_path / "gone" / "movie.h5") in message and "MotionCorrectedImageStack file is missing" in message
    good = _materialize(demo_lims, home, ASSET_BY_KIND["ophys_session"], "1002", instance)
    assert good.success


def test_corrupt_movie_names_session_and_file(demo_lims, home, instance, tmp_path):
    source = demo_lims.well_known_file("OphysExperiment", 1101, "MotionCorrectedImageStack")
    broken = tmp_path / "movie.h5"
    shutil.copyfile(source, broken)
    corrupt_file(broken)
    demo_lims.register_file("OphysExperiment", 1101, "MotionCorrectedImageStack", broken)
    result = _materialize(demo_lims, home, ASSET_BY_KIND["ophys_session"], "1001", instance)
    message = _failure_message(result)
    assert f"ophys_session 1001 (ophys_experiment 1101): {broken}: cannot open HDF5 file" in message


def test_movie_shape_disagreeing_with_lims(demo_lims, home, instance, tmp_path):
    source = demo_lims.well_known_file("OphysExperiment", 1101, "MotionCorrectedImageStack")
    with h5py.File(source, "r") as fh:
        data = fh["data"][:, :, :-3]
    other = tmp_path / "narrow.h5"
    with h5py.File(other, "w") as fh:
        fh["data"] = data
    demo_lims.register_file("OphysExperiment", 1101, "MotionCorrectedImageStack", other)
    message = _failure_message(_materialize(demo_lims, home, ASSET_BY_KIND["ophys_session"], "1001", instance))
    assert f"{other}: movie has width {data.shape[2]} but LIMS says {data.shape[2] + 3}" in message


def test_duplicate_roi_ids_are_refused(demo_lims, home, instance):
    rois = demo_lims.roi_masks(1101)
    clone = [{**r, "id": None} for r in rois]
    demo_lims.add_rois(1101, clone)  # a new current run with fresh ids: fine
    from release_platform import inputs

    record = demo_lims.session("ophys_session", 1001)
    experiments = demo_lims.ophys_experiments(1001)
    dupes = demo_lims.roi_masks(1101)
    dupes[1] = {**dupes[1], "id": dupes[0]["id"]}
    with pytest.raises(inputs.InputError, match=r"ophys_session 1001 \(ophys_experiment 1101\): ROI ids are not unique"):
        inputs.validate_ophys_session(record, experiments, {1101: dupes})


def test_missing_frame_rate_and_bad_csv(demo_lims, home, instance, tmp_path):
    from release_platform import inputs

    record = demo_lims.session("ophys_session", 1001)
    experiments = demo_lims.ophys_experiments(1001)
    rois = {1101: demo_lims.roi_masks(1101)}
    no_rate = [{**experiments[0], "frame_rate_hz": None}]
    with pytest.raises(inputs.InputError, match="frame rate None is missing"):
        inputs.validate_ophys_session(record, no_rate, rois)
    bad_csv = tmp_path / "stim.csv"
    bad_csv.write_text("a,b\n1,2\n")
    record["well_known_files"]["StimulusTable"] = bad_csv
    with pytest.raises(inputs.InputError, match=rf"{bad_csv}: CSV table lacks required columns"):
        inputs.validate_ophys_session(record, experiments, rois)


def test_ecephys_broken_lfp_is_reported_not_fatal(demo_lims, home, instance, tmp_path):
    probe = demo_lims.ecephys_probes(4001)[0]
    demo_lims.register_file("EcephysProbe", probe["id"], "EcephysLfp", tmp_path / "missing_lfp.h5")
    result = _materialize(demo_lims, home, ASSET_BY_KIND["ecephys_session"], "4001", instance)
    assert result.success
    value = result.output_for_node("ecephys_session_inputs")
    assert "missing_lfp.h5" in value.probes[0].lfp_problem and value.probes[1].lfp_problem is None


def test_mismatched_sorter_arrays(demo_lims, home, instance, tmp_path):
    probe = demo_lims.ecephys_probes(4001)[0]
    sorting = tmp_path / "sorting"
    shutil.copytree(probe["well_known_files"]["EcephysSortingDirectory"], sorting)
    np.save(sorting / "amplitudes.npy", np.load(sorting / "amplitudes.npy")[:-1])
    demo_lims.register_file("EcephysProbe", probe["id"], "EcephysSortingDirectory", sorting)
    message = _failure_message(_materialize(demo_lims, home, ASSET_BY_KIND["ecephys_session"], "4001", instance))
    assert f"ecephys_session 4001 ({probe['name']}): {sorting / 'amplitudes.npy'}: amplitudes.npy has" in message


# -- values of the sorter outputs -----------------------------------------------------------------------------
def _sorting_copy(demo_lims, tmp_path, probe_index=0):
    probe = demo_lims.ecephys_probes(4001)[probe_index]
    sorting = tmp_path / f"sorting_{probe['name']}"
    shutil.copytree(probe["well_known_files"]["EcephysSortingDirectory"], sorting)
    demo_lims.register_file("EcephysProbe", probe["id"], "EcephysSortingDirectory", sorting)
    return probe, sorting


def _validate_ecephys(demo_lims):
    from release_platform import inputs

    return inputs.validate_ecephys_session(demo_lims.session("ecephys_session", 4001), demo_lims.ecephys_probes(4001))


def test_nan_amplitudes_fail_the_ecephys_input_naming_session_probe_and_file(demo_lims, home, instance, tmp_path):
    probe, sorting = _sorting_copy(demo_lims, tmp_path)
    amplitudes = np.load(sorting / "amplitudes.npy")
    amplitudes[[3, 50, 51]] = np.nan
    np.save(sorting / "amplitudes.npy", amplitudes)
    result = _materialize(demo_lims, home, ASSET_BY_KIND["ecephys_session"], "4001", instance)
    assert not result.success
    assert _failure_message(result).strip().endswith(f"ecephys_session 4001 ({probe['name']}): {sorting / 'amplitudes.npy'}: amplitudes.npy "
                                        f"has 3 NaN or infinite amplitudes (first at spike 3)")


def _edit(sorting, name, fn):
    values = np.load(sorting / name)
    np.save(sorting / name, fn(values.copy()))


@pytest.mark.parametrize("name, edit, problem", [
    ("amplitudes.npy", lambda a: np.where(np.arange(a.shape[0]) == 7, -1.0, a), "has 1 negative amplitudes (first at spike 7)"),
    ("amplitudes.npy", lambda a: np.where(np.arange(a.shape[0]) == 2, np.inf, a), "has 1 NaN or infinite amplitudes (first at spike 2)"),
    ("spike_times.npy", lambda t: t[::-1], "is not in time order: spike 1 is earlier than spike 0"),
    ("spike_times.npy", lambda t: np.where(np.arange(t.shape[0]) == 4, np.nan, t.astype(np.float64) / 30000.0),
     "has 1 NaN or infinite spike times (first at spike 4)"),
    ("spike_clusters.npy", lambda c: np.where(np.arange(c.shape[0]) == 0, 999, c),
     "has spikes of clusters [999] that cluster_group.tsv does not list"),
    ("spike_clusters.npy", lambda c: np.where(np.arange(c.shape[0]) == 0, -1, c), "has negative cluster ids (first at spike 0)"),
    ("spike_clusters.npy", lambda c: c.astype(np.float64), "has dtype float64, expected integer ids"),
    ("spike_templates.npy", lambda k: np.where(np.arange(k.shape[0]) == 9, 10_000, k),
     "refers to a template that does not exist (spike 9: template 10000"),
    ("templates.npy", lambda t: np.where(np.arange(t.shape[0])[:, None, None] == 0, np.nan, t),
     "NaN or infinite values"),
])
def test_bad_sorter_values_name_the_file_and_the_problem(demo_lims, tmp_path, name, edit, problem):
    from release_platform import inputs

    probe, sorting = _sorting_copy(demo_lims, tmp_path)
    _edit(sorting, name, edit)
    with pytest.raises(inputs.InputError) as exc:
        _validate_ecephys(demo_lims)
    assert str(exc.value).startswith(f"ecephys_session 4001 ({probe['name']}): {sorting / name}: {name} ")
    assert problem in str(exc.value)


def test_units_must_claim_known_clusters_with_spikes(demo_lims, tmp_path):
    from release_platform import inputs

    probe, sorting = _sorting_copy(demo_lims, tmp_path)
    claimed = sorted(u["cluster_id"] for u in probe["units"])
    clusters = np.load(sorting / "spike_clusters.npy")
    orphan = sorted(set(np.unique(clusters).tolist()) - set(claimed))[0]
    # every spike of the first claimed cluster moved to an orphan cluster: that unit would have no spike
    np.save(sorting / "spike_clusters.npy", np.where(clusters == claimed[0], orphan, clusters).astype(clusters.dtype))
    with pytest.raises(inputs.InputError, match=rf"has no spikes of clusters \[{claimed[0]}\] that LIMS units claim"):
        _validate_ecephys(demo_lims)
    # without the sorter's cluster table, a claimed cluster that appears nowhere is unknown
    (sorting / "cluster_group.tsv").unlink()
    with pytest.raises(inputs.InputError, match=rf"has no cluster \[{claimed[0]}\] that LIMS units claim \(unknown to the sorter\)"):
        _validate_ecephys(demo_lims)


def test_good_sorter_outputs_pass_and_are_counted(demo_lims):
    from release_platform import inputs

    for probe in demo_lims.ecephys_probes(4001):
        sorting = probe["well_known_files"]["EcephysSortingDirectory"]
        arrays = {n: np.load(sorting / n, mmap_mode="r") for n in inputs.SORTING_FILES}
        counts = inputs.check_sorter_arrays("x", sorting, arrays, [u["cluster_id"] for u in probe["units"]])
        with h5py.File(probe["well_known_files"]["GroundTruth"], "r") as truth:
            expected = truth["cluster_spike_counts"][()]
        assert counts == {c: int(n) for c, n in enumerate(expected) if n}


def test_sorter_checks_work_across_blocks(monkeypatch, tmp_path):
    """Order and counts are checked across the block boundaries of a long recording."""
    from release_platform import inputs

    monkeypatch.setattr(inputs, "SPIKE_CHECK_BLOCK", 4)
    times = np.arange(10, dtype=np.uint64)
    arrays = {"spike_times.npy": times, "amplitudes.npy": np.ones(10), "spike_clusters.npy": np.array([0, 1] * 5, dtype=np.int32),
              "spike_templates.npy": np.zeros(10, dtype=np.int32), "templates.npy": np.ones((1, 3, 2), dtype=np.float32),
              "whitening_mat_inv.npy": np.eye(2)}
    assert inputs.check_sorter_arrays("s", tmp_path, arrays, [0, 1]) == {0: 5, 1: 5}
    arrays["spike_times.npy"] = np.array([0, 1, 2, 3, 4, 6, 5, 7, 8, 9], dtype=np.uint64)  # inside block 1
    with pytest.raises(inputs.InputError, match="spike 6 is earlier than spike 5"):
        inputs.check_sorter_arrays("s", tmp_path, arrays)
    arrays["spike_times.npy"] = np.array([0, 1, 2, 3, 2, 6, 7, 8, 9, 10], dtype=np.uint64)  # across blocks 0 and 1
    with pytest.raises(inputs.InputError, match="spike 4 is earlier than spike 3"):
        inputs.check_sorter_arrays("s", tmp_path, arrays)


# -- sampled movie frames ------------------------------------------------------------------------------------
def _float_movie(path, n_frames=200, bad=None, value=np.nan):
    data = np.full((n_frames, 8, 8), 100.0, dtype=np.float32)
    if bad is not None:
        data[bad, 2, 3] = value
    with h5py.File(path, "w") as fh:
        fh.create_dataset("data", data=data, chunks=(16, 8, 8))
    return path


def test_movie_sample_covers_first_and_last_frames():
    from release_platform import inputs

    starts = inputs.movie_sample_starts(1000, blocks=16, block_frames=8)
    assert starts[0] == 0 and starts[-1] == 992 and len(starts) == 16 and (np.diff(starts) > 0).all()
    assert inputs.movie_sample_starts(5, blocks=16, block_frames=8).tolist() == [0]
    assert inputs.movie_sample_starts(0).size == 0


@pytest.mark.parametrize("bad, value, frames", [
    (slice(None), np.nan, "[0, 1, 2, 3, 4, ...]"),   # one dead pixel in every frame
    (199, np.inf, "[199]"),                          # the last frame is always read
    (0, -np.inf, "[0]"),
])
def test_a_movie_with_non_finite_pixels_is_refused(tmp_path, bad, value, frames):
    from release_platform import inputs

    path = _float_movie(tmp_path / "movie.h5", bad=bad, value=value)
    with pytest.raises(inputs.InputError) as exc:
        inputs.check_movie_sample("ophys_session 1 (ophys_experiment 2)", path)
    assert str(exc.value).startswith(f"ophys_session 1 (ophys_experiment 2): {path}: movie has NaN or infinite pixels")
    assert f"frame(s) {frames} of 200" in str(exc.value)


def test_a_finite_or_integer_movie_passes_the_sample_check(tmp_path):
    from release_platform import inputs

    assert inputs.check_movie_sample("s", _float_movie(tmp_path / "ok.h5")) == 16 * 8
    with h5py.File(tmp_path / "int.h5", "w") as fh:
        fh["data"] = np.zeros((40, 4, 4), dtype=np.uint16)
    assert inputs.check_movie_sample("s", tmp_path / "int.h5") == 0  # integers cannot be NaN: not read


def test_nan_movie_fails_the_ophys_input_naming_session_plane_and_file(demo_lims, home, instance, tmp_path):
    source = demo_lims.well_known_file("OphysExperiment", 1201, "MotionCorrectedImageStack")
    nan_movie = tmp_path / "nan_movie.h5"
    with h5py.File(source, "r") as src, h5py.File(nan_movie, "w") as dst:
        data = src["data"][()].astype(np.float32)
        data[:, 0, 0] = np.nan
        dst["data"] = data
    demo_lims.register_file("OphysExperiment", 1201, "MotionCorrectedImageStack", nan_movie)
    message = _failure_message(_materialize(demo_lims, home, ASSET_BY_KIND["ophys_session"], "1002", instance))
    assert f"ophys_session 1002 (ophys_experiment 1201): {nan_movie}: movie has NaN or infinite pixels: " in message
    assert _materialize(demo_lims, home, ASSET_BY_KIND["ophys_session"], "1001", instance).success
