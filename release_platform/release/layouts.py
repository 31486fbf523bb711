"""Where each released file goes: the ``allen`` project-cache layout and the ``dandi`` layout.

Every release lives in a project directory ``<release root>/<project>/`` and every path below is relative to
the release root, starting with the project name (so the AllenSDK local-path rule, "URL path minus its first
segment", gives the path inside the project directory):

allen (the AllenSDK project cache, as mounted with ``use_static_project_dir``)::

    <project>/<kind>/<entity id>/<prefix>_<entity id>.nwb       e.g. behavior_ophys_experiments/1011/behavior_ophys_experiment_1011.nwb
    <project>/project_metadata/<table>.csv
    <project>/manifests/<project>_manifest_v<semver>.json

dandi (a dandiset directory; the NWB files follow the DANDI layout rules, :func:`dandi_path_problems`)::

    <project>/sub-<subject>/sub-<subject>_ses-<session>[_desc-<label>][_probe-<label>]_<modality>[+<modality>].nwb
    <project>/project_metadata/<table>.csv        (not DANDI assets: ``dandi upload`` only takes the NWB files)
    <project>/manifests/<project>_manifest_v<semver>.json

Which columns of a table row name the entity, the subject and the session is in :data:`FILE_ROLES` (one role
per release table with ``file_id``/``file_path`` columns). Subject labels are the LIMS mouse names
(``mouse_id``), session labels the LIMS session ids.
"""

from __future__ import annotations

import abc
import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Mapping, Optional

from release_platform.errors import InputError

METADATA_DIR = "project_metadata"
MANIFESTS_DIR = "manifests"

#: Release tables that name no data files of their own and are shipped as ``project_metadata/<table>.csv`` only,
#: next to the metadata registry's tables: table name -> the storage asset directory that writes
#: ``<asset>/<table>.parquet`` (and ``.csv``). ``cell_metrics`` is the Visual Coding stimulus metrics, one row
#: per ROI per plane, joined to ``ophys_cells_table`` on ``cell_roi_id`` / ``cell_specimen_id``.
METADATA_ONLY_TABLES: dict[str, str] = {"cell_metrics": "cell_metrics_table"}


@dataclass(frozen=True)
class FileRole:
    """How one table's data files are named.

    ``entity_column`` identifies the file's entity (also the allen sub-directory); ``allen_dir`` and
    ``allen_name`` (a format string over the row) give the allen path; ``session_column``, ``desc`` (format
    string or None), ``probe_column`` and ``modalities`` give the DANDI name. ``subject_via`` = (parent table,
    key column) when the row has no ``mouse_id`` itself and the subject is looked up in a parent table.
    """

    table: str
    entity_column: str
    allen_dir: str
    allen_name: str
    session_column: str
    modalities: tuple[str, ...]
    desc: Optional[str] = None
    probe_column: Optional[str] = None
    allen_group_column: Optional[str] = None
    subject_via: Optional[tuple[str, str]] = None

    def columns(self) -> set[str]:
        cols = {self.entity_column, self.session_column}
        cols |= set(re.findall(r"{(\w+)", self.allen_name + (self.desc or "")))
        cols |= {c for c in (self.probe_column, self.allen_group_column) if c}
        if self.subject_via is None:
            cols.add("mouse_id")
        else:
            cols.add(self.subject_via[1])
        return cols


FILE_ROLES: dict[str, FileRole] = {
    r.table: r
    for r in (
        FileRole("behavior_session_table", "behavior_session_id", "behavior_sessions", "behavior_session_{behavior_session_id}.nwb",
                 "behavior_session_id", ("behavior",)),
        FileRole("ophys_experiment_table", "ophys_experiment_id", "behavior_ophys_experiments",
                 "behavior_ophys_experiment_{ophys_experiment_id}.nwb", "ophys_session_id", ("behavior", "ophys"),
                 desc="exp{ophys_experiment_id}"),
        FileRole("ecephys_session_table", "ecephys_session_id", "ecephys_sessions", "ecephys_session_{ecephys_session_id}.nwb",
                 "ecephys_session_id", ("behavior", "ecephys")),
        # Per-probe LFP NWB files (probes.file_id / file_path): allen puts them next to their session's NWB;
        # dandi names them sub-<mouse>_ses-<session>_probe-<probe id>_ecephys.nwb (mouse from the session table).
        FileRole("probes", "ecephys_probe_id", "ecephys_sessions", "lfp_probe_{ecephys_probe_id}.nwb", "ecephys_session_id",
                 ("ecephys",), probe_column="ecephys_probe_id", allen_group_column="ecephys_session_id",
                 subject_via=("ecephys_session_table", "ecephys_session_id")),
        # One NWB file per patch-clamp cell: dandi sub-<mouse>_ses-<cell id>_icephys.nwb.
        FileRole("icephys_cells_table", "icephys_cell_id", "icephys_cells", "icephys_cell_{icephys_cell_id}.nwb",
                 "icephys_cell_id", ("icephys",)),
    )
}


@dataclass(frozen=True)
class ReleaseItem:
    """One data file to release: its id, the table row it comes from and the source path."""

    file_id: int
    table: str
    source: str
    fields: Mapping[str, Any]

    def field(self, name: str) -> Any:
        try:
            value = self.fields[name]
        except KeyError:
            raise InputError(f"{self.table} row of file {self.file_id} has no {name!r} column") from None
        if value is None or (isinstance(value, float) and value != value):
            raise InputError(f"{self.table} row of file {self.file_id} has a null {name!r}")
        return value


def _as_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    try:
        import numpy as np

        if isinstance(value, np.integer):
            value = int(value)
    except ImportError:  # pragma: no cover
        pass
    return str(value)


def _format(template: str, item: ReleaseItem) -> str:
    names = re.findall(r"{(\w+)", template)
    return template.format(**{n: _as_text(item.field(n)) for n in names})


# --- DANDI filename rules ------------------------------------------------------------------------------------

#: characters a DANDI label may not contain (besides whitespace and control characters)
DANDI_FORBIDDEN_LABEL_CHARS = '_*\\/<>:|"\'?%@;.'
_LABEL = r"[^_*\\/<>:|\"'?%@;.\s]+"
_MODALITY = r"[a-z][a-z0-9]*"  # no hyphen: "_ses-1" can never pass as a modality
#: entities allowed in a DANDI file name, in this order, after the subject
DANDI_ENTITIES = ("ses", "tis", "slice", "cell", "desc", "probe", "obj")
DANDI_FILENAME_RE = re.compile(
    rf"^sub-(?P<sub>{_LABEL})"
    + "".join(rf"(?:_{e}-(?P<{e}>{_LABEL}))?" for e in DANDI_ENTITIES)
    + rf"(?:_(?P<modalities>{_MODALITY}(?:\+{_MODALITY})*))?"
    + r"(?P<ext>\.nwb)$"
)
DANDI_FOLDER_RE = re.compile(rf"^sub-(?P<sub>{_LABEL})$")


def dandi_label(value: Any) -> str:
    """A DANDI label from an id or name: forbidden characters and whitespace become ``-``; InputError if empty."""
    text = _as_text(value).strip()
    label = re.sub(r"[_*\\/<>:|\"'?%@;.\s]", "-", text)
    if not label or not label.strip("-"):
        raise InputError(f"cannot make a DANDI label from {value!r}")
    return label


def dandi_path_problems(path: str) -> list[str]:
    """Problems of a dandiset-relative NWB path under the DANDI layout rules (empty if it is valid).

    Rules: exactly ``sub-<label>/<file>``; the file name is ``sub-<label>`` then optional entities
    ``_ses-``, ``_tis-``, ``_slice-``, ``_cell-``, ``_desc-``, ``_probe-``, ``_obj-`` (each at most once, in
    that order), then optional ``_<modality>[+<modality>...]`` (lower case), then ``.nwb``; a label is non-empty
    and has none of ``_*\\/<>:|"'?%@;.`` or whitespace; the subject in the folder and in the name agree.
    Problems are prefixed with stable ids (``DANDI.NON_DANDI_FOLDERNAME``, ``DANDI.NON_DANDI_FILENAME``).
    """
    parts = path.split("/")
    if len(parts) != 2:
        return [f"DANDI.NON_DANDI_FOLDERNAME: {path}: expected exactly one sub-<subject> folder level"]
    folder, name = parts
    problems = []
    fm = DANDI_FOLDER_RE.match(folder)
    if fm is None:
        problems.append(f"DANDI.NON_DANDI_FOLDERNAME: {path}: folder {folder!r} is not sub-<label>")
    m = DANDI_FILENAME_RE.match(name)
    if m is None:
        problems.append(f"DANDI.NON_DANDI_FILENAME: {path}: {name!r} does not match "
                        "sub-<label>[_ses-<label>][_tis-…][_slice-…][_cell-…][_desc-…][_probe-…][_obj-…][_<modality>].nwb")
    elif fm is not None and fm.group("sub") != m.group("sub"):
        problems.append(f"DANDI.NON_DANDI_FILENAME: {path}: subject {m.group('sub')!r} differs from folder subject {fm.group('sub')!r}")
    return problems


# --- layouts --------------------------------------------------------------------------------------------------


class Layout(abc.ABC):
    """Base layout: metadata and manifest paths shared by every layout."""

    name = ""

    @abc.abstractmethod
    def data_path(self, project: str, item: ReleaseItem, subject: Optional[str] = None) -> str:
        """Release-relative path of one data file."""

    def metadata_path(self, project: str, table: str) -> str:
        return f"{project}/{METADATA_DIR}/{table}.csv"

    def manifest_path(self, project: str, version: str) -> str:
        from release_platform.release.manifest import manifest_filename

        return f"{project}/{MANIFESTS_DIR}/{manifest_filename(project, version)}"

    def plan_paths(self, project: str, items: list["ReleaseItem"],
                   subjects: Mapping[int, str]) -> Optional[dict[int, str]]:
        """Release-relative paths of a whole set of files at once, for layouts whose names depend on the set
        (None: name each file with :meth:`data_path`)."""
        return None

    def path_problems(self, project: str, relpath: str) -> list[str]:
        """Naming problems of a released data file's path (relative to the release root)."""
        return [] if relpath.startswith(f"{project}/") else [f"{relpath}: not inside the project directory {project}/"]


class AllenLayout(Layout):
    """``<project>/<kind>/<id>/<prefix>_<id>.nwb`` (AllenSDK project cache)."""

    name = "allen"

    def data_path(self, project: str, item: ReleaseItem, subject: Optional[str] = None) -> str:
        role = FILE_ROLES.get(item.table)
        if role is None:  # a table this layout does not know: keep the source's file name under <table>/<file id>/
            return f"{project}/{item.table}/{item.file_id}/{PurePosixPath(item.source).name}"
        group = _as_text(item.field(role.allen_group_column or role.entity_column))
        return f"{project}/{role.allen_dir}/{group}/{_format(role.allen_name, item)}"


class DandiLayout(Layout):
    """The names ``dandi organize`` gives the set of NWB files (:func:`~release_platform.release.dandi.organize_names`:
    subject and session ids, probe ids and modalities read from the files) when every file is a readable NWB file
    with a subject id; otherwise, from the table rows,
    ``<project>/sub-<subject>/sub-<subject>_ses-<session>[_desc-…][_probe-…]_<modalities>.nwb``."""

    name = "dandi"

    def plan_paths(self, project: str, items: list[ReleaseItem], subjects: Mapping[int, str]) -> Optional[dict[int, str]]:
        from release_platform.release.dandi import nwb_organize_record, organize_names

        try:
            records = [nwb_organize_record(it.source) for it in items]
        except InputError:
            return None
        if not records:
            return None
        names = organize_names(records)
        return {it.file_id: f"{project}/{name}" for it, name in zip(items, names)}

    def data_path(self, project: str, item: ReleaseItem, subject: Optional[str] = None) -> str:
        role = FILE_ROLES.get(item.table)
        if role is None:
            raise InputError(f"the dandi layout does not know how to name files of table {item.table!r} "
                             f"(file {item.file_id}); known tables: {', '.join(sorted(FILE_ROLES))}")
        sub = dandi_label(subject if subject is not None else item.field("mouse_id"))
        name = f"sub-{sub}_ses-{dandi_label(item.field(role.session_column))}"
        if role.desc:
            name += f"_desc-{dandi_label(_format(role.desc, item))}"
        if role.probe_column:
            name += f"_probe-{dandi_label(item.field(role.probe_column))}"
        if role.modalities:
            name += "_" + "+".join(sorted(role.modalities))
        return f"{project}/sub-{sub}/{name}.nwb"

    def path_problems(self, project: str, relpath: str) -> list[str]:
        problems = super().path_problems(project, relpath)
        if problems:
            return problems
        return dandi_path_problems(relpath[len(project) + 1:])


LAYOUTS: dict[str, Layout] = {layout.name: layout for layout in (AllenLayout(), DandiLayout())}


def get_layout(name: str) -> Layout:
    try:
        return LAYOUTS[name]
    except KeyError:
        raise InputError(f"unknown layout {name!r}; choose one of {', '.join(LAYOUTS)}") from None


def detect_layout(project: str, data_paths: list[str]) -> Layout:
    """The layout a set of released data paths follows (dandi if every one is in a ``sub-*`` folder)."""
    inner = [p[len(project) + 1:] if p.startswith(project + "/") else p for p in data_paths]
    if inner and all(p.startswith("sub-") for p in inner):
        return LAYOUTS["dandi"]
    return LAYOUTS["allen"]


PROJECT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def check_project_name(project: str) -> str:
    """A project name is one path segment: letters, digits, ``.``, ``_``, ``-`` (not starting with a dot)."""
    if not isinstance(project, str) or not PROJECT_NAME_RE.match(project) or project in (".", ".."):
        raise InputError(f"project name {project!r} must be letters, digits, '.', '_' or '-' (one path segment)")
    return project
