"""Storage root and atomic writes.

Every artifact lives under one root (``RELEASE_PLATFORM_STORAGE``, default ``.release_platform/storage``)
at ``<root>/<asset path>/<partition key>/...``. Writes go to ``<name>.inprogress`` and are renamed
into place only once complete, so a failure never leaves a partial file under the final name.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

DEFAULT_HOME = Path(".release_platform")


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


INPROGRESS_SUFFIX = ".inprogress"


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it onto ``final`` only if the block succeeds.

    On any exception the temporary file is removed and the previous ``final`` (if any) is untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(final.name + INPROGRESS_SUFFIX)
    if tmp.exists():
        tmp.unlink()
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"{tmp}: the writer produced no file")
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
