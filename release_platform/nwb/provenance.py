"""What made a written file: the provenance record every NWB writer stores in ``general/source_script``
(package, version, git revision, writer, parameters, SHA-256 digests of the inputs), and reading it back."""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import subprocess
from pathlib import Path
from typing import Any, Mapping, Optional

import h5py
import numpy as np

import release_platform
from release_platform.atomic import file_sha256

__all__ = ["input_digests", "git_revision", "provenance_record", "provenance_json", "read_provenance"]


def input_digests(inputs: Mapping[str, str | os.PathLike | None]) -> dict[str, dict[str, Any]]:
    """``{name: {file, bytes, sha256}}`` for each input file (directories: one entry per file inside).

    Only file names are recorded (not directories), so the record does not depend on where the inputs
    live. ``None`` entries are skipped. A file whose producer recorded its digest when it committed it
    (:func:`release_platform.atomic.file_sha256`: still the same size, modification time and inode) is not read
    again; any other file is hashed.
    """
    out: dict[str, dict[str, Any]] = {}
    for name in sorted(inputs):
        p = inputs[name]
        if p is None:
            continue
        p = Path(p)
        if p.is_dir():
            for f in sorted(q for q in p.rglob("*") if q.is_file()):
                out[f"{name}/{f.relative_to(p).as_posix()}"] = {"file": f.name, "bytes": f.stat().st_size, "sha256": file_sha256(f)}
        elif p.is_file():
            out[name] = {"file": p.name, "bytes": p.stat().st_size, "sha256": file_sha256(p)}
        else:
            out[name] = {"file": p.name, "bytes": None, "sha256": None}
    return out


@functools.lru_cache(maxsize=1)
def git_revision() -> Optional[str]:
    """The git commit of the package source, or ``None`` when not in a git checkout (read-only query)."""
    src = Path(release_platform.__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", os.fspath(src), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    rev = out.stdout.strip()
    return rev if out.returncode == 0 and rev else None


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return _plain(value.item())
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, os.PathLike):
        return Path(value).name
    if hasattr(value, "model_dump"):
        return _plain(value.model_dump(mode="json"))
    return value


def provenance_record(
    *,
    writer: str,
    parameters: Mapping[str, Any] | None = None,
    inputs: Mapping[str, str | os.PathLike | None] | None = None,
    digests: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """What made a file: package, version, git revision, writer, parameters and input SHA-256 digests."""
    return {
        "package": "release_platform",
        "version": release_platform.__version__,
        "git_revision": git_revision(),
        "writer": writer,
        "parameters": _plain(dict(parameters or {})),
        "inputs": dict(digests) if digests is not None else input_digests(inputs or {}),
    }


def provenance_json(record: Mapping[str, Any]) -> str:
    return json.dumps(_plain(record), sort_keys=True, indent=1, allow_nan=False)


def read_provenance(path: str | os.PathLike) -> dict[str, Any]:
    """The provenance record stored in a written file's ``general/source_script``."""
    with h5py.File(path, "r") as fh:
        raw = fh["general/source_script"][()]
    return json.loads(raw.decode() if isinstance(raw, bytes) else raw)
