"""Releases built from hand-built tables naming real files: verify clean, detect tampering, re-run for free,
refuse unsafe paths, prune and changelog across versions, and the ``release`` / ``verify`` commands."""

from __future__ import annotations

import argparse
import io
import json
import os
import stat
from contextlib import redirect_stdout

import pandas as pd
import pytest

from release_platform.errors import InputError
from release_platform.metadata.io import write_parquet
from release_platform.release.build import discover_tables, make_release, stage_files
from release_platform.release.commands import add_release_commands
from release_platform.release.digests import digest_file
from release_platform.release.layouts import dandi_path_problems
from release_platform.release.manifest import load_manifest, local_path, url_relative_path, validate_manifest
from release_platform.release.verify import verify_release
from release_platform_tests.release import flip_byte, tree, world, write_file


@pytest.fixture
def w(tmp_path):
    return world(tmp_path / "storage")


def _release(w, dest, version="1.0.0", layout="allen", **kw):
    return make_release(dest, "vbo", version, layout=layout, frames=w.frames, storage_root=w.storage, **kw)


@pytest.mark.parametrize("layout", ["allen", "dandi"])
def test_release_verifies_clean_and_follows_the_cloud_cache_rules(w, tmp_path, layout):
    result = _release(w, tmp_path / "rel", layout=layout)
    report = verify_release(tmp_path / "rel")
    assert report.ok, report.describe()
    assert report.files_checked == 4 + 4  # 4 data files + 4 tables
    manifest = load_manifest(result.manifest_path)  # parses under the rules, file name carries the version
    assert result.manifest_path.name == "vbo_manifest_v1.0.0.json" and validate_manifest(manifest) == []
    assert set(manifest["data_files"]) == {str(f) for f in w.files}
    assert set(manifest["metadata_files"]) == set(w.frames)
    for fid, entry in manifest["data_files"].items():
        released = local_path(manifest, entry["url"], tmp_path / "rel", static_project_dir=True)
        assert released.read_bytes() == w.files[int(fid)].read_bytes()  # §11.2 maps every url to its file
        assert digest_file(released).blake2b == entry["file_hash"]
        if layout == "dandi":
            assert dandi_path_problems(url_relative_path(entry["url"])) == []
    for name, entry in manifest["metadata_files"].items():
        assert local_path(manifest, entry["url"], tmp_path / "rel", static_project_dir=True).name == f"{name}.csv"


def test_released_tables_point_at_released_files(w, tmp_path):
    result = _release(w, tmp_path / "rel", layout="dandi")
    csv = pd.read_csv(result.project_dir / "project_metadata/ophys_experiment_table.csv")
    paths = csv["file_path"].tolist()
    assert paths[:2] == ["sub-m1/sub-m1_ses-101_desc-exp1011_behavior+ophys.nwb",
                         "sub-m1/sub-m1_ses-101_desc-exp1012_behavior+ophys.nwb"] and pd.isna(paths[2])
    assert str(w.storage) not in (result.project_dir / "project_metadata/behavior_session_table.csv").read_text()
    assert (result.project_dir / "sub-m-2/sub-m-2_ses-301_behavior+ecephys.nwb").is_file()


def test_rerun_copies_nothing_and_writes_an_identical_manifest(w, tmp_path):
    first = _release(w, tmp_path / "rel")
    before = tree(tmp_path / "rel" / "vbo")
    mtimes = {p: os.stat(tmp_path / "rel/vbo" / p).st_mtime_ns for p in before}
    again = _release(w, tmp_path / "rel")
    assert again.bytes_written == 0 and again.copy.files_skipped == 4 and not again.manifest_written
    assert again.metadata_written == [] and tree(tmp_path / "rel" / "vbo") == before
    assert {p: os.stat(tmp_path / "rel/vbo" / p).st_mtime_ns for p in before} == mtimes
    assert again.manifest_path.read_bytes() == first.manifest_path.read_bytes()
    # a fresh release elsewhere writes the same manifest bytes (no timestamps, sorted keys)
    other = _release(w, tmp_path / "rel2")
    assert other.manifest_path.read_bytes() == first.manifest_path.read_bytes()


def test_flipped_byte_missing_and_extra_files_are_reported_with_paths(w, tmp_path):
    _release(w, tmp_path / "rel")
    proj = tmp_path / "rel/vbo"
    flip_byte(proj / "behavior_ophys_experiments/1012/behavior_ophys_experiment_1012.nwb")
    (proj / "behavior_sessions/1/behavior_session_1.nwb").unlink()
    (proj / "stray.txt").write_text("?")
    (proj / "project_metadata/units.csv.inprogress").write_text("half")
    report = verify_release(proj)
    assert not report.ok
    assert [(p.kind, p.path) for p in report.problems] == [
        ("extra", "project_metadata/units.csv.inprogress"),
        ("extra", "stray.txt"),
        ("mismatched", "behavior_ophys_experiments/1012/behavior_ophys_experiment_1012.nwb"),
        ("missing", "behavior_sessions/1/behavior_session_1.nwb"),
    ]
    assert "file_hash" in report.by_kind("mismatched")[0].detail and "sha256" in report.by_kind("mismatched")[0].detail
    assert "behavior_ophys_experiment_1012.nwb" in report.describe()


def test_symlinked_file_in_a_release_is_reported(w, tmp_path):
    _release(w, tmp_path / "rel")
    target = tmp_path / "rel/vbo/ecephys_sessions/301/ecephys_session_301.nwb"
    copy = tmp_path / "elsewhere.nwb"
    copy.write_bytes(target.read_bytes())
    target.unlink()
    os.symlink(copy, target)
    report = verify_release(tmp_path / "rel")
    assert [(p.kind, p.path) for p in report.problems] == [("not-a-file", "ecephys_sessions/301/ecephys_session_301.nwb")]


def test_unsafe_source_paths_are_refused_before_anything_is_written(w, tmp_path):
    frames = dict(w.frames)
    exp = frames["ophys_experiment_table"].copy()
    good = exp.loc[0, "file_path"]
    exp.loc[0, "file_path"] = good.replace("/101/", "/101/../101/")
    secret = write_file(tmp_path / "secret.nwb", 10)
    os.symlink(secret, w.storage / "behavior_ophys_nwb/101/link.nwb")
    exp.loc[1, "file_path"] = str(w.storage / "behavior_ophys_nwb/101/link.nwb")
    frames["ophys_experiment_table"] = exp
    with pytest.raises(InputError) as err:
        make_release(tmp_path / "rel", "vbo", "1.0.0", frames=frames, storage_root=w.storage)
    message = str(err.value)
    assert "2 release file problem(s)" in message and "'..'" in message and "outside the source root" in message
    assert not (tmp_path / "rel").exists() or tree(tmp_path / "rel") == {}


def test_interrupted_release_resumes(w, tmp_path):
    calls = []

    def fail_on_second_file(destination, done, size):
        calls.append(destination)
        if len(set(calls)) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _release(w, tmp_path / "rel", max_workers=1, progress=fail_on_second_file)
    assert not [p for p in tree(tmp_path / "rel") if p.endswith(".inprogress")]
    assert not (tmp_path / "rel/vbo/manifests").exists()
    result = _release(w, tmp_path / "rel", max_workers=1)
    assert result.copy.files_skipped == 1 and result.copy.files_copied == 3
    assert verify_release(tmp_path / "rel").ok


def test_next_version_prunes_dropped_files_and_reports_the_changelog(w, tmp_path):
    _release(w, tmp_path / "rel")
    frames = dict(w.frames)
    beh = frames["behavior_session_table"].copy()
    beh.loc[0, ["file_id", "file_path"]] = [pd.NA, pd.NA]  # behavior session 1 no longer has a file
    frames["behavior_session_table"] = beh
    write_file(w.files[int(frames["ecephys_session_table"].loc[0, "file_id"])], 4000, seed=77)  # new content
    result = make_release(tmp_path / "rel", "vbo", "1.1.0", frames=frames, storage_root=w.storage)
    assert result.pruned == ["vbo/behavior_sessions/1/behavior_session_1.nwb"]
    assert not (tmp_path / "rel/vbo/behavior_sessions").exists()  # emptied directories go too
    assert result.previous_version == "1.0.0"
    assert dict(result.changelog.data_changes) == {
        "behavior_sessions/1/behavior_session_1.nwb": "behavior_sessions/1/behavior_session_1.nwb deleted",
        "ecephys_sessions/301/ecephys_session_301.nwb": "ecephys_sessions/301/ecephys_session_301.nwb changed",
    }
    assert [p for p, _ in result.changelog.metadata_changes] == ["project_metadata/behavior_session_table.csv"]
    assert verify_release(tmp_path / "rel").ok  # latest manifest
    assert result.copy.files_copied == 1 and result.copy.files_skipped == 2


def test_keep_stale_leaves_old_files_for_verify_to_report(w, tmp_path):
    _release(w, tmp_path / "rel")
    frames = {k: v for k, v in w.frames.items() if k != "ecephys_session_table"}
    result = make_release(tmp_path / "rel", "vbo", "2.0.0", frames=frames, storage_root=w.storage, prune=False)
    assert result.pruned == [] and any("kept" in n for n in result.notes)
    extras = {p.path for p in verify_release(tmp_path / "rel").by_kind("extra")}
    assert extras == {"ecephys_sessions/301/ecephys_session_301.nwb", "project_metadata/ecephys_session_table.csv"}


def test_tables_are_discovered_under_the_storage_root(w, tmp_path):
    write_parquet("ophys_experiment_table", w.frames["ophys_experiment_table"], w.storage / "ophys_experiment_table/ophys_experiment_table.parquet")
    w.frames["behavior_session_table"].to_csv(w.storage / "behavior_session_table.csv", index=False)  # not in an asset dir: ignored
    found = discover_tables(w.storage)
    assert found == {"ophys_experiment_table": w.storage / "ophys_experiment_table/ophys_experiment_table.parquet"}
    with pytest.raises(InputError, match="not found"):
        discover_tables(w.storage, ["units"])
    result = make_release(tmp_path / "rel", "vbo", "1.0.0", storage_root=w.storage)
    assert len(result.manifest["data_files"]) == 2 and verify_release(tmp_path / "rel").ok


def test_dandi_layout_refuses_colliding_names(w, tmp_path):
    frames = dict(w.frames)
    exp = frames["ophys_experiment_table"].copy()
    exp["mouse_id"] = pd.array(["m.1", "m_1", "m1"], dtype="string")  # both become sub-m-1 ... but different desc
    frames["ophys_experiment_table"] = exp
    beh = frames["behavior_session_table"].copy()
    beh.loc[1, ["file_id", "file_path"]] = [beh.loc[0, "file_id"] + 1, beh.loc[0, "file_path"]]
    beh["behavior_session_id"] = pd.array([1, 1], dtype="Int64")  # same session twice -> same DANDI name
    frames["behavior_session_table"] = beh
    with pytest.raises(InputError, match="would both be released as"):
        make_release(tmp_path / "rel", "vbo", "1.0.0", layout="dandi", frames=frames, storage_root=w.storage)


def test_staged_files_assemble_by_hard_link(w, tmp_path):
    stage = tmp_path / "storage" / "stage"
    staged, report = stage_files({"ophys_experiment_table": w.frames["ophys_experiment_table"]}, stage, source_roots=[w.storage])
    assert len(staged) == 2 and report.files_copied == 2
    assert json.loads((stage / "release_records.json").read_text())[0]["digests"]["sha256"] == staged[0].digests.sha256
    again, report2 = stage_files({"ophys_experiment_table": w.frames["ophys_experiment_table"]}, stage, source_roots=[w.storage])
    assert report2.bytes_copied == 0 and again == staged
    frames = {"ophys_experiment_table": w.frames["ophys_experiment_table"]}
    result = make_release(tmp_path / "rel", "vbo", "1.0.0", frames=frames, storage_root=w.storage,
                          staged={s.file_id: s for s in staged}, staged_roots={s.file_id: stage for s in staged})
    assert all(r.linked for r in result.copy.records) and result.copy.bytes_copied == 0
    released = result.project_dir / "behavior_ophys_experiments/1011/behavior_ophys_experiment_1011.nwb"
    assert os.path.samefile(released, stage / "behavior_ophys_experiments/1011/behavior_ophys_experiment_1011.nwb")
    assert verify_release(tmp_path / "rel").ok


def _cli(*argv: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="release-platform")
    add_release_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    out = io.StringIO()
    with redirect_stdout(out):
        status = args.func(args)
    return status, out.getvalue()


def test_release_and_verify_commands(w, tmp_path):
    for table, frame in w.frames.items():
        write_parquet(table, frame, w.storage / table / f"{table}.parquet")
    dest = tmp_path / "rel"
    status, out = _cli("release", "--project", "vbo", "--version", "1.0.0", "--layout", "dandi", "--dest", str(dest),
                       "--storage-root", str(w.storage), "--mode", "640", "--check")
    assert status == 0 and "OK" in out and "4 copied" in out
    assert oct(os.stat(dest / "vbo/manifests/vbo_manifest_v1.0.0.json").st_mode & 0o777) == "0o640"
    status, out = _cli("verify", str(dest))
    assert status == 0 and "OK" in out
    victim = next((dest / "vbo").glob("sub-m1/*exp1011*.nwb"))
    flip_byte(victim)
    status, out = _cli("verify", str(dest / "vbo"))
    assert status == 1 and "mismatched" in out and "sub-m1/sub-m1_ses-101_desc-exp1011_behavior+ophys.nwb" in out
    status, out = _cli("release", "--project", "vbo", "--version", "1.0.1", "--layout", "dandi", "--dest", str(dest),
                       "--storage-root", str(w.storage), "--rehash")
    assert status == 0 and "1 copied" in out  # the tampered file is restored
    status, out = _cli("changelog", str(dest / "vbo/manifests/vbo_manifest_v1.0.0.json"),
                       str(dest / "vbo/manifests/vbo_manifest_v1.0.1.json"))
    assert status == 0 and "equivalent" in out
    assert _cli("verify", str(dest))[0] == 0
    with pytest.raises(SystemExit):
        _cli("release", "--project", "vbo", "--version", "1.0.0", "--dest", str(dest), "--mode", "9z")


def _with_probe_lfp(w):
    """Add a probes table to the world: probe 3011 with an LFP NWB, probe 3012 without LFP (null file)."""
    from release_platform.metadata import file_id

    fid = file_id("ecephys_lfp_nwb", 3011)
    w.files[fid] = write_file(w.storage / "ecephys_probe_lfp_nwb" / "301" / "lfp_probe_3011.nwb", 3500, seed=3011)
    w.frames["probes"] = pd.DataFrame({
        "ecephys_probe_id": pd.array([3011, 3012], dtype="Int64"),
        "ecephys_session_id": pd.array([301, 301], dtype="Int64"),
        "has_lfp_data": [True, False],
        "file_id": pd.array([fid, None], dtype="Int64"),
        "file_path": pd.array([str(w.files[fid]), None], dtype="string"),
    })
    return fid


@pytest.mark.parametrize("layout, expected", [
    ("allen", "ecephys_sessions/301/lfp_probe_3011.nwb"),
    ("dandi", "sub-m-2/sub-m-2_ses-301_probe-3011_ecephys.nwb"),  # subject looked up in the session table
])
def test_probe_lfp_files_are_released_next_to_their_session(w, tmp_path, layout, expected):
    fid = _with_probe_lfp(w)
    staged, _ = stage_files({t: w.frames[t] for t in ("ecephys_session_table", "probes")}, tmp_path / "stage",
                            source_roots=[w.storage])
    assert sorted(s.staged for s in staged) == ["ecephys_sessions/301/ecephys_session_301.nwb", "ecephys_sessions/301/lfp_probe_3011.nwb"]
    result = _release(w, tmp_path / "rel", layout=layout)
    report = verify_release(tmp_path / "rel")
    assert report.ok and report.files_checked == 5 + 5, report.describe()
    entry = load_manifest(result.manifest_path)["data_files"][str(fid)]
    assert url_relative_path(entry["url"]) == expected
    assert (result.project_dir / expected).read_bytes() == w.files[fid].read_bytes()
    probes = pd.read_csv(result.project_dir / "project_metadata/probes.csv")
    assert probes["file_path"].tolist()[0] == expected and pd.isna(probes["file_path"].tolist()[1])
    flip_byte(result.project_dir / expected)
    assert [p.kind for p in verify_release(tmp_path / "rel").problems] == ["mismatched"]


def _touch_r(path, st) -> None:
    """Restore size-preserving tampering's timestamps, as ``touch -r`` would."""
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_rehash_repairs_a_damaged_file_whose_size_and_mtime_are_unchanged(w, tmp_path):
    _release(w, tmp_path / "rel")
    rel = "behavior_ophys_experiments/1012/behavior_ophys_experiment_1012.nwb"
    victim = tmp_path / "rel/vbo" / rel
    st = os.stat(victim)
    flip_byte(victim, offset=1234)
    _touch_r(victim, st)
    assert (os.stat(victim).st_size, os.stat(victim).st_mtime_ns, os.stat(victim).st_ino) == (st.st_size, st.st_mtime_ns, st.st_ino)
    trusted = _release(w, tmp_path / "rel")  # without --rehash the ledger's size/mtime/inode are trusted
    assert trusted.copy.files_copied == 0
    report = verify_release(tmp_path / "rel")
    assert [p.path for p in report.problems] == [rel] and report.problems[0].kind == "mismatched"
    assert "--rehash" in report.describe()
    repaired = _release(w, tmp_path / "rel", rehash=True)
    assert [r.destination for r in repaired.copy.records if r.copied] == [f"vbo/{rel}"]
    source = next(p for p in w.files.values() if p.name == "behavior_ophys_experiment_1012.nwb")
    assert victim.read_bytes() == source.read_bytes()
    assert verify_release(tmp_path / "rel").ok
    assert _release(w, tmp_path / "rel", rehash=True).copy.files_copied == 0  # nothing left to repair


def test_rehash_of_a_linked_release_refuses_a_damaged_staged_file(w, tmp_path):
    stage = tmp_path / "storage" / "stage"
    frames = {"ophys_experiment_table": w.frames["ophys_experiment_table"]}
    staged, _ = stage_files(frames, stage, source_roots=[w.storage])
    kw = dict(frames=frames, storage_root=w.storage, staged={s.file_id: s for s in staged},
              staged_roots={s.file_id: stage for s in staged})
    make_release(tmp_path / "rel", "vbo", "1.0.0", **kw)
    victim = tmp_path / "rel/vbo/behavior_ophys_experiments/1011/behavior_ophys_experiment_1011.nwb"
    st = os.stat(victim)
    flip_byte(victim)  # the released file is a hard link: the staged copy is damaged too
    _touch_r(victim, st)
    with pytest.raises(InputError, match=r"behavior_ophys_experiment_1011\.nwb.*differs from its record"):
        make_release(tmp_path / "rel", "vbo", "1.0.0", rehash=True, **kw)


def test_a_hard_linked_release_never_changes_the_staged_file_mode(w, tmp_path):
    stage = tmp_path / "storage" / "stage"
    frames = {"ophys_experiment_table": w.frames["ophys_experiment_table"]}
    staged, _ = stage_files(frames, stage, source_roots=[w.storage], mode=0o644)
    make_release(tmp_path / "rel", "vbo", "1.0.0", frames=frames, storage_root=w.storage, mode=0o640,
                 staged={s.file_id: s for s in staged}, staged_roots={s.file_id: stage for s in staged})
    staged_file = stage / "behavior_ophys_experiments/1011/behavior_ophys_experiment_1011.nwb"
    released = tmp_path / "rel/vbo/behavior_ophys_experiments/1011/behavior_ophys_experiment_1011.nwb"
    assert stat.S_IMODE(os.stat(staged_file).st_mode) == 0o644
    assert stat.S_IMODE(os.stat(released).st_mode) == 0o640
    assert verify_release(tmp_path / "rel").ok


def test_release_command_refuses_group_or_other_write_unless_asked(w, tmp_path, capsys):
    for table, frame in w.frames.items():
        write_parquet(table, frame, w.storage / table / f"{table}.parquet")
    dest = tmp_path / "rel"
    base = ["release", "--project", "vbo", "--version", "1.0.0", "--dest", str(dest), "--storage-root", str(w.storage)]
    with pytest.raises(InputError, match="mode 664 lets group or others write"):
        _cli(*base, "--mode", "664")
    assert not (dest / "vbo").exists()
    with pytest.raises(SystemExit):
        _cli(*base, "--mode", "1644")  # special bits are never valid for a released file
    status, _ = _cli(*base, "--mode", "664", "--allow-group-write")
    assert status == 0
    assert stat.S_IMODE(os.stat(dest / "vbo/manifests/vbo_manifest_v1.0.0.json").st_mode) == 0o664


def test_a_full_disk_during_a_release_is_one_error_naming_the_file(w, tmp_path, monkeypatch):
    import errno

    from release_platform.release import paths

    for table, frame in w.frames.items():
        write_parquet(table, frame, w.storage / table / f"{table}.parquet")
    real = paths.SafeRoot.write_bytes

    def full(self, relpath, data, *, mode=0o644):
        if relpath.endswith(".csv"):
            raise OSError(errno.ENOSPC, "No space left on device", str(self.file_path(relpath)))
        return real(self, relpath, data, mode=mode)

    monkeypatch.setattr(paths.SafeRoot, "write_bytes", full)
    with pytest.raises(InputError, match=r"rel/vbo/project_metadata/\w+\.csv: No space left on device"):
        _cli("release", "--project", "vbo", "--version", "1.0.0", "--dest", str(tmp_path / "rel"),
             "--storage-root", str(w.storage))
    assert not (tmp_path / "rel/vbo/manifests").exists()  # no manifest for a release that did not finish
