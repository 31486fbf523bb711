"""Storage root and atomic writes.

Every artifact lives under one root (``RELEASE_PLATFORM_STORAGE``, default ``.release_platform/storage``)
at ``<root>/<asset path>/<partition key>/...``. Writes go to a temporary name unique to the writer
(``<name>.<pid>-<random>.inprogress``, :mod:`release_platform.atomic`) and are renamed into place only once
complete, so a failure never leaves a partial file under the final name.

The root may also be an fsspec URL (``s3://bucket/prefix``; ``RELEASE_PLATFORM_STORAGE_ENDPOINT_URL`` for an
S3-compatible store). Science code still reads and writes local files: :func:`storage_root` is then the local
scratch copy of the root (``RELEASE_PLATFORM_SCRATCH``, default ``<home>/scratch/<url>``) and
:func:`remote_storage` the :class:`~release_platform.staging.RemoteRoot` that stages files in and writes them back
(see :mod:`release_platform.staging`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from release_platform.atomic import LOCK_SUFFIX, TEMP_SUFFIX, WriterLock, atomic_path, shared_lock
from release_platform.staging import RemoteRoot, is_remote_url, remote_root, scratch_for

__all__ = ["platform_home", "storage_url", "storage_root", "remote_storage", "artifact_dir", "atomic_path", "partition_lock", "INPROGRESS_SUFFIX"]

DEFAULT_HOME = Path(".release_platform")
LOCKS_DIR = ".locks"


def platform_home() -> Path:
    """Directory holding the embedded LIMS, the Dagster instance and the default storage root."""
    return Path(os.environ.get("RELEASE_PLATFORM_HOME", DEFAULT_HOME)).absolute()


def storage_url(root: Optional[str] = None) -> str:
    """The configured root as given: ``root``, else ``RELEASE_PLATFORM_STORAGE``, else ``<home>/storage`` (a local
    path is made absolute; ``file://`` URLs become paths)."""
    raw = root or os.environ.get("RELEASE_PLATFORM_STORAGE") or str(platform_home() / "storage")
    if raw.startswith("file://"):
        raw = raw[len("file://"):]
    return raw if is_remote_url(raw) else str(Path(raw).absolute())


def remote_storage(root: Optional[str] = None, *, endpoint_url: Optional[str] = None) -> Optional[RemoteRoot]:
    """The :class:`~release_platform.staging.RemoteRoot` of an fsspec root, ``None`` for a local root."""
    url = storage_url(root)
    if not is_remote_url(url):
        return None
    return remote_root(url, scratch_for(url, platform_home()), endpoint_url=endpoint_url)


def storage_root(root: Optional[str] = None) -> Path:
    """The local directory artifacts are read from and written to: the root itself, or for an fsspec root its
    local scratch copy."""
    remote = remote_storage(root)
    return Path(storage_url(root)) if remote is None else remote.scratch


def artifact_dir(root: str | os.PathLike, asset_path: str, partition_key: str) -> Path:
    """``<root>/<asset path>/<partition key>``, created if missing."""
    path = Path(root) / asset_path / str(partition_key)
    path.mkdir(parents=True, exist_ok=True)
    return path


INPROGRESS_SUFFIX = TEMP_SUFFIX


def partition_lock(root: str | os.PathLike, asset_path: str, partition_key: str) -> WriterLock:
    """The advisory write lock of one partition's output directory ``<root>/<asset path>/<partition key>`` (this
    process's shared instance; a second process fails with ``partition output <dir> is being written by pid N``).

    The lock file lives outside the directory, at ``<root>/.locks/<asset path>/<partition key>.lock``, so nothing
    that lists the directory sees it.
    """
    dest = Path(root) / asset_path / str(partition_key)
    return shared_lock(Path(root) / LOCKS_DIR / asset_path / f"{partition_key}{LOCK_SUFFIX}", dest=dest,
                       what="partition output")
