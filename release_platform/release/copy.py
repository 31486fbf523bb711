"""Verified, resumable, parallel copy of files into a release root.

Per file (:func:`copy_files`):

1. **skip if unchanged** — the ledger (:class:`Ledger`) remembers, per destination, the source's and the
   destination's (size, mtime_ns, inode) and the digests. If both still match, the file is skipped and its
   recorded digests reused: re-running a release on unchanged inputs reads and writes 0 bytes. With
   ``rehash=True`` nothing recorded is trusted: the source is re-digested (or checked against the digests its entry
   carries) and the destination is re-read, and the file is skipped only when the destination's digests equal the
   source's; any other destination (bit rot, or tampering that kept size and mtime) is copied again. This also
   adopts a correct destination left without a ledger entry.
2. **one read** of the source (a reader thread reads the next block while the current one is hashed and written)
   feeds SHA-256, BLAKE2b and the DANDI etag (:class:`~.digests.MultiDigest`); each block goes to a temporary name
   unique to this writer, ``<name>.<pid>-<random>.inprogress`` (created ``O_EXCL | O_NOFOLLOW`` through a directory
   descriptor of the release root; see :class:`~.paths.SafeRoot` and :mod:`release_platform.atomic`). With
   ``verify="sha256"`` the kernel moves the data (``os.copy_file_range``, source and destination on one filesystem;
   ``cp`` does the same) while the block is hashed from the page cache; otherwise, or where the kernel cannot copy
   (another filesystem, an old kernel; or ``kernel_copy=False``), the block read is written (``pwrite``);
3. **verify** (``verify="sha256"``, the default): every block of the temporary file is read back right after it is
   written and compared byte for byte with the block read from the source — the very bytes whose digests are
   recorded. A destination that passes therefore has exactly the source's SHA-256 (and BLAKE2b and etag): the check
   is at least as strong as comparing SHA-256s, and it costs a ``memcmp`` instead of a second SHA-256 pass. The
   bytes compared are those the destination's reads return (the page cache, as for any re-read right after a
   write); a difference (a corrupted write, or a source changed while copied) is a :class:`CopyMismatch`, or, with
   ``on_mismatch="keep"``, a record whose ``comparison_passed`` is false and whose ``destination_digest`` is the
   re-hashed destination. ``verify="size"`` only compares sizes (and always writes the bytes read, so the digests
   describe what was written);
4. ``fchmod`` to the configured mode, ``fsync``;
5. **rename** onto the final name, fsync the directory, check that the final name now is the very file written
   and verified (same device, inode and size), then append the ledger entry (fsynced).

A source's mode is never changed: a destination that is the source itself (a hard link) is never chmod-ed, and a
hard link is only made when the source already has the configured mode (else the file is copied).

A failure (or an interruption) at any point removes this writer's temporary file (never another writer's), so no
partial file is ever left under a final name; files completed before it are in the ledger, so a re-run resumes with
the rest. A temporary file left behind by a hard kill carries the dead writer's pid: the next release, holding the
release root's lock, removes it (until then ``verify`` reports it as extra).

Files are copied in parallel by a bounded thread pool; the digests of one block, its write and its read-back
comparison also run in parallel (hashlib, file I/O and the comparison release the GIL).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Literal, Optional, Sequence

from release_platform.atomic import open_temp, temp_name
from release_platform.errors import InputError
from release_platform.release.digests import RELEASE_DIGESTS, Digests, MultiDigest, block_sizes, digest_file
from release_platform.release.paths import SafeRoot, commit, release_parts

Verify = Literal["sha256", "size"]
VERIFY_MODES = ("sha256", "size")
Progress = Callable[[str, int, int], None]  # (destination, bytes done in this file, file size)


class CopyMismatch(InputError):
    """The written file does not match what was read from the source."""


@dataclass(frozen=True)
class Fingerprint:
    size: int
    mtime_ns: int
    ino: int

    @classmethod
    def of(cls, st: os.stat_result) -> "Fingerprint":
        return cls(st.st_size, st.st_mtime_ns, st.st_ino)


@dataclass(frozen=True)
class CopyEntry:
    """Copy ``source`` (an absolute, already checked path) to ``destination`` (relative to the release root).

    ``digests``: the source's digests when already known (e.g. from a staging record); required for
    ``link=True``, where the file is hard-linked instead of copied.
    """

    source: str
    destination: str
    key: Optional[str] = None
    digests: Optional[Digests] = None


@dataclass
class CopyRecord:
    source: str
    destination: str
    key: Optional[str]
    digests: Digests
    copied: bool  # False: skipped as unchanged
    bytes_copied: int
    linked: bool = False
    destination_digest: Optional[str] = None  # the verification digest of the written file (hex)
    comparison_passed: bool = True


@dataclass
class CopyReport:
    records: list[CopyRecord] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def bytes_copied(self) -> int:
        return sum(r.bytes_copied for r in self.records)

    @property
    def bytes_total(self) -> int:
        return sum(r.digests.size for r in self.records)

    @property
    def files_copied(self) -> int:
        return sum(1 for r in self.records if r.copied)

    @property
    def files_skipped(self) -> int:
        return sum(1 for r in self.records if not r.copied)

    def describe(self) -> str:
        rate = self.bytes_copied / self.seconds / 1e6 if self.seconds > 0 else 0.0
        return (f"{len(self.records)} files ({self.bytes_total:,} bytes): {self.files_copied} copied "
                f"({self.bytes_copied:,} bytes, {rate:.0f} MB/s), {self.files_skipped} unchanged; {self.seconds:.2f} s")


# --- ledger ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LedgerEntry:
    destination: str
    source: str
    source_fp: Fingerprint
    dest_fp: Fingerprint
    digests: Digests

    def to_json(self) -> dict:
        return {"destination": self.destination, "source": self.source, "source_fp": list(vars(self.source_fp).values()),
                "dest_fp": list(vars(self.dest_fp).values()), "digests": self.digests.as_dict()}

    @classmethod
    def from_json(cls, data: dict) -> "LedgerEntry":
        return cls(data["destination"], data["source"], Fingerprint(*data["source_fp"]), Fingerprint(*data["dest_fp"]),
                   Digests.from_dict(data["digests"]))


class Ledger:
    """What was copied where, with which digests: an append-only JSON-lines journal under a release root.

    Each completed file appends one line and fsyncs, so an interrupted run keeps every completed file; a torn
    last line (a crash mid-append) is ignored. :meth:`compact` rewrites it atomically with one line per file.
    """

    def __init__(self, root: SafeRoot, relpath: str):
        self.root = root
        self.relpath = relpath
        self._lock = threading.Lock()
        self._entries: dict[str, LedgerEntry] = {}
        raw = root.read_bytes(relpath)
        for line in (raw or b"").splitlines():
            try:
                entry = LedgerEntry.from_json(json.loads(line))
            except (ValueError, KeyError, TypeError):
                continue  # torn or foreign line: that file is simply copied again
            self._entries[entry.destination] = entry
        self._fd: Optional[int] = None

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, destination: str) -> Optional[LedgerEntry]:
        return self._entries.get(destination)

    def destinations(self) -> set[str]:
        return set(self._entries)

    def _open(self) -> int:
        if self._fd is None:
            parts = release_parts(self.relpath)
            with self.root.directory(parts[:-1]) as dfd:
                self._fd = os.open(parts[-1], os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
                                   | getattr(os, "O_CLOEXEC", 0), 0o644, dir_fd=dfd)
        return self._fd

    def record(self, entry: LedgerEntry) -> None:
        line = (json.dumps(entry.to_json(), sort_keys=True) + "\n").encode()
        with self._lock:
            fd = self._open()
            os.write(fd, line)
            os.fsync(fd)
            self._entries[entry.destination] = entry

    def forget(self, destinations: Iterable[str]) -> None:
        with self._lock:
            for d in destinations:
                self._entries.pop(d, None)

    def compact(self) -> None:
        with self._lock:
            self.close()
            data = "".join(json.dumps(self._entries[d].to_json(), sort_keys=True) + "\n" for d in sorted(self._entries))
            self.root.write_bytes(self.relpath, data.encode())

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


# --- copying --------------------------------------------------------------------------------------------------

_buffers = threading.local()


def _buffer(size: int) -> bytearray:
    """This thread's reusable read buffer, grown to at least ``size`` bytes (the largest block of a file)."""
    buf = getattr(_buffers, "buf", None)
    if buf is None or len(buf) < size:
        buf = _buffers.buf = bytearray(size)
    return buf


def _buffer_pair(size: int) -> tuple[bytearray, bytearray]:
    """This thread's two reusable read buffers (read-ahead), grown to at least ``size`` bytes each."""
    pair = getattr(_buffers, "pair", None)
    if pair is None or len(pair[0]) < size:
        pair = _buffers.pair = (bytearray(size), bytearray(size))
    return pair


def _pread_into(fd: int, view: memoryview, offset: int, path: str) -> None:
    got = 0
    while got < len(view):
        r = os.preadv(fd, [view[got:]], offset + got)
        if not r:
            raise InputError(f"file ended after {offset + got} bytes (it changed while being read)", path=path)
        got += r


def _read_ahead(fd: int, size: int, path: str):
    """Yield views of the file's successive blocks (:func:`~.digests.block_sizes`) read by positioned reads;
    a reader thread reads block k+1 into the second buffer while block k is hashed and written. A view is
    valid until the next one is requested."""
    sizes = list(block_sizes(size))
    if len(sizes) <= 1:
        buf = memoryview(_buffer(max(sizes, default=0)))
        for n in sizes:
            _pread_into(fd, buf[:n], 0, path)
            yield buf[:n]
        return
    buffers = [memoryview(b) for b in _buffer_pair(max(sizes))]
    offsets = [0]
    for n in sizes[:-1]:
        offsets.append(offsets[-1] + n)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="read-ahead") as reader:
        pending = reader.submit(_pread_into, fd, buffers[0][: sizes[0]], 0, path)
        try:
            for k, n in enumerate(sizes):
                pending.result()
                pending = None
                if k + 1 < len(sizes):
                    pending = reader.submit(_pread_into, fd, buffers[(k + 1) % 2][: sizes[k + 1]], offsets[k + 1], path)
                yield buffers[k % 2][:n]
        finally:
            if pending is not None:  # let an in-flight read finish before its buffer is reused
                pending.exception()


#: errors of ``os.copy_file_range`` that mean "the kernel cannot copy between these two files" (another
#: filesystem, an old kernel, a filesystem without the call): the block is written from the bytes read instead
_NO_KERNEL_COPY = frozenset(getattr(errno, name) for name in ("EXDEV", "ENOSYS", "EOPNOTSUPP", "ENOTSUP", "EINVAL",
                                                              "EBADF", "EPERM") if hasattr(errno, name))
#: bytes read back from the destination at a time for the comparison (fits in a core's cache)
CHECK_CHUNK = 2 * 2**20


def _load_memcmp():
    """The C library's ``memcmp`` through ctypes (which releases the GIL while it runs); None where unavailable."""
    try:
        import ctypes

        memcmp = ctypes.CDLL(None).memcmp
    except (ImportError, OSError, AttributeError, TypeError):
        return None
    memcmp.argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
    memcmp.restype = ctypes.c_int
    return ctypes, memcmp


_MEMCMP = _load_memcmp()


def _same_bytes(a: memoryview, b: memoryview) -> bool:
    """Whether two byte buffers are equal (``memcmp``; without it, 1 MiB slices compared as bytes)."""
    if len(a) != len(b):
        return False
    if not len(a):
        return True
    if _MEMCMP is not None and not a.readonly and not b.readonly:
        ctypes, memcmp = _MEMCMP
        return memcmp((ctypes.c_char * len(a)).from_buffer(a), (ctypes.c_char * len(b)).from_buffer(b), len(a)) == 0
    step = 2**20
    return all(a[i:i + step].tobytes() == b[i:i + step].tobytes() for i in range(0, len(a), step))


def _check_buffer() -> memoryview:
    """This thread's buffer for reading the destination back (:data:`CHECK_CHUNK` bytes)."""
    buf = getattr(_buffers, "check", None)
    if buf is None or len(buf) != CHECK_CHUNK:
        buf = _buffers.check = bytearray(CHECK_CHUNK)
    return memoryview(buf)


def _written_equals(out: int, block: memoryview, offset: int) -> bool:
    """Read the destination's bytes at ``offset`` back and compare them with ``block``, the bytes read from the
    source (chunk by chunk, so the comparison runs in cache)."""
    buf = _check_buffer()
    done = 0
    while done < len(block):
        n = min(len(buf), len(block) - done)
        got = os.preadv(out, [buf[:n]], offset + done)
        if got <= 0 or not _same_bytes(buf[:got], block[done:done + got]):
            return False  # shorter than written, or different
        done += got
    return True


class _KernelCopy:
    """Whether this file's blocks are still copied by ``os.copy_file_range`` (off after the first refusal)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and hasattr(os, "copy_file_range")


def _put_block(src: int, out: int, block: memoryview, offset: int, kernel: _KernelCopy, check: bool) -> bool:
    """Put the source's block at ``offset`` (``block``: its bytes as read) into the destination at the same
    offset — by the kernel from the source while it may, else by writing ``block`` — then, with ``check``, read it
    back and compare. Returns False if the destination's bytes differ from ``block``."""
    done, n = 0, len(block)
    while kernel.enabled and done < n:
        try:
            got = os.copy_file_range(src, out, n - done, offset + done, offset + done)
        except OSError as exc:
            if exc.errno not in _NO_KERNEL_COPY:
                raise
            kernel.enabled = False  # e.g. EXDEV: another filesystem; write the bytes read from here on
            break
        if got <= 0:
            break  # the source ended early (the comparison tells), or nothing copied: write the rest below
        done += got
    while done < n:
        done += os.pwrite(out, block[done:], offset + done)
    same = _written_equals(out, block, offset) if check else True
    _start_writeback(out, offset, n)
    return same


def _start_writeback(out: int, offset: int, n: int) -> None:
    """Start writing the block's dirty pages to the device now, so that the file's final ``fsync`` waits for little
    (``posix_fadvise(DONTNEED)`` starts asynchronous writeback of a dirty range on Linux; pages still dirty stay
    cached). A hint only: durability comes from the ``fsync``."""
    if hasattr(os, "posix_fadvise"):
        with contextlib.suppress(OSError):
            os.posix_fadvise(out, offset, n, os.POSIX_FADV_DONTNEED)


def _verify_digest_name(algorithms: Sequence[str]) -> str:
    """The digest the written file is re-checked with: the first (primary) algorithm."""
    return algorithms[0] if algorithms else "sha256"


def _digest_fd(fd: int, size: int, algorithm: str) -> Digests:
    """Digest an open file by positioned reads (the descriptor's offset is left alone)."""
    md = MultiDigest(size, (algorithm,))
    buf = memoryview(_buffer(max(block_sizes(size), default=0)))
    offset = 0
    for n in block_sizes(size):
        got = 0
        while got < n:
            r = os.preadv(fd, [buf[got:n]], offset + got)
            if not r:
                raise CopyMismatch(f"written file is shorter than {size} bytes")
            got += r
        md.update(buf[:n])
        offset += n
    return md.finalize()


@dataclass
class _Options:
    mode: int
    verify: Verify
    algorithms: tuple[str, ...]
    rehash: bool
    link: bool
    on_mismatch: Literal["raise", "keep"]
    progress: Optional[Progress]
    executor: Optional[ThreadPoolExecutor]
    stop: threading.Event
    kernel_copy: bool = True


def _copy_data(entry: CopyEntry, root: SafeRoot, opts: _Options) -> tuple[Digests, os.stat_result, Optional[str], bool]:
    """Copy one file through a temporary name; returns (source digests, final stat, verify digest, passed)."""
    parts = release_parts(entry.destination)
    where = root.path.joinpath(*parts)
    check = opts.verify == "sha256" and bool(opts.algorithms)
    # the kernel copies only when every block is read back and compared: the digests are of the bytes read, which a
    # source changing during the copy could make differ from what the kernel copied
    kernel = _KernelCopy(opts.kernel_copy and check)
    with root.directory(parts[:-1]) as dfd, open(entry.source, "rb", buffering=0) as src:
        size = os.fstat(src.fileno()).st_size
        tmp, out = open_temp(dfd, parts[-1], 0o600)
        put = None
        try:
            md = MultiDigest(size, opts.algorithms, opts.executor)
            done, passed = 0, True
            with contextlib.closing(_read_ahead(src.fileno(), size, entry.source)) as blocks:
                for block in blocks:
                    if opts.stop.is_set():
                        raise InputError("copy cancelled because another file failed", path=entry.source)
                    if opts.executor is not None:  # write and compare while the block is hashed
                        put = opts.executor.submit(_put_block, src.fileno(), out, block, done, kernel, check)
                        md.update(block)
                        same = put.result()
                        put = None
                    else:
                        same = _put_block(src.fileno(), out, block, done, kernel, check)
                        md.update(block)
                    if not same:
                        passed = False
                        if opts.on_mismatch == "raise":
                            raise CopyMismatch(f"bytes {done:,}-{done + len(block):,} of the written file differ from "
                                               "those read from the source (a corrupted write, or the source changed "
                                               "while copied)", path=where)
                    done += len(block)
                    if opts.progress is not None:
                        opts.progress(entry.destination, done, size)
            if os.pread(src.fileno(), 1, size):
                raise InputError("source grew while being copied", path=entry.source)
            digests = md.finalize()
            os.fchmod(out, opts.mode)
            os.fsync(out)
            written = os.fstat(out).st_size
            if written != size:
                raise CopyMismatch(f"wrote {written} bytes, read {size}", path=where)
            check_digest = None
            if check:
                name = _verify_digest_name(opts.algorithms)
                # equal bytes have equal digests; a differing file (kept on request) is re-hashed to report its own
                check_digest = digests.get(name) if passed else _digest_fd(out, size, name).get(name)
        except BaseException:
            if put is not None:  # let an in-flight write finish before its descriptor is closed
                put.exception()
            os.close(out)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=dfd)
            raise
        try:
            commit(dfd, tmp, parts[-1], where=where)
            final = _renamed_file(dfd, parts[-1], os.fstat(out), where)
        finally:
            os.close(out)
    return digests, final, check_digest, passed


def _renamed_file(dfd: int, name: str, written: os.stat_result, where: Path) -> os.stat_result:
    """The stat of ``name`` after the rename, checked to be the very file this writer wrote and verified (same
    device, inode and size), so the ledger never records a file another process put there."""
    try:
        final = os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        raise CopyMismatch("disappeared right after it was renamed into place (another writer?)", path=where) from None
    if (final.st_dev, final.st_ino) != (written.st_dev, written.st_ino) or final.st_size != written.st_size:
        raise CopyMismatch("is not the file this copy wrote and verified (replaced by another writer?); "
                           "not recorded as released", path=where)
    return final


def _link_data(entry: CopyEntry, root: SafeRoot, opts: _Options) -> Optional[os.stat_result]:
    """Hard-link the source into place (same filesystem); None if linking is not possible here."""
    if stat.S_IMODE(os.stat(entry.source).st_mode) != opts.mode:
        return None  # a link shares the source's mode: copy instead of changing the source
    parts = release_parts(entry.destination)
    where = root.path.joinpath(*parts)
    with root.directory(parts[:-1]) as dfd:
        tmp = temp_name(parts[-1])
        try:
            os.link(entry.source, tmp, dst_dir_fd=dfd, follow_symlinks=False)
        except OSError as exc:
            if exc.errno in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES):
                return None
            raise
        try:
            st = os.stat(tmp, dir_fd=dfd, follow_symlinks=False)
            if entry.digests is not None and st.st_size != entry.digests.size:
                raise CopyMismatch(f"has {st.st_size} bytes, its record says {entry.digests.size}", path=entry.source)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=dfd)
            raise
        commit(dfd, tmp, parts[-1], where=where)
        return _renamed_file(dfd, parts[-1], st, where)


def _fix_mode(root: SafeRoot, destination: str, st: os.stat_result, mode: int) -> None:
    if stat.S_IMODE(st.st_mode) == mode:
        return
    parts = release_parts(destination)
    with root.directory(parts[:-1], create=False) as dfd:
        fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dfd)
        try:
            os.fchmod(fd, mode)
        finally:
            os.close(fd)


def _same_digests(a: Digests, b: Digests) -> bool:
    return a.size == b.size and not a.differences(b) and any(
        getattr(a, n) is not None and getattr(b, n) is not None for n in RELEASE_DIGESTS)


def _copy_one(entry: CopyEntry, root: SafeRoot, ledger: Optional[Ledger], opts: _Options) -> CopyRecord:
    try:
        src_st = os.stat(entry.source)
    except FileNotFoundError:
        raise InputError("source file is missing", path=entry.source) from None
    if not stat.S_ISREG(src_st.st_mode):
        raise InputError("source is not a regular file", path=entry.source)
    dst_st = root.lstat(entry.destination)
    if dst_st is not None and not stat.S_ISREG(dst_st.st_mode) and not stat.S_ISLNK(dst_st.st_mode):
        raise InputError("destination exists and is not a regular file", path=root.file_path(entry.destination))
    prev = ledger.get(entry.destination) if ledger is not None else None
    dst_known = (prev is not None and dst_st is not None and stat.S_ISREG(dst_st.st_mode)
                 and Fingerprint.of(dst_st) == prev.dest_fp)
    src_fp = Fingerprint.of(src_st)

    is_source = dst_st is not None and os.path.samestat(dst_st, src_st)  # the destination is a link of the source
    if is_source and stat.S_IMODE(dst_st.st_mode) != opts.mode:
        dst_known = False  # replaced by a copy with the configured mode below; the source keeps its own

    def skipped(digests: Digests) -> CopyRecord:
        if not is_source:
            _fix_mode(root, entry.destination, dst_st, opts.mode)
        if ledger is not None and (prev is None or prev.source != entry.source or prev.source_fp != src_fp
                                   or prev.digests != digests or prev.dest_fp != Fingerprint.of(dst_st)):
            ledger.record(LedgerEntry(entry.destination, entry.source, src_fp, Fingerprint.of(dst_st), digests))
        return CopyRecord(entry.source, entry.destination, entry.key, digests, False, 0)

    if not opts.rehash and dst_known and prev.source == entry.source and prev.source_fp == src_fp and (
            entry.digests is None or _same_digests(entry.digests, prev.digests)):
        return skipped(prev.digests)
    if (opts.rehash and dst_st is not None and stat.S_ISREG(dst_st.st_mode) and dst_st.st_size == src_st.st_size
            and not (is_source and stat.S_IMODE(dst_st.st_mode) != opts.mode)):
        # re-read the destination itself: its size and mtime say nothing about bit rot or `touch -r` tampering
        source_digests = entry.digests or digest_file(entry.source, opts.algorithms, opts.executor)
        found = digest_file(root.file_path(entry.destination), opts.algorithms, opts.executor)
        if _same_digests(source_digests, found):
            return skipped(source_digests)

    linked, check_digest, passed = False, None, True
    final = None
    if opts.link and entry.digests is not None and not opts.rehash:  # --rehash re-reads what it releases
        final = _link_data(entry, root, opts)
        linked = final is not None
    if final is not None:
        digests = entry.digests
    else:
        digests, final, check_digest, passed = _copy_data(entry, root, opts)
        if entry.digests is not None and not _same_digests(entry.digests, digests):
            raise CopyMismatch(f"content differs from its record ({', '.join(entry.digests.differences(digests))}); "
                               "the source changed after it was digested", path=entry.source)
    if ledger is not None:
        ledger.record(LedgerEntry(entry.destination, entry.source, src_fp, Fingerprint.of(final), digests))
    return CopyRecord(entry.source, entry.destination, entry.key, digests, True, 0 if linked else digests.size,
                      linked=linked, destination_digest=check_digest, comparison_passed=passed)


def _report_plan(progress: Optional[Progress], entries: Sequence[CopyEntry]) -> None:
    """Tell a :class:`release_platform.progress.Progress` how many files and bytes the copy covers."""
    if hasattr(progress, "plan"):
        sizes = []
        for e in entries:
            try:
                sizes.append(os.stat(e.source).st_size)
            except OSError:
                sizes.append(0)  # reported by the copy itself, naming the file
        progress.plan(len(entries), sum(sizes))


def copy_files(
    entries: Sequence[CopyEntry],
    root: SafeRoot | str | os.PathLike,
    *,
    ledger: Optional[Ledger] = None,
    mode: int = 0o644,
    max_workers: int = 2,
    digest_threads: int = 2,
    verify: Verify = "sha256",
    rehash: bool = False,
    link: bool = False,
    algorithms: Sequence[str] = RELEASE_DIGESTS,
    on_mismatch: Literal["raise", "keep"] = "raise",
    progress: Optional[Progress] = None,
    kernel_copy: bool = True,
) -> CopyReport:
    """Copy ``entries`` under ``root`` (see the module docstring); records come back in entry order.

    ``kernel_copy=False`` writes every block from the bytes read instead of letting the kernel copy it
    (``os.copy_file_range``); the digests and the verification are the same either way.

    On the first failure no new file is started, files in flight stop at their next block, and the first error
    is raised (an :class:`InputError` naming the file); completed files stay recorded in ``ledger``.
    """
    if verify not in VERIFY_MODES:
        raise InputError(f"verify must be one of {VERIFY_MODES}, got {verify!r}")
    root = root if isinstance(root, SafeRoot) else SafeRoot(root)
    seen: dict[str, str] = {}
    for e in entries:
        release_parts(e.destination)
        if e.destination in seen and seen[e.destination] != e.source:
            raise InputError(f"two sources for one destination: {seen[e.destination]} and {e.source}",
                             path=root.file_path(e.destination))
        seen[e.destination] = e.source
    unique = list({e.destination: e for e in entries}.values())
    _report_plan(progress, unique)
    started = time.perf_counter()
    stop = threading.Event()
    results: dict[str, CopyRecord] = {}
    executor = ThreadPoolExecutor(max_workers=digest_threads, thread_name_prefix="digest") if digest_threads > 1 else None
    opts = _Options(mode, verify, tuple(algorithms), rehash, link, on_mismatch, progress, executor, stop,
                    kernel_copy)

    def run(entry: CopyEntry) -> CopyRecord:
        if stop.is_set():
            raise InputError("not started because another file failed", path=entry.source)
        try:
            record = _copy_one(entry, root, ledger, opts)
            if hasattr(progress, "finish"):  # a release_platform.progress.Progress: count the file, copied or not
                progress.finish(entry.destination, record.digests.size)
            return record
        except OSError as exc:
            stop.set()
            raise InputError(f"copy to {root.file_path(entry.destination)} failed: {exc.strerror or exc}",
                             path=entry.source) from exc
        except BaseException:
            # Stop here, in the worker: the next queued file must not start before the main thread sees this.
            stop.set()
            raise

    first_error: Optional[BaseException] = None
    try:
        with ThreadPoolExecutor(max_workers=max(1, max_workers), thread_name_prefix="copy") as pool:
            futures = {pool.submit(run, e): e for e in unique}
            try:
                for future in as_completed(futures):
                    try:
                        results[futures[future].destination] = future.result()
                    except BaseException as exc:  # noqa: BLE001 - re-raised below, after the pool drains
                        if first_error is None:
                            first_error = exc
                            stop.set()
                            for f in futures:
                                f.cancel()
            except BaseException:  # Ctrl-C in this thread: files in flight stop at their next block
                stop.set()
                for f in futures:
                    f.cancel()
                raise
    finally:
        if executor is not None:
            executor.shutdown(wait=True)
    if first_error is not None:
        raise first_error
    return CopyReport([results[e.destination] for e in unique], time.perf_counter() - started)


# --- directories ------------------------------------------------------------------------------------------------


def tree_entries(source_dir: str | os.PathLike, destination: str, *, key: Optional[str] = None) -> list[CopyEntry]:
    """One :class:`CopyEntry` per file under ``source_dir`` (recursively), mirrored under ``destination``.

    A symlink inside the tree is copied as the file it points to if that file is inside the tree; a symlink
    pointing out of the tree (or to a directory) is refused.
    """
    base = Path(os.path.realpath(source_dir))
    if not base.is_dir():
        raise InputError("not a directory", path=source_dir)
    out = []
    for dirpath, dirnames, filenames in os.walk(base, followlinks=False):
        for d in list(dirnames):
            if os.path.islink(os.path.join(dirpath, d)):
                raise InputError("symlinked directory inside a copied tree; refused", path=os.path.join(dirpath, d))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            real = Path(os.path.realpath(path))
            if os.path.commonpath([real, base]) != str(base):
                raise InputError(f"symlink points out of the copied tree (to {real}); refused", path=path)
            if not real.is_file():
                raise InputError("not a regular file", path=path)
            rel = path.relative_to(base).as_posix()
            out.append(CopyEntry(str(real), f"{destination}/{rel}", key))
    return out


def compare_trees(source_dir: str | os.PathLike, dest_dir: str | os.PathLike, algorithm: str = "sha256") -> list[str]:
    """Differences between two directory trees, compared recursively by relative path and content digest.

    (The AllenSDK copy utility paired absolute paths from the two trees, so every pair 'differed', and only
    reached the content comparison inside that branch.) Returns human-readable problems; empty if equal.
    """
    def listing(top: Path) -> dict[str, Path]:
        out = {}
        for dirpath, _, filenames in os.walk(top, followlinks=False):
            for name in filenames:
                p = Path(dirpath) / name
                out[p.relative_to(top).as_posix()] = p
        return out

    src, dst = listing(Path(source_dir)), listing(Path(dest_dir))
    problems = [f"{rel}: only in the source" for rel in sorted(set(src) - set(dst))]
    problems += [f"{rel}: only in the destination" for rel in sorted(set(dst) - set(src))]
    for rel in sorted(set(src) & set(dst)):
        a = digest_file(src[rel], (algorithm,))
        b = digest_file(dst[rel], (algorithm,))
        if a.size != b.size or a.get(algorithm) != b.get(algorithm):
            problems.append(f"{rel}: content differs ({algorithm} {a.get(algorithm)} vs {b.get(algorithm)})")
    return problems
