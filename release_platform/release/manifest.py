"""The release manifest: the AllenSDK cloud-cache ``manifest.json`` format, plus per-file size, sha256 and
dandi-etag.

::

    {
      "project_name": "visual-behavior-ophys",
      "manifest_version": "1.0.1",                       # semver; also in the file name
      "metadata_file_id_column_name": "file_id",
      "data_pipeline": [{"name": "release_platform", "version": "0.1.0", "comment": "..."}],
      "metadata_files": {"<table>": {"url", "version_id", "file_hash", "size", "sha256", "dandi_etag"}},
      "data_files": {"<file id>": {"url", "version_id", "file_hash", "size", "sha256", "dandi_etag"}}
    }

``file_hash`` is the BLAKE2b hex digest (hashlib default, 64 bytes) the AllenSDK cache verifies downloads
with; ``url`` is ``<base url>/<project>/<path in the project directory>``; ``version_id`` (an S3 object
version in AllenSDK releases) is content-derived here — the first 32 hex digits of the file's sha256 — so a
local release needs no object store and the manifest stays deterministic. The file name is
``<project>_manifest_v<semver>.json`` under ``<project>/manifests/``.

:func:`manifest_bytes` is canonical (sorted keys, 2-space indent, trailing newline, no timestamps), so a release
of unchanged inputs writes a byte-identical manifest. :func:`validate_manifest` applies the cloud-cache rules
(§11.1) plus ours; :func:`local_path` is the cache's local path rule (§11.2).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional
from urllib.parse import quote, unquote, urlparse

from release_platform.errors import InputError
from release_platform.release.digests import Digests

REQUIRED_KEYS = ("project_name", "manifest_version", "metadata_file_id_column_name", "data_pipeline")
FILE_SECTIONS = ("metadata_files", "data_files")
FILE_STRING_FIELDS = ("url", "version_id", "file_hash")
FILE_ID_COLUMN = "file_id"

SEMVER_RE = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-((?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*)"
                       r"(?:\.(?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*))*))?$")
_HEX = re.compile(r"^[0-9a-f]+$")
_ETAG = re.compile(r"^[0-9a-f]{32}-\d{1,5}$")


def parse_semver(version: str) -> tuple:
    """A sort key for a semantic version ``MAJOR.MINOR.PATCH[-prerelease]`` (InputError if malformed)."""
    m = SEMVER_RE.match(version) if isinstance(version, str) else None
    if m is None:
        raise InputError(f"version {version!r} is not a semantic version MAJOR.MINOR.PATCH[-prerelease]")
    major, minor, patch, pre = m.groups()
    if pre is None:
        pre_key: tuple = (1,)
    else:
        pre_key = (0, *((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split(".")))
    return int(major), int(minor), int(patch), pre_key


def manifest_filename(project: str, version: str) -> str:
    parse_semver(version)
    return f"{project}_manifest_v{version}.json"


def version_from_filename(name: str) -> str:
    """The semver after the last ``_v`` of a manifest file name (the AllenSDK rule); InputError if none."""
    stem = name[:-5] if name.endswith(".json") else name
    if "_v" not in stem:
        raise InputError(f"manifest file name {name!r} has no '_v<version>'")
    version = stem.rsplit("_v", 1)[1]
    parse_semver(version)
    return version


def latest_manifest(paths: Iterable[str | os.PathLike]) -> Optional[Path]:
    """The manifest with the highest version among ``paths`` (files not named ``*_v<semver>.json`` ignored)."""
    best = None
    for p in paths:
        p = Path(p)
        try:
            key = parse_semver(version_from_filename(p.name))
        except InputError:
            continue
        if best is None or key > best[0]:
            best = (key, p)
    return None if best is None else best[1]


@dataclass(frozen=True)
class FileEntry:
    url: str
    digests: Digests

    def as_dict(self) -> dict:
        d = self.digests
        return {"url": self.url, "version_id": d.sha256[:32], "file_hash": d.blake2b, "size": d.size,
                "sha256": d.sha256, "dandi_etag": d.dandi_etag}


def file_url(base_url: str, relpath: str) -> str:
    """``<base url>/<release-relative path>``, the path percent-encoded."""
    return base_url.rstrip("/") + "/" + quote(relpath, safe="/-_.~+")


def default_base_url(project: str) -> str:
    """Where the AllenSDK would publish the project: ``https://<project>-data.s3.amazonaws.com``."""
    return f"https://{project}-data.s3.amazonaws.com"


def build_manifest(
    project: str,
    version: str,
    *,
    data_files: Mapping[int | str, FileEntry],
    metadata_files: Mapping[str, FileEntry],
    data_pipeline: Optional[list[dict]] = None,
) -> dict:
    parse_semver(version)
    if data_pipeline is None:
        from release_platform import __version__

        data_pipeline = [{"name": "release_platform", "version": __version__, "comment": ""}]
    return {
        "project_name": project,
        "manifest_version": version,
        "metadata_file_id_column_name": FILE_ID_COLUMN,
        "data_pipeline": data_pipeline,
        "metadata_files": {name: metadata_files[name].as_dict() for name in sorted(metadata_files)},
        "data_files": {str(fid): data_files[fid].as_dict() for fid in sorted(data_files, key=lambda k: int(k))},
    }


def manifest_bytes(manifest: Mapping) -> bytes:
    """The canonical serialization (byte-identical for equal manifests)."""
    return (json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n").encode()


def url_relative_path(url: str) -> str:
    """The URL's path without its first segment (the project name): the path inside the project directory."""
    path = unquote(urlparse(url).path).lstrip("/")
    return path.split("/", 1)[1] if "/" in path else ""


def url_project(url: str) -> str:
    return unquote(urlparse(url).path).lstrip("/").split("/", 1)[0]


def local_path(manifest: Mapping, url: str, cache_dir: str | os.PathLike, *, static_project_dir: bool = False) -> Path:
    """The AllenSDK cache's local path of ``url``: ``<cache_dir>/<project>-<version>/<url path minus its first
    segment>``, or ``<cache_dir>/<project>/...`` with ``static_project_dir`` (a mounted bucket; our release
    root is one)."""
    project, version = manifest["project_name"], manifest["manifest_version"]
    top = project if static_project_dir else f"{project}-{version}"
    return Path(cache_dir) / top / url_relative_path(url)


def validate_manifest(manifest: Any, *, filename: Optional[str] = None) -> list[str]:
    """Every problem of a manifest under the cloud-cache rules and ours (empty if valid)."""
    if not isinstance(manifest, dict):
        return [f"manifest must be a JSON object, got {type(manifest).__name__}"]
    problems = [f"missing required key {k!r}" for k in REQUIRED_KEYS if k not in manifest]
    for k in ("project_name", "manifest_version", "metadata_file_id_column_name"):
        if k in manifest and not isinstance(manifest[k], str):
            problems.append(f"{k} must be a string")
    version = manifest.get("manifest_version")
    if isinstance(version, str):
        try:
            parse_semver(version)
        except InputError as exc:
            problems.append(str(exc))
        if filename is not None:
            try:
                if version_from_filename(filename) != version:
                    problems.append(f"file name {filename!r} does not carry manifest_version {version!r}")
            except InputError as exc:
                problems.append(str(exc))
    pipeline = manifest.get("data_pipeline")
    if "data_pipeline" in manifest and not (isinstance(pipeline, list) and all(
            isinstance(p, dict) and all(isinstance(p.get(k), str) for k in ("name", "version", "comment")) for p in pipeline)):
        problems.append("data_pipeline must be a list of {name, version, comment} strings")
    project = manifest.get("project_name")
    for section in FILE_SECTIONS:
        files = manifest.get(section)
        if not isinstance(files, dict):
            problems.append(f"{section} must be an object")
            continue
        for key, entry in files.items():
            where = f"{section}[{key!r}]"
            if section == "data_files" and not re.fullmatch(r"-?\d+", key):
                problems.append(f"{where}: data file keys are file ids (integers as strings)")
            if not isinstance(entry, dict):
                problems.append(f"{where} must be an object")
                continue
            for f in FILE_STRING_FIELDS:
                if not isinstance(entry.get(f), str):
                    problems.append(f"{where}.{f} must be a string")
            if isinstance(entry.get("file_hash"), str) and not (len(entry["file_hash"]) == 128 and _HEX.match(entry["file_hash"])):
                problems.append(f"{where}.file_hash is not a BLAKE2b hex digest")
            if "size" in entry and not (isinstance(entry["size"], int) and entry["size"] >= 0):
                problems.append(f"{where}.size must be a non-negative integer")
            if "sha256" in entry and not (isinstance(entry["sha256"], str) and len(entry["sha256"]) == 64 and _HEX.match(entry["sha256"])):
                problems.append(f"{where}.sha256 is not a SHA-256 hex digest")
            if "dandi_etag" in entry and not (isinstance(entry["dandi_etag"], str) and _ETAG.match(entry["dandi_etag"])):
                problems.append(f"{where}.dandi_etag is not a DANDI etag")
            url = entry.get("url")
            if isinstance(url, str) and isinstance(project, str):
                if url_project(url) != project:
                    problems.append(f"{where}.url {url!r}: first path segment is not the project name {project!r}")
                elif not url_relative_path(url):
                    problems.append(f"{where}.url {url!r} names no file inside the project")
    return problems


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    """A JSON object that names a key twice is refused (a plain parser keeps the last and hides the first)."""
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def load_manifest(path: str | os.PathLike) -> dict:
    """Read and validate a manifest file; InputError naming the file and listing every problem."""
    path = Path(path)
    try:
        manifest = json.loads(path.read_bytes(), object_pairs_hook=_unique_keys)
    except FileNotFoundError:
        raise InputError("manifest not found", path=path) from None
    except (OSError, ValueError) as exc:
        raise InputError(f"manifest is unreadable: {exc}", path=path) from None
    problems = validate_manifest(manifest, filename=path.name)
    if problems:
        raise InputError("invalid manifest: " + "; ".join(problems[:20]) + (" ..." if len(problems) > 20 else ""), path=path)
    return manifest


def entry_digests(entry: Mapping) -> Digests:
    """The digests a manifest entry records (size/sha256/etag may be absent in AllenSDK manifests)."""
    return Digests(int(entry.get("size", -1)), entry.get("sha256"), entry.get("file_hash"), entry.get("dandi_etag"))
