"""Project-shaped releases: the table set, table names and manifest entries an AllenSDK project cache requires.

A release whose project name is one of :data:`PROJECT_SHAPES` is shaped for that project's AllenSDK cache
(``VisualBehaviorOphysProjectCache`` / ``VisualBehaviorNeuropixelsProjectCache``, opened with
``from_local_cache(cache_dir, use_static_cache=True)`` on the release root or with ``from_s3_cache``):

* exactly the cache's metadata tables, under the names it looks up (``metadata_files`` of the manifest);
  other tables are left out (they go to generic project releases only);
* a ``data_pipeline`` entry named ``AllenSDK`` with the AllenSDK version whose readers the files target
  (the cache reads it for its version check), after the platform's own entry;
* a release version inside the cache's manifest-version range;
* every NWB file written in the ``allensdk`` compatibility mode (``general/metadata`` of the platform's
  extension), so the cache's session readers open it.

The file layout is the ``allen`` layout (:mod:`release_platform.release.layouts`): ``<project>/manifests/``,
``<project>/project_metadata/``, ``<project>/behavior_ophys_experiments/<id>/...``,
``<project>/behavior_sessions/<id>/...``. Any other project name is released as before.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional, Sequence

import pandas as pd

from release_platform.errors import InputError

__all__ = ["ALLENSDK_VERSION", "ProjectShape", "PROJECT_SHAPES", "project_shape", "shape_tables", "check_release_version",
           "check_compat_files", "data_pipeline", "released_table_name"]

#: The AllenSDK release whose readers the ``allensdk`` compatibility mode targets.
ALLENSDK_VERSION = "2.16.2"


@dataclasses.dataclass(frozen=True)
class ProjectShape:
    """``tables``: platform table name -> name in the project cache (all required); ``versions``: the cache's
    accepted manifest versions ``[low, high)``; ``nwb_tables``: tables whose data files AllenSDK opens."""

    name: str
    tables: Mapping[str, str]
    versions: tuple[str, str]
    nwb_tables: tuple[str, ...]
    cache_class: str


PROJECT_SHAPES: dict[str, ProjectShape] = {
    s.name: s
    for s in (
        ProjectShape(
            "visual-behavior-ophys",
            {t: t for t in ("behavior_session_table", "ophys_session_table", "ophys_experiment_table", "ophys_cells_table")},
            ("1.0.0", "2.0.0"),
            ("behavior_session_table", "ophys_experiment_table"),
            "VisualBehaviorOphysProjectCache",
        ),
        ProjectShape(
            "visual-behavior-neuropixels",
            {"behavior_session_table": "behavior_sessions", "ecephys_session_table": "ecephys_sessions", "probes": "probes",
             "channels": "channels", "units": "units"},
            ("0.1.0", "10.0.0"),
            ("behavior_session_table",),
            "VisualBehaviorNeuropixelsProjectCache",
        ),
    )
}


def project_shape(project: str) -> Optional[ProjectShape]:
    return PROJECT_SHAPES.get(project)


def shape_tables(project: str, frames: Mapping[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Only the project cache's tables (platform names); unchanged for other projects. InputError naming every
    missing table."""
    shape = project_shape(project)
    if shape is None:
        return dict(frames)
    missing = [t for t in shape.tables if t not in frames]
    if missing:
        raise InputError(f"a {project} release needs the tables {sorted(shape.tables)}; missing: {missing} "
                         f"(materialize the release metadata, or use another project name for a generic release)")
    return {t: frames[t] for t in shape.tables}


def released_table_name(project: str, table: str) -> str:
    """The name of a table in the release (``project_metadata/<name>.csv``, manifest ``metadata_files``)."""
    shape = project_shape(project)
    return table if shape is None else shape.tables.get(table, table)


def check_release_version(project: str, version: str) -> None:
    """InputError when the version is outside the project cache's accepted manifest versions."""
    from release_platform.release.manifest import parse_semver

    shape = project_shape(project)
    if shape is None:
        return
    low, high = shape.versions
    if not parse_semver(low) <= parse_semver(version) < parse_semver(high):
        raise InputError(f"{shape.cache_class} (AllenSDK {ALLENSDK_VERSION}) opens manifest versions {low} <= X < {high}; "
                         f"release {project} with a version in that range, not {version}")


def check_compat_files(project: str, items: Sequence[Any]) -> list[str]:
    """Problems (one per file) of NWB files AllenSDK would open that were not written in the ``allensdk`` mode."""
    from release_platform.nwb.allen_compat import has_event_detection, is_allen_compat_file

    shape = project_shape(project)
    if shape is None:
        return []
    problems = []
    for it in items:
        if it.table not in shape.nwb_tables or not str(it.source).endswith(".nwb"):
            continue
        if not is_allen_compat_file(it.source):
            problems.append(f"{it.table} file {it.file_id} ({it.source}) was not written with compat: allensdk, which {project} "
                            "needs (re-materialize its NWB asset with compat 'allensdk')")
        elif it.table == "ophys_experiment_table" and not has_event_detection(it.source):
            problems.append(f"{it.table} file {it.file_id} ({it.source}) has no event_detection, without which AllenSDK cannot "
                            "open the experiment (write it with the plane's events record)")
    return problems


def data_pipeline(project: str) -> Optional[list[dict]]:
    """The manifest's ``data_pipeline`` for the project (None: the default, the platform's entry only)."""
    if project_shape(project) is None:
        return None
    from release_platform import __version__

    return [{"name": "release_platform", "version": __version__, "comment": "wrote the data files and tables"},
            {"name": "AllenSDK", "version": ALLENSDK_VERSION,
             "comment": f"the files are written for the readers of AllenSDK {ALLENSDK_VERSION} (compat: allensdk)"}]
