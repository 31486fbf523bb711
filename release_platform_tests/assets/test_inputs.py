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
