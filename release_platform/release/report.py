"""One HTML page describing a release: ``release-platform report <release dir>``.

The page holds, for the release's manifest (the highest version, or the one named):

* rows per metadata table (the released CSV files) and files and bytes per file kind (the metadata table that
  names each data file, from the staging records; else the file's first directory in the project);
* the changelog against the previous version in the same ``manifests/`` directory (the AllenSDK comparison rules
  of :mod:`release_platform.release.changelog`);
* the QC thumbnails of every released session.

Which sessions are released is read from the **staging records** (``<storage>/<kind>_release_files/<session>/``,
what the per-session staging assets write and the release assembles from): a session is released when one of its
staged files is in the manifest. Its QC figures are those of its ``<kind>_qc_report`` partition
(``<storage>/<kind>_qc_report/<session>/qc_report.json``). A session released without QC figures is listed with
"no QC figures". ``storage_root`` defaults to the platform's storage root.
"""

from __future__ import annotations

import html
import json
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pandas as pd

from release_platform.atomic import format_bytes
from release_platform.errors import InputError
from release_platform.qc.report import data_uri, thumbnail_png, write_html_page
from release_platform.release.build import read_staged
from release_platform.release.changelog import compare_manifests
from release_platform.release.manifest import load_manifest, parse_semver, url_relative_path, version_from_filename
from release_platform.release.verify import find_project_dir

__all__ = ["ReleaseReport", "build_report", "write_report", "released_sessions", "STAGING_SUFFIX", "QC_SUFFIX"]

STAGING_SUFFIX = "_release_files"
QC_SUFFIX = "_qc_report"
QC_INDEX = "qc_report.json"
MANIFESTS_DIR = "manifests"


@dataclass
class ReleaseReport:
    project_dir: Path
    manifest_path: Path
    version: str
    table_rows: dict[str, int] = field(default_factory=dict)
    kind_files: dict[str, int] = field(default_factory=dict)
    kind_bytes: dict[str, int] = field(default_factory=dict)
    previous_version: Optional[str] = None
    changelog: Optional[str] = None
    sessions: dict[tuple[str, str], Optional[Path]] = field(default_factory=dict)  # (kind, session) -> QC index

    @property
    def total_bytes(self) -> int:
        return sum(self.kind_bytes.values())


def _manifests(project_dir: Path) -> dict[tuple, Path]:
    out = {}
    mdir = project_dir / MANIFESTS_DIR
    for p in sorted(mdir.glob("*.json")):
        try:
            out[parse_semver(version_from_filename(p.name))] = p
        except InputError:
            continue
    return out


def released_sessions(storage_root: str | os.PathLike, file_ids: set[str]) -> dict[tuple[str, str], dict[str, str]]:
    """(kind, session) -> {file id: table} for every staged session with a file in ``file_ids``."""
    root = Path(storage_root)
    out: dict[tuple[str, str], dict[str, str]] = {}
    for stage_asset in sorted(root.glob(f"*{STAGING_SUFFIX}")):
        kind = stage_asset.name[: -len(STAGING_SUFFIX)]
        for stage_dir in sorted(p for p in stage_asset.iterdir() if p.is_dir()):
            try:
                records = read_staged(stage_dir)
            except InputError:
                continue  # a partition never staged (or being staged): not part of any release
            hits = {str(r.file_id): r.table for r in records if str(r.file_id) in file_ids}
            if hits:
                out[(kind, stage_dir.name)] = hits
    return out


def build_report(directory: str | os.PathLike, *, manifest: Optional[str | os.PathLike] = None,
                 storage_root: Optional[str | os.PathLike] = None) -> ReleaseReport:
    """Everything the page shows, read from the release and the storage root (see the module docstring)."""
    from release_platform.storage import storage_root as default_storage_root

    project_dir = find_project_dir(directory)
    versions = _manifests(project_dir)
    if manifest is not None:
        mpath = Path(manifest)
        if not mpath.is_absolute() and not mpath.exists():
            mpath = project_dir / MANIFESTS_DIR / mpath
        if not mpath.is_file():
            raise InputError("manifest not found", path=mpath)
    elif versions:
        mpath = versions[max(versions)]
    else:
        raise InputError(f"no manifest in {MANIFESTS_DIR}/", path=project_dir)
    data = load_manifest(mpath)
    version = data["manifest_version"]
    report = ReleaseReport(project_dir, mpath, version)

    for name, entry in data["metadata_files"].items():
        path = project_dir / url_relative_path(entry["url"])
        try:
            report.table_rows[name] = len(pd.read_csv(path)) if path.suffix == ".csv" else -1
        except (OSError, ValueError, pd.errors.ParserError) as exc:
            raise InputError(f"released table {name} is unreadable: {exc}", path=path) from None

    root = Path(storage_root) if storage_root is not None else default_storage_root()
    sessions = released_sessions(root, set(data["data_files"]))
    table_of = {fid: table for hits in sessions.values() for fid, table in hits.items()}
    for fid, entry in data["data_files"].items():
        kind = table_of.get(fid) or url_relative_path(entry["url"]).split("/", 1)[0]
        report.kind_files[kind] = report.kind_files.get(kind, 0) + 1
        report.kind_bytes[kind] = report.kind_bytes.get(kind, 0) + int(entry.get("size", 0) or 0)
    for kind, key in sorted(sessions, key=lambda s: (s[0], int(s[1]) if s[1].isdigit() else s[1])):
        index = root / f"{kind}{QC_SUFFIX}" / key / QC_INDEX
        report.sessions[(kind, key)] = index if index.is_file() else None

    this = parse_semver(version)
    older = [v for v in versions if v < this]
    if older:
        previous = load_manifest(versions[max(older)])
        changelog = compare_manifests(previous, data)
        report.previous_version = changelog.old_version or previous.get("manifest_version")
        report.changelog = changelog.summary()
    return report


def _table(headers: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _session_html(kind: str, key: str, index: Optional[Path]) -> str:
    heading = f"<h4>{html.escape(kind)} {html.escape(key)}</h4>"
    if index is None:
        return f'<div class="session" id="{html.escape(kind)}-{html.escape(key)}">{heading}<p>no QC figures</p></div>'
    try:
        data = json.loads(index.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"QC index is unreadable: {exc}", path=index) from None
    figures = []
    for group, items in data.get("groups", {}).items():
        for item in items:
            png = index.parent / item["file"]
            if not png.is_file():
                raise InputError(f"QC figure {item['file']} listed in {QC_INDEX} is missing", path=png)
            alt = html.escape(f"{group}: {item['name']}: {item.get('caption', '')}")
            figures.append(f'<a href="{png.as_uri()}"><img src="{data_uri(thumbnail_png(png))}" alt="{alt}" title="{alt}"></a>')
    report_page = index.parent / "qc_report.html"
    link = f' (<a href="{report_page.as_uri()}">full QC page</a>)' if report_page.is_file() else ""
    return (f'<div class="session" id="{html.escape(kind)}-{html.escape(key)}">{heading}<p>{len(figures)} figures{link}</p>'
            + "".join(figures) + "</div>")


def write_report(report: ReleaseReport, out_path: str | os.PathLike) -> Path:
    """The page for ``report`` (one self-contained HTML file, thumbnails embedded), written atomically."""
    parts = [f"<p>Project directory {html.escape(str(report.project_dir))}; manifest "
             f"{html.escape(report.manifest_path.name)}; {sum(report.kind_files.values())} data files, "
             f"{format_bytes(report.total_bytes)}; {len(report.sessions)} released sessions.</p>"]
    parts.append("<h2>Tables</h2>" + _table(["table", "rows"], [[k, v if v >= 0 else "-"] for k, v in sorted(report.table_rows.items())]))
    parts.append("<h2>Files by kind</h2>" + _table(
        ["kind", "files", "size"],
        [[k, report.kind_files[k], format_bytes(report.kind_bytes[k])] for k in sorted(report.kind_files)]
        + [["all", sum(report.kind_files.values()), format_bytes(report.total_bytes)]]))
    if report.changelog is None:
        parts.append("<h2>Changes</h2><p>First version: no earlier manifest to compare with.</p>")
    else:
        parts.append(f"<h2>Changes since {html.escape(str(report.previous_version))}</h2><pre>{html.escape(report.changelog)}</pre>")
    by_kind: dict[str, list] = defaultdict(list)
    for (kind, key), index in report.sessions.items():
        by_kind[kind].append(_session_html(kind, key, index))
    parts.append("<h2>Released sessions: QC</h2>" + "".join(f"<h3>{html.escape(k)}</h3>{''.join(v)}" for k, v in sorted(by_kind.items())))
    return write_html_page(out_path, f"Release {report.project_dir.name} {report.version}", "".join(parts))
