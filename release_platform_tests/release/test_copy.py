"""Verified copy: one read, atomic rename, 0 bytes on a re-run, resume after an interruption, path safety."""

from __future__ import annotations

import os
import stat

import pytest

from release_platform.errors import InputError
from release_platform.release.copy import CopyEntry, Ledger, compare_trees, copy_files, tree_entries
from release_platform.release.digests import digest_file
from release_platform.release.paths import SafeRoot, check_source, release_parts
from release_platform_tests.release import tree, write_file


@pytest.fixture
def src(tmp_path):
    d = tmp_path / "src"
    return {name: write_file(d / name, size, seed=i) for i, (name, size) in enumerate([("a.bin", 200_000), ("b.bin", 300_001)])}


def _entries(src):
    return [CopyEntry(str(p), f"proj/{name}", name) for name, p in src.items()]


def test_copy_digests_modes_and_skip_on_rerun(tmp_path, src):
    root = SafeRoot(tmp_path / "rel")
    ledger = Ledger(root, ".state/ledger.jsonl")
    report = copy_files(_entries(src), root, ledger=ledger, mode=0o640)
    assert report.files_copied == 2 and report.bytes_copied == sum(p.stat().st_size for p in src.values())
    for rec in report.records:
        out = tmp_path / "rel" / rec.destination
        assert out.read_bytes() == src[rec.key].read_bytes()
        assert rec.digests == digest_file(src[rec.key]) and rec.destination_digest == rec.digests.sha256
        assert stat.S_IMODE(out.stat().st_mode) == 0o640
    ledger.close()
    again = copy_files(_entries(src), root, ledger=Ledger(root, ".state/ledger.jsonl"), mode=0o640)
    assert again.bytes_copied == 0 and again.files_skipped == 2
    assert [r.digests for r in again.records] == [r.digests for r in report.records]


def test_changed_source_is_copied_again(tmp_path, src):
    root = SafeRoot(tmp_path / "rel")
    copy_files(_entries(src), root, ledger=Ledger(root, "l.jsonl"))
    write_file(src["a.bin"], 1234, seed=99)
    report = copy_files(_entries(src), root, ledger=Ledger(root, "l.jsonl"))
    assert [r.copied for r in report.records] == [True, False]
    assert (tmp_path / "rel/proj/a.bin").read_bytes() == src["a.bin"].read_bytes()


def test_rehash_adopts_identical_files_without_a_ledger(tmp_path, src):
    copy_files(_entries(src), tmp_path / "rel")  # no ledger
    report = copy_files(_entries(src), tmp_path / "rel", rehash=True)
    assert report.bytes_copied == 0 and report.files_skipped == 2


def test_interrupted_copy_leaves_no_partial_file_and_resumes(tmp_path, src):
    root = SafeRoot(tmp_path / "rel")

    def fail_in_b(destination, done, size):
        if destination.endswith("b.bin"):
            raise RuntimeError("power cut")

    with pytest.raises(RuntimeError, match="power cut"):
        copy_files(_entries(src), root, ledger=Ledger(root, "l.jsonl"), max_workers=1, progress=fail_in_b)
    files = tree(tmp_path / "rel")
    assert "proj/a.bin" in files and "proj/b.bin" not in files
    assert not [p for p in files if p.endswith(".inprogress")]
    report = copy_files(_entries(src), root, ledger=Ledger(root, "l.jsonl"), max_workers=1)
    assert [(r.key, r.copied) for r in report.records] == [("a.bin", False), ("b.bin", True)]
    assert (tmp_path / "rel/proj/b.bin").read_bytes() == src["b.bin"].read_bytes()


def test_temp_files_of_other_writers_are_left_alone(tmp_path, src):
    """A copy writes under its own temporary name and never removes (or renames) another writer's temp file."""
    (tmp_path / "rel/proj").mkdir(parents=True)
    other = f"proj/a.bin.{os.getppid()}-0badf00d.inprogress"  # a running process's temp file
    (tmp_path / "rel" / other).write_bytes(b"half a file")
    (tmp_path / "rel/proj/b.bin.inprogress").write_bytes(b"a temp file without a writer pid")
    copy_files(_entries(src), tmp_path / "rel")
    assert sorted(tree(tmp_path / "rel")) == sorted(["proj/a.bin", "proj/b.bin", other, "proj/b.bin.inprogress"])
    assert (tmp_path / "rel" / other).read_bytes() == b"half a file"
    assert (tmp_path / "rel/proj/a.bin").read_bytes() == src["a.bin"].read_bytes()


def test_torn_ledger_line_is_ignored(tmp_path, src):
    root = SafeRoot(tmp_path / "rel")
    copy_files(_entries(src), root, ledger=Ledger(root, "l.jsonl"))
    with open(tmp_path / "rel/l.jsonl", "ab") as fh:
        fh.write(b'{"destination": "proj/a.bin", "sour')
    assert len(Ledger(root, "l.jsonl")) == 2


def test_symlinked_directory_in_the_release_is_refused(tmp_path, src):
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "rel").mkdir()
    os.symlink(outside, tmp_path / "rel/proj")
    with pytest.raises(InputError, match="symlink"):
        copy_files(_entries(src), tmp_path / "rel")
    assert list(outside.iterdir()) == []


def test_symlink_at_the_final_name_is_replaced_not_followed(tmp_path, src):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (tmp_path / "rel/proj").mkdir(parents=True)
    os.symlink(victim, tmp_path / "rel/proj/a.bin")
    copy_files(_entries(src), tmp_path / "rel")
    assert victim.read_text() == "keep me"
    assert not (tmp_path / "rel/proj/a.bin").is_symlink()


@pytest.mark.parametrize("bad", ["../x", "a/../../x", "/abs", "a//b", "a/./b", "", "a\\b"])
def test_release_paths_that_could_escape_are_refused(bad):
    with pytest.raises(InputError):
        release_parts(bad)


def test_sources_with_dotdot_or_symlinks_out_of_the_root_are_refused(tmp_path):
    root = tmp_path / "storage"
    inside = write_file(root / "a" / "f.nwb", 10)
    secret = write_file(tmp_path / "secret.nwb", 10)
    os.symlink(secret, root / "a" / "link.nwb")
    assert check_source(inside, [root]) == inside
    with pytest.raises(InputError, match=r"'\.\.'"):
        check_source(f"{root}/a/../a/f.nwb", [root])
    with pytest.raises(InputError, match="outside the source root"):
        check_source(root / "a" / "link.nwb", [root])
    with pytest.raises(InputError, match="missing"):
        check_source(root / "a" / "gone.nwb", [root])


def test_two_sources_for_one_destination_are_refused(tmp_path, src):
    a, b = src.values()
    with pytest.raises(InputError, match="two sources"):
        copy_files([CopyEntry(str(a), "x"), CopyEntry(str(b), "x")], tmp_path / "rel")


def test_parallel_copy_of_many_files(tmp_path):
    files = {f"d{i % 3}/f{i}.bin": write_file(tmp_path / "src" / f"f{i}.bin", 1000 * i + 1, seed=i) for i in range(12)}
    report = copy_files([CopyEntry(str(p), rel) for rel, p in files.items()], tmp_path / "rel", max_workers=4)
    assert report.files_copied == 12
    assert all((tmp_path / "rel" / rel).read_bytes() == p.read_bytes() for rel, p in files.items())


def test_directory_trees_are_compared_by_relative_path_and_content(tmp_path):
    write_file(tmp_path / "t/a.bin", 100, seed=1)
    write_file(tmp_path / "t/sub/b.bin", 100, seed=2)
    entries = tree_entries(tmp_path / "t", "copy")
    copy_files(entries, tmp_path / "rel")
    assert compare_trees(tmp_path / "t", tmp_path / "rel/copy") == []
    write_file(tmp_path / "rel/copy/sub/b.bin", 100, seed=3)
    (tmp_path / "rel/copy/extra.txt").write_text("x")
    problems = compare_trees(tmp_path / "t", tmp_path / "rel/copy")
    assert problems[0] == "extra.txt: only in the destination" and problems[1].startswith("sub/b.bin: content differs")


def test_tree_symlink_out_of_the_tree_is_refused(tmp_path):
    write_file(tmp_path / "t/a.bin", 10)
    secret = write_file(tmp_path / "secret.bin", 10)
    os.symlink(secret, tmp_path / "t/link.bin")
    with pytest.raises(InputError, match="out of the copied tree"):
        tree_entries(tmp_path / "t", "copy")


def test_multi_block_copy_reads_ahead_and_digests_every_block_once(tmp_path, monkeypatch):
    """Blocks of 1,000 bytes (instead of DANDI parts): the read-ahead copy writes the same bytes and gives the
    digests of a plain one-read digest of the source; a source that grows while copied is refused."""
    import release_platform.release.copy as copy_module

    def small_blocks(size):
        for start in range(0, size, 1000):
            yield min(1000, size - start)

    monkeypatch.setattr(copy_module, "block_sizes", small_blocks)
    data = os.urandom(10_500)
    source = tmp_path / "src.bin"
    source.write_bytes(data)
    report = copy_files([CopyEntry(str(source), "out/src.bin")], tmp_path / "rel")
    assert (tmp_path / "rel" / "out" / "src.bin").read_bytes() == data
    assert report.records[0].digests == digest_file(source)

    real_pread = copy_module._pread_into

    def growing(fd, view, offset, path):  # the file grows once its last block has been read
        real_pread(fd, view, offset, path)
        if offset + len(view) >= len(data):
            with open(source, "ab") as fh:
                fh.write(b"x")

    monkeypatch.setattr(copy_module, "_pread_into", growing)
    with pytest.raises(InputError, match="grew"):
        copy_files([CopyEntry(str(source), "out/again.bin")], tmp_path / "rel")
    assert not (tmp_path / "rel" / "out" / "again.bin").exists()
