"""Storage root and atomic writes.

Every artifact lives under one root (``RELEASE_PLATFORM_STORAGE``, default ``.release_platform/storage``)
at ``<root>/<asset path>/<partition key>/...``. Writes go to a temporary name unique to the writer
(``<name>.<pid>-<random>.inprogress``, :mod:`release_platform.atomic`) and are renamed into place only once
complete, so a failure never leaves a partial file under the final name.
"""

from __future__ import annotations

import os
from pathlib import Path

from release_platform.atomic import LOCK_SUFFIX, TEMP_SUFFIX, WriterLock, atomic_path, shared_lock

__all__ = ["platform_home", "storage_root", "artifact_dir", "atomic_path", "partition_lock", "INPROGRESS_SUFFIX"]

DEFAULT_HOME = Path(".release_platform")
LOCKS_DIR = ".locks"


def platform_home() -> Path:
    """Directory holding the embedded LIMS, the Dagster instance and the default storage root."""
    return Path(os.environ.get("RELEASE_PLATFORM_HOME", DEFAULT_HOME)).absolute()


def storage_root() -> Path:
    return Path(os.environ.get("RELEASE_PLATFORM_STORAGE", platform_home() / "storage")).absolute()


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
