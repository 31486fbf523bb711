"""An ophys session materialized with the storage root on ``s3://`` (a local moto server) gives the same NWB bytes
as on a local root; a step on a machine with an empty scratch stages its inputs in from the store."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pytest

from release_platform.assets.inputs import INPUT_ASSETS
from release_platform.assets.nwb_ophys import behavior_ophys_nwb
from release_platform.assets.ophys import OPHYS_ASSETS
from release_platform.assets.resources import StagingIOManager, StorageResource
from release_platform.assets.stimulus import stimulus_responses
from release_platform.errors import InputError
from release_platform.lims.resource import LimsResource
from release_platform.staging import require_local
from release_platform.storage import remote_storage
from release_platform_tests.s3server import TEST_CREDENTIALS, make_bucket, moto_server

pytestmark = pytest.mark.slow  # one session to NWB twice, plus the NWB step once more

SESSION = "1001"
BUCKET = "platform-artifacts"


def _defs(io_manager=None) -> dg.Definitions:
    resources = {"lims": LimsResource(), "storage": StorageResource()}
    if io_manager is not None:
        resources["io_manager"] = io_manager
    jobs = [dg.define_asset_job("to_nwb", selection=dg.AssetSelection.assets(behavior_ophys_nwb).upstream()),
            dg.define_asset_job("nwb_only", selection=dg.AssetSelection.assets(behavior_ophys_nwb))]
    return dg.Definitions(assets=[*INPUT_ASSETS, *OPHYS_ASSETS, stimulus_responses, behavior_ophys_nwb],
                          resources=resources, jobs=jobs)


def _nwb_files(result, moved_to: Path | None = None, artifacts: Path | None = None) -> dict[str, bytes]:
    """The plane NWB files a run wrote, read from where its artifact directory was moved after the run."""
    value = result.output_for_node("behavior_ophys_nwb")
    out = {}
    for pid, recorded in value.paths.items():
        path = Path(recorded)
        if moved_to is not None:
            path = moved_to / path.relative_to(artifacts)
        out[pid] = path.read_bytes()
    return out


RUN_CONFIG = {"ops": {"behavior_ophys_nwb": {"config": {"compression": "fast"}}}}


@pytest.fixture(scope="module")
def runs(seeded_demo, tmp_path_factory):
    """One session to its NWB files three times, each writing under the same local directory ``artifacts`` (so
    paths recorded in provenance agree), moved aside after the run: on a local root, on an ``s3://`` root (the
    directory is its scratch copy), and the NWB step alone on the ``s3://`` root with an emptied scratch (a machine
    that never saw the upstream steps)."""
    root = tmp_path_factory.mktemp("s3_storage")
    artifacts = root / "artifacts"
    shutil.copyfile(seeded_demo / "lims.sqlite", root / "lims.sqlite")
    mp = pytest.MonkeyPatch()
    for k, v in TEST_CREDENTIALS.items():
        mp.setenv(k, v)
    mp.setenv("RELEASE_PLATFORM_HOME", str(root))
    mp.setenv("RELEASE_PLATFORM_LIMS_URL", f"sqlite:///{root / 'lims.sqlite'}")
    with moto_server() as endpoint:
        out = {"artifacts": artifacts, "root": root}
        mp.setenv("RELEASE_PLATFORM_STORAGE", str(artifacts))
        with dg.instance_for_test() as instance:
            instance.add_dynamic_partitions("ophys_session", [SESSION])
            out["local"] = _defs().resolve_job_def("to_nwb").execute_in_process(
                partition_key=SESSION, instance=instance, run_config=RUN_CONFIG)
        artifacts.rename(root / "local_run")

        from release_platform.release.publish import s3_client

        make_bucket(s3_client(endpoint), BUCKET)
        mp.setenv("RELEASE_PLATFORM_STORAGE", f"s3://{BUCKET}/storage")
        mp.setenv("RELEASE_PLATFORM_STORAGE_ENDPOINT_URL", endpoint)
        mp.setenv("RELEASE_PLATFORM_SCRATCH", str(artifacts))
        with dg.instance_for_test() as instance:
            instance.add_dynamic_partitions("ophys_session", [SESSION])
            defs = _defs(StagingIOManager())
            out["s3"] = defs.resolve_job_def("to_nwb").execute_in_process(
                partition_key=SESSION, instance=instance, run_config=RUN_CONFIG)
            artifacts.rename(root / "s3_run")
            remote = remote_storage()
            remote.bytes_downloaded = 0
            out["s3_fresh"] = defs.resolve_job_def("nwb_only").execute_in_process(
                partition_key=SESSION, instance=instance, run_config=RUN_CONFIG)
            out["remote"] = remote
        yield out
    mp.undo()


def test_s3_root_gives_the_same_nwb_bytes_as_a_local_root(runs):
    artifacts, root = runs["artifacts"], runs["root"]
    local = _nwb_files(runs["local"], root / "local_run", artifacts)
    s3 = _nwb_files(runs["s3"], root / "s3_run", artifacts)
    assert local and set(local) == set(s3)
    for pid in local:
        assert s3[pid] == local[pid], f"plane {pid}: NWB bytes differ between local and s3:// roots"


def test_a_fresh_scratch_stages_inputs_from_the_store_and_writes_the_same_nwb(runs):
    artifacts, root = runs["artifacts"], runs["root"]
    fresh = _nwb_files(runs["s3_fresh"])
    assert fresh == _nwb_files(runs["local"], root / "local_run", artifacts)
    remote = runs["remote"]
    assert remote.scratch == artifacts and remote.bytes_downloaded > 0
    # the store holds every artifact under its final key, and no temporary key
    listed = remote.fs.find(f"{BUCKET}/storage")
    nwb_keys = sorted(p.rsplit("/", 1)[1] for p in listed if p.endswith(".nwb"))
    assert nwb_keys == sorted(Path(p).name for p in runs["s3"].output_for_node("behavior_ophys_nwb").paths.values())
    assert not [p for p in listed if ".inprogress" in p]
    for p in listed:
        if p.endswith(".nwb"):
            assert remote.fs.cat_file(p) == (artifacts / p.split("/storage/", 1)[1]).read_bytes()


def test_hdf5_is_never_opened_over_the_network():
    with pytest.raises(InputError, match="never opened over the network"):
        require_local("s3://bucket/storage/behavior_ophys_nwb/1001/x.nwb")
    with pytest.raises(InputError, match="open file object"):
        require_local(open(__file__, "rb"))
    from release_platform.nwb.readers import open_nwb
    from release_platform.ophys.io import open_h5

    with pytest.raises(InputError, match="stage it"):
        with open_nwb("s3://bucket/x.nwb"):
            pass
    with pytest.raises(InputError, match="stage it"):
        with open_h5("gs://bucket/x.h5"):
            pass
