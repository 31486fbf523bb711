"""Hostile releases: malicious manifests for ``verify``, an old manifest driving pruning out of the project,
and corrupt staging records."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from release_platform.errors import InputError
from release_platform.release.build import make_release, read_staged, stage_files
from release_platform.release.digests import digest_file
from release_platform.release.manifest import file_url, load_manifest, manifest_bytes
from release_platform.release.verify import verify_release
from release_platform_tests.release import world, write_file

BASE = "https://vbo-data.s3.amazonaws.com"
BEHAVIOR = "behavior_sessions/1/behavior_session_1.nwb"


@pytest.fixture
def released(tmp_path):
    w = world(tmp_path / "storage")
    result = make_release(tmp_path / "rel", "vbo", "1.0.0", frames=w.frames, storage_root=w.storage)
    return w, result


def _entry_of(path: Path, url: str) -> dict:
    d = digest_file(path)
    return {"url": url, "version_id": d.sha256[:32], "file_hash": d.blake2b, "size": d.size, "sha256": d.sha256,
            "dandi_etag": d.dandi_etag}


def _write_manifest(project_dir: Path, manifest: dict, version: str, project: str = "vbo") -> Path:
    manifest = {**manifest, "manifest_version": version}
    path = project_dir / "manifests" / f"{project}_manifest_v{version}.json"
    path.write_bytes(manifest_bytes(manifest))
    return path


@pytest.mark.parametrize("url_path", ["vbo/../outside.nwb", "vbo/%2E%2E/outside.nwb", "vbo/a/../../outside.nwb",
                                      "vbo//etc/outside.nwb", "vbo/./outside.nwb"])
def test_a_url_leaving_the_project_is_reported_and_never_read(released, tmp_path, url_path):
    w, result = released
    outside = write_file(tmp_path / "rel" / "outside.nwb", 321, seed=5)  # a real file the traversal would reach
    manifest = load_manifest(result.manifest_path)
    fid = next(iter(manifest["data_files"]))
    manifest["data_files"][fid] = _entry_of(outside, f"{BASE}/{url_path}")
    _write_manifest(result.project_dir, manifest, "1.0.1")
    report = verify_release(tmp_path / "rel")
    assert not report.ok
    bad = report.by_kind("bad-name")
    assert len(bad) == 1 and f"data_files[{fid}]" in bad[0].detail
    assert report.files_checked == 7  # the 7 well-formed entries; the outside file is never hashed
    assert not report.by_kind("missing") and not report.by_kind("mismatched")
    assert outside.read_bytes() == write_file(tmp_path / "copy.nwb", 321, seed=5).read_bytes()


def test_an_entry_listed_twice_is_reported(released, tmp_path):
    _, result = released
    manifest = load_manifest(result.manifest_path)
    first = next(iter(manifest["data_files"].values()))
    manifest["data_files"]["999"] = dict(first)  # a second file id naming the same released file
    _write_manifest(result.project_dir, manifest, "1.0.1")
    report = verify_release(tmp_path / "rel")
    assert [(p.kind, p.detail) for p in report.problems] == [("bad-name", "data_files[999]: listed twice")]


def test_a_duplicate_json_key_is_an_invalid_manifest(released, tmp_path):
    _, result = released
    text = result.manifest_path.read_text()
    manifest = json.loads(text)
    fid, entry = next(iter(manifest["data_files"].items()))
    # the same key twice: a plain JSON parser silently keeps the second entry and the first is never checked
    other = dict(entry, url=f"{BASE}/vbo/stray.nwb")
    duplicated = text.replace(f'"data_files": {{', f'"data_files": {{\n    "{fid}": {json.dumps(other)},', 1)
    assert duplicated != text
    path = result.project_dir / "manifests" / "vbo_manifest_v1.0.1.json"
    path.write_text(duplicated.replace('"manifest_version": "1.0.0"', '"manifest_version": "1.0.1"'))
    report = verify_release(tmp_path / "rel")
    assert [(p.kind, p.path) for p in report.problems] == [("invalid-manifest", "manifests/vbo_manifest_v1.0.1.json")]
    assert f"duplicate key '{fid}'" in report.problems[0].detail
    with pytest.raises(InputError, match="duplicate key"):
        load_manifest(path)


def test_a_missing_manifest_is_a_problem_not_a_crash(released, tmp_path):
    _, result = released
    report = verify_release(tmp_path / "rel", manifest="vbo_manifest_v9.9.9.json")
    assert [(p.kind, p.detail) for p in report.problems] == [("invalid-manifest", "manifest not found")]
    result.manifest_path.unlink()
    report = verify_release(tmp_path / "rel")
    assert [p.kind for p in report.problems] == ["invalid-manifest"] and report.files_checked == 0
    assert "no <project>_manifest_v<semver>.json" in report.describe()


def test_a_manifest_of_another_project_is_reported(released, tmp_path):
    _, result = released
    manifest = load_manifest(result.manifest_path)
    result.manifest_path.unlink()
    other = json.loads(json.dumps(manifest).replace("/vbo/", "/other/"))
    other["project_name"] = "other"
    _write_manifest(result.project_dir, other, "1.0.0", project="other")
    report = verify_release(result.project_dir)
    assert [p.kind for p in report.problems] == ["invalid-manifest"]
    assert "project_name 'other' differs from the directory name 'vbo'" in report.problems[0].detail
    # a URL naming another project inside a manifest of this one
    (result.project_dir / "manifests" / "other_manifest_v1.0.0.json").unlink()
    manifest["data_files"][next(iter(manifest["data_files"]))]["url"] = f"{BASE}/other/{BEHAVIOR}"
    _write_manifest(result.project_dir, manifest, "1.0.0")
    report = verify_release(result.project_dir)
    assert [p.kind for p in report.problems] == ["invalid-manifest"]
    assert "is not the project name 'vbo'" in report.problems[0].detail


def test_pruning_never_follows_an_old_manifest_out_of_the_project(released, tmp_path):
    w, result = released
    root = tmp_path / "rel"
    victims = [write_file(root / "victim.nwb", 10), write_file(tmp_path / "victim.nwb", 10),
               write_file(tmp_path / "elsewhere" / "secret.nwb", 10)]
    (result.project_dir / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    old = load_manifest(result.manifest_path)
    hostile = {"1": "vbo/../victim.nwb", "2": "vbo/%2e%2e/%2e%2e/victim.nwb", "3": "vbo/linked/secret.nwb",
               "4": "vbo//victim.nwb", "5": "vbo/manifests/vbo_manifest_v1.0.0.json"}
    template = next(iter(old["data_files"].values()))
    old["data_files"] = {k: dict(template, url=f"{BASE}/{p}") for k, p in hostile.items()}
    _write_manifest(result.project_dir, old, "0.9.0")  # an older release "listed" these
    again = make_release(root, "vbo", "1.0.1", frames=w.frames, storage_root=w.storage)
    assert again.pruned == []
    assert any("vbo/linked/secret.nwb" in n and "symlink" in n for n in again.notes)
    assert all(v.is_file() for v in victims)
    assert (result.project_dir / "manifests/vbo_manifest_v1.0.0.json").is_file()  # manifests are never pruned
    assert (result.project_dir / "manifests/vbo_manifest_v0.9.0.json").is_file()
    (result.project_dir / "linked").unlink()
    assert verify_release(root).ok


def _staged(w, tmp_path):
    stage = tmp_path / "storage" / "stage"
    frames = {"ophys_experiment_table": w.frames["ophys_experiment_table"]}
    staged, _ = stage_files(frames, stage, source_roots=[w.storage])
    return stage, frames, staged


def _corrupt(stage: Path, change) -> None:
    path = stage / "release_records.json"
    records = json.loads(path.read_text())
    change(records)
    path.write_text(json.dumps(records))


@pytest.mark.parametrize("change, message", [
    (lambda r: r[0].__setitem__("staged", "../../../outside.nwb"), r"record 0 \(file \d+\): staged path .*'\.\.' segment"),
    (lambda r: r[0].__setitem__("staged", "/etc/passwd"), "record 0 .*staged path .*must be relative"),
    (lambda r: r[0].__setitem__("staged", 5), "record 0 .*staged must be a string"),
    (lambda r: r[1].__setitem__("source", None), "record 1 .*source must be a string"),
    (lambda r: r[0]["digests"].__setitem__("size", -4), "record 0 .*size must be a non-negative integer"),
    (lambda r: r[0]["digests"].__setitem__("sha256", "zz"), "record 0 .*sha256 is not a hex digest"),
    (lambda r: r[1].__setitem__("file_id", r[0]["file_id"]), r"file \d+ is recorded twice"),
    (lambda r: r.__setitem__(0, "not a record"), "record 0: must be an object"),
])
def test_corrupt_staging_records_fail_with_one_clear_error(tmp_path, change, message):
    w = world(tmp_path / "storage")
    stage, _, _ = _staged(w, tmp_path)
    _corrupt(stage, change)
    with pytest.raises(InputError, match=message) as err:
        read_staged(stage)
    assert str(stage / "release_records.json") in str(err.value)


@pytest.mark.parametrize("text, message", [("{not json", "unreadable"), ('{"a": 1}', "must be a list"), ("", "unreadable")])
def test_unparseable_staging_records(tmp_path, text, message):
    (tmp_path / "release_records.json").write_text(text)
    with pytest.raises(InputError, match=message):
        read_staged(tmp_path)
    os.unlink(tmp_path / "release_records.json")
    with pytest.raises(InputError, match="staging records not found"):
        read_staged(tmp_path)


def test_a_staging_record_whose_digests_lie_is_caught(tmp_path):
    """Same size, wrong digest: the linked release records what the staging claimed, and verify catches it."""
    w = world(tmp_path / "storage")
    stage, frames, staged = _staged(w, tmp_path)
    _corrupt(stage, lambda r: r[0]["digests"].__setitem__("sha256", "0" * 64))
    records = read_staged(stage)
    kw = dict(frames=frames, storage_root=w.storage, staged={s.file_id: s for s in records},
              staged_roots={s.file_id: stage for s in records})
    make_release(tmp_path / "rel", "vbo", "1.0.0", **kw)
    report = verify_release(tmp_path / "rel")
    assert [p.kind for p in report.problems] == ["mismatched"] and "sha256" in report.problems[0].detail
    with pytest.raises(InputError, match="differs from its record"):
        make_release(tmp_path / "rel", "vbo", "1.0.0", rehash=True, **kw)
