"""The two ways a release copy moves bytes — the kernel (``os.copy_file_range``) and writing the bytes read — give
the same file and the digests of an independent computation, and both detect a corrupted write block by block."""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile
from pathlib import Path

import pytest

import release_platform.release.copy as copy_module
from release_platform.errors import InputError
from release_platform.release.copy import CopyEntry, CopyMismatch, Ledger, copy_files
from release_platform.release.paths import SafeRoot
from release_platform_tests.release import tree, write_file

PART = 64 * 2**20  # the DANDI etag's part size for files below ~625 GiB


def _independent_digests(data: bytes) -> tuple[str, str, str]:
    """SHA-256, BLAKE2b and the S3-multipart etag (md5 of the parts' md5s, "-<parts>") computed here, by hand."""
    parts = [data[o:o + PART] for o in range(0, len(data), PART)] or [b""]
    etag = f"{hashlib.md5(b''.join(hashlib.md5(p).digest() for p in parts)).hexdigest()}-{len(parts)}"
    return hashlib.sha256(data).hexdigest(), hashlib.blake2b(data).hexdigest(), etag


class _Spy:
    """Count the calls of ``os.copy_file_range`` and ``os.pwrite`` (and optionally replace one)."""

    def __init__(self, monkeypatch, copy_range=None, pwrite=None):
        self.copy_range_calls = self.pwrite_calls = 0
        real_cfr, real_pwrite = os.copy_file_range, os.pwrite

        def cfr(*args):
            self.copy_range_calls += 1
            return (copy_range or real_cfr)(*args)

        def pw(*args):
            self.pwrite_calls += 1
            return (pwrite or real_pwrite)(*args)

        monkeypatch.setattr(os, "copy_file_range", cfr)
        monkeypatch.setattr(os, "pwrite", pw)


def _small_blocks(monkeypatch, block=1000, chunk=300):
    def sizes(size):
        for start in range(0, size, block):
            yield min(block, size - start)

    monkeypatch.setattr(copy_module, "block_sizes", sizes)
    monkeypatch.setattr(copy_module, "CHECK_CHUNK", chunk)


@pytest.mark.parametrize("kernel_copy", [True, False])
def test_multi_part_file_digests_equal_an_independent_computation_on_both_paths(tmp_path, monkeypatch, kernel_copy):
    source = write_file(tmp_path / "src/big.bin", PART + 2**20 + 13, seed=4)  # two etag parts
    data = source.read_bytes()
    spy = _Spy(monkeypatch)
    report = copy_files([CopyEntry(str(source), "d/big.bin")], tmp_path / "rel", kernel_copy=kernel_copy)
    rec = report.records[0]
    sha256, blake2b, etag = _independent_digests(data)
    assert (rec.digests.size, rec.digests.sha256, rec.digests.blake2b, rec.digests.dandi_etag) == (len(data), sha256,
                                                                                                     blake2b, etag)
    assert etag.endswith("-2") and rec.destination_digest == sha256 and rec.comparison_passed
    assert (tmp_path / "rel/d/big.bin").read_bytes() == data
    if kernel_copy:  # the kernel moved every byte: nothing was written from user space
        assert spy.copy_range_calls >= 2 and spy.pwrite_calls == 0
    else:
        assert spy.copy_range_calls == 0 and spy.pwrite_calls >= 2


@pytest.mark.parametrize("size", [0, 1, 999, 1000, 4321])
@pytest.mark.parametrize("kernel_copy", [True, False])
def test_small_and_block_edge_sizes_on_both_paths(tmp_path, monkeypatch, size, kernel_copy):
    _small_blocks(monkeypatch)
    source = write_file(tmp_path / "src.bin", size, seed=size)
    rec = copy_files([CopyEntry(str(source), "f.bin")], tmp_path / "rel", kernel_copy=kernel_copy).records[0]
    data = source.read_bytes()
    assert (tmp_path / "rel/f.bin").read_bytes() == data
    assert (rec.digests.sha256, rec.digests.blake2b) == _independent_digests(data)[:2]


def test_verify_size_writes_the_bytes_read_never_a_kernel_copy(tmp_path, monkeypatch):
    """Without the read-back comparison the digests must describe what was written, so the bytes read are."""
    source = write_file(tmp_path / "src.bin", 5000, seed=1)
    spy = _Spy(monkeypatch)
    rec = copy_files([CopyEntry(str(source), "f.bin")], tmp_path / "rel", verify="size").records[0]
    assert spy.copy_range_calls == 0 and spy.pwrite_calls >= 1
    assert rec.destination_digest is None and (tmp_path / "rel/f.bin").read_bytes() == source.read_bytes()


def test_a_kernel_refusal_mid_file_falls_back_to_writing_the_rest(tmp_path, monkeypatch):
    """The kernel copies part of block 1, then refuses (EXDEV): the rest of that block and the later ones are
    written from the bytes read, and the file is whole."""
    _small_blocks(monkeypatch)
    source = write_file(tmp_path / "src.bin", 5500, seed=2)
    real = os.copy_file_range
    calls = []

    def partial_then_refuse(src, dst, count, offset_src, offset_dst):
        calls.append(offset_src)
        if len(calls) == 1:
            return real(src, dst, count, offset_src, offset_dst)
        if len(calls) == 2:
            return real(src, dst, count // 2, offset_src, offset_dst)
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    spy = _Spy(monkeypatch, copy_range=partial_then_refuse)
    rec = copy_files([CopyEntry(str(source), "f.bin")], tmp_path / "rel", digest_threads=1).records[0]
    assert (tmp_path / "rel/f.bin").read_bytes() == source.read_bytes()
    assert rec.digests.sha256 == hashlib.sha256(source.read_bytes()).hexdigest() and rec.comparison_passed
    assert calls == [0, 1000, 1500] and spy.copy_range_calls == 3  # no further attempt once refused
    assert spy.pwrite_calls >= 5  # the second half of block 1 and blocks 2..5


def test_other_kernel_errors_are_not_hidden(tmp_path, monkeypatch):
    source = write_file(tmp_path / "src.bin", 3000, seed=3)

    def disk_full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    _Spy(monkeypatch, copy_range=disk_full)
    with pytest.raises(InputError, match="No space left"):
        copy_files([CopyEntry(str(source), "proj/f.bin")], tmp_path / "rel")
    assert tree(tmp_path / "rel") == {}  # the temporary file is gone


def test_a_real_copy_across_filesystems_writes_the_bytes(tmp_path, monkeypatch):
    """A source on tmpfs and a release on the test's filesystem: the kernel refuses (EXDEV), the copy writes."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("no second filesystem (/dev/shm) here")
    with tempfile.TemporaryDirectory(dir=shm) as other:
        source = write_file(Path(other) / "src.bin", 70_000, seed=6)
        spy = _Spy(monkeypatch)
        rec = copy_files([CopyEntry(str(source), "f.bin")], tmp_path / "rel").records[0]
        data = source.read_bytes()
    assert (tmp_path / "rel/f.bin").read_bytes() == data and rec.digests.sha256 == _independent_digests(data)[0]
    assert spy.copy_range_calls >= 1 and spy.pwrite_calls >= 1


def _corrupting(monkeypatch, kernel_copy: bool, bad_offset: int):
    """Make the write of the block holding ``bad_offset`` store one flipped byte there."""
    if kernel_copy:
        real = os.copy_file_range

        def cfr(src, dst, count, offset_src, offset_dst):
            got = real(src, dst, count, offset_src, offset_dst)
            if offset_dst <= bad_offset < offset_dst + got:
                byte = os.pread(dst, 1, bad_offset)
                os.pwrite(dst, bytes([byte[0] ^ 0x01]), bad_offset)
            return got

        _Spy(monkeypatch, copy_range=cfr)
    else:
        real = os.pwrite

        def pwrite(fd, data, offset):
            data = bytes(data)
            if offset <= bad_offset < offset + len(data) and len(data) > 1:
                i = bad_offset - offset
                data = data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1:]
            return real(fd, data, offset)

        _Spy(monkeypatch, pwrite=pwrite)


@pytest.mark.parametrize("digest_threads", [1, 2])
@pytest.mark.parametrize("kernel_copy", [True, False])
def test_a_corrupted_write_is_detected_and_nothing_is_released(tmp_path, monkeypatch, kernel_copy, digest_threads):
    _small_blocks(monkeypatch)
    source = write_file(tmp_path / "src.bin", 5500, seed=7)
    _corrupting(monkeypatch, kernel_copy, bad_offset=3456)  # block 3 of 6, read-back chunk 2 of that block
    root = SafeRoot(tmp_path / "rel")
    ledger = Ledger(root, "ledger.jsonl")
    with pytest.raises(CopyMismatch, match=r"bytes 3,000-4,000 of the written file differ"):
        copy_files([CopyEntry(str(source), "proj/f.bin")], root, ledger=ledger, kernel_copy=kernel_copy,
                   digest_threads=digest_threads)
    assert len(ledger) == 0
    assert [p for p in tree(tmp_path / "rel") if p.startswith("proj/")] == []  # no final file, no temporary file


@pytest.mark.parametrize("kernel_copy", [True, False])
def test_a_kept_corrupted_copy_reports_the_destinations_own_digest(tmp_path, monkeypatch, kernel_copy):
    _small_blocks(monkeypatch)
    source = write_file(tmp_path / "src.bin", 5500, seed=8)
    _corrupting(monkeypatch, kernel_copy, bad_offset=5499)  # the very last byte
    rec = copy_files([CopyEntry(str(source), "f.bin")], tmp_path / "rel", kernel_copy=kernel_copy,
                     on_mismatch="keep").records[0]
    written = (tmp_path / "rel/f.bin").read_bytes()
    assert written != source.read_bytes() and len(written) == 5500
    assert not rec.comparison_passed
    assert rec.destination_digest == hashlib.sha256(written).hexdigest() != rec.digests.sha256
    assert rec.digests.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()


def test_a_source_changed_during_a_kernel_copy_is_not_released(tmp_path, monkeypatch):
    """The kernel reads the source itself: if the source changes between the read that is hashed and the kernel's
    copy, the written bytes differ from the hashed ones, and the comparison refuses the file."""
    _small_blocks(monkeypatch)
    source = write_file(tmp_path / "src.bin", 4000, seed=9)
    real_read = copy_module._pread_into

    def read_then_change(fd, view, offset, path):
        real_read(fd, view, offset, path)
        if offset == 2000:  # after block 2 was read for hashing, before the kernel copies it
            with open(source, "r+b") as fh:
                fh.seek(2500)
                fh.write(b"changed")

    monkeypatch.setattr(copy_module, "_pread_into", read_then_change)
    with pytest.raises(CopyMismatch, match="bytes 2,000-3,000"):
        copy_files([CopyEntry(str(source), "f.bin")], tmp_path / "rel", digest_threads=1)
    assert tree(tmp_path / "rel") == {}


@pytest.mark.parametrize("with_memcmp", [True, False])
def test_byte_comparison(monkeypatch, with_memcmp):
    if with_memcmp:
        assert copy_module._MEMCMP is not None  # the C library's memcmp is found on the platforms we run on
    else:
        monkeypatch.setattr(copy_module, "_MEMCMP", None)
    a = bytearray(os.urandom(3 * 2**20 + 5))
    same = copy_module._same_bytes
    assert same(memoryview(a), memoryview(bytearray(a)))
    assert same(memoryview(a)[:0], memoryview(bytearray()))
    for i in (0, 2**20, len(a) - 1):
        b = bytearray(a)
        b[i] ^= 0x80
        assert not same(memoryview(a), memoryview(b))
    assert not same(memoryview(a), memoryview(a)[:-1])
    assert same(memoryview(bytes(a)), memoryview(a))  # a read-only buffer takes the slice comparison


@pytest.mark.skipif(not hasattr(os, "posix_fadvise"), reason="no posix_fadvise here")
def test_each_written_block_starts_its_writeback_and_a_refused_hint_is_harmless(tmp_path, monkeypatch):
    _small_blocks(monkeypatch)
    source = write_file(tmp_path / "src.bin", 3500, seed=10)
    ranges = []

    def refusing_hint(fd, offset, length, advice):
        ranges.append((offset, length, advice))
        raise OSError(errno.EINVAL, "hint not supported")

    monkeypatch.setattr(os, "posix_fadvise", refusing_hint)
    copy_files([CopyEntry(str(source), "f.bin")], tmp_path / "rel")
    assert ranges == [(o, min(1000, 3500 - o), os.POSIX_FADV_DONTNEED) for o in range(0, 3500, 1000)]
    assert (tmp_path / "rel/f.bin").read_bytes() == source.read_bytes()
