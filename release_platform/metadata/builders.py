"""Build the release metadata tables from LIMS rows: pure, vectorized pandas.

Input is a :class:`LimsRows` (plain DataFrames as :mod:`release_platform.lims.metadata_queries` returns them,
gathered by :mod:`release_platform.metadata.gather` or synthesized in memory) describing a *universe*: every
session of the mice concerned, so that cumulative columns (prior exposures) see the mouse's whole history.
:func:`build_tables` derives every table over the universe and keeps the rows of the :class:`Targets`.

Merging rules (AllenSDK §7.3, with the deviations named):

* A behavior session linked to an ophys (or ecephys) session takes that session's ``session_type``,
  ``project_code`` and ``equipment_name`` (the physiology session wins), but keeps its own
  ``date_of_acquisition``; the ophys/ecephys session tables use the physiology session's own date.
* The acquisition history of a mouse is its behavior sessions plus the ophys/ecephys sessions no behavior
  session points at; prior-exposure counts run over it in date order (ties: behavior, ophys, ecephys, then id).
* An ophys or ecephys session linked from more than one behavior session is ambiguous: AllenSDK silently
  dropped it; we raise :class:`InputError` naming the sessions when such a session is a target.
* Ophys experiments in workflow state ``failed`` are left out of every table and list.
* ``on_missing_file="skip"`` drops a row whose file is missing *and* its child rows (cells of a dropped
  experiment; probes, channels, units of a dropped ecephys session; channels and units of a probe dropped for
  its missing LFP NWB, the session's counts then counting the released probes only), so no reference dangles.
* A probe expects an LFP NWB (``probes.file_id``) only when ``has_lfp_data`` is true.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Iterable, Optional

import numpy as np
import pandas as pd

from release_platform.errors import InputError
from release_platform.lims import metadata_queries as q
from release_platform.metadata import derivations as d
from release_platform.metadata.files import FileLinks, MetadataWarning, OnMissingFile, attach_files, check_file_id_collisions
from release_platform.metadata.schemas import TABLES

UNIT_METRICS = ("firing_rate", "isi_violations", "presence_ratio", "amplitude_cutoff", "snr", "isolation_distance", "d_prime")


def _empty(columns: Iterable[str]) -> pd.DataFrame:
    return pd.DataFrame(columns=list(columns))


@dataclass
class LimsRows:
    """The LIMS rows a build needs (column names as in :mod:`release_platform.lims.metadata_queries`).

    Optional extra columns: ``behavior_sessions.flash_omissions`` (nullable bool: did a habituation session
    show omitted flashes) and ``probes.has_lfp_data`` (bool). ``container_depths`` holds
    (ophys_container_id, ophys_experiment_id, imaging_depth, workflow_state) for every experiment of the
    containers involved, which may reach beyond the universe's sessions.
    """

    donors: pd.DataFrame = field(default_factory=lambda: _empty(q.DONOR_COLUMNS))
    genotypes: pd.DataFrame = field(default_factory=lambda: _empty(q.GENOTYPE_COLUMNS))
    behavior_sessions: pd.DataFrame = field(default_factory=lambda: _empty(q.BEHAVIOR_COLUMNS))
    ophys_sessions: pd.DataFrame = field(
        default_factory=lambda: _empty(["ophys_session_id", *q.PHYS_SESSION_COLUMNS[1:]]))
    ophys_experiments: pd.DataFrame = field(default_factory=lambda: _empty(q.EXPERIMENT_COLUMNS))
    memberships: pd.DataFrame = field(default_factory=lambda: _empty(q.MEMBERSHIP_COLUMNS))
    container_depths: pd.DataFrame = field(
        default_factory=lambda: _empty(["ophys_container_id", "ophys_experiment_id", "imaging_depth", "workflow_state"]))
    cell_rois: pd.DataFrame = field(default_factory=lambda: _empty(q.CELL_COLUMNS))
    ecephys_sessions: pd.DataFrame = field(
        default_factory=lambda: _empty(["ecephys_session_id", *q.PHYS_SESSION_COLUMNS[1:]]))
    probes: pd.DataFrame = field(default_factory=lambda: _empty(q.PROBE_COLUMNS))
    channels: pd.DataFrame = field(default_factory=lambda: _empty(q.CHANNEL_COLUMNS))
    units: pd.DataFrame = field(default_factory=lambda: _empty(q.UNIT_COLUMNS))


@dataclass
class Targets:
    """Which rows to keep. ``None`` = every row of that kind in the universe; an empty set = none.

    ``ophys_experiment_ids`` narrows the experiment and cells tables (default: every non-failed plane of the
    target ophys sessions)."""

    behavior_session_ids: Optional[set[int]] = None
    ophys_session_ids: Optional[set[int]] = None
    ophys_experiment_ids: Optional[set[int]] = None
    ecephys_session_ids: Optional[set[int]] = None

    @staticmethod
    def only(kind: str, ids: Iterable[int]) -> "Targets":
        """Targets of one session kind only (the per-session assets)."""
        ids = {int(i) for i in ids}
        t = Targets(set(), set(), None, set())
        setattr(t, f"{kind}_ids", ids)
        return t


@dataclass
class BuildResult:
    tables: dict[str, pd.DataFrame]
    missing_files: list[dict] = field(default_factory=list)
    dropped: dict[str, list[int]] = field(default_factory=dict)


# --- helpers -----------------------------------------------------------------------------------------------------


def _int(s: pd.Series) -> pd.Series:
    return pd.to_numeric(s, errors="coerce").astype("Int64")


def _sorted_lists(frame: pd.DataFrame, key: str, value: str, index: pd.Index) -> pd.Series:
    """Per ``key``: the sorted distinct non-null ``value``s as a Python list ([] for keys without any)."""
    f = frame[[key, value]].dropna().drop_duplicates()
    if len(f):
        f = f.sort_values([key, value], kind="stable")
        vals = f[value].tolist()
        grouped = f.groupby(key, sort=False).indices
        lists = {k: [vals[i] for i in pos] for k, pos in grouped.items()}
    else:
        lists = {}
    return pd.Series([list(lists.get(k, [])) for k in index], index=index, dtype=object)


def _py_ints(values: list) -> list:
    return [int(v) for v in values]


def _finalize(table: str, frame: pd.DataFrame) -> pd.DataFrame:
    """Order columns as documented and give every column its model dtype."""
    schema = TABLES[table].model.to_schema()
    out = {}
    n = len(frame)
    for name, col in schema.columns.items():
        s = frame[name] if name in frame.columns else pd.Series([None] * n, index=frame.index, dtype=object)
        dtype = str(col.dtype)
        if dtype == "Int64":
            s = _int(s)
        elif dtype.startswith("string"):
            s = s.astype("string")
        elif dtype.startswith("datetime64"):
            s = d.to_utc(s)
        elif dtype == "bool":
            s = s.astype("boolean").fillna(False).astype(bool)
        elif dtype.startswith("float"):
            s = pd.to_numeric(s, errors="coerce").astype("float64")
        elif dtype == "object" and name in TABLES[table].list_columns:
            s = s.map(lambda v: list(v) if isinstance(v, (list, tuple, np.ndarray)) else [])
            if name in ("ophys_container_id", "ophys_experiment_id"):
                s = s.map(_py_ints)
        out[name] = s
    return pd.DataFrame(out, index=frame.index).reset_index(drop=True)


def _ambiguous_links(links: pd.DataFrame, key: str, targets: Optional[set[int]], kind: str) -> None:
    """Raise InputError if a target physiology session is linked from more than one behavior session."""
    counts = links.groupby(key)["behavior_session_id"].agg(lambda s: sorted(int(v) for v in s))
    bad = counts[counts.map(len) > 1]
    if targets is not None:
        bad = bad[bad.index.isin(list(targets))]
    if len(bad):
        detail = "; ".join(f"{kind} {int(k)} <- behavior_sessions {v}" for k, v in bad.head(10).items())
        raise InputError(f"ambiguous LIMS link: a {kind} must have at most one behavior session ({detail})")


# --- the build ------------------------------------------------------------------------------------------------------


def build_tables(
    rows: LimsRows,
    targets: Optional[Targets] = None,
    *,
    files: Optional[FileLinks] = None,
    on_missing_file: OnMissingFile = "error",
    tables: Optional[Iterable[str]] = None,
) -> BuildResult:
    """Every release table for the targets (all eight unless ``tables`` names some).

    ``files`` gives the expected data-file paths (see :class:`~release_platform.metadata.files.FileLinks`);
    ``None`` leaves the file columns null. Raises :class:`InputError` on ambiguous links, on missing files under
    ``on_missing_file="error"``, and on file-id collisions.
    """
    targets = targets or Targets()
    wanted = set(tables) if tables is not None else set(TABLES)
    result = BuildResult({})

    subjects = _subjects(rows)
    beh, oph, eph = _sessions(rows, targets)
    exps = rows.ophys_experiments.copy()
    exps = exps[exps["workflow_state"].astype("string") != "failed"]
    exps["ophys_experiment_id"] = exps["ophys_experiment_id"].astype("int64")
    exps["ophys_session_id"] = exps["ophys_session_id"].astype("int64")
    ophys_info = _ophys_session_info(rows, oph, exps)
    history = _history(rows, beh, oph, eph, subjects)

    def keep(frame: pd.DataFrame, col: str, ids: Optional[set[int]]) -> pd.DataFrame:
        return frame if ids is None else frame[frame[col].isin(list(ids))]

    if "behavior_session_table" in wanted:
        table = _behavior_table(rows, keep(beh, "behavior_session_id", targets.behavior_session_ids), subjects, history, ophys_info)
        expected = table["ophys_experiment_id"].map(len).eq(0) & table["ecephys_session_id"].isna()
        attached = attach_files(table, "behavior_nwb", files, on_missing_file, expected=expected)
        result.missing_files += attached.missing
        if attached.dropped:
            result.dropped["behavior_session_table"] = attached.dropped
        result.tables["behavior_session_table"] = _finalize("behavior_session_table", attached.frame)

    target_oph = keep(oph, "ophys_session_id", targets.ophys_session_ids)
    if "ophys_session_table" in wanted:
        table = _ophys_session_table(target_oph, subjects, history, ophys_info)
        result.tables["ophys_session_table"] = _finalize("ophys_session_table", table)

    dropped_exps: list[int] = []
    target_exps = exps[exps["ophys_session_id"].isin(target_oph["ophys_session_id"].tolist())]
    target_exps = keep(target_exps, "ophys_experiment_id", targets.ophys_experiment_ids)
    if "ophys_experiment_table" in wanted:
        table = _experiment_table(rows, target_exps, exps, oph, subjects, history)
        attached = attach_files(table, "behavior_ophys_nwb", files, on_missing_file)
        result.missing_files += attached.missing
        dropped_exps = attached.dropped
        if dropped_exps:
            result.dropped["ophys_experiment_table"] = dropped_exps
        result.tables["ophys_experiment_table"] = _finalize("ophys_experiment_table", attached.frame)

    if "ophys_cells_table" in wanted:
        cells = rows.cell_rois
        keep_ids = set(target_exps["ophys_experiment_id"].tolist()) - set(dropped_exps)
        cells = cells[cells["ophys_experiment_id"].isin(list(keep_ids))].sort_values("cell_roi_id", kind="stable")
        result.tables["ophys_cells_table"] = _finalize("ophys_cells_table", cells)

    ecephys_parts = wanted & {"ecephys_session_table", "probes", "channels", "units"}
    if ecephys_parts:
        target_eph = keep(eph, "ecephys_session_id", targets.ecephys_session_ids)
        probes, channels, units = _ecephys_children(rows, target_eph)
        dropped_sessions: list[int] = []
        session_table = None
        if "ecephys_session_table" in wanted:
            table = _ecephys_session_table(target_eph, subjects, history, probes, channels, units)
            attached = attach_files(table, "ecephys_nwb", files, on_missing_file)
            result.missing_files += attached.missing
            dropped_sessions = attached.dropped
            if dropped_sessions:
                result.dropped["ecephys_session_table"] = dropped_sessions
            session_table = attached.frame
        probes, channels, units = (f[~f["ecephys_session_id"].isin(dropped_sessions)] for f in (probes, channels, units))
        if "probes" in wanted:
            # Per-probe LFP NWB: expected only for a probe with LFP; "skip" drops the probe with its channels and
            # units, and the session's counts then describe the released probes.
            attached = attach_files(probes, "ecephys_lfp_nwb", files, on_missing_file, expected=probes["has_lfp_data"])
            result.missing_files += attached.missing
            probes = attached.frame
            if attached.dropped:
                result.dropped["probes"] = attached.dropped
                channels = channels[~channels["ecephys_probe_id"].isin(attached.dropped)]
                units = units[~units["ecephys_probe_id"].isin(attached.dropped)]
                if session_table is not None:
                    session_table = _ecephys_counts(session_table, probes, channels, units)
        if session_table is not None:
            result.tables["ecephys_session_table"] = _finalize("ecephys_session_table", session_table)
        for name, frame in (("probes", probes), ("channels", channels), ("units", units)):
            if name in wanted:
                result.tables[name] = _finalize(name, frame)

    check_file_id_collisions(result.tables)
    return result


# --- pieces ----------------------------------------------------------------------------------------------------------


def _subjects(rows: LimsRows) -> pd.DataFrame:
    donors = rows.donors.copy()
    donors["donor_id"] = donors["donor_id"].astype("int64")
    subj = donors.set_index("donor_id")
    g = rows.genotypes
    driver = g[g["genotype_type"] == "driver"]
    reporter = g[g["genotype_type"] == "reporter"]
    subj["driver_line"] = _sorted_lists(driver, "donor_id", "genotype", subj.index)
    subj["reporter_line"] = d.normalize_reporter_line(_sorted_lists(reporter, "donor_id", "genotype", subj.index))
    subj["cre_line"] = d.parse_cre_line(subj["full_genotype"])
    subj["indicator"] = d.parse_indicator(subj["reporter_line"])
    subj["date_of_birth"] = d.to_utc(subj["date_of_birth"])
    subj["mouse_id"] = subj["mouse_id"].astype("string")
    return subj


def _sessions(rows: LimsRows, targets: Targets):
    beh = rows.behavior_sessions.copy()
    beh["behavior_session_id"] = beh["behavior_session_id"].astype("int64")
    for col in ("ophys_session_id", "ecephys_session_id", "donor_id"):
        beh[col] = _int(beh[col])
    beh["date_of_acquisition"] = d.to_utc(beh["date_of_acquisition"])
    oph = rows.ophys_sessions.copy()
    oph["ophys_session_id"] = oph["ophys_session_id"].astype("int64")
    oph["date_of_acquisition"] = d.to_utc(oph["date_of_acquisition"])
    eph = rows.ecephys_sessions.copy()
    eph["ecephys_session_id"] = eph["ecephys_session_id"].astype("int64")
    eph["date_of_acquisition"] = d.to_utc(eph["date_of_acquisition"])

    # Links behavior -> physiology; an ambiguous target is an error.
    olinks = beh.loc[beh["ophys_session_id"].notna(), ["behavior_session_id", "ophys_session_id"]]
    elinks = beh.loc[beh["ecephys_session_id"].notna(), ["behavior_session_id", "ecephys_session_id"]]
    _ambiguous_links(olinks, "ophys_session_id", targets.ophys_session_ids, "ophys_session")
    _ambiguous_links(elinks, "ecephys_session_id", targets.ecephys_session_ids, "ecephys_session")
    if targets.behavior_session_ids is not None:
        for links, key, kind in ((olinks, "ophys_session_id", "ophys_session"), (elinks, "ecephys_session_id", "ecephys_session")):
            shared = links[links[key].duplicated(keep=False)]
            hit = shared[shared["behavior_session_id"].isin(list(targets.behavior_session_ids))]
            if len(hit):
                _ambiguous_links(shared[shared[key].isin(hit[key].tolist())], key, None, kind)
    first_o = olinks.drop_duplicates(subset=["ophys_session_id"], keep="first").set_index("ophys_session_id")["behavior_session_id"]
    first_e = elinks.drop_duplicates(subset=["ecephys_session_id"], keep="first").set_index("ecephys_session_id")["behavior_session_id"]
    oph["behavior_session_id"] = _int(oph["ophys_session_id"].map(first_o))
    eph["behavior_session_id"] = _int(eph["ecephys_session_id"].map(first_e))

    # The physiology session's type, project and rig win for linked behavior sessions.
    for phys, key in ((oph, "ophys_session_id"), (eph, "ecephys_session_id")):
        info = phys.set_index(key)
        linked = beh[key].notna() & beh[key].isin(info.index.tolist())
        if linked.any():
            ids = beh.loc[linked, key].astype("int64")
            for col in ("session_type", "project_code", "equipment_name"):
                beh.loc[linked, col] = info.loc[ids, col].to_numpy()
            mismatch = beh.loc[linked, "donor_id"].to_numpy() != info.loc[ids, "donor_id"].to_numpy()
            if mismatch.any():
                pairs = list(zip(beh.loc[linked, "behavior_session_id"][mismatch], ids[mismatch]))[:10]
                warnings.warn(f"behavior and {key[:-3]} of different donors (kept the behavior donor): {pairs}",
                              MetadataWarning, stacklevel=3)
    return beh, oph, eph


def _history(rows: LimsRows, beh: pd.DataFrame, oph: pd.DataFrame, eph: pd.DataFrame, subjects: pd.DataFrame) -> pd.DataFrame:
    """One row per acquisition with its derived columns, keyed by (kind, id)."""
    linked_o = set(beh["ophys_session_id"].dropna().astype("int64").tolist())
    linked_e = set(beh["ecephys_session_id"].dropna().astype("int64").tolist())
    orphans_o = oph[~oph["ophys_session_id"].isin(list(linked_o))]
    orphans_e = eph[~eph["ecephys_session_id"].isin(list(linked_e))]
    flash = beh["flash_omissions"] if "flash_omissions" in beh.columns else pd.Series(pd.NA, index=beh.index)
    parts = [
        pd.DataFrame({"kind": "behavior", "kind_rank": 0, "session_key": beh["behavior_session_id"].to_numpy(),
                      "donor_id": beh["donor_id"].to_numpy(), "date_of_acquisition": beh["date_of_acquisition"].to_numpy(),
                      "session_type": beh["session_type"].to_numpy(), "flash_omissions": flash.to_numpy()}),
        pd.DataFrame({"kind": "ophys", "kind_rank": 1, "session_key": orphans_o["ophys_session_id"].to_numpy(),
                      "donor_id": orphans_o["donor_id"].to_numpy(), "date_of_acquisition": orphans_o["date_of_acquisition"].to_numpy(),
                      "session_type": orphans_o["session_type"].to_numpy(), "flash_omissions": pd.NA}),
        pd.DataFrame({"kind": "ecephys", "kind_rank": 2, "session_key": orphans_e["ecephys_session_id"].to_numpy(),
                      "donor_id": orphans_e["donor_id"].to_numpy(), "date_of_acquisition": orphans_e["date_of_acquisition"].to_numpy(),
                      "session_type": orphans_e["session_type"].to_numpy(), "flash_omissions": pd.NA}),
    ]
    h = pd.concat([p for p in parts if len(p)], ignore_index=True) if any(len(p) for p in parts) else parts[0]
    h["session_key"] = h["session_key"].astype("int64")
    h["donor_id"] = _int(h["donor_id"])
    h["date_of_acquisition"] = d.to_utc(h["date_of_acquisition"])
    h["session_type"] = h["session_type"].astype("string")
    h["mouse_id"] = h["donor_id"]
    h["session_number"] = d.session_number(h["session_type"])
    h["image_set"] = d.image_set(h["session_type"])
    h["behavior_type"] = d.behavior_type(h["session_type"])
    h["has_omissions"] = d.has_omissions(h["session_type"], h["flash_omissions"].astype("boolean"))
    exposures = d.prior_exposures(h, tie_breakers=("kind_rank", "session_key"))
    h = h.join(exposures)
    h["experience_level"] = d.experience_level(h["session_type"], h["session_number"], h["prior_exposures_to_image_set"])
    h["ecephys_experience_level"] = d.ecephys_experience_level(h["image_set"], h["prior_exposures_to_image_set"])
    return h.set_index(["kind", "session_key"])


DERIVED = (
    "session_number",
    "image_set",
    "behavior_type",
    "experience_level",
    "prior_exposures_to_session_type",
    "prior_exposures_to_image_set",
    "prior_exposures_to_omissions",
)
SUBJECT = ("mouse_id", "indicator", "full_genotype", "driver_line", "cre_line", "reporter_line", "sex")


def _derived_for(history: pd.DataFrame, kinds: pd.Series, keys: pd.Series, index: pd.Index, columns=DERIVED) -> pd.DataFrame:
    mi = pd.MultiIndex.from_arrays([kinds.to_numpy(), keys.astype("int64").to_numpy()])
    out = history.reindex(mi)[list(columns)]
    out.index = index
    return out


def _with_subject(frame: pd.DataFrame, subjects: pd.DataFrame) -> pd.DataFrame:
    subj = subjects.reindex(frame["donor_id"].astype("Int64").to_numpy())
    for col in SUBJECT:
        frame[col] = subj[col].to_numpy()
    frame["age_in_days"] = d.age_in_days(frame["date_of_acquisition"], pd.Series(subj["date_of_birth"].to_numpy(), index=frame.index))
    return frame


def _ophys_session_info(rows: LimsRows, oph: pd.DataFrame, exps: pd.DataFrame) -> pd.DataFrame:
    """Per ophys session: experiment list, containers, plane groups, layout counts."""
    idx = pd.Index(oph["ophys_session_id"].astype("int64"), name="ophys_session_id")
    info = pd.DataFrame(index=idx)
    info["ophys_experiment_id"] = _sorted_lists(exps, "ophys_session_id", "ophys_experiment_id", idx)
    groups = exps.dropna(subset=["imaging_plane_group"]).groupby("ophys_session_id")["imaging_plane_group"].nunique()
    info["imaging_plane_group_count"] = groups.reindex(idx).fillna(0).astype("Int64")
    structures = exps.groupby("ophys_session_id")["targeted_structure"].nunique()
    depths = exps.groupby(["ophys_session_id", "targeted_structure"]).size().groupby(level=0).max() if len(exps) else pd.Series(dtype="int64")
    layout = d.project_layout(
        pd.Series(oph["project_code"].to_numpy(), index=idx),
        structures.reindex(idx).astype("Int64"),
        depths.reindex(idx).astype("Int64"),
    )
    info = info.join(layout)
    mem = rows.memberships
    exp_session = exps.set_index("ophys_experiment_id")["ophys_session_id"]
    via_exp = mem[mem["attachable_type"] == "OphysExperiment"].copy()
    via_exp["ophys_session_id"] = via_exp["attachable_id"].astype("int64").map(exp_session)
    direct = mem[mem["attachable_type"] == "OphysSession"].copy()
    direct["ophys_session_id"] = direct["attachable_id"].astype("int64")
    both = pd.concat([via_exp[["ophys_session_id", "ophys_container_id"]], direct[["ophys_session_id", "ophys_container_id"]]])
    both = both.dropna().astype("int64")
    info["ophys_container_id"] = _sorted_lists(both, "ophys_session_id", "ophys_container_id", idx)
    return info


def _behavior_table(rows, beh, subjects, history, ophys_info) -> pd.DataFrame:
    t = beh.copy()
    t.index = pd.RangeIndex(len(t))
    t = _with_subject(t, subjects)
    derived = _derived_for(history, pd.Series("behavior", index=t.index), t["behavior_session_id"], t.index)
    t = t.join(derived)
    linked = ophys_info.reindex(t["ophys_session_id"].astype("Int64").to_numpy())
    linked.index = t.index
    t["imaging_plane_group_count"] = linked["imaging_plane_group_count"]
    t["num_depths_per_area"] = linked["num_depths_per_area"]
    t["num_targeted_structures"] = linked["num_targeted_structures"]
    t["ophys_experiment_id"] = linked["ophys_experiment_id"].map(lambda v: v if isinstance(v, list) else [])
    mem = rows.memberships
    direct = mem[mem["attachable_type"] == "BehaviorSession"][["attachable_id", "ophys_container_id"]].astype("int64")
    direct = direct.rename(columns={"attachable_id": "behavior_session_id"})
    own = _sorted_lists(direct, "behavior_session_id", "ophys_container_id", pd.Index(t["behavior_session_id"]))
    via = linked["ophys_container_id"].map(lambda v: v if isinstance(v, list) else [])
    t["ophys_container_id"] = [sorted(set(a) | set(b)) for a, b in zip(own.tolist(), via.tolist())]
    return t.sort_values("behavior_session_id", kind="stable")


def _phys_derived(frame: pd.DataFrame, key: str, kind: str, history: pd.DataFrame, columns=DERIVED) -> pd.DataFrame:
    """Derived columns of a physiology session: from its behavior session's acquisition if linked, else its own."""
    linked = frame["behavior_session_id"].notna()
    kinds = pd.Series(np.where(linked, "behavior", kind), index=frame.index)
    keys = frame["behavior_session_id"].astype("Int64").fillna(frame[key].astype("Int64"))
    return _derived_for(history, kinds, keys, frame.index, columns)


def _ophys_session_table(oph, subjects, history, ophys_info) -> pd.DataFrame:
    t = oph.copy()
    t.index = pd.RangeIndex(len(t))
    t = _with_subject(t, subjects)
    t = t.join(_phys_derived(t, "ophys_session_id", "ophys", history))
    info = ophys_info.reindex(t["ophys_session_id"].to_numpy())
    info.index = t.index
    for col in ("ophys_container_id", "ophys_experiment_id", "imaging_plane_group_count", "num_targeted_structures", "num_depths_per_area"):
        t[col] = info[col]
    return t.sort_values("ophys_session_id", kind="stable")


def _experiment_containers(rows: LimsRows, exps: pd.DataFrame) -> pd.Series:
    """Per experiment: its container (direct membership, or its session's); the lowest id if several."""
    mem = rows.memberships
    direct = mem[mem["attachable_type"] == "OphysExperiment"][["attachable_id", "ophys_container_id"]].astype("int64")
    direct = direct.rename(columns={"attachable_id": "ophys_experiment_id"})
    sess = mem[mem["attachable_type"] == "OphysSession"][["attachable_id", "ophys_container_id"]].astype("int64")
    via = exps[["ophys_experiment_id", "ophys_session_id"]].merge(
        sess.rename(columns={"attachable_id": "ophys_session_id"}), on="ophys_session_id")[["ophys_experiment_id", "ophys_container_id"]]
    allc = pd.concat([direct, via]).drop_duplicates()
    allc = allc[allc["ophys_experiment_id"].isin(exps["ophys_experiment_id"].tolist())]
    many = allc.groupby("ophys_experiment_id")["ophys_container_id"].nunique()
    many = many[many > 1]
    if len(many):
        warnings.warn(f"ophys experiments in more than one container (the lowest container id is used): "
                      f"{sorted(int(i) for i in many.index)[:10]}", MetadataWarning, stacklevel=3)
    return allc.groupby("ophys_experiment_id")["ophys_container_id"].min()


def _experiment_table(rows, target_exps, all_exps, oph, subjects, history) -> pd.DataFrame:
    t = target_exps.copy()
    sess = oph.set_index("ophys_session_id")
    s = sess.reindex(t["ophys_session_id"].to_numpy())
    for col in ("behavior_session_id", "donor_id", "session_type", "date_of_acquisition", "project_code", "equipment_name"):
        t[col] = s[col].to_numpy()
    t.index = pd.RangeIndex(len(t))
    t = _with_subject(t, subjects)
    t = t.join(_phys_derived(t, "ophys_session_id", "ophys", history))
    t["passive"] = d.passive(t["session_number"])
    containers = _experiment_containers(rows, all_exps)
    t["ophys_container_id"] = _int(t["ophys_experiment_id"].map(containers))
    depths = rows.container_depths
    depths = depths[depths["workflow_state"].astype("string") != "failed"].dropna(subset=["imaging_depth"])
    mean_depth = depths.groupby("ophys_container_id")["imaging_depth"].mean()
    by_container = t["ophys_container_id"].map(mean_depth)
    t["targeted_imaging_depth"] = _int(np.trunc(pd.to_numeric(by_container, errors="coerce"))).fillna(_int(t["imaging_depth"]))
    t["imaging_plane_group"] = _int(t["imaging_plane_group"])
    t["imaging_depth"] = _int(t["imaging_depth"])
    return t.sort_values("ophys_experiment_id", kind="stable")


def _ecephys_children(rows: LimsRows, eph: pd.DataFrame):
    sessions = eph["ecephys_session_id"].astype("int64").tolist()
    probes = rows.probes[rows.probes["ecephys_session_id"].isin(sessions)].copy()
    probe_session = probes.set_index("ecephys_probe_id")["ecephys_session_id"]
    channels = rows.channels[rows.channels["ecephys_probe_id"].isin(probes["ecephys_probe_id"].tolist())].copy()
    channels["ecephys_session_id"] = channels["ecephys_probe_id"].map(probe_session)
    units = rows.units[rows.units["ecephys_channel_id"].isin(channels["ecephys_channel_id"].tolist())].copy()
    ch = channels.set_index("ecephys_channel_id")
    for col in ("ecephys_probe_id", "ecephys_session_id", "structure_acronym", "valid_data"):
        units[col] = units["ecephys_channel_id"].map(ch[col])
    metrics = units["metrics"].map(lambda m: m if isinstance(m, dict) else {}).tolist() if "metrics" in units else [{}] * len(units)
    for name in UNIT_METRICS:
        if name in units.columns and "metrics" not in units.columns:
            continue
        units[name] = pd.to_numeric(pd.Series([m.get(name) for m in metrics], index=units.index, dtype=object), errors="coerce")
    unit_counts_ch = units.groupby("ecephys_channel_id").size()
    channels["unit_count"] = channels["ecephys_channel_id"].map(unit_counts_ch).fillna(0).astype("int64")
    probes["channel_count"] = probes["ecephys_probe_id"].map(channels.groupby("ecephys_probe_id").size()).fillna(0).astype("int64")
    probes["unit_count"] = probes["ecephys_probe_id"].map(units.groupby("ecephys_probe_id").size()).fillna(0).astype("int64")
    probes["structure_acronyms"] = _sorted_lists(channels, "ecephys_probe_id", "structure_acronym", pd.Index(probes["ecephys_probe_id"])).to_numpy()
    if "has_lfp_data" not in probes.columns:
        probes["has_lfp_data"] = False
    return (
        probes.sort_values("ecephys_probe_id", kind="stable"),
        channels.sort_values("ecephys_channel_id", kind="stable"),
        units.sort_values("unit_id", kind="stable"),
    )


def _ecephys_session_table(eph, subjects, history, probes, channels, units) -> pd.DataFrame:
    t = eph.copy()
    t.index = pd.RangeIndex(len(t))
    t = _with_subject(t, subjects)
    derived = _phys_derived(t, "ecephys_session_id", "ecephys", history,
                            columns=[c for c in DERIVED if c not in ("experience_level", "behavior_type")] + ["ecephys_experience_level"])
    t = t.join(derived.rename(columns={"ecephys_experience_level": "experience_level"}))
    return _ecephys_counts(t, probes, channels, units).sort_values("ecephys_session_id", kind="stable")


def _ecephys_counts(t: pd.DataFrame, probes, channels, units) -> pd.DataFrame:
    """The session rows' probe/channel/unit counts and structure list, from the given child rows."""
    t = t.copy()
    sid = t["ecephys_session_id"]
    t["probe_count"] = sid.map(probes.groupby("ecephys_session_id").size()).fillna(0)
    t["channel_count"] = sid.map(channels.groupby("ecephys_session_id").size()).fillna(0)
    t["unit_count"] = sid.map(units.groupby("ecephys_session_id").size()).fillna(0)
    t["structure_acronyms"] = _sorted_lists(channels, "ecephys_session_id", "structure_acronym", pd.Index(sid)).to_numpy()
    return t
