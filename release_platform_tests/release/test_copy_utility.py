"""The copy utility module (AllenSDK §9 inputs): hex digests, verified directory copies, chmod, refusals."""

from __future__ import annotations

import hashlib
import json
import os
import stat

import pytest

from release_platform.errors import InputError
from release_platform.modules import copy_utility as cu
from release_platform.modules._harness import main_for, validate_inputs
from release_platform_tests.release import write_file


def _inputs(**kw):
    return validate_inputs(cu.Inputs, kw)


def test_files_are_copied_with_hex_digests_and_chmod(tmp_path):
    a = write_file(tmp_path / "src/a.nwb", 70_000, seed=1)
    out = cu.run(_inputs(files=[{"source": str(a), "destination": str(tmp_path / "dst/x/y/a.nwb"), "key": "nwb"}], chmod=750))
    rec = out["files"][0]
    assert rec["source_hash"] == hashlib.sha256(a.read_bytes()).hexdigest() == rec["destination_hash"]
    assert rec["comparison_passed"] and rec["copied"] and rec["key"] == "nwb" and rec["size"] == 70_000
    assert rec["blake2b"] == hashlib.blake2b(a.read_bytes()).hexdigest() and rec["dandi_etag"].endswith("-1")
    assert stat.S_IMODE(os.stat(tmp_path / "dst/x/y/a.nwb").st_mode) == 0o750
    assert stat.S_IMODE(os.stat(tmp_path / "dst/x").st_mode) == 0o750  # created parents too
    again = cu.run(_inputs(files=[{"source": str(a), "destination": str(tmp_path / "dst/x/y/a.nwb")}]))
    assert again["files"][0]["copied"] is False  # same size and digest: not rewritten


@pytest.mark.parametrize("hasher", ["sha3_256", "md5", "blake2b", "dandi-etag"])
def test_other_hashers(tmp_path, hasher):
    a = write_file(tmp_path / "a.bin", 5000, seed=2)
    rec = cu.run(_inputs(files=[{"source": str(a), "destination": str(tmp_path / "b.bin")}], hasher_key=hasher))["files"][0]
    if hasher == "dandi-etag":
        assert rec["source_hash"] == rec["dandi_etag"] == rec["destination_hash"]
    else:
        assert rec["source_hash"] == hashlib.new(hasher, a.read_bytes()).hexdigest() == rec["destination_hash"]


def test_no_hasher_records_no_hashes(tmp_path):
    a = write_file(tmp_path / "a.bin", 10)
    rec = cu.run(_inputs(files=[{"source": str(a), "destination": str(tmp_path / "b.bin")}], hasher_key=None))["files"][0]
    assert rec["source_hash"] is None and rec["destination_hash"] is None and (tmp_path / "b.bin").read_bytes() == a.read_bytes()


def test_directories_are_copied_into_the_destination_and_compared_recursively(tmp_path):
    write_file(tmp_path / "tree/a.bin", 100, seed=1)
    write_file(tmp_path / "tree/deep/er/b.bin", 200, seed=2)
    out = cu.run(_inputs(files=[{"source": str(tmp_path / "tree"), "destination": str(tmp_path / "copy")}], chmod=775,
                         allow_group_write=True))
    rec = out["files"][0]
    assert rec["kind"] == "directory" and rec["comparison_passed"] and rec["problems"] == []
    assert (tmp_path / "copy/deep/er/b.bin").is_file() and not (tmp_path / "copy/tree").exists()  # no rsync nesting
    assert rec["source_hash"] == rec["destination_hash"] and len(rec["files"]) == 2
    assert stat.S_IMODE(os.stat(tmp_path / "copy/deep").st_mode) == 0o775


def test_directory_with_an_extra_destination_file_fails_the_comparison(tmp_path):
    write_file(tmp_path / "tree/a.bin", 100, seed=1)
    write_file(tmp_path / "copy/old.bin", 5)
    spec = [{"source": str(tmp_path / "tree"), "destination": str(tmp_path / "copy")}]
    with pytest.raises(InputError, match="old.bin: only in the destination"):
        cu.run(_inputs(files=spec))
    with pytest.warns(UserWarning, match="differs from its source"):
        rec = cu.run(_inputs(files=spec, raise_if_comparison_fails=False))["files"][0]
    assert rec["comparison_passed"] is False


def test_refusals(tmp_path):
    a = write_file(tmp_path / "a.bin", 10)
    with pytest.raises(InputError, match=r"'\.\.'"):
        cu.run(_inputs(files=[{"source": str(a), "destination": str(tmp_path / "x/../b.bin")}]))
    with pytest.raises(InputError, match="does not exist"):
        cu.run(_inputs(files=[{"source": str(tmp_path / "nope"), "destination": str(tmp_path / "b.bin")}]))
    (tmp_path / "dir").mkdir()
    with pytest.raises(InputError, match="not a directory"):
        cu.run(_inputs(files=[{"source": str(a), "destination": str(tmp_path / "dir")}]))
    with pytest.raises(InputError, match="make_parent_dirs"):
        cu.run(_inputs(files=[{"source": str(a), "destination": str(tmp_path / "new/b.bin")}], make_parent_dirs=False))
    with pytest.raises(InputError, match="chmod"):
        _inputs(files=[], chmod=789)


def test_standalone_entry_point(tmp_path):
    a = write_file(tmp_path / "a.bin", 1000)
    (tmp_path / "in.json").write_text(json.dumps({"files": [{"source": str(a), "destination": str(tmp_path / "out/a.bin")}]}))
    status = main_for(cu.Inputs, cu.run, "copy", argv=["--input_json", str(tmp_path / "in.json"), "--output_json", str(tmp_path / "out.json")])
    assert status == 0
    rec = json.loads((tmp_path / "out.json").read_text())["files"][0]
    assert isinstance(rec["source_hash"], str) and rec["source_hash"] == rec["destination_hash"]


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_default_mode_is_644_and_the_source_mode_is_never_touched(tmp_path):
    a = write_file(tmp_path / "src/a.nwb", 1000, seed=3)
    os.chmod(a, 0o600)
    out = cu.run(_inputs(files=[{"source": str(a), "destination": str(tmp_path / "dst/sub/a.nwb")}]))
    assert out["files"][0]["copied"]
    assert _mode(tmp_path / "dst/sub/a.nwb") == 0o644  # not decimal 775 read as a mode (octal 1407, -r----rwt)
    assert _mode(tmp_path / "dst/sub") == 0o755  # created directories: readable ones searchable
    assert _mode(a) == 0o600
    assert cu.Inputs.model_fields["chmod"].default == 644 and _inputs(files=[]).chmod == 0o644


@pytest.mark.parametrize("chmod, message", [
    (775, "chmod 775 lets group or others write"), (666, "chmod 666 lets group or others write"),
    (1407, "setuid, setgid or sticky"), (4755, "setuid, setgid or sticky"), (789, "not a file mode in octal digits"),
    ("rwx", "not a file mode in octal digits"), (44, "not a file mode in octal digits"), (244, "owner read"),
])
def test_unsafe_or_malformed_modes_are_refused(tmp_path, chmod, message):
    with pytest.raises(InputError, match=message):
        _inputs(files=[], chmod=chmod)


def test_group_write_needs_the_explicit_flag(tmp_path):
    a = write_file(tmp_path / "a.bin", 10)
    cu.run(_inputs(files=[{"source": str(a), "destination": str(tmp_path / "b.bin")}], chmod="0664", allow_group_write=True))
    assert _mode(tmp_path / "b.bin") == 0o664
    assert _inputs(files=[], chmod="0o750").chmod == 0o750


def test_source_equal_to_destination_is_refused_and_left_alone(tmp_path):
    a = write_file(tmp_path / "a.bin", 100)
    os.chmod(a, 0o600)
    before = a.read_bytes()
    with pytest.raises(InputError, match="is the source itself"):
        cu.run(_inputs(files=[{"source": str(a), "destination": str(a)}], chmod=644))
    os.link(a, tmp_path / "hard.bin")  # a hard link is the same file too
    with pytest.raises(InputError, match="is the source itself"):
        cu.run(_inputs(files=[{"source": str(a), "destination": str(tmp_path / "hard.bin")}]))
    assert _mode(a) == 0o600 and a.read_bytes() == before


def test_two_entries_with_one_destination_are_refused(tmp_path):
    a, b = write_file(tmp_path / "a.bin", 10, seed=1), write_file(tmp_path / "b.bin", 10, seed=2)
    dest = tmp_path / "out/x.bin"
    with pytest.raises(InputError, match=r"files\[0\] and files\[1\] both write"):
        cu.run(_inputs(files=[{"source": str(a), "destination": str(dest)},
                              {"source": str(b), "destination": str(tmp_path / "out/./x.bin")}]))
    assert not dest.exists()
    # an entry writing over a file another entry reads is refused too
    with pytest.raises(InputError, match=r"files\[0\] writes .*b\.bin, which files\[1\] reads"):
        cu.run(_inputs(files=[{"source": str(a), "destination": str(b)}, {"source": str(b), "destination": str(dest)}]))
    assert not dest.exists() and b.read_bytes() == write_file(tmp_path / "c.bin", 10, seed=2).read_bytes()
    write_file(tmp_path / "tree/x.bin", 10, seed=3)  # a directory copy and a file copy into it
    with pytest.raises(InputError, match="write into each other's destination"):
        cu.run(_inputs(files=[{"source": str(tmp_path / "tree"), "destination": str(tmp_path / "out")},
                              {"source": str(a), "destination": str(dest)}]))
    assert not (tmp_path / "out").exists()


def test_directory_copy_only_sets_the_mode_of_directories_it_created(tmp_path):
    write_file(tmp_path / "tree/deep/a.bin", 10)
    (tmp_path / "copy/deep").mkdir(parents=True)
    os.chmod(tmp_path / "copy/deep", 0o700)
    cu.run(_inputs(files=[{"source": str(tmp_path / "tree"), "destination": str(tmp_path / "copy")}], chmod=640))
    assert _mode(tmp_path / "copy/deep") == 0o700  # existing directory left alone
    assert _mode(tmp_path / "copy/deep/a.bin") == 0o640
    with pytest.raises(InputError, match="inside the source"):
        cu.run(_inputs(files=[{"source": str(tmp_path / "tree"), "destination": str(tmp_path / "tree/deep/again")}]))
