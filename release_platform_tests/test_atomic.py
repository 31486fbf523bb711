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
