"""Release assets in process: sessions stage their own files, one release version assembles and verifies them;
tampering fails the blocking check; the demo sessions release clean through the assets and the command."""

from __future__ import annotations

import argparse
import io
import re
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from release_platform.assets import metadata as am
from release_platform.assets import release as ar
from release_platform.assets.qc_report import write_index
from release_platform.assets.resources import StorageResource
from release_platform.lims import LimsClient
from release_platform.lims.resource import LimsResource
from release_platform.release.commands import add_release_commands
from release_platform.metadata import file_id
from release_platform.qc import figures
from release_platform.release.layouts import dandi_path_problems
from release_platform.release.manifest import load_manifest
from release_platform.release.verify import verify_release
from release_platform_tests.assets.metadata_upstream import ophys_mouse, upstream_of
from release_platform_tests.metadata import LimsWorld, day
from release_platform.metadata.io import write_parquet
from release_platform_tests.release import flip_byte, world, write_file

SESSION_ASSETS = {
    "behavior_session": ["behavior_session_metadata", "behavior_session_release_files"],
    "ophys_session": ["ophys_session_metadata", "ophys_experiment_metadata", "ophys_cells_metadata", "ophys_session_release_files"],
    "ecephys_session": ["ecephys_session_metadata", "ecephys_session_release_files"],
}
ALL = {a.key.path[-1]: a for a in [*am.METADATA_ASSETS, *ar.RELEASE_ASSETS]}


def _checks_for(names):
    return [c for c in [*am.METADATA_CHECKS, *ar.RELEASE_CHECKS] if any(k.asset_key.path[-1] in names for k in c.check_keys)]


def _run(env, names, partition_key=None, **kw):
    # session metadata assets run with stand-ins for their inputs (the session's rows, the NWB assets' files)
    upstream = upstream_of(names, env.get("written", {}))
    return dg.materialize([*upstream, *(ALL[n] for n in names), *_checks_for(names)], partition_key=partition_key,
                          resources=env["resources"], instance=env["instance"], **kw)


def _session(env, kind, key, **kw):
    return _run(env, SESSION_ASSETS[kind], key, **kw)


def _release_tables(env):
    return _run(env, [a.key.path[-1] for a in am.RELEASE_METADATA_ASSETS])


def _release(env, version, config=None, **kw):
    env["instance"].add_dynamic_partitions("release_version", [version])
    run_config = {"ops": {"release_manifest": {"config": config}}} if config else None
    return _run(env, ["release_manifest"], version, run_config=run_config, **kw)


def _check(result):
    return {e.check_name: e for e in result.get_asset_check_evaluations()}["release_manifest_verified"]


@pytest.fixture
def env(tmp_path):
    url = f"sqlite:///{tmp_path / 'lims.sqlite'}"
    client = LimsClient(url)
    client.upgrade()
    w = LimsWorld(client)
    ophys_mouse(w)
    w.ecephys(301, "m1", "EPHYS_1_images_G", day(2), [
        dict(id=3011, name="probeA", channels=[(30110, 0, "VISp", True)], units=[(1, 30110, {"firing_rate": 2.0})])])
    root = tmp_path / "storage"
    written = {  # what the NWB assets report, per partition
        "behavior_nwb": {"1": {1: write_file(root / "behavior_nwb" / "1" / "behavior_session_1.nwb", 20_000, seed=1)}},
        "behavior_ophys_nwb": {"101": {
            1011: write_file(root / "behavior_ophys_nwb" / "101" / "behavior_ophys_experiment_1011.nwb", 30_000, seed=2),
            1012: write_file(root / "behavior_ophys_nwb" / "101" / "behavior_ophys_experiment_1012.nwb", 30_001, seed=3)}},
        "ecephys_session_nwb": {"301": {301: write_file(root / "ecephys_session_nwb" / "301" / "ecephys_session_301.nwb", 25_000, seed=4)}},
    }
    resources = {"lims": LimsResource(url=url), "storage": StorageResource(root=str(root))}
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("behavior_session", ["1", "2"])
        instance.add_dynamic_partitions("ophys_session", ["101"])
        instance.add_dynamic_partitions("ecephys_session", ["301"])
        yield {"world": w, "root": root, "resources": resources, "instance": instance, "written": written}
    client.dispose()


def test_sessions_stage_their_files_and_a_release_assembles_and_verifies(env):
    for kind, key in (("behavior_session", "1"), ("behavior_session", "2"), ("ophys_session", "101"), ("ecephys_session", "301")):
        assert _session(env, kind, key).success
    staged = env["root"] / "ophys_session_release_files" / "101"
    assert sorted(p.name for p in staged.rglob("*.nwb")) == ["behavior_ophys_experiment_1011.nwb", "behavior_ophys_experiment_1012.nwb"]
    assert (staged / "release_records.json").is_file()
    assert _release_tables(env).success
    result = _release(env, "1.0.0", {"project": "vbo", "layout": "dandi"})
    assert result.success and _check(result).passed, _check(result).description
    mat = result.asset_materializations_for_node("release_manifest")[0]
    assert mat.metadata["data_files"].value == 4 and mat.metadata["files_linked"].value == 4
    assert mat.metadata["bytes_copied"].value == 0
    project_dir = env["root"] / "release_manifest" / "1.0.0" / "vbo"
    manifest = load_manifest(project_dir / "manifests" / "vbo_manifest_v1.0.0.json")
    assert sorted(manifest["metadata_files"]) == sorted(am.RELEASE_ASSETS)
    assert (project_dir / "sub-m1" / "sub-m1_ses-101_desc-exp1012_behavior+ophys.nwb").is_file()
    assert verify_release(project_dir).ok

    # re-staging an unchanged session copies nothing
    again = _session(env, "ophys_session", "101")
    assert again.asset_materializations_for_node("ophys_session_release_files")[0].metadata["bytes_copied"].value == 0

    # a new version after one session's file changed: only that session is re-staged; the changelog says so
    write_file(env["root"] / "ecephys_session_nwb" / "301" / "ecephys_session_301.nwb", 25_000, seed=40)
    restaged = _session(env, "ecephys_session", "301")
    assert restaged.asset_materializations_for_node("ecephys_session_release_files")[0].metadata["bytes_copied"].value == 25_000
    assert _release_tables(env).success
    second = _release(env, "1.1.0", {"project": "vbo", "layout": "dandi"})
    assert second.success and _check(second).passed
    meta = second.asset_materializations_for_node("release_manifest")[0].metadata
    assert meta["previous_version"].value == "1.0.0" and meta["changes"].data == {"changed": 1}
    assert "sub-m1_ses-301_behavior+ecephys.nwb changed" in meta["changelog"].value


def test_tampering_with_a_released_file_fails_the_blocking_check(env):
    for kind, key in (("behavior_session", "1"), ("behavior_session", "2"), ("ophys_session", "101")):
        assert _session(env, kind, key).success
    assert _release_tables(env).success
    assert _check(_release(env, "1.0.0")).passed
    victim = env["root"] / "release_manifest/1.0.0/release-platform/behavior_ophys_experiments/1011/behavior_ophys_experiment_1011.nwb"
    flip_byte(victim)
    ran = []

    @dg.asset(partitions_def=ar.release_version_partitions, deps=[ar.release_manifest])
    def publish(context):
        ran.append(context.partition_key)

    result = dg.materialize([ar.release_manifest, publish, *ar.RELEASE_CHECKS], partition_key="1.0.0",
                            resources=env["resources"], instance=env["instance"], raise_on_error=False)
    check = _check(result)
    assert not check.passed and ran == [] and not result.success
    problems = check.metadata["problems"].data
    assert problems == [{"kind": "mismatched", "path": "behavior_ophys_experiments/1011/behavior_ophys_experiment_1011.nwb",
                         "detail": problems[0]["detail"]}]


def test_release_fails_clearly_without_staged_sessions(tmp_path):
    w = world(tmp_path / "storage")  # release tables written directly, no session staged
    for table in ("behavior_session_table", "ophys_experiment_table"):
        write_parquet(table, w.frames[table], w.storage / am.RELEASE_ASSETS[table][0] / f"{table}.parquet")
    with dg.instance_for_test() as instance:
        env = {"resources": {"storage": StorageResource(root=str(w.storage))}, "instance": instance}
        result = _release(env, "1.0.0", raise_on_error=False)
        assert not result.success
        failure = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"][0]
        message = failure.event_specific_data.error.message
        assert "3 staging problem(s)" in message and "has no staging record" in message
        assert not _release(env, "1.0", raise_on_error=False).success  # not a semantic version


def test_demo_sessions_release_clean(demo_lims, home):
    """The seeded demo: metadata for every session, staged, assembled and checked; and the release command on the
    same tables. Stand-in NWB files are placed where the NWB assets write them, so rows have file paths."""
    root = home / "storage"
    written: dict = {}
    for rel in ("behavior_ophys_nwb/1001/behavior_ophys_experiment_1101.nwb", "behavior_ophys_nwb/1002/behavior_ophys_experiment_1201.nwb",
                "behavior_ophys_nwb/1002/behavior_ophys_experiment_1202.nwb", "behavior_nwb/3001/behavior_session_3001.nwb",
                "ecephys_session_nwb/4001/ecephys_session_4001.nwb", "ecephys_probe_lfp_nwb/4001/lfp_probe_4101.nwb",
                "ecephys_probe_lfp_nwb/4001/lfp_probe_4102.nwb"):
        asset, partition, name = rel.split("/")
        entity = int(name.rsplit("_", 1)[1].split(".")[0])
        written.setdefault(asset, {}).setdefault(partition, {})[entity] = write_file(root / rel, 4096, seed=len(rel))
    resources = {"lims": LimsResource(url=demo_lims.url), "storage": StorageResource(root=str(root))}
    # 3003 is recorded with ecephys 4001: its row is released, its data ship in 4001's file
    partitions = {"ophys_session": ["1001", "1002"], "behavior_session": ["3001", "3002", "3003"], "ecephys_session": ["4001"]}
    with dg.instance_for_test() as instance:
        env = {"resources": resources, "instance": instance, "written": written}
        for kind, keys in partitions.items():
            instance.add_dynamic_partitions(kind, keys)
            for key in keys:
                assert _session(env, kind, key).success, (kind, key)
        assert _release_tables(env).success
        result = _release(env, "0.1.0", {"project": "demo", "layout": "allen"})
        assert result.success and _check(result).passed, _check(result).description
        manifest = load_manifest(root / "release_manifest/0.1.0/demo/manifests/demo_manifest_v0.1.0.json")
        assert len(manifest["data_files"]) == 7
        staged = root / "ecephys_session_release_files/4001/ecephys_sessions/4001"
        assert sorted(p.name for p in staged.glob("*.nwb")) == ["ecephys_session_4001.nwb", "lfp_probe_4101.nwb", "lfp_probe_4102.nwb"]
        released = root / "release_manifest/0.1.0/demo/ecephys_sessions/4001"
        assert sorted(p.name for p in released.glob("*.nwb")) == ["ecephys_session_4001.nwb", "lfp_probe_4101.nwb", "lfp_probe_4102.nwb"]
        probes = pd.read_csv(root / "release_manifest/0.1.0/demo/project_metadata/probes.csv")
        assert probes["file_path"].tolist() == ["ecephys_sessions/4001/lfp_probe_4101.nwb", "ecephys_sessions/4001/lfp_probe_4102.nwb"]
        assert probes["file_id"].tolist() == [file_id("ecephys_lfp_nwb", 4101), file_id("ecephys_lfp_nwb", 4102)]
        behavior = pd.read_csv(root / "release_manifest/0.1.0/demo/project_metadata/behavior_session_table.csv")
        linked = behavior.set_index("behavior_session_id").loc[3003]
        assert linked["ecephys_session_id"] == 4001 and pd.isna(linked["file_id"]) and pd.isna(linked["file_path"])

    parser = argparse.ArgumentParser()
    add_release_commands(parser.add_subparsers(dest="command"))
    for layout in ("allen", "dandi"):
        args = parser.parse_args(["release", "--project", "demo", "--version", "0.1.0", "--layout", layout,
                                  "--dest", str(home / f"public-{layout}"), "--storage-root", str(root)])
        err = io.StringIO()
        with redirect_stdout(io.StringIO()), redirect_stderr(err):
            assert args.func(args) == 0
        # not a terminal: plain progress lines, the plan first and the totals last
        n_files = 7 + len(am.RELEASE_ASSETS)
        lines = err.getvalue().splitlines()
        if layout == "dandi":  # this LIMS has no project 'demo' with publication metadata: said once, then progress
            assert lines.pop(0) == "note: no dandiset.yaml written: no project with code 'demo' in LIMS", lines
        assert lines[0].startswith("release demo 0.1.0: 7 files, "), lines
        assert re.fullmatch(r"release demo 0\.1\.0: done, 7 files, [\d.,]+ KB in \d\d:\d\d \(.*/s\)", lines[-1]), lines
        report = verify_release(home / f"public-{layout}")
        assert report.ok and report.files_checked == n_files, report.describe()

    # The release report: every released session (found through the staging records), with its QC thumbnails when
    # its qc_report partition has figures (here: behavior session 3001), the tables, file kinds and the changelog.
    qc_dir = root / "behavior_session_qc_report" / "3001"
    pic = figures.fi_curve(np.array([1.0, 2.0, 3.0]), np.array([0.0, 4.0, 9.0]), qc_dir / "fi_curve.png")
    write_index(qc_dir, "behavior_session", "3001", {"behavior_session 3001": [pic]})
    out = home / "report.html"
    args = parser.parse_args(["report", str(home / "public-allen"), "--storage-root", str(root), "-o", str(out)])
    with redirect_stdout(io.StringIO()) as said:
        assert args.func(args) == 0
    assert "4 released sessions (1 with QC figures)" in said.getvalue()
    page = out.read_text()
    released = {("ophys_session", "1001"), ("ophys_session", "1002"), ("behavior_session", "3001"), ("ecephys_session", "4001")}
    assert set(re.findall(r'class="session" id="(\w+)-(\d+)"', page)) == released
    assert page.count("data:image/png;base64,") == 1 and page.count("no QC figures") == 3
    for table, rows in (("behavior_session_table", 3), ("ophys_experiment_table", 3), ("ecephys_session_table", 1)):
        assert f"<td>{table}</td><td>{rows}</td>" in page
    assert "<td>probes</td><td>2</td>" in page and "<td>all</td><td>7</td>" in page
    assert "First version" in page

    # A second version: the report compares it with the previous one.
    args = parser.parse_args(["release", "--project", "demo", "--version", "0.2.0", "--layout", "allen",
                              "--dest", str(home / "public-allen"), "--storage-root", str(root), "--no-progress"])
    err = io.StringIO()
    with redirect_stdout(io.StringIO()), redirect_stderr(err):
        assert args.func(args) == 0
    assert err.getvalue() == ""
    args = parser.parse_args(["report", str(home / "public-allen"), "--storage-root", str(root), "-o", str(out)])
    with redirect_stdout(io.StringIO()):
        assert args.func(args) == 0
    page = out.read_text()
    assert "Changes since 0.1.0" in page and "Changes from 0.1.0 to 0.2.0: the two manifests are equivalent" in page
    assert sorted(p.name for p in (home / "public-allen/demo/ecephys_sessions/4001").glob("lfp_probe_*.nwb")) == [
        "lfp_probe_4101.nwb", "lfp_probe_4102.nwb"]
    dandi_files = sorted(p.relative_to(home / "public-dandi/demo").as_posix() for p in (home / "public-dandi/demo").glob("sub-*/*.nwb"))
    assert len(dandi_files) == 7 and all(Path(f).parts[0].startswith("sub-") for f in dandi_files)
    lfp = [f for f in dandi_files if "_probe-" in f]
    assert [Path(f).name.split("_ses-")[1] for f in lfp] == ["4001_probe-4101_ecephys.nwb", "4001_probe-4102_ecephys.nwb"]
    assert all(dandi_path_problems(f) == [] for f in dandi_files)
