"""Two processes writing one release destination: unique temporary names, the writer lock, the ledger.

The writers are real processes (forked), paused at a chosen point of their copy through the progress callback, so
the interleaving that used to publish another writer's temporary file is reproduced exactly.
"""

from __future__ import annotations

import multiprocessing
import os
import stat
import subprocess
import sys

import pytest

from release_platform import atomic
from release_platform.release import copy as copy_mod
from release_platform.release.build import make_release
from release_platform.release.copy import CopyEntry, CopyMismatch, Ledger, copy_files
from release_platform.release.paths import SafeRoot
from release_platform.release.verify import verify_release
from release_platform_tests.release import tree, world, write_file

_fork = multiprocessing.get_context("fork")
WAIT = 60  # seconds a paused writer waits for its cue before giving up (a safety net, never reached when passing)


def _temps(directory):
    return sorted(p.name for p in directory.iterdir() if atomic.is_temp_name(p.name))


def _copy_paused_before_rename(src, root_dir, ready, go):
    """Writer A: copy one file, pause after its last block (before fsync, verify and rename)."""

    def pause(destination, done, size):
        if done == size:
            ready.set()
            go.wait(WAIT)

    root = SafeRoot(root_dir)
    ledger = Ledger(root, "ledger.jsonl")
    copy_files([CopyEntry(str(src), "proj/big.bin")], root, ledger=ledger, mode=0o644, max_workers=1,
               digest_threads=1, progress=pause)
    ledger.close()


def test_a_writer_publishes_its_own_file_never_another_writers_temp(tmp_path):
    src = write_file(tmp_path / "src/big.bin", 3_000_000, seed=5)
    rel = tmp_path / "rel"
    ready, go = _fork.Event(), _fork.Event()
    writer_a = _fork.Process(target=_copy_paused_before_rename, args=(src, rel, ready, go))
    writer_a.start()
    try:
        assert ready.wait(WAIT), "writer A never reached its pause"
        seen = {}

        def b_pause(destination, done, size):
            # writer B has written its temporary file (mode 0600, not yet renamed); now let A finish
            seen["b_temp"] = _temps(rel / "proj")
            go.set()
            writer_a.join(WAIT)
            seen["a_exit"] = writer_a.exitcode
            seen["final"] = (rel / "proj/big.bin").read_bytes() if (rel / "proj/big.bin").exists() else None
            seen["final_mode"] = stat.S_IMODE(os.stat(rel / "proj/big.bin").st_mode) if seen["final"] is not None else None
            seen["temps_after_a"] = _temps(rel / "proj")

        root = SafeRoot(rel)
        report = copy_files([CopyEntry(str(src), "proj/big.bin")], root, ledger=Ledger(root, "ledger.jsonl"), mode=0o644,
                            max_workers=1, digest_threads=1, progress=b_pause)
    finally:
        go.set()
        writer_a.join(WAIT)
    # two writers, two distinct temporary names, each carrying its writer's pid
    assert len(seen["b_temp"]) == 2
    assert sorted(atomic.parse_temp_name(n)[1] for n in seen["b_temp"]) == sorted([writer_a.pid, os.getpid()])
    # A finished with its own complete file, mode as asked, and left B's temporary file where it was
    assert seen["a_exit"] == 0
    assert seen["final"] == src.read_bytes() and seen["final_mode"] == 0o644
    assert [atomic.parse_temp_name(n)[1] for n in seen["temps_after_a"]] == [os.getpid()]
    # then B published its own file too; nothing is left behind
    assert report.files_copied == 1
    assert (rel / "proj/big.bin").read_bytes() == src.read_bytes() and _temps(rel / "proj") == []
    entry = Ledger(SafeRoot(rel), "ledger.jsonl").get("proj/big.bin")
    assert entry.dest_fp == copy_mod.Fingerprint.of(os.stat(rel / "proj/big.bin"))


def _release_paused(w, dest, ready, go):
    def pause(destination, done, size):
        ready.set()
        go.wait(WAIT)

    make_release(dest, "vbo", "1.0.0", frames=w.frames, storage_root=w.storage, max_workers=1, progress=pause)


def test_second_release_to_the_same_destination_fails_at_once_naming_the_writer(tmp_path):
    w = world(tmp_path / "storage")
    dest = tmp_path / "rel"
    ready, go = _fork.Event(), _fork.Event()
    first = _fork.Process(target=_release_paused, args=(w, dest, ready, go))
    first.start()
    try:
        assert ready.wait(WAIT), "the first release never started copying"
        with pytest.raises(atomic.WriterBusyError) as exc:
            make_release(dest, "vbo", "1.0.0", frames=w.frames, storage_root=w.storage)
        assert str(exc.value).startswith(f"release {dest} is being written by pid {first.pid}")
        assert exc.value.pid == first.pid
    finally:
        go.set()
        first.join(WAIT)
    assert first.exitcode == 0
    report = verify_release(dest)
    assert report.ok, report.describe()
    # the lock went with the writer: the next release runs
    again = make_release(dest, "vbo", "1.0.0", frames=w.frames, storage_root=w.storage)
    assert again.copy.files_skipped == len(w.files)


def test_a_killed_writers_temp_file_is_swept_by_the_next_release_a_live_one_is_kept(tmp_path):
    w = world(tmp_path / "storage")
    dest = tmp_path / "rel"
    make_release(dest, "vbo", "1.0.0", frames=w.frames, storage_root=w.storage)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    dead_pid = int(dead.stdout)
    assert not atomic.pid_running(dead_pid)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        proj = dest / "vbo"
        leftover = proj / f"project_metadata/x.csv.{dead_pid}-0123abcd.inprogress"
        in_flight = proj / f"project_metadata/y.csv.{live.pid}-4567cdef.inprogress"
        leftover.write_bytes(b"killed mid-write")
        in_flight.write_bytes(b"still being written")
        make_release(dest, "vbo", "1.0.0", frames=w.frames, storage_root=w.storage)
        assert not leftover.exists()
        assert in_flight.read_bytes() == b"still being written"
    finally:
        live.kill()
        live.wait()


def test_ledger_records_nothing_when_the_renamed_file_is_not_the_one_written(tmp_path, monkeypatch):
    src = write_file(tmp_path / "src/a.bin", 100_000, seed=1)
    impostor = write_file(tmp_path / "impostor.bin", 100_000, seed=2)
    real_commit = copy_mod.commit

    def commit_then_swap(dfd, tmp, name, *, where):
        real_commit(dfd, tmp, name, where=where)
        os.replace(impostor, where)  # another process renames its file onto the final name right after ours

    monkeypatch.setattr(copy_mod, "commit", commit_then_swap)
    root = SafeRoot(tmp_path / "rel")
    ledger = Ledger(root, "ledger.jsonl")
    with pytest.raises(CopyMismatch, match="not the file this copy wrote"):
        copy_files([CopyEntry(str(src), "proj/a.bin")], root, ledger=ledger)
    ledger.close()
    assert Ledger(root, "ledger.jsonl").get("proj/a.bin") is None
    assert sorted(tree(tmp_path / "rel")) == ["proj/a.bin"]
