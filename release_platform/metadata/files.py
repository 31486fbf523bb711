"""Release data files: deterministic file ids and the ``file_id`` / ``file_path`` columns.

File id scheme (version 1)
--------------------------
``file_id = (int.from_bytes(BLAKE2b-64(b"release_platform/file_id/v1/<kind>/<entity id>"), "big") >> 11) or 1``

i.e. the top 53 bits of an 8-byte BLAKE2b digest of the file kind and the entity id. So:

* the same (file kind, entity id) gets the same id in every run and every release, whatever order sessions
  are processed in, and whatever the file's path (the manifest's hashes track content versions);
* ids are positive integers below 2**53, exact in float64 and in JavaScript, so a CSV column that pandas
  reads as float (because some rows have no file) still round-trips;
* different kinds never share a key, so a behavior session and an ophys experiment with the same LIMS id
  get different file ids;
* a collision (two different keys, one id; probability about n**2 / 2**54, ~5e-5 for a million files) is
  detected by :func:`check_file_id_collisions` when tables are built and again by the release checks.

A row whose data file is not expected (e.g. a behavior session whose data ship inside its ophys
experiments' NWB files) or is missing under ``on_missing_file="warn"`` has a null ``file_id`` and
``file_path`` (pandas nullable ``Int64`` and ``<NA>``; an empty cell in the CSV). AllenSDK wrote -999 there;
the AllenSDK cloud cache treats a NaN or non-positive ``file_id`` the same way.

File kinds
----------
=======================  ====================  =========================================  ========================
kind                     entity id column      file name                                  table
=======================  ====================  =========================================  ========================
``behavior_nwb``         behavior_session_id   ``behavior_session_<id>.nwb``              behavior_session_table
``behavior_ophys_nwb``   ophys_experiment_id   ``behavior_ophys_experiment_<id>.nwb``     ophys_experiment_table
``ecephys_nwb``          ecephys_session_id    ``ecephys_session_<id>.nwb``               ecephys_session_table
``ecephys_lfp_nwb``      ecephys_probe_id      ``lfp_probe_<id>.nwb``                     probes
=======================  ====================  =========================================  ========================

A probe expects an LFP file only when ``has_lfp_data`` is true (an LFP is registered in LIMS); a probe without
LFP has null file columns, which is not a missing file.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Literal, Mapping, Optional


from release_platform.errors import InputError

if TYPE_CHECKING:  # numpy and pandas are imported where arrays and frames are built: DataFiles and FILE_KINDS
    import numpy as np  # stay light to import
    import pandas as pd

FILE_ID_VERSION = "v1"
OnMissingFile = Literal["error", "warn", "skip"]
ON_MISSING_FILE_MODES = ("error", "warn", "skip")


@dataclass(frozen=True)
class FileKind:
    name: str
    id_column: str
    prefix: str
    table: str
    entity: str  # entity word used in messages

    def filename(self, entity_id: int, prefix: Optional[str] = None) -> str:
        return f"{prefix or self.prefix}_{int(entity_id)}.nwb"


FILE_KINDS: dict[str, FileKind] = {
    "behavior_nwb": FileKind("behavior_nwb", "behavior_session_id", "behavior_session", "behavior_session_table", "behavior_session"),
    "behavior_ophys_nwb": FileKind(
        "behavior_ophys_nwb", "ophys_experiment_id", "behavior_ophys_experiment", "ophys_experiment_table", "ophys_experiment"
    ),
    "ecephys_nwb": FileKind("ecephys_nwb", "ecephys_session_id", "ecephys_session", "ecephys_session_table", "ecephys_session"),
    "ecephys_lfp_nwb": FileKind("ecephys_lfp_nwb", "ecephys_probe_id", "lfp_probe", "probes", "ecephys_probe"),
    "icephys_nwb": FileKind("icephys_nwb", "icephys_cell_id", "icephys_cell", "icephys_cells_table", "icephys_cell"),
}
#: table name -> file kind of its file columns
TABLE_FILE_KIND = {k.table: k.name for k in FILE_KINDS.values()}


class MetadataWarning(UserWarning):
    """A problem the metadata build reports but survives (a missing file under ``warn``, a data oddity)."""


def file_id(kind: str, entity_id: int) -> int:
    """The deterministic file id of (file kind, entity id); see the module docstring."""
    key = f"release_platform/file_id/{FILE_ID_VERSION}/{kind}/{int(entity_id)}".encode()
    value = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") >> 11
    return value or 1


def file_ids(kind: str, entity_ids: Iterable[int]) -> np.ndarray:
    """:func:`file_id` for many entities (int64 array)."""
    import numpy as np

    return np.fromiter((file_id(kind, i) for i in entity_ids), dtype=np.int64)


def check_file_id_collisions(tables: Mapping[str, pd.DataFrame]) -> None:
    """Raise InputError if two different (kind, entity) pairs across ``tables`` share a file id."""
    import pandas as pd

    keys = []
    for table, frame in tables.items():
        kind = TABLE_FILE_KIND.get(table)
        if kind is None or "file_id" not in frame or frame.empty:
            continue
        has = frame["file_id"].notna()
        keys.append(pd.DataFrame({
            "file_id": frame.loc[has, "file_id"].astype("int64").to_numpy(),
            "key": kind + ":" + frame.loc[has, FILE_KINDS[kind].id_column].astype("int64").astype(str).to_numpy(),
        }))
    if not keys:
        return
    allk = pd.concat(keys, ignore_index=True).drop_duplicates()
    dup = allk[allk["file_id"].duplicated(keep=False)]
    if len(dup):
        groups = dup.groupby("file_id")["key"].apply(lambda s: ", ".join(sorted(s))).head(10)
        detail = "; ".join(f"{fid}: {keys_}" for fid, keys_ in groups.items())
        raise InputError(f"file id collision between different files: {detail}")


# --- expected paths ----------------------------------------------------------------------------------------


@dataclass
class FileLinks:
    """Where each entity's data file is expected: ``paths[kind][entity id] = path``.

    An entity absent from ``paths[kind]`` (while its row expects a file) counts as missing, as does a path
    for which ``exists(path)`` is False. ``kinds`` lists the file kinds to attach at all; a table whose kind
    is not listed gets null file columns and no missing-file report (e.g. the writer's NWB dir is null).
    """

    paths: dict[str, dict[int, str]] = field(default_factory=dict)
    kinds: Optional[set[str]] = None
    exists: Callable[[str], bool] = os.path.isfile

    def attaches(self, kind: str) -> bool:
        return (self.kinds is None and kind in self.paths) or (self.kinds is not None and kind in self.kinds)


def directory_resolver(
    directory: str | os.PathLike,
    kind: str,
    entity_ids: Iterable[int],
    *,
    prefix: Optional[str] = None,
    parent_ids: Optional[Mapping[int, int]] = None,
) -> dict[int, str]:
    """Expected path of each entity's file under ``directory``, trying in order:

    1. ``<dir>/<entity id>/<prefix>_<id>.nwb`` (the AllenSDK writer's per-id sub-directory),
    2. ``<dir>/<parent id>/<prefix>_<id>.nwb`` (our storage layout: per-plane files in the session partition),
    3. ``<dir>/<prefix>_<id>.nwb`` (flat);

    the first that exists wins; when none exists the first candidate is returned (and reported missing).
    """
    fk = FILE_KINDS[kind]
    root = Path(directory).absolute()
    out: dict[int, str] = {}
    for eid in entity_ids:
        eid = int(eid)
        name = fk.filename(eid, prefix)
        candidates = [root / str(eid) / name]
        if parent_ids and eid in parent_ids and parent_ids[eid] is not None:
            candidates.append(root / str(int(parent_ids[eid])) / name)
        candidates.append(root / name)
        out[eid] = os.fspath(next((c for c in candidates if c.is_file()), candidates[0]))
    return out


@dataclass(frozen=True)
class DataFiles:
    """The release data files of one kind that a step wrote: ``paths[entity id] = path``.

    The NWB assets return one (e.g. ``DataFiles("behavior_ophys_nwb", {1011: ".../behavior_ophys_experiment_1011.nwb"})``)
    and the metadata assets that depend on them build their :class:`FileLinks` from it, so a table links exactly
    the files its upstream step reports and nothing searches the storage root.
    """

    kind: str
    paths: Mapping[int, str]

    def __post_init__(self) -> None:
        if self.kind not in FILE_KINDS:
            raise ValueError(f"unknown file kind {self.kind!r}; one of {sorted(FILE_KINDS)}")
        object.__setattr__(self, "paths", {int(k): os.fspath(v) for k, v in self.paths.items()})


def links_from(files: Iterable[DataFiles]) -> FileLinks:
    """:class:`FileLinks` of the given written files (several records of one kind are merged)."""
    links = FileLinks()
    for f in files:
        links.paths.setdefault(f.kind, {}).update(f.paths)
    return links


# --- attaching ---------------------------------------------------------------------------------------------------


@dataclass
class AttachResult:
    frame: pd.DataFrame
    missing: list[dict]  # {kind, entity id, path}
    dropped: list[int]  # entity ids dropped under "skip"


def attach_files(
    frame: pd.DataFrame,
    kind: str,
    links: Optional[FileLinks],
    on_missing_file: OnMissingFile,
    *,
    expected: Optional[pd.Series] = None,
) -> AttachResult:
    """Fill ``file_id`` and ``file_path`` for the rows of one table.

    ``expected`` (bool per row, default all True) says which rows should have a file. A row with an existing
    file gets its deterministic id and absolute path; a missing one is handled by ``on_missing_file``:
    ``error`` -> :class:`InputError` listing every missing file; ``warn`` -> :class:`MetadataWarning`, the row
    is kept with null file columns; ``skip`` -> warning, the row is dropped.
    """
    import pandas as pd

    if on_missing_file not in ON_MISSING_FILE_MODES:
        raise InputError(f"on_missing_file must be one of {ON_MISSING_FILE_MODES}, got {on_missing_file!r}")
    fk = FILE_KINDS[kind]
    frame = frame.copy()
    frame["file_id"] = pd.array([pd.NA] * len(frame), dtype="Int64")
    frame["file_path"] = pd.array([pd.NA] * len(frame), dtype="string")
    if links is None or not links.attaches(kind) or frame.empty:
        return AttachResult(frame, [], [])
    want = pd.Series(True, index=frame.index) if expected is None else expected.reindex(frame.index).fillna(False).astype(bool)
    known = links.paths.get(kind, {})
    ids = frame[fk.id_column].astype("int64")
    paths = ids.map(lambda i: known.get(int(i)))
    present = want & paths.map(lambda p: p is not None and links.exists(p)).astype(bool)
    frame.loc[present, "file_id"] = file_ids(kind, ids[present])
    frame.loc[present, "file_path"] = paths[present].map(lambda p: os.fspath(Path(p).absolute())).astype("string")
    lost = want & ~present
    missing = [
        {"kind": kind, fk.id_column: int(i), "path": None if p is None else os.fspath(p)}
        for i, p in zip(ids[lost], paths[lost])
    ]
    dropped: list[int] = []
    if missing:
        listing = "; ".join(f"{fk.entity} {m[fk.id_column]}: {m['path'] or 'no path'}" for m in missing[:10])
        more = f" (and {len(missing) - 10} more)" if len(missing) > 10 else ""
        message = f"{len(missing)} expected {kind} file(s) missing: {listing}{more}"
        if on_missing_file == "error":
            raise InputError(message)
        if on_missing_file == "skip":
            dropped = [int(i) for i in ids[lost]]
            frame = frame.loc[~lost]
            message += "; their rows are dropped"
        warnings.warn(message, MetadataWarning, stacklevel=2)
    return AttachResult(frame, missing, dropped)
