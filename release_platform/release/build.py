"""Build a release: discover data files through the metadata tables, copy them and the tables into a layout,
write the manifest.

The Allen way: the release does not know the NWB writers; every release table with ``file_id`` / ``file_path``
columns names its rows' data files, and those are what is released (rows with a null ``file_id`` have no file of
their own). In the released CSVs ``file_path`` is rewritten to the file's path inside the project directory, so
internal storage paths never leak into a public release.

Entry points:

* :func:`discover_tables` / :func:`load_tables` — the release-level tables under a storage root
  (``<root>/<asset>/<table>.parquet``, else ``.csv``);
* :func:`make_release` — plan, copy (verified, resumable, skipping unchanged files), write CSVs and manifest,
  prune files of earlier versions that are no longer released, report the changelog against the previous
  version;
* :func:`stage_files` — the per-session step of the Dagster assets: copy and digest one session's files into a
  staging directory and record them; :func:`make_release` with ``staged=`` then assembles a release from those
  records by hard-linking the staged files (no second copy, no re-hash).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import pandas as pd

from release_platform.atomic import WriterLock, sweep_dead_writers
from release_platform.errors import InputError
from release_platform.release import projects
from release_platform.release.changelog import Changelog, compare_manifests
from release_platform.release.copy import CopyEntry, CopyReport, Ledger, Progress, Verify, copy_files
from release_platform.release.digests import Digests, digest_bytes
from release_platform.release.layouts import (
    FILE_ROLES,
    MANIFESTS_DIR,
    AllenLayout,
    Layout,
    ReleaseItem,
    check_project_name,
    get_layout,
)
from release_platform.release.manifest import (
    FileEntry,
    build_manifest,
    default_base_url,
    file_url,
    manifest_bytes,
    parse_semver,
    url_relative_path,
    version_from_filename,
)
from release_platform.release.paths import SafeRoot, check_source, release_parts

LEDGER_DIR = ".release_platform"
STAGED_RECORDS = "release_records.json"
_MAX_LISTED = 10


LOCK_NAME = "release.lock"


def ledger_relpath(project: str) -> str:
    return f"{LEDGER_DIR}/{project}.ledger.jsonl"


def _sweep(top: Path) -> None:
    """Remove temporary files of writers that died under ``top`` (the caller holds the writer lock)."""
    if top.is_dir() and not top.is_symlink():
        sweep_dead_writers(top)


def writer_lock(root: SafeRoot, what: str = "release") -> WriterLock:
    """The advisory lock every writer of the release root ``root`` takes (``<root>/.release_platform/release.lock``):
    a second writer fails at once with ``release <root> is being written by pid N``."""
    with root.directory((LEDGER_DIR,)):
        pass  # created if missing; a symlink there is refused
    return WriterLock(root.path / LEDGER_DIR / LOCK_NAME, dest=root.path, what=what)


# --- tables ---------------------------------------------------------------------------------------------------


def discover_tables(storage_root: str | os.PathLike, tables: Optional[Sequence[str]] = None) -> dict[str, Path]:
    """Release-level tables under a storage root: ``<root>/<asset dir>/<table>.parquet`` (else ``.csv``).

    Only the known release tables (the metadata package's registry and
    :data:`~release_platform.release.layouts.METADATA_ONLY_TABLES`) are looked for, unless ``tables`` names others. InputError if a named table is missing or a table is found in two asset directories.
    """
    from release_platform.metadata.schemas import TABLES

    root = Path(storage_root)
    if not root.is_dir():
        raise InputError("storage root not found", path=root)
    from release_platform.release.layouts import METADATA_ONLY_TABLES

    names = list(tables) if tables else [*TABLES, *METADATA_ONLY_TABLES]
    dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    found: dict[str, Path] = {}
    for name in names:
        for suffix in ("parquet", "csv"):
            hits = [d / f"{name}.{suffix}" for d in dirs if (d / f"{name}.{suffix}").is_file()]
            if len(hits) > 1:
                raise InputError(f"table {name} found in several places: {', '.join(map(str, hits))}", path=root)
            if hits:
                found[name] = hits[0]
                break
        else:
            if tables:
                raise InputError(f"release table {name!r} not found (no <asset>/{name}.parquet or .csv)", path=root)
    return found


def load_tables(paths: Mapping[str, str | os.PathLike]) -> dict[str, pd.DataFrame]:
    """Read tables written by the metadata assets (Parquet, typed) or any CSV with the same columns."""
    from release_platform.metadata.io import read_parquet

    out = {}
    for name, path in paths.items():
        path = Path(path)
        if path.suffix == ".parquet":
            out[name] = read_parquet(name, path)
        else:
            try:
                out[name] = pd.read_csv(path, dtype={"file_path": "string"})
            except (OSError, ValueError) as exc:
                raise InputError(f"{name} CSV is unreadable: {exc}", path=path) from None
    return out


def _plain(value: Any) -> Any:
    if value is None or value is pd.NA:
        return None
    if isinstance(value, float) and value != value:
        return None
    if hasattr(value, "item") and not isinstance(value, (list, tuple, str)):
        try:
            return value.item()
        except (ValueError, AttributeError):
            return value
    return value


def release_items(frames: Mapping[str, pd.DataFrame], *, source_roots: Sequence[str | os.PathLike],
                  check_sources: bool = True) -> tuple[list[ReleaseItem], dict[int, Optional[str]]]:
    """The data files the tables name, checked: (items sorted by file id, subject per file id).

    A file id named by two rows must name one path. Every problem (a null path, ``..`` in a path, a path
    resolving out of the source roots, a missing file) is collected into one InputError.
    """
    items: dict[int, ReleaseItem] = {}
    subjects: dict[int, Optional[str]] = {}
    problems: list[str] = []
    for table in sorted(frames):
        frame = frames[table]
        if "file_id" not in frame.columns or "file_path" not in frame.columns:
            continue
        role = FILE_ROLES.get(table)
        has = frame["file_id"].notna()
        lookup: dict[Any, Any] = {}
        if role is not None and role.subject_via is not None:
            parent, key = role.subject_via
            pframe = frames.get(parent)
            if pframe is not None and {key, "mouse_id"} <= set(pframe.columns):
                lookup = {_plain(k): _plain(v) for k, v in zip(pframe[key], pframe["mouse_id"])}
        wanted = sorted(role.columns() | {"mouse_id"}) if role is not None else list(frame.columns)
        cols = [c for c in wanted if c in frame.columns]
        for row in frame.loc[has, ["file_id", "file_path", *[c for c in cols if c not in ("file_id", "file_path")]]].itertuples(index=False):
            values = dict(zip(["file_id", "file_path", *[c for c in cols if c not in ("file_id", "file_path")]], row))
            fid = int(values.pop("file_id"))
            raw_path = _plain(values.pop("file_path"))
            entity = f"{table} file {fid}"
            if raw_path is None or not str(raw_path).strip():
                problems.append(f"{entity}: file_id is set but file_path is null")
                continue
            try:
                source = str(check_source(raw_path, source_roots, entity=entity)) if check_sources else str(raw_path)
            except InputError as exc:
                problems.append(str(exc))
                continue
            fields = {k: _plain(v) for k, v in values.items()}
            item = ReleaseItem(fid, table, source, fields)
            if fid in items and items[fid].source != source:
                problems.append(f"file id {fid} names two files: {items[fid].source} ({items[fid].table}) and {source} ({table})")
                continue
            items.setdefault(fid, item)
            subject = fields.get("mouse_id")
            if subject is None and role is not None and role.subject_via is not None:
                subject = lookup.get(fields.get(role.subject_via[1]))
            subjects[fid] = None if subject is None else str(subject)
    if problems:
        more = f" (and {len(problems) - _MAX_LISTED} more)" if len(problems) > _MAX_LISTED else ""
        raise InputError(f"{len(problems)} release file problem(s): " + "; ".join(problems[:_MAX_LISTED]) + more)
    return [items[k] for k in sorted(items)], subjects


def released_table_bytes(frame: pd.DataFrame, paths_by_id: Mapping[int, str]) -> bytes:
    """A table's released CSV: AllenSDK style (``index=False``), ``file_path`` = path inside the project."""
    frame = frame.copy()
    if "file_id" in frame.columns and "file_path" in frame.columns:
        ids = frame["file_id"]
        frame["file_path"] = pd.array([paths_by_id.get(int(i)) if pd.notna(i) else None for i in ids], dtype="string")
    return frame.to_csv(index=False, lineterminator="\n").encode()


# --- staging (per session) ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StagedFile:
    """One session file staged for release: where it came from, where it is staged and its digests."""

    file_id: int
    table: str
    source: str
    staged: str  # path relative to the staging directory
    fields: Mapping[str, Any]
    subject: Optional[str]
    digests: Digests

    def as_dict(self) -> dict:
        return {"file_id": self.file_id, "table": self.table, "source": self.source, "staged": self.staged,
                "fields": dict(sorted(self.fields.items())), "subject": self.subject, "digests": self.digests.as_dict()}

    @classmethod
    def from_dict(cls, d: Mapping) -> "StagedFile":
        return cls(int(d["file_id"]), d["table"], d["source"], d["staged"], dict(d["fields"]), d.get("subject"),
                   Digests.from_dict(d["digests"]))


def stage_files(frames: Mapping[str, pd.DataFrame], stage_dir: str | os.PathLike, *,
                source_roots: Sequence[str | os.PathLike], mode: int = 0o644, max_workers: int = 2,
                verify: Verify = "sha256", progress: Optional[Progress] = None) -> tuple[list[StagedFile], CopyReport]:
    """Copy (verified) and digest the data files one session's tables name into ``stage_dir``; write
    ``stage_dir/release_records.json``. Files are staged under their allen path (without the project). Unchanged
    files are skipped (a ledger in the staging directory), and staged files no longer named are removed."""
    items, subjects = release_items(frames, source_roots=source_roots)
    root = SafeRoot(stage_dir)
    layout = AllenLayout()
    planned = {it.file_id: layout.data_path("_", it).split("/", 1)[1] for it in items}
    with writer_lock(root, "staging directory"):
        return _stage_locked(root, items, subjects, planned, mode=mode, max_workers=max_workers, verify=verify,
                             progress=progress)


def _stage_locked(root: SafeRoot, items, subjects, planned, *, mode: int, max_workers: int, verify: Verify,
                  progress: Optional[Progress]) -> tuple[list[StagedFile], CopyReport]:
    _sweep(root.path)
    ledger = Ledger(root, f"{LEDGER_DIR}/staging.ledger.jsonl")
    try:
        report = copy_files([CopyEntry(it.source, planned[it.file_id], str(it.file_id)) for it in items], root,
                            ledger=ledger, mode=mode, max_workers=max_workers, verify=verify, progress=progress)
        stale = ledger.destinations() - set(planned.values())
        for rel in sorted(stale):
            root.unlink(rel)
        ledger.forget(stale)
        ledger.compact()
    finally:
        ledger.close()
    by_dest = {r.destination: r for r in report.records}
    staged = [StagedFile(it.file_id, it.table, it.source, planned[it.file_id], it.fields, subjects.get(it.file_id),
                         by_dest[planned[it.file_id]].digests) for it in items]
    payload = json.dumps([s.as_dict() for s in staged], indent=2, sort_keys=True, default=str) + "\n"
    if root.read_bytes(STAGED_RECORDS) != payload.encode():
        root.write_bytes(STAGED_RECORDS, payload.encode())
    return staged, report


_HEX_LENGTHS = {"sha256": 64, "blake2b": 128}


def _record_problem(record: Any) -> Optional[str]:
    """What is wrong with one staging record (None if it is well formed)."""
    if not isinstance(record, dict):
        return "must be an object"
    for key in ("table", "source", "staged"):
        if not isinstance(record.get(key), str):
            return f"{key} must be a string"
    if not isinstance(record.get("file_id"), int) or isinstance(record.get("file_id"), bool):
        return "file_id must be an integer"
    if not isinstance(record.get("fields", {}), dict):
        return "fields must be an object"
    try:
        release_parts(record["staged"])
    except InputError as exc:
        return f"staged path {record['staged']!r}: {exc.problem}"
    digests = record.get("digests")
    if not isinstance(digests, dict):
        return "digests must be an object"
    size = digests.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        return f"digests.size must be a non-negative integer, got {size!r}"
    for name, length in _HEX_LENGTHS.items():
        value = digests.get(name)
        if value is not None and not (isinstance(value, str) and len(value) == length
                                      and all(c in "0123456789abcdef" for c in value)):
            return f"digests.{name} is not a hex digest"
    return None


def read_staged(stage_dir: str | os.PathLike) -> list[StagedFile]:
    """A staging directory's records, every record checked (types, a safe relative staged path, digests, one
    record per file id): one InputError naming the file, the record and the problem."""
    path = Path(stage_dir) / STAGED_RECORDS
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError("staging records not found (stage the session first)", path=path) from None
    except (OSError, ValueError) as exc:
        raise InputError(f"staging records are unreadable: {exc}", path=path) from None
    if not isinstance(data, list):
        raise InputError(f"staging records must be a list, got {type(data).__name__}", path=path)
    out: list[StagedFile] = []
    seen: set[int] = set()
    for i, record in enumerate(data):
        problem = _record_problem(record)
        label = f"record {i}" + (f" (file {record['file_id']})" if isinstance(record, dict) and "file_id" in record else "")
        if problem is not None:
            raise InputError(f"staging {label}: {problem}", path=path)
        if record["file_id"] in seen:
            raise InputError(f"staging {label}: file {record['file_id']} is recorded twice", path=path)
        seen.add(record["file_id"])
        out.append(StagedFile.from_dict(record))
    return out


# --- release --------------------------------------------------------------------------------------------------


@dataclass
class ReleaseResult:
    project: str
    version: str
    layout: str
    release_root: Path
    manifest_path: Path
    manifest: dict
    copy: CopyReport
    metadata_written: list[str] = field(default_factory=list)
    metadata_bytes_written: int = 0
    manifest_written: bool = False
    pruned: list[str] = field(default_factory=list)
    previous_version: Optional[str] = None
    changelog: Optional[Changelog] = None
    notes: list[str] = field(default_factory=list)

    @property
    def project_dir(self) -> Path:
        return self.release_root / self.project

    @property
    def bytes_written(self) -> int:
        return self.copy.bytes_copied + self.metadata_bytes_written

    def describe(self) -> str:
        lines = [
            f"release {self.project} v{self.version} ({self.layout} layout) at {self.project_dir}",
            f"  data files: {self.copy.describe()}",
            f"  metadata files: {len(self.manifest['metadata_files'])} ({len(self.metadata_written)} written)",
            f"  manifest: {self.manifest_path.relative_to(self.release_root)} ({'written' if self.manifest_written else 'unchanged'})",
        ]
        if self.pruned:
            lines.append(f"  removed {len(self.pruned)} file(s) no longer released: {', '.join(self.pruned[:_MAX_LISTED])}")
        lines += [f"  note: {n}" for n in self.notes]
        if self.changelog is not None:
            lines.append("  " + self.changelog.summary().replace("\n", "\n  "))
        return "\n".join(lines)


def _existing_manifests(root: SafeRoot, project: str) -> dict[str, Path]:
    mdir = root.path / project / MANIFESTS_DIR
    if mdir.is_symlink():
        raise InputError("manifests directory is a symlink; refused", path=mdir)
    out = {}
    if mdir.is_dir():
        for p in sorted(mdir.iterdir()):
            if p.suffix == ".json" and p.is_file() and not p.is_symlink():
                try:
                    out[version_from_filename(p.name)] = p
                except InputError:
                    continue
    return out


def make_release(
    dest: str | os.PathLike,
    project: str,
    version: str,
    *,
    layout: str | Layout = "allen",
    frames: Optional[Mapping[str, pd.DataFrame]] = None,
    storage_root: Optional[str | os.PathLike] = None,
    tables: Optional[Sequence[str]] = None,
    source_roots: Optional[Sequence[str | os.PathLike]] = None,
    staged: Optional[Mapping[int, StagedFile]] = None,
    staged_roots: Optional[Mapping[int, str | os.PathLike]] = None,
    base_url: Optional[str] = None,
    max_workers: int = 2,
    mode: int = 0o644,
    verify: Verify = "sha256",
    rehash: bool = False,
    prune: bool = True,
    progress: Optional[Progress] = None,
    dandiset: Optional[Mapping[str, Any]] = None,
) -> ReleaseResult:
    """Release the files the metadata tables name, and the tables, into ``dest/<project>/``.

    ``dandiset``: the ``dandiset.yaml`` fields (:func:`~release_platform.release.dandi.dandiset_metadata`), written
    as ``<project>/dandiset.yaml`` (manifest metadata file ``dandiset``) by the dandi layout.

    ``frames`` (table name -> frame) or, if None, the tables found under ``storage_root`` (default: the platform
    storage root; ``tables`` restricts which). Data files must resolve inside ``source_roots`` (default: the
    storage root). With ``staged`` (file id -> :class:`StagedFile`, staged under ``staged_roots[file id]``) the
    files are hard-linked from staging with their recorded digests instead of copied and hashed.
    """
    from release_platform.storage import storage_root as default_storage_root

    check_project_name(project)
    parse_semver(version)
    projects.check_release_version(project, version)
    lay = get_layout(layout) if isinstance(layout, str) else layout
    root_dir = Path(storage_root) if storage_root is not None else default_storage_root()
    if frames is None:
        frames = load_tables(discover_tables(root_dir, tables))
    elif tables:
        unknown = [t for t in tables if t not in frames]
        if unknown:
            raise InputError(f"tables not given: {', '.join(unknown)}")
        frames = {t: frames[t] for t in tables}
    roots = list(source_roots) if source_roots else [root_dir]
    base = base_url or default_base_url(project)
    if not frames:
        raise InputError(f"no release tables to release (none found under {root_dir})")
    frames = projects.shape_tables(project, frames)

    # 1. plan: every data file's destination, every problem reported at once
    items, subjects = release_items(frames, source_roots=roots, check_sources=staged is None)
    dest_of: dict[int, str] = {}
    owner: dict[str, int] = {}
    problems: list[str] = projects.check_compat_files(project, items)
    planned = lay.plan_paths(project, items, subjects)
    for it in items:
        try:
            rel = planned[it.file_id] if planned is not None else lay.data_path(project, it, subjects.get(it.file_id))
        except InputError as exc:
            problems.append(str(exc))
            continue
        problems += lay.path_problems(project, rel)
        if rel in owner:
            problems.append(f"files {owner[rel]} and {it.file_id} would both be released as {rel}")
        owner[rel] = it.file_id
        dest_of[it.file_id] = rel
    if problems:
        raise InputError(f"{len(problems)} layout problem(s): " + "; ".join(problems[:_MAX_LISTED]))
    entries = []
    for it in items:
        if staged is None:
            entries.append(CopyEntry(it.source, dest_of[it.file_id], str(it.file_id)))
            continue
        rec = staged.get(it.file_id)
        if rec is None:
            problems.append(f"{it.table} file {it.file_id} ({it.source}) has no staging record")
        elif os.path.realpath(rec.source) != os.path.realpath(it.source):
            problems.append(f"{it.table} file {it.file_id}: staged from {rec.source} but the table names {it.source}; re-stage")
        else:
            src = Path(staged_roots[it.file_id]) / rec.staged if staged_roots else Path(rec.staged)
            entries.append(CopyEntry(str(check_source(src, roots, entity=f"file {it.file_id}")), dest_of[it.file_id],
                                     str(it.file_id), rec.digests))
    if problems:
        raise InputError(f"{len(problems)} staging problem(s): " + "; ".join(problems[:_MAX_LISTED]))

    extras: dict[str, tuple[str, bytes]] = {}
    if dandiset is not None and lay.name == "dandi":
        from release_platform.release.dandi import DANDISET_FILE, dandiset_yaml

        extras["dandiset"] = (f"{project}/{DANDISET_FILE}", dandiset_yaml(dandiset))
    root = SafeRoot(dest)
    with writer_lock(root):
        return _release_locked(root, project, version, lay, frames, items, dest_of, entries, base,
                               staged=staged is not None, max_workers=max_workers, mode=mode, verify=verify,
                               rehash=rehash, prune=prune, progress=progress, extras=extras)


def _release_locked(root: SafeRoot, project: str, version: str, lay: Layout, frames: Mapping[str, pd.DataFrame],
                    items, dest_of: dict[int, str], entries: list[CopyEntry], base: str, *, staged: bool,
                    max_workers: int, mode: int, verify: Verify, rehash: bool, prune: bool,
                    progress: Optional[Progress], extras: Optional[Mapping[str, tuple[str, bytes]]] = None) -> ReleaseResult:
    """Steps 2-6 of :func:`make_release`, under the release root's writer lock."""
    _sweep(root.path / project)
    manifest_rel = lay.manifest_path(project, version)
    existing = _existing_manifests(root, project)
    result_notes: list[str] = []
    if existing and version not in existing:
        newest = max(existing, key=parse_semver)
        if parse_semver(version) < parse_semver(newest):
            result_notes.append(f"v{version} is older than the newest release here (v{newest})")

    # 2. data files
    ledger = Ledger(root, ledger_relpath(project))
    try:
        report = copy_files(entries, root, ledger=ledger, mode=mode, max_workers=max_workers, verify=verify,
                            rehash=rehash, link=staged, progress=progress)

        # 3. metadata tables (regenerated in memory; written only when their bytes change)
        inner = {fid: rel.split("/", 1)[1] for fid, rel in dest_of.items()}
        metadata_entries: dict[str, FileEntry] = {}
        written, written_bytes = [], 0
        for table in sorted(frames):
            data = released_table_bytes(frames[table], inner)
            rel = lay.metadata_path(project, projects.released_table_name(project, table))
            if root.read_bytes(rel) != data:
                root.write_bytes(rel, data, mode=mode)
                written.append(rel)
                written_bytes += len(data)
            metadata_entries[projects.released_table_name(project, table)] = FileEntry(file_url(base, rel), digest_bytes(data))
        for key, (rel, data) in sorted((extras or {}).items()):  # e.g. dandiset.yaml
            if root.read_bytes(rel) != data:
                root.write_bytes(rel, data, mode=mode)
                written.append(rel)
                written_bytes += len(data)
            metadata_entries[key] = FileEntry(file_url(base, rel), digest_bytes(data))

        # 4. manifest
        by_dest = {r.destination: r for r in report.records}
        data_entries = {it.file_id: FileEntry(file_url(base, dest_of[it.file_id]), by_dest[dest_of[it.file_id]].digests)
                        for it in items}
        manifest = build_manifest(project, version, data_files=data_entries, metadata_files=metadata_entries,
                                  data_pipeline=projects.data_pipeline(project))
        blob = manifest_bytes(manifest)
        old_blob = root.read_bytes(manifest_rel)
        if old_blob is not None and old_blob != blob:
            result_notes.append(f"v{version} was released here before with different content; its manifest is replaced")
        manifest_written = old_blob != blob
        if manifest_written:
            root.write_bytes(manifest_rel, blob, mode=mode)

        # 5. prune files this tool released before (ledger or earlier manifests) that this version does not list
        keep = (set(dest_of.values()) | {lay.metadata_path(project, projects.released_table_name(project, t)) for t in frames}
                | {r for r, _ in (extras or {}).values()})
        previously = {d for d in ledger.destinations() if d.startswith(project + "/")}
        for v, path in existing.items():
            if v == version:
                continue
            try:
                old = json.loads(path.read_bytes())
                for section in ("metadata_files", "data_files"):
                    previously |= {f"{project}/{url_relative_path(e['url'])}" for e in old.get(section, {}).values()}
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
        stale = sorted(previously - keep)
        pruned = []
        if prune:
            for rel in stale:
                try:  # an old manifest is input too: never a path out of the project, through a symlink or into manifests/
                    parts = release_parts(rel)
                    if len(parts) > 2 and parts[1] == MANIFESTS_DIR:
                        continue
                    if root.unlink(rel, prune_dirs_below=(project,)):
                        pruned.append(rel)
                except InputError as exc:
                    result_notes.append(f"{rel!r}, listed by an earlier version, was not removed: {exc.problem}")
            ledger.forget(stale)
        elif stale:
            present = [s for s in stale if root.lstat(s) is not None]
            if present:
                result_notes.append(f"{len(present)} file(s) of earlier versions are not in v{version} and were kept "
                                    "(verify reports them as extra)")
        ledger.compact()
    finally:
        ledger.close()

    # 6. changelog against the previous version
    older = [v for v in existing if v != version and parse_semver(v) < parse_semver(version)]
    changelog, previous = None, None
    if older:
        previous = max(older, key=parse_semver)
        try:
            changelog = compare_manifests(json.loads(existing[previous].read_bytes()), manifest)
        except (ValueError, KeyError, TypeError):
            result_notes.append(f"manifest v{previous} is unreadable; no changelog")
    return ReleaseResult(project, version, lay.name, root.path, root.path.joinpath(*release_parts(manifest_rel)),
                         manifest, report, written, written_bytes, manifest_written, pruned, previous, changelog,
                         result_notes)
