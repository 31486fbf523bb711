"""compare_manifests on hand-built manifest pairs: created, changed, deleted, renamed, equivalent."""

from __future__ import annotations

from release_platform.release.changelog import compare_manifests
from release_platform.release.digests import digest_bytes
from release_platform.release.manifest import FileEntry, build_manifest, file_url

BASE = "https://p-data.s3.amazonaws.com"


def _m(version, data: dict[int, tuple[str, bytes]], meta: dict[str, bytes] | None = None):
    return build_manifest(
        "p", version,
        data_files={fid: FileEntry(file_url(BASE, f"p/{path}"), digest_bytes(content)) for fid, (path, content) in data.items()},
        metadata_files={name: FileEntry(file_url(BASE, f"p/project_metadata/{name}.csv"), digest_bytes(c))
                        for name, c in (meta or {}).items()},
    )


OLD = _m("1.0.0", {1: ("a/1.nwb", b"one"), 2: ("a/2.nwb", b"two"), 3: ("a/3.nwb", b"three"), 4: ("a/4.nwb", b"four")},
         {"t1": b"x", "t2": b"y"})


def test_equivalent():
    log = compare_manifests(OLD, _m("1.0.1", {1: ("a/1.nwb", b"one"), 2: ("a/2.nwb", b"two"), 3: ("a/3.nwb", b"three"),
                                              4: ("a/4.nwb", b"four")}, {"t1": b"x", "t2": b"y"}))
    assert log.equivalent and "equivalent" in log.summary()


def test_each_kind_of_change():
    new = _m("1.1.0", {
        1: ("a/1.nwb", b"one"),            # unchanged
        2: ("a/2.nwb", b"TWO"),            # changed
        # 3 deleted
        4: ("b/4-moved.nwb", b"four"),     # renamed
        5: ("a/5.nwb", b"five"),           # created
    }, {"t1": b"x2", "t3": b"z"})          # t1 changed, t2 deleted, t3 created
    log = compare_manifests(OLD, new)
    assert log.data_changes == [
        ("a/2.nwb", "a/2.nwb changed"),
        ("a/3.nwb", "a/3.nwb deleted"),
        ("a/4.nwb", "a/4.nwb renamed b/4-moved.nwb"),
        ("a/5.nwb", "a/5.nwb created"),
    ]
    assert log.metadata_changes == [
        ("project_metadata/t1.csv", "project_metadata/t1.csv changed"),
        ("project_metadata/t2.csv", "project_metadata/t2.csv deleted"),
        ("project_metadata/t3.csv", "project_metadata/t3.csv created"),
    ]
    assert log.counts() == {"changed": 2, "deleted": 2, "renamed": 1, "created": 2}
    assert (log.old_version, log.new_version) == ("1.0.0", "1.1.0")
    text = log.summary()
    assert "a/4.nwb renamed b/4-moved.nwb" in text and "data files:" in text and "metadata files:" in text
    assert log.as_dict()["data_changes"][0] == ("a/2.nwb", "a/2.nwb changed")


def test_a_copy_of_an_old_file_at_a_new_path_is_not_created():
    new = _m("1.1.0", {1: ("a/1.nwb", b"one"), 2: ("a/2.nwb", b"two"), 3: ("a/3.nwb", b"three"), 4: ("a/4.nwb", b"four"),
                       9: ("c/copy-of-1.nwb", b"one")}, {"t1": b"x", "t2": b"y"})
    assert compare_manifests(OLD, new).equivalent


def test_rename_prefers_a_new_path_among_equal_contents():
    new = _m("2.0.0", {1: ("a/1.nwb", b"one"), 2: ("a/2.nwb", b"two"), 3: ("a/3.nwb", b"three"), 7: ("z/four.nwb", b"four"),
                       8: ("a/0-also-four.nwb", b"four")}, {"t1": b"x", "t2": b"y"})
    assert ("a/4.nwb", "a/4.nwb renamed a/0-also-four.nwb") in compare_manifests(OLD, new).data_changes
