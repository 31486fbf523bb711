"""Verify a release directory against its manifest: every file re-hashed, nothing missing, nothing extra.

:func:`verify_release` accepts the release root (``<dir>/<project>/manifests/``) or the project directory
itself (``<dir>/manifests/``), takes the manifest with the highest version there (or the one named), and
reports, each with its path:

* ``invalid-manifest`` — the manifest breaks the cloud-cache rules (:func:`~.manifest.validate_manifest`);
* ``bad-name`` — a data path breaks the layout's naming rules (DANDI rules when every file is in a ``sub-*``
  folder), or a URL maps outside the project directory;
* ``missing`` — listed but absent; ``not-a-file`` — present but a symlink, directory or other non-regular file
  (a release never contains symlinks, so none is followed);
* ``mismatched`` — size, BLAKE2b (``file_hash``), SHA-256 or dandi-etag differ from the manifest (the report then
  suggests ``release --rehash``, the one mode that re-reads released files instead of trusting size and mtime);
* ``extra`` — a file in the project directory the manifest does not list (leftover ``*.inprogress`` files
  included), apart from the manifests themselves;
* ``dandi-validate`` — an error ``dandi validate`` reports on a dandi-layout release that has a ``dandiset.yaml``,
  when the optional ``dandi`` package is installed (``dandi_validate=False`` skips it).

Every listed file is read once (all three digests together), in parallel.
"""

from __future__ import annotations

import os
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from release_platform.errors import InputError
from release_platform.release.digests import digest_file
from release_platform.release.layouts import MANIFESTS_DIR, detect_layout
from release_platform.release.manifest import (
    entry_digests,
    latest_manifest,
    load_manifest,
    url_relative_path,
    validate_manifest,
    version_from_filename,
)
from release_platform.release.paths import release_parts


REHASH_HINT = ("hint: a file whose content changed while its size and mtime did not (bit rot, tampering) is only "
               "repaired by re-running the release with --rehash, which re-reads every released file and re-copies "
               "the ones that do not match")


@dataclass(frozen=True)
class Problem:
    kind: str  # invalid-manifest, bad-name, missing, not-a-file, mismatched, extra
    path: str  # relative to the project directory ("" for the manifest itself)
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.kind:<16} {self.path}" + (f": {self.detail}" if self.detail else "")


@dataclass
class VerifyReport:
    project_dir: Path
    manifest_path: Optional[Path]
    files_checked: int = 0
    bytes_checked: int = 0
    problems: list[Problem] = field(default_factory=list)
    #: True when ``dandi validate`` ran on the release (dandi layout with dandiset.yaml, ``dandi`` installed).
    dandi_validated: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems

    def by_kind(self, kind: str) -> list[Problem]:
        return [p for p in self.problems if p.kind == kind]

    def describe(self) -> str:
        head = (f"{self.project_dir}: manifest {self.manifest_path.name if self.manifest_path else '(none)'}; "
                f"{self.files_checked} files ({self.bytes_checked:,} bytes) re-hashed"
                + ("; dandi validate run" if self.dandi_validated else ""))
        if self.ok:
            return head + "; OK"
        counts: dict[str, int] = {}
        for p in self.problems:
            counts[p.kind] = counts.get(p.kind, 0) + 1
        lines = [head + "; PROBLEMS: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))]
        lines += [f"  {p}" for p in self.problems]
        if counts.get("mismatched"):
            lines.append(REHASH_HINT)
        return "\n".join(lines)


def find_project_dir(directory: str | os.PathLike) -> Path:
    """The project directory of a release: ``directory`` itself if it holds ``manifests/``, else its only
    child that does."""
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError("release directory not found", path=directory)
    if (directory / MANIFESTS_DIR).is_dir():
        return directory
    candidates = sorted(p for p in directory.iterdir() if p.is_dir() and not p.is_symlink() and (p / MANIFESTS_DIR).is_dir())
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise InputError(f"no {MANIFESTS_DIR}/ directory here or in a project directory below", path=directory)
    raise InputError(f"several project directories ({', '.join(p.name for p in candidates)}); name one", path=directory)


def _manifest_files(project_dir: Path) -> list[Path]:
    mdir = project_dir / MANIFESTS_DIR
    return sorted(p for p in mdir.iterdir() if p.is_file() and not p.is_symlink() and p.suffix == ".json")


def _lstat_inside(project_dir: Path, rel: str) -> tuple[Optional[os.stat_result], str]:
    """lstat of ``project_dir/rel`` without following any symlink on the way: (stat or None, problem kind)."""
    parts = release_parts(rel)
    cur = project_dir
    for name in parts[:-1]:
        cur = cur / name
        try:
            st = os.lstat(cur)
        except FileNotFoundError:
            return None, "missing"
        if not stat.S_ISDIR(st.st_mode):
            return st, "not-a-file"
    try:
        return os.lstat(cur / parts[-1]), ""
    except FileNotFoundError:
        return None, "missing"


def verify_release(directory: str | os.PathLike, *, manifest: Optional[str | os.PathLike] = None,
                   max_workers: int = 2, dandi_validate: bool = True, progress=None) -> VerifyReport:
    """Re-hash a release against its manifest; see the module docstring. Never raises for problems found.

    ``progress``: a :class:`release_platform.progress.Progress` told the files and bytes to re-hash and each one done."""
    project_dir = find_project_dir(directory)
    if manifest is not None:
        mpath = Path(manifest)
        if not mpath.is_absolute() and not mpath.exists():
            mpath = project_dir / MANIFESTS_DIR / mpath
    else:
        mpath = latest_manifest(_manifest_files(project_dir))
    report = VerifyReport(project_dir, mpath)
    if mpath is None:
        report.problems.append(Problem("invalid-manifest", f"{MANIFESTS_DIR}/", "no <project>_manifest_v<semver>.json"))
        return report
    try:
        data = load_manifest(mpath)
    except InputError as exc:
        report.problems.append(Problem("invalid-manifest", f"{MANIFESTS_DIR}/{mpath.name}", exc.problem))
        return report
    project = data["project_name"]
    if project != project_dir.name:
        report.problems.append(Problem("invalid-manifest", f"{MANIFESTS_DIR}/{mpath.name}",
                                       f"project_name {project!r} differs from the directory name {project_dir.name!r}"))

    expected: dict[str, dict] = {}
    for section in ("metadata_files", "data_files"):
        for key, entry in data[section].items():
            rel = url_relative_path(entry["url"])
            try:
                release_parts(rel)
            except InputError as exc:
                report.problems.append(Problem("bad-name", rel, f"{section}[{key}]: {exc.problem}"))
                continue
            if rel in expected:
                report.problems.append(Problem("bad-name", rel, f"{section}[{key}]: listed twice"))
                continue
            expected[rel] = entry
            if rel.split("/", 1)[0] == MANIFESTS_DIR:
                report.problems.append(Problem("bad-name", rel, "a listed file inside manifests/"))

    data_rels = [url_relative_path(e["url"]) for e in data["data_files"].values()]
    layout = detect_layout(project, [f"{project}/{r}" for r in data_rels])
    for rel in data_rels:
        for text in layout.path_problems(project, f"{project}/{rel}"):
            report.problems.append(Problem("bad-name", rel, text))

    to_hash: list[tuple[str, dict]] = []
    for rel, entry in sorted(expected.items()):
        st, kind = _lstat_inside(project_dir, rel)
        if st is None:
            report.problems.append(Problem("missing", rel))
        elif kind or not stat.S_ISREG(st.st_mode):
            what = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a regular file"
            report.problems.append(Problem("not-a-file", rel, f"{what}; a release holds regular files only"))
        else:
            to_hash.append((rel, entry))

    def check(item: tuple[str, dict]) -> Optional[Problem]:
        rel, entry = item
        want = entry_digests(entry)
        try:
            got = digest_file(project_dir / rel)
        except (OSError, InputError) as exc:
            return Problem("missing", rel, f"unreadable: {exc}")
        diffs = []
        if want.size >= 0 and want.size != got.size:
            diffs.append(f"size {got.size} != {want.size}")
        for name, label in (("blake2b", "file_hash"), ("sha256", "sha256"), ("dandi_etag", "dandi_etag")):
            w, g = getattr(want, name), getattr(got, name)
            if w is not None and w != g:
                diffs.append(f"{label} {g[:16]}… != {w[:16]}…")
        return Problem("mismatched", rel, "; ".join(diffs)) if diffs else None

    if progress is not None:
        progress.plan(len(to_hash), sum(int(entry.get("size", 0) or 0) for _, entry in to_hash))
    with ThreadPoolExecutor(max_workers=max(1, max_workers)) as pool:
        for (rel, entry), problem in zip(to_hash, pool.map(check, to_hash)):
            report.files_checked += 1
            report.bytes_checked += int(entry.get("size", 0) or 0)
            if progress is not None:
                progress.finish(rel, int(entry.get("size", 0) or 0))
            if problem is not None:
                report.problems.append(problem)

    for dirpath, dirnames, filenames in os.walk(project_dir, followlinks=False):
        rel_dir = Path(dirpath).relative_to(project_dir).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        for d in list(dirnames):
            if os.path.islink(os.path.join(dirpath, d)):
                dirnames.remove(d)
                report.problems.append(Problem("extra", rel_dir + d, "symlink"))
        for name in sorted(filenames):
            rel = rel_dir + name
            if rel in expected:
                continue
            if rel_dir == f"{MANIFESTS_DIR}/" and _is_manifest_name(name) and not os.path.islink(os.path.join(dirpath, name)):
                continue
            report.problems.append(Problem("extra", rel, "not in the manifest"))
    if dandi_validate and layout.name == "dandi":
        from release_platform.release.dandi import DANDISET_FILE, run_dandi_validate

        if (project_dir / DANDISET_FILE).is_file():
            found = run_dandi_validate(project_dir)
            report.dandi_validated = found is not None
            for text in found or []:
                report.problems.append(Problem("dandi-validate", "", text))
    report.problems.sort(key=lambda p: (p.kind, p.path))
    return report


def _is_manifest_name(name: str) -> bool:
    if not name.endswith(".json"):
        return False
    try:
        version_from_filename(name)
    except InputError:
        return False
    return True


def validate_manifest_file(path: str | os.PathLike) -> list[str]:
    """Problems of a manifest file (parse + rules); empty if valid."""
    try:
        load_manifest(path)
    except InputError as exc:
        return [exc.problem]
    return []


__all__ = ["Problem", "VerifyReport", "find_project_dir", "validate_manifest", "validate_manifest_file", "verify_release"]
