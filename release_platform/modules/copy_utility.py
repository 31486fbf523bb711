"""Copy utility stage: copy files (or directory trees) to their destinations and prove it with digests.

Input JSON (the AllenSDK ``copy_utility`` fields)::

    {"files": [{"source": "/data/a.nwb", "destination": "/release/a.nwb", "key": "free text"}, ...],
     "hasher_key": "sha256",             # sha256 | sha3_256 | blake2b | md5 | dandi-etag | null (no digests)
     "make_parent_dirs": true,           # else a missing destination directory is an error
     "chmod": 644,                       # octal digits (default 644), applied to copied files; created directories
                                         # get it plus x wherever r is set; null: 644 for files
     "allow_group_write": false,         # a chmod with group/other write (e.g. 775) is refused unless this is true
     "raise_if_comparison_fails": true,  # false: keep the copy, warn and record comparison_passed = false
     "use_rsync": true,                  # accepted for compatibility; copies are always done in-process
     "max_workers": 2}

The mode is parsed by :func:`~release_platform.release.modes.parse_mode` (the default too): at most 777, owner
read required, no group/other write without ``allow_group_write``. A source's mode is never changed: an entry whose
destination is its source (the same path, or a hard link of it) is refused, and so are two entries with one
destination, an entry writing a file another entry reads, and a directory copied into itself.

Each file is read once (the selected digest plus SHA-256, BLAKE2b and the DANDI etag), written to
``<destination>.inprogress``, fsynced, re-read and compared, then renamed; an unchanged destination (same size
and digest) is not rewritten. A directory source is copied recursively *into* ``destination`` (no rsync-style
nesting), every file verified the same way, and the two trees are then compared recursively by relative path
and digest (fixing the AllenSDK comparison, which paired absolute paths and never compared contents).

Output JSON: ``{"files": [{source, destination, key, kind: file|directory, source_hash, destination_hash,
comparison_passed, size, sha256, blake2b, dandi_etag, copied}]}`` with **hex** digests (AllenSDK wrote lists of
digest bytes). A directory record's hashes are tree digests: the selected digest over the sorted
``<relative path>\\0<file digest>\\n`` lines; its ``files`` lists every file's record.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import ClassVar, Literal, Optional, Union

import pydantic

from release_platform.errors import InputError
from release_platform.modules._harness import main_for
from release_platform.release.copy import CopyEntry, CopyRecord, compare_trees, copy_files, tree_entries
from release_platform.release.modes import directory_mode, parse_mode
from release_platform.release.paths import SafeRoot, has_dotdot, is_within

HasherKey = Literal["sha256", "sha3_256", "blake2b", "md5", "dandi-etag"]


class FileSpec(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    source: str
    destination: str
    key: Optional[str] = None


class Inputs(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    files: list[FileSpec]
    use_rsync: bool = True
    hasher_key: Optional[HasherKey] = "sha256"
    raise_if_comparison_fails: bool = True
    make_parent_dirs: bool = True
    allow_group_write: bool = False  # declared before chmod: its validator reads it
    chmod: Optional[Union[int, str]] = pydantic.Field(644, validate_default=True)  # octal digits; 644 means 0o644
    max_workers: int = pydantic.Field(2, ge=1, le=64)
    log_level: Optional[str] = None

    OUTPUT_KEYS: ClassVar[frozenset[str]] = frozenset({"destination"})

    @pydantic.field_validator("chmod")
    @classmethod
    def _octal_digits(cls, value: Optional[Union[int, str]], info: pydantic.ValidationInfo) -> Optional[int]:
        if value is None:
            return None
        return parse_mode(value, allow_group_write=bool(info.data.get("allow_group_write")), what="chmod")


def _algorithms(hasher_key: Optional[str]) -> tuple[str, ...]:
    if hasher_key is None:
        return ()
    base = ("sha256", "blake2b", "dandi_etag")
    key = "dandi_etag" if hasher_key == "dandi-etag" else hasher_key
    return (key, *[a for a in base if a != key])


def _tree_digest(records: list[tuple[str, Optional[str]]], algorithm: str) -> Optional[str]:
    if any(d is None for _, d in records):
        return None
    h = hashlib.new("md5" if algorithm == "dandi_etag" else algorithm)
    for rel, digest in sorted(records):
        h.update(f"{rel}\0{digest}\n".encode())
    return h.hexdigest()


def _prepare_parent(dest: Path, make_parent_dirs: bool, mode: Optional[int]) -> list[Path]:
    """Create missing parents of ``dest`` (returns the created ones, top first)."""
    created = []
    parent = dest.parent
    while not parent.exists():
        created.append(parent)
        parent = parent.parent
    if created and not make_parent_dirs:
        raise InputError("destination directory does not exist (make_parent_dirs is false)", path=dest.parent)
    for d in reversed(created):
        d.mkdir()
        if mode is not None:
            os.chmod(d, directory_mode(mode))
    return list(reversed(created))


def _record(spec: FileSpec, kind: str, algorithm: Optional[str], source_hash, destination_hash, passed: bool,
            size: int, copied: bool, digests=None) -> dict:
    out = {"source": spec.source, "destination": spec.destination, "key": spec.key, "kind": kind,
           "hasher_key": algorithm, "source_hash": source_hash, "destination_hash": destination_hash,
           "comparison_passed": passed, "size": size, "copied": copied}
    if digests is not None:
        out.update({"sha256": digests.sha256, "blake2b": digests.blake2b, "dandi_etag": digests.dandi_etag})
    return out


def _mismatch(message: str, raise_if: bool, path) -> None:
    if raise_if:
        raise InputError(message, path=path)
    warnings.warn(f"{path}: {message}", UserWarning, stacklevel=3)


def _copy_file(spec: FileSpec, inputs: Inputs, algos: tuple[str, ...]) -> dict:
    src, dest = Path(spec.source), Path(spec.destination)
    _prepare_parent(dest, inputs.make_parent_dirs, inputs.chmod)
    root = SafeRoot(dest.parent, create=False)
    report = copy_files([CopyEntry(str(src.resolve()), dest.name, spec.key)], root, mode=inputs.chmod if inputs.chmod is not None
                        else 0o644, max_workers=1, verify="sha256" if algos else "size", rehash=True, algorithms=algos or ("sha256",),
                        on_mismatch="raise" if inputs.raise_if_comparison_fails else "keep")
    rec: CopyRecord = report.records[0]
    if not algos:
        return _record(spec, "file", None, None, None, True, rec.digests.size, rec.copied)
    key = algos[0]
    src_hash = rec.digests.get(key)
    dst_hash = rec.destination_digest if rec.copied else src_hash
    if not rec.comparison_passed:
        _mismatch(f"{key} of the copy differs from the source's", inputs.raise_if_comparison_fails, dest)
    return _record(spec, "file", inputs.hasher_key, src_hash, dst_hash, rec.comparison_passed, rec.digests.size, rec.copied,
                   rec.digests)


def _copy_tree(spec: FileSpec, inputs: Inputs, algos: tuple[str, ...]) -> dict:
    src, dest = Path(spec.source), Path(spec.destination)
    if dest.exists() and not dest.is_dir():
        raise InputError("source is a directory but the destination is a file", path=dest)
    _prepare_parent(dest, inputs.make_parent_dirs, inputs.chmod)
    created_top = not dest.exists()
    dest.mkdir(exist_ok=True)
    dir_mode = directory_mode(inputs.chmod) if inputs.chmod is not None else 0o755
    if created_top and inputs.chmod is not None:
        os.chmod(dest, dir_mode)
    existing = {dirpath for dirpath, _, _ in os.walk(dest, followlinks=False)}
    entries = [CopyEntry(e.source, e.destination.split("/", 1)[1], e.key) for e in tree_entries(src, "_", key=spec.key)]
    root = SafeRoot(dest, create=False, dir_mode=dir_mode)
    report = copy_files(entries, root, mode=inputs.chmod if inputs.chmod is not None else 0o644, max_workers=inputs.max_workers,
                        verify="sha256" if algos else "size", rehash=True, algorithms=algos or ("sha256",),
                        on_mismatch="raise" if inputs.raise_if_comparison_fails else "keep")
    if inputs.chmod is not None:  # directories this copy created get the configured mode (mkdir is subject to umask)
        for dirpath, dirnames, _ in os.walk(dest, followlinks=False):
            for d in dirnames:
                path = os.path.join(dirpath, d)
                if path not in existing and not os.path.islink(path):
                    os.chmod(path, dir_mode)
    key = algos[0] if algos else "sha256"
    problems = compare_trees(src, dest, key)
    passed = not problems and all(r.comparison_passed for r in report.records)
    if not passed:
        _mismatch("directory copy differs from its source: " + "; ".join(problems[:10]), inputs.raise_if_comparison_fails, dest)
    files = [_record(FileSpec(source=r.source, destination=str(dest / r.destination), key=spec.key), "file",
                     inputs.hasher_key, r.digests.get(key) if algos else None,
                     (r.destination_digest if r.copied else r.digests.get(key)) if algos else None,
                     r.comparison_passed, r.digests.size, r.copied, r.digests if algos else None)
             for r in report.records]
    rels = [(r.destination, r.digests.get(key)) for r in report.records]
    dst_rels = [(r.destination, f["destination_hash"]) for r, f in zip(report.records, files)]
    out = _record(spec, "directory", inputs.hasher_key, _tree_digest(rels, key) if algos else None,
                  _tree_digest(dst_rels, key) if algos else None, passed, report.bytes_total,
                  any(r.copied for r in report.records))
    out["files"] = files
    out["problems"] = problems
    return out


def _check_overlaps(files: list[FileSpec]) -> None:
    """Refuse entries that would write their own source, another entry's source or another entry's destination."""
    real = [(os.path.realpath(f.source), os.path.realpath(f.destination), os.path.isdir(f.source)) for f in files]
    for i, (spec, (src, dst, is_dir)) in enumerate(zip(files, real)):
        if os.path.exists(spec.destination) and os.path.samefile(spec.source, spec.destination):
            raise InputError(f"files[{i}]: destination is the source itself ({spec.source}); refused, and the source "
                             "is left as it is", entity=spec.key, path=spec.destination)
        if is_dir and is_within(dst, src):
            raise InputError(f"files[{i}]: destination is inside the source directory {spec.source}; refused",
                             entity=spec.key, path=spec.destination)
        for j, (other, (osrc, odst, odir)) in enumerate(zip(files, real)):
            if j == i:
                continue
            if j > i and (dst == odst or ((is_dir or odir) and (is_within(dst, odst) or is_within(odst, dst)))):
                what = f"both write {dst}" if dst == odst else \
                    f"write into each other's destination ({spec.destination}, {other.destination})"
                raise InputError(f"files[{i}] and files[{j}] {what}; refused", entity=spec.key, path=spec.destination)
            if dst == osrc or (odir and is_within(dst, osrc)) or (
                    os.path.exists(spec.destination) and os.path.exists(other.source)
                    and os.path.samefile(spec.destination, other.source)):
                raise InputError(f"files[{i}] writes {spec.destination}, which files[{j}] reads ({other.source}); "
                                 "refused", entity=spec.key, path=spec.destination)


def run(inputs: Inputs) -> dict:
    for spec in inputs.files:
        for label, value in (("source", spec.source), ("destination", spec.destination)):
            if has_dotdot(value):
                raise InputError(f"{label} path contains '..'; refused", entity=spec.key, path=value)
        if not os.path.exists(spec.source):
            raise InputError("source does not exist", entity=spec.key, path=spec.source)
        if spec.destination.endswith(os.sep) or (os.path.isdir(spec.destination) and os.path.isfile(spec.source)):
            raise InputError("destination must be the full path of the copy, not a directory", entity=spec.key,
                             path=spec.destination)
    _check_overlaps(inputs.files)
    algos = _algorithms(inputs.hasher_key)
    records = []
    for spec in inputs.files:
        try:
            if os.path.isdir(spec.source):
                records.append(_copy_tree(spec, inputs, algos))
            else:
                records.append(_copy_file(spec, inputs, algos))
        except InputError as exc:
            raise exc.with_entity(spec.key) if spec.key else exc
    return {"files": records, "use_rsync_ignored": inputs.use_rsync}


if __name__ == "__main__":
    raise SystemExit(main_for(Inputs, run, "Copy files to their release destinations and verify them by digest."))
