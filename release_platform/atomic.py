"""Atomic writes: per-writer temporary names, advisory locks and disk-space checks.

Every file the platform produces appears under its final name whole or not at all:

* it is written under a **temporary name unique to its writer**, ``<name>.<pid>-<8 hex>.inprogress``
  (:func:`temp_name`), so two processes writing the same file never share (or delete) each other's
  temporary file; a writer removes only its own temporary file. A temporary file left by a killed
  writer carries that writer's pid; only a later writer holding the destination's lock removes it, and only
  once no process with that pid runs (:func:`sweep_dead_writers`);
* it is fsynced and renamed onto the final name (:func:`atomic_path`);
* a destination that several processes could write at once (a release root, a partition's output
  directory) is guarded by an advisory lock (:class:`WriterLock`, ``fcntl.flock`` on a lock file): a
  second writer fails at once with ``<what> <dest> is being written by pid N``;
* before a large write, the free space at the destination is compared with an estimate of the file's
  size (:func:`check_free_space`), and a disk that fills anyway gives one :class:`DiskFullError` naming
  the file, with the temporary file removed;
* a writer may ask for the file's **SHA-256 recorded at commit** (``digest=True``): it is computed from the
  complete temporary file just before the rename (the bytes are still in the page cache) and stored in the file's
  extended attribute ``user.release_platform.sha256`` together with the size, modification time (ns) and inode it
  belongs to. A consumer asks :func:`file_sha256`, which takes the recorded digest when all three still match the
  file (a rewritten, touched, truncated or copied file does not match) and hashes the file otherwise. A filesystem
  without user extended attributes records nothing and every consumer hashes, as before.

:func:`free_bytes` is the one place free space is measured, so tests can substitute it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from release_platform.errors import InputError

__all__ = [
    "TEMP_SUFFIX",
    "ERROR_SUFFIX",
    "LOCK_SUFFIX",
    "DiskFullError",
    "WriterBusyError",
    "temp_name",
    "temp_path",
    "parse_temp_name",
    "is_temp_name",
    "pid_running",
    "sweep_dead_writers",
    "atomic_path",
    "open_temp",
    "free_bytes",
    "check_free_space",
    "is_disk_full",
    "disk_nearly_full",
    "disk_full_error",
    "WriterLock",
    "shared_lock",
    "atomic_write",
    "should_isolate",
    "ISOLATE_FACTOR",
    "ISOLATE_RESERVE_BYTES",
    "ChildWriterFailed",
    "run_in_child",
    "format_bytes",
    "DIGEST_XATTR",
    "sha256_file",
    "record_sha256",
    "recorded_sha256",
    "file_sha256",
]

TEMP_SUFFIX = ".inprogress"
ERROR_SUFFIX = ".error"
LOCK_SUFFIX = ".lock"
_TEMP_RE = re.compile(r"^(?P<final>.+)\.(?P<pid>\d+)-(?P<token>[0-9a-f]{8})" + re.escape(TEMP_SUFFIX) + r"$")


class DiskFullError(InputError):
    """Not enough free space for a file (before writing), or the disk filled while writing it."""


class WriterBusyError(InputError):
    """Another process holds the write lock of a destination."""

    def __init__(self, problem: str, *, pid: Optional[int] = None, path: str | os.PathLike | None = None):
        super().__init__(problem, path=path)
        self.pid = pid


# --- temporary names ----------------------------------------------------------------------------------------


def temp_name(name: str) -> str:
    """A temporary name for ``name`` unique to this writer: ``<name>.<pid>-<8 random hex>.inprogress``."""
    return f"{name}.{os.getpid()}-{secrets.token_hex(4)}{TEMP_SUFFIX}"


def temp_path(final: str | os.PathLike) -> Path:
    final = Path(final)
    return final.with_name(temp_name(final.name))


def parse_temp_name(name: str) -> Optional[tuple[str, int]]:
    """``(final name, writer pid)`` of a temporary name made by :func:`temp_name`, else ``None``."""
    m = _TEMP_RE.match(name)
    return (m.group("final"), int(m.group("pid"))) if m else None


def is_temp_name(name: str) -> bool:
    """Whether ``name`` is a temporary name (of any writer, including the legacy ``<name>.inprogress``)."""
    return name.endswith(TEMP_SUFFIX)


def pid_running(pid: int) -> bool:
    """Whether a process with this pid runs on this host (a pid of another user's process counts as running)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_dead_writers(top: str | os.PathLike) -> list[Path]:
    """Remove, under ``top``, the temporary files of writers that are no longer running on this host.

    Call it only while holding the destination's :class:`WriterLock` (no other writer can be active there). A
    temporary file of a running process, or one without a writer pid, is left alone. Symlinks are never followed.
    Returns the files removed.
    """
    removed: list[Path] = []
    for dirpath, _, filenames in os.walk(top, followlinks=False):
        for name in filenames:
            parsed = parse_temp_name(name)
            if parsed is None or parsed[1] == os.getpid() or pid_running(parsed[1]):
                continue
            path = Path(dirpath) / name
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    return removed


def _unlink_quietly(path: str | os.PathLike, *, dir_fd: Optional[int] = None) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path, dir_fd=dir_fd)


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike, *, entity: Optional[str] = None, digest: bool = False) -> Iterator[Path]:
    """Yield a temporary path (unique to this writer) beside ``final``; rename it onto ``final`` only if the block
    succeeds.

    On any exception this writer's temporary file is removed and the previous ``final`` (if any) is untouched; a
    full disk becomes one :class:`DiskFullError` naming ``final``. With ``digest``, the complete file's SHA-256 is
    recorded on it before the rename (:func:`record_sha256`), for consumers that hash their inputs.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(final)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"{tmp}: the writer produced no file")
        with open(tmp, "rb") as fh:
            if digest:
                _record_sha256_fd(fh.fileno())
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    except BaseException as exc:
        _unlink_quietly(tmp)
        if is_disk_full(exc):
            raise disk_full_error(final, entity=entity) from exc
        raise


def open_temp(dfd: int, name: str, mode: int) -> tuple[str, int]:
    """Create a new temporary file for ``name`` in the directory ``dfd`` (``O_EXCL | O_NOFOLLOW``).

    Returns ``(temporary name, descriptor)``. Nothing else in the directory is touched.
    """
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    while True:
        tmp = temp_name(name)
        try:
            return tmp, os.open(tmp, flags, mode, dir_fd=dfd)
        except FileExistsError:  # 32 random bits collided: draw again
            continue


# --- disk space -----------------------------------------------------------------------------------------------


def _existing_dir(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.is_dir() and path != path.parent:
        path = path.parent
    return path


def free_bytes(path: str | os.PathLike) -> int:
    """Bytes free for this user on the filesystem holding ``path`` (or its nearest existing parent)."""
    return shutil.disk_usage(_existing_dir(Path(path))).free


def disk_nearly_full(path: str | os.PathLike) -> bool:
    """Whether the filesystem holding ``path`` has (almost) no space left, measured directly (never through
    :func:`free_bytes`): the diagnosis of a writer that crashed, e.g. HDF5 after ENOSPC."""
    try:
        usage = shutil.disk_usage(_existing_dir(Path(path)))
    except OSError:
        return False
    return usage.free < max(1 << 20, usage.total // 100)


def measured_free_text(path: str | os.PathLike) -> str:
    """The free space at ``path`` as text, measured directly (for the message after a failed write)."""
    try:
        return format_bytes(shutil.disk_usage(_existing_dir(Path(path))).free)
    except OSError:
        return "unknown"


def format_bytes(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1000.0
    return f"{n:,.1f} TB"  # pragma: no cover


def check_free_space(path: str | os.PathLike, needed: int, *, entity: Optional[str] = None,
                     what: str = "the file") -> int:
    """Raise :class:`DiskFullError` (one line: needed, free, path) when less than ``needed`` bytes are free where
    ``path`` will be written; else return the free bytes."""
    free = free_bytes(Path(path).parent)
    if free < needed:
        raise DiskFullError(
            f"not enough disk space for {what}: needs about {format_bytes(needed)}, "
            f"{format_bytes(free)} free in {_existing_dir(Path(path).parent)}",
            entity=entity, path=path)
    return free


_ENOSPC_TEXT = ("no space left on device", "errno = 28", "disk quota exceeded", "errno = 122")


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from) says the disk is full (ENOSPC / EDQUOT), including
    HDF5's wrapped messages."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, DiskFullError) or getattr(exc, "disk_full", False):
            return True
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if isinstance(exc, (OSError, RuntimeError, ValueError)) and any(t in str(exc).lower() for t in _ENOSPC_TEXT):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def disk_full_error(final: str | os.PathLike, *, entity: Optional[str] = None) -> DiskFullError:
    """The one clear error for a disk that filled while ``final`` was written."""
    final = Path(final)
    free = measured_free_text(final.parent)
    return DiskFullError(f"disk full while writing {final.name} (No space left on device; {free} free in "
                         f"{_existing_dir(final.parent)}); the partial file was removed", entity=entity, path=final)


# --- isolated writers -----------------------------------------------------------------------------------------


class ChildWriterFailed(RuntimeError):
    """A writer run by :func:`run_in_child` failed; ``disk_full`` when its error (or a crash) came from a full disk."""

    def __init__(self, message: str, *, disk_full: bool = False, signal_name: Optional[str] = None):
        super().__init__(message)
        self.disk_full = disk_full
        self.signal_name = signal_name


def run_in_child(fn: Callable[[], Any], *, what: str) -> Any:
    """Run ``fn`` in a forked child process and return its (picklable) result.

    For writers whose library cannot survive an I/O error in-process: HDF5 crashes the process (SIGSEGV) after a
    write fails with ENOSPC. The child sees the parent's memory as it was at the fork (no pickling of inputs); its
    exception comes back as :class:`ChildWriterFailed` with one line of text, and a crash of the child as
    :class:`ChildWriterFailed` naming the signal. The parent's state is never touched by the child.
    """
    import pickle
    import signal as signal_mod

    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into the caller's stack, never run the parent's exit handlers
        code = 0
        try:
            os.close(rfd)
            import faulthandler
            import sys

            faulthandler.disable()  # a crash is reported by the parent, in one line
            sys.unraisablehook = lambda unraisable: None  # HDF5's close errors after a failed write: reported once
            try:
                payload = ("ok", fn())
            except BaseException as exc:  # noqa: BLE001 - reported to the parent
                payload = ("error", " ".join(f"{type(exc).__name__}: {exc}".split()) if not isinstance(exc, InputError)
                           else " ".join(str(exc).split()), is_disk_full(exc))
            try:
                data = pickle.dumps(payload)
            except Exception as exc:  # noqa: BLE001
                data = pickle.dumps(("error", f"result of {what} cannot be returned: {exc}", False))
            with os.fdopen(wfd, "wb") as out:
                out.write(data)
        except BaseException:  # noqa: BLE001
            code = 1
        finally:
            os._exit(code)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as inp:
        data = inp.read()
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        name = signal_mod.Signals(sig).name if sig in signal_mod.Signals._value2member_map_ else str(sig)
        raise ChildWriterFailed(f"the process writing {what} crashed ({name})", signal_name=name)
    try:
        payload = pickle.loads(data)
    except Exception:  # noqa: BLE001 - the child died before reporting
        raise ChildWriterFailed(f"the process writing {what} ended without a result (exit status "
                                f"{os.waitstatus_to_exitcode(status)})") from None
    if payload[0] == "ok":
        return payload[1]
    raise ChildWriterFailed(payload[1], disk_full=payload[2])


#: A write runs in this process only when the disk keeps room to spare: at least ``ISOLATE_FACTOR`` times the write's
#: expected size (and its worst-case size) plus ``ISOLATE_RESERVE_BYTES`` free. Any tighter disk gets a child process
#: (:func:`run_in_child`), so HDF5 crashing on ENOSPC can only take the child down. The margin covers an estimate
#: that is off by the factor and other processes writing the reserve to the same disk meanwhile.
ISOLATE_FACTOR = 4
ISOLATE_RESERVE_BYTES = 4 << 30


def isolate_mode() -> Optional[bool]:
    """``RELEASE_PLATFORM_WRITER_PROCESS``: ``always`` (True), ``never`` (False) or ``auto`` (None, the default)."""
    mode = os.environ.get("RELEASE_PLATFORM_WRITER_PROCESS", "auto").strip().lower()
    return {"always": True, "never": False}.get(mode)


def should_isolate(expected_bytes: int, free: int, isolate: Optional[bool] = None, *,
                   worst_bytes: Optional[int] = None) -> bool:
    """Whether a write of ``expected_bytes`` (at most ``worst_bytes``, e.g. its uncompressed size) with ``free`` bytes
    free runs in a child process: unless forced (``isolate``, else :func:`isolate_mode`), when the disk is tighter than
    ``ISOLATE_FACTOR`` x ``expected_bytes`` + ``ISOLATE_RESERVE_BYTES``, or than ``worst_bytes`` + that reserve."""
    if isolate is None:
        isolate = isolate_mode()
    if isolate is not None:
        return isolate
    needed = ISOLATE_FACTOR * max(int(expected_bytes), 0)
    if worst_bytes is not None:
        needed = max(needed, int(worst_bytes))
    return free < needed + ISOLATE_RESERVE_BYTES


def atomic_write(final: str | os.PathLike, write: Callable[[Path], Any], *, expected_bytes: int,
                 entity: Optional[str] = None, isolate: Optional[bool] = None, digest: bool = False) -> Any:
    """``write(temporary path)`` then rename onto ``final`` (:func:`atomic_path`, with its ``digest``), for HDF5
    writers.

    Refuses first, in one line, when less than ``expected_bytes`` are free; runs ``write`` in a child process
    (:func:`run_in_child`) unless the disk has room to spare (:func:`should_isolate`), so a disk filling during the
    write crashes no more than that child. Returns what ``write`` returns (it must be picklable when isolated).
    """
    final = Path(final)
    free = check_free_space(final, expected_bytes, entity=entity, what=final.name)
    with atomic_path(final, entity=entity, digest=digest) as tmp:
        if should_isolate(expected_bytes, free, isolate):
            try:
                return run_in_child(lambda: write(tmp), what=final.name)
            except ChildWriterFailed as exc:
                if exc.signal_name and not exc.disk_full and disk_nearly_full(final.parent):
                    exc.disk_full = True  # HDF5 crashes after ENOSPC
                if exc.disk_full:
                    raise
                raise InputError(str(exc), entity=entity, path=final) from None
        return write(tmp)


# --- content digests recorded at commit ---------------------------------------------------------------------

#: The extended attribute holding ``{"sha256", "size", "mtime_ns", "ino"}`` (JSON) of a committed file.
DIGEST_XATTR = "user.release_platform.sha256"
_HASH_BLOCK = 8 << 20
_HEX64 = re.compile(r"[0-9a-f]{64}")


def _sha256_fd(fd: int, block_size: int = _HASH_BLOCK) -> str:
    """SHA-256 of the whole file open at ``fd`` (positioned reads into one reused buffer; the hashing releases the
    GIL)."""
    h = hashlib.sha256()
    buf = bytearray(block_size)
    view = memoryview(buf)
    offset = 0
    while True:
        n = os.preadv(fd, [buf], offset)
        if n <= 0:
            break
        h.update(view[:n])
        offset += n
    return h.hexdigest()


def sha256_file(path: str | os.PathLike, block_size: int = _HASH_BLOCK) -> str:
    """SHA-256 (hex) of the file's content, always read from the file."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        return _sha256_fd(fd, block_size)
    finally:
        os.close(fd)


def _signature(st: os.stat_result) -> dict[str, int]:
    """What a recorded digest is tied to: size, modification time (ns) and inode."""
    return {"size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns), "ino": int(st.st_ino)}


def _record_sha256_fd(fd: int) -> str:
    before = os.fstat(fd)
    digest = _sha256_fd(fd)
    after = os.fstat(fd)
    if _signature(before) == _signature(after):  # nothing wrote the file while it was hashed
        record = json.dumps({"sha256": digest, **_signature(after)}, sort_keys=True).encode()
        try:
            os.setxattr(fd, DIGEST_XATTR, record)
        except OSError:  # no user extended attributes here (or not permitted): consumers hash the file
            pass
    return digest


def record_sha256(path: str | os.PathLike) -> str:
    """Hash a complete file and record the digest on it (:data:`DIGEST_XATTR`) for :func:`file_sha256`; returns
    the digest. Nothing is recorded when the filesystem has no user extended attributes, or when the file changed
    while it was hashed."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        return _record_sha256_fd(fd)
    finally:
        os.close(fd)


def recorded_sha256(path: str | os.PathLike) -> Optional[str]:
    """The SHA-256 recorded on ``path`` when the file still has the size, modification time and inode it had when
    it was hashed; ``None`` when there is no record, it cannot be read, or the file changed since."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:  # record and signature of one inode, whatever happens to the name meanwhile
        raw = os.getxattr(fd, DIGEST_XATTR)
        st = os.fstat(fd)
    except OSError:
        return None
    finally:
        os.close(fd)
    try:
        record = json.loads(raw)
        digest = record["sha256"]
        tied = {key: int(record[key]) for key in ("size", "mtime_ns", "ino")}
    except (ValueError, KeyError, TypeError):
        return None
    if tied != _signature(st) or not isinstance(digest, str) or not _HEX64.fullmatch(digest):
        return None
    return digest


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of ``path``: the digest recorded when it was committed (:func:`recorded_sha256`) if it still belongs
    to the file, else computed from the file's content."""
    return recorded_sha256(path) or sha256_file(path)


# --- advisory locks -------------------------------------------------------------------------------------------


class WriterLock:
    """An exclusive advisory lock (``fcntl.flock``) on ``lock_path`` held while a destination is written.

    ``acquire`` fails at once (never waits) with :class:`WriterBusyError` ``<what> <dest> is being written by pid
    N`` when another process holds it. The lock file records the holder's pid and host; it is never removed (removing
    a lock file lets two writers lock two different files). Re-entrant within one object; the lock is released when
    the object is released or the process ends (the kernel drops it, so a killed writer never leaves a stale lock).
    """

    def __init__(self, lock_path: str | os.PathLike, *, dest: str | os.PathLike, what: str):
        self.lock_path = Path(lock_path)
        self.dest = os.fspath(dest)
        self.what = what
        self._fd: Optional[int] = None
        self._depth = 0
        self._guard = threading.RLock()

    def holder(self) -> Optional[int]:
        """The pid recorded in the lock file (the current or last holder), if readable."""
        try:
            text = self.lock_path.read_text()
        except OSError:
            return None
        m = re.match(r"\s*(\d+)", text)
        return int(m.group(1)) if m else None

    def acquire(self) -> "WriterLock":
        with self._guard:
            return self._acquire()

    def _acquire(self) -> "WriterLock":
        if self._fd is not None:
            self._depth += 1
            return self
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            pid = self.holder()
            by = f"pid {pid}" if pid is not None else "another process"
            raise WriterBusyError(f"{self.what} {self.dest} is being written by {by}; try again when it has finished",
                                  pid=pid) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        self._fd, self._depth = fd, 1
        return self

    def release(self) -> None:
        with self._guard:
            self._release()

    def _release(self) -> None:
        if self._fd is None:
            return
        self._depth -= 1
        if self._depth > 0:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> "WriterLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


_SHARED: dict[str, WriterLock] = {}
_SHARED_GUARD = threading.Lock()


def shared_lock(lock_path: str | os.PathLike, *, dest: str | os.PathLike, what: str) -> WriterLock:
    """The one :class:`WriterLock` of this process for ``lock_path``: re-entrant across callers in this process (an
    flock taken twice by one process through two descriptors would refuse itself), exclusive against others."""
    key = os.path.abspath(lock_path)
    with _SHARED_GUARD:
        lock = _SHARED.get(key)
        if lock is None:
            lock = _SHARED[key] = WriterLock(key, dest=dest, what=what)
        return lock
