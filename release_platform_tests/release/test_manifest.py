"""The manifest: AllenSDK cloud-cache rules (§11.1), semver file names, canonical bytes, local path rule (§11.2)."""

from __future__ import annotations

import copy
import json

import pytest

from release_platform.errors import InputError
from release_platform.release.digests import digest_bytes
from release_platform.release.manifest import (
    FileEntry,
    build_manifest,
    file_url,
    latest_manifest,
    load_manifest,
    local_path,
    manifest_bytes,
    manifest_filename,
    parse_semver,
    url_relative_path,
    validate_manifest,
    version_from_filename,
)


def _manifest():
    base = "https://p-data.s3.amazonaws.com"
    return build_manifest(
        "p", "1.0.0",
        data_files={12: FileEntry(file_url(base, "p/behavior_sessions/1/behavior_session_1.nwb"), digest_bytes(b"a")),
                    3: FileEntry(file_url(base, "p/sub-1/sub-1_ses-2_behavior+ophys.nwb"), digest_bytes(b"b"))},
        metadata_files={"behavior_session_table": FileEntry(file_url(base, "p/project_metadata/behavior_session_table.csv"),
                                                            digest_bytes(b"c"))},
    )


def test_a_built_manifest_is_valid_and_canonical():
    m = _manifest()
    assert validate_manifest(m, filename="p_manifest_v1.0.0.json") == []
    assert list(m["data_files"]) == ["3", "12"] and m["metadata_file_id_column_name"] == "file_id"
    entry = m["data_files"]["12"]
    assert entry["file_hash"] == digest_bytes(b"a").blake2b and len(entry["file_hash"]) == 128
    assert entry["sha256"] == digest_bytes(b"a").sha256 and entry["size"] == 1 and entry["dandi_etag"].endswith("-1")
    assert all(isinstance(entry[k], str) for k in ("url", "version_id", "file_hash"))
    assert manifest_bytes(m) == manifest_bytes(json.loads(manifest_bytes(m)))
    assert b"time" not in manifest_bytes(m)


@pytest.mark.parametrize("mutate, message", [
    (lambda m: m.pop("project_name"), "missing required key 'project_name'"),
    (lambda m: m.pop("data_pipeline"), "missing required key 'data_pipeline'"),
    (lambda m: m.pop("metadata_file_id_column_name"), "missing required key"),
    (lambda m: m.update(manifest_version="1.0"), "not a semantic version"),
    (lambda m: m["data_files"]["3"].update(version_id=5), "version_id must be a string"),
    (lambda m: m["metadata_files"]["behavior_session_table"].update(url=None), "url must be a string"),
    (lambda m: m["data_files"]["3"].update(file_hash="abc"), "not a BLAKE2b"),
    (lambda m: m["data_files"]["3"].update(url="https://x/other/a.nwb"), "not the project name"),
    (lambda m: m["data_files"].update(x=m["data_files"]["3"]), "file ids"),
    (lambda m: m.update(data_pipeline=[{"name": "a"}]), "data_pipeline"),
])
def test_rule_violations_are_reported(mutate, message):
    m = copy.deepcopy(_manifest())
    mutate(m)
    assert any(message in p for p in validate_manifest(m)), validate_manifest(m)


def test_file_name_must_carry_the_version(tmp_path):
    m = _manifest()
    path = tmp_path / "p_manifest_v2.0.0.json"
    path.write_bytes(manifest_bytes(m))
    with pytest.raises(InputError, match="does not carry manifest_version"):
        load_manifest(path)
    good = tmp_path / manifest_filename("p", "1.0.0")
    good.write_bytes(manifest_bytes(m))
    assert load_manifest(good) == m


def test_semver_order_and_latest():
    versions = ["1.0.0", "1.0.0-rc.1", "1.0.0-alpha", "0.9.10", "1.10.0", "1.2.0"]
    assert sorted(versions, key=parse_semver) == ["0.9.10", "1.0.0-alpha", "1.0.0-rc.1", "1.0.0", "1.2.0", "1.10.0"]
    assert version_from_filename("my_vbo_manifest_v1.2.3.json") == "1.2.3"
    assert latest_manifest(["p_manifest_v1.2.0.json", "p_manifest_v1.10.0.json", "notes.json"]).name == "p_manifest_v1.10.0.json"
    for bad in ("1", "01.0.0", "1.0.0.0", "v1.0.0"):
        with pytest.raises(InputError):
            parse_semver(bad)


def test_local_path_rule(tmp_path):
    m = _manifest()
    url = m["data_files"]["12"]["url"]
    assert url_relative_path(url) == "behavior_sessions/1/behavior_session_1.nwb"
    assert local_path(m, url, tmp_path) == tmp_path / "p-1.0.0" / "behavior_sessions/1/behavior_session_1.nwb"
    assert local_path(m, url, tmp_path, static_project_dir=True) == tmp_path / "p" / "behavior_sessions/1/behavior_session_1.nwb"
    plus = m["data_files"]["3"]["url"]
    assert url_relative_path(plus) == "sub-1/sub-1_ses-2_behavior+ophys.nwb"
