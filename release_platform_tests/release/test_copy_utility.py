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
    out = cu.run(_inputs(files=[{"source": str(tmp_path / "tree"), "destination": str(tmp_path / "copy")}], chmod=775))
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
