"""Atomic writes: per-writer temporary names, the writer lock, free-space refusal and a full disk in HDF5 writers."""

from __future__ import annotations

import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from release_platform import atomic
from release_platform.atomic import DiskFullError, WriterBusyError, WriterLock
from release_platform.ophys.io import read_traces, write_traces
from release_platform_tests.disk import small_tmpfs  # noqa: F401 - fixture


def test_temp_names_are_unique_per_writer_and_name_the_pid():
    a, b = atomic.temp_name("dff.h5"), atomic.temp_name("dff.h5")
    assert a != b and a.endswith(".inprogress")
    assert atomic.parse_temp_name(a) == ("dff.h5", os.getpid()) == atomic.parse_temp_name(b)
    assert atomic.parse_temp_name("dff.h5.inprogress") is None and atomic.is_temp_name("dff.h5.inprogress")


def test_atomic_path_removes_only_its_own_temp_file(tmp_path):
    final = tmp_path / "t.txt"
    other = tmp_path / f"t.txt.{os.getppid()}-00000000.inprogress"
    other.write_text("another writer's")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic.atomic_path(final) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == [other.name]
    with atomic.atomic_path(final) as tmp:
        tmp.write_text("whole")
    assert final.read_text() == "whole" and other.read_text() == "another writer's"


def test_writer_lock_names_the_holding_pid_and_goes_with_its_process(tmp_path):
    lock_file = tmp_path / "dest.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from release_platform.atomic import WriterLock; "
         "WriterLock(sys.argv[1], dest='x', what='release').acquire(); print('held', flush=True); sys.stdin.read()",
         str(lock_file)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(WriterBusyError) as exc:
            WriterLock(lock_file, dest=tmp_path / "rel", what="release").acquire()
        assert str(exc.value).startswith(f"release {tmp_path / 'rel'} is being written by pid {holder.pid}")
    finally:
        holder.stdin.close()
        holder.wait(30)
    with WriterLock(lock_file, dest=tmp_path / "rel", what="release") as lock:
        assert lock.held


def test_traces_refused_in_one_line_when_the_disk_is_too_small(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic, "free_bytes", lambda path: 100_000)
    out = tmp_path / "plane" / "dff.h5"
    with pytest.raises(DiskFullError) as exc:
        write_traces(out, np.zeros((10, 20_000)), list(range(10)), entity="ophys_experiment 1101")
    msg = str(exc.value)
    assert "\n" not in msg
    # the directory does not exist yet: the free space is that of its nearest existing parent
    assert msg == (f"ophys_experiment 1101: {out}: not enough disk space for dff.h5: needs about 1.7 MB, "
                   f"100.0 KB free in {out.parent.parent}")
    assert not out.parent.exists()


def test_traces_on_a_real_full_disk_fail_cleanly_in_a_child_process(small_tmpfs, monkeypatch):
    """5 MB of traces on a 3 MB tmpfs, the free-space check fooled (10 MB reported): the write runs in a child process
    because the disk looks tight, HDF5 hits ENOSPC there, and this process gets one clean error and an empty disk."""
    monkeypatch.setattr(atomic, "free_bytes", lambda path: 10_000_000)
    traces = np.random.default_rng(0).normal(size=(10, 62_500))  # 5 MB, incompressible
    out = small_tmpfs / "plane" / "roi_traces.h5"
    with pytest.raises(DiskFullError) as exc:
        write_traces(out, traces, list(range(10)), entity="ophys_experiment 1101")
    msg = str(exc.value)
    assert "\n" not in msg and ", filename =" not in msg
    assert msg.startswith(f"ophys_experiment 1101: {out}: disk full while writing roi_traces.h5")
    assert list(out.parent.iterdir()) == []
    # the same call with room writes the file and reads back exactly
    small = traces[:, :10_000]
    write_traces(out, small, list(range(10)))
    np.testing.assert_array_equal(read_traces(out).traces, small)
    with h5py.File(out, "r") as fh:
        assert fh["data"].shape == (10, 10_000)


def test_a_write_runs_in_this_process_only_with_room_to_spare(monkeypatch):
    monkeypatch.delenv("RELEASE_PLATFORM_WRITER_PROCESS", raising=False)
    reserve, factor = atomic.ISOLATE_RESERVE_BYTES, atomic.ISOLATE_FACTOR
    size = 200 << 20
    assert not atomic.should_isolate(size, factor * size + reserve)
    assert atomic.should_isolate(size, factor * size + reserve - 1)
    assert atomic.should_isolate(1, reserve - 1)  # a tight disk isolates even a tiny write
    # the worst case counts when it exceeds the factor times the estimate (a sample that compressed too well)
    assert not atomic.should_isolate(size, factor * size + reserve, worst_bytes=factor * size)
    assert atomic.should_isolate(size, factor * size + reserve, worst_bytes=factor * size + 1)
    assert atomic.should_isolate(size, 10 * reserve, isolate=True)
    assert not atomic.should_isolate(size, 0, isolate=False)
    monkeypatch.setenv("RELEASE_PLATFORM_WRITER_PROCESS", "always")
    assert atomic.should_isolate(size, 10 * reserve)
    monkeypatch.setenv("RELEASE_PLATFORM_WRITER_PROCESS", "never")
    assert not atomic.should_isolate(size, 0)


def test_traces_with_room_to_spare_are_written_in_this_process(tmp_path, monkeypatch):
    monkeypatch.delenv("RELEASE_PLATFORM_WRITER_PROCESS", raising=False)
    children = []
    monkeypatch.setattr(atomic, "run_in_child", lambda fn, *, what: children.append(what) or fn())
    traces = np.random.default_rng(0).normal(size=(10, 1000))
    monkeypatch.setattr(atomic, "free_bytes", lambda path: atomic.ISOLATE_RESERVE_BYTES + (1 << 30))
    write_traces(tmp_path / "roomy.h5", traces, list(range(10)))
    monkeypatch.setattr(atomic, "free_bytes", lambda path: atomic.ISOLATE_RESERVE_BYTES - 1)
    write_traces(tmp_path / "tight.h5", traces, list(range(10)))
    assert children == ["tight.h5"]
    np.testing.assert_array_equal(read_traces(tmp_path / "roomy.h5").traces, read_traces(tmp_path / "tight.h5").traces)


# --- digests recorded at commit ---------------------------------------------------------------------------------


def _xattrs_supported(directory) -> bool:
    probe = directory / "xattr-probe"
    probe.write_bytes(b"")
    try:
        os.setxattr(probe, "user.probe", b"1")
        return True
    except OSError:
        return False
    finally:
        probe.unlink()


@pytest.fixture
def xattr_dir(tmp_path):
    if not _xattrs_supported(tmp_path):
        pytest.skip("the test directory's filesystem has no user extended attributes")
    return tmp_path


def _reference_sha256(path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("n_bytes", [0, 1, (8 << 20) - 1, 8 << 20, (8 << 20) + 12345])
def test_sha256_file_equals_hashlib_on_random_content(tmp_path, n_bytes):
    path = tmp_path / "f.bin"
    path.write_bytes(np.random.default_rng(n_bytes).integers(0, 256, n_bytes, dtype=np.uint8).tobytes())
    assert atomic.sha256_file(path) == _reference_sha256(path)
    assert atomic.sha256_file(path, block_size=4097) == _reference_sha256(path)


def test_digest_recorded_at_commit_is_the_files_sha256_and_is_taken_without_reading(xattr_dir, monkeypatch):
    final = xattr_dir / "traces.h5"
    write_traces(final, np.random.default_rng(1).normal(size=(7, 300)), [f"r{i}" for i in range(7)])  # digest=True
    recorded = atomic.recorded_sha256(final)
    assert recorded == _reference_sha256(final)
    assert not any(atomic.is_temp_name(p.name) for p in xattr_dir.iterdir())

    def no_read(*args, **kwargs):
        raise AssertionError("the file was hashed again")

    monkeypatch.setattr(atomic, "_sha256_fd", no_read)
    assert atomic.file_sha256(final) == recorded


def test_atomic_path_records_a_digest_only_when_asked(xattr_dir):
    with atomic.atomic_path(xattr_dir / "plain.txt") as tmp:
        tmp.write_text("no digest")
    assert atomic.recorded_sha256(xattr_dir / "plain.txt") is None
    with atomic.atomic_path(xattr_dir / "asked.txt", digest=True) as tmp:
        tmp.write_text("with digest")
    assert atomic.recorded_sha256(xattr_dir / "asked.txt") == _reference_sha256(xattr_dir / "asked.txt")


def _committed(directory, content: bytes):
    path = directory / "input.bin"
    with atomic.atomic_path(path, digest=True) as tmp:
        tmp.write_bytes(content)
    assert atomic.recorded_sha256(path) == _reference_sha256(path)
    return path


def test_a_rewritten_file_of_the_same_size_and_time_is_rehashed_when_its_inode_changed(xattr_dir):
    path = _committed(xattr_dir, b"a" * 1000)
    st = path.stat()
    replacement = xattr_dir / "replacement.bin"
    replacement.write_bytes(b"b" * 1000)
    os.utime(replacement, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.setxattr(replacement, atomic.DIGEST_XATTR, os.getxattr(path, atomic.DIGEST_XATTR))  # a copy with its xattrs
    os.replace(replacement, path)
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns
    assert path.stat().st_ino != st.st_ino
    assert atomic.recorded_sha256(path) is None
    assert atomic.file_sha256(path) == _reference_sha256(path) == _reference_sha256_bytes(b"b" * 1000)


def _reference_sha256_bytes(content: bytes) -> str:
    import hashlib

    return hashlib.sha256(content).hexdigest()


def test_a_file_changed_in_place_is_rehashed(xattr_dir):
    # same size, new modification time
    path = _committed(xattr_dir, b"a" * 1000)
    with open(path, "r+b") as fh:
        fh.write(b"c")
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert atomic.recorded_sha256(path) is None
    assert atomic.file_sha256(path) == _reference_sha256_bytes(b"c" + b"a" * 999)


def test_a_file_changed_in_size_with_its_time_restored_is_rehashed(xattr_dir):
    path = _committed(xattr_dir, b"a" * 1000)
    st = path.stat()
    with open(path, "ab") as fh:
        fh.write(b"tail")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_mtime_ns == st.st_mtime_ns and path.stat().st_ino == st.st_ino
    assert atomic.recorded_sha256(path) is None
    assert atomic.file_sha256(path) == _reference_sha256_bytes(b"a" * 1000 + b"tail")


def test_a_touched_file_is_rehashed_and_a_damaged_record_is_ignored(xattr_dir):
    path = _committed(xattr_dir, b"x" * 10)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    assert atomic.recorded_sha256(path) is None
    path = _committed(xattr_dir, b"y" * 10)
    st = path.stat()
    signature = f'"size": {st.st_size}, "mtime_ns": {st.st_mtime_ns}, "ino": {st.st_ino}'
    for damaged in (b"not json", b"{}", f'{{"sha256": 5, {signature}}}'.encode(),
                    f'{{"sha256": "{"z" * 64}", {signature}}}'.encode(), f'{{"sha256": "abc", {signature}}}'.encode()):
        os.setxattr(path, atomic.DIGEST_XATTR, damaged)
        assert atomic.recorded_sha256(path) is None
        assert atomic.file_sha256(path) == _reference_sha256_bytes(b"y" * 10)


def test_no_extended_attributes_means_hashing(tmp_path, monkeypatch):
    def unsupported(*args, **kwargs):
        raise OSError(95, "Operation not supported")

    monkeypatch.setattr(os, "setxattr", unsupported)
    path = tmp_path / "f.bin"
    with atomic.atomic_path(path, digest=True) as tmp:
        tmp.write_bytes(b"content")
    monkeypatch.setattr(os, "getxattr", unsupported)
    assert atomic.recorded_sha256(path) is None
    assert atomic.file_sha256(path) == _reference_sha256_bytes(b"content")


def test_digest_is_recorded_after_a_write_in_a_child_process(xattr_dir):
    final = xattr_dir / "child.h5"

    def write(tmp):
        with h5py.File(tmp, "w") as fh:
            fh["x"] = np.arange(1000)

    atomic.atomic_write(final, write, expected_bytes=1 << 16, isolate=True, digest=True)
    assert atomic.recorded_sha256(final) == _reference_sha256(final)
