"""What changed between two release manifests (the AllenSDK ``compare_manifests`` rules).

For metadata files and data files separately, each manifest maps a file's path in the project directory (its
URL path without the project segment) to its ``file_hash``. Then, per path:

* in both, with different hashes -> ``"<path> changed"``;
* only in the old one, and its hash is the hash of a file in the new one -> ``"<path> renamed <new path>"``
  (the new path preferred among paths that are new; ties broken by sorted path, since duplicate contents make
  a rename ambiguous);
* only in the old one otherwise -> ``"<path> deleted"``;
* only in the new one, and its hash is not in the old one -> ``"<path> created"`` (a new path whose content
  was already released is the target of a rename and is not reported again).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from release_platform.release.manifest import url_relative_path

Change = tuple[str, str]  # (path, description)


@dataclass
class Changelog:
    old_version: str = ""
    new_version: str = ""
    metadata_changes: list[Change] = field(default_factory=list)
    data_changes: list[Change] = field(default_factory=list)

    @property
    def equivalent(self) -> bool:
        return not self.metadata_changes and not self.data_changes

    def as_dict(self) -> dict:
        return {"metadata_changes": list(self.metadata_changes), "data_changes": list(self.data_changes)}

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for _, text in self.metadata_changes + self.data_changes:
            kind = text.split(" ")[-2] if " renamed " in text else text.rsplit(" ", 1)[-1]
            out[kind] = out.get(kind, 0) + 1
        return out

    def summary(self) -> str:
        head = f"Changes from {self.old_version or 'the old manifest'} to {self.new_version or 'the new manifest'}"
        if self.equivalent:
            return f"{head}: the two manifests are equivalent"
        lines = [head + ":"]
        for title, changes in (("metadata files", self.metadata_changes), ("data files", self.data_changes)):
            if changes:
                lines.append(f"  {title}:")
                lines += [f"    {text}" for _, text in changes]
        return "\n".join(lines)


def _paths(manifest: Mapping, section: str) -> dict[str, str]:
    return {url_relative_path(e["url"]): e["file_hash"] for e in manifest.get(section, {}).values()}


def _compare(old: dict[str, str], new: dict[str, str]) -> list[Change]:
    changes: list[Change] = []
    new_hashes: dict[str, list[str]] = {}
    for path in sorted(new):
        new_hashes.setdefault(new[path], []).append(path)
    old_hashes = set(old.values())
    for path in sorted(set(old) | set(new)):
        if path in old and path in new:
            if old[path] != new[path]:
                changes.append((path, f"{path} changed"))
        elif path in old:
            targets = new_hashes.get(old[path], [])
            if targets:
                fresh = [t for t in targets if t not in old]
                changes.append((path, f"{path} renamed {(fresh or targets)[0]}"))
            else:
                changes.append((path, f"{path} deleted"))
        elif new[path] not in old_hashes:
            changes.append((path, f"{path} created"))
    return changes


def compare_manifests(old: Mapping, new: Mapping) -> Changelog:
    """The changes from manifest ``old`` to manifest ``new`` (both parsed JSON objects)."""
    return Changelog(
        str(old.get("manifest_version", "")),
        str(new.get("manifest_version", "")),
        _compare(_paths(old, "metadata_files"), _paths(new, "metadata_files")),
        _compare(_paths(old, "data_files"), _paths(new, "data_files")),
    )
