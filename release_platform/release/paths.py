"""Path safety for releases: refuse ``..``, confine sources to their roots, never write through a symlink.

* :func:`release_parts` checks a release-relative path (POSIX, no absolute path, no ``.``/``..``/empty
  segment, no backslash or NUL) and splits it.
* :func:`check_source` checks a storage path named by a metadata table: a path containing ``..`` is
  refused outright; the path must resolve (symlinks followed) to a regular file inside one of the source
  roots, so a symlink pointing out of the storage root is refused.
* :class:`SafeRoot` writes under a release root through directory file descriptors: each directory below the
  root is opened with ``O_NOFOLLOW``, so a symlinked directory (or one swapped in for a directory while a
  release runs) is refused instead of followed, and a file is created with ``O_EXCL | O_NOFOLLOW`` beside its
  final name and renamed onto it (a rename replaces a symlink at the final name, it never writes through it).
  Nothing is ever written outside the root.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path
from typing import Iterator, Optional, Sequence

from release_platform.atomic import open_temp
from release_platform.errors import InputError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def release_parts(relpath: str) -> tuple[str, ...]:
    """Split a release-relative POSIX path; InputError if it could escape the root or is malformed."""
    if not isinstance(relpath, str) or not relpath:
        raise InputError(f"release path must be a non-empty string, got {relpath!r}")
    if "\x00" in relpath or "\\" in relpath:
        raise InputError("release path contains a NUL or backslash", path=relpath)
    if relpath.startswith("/"):
        raise InputError("release path must be relative", path=relpath)
    parts = tuple(relpath.split("/"))
    bad = [p for p in parts if p in ("", ".", "..")]
    if bad:
        raise InputError(f"release path has a {bad[0]!r} segment", path=relpath)
    return parts


def has_dotdot(path: str | os.PathLike) -> bool:
    return ".." in Path(os.fspath(path)).parts


def is_within(path: str | os.PathLike, root: str | os.PathLike) -> bool:
    path, root = os.fspath(path), os.fspath(root)
    return os.path.commonpath([path, root]) == root


def check_source(path: str | os.PathLike, roots: Sequence[str | os.PathLike], *, entity: Optional[str] = None) -> Path:
    """The real path of a source file, checked: no ``..``, inside a root after resolving symlinks, a regular file."""
    raw = os.fspath(path)
    if has_dotdot(raw):
        raise InputError("storage path contains '..'; refused", entity=entity, path=raw)
    real = os.path.realpath(raw)
    real_roots = [os.path.realpath(r) for r in roots]
    if not any(is_within(real, r) for r in real_roots):
        where = ", ".join(real_roots) or "(no source root)"
        how = " through a symlink" if os.path.realpath(os.path.abspath(raw)) != os.path.abspath(raw) else ""
        raise InputError(f"resolves{how} to {real}, outside the source root ({where}); refused", entity=entity, path=raw)
    try:
        st = os.stat(real)
    except FileNotFoundError:
        raise InputError("file is missing", entity=entity, path=raw) from None
    if not stat.S_ISREG(st.st_mode):
        raise InputError("not a regular file", entity=entity, path=raw)
    return Path(real)


class SafeRoot:
    """A directory under which files are written without ever following a symlink out of it."""

    def __init__(self, root: str | os.PathLike, *, create: bool = True, dir_mode: int = 0o755):
        root = Path(os.fspath(root)).absolute()
        if has_dotdot(root):
            root = Path(os.path.normpath(root))
        if create:
            root.mkdir(parents=True, exist_ok=True)
        if not root.is_dir():
            raise InputError("release root is not a directory", path=root)
        self.path = root
        self.dir_mode = dir_mode

    def __repr__(self) -> str:
        return f"SafeRoot({str(self.path)!r})"

    @contextlib.contextmanager
    def directory(self, parts: Sequence[str], *, create: bool = True) -> Iterator[int]:
        """A file descriptor of ``root/parts...`` (created if missing); InputError on a symlink or non-directory."""
        fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
        try:
            for i, name in enumerate(parts):
                if name in ("", ".", "..") or "/" in name:
                    raise InputError(f"bad path segment {name!r}", path=self.path.joinpath(*parts))
                try:
                    nfd = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(name, self.dir_mode, dir_fd=fd)
                    nfd = self._open_child(fd, name, parts[: i + 1])
                except OSError as exc:
                    raise self._refusal(exc, parts[: i + 1]) from None
                os.close(fd)
                fd = nfd
            yield fd
        finally:
            os.close(fd)

    def _open_child(self, fd: int, name: str, parts: Sequence[str]) -> int:
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=fd)
        except OSError as exc:
            raise self._refusal(exc, parts) from None

    def _refusal(self, exc: OSError, parts: Sequence[str]) -> InputError:
        where = self.path.joinpath(*parts)
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
            if os.path.islink(where):
                return InputError("is a symlink; a release never follows a symlink out of its root", path=where)
            return InputError("is not a directory", path=where)
        return InputError(f"cannot open directory: {exc.strerror}", path=where)

    def file_path(self, relpath: str) -> Path:
        return self.path.joinpath(*release_parts(relpath))

    def lstat(self, relpath: str) -> Optional[os.stat_result]:
        """``lstat`` of a file under the root, None if it (or a parent) is missing; refuses symlinked parents."""
        parts = release_parts(relpath)
        try:
            with self.directory(parts[:-1], create=False) as dfd:
                return os.stat(parts[-1], dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def read_bytes(self, relpath: str) -> Optional[bytes]:
        """Content of a regular file under the root (None if missing); never follows a symlink."""
        parts = release_parts(relpath)
        try:
            with self.directory(parts[:-1], create=False) as dfd:
                fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), dir_fd=dfd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise InputError("is a symlink; refused", path=self.file_path(relpath)) from None
            raise
        with os.fdopen(fd, "rb") as fh:
            return fh.read()

    def write_bytes(self, relpath: str, data: bytes, *, mode: int = 0o644) -> None:
        """Write ``data`` atomically (temporary name, fsync, rename) under the root."""
        parts = release_parts(relpath)
        with self.directory(parts[:-1]) as dfd:
            tmp, fd = open_temp(dfd, parts[-1], mode)
            try:
                with os.fdopen(fd, "wb", closefd=False) as fh:
                    fh.write(data)
                    fh.flush()
                os.fchmod(fd, mode)
                os.fsync(fd)
            except BaseException:
                os.close(fd)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp, dir_fd=dfd)
                raise
            os.close(fd)
            commit(dfd, tmp, parts[-1], where=self.file_path(relpath))

    def unlink(self, relpath: str, *, prune_dirs_below: Sequence[str] = ()) -> bool:
        """Remove a file (or symlink) under the root; then remove its parents while empty, down to
        (excluding) ``prune_dirs_below``. Returns whether a file was removed."""
        parts = release_parts(relpath)
        try:
            with self.directory(parts[:-1], create=False) as dfd:
                st = os.stat(parts[-1], dir_fd=dfd, follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    raise InputError("is a directory, expected a file", path=self.file_path(relpath))
                os.unlink(parts[-1], dir_fd=dfd)
        except FileNotFoundError:
            return False
        keep = len(tuple(prune_dirs_below))
        for depth in range(len(parts) - 1, keep, -1):
            try:
                with self.directory(parts[: depth - 1], create=False) as dfd:
                    os.rmdir(parts[depth - 1], dir_fd=dfd)
            except OSError:
                break
        return True


def commit(dfd: int, tmp: str, name: str, *, where: Path) -> None:
    """Rename ``tmp`` onto ``name`` in directory ``dfd`` and fsync the directory."""
    try:
        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        st = None
    if st is not None and stat.S_ISDIR(st.st_mode):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dfd)
        raise InputError("is a directory, expected a file", path=where)
    if st is not None and os.path.samestat(st, os.stat(tmp, dir_fd=dfd, follow_symlinks=False)):
        # two hard links to one file: rename() would do nothing and leave the temporary name behind
        os.unlink(tmp, dir_fd=dfd)
        return
    os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
    with contextlib.suppress(OSError):
        os.fsync(dfd)
