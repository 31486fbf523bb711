"""Copy a cell's NWB file into the storage root: atomic, read back and compared (SHA-256)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from release_platform.errors import InputError
from release_platform.storage import atomic_path

__all__ = ["copy_verified"]

_BLOCK = 1 << 22


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def copy_verified(source: str | os.PathLike, target: str | os.PathLike) -> str:
    """Copy ``source`` to ``target`` (``<target>.inprogress`` then rename) and return its SHA-256; the copy is
    read back and must hash the same. An unchanged target is left alone."""
    source, target = Path(source), Path(target)
    if not source.is_file():
        raise InputError("file to copy is missing", path=source)
    digest = hashlib.sha256()
    if target.is_file() and target.stat().st_size == source.stat().st_size:
        expected = _sha256(source)
        if _sha256(target) == expected:
            return expected
    with atomic_path(target) as tmp:
        with open(source, "rb") as src, open(tmp, "wb") as dst:
            while block := src.read(_BLOCK):
                digest.update(block)
                dst.write(block)
        if _sha256(tmp) != digest.hexdigest():
            raise InputError(f"copy of {source} does not read back identical", path=tmp)
    return digest.hexdigest()
